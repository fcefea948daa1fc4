/**
 * Vault cryptography (see FORMAT.md).
 * - Sub-keys: HKDF-SHA256(masterKey, salt = vault id, info = "tresor/v1/<purpose>"), 32 bytes each:
 *   `config` (HMAC of the config file), `check` (key check value), `chunkId` (BLAKE3 key),
 *   `data` (AES-256-GCM of chunk records), `meta` (AES-256-GCM of indexes, manifests, block maps).
 * - Every encrypted object is `nonce(12) | ciphertext | tag(16)`, AES-256-GCM with a random 96-bit
 *   nonce and associated data naming the object (I3, I10).
 */
import { createCipheriv, createDecipheriv, createHmac, hkdfSync, randomBytes, timingSafeEqual, type KeyObject, createSecretKey } from 'node:crypto'
import { createRequire } from 'node:module'
import type { Blake3Hasher as Blake3HasherClass } from '@napi-rs/blake-hash'
import { compress as zstdCompress, decompress as zstdDecompress } from 'zstd-napi'
import { EngineError } from '../errors.js'

export const NONCE_BYTES = 12
export const TAG_BYTES = 16
export const SEAL_OVERHEAD = NONCE_BYTES + TAG_BYTES
export const CHUNK_ID_BYTES = 32

export interface VaultKeys {
  config: Buffer
  check: Buffer
  chunkId: Buffer
  data: Buffer
  meta: Buffer
}

export function deriveKeys(masterKey: Buffer, vaultId: string): VaultKeys {
  if (!Buffer.isBuffer(masterKey) || masterKey.length !== 32) {
    throw new EngineError('INVALID_INPUT', 'The vault master key must be 32 bytes.')
  }
  const salt = Buffer.from(vaultId, 'utf8')
  const sub = (purpose: string): Buffer => Buffer.from(hkdfSync('sha256', masterKey, salt, `tresor/v1/${purpose}`, 32))
  return { config: sub('config'), check: sub('check'), chunkId: sub('chunk-id'), data: sub('data'), meta: sub('meta') }
}

export function hmacHex(key: Buffer, text: string): string {
  return createHmac('sha256', key).update(text, 'utf8').digest('hex')
}

export function equalHex(a: string, b: string): boolean {
  // Lower-case hex only: Buffer.from(…, 'hex') ignores case and stops at the first bad digit, so a
  // flipped bit could otherwise leave a tag "equal".
  if (!/^[0-9a-f]+$/.test(a) || !/^[0-9a-f]+$/.test(b) || a.length !== b.length) return false
  const x = Buffer.from(a, 'hex')
  const y = Buffer.from(b, 'hex')
  return x.length === y.length && x.length > 0 && timingSafeEqual(x, y)
}

let blake3: typeof Blake3HasherClass | undefined

/**
 * The BLAKE3 binding, loaded on first use (synchronously, it is CommonJS): ~30 ms of start-up that
 * commands hashing no chunk (an unchanged backup, listing, pruning) never pay.
 */
function blake3Hasher(): typeof Blake3HasherClass {
  blake3 ??= (createRequire(import.meta.url)('@napi-rs/blake-hash') as { Blake3Hasher: typeof Blake3HasherClass }).Blake3Hasher
  return blake3
}

/** Loads the BLAKE3 binding now (a chunk worker, before its first task: chunkHandler.ts `preloadChunkModules`). */
export function preloadBlake3(): void {
  blake3Hasher()
}

/**
 * Keyed BLAKE3-256 with one hasher reset between inputs. A hasher made per call cost ~15 µs of
 * binding overhead, as much as hashing 64 KiB (2.3 against 5.0 GiB/s for 64 KiB blocks here); reset
 * keeps the key.
 */
export class ChunkIdHasher {
  private readonly hasher: Blake3HasherClass
  constructor(key: Uint8Array) {
    if (key.length !== 32) throw new EngineError('INVALID_INPUT', 'The chunk id key must be 32 bytes.')
    this.hasher = blake3Hasher().newKeyed(Buffer.from(key))
  }

  /** The chunk id of `data`. */
  of(data: Uint8Array): Buffer {
    const view = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength)
    this.hasher.reset()
    this.hasher.update(view)
    return this.hasher.digestBuffer()
  }
}

/** Keyed BLAKE3-256 of one plaintext block: the chunk id (tests, one-offs; hot paths hold a ChunkIdHasher). */
export function chunkIdOf(key: Buffer, data: Uint8Array): Buffer {
  return new ChunkIdHasher(key).of(data)
}

/**
 * Record flag (FORMAT.md "Chunk record", format 3): the record is a whole block whose parts are
 * addressed inside it by the sub-entries that follow its index entry (pack.ts FLAG_PART). Its
 * associated data carries a zero id, since a reader reaching it from a part does not know the
 * block's id; its content is still checked by keyed BLAKE3 (I3).
 */
export const FLAG_CONTAINER = 4

const CHUNK_AAD_PREFIX = Buffer.from('tresor/v1/chunk', 'ascii')
export const CHUNK_AAD_BYTES = CHUNK_AAD_PREFIX.length + 16 + 4 + 1 + CHUNK_ID_BYTES

/** Associated data of a chunk record: chunk id, pack id, ordinal in the pack and flags (I10). */
export function chunkAad(packId: Uint8Array, ordinal: number, flags: number, chunkId: Uint8Array, out?: Buffer): Buffer {
  const aad = out ?? Buffer.allocUnsafe(CHUNK_AAD_BYTES)
  let p = CHUNK_AAD_PREFIX.copy(aad, 0)
  p += Buffer.from(packId.buffer, packId.byteOffset, 16).copy(aad, p)
  aad.writeUInt32LE(ordinal >>> 0, p)
  p += 4
  aad[p++] = flags
  // a container record (format 3) is bound to no id: a reader may reach it from any of its parts
  if (flags & FLAG_CONTAINER) aad.fill(0, p, p + CHUNK_ID_BYTES)
  else Buffer.from(chunkId.buffer, chunkId.byteOffset, CHUNK_ID_BYTES).copy(aad, p)
  return aad
}

/** Encrypts a metadata object (flags byte + optionally zstd-compressed payload). */
export function sealObject(key: Buffer | KeyObject, aad: string, plaintext: Uint8Array, compress: boolean): Buffer {
  let body: Uint8Array = plaintext
  let flags = 0
  if (compress && plaintext.length > 64) {
    const z = zstdCompress(plaintext, { compressionLevel: 3 })
    if (z.length < plaintext.length) {
      body = z
      flags = 1
    }
  }
  const nonce = randomBytes(NONCE_BYTES)
  const cipher = createCipheriv('aes-256-gcm', key, nonce)
  cipher.setAAD(Buffer.from(aad, 'utf8'))
  const parts = [nonce, cipher.update(Buffer.from([flags])), cipher.update(body), cipher.final(), cipher.getAuthTag()]
  return Buffer.concat(parts)
}

/** Decrypts a metadata object; any mismatch (wrong key, flipped bit, wrong name) is VAULT_DAMAGED. */
export function openObject(key: Buffer | KeyObject, aad: string, sealed: Uint8Array, what: string, maxBytes = 1 << 30): Buffer {
  if (sealed.length < SEAL_OVERHEAD + 1) throw damaged(what, 'is too short')
  const buf = Buffer.from(sealed.buffer, sealed.byteOffset, sealed.length)
  let plain: Buffer
  try {
    const decipher = createDecipheriv('aes-256-gcm', key, buf.subarray(0, NONCE_BYTES))
    decipher.setAAD(Buffer.from(aad, 'utf8'))
    decipher.setAuthTag(buf.subarray(buf.length - TAG_BYTES))
    plain = Buffer.concat([decipher.update(buf.subarray(NONCE_BYTES, buf.length - TAG_BYTES)), decipher.final()])
  } catch (err) {
    throw damaged(what, 'failed authentication (altered, truncated or moved)', err)
  }
  const flags = plain[0]
  if (flags === 0) return plain.subarray(1)
  if (flags === 1) {
    try {
      const out = zstdDecompress(plain.subarray(1), { windowLogMax: 27 })
      if (out.length > maxBytes) throw new Error('too large')
      return out
    } catch (err) {
      throw damaged(what, 'could not be decompressed', err)
    }
  }
  throw damaged(what, `has unknown flags ${flags}`)
}

export function damaged(what: string, problem: string, cause?: unknown): EngineError {
  return new EngineError('VAULT_DAMAGED', `The vault's ${what} ${problem}. Run "tresor verify" to see which recovery points it affects.`, {
    cause,
  })
}

export function secretKey(key: Buffer): KeyObject {
  return createSecretKey(key)
}

export function randomId(bytes: number): string {
  return randomBytes(bytes).toString('hex')
}
