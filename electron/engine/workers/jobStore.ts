/**
 * Job rows in the catalog (`jobs` table): queued → running → succeeded | failed | cancelled, with
 * progress, byte counts, the log (its last `MAX_LOG_CHARS` characters) and the JSON result.
 *
 * Ownership: a running row names the process that supervises it (`owner`: host/pid/start time).
 * After a restart, a running row whose owner process is gone is an orphan: its job process died
 * with its host (see `isOwnerAlive`).
 */
import { randomUUID } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { hostname } from 'node:os'
import type { Db } from '../catalog/index.js'
import { nowIso } from '../catalog/index.js'
import { isErrorCode, type WireError } from '../../shared/errors.js'
import type { JobKind, JobSpec } from './protocol.js'

export type JobState = 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled'
export const TERMINAL_STATES: readonly JobState[] = ['succeeded', 'failed', 'cancelled']
export const MAX_LOG_CHARS = 256 * 1024

export interface JobRecord {
  id: string
  kind: JobKind | 'rebuild'
  state: JobState
  machineId: string | null
  pointId: string | null
  createdAt: string
  startedAt: string | null
  finishedAt: string | null
  bytesDone: number
  bytesTotal: number
  phase: string | null
  error: WireError | null
  result: unknown
  spec: JobSpec | null
  owner: string | null
  log: string
}

interface JobRow {
  id: string
  kind: JobRecord['kind']
  state: JobState
  machine_id: string | null
  point_id: string | null
  created_at: string
  started_at: string | null
  finished_at: string | null
  bytes_done: number
  bytes_total: number
  phase: string | null
  error_code: string | null
  error_message: string | null
  result: string | null
  spec: string | null
  owner: string | null
  log: string
}

function parseJson(text: string | null): unknown {
  if (text === null) return null
  try {
    return JSON.parse(text) as unknown
  } catch {
    return null
  }
}

function toRecord(row: JobRow): JobRecord {
  return {
    id: row.id,
    kind: row.kind,
    state: row.state,
    machineId: row.machine_id,
    pointId: row.point_id,
    createdAt: row.created_at,
    startedAt: row.started_at,
    finishedAt: row.finished_at,
    bytesDone: row.bytes_done,
    bytesTotal: row.bytes_total,
    phase: row.phase,
    error:
      row.error_code === null
        ? null
        : { code: isErrorCode(row.error_code) ? row.error_code : 'INTERNAL', message: row.error_message ?? '' },
    result: parseJson(row.result),
    spec: parseJson(row.spec) as JobSpec | null,
    owner: row.owner,
    log: row.log,
  }
}

let cachedOwner: string | undefined

/** Start time of a process in clock ticks since boot (Linux), or undefined. */
export function processStartTicks(pid: number, procRoot = '/proc'): string | undefined {
  try {
    const stat = readFileSync(`${procRoot}/${pid}/stat`, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return fields[19] // field 22 of proc(5), counted from field 3 ("state")
  } catch {
    return undefined
  }
}

/** This process as a job owner: "host/pid/start". */
export function currentOwner(): string {
  cachedOwner ??= `${hostname()}/${process.pid}/${processStartTicks(process.pid) ?? '0'}`
  return cachedOwner
}

/**
 * False when `owner` names a process on this host that no longer runs (or whose pid now belongs to
 * another process). A process on another host is assumed alive: never steal its work.
 */
export function isOwnerAlive(owner: string | null): boolean {
  if (owner === null) return false
  const [host, pidText, start] = owner.split('/')
  if (host !== hostname()) return true
  const pid = Number(pidText)
  if (!Number.isInteger(pid) || pid <= 0) return false
  if (pid === process.pid) return owner === currentOwner()
  try {
    process.kill(pid, 0)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false
  }
  const now = processStartTicks(pid)
  return start === undefined || start === '0' || now === undefined || now === start
}

export function createJob(db: Db, spec: JobSpec, extra: { id?: string; machineId?: string | null; pointId?: string | null } = {}): string {
  const id = extra.id ?? randomUUID()
  const machineId = extra.machineId ?? (spec.kind === 'backup' ? spec.input.machineId : null)
  const pointId = extra.pointId ?? (spec.kind === 'restore' ? spec.input.pointId : null)
  db.prepare(
    `INSERT INTO jobs (id, kind, state, machine_id, point_id, created_at, spec) VALUES (?, ?, 'queued', ?, ?, ?, ?)`,
  ).run(id, spec.kind, machineId, pointId, nowIso(), JSON.stringify(spec))
  return id
}

/** queued → running, owned by `owner`. False when the row was not queued (someone else took it). */
export function claimJob(db: Db, id: string, owner: string): boolean {
  const now = nowIso()
  const r = db
    .prepare(
      `UPDATE jobs SET state = 'running', started_at = ?, owner = ?, heartbeat_at = ?, bytes_done = 0, phase = NULL,
         error_code = NULL, error_message = NULL, result = NULL, finished_at = NULL
       WHERE id = ? AND state = 'queued'`,
    )
    .run(now, owner, now, id)
  return r.changes === 1
}

export function updateJobProgress(db: Db, id: string, p: { bytesDone: number; bytesTotal: number; phase: string | null }): void {
  db.prepare(`UPDATE jobs SET bytes_done = ?, bytes_total = ?, phase = ?, heartbeat_at = ? WHERE id = ? AND state = 'running'`).run(
    Math.round(p.bytesDone),
    Math.round(p.bytesTotal),
    p.phase,
    nowIso(),
    id,
  )
}

/** Appends text to the job's log, keeping its last MAX_LOG_CHARS characters. */
export function appendJobLog(db: Db, id: string, text: string): void {
  if (text === '') return
  db.prepare(`UPDATE jobs SET log = substr(log || ?, -${MAX_LOG_CHARS}) WHERE id = ?`).run(text, id)
}

/** Ends a job (only from queued or running). False when it had already ended. */
export function finishJob(db: Db, id: string, outcome: { state: 'succeeded' | 'failed' | 'cancelled'; error?: WireError | null; result?: unknown }): boolean {
  const r = db
    .prepare(
      `UPDATE jobs SET state = ?, finished_at = ?, error_code = ?, error_message = ?, result = ?,
         bytes_done = CASE WHEN ? = 'succeeded' THEN bytes_total ELSE bytes_done END,
         phase = CASE WHEN ? = 'succeeded' THEN 'done' ELSE phase END
       WHERE id = ? AND state IN ('queued', 'running')`,
    )
    .run(
      outcome.state,
      nowIso(),
      outcome.error?.code ?? null,
      outcome.error?.message ?? null,
      outcome.result === undefined ? null : JSON.stringify(outcome.result),
      outcome.state,
      outcome.state,
      id,
    )
  return r.changes === 1
}

/** Puts a running job back in the queue (for a restart from scratch). */
export function requeueJob(db: Db, id: string, note: string): void {
  db.prepare(
    `UPDATE jobs SET state = 'queued', owner = NULL, started_at = NULL, bytes_done = 0, phase = NULL,
       log = substr(log || ?, -${MAX_LOG_CHARS}) WHERE id = ?`,
  ).run(note.endsWith('\n') ? note : note + '\n', id)
}

export function getJob(db: Db, id: string): JobRecord | undefined {
  const row = db.prepare(`SELECT * FROM jobs WHERE id = ?`).get(id) as JobRow | undefined
  return row && toRecord(row)
}

/** Most recent first. */
export function listJobs(db: Db, options: { limit?: number; states?: JobState[] } = {}): JobRecord[] {
  const limit = Math.max(1, Math.min(options.limit ?? 100, 10_000))
  const states = options.states ?? []
  const where = states.length ? `WHERE state IN (${states.map(() => '?').join(',')})` : ''
  const rows = db.prepare(`SELECT * FROM jobs ${where} ORDER BY created_at DESC, rowid DESC LIMIT ${limit}`).all(...states) as JobRow[]
  return rows.map(toRecord)
}

/** Running jobs whose supervising process is gone. */
export function findOrphanJobs(db: Db): JobRecord[] {
  const rows = db.prepare(`SELECT * FROM jobs WHERE state = 'running'`).all() as JobRow[]
  return rows.map(toRecord).filter((j) => !isOwnerAlive(j.owner))
}
