import { resolve as resolvePath } from 'node:path'
import { EngineError } from '../errors.js'
import { openCatalog, type Db } from '../catalog/index.js'
import { getCurrentVault, getVault, getVaultByPath, registerVault, replacePoints, updateLastGeneration, resetLastGeneration, type VaultRow } from '../catalog/vaults.js'
import { openVault, readVaultHeader, type LocalVault, type LockOptions } from '../vault/index.js'
import { defaultKeyStore, type KeychainState, type KeyStore } from './keychain.js'
import type { SecretPrompt } from './prompt.js'
import { resolveVaultKey, type KeySource } from './resolve.js'

export interface OpenVaultOptions {
  /** Use this vault folder instead of the current one (`--vault`). It is registered if unknown. */
  vaultOverride?: string
  /** Make the opened vault the current one of this data folder. */
  makeCurrent?: boolean
  /** May a passphrase be asked on the terminal? Default: when stdin/stderr are terminals. */
  interactive?: boolean
  /**
   * Accept a vault whose generation is lower than the last one seen (an older copy put back on
   * purpose): the remembered generation is reset to the vault's. Default false → VAULT_ROLLBACK.
   */
  acceptRollback?: boolean
  /** Use this catalog (the caller keeps owning it) instead of opening `home`'s. */
  catalog?: Db
  /**
   * Rebuild the catalog's point rows from the vault's manifests even when its generation did not
   * move (`vault open`); a manifest that cannot be read then fails the open instead of being skipped.
   */
  rebuildPoints?: boolean
  /** Lock behaviour of the opened vault (e.g. how long a job waits for another job's lock). */
  locks?: LockOptions
  keyStore?: KeyStore
  env?: NodeJS.ProcessEnv
  prompt?: SecretPrompt
}

export interface OpenedVault {
  vault: LocalVault
  catalog: Db
  vaultId: string
  path: string
  /** Where the key came from. */
  keySource: KeySource
  keychain: KeychainState
  /** The key is cached in the keychain after opening. */
  keyInKeychain: boolean
  /**
   * Point rows written while opening: with `rebuildPoints`, or when the vault's generation differed
   * from the one this catalog last saw, its rows were replaced from the vault's manifests.
   * Undefined when nothing was replaced (rows already current, or a manifest could not be read).
   */
  pointsReconciled: number | undefined
  /** Records the vault's current generation as the last seen (catalog and keychain). Call after a commit. */
  recordGeneration(): Promise<number>
  /** Records the generation, closes the vault, and closes the catalog unless it was passed in. */
  close(): Promise<void>
}

/**
 * The one way engine callers (backup, restore, verify, prune, the UI host) get an opened vault for a
 * data folder. Finds the vault (`vaultOverride`, else the catalog's current one), finds its key
 * (keychain → TRESOR_PASSPHRASE → TRESOR_RECOVERY_KEY → prompt; a stale keychain key is ignored),
 * refuses a vault older than the last generation seen by the catalog or the keychain (VAULT_ROLLBACK,
 * I11), and records the generation it found. The caller must `close()` the result.
 * Errors: VAULT_NOT_CONFIGURED (no current vault), VAULT_NOT_FOUND, PASSPHRASE_REQUIRED,
 * WRONG_PASSPHRASE, VAULT_ROLLBACK, VAULT_DAMAGED.
 */
export async function openCurrentVault(home: string, options: OpenVaultOptions = {}): Promise<OpenedVault> {
  const ownsCatalog = options.catalog === undefined
  const catalog = options.catalog ?? openCatalog(home)
  try {
    return await openWithCatalog(home, catalog, ownsCatalog, options)
  } catch (err) {
    if (ownsCatalog) catalog.close()
    throw err
  }
}

async function openWithCatalog(home: string, catalog: Db, ownsCatalog: boolean, options: OpenVaultOptions): Promise<OpenedVault> {
  const path = options.vaultOverride !== undefined ? resolvePath(options.vaultOverride) : currentVaultRow(catalog, home).path
  const header = await readVaultHeader(path)
  const known = getVaultByPath(catalog, path)
  if (options.vaultOverride === undefined && known && known.id !== header.vaultId) {
    throw new EngineError(
      'VAULT_NOT_FOUND',
      `The folder "${path}" now holds another vault (${header.vaultId}) than the one registered (${known.id}). ` +
        `Register it with "tresor vault open ${path}" if that is intended.`,
    )
  }
  const store = options.keyStore ?? defaultKeyStore(options.env)
  const keyOptions = {
    vaultId: header.vaultId,
    keySlots: header.keySlots,
    keyStore: store,
    ...(options.env ? { env: options.env } : {}),
    ...(options.interactive !== undefined ? { interactive: options.interactive } : {}),
    ...(options.prompt ? { prompt: options.prompt } : {}),
  }
  let key = await resolveVaultKey(keyOptions)
  const remembered = Math.max(getVault(catalog, header.vaultId)?.lastGeneration ?? 0, await keychainGeneration(store, header.vaultId, key.keychain))
  const lastGeneration = options.acceptRollback ? 0 : remembered
  let vault: LocalVault
  let pointsReconciled: number | undefined
  try {
    vault = await openVault(path, key.masterKey, { lastGeneration, ...(options.locks ? { locks: options.locks } : {}) })
  } catch (err) {
    if (!(key.source === 'keychain' && err instanceof EngineError && err.code === 'WRONG_PASSPHRASE')) throw err
    // The keychain holds a key that no longer opens this vault (a vault re-created with the same id
    // cannot happen, but a damaged entry can): forget it and ask for the passphrase.
    await store.deleteKey(header.vaultId).catch(() => false)
    key = await resolveVaultKey({ ...keyOptions, skipKeychain: true })
    vault = await openVault(path, key.masterKey, { lastGeneration, ...(options.locks ? { locks: options.locks } : {}) })
  }
  try {
    const generation = await vault.generation()
    if (generation < lastGeneration) {
      throw new EngineError(
        'VAULT_ROLLBACK',
        `The vault at "${path}" is at generation ${generation}, but this computer has already seen generation ${lastGeneration}: ` +
          'it is an older copy of the vault, or recent changes were lost. Nothing was written. If you restored an older copy on purpose, ' +
          `run "tresor vault open ${path} --accept-rollback".`,
      )
    }
    const seenHere = getVault(catalog, header.vaultId)?.lastGeneration ?? 0
    const row = registerVault(catalog, { id: header.vaultId, path, lastGeneration: generation }, { makeCurrent: options.makeCurrent === true || !getCurrentVault(catalog) })
    if (options.acceptRollback && generation < remembered) resetLastGeneration(catalog, row.id, generation)
    if (options.rebuildPoints) {
      pointsReconciled = replacePoints(catalog, header.vaultId, await vault.listPoints())
    } else if (generation !== seenHere) {
      // The vault moved on without this catalog: a job killed between its vault commit and its
      // catalog write, a prune cut short, another computer. The vault is the truth (RELIABILITY #3).
      // A manifest that cannot be read leaves the rows as they were: `tresor catalog rebuild` and
      // `tresor verify` name the problem, and the job that opened the vault still runs.
      pointsReconciled = await vault
        .listPoints()
        .then((points) => replacePoints(catalog, header.vaultId, points))
        .catch(() => undefined) // rows kept as they were: see above
    }
  } catch (err) {
    await vault.close()
    throw err
  }
  let keychain = key.keychain
  const recordGeneration = async (): Promise<number> => {
    const generation = await vault.generation()
    const stored = updateLastGeneration(catalog, header.vaultId, generation)
    if (keychain.available) {
      try {
        await store.setGeneration(header.vaultId, stored)
      } catch (err) {
        keychain = { available: false, backend: store.backend, reason: err instanceof EngineError ? err.userMessage : String(err) }
      }
    }
    return stored
  }
  if (options.acceptRollback) {
    const generation = await vault.generation()
    if (keychain.available) await store.setGeneration(header.vaultId, generation).catch(() => undefined)
  } else {
    await recordGeneration()
  }
  let closed = false
  return {
    vault,
    catalog,
    vaultId: header.vaultId,
    path,
    keySource: key.source,
    get keychain() {
      return keychain
    },
    keyInKeychain: key.inKeychain,
    pointsReconciled,
    recordGeneration,
    async close() {
      if (closed) return
      closed = true
      try {
        await recordGeneration()
      } finally {
        await vault.close()
        if (ownsCatalog) catalog.close()
      }
    },
  }
}

function currentVaultRow(catalog: Db, home: string): VaultRow {
  const row = getCurrentVault(catalog)
  if (!row) {
    throw new EngineError(
      'VAULT_NOT_CONFIGURED',
      `No vault is set up for the data folder "${home}". Create one with "tresor vault init <dir>" or register an existing one with "tresor vault open <dir>".`,
    )
  }
  return row
}

async function keychainGeneration(store: KeyStore, vaultId: string, state: KeychainState): Promise<number> {
  if (!state.available) return 0
  try {
    return (await store.getGeneration(vaultId)) ?? 0
  } catch {
    return 0
  }
}
