import { randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import fc from 'fast-check'
import { ChunkTable } from '../../../electron/engine/vault/chunkTable.js'
import { checkIndex, encodeIndex, type PackIndexEntry } from '../../../electron/engine/vault/pack.js'

describe('ChunkTable', () => {
  it('finds every inserted id with its location, through growth, and nothing else', () => {
    const t = new ChunkTable(16)
    const ids = Array.from({ length: 5000 }, () => randomBytes(32))
    ids.forEach((id, i) => expect(t.insert(id, { pack: i % 7, offset: i * 3, length: i + 1, ordinal: i, flags: i & 1 })).toBe(true))
    expect(t.size).toBe(5000)
    ids.forEach((id, i) => expect(t.get(id)).toEqual({ pack: i % 7, offset: i * 3, length: i + 1, ordinal: i, flags: i & 1, partOffset: 0, partLength: 0 }))
    for (let i = 0; i < 1000; i++) expect(t.has(randomBytes(32))).toBe(false)
    expect(t.memoryBytes / t.size).toBeLessThan(40 / 0.45) // 40-byte slots; load stays above ~0.45 after growth
  })

  it('grows no segment for entries it has reserved room for, and keeps them at most 0.8 full', () => {
    const t = new ChunkTable()
    t.insert(randomBytes(32), { pack: 0, offset: 0, length: 1, ordinal: 0, flags: 0 })
    t.reserve(20000)
    const slots = t.slotCount
    const made = t.resizes
    expect(made).toBe(64) // every segment made once at its size
    // ids spread evenly over the 64 segments (their first word's top six bits), as keyed BLAKE3 ids are on average
    const ids = Array.from({ length: 20000 }, (_, i) => {
      const id = randomBytes(32)
      id.writeUInt32LE(((i % 64) * 2 ** 26 + (id.readUInt32LE(0) % 2 ** 26)) >>> 0, 0)
      return id
    })
    ids.forEach((id, i) => t.insert(id, { pack: 1, offset: i, length: 1, ordinal: i, flags: 0 }))
    expect(t.slotCount).toBe(slots)
    expect(t.resizes).toBe(made)
    expect(t.size).toBe(20001)
    expect(t.size / t.slotCount).toBeGreaterThan(0.6)
    expect(t.size / t.slotCount).toBeLessThanOrEqual(0.8)
    ids.forEach((id, i) => expect(t.get(id)?.offset).toBe(i))
    // more than was reserved: the table grows as before
    for (let i = 0; i < 5000; i++) t.insert(randomBytes(32), { pack: 2, offset: i, length: 1, ordinal: i, flags: 0 })
    expect(t.slotCount).toBeGreaterThan(slots)
    expect(t.size).toBe(25001)
  })

  it('keeps the first copy of a chunk', () => {
    const t = new ChunkTable()
    const id = randomBytes(32)
    expect(t.insert(id, { pack: 1, offset: 10, length: 5, ordinal: 0, flags: 0 })).toBe(true)
    expect(t.insert(id, { pack: 2, offset: 99, length: 5, ordinal: 3, flags: 1 })).toBe(false)
    expect(t.get(id)?.pack).toBe(1)
  })

  it('tells ids apart by their first 16 bytes (the part a slot keeps)', () => {
    const t = new ChunkTable()
    const a = randomBytes(32)
    const sameHead = Buffer.concat([a.subarray(0, 16), randomBytes(16)])
    const otherHead = Buffer.from(a)
    otherHead[15]! ^= 1
    expect(t.insert(a, { pack: 1, offset: 10, length: 5, ordinal: 0, flags: 0 })).toBe(true)
    expect(t.insert(sameHead, { pack: 2, offset: 20, length: 5, ordinal: 1, flags: 0 })).toBe(false)
    expect(t.insert(otherHead, { pack: 3, offset: 30, length: 5, ordinal: 2, flags: 1 })).toBe(true)
    expect(t.get(sameHead)?.pack).toBe(1)
    expect(t.get(otherHead)).toEqual({ pack: 3, offset: 30, length: 5, ordinal: 2, flags: 1, partOffset: 0, partLength: 0 })
    expect(() => t.insert(a.subarray(0, 16), { pack: 1, offset: 0, length: 1, ordinal: 0, flags: 0 })).toThrow(/32 bytes/)
  })

  it('handles ids that collide on their home slot (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ minLength: 28, maxLength: 28 }), { minLength: 1, maxLength: 300 }), (tails) => {
        const t = new ChunkTable(16)
        const seen = new Map<string, number>()
        tails.forEach((tail, i) => {
          const id = Buffer.concat([Buffer.from([0, 0, 0, 0]), Buffer.from(tail)]) // same home slot
          const head = id.subarray(0, 16).toString('hex')
          const fresh = !seen.has(head)
          expect(t.insert(id, { pack: 0, offset: i, length: 1, ordinal: i, flags: 0 })).toBe(fresh)
          if (fresh) seen.set(head, i)
        })
        for (const [head, i] of seen) expect(t.get(Buffer.concat([Buffer.from(head, 'hex'), randomBytes(16)]))?.offset).toBe(i)
        expect(t.size).toBe(seen.size)
      }),
      { numRuns: 50 },
    )
  })

  it('inserts a whole pack index without entry objects, like entry by entry, growing once', () => {
    const entry = (i: number): PackIndexEntry => ({ chunkId: randomBytes(32), offset: 24 + i * 70, length: 70, ordinal: i, flags: i % 2, plainLength: 65536 })
    const first = Array.from({ length: 3000 }, (_, i) => entry(i))
    const second = [...first.slice(0, 500), ...Array.from({ length: 1000 }, (_, i) => entry(i + 3000))] // 500 already known
    const byIndex = new ChunkTable(16)
    const byEntry = new ChunkTable(16)
    const indexes = [first, second].map((entries) => encodeIndex(entries))
    indexes.forEach((index, pack) => expect(checkIndex(index, 'ab', 2 ** 32 - 1, 65536)).toBe(pack === 0 ? 3000 : 1500))
    expect(byIndex.insertIndex(indexes[0]!, 0)).toBe(3000)
    expect(byIndex.slotCount).toBeGreaterThanOrEqual(3000 / 0.8) // reserved at once
    expect(byIndex.insertIndex(indexes[1]!, 1)).toBe(1000)
    // the same through addPackIndex, which numbers the packs itself
    const byPack = new ChunkTable(16)
    expect(indexes.map((index, i) => byPack.addPackIndex(['ab', 'cd'][i]!, { sizeBytes: 1, index, count: checkIndex(index, 'ab', 2 ** 32 - 1, 65536) }))).toEqual([0, 1])
    expect(byPack.packs.map((p) => [p.hex, p.chunkCount])).toEqual([['ab', 3000], ['cd', 1500]])
    expect(byPack.size).toBe(4000)
    ;[first, second].forEach((entries, pack) => entries.forEach((e) => byEntry.insert(e.chunkId, { ...e, pack })))
    expect(byIndex.size).toBe(4000)
    expect(byEntry.size).toBe(4000)
    for (const e of [...first, ...second]) {
      expect(byIndex.get(e.chunkId)).toEqual(byEntry.get(e.chunkId))
      expect(byPack.get(e.chunkId)).toEqual(byEntry.get(e.chunkId))
      expect(byIndex.get(e.chunkId)).toMatchObject({ offset: e.offset, length: e.length, ordinal: e.ordinal, flags: e.flags })
    }
    expect(byIndex.get(second[700]!.chunkId)?.pack).toBe(1)
    expect(byIndex.get(second[10]!.chunkId)?.pack).toBe(0) // the first copy wins
  })

  it('checkIndex refuses an index with a wrong length or an entry outside its pack', () => {
    const index = encodeIndex([{ chunkId: randomBytes(32), offset: 24, length: 100, ordinal: 0, flags: 0, plainLength: 1000 }])
    expect(checkIndex(index, 'ab', 124, 65536)).toBe(1)
    expect(() => checkIndex(index, 'ab', 123, 65536)).toThrow(/impossible entry \(#0\)/) // past the index
    expect(() => checkIndex(index.subarray(0, index.length - 1), 'ab', 124, 65536)).toThrow(/wrong length/)
    const flagged = Buffer.from(index)
    flagged[4 + 44] = 2 // the recipe flag (format 2)
    expect(checkIndex(flagged, 'ab', 124, 65536)).toBe(1)
    flagged[4 + 44] = 4 | 1 // a compressed container (format 3)
    expect(checkIndex(flagged, 'ab', 124, 65536)).toBe(1)
    flagged[4 + 44] = 2 | 4 // a recipe is never a container
    expect(() => checkIndex(flagged, 'ab', 124, 65536)).toThrow(/impossible entry/)
    flagged[4 + 44] = 16
    expect(() => checkIndex(flagged, 'ab', 124, 65536)).toThrow(/impossible entry/)
    flagged[4 + 44] = 8 // a part entry with no container before it
    expect(() => checkIndex(flagged, 'ab', 124, 65536)).toThrow(/impossible part entry/)
    const bigOrdinal = Buffer.from(index)
    bigOrdinal.writeUInt32LE(0x40000000, 4 + 40) // past the 30 bits the table keeps
    expect(() => checkIndex(bigOrdinal, 'ab', 124, 65536)).toThrow(/impossible entry/)
  })

  it('keeps the record flags, the largest ordinal and where a part lies in its record', () => {
    const table = new ChunkTable()
    const id = randomBytes(32)
    table.insert(id, { pack: 3, offset: 24, length: 100, ordinal: 0x3fffffff, flags: 3 })
    expect(table.get(id)).toEqual({ pack: 3, offset: 24, length: 100, ordinal: 0x3fffffff, flags: 3, partOffset: 0, partLength: 0 })
    const part = randomBytes(32)
    table.insert(part, { pack: 3, offset: 24, length: 100, ordinal: 7, flags: 5, partOffset: 4_190_000, partLength: 65536 })
    expect(table.get(part)).toEqual({ pack: 3, offset: 24, length: 100, ordinal: 7, flags: 5, partOffset: 4_190_000, partLength: 65536 })
    expect(() => table.insert(randomBytes(32), { pack: 3, offset: 24, length: 100, ordinal: 0x40000000, flags: 0 })).toThrow(/out of range/)
    expect(() => table.insert(randomBytes(32), { pack: 3, offset: 24, length: 100, ordinal: 0, flags: 8 })).toThrow(/out of range/)
  })

  it('places the parts a container record lists (format 3 sub-entries) at their record, with their place in it', () => {
    const container = { chunkId: randomBytes(32), offset: 24, length: 30_000, ordinal: 0, flags: 4 | 1, plainLength: 65536 }
    const parts = [0, 9000, 40_000].map((at, k, all) => ({ chunkId: randomBytes(32), offset: at, length: (all[k + 1] ?? 65536) - at, ordinal: 0, flags: 8, plainLength: (all[k + 1] ?? 65536) - at }))
    const plain = { chunkId: randomBytes(32), offset: 30_024, length: 500, ordinal: 1, flags: 0, plainLength: 472 }
    const index = encodeIndex([container, ...parts, plain])
    expect(checkIndex(index, 'ab', 40_000, 65536)).toBe(5)
    const t = new ChunkTable()
    expect(t.insertIndex(index, 2)).toBe(5)
    expect(t.get(container.chunkId)).toEqual({ pack: 2, offset: 24, length: 30_000, ordinal: 0, flags: 5, partOffset: 0, partLength: 0 })
    parts.forEach((p) => expect(t.get(p.chunkId)).toEqual({ pack: 2, offset: 24, length: 30_000, ordinal: 0, flags: 5, partOffset: p.offset, partLength: p.length }))
    expect(t.get(plain.chunkId)).toEqual({ pack: 2, offset: 30_024, length: 500, ordinal: 1, flags: 0, partOffset: 0, partLength: 0 })
    // sub-entries that do not fit their record, name another ordinal, or follow a record that is no container
    const bad = (edit: (entries: PackIndexEntry[]) => void): Buffer => {
      const entries = [container, ...parts, plain].map((e) => ({ ...e }))
      edit(entries)
      return encodeIndex(entries)
    }
    expect(() => checkIndex(bad((e) => (e[3]!.length = e[3]!.plainLength = 25_537)), 'ab', 40_000, 65536)).toThrow(/impossible part entry \(#3\)/)
    expect(() => checkIndex(bad((e) => (e[2]!.ordinal = 1)), 'ab', 40_000, 65536)).toThrow(/impossible part entry \(#2\)/)
    expect(() => checkIndex(bad((e) => (e[0]!.flags = 1)), 'ab', 40_000, 65536)).toThrow(/impossible part entry \(#1\)/)
    expect(() => checkIndex(bad((e) => (e[1]!.plainLength = 1)), 'ab', 40_000, 65536)).toThrow(/impossible part entry \(#1\)/)
    expect(() => checkIndex(encodeIndex([plain, ...parts]), 'ab', 40_000, 65536)).toThrow(/impossible part entry \(#1\)/)
  })
})
