/**
 * Digests of `count` consecutive pieces of `data`: piece k runs from the end of piece k − 1 (0 for
 * the first) to `ends[endsAt + k]`. Writes piece k's keyed BLAKE3-256 (`key`, 32 bytes) to
 * `ids[idsAt + 32k, + 32)` and, when `sums` is given, its XXH3-128 in canonical (big-endian) form
 * to `sums[sumsAt + 16k, + 16)`. Every argument is checked before anything is written: a TypeError
 * or RangeError when one is of the wrong type, not a whole non-negative number, or outside its array,
 * or when the ends go backwards or past `data`. Returns `count`.
 */
export function digestPieces(
  key: Uint8Array,
  data: Uint8Array,
  ends: Uint32Array,
  endsAt: number,
  count: number,
  ids: Uint8Array,
  idsAt: number,
  sums: Uint8Array | null,
  sumsAt: number,
): number

/**
 * `digestPieces` for pieces anywhere in `data`: piece k runs from `starts[at + k]` to `ends[at + k]`
 * (pieces may lie apart, in any order, or overlap). Its digests go where `digestPieces` puts piece
 * k's. Many short pieces in one call (the parts of many blocks) are hashed side by side, chunk
 * position by chunk position: ~1.7× faster than one block's parts at a time. The same checks and
 * errors; a piece must not end before it starts. Returns `count`.
 */
export function digestRanges(
  key: Uint8Array,
  data: Uint8Array,
  starts: Uint32Array,
  ends: Uint32Array,
  at: number,
  count: number,
  ids: Uint8Array,
  idsAt: number,
  sums: Uint8Array | null,
  sumsAt: number,
): number

/**
 * Cuts `data` (one block) into content-defined parts as vault/parts.ts `cutBounds` and `cutParts`
 * define: each part but the last is longer than `minBytes` and at most `maxBytes` long; from
 * `minBytes` into a part a gear hash (`h = 2h + gear[byte]`, 32 bits, fresh for each part) runs
 * until it has no bit of `strictMask` set before `avgBytes` into the part, or none of `looseMask`
 * after. Writes the end offset of each part, ascending, the last `data.length`, to
 * `ends[endsAt …]` and returns their count (0 for empty data). `gear` holds 256 values; `ends`
 * needs room for `floor(data.length / (minBytes + 1)) + 1` ends from `endsAt` (none for empty data). Every argument is
 * checked before anything is written: a TypeError or RangeError otherwise.
 */
export function cutParts(
  gear: Uint32Array,
  data: Uint8Array,
  minBytes: number,
  avgBytes: number,
  maxBytes: number,
  strictMask: number,
  looseMask: number,
  ends: Uint32Array,
  endsAt: number,
): number

/**
 * The order-0 entropy, in bits per byte, of `most` bytes spread evenly over `data` (every
 * floor(length / most)-th byte from the first; all of them when the data is shorter): vault/parts.ts
 * `sampledEntropy`, with `table[c]` = c·log2(c) for c = 0 … most, so the result is the same double.
 * 0 for empty data. A TypeError or RangeError for bad arguments (most < 1, a table too short).
 */
export function sampledEntropy(table: Float64Array, data: Uint8Array, most: number): number

/**
 * One pass over a run of blocks for the backup's block loop: block j is `data[j·blockSize, + blockSize)`
 * (the last one may be shorter). By `modes[j]`: 0 skips the block; 1 tests it for zeros; 2 tests
 * it, and when it is not all zeros writes its XXH3-128 in canonical (big-endian) form to
 * `sums[16j, + 16)`. A block of zeros gets mode 3 (its sum is not written); the other modes stay.
 * Every argument is checked before anything is written: a TypeError or RangeError when one is of
 * the wrong type, a mode is above 2, or the blocks do not all start inside `data` or do not fit
 * `modes` or `sums`. Returns `count`.
 */
export function scanBlocks(data: Uint8Array, blockSize: number, modes: Uint8Array, count: number, sums: Uint8Array): number

/**
 * The AES-256-GCM engines this process can use, the fastest first: "ipsec-mb" (Intel's library,
 * opened at run time, only where the CPU runs its VAES code) when present, then "openssl" (always).
 * Both write the same bytes.
 */
export function aesGcmEngines(): Array<'ipsec-mb' | 'openssl'>

/** A key's AES-256-GCM context, made by `aesGcmKey` (freed with the handle). */
export interface AesGcmKey {
  readonly __aesGcmKey: unique symbol
}

/**
 * Schedules a 32-byte key for AES-256-GCM once, for `engine` (by default the first of
 * `aesGcmEngines()`); each `aesGcm` call with the handle then only sets its nonce. A RangeError
 * unless the key is 32 bytes and the engine one `aesGcmEngines()` offers; a TypeError for an engine
 * that is not a string.
 */
export function aesGcmKey(key: Uint8Array, engine?: 'ipsec-mb' | 'openssl'): AesGcmKey

/**
 * AES-256-GCM of `source[sourceAt, + length)` into `target[targetAt, + length)` under `key`, with the
 * 12-byte nonce at `nonce[nonceAt]`, associated data `aad`, and the 16-byte tag at `tag[tagAt]`:
 * written there when encrypting, checked when decrypting. Returns `length`. Source and target are
 * the same bytes or apart. Arguments are checked before anything is written (TypeError,
 * RangeError); a tag that does not match throws an Error with code AUTHENTICATION_FAILED and leaves
 * zeros in the target, never unauthenticated plaintext.
 */
export function aesGcm(
  key: AesGcmKey,
  encrypt: boolean,
  nonce: Uint8Array,
  nonceAt: number,
  source: Uint8Array,
  sourceAt: number,
  length: number,
  target: Uint8Array,
  targetAt: number,
  aad: Uint8Array,
  tag: Uint8Array,
  tagAt: number,
): number
