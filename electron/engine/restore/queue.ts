/**
 * The restore queue: restore requests kept in the catalog (`restore_queue`), run in position order
 * with bounded concurrency, reorderable and cancellable, each entry backed by a job row.
 *
 * Terms
 * - entry: one queued restore (its spec is a `RestoreJobInput`); states as jobs: queued, running,
 *   succeeded, failed, cancelled. `position` orders queued entries (lowest first).
 * - owner: the process whose supervisor runs a running entry. Several processes (the app, a CLI
 *   `tresor restore`) may serve one queue: claiming is a transaction that respects `concurrency`
 *   over all of them.
 * - recovery: a running entry whose owner process is gone (app restart, crash, kill -9) is put
 *   back in the queue and restarted from scratch (a fresh `.partial`; nothing of the interrupted
 *   attempt is trusted).
 */
import { randomUUID } from 'node:crypto'
import type { Db } from '../catalog/index.js'
import { nowIso } from '../catalog/index.js'
import { EngineError } from '../errors.js'
import { restoreJobInputSchema, type RestoreJobInput } from '../workers/protocol.js'
import { createJob, currentOwner, finishJob, getJob, isOwnerAlive, requeueJob, type JobRecord, type JobState } from '../workers/jobStore.js'
import type { JobSupervisor } from '../workers/supervisor.js'

export interface RestoreQueueEntry {
  id: string
  jobId: string | null
  pointId: string
  spec: RestoreJobInput
  position: number
  state: JobState
  attempts: number
  owner: string | null
  createdAt: string
  finishedAt: string | null
}

interface EntryRow {
  id: string
  job_id: string | null
  point_id: string
  spec: string
  position: number
  state: JobState
  attempts: number
  owner: string | null
  created_at: string
  finished_at: string | null
}

function toEntry(row: EntryRow): RestoreQueueEntry {
  let spec: RestoreJobInput
  try {
    spec = JSON.parse(row.spec) as RestoreJobInput
  } catch {
    spec = { pointId: row.point_id, mode: 'file' }
  }
  return {
    id: row.id,
    jobId: row.job_id,
    pointId: row.point_id,
    spec,
    position: row.position,
    state: row.state,
    attempts: row.attempts,
    owner: row.owner,
    createdAt: row.created_at,
    finishedAt: row.finished_at,
  }
}

const ACTIVE = `state IN ('queued', 'running')`

/** Validates and adds a restore at the end of the queue (with its queued job row). */
export function enqueueRestore(db: Db, input: RestoreJobInput): RestoreQueueEntry {
  const parsed = restoreJobInputSchema.safeParse(input)
  if (!parsed.success) {
    throw new EngineError('INVALID_INPUT', `The restore request is malformed: ${parsed.error.issues[0]?.message ?? 'invalid'}.`)
  }
  const spec = parsed.data
  const id = randomUUID()
  db.transaction(() => {
    const jobId = createJob(db, { kind: 'restore', input: spec })
    const next = (db.prepare(`SELECT COALESCE(MAX(position), -1) + 1 AS p FROM restore_queue`).get() as { p: number }).p
    db.prepare(
      `INSERT INTO restore_queue (id, job_id, point_id, spec, position, state, created_at) VALUES (?, ?, ?, ?, ?, 'queued', ?)`,
    ).run(id, jobId, spec.pointId, JSON.stringify(spec), next, nowIso())
  }).immediate()
  return getEntry(db, id)!
}

export function getEntry(db: Db, id: string): RestoreQueueEntry | undefined {
  const row = db.prepare(`SELECT * FROM restore_queue WHERE id = ?`).get(id) as EntryRow | undefined
  return row && toEntry(row)
}

/** Entries in queue order: running first, then queued by position, then (optionally) ended ones, newest first. */
export function listRestoreQueue(db: Db, options: { includeEnded?: boolean; limit?: number } = {}): RestoreQueueEntry[] {
  const active = (db.prepare(`SELECT * FROM restore_queue WHERE ${ACTIVE} ORDER BY state = 'queued', position`).all() as EntryRow[]).map(toEntry)
  if (!options.includeEnded) return active
  const limit = Math.max(1, Math.min(options.limit ?? 50, 1000))
  const ended = (db.prepare(`SELECT * FROM restore_queue WHERE NOT ${ACTIVE} ORDER BY finished_at DESC, rowid DESC LIMIT ${limit}`).all() as EntryRow[]).map(toEntry)
  return [...active, ...ended]
}

/**
 * Puts the listed queued entries first, in the given order; other queued entries keep their order
 * after them. Running and ended entries are not moved (unknown ids: NOT_FOUND).
 */
export function reorderRestoreQueue(db: Db, entryIds: string[]): RestoreQueueEntry[] {
  db.transaction(() => {
    const queued = (db.prepare(`SELECT id FROM restore_queue WHERE state = 'queued' ORDER BY position`).all() as { id: string }[]).map((r) => r.id)
    for (const id of entryIds) {
      if (!getEntry(db, id)) throw new EngineError('NOT_FOUND', `The restore queue has no entry ${id}.`)
    }
    const first = entryIds.filter((id) => queued.includes(id))
    const order = [...new Set([...first, ...queued.filter((id) => !first.includes(id))])]
    const base = (db.prepare(`SELECT COALESCE(MIN(position), 0) AS p FROM restore_queue WHERE state = 'queued'`).get() as { p: number }).p
    const set = db.prepare(`UPDATE restore_queue SET position = ? WHERE id = ?`)
    order.forEach((id, i) => set.run(base + i, id))
  }).immediate()
  return listRestoreQueue(db)
}

function setEntryEnded(db: Db, id: string, state: JobState): void {
  db.prepare(`UPDATE restore_queue SET state = ?, finished_at = ?, owner = NULL WHERE id = ? AND ${ACTIVE}`).run(state, nowIso(), id)
}

export interface RestoreQueueOptions {
  db: Db
  supervisor: JobSupervisor
  /** Restores running at once over all processes serving this queue. Default 1. */
  concurrency?: number
  /** Interval at which entries run by other processes are polled. Default 500 ms. */
  pollMs?: number
  /**
   * While this returns true no entry is started (the app holds restores while a prune may delete
   * the packs they would read); call `pump()` once it turns false.
   */
  holdWhile?: () => boolean
}

/**
 * Serves the restore queue from this process: claims entries in order within the concurrency bound,
 * starts their jobs through the supervisor, records their outcomes, and recovers entries whose
 * owner died. Call `dispose()` when done (it does not stop running jobs; see `JobSupervisor.dispose`).
 */
export class RestoreQueue {
  private readonly db: Db
  private readonly supervisor: JobSupervisor
  private readonly concurrency: number
  private readonly pollMs: number
  private readonly owner = currentOwner()
  private readonly unsubscribe: () => void
  private readonly listeners = new Set<(entries: RestoreQueueEntry[]) => void>()
  private claiming = true
  private disposed = false
  private readonly holdWhile: () => boolean

  constructor(options: RestoreQueueOptions) {
    this.db = options.db
    this.supervisor = options.supervisor
    this.concurrency = Math.max(1, Math.floor(options.concurrency ?? 1))
    this.pollMs = options.pollMs ?? 500
    this.holdWhile = options.holdWhile ?? (() => false)
    this.unsubscribe = this.supervisor.on((e) => {
      if (e.type !== 'finished' || e.outcome.kind !== 'restore') return
      const row = this.db.prepare(`SELECT id FROM restore_queue WHERE job_id = ? AND ${ACTIVE}`).get(e.outcome.jobId) as { id: string } | undefined
      if (!row) return
      setEntryEnded(this.db, row.id, e.outcome.state)
      this.changed()
      this.pump()
    })
  }

  /** Subscribes to queue changes (the full active list); returns the unsubscribe. */
  on(listener: (entries: RestoreQueueEntry[]) => void): () => void {
    this.listeners.add(listener)
    return () => this.listeners.delete(listener)
  }

  private changed(): void {
    if (this.listeners.size === 0) return
    const entries = listRestoreQueue(this.db)
    for (const l of this.listeners) {
      try {
        l(entries)
      } catch {
        // a listener's failure is its own
      }
    }
  }

  /**
   * After a restart: running entries whose owner process is gone go back to the queue (to run
   * again from scratch), their job rows too; other orphaned jobs are marked JOB_CRASHED.
   * Returns the ids of the entries put back.
   */
  recover(): string[] {
    const requeued: string[] = []
    this.db.transaction(() => {
      const rows = (this.db.prepare(`SELECT * FROM restore_queue WHERE state = 'running'`).all() as EntryRow[]).map(toEntry)
      for (const e of rows) {
        if (isOwnerAlive(e.owner)) continue
        this.db.prepare(`UPDATE restore_queue SET state = 'queued', owner = NULL, attempts = attempts + 1 WHERE id = ?`).run(e.id)
        if (e.jobId) {
          const job = getJob(this.db, e.jobId)
          if (job && (job.state === 'running' || job.state === 'queued')) {
            requeueJob(this.db, e.jobId, `${nowIso()} Interrupted (Tresor stopped); restarting this restore from the beginning.`)
          } else {
            // The job row ended (or vanished) but the entry did not follow: start with a new job row.
            const jobId = createJob(this.db, { kind: 'restore', input: restoreJobInputSchema.parse(e.spec) })
            this.db.prepare(`UPDATE restore_queue SET job_id = ? WHERE id = ?`).run(jobId, e.id)
          }
        }
        requeued.push(e.id)
      }
    }).immediate()
    const queuedJobIds = new Set(
      (this.db.prepare(`SELECT job_id FROM restore_queue WHERE ${ACTIVE} AND job_id IS NOT NULL`).all() as { job_id: string }[]).map((r) => r.job_id),
    )
    this.supervisor.recoverOrphans((job: JobRecord) => queuedJobIds.has(job.id))
    if (requeued.length) this.changed()
    return requeued
  }

  /** Adds a restore at the end of the queue and starts what the concurrency allows. */
  enqueue(input: RestoreJobInput): RestoreQueueEntry {
    const entry = enqueueRestore(this.db, input)
    this.changed()
    this.pump()
    return getEntry(this.db, entry.id) ?? entry
  }

  reorder(entryIds: string[]): RestoreQueueEntry[] {
    const list = reorderRestoreQueue(this.db, entryIds)
    this.changed()
    return list
  }

  /** Cancels an entry: a queued one at once; a running one through its job (outcome follows). */
  async cancel(entryId: string): Promise<void> {
    const entry = getEntry(this.db, entryId)
    if (!entry) throw new EngineError('NOT_FOUND', `The restore queue has no entry ${entryId}.`)
    if (entry.state === 'queued') {
      const claimed = this.db
        .prepare(`UPDATE restore_queue SET state = 'cancelled', finished_at = ? WHERE id = ? AND state = 'queued'`)
        .run(nowIso(), entryId).changes === 1
      if (claimed && entry.jobId) finishJob(this.db, entry.jobId, { state: 'cancelled', error: { code: 'CANCELLED', message: 'The restore was cancelled before it started.' } })
      if (claimed) {
        this.changed()
        return
      }
    }
    const now = getEntry(this.db, entryId)!
    if (now.state !== 'running' || !now.jobId) return
    if (this.supervisor.isActive(now.jobId)) {
      await this.supervisor.cancel(now.jobId)
    } else {
      throw new EngineError('FORBIDDEN', 'This restore is running in another Tresor process (the app or another command). Cancel it there.')
    }
  }

  /**
   * Starts queued entries (lowest position first) while fewer than `concurrency` run in total and
   * nothing holds the queue (`holdWhile`). Returns the ids of the entries started.
   */
  pump(): string[] {
    if (!this.claiming || this.disposed || this.holdWhile()) return []
    const started: string[] = []
    for (;;) {
      const claimed = this.db.transaction((): RestoreQueueEntry | undefined => {
        const running = (this.db.prepare(`SELECT owner FROM restore_queue WHERE state = 'running'`).all() as { owner: string | null }[])
          .filter((r) => isOwnerAlive(r.owner)).length
        if (running >= this.concurrency) return undefined
        const next = this.db.prepare(`SELECT * FROM restore_queue WHERE state = 'queued' ORDER BY position LIMIT 1`).get() as EntryRow | undefined
        if (!next) return undefined
        this.db.prepare(`UPDATE restore_queue SET state = 'running', owner = ?, heartbeat_at = ? WHERE id = ?`).run(this.owner, nowIso(), next.id)
        return toEntry({ ...next, state: 'running', owner: this.owner })
      }).immediate()
      if (!claimed) break
      this.startEntry(claimed)
      started.push(claimed.id)
    }
    if (started.length) this.changed()
    return started
  }

  private startEntry(entry: RestoreQueueEntry): void {
    let jobId = entry.jobId
    const job = jobId ? getJob(this.db, jobId) : undefined
    if (!job || job.state !== 'queued') {
      if (job && (job.state === 'cancelled' || job.state === 'failed' || job.state === 'succeeded')) {
        // The job was ended elsewhere (e.g. cancelled from the jobs list) before it started.
        setEntryEnded(this.db, entry.id, job.state)
        return
      }
      jobId = createJob(this.db, { kind: 'restore', input: restoreJobInputSchema.parse(entry.spec) })
      this.db.prepare(`UPDATE restore_queue SET job_id = ? WHERE id = ?`).run(jobId, entry.id)
    }
    try {
      this.supervisor.start(jobId!)
    } catch (err) {
      const state = getJob(this.db, jobId!)?.state
      setEntryEnded(this.db, entry.id, state === 'cancelled' ? 'cancelled' : 'failed')
      if (state === 'queued') finishJob(this.db, jobId!, { state: 'failed', error: { code: 'INTERNAL', message: `The restore could not start: ${String(err)}` } })
    }
  }

  /** Stops taking new entries (running ones continue). A CLI stops once its own entry is done. */
  stopClaiming(): void {
    this.claiming = false
  }

  /** Resolves with the entry once it has ended (polling entries run by other processes). */
  waitFor(entryId: string): Promise<RestoreQueueEntry> {
    return new Promise((resolve, reject) => {
      const check = (): boolean => {
        const e = getEntry(this.db, entryId)
        if (!e) {
          reject(new EngineError('NOT_FOUND', `The restore queue has no entry ${entryId}.`))
          return true
        }
        if (e.state !== 'queued' && e.state !== 'running') {
          resolve(e)
          return true
        }
        return false
      }
      if (check()) return
      const unsubscribe = this.on(() => {
        if (check()) stop()
      })
      const timer = setInterval(() => {
        this.pump()
        if (check()) stop()
      }, this.pollMs)
      const stop = (): void => {
        clearInterval(timer)
        unsubscribe()
      }
    })
  }

  dispose(): void {
    this.disposed = true
    this.unsubscribe()
    this.listeners.clear()
  }
}
