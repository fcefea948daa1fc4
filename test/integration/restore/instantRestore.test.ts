/**
 * Instant restore: a recovery point whose backup kept reflink clones (the snapshot tier) is restored
 * from those clones instead of the vault, on a real XFS file system (reflink=1) in a loop-mounted
 * temp file. The result is checked against qemu-img's guest view at backup time; "never read from
 * the vault" is checked by counting the chunks the vault's chunk reader hands out (not by timing).
 * Needs root (mount) and qemu-img; CI runs as root. Not skipped: a missing prerequisite fails.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { execFileSync } from 'node:child_process'
import { mkdir, open, rm, utimes } from 'node:fs/promises'
import { join } from 'node:path'
import { addMachine, listSnapshotClones, runBackup } from '../../../electron/engine/backup/index.js'
import { createImageWriter } from '../../../electron/engine/formats/index.js'
import { DEFAULT_POLICY } from '../../../electron/engine/policy/index.js'
import { restorePoint, type RestoreWorld } from '../../../electron/engine/restore/pipeline.js'
import type { ChunkReader, Vault } from '../../../electron/engine/vault/api.js'
import { applyOps, createImage, mixedOps, qemuCompare, qemuToRaw, randomBytes, requireQemu, sha256File } from '../../helpers/qemu.js'
import { makeWorld, MiB, type TestWorld } from '../backup/helpers.js'
import { cliEnv, tresorJson } from '../keys/fixtures/cli.js'
import { mountReflinkXfs, type LoopMount } from '../../helpers/loopFs.js'

let root = ''
let mnt = ''
let xfs: LoopMount | undefined
let w: TestWorld

beforeAll(async () => {
  requireQemu()
  xfs = await mountReflinkXfs('tresor-instant-', 'the instant-restore tests')
  root = xfs.root
  mnt = xfs.mnt
  w = await makeWorld()
}, 120_000)

afterAll(async () => {
  await w?.close()
  await xfs?.unmount()
})

/** A restore world over `vault` that counts the chunks read from it (either read path), with the catalog's clone list (unless `tier` is false). */
function countingWorld(tier = true): { world: RestoreWorld; chunksRead: () => number } {
  let chunks = 0
  const bind = <T extends object>(target: T, key: string | symbol): unknown => {
    const v = Reflect.get(target, key) as unknown
    return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v
  }
  const vault = new Proxy(w.vault as Vault, {
    get(target, key) {
      if (key !== 'chunkReader') return bind(target, key)
      return () => {
        const reader = target.chunkReader()
        return new Proxy(reader, {
          get(r, k) {
            if (k === 'readChunks') {
              return (ids: Buffer[]) => {
                chunks += ids.length
                return r.readChunks(ids)
              }
            }
            if (k === 'readChunksInto' && r.readChunksInto) {
              const into = r.readChunksInto.bind(r)
              return (ids: Buffer[], ...rest: [Buffer, number[], { zeroGranule: number }]) => {
                chunks += ids.length
                return into(ids, ...rest)
              }
            }
            return bind(r, k)
          },
        }) as ChunkReader
      }
    },
  })
  const world: RestoreWorld = { vault, createWriter: createImageWriter }
  if (tier) world.snapshotClones = (pointId) => listSnapshotClones(w.catalog, { pointId })
  return { world, chunksRead: () => chunks }
}

/** qemu's guest view of `file` right now, kept as a raw file under `name` (the oracle). */
async function oracle(file: string, format: 'raw' | 'qcow2', name: string): Promise<string> {
  const out = join(root, `${name}.oracle.raw`)
  await qemuToRaw(file, format, out)
  return out
}

async function overwrite(path: string, offset: number, data: Buffer): Promise<void> {
  const h = await open(path, 'r+')
  try {
    await h.write(data, 0, data.length, offset)
  } finally {
    await h.close()
  }
}

interface Backed {
  pointId: string
  raw: string
  qcow: string
  rawOracle: string
  qcowOracle: string
  clone: (diskName: string) => string
}

/** A machine on the XFS mount with a raw and a qcow2 disk, backed up with the default policy (clones kept); then its sources change. */
async function backedUpMachine(name: string, seed: number): Promise<Backed> {
  const dir = join(mnt, name)
  await mkdir(dir)
  const raw = join(dir, 'data.raw')
  const rawSize = 6 * MiB + 4096
  await createImage(raw, 'raw', rawSize)
  await applyOps(raw, 'raw', mixedOps(seed, rawSize, 14, { discard: false }), root)
  const qcow = join(dir, 'system.qcow2')
  const qSize = 12 * MiB + 512
  await createImage(qcow, 'qcow2', qSize, ['cluster_size=65536'])
  await applyOps(qcow, 'qcow2', mixedOps(seed + 1, qSize, 24), root)
  const rawOracle = await oracle(raw, 'raw', `${name}-data`)
  const qcowOracle = await oracle(qcow, 'qcow2', `${name}-system`)
  const machine = addMachine(w.catalog, { name, disks: [{ path: qcow }, { path: raw }] })
  const log: string[] = []
  const r = await runBackup(machine, w.world, { policy: DEFAULT_POLICY, log: (l) => log.push(l) })
  const pointId = r.result.pointId
  const rows = listSnapshotClones(w.catalog, { pointId })
  expect(rows.map((c) => c.diskName).sort(), log.join('\n')).toEqual(['data', 'system'])
  // The sources move on after the backup: the restore must give the point, not today's files.
  await applyOps(raw, 'raw', [{ kind: 'random', offset: 0, length: 65536, seed: seed + 7 }], root)
  await applyOps(qcow, 'qcow2', [{ kind: 'random', offset: MiB, length: 3 * 65536, seed: seed + 8 }, { kind: 'zero', offset: 0, length: 65536, unmap: true }], root)
  expect(await sha256File(raw)).not.toBe(await sha256File(rawOracle))
  return { pointId, raw, qcow, rawOracle, qcowOracle, clone: (d) => rows.find((c) => c.diskName === d)!.clonePath }
}

describe('instant restore from the snapshot tier (XFS reflink)', () => {
  it('restores a raw and a qcow2 disk from their clones, equal to the point, without reading a chunk from the vault', async () => {
    const b = await backedUpMachine('vm1', 101)
    const { world, chunksRead } = countingWorld()
    const log: string[] = []
    const out = join(mnt, 'out1')
    const res = await restorePoint(world, { pointId: b.pointId, mode: 'folder', targetPath: out }, { log: (l) => log.push(l) })
    expect(res.disks.map((d) => [d.name, d.format, d.source])).toEqual([['system', 'qcow2', 'snapshot-tier'], ['data', 'raw', 'snapshot-tier']])
    expect(res.disks.every((d) => d.tierSkipped === undefined)).toBe(true)
    expect(chunksRead()).toBe(0)
    expect(log.join('\n')).toMatch(/restored from the snapshot tier .*reflink copy/)
    const [system, data] = res.files as [string, string]
    expect(await sha256File(data)).toBe(await sha256File(b.rawOracle))
    const cmp = await qemuCompare(system, 'qcow2', b.qcowOracle, 'raw')
    expect(cmp.same, cmp.output).toBe(true)
    // The clones were only read: still the point's content.
    expect(await sha256File(b.clone('data'))).toBe(await sha256File(b.rawOracle))

    // Another format (qcow2 → raw): converted from the clone, still no chunk read.
    const asRaw = join(mnt, 'out1', 'system-as.raw')
    const conv = await restorePoint(world, { pointId: b.pointId, mode: 'file', targetPath: asRaw, disks: ['system'], format: 'raw' }, { log: (l) => log.push(l) })
    expect(conv.disks[0]).toMatchObject({ source: 'snapshot-tier', format: 'raw' })
    expect(chunksRead()).toBe(0)
    expect(await sha256File(asRaw)).toBe(await sha256File(b.qcowOracle))
    expect(log.join('\n')).toMatch(/restored from the snapshot tier .*conversion/)

    // The same point through the vault (no catalog in the world): same bytes, chunks read.
    const viaVault = countingWorld(false)
    const v = await restorePoint(viaVault.world, { pointId: b.pointId, mode: 'file', targetPath: join(root, 'vm1-vault.raw'), disks: ['data'] })
    expect(v.disks[0]).toMatchObject({ source: 'vault' })
    expect(v.disks[0]!.tierSkipped).toBeUndefined()
    expect(viaVault.chunksRead()).toBeGreaterThan(0)
    expect(await sha256File(v.files[0]!)).toBe(await sha256File(b.rawOracle))
  }, 180_000)

  it('replace mode restores the originals from their clones (verified), with no vault read', async () => {
    const b = await backedUpMachine('vm2', 201)
    const { world, chunksRead } = countingWorld()
    const res = await restorePoint(world, { pointId: b.pointId, mode: 'replace' })
    expect(res.files).toEqual([b.qcow, b.raw])
    expect(res.disks.map((d) => d.source)).toEqual(['snapshot-tier', 'snapshot-tier'])
    expect(chunksRead()).toBe(0)
    expect(await sha256File(b.raw)).toBe(await sha256File(b.rawOracle))
    const cmp = await qemuCompare(b.qcow, 'qcow2', b.qcowOracle, 'raw')
    expect(cmp.same, cmp.output).toBe(true)
  }, 180_000)

  it('a tampered clone is caught by the check: the disk comes from the vault, correct, and the reason is logged', async () => {
    const b = await backedUpMachine('vm3', 301)
    await overwrite(b.clone('data'), 4096, randomBytes(9, 512)) // same size, other bytes
    const { world, chunksRead } = countingWorld()
    const log: string[] = []
    const res = await restorePoint(world, { pointId: b.pointId, mode: 'folder', targetPath: join(mnt, 'out3') }, { log: (l) => log.push(l) })
    const data = res.disks.find((d) => d.name === 'data')!
    const system = res.disks.find((d) => d.name === 'system')!
    expect(data.source).toBe('vault')
    expect(data.tierSkipped).toMatch(/does not match the recovery point.*block 0 differs/)
    expect(system.source).toBe('snapshot-tier')
    expect(chunksRead()).toBeGreaterThan(0)
    expect(log.join('\n')).toMatch(/Snapshot tier: not using ".*data.*": the copy does not match the recovery point/)
    expect(await sha256File(data.path)).toBe(await sha256File(b.rawOracle))
    const cmp = await qemuCompare(system.path, 'qcow2', b.qcowOracle, 'raw')
    expect(cmp.same, cmp.output).toBe(true)
  }, 180_000)

  it('a clone file that is gone: the vault restores the disk and says why', async () => {
    const b = await backedUpMachine('vm4', 401)
    await rm(b.clone('system'))
    const { world, chunksRead } = countingWorld()
    const res = await restorePoint(world, { pointId: b.pointId, mode: 'file', targetPath: join(mnt, 'vm4-system.raw'), disks: ['system'] })
    expect(res.disks[0]).toMatchObject({ source: 'vault', tierSkipped: 'the file is gone' })
    expect(chunksRead()).toBeGreaterThan(0)
    expect(await sha256File(res.files[0]!)).toBe(await sha256File(b.qcowOracle))
  }, 180_000)

  it('only a clone of exactly this point and disk is used; a catalog that fails only costs the tier', async () => {
    const b = await backedUpMachine('vm6', 601)
    const rows = listSnapshotClones(w.catalog, { pointId: b.pointId })
    const { world, chunksRead } = countingWorld()
    // Rows of another point, or naming another disk's source: ignored (no tier, nothing to explain).
    world.snapshotClones = () => rows.map((r) => (r.diskName === 'data' ? { ...r, pointId: 'another-point' } : { ...r, sourcePath: join(mnt, 'elsewhere.qcow2') }))
    const res = await restorePoint(world, { pointId: b.pointId, mode: 'folder', targetPath: join(mnt, 'out6') })
    expect(res.disks.map((d) => [d.source, d.tierSkipped])).toEqual([['vault', undefined], ['vault', undefined]])
    expect(chunksRead()).toBeGreaterThan(0)
    // The data row pointing at the system disk's clone: opened as raw, it is not the point's disk.
    world.snapshotClones = () => rows.map((r) => (r.diskName === 'data' ? { ...r, clonePath: b.clone('system') } : r))
    const swapped = await restorePoint(world, { pointId: b.pointId, mode: 'file', targetPath: join(mnt, 'vm6-data.raw'), disks: ['data'] })
    expect(swapped.disks[0]!.source).toBe('vault')
    expect(swapped.disks[0]!.tierSkipped).toMatch(/size|does not match/)
    expect(await sha256File(swapped.files[0]!)).toBe(await sha256File(b.rawOracle))
    // A catalog error: logged, the restore goes on from the vault.
    world.snapshotClones = () => {
      throw new Error('database is locked')
    }
    const log: string[] = []
    const failed = await restorePoint(world, { pointId: b.pointId, mode: 'file', targetPath: join(mnt, 'vm6-data2.raw'), disks: ['data'] }, { log: (l) => log.push(l) })
    expect(failed.disks[0]!.source).toBe('vault')
    expect(log.join('\n')).toContain('database is locked')
    expect(await sha256File(failed.files[0]!)).toBe(await sha256File(b.rawOracle))
  }, 180_000)

  it('a qcow2 with a relative backing file: restored (flattened) from the clone while the chain is unchanged, from the vault once a parent changed', async () => {
    const dir = join(mnt, 'vm5')
    await mkdir(dir)
    const base = join(dir, 'base.qcow2')
    const size = 8 * MiB
    await createImage(base, 'qcow2', size)
    await applyOps(base, 'qcow2', mixedOps(501, size, 10), root)
    const top = join(dir, 'top.qcow2')
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', 'base.qcow2', '-F', 'qcow2', top]) // relative backing name
    await applyOps(top, 'qcow2', mixedOps(502, size, 10), root)
    const topOracle = await oracle(top, 'qcow2', 'vm5-top')
    const machine = addMachine(w.catalog, { name: 'vm5', disks: [{ path: top }] })
    const pointId = (await runBackup(machine, w.world, { policy: DEFAULT_POLICY })).result.pointId
    expect(listSnapshotClones(w.catalog, { pointId })).toHaveLength(1)
    await applyOps(top, 'qcow2', [{ kind: 'random', offset: 0, length: 65536, seed: 503 }], root)

    const { world, chunksRead } = countingWorld()
    const res = await restorePoint(world, { pointId, mode: 'file', targetPath: join(mnt, 'vm5-restored.qcow2') })
    expect(res.disks[0]).toMatchObject({ source: 'snapshot-tier', format: 'qcow2' })
    expect(chunksRead()).toBe(0)
    const cmp = await qemuCompare(res.files[0]!, 'qcow2', topOracle, 'raw')
    expect(cmp.same, cmp.output).toBe(true)
    const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', res.files[0]!]).toString()) as { 'backing-filename'?: string }
    expect(info['backing-filename']).toBeUndefined() // a standalone image, as from the vault

    // The parent's identity changes (here only its times): the tier is not trusted, the vault restores.
    const later = new Date(Date.now() + 60_000)
    await utimes(base, later, later)
    const again = await restorePoint(world, { pointId, mode: 'file', targetPath: join(mnt, 'vm5-again.raw'), format: 'raw' })
    expect(again.disks[0]!.source).toBe('vault')
    expect(again.disks[0]!.tierSkipped).toMatch(/backing file ".*base\.qcow2" changed since the backup/)
    expect(chunksRead()).toBeGreaterThan(0)
    expect(await sha256File(again.files[0]!)).toBe(await sha256File(topOracle))
  }, 180_000)
})

describe('instant restore through the CLI (restore queue → job → catalog)', () => {
  it('tresor restore --json reports the snapshot tier per disk and writes the point', async () => {
    const home = join(root, 'cli-home')
    const env = cliEnv({ TRESOR_HOME: home, TRESOR_PASSPHRASE: 'instant restore test passphrase', TRESOR_SCRYPT_LOG2N: '15' })
    await tresorJson(['vault', 'init', join(root, 'cli-vault'), '--block-size', '65536', '--json'], env)
    const dir = join(mnt, 'cli')
    await mkdir(dir)
    const disk = join(dir, 'disk.raw')
    await createImage(disk, 'raw', 4 * MiB)
    await applyOps(disk, 'raw', mixedOps(601, 4 * MiB, 8, { discard: false }), root)
    const before = await sha256File(disk)
    await tresorJson(['machine', 'add', 'cli-vm', disk, '--json'], env)
    const { pointId } = await tresorJson<{ pointId: string }>(['backup', 'cli-vm', '--json'], env)
    await applyOps(disk, 'raw', [{ kind: 'random', offset: 0, length: 65536, seed: 602 }], root)

    const target = join(root, 'cli-restored.raw')
    const out = await tresorJson<{ files: string[]; disks: { name: string; source: string }[] }>(['restore', pointId, '--to', target, '--json'], env)
    expect(out.files).toEqual([target])
    expect(out.disks).toEqual([{ name: 'disk', path: target, source: 'snapshot-tier' }])
    expect(await sha256File(target)).toBe(before)
  }, 180_000)
})
