import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { openCatalog, type Db } from '../../../../electron/engine/catalog/index.js'
import {
  countPoints,
  getCurrentVault,
  getVault,
  listVaults,
  registerVault,
  replacePoints,
  setCurrentVault,
  updateLastGeneration,
} from '../../../../electron/engine/catalog/vaults.js'
import type { PointManifest } from '../../../../electron/engine/vault/api.js'

let home: string
let db: Db
beforeEach(() => {
  home = mkdtempSync(join(tmpdir(), 'tresor-vaults-'))
  db = openCatalog(home)
})
afterEach(() => {
  db.close()
  rmSync(home, { recursive: true, force: true })
})

function manifest(id: string, machineName = 'vm1'): PointManifest {
  return {
    id,
    machineId: 'm-' + machineName,
    machineName,
    createdAt: '2025-01-01T00:00:00.000Z',
    consistency: 'crash',
    blockSize: 1 << 20,
    disks: [{ index: 0, name: 'disk0', virtualSize: 4096, sourceFormat: 'raw', sourcePath: '/x.img', allocatedBytes: 4096, blockCount: 1 }],
    stats: { bytesRead: 4096, bytesNew: 4096, bytesStored: 100, seconds: 1 },
    labels: {},
  }
}

describe('vault registrations', () => {
  it('has no current vault at first', () => {
    expect(getCurrentVault(db)).toBeUndefined()
  })

  it('registers vaults and keeps exactly one current', () => {
    registerVault(db, { id: 'a', path: '/v/a' }, { makeCurrent: true })
    registerVault(db, { id: 'b', path: '/v/b' }, { makeCurrent: true })
    expect(getCurrentVault(db)?.id).toBe('b')
    registerVault(db, { id: 'c', path: '/v/c' })
    expect(getCurrentVault(db)?.id).toBe('b')
    setCurrentVault(db, 'a')
    expect(listVaults(db).filter((v) => v.isCurrent).map((v) => v.id)).toEqual(['a'])
  })

  it('keeps the last generation monotonic, also across re-registration', () => {
    registerVault(db, { id: 'a', path: '/v/a', lastGeneration: 5 })
    expect(updateLastGeneration(db, 'a', 3)).toBe(5)
    expect(updateLastGeneration(db, 'a', 9)).toBe(9)
    registerVault(db, { id: 'a', path: '/v/a2', lastGeneration: 1 })
    expect(getVault(db, 'a')).toMatchObject({ path: '/v/a2', lastGeneration: 9 })
  })

  it('replaces a registration when another vault now lives at the same path', () => {
    registerVault(db, { id: 'old', path: '/v/x' }, { makeCurrent: true })
    replacePoints(db, 'old', [manifest('p1')])
    registerVault(db, { id: 'new', path: '/v/x' }, { makeCurrent: true })
    expect(getVault(db, 'old')).toBeUndefined()
    expect(countPoints(db, 'old')).toBe(0)
    expect(getCurrentVault(db)?.id).toBe('new')
  })

  it('mirrors the manifests as point rows exactly', () => {
    registerVault(db, { id: 'a', path: '/v/a' })
    db.prepare("INSERT INTO machines (id, name, created_at) VALUES ('local-id', 'vm2', 'now')").run()
    expect(replacePoints(db, 'a', [manifest('p1'), manifest('p2', 'vm2')])).toBe(2)
    replacePoints(db, 'a', [manifest('p2', 'vm2'), manifest('p3')])
    const rows = db.prepare('SELECT id, machine_id, machine_name, summary FROM points ORDER BY id').all() as { id: string; machine_id: string | null; summary: string }[]
    expect(rows.map((r) => r.id)).toEqual(['p2', 'p3'])
    expect(rows[0]!.machine_id).toBe('local-id')
    expect(rows[1]!.machine_id).toBeNull()
    expect(JSON.parse(rows[0]!.summary).disks[0]).toMatchObject({ name: 'disk0', virtualSize: 4096 })
  })
})
