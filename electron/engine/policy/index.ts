/**
 * Policies: how and when machines are backed up, and how long their points are kept.
 *
 * Terms
 * - policy: a named spec (schedule, retention, snapshot-tier days, pre/post scripts,
 *   failOnInconsistent) stored in the catalog's `policies` table; machines without one use
 *   DEFAULT_POLICY.
 * - slot: an instant a schedule fires (plus the machine's stagger offset); see scheduler.ts.
 * - retention: which points survive `tresor prune` (retention.ts); the newest point of a machine
 *   always survives.
 */
import { randomUUID } from 'node:crypto'
import type { Db } from '../catalog/types.js'
import { EngineError } from '../errors.js'
import { BackupScheduler, type Clock, type SchedulerDeps } from './scheduler.js'
import { DEFAULT_POLICY, parsePolicySpec, toSharedPolicy, type PolicySpec, type PolicySpecInput } from './spec.js'
import type { PolicySpec as SharedPolicySpec } from '../../shared/models.js'

export * from './spec.js'
export * from './retention.js'
export * from './scheduler.js'

export interface PolicyRow {
  id: string
  name: string
  spec: PolicySpec
  createdAt: string
}

/**
 * Creates or replaces (by name) a policy, stored in the IPC contract's shape so the app shows and
 * edits it. Returns its id. Throws INVALID_INPUT for a bad spec or one the contract cannot hold.
 */
export function savePolicy(db: Db, name: string, spec: PolicySpecInput | SharedPolicySpec): string {
  const parsed = toSharedPolicy(parsePolicySpec(spec))
  const existing = db.prepare('SELECT id FROM policies WHERE name = ?').get(name) as { id: string } | undefined
  if (existing) {
    db.prepare('UPDATE policies SET spec = ? WHERE id = ?').run(JSON.stringify(parsed), existing.id)
    return existing.id
  }
  const id = randomUUID()
  db.prepare('INSERT INTO policies (id, name, spec, created_at) VALUES (?, ?, ?, ?)').run(id, name, JSON.stringify(parsed), new Date().toISOString())
  return id
}

/** The policy with this id or name. Throws NOT_FOUND. */
export function getPolicy(db: Db, idOrName: string): PolicyRow {
  const r = db.prepare('SELECT * FROM policies WHERE id = ? OR name = ?').get(idOrName, idOrName) as
    | { id: string; name: string; spec: string; created_at: string }
    | undefined
  if (!r) throw new EngineError('NOT_FOUND', `No policy is named "${idOrName}".`)
  return { id: r.id, name: r.name, spec: parseStored(r.spec, r.name), createdAt: r.created_at }
}

/** The policy spec a machine runs with: its own, or DEFAULT_POLICY. */
export function policyForMachine(db: Db, machineId: string): PolicySpec {
  const r = db.prepare('SELECT p.spec FROM machines m JOIN policies p ON p.id = m.policy_id WHERE m.id = ?').get(machineId) as { spec: string } | undefined
  return r ? parseStored(r.spec, machineId) : DEFAULT_POLICY
}

function parseStored(json: string, what: string): PolicySpec {
  let value: unknown
  try {
    value = JSON.parse(json)
  } catch (err) {
    throw new EngineError('CATALOG_ERROR', `The policy of "${what}" in the catalog is damaged. Save the policy again.`, { cause: err })
  }
  return parsePolicySpec(value)
}

/**
 * A scheduler over the catalog: machines and their policies from `machines`/`policies`, handled
 * slots in `schedule_state`. `startBackup` and `isRunning` come from the job supervisor.
 */
export function createCatalogScheduler(
  db: Db,
  deps: Pick<SchedulerDeps, 'startBackup' | 'isRunning' | 'onError' | 'maxSleepMs'> & { clock?: Clock },
): BackupScheduler {
  return new BackupScheduler({
    ...deps,
    machines: () => {
      const rows = db.prepare('SELECT id, created_at FROM machines').all() as { id: string; created_at: string }[]
      return rows.map((r) => ({ id: r.id, createdAtMs: Date.parse(r.created_at), schedule: policyForMachine(db, r.id).schedule }))
    },
    getLastSlot: (id) => {
      const r = db.prepare('SELECT last_slot_ms FROM schedule_state WHERE machine_id = ?').get(id) as { last_slot_ms: number } | undefined
      return r ? r.last_slot_ms : null
    },
    setLastSlot: (id, slot) => {
      db.prepare(`INSERT INTO schedule_state (machine_id, last_slot_ms, updated_at) VALUES (?, ?, ?)
        ON CONFLICT(machine_id) DO UPDATE SET last_slot_ms = excluded.last_slot_ms, updated_at = excluded.updated_at`).run(id, slot, new Date().toISOString())
    },
  })
}
