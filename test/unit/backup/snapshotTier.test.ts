import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { existsSync } from 'node:fs'
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { openCatalog, type Db } from '../../../electron/engine/catalog/index.js'
import { addMachine, listSnapshotClones, recordSnapshotClone } from '../../../electron/engine/backup/machines.js'
import { clonePathFor } from '../../../electron/engine/backup/snapshot.js'
import {
  pruneSnapshotTier,
  removeMachineSnapshotClones,
  removeSnapshotClones,
  unsafeClonePath,
} from '../../../electron/engine/backup/snapshotTier.js'

let dir = ''
let db: Db
let disk = ''
let machineId = ''
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tresor-tier-'))
  db = openCatalog(join(dir, 'home'))
  disk = join(dir, 'vm.disk.raw')
  await writeFile(disk, 'the disk')
  machineId = addMachine(db, { name: 'vm', disks: [{ path: disk }] }).id
  db.prepare(`INSERT INTO vaults (id, path, is_current, last_generation, added_at) VALUES ('v1', ?, 1, 0, ?)`).run(join(dir, 'vault'), new Date().toISOString())
})
afterEach(async () => {
  db.close()
  await rm(dir, { recursive: true, force: true })
})

function point(id: string): string {
  db.prepare(`INSERT INTO points (id, vault_id, machine_id, machine_name, created_at, consistency) VALUES (?, 'v1', ?, 'vm', ?, 'crash')`).run(id, machineId, new Date().toISOString())
  return id
}

/** A clone file as the backup makes it (name from clonePathFor) and its catalog row. */
async function clone(pointId: string | null, unique: string, options: { createdAt?: string; path?: string } = {}): Promise<string> {
  const path = options.path ?? clonePathFor(disk, Date.now(), unique)
  await writeFile(path, `clone ${unique}`)
  recordSnapshotClone(db, { machineId, pointId, diskName: 'disk', sourcePath: disk, clonePath: path, createdAt: options.createdAt ?? new Date().toISOString() })
  return path
}

const rows = (): string[] => listSnapshotClones(db, { machineId }).map((r) => r.clonePath).sort()

describe('unsafeClonePath', () => {
  it('accepts every name clonePathFor makes, for names with and without extensions or extra dots', () => {
    for (const name of ['vm.raw', 'vm.disk.qcow2', 'noext', '.hidden.vhdx', 'with space.vmdk', 'a-b_c.1.img']) {
      const source = join(dir, name)
      const c = clonePathFor(source, Date.UTC(2025, 0, 2, 3, 4, 5, 678), 'a1b2c3')
      expect(unsafeClonePath({ clonePath: c, sourcePath: source }), c).toBeUndefined()
    }
  })

  it('refuses the disk itself, another folder, and names that are not a clone of that disk', () => {
    const source = join(dir, 'vm.raw')
    const good = clonePathFor(source, Date.now(), 'abc')
    expect(unsafeClonePath({ clonePath: source, sourcePath: source })).toMatch(/disk itself/)
    expect(unsafeClonePath({ clonePath: join(dir, 'sub', '.vm.tresor-20250102T030405Z-abc.raw'), sourcePath: source })).toMatch(/not beside/)
    expect(unsafeClonePath({ clonePath: join(dir, 'other.raw'), sourcePath: source })).toMatch(/not a snapshot-tier clone/)
    expect(unsafeClonePath({ clonePath: clonePathFor(join(dir, 'other.raw'), Date.now(), 'abc'), sourcePath: source })).toMatch(/not a snapshot-tier clone/)
    expect(unsafeClonePath({ clonePath: good.replace(/\.raw$/, '.qcow2'), sourcePath: source })).toMatch(/not a snapshot-tier clone/)
    expect(unsafeClonePath({ clonePath: join(dir, '.vm.tresor-20250102T030405Z-abc.raw', '..', 'vm.raw'), sourcePath: source })).toMatch(/disk itself/)
  })
})

describe('removeSnapshotClones', () => {
  it('removes the clones (files and rows) of the given points only; the disk and other clones stay', async () => {
    const c1 = await clone(point('p1'), 'aa')
    const c2 = await clone(point('p2'), 'bb')
    const c3 = await clone('p1', 'cc')
    const logs: string[] = []
    const r = await removeSnapshotClones(db, { pointIds: ['p1', 'p1', 'unknown'] }, (l) => logs.push(l))
    expect(r.removed.sort()).toEqual([c1, c3].sort())
    expect(r.missing).toEqual([])
    expect(r.failed).toEqual([])
    expect(existsSync(c1) || existsSync(c3)).toBe(false)
    expect(rows()).toEqual([c2])
    expect(await readFile(c2, 'utf8')).toBe('clone bb')
    expect(await readFile(disk, 'utf8')).toBe('the disk')
    expect(logs.join('\n')).toMatch(/removed 2/)
    // Idempotent.
    expect(await removeSnapshotClones(db, { pointIds: ['p1'] })).toEqual({ removed: [], missing: [], failed: [] })
  })

  it('drops the row of a clone whose file is already gone', async () => {
    const c1 = await clone(point('p1'), 'aa')
    await rm(c1)
    expect(await removeSnapshotClones(db, { pointIds: ['p1'] })).toEqual({ removed: [], missing: [c1], failed: [] })
    expect(rows()).toEqual([])
  })

  it('reports and keeps (file and row) what it must not or cannot delete', async () => {
    point('p1')
    // A tampered row naming the disk itself, one naming a file that is not a clone, one naming a folder.
    recordSnapshotClone(db, { machineId, pointId: 'p1', diskName: 'disk', sourcePath: disk, clonePath: disk, createdAt: new Date().toISOString() })
    const stranger = await clone('p1', 'x', { path: join(dir, 'notes.txt') })
    const folder = clonePathFor(disk, Date.now(), 'dd')
    await mkdir(folder)
    recordSnapshotClone(db, { machineId, pointId: 'p1', diskName: 'disk', sourcePath: disk, clonePath: folder, createdAt: new Date().toISOString() })
    const logs: string[] = []
    const r = await removeSnapshotClones(db, { pointIds: ['p1'] }, (l) => logs.push(l))
    expect(r.removed).toEqual([])
    expect(r.failed.map((f) => f.clonePath).sort()).toEqual([disk, stranger, folder].sort())
    expect(r.failed.find((f) => f.clonePath === disk)!.reason).toMatch(/disk itself/)
    expect(r.failed.find((f) => f.clonePath === folder)!.reason).toMatch(/not a file/)
    expect(await readFile(disk, 'utf8')).toBe('the disk')
    expect(existsSync(stranger) && existsSync(folder)).toBe(true)
    expect(rows()).toEqual([disk, stranger, folder].sort())
    expect(logs.filter((l) => /could not remove/.test(l))).toHaveLength(3)
  })

  it('by machine: removes all of its clones, or throws IO_ERROR naming those left', async () => {
    const c1 = await clone(point('p1'), 'aa')
    const folder = clonePathFor(disk, Date.now(), 'ee')
    await mkdir(folder)
    recordSnapshotClone(db, { machineId, pointId: null, diskName: 'disk', sourcePath: disk, clonePath: folder, createdAt: new Date().toISOString() })
    await expect(removeMachineSnapshotClones(db, machineId)).rejects.toMatchObject({ code: 'IO_ERROR', userMessage: expect.stringContaining(folder) })
    expect(existsSync(c1)).toBe(false)
    expect(rows()).toEqual([folder])
    await rm(folder, { recursive: true })
    expect(await removeMachineSnapshotClones(db, machineId)).toEqual([])
    expect(rows()).toEqual([])
  })
})

describe('pruneSnapshotTier', () => {
  it('removes aged clones and clones whose point is gone from the catalog, keeps young ones with their point', async () => {
    const day = 86_400_000
    const now = Date.now()
    const old = await clone(point('p1'), 'aa', { createdAt: new Date(now - 3 * day).toISOString() })
    const young = await clone(point('p2'), 'bb')
    const orphan = await clone('forgotten-elsewhere', 'cc')
    const kept = await clone('also-gone', 'dd')
    const removed = await pruneSnapshotTier(db, machineId, 2, now, new Set([kept]))
    expect(removed.sort()).toEqual([old, orphan].sort())
    expect(rows()).toEqual([young, kept].sort())
    expect(existsSync(young) && existsSync(kept)).toBe(true)
  })
})
