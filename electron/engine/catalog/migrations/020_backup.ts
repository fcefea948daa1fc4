import type { Migration } from '../types.js'

/**
 * Backup area: the protected size of a machine, the snapshot tier (reflink clones kept beside the
 * source) and post-scripts still owed after a crash between pre- and post-script (RELIABILITY #34).
 */
export const m020Backup: Migration = {
  version: 20,
  name: 'backup',
  up(db) {
    db.exec(`
      ALTER TABLE machines ADD COLUMN protected_bytes INTEGER NOT NULL DEFAULT 0;

      CREATE TABLE snapshot_clones (
        id TEXT PRIMARY KEY,
        machine_id TEXT NOT NULL REFERENCES machines(id) ON DELETE CASCADE,
        point_id TEXT,                    -- the recovery point read from this clone
        disk_name TEXT NOT NULL,
        source_path TEXT NOT NULL,
        clone_path TEXT NOT NULL UNIQUE,
        created_at TEXT NOT NULL
      ) STRICT;
      CREATE INDEX snapshot_clones_machine ON snapshot_clones(machine_id, created_at);
      CREATE INDEX snapshot_clones_point ON snapshot_clones(point_id);

      CREATE TABLE pending_post_scripts (
        machine_id TEXT PRIMARY KEY REFERENCES machines(id) ON DELETE CASCADE,
        script TEXT NOT NULL,             -- JSON ScriptSpec of the post-script to run
        started_at TEXT NOT NULL
      ) STRICT;
    `)
  },
}
