import type { Migration } from '../types.js'

/**
 * Jobs and the restore queue: who supervises a running job (owner + heartbeat, so a job whose host
 * died is recognised after a restart), the job's spec (to relaunch it) and phase; restore queue
 * attempts and ownership (a running entry whose owner died is restarted from scratch).
 */
export const m025Jobs: Migration = {
  version: 25,
  name: 'jobs',
  up(db) {
    db.exec(`
      ALTER TABLE jobs ADD COLUMN spec TEXT;            -- JSON job spec (kind + input)
      ALTER TABLE jobs ADD COLUMN phase TEXT;
      ALTER TABLE jobs ADD COLUMN owner TEXT;           -- "host/pid/startMs" of the supervising process
      ALTER TABLE jobs ADD COLUMN heartbeat_at TEXT;    -- refreshed while running

      ALTER TABLE restore_queue ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
      ALTER TABLE restore_queue ADD COLUMN owner TEXT;
      ALTER TABLE restore_queue ADD COLUMN heartbeat_at TEXT;
      ALTER TABLE restore_queue ADD COLUMN finished_at TEXT;
      CREATE INDEX restore_queue_state ON restore_queue(state, position);
    `)
  },
}
