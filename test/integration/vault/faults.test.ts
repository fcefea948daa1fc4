import { readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { backUp, makeBlock, newVault, restoreDisk, tempDir } from './helpers.js'
import { FaultFs, durabilityViolations } from './faultFs.js'
import { openVault, type LocalVault, type PointManifest } from '../../../electron/engine/vault/index.js'
import { EngineError } from '../../../electron/engine/errors.js'

async function errorOf(p: Promise<unknown>): Promise<EngineError> {
  try {
    await p
  } catch (err) {
    if (err instanceof EngineError) return err
    throw err
  }
  throw new Error('expected an error')
}

const blocks = (seed: number, n: number) => Array.from({ length: n }, (_, i) => makeBlock(seed + i, i % 3 ? 'random' : 'text'))

describe('faults during backup leave earlier points intact', () => {
  let t: Awaited<ReturnType<typeof tempDir>>
  let dir: string
  let key: Buffer
  let plain: LocalVault
  let first: PointManifest
  const firstBlocks = blocks(1, 20)

  beforeAll(async () => {
    t = await tempDir()
    ;({ vault: plain, dir, key } = await newVault(t.dir, {}, { packTargetBytes: 1 << 20 }))
    first = await backUp(plain, [{ name: 'd0', blocks: firstBlocks }])
  })
  afterAll(async () => {
    await plain.close()
    await t.cleanup()
  })

  async function assertFirstIntact(): Promise<void> {
    const back = await restoreDisk(plain, first.id, 0)
    back.forEach((b, i) => expect((b as Buffer).equals(firstBlocks[i]!)).toBe(true))
    const report = await plain.verify({ readData: true })
    expect(report.problems).toEqual([])
    expect((await plain.listPoints()).map((p) => p.id)).toContain(first.id)
  }

  it('ENOSPC at every k-th write operation: DISK_FULL, nothing committed, temp files removed', async () => {
    const fs = new FaultFs()
    const v = await openVault(dir, key, { workers: 1, fs })
    try {
      // count the ops of a clean run first
      fs.rule = { afterOps: 1e9, code: 'ENOSPC' }
      const probe = await backUp(v, [{ name: 'p', blocks: blocks(500, 20) }])
      const total = fs.log.filter((e) => ['open', 'write', 'sync', 'rename', 'link', 'syncDir'].includes(e.op)).length
      await v.prune({ deletePointIds: [probe.id] })
      const before = (await v.listPoints()).length
      const steps = [0, 1, 3, 7, Math.floor(total / 3), Math.floor(total / 2), total - 6, total - 4, total - 3, total - 2, total - 1]
      let failures = 0
      for (const k of steps) {
        fs.reset()
        fs.rule = { afterOps: k, code: 'ENOSPC', sticky: true }
        const bs = blocks(1000 + k * 50, 20)
        let err: EngineError | undefined
        let point: PointManifest | undefined
        try {
          point = await backUp(v, [{ name: 'p', blocks: bs }])
        } catch (e) {
          if (!(e instanceof EngineError)) throw e
          err = e
        }
        if (!fs.hasTripped) expect(err).toBeUndefined() // fewer ops than the probe run
        fs.reset()
        if (err) {
          failures++
          expect(err.code, err.message).toBe('DISK_FULL')
          expect(err.userMessage).toMatch(/full/)
          expect((await v.listPoints()).length).toBe(before)
        } else {
          // the fault hit after the commit (releasing the lock): the point must be whole
          const back = await restoreDisk(v, point!.id, 0)
          back.forEach((b, i) => expect((b as Buffer).equals(bs[i]!)).toBe(true))
          await v.deletePoints([point!.id])
        }
        expect(await readdir(join(dir, 'tmp'))).toEqual([])
        expect(await readdir(join(dir, 'locks'))).toEqual([])
      }
      expect(failures).toBeGreaterThanOrEqual(steps.length - 5)
      await assertFirstIntact()
      // after space is back, a backup works
      const ok = await backUp(v, [{ name: 'p', blocks: blocks(2000, 5) }])
      expect((await restoreDisk(v, ok.id, 0)).length).toBe(5)
    } finally {
      await v.close()
    }
  })

  it('a failing fsync is fatal (IO_ERROR), never retried into a commit', async () => {
    const fs = new FaultFs()
    const v = await openVault(dir, key, { workers: 1, fs })
    try {
      const before = (await v.listPoints()).length
      fs.rule = { ops: ['sync'], afterOps: 2, code: 'EIO' }
      const err = await errorOf(backUp(v, [{ name: 'p', blocks: blocks(3000, 20) }]))
      expect(err.code).toBe('IO_ERROR')
      fs.reset()
      expect((await v.listPoints()).length).toBe(before)
      await assertFirstIntact()
    } finally {
      await v.close()
    }
  })

  it('follows the durability protocol: write → fsync → rename → fsync dir; manifest last (lint, 0 violations)', async () => {
    const fs = new FaultFs()
    const v = await openVault(dir, key, { workers: 1, fs })
    try {
      await backUp(v, [{ name: 'p', blocks: blocks(6000, 40) }, { name: 'q', blocks: ['zero', ...blocks(6100, 3)] }])
      const renames = fs.log.filter((e) => e.op === 'rename')
      expect(renames.some((e) => e.path.includes('/packs/'))).toBe(true)
      expect(renames.some((e) => e.path.includes('/maps/'))).toBe(true)
      expect(renames.at(-1)!.path).toContain('/manifests/')
      expect(durabilityViolations(fs.log)).toEqual([])
      fs.log = []
      await v.prune({ deletePointIds: [(await v.listPoints()).at(-1)!.id] })
      expect(durabilityViolations(fs.log)).toEqual([])
    } finally {
      await v.close()
    }
  })

  it('prune still works on a full drive: it gives up the reserve file, then takes it back', async () => {
    const fs = new FaultFs()
    const v = await openVault(dir, key, { workers: 1, fs })
    try {
      const extra = await backUp(v, [{ name: 'x', blocks: blocks(7000, 8) }])
      fs.rule = { afterOps: 0, code: 'ENOSPC', sticky: true, clearOnUnlink: '/reserve' }
      const r = await v.prune({ deletePointIds: [extra.id] })
      expect(r.pointsRemoved).toBe(1)
      expect(r.bytesFreed).toBeGreaterThan(0)
      expect(fs.log.some((e) => e.op === 'unlink' && e.path.endsWith('/reserve'))).toBe(true)
      expect((await readdir(dir)).includes('reserve')).toBe(true)
    } finally {
      await v.close()
    }
    await assertFirstIntact()
  })

  it('short writes are completed by looping', async () => {
    const fs = new FaultFs()
    fs.shortWrites = true
    const v = await openVault(dir, key, { workers: 1, fs })
    try {
      const bs = blocks(4000, 10)
      const p = await backUp(v, [{ name: 'p', blocks: bs }])
      const back = await restoreDisk(v, p.id, 0)
      back.forEach((b, i) => expect((b as Buffer).equals(bs[i]!)).toBe(true))
    } finally {
      await v.close()
    }
  })

  it('verify-before-commit rejects a corrupting compressor and a bit flipped after encryption', async () => {
    for (const testHooks of [{ corruptCompressor: true }, { afterSeal: (r: Buffer) => void (r[r.length >> 1]! ^= 1) }]) {
      const v = await openVault(dir, key, { workers: 1, testHooks })
      try {
        const before = (await v.listPoints()).length
        const err = await errorOf(backUp(v, [{ name: 'p', blocks: [makeBlock(5000, 'text'), makeBlock(5001, 'text')] }]))
        expect(err.code).toBe('CHUNK_CORRUPT')
        expect(err.userMessage).toContain('Nothing was committed')
        expect(err.userMessage).toMatch(/chunk [0-9a-f]{64}/) // names a chunk of the failed span
        expect((await v.listPoints()).length).toBe(before)
      } finally {
        await v.close()
      }
    }
    await assertFirstIntact()
    // nothing corrupt was published: a later clean backup of the same data stores it properly
    const p = await backUp(plain, [{ name: 'p', blocks: [makeBlock(5000, 'text')] }])
    expect((await restoreDisk(plain, p.id, 0))[0]).toEqual(makeBlock(5000, 'text'))
  })
})
