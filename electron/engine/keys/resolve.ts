import { EngineError } from '../errors.js'
import { defaultKeyStore, type KeychainState, type KeyStore } from './keychain.js'
import { canPrompt, promptSecret, type SecretPrompt } from './prompt.js'
import { unwrapWithRecoveryKey } from './recovery.js'
import { unwrapWithPassphrase } from './wrap.js'

/** The vault's key slots as stored in its header (JSON of WrappedKey each). */
export interface KeySlotsView {
  passphrase: unknown
  recovery?: unknown
}

/** Environment variables that carry secrets: read by the engine, never handed to child processes. */
export const SECRET_ENV_VARS = ['TRESOR_PASSPHRASE', 'TRESOR_NEW_PASSPHRASE', 'TRESOR_RECOVERY_KEY'] as const
export type SecretEnvVar = (typeof SECRET_ENV_VARS)[number]

const taken = new Map<SecretEnvVar, string>()

/**
 * Reads a secret environment variable and removes it from `process.env`, so that no child process
 * (pre/post scripts, job processes) inherits it; the value stays available to this process.
 * For an `env` other than process.env the value is just read.
 */
export function takeSecretEnv(name: SecretEnvVar, env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (env !== process.env) return env[name]
  const value = env[name]
  if (value !== undefined) {
    taken.set(name, value)
    delete env[name]
  }
  return taken.get(name)
}

/** A copy of `env` without the secret variables: what to hand to any child process. */
export function childProcessEnv(env: NodeJS.ProcessEnv = process.env): NodeJS.ProcessEnv {
  const copy = { ...env }
  for (const name of SECRET_ENV_VARS) delete copy[name]
  return copy
}

export type KeySource = 'keychain' | 'passphrase-env' | 'recovery-env' | 'prompt'

export interface ResolveKeyOptions {
  vaultId: string
  keySlots: KeySlotsView
  /** Default: the OS keychain (`defaultKeyStore()`). */
  keyStore?: KeyStore
  /** Default process.env (secrets are then taken out of it, see takeSecretEnv). */
  env?: NodeJS.ProcessEnv
  /** May a human be asked? Default: when stdin/stderr are terminals. */
  interactive?: boolean
  prompt?: SecretPrompt
  /** Do not read the keychain (its key was found not to open the vault). */
  skipKeychain?: boolean
  /** Store a key unlocked by passphrase in the keychain when it is available. Default true. */
  cacheInKeychain?: boolean
  /** Prompt attempts before WRONG_PASSPHRASE. Default 3. */
  attempts?: number
}

export interface ResolvedKey {
  masterKey: Buffer
  source: KeySource
  keychain: KeychainState
  /** The key is in the keychain after this call (found there or just stored). */
  inKeychain: boolean
}

/**
 * Finds the vault master key: the keychain first, else TRESOR_PASSPHRASE, else TRESOR_RECOVERY_KEY,
 * else a no-echo prompt on a terminal, else PASSPHRASE_REQUIRED. A wrong TRESOR_PASSPHRASE fails at
 * once (WRONG_PASSPHRASE, no prompt); a prompt allows `attempts` tries. A key unlocked by passphrase
 * is cached in the keychain when one is available (failures to cache are reported in `keychain`,
 * never thrown). The key is checked only against the key slots here; the caller confirms it opens
 * the vault and retries with `skipKeychain` if a cached key does not.
 */
export async function resolveVaultKey(options: ResolveKeyOptions): Promise<ResolvedKey> {
  // Take every secret out of process.env now, even when the keychain answers and they are not
  // needed: children this process starts later (scripts, jobs) must not inherit them.
  if ((options.env ?? process.env) === process.env) for (const name of SECRET_ENV_VARS) takeSecretEnv(name)
  const store = options.keyStore ?? defaultKeyStore(options.env)
  let keychain: KeychainState = { available: true, backend: store.backend }
  if (!options.skipKeychain) {
    try {
      const key = await store.getKey(options.vaultId)
      if (key) return { masterKey: key, source: 'keychain', keychain, inKeychain: true }
    } catch (err) {
      keychain = unavailableState(store, err)
    }
  }
  const resolved = await fromPassphrase(options)
  let inKeychain = false
  if (keychain.available && options.cacheInKeychain !== false) {
    try {
      await store.setKey(options.vaultId, resolved.masterKey)
      inKeychain = true
    } catch (err) {
      keychain = unavailableState(store, err)
    }
  }
  return { ...resolved, keychain, inKeychain }
}

async function fromPassphrase(options: ResolveKeyOptions): Promise<{ masterKey: Buffer; source: KeySource }> {
  const env = options.env ?? process.env
  const passphrase = takeSecretEnv('TRESOR_PASSPHRASE', env)
  if (passphrase !== undefined) {
    return { masterKey: await unwrapWithPassphrase(options.keySlots.passphrase, passphrase), source: 'passphrase-env' }
  }
  const recovery = takeSecretEnv('TRESOR_RECOVERY_KEY', env)
  if (recovery !== undefined) {
    return { masterKey: await unwrapWithRecoveryKey(options.keySlots.recovery, recovery), source: 'recovery-env' }
  }
  const interactive = options.interactive ?? canPrompt()
  if (!interactive) {
    throw new EngineError(
      'PASSPHRASE_REQUIRED',
      `The vault ${options.vaultId} is locked: its key is not in the system keychain and no passphrase was given. ` +
        'Run the command in a terminal to type it, or set TRESOR_PASSPHRASE.',
    )
  }
  const ask = options.prompt ?? promptSecret
  const attempts = options.attempts ?? 3
  for (let i = 1; ; i++) {
    const typed = await ask('Vault passphrase: ')
    try {
      return { masterKey: await unwrapWithPassphrase(options.keySlots.passphrase, typed), source: 'prompt' }
    } catch (err) {
      if (!(err instanceof EngineError && err.code === 'WRONG_PASSPHRASE') || i >= attempts) throw err
      process.stderr.write('Wrong passphrase, try again.\n')
    }
  }
}

function unavailableState(store: KeyStore, err: unknown): KeychainState {
  if (err instanceof EngineError && err.code === 'KEYCHAIN_UNAVAILABLE') {
    return { available: false, backend: store.backend, reason: err.userMessage }
  }
  return { available: false, backend: store.backend, reason: err instanceof Error ? err.message : String(err) }
}

/**
 * Asks for a new passphrase: TRESOR_NEW_PASSPHRASE (or, for `vault init`, TRESOR_PASSPHRASE) when
 * set, else twice on a terminal (they must match), else PASSPHRASE_REQUIRED.
 */
export async function chooseNewPassphrase(options: {
  env?: NodeJS.ProcessEnv
  interactive?: boolean
  prompt?: SecretPrompt
  /** Environment variables to take it from, in order. */
  envVars: SecretEnvVar[]
}): Promise<string> {
  const env = options.env ?? process.env
  for (const name of options.envVars) {
    const value = takeSecretEnv(name, env)
    if (value !== undefined) return value
  }
  const interactive = options.interactive ?? canPrompt()
  if (!interactive) {
    throw new EngineError('PASSPHRASE_REQUIRED', `A new passphrase is needed: run the command in a terminal, or set ${options.envVars.join(' or ')}.`)
  }
  const ask = options.prompt ?? promptSecret
  for (let i = 0; i < 3; i++) {
    const first = await ask('New vault passphrase: ')
    if (first.trim().length === 0) {
      process.stderr.write('The passphrase must not be empty.\n')
      continue
    }
    const second = await ask('Repeat the passphrase: ')
    if (first.normalize('NFC') === second.normalize('NFC')) return first
    process.stderr.write('The two passphrases differ, try again.\n')
  }
  throw new EngineError('INVALID_INPUT', 'No passphrase was chosen (the entries were empty or did not match).')
}
