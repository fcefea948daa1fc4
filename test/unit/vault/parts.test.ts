/**
 * Content-defined parts (parts.ts): the cutter's bounds, its average, and the property the whole
 * scheme exists for: text moved to another offset still cuts into mostly the same parts. Plus the
 * compressibility estimate that decides which blocks are cut, and the recipe encoding's checks.
 *
 * Inputs come from a seeded PRNG and the gear key is fixed, so every number here is the same on
 * every run (the ≥ 70 % shift bound and the all-zero case depend on the key's gear values).
 */
import { createHash, randomBytes } from 'node:crypto'
import { createRequire } from 'node:module'
import { describe, expect, it } from 'vitest'
import fc from 'fast-check'
import {
  cutParts,
  decodeRecipe,
  encodeRecipe,
  gearTable,
  looksCompressible,
  PART_AVG_BYTES,
  sampledEntropy,
  sampledEntropyInJs,
  PART_MAX_BYTES,
  PART_MIN_BYTES,
  type RecipePart,
} from '../../../electron/engine/vault/parts.js'
import { prng } from '../../helpers/qemu.js'

const KiB = 1024
const MiB = 1024 * KiB
const KEY = Buffer.alloc(32, 0x5a)
const GEAR = gearTable(KEY)

/** Log-like lines (timestamps, hosts, words, numbers): compressible, never periodic. */
function logText(seed: number, bytes: number): Buffer {
  const next = prng(seed)
  const words = ['mount', 'sda1', 'eth0', 'link', 'up', 'timeout', 'retry', 'user', 'session', 'opened', 'closed', 'cron', 'sshd', 'dhcp']
  const lines: string[] = []
  let size = 0
  while (size < bytes) {
    let line = `Nov ${1 + (next() % 30)} ${next() % 24}:${next() % 60}:${next() % 60} vm${next() % 16} `
    for (let w = 2 + (next() % 9); w > 0; w--) line += `${words[next() % words.length]} `
    line += `pid=${next() % 65536} ${next().toString(16)}\n`
    lines.push(line)
    size += line.length
  }
  return Buffer.from(lines.join('').slice(0, bytes), 'latin1')
}

function cut(block: Uint8Array): number[] {
  const ends: number[] = []
  cutParts(block, GEAR, ends)
  return ends
}

/** Part lengths from end offsets. */
function lengths(ends: number[]): number[] {
  return ends.map((e, k) => e - (k === 0 ? 0 : ends[k - 1]!))
}

/** Checks the cutter's contract on one block. */
function expectValidCut(block: Uint8Array, ends: number[]): void {
  expect(ends.length).toBeGreaterThan(0)
  expect(ends[ends.length - 1]).toBe(block.length)
  const sizes = lengths(ends)
  sizes.forEach((s, k) => {
    expect(s).toBeLessThanOrEqual(PART_MAX_BYTES)
    if (k < sizes.length - 1) expect(s).toBeGreaterThanOrEqual(PART_MIN_BYTES)
    else expect(s).toBeGreaterThan(0)
  })
}

/** sha256 (hex) and length of every part of `data` cut in blocks of `blockBytes`. */
function partsOf(data: Buffer, blockBytes: number): Array<{ hash: string; length: number }> {
  const out: Array<{ hash: string; length: number }> = []
  for (let at = 0; at < data.length; at += blockBytes) {
    const block = data.subarray(at, Math.min(data.length, at + blockBytes))
    let start = 0
    for (const end of cut(block)) {
      out.push({ hash: createHash('sha256').update(block.subarray(start, end)).digest('hex'), length: end - start })
      start = end
    }
  }
  return out
}

describe('gearTable', () => {
  it('gives 256 words, the same for a key and different for another', () => {
    const a = gearTable(KEY)
    expect(a).toBeInstanceOf(Uint32Array)
    expect(a.length).toBe(256)
    expect(gearTable(Buffer.from(KEY))).toEqual(a)
    const other = Buffer.from(KEY)
    other[31]! ^= 1
    const b = gearTable(other)
    expect(b).not.toEqual(a)
    expect(a.filter((w, i) => w === b[i]).length).toBeLessThan(4) // a new key changes every word, not a few
    expect(new Set(a).size).toBeGreaterThan(250)
  })
})

describe('cutParts', () => {
  it('keeps every part within bounds and averages near PART_AVG_BYTES on text', () => {
    const text = logText(1, 4 * MiB)
    const ends = cut(text)
    expectValidCut(text, ends)
    const average = text.length / ends.length
    expect(average).toBeGreaterThan(PART_AVG_BYTES / 2)
    expect(average).toBeLessThan(PART_AVG_BYTES * 2)
    for (let k = 1; k < ends.length; k++) expect(ends[k]!).toBeGreaterThan(ends[k - 1]!)
  })

  it('keeps the contract on any block length and content (property)', () => {
    const text = logText(2, 512 * KiB)
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 256 * KiB }), fc.nat(256 * KiB), fc.boolean(), (length, offset, random) => {
        const block = random ? randomBytes(length) : text.subarray(offset, offset + length)
        expectValidCut(block, cut(block))
      }),
      { numRuns: 60 },
    )
  })

  it('gives one part for a block no longer than PART_MIN_BYTES, and none for an empty one', () => {
    const text = logText(3, PART_MIN_BYTES)
    expect(cut(text.subarray(0, 100))).toEqual([100])
    expect(cut(text)).toEqual([PART_MIN_BYTES])
    expect(cut(new Uint8Array(0))).toEqual([])
  })

  it('cuts all-zero input only where forced: every PART_MAX_BYTES and at the end', () => {
    const zeros = new Uint8Array(4 * PART_MAX_BYTES + 1000)
    const ends = cut(zeros)
    expect(ends).toEqual([1, 2, 3, 4].map((k) => k * PART_MAX_BYTES).concat(zeros.length))
  })

  it('clears `ends` before writing and returns the count', () => {
    const text = logText(4, 256 * KiB)
    const ends = [1, 2, 3]
    const n = cutParts(text, GEAR, ends)
    expect(n).toBe(ends.length)
    expect(ends).toEqual(cut(text))
  })

  // The parts touching a 64 KiB block edge differ after a shift, and cuts take a part or two to
  // fall in step again: ~64–70 % over keys and texts (fixed blocks would share nothing).
  it('finds the same parts in text moved by 1,000 bytes (≥ 60 % of the bytes)', () => {
    const text = logText(5, MiB)
    const moved = Buffer.concat([logText(6, 1000), text])
    const before = new Set(partsOf(text, 64 * KiB).map((p) => p.hash))
    const after = partsOf(moved, 64 * KiB)
    const shared = after.filter((p) => before.has(p.hash)).reduce((sum, p) => sum + p.length, 0)
    expect(after.reduce((sum, p) => sum + p.length, 0)).toBe(moved.length)
    expect(shared / moved.length).toBeGreaterThanOrEqual(0.6)
  })

  it('cuts differently under another key', () => {
    const text = logText(7, MiB)
    const other = gearTable(randomBytes(32))
    const ends: number[] = []
    cutParts(text, other, ends)
    expect(ends).not.toEqual(cut(text))
  })
})

describe('looksCompressible', () => {
  it('is true for text and zeros, false for random bytes', () => {
    expect(looksCompressible(logText(8, 64 * KiB))).toBe(true)
    expect(looksCompressible(new Uint8Array(64 * KiB))).toBe(true)
    expect(looksCompressible(randomBytes(64 * KiB))).toBe(false)
    expect(looksCompressible(randomBytes(4 * MiB))).toBe(false)
  })

  it('samples the same entropy natively as in JavaScript, to the last bit, on any length and content (property)', () => {
    const addon = createRequire(import.meta.url)('tresor-digest') as { sampledEntropy: (t: Float64Array, d: Uint8Array, n: number) => number }
    const table = Float64Array.from({ length: 1025 }, (_, c) => (c > 0 ? c * Math.log2(c) : 0))
    for (const block of [new Uint8Array(0), new Uint8Array(1), logText(8, 64 * KiB), randomBytes(64 * KiB), randomBytes(64 * KiB + 13), new Uint8Array(64 * KiB)]) {
      expect(sampledEntropy(block)).toBe(sampledEntropyInJs(block))
      expect(addon.sampledEntropy(table, block, 1024)).toBe(sampledEntropyInJs(block))
    }
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 70_000 }), fc.integer({ min: 0, max: 255 }), (data, bias) => {
        // skewed bytes too, so the sums are not all alike
        const skewed = data.map((b) => (b < bias ? b & 0x0f : b))
        expect(addon.sampledEntropy(table, skewed, 1024)).toBe(sampledEntropyInJs(skewed))
      }),
      { numRuns: 300 },
    )
    expect(() => addon.sampledEntropy(table, new Uint8Array(10), 0)).toThrow(RangeError)
    expect(() => addon.sampledEntropy(table.subarray(0, 1024), new Uint8Array(10), 1024)).toThrow(RangeError)
    expect(() => addon.sampledEntropy(new Float32Array(1025) as unknown as Float64Array, new Uint8Array(10), 1024)).toThrow(TypeError)
  })
})

describe('recipes', () => {
  const parts: RecipePart[] = [
    { id: randomBytes(32), length: 5000 },
    { id: randomBytes(32), length: 60_536 },
    { id: randomBytes(32), length: 1 },
  ]
  const blockLength = 65_537

  it('round-trips, with ids copied out of the input', () => {
    const buf = encodeRecipe(parts)
    expect(buf.length).toBe(8 + 36 * parts.length)
    const back = decodeRecipe(buf, blockLength)
    expect(back).toEqual(parts)
    if (typeof back === 'string') throw new Error(back)
    buf.fill(0)
    expect(back[0]!.id).toEqual(parts[0]!.id)
    // a view into a larger buffer decodes the same
    const framed = Buffer.concat([Buffer.from('xx'), encodeRecipe(parts), Buffer.from('yy')])
    expect(decodeRecipe(framed.subarray(2, framed.length - 2), blockLength)).toEqual(parts)
  })

  it('returns a string, never throws, on bad recipes', () => {
    const good = encodeRecipe(parts)
    const badMagic = Buffer.from(good)
    badMagic[0] = 0x58
    const zeroLength = Buffer.from(encodeRecipe([parts[0]!, { id: parts[1]!.id, length: 0 }, parts[2]!]))
    const bad: Array<[string, Uint8Array, number]> = [
      ['wrong magic', badMagic, blockLength],
      ['count 1', encodeRecipe([{ id: parts[0]!.id, length: blockLength }]), blockLength],
      ['count 0', encodeRecipe([]), 0],
      ['truncated', good.subarray(0, good.length - 1), blockLength],
      ['header only', good.subarray(0, 6), blockLength],
      ['empty', new Uint8Array(0), blockLength],
      ['extra bytes', Buffer.concat([good, Buffer.alloc(1)]), blockLength],
      ['zero length', zeroLength, parts[0]!.length + parts[2]!.length], // sums right; only the 0 is wrong
      ['sum too small', good, blockLength + 1],
      ['sum too large', good, blockLength - 1],
    ]
    for (const [what, buf, length] of bad) {
      let result: RecipePart[] | string = []
      expect(() => (result = decodeRecipe(buf, length)), what).not.toThrow()
      expect(typeof result, what).toBe('string')
    }
    const hugeCount = Buffer.from(good)
    hugeCount.writeUInt32LE(0xffffffff, 4)
    expect(typeof decodeRecipe(hugeCount, blockLength)).toBe('string')
  })
})
