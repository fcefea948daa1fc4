/**
 * Sealing and opening chunk records (FORMAT.md "Chunk record"). Used inside the chunk workers.
 *
 * seal:  plaintext → zstd (kept only when it saves ≥ MIN_GAIN; not tried on a plaintext that samples
 *        as random, `looksIncompressible`) → AES-256-GCM with a random nonce
 *        and AAD = chunk id + pack id + ordinal + flags → `nonce | ciphertext | tag`.
 * open:  the reverse, then the keyed BLAKE3 of the plaintext must equal the chunk id (I3). A recipe
 *        record (FLAG_RECIPE, format 2) holds a block's list of parts, not the block: it is stored
 *        under the block's id, so its own bytes cannot hash to it. AES-GCM still authenticates it
 *        (the id and the flag are in the associated data), and the reader checks the keyed BLAKE3
 *        of the block assembled from its parts (reader.ts).
 * reseal: open, then encrypt the same stored body for a new pack and position (repack: no recompression).
 * Buffers are reused: one compression scratch and one decompression scratch per codec.
 *
 * AES-256-GCM runs through the tresor-digest addon (a key schedule per key: Intel's ipsec-mb where
 * the CPU has VAES, else OpenSSL), else @ronomon/crypto-async's zero-copy call (`RecordCipher`;
 * OpenSSL's EVP, the library node:crypto uses): all write the same bytes into our buffers. node:crypto's
 * `update` returns a fresh buffer per call, and filling fresh memory (page faults, zeroing, a copy)
 * cost 4–6× the cipher itself: 0.35–0.59 GB/s against 2.27 GB/s for 128 KiB records here
 * (test/bench/vaultSeal.ts prints both).
 */
import { createRequire } from 'node:module'
import { randomFillSync } from 'node:crypto'
import zstd from 'zstd-napi/binding.js'
import { CHUNK_AAD_BYTES, ChunkIdHasher, FLAG_CONTAINER, NONCE_BYTES, SEAL_OVERHEAD, TAG_BYTES, chunkAad } from './crypto.js'
import { type CipherEngine, cipherEngines, digestAddon } from './pieceDigests.js'
import { EngineError } from '../errors.js'

/** The zero-copy cipher call of @ronomon/crypto-async (synchronous form: 19 arguments). Throws on a failed tag. */
export interface ZeroCopyCipher {
  cipher(
    algorithm: 'aes-256-gcm',
    encrypt: 0 | 1,
    key: Buffer, keyOffset: number, keySize: number,
    iv: Buffer, ivOffset: number, ivSize: number,
    source: Buffer, sourceOffset: number, sourceSize: number,
    target: Buffer, targetOffset: number,
    aad: Buffer, aadOffset: number, aadSize: number,
    tag: Buffer, tagOffset: number, tagSize: number,
  ): number
}

let ronomon: ZeroCopyCipher | undefined
/** @ronomon/crypto-async, loaded on first use: with the addon a worker never loads it. */
export function zeroCopy(): ZeroCopyCipher {
  ronomon ??= createRequire(import.meta.url)('@ronomon/crypto-async') as ZeroCopyCipher
  return ronomon
}

/**
 * AES-256-GCM of records laid out as FORMAT.md "Chunk record" says: nonce, ciphertext, tag. The
 * tresor-digest addon schedules each key once and only sets each call's nonce, through Intel's
 * ipsec-mb where the CPU has VAES (2.8× OpenSSL's speed here) or else through OpenSSL;
 * @ronomon/crypto-async (without the addon, or with `TRESOR_NO_NATIVE_DIGEST=1`) makes a context,
 * looks the cipher up by name and schedules the key on every call, ~1.5 µs more per call (two calls
 * per record in a backup: the seal and I9's open). All write the same bytes (test/unit/vault/aead.test.ts).
 */
export interface RecordCipher {
  /** Who does the work. */
  readonly engine: CipherEngine
  /** Encrypts `body` into `out` after the nonce at out[0, NONCE_BYTES); the tag follows the ciphertext. Returns its length. */
  seal(body: Buffer, out: Buffer, aad: Buffer): number
  /** Decrypts the `ctLength` bytes of ciphertext of `record` (its tag last) into `target`; throws when the tag does not match. */
  open(record: Buffer, ctLength: number, target: Buffer, aad: Buffer): number
}

/** A cipher for `key` through `engine` (one of `cipherEngines()`; by default the fastest). */
export function createRecordCipher(key: Buffer, engine: CipherEngine = cipherEngines()[0]!): RecordCipher {
  if (engine !== 'ronomon') {
    const addon = digestAddon()
    if (!addon) throw new EngineError('INTERNAL', `The AES-GCM engine ${engine} needs the tresor-digest addon, which is not loaded.`)
    const k = addon.aesGcmKey(key, engine)
    return {
      engine,
      seal: (body, out, aad) => addon.aesGcm(k, true, out, 0, body, 0, body.length, out, NONCE_BYTES, aad, out, NONCE_BYTES + body.length),
      open: (record, ctLength, target, aad) => addon.aesGcm(k, false, record, 0, record, NONCE_BYTES, ctLength, target, 0, aad, record, record.length - TAG_BYTES),
    }
  }
  const zc = zeroCopy()
  return {
    engine,
    seal: (body, out, aad) => zc.cipher('aes-256-gcm', 1, key, 0, 32, out, 0, NONCE_BYTES, body, 0, body.length, out, NONCE_BYTES, aad, 0, aad.length, out, NONCE_BYTES + body.length, TAG_BYTES),
    open: (record, ctLength, target, aad) =>
      zc.cipher('aes-256-gcm', 0, key, 0, 32, record, 0, NONCE_BYTES, record, NONCE_BYTES, ctLength, target, 0, aad, 0, aad.length, record, record.length - TAG_BYTES, TAG_BYTES),
  }
}

/** Store compressed only when it saves at least this fraction of the plaintext. */
export const MIN_COMPRESSION_GAIN = 0.03
import { FLAG_RECIPE, FLAG_ZSTD } from './pack.js'
import { sampledEntropy } from './parts.js'

/** Plaintexts this large or larger are sampled before zstd is tried (a part is rarely one). */
const SAMPLED_FROM_BYTES = 16 * 1024
/**
 * Sampled entropy (parts.ts `sampledEntropy`, bits per byte) from which zstd is not tried.
 * Random 64 KiB blocks measure 7.74–7.87; random data with 5 % zeros, which zstd shrinks by 5 %,
 * measures 7.61–7.72, and with 3 % zeros (a 3 % gain, the least kept) 7.69–7.80. Most of the
 * bench disk's new bytes are random: zstd spent ~0.5 s of a full backup's CPU (of ~10) finding
 * nothing in them. The cost is a block that is random on the whole yet repeats itself (the same
 * compressed file twice within one block): it is stored as it is.
 */
const INCOMPRESSIBLE_BITS = 7.75

/**
 * The shortest match zstd looks for at level 1 (the level of new vaults), whatever the record's
 * size. zstd picks its parameters by the input's size: 6 for a 64 KiB block at level 1, but 5 for
 * an input of 16 KiB or less, which is what a block's parts mostly are (FORMAT.md "Recipe", ~8 KiB
 * on average). Pinned to 6, a part compresses ~20 % faster and to the same size on the bench's
 * disk (1.7 % larger on real files' parts alone), and a whole block's frame is byte for byte what
 * it was (codec.test). Other levels keep zstd's own choice.
 */
const LEVEL_1_MIN_MATCH = 6

/** Whether `plain` is large enough to be sampled and samples as random data (zstd is not tried). */
export function looksIncompressible(plain: Uint8Array): boolean {
  return plain.length >= SAMPLED_FROM_BYTES && incompressibleByEntropy(plain.length, sampledEntropy(plain))
}

/** `looksIncompressible` for a plaintext of `length` bytes whose sampled entropy is already known. */
export function incompressibleByEntropy(length: number, bits: number): boolean {
  return length >= SAMPLED_FROM_BYTES && bits >= INCOMPRESSIBLE_BITS
}
export { FLAG_CONTAINER, FLAG_RECIPE, FLAG_ZSTD }

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
  private readonly cipher: RecordCipher
  private readonly ids: ChunkIdHasher
  private readonly cctx = new zstd.CCtx()
  private readonly dctx = new zstd.DCtx()
  private readonly compressScratch: Buffer
  private readonly plainScratch: Buffer
  private readonly bodyScratch: Buffer
  /** Random nonces drawn 4 KiB at a time (one getrandom call per ~340 records instead of one each). */
  private readonly noncePool = Buffer.alloc(NONCE_BYTES * 341)
  private noncePos = this.noncePool.length
  private readonly aad = Buffer.alloc(CHUNK_AAD_BYTES)
  /**
   * The container record (format 3) whose plaintext `plainScratch` holds, as where it was read:
   * its parts, asked for one after the other, are sliced from it instead of decoding it again.
   */
  private decoded: { record: ArrayBufferLike; at: number; length: number; ordinal: number; flags: number; plain: Buffer } | undefined
  /** The body the last `reseal` encrypted again (a view of a scratch buffer), for `checkResealed`. */
  private resealedBody: Buffer | undefined
  /** Where `checkResealed` decrypts (made on the first reseal: only prune's repack moves records). */
  private checkScratch: Buffer | undefined

  constructor(private readonly config: CodecConfig) {
    this.cipher = createRecordCipher(Buffer.from(config.dataKey))
    this.ids = new ChunkIdHasher(config.chunkIdKey)
    this.compressScratch = Buffer.allocUnsafe(zstd.compressBound(config.blockSize))
    this.plainScratch = Buffer.allocUnsafe(config.blockSize)
    this.bodyScratch = Buffer.allocUnsafe(zstd.compressBound(config.blockSize))
    this.cctx.setParameter(zstd.CParameter.compressionLevel, config.compressionLevel)
    if (config.compressionLevel === 1) this.cctx.setParameter(zstd.CParameter.minMatch, LEVEL_1_MIN_MATCH)
  }

  /**
   * Seals `plain` into `out` (capacity ≥ plain.length + 28); a recipe is stored as it is, flagged.
   * `container`: the block's parts are addressed inside the record (FLAG_CONTAINER, format 3).
   * `incompressible`: `looksIncompressible(plain)` when the caller has sampled the same bytes
   * already (the cut task), so they are not sampled twice; undefined to sample here.
   */
  seal(plain: Buffer, out: Buffer, chunkId: Uint8Array, packId: Uint8Array, ordinal: number, recipe = false, container = false, incompressible?: boolean): SealOutcome {
    if (recipe) return this.encrypt(plain, FLAG_RECIPE, out, chunkId, packId, ordinal)
    const kind = container ? FLAG_CONTAINER : 0
    if (incompressible ?? looksIncompressible(plain)) return this.encrypt(plain, kind, out, chunkId, packId, ordinal)
    let body: Buffer = plain
    let flags = kind
    const n = this.cctx.compress2(this.compressScratch, plain)
    if (n > 0 && n <= plain.length * (1 - MIN_COMPRESSION_GAIN)) {
      body = this.compressScratch.subarray(0, n)
      flags = kind | FLAG_ZSTD
      if (this.config.corruptCompressor) body[n >> 1]! ^= 0x10
    }
    return this.encrypt(body, flags, out, chunkId, packId, ordinal)
  }

  /**
   * Moves a record to another pack or position without recompressing: opens `record` (stored at
   * `from` under `fromPackId`; decrypt, decompress, keyed BLAKE3 = chunk id, as `open`), then
   * encrypts the same stored body with a fresh nonce for its new place. `out` needs the record's
   * length; the new record has that length and the same flags. Returns a string naming the failure
   * when the record does not open.
   */
  reseal(record: Buffer, chunkId: Uint8Array, fromPackId: Uint8Array, from: { ordinal: number; flags: number }, out: Buffer, packId: Uint8Array, ordinal: number): SealOutcome | string {
    const body = this.openBody(record, chunkId, fromPackId, from.ordinal, from.flags, this.plainScratch)
    if (typeof body === 'string') return body
    this.resealedBody = body.stored
    return this.encrypt(body.stored, from.flags, out, chunkId, packId, ordinal)
  }

  /**
   * I9 for the record the last `reseal` wrote (`record`, at its new place): it must decrypt, under
   * its new pack and ordinal, to the very body `reseal` took from the old record, whose plaintext
   * was decompressed and matched its id there. Equal bodies decompress alike, so this proves what
   * opening the new record in full would, without a second decompression and hash. Returns a
   * string naming the failure.
   */
  checkResealed(record: Buffer, chunkId: Uint8Array, packId: Uint8Array, ordinal: number, flags: number): string | undefined {
    const expected = this.resealedBody
    this.resealedBody = undefined
    if (!expected) return 'was not resealed'
    if (record.length !== expected.length + SEAL_OVERHEAD) return 'does not hold its body'
    this.checkScratch ??= Buffer.allocUnsafe(this.bodyScratch.length)
    let n: number
    try {
      const aad = chunkAad(packId, ordinal, flags, chunkId, this.aad)
      n = this.cipher.open(record, expected.length, this.checkScratch, aad)
    } catch {
      return 'failed authentication (altered, truncated or moved)'
    }
    return n === expected.length && this.checkScratch.subarray(0, n).equals(expected) ? undefined : 'did not open to the body it was moved with'
  }

  private encrypt(body: Buffer, flags: number, out: Buffer, chunkId: Uint8Array, packId: Uint8Array, ordinal: number): SealOutcome {
    if (this.noncePos === this.noncePool.length) {
      randomFillSync(this.noncePool)
      this.noncePos = 0
    }
    // each nonce is 96 fresh random bits, used once and then overwritten by the next refill (I10)
    this.noncePool.copy(out, 0, this.noncePos, this.noncePos + NONCE_BYTES)
    this.noncePool.fill(0, this.noncePos, this.noncePos + NONCE_BYTES)
    this.noncePos += NONCE_BYTES
    const aad = chunkAad(packId, ordinal, flags, chunkId, this.aad)
    const ctLength = this.cipher.seal(body, out, aad)
    return { storedLength: NONCE_BYTES + ctLength + TAG_BYTES, flags }
  }

  /**
   * Opens one record; returns the plaintext as a view of `into` when given (capacity ≥ blockSize,
   * or `intoExact`: exactly the plaintext's known length, a part's; saves a copy for callers that
   * collect plaintexts) or of an internal scratch buffer (valid until the next call), or a string
   * naming the failure.
   */
  open(record: Buffer, chunkId: Uint8Array, packId: Uint8Array, ordinal: number, flags: number, into?: Buffer, checkId = true, intoExact = false): Buffer | string {
    const plainTarget = into && (intoExact || into.length >= this.config.blockSize) ? into.subarray(0, this.config.blockSize) : this.plainScratch
    const r = this.openBody(record, chunkId, packId, ordinal, flags, plainTarget, checkId)
    return typeof r === 'string' ? r : r.plain
  }

  /**
   * Opens the part at `partOffset`, `partLength` bytes, inside a container record (format 3): the
   * record is decoded whole (its associated data names no id), and the part, checked against its
   * own id unless `checkId` is false, is copied to the start of `into` when given. Returns the part
   * (a view of `into`, or of a scratch buffer valid until the next call) or what failed.
   */
  openPart(record: Buffer, chunkId: Uint8Array, packId: Uint8Array, ordinal: number, flags: number, partOffset: number, partLength: number, into?: Buffer, checkId = true): Buffer | string {
    if (!(flags & FLAG_CONTAINER)) return 'is listed inside a record that holds no parts'
    let plain: Buffer
    const last = this.decoded
    if (last && last.record === record.buffer && last.at === record.byteOffset && last.length === record.length && last.ordinal === ordinal && last.flags === flags) {
      plain = last.plain // the record opened just before, for the block or another of its parts
    } else {
      const r = this.openBody(record, chunkId, packId, ordinal, flags, this.plainScratch, false)
      if (typeof r === 'string') return r
      plain = r.plain
    }
    if (partLength < 1 || partOffset + partLength > plain.length) return `lies outside its record (${partOffset}+${partLength} of ${plain.length} bytes)`
    const part = plain.subarray(partOffset, partOffset + partLength)
    if (checkId && !this.ids.of(part).equals(Buffer.from(chunkId.buffer, chunkId.byteOffset, chunkId.byteLength))) return 'content does not match its id'
    if (!into) return part
    if (into.length < partLength) return 'is larger than its place'
    part.copy(into)
    return into.subarray(0, partLength)
  }

  /** `open`'s work; also returns the stored body (compressed or not) as decrypted. */
  /** `checkId` false: the caller compares the plaintext with what it knows instead (SealItems.sums). */
  private openBody(record: Buffer, chunkId: Uint8Array, packId: Uint8Array, ordinal: number, flags: number, plainTarget: Buffer, checkId = true): { plain: Buffer; stored: Buffer } | string {
    this.decoded = undefined
    const r = this.openBodyNow(record, chunkId, packId, ordinal, flags, plainTarget, checkId)
    // a container's plaintext in the scratch serves its parts asked for next (openPart)
    if (typeof r !== 'string' && flags & FLAG_CONTAINER && r.plain.buffer === this.plainScratch.buffer) {
      this.decoded = { record: record.buffer, at: record.byteOffset, length: record.length, ordinal, flags, plain: r.plain }
    }
    return r
  }

  /**
   * Forgets the container record decoded last: the memory it was read from may hold other bytes
   * from now on (a range buffer taken by the next task).
   */
  forgetDecoded(): void {
    this.decoded = undefined
  }

  private openBodyNow(record: Buffer, chunkId: Uint8Array, packId: Uint8Array, ordinal: number, flags: number, plainTarget: Buffer, checkId: boolean): { plain: Buffer; stored: Buffer } | string {
    if (record.length < SEAL_OVERHEAD) return 'record too short'
    const ctLength = record.length - SEAL_OVERHEAD
    const compressed = (flags & FLAG_ZSTD) !== 0
    if (ctLength > (compressed ? this.bodyScratch.length : this.config.blockSize)) return 'is larger than a block'
    if (!compressed && ctLength > plainTarget.length) return 'is larger than its place'
    const target = compressed ? this.bodyScratch : plainTarget
    let body: Buffer
    try {
      const aad = chunkAad(packId, ordinal, flags, chunkId, this.aad)
      const n = this.cipher.open(record, ctLength, target, aad)
      body = target.subarray(0, n)
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
    if (flags & FLAG_RECIPE || !checkId) return { plain, stored: body }
    const id = this.ids.of(plain)
    if (!id.equals(Buffer.from(chunkId.buffer, chunkId.byteOffset, chunkId.byteLength))) return 'content does not match its id'
    return { plain, stored: body }
  }
}

export { SEAL_OVERHEAD }
