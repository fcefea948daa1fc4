import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { openCatalog, type Db } from '../../../electron/engine/catalog/index.js'
import {
  addDisk,
  addMachine,
  defaultDiskName,
  findDisk,
  getMachine,
  listMachines,
  listPointRows,
  recordPoint,
  removeMachine,
  setDisksExcluded,
} from '../../../electron/engine/backup/machines.js'
import type { PointManifest } from '../../../electron/engine/vault/api.js'

let dir = ''
let db: Db
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tresor-machines-'))
  db = openCatalog(join(dir, 'home'))
})
afterEach(async () => {
  db.close()
  await rm(dir, { recursive: true, force: true })
})

async function file(name: string): Promise<string> {
  const p = join(dir, name)
  await writeFile(p, 'x')
  return p
}

describe('machines in the catalog', () => {
  it('adds a machine with unique disk names, the first disk as system disk by default', async () => {
    const a = await file('disk.qcow2')
    const sub = join(dir, 'sub')
    await rm(sub, { force: true, recursive: true })
    await (await import('node:fs/promises')).mkdir(sub)
    const b = join(sub, 'disk.vmdk')
    await writeFile(b, 'y')
    const m = addMachine(db, { name: ' vm1 ', disks: [{ path: a }, { path: b }] })
    expect(m.name).toBe('vm1')
    expect(m.disks.map((d) => [d.name, d.position, d.isSystem, d.isExcluded])).toEqual([['disk', 0, true, false], ['disk-2', 1, false, false]])
    expect(getMachine(db, 'vm1').id).toBe(m.id)
    expect(getMachine(db, m.id).name).toBe('vm1')
    expect(listMachines(db).map((x) => x.name)).toEqual(['vm1'])
  })

  it('honours an explicit system disk and names', async () => {
    const a = await file('a.raw')
    const b = await file('b.raw')
    const m = addMachine(db, { name: 'vm', disks: [{ path: a, name: 'data' }, { path: b, isSystem: true }] })
    expect(m.disks.map((d) => [d.name, d.isSystem])).toEqual([['data', false], ['b', true]])
  })

  it('refuses duplicates, missing files and empty machines with clear codes', async () => {
    const a = await file('a.raw')
    addMachine(db, { name: 'vm', disks: [{ path: a }] })
    expect(() => addMachine(db, { name: 'vm', disks: [{ path: a }] })).toThrow(expect.objectContaining({ code: 'ALREADY_EXISTS' }))
    expect(() => addMachine(db, { name: 'x', disks: [{ path: join(dir, 'missing.raw') }] })).toThrow(expect.objectContaining({ code: 'NOT_FOUND' }))
    expect(() => addMachine(db, { name: 'y', disks: [] })).toThrow(expect.objectContaining({ code: 'INVALID_INPUT' }))
    expect(() => addMachine(db, { name: 'z', disks: [{ path: a }, { path: a }] })).toThrow(expect.objectContaining({ code: 'INVALID_INPUT' }))
    expect(() => addMachine(db, { name: 'd', disks: [{ path: dir }] })).toThrow(expect.objectContaining({ code: 'INVALID_INPUT' }))
    expect(() => getMachine(db, 'nope')).toThrow(expect.objectContaining({ code: 'MACHINE_NOT_FOUND' }))
  })

  it('excludes and includes disks by name or position; adds a disk later at the end', async () => {
    const m = addMachine(db, { name: 'vm', disks: [{ path: await file('a.raw') }, { path: await file('swap.raw') }] })
    expect(setDisksExcluded(db, 'vm', ['1'], true).disks.map((d) => d.isExcluded)).toEqual([false, true])
    expect(setDisksExcluded(db, m.id, ['swap'], false).disks.map((d) => d.isExcluded)).toEqual([false, false])
    expect(() => setDisksExcluded(db, 'vm', ['zzz'], true)).toThrow(/has no disk "zzz"/)
    const d = addDisk(db, 'vm', { path: await file('new.raw') })
    expect([d.name, d.position, d.isSystem]).toEqual(['new', 2, false])
    expect(() => addDisk(db, 'vm', { path: join(dir, 'new.raw') })).toThrow(expect.objectContaining({ code: 'ALREADY_EXISTS' }))
    expect(findDisk(getMachine(db, 'vm'), '2').name).toBe('new')
  })

  it('records points, keeps the protected size of the included disks, lists points by machine', async () => {
    const m = addMachine(db, { name: 'vm', disks: [{ path: await file('a.raw') }] })
    const manifest: PointManifest = {
      id: 'p1', machineId: m.id, machineName: 'vm', createdAt: '2026-05-01T00:00:00.000Z', consistency: 'crash', blockSize: 65536,
      disks: [{ index: 0, name: 'a', virtualSize: 1 << 30, sourceFormat: 'raw', sourcePath: '/a.raw', allocatedBytes: 12345, blockCount: 16384 }],
      stats: { bytesRead: 10, bytesNew: 5, bytesStored: 3, seconds: 1 }, labels: {},
    }
    recordPoint(db, { id: 'v1', path: '/vault' }, manifest)
    recordPoint(db, { id: 'v1', path: '/vault' }, manifest) // idempotent
    expect(getMachine(db, 'vm').protectedBytes).toBe(12345)
    const rows = listPointRows(db, { machine: 'vm' })
    expect(rows).toHaveLength(1)
    expect(rows[0]).toMatchObject({ id: 'p1', machine: 'vm', consistency: 'crash', bytesRead: 10, disks: [{ name: 'a', virtualSize: 1 << 30 }] })
    removeMachine(db, 'vm')
    // Points stay (the vault still has them), listed by machine name.
    expect(listPointRows(db, { machine: 'vm' })).toHaveLength(1)
  })

  it('derives disk names from file names', () => {
    expect(defaultDiskName('/x/y/Win 10.vhdx')).toBe('Win 10')
    expect(defaultDiskName('/x/.hidden')).toBe('.hidden')
    expect(defaultDiskName('/x/noext')).toBe('noext')
  })
})
