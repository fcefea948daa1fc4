import { describe, expect, it } from 'vitest'
import { randomBytes } from 'node:crypto'
import { ExtentCursor, EXTENTS_PER_FILL, PreviousMap } from '../../../electron/engine/backup/cursors.js'
import type { Extent } from '../../../electron/engine/formats/types.js'
import type { BlockEntry, BlockMapSegment } from '../../../electron/engine/vault/api.js'
import { segmentsOf } from '../../helpers/mapSegments.js'

const BLOCK = 64 * 1024

/** Sorted, non-overlapping extents from a seeded walk: runs of tiny extents inside one block, extents over many blocks, gaps. */
function layout(count: number, seed: number): Extent[] {
  let x = seed
  const rnd = (n: number): number => {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0
    return (x >>> 8) % n
  }
  const out: Extent[] = []
  let at = 0
  for (let i = 0; i < count; i++) {
    at += rnd(4) === 0 ? rnd(6 * BLOCK) : 0
    const length = rnd(3) === 0 ? 4096 * (1 + rnd(3)) : 512 * (1 + rnd(400))
    out.push({ offset: at, length, zero: rnd(5) === 0 })
    at += length
  }
  return out
}

async function* streamed(extents: Extent[], pulls: { n: number }): AsyncIterable<Extent> {
  for (const e of extents) {
    pulls.n++
    yield e
  }
}

/**
 * Every block's class and data ranges, with `cursor` walked the way the block loop walks it: a
 * block inside a data extent (`insideData`) is taken as the one range [start, end) without
 * `classify`. `fast` counts those blocks.
 */
async function walk(cursor: ExtentCursor, blocks: number, fast = { n: 0 }): Promise<string[]> {
  const out: string[] = []
  const ranges: Array<[number, number]> = []
  for (let i = 0; i < blocks; i++) {
    const start = i * BLOCK
    const end = start + BLOCK
    if (!cursor.holds(end)) await cursor.fill(end)
    if (cursor.nextStart() < end && cursor.insideData(start, end)) {
      fast.n++
      out.push(`2:${start}-${end}`)
      continue
    }
    const kind = cursor.nextStart() >= end ? 0 : cursor.classify(start, end, ranges)
    out.push(`${kind}:${kind === 0 ? '' : ranges.map(([a, b]) => `${a}-${b}`).join(',')}`)
  }
  return out
}

/** The same answer worked out from the list directly, block by block. */
function expected(extents: Extent[], blocks: number): string[] {
  const out: string[] = []
  for (let i = 0; i < blocks; i++) {
    const start = i * BLOCK
    const end = start + BLOCK
    const touching = extents.filter((e) => e.length > 0 && e.offset < end && e.offset + e.length > start)
    const kind = touching.length === 0 ? 0 : touching.some((e) => !e.zero) ? 2 : 1
    const data = touching.filter((e) => !e.zero).map((e) => `${Math.max(start, e.offset)}-${Math.min(end, e.offset + e.length)}`)
    out.push(`${kind}:${kind === 0 ? '' : data.join(',')}`)
  }
  return out
}

describe('ExtentCursor', () => {
  it('classifies every block alike from a list held in memory and from a stream pulled in batches', async () => {
    const extents = layout(3 * EXTENTS_PER_FILL + 123, 7)
    const last = extents.at(-1)!
    const blocks = Math.ceil((last.offset + last.length) / BLOCK) + 2
    const want = expected(extents, blocks)
    expect(want.filter((w) => w.startsWith('2:')).length).toBeGreaterThan(100)
    expect(want.filter((w) => w.startsWith('1:')).length).toBeGreaterThan(10)
    expect(want.filter((w) => w.startsWith('0:')).length).toBeGreaterThan(10)

    const fast = { n: 0 }
    expect(await walk(new ExtentCursor(extents), blocks, fast)).toEqual(want)
    expect(fast.n).toBeGreaterThan(10) // blocks inside longer data extents

    const pulls = { n: 0 }
    const cursor = new ExtentCursor(streamed(extents, pulls))
    expect(cursor.holds(BLOCK)).toBe(false)
    expect(await walk(cursor, blocks)).toEqual(want)
    expect(pulls.n).toBe(extents.length)
    await cursor.close()
  })

  it('takes a block inside one data extent without classifying it, and leaves every other case to classify', async () => {
    const extents: Extent[] = [
      { offset: 0, length: 3 * BLOCK, zero: false }, // blocks 0 and 1 inside; block 2 ends with it
      { offset: 3 * BLOCK, length: 2 * BLOCK, zero: true }, // zeros are never data
      { offset: 5 * BLOCK + 512, length: 2 * BLOCK, zero: false }, // block 5 starts before it
    ]
    const cursor = new ExtentCursor(extents)
    const answers = [0, 1, 2, 3, 4, 5, 6].map((i) => {
      const inside = cursor.insideData(i * BLOCK, (i + 1) * BLOCK)
      if (!inside && cursor.nextStart() < (i + 1) * BLOCK) cursor.classify(i * BLOCK, (i + 1) * BLOCK, [])
      return inside
    })
    expect(answers).toEqual([true, true, false, false, false, false, true])
    expect(new ExtentCursor([]).insideData(0, BLOCK)).toBe(false)
  })

  it('fills far enough for a block that holds more extents than one batch', async () => {
    // EXTENTS_PER_FILL + 10 extents of 8 bytes inside the first block, then one far away
    const tiny: Extent[] = Array.from({ length: EXTENTS_PER_FILL + 10 }, (_, i) => ({ offset: i * 15, length: 8, zero: false }))
    expect(tiny.at(-1)!.offset + 8).toBeLessThan(BLOCK)
    const extents = [...tiny, { offset: 100 * BLOCK, length: BLOCK, zero: true }]
    const blocks = 102
    const pulls = { n: 0 }
    expect(await walk(new ExtentCursor(streamed(extents, pulls)), blocks)).toEqual(expected(extents, blocks))
  })
})

describe('PreviousMap', () => {
  const entries: BlockEntry[] = Array.from({ length: 23 }, (_, i) =>
    i % 4 === 0 ? { kind: 'unallocated' } : i % 4 === 1 ? { kind: 'zero' } : { kind: 'data', chunkId: randomBytes(32), checksum: randomBytes(16) },
  )

  it('gives every block its entry across segment boundaries, skipping blocks as the loop does, and nothing past the end', async () => {
    const map = new PreviousMap(segmentsOf(entries, 5), entries.length)
    const asked = [0, 1, 4, 5, 9, 10, 11, 17, 22, 23, 30]
    for (const i of asked) {
      if (!map.holds(i)) await map.load(i)
      expect(map.holds(i)).toBe(true)
      expect(map.get(i)).toEqual(entries[i])
    }
    await map.close()
  })

  it('reads no segment for blocks past the earlier map (a disk grown since)', async () => {
    let pulled = 0
    async function* counted(): AsyncIterable<BlockMapSegment> {
      for await (const s of segmentsOf(entries, 5)) {
        pulled++
        yield s
      }
    }
    const map = new PreviousMap(counted(), entries.length)
    if (!map.holds(3)) await map.load(3)
    expect(map.get(3)).toEqual(entries[3])
    expect(map.holds(entries.length)).toBe(true)
    expect(map.get(entries.length + 7)).toBeUndefined()
    expect(pulled).toBe(1)
    await map.close()
  })

  it('holds nothing to wait for without an earlier map', async () => {
    const map = new PreviousMap(undefined, 0)
    expect(map.holds(0)).toBe(true)
    expect(map.get(0)).toBeUndefined()
    await map.close()
  })
})
