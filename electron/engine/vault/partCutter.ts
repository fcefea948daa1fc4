/**
 * The part cutter's inner loop in WebAssembly (thirteenth round, docs/PERFORMANCE.md).
 *
 * `cutParts` (parts.ts) is the definition: a gear hash over each byte, and a cut where its top
 * bits are zero. In JavaScript that loop ran at ~0.5–0.7 GB/s and took ~23 % of the chunk workers'
 * time in a format-2 full backup. This module runs the same search as a small WebAssembly function
 * assembled below, inside the same part bounds (`cutBounds`), so the cuts are the same; a test
 * compares both on varied data. Where the native addon tresor-digest is built, its `cutParts` runs
 * the same search in C and writes the ends straight into the caller's array (`createBlockCutter`).
 *
 * Memory layout: the 256 gear values (u32, little-endian) at 0, the block at GEAR_BYTES.
 * `scan(i, normal, max)` (byte addresses) hashes from i and returns the address just past the
 * first cut: under the strict mask before `normal`, under the loose one after; `max` when none.
 */
import { wasm, WASM_PAGE, type WasmMemory } from '../io/wasm.js'
import { cutBounds, cutParts, MASK_LOOSE, MASK_STRICT, PART_AVG_BYTES, PART_MAX_BYTES, PART_MIN_BYTES } from './parts.js'
import { digestAddon, type CutWay } from './pieceDigests.js'

const GEAR_BYTES = 1024

/** Signed LEB128, as WebAssembly encodes i32 constants. */
function sleb(value: number): number[] {
  const out: number[] = []
  let v = value | 0
  for (;;) {
    const byte = v & 0x7f
    v >>= 7
    const done = (v === 0 && (byte & 0x40) === 0) || (v === -1 && (byte & 0x40) !== 0)
    out.push(done ? byte : byte | 0x80)
    if (done) return out
  }
}

/** Unsigned LEB128 (sizes and counts). */
function uleb(value: number): number[] {
  const out: number[] = []
  let v = value >>> 0
  do {
    const byte = v & 0x7f
    v >>>= 7
    out.push(v === 0 ? byte : byte | 0x80)
  } while (v !== 0)
  return out
}

// The opcodes used (WebAssembly core specification, "Instructions").
const op = {
  block: 0x02,
  loop: 0x03,
  if: 0x04,
  end: 0x0b,
  br: 0x0c,
  brIf: 0x0d,
  return: 0x0f,
  localGet: 0x20,
  localSet: 0x21,
  localTee: 0x22,
  i32Load: 0x28,
  i32Load8U: 0x2d,
  i32Const: 0x41,
  i32Eqz: 0x45,
  i32GeU: 0x4f,
  i32Add: 0x6a,
  i32And: 0x71,
  i32Shl: 0x74,
} as const
const EMPTY = 0x40 // block type: no result
const I32 = 0x7f
// locals: 0 = i, 1 = normal, 2 = max (parameters), 3 = h
const [I, NORMAL, MAX, H] = [0, 1, 2, 3]

/** One hashing loop up to `end` under `mask`: returns i + 1 from the function at a cut. */
function hashLoop(end: number, mask: number): number[] {
  return [
    op.block, EMPTY,
    op.loop, EMPTY,
    // while (i < end)
    op.localGet, I, op.localGet, end, op.i32GeU, op.brIf, 1,
    // h = (h << 1) + gear[mem[i]]
    op.localGet, H, op.i32Const, ...sleb(1), op.i32Shl,
    op.localGet, I, op.i32Load8U, 0, 0,
    op.i32Const, ...sleb(2), op.i32Shl,
    op.i32Load, 2, 0,
    op.i32Add,
    op.localTee, H,
    // if ((h & mask) === 0) return i + 1
    op.i32Const, ...sleb(mask), op.i32And, op.i32Eqz,
    op.if, EMPTY,
    op.localGet, I, op.i32Const, ...sleb(1), op.i32Add, op.return,
    op.end,
    // i++
    op.localGet, I, op.i32Const, ...sleb(1), op.i32Add, op.localSet, I,
    op.br, 0,
    op.end,
    op.end,
  ]
}

function section(id: number, body: number[]): number[] {
  return [id, ...uleb(body.length), ...body]
}

function name(s: string): number[] {
  return [...uleb(s.length), ...Buffer.from(s, 'utf8')]
}

/** The module: one function `scan` and its memory `mem` (one page to start with, grown by the caller). */
function moduleBytes(): Uint8Array {
  const body = [1, 1, I32, ...hashLoop(NORMAL, MASK_STRICT), ...hashLoop(MAX, MASK_LOOSE), op.localGet, MAX, op.end]
  return Uint8Array.from([
    0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // "\0asm", version 1
    ...section(1, [1, 0x60, 3, I32, I32, I32, 1, I32]), // type 0: (i32, i32, i32) → i32
    ...section(3, [1, 0]), // function 0 has type 0
    ...section(5, [1, 0x00, 1]), // one memory, at least one page, no maximum
    ...section(7, [2, ...name('scan'), 0x00, 0, ...name('mem'), 0x02, 0]),
    ...section(10, [1, ...uleb(body.length), ...body]),
  ])
}

let compiled: object | undefined

/** Cuts blocks into parts exactly as `cutParts` does, with the hashing loop in WebAssembly. */
export class PartCutter {
  private readonly scan: (i: number, normal: number, max: number) => number
  private readonly memory: WasmMemory
  private view: Uint8Array

  /** False where WebAssembly is missing (`--jitless`): callers then use `cutParts`. */
  static readonly available = wasm !== undefined

  constructor(gear: Uint32Array) {
    if (!wasm) throw new Error('WebAssembly is not available')
    compiled ??= new wasm.Module(moduleBytes())
    const instance = new wasm.Instance(compiled, {})
    this.scan = instance.exports.scan as (i: number, normal: number, max: number) => number
    this.memory = instance.exports.mem as WasmMemory
    this.view = new Uint8Array(this.memory.buffer)
    const table = new DataView(this.memory.buffer, 0, GEAR_BYTES)
    for (let k = 0; k < 256; k++) table.setUint32(k * 4, gear[k]!, true)
  }

  /** As `cutParts(block, gear, ends)`. */
  cut(block: Uint8Array, ends: number[]): number {
    const need = GEAR_BYTES + block.length
    if (this.view.length < need) {
      this.memory.grow(Math.ceil((need - this.view.length) / WASM_PAGE))
      this.view = new Uint8Array(this.memory.buffer)
    }
    this.view.set(block, GEAR_BYTES)
    return cutBounds(block.length, ends, (from, normal, max) => this.scan(GEAR_BYTES + from, GEAR_BYTES + normal, GEAR_BYTES + max) - GEAR_BYTES)
  }
}

/** Cuts blocks into parts; every way gives the cuts `cutParts` defines. */
export interface BlockCutter {
  readonly way: CutWay
  /**
   * Writes the end offset of each part of `block` to `ends[at …]` and returns their count; `ends`
   * needs room for `ceil(block.length / PART_MIN_BYTES)` from `at`.
   */
  cut(block: Uint8Array, ends: Uint32Array, at: number): number
}

/**
 * The fastest cutter here for the gear table `gear`: the native addon's (no copy of the block, the
 * ends written in place; ~1.3× the WebAssembly loop's speed), else the WebAssembly module, else
 * `cutParts`. `prefer` picks a slower way (tests and measurements compare them).
 */
export function createBlockCutter(gear: Uint32Array, prefer: CutWay = 'native'): BlockCutter {
  const native = prefer === 'native' ? digestAddon() : null
  if (native) {
    const table = Uint32Array.from(gear)
    const [strict, loose] = [MASK_STRICT >>> 0, MASK_LOOSE >>> 0]
    return {
      way: 'native',
      cut: (block, ends, at) => native.cutParts(table, block, PART_MIN_BYTES, PART_AVG_BYTES, PART_MAX_BYTES, strict, loose, ends, at),
    }
  }
  const found: number[] = []
  const copy = (n: number, ends: Uint32Array, at: number): number => {
    if (at + n > ends.length) throw new RangeError('cut: the ends do not fit the array given')
    for (let k = 0; k < n; k++) ends[at + k] = found[k]!
    return n
  }
  if (prefer !== 'JavaScript' && PartCutter.available) {
    const cutter = new PartCutter(gear)
    return { way: 'WebAssembly', cut: (block, ends, at) => copy(cutter.cut(block, found), ends, at) }
  }
  return { way: 'JavaScript', cut: (block, ends, at) => copy(cutParts(block, gear, found), ends, at) }
}
