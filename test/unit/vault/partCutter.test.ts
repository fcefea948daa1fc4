/**
 * The WebAssembly part cutter (partCutter.ts) against the definition it replaces in the workers,
 * `cutParts` (parts.ts): the same cut points for every key and every kind of block, including
 * blocks shorter than a part, blocks that force its memory to grow, and property-based inputs.
 */
import { randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import fc from 'fast-check'
import { cutParts, gearTable, PART_MAX_BYTES, PART_MIN_BYTES } from '../../../electron/engine/vault/parts.js'
import { PartCutter } from '../../../electron/engine/vault/partCutter.js'
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
