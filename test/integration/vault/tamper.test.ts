import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { backUp, makeBlock, newVault, packFiles, tempDir } from './helpers.js'
import { FaultFs } from './faultFs.js'
import { openVault, type LocalVault, type PointManifest } from '../../../electron/engine/vault/index.js'
import { EngineError } from '../../../electron/engine/errors.js'

async function flipBit(path: string, at: (size: number) => number): Promise<() => Promise<void>> {
  const orig = await readFile(path)
  const copy = Buffer.from(orig)
  const pos = at(copy.length)
  copy[pos]! ^= 0x04
  await writeFile(path, copy)
  return () => writeFile(path, orig)
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p
    return 'none'
  } catch (err) {
    return err instanceof EngineError ? err.code : `not-engine: ${String(err)}`
  }
}

describe('tampering is detected and named', () => {
  let t: Awaited<ReturnType<typeof tempDir>>
  let vault: LocalVault
  let dir: string
  let key: Buffer
  let pa: PointManifest
  let pb: PointManifest
  const shared = makeBlock(1, 'text')
  const onlyB = makeBlock(2, 'random')

  beforeAll(async () => {
    t = await tempDir()
    ;({ vault, dir, key } = await newVault(t.dir, {}, { packTargetBytes: 1 << 20 }))
    pa = await backUp(vault, [{ name: 'a.raw', blocks: [shared] }], 'A')
    pb = await backUp(vault, [{ name: 'b.raw', blocks: [onlyB] }, { name: 'b2.raw', blocks: ['zero'] }], 'B')
  })
  afterAll(async () => {
    await vault.close()
    await t.cleanup()
  })

  it('a flipped bit in a chunk record: verify --read-data names the chunk and the point/disk; reads fail loudly', async () => {
    const packs = await packFiles(dir)
    // find the pack holding B's block: the one whose damage affects B
    for (const pack of packs) {
      const restore = await flipBit(pack, () => 24 + 40) // inside the first record
      const report = await vault.verify({ readData: true })
      await restore()
      expect(report.ok).toBe(false)
      const p = report.problems.find((x) => x.kind === 'chunk-corrupt')!
      expect(p.object).toMatch(/^chunk:[0-9a-f]{64}$/)
      expect(p.affectedPoints.length).toBe(1)
      const affected = p.affectedPoints[0]!
      if (affected.pointId === pb.id) {
        expect(affected.disks).toEqual(['b.raw'])
        await flipBit(pack, () => 24 + 40)
        const entries = []
        for await (const e of vault.readBlockMap(pb.id, 0)) entries.push(e)
        const e0 = entries[0]!
        if (e0.kind !== 'data') throw new Error('expected data')
        const reader = vault.chunkReader()
        const err = await reader.readChunks([e0.chunkId]).catch((x: unknown) => x)
        expect(err).toBeInstanceOf(EngineError)
        expect((err as EngineError).code).toBe('CHUNK_CORRUPT')
        expect((err as EngineError).message).toContain(e0.chunkId.toString('hex'))
        await writeFile(pack, await readFile(pack).then((b) => ((b[24 + 40]! ^= 0x04), b)))
      } else {
        expect(affected.pointId).toBe(pa.id)
      }
    }
    expect((await vault.verify({ readData: true })).ok).toBe(true)
  })

  it('a flipped bit in a pack index or trailer is reported with the points it may affect', async () => {
    const [pack] = await packFiles(dir)
    for (const at of [(n: number) => n - 30, (n: number) => n - 10]) {
      const restore = await flipBit(pack!, at)
      const report = await vault.verify({ readData: false })
      await restore()
      const p = report.problems.find((x) => x.kind === 'pack-index')!
      expect(p.object).toMatch(/^pack:[0-9a-f]{32}$/)
      expect(p.affectedPoints.length).toBeGreaterThan(0)
      expect(report.problems.some((x) => x.kind === 'chunk-missing')).toBe(true)
    }
  })

  it('a flipped bit in a manifest or block map names the point', async () => {
    let restore = await flipBit(join(dir, 'manifests', pb.id), (n) => n >> 1)
    let report = await vault.verify({ readData: false })
    expect(await codeOf(openVault(dir, key, { workers: 1 }).then(async (v) => {
      try {
        return await v.getPoint(pb.id)
      } finally {
        await v.close()
      }
    }))).toBe('VAULT_DAMAGED')
    await restore()
    expect(report.problems.map((p) => [p.kind, p.object])).toEqual([['manifest', `point:${pb.id}`]])
    expect(report.problems[0]!.affectedPoints).toEqual([{ pointId: pb.id, disks: [] }])
    restore = await flipBit(join(dir, 'maps', pb.id, '0-0'), (n) => n - 5)
    report = await vault.verify({ readData: false })
    await restore()
    expect(report.problems.map((p) => [p.kind, p.object])).toEqual([['block-map', `map:${pb.id}/0`]])
    expect(report.problems[0]!.affectedPoints).toEqual([{ pointId: pb.id, disks: ['b.raw'] }])
    expect((await vault.verify({ readData: false })).ok).toBe(true)
  })

  it('refuses a tampered config, a wrong key, an unknown version and an older copy', async () => {
    const cfgPath = join(dir, 'config')
    const orig = await readFile(cfgPath, 'utf8')
    const edit = async (f: (c: Record<string, any>) => void): Promise<string> => {
      const c = JSON.parse(orig) as Record<string, any>
      f(c)
      await writeFile(cfgPath, JSON.stringify(c))
      const code = await codeOf(openVault(dir, key, { workers: 1 }).then((v) => v.close()))
      await writeFile(cfgPath, orig)
      return code
    }
    expect(await edit((c) => (c.params.cipher = 'none'))).toBe('VAULT_DAMAGED')
    expect(await edit((c) => (c.params.blockSize = 131072))).toBe('VAULT_DAMAGED')
    expect(await edit((c) => (c.params.compressionLevel += 1))).toBe('VAULT_DAMAGED')
    expect(await edit((c) => (c.keySlots = { passphrase: { swapped: true } }))).toBe('VAULT_DAMAGED')
    expect(await edit((c) => (c.formatVersion = 4))).toBe('VAULT_VERSION_UNSUPPORTED')
    expect(await edit((c) => (c.mac = c.mac.replace(/^./, (x: string) => (x === '0' ? '1' : '0'))))).toBe('VAULT_DAMAGED')
    expect(await codeOf(openVault(dir, randomBytes(32), { workers: 1 }))).toBe('WRONG_PASSPHRASE')
    expect(await codeOf(openVault(join(dir, 'nope'), key))).toBe('VAULT_NOT_FOUND')
    const gen = await vault.generation()
    expect(await codeOf(openVault(dir, key, { lastGeneration: gen + 1 }))).toBe('VAULT_ROLLBACK')
    const ok = await openVault(dir, key, { lastGeneration: gen })
    await ok.close()
  })
})

describe('a corrupt record found while later ranges of its pack are being read', () => {
  it('fails the read with CHUNK_CORRUPT, reads no range after the held one, and leaves no rejection unhandled', async () => {
    const t = await tempDir()
    const fs = new FaultFs()
    const { vault: v, dir } = await newVault(t.dir, { fs }, { packTargetBytes: 16 << 20 })
    const unhandled: unknown[] = []
    const onUnhandled = (reason: unknown): void => void unhandled.push(reason)
    process.on('unhandledRejection', onUnhandled)
    try {
      // 64 incompressible blocks in one pack; every 8th one is read, so each lies in its own range (gaps over 256 KiB)
      const point = await backUp(v, [{ name: 'd', blocks: Array.from({ length: 64 }, (_, i) => makeBlock(90_000 + i, 'random')) }])
      const [pack, ...others] = await packFiles(dir)
      expect(others).toEqual([])
      const ids: Buffer[] = []
      for await (const e of v.readBlockMap(point.id, 0)) if (e.kind === 'data') ids.push(e.chunkId)
      const wanted = ids.filter((_, i) => i % 8 === 0)
      const reader = v.chunkReader()
      expect((await reader.readChunks(wanted)).length).toBe(wanted.length) // tables loaded, all good
      const restore = await flipBit(pack!, () => 24 + 40) // inside the first record, block 0's
      try {
        // the second range's read waits until the first range's failure has surely been reported
        const reads: number[] = []
        fs.beforeRead = async (path, position) => {
          if (!path.includes('/packs/')) return
          reads.push(position)
          if (reads.length === 2) await new Promise((r) => setTimeout(r, 300))
        }
        const err = await reader.readChunks(wanted).catch((x: unknown) => x)
        expect(err).toBeInstanceOf(EngineError)
        expect((err as EngineError).code).toBe('CHUNK_CORRUPT')
        expect((err as EngineError).message).toContain(wanted[0]!.toString('hex'))
        expect(unhandled).toEqual([])
        expect(reads.length).toBe(2)
      } finally {
        fs.beforeRead = undefined
        await restore()
      }
      expect((await reader.readChunks(wanted)).map((b) => b.length)).toEqual(wanted.map(() => 65536))
    } finally {
      process.off('unhandledRejection', onUnhandled)
      await v.close()
      await t.cleanup()
    }
  })
})
