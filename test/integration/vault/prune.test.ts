import { readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { randomBytes } from 'node:crypto'
import { backUp, makeBlock, newVault, packFiles, restoreDisk, tempDir } from './helpers.js'
import { FaultFs } from './faultFs.js'
import { createVault, openVault } from '../../../electron/engine/vault/index.js'
import type { LocalVault, PointManifest } from '../../../electron/engine/vault/index.js'
import { EngineError } from '../../../electron/engine/errors.js'

/** After a failed prune: the next one repacks more than `minRepacked` packs, and point `pointId` restores to `blocks` with a clean verify. */
async function expectNextPruneFinishes(v: LocalVault, pointId: string, blocks: Buffer[], minRepacked: number): Promise<void> {
  const r = await v.prune()
  expect(r.packsRepacked).toBeGreaterThan(minRepacked)
  const back = await restoreDisk(v, pointId, 0)
  back.forEach((block, i) => expect((block as Buffer).equals(blocks[i]!)).toBe(true))
  const report = await v.verify({ readData: true })
  expect(report.problems).toEqual([])
}

describe('prune', () => {
  let t: Awaited<ReturnType<typeof tempDir>>
  let vault: LocalVault
  let dir: string
  const points: PointManifest[] = []
  const contents: Buffer[][] = []

  beforeAll(async () => {
    t = await tempDir()
    ;({ vault, dir } = await newVault(t.dir, {}, { packTargetBytes: 1 << 20 }))
    const common = makeBlock(999, 'random')
    for (let p = 0; p < 3; p++) {
      const blocks = [common]
      for (let i = 0; i < 24; i++) blocks.push(makeBlock(p * 1000 + i, 'random'))
      contents.push(blocks)
      points.push(await backUp(vault, [{ name: `disk${p}`, blocks }]))
    }
  })
  afterAll(async () => {
    await vault.close()
    await t.cleanup()
  })

  it('deletes the given points, frees their space and keeps every other point intact', async () => {
    const before = await vault.stats()
    const gen = await vault.generation()
    const r = await vault.prune({ deletePointIds: [points[1]!.id] })
    expect(r.pointsRemoved).toBe(1)
    expect(r.bytesFreed).toBeGreaterThan(20 * 64 * 1024)
    const after = await vault.stats()
    expect(after.chunks).toBe(before.chunks - 24)
    expect(before.bytesOnDisk - after.bytesOnDisk).toBe(r.bytesFreed)
    expect(await vault.generation()).toBeGreaterThan(gen)
    expect((await vault.listPoints()).map((p) => p.id)).toEqual([points[0]!.id, points[2]!.id])
    for (const k of [0, 2]) {
      const back = await restoreDisk(vault, points[k]!.id, 0)
      back.forEach((b, i) => expect((b as Buffer).equals(contents[k]![i]!)).toBe(true))
    }
    const report = await vault.verify({ readData: true })
    expect(report.problems).toEqual([])
    expect(report.unreferencedPacks).toBe(0)
    expect(await readdir(join(dir, 'maps'))).toEqual([points[0]!.id, points[2]!.id].sort())
    expect(await readdir(join(dir, 'tmp'))).toEqual([])
  })

  it('reclaims packs of an aborted backup and repacks sparse packs', async () => {
    const s = await vault.beginBackup()
    for (let i = 0; i < 5; i++) await s.putBlock(makeBlock(50_000 + i, 'random'), Buffer.alloc(16))
    await s.abort()
    // one pack of 12 chunks; a later point keeps 4 of them → 1/3 occupancy once the first is deleted
    const all = Array.from({ length: 12 }, (_, i) => makeBlock(70_000 + i, 'random'))
    const drop = await backUp(vault, [{ name: 'y', blocks: all }])
    const keep = await backUp(vault, [{ name: 'x', blocks: all.slice(0, 4) }])
    const r = await vault.prune({ deletePointIds: [drop.id] })
    expect(r.pointsRemoved).toBe(1)
    expect(r.packsRepacked).toBeGreaterThan(0)
    expect(r.bytesFreed).toBeGreaterThan(5 * 64 * 1024)
    const back = await restoreDisk(vault, keep.id, 0)
    back.forEach((b, i) => expect((b as Buffer).equals(all[i]!)).toBe(true))
    const report = await vault.verify({ readData: true })
    expect(report.problems).toEqual([])
    expect(report.unreferencedPacks).toBe(0)
  })

  it('frees garbage spread thinly over many packs: rewrites the emptiest until at most 5 % stays unused', async () => {
    const t2 = await tempDir()
    // 1 MiB packs (the smallest allowed) of incompressible 64 KiB blocks: ~15 chunks per pack
    const { vault: v } = await newVault(t2.dir, {}, { packTargetBytes: 1 << 20 })
    try {
      const first = Array.from({ length: 160 }, (_, i) => makeBlock(80_000 + i, 'random'))
      // every fourth block changes: once the first point goes, each of its packs is about a quarter unused
      const second = first.map((b, i) => (i % 4 === 0 ? makeBlock(90_000 + i, 'random') : b))
      const a = await backUp(v, [{ name: 'd', blocks: first }])
      const b = await backUp(v, [{ name: 'd', blocks: second }])
      const packsBefore = (await v.stats()).packs

      // maxUnused 1: only packs with nothing live would go, and there are none
      const lazy = await v.prune({ deletePointIds: [a.id], maxUnused: 1 })
      expect(lazy).toMatchObject({ pointsRemoved: 1, packsRepacked: 0, packsDeleted: 0, bytesFreed: 0 })
      expect((await v.stats()).chunks).toBe(200)

      // the default (5 %): most packs are rewritten, the unused chunks left are within the limit
      const r = await v.prune()
      expect(r.packsRepacked).toBeGreaterThan(packsBefore / 2)
      expect(r.bytesFreed).toBeGreaterThan(30 * 64 * 1024)
      const after = await v.stats()
      expect(after.chunks).toBeGreaterThanOrEqual(160)
      expect(after.chunks - 160).toBeLessThanOrEqual(Math.floor((0.05 / 0.95) * 160))
      const back = await restoreDisk(v, b.id, 0)
      back.forEach((block, i) => expect((block as Buffer).equals(second[i]!)).toBe(true))

      // 0: nothing unused may stay
      await v.prune({ maxUnused: 0 })
      expect((await v.stats()).chunks).toBe(160)
      const report = await v.verify({ readData: true })
      expect(report.problems).toEqual([])
      expect(report.unreferencedPacks).toBe(0)
      const again = await restoreDisk(v, b.id, 0)
      again.forEach((block, i) => expect((block as Buffer).equals(second[i]!)).toBe(true))
      await expect(v.prune({ maxUnused: 1.5 })).rejects.toMatchObject({ code: 'INVALID_INPUT' })
    } finally {
      await v.close()
      await t2.cleanup()
    }
  })

  it('a live record that does not open stops the repack: CHUNK_CORRUPT, nothing deleted, and the next prune finishes', async () => {
    const t2 = await tempDir()
    const { vault: v, dir: vdir } = await newVault(t2.dir, {}, { packTargetBytes: 1 << 20 })
    try {
      const first = Array.from({ length: 16 }, (_, i) => makeBlock(60_000 + i, 'random'))
      const a = await backUp(v, [{ name: 'd', blocks: first }])
      const oldPacks = await packFiles(vdir)
      // only the first block survives into the second point: its pack is almost all garbage once `a` goes
      const second = first.map((b, i) => (i === 0 ? b : makeBlock(61_000 + i, 'random')))
      const b = await backUp(v, [{ name: 'd', blocks: second }])
      // flip a bit inside the first record of each of the first point's packs (the block that stays live is one of them)
      const originals = new Map<string, Buffer>()
      for (const f of oldPacks) {
        const bytes = await readFile(f)
        originals.set(f, Buffer.from(bytes))
        bytes[24 + 40]! ^= 0x04
        await writeFile(f, bytes)
      }
      await expect(v.prune({ deletePointIds: [a.id] })).rejects.toMatchObject({ code: 'CHUNK_CORRUPT', message: expect.stringMatching(/could not be moved out of pack/) })
      // nothing was deleted: every old pack is still there, the second point still listed
      const after = await packFiles(vdir)
      for (const f of oldPacks) expect(after).toContain(f)
      expect((await v.listPoints()).map((p) => p.id)).toEqual([b.id])
      // once the damage is repaired the prune goes through and the second point restores exactly
      for (const [f, bytes] of originals) await writeFile(f, bytes)
      await expectNextPruneFinishes(v, b.id, second, 0)
    } finally {
      await v.close()
      await t2.cleanup()
    }
  })

  it('a pack read that fails while later batches are being read stops the repack: nothing deleted, and the next prune finishes', async () => {
    const t2 = await tempDir()
    const fs = new FaultFs()
    const { vault: v, dir: vdir } = await newVault(t2.dir, { fs }, { packTargetBytes: 1 << 20 })
    try {
      // ~15 records per 1 MiB pack; every other block changes, so each pack of the first point is half unused
      const first = Array.from({ length: 120 }, (_, i) => makeBlock(70_000 + i, 'random'))
      const second = first.map((b, i) => (i % 2 === 0 ? makeBlock(71_000 + i, 'random') : b))
      const a = await backUp(v, [{ name: 'd', blocks: first }])
      const b = await backUp(v, [{ name: 'd', blocks: second }])
      // the pack reads a prune makes before it repacks anything (its chunk table, the recipes)
      fs.log = []
      await v.prune({ maxUnused: 1 })
      const before = fs.log.filter((e) => e.op === 'read' && e.path.includes('/packs/')).length
      const oldPacks = await packFiles(vdir)
      // the fourth read of the repack fails, with the reads of the batches after it in flight
      fs.rule = { ops: ['read'], afterOps: before + 3, code: 'EIO', pathIncludes: '/packs/' }
      await expect(v.prune({ deletePointIds: [a.id] })).rejects.toMatchObject({ message: expect.stringMatching(/reading pack/) })
      expect(fs.hasTripped).toBe(true)
      const after = await packFiles(vdir)
      for (const f of oldPacks) expect(after).toContain(f)
      expect((await v.listPoints()).map((p) => p.id)).toEqual([b.id])
      fs.reset()
      await expectNextPruneFinishes(v, b.id, second, 3)
    } finally {
      await v.close()
      await t2.cleanup()
    }
  })

  it('repacks a vault of 1 MiB blocks, whose incompressible records are larger than a block (one per seal batch)', async () => {
    const t2 = await tempDir()
    const key = randomBytes(32)
    const vdir = join(t2.dir, 'vault')
    await createVault(vdir, { masterKey: key, keySlots: { passphrase: { test: true } }, blockSize: 1 << 20, packTargetBytes: 4 << 20 })
    const v = await openVault(vdir, key, { workers: 1 })
    try {
      const MiB = 1 << 20
      const first = Array.from({ length: 6 }, (_, i) => makeBlock(40_000 + i, 'random', MiB))
      const a = await backUp(v, [{ name: 'd', blocks: first }])
      // blocks 0 and 3 stay: each of the first point's packs keeps one record of three
      const second = first.map((b, i) => (i % 3 === 0 ? b : makeBlock(41_000 + i, 'random', MiB)))
      const b = await backUp(v, [{ name: 'd', blocks: second }])
      const r = await v.prune({ deletePointIds: [a.id] })
      expect(r.packsRepacked).toBeGreaterThan(0)
      expect((await v.stats()).chunks).toBe(6)
      const back = await restoreDisk(v, b.id, 0)
      back.forEach((block, i) => expect((block as Buffer).equals(second[i]!)).toBe(true))
      expect((await v.verify({ readData: true })).problems).toEqual([])
    } finally {
      await v.close()
      await t2.cleanup()
    }
  })

  it('deletePoints removes manifests only; an unknown id is ignored, a malformed one refused', async () => {
    const p = await backUp(vault, [{ name: 'z', blocks: ['zero'] }])
    expect(await vault.deletePoints([p.id, '0123456789abcdef'])).toBe(1)
    await expect(vault.deletePoints(['../x'])).rejects.toBeInstanceOf(EngineError)
    expect((await vault.listPoints()).some((x) => x.id === p.id)).toBe(false)
  })

  it('a vault handle opened before another one pruned reads the moved chunks from where they are now', async () => {
    // Seen as a flaky faults test: a handle's chunk table, loaded before a prune by another handle
    // (or process) repacked its packs, sent the next restore to a deleted pack (CHUNK_MISSING).
    const u = await tempDir()
    try {
      const { vault: pruner, dir: d, key } = await newVault(u.dir, {}, { packTargetBytes: 1 << 20 })
      const kept = Array.from({ length: 4 }, (_, i) => makeBlock(51_000 + i, 'random'))
      const dropped = Array.from({ length: 4 }, (_, i) => makeBlock(52_000 + i, 'random'))
      const both = await backUp(pruner, [{ name: 'd', blocks: [...kept, ...dropped] }]) // one pack
      const later = await backUp(pruner, [{ name: 'd', blocks: kept }]) // references that pack
      const reader = await openVault(d, key, { workers: 1 })
      try {
        expect(await restoreDisk(reader, later.id, 0)).toEqual(kept) // its table now knows that pack
        const r = await pruner.prune({ deletePointIds: [both.id], maxUnused: 0 })
        expect(r.packsRepacked).toBe(1) // half of it was dead: the kept chunks moved to a new pack
        expect(await restoreDisk(reader, later.id, 0)).toEqual(kept)
        expect((await reader.verify({ readData: true })).problems).toEqual([])
      } finally {
        await reader.close()
        await pruner.close()
      }
    } finally {
      await u.cleanup()
    }
  })
})
