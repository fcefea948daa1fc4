import Database from 'better-sqlite3'
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { EngineError } from '../errors.js'
import { MIGRATIONS } from './migrations/index.js'
import type { Db, Migration } from './types.js'

export const CATALOG_FILE = 'catalog.sqlite'

/**
 * Opens (creating if needed) the catalog in `home` and applies pending migrations, each in its own
 * transaction together with the `user_version` bump. WAL mode; foreign keys on. The caller closes it.
 * A catalog written by a newer Tresor (higher user_version than we know) is refused.
 */
export function openCatalog(home: string, options: { migrations?: Migration[] } = {}): Db {
  mkdirSync(home, { recursive: true })
  const path = join(home, CATALOG_FILE)
  let db: Db
  try {
    db = new Database(path)
  } catch (err) {
    throw new EngineError('CATALOG_ERROR', `The catalog "${path}" cannot be opened. Rebuild it from the vault with "tresor catalog rebuild".`, { cause: err })
  }
  try {
    db.pragma('journal_mode = WAL')
    db.pragma('synchronous = NORMAL')
    db.pragma('foreign_keys = ON')
    db.pragma('busy_timeout = 10000')
    migrate(db, options.migrations ?? MIGRATIONS)
  } catch (err) {
    db.close()
    if (err instanceof EngineError) throw err
    throw new EngineError('CATALOG_ERROR', `The catalog "${path}" is damaged or unreadable. Rebuild it from the vault with "tresor catalog rebuild".`, { cause: err })
  }
  return db
}

/** Applies migrations above the stored version, in order. Idempotent. */
export function migrate(db: Db, migrations: Migration[]): number {
  const sorted = [...migrations].sort((a, b) => a.version - b.version)
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i]!.version === sorted[i - 1]!.version) throw new Error(`duplicate migration version ${sorted[i]!.version}`)
  }
  const current = db.pragma('user_version', { simple: true }) as number
  const newest = sorted.at(-1)?.version ?? 0
  if (current > newest) {
    throw new EngineError('CATALOG_ERROR', `The catalog was written by a newer version of Tresor (schema ${current}, this one knows ${newest}). Update Tresor.`)
  }
  for (const m of sorted) {
    if (m.version <= current) continue
    db.transaction(() => {
      m.up(db)
      db.pragma(`user_version = ${m.version}`)
    }).immediate()
  }
  return db.pragma('user_version', { simple: true }) as number
}

export function nowIso(): string {
  return new Date().toISOString()
}
