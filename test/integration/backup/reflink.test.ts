/**
 * Snapshots by reflink clone on a real XFS file system (reflink=1) in a loop-mounted temp file.
 * Needs root (mount); CI runs as root. Not skipped: a missing prerequisite fails.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import { open, readdir, readFile, writeFile, chmod } from 'node:fs/promises'
import { join } from 'node:path'
import { addMachine, listSnapshotClones, pruneSnapshotTier, runBackup, type BackupProgress } from '../../../electron/engine/backup/index.js'
import { parsePolicySpec } from '../../../electron/engine/policy/index.js'
import { randomBytes } from '../../helpers/qemu.js'
import { makeWorld, MiB, pointDiskSha256, type TestWorld } from './helpers.js'
import { mountReflinkXfs, type LoopMount } from '../../helpers/loopFs.js'

let root = ''
let mnt = ''
let xfs: LoopMount | undefined
let w: TestWorld

beforeAll(async () => {
  xfs = await mountReflinkXfs('tresor-xfs-', 'the reflink tests')
  root = xfs.root
  mnt = xfs.mnt
  w = await makeWorld()
})

afterAll(async () => {
  await w?.close()
  await xfs?.unmount()
})

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

describe('reflink snapshots on XFS', () => {
  it('reads an atomic clone: crash-consistent even while the source is written; the clone is kept in the snapshot tier', async () => {
    const disk = join(mnt, 'vm1.raw')
    const original = Buffer.concat([randomBytes(21, 3 * MiB), Buffer.alloc(MiB)])
    await writeFile(disk, original)
    const m = addMachine(w.catalog, { name: 'vm1', disks: [{ path: disk }] })
    let wrote = false
    const log: string[] = []
    const r = await runBackup(m, w.world, {
      policy: parsePolicySpec({ snapshotTierDays: 2 }),
      progressIntervalMs: 0,
      log: (l) => log.push(l),
      onProgress: (p) => {
        if (!wrote && p.phase === 'reading' && p.bytesRead > 0) {
          wrote = true
          void open(disk, 'r+').then(async (fh) => { await fh.write(Buffer.alloc(MiB, 7), 0, MiB, 0); await fh.close() })
        }
      },
    })
    expect(wrote).toBe(true)
    expect(r.result.consistency).toBe('crash')
    expect(r.manifest.labels['disk.0.snapshot']).toBe('reflink')
    expect(await pointDiskSha256(w.vault, r.result.pointId, 0)).toBe(sha(original))
    const clones = listSnapshotClones(w.catalog, { pointId: r.result.pointId })
    expect(clones).toHaveLength(1)
    expect(r.keptClones).toEqual([clones[0]!.clonePath])
    expect(clones[0]!.clonePath.startsWith(join(mnt, '.vm1.tresor-'))).toBe(true)
    expect(sha(await readFile(clones[0]!.clonePath))).toBe(sha(original))
    expect(log.some((l) => /reflink clone/.test(l))).toBe(true)
  })

  it('application: scripts around the clone; the post-script runs right after the snapshot, before reading', async () => {
    const disk = join(mnt, 'db.raw')
    await writeFile(disk, randomBytes(22, 2 * MiB))
    const order = join(root, 'order.log')
    const mk = async (name: string): Promise<string> => {
      const p = join(root, name)
      await writeFile(p, `#!/bin/sh\necho ${name} >> "${order}"\n`)
      await chmod(p, 0o755)
      return p
    }
    const m = addMachine(w.catalog, { name: 'db', disks: [{ path: disk }] })
    const phases: BackupProgress['phase'][] = []
    const r = await runBackup(m, w.world, {
      policy: parsePolicySpec({ snapshotTierDays: 0, scripts: { pre: { path: await mk('pre') }, post: { path: await mk('post') } } }),
      progressIntervalMs: 0,
      onProgress: (p) => { if (phases.at(-1) !== p.phase) phases.push(p.phase) },
    })
    expect(r.result.consistency).toBe('application')
    expect(phases.indexOf('post-script')).toBeLessThan(phases.indexOf('reading'))
    expect(phases.indexOf('snapshot')).toBeLessThan(phases.indexOf('post-script'))
    expect((await readFile(order, 'utf8')).trim().split('\n')).toEqual(['pre', 'post'])
    // snapshotTierDays 0: the clone was removed after the backup.
    expect(r.keptClones).toEqual([])
    expect((await readdir(mnt)).filter((f) => f.startsWith('.db.tresor-'))).toEqual([])
  })

  it('an unchanged file is not read again after a clone (cloning does not touch the source\'s times)', async () => {
    const disk = join(mnt, 'idle.raw')
    await writeFile(disk, randomBytes(23, MiB))
    const m = addMachine(w.catalog, { name: 'idle', disks: [{ path: disk }] })
    const p = parsePolicySpec({ snapshotTierDays: 0 })
    const r1 = await runBackup(m, w.world, { policy: p })
    expect(r1.manifest.labels['disk.0.snapshot']).toBe('reflink')
    expect(r1.manifest.disks[0]!.fileIdentity).toBeDefined()
    const r2 = await runBackup(m, w.world, { policy: p })
    expect(r2.manifest.labels['disk.0.snapshot']).toBe('unchanged')
    expect(r2.result.bytesRead).toBe(0)
  })

  it('removes snapshot-tier clones older than the policy\'s days', async () => {
    const disk = join(mnt, 'tier.raw')
    await writeFile(disk, randomBytes(24, MiB))
    const m = addMachine(w.catalog, { name: 'tier', disks: [{ path: disk }] })
    const r = await runBackup(m, w.world, { policy: parsePolicySpec({ snapshotTierDays: 2 }) })
    const clone = r.keptClones[0]!
    expect(existsSync(clone)).toBe(true)
    expect(await pruneSnapshotTier(w.catalog, m.id, 2, Date.now() + 1 * 86_400_000)).toEqual([])
    expect(await pruneSnapshotTier(w.catalog, m.id, 2, Date.now() + 3 * 86_400_000)).toEqual([clone])
    expect(existsSync(clone)).toBe(false)
    expect(listSnapshotClones(w.catalog, { machineId: m.id })).toEqual([])
    expect(existsSync(disk)).toBe(true)
  })
})
