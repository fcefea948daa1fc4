import type { Migration } from '../types.js'

/** Scheduler state: the last schedule slot handled per machine, so a slot never runs twice. */
export const m030Schedule: Migration = {
  version: 30,
  name: 'schedule',
  up(db) {
    db.exec(`
      CREATE TABLE schedule_state (
        machine_id TEXT PRIMARY KEY REFERENCES machines(id) ON DELETE CASCADE,
        last_slot_ms INTEGER NOT NULL,    -- epoch ms of the last slot started (or skipped as covered)
        updated_at TEXT NOT NULL
      ) STRICT;
    `)
  },
}
