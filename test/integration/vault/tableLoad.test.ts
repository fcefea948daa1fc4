/**
 * Loading the chunk table: every pack's trailer tells how many entries its index holds (it is
 * sealed uncompressed), so a table is given room for all of them before the indexes are read, and
 * its segments are made once at their final size instead of growing step by step (chunkTable.ts
 * `reserve`, VaultContext `reserveFor`). The counts must be exact for records and for the parts
 * containers list (format 3), and a pack whose trailer cannot be read must still be reported.
 */
import { writeFile } from 'node:fs/promises'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { backUp, BLOCK, makeBlock, newVault, tempDir, textPool } from './helpers.js'
import type { LocalVault } from '../../../electron/engine/vault/index.js'
import { openVault } from '../../../electron/engine/vault/index.js'
import { EngineError } from '../../../electron/engine/errors.js'
import type { VaultContext } from '../../../electron/engine/vault/context.js'
import { ChunkTable } from '../../../electron/engine/vault/chunkTable.js'
import { packPath } from '../../../electron/engine/vault/layout.js'
import { isSubEntry, readPackTrailer } from '../../../electron/engine/vault/pack.js'

const ctxOf = (vault: LocalVault): VaultContext => (vault as unknown as { ctx: VaultContext }).ctx

describe('a chunk table sized from the packs’ trailers before they are loaded', () => {
  let t: Awaited<ReturnType<typeof tempDir>>
  let vault: LocalVault
  let dir: string
  let key: Buffer

  beforeAll(async () => {
    t = await tempDir()
    ;({ vault, key, dir } = await newVault(t.dir, { workers: 2 }, { packTargetBytes: 1 << 20, formatVersion: 3 }))
    // 160 blocks of text that share nothing (containers, each with its parts) and 40 random ones
    const pool = textPool(7, 160 * BLOCK)
    const text = Array.from({ length: 160 }, (_, i) => Buffer.from(pool.subarray(i * BLOCK, (i + 1) * BLOCK)))
    const random = Array.from({ length: 40 }, (_, i) => makeBlock(1000 + i, 'random'))
    await backUp(vault, [{ name: 'a.raw', blocks: [...text, ...random] }], 'A')
  }, 60_000)
  afterAll(async () => {
    await vault.close()
    await t.cleanup()
  })

  it('counts each index’s entries, records and sub-entries alike, from the trailer alone', async () => {
    const ctx = ctxOf(vault)
    const packs = await ctx.listPacks()
    expect(packs.length).toBeGreaterThan(3)
    let subEntries = 0
    for (const hex of packs) {
      const trailer = await readPackTrailer(ctx.fs, packPath(ctx.layout, hex), hex)
      const { count, sizeBytes, indexOffset } = await ctx.packIndexBytes(hex)
      expect(trailer).toMatchObject({ entries: count, sizeBytes, indexOffset })
      subEntries += (await ctx.packEntries(hex)).filter(isSubEntry).length
    }
    expect(subEntries).toBeGreaterThan(160)
  })

  it('loads the table without growing it, to the same entries as a table that grew', async () => {
    const fresh = await openVault(dir, key, { workers: 1 })
    try {
      const ctx = ctxOf(fresh)
      const packs = await ctx.listPacks()
      // the same packs added to a table that was given no room first: its segments grow step by step
      const grown = new ChunkTable()
      for (const hex of packs) grown.addPackIndex(hex, await ctx.packIndexBytes(hex))
      expect(grown.size).toBeGreaterThan(1000)
      expect(grown.resizes).toBeGreaterThan(64 + 20)
      // the vault's own load gives each segment its room first, from the trailers: each is made
      // once (at most a rare one outgrows its share and grows once more)
      const loaded = await ctx.table()
      expect(loaded.size).toBe(grown.size)
      expect(loaded.resizes).toBeGreaterThanOrEqual(64)
      expect(loaded.resizes).toBeLessThanOrEqual(64 + 2)
      expect(loaded.size / loaded.slotCount).toBeGreaterThan(0.4)
      expect(loaded.size / loaded.slotCount).toBeLessThanOrEqual(0.8)
      // pack numbers follow the order packs were added (concurrent in the load): compare packs by name
      const placed = (t: ChunkTable, id: Buffer) => {
        const at = t.get(id)
        return at && { ...at, pack: t.packs[at.pack]!.hex }
      }
      for (const hex of packs) for (const e of await ctx.packEntries(hex)) expect(placed(loaded, e.chunkId)).toEqual(placed(grown, e.chunkId))
    } finally {
      await fresh.close()
    }
  })

  it('counts a pack with a damaged trailer for nothing, and still reports it when its index is read', async () => {
    const ctx = ctxOf(vault)
    const [hex] = await ctx.listPacks()
    const path = packPath(ctx.layout, hex!)
    const { readFile } = await import('node:fs/promises')
    const bytes = await readFile(path)
    const broken = Buffer.from(bytes)
    broken.writeUInt32LE(7, broken.length - 8) // the index length
    await writeFile(path, broken)
    try {
      await expect(readPackTrailer(ctx.fs, path, hex!)).rejects.toThrow(EngineError)
      const table = new ChunkTable()
      const packs = await ctx.listPacks()
      await ctx.reserveFor(table, packs) // the others still count
      expect(table.slotCount).toBeGreaterThan(new ChunkTable().slotCount)
      await expect(ctx.packIndexBytes(hex!)).rejects.toThrow(/damaged trailer/)
    } finally {
      await writeFile(path, bytes)
    }
  })
})
