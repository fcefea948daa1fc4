/**
 * The WebAssembly part cutter and the native addon's (partCutter.ts) against the definition they
 * replace in the workers, `cutParts` (parts.ts): the same cut points for every key and every kind
 * of block, including blocks shorter than a part, blocks that force the module's memory to grow,
 * and property-based inputs; the native call's checks of its arguments.
 */
import { randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import fc from 'fast-check'
import { cutParts, gearTable, MASK_LOOSE, MASK_STRICT, PART_AVG_BYTES, PART_MAX_BYTES, PART_MIN_BYTES } from '../../../electron/engine/vault/parts.js'
import { createBlockCutter, PartCutter, type BlockCutter } from '../../../electron/engine/vault/partCutter.js'
import { digestAddon } from '../../../electron/engine/vault/pieceDigests.js'
import { prng } from '../../helpers/qemu.js'

const KiB = 1024
const MiB = 1024 * KiB

function reference(block: Uint8Array, gear: Uint32Array): number[] {
  const ends: number[] = []
  cutParts(block, gear, ends)
  return [...ends]
}

/** Text lines from a small vocabulary: compressible, cuts fall where the content says. */
function lines(seed: number, bytes: number): Buffer {
  const next = prng(seed)
  const words = ['alpha', 'beta', 'gamma', 'delta', 'kernel', 'mount', 'eth0', 'session', 'retry']
  let text = ''
  while (text.length < bytes) text += `${next() % 100000} ${words[next() % words.length]} ${words[next() % words.length]} ${next().toString(16)}\n`
  return Buffer.from(text.slice(0, bytes), 'latin1')
}

describe('PartCutter', () => {
  it('cuts exactly where cutParts cuts: text, random, zeros, runs and short blocks, under several keys', () => {
    let checked = 0
    for (let k = 0; k < 4; k++) {
      const gear = gearTable(randomBytes(32))
      const cutter = new PartCutter(gear)
      const ends: number[] = []
      const blocks: Buffer[] = [
        lines(k + 1, 64 * KiB),
        randomBytes(64 * KiB),
        Buffer.alloc(64 * KiB),
        Buffer.concat([Buffer.alloc(20 * KiB, 0x41), lines(k + 9, 44 * KiB)]),
        lines(k + 3, PART_MIN_BYTES), // one part, no search
        lines(k + 4, PART_MIN_BYTES + 1),
        lines(k + 5, 3 * PART_MAX_BYTES + 17), // parts forced at the maximum
        lines(k + 6, 4 * MiB), // grows the module's memory
        lines(k + 7, 100 * KiB),
      ]
      for (const block of blocks) {
        const n = cutter.cut(block, ends)
        const want = reference(block, gear)
        expect(ends).toEqual(want)
        expect(n).toBe(want.length)
        checked += want.length
      }
    }
    expect(checked).toBeGreaterThan(4 * 300) // the 4 MiB blocks alone cut into ~400 parts each
  })

  it('agrees with cutParts on arbitrary bytes and lengths (property)', () => {
    const gear = gearTable(Buffer.alloc(32, 7))
    const cutter = new PartCutter(gear)
    const ends: number[] = []
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 40 * KiB }), fc.integer({ min: 1, max: 255 }), (bytes, fill) => {
        // mostly one byte value with the arbitrary bytes inside: long searches with few cuts
        const block = Buffer.alloc(bytes.length + 8 * KiB, fill)
        block.set(bytes, 4 * KiB)
        cutter.cut(block, ends)
        expect(ends).toEqual(reference(block, gear))
      }),
      { numRuns: 60 },
    )
  })
})

/** The cuts of `block` by `cutter`, written at `at` into an array with room to spare on both sides. */
function cutWith(cutter: BlockCutter, block: Uint8Array, at = 3): number[] {
  const room = Math.ceil(block.length / PART_MIN_BYTES)
  const ends = new Uint32Array(at + room + 2).fill(0xdeadbeef)
  const n = cutter.cut(block, ends, at)
  expect([...ends.subarray(0, at), ...ends.subarray(at + n)].every((v) => v === 0xdeadbeef)).toBe(true) // nothing outside its place
  return [...ends.subarray(at, at + n)]
}

describe('createBlockCutter', () => {
  it('cuts natively in this build (npm ci compiles native/digest), and falls back to WebAssembly and JavaScript', () => {
    const gear = gearTable(randomBytes(32))
    expect(createBlockCutter(gear).way).toBe('native')
    expect(createBlockCutter(gear, 'WebAssembly').way).toBe('WebAssembly')
    expect(createBlockCutter(gear, 'JavaScript').way).toBe('JavaScript')
  })

  it('cuts exactly where cutParts cuts, every way: text, random, zeros, runs, short and long blocks, under several keys', () => {
    let checked = 0
    for (let k = 0; k < 4; k++) {
      const gear = gearTable(randomBytes(32))
      const cutters = (['native', 'WebAssembly', 'JavaScript'] as const).map((way) => createBlockCutter(gear, way))
      const blocks: Buffer[] = [
        lines(k + 1, 64 * KiB),
        randomBytes(64 * KiB),
        Buffer.alloc(64 * KiB),
        Buffer.concat([Buffer.alloc(20 * KiB, 0x41), lines(k + 9, 44 * KiB)]),
        Buffer.alloc(0),
        lines(k + 2, 1),
        lines(k + 3, PART_MIN_BYTES),
        lines(k + 4, PART_MIN_BYTES + 1),
        lines(k + 5, 3 * PART_MAX_BYTES + 17),
        lines(k + 6, 4 * MiB),
        lines(k + 7, PART_AVG_BYTES + PART_MIN_BYTES + 5),
      ]
      for (const block of blocks) {
        const want = reference(block, gear)
        for (const cutter of cutters) expect(cutWith(cutter, block), cutter.way).toEqual(want)
        checked += want.length
      }
    }
    expect(checked).toBeGreaterThan(4 * 300)
  })

  it('agrees with cutParts on arbitrary bytes and lengths, natively (property)', () => {
    const gear = gearTable(Buffer.alloc(32, 9))
    const cutter = createBlockCutter(gear)
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 40 * KiB }), fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: 12 * KiB }), (bytes, fill, pad) => {
        const block = Buffer.alloc(bytes.length + pad, fill)
        block.set(bytes, pad >> 1)
        expect(cutWith(cutter, block, pad % 5)).toEqual(reference(block, gear))
      }),
      { numRuns: 200 },
    )
  })

  it('native cutParts checks its arguments before it writes', () => {
    const addon = digestAddon()!
    const gear = gearTable(Buffer.alloc(32, 1))
    const block = lines(1, 64 * KiB)
    const args = (over: Partial<Record<'gear' | 'data' | 'min' | 'avg' | 'max' | 'strict' | 'loose' | 'ends' | 'at', unknown>>) => {
      const a = { gear, data: block, min: PART_MIN_BYTES, avg: PART_AVG_BYTES, max: PART_MAX_BYTES, strict: MASK_STRICT >>> 0, loose: MASK_LOOSE >>> 0, ends: new Uint32Array(32), at: 0, ...over }
      return [a.gear, a.data, a.min, a.avg, a.max, a.strict, a.loose, a.ends, a.at] as Parameters<typeof addon.cutParts>
    }
    expect(addon.cutParts(...args({}))).toBe(reference(block, gear).length)
    const untouched = new Uint32Array(40).fill(7)
    const cases: Array<[Parameters<typeof addon.cutParts>, ErrorConstructor]> = [
      [args({ gear: new Uint32Array(255) }), RangeError],
      [args({ gear: new Uint8Array(1024) }), TypeError],
      [args({ data: 'text' }), TypeError],
      [args({ min: 0 }), RangeError],
      [args({ avg: PART_MIN_BYTES - 1 }), RangeError],
      [args({ max: PART_AVG_BYTES - 1 }), RangeError],
      [args({ strict: -1 }), RangeError],
      [args({ loose: 2 ** 32 }), RangeError],
      [args({ loose: 1.5 }), RangeError],
      [args({ min: '2048' }), TypeError],
      [args({ ends: untouched, at: 9 }), RangeError], // 32 ends needed from 9: 40 is too few
      [args({ ends: untouched, at: 41 }), RangeError],
      [args({ ends: new Int32Array(32) }), TypeError],
    ]
    for (const [a, type] of cases) expect(() => addon.cutParts(...a)).toThrow(type)
    expect(untouched.every((v) => v === 7)).toBe(true)
    // empty data has no parts and needs no room
    expect(addon.cutParts(...args({ data: new Uint8Array(0), ends: new Uint32Array(0) }))).toBe(0)
    expect(addon.cutParts(...args({ data: new Uint8Array(1), ends: new Uint32Array(4), at: 3 }))).toBe(1)
  })
})
