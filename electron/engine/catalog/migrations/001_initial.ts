import type { Migration } from '../types.js'

/** The first schema: settings, vaults, machines and disks, policies, jobs, recovery points, restore queue. */
export const m001Initial: Migration = {
  version: 1,
  name: 'initial',
  up(db) {
    db.exec(`
      CREATE TABLE settings (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
      ) STRICT;

      CREATE TABLE vaults (
        id TEXT PRIMARY KEY,              -- vault id from the vault config
        path TEXT NOT NULL UNIQUE,        -- absolute folder (local backend)
        backend TEXT NOT NULL DEFAULT 'local',
        is_current INTEGER NOT NULL DEFAULT 0,
        last_generation INTEGER NOT NULL DEFAULT 0, -- I11: last generation seen, to detect rollback
        added_at TEXT NOT NULL
      ) STRICT;

      CREATE TABLE policies (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        spec TEXT NOT NULL,               -- JSON: schedule, retention, snapshot-tier days, scripts...
        created_at TEXT NOT NULL
      ) STRICT;

      CREATE TABLE machines (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        policy_id TEXT REFERENCES policies(id) ON DELETE SET NULL,
        source TEXT NOT NULL DEFAULT 'files', -- files | libvirt | vbox
        source_path TEXT,
        created_at TEXT NOT NULL
      ) STRICT;

      CREATE TABLE disks (
        id TEXT PRIMARY KEY,
        machine_id TEXT NOT NULL REFERENCES machines(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        path TEXT NOT NULL,
        position INTEGER NOT NULL,
        is_system INTEGER NOT NULL DEFAULT 0,
        is_excluded INTEGER NOT NULL DEFAULT 0,
        added_at TEXT NOT NULL,
        UNIQUE (machine_id, name)
      ) STRICT;

      CREATE TABLE points (
        id TEXT PRIMARY KEY,              -- recovery point id (as in the vault manifest)
        vault_id TEXT NOT NULL REFERENCES vaults(id) ON DELETE CASCADE,
        machine_id TEXT,                  -- null when the machine is unknown to this catalog
        machine_name TEXT NOT NULL,
        created_at TEXT NOT NULL,
        consistency TEXT NOT NULL CHECK (consistency IN ('application','crash','none')),
        bytes_read INTEGER NOT NULL DEFAULT 0,
        bytes_new INTEGER NOT NULL DEFAULT 0,
        bytes_stored INTEGER NOT NULL DEFAULT 0,
        summary TEXT NOT NULL DEFAULT '{}' -- JSON: per-disk names, sizes...
      ) STRICT;
      CREATE INDEX points_machine ON points(machine_name, created_at);

      CREATE TABLE jobs (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL CHECK (kind IN ('backup','restore','verify','prune','rebuild')),
        state TEXT NOT NULL CHECK (state IN ('queued','running','succeeded','failed','cancelled')),
        machine_id TEXT,
        point_id TEXT,
        created_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT,
        bytes_done INTEGER NOT NULL DEFAULT 0,
        bytes_total INTEGER NOT NULL DEFAULT 0,
        error_code TEXT,
        error_message TEXT,
        result TEXT,                      -- JSON outcome
        log TEXT NOT NULL DEFAULT ''
      ) STRICT;
      CREATE INDEX jobs_state ON jobs(state, created_at);

      CREATE TABLE restore_queue (
        id TEXT PRIMARY KEY,
        job_id TEXT REFERENCES jobs(id) ON DELETE SET NULL,
        point_id TEXT NOT NULL,
        spec TEXT NOT NULL,               -- JSON: target path, disk, format, mode
        position INTEGER NOT NULL,        -- order in the queue (reorderable)
        state TEXT NOT NULL CHECK (state IN ('queued','running','succeeded','failed','cancelled')),
        created_at TEXT NOT NULL
      ) STRICT;
    `)
  },
}
