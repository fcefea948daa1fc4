import { afterEach, describe, expect, it } from 'vitest'
import { backUp, BLOCK, checksumOf, expectedChunks, makeBlock, newVault, restoreDisk, tempDir } from './helpers.js'
import { openVault, readVaultHeader } from '../../../electron/engine/vault/index.js'
import { nodeVaultFs, type VaultFileHandle, type VaultFs } from '../../../electron/engine/vault/vaultFs.js'
import { LocalBackupSession, SEAL_BATCH_BYTES, SEAL_BUDGET_BYTES } from '../../../electron/engine/vault/session.js'
import { join } from 'node:path'

const cleanups: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c()
})

describe('vault round trip', () => {
  it('stores blocks, commits a point and reads every block back identical', async () => {
    const t = await tempDir()
    cleanups.push(t.cleanup)
    // format 1: the chunk counts below are of whole blocks (format 2 cuts text blocks into a number
    // of parts that depends on the vault's keyed cutter; sealBatches/sharedCut cover it)
    const { vault, dir, key } = await newVault(t.dir, {}, { formatVersion: 1 })
    cleanups.push(() => vault.close())
    const blocks = [makeBlock(1, 'text'), makeBlock(2, 'random'), 'zero' as const, 'unallocated' as const, makeBlock(3, 'random').subarray(0, 1000)]
    for (let i = 0; i < 40; i++) blocks.push(makeBlock(100 + i, i % 2 ? 'text' : 'random'))
    const point = await backUp(vault, [{ name: 'disk0.raw', blocks }, { name: 'disk1.raw', blocks: [makeBlock(1, 'text')] }])
    expect(point.id).toMatch(/^[0-9a-f]{16}$/)
    expect(point.blockSize).toBe(BLOCK)
    expect(point.stats.bytesStored).toBeGreaterThan(0)
    const back = await restoreDisk(vault, point.id, 0)
    expect(back.length).toBe(blocks.length)
    back.forEach((b, i) => expect(Buffer.isBuffer(b) ? (b as Buffer).equals(blocks[i] as Buffer) : b === blocks[i]).toBe(true))
    expect((await restoreDisk(vault, point.id, 1))[0]).toEqual(makeBlock(1, 'text'))
    const points = await vault.listPoints()
    expect(points.map((p) => p.id)).toEqual([point.id])
    expect(await vault.generation()).toBe(2)
    const stats = await vault.stats()
    expect(stats.points).toBe(1)
    expect(stats.chunks).toBe(43)
    expect(stats.packs).toBeGreaterThan(1) // 1 MiB packs
    // reopen from disk alone (I4)
    await vault.close()
    const again = await openVault(dir, key, { workers: 1 })
    cleanups.push(() => again.close())
    expect((await again.getPoint(point.id)).disks.map((d) => d.name)).toEqual(['disk0.raw', 'disk1.raw'])
    const back2 = await restoreDisk(again, point.id, 0)
    expect((back2[1] as Buffer).equals(blocks[1] as Buffer)).toBe(true)
    const report = await again.verify({ readData: true })
    expect(report.problems).toEqual([])
    expect(report.ok).toBe(true)
    expect(report.checked.chunksRead).toBe(43)
    expect((await readVaultHeader(dir)).vaultId).toBe(again.id)
  })

  it('deduplicates within a session and across points', async () => {
    const t = await tempDir()
    cleanups.push(t.cleanup)
    const { vault, key, vaultId } = await newVault(t.dir)
    cleanups.push(() => vault.close())
    const a = makeBlock(7, 'random')
    // the text block is one chunk, or a recipe and its parts: under ~3 % of random keys its
    // repeating lines hold a cut point (format 2), so the count is worked out for this key
    const distinct = expectedChunks([a, makeBlock(8, 'text')], key, vaultId)
    expect(distinct).toBeGreaterThanOrEqual(2)
    const first = await backUp(vault, [{ name: 'd', blocks: [a, a, a, makeBlock(8, 'text')] }])
    const s1 = await vault.stats()
    expect(s1.chunks).toBe(distinct)
    const second = await backUp(vault, [{ name: 'd', blocks: [makeBlock(8, 'text'), a] }])
    const s2 = await vault.stats()
    expect(s2.chunks).toBe(distinct)
    expect(second.stats.bytesStored).toBeLessThan(first.stats.bytesStored)
    expect((await restoreDisk(vault, second.id, 0))[1]).toEqual(a)
  })

  it('bounds the memory of seal batches in flight whatever the worker count', async () => {
    const t = await tempDir()
    cleanups.push(t.cleanup)
    for (const workers of [1, 2, 4, 8]) {
      const { vault } = await newVault(join(t.dir, `w${workers}`), { workers })
      const session = await vault.beginBackup()
      expect(session).toBeInstanceOf(LocalBackupSession)
      const batchBytes = (session as LocalBackupSession).sealBatch * BLOCK
      expect(batchBytes).toBeLessThanOrEqual(SEAL_BATCH_BYTES)
      expect(batchBytes * 2 * workers).toBeLessThanOrEqual(SEAL_BUDGET_BYTES) // two batches in flight per worker
      expect(batchBytes).toBeGreaterThanOrEqual(BLOCK)
      await session.abort()
      await vault.close()
    }
  })

  it('handles many concurrent puts (with duplicates) across pack rotations', async () => {
    const t = await tempDir()
    cleanups.push(t.cleanup)
    // format 1: whole blocks, so the counts below are exact (see the first test)
    const { vault } = await newVault(t.dir, { workers: 2, maxBlocksInFlight: 3 }, { packTargetBytes: 1 << 20, formatVersion: 1 })
    cleanups.push(() => vault.close())
    // 100 blocks: concurrent puts share seal batches (up to half a 1 MiB pack), so fewer blocks would fill only ~2 packs
    const unique = Array.from({ length: 100 }, (_, i) => makeBlock(9000 + i, i % 4 ? 'random' : 'text'))
    const order = [...unique, ...unique.slice(0, 20), ...unique.slice(10, 30)]
    const session = await vault.beginBackup()
    const results = await Promise.all(order.map((b) => session.putBlock(b, checksumOf(b))))
    expect(results.filter((r) => r.isNew).length).toBe(100)
    const w = session.blockMapWriter({ index: 0, blockCount: order.length })
    results.forEach((r, i) => w.append({ kind: 'data', chunkId: r.chunkId, checksum: checksumOf(order[i]!) }))
    await w.finish()
    const point = await session.commit({
      machineId: 'm', machineName: 'm', createdAt: new Date().toISOString(), consistency: 'crash',
      disks: [{ index: 0, name: 'd', virtualSize: order.length * BLOCK, sourceFormat: 'raw', sourcePath: '/d', allocatedBytes: 0, blockCount: order.length }],
      stats: { bytesRead: 0, bytesNew: 0, bytesStored: 0, seconds: 0 }, labels: {},
    })
    expect((await vault.stats()).chunks).toBe(100)
    expect((await vault.stats()).packs).toBeGreaterThan(2)
    const back = await restoreDisk(vault, point.id, 0)
    back.forEach((b, i) => expect((b as Buffer).equals(order[i]!)).toBe(true))
    expect((await vault.verify({ readData: true })).problems).toEqual([])
  })

  it('writes each pack with one write in flight at a time, records in order', async () => {
    // Every write is held back a little, so writes issued concurrently would overlap.
    const inFlight = new Map<string, number>()
    let maxInFlight = 0
    let packWrites = 0
    // both handles of a pack count: the ordinary one and the direct one (O_DIRECT), when offered
    const counted = (fh: VaultFileHandle, path: string): VaultFileHandle => ({
      read: (b, o, l, p) => fh.read(b, o, l, p),
      sync: () => fh.sync(),
      size: () => fh.size(),
      close: () => fh.close(),
      async write(b, o, l, p) {
        const n = (inFlight.get(path) ?? 0) + 1
        inFlight.set(path, n)
        maxInFlight = Math.max(maxInFlight, n)
        packWrites++
        try {
          await new Promise((r) => setTimeout(r, 2))
          return await fh.write(b, o, l, p)
        } finally {
          inFlight.set(path, (inFlight.get(path) ?? 1) - 1)
        }
      },
    })
    const fs: VaultFs = {
      ...nodeVaultFs,
      async open(path, flags) {
        const fh = await nodeVaultFs.open(path, flags)
        return path.endsWith('.pack.tmp') ? counted(fh, path) : fh
      },
      async openDirect(path, mode) {
        const fh = await nodeVaultFs.openDirect!(path, mode)
        return fh && counted(fh, path)
      },
    }
    const t = await tempDir()
    cleanups.push(t.cleanup)
    const { dir, key } = await newVault(t.dir, {}, { packTargetBytes: 1 << 20 })
    const vault = await openVault(dir, key, { workers: 2, maxBlocksInFlight: 8, fs })
    cleanups.push(() => vault.close())
    const blocks = Array.from({ length: 60 }, (_, i) => makeBlock(7000 + i, i % 3 ? 'random' : 'text'))
    const point = await backUp(vault, [{ name: 'd', blocks }])
    expect(packWrites).toBeGreaterThan(4)
    expect(maxInFlight).toBe(1)
    const back = await restoreDisk(vault, point.id, 0)
    back.forEach((b, i) => expect((b as Buffer).equals(blocks[i]!)).toBe(true))
    expect((await vault.verify({ readData: true })).problems).toEqual([])
  })

  it('writes and reads packs through direct handles in whole aligned pages, and falls back when refused', async () => {
    const directWrites: Array<{ position: number; length: number }> = []
    const directReads: Array<{ position: number; length: number }> = []
    let refused = 0
    const spy = (refuse: boolean): VaultFs => {
      // each direct read or write is logged and passed on, or refused as a file system without O_DIRECT would
      const gate = async (log: typeof directReads, position: number, length: number, call: () => Promise<number>): Promise<number> => {
        if (refuse) {
          refused++
          throw Object.assign(new Error('EINVAL: direct I/O refused'), { code: 'EINVAL' })
        }
        log.push({ position, length })
        return call()
      }
      return {
        ...nodeVaultFs,
        async openDirect(path, mode) {
          const fh = await nodeVaultFs.openDirect!(path, mode)
          if (!fh) return undefined
          return {
            read: (b, o, l, p) => gate(directReads, p, l, () => fh.read(b, o, l, p)),
            write: (b, o, l, p) => gate(directWrites, p, l, () => fh.write(b, o, l, p)),
            sync: () => fh.sync(),
            size: () => fh.size(),
            close: () => fh.close(),
          }
        },
      }
    }
    for (const refuse of [false, true]) {
      directWrites.length = 0
      directReads.length = 0
      const t = await tempDir()
      cleanups.push(t.cleanup)
      expect(await nodeVaultFs.openDirect!(t.dir + '/missing', 'w')).toBeUndefined()
      const { dir, key } = await newVault(t.dir)
      const vault = await openVault(dir, key, { workers: 2, fs: spy(refuse) })
      cleanups.push(() => vault.close())
      // ~6.4 MiB of incompressible blocks: one pack, more than one staging buffer
      const blocks = Array.from({ length: 100 }, (_, i) => makeBlock(9000 + i, 'random'))
      const point = await backUp(vault, [{ name: 'd', blocks }])
      const stats = await vault.stats()
      if (refuse) {
        expect(refused).toBeGreaterThan(0)
        expect(directWrites).toEqual([])
      } else {
        expect(directWrites.length).toBeGreaterThan(1)
        for (const w of directWrites) expect([w.position % 4096, w.length % 4096]).toEqual([0, 0])
        // all of the pack but its last partial page, its index and trailer went direct
        expect(directWrites.reduce((sum, w) => sum + w.length, 0)).toBeGreaterThan(stats.bytesOnDisk - 64 * 1024)
      }
      const back = await restoreDisk(vault, point.id, 0)
      back.forEach((b, i) => expect((b as Buffer).equals(blocks[i]!)).toBe(true))
      expect((await vault.verify({ readData: true })).problems).toEqual([])
      if (refuse) expect(directReads).toEqual([])
      else {
        expect(directReads.length).toBeGreaterThan(1)
        for (const r of directReads) expect([r.position % 4096, r.length % 4096]).toEqual([0, 0])
      }
      // a prune that repacks reads the surviving records the same way
      const second = blocks.map((b, i) => (i % 2 === 0 ? makeBlock(19_000 + i, 'random') : b))
      const next = await backUp(vault, [{ name: 'd', blocks: second }])
      const readsBefore = directReads.length
      const pruned = await vault.prune({ deletePointIds: [point.id], maxUnused: 0 })
      expect(pruned.packsRepacked).toBeGreaterThan(0)
      if (refuse) expect(directReads).toEqual([])
      else {
        expect(directReads.length).toBeGreaterThan(readsBefore)
        for (const r of directReads) expect([r.position % 4096, r.length % 4096]).toEqual([0, 0])
      }
      const again = await restoreDisk(vault, next.id, 0)
      again.forEach((b, i) => expect((b as Buffer).equals(second[i]!)).toBe(true))
      expect((await vault.verify({ readData: true })).problems).toEqual([])
    }
  })
})
