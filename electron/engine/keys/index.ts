/**
 * Keys: the vault's key hierarchy and where keys are kept. The only module that imports keytar.
 *
 * Terms
 * - master key: 32 random bytes per vault; everything in the vault is encrypted under keys derived
 *   from it. It is never written anywhere in plain text: only wrapped (in the vault's key slots) or
 *   in the OS keychain.
 * - KEK (key-encryption key): derived from the passphrase (scrypt, parameters stored and bounded)
 *   or from the recovery key (HKDF); it encrypts the master key with AES-256-GCM.
 * - key slot / wrapped key: the master key encrypted under a KEK, as JSON (`WrappedKey`) in the
 *   vault config. A vault has a passphrase slot and optionally a recovery slot.
 * - recovery key: a one-time, high-entropy key the user writes down (8 groups of 5 characters with a
 *   checksum); it opens the recovery slot when the passphrase is lost.
 * - keychain / KeyStore: where an unwrapped master key is cached so scheduled work runs
 *   unattended (service "Tresor", account = vault id). Unavailable keychain → passphrase path.
 * - session: an opened vault for a data folder (`openCurrentVault`), with rollback detection (I11).
 */
export {
  MASTER_KEY_BYTES,
  DEFAULT_SCRYPT,
  SCRYPT_BOUNDS,
  MAX_PASSPHRASE_BYTES,
  generateMasterKey,
  scryptParamsFromEnv,
  normalizePassphrase,
  wrapWithPassphrase,
  unwrapWithPassphrase,
  checkNewPassphrase,
  parseWrappedKey,
  kdfProblem,
  sameKey,
  type WrappedKey,
  type KdfParams,
} from './wrap.js'
export {
  generateRecoveryKey,
  formatRecoveryKey,
  parseRecoveryKey,
  wrapWithRecoveryKey,
  unwrapWithRecoveryKey,
  type RecoveryKey,
} from './recovery.js'
export {
  KEYCHAIN_SERVICE,
  KeytarKeyStore,
  MemoryKeyStore,
  defaultKeyStore,
  type KeyStore,
  type KeychainState,
} from './keychain.js'
export { canPrompt, promptSecret, type SecretPrompt } from './prompt.js'
export {
  SECRET_ENV_VARS,
  takeSecretEnv,
  childProcessEnv,
  resolveVaultKey,
  chooseNewPassphrase,
  type KeySlotsView,
  type KeySource,
  type ResolveKeyOptions,
  type ResolvedKey,
} from './resolve.js'
export { openCurrentVault, type OpenVaultOptions, type OpenedVault } from './session.js'
