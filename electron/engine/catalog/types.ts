import type Database from 'better-sqlite3'

export type Db = Database.Database

export interface Migration {
  /** Applied in increasing order; the highest applied version is stored in `PRAGMA user_version`. */
  version: number
  name: string
  up(db: Db): void
}
