import { EngineError } from '../errors.js'
import { MASTER_KEY_BYTES } from './wrap.js'

/** Service name of every Tresor keychain entry; the account is the vault id. */
export const KEYCHAIN_SERVICE = 'Tresor'
/** Account suffix of the entry mirroring the vault's last seen generation (I11); not secret. */
const GENERATION_SUFFIX = '#generation'
/** A keychain that does not answer within this time is treated as unavailable. */
const KEYCHAIN_TIMEOUT_MS = 10_000

/** Whether the OS keychain can be used, and if not why (shown by `tresor vault info`). */
export interface KeychainState {
  available: boolean
  backend: string
  /** Present when unavailable: what failed and what to do. */
  reason?: string
}

/**
 * Where unwrapped vault keys are cached so scheduled work runs unattended. Every method throws
 * EngineError KEYCHAIN_UNAVAILABLE when no keychain is reachable; callers fall back to the
 * passphrase. Secrets stored are at most 64 bytes (base64 of the 32-byte key: 44 bytes).
 */
export interface KeyStore {
  readonly backend: string
  state(): Promise<KeychainState>
  /** The cached key of a vault, or undefined. A malformed entry reads as undefined. */
  getKey(vaultId: string): Promise<Buffer | undefined>
  setKey(vaultId: string, key: Buffer): Promise<void>
  /** Removes the key and the generation entry. True when a key was there. */
  deleteKey(vaultId: string): Promise<boolean>
  /** Last generation of the vault seen on this computer (I11 mirror), or undefined. */
  getGeneration(vaultId: string): Promise<number | undefined>
  setGeneration(vaultId: string, generation: number): Promise<void>
}

interface KeytarApi {
  getPassword(service: string, account: string): Promise<string | null>
  setPassword(service: string, account: string, password: string): Promise<void>
  deletePassword(service: string, account: string): Promise<boolean>
}

/**
 * The OS keychain through keytar (libsecret / Secret Service on Linux, Keychain on macOS,
 * Credential Manager on Windows). keytar is loaded lazily, so a missing native module or a missing
 * D-Bus session only makes the keychain unavailable.
 */
export class KeytarKeyStore implements KeyStore {
  readonly backend = process.platform === 'linux' ? 'secret-service' : process.platform === 'darwin' ? 'macos-keychain' : 'windows-credential-manager'
  readonly #service: string
  #api: Promise<KeytarApi> | undefined

  constructor(options: { service?: string } = {}) {
    this.#service = options.service ?? KEYCHAIN_SERVICE
  }

  async state(): Promise<KeychainState> {
    try {
      await this.#call('probe', (k) => k.getPassword(this.#service, '#probe'))
      return { available: true, backend: this.backend }
    } catch (err) {
      return { available: false, backend: this.backend, reason: err instanceof EngineError ? err.userMessage : String(err) }
    }
  }

  async getKey(vaultId: string): Promise<Buffer | undefined> {
    const value = await this.#call('read', (k) => k.getPassword(this.#service, vaultId))
    return value === null ? undefined : decodeKey(value)
  }

  async setKey(vaultId: string, key: Buffer): Promise<void> {
    const secret = encodeKey(key)
    await this.#call('write', (k) => k.setPassword(this.#service, vaultId, secret))
  }

  async deleteKey(vaultId: string): Promise<boolean> {
    const had = await this.#call('delete', (k) => k.deletePassword(this.#service, vaultId))
    await this.#call('delete', (k) => k.deletePassword(this.#service, vaultId + GENERATION_SUFFIX))
    return had
  }

  async getGeneration(vaultId: string): Promise<number | undefined> {
    const value = await this.#call('read', (k) => k.getPassword(this.#service, vaultId + GENERATION_SUFFIX))
    return parseGeneration(value)
  }

  async setGeneration(vaultId: string, generation: number): Promise<void> {
    await this.#call('write', (k) => k.setPassword(this.#service, vaultId + GENERATION_SUFFIX, String(generation)))
  }

  async #call<T>(action: string, fn: (api: KeytarApi) => Promise<T>): Promise<T> {
    if (process.platform === 'linux' && !process.env.DBUS_SESSION_BUS_ADDRESS) {
      throw unavailable(this.backend, 'no D-Bus session bus (DBUS_SESSION_BUS_ADDRESS is not set)')
    }
    let api: KeytarApi
    try {
      this.#api ??= loadKeytar()
      api = await this.#api
    } catch (err) {
      this.#api = undefined
      throw unavailable(this.backend, 'the keytar module could not be loaded', err)
    }
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(unavailable(this.backend, `no answer within ${KEYCHAIN_TIMEOUT_MS / 1000} s`)), KEYCHAIN_TIMEOUT_MS)
      timer.unref()
    })
    try {
      return await Promise.race([fn(api), timeout])
    } catch (err) {
      if (err instanceof EngineError) throw err
      throw unavailable(this.backend, `${action} failed: ${err instanceof Error ? err.message : String(err)}`, err)
    } finally {
      clearTimeout(timer)
    }
  }
}

/** A keychain kept in memory (tests, and hosts that must not touch the OS keychain). */
export class MemoryKeyStore implements KeyStore {
  readonly backend = 'memory'
  readonly entries = new Map<string, string>()
  constructor(private readonly isAvailable = true) {}

  async state(): Promise<KeychainState> {
    return this.isAvailable ? { available: true, backend: this.backend } : { available: false, backend: this.backend, reason: 'disabled' }
  }
  async getKey(vaultId: string): Promise<Buffer | undefined> {
    this.#check()
    const value = this.entries.get(vaultId)
    return value === undefined ? undefined : decodeKey(value)
  }
  async setKey(vaultId: string, key: Buffer): Promise<void> {
    this.#check()
    this.entries.set(vaultId, encodeKey(key))
  }
  async deleteKey(vaultId: string): Promise<boolean> {
    this.#check()
    this.entries.delete(vaultId + GENERATION_SUFFIX)
    return this.entries.delete(vaultId)
  }
  async getGeneration(vaultId: string): Promise<number | undefined> {
    this.#check()
    return parseGeneration(this.entries.get(vaultId + GENERATION_SUFFIX) ?? null)
  }
  async setGeneration(vaultId: string, generation: number): Promise<void> {
    this.#check()
    this.entries.set(vaultId + GENERATION_SUFFIX, String(generation))
  }
  #check(): void {
    if (!this.isAvailable) throw unavailable(this.backend, 'disabled')
  }
}

/** The keychain the engine uses by default: TRESOR_KEYCHAIN=none disables it (e.g. shared machines). */
export function defaultKeyStore(env: NodeJS.ProcessEnv = process.env): KeyStore {
  if (env.TRESOR_KEYCHAIN === 'none') return new MemoryKeyStore(false)
  return new KeytarKeyStore()
}

async function loadKeytar(): Promise<KeytarApi> {
  const mod = (await import('keytar')) as unknown as { default?: KeytarApi } & KeytarApi
  const api = mod.default ?? mod
  if (typeof api.getPassword !== 'function') throw new Error('keytar has no getPassword')
  return api
}

function encodeKey(key: Buffer): string {
  if (key.length !== MASTER_KEY_BYTES) throw new Error(`vault key must be ${MASTER_KEY_BYTES} bytes`)
  return key.toString('base64')
}

function decodeKey(value: string): Buffer | undefined {
  if (!/^[A-Za-z0-9+/]{43}=$/.test(value)) return undefined
  const key = Buffer.from(value, 'base64')
  return key.length === MASTER_KEY_BYTES ? key : undefined
}

function parseGeneration(value: string | null): number | undefined {
  if (value === null || !/^\d{1,15}$/.test(value)) return undefined
  return Number(value)
}

function unavailable(backend: string, why: string, cause?: unknown): EngineError {
  return new EngineError(
    'KEYCHAIN_UNAVAILABLE',
    `The system keychain (${backend}) is not available: ${why}. Tresor will ask for the vault passphrase instead ` +
      '(or set TRESOR_PASSPHRASE); scheduled backups need the keychain (on Linux: a running Secret Service such as gnome-keyring, unlocked).',
    { cause },
  )
}
