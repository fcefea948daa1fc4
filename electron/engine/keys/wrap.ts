import { createCipheriv, createDecipheriv, hkdf, randomBytes, scrypt, timingSafeEqual } from 'node:crypto'
import { EngineError } from '../errors.js'

/** Length of a vault master key in bytes (AES-256 / keyed BLAKE3). */
export const MASTER_KEY_BYTES = 32

/**
 * scrypt cost used when wrapping (N = 2^17, r = 8, p = 1: 128 MiB, a fraction of a second).
 * Reading accepts the range below; anything outside is refused before any work is done, so a
 * tampered header can neither make unlocking cheap to brute-force (downgrade) nor exhaust memory.
 */
export const DEFAULT_SCRYPT = { N: 2 ** 17, r: 8, p: 1 } as const
export const SCRYPT_BOUNDS = {
  minLog2N: 15,
  maxLog2N: 20,
  r: [8, 16] as const,
  p: [1, 4] as const,
  /** 128 * N * r: at most 1 GiB of scrypt memory. */
  maxMemoryBytes: 1024 * 1024 * 1024,
  saltBytes: [16, 64] as const,
}

/**
 * scrypt cost for new key slots: DEFAULT_SCRYPT, or N = 2^TRESOR_SCRYPT_LOG2N when that variable is
 * set (15..20: the range readers accept, so it can never produce a slot below the minimum). For
 * slow devices and for tests that create many vaults.
 */
export function scryptParamsFromEnv(env: NodeJS.ProcessEnv = process.env): { N: number; r: number; p: number } {
  const raw = env.TRESOR_SCRYPT_LOG2N
  if (raw === undefined || raw === '') return DEFAULT_SCRYPT
  const log2N = Number(raw)
  if (!Number.isInteger(log2N) || log2N < SCRYPT_BOUNDS.minLog2N || log2N > SCRYPT_BOUNDS.maxLog2N) {
    throw new EngineError('INVALID_INPUT', `TRESOR_SCRYPT_LOG2N must be an integer from ${SCRYPT_BOUNDS.minLog2N} to ${SCRYPT_BOUNDS.maxLog2N} (it is "${raw}").`)
  }
  return { N: 2 ** log2N, r: DEFAULT_SCRYPT.r, p: DEFAULT_SCRYPT.p }
}

/** A passphrase longer than this (after NFC, in UTF-8 bytes) is refused: nobody types 64 KiB. */
export const MAX_PASSPHRASE_BYTES = 64 * 1024

export type KdfParams =
  | { name: 'scrypt'; N: number; r: number; p: number; salt: string }
  | { name: 'hkdf-sha256'; salt: string }

/**
 * The master key encrypted under a key-encryption key (KEK), as stored in the vault's key slots.
 * Plain JSON (base64 fields). The KDF description is bound into the AES-GCM associated data, so
 * editing any parameter makes the slot fail authentication instead of weakening it.
 */
export interface WrappedKey {
  v: 1
  /** What derives the KEK: the user's passphrase or the one-time recovery key. */
  kind: 'passphrase' | 'recovery'
  kdf: KdfParams
  cipher: 'aes-256-gcm'
  nonce: string
  ciphertext: string
  tag: string
  /** ISO 8601 UTC; informational (not authenticated). */
  createdAt?: string
}

/** A fresh random 256-bit vault master key. The caller keeps it in memory only. */
export function generateMasterKey(): Buffer {
  return randomBytes(MASTER_KEY_BYTES)
}

/** NFC form of a passphrase, as UTF-8: "é" typed precomposed or decomposed unlocks the same vault. */
export function normalizePassphrase(passphrase: string): Buffer {
  return Buffer.from(passphrase.normalize('NFC'), 'utf8')
}

/**
 * Wraps `masterKey` under a KEK derived from `passphrase` (NFC-normalised) with scrypt and a fresh
 * salt, AES-256-GCM with a fresh nonce. Refuses an empty or whitespace-only passphrase
 * (INVALID_INPUT). `scryptParams` default to scryptParamsFromEnv() (normally DEFAULT_SCRYPT).
 */
export async function wrapWithPassphrase(
  masterKey: Buffer,
  passphrase: string,
  scryptParams: { N: number; r: number; p: number } = scryptParamsFromEnv(),
): Promise<WrappedKey> {
  assertMasterKey(masterKey)
  const secret = checkNewPassphrase(passphrase)
  const kdf: KdfParams = { name: 'scrypt', ...scryptParams, salt: randomBytes(32).toString('base64') }
  checkKdf(kdf)
  const kek = await deriveKek(kdf, secret)
  return seal('passphrase', kdf, kek, masterKey)
}

/**
 * Recovers the master key from a passphrase slot. Wrong passphrase → WRONG_PASSPHRASE; a slot that
 * is malformed or whose KDF parameters are out of bounds → VAULT_DAMAGED (checked before any KDF work).
 */
export async function unwrapWithPassphrase(wrapped: unknown, passphrase: string): Promise<Buffer> {
  const slot = parseWrappedKey(wrapped, 'passphrase')
  const secret = normalizePassphrase(passphrase)
  if (secret.length === 0 || secret.length > MAX_PASSPHRASE_BYTES) throw wrongPassphrase()
  const kek = await deriveKek(slot.kdf, secret)
  const key = open(slot, kek)
  if (!key) throw wrongPassphrase()
  return key
}

/** Wraps the master key under a high-entropy secret (the recovery key's bytes) through HKDF. */
export async function wrapWithSecret(masterKey: Buffer, secret: Buffer): Promise<WrappedKey> {
  assertMasterKey(masterKey)
  const kdf: KdfParams = { name: 'hkdf-sha256', salt: randomBytes(32).toString('base64') }
  const kek = await deriveKek(kdf, secret)
  return seal('recovery', kdf, kek, masterKey)
}

/** Opens a recovery slot; undefined when the secret does not open it. Malformed slot → VAULT_DAMAGED. */
export async function unwrapWithSecret(wrapped: unknown, secret: Buffer): Promise<Buffer | undefined> {
  const slot = parseWrappedKey(wrapped, 'recovery')
  const kek = await deriveKek(slot.kdf, secret)
  return open(slot, kek)
}

/** Checks a passphrase chosen by the user; returns its normalised bytes. */
export function checkNewPassphrase(passphrase: string): Buffer {
  if (typeof passphrase !== 'string' || passphrase.trim().length === 0) {
    throw new EngineError('INVALID_INPUT', 'The passphrase is empty. Choose a passphrase: it is the only way to open the vault on another computer.')
  }
  const secret = normalizePassphrase(passphrase)
  if (secret.length > MAX_PASSPHRASE_BYTES) {
    throw new EngineError('INVALID_INPUT', `The passphrase is longer than ${MAX_PASSPHRASE_BYTES} bytes. Choose a shorter one.`)
  }
  return secret
}

/** Validates the JSON of a key slot (shape, sizes, KDF bounds). Throws VAULT_DAMAGED. */
export function parseWrappedKey(value: unknown, kind: WrappedKey['kind']): WrappedKey {
  const bad = (why: string) =>
    new EngineError('VAULT_DAMAGED', `The vault's ${kind} key slot is damaged or was tampered with (${why}). Use the recovery key, or restore the vault's config from a copy.`)
  if (typeof value !== 'object' || value === null) throw bad('missing')
  const v = value as Record<string, unknown>
  if (v.v !== 1) throw bad(`unknown slot version ${JSON.stringify(v.v)}`)
  if (v.kind !== kind) throw bad(`slot is for ${JSON.stringify(v.kind)}`)
  if (v.cipher !== 'aes-256-gcm') throw bad(`cipher ${JSON.stringify(v.cipher)} is not allowed`)
  const nonce = b64(v.nonce)
  const ciphertext = b64(v.ciphertext)
  const tag = b64(v.tag)
  if (nonce?.length !== 12) throw bad('nonce')
  if (ciphertext?.length !== MASTER_KEY_BYTES) throw bad('ciphertext')
  if (tag?.length !== 16) throw bad('tag')
  const kdf = v.kdf as Record<string, unknown> | null | undefined
  if (typeof kdf !== 'object' || kdf === null) throw bad('no key derivation')
  let parsed: KdfParams
  if (kdf.name === 'scrypt' && kind === 'passphrase') {
    parsed = { name: 'scrypt', N: kdf.N as number, r: kdf.r as number, p: kdf.p as number, salt: kdf.salt as string }
  } else if (kdf.name === 'hkdf-sha256' && kind === 'recovery') {
    parsed = { name: 'hkdf-sha256', salt: kdf.salt as string }
  } else {
    throw bad(`key derivation ${JSON.stringify(kdf.name)} is not allowed here`)
  }
  const why = kdfProblem(parsed)
  if (why) throw bad(why)
  return {
    v: 1,
    kind,
    kdf: parsed,
    cipher: 'aes-256-gcm',
    nonce: v.nonce as string,
    ciphertext: v.ciphertext as string,
    tag: v.tag as string,
    ...(typeof v.createdAt === 'string' ? { createdAt: v.createdAt } : {}),
  }
}

function checkKdf(kdf: KdfParams): void {
  const why = kdfProblem(kdf)
  if (why) throw new EngineError('INVALID_INPUT', `Key derivation parameters refused: ${why}.`)
}

/** Why the parameters are refused, or undefined when they are within bounds. */
export function kdfProblem(kdf: KdfParams): string | undefined {
  const salt = b64(kdf.salt)
  const [minSalt, maxSalt] = SCRYPT_BOUNDS.saltBytes
  if (!salt || salt.length < minSalt || salt.length > maxSalt) return 'salt length'
  if (kdf.name === 'hkdf-sha256') return undefined
  const { N, r, p } = kdf
  if (!Number.isSafeInteger(N) || !Number.isSafeInteger(r) || !Number.isSafeInteger(p)) return 'scrypt parameters are not integers'
  const log2N = Math.log2(N)
  if (!Number.isInteger(log2N)) return `scrypt N=${N} is not a power of two`
  if (log2N < SCRYPT_BOUNDS.minLog2N) return `scrypt N=2^${log2N} is below the minimum 2^${SCRYPT_BOUNDS.minLog2N}`
  if (log2N > SCRYPT_BOUNDS.maxLog2N) return `scrypt N=2^${log2N} is above the maximum 2^${SCRYPT_BOUNDS.maxLog2N}`
  if (r < SCRYPT_BOUNDS.r[0] || r > SCRYPT_BOUNDS.r[1]) return `scrypt r=${r} is outside ${SCRYPT_BOUNDS.r.join('..')}`
  if (p < SCRYPT_BOUNDS.p[0] || p > SCRYPT_BOUNDS.p[1]) return `scrypt p=${p} is outside ${SCRYPT_BOUNDS.p.join('..')}`
  if (128 * N * r > SCRYPT_BOUNDS.maxMemoryBytes) return `scrypt would need ${(128 * N * r) / 2 ** 20} MiB`
  return undefined
}

async function deriveKek(kdf: KdfParams, secret: Buffer): Promise<Buffer> {
  const salt = Buffer.from(kdf.salt, 'base64')
  if (kdf.name === 'hkdf-sha256') {
    return new Promise((resolve, reject) =>
      hkdf('sha256', secret, salt, 'tresor recovery key v1', 32, (err, key) => (err ? reject(err) : resolve(Buffer.from(key)))),
    )
  }
  const { N, r, p } = kdf
  const maxmem = 128 * N * r * p + 128 * r * p + 32 * 1024 * 1024
  return new Promise((resolve, reject) =>
    scrypt(secret, salt, 32, { N, r, p, maxmem }, (err, key) => (err ? reject(err) : resolve(key))),
  )
}

/** The associated data: everything that decides how the KEK is derived, in a fixed order. */
function associatedData(kind: WrappedKey['kind'], kdf: KdfParams): Buffer {
  const fields = kdf.name === 'scrypt' ? [kdf.name, kdf.N, kdf.r, kdf.p, kdf.salt] : [kdf.name, kdf.salt]
  return Buffer.from(JSON.stringify(['tresor-wrapped-key', 1, kind, 'aes-256-gcm', ...fields]), 'utf8')
}

function seal(kind: WrappedKey['kind'], kdf: KdfParams, kek: Buffer, masterKey: Buffer): WrappedKey {
  const nonce = randomBytes(12)
  const cipher = createCipheriv('aes-256-gcm', kek, nonce)
  cipher.setAAD(associatedData(kind, kdf))
  const ciphertext = Buffer.concat([cipher.update(masterKey), cipher.final()])
  kek.fill(0)
  return {
    v: 1,
    kind,
    kdf,
    cipher: 'aes-256-gcm',
    nonce: nonce.toString('base64'),
    ciphertext: ciphertext.toString('base64'),
    tag: cipher.getAuthTag().toString('base64'),
    createdAt: new Date().toISOString(),
  }
}

function open(slot: WrappedKey, kek: Buffer): Buffer | undefined {
  try {
    const decipher = createDecipheriv('aes-256-gcm', kek, Buffer.from(slot.nonce, 'base64'))
    decipher.setAAD(associatedData(slot.kind, slot.kdf))
    decipher.setAuthTag(Buffer.from(slot.tag, 'base64'))
    const key = Buffer.concat([decipher.update(Buffer.from(slot.ciphertext, 'base64')), decipher.final()])
    return key.length === MASTER_KEY_BYTES ? key : undefined
  } catch {
    return undefined
  } finally {
    kek.fill(0)
  }
}

function b64(value: unknown): Buffer | undefined {
  if (typeof value !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(value) || value.length % 4 !== 0) return undefined
  return Buffer.from(value, 'base64')
}

function assertMasterKey(key: Buffer): void {
  if (!Buffer.isBuffer(key) || key.length !== MASTER_KEY_BYTES) throw new Error(`master key must be ${MASTER_KEY_BYTES} bytes`)
}

function wrongPassphrase(): EngineError {
  return new EngineError('WRONG_PASSPHRASE', 'The passphrase is wrong: it does not unlock this vault. Check it (and the keyboard layout) and try again, or use the recovery key.')
}

/** Constant-time equality of two keys (for tests and the keychain check). */
export function sameKey(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b)
}
