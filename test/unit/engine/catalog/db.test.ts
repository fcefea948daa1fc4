import { describe, expect, it, afterEach } from 'vitest'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { openCatalog, migrate } from '../../../../electron/engine/catalog/index.js'
import { MIGRATIONS } from '../../../../electron/engine/catalog/migrations/index.js'
import type { Migration } from '../../../../electron/engine/catalog/index.js'
import { EngineError } from '../../../../electron/engine/errors.js'

const dirs: string[] = []
function tempHome(): string {
  const d = mkdtempSync(join(tmpdir(), 'tresor-catalog-'))
  dirs.push(d)
  return d
}
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true })
})

describe('catalog', () => {
  it('applies every migration and records the newest version in user_version', () => {
    const db = openCatalog(tempHome())
    const newest = Math.max(...MIGRATIONS.map((m) => m.version))
    expect(db.pragma('user_version', { simple: true })).toBe(newest)
    expect(db.pragma('journal_mode', { simple: true })).toBe('wal')
    const tables = db.prepare("SELECT name FROM sqlite_master WHERE type='table'").all().map((r) => (r as { name: string }).name)
    expect(tables).toEqual(expect.arrayContaining(['machines', 'disks', 'policies', 'vaults', 'points', 'jobs', 'restore_queue']))
    db.close()
  })

  it('is idempotent when opened again', () => {
    const home = tempHome()
    openCatalog(home).close()
    const db = openCatalog(home)
    expect(migrate(db, MIGRATIONS)).toBe(Math.max(...MIGRATIONS.map((m) => m.version)))
    db.close()
  })

  it('rolls a failing migration back entirely, keeping the previous version', () => {
    const home = tempHome()
    const broken: Migration = {
      version: 999,
      name: 'broken',
      up(db) {
        db.exec('CREATE TABLE half_done (x INTEGER)')
        throw new Error('boom')
      },
    }
    expect(() => openCatalog(home, { migrations: [...MIGRATIONS, broken] })).toThrow(EngineError)
    const db = openCatalog(home)
    expect(db.prepare("SELECT count(*) AS n FROM sqlite_master WHERE name='half_done'").get()).toEqual({ n: 0 })
    db.close()
  })

  it('refuses a catalog written by a newer Tresor', () => {
    const home = tempHome()
    const db = openCatalog(home)
    db.pragma('user_version = 10000')
    db.close()
    expect(() => openCatalog(home)).toThrow(/newer version of Tresor/)
  })

  it('rejects duplicate migration versions', () => {
    const db = openCatalog(tempHome())
    const m = MIGRATIONS[0]!
    expect(() => migrate(db, [m, { ...m }])).toThrow(/duplicate migration/)
    db.close()
  })
})
