/**
 * Format 2: compressible blocks stored as content-defined parts plus a recipe (parts.ts). Text
 * copied at shifted offsets must deduplicate across blocks, every read path must give back the
 * exact block (checked against its id), prune must keep the parts of live blocks, verify must name
 * the points a damaged part affects, and a format-1 vault must keep storing whole blocks.
 */
import { readFile, writeFile } from 'node:fs/promises'
import { basename, join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { backUp, BLOCK, checksumOf, expectedChunks, makeBlock, newVault, packFiles, restoreDisk, shifted, shiftedText, tempDir, textPool, zeroMapOf, expectReadInto } from './helpers.js'
import { prng } from '../../helpers/qemu.js'
import { createVault, openVault, type LocalVault, type PointManifest } from '../../../electron/engine/vault/index.js'
import { createBlockHasher } from '../../../electron/engine/backup/checksum.js'
import { EngineError } from '../../../electron/engine/errors.js'
import { PartCache } from '../../../electron/engine/vault/partCache.js'
import type { VaultContext } from '../../../electron/engine/vault/context.js'
import { isRecipeEntry } from '../../../electron/engine/vault/recipes.js'
import { nodeVaultFs, type VaultFs } from '../../../electron/engine/vault/vaultFs.js'
import { randomBytes } from 'node:crypto'

describe('blocks stored as content-defined parts (format 2)', () => {
  let t: Awaited<ReturnType<typeof tempDir>>
  let vault: LocalVault
  let key: Buffer
  // 8 blocks of the same text at offsets that share no 64 KiB alignment, a random block, a short text tail
  const { pool, first, second } = shiftedText()
  let pa: PointManifest
  let pb: PointManifest

  beforeAll(async () => {
    t = await tempDir()
    ;({ vault, key } = await newVault(t.dir, { workers: 2 }, { packTargetBytes: 1 << 20, formatVersion: 2 }))
    pa = await backUp(vault, [{ name: 'a.raw', blocks: first }], 'A')
    pb = await backUp(vault, [{ name: 'b.raw', blocks: second }], 'B')
  })
  afterAll(async () => {
    await vault.close()
    await t.cleanup()
  })

  it('deduplicates shifted text across blocks: the second point stores a fraction of what its blocks hold', async () => {
    const stats = await vault.stats()
    // more chunks than blocks: the text blocks were cut into parts, each stored once
    expect(stats.chunks).toBeGreaterThan(first.length + second.length)
    expect(stats.chunks).toBe(expectedChunks([...first, ...second], key, vault.id))
    // the shifted copies share most of their parts with the first point's blocks
    expect(pb.stats.bytesStored).toBeLessThan(0.4 * second.length * BLOCK)
    expect(pb.stats.bytesStored).toBeGreaterThan(0)
  })

  it('reads every block back exactly, through readChunks and through readChunksInto (the restore path)', async () => {
    const a = await restoreDisk(vault, pa.id, 0)
    a.forEach((b, i) => expect((b as Buffer).equals(first[i]!)).toBe(true))
    const b = await restoreDisk(vault, pb.id, 0)
    b.forEach((x, i) => expect((x as Buffer).equals(second[i]!)).toBe(true))

    const ids: Buffer[] = []
    const want: Buffer[] = []
    for (const [point, blocks] of [[pa, first], [pb, second]] as const) {
      let i = 0
      for await (const e of vault.readBlockMap(point.id, 0)) {
        if (e.kind === 'data') {
          ids.push(e.chunkId)
          want.push(blocks[i]!)
        }
        i++
      }
    }
    // the same block twice in one call, at two places
    ids.push(ids[1]!)
    want.push(want[1]!)
    await expectReadInto(vault, ids, want, Buffer.from(new SharedArrayBuffer(ids.length * BLOCK + 4096)).subarray(4096))
  })

  it('a reader keeps the parts it decoded for its later calls; a cached byte gone bad fails the read (CHUNK_CORRUPT), not the bytes', async () => {
    const idsOf = async (point: PointManifest): Promise<Buffer[]> => {
      const ids: Buffer[] = []
      for await (const e of vault.readBlockMap(point.id, 0)) if (e.kind === 'data') ids.push(e.chunkId)
      return ids
    }
    const [aIds, bIds] = [await idsOf(pa), await idsOf(pb)]
    const target = Buffer.from(new SharedArrayBuffer(8 * BLOCK))
    const at = (ids: Buffer[]): number[] => ids.map((_, k) => k * BLOCK)
    const reader = vault.chunkReader()
    try {
      await reader.readChunksInto(aIds, target, at(aIds), { zeroGranule: 4096 })
      const cache = (reader as unknown as { partCache: PartCache }).partCache
      expect(cache.size).toBeGreaterThan(0) // the first point's parts, filled by the workers once their blocks checked out
      // the second point's blocks share most of their parts with the first's: copied from the cache
      target.fill(0xee)
      const got = await reader.readChunksInto(bIds, target, at(bIds), { zeroGranule: 4096 })
      second.forEach((w, k) => {
        expect(got.lengths[k]).toBe(BLOCK)
        expect(target.subarray(k * BLOCK, (k + 1) * BLOCK).equals(w)).toBe(true)
      })
      // damage every cached byte: each block built from a cached part fails its check against its id
      const arena = Buffer.from(cache.memory())
      for (let i = 0; i < arena.length; i++) arena[i] = arena[i]! ^ 0x5a
      const err = await reader.readChunksInto(bIds, target, at(bIds), { zeroGranule: 4096 }).catch((e: unknown) => e)
      expect(err).toBeInstanceOf(EngineError)
      expect((err as EngineError).code).toBe('CHUNK_CORRUPT')
      expect((err as EngineError).message).toMatch(/assembled from its parts does not match its id/)
    } finally {
      await reader.close()
    }
    const b = await restoreDisk(vault, pb.id, 0) // a new reader: nothing cached
    b.forEach((x, i) => expect((x as Buffer).equals(second[i]!)).toBe(true))
  })

  it('concurrent calls on one reader with a cache far too small: parts are evicted, skipped and pinned under each other, every block comes back exact', async () => {
    const want = new Map<string, Buffer>()
    for (const [point, blocks] of [[pa, first], [pb, second]] as const) {
      let i = 0
      for await (const e of vault.readBlockMap(point.id, 0)) {
        if (e.kind === 'data') want.set(e.chunkId.toString('hex'), blocks[i]!)
        i++
      }
    }
    const all = [...want.keys()].map((h) => Buffer.from(h, 'hex'))
    const reader = vault.chunkReader()
    // room for ~18 parts of the ~60 these blocks hold: calls evict what other calls may be copying from
    let hits = 0
    let reserved = 0
    let refused = 0
    const small = new (class extends PartCache {
      override take(key: string, length: number) {
        const e = super.take(key, length)
        if (e) hits++
        return e
      }
      override reserve(key: string, length: number) {
        const e = super.reserve(key, length)
        if (e) reserved++
        else refused++
        return e
      }
    })(160 * 1024, 16 * 1024)
    ;(reader as unknown as { partCache: PartCache }).partCache = small
    const next = prng(29)
    try {
      for (let round = 0; round < 6; round++) {
        const calls = Array.from({ length: 5 }, () => {
          const ids = Array.from({ length: 4 + (next() % 5) }, () => all[next() % all.length]!)
          const target = Buffer.from(new SharedArrayBuffer(ids.length * BLOCK))
          return reader.readChunksInto(ids, target, ids.map((_, k) => k * BLOCK), { zeroGranule: 4096 }).then((got) => ({ ids, target, got }))
        })
        for (const { ids, target, got } of await Promise.all(calls)) {
          ids.forEach((id, k) => {
            const w = want.get(id.toString('hex'))!
            expect(got.lengths[k]).toBe(w.length)
            expect(target.subarray(k * BLOCK, k * BLOCK + w.length).equals(w)).toBe(true)
          })
        }
      }
      // the cache was filled again and again, and refused places (a call's parts alone outgrow it)
      expect(reserved).toBeGreaterThan(10)
      expect(refused).toBeGreaterThan(0)
      // and with nothing in flight, a block read twice takes its parts from it the second time
      const one = [all[0]!] // the first point's first block: text, stored as parts
      const target = Buffer.from(new SharedArrayBuffer(BLOCK))
      await reader.readChunksInto(one, target, [0], { zeroGranule: 4096 })
      const before = hits
      const got = await reader.readChunksInto(one, target.fill(0), [0], { zeroGranule: 4096 })
      expect(hits).toBeGreaterThan(before)
      expect(got.lengths[0]).toBe(BLOCK)
      expect(target.equals(first[0]!)).toBe(true)
    } finally {
      await reader.close()
    }
  })

  it('verify --read-data passes, and prune after deleting the first point keeps every part the second needs', async () => {
    const phases: string[] = []
    expect((await vault.verify({ readData: true, onProgress: (p) => phases.push(`${p.phase} ${p.done}/${p.total}`) })).problems).toEqual([])
    // the recipe pass reports its progress like the others: every recipe pack, counted from 0
    const recipes = phases.filter((p) => p.startsWith('recipes '))
    expect(recipes.length).toBeGreaterThan(0)
    expect(recipes[0]).toMatch(/^recipes 0\/[1-9]/)
    expect(phases.indexOf(recipes[0]!)).toBeGreaterThan(phases.findLastIndex((p) => p.startsWith('data ')))
    const r = await vault.prune({ deletePointIds: [pa.id], maxUnused: 0 }) // 0: every partly used pack is rewritten, parts and recipes moved
    expect(r.pointsRemoved).toBe(1)
    expect(r.bytesFreed).toBeGreaterThan(0)
    expect(r.packsRepacked).toBeGreaterThan(0)
    const b = await restoreDisk(vault, pb.id, 0)
    b.forEach((x, i) => expect((x as Buffer).equals(second[i]!)).toBe(true))
    const report = await vault.verify({ readData: true })
    expect(report.problems).toEqual([])
  })

  it('a damaged part: verify names the part and the point and disk whose block needs it; the read fails as CHUNK_CORRUPT', async () => {
    const t2 = await tempDir()
    const { vault: v, dir: d } = await newVault(t2.dir, {}, { packTargetBytes: 1 << 20, formatVersion: 2 })
    try {
      const blocks = shifted(pool, [5, 90_000])
      const p = await backUp(v, [{ name: 'c.raw', blocks }], 'C')
      // damage every data pack in turn (recipe packs hold only recipes, which are small)
      let checked = 0
      for (const pack of await packFiles(d)) {
        const orig = await readFile(pack)
        if (orig.length < 8 * 1024) continue
        const copy = Buffer.from(orig)
        copy[24 + 40]! ^= 0x04 // inside the pack's first record: a part
        await writeFile(pack, copy)
        const report = await v.verify({ readData: true })
        const bad = report.problems.find((x) => x.kind === 'chunk-corrupt')
        expect(bad, JSON.stringify(report.problems)).toBeDefined()
        expect(bad!.affectedPoints).toEqual([{ pointId: p.id, disks: ['c.raw'] }])
        const err = await restoreDisk(v, p.id, 0).catch((e: unknown) => e)
        expect(err).toBeInstanceOf(EngineError)
        expect((err as EngineError).code).toBe('CHUNK_CORRUPT')
        await writeFile(pack, orig)
        checked++
      }
      expect(checked).toBeGreaterThan(0)
      expect((await v.verify({ readData: true })).problems).toEqual([])
    } finally {
      await v.close()
      await t2.cleanup()
    }
  })

  it('blocks of runs of repeated bytes and random bytes: parts decode in place with no room past their own length', async () => {
    const t3 = await tempDir()
    const { vault: v } = await newVault(t3.dir, { workers: 2 }, { formatVersion: 2 })
    try {
      let x = 77
      const next = (n: number): number => ((x = (Math.imul(x, 1103515245) + 12345) >>> 0) >>> 8) % n
      const blocks = Array.from({ length: 24 }, () => {
        const b = Buffer.alloc(BLOCK)
        for (let at = 0; at < BLOCK; ) {
          const len = Math.min(BLOCK - at, 512 * (1 + next(40)))
          const pick = next(10)
          if (pick < 3) randomBytes(len).copy(b, at)
          else if (pick < 7) b.fill(1 + next(255), at, at + len)
          at += len
        }
        return b
      })
      const p = await backUp(v, [{ name: 'm.raw', blocks }], 'M')
      expect((await v.stats()).chunks).toBeGreaterThan(blocks.length) // some were cut
      const ids: Buffer[] = []
      for await (const e of v.readBlockMap(p.id, 0)) if (e.kind === 'data') ids.push(e.chunkId)
      expect(ids.length).toBe(blocks.length)
      // the target ends exactly at the last block: a part decoded with a whole block's room would not fit
      const target = Buffer.from(new SharedArrayBuffer(ids.length * BLOCK))
      const reader = v.chunkReader()
      const got = await reader.readChunksInto(ids, target, ids.map((_, k) => k * BLOCK), { zeroGranule: 4096 })
      await reader.close()
      const hasher = createBlockHasher()
      blocks.forEach((b, k) => {
        expect(target.subarray(k * BLOCK, (k + 1) * BLOCK).equals(b)).toBe(true)
        expect(got.checksums[k]!.equals(hasher.checksum(b))).toBe(true)
        expect(Buffer.from(got.zeroMaps[k]!).equals(zeroMapOf(b, 4096))).toBe(true)
      })
    } finally {
      await v.close()
      await t3.cleanup()
    }
  })

  it('prune drops a dead recipe kept in a pack with live ones, so a later backup never reuses a recipe whose parts are gone', async () => {
    const t4 = await tempDir()
    const { vault: v } = await newVault(t4.dir, { workers: 2 }, { packTargetBytes: 1 << 20, formatVersion: 2 })
    try {
      const p2 = textPool(29, 1024 * 1024)
      const kept = shifted(p2, [0, 100_003, 200_009, 300_017, 400_031, 500_041, 600_043, 700_057])
      const [gone] = shifted(p2, [900_001])
      // A: one data pack (parts of 9 text blocks and a random block) and one small recipe pack (9 recipes)
      const pa = await backUp(v, [{ name: 'a.raw', blocks: [...kept, gone!, makeBlock(77, 'random')] }], 'A')
      const pb = await backUp(v, [{ name: 'b.raw', blocks: kept }], 'B')
      // Deleting A: the data pack is a third unused (the random block, the parts of `gone`) and is
      // rewritten; the recipe pack is 1/9 unused, within the default policy's allowance, so the
      // policy alone would keep it, and with it the dead recipe of `gone` without its parts.
      const r = await v.prune({ deletePointIds: [pa.id] })
      expect(r.pointsRemoved).toBe(1)
      expect(r.packsRepacked).toBe(2) // the data pack by the policy, the recipe pack for its dead recipe
      expect((await v.verify({ readData: true })).problems).toEqual([])
      const pc = await backUp(v, [{ name: 'c.raw', blocks: [gone!] }], 'C') // the same block again
      expect(pc.stats.bytesStored).toBeGreaterThan(BLOCK / 8) // its parts stored anew
      expect((await v.verify({ readData: true })).problems).toEqual([])
      expect(((await restoreDisk(v, pc.id, 0))[0] as Buffer).equals(gone!)).toBe(true)
      expect((await restoreDisk(v, pb.id, 0)).every((x, i) => (x as Buffer).equals(kept[i]!))).toBe(true)
    } finally {
      await v.close()
      await t4.cleanup()
    }
  })

  it('recipe packs are written through the page cache (held open until the data is published, they keep no staging buffer); data packs go direct', async () => {
    const directWrites = new Set<string>() // pack ids opened for direct writing
    const fs: VaultFs = {
      ...nodeVaultFs,
      async openDirect(path, mode) {
        if (mode === 'w') directWrites.add(basename(path).split('.')[0]!)
        return nodeVaultFs.openDirect!(path, mode)
      },
    }
    const t4 = await tempDir()
    const { vault: v, dir: d } = await newVault(t4.dir, { fs }, { packTargetBytes: 1 << 20, formatVersion: 2 })
    try {
      const blocks = [...shifted(pool, [3, 80_000, 150_000]), makeBlock(8, 'random')]
      const p = await backUp(v, [{ name: 'e.raw', blocks }], 'E')
      const ctx = (v as unknown as { ctx: VaultContext }).ctx
      let recipePacks = 0
      let dataPacks = 0
      for (const file of await packFiles(d)) {
        const hex = basename(file)
        if ((await ctx.packEntries(hex)).some(isRecipeEntry)) {
          recipePacks++
          expect(directWrites.has(hex)).toBe(false)
        } else {
          dataPacks++
          expect(directWrites.has(hex)).toBe(nodeVaultFs.openDirect !== undefined)
        }
      }
      expect(recipePacks).toBeGreaterThan(0)
      expect(dataPacks).toBeGreaterThan(0)
      const back = await restoreDisk(v, p.id, 0)
      back.forEach((b, i) => expect((b as Buffer).equals(blocks[i]!)).toBe(true))
    } finally {
      await v.close()
      await t4.cleanup()
    }
  })

  it('a block put again after its recipe went into the (unpublished) recipe pack is a duplicate: the recipe is stored once', async () => {
    const t5 = await tempDir()
    const { vault: v, dir: d } = await newVault(t5.dir, { workers: 2 }, { packTargetBytes: 4 << 20, formatVersion: 2 })
    try {
      // distinct text blocks until the first recipe batch (RECIPE_BATCH_BYTES) has been sealed and
      // written into the recipe pack, which stays unpublished: ~3,000–5,000 blocks, depending on the
      // cut points (keyed by the vault's random key) and so on the recipes' sizes
      const cap = 12_000
      const blockAt = (i: number): Buffer => Buffer.from(pool.subarray((i * 113) % (pool.length - BLOCK), ((i * 113) % (pool.length - BLOCK)) + BLOCK))
      const session = await v.beginBackup()
      const held = (session as unknown as { heldRecipes: { has(id: Uint8Array): boolean; size: number } }).heldRecipes
      const writer = session.blockMapWriter({ index: 0, blockCount: cap })
      const ids: Buffer[] = []
      for (let i = 0; i < cap - 1 && !(i > 0 && held.has(ids[0]!)); i++) {
        const b = blockAt(i)
        const r = await session.putBlock(b, checksumOf(b))
        expect(r.isNew).toBe(true)
        ids.push(r.chunkId)
        writer.append({ kind: 'data', chunkId: r.chunkId, checksum: checksumOf(b) })
      }
      const count = ids.length
      expect(held.has(ids[0]!)).toBe(true)
      expect(held.size).toBeLessThan(count)
      const again = await session.putBlock(blockAt(0), checksumOf(blockAt(0)))
      expect(again.isNew).toBe(false)
      expect(again.chunkId.equals(ids[0]!)).toBe(true)
      writer.append({ kind: 'data', chunkId: again.chunkId, checksum: checksumOf(blockAt(0)) })
      for (let i = count + 1; i < cap; i++) writer.append({ kind: 'zero' })
      await writer.finish()
      const p = await session.commit({
        machineId: 'h', machineName: 'h', createdAt: new Date().toISOString(), consistency: 'crash',
        disks: [{ index: 0, name: 'h.raw', virtualSize: cap * BLOCK, sourceFormat: 'raw', sourcePath: '/src/h.raw', allocatedBytes: (count + 1) * BLOCK, blockCount: cap }],
        stats: { bytesRead: 0, bytesNew: 0, bytesStored: 0, seconds: 0 },
        labels: {},
      })
      // one recipe record per distinct block, the repeated one included
      const ctx = (v as unknown as { ctx: VaultContext }).ctx
      let recipes = 0
      let firstRecipes = 0
      for (const file of await packFiles(d)) {
        for (const e of await ctx.packEntries(basename(file))) {
          if (!isRecipeEntry(e)) continue
          recipes++
          if (e.chunkId.equals(ids[0]!)) firstRecipes++
        }
      }
      expect(firstRecipes).toBe(1)
      expect(recipes).toBe(new Set(ids.map((id) => id.toString('hex'))).size)
      const back = await restoreDisk(v, p.id, 0)
      expect((back[count] as Buffer).equals(blockAt(0))).toBe(true)
      expect((back[1] as Buffer).equals(blockAt(1))).toBe(true)
    } finally {
      await v.close()
      await t5.cleanup()
    }
  }, 120_000)

  it('a format-1 vault keeps storing whole blocks, and reads them back', async () => {
    const t1 = await tempDir()
    try {
      const d = join(t1.dir, 'v1')
      const key = randomBytes(32)
      await createVault(d, { masterKey: key, keySlots: { passphrase: { test: true } }, blockSize: BLOCK, packTargetBytes: 1 << 20, formatVersion: 1 })
      const v = await openVault(d, key, { workers: 1 })
      try {
        const p = await backUp(v, [{ name: 'a.raw', blocks: first }], 'A')
        expect((await v.stats()).chunks).toBe(first.length)
        const back = await restoreDisk(v, p.id, 0)
        back.forEach((b, i) => expect((b as Buffer).equals(first[i]!)).toBe(true))
        expect(JSON.parse(await readFile(join(d, 'config'), 'utf8')).formatVersion).toBe(1)
      } finally {
        await v.close()
      }
    } finally {
      await t1.cleanup()
    }
  })
})
