/**
 * Content-defined parts inside a block (vault format 2, FORMAT.md "Recipe").
 *
 * Fixed blocks cannot deduplicate text that sits at different offsets (a log rotated, a file
 * rewritten one line longer, the same file in two places of a guest's disk). Cutting a compressible
 * block where its content says so makes the same text give the same parts wherever it lies, and
 * the parts are deduplicated like blocks. The block's id then names its recipe: the list of parts.
 *
 * Cutter: a gear hash (one shift and one add per byte) with FastCDC's two refinements: no cut
 * search in a part's first PART_MIN_BYTES (they cannot end a part anyway), and "normalized
 * chunking": a mask with more one-bits (rarer cuts) until PART_AVG_BYTES into a part and fewer
 * after, so part sizes bunch around the average. A left shift moves each byte's influence to the
 * high bits, so after 32 bytes it is gone: the hash is a function of the last 32 bytes, and the
 * masks test high bits, which depend on the most bytes of that window.
 */
import { createHmac } from 'node:crypto'
import { EngineError } from '../errors.js'
import { digestAddon } from './pieceDigests.js'

export const PART_MIN_BYTES = 2048
export const PART_AVG_BYTES = 8192
export const PART_MAX_BYTES = 65536

/** The top 15 bits: a cut after ~32 KiB of searched bytes on average (before PART_AVG_BYTES). */
export const MASK_STRICT = 0xfffe0000 | 0
/** The top 11 bits: a cut after ~2 KiB on average (past PART_AVG_BYTES). */
export const MASK_LOOSE = 0xffe00000 | 0

/**
 * The 256 gear values, derived from a 32-byte key: HMAC-SHA256(key, "tresor/v2/gear/" + i) for
 * i = 0..31, each digest read as eight little-endian u32. Keyed like restic's per-repository
 * polynomial: part sizes, which an observer of the packs can see, do not reveal content.
 */
export function gearTable(key: Uint8Array): Uint32Array {
  const table = new Uint32Array(256)
  for (let i = 0; i < 32; i++) {
    const d = createHmac('sha256', key).update(`tresor/v2/gear/${i}`).digest()
    for (let k = 0; k < 8; k++) table[i * 8 + k] = d.readUInt32LE(k * 4)
  }
  return table
}

/**
 * The part bounds around a cut search, for a block of `length` bytes: the end offset of each part
 * goes into `ends` (cleared first), ascending, the last one `length`; returns their count. For
 * each part it calls `search(from, normal, max)`, which hashes from `from` and returns the offset
 * just past the first cut: under the strict mask before `normal`, the loose one after, else `max`.
 * Every part but the last is PART_MIN_BYTES to PART_MAX_BYTES long; the block's end is a forced
 * cut, so its last part may be shorter.
 */
export function cutBounds(length: number, ends: number[], search: (from: number, normal: number, max: number) => number): number {
  ends.length = 0
  let start = 0
  while (start < length) {
    const remaining = length - start
    if (remaining <= PART_MIN_BYTES) {
      ends.push(length)
      break
    }
    const max = start + Math.min(remaining, PART_MAX_BYTES)
    const normal = start + Math.min(remaining, PART_AVG_BYTES)
    const cut = search(start + PART_MIN_BYTES, normal, max)
    ends.push(cut)
    start = cut
  }
  return ends.length
}

/** Cut points of `block` (see `cutBounds`): the definition, in JavaScript (partCutter.ts runs the same search in WebAssembly). */
export function cutParts(block: Uint8Array, gear: Uint32Array, ends: number[]): number {
  return cutBounds(block.length, ends, (from, normal, max) => {
    let h = 0
    let i = from
    for (; i < normal; i++) {
      h = ((h << 1) + gear[block[i]!]!) | 0
      if ((h & MASK_STRICT) === 0) return i + 1
    }
    for (; i < max; i++) {
      h = ((h << 1) + gear[block[i]!]!) | 0
      if ((h & MASK_LOOSE) === 0) return i + 1
    }
    return max
  })
}

const histogram = new Uint32Array(256)
/**
 * Sampled bytes per estimate, spread evenly over the block (every 64th byte of a 64 KiB block).
 * 1,024 samples of 256 values bias the estimate of random data down to ~7.8 bits, still well
 * above the threshold.
 */
const MAX_SAMPLES = 1024
/** c·log2(c) for every count a sample can hold (0 for 0). */
const C_LOG2_C = Float64Array.from({ length: MAX_SAMPLES + 1 }, (_, c) => (c > 0 ? c * Math.log2(c) : 0))
/** Order-0 entropy (bits per byte) below which a block is cut: random or compressed data sits near 8. */
const MAX_ENTROPY_BITS = 7

/**
 * The order-0 entropy, in bits per byte, of a sample of `block`'s bytes: 1,024 spread evenly over
 * it (all of them when it is shorter). Random, encrypted and already-compressed data measure
 * ~7.8 on such a sample (7.74–7.87 over 1,024 random 64 KiB blocks), text and code well below.
 */
export function sampledEntropy(block: Uint8Array): number {
  nativeEntropy ??= digestAddon()?.sampledEntropy ?? null
  return nativeEntropy ? nativeEntropy(C_LOG2_C, block, MAX_SAMPLES) : sampledEntropyInJs(block)
}

/** The addon's `sampledEntropy` (1.0–1.6 µs a block in cache against 1.6–2.6 µs in JavaScript), looked up on first use. */
let nativeEntropy: ((table: Float64Array, data: Uint8Array, most: number) => number) | null | undefined

/** `sampledEntropy` in JavaScript: the definition, and the way without the addon. */
export function sampledEntropyInJs(block: Uint8Array): number {
  histogram.fill(0)
  const step = Math.max(1, Math.floor(block.length / MAX_SAMPLES))
  let n = 0
  for (let i = 0; i < block.length && n < MAX_SAMPLES; i += step, n++) histogram[block[i]!]!++
  if (n === 0) return 0
  // n·H = n·log2 n − Σ c·log2 c, with c·log2 c from a table (a log2 per value was most of the cost)
  let sum = 0
  for (let b = 0; b < 256; b++) sum += C_LOG2_C[histogram[b]!]!
  return (C_LOG2_C[n]! - sum) / n
}

/**
 * Whether `block` looks compressible enough to be cut into parts: its sampled entropy is below 7
 * bits per byte. Random, encrypted and already-compressed data are stored whole (cutting them
 * costs time and adds records for nothing that fixed blocks would not also deduplicate).
 */
export function looksCompressible(block: Uint8Array): boolean {
  return block.length > 0 && compressibleByEntropy(sampledEntropy(block))
}

/** `looksCompressible` for a block whose sampled entropy is already known. */
export function compressibleByEntropy(bits: number): boolean {
  return bits < MAX_ENTROPY_BITS
}

/** A block's recipe: the parts it is made of, in order. */
export interface RecipePart {
  id: Buffer
  length: number
}

const RECIPE_MAGIC = Buffer.from('TRCP', 'latin1')
const RECIPE_HEADER = 8
const RECIPE_ENTRY = 36

/** `"TRCP" | count u32 | count × (part id 32 | length u32)`, little-endian (FORMAT.md "Recipe"). */
export function encodeRecipe(parts: ReadonlyArray<RecipePart>): Buffer {
  const buf = Buffer.allocUnsafe(RECIPE_HEADER + parts.length * RECIPE_ENTRY)
  RECIPE_MAGIC.copy(buf, 0)
  buf.writeUInt32LE(parts.length, 4)
  parts.forEach((p, k) => {
    if (p.id.length !== 32) throw new EngineError('INTERNAL', 'part ids are 32 bytes')
    const at = RECIPE_HEADER + k * RECIPE_ENTRY
    p.id.copy(buf, at, 0, 32)
    buf.writeUInt32LE(p.length, at + 32)
  })
  return buf
}

/**
 * The parts of a recipe for a block of `blockLength` bytes, or a string naming what is wrong: the
 * magic, a count below 2, a length that is not exactly 8 + 36·count, a zero part length, or part
 * lengths that do not sum to the block's. Ids are copies.
 */
export function decodeRecipe(buf: Uint8Array, blockLength: number): RecipePart[] | string {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength)
  if (b.length < RECIPE_HEADER || !b.subarray(0, 4).equals(RECIPE_MAGIC)) return 'is not a recipe (bad magic)'
  const count = b.readUInt32LE(4)
  if (count < 2) return `lists ${count} part(s); a recipe lists at least 2`
  if (b.length !== RECIPE_HEADER + count * RECIPE_ENTRY) return `holds ${b.length} bytes for ${count} parts`
  const parts: RecipePart[] = new Array<RecipePart>(count)
  let sum = 0
  for (let k = 0; k < count; k++) {
    const at = RECIPE_HEADER + k * RECIPE_ENTRY
    const length = b.readUInt32LE(at + 32)
    if (length === 0) return `lists an empty part (#${k})`
    sum += length
    parts[k] = { id: Buffer.from(b.subarray(at, at + 32)), length }
  }
  if (sum !== blockLength) return `lists parts of ${sum} bytes for a block of ${blockLength}`
  return parts
}
