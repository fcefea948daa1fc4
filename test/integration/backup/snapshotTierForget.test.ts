/**
 * Snapshot-tier clones ("instant restore" copies) go when their recovery point goes: `tresor forget`,
 * `tresor prune` (retention), `tresor machine remove` and the app service's removeMachine, on a real
 * XFS file system (reflink=1) in a loop-mounted temp file, through the real CLI. Needs root (mount);
 * CI runs as root. Not skipped: a missing prerequisite fails.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { openCatalog } from '../../../electron/engine/catalog/index.js'
import { listSnapshotClones } from '../../../electron/engine/backup/index.js'
import { createAppService } from '../../../electron/engine/app/index.js'
import { randomBytes } from '../../helpers/qemu.js'
import { cliEnv, tresor, tresorJson } from '../keys/fixtures/cli.js'
import { mountReflinkXfs, type LoopMount } from '../../helpers/loopFs.js'

const MiB = 1024 * 1024
let root = ''
let mnt = ''
let home = ''
let xfs: LoopMount | undefined
let env: NodeJS.ProcessEnv = {}

beforeAll(async () => {
  xfs = await mountReflinkXfs('tresor-tier-', 'the snapshot-tier tests')
  root = xfs.root
  mnt = xfs.mnt
  home = join(root, 'home')
  env = cliEnv({ TRESOR_HOME: home, TRESOR_PASSPHRASE: 'snapshot tier test passphrase', TRESOR_SCRYPT_LOG2N: '15' })
  await tresorJson(['vault', 'init', join(root, 'vault'), '--block-size', '65536', '--json'], env)
}, 120_000)

afterAll(async () => {
  await xfs?.unmount()
})

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

/** Clone files beside `disk` on the mount (what the user would find, hidden). */
async function clonesOnDisk(name: string): Promise<string[]> {
  return (await readdir(mnt)).filter((f) => f.startsWith(`.${name}.tresor-`)).map((f) => join(mnt, f)).sort()
}

/** The catalog's clone rows of `pointId` (paths). */
function cataloguedClones(filter: { pointId?: string; machineId?: string }): string[] {
  const db = openCatalog(home)
  try {
    return listSnapshotClones(db, filter).map((c) => c.clonePath).sort()
  } finally {
    db.close()
  }
}

/** A machine on the XFS mount with one raw disk and a policy (snapshot tier on). */
async function machineWithPolicy(name: string, spec: object): Promise<{ machineId: string; disk: string }> {
  const disk = join(mnt, `${name}.raw`)
  await writeFile(disk, randomBytes(40 + name.length, 2 * MiB))
  const { machineId } = await tresorJson<{ machineId: string }>(['machine', 'add', name, disk, '--json'], env)
  const policyFile = join(root, `${name}.policy.json`)
  await writeFile(policyFile, JSON.stringify(spec))
  await tresorJson(['machine', 'policy', name, policyFile, '--json'], env)
  return { machineId, disk }
}

/** Changes the first MiB of `disk` (a new version), returns the file's SHA-256. */
async function change(disk: string, seed: number): Promise<string> {
  const data = await readFile(disk)
  randomBytes(seed, MiB).copy(data, 0)
  await writeFile(disk, data)
  return sha(data)
}

async function backUp(name: string): Promise<string> {
  const r = await tresorJson<{ pointId: string; consistency: string }>(['backup', name, '--json'], env)
  expect(r.consistency).toBe('crash')
  return r.pointId
}

describe('snapshot-tier clones follow their recovery points', () => {
  it('forget removes the forgotten point\'s clone only; the other point\'s clone stays and its restore still works', async () => {
    const { disk } = await machineWithPolicy('vm', { snapshotTierDays: 7 })
    const p1 = await backUp('vm')
    const [c1] = cataloguedClones({ pointId: p1 })
    expect(c1).toBeDefined()
    expect(existsSync(c1!)).toBe(true)
    const v2 = await change(disk, 91)
    const p2 = await backUp('vm')
    const [c2] = cataloguedClones({ pointId: p2 })
    expect(c2).toBeDefined()
    expect(await clonesOnDisk('vm')).toEqual([c1!, c2!].sort())
    expect(sha(await readFile(c2!))).toBe(v2)

    const out = await tresorJson<{ pointsRemoved: number; ids: string[]; clonesRemoved: string[]; clonesNotRemoved: unknown[] }>(['forget', p1.slice(0, 12), '--json'], env)
    expect(out).toEqual({ pointsRemoved: 1, ids: [p1], clonesRemoved: [c1], clonesNotRemoved: [] })
    expect(existsSync(c1!)).toBe(false)
    expect(cataloguedClones({ pointId: p1 })).toEqual([])
    expect(await clonesOnDisk('vm')).toEqual([c2])
    expect(cataloguedClones({ pointId: p2 })).toEqual([c2])
    expect(existsSync(disk)).toBe(true)

    // The remaining point restores byte-identical to the version it captured.
    const target = join(root, 'restored-vm.raw')
    const r = await tresor(['restore', p2, '--to', target, '--json'], env)
    expect(r.code, r.stderr).toBe(0)
    expect(sha(await readFile(target))).toBe(v2)
    expect(sha(await readFile(c2!))).toBe(v2) // the kept clone was not touched
    const points = await tresorJson<{ id: string }[]>(['points', 'vm', '--json'], env)
    expect(points.map((p) => p.id)).toEqual([p2])
  }, 180_000)

  it('forget of a point whose clone file is already gone drops the row and succeeds', async () => {
    const { disk } = await machineWithPolicy('gone', { snapshotTierDays: 7 })
    const p1 = await backUp('gone')
    const [c1] = cataloguedClones({ pointId: p1 })
    await rm(c1!)
    await change(disk, 92)
    await backUp('gone') // the newest point cannot be forgotten by retention, but forget takes any
    const out = await tresorJson<{ clonesRemoved: string[]; clonesNotRemoved: unknown[] }>(['forget', p1, '--json'], env)
    expect(out).toMatchObject({ clonesRemoved: [], clonesNotRemoved: [] })
    expect(cataloguedClones({ pointId: p1 })).toEqual([])
    expect(await clonesOnDisk('gone')).toHaveLength(1)
  }, 180_000)

  it('retention (tresor prune) removes the clones of the points it deletes and keeps the newest point\'s', async () => {
    const { disk } = await machineWithPolicy('kept', { snapshotTierDays: 7, retention: { last: 1, daily: 0, weekly: 0, monthly: 0, yearly: 0 } })
    const p1 = await backUp('kept')
    await change(disk, 93)
    const p2 = await backUp('kept')
    const v3 = await change(disk, 94)
    const p3 = await backUp('kept')
    const [c1, c2, c3] = [p1, p2, p3].map((p) => cataloguedClones({ pointId: p })[0]!) as [string, string, string]
    expect(await clonesOnDisk('kept')).toEqual([c1, c2, c3].sort())

    const dry = await tresorJson<{ removed: string[] }>(['prune', '--dry-run', '--json'], env)
    expect(dry.removed).toEqual(expect.arrayContaining([p1, p2]))
    expect(dry.removed).not.toContain(p3)
    expect(await clonesOnDisk('kept')).toHaveLength(3) // a dry run deletes nothing

    const res = await tresorJson<{ removed: string[]; clonesRemoved: string[] }>(['prune', '--json'], env)
    expect(res.removed).toEqual(expect.arrayContaining([p1, p2]))
    expect([...res.clonesRemoved].sort()).toEqual(expect.arrayContaining([c1, c2].sort()))
    expect(await clonesOnDisk('kept')).toEqual([c3])
    expect(cataloguedClones({ pointId: p1 })).toEqual([])
    expect(cataloguedClones({ pointId: p2 })).toEqual([])
    expect(sha(await readFile(c3))).toBe(v3)

    const target = join(root, 'restored-kept.raw')
    const r = await tresor(['restore', p3, '--to', target, '--json'], env)
    expect(r.code, r.stderr).toBe(0)
    expect(sha(await readFile(target))).toBe(v3)
  }, 240_000)

  it('machine remove (CLI) removes the machine\'s clones; its recovery points stay', async () => {
    const { machineId, disk } = await machineWithPolicy('leaving', { snapshotTierDays: 7 })
    const p1 = await backUp('leaving')
    const [c1] = cataloguedClones({ pointId: p1 })
    expect(existsSync(c1!)).toBe(true)
    const out = await tresorJson<{ machineId: string; clonesRemoved: string[] }>(['machine', 'remove', 'leaving', '--json'], env)
    expect(out).toEqual({ machineId, clonesRemoved: [c1] })
    expect(await clonesOnDisk('leaving')).toEqual([])
    expect(cataloguedClones({ machineId })).toEqual([])
    expect(existsSync(disk)).toBe(true)
    const points = await tresorJson<{ id: string }[]>(['points', '--json'], env)
    expect(points.map((p) => p.id)).toContain(p1)
  }, 180_000)

  it('removeMachine (app service, IPC and web host) removes the clones; a clone that cannot go keeps the machine', async () => {
    const { machineId } = await machineWithPolicy('app', { snapshotTierDays: 7 })
    const p1 = await backUp('app')
    const [c1] = cataloguedClones({ pointId: p1 })
    const db = openCatalog(home)
    const service = createAppService({ host: { kind: 'web', home, version: 'test', hasTray: false }, catalog: db, engine: {}, emit: () => {} })
    try {
      // A folder where the clone was: not a file, so it is left alone and the machine stays.
      await rm(c1!)
      await mkdir(c1!)
      await expect(service.removeMachine({ machineId })).rejects.toMatchObject({ code: 'IO_ERROR' })
      expect(existsSync(c1!)).toBe(true)
      expect(listSnapshotClones(db, { machineId }).map((c) => c.clonePath)).toEqual([c1])
      expect((await service.listMachines({})).map((m) => m.id)).toContain(machineId)

      // Back to a real clone file: removal goes through and takes the file with it.
      await rm(c1!, { recursive: true })
      execFileSync('cp', ['--reflink=always', join(mnt, 'app.raw'), c1!])
      await service.removeMachine({ machineId })
      expect(existsSync(c1!)).toBe(false)
      expect(listSnapshotClones(db, { machineId })).toEqual([])
      expect((await service.listMachines({})).map((m) => m.id)).not.toContain(machineId)
    } finally {
      service.dispose()
      db.close()
    }
  }, 180_000)
})
