/**
 * Sealing and opening chunk records (FORMAT.md "Chunk record"). Used inside the chunk workers.
 *
 * seal:  plaintext → zstd (kept only when it saves ≥ MIN_GAIN) → AES-256-GCM with a random nonce
 *        and AAD = chunk id + pack id + ordinal + flags → `nonce | ciphertext | tag`.
 * open:  the reverse, then the keyed BLAKE3 of the plaintext must equal the chunk id (I3).
 * Buffers are reused: one compression scratch and one decompression scratch per codec.
 */
import { createCipheriv, createDecipheriv, createSecretKey, randomFillSync, type KeyObject } from 'node:crypto'
import { Blake3Hasher } from '@napi-rs/blake-hash'
import zstd from 'zstd-napi/binding.js'
import { CHUNK_AAD_BYTES, NONCE_BYTES, SEAL_OVERHEAD, TAG_BYTES, chunkAad } from './crypto.js'

/**
 * AES-GCM input is fed in slices of this size: node:crypto allocates a fresh output buffer per
 * `update` call, and a 1 MiB allocation per block (fresh pages every time) measured 2–4× slower
 * than small slices copied into a reused buffer (test/bench/vaultSeal.ts prints both). Of 16, 32 and
 * 64 KiB, 32 KiB had the best median (1.58 GB per CPU-second vs 1.21 for 16 KiB, 9 alternating runs).
 */
export const CIPHER_SLICE_BYTES = 32 * 1024

/** Store compressed only when it saves at least this fraction of the plaintext. */
export const MIN_COMPRESSION_GAIN = 0.03
export const FLAG_ZSTD = 1

export interface CodecConfig {
  dataKey: Uint8Array
  chunkIdKey: Uint8Array
  blockSize: number
  compressionLevel: number
  /** Test hook: flip a bit of every compressed output before encryption (a buggy compressor). */
  corruptCompressor?: boolean
}

export interface SealOutcome {
  storedLength: number
  flags: number
}

export class ChunkCodec {
  private readonly dataKey: KeyObject
  private readonly chunkIdKey: Buffer
  private readonly cctx = new zstd.CCtx()
  private readonly dctx = new zstd.DCtx()
  private readonly compressScratch: Buffer
  private readonly plainScratch: Buffer
  private readonly bodyScratch: Buffer
  private readonly nonce = Buffer.alloc(NONCE_BYTES)
  private readonly aad = Buffer.alloc(CHUNK_AAD_BYTES)

  constructor(private readonly config: CodecConfig) {
    this.dataKey = createSecretKey(Buffer.from(config.dataKey))
    this.chunkIdKey = Buffer.from(config.chunkIdKey)
    this.compressScratch = Buffer.allocUnsafe(zstd.compressBound(config.blockSize))
    this.plainScratch = Buffer.allocUnsafe(config.blockSize)
    this.bodyScratch = Buffer.allocUnsafe(zstd.compressBound(config.blockSize))
  }

  /** Seals `plain` into `out` (capacity ≥ plain.length + 28). */
  seal(plain: Buffer, out: Buffer, chunkId: Uint8Array, packId: Uint8Array, ordinal: number): SealOutcome {
    let body: Buffer = plain
    let flags = 0
    const n = this.cctx.compress(this.compressScratch, plain, this.config.compressionLevel)
    if (n > 0 && n <= plain.length * (1 - MIN_COMPRESSION_GAIN)) {
      body = this.compressScratch.subarray(0, n)
      flags = FLAG_ZSTD
      if (this.config.corruptCompressor) body[n >> 1]! ^= 0x10
    }
    randomFillSync(this.nonce)
    const cipher = createCipheriv('aes-256-gcm', this.dataKey, this.nonce)
    cipher.setAAD(chunkAad(packId, ordinal, flags, chunkId, this.aad))
    this.nonce.copy(out, 0)
    let p = NONCE_BYTES
    for (let o = 0; o < body.length; o += CIPHER_SLICE_BYTES) p += cipher.update(body.subarray(o, o + CIPHER_SLICE_BYTES)).copy(out, p)
    p += cipher.final().copy(out, p)
    p += cipher.getAuthTag().copy(out, p)
    return { storedLength: p, flags }
  }

  /**
   * Opens one record; returns the plaintext as a view of `into` when given (capacity ≥ blockSize;
   * saves a copy for callers that collect plaintexts) or of an internal scratch buffer (valid until
   * the next call), or a string naming the failure.
   */
  open(record: Buffer, chunkId: Uint8Array, packId: Uint8Array, ordinal: number, flags: number, into?: Buffer): Buffer | string {
    if (record.length < SEAL_OVERHEAD) return 'record too short'
    const ctLength = record.length - SEAL_OVERHEAD
    const compressed = (flags & FLAG_ZSTD) !== 0
    if (ctLength > (compressed ? this.bodyScratch.length : this.config.blockSize)) return 'is larger than a block'
    const plainTarget = into && into.length >= this.config.blockSize ? into.subarray(0, this.config.blockSize) : this.plainScratch
    const target = compressed ? this.bodyScratch : plainTarget
    let body: Buffer
    try {
      const decipher = createDecipheriv('aes-256-gcm', this.dataKey, record.subarray(0, NONCE_BYTES))
      decipher.setAAD(chunkAad(packId, ordinal, flags, chunkId, this.aad))
      decipher.setAuthTag(record.subarray(record.length - TAG_BYTES))
      const ct = record.subarray(NONCE_BYTES, record.length - TAG_BYTES)
      let p = 0
      for (let o = 0; o < ct.length; o += CIPHER_SLICE_BYTES) p += decipher.update(ct.subarray(o, o + CIPHER_SLICE_BYTES)).copy(target, p)
      p += decipher.final().copy(target, p)
      body = target.subarray(0, p)
    } catch {
      return 'failed authentication (altered, truncated or moved)'
    }
    let plain: Buffer
    if (flags & FLAG_ZSTD) {
      try {
        const n = this.dctx.decompress(plainTarget, body)
        plain = plainTarget.subarray(0, n)
      } catch {
        return 'could not be decompressed'
      }
    } else {
      plain = body
    }
    const id = Blake3Hasher.newKeyed(this.chunkIdKey).update(plain).digestBuffer()
    if (!id.equals(Buffer.from(chunkId.buffer, chunkId.byteOffset, chunkId.byteLength))) return 'content does not match its id'
    return plain
  }
}

export { SEAL_OVERHEAD }
