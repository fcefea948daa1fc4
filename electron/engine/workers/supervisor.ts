/**
 * The job supervisor: runs jobs in job processes and keeps their catalog rows and the UI informed.
 *
 * Terms
 * - launcher (`JobLauncher`): starts one job process and returns a `JobProcess` handle. Three
 *   implementations: in-process (CLI, `InProcessLauncher`), child process (web host,
 *   `ChildProcessLauncher`), and the Electron utility-process adapter written in electron/main
 *   against these interfaces (fork `jobEntryPath()` with `TRESOR_JOB_PROCESS=1` in its env).
 * - outcome: how a job ended: succeeded (its `finished` result), failed (its `failed` error, or
 *   JOB_CRASHED when the process exited without a final message), cancelled.
 *
 * The supervisor creates the row (queued), claims it (running, owned by this process), sends
 * `start`, throttles progress (events at most every `progressIntervalMs`, catalog writes at most
 * every `dbIntervalMs`), batches log lines, sends `cancel` and kills the process past
 * `cancelDeadlineMs`, and records the outcome. Listeners get `SupervisorEvent`s.
 */
import { fork, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { setCaCertsAside } from './caCerts.js'
import type { Db } from '../catalog/index.js'
import { EngineError } from '../errors.js'
import type { WireError } from '../../shared/errors.js'
import type { JobOutcome, JobPhase, JobProgress } from '../../shared/models.js'
import { createJobHandler, DEFAULT_PIPELINES, type Pipelines } from './jobEntry.js'
import { parseFromJob, type FromJob, type JobKind, type JobProgressReport, type JobSpec, type ToJob } from './protocol.js'
import {
  appendJobLog,
  claimJob,
  createJob,
  currentOwner,
  findOrphanJobs,
  finishJob,
  getJob,
  updateJobProgress,
  type JobRecord,
} from './jobStore.js'

/** How a job process ended. */
export interface JobExit {
  code: number | null
  signal: string | null
}

/** One running job process, as the supervisor drives it. */
export interface JobProcess {
  readonly pid: number | undefined
  /** Sends a message to the job (structured-clone/JSON-safe). Must not throw once the process is gone. */
  send(message: ToJob): void
  onMessage(listener: (raw: unknown) => void): void
  /** Called once, after the process has ended (for any reason). */
  onExit(listener: (exit: JobExit) => void): void
  /** Ends the process at once (SIGKILL or equivalent). */
  kill(): void
}

export interface JobLauncher {
  readonly name: string
  launch(jobId: string): JobProcess
}

const PHASES: readonly JobPhase[] = ['queued', 'pre-script', 'snapshot', 'post-script', 'reading', 'writing', 'verifying', 'committing', 'done']

export type SupervisorEvent =
  | { type: 'progress'; progress: JobProgress }
  | { type: 'log'; jobId: string; line: string }
  | { type: 'state'; jobId: string; state: JobRecord['state'] }
  | { type: 'finished'; outcome: JobOutcome; result: unknown }

export interface JobSupervisorOptions {
  db: Db
  /** Data folder sent to job processes. */
  home: string
  launcher: JobLauncher
  /** Minimum interval between progress events per job. Default 250 ms. */
  progressIntervalMs?: number
  /** Minimum interval between progress writes to the catalog per job. Default 1000 ms. */
  dbIntervalMs?: number
  /** Time a job has to stop after `cancel` before its process is killed. Default 10 s. */
  cancelDeadlineMs?: number
  /** Time a process may linger after its final message before it is killed. Default 5 s. */
  exitGraceMs?: number
}

interface Active {
  jobId: string
  kind: JobKind
  proc: JobProcess
  final: Extract<FromJob, { kind: 'finished' | 'failed' }> | undefined
  ended: boolean
  exited: boolean
  cancelRequested: boolean
  timers: Set<NodeJS.Timeout>
  pendingProgress: JobProgressReport | undefined
  lastEmitAt: number
  lastDbAt: number
  emitTimer: NodeJS.Timeout | undefined
  logBuffer: string
  logTimer: NodeJS.Timeout | undefined
  startedAtMs: number
}

export class JobSupervisor {
  readonly owner = currentOwner()
  private readonly active = new Map<string, Active>()
  private readonly listeners = new Set<(e: SupervisorEvent) => void>()
  private readonly waiters = new Map<string, ((r: JobRecord) => void)[]>()
  private readonly exitWaiters = new Set<() => void>()
  private readonly progressIntervalMs: number
  private readonly dbIntervalMs: number
  private readonly cancelDeadlineMs: number
  private readonly exitGraceMs: number

  constructor(private readonly options: JobSupervisorOptions) {
    this.progressIntervalMs = options.progressIntervalMs ?? 250
    this.dbIntervalMs = options.dbIntervalMs ?? 1000
    this.cancelDeadlineMs = options.cancelDeadlineMs ?? 10_000
    this.exitGraceMs = options.exitGraceMs ?? 5_000
  }

  private get db(): Db {
    return this.options.db
  }

  /** Subscribes to events; returns the unsubscribe. */
  on(listener: (e: SupervisorEvent) => void): () => void {
    this.listeners.add(listener)
    return () => this.listeners.delete(listener)
  }

  private emit(e: SupervisorEvent): void {
    for (const l of this.listeners) {
      try {
        l(e)
      } catch {
        // a listener's failure is its own
      }
    }
  }

  /** Inserts a queued job row; returns its id. */
  create(spec: JobSpec, extra: { id?: string; machineId?: string | null; pointId?: string | null } = {}): string {
    const id = createJob(this.db, spec, extra)
    this.emit({ type: 'state', jobId: id, state: 'queued' })
    return id
  }

  /** Creates and starts a job; returns its id at once (use `wait` for the outcome). */
  submit(spec: JobSpec, extra: { machineId?: string | null; pointId?: string | null } = {}): string {
    const id = this.create(spec, extra)
    this.start(id)
    return id
  }

  /** Starts a queued job row (its stored spec). Throws NOT_FOUND / INVALID_INPUT when it cannot. */
  start(jobId: string): void {
    const row = getJob(this.db, jobId)
    if (!row) throw new EngineError('NOT_FOUND', `Job ${jobId} does not exist.`)
    if (!row.spec || row.kind === 'rebuild') throw new EngineError('INVALID_INPUT', `Job ${jobId} has nothing to run.`)
    if (!claimJob(this.db, jobId, this.owner)) {
      throw new EngineError('INVALID_INPUT', `Job ${jobId} is ${row.state}; only a queued job can start.`)
    }
    this.emit({ type: 'state', jobId, state: 'running' })
    const spec = row.spec
    let proc: JobProcess
    try {
      proc = this.options.launcher.launch(jobId)
    } catch (err) {
      this.record(jobId, { state: 'failed', error: { code: 'JOB_CRASHED', message: `The job process could not be started (${String(err)}).` } })
      return
    }
    const a: Active = {
      jobId,
      kind: spec.kind,
      proc,
      final: undefined,
      ended: false,
      exited: false,
      cancelRequested: false,
      timers: new Set(),
      pendingProgress: undefined,
      lastEmitAt: 0,
      lastDbAt: 0,
      emitTimer: undefined,
      logBuffer: '',
      logTimer: undefined,
      startedAtMs: Date.now(),
    }
    this.active.set(jobId, a)
    proc.onMessage((raw) => this.onMessage(a, raw))
    proc.onExit((exit) => this.onExit(a, exit))
    proc.send({ kind: 'start', jobId, home: this.options.home, spec })
  }

  /**
   * Requests cancellation. A queued job is cancelled at once; a running one gets `cancel` and is
   * killed if it has not ended after `cancelDeadlineMs` (its outcome is then `cancelled`).
   */
  async cancel(jobId: string): Promise<void> {
    const a = this.active.get(jobId)
    if (!a) {
      const row = getJob(this.db, jobId)
      if (!row) throw new EngineError('NOT_FOUND', `Job ${jobId} does not exist.`)
      if (row.state === 'queued') this.record(jobId, { state: 'cancelled', error: { code: 'CANCELLED', message: 'The job was cancelled before it started.' } })
      return
    }
    if (a.cancelRequested || a.ended) return
    a.cancelRequested = true
    this.bufferLog(a, 'Cancellation requested.')
    a.proc.send({ kind: 'cancel', jobId })
    this.later(a, this.cancelDeadlineMs, () => {
      if (!a.exited) {
        this.bufferLog(a, `The job did not stop within ${Math.round(this.cancelDeadlineMs / 1000)} s of the cancellation; its process was ended.`)
        a.proc.kill()
      }
    })
  }

  /** Resolves with the job's row once it has ended (at once when it already has). */
  wait(jobId: string): Promise<JobRecord> {
    const row = getJob(this.db, jobId)
    if (!row) return Promise.reject(new EngineError('NOT_FOUND', `Job ${jobId} does not exist.`))
    if (row.state !== 'queued' && row.state !== 'running') return Promise.resolve(row)
    return new Promise((resolve) => {
      const list = this.waiters.get(jobId) ?? []
      list.push(resolve)
      this.waiters.set(jobId, list)
    })
  }

  isActive(jobId: string): boolean {
    return this.active.has(jobId)
  }

  /** The pid of a running job's process (undefined in-process or when not running). */
  pidOf(jobId: string): number | undefined {
    return this.active.get(jobId)?.proc.pid
  }

  /**
   * Marks running jobs whose supervising process died (app crash, kill -9) as failed with
   * JOB_CRASHED. `keep` may spare some (the restore queue requeues its own). Returns their ids.
   */
  recoverOrphans(keep: (job: JobRecord) => boolean = () => false): string[] {
    const ids: string[] = []
    for (const job of findOrphanJobs(this.db)) {
      if (job.owner === this.owner || keep(job)) continue
      appendJobLog(this.db, job.id, 'Tresor stopped while this job was running.\n')
      this.record(job.id, { state: 'failed', error: { code: 'JOB_CRASHED', message: 'Tresor stopped while this job was running. Start it again.' } })
      ids.push(job.id)
    }
    return ids
  }

  /**
   * Starts queued jobs of `kinds` left by another process (e.g. `tresor backup --detach`), oldest
   * first, at most `limit`. Restore jobs belong to the restore queue and are never started here.
   * Returns the ids started.
   */
  startQueued(options: { kinds?: JobKind[]; limit?: number } = {}): string[] {
    const kinds = (options.kinds ?? ['backup', 'verify', 'prune']).filter((k) => k !== 'restore')
    if (kinds.length === 0) return []
    const rows = this.db
      .prepare(
        `SELECT id FROM jobs WHERE state = 'queued' AND spec IS NOT NULL AND kind IN (${kinds.map(() => '?').join(',')})
           AND id NOT IN (SELECT job_id FROM restore_queue WHERE job_id IS NOT NULL)
         ORDER BY created_at, rowid LIMIT ?`,
      )
      .all(...kinds, Math.max(1, options.limit ?? 100)) as { id: string }[]
    const started: string[] = []
    for (const { id } of rows) {
      try {
        this.start(id)
        started.push(id)
      } catch {
        // claimed by another process meanwhile
      }
    }
    return started
  }

  /** Resolves once every job this supervisor runs has ended (without cancelling any). */
  async drain(): Promise<void> {
    while (this.active.size > 0) {
      await new Promise<void>((resolve) => this.exitWaiters.add(resolve))
    }
  }

  /** Cancels every running job and waits for them to end (at most the cancel deadline plus grace). */
  async dispose(): Promise<void> {
    const ids = [...this.active.keys()]
    await Promise.all(ids.map((id) => this.cancel(id)))
    await Promise.all(ids.map((id) => this.wait(id)))
    await this.drain()
  }

  private later(a: Active, ms: number, fn: () => void): void {
    const t = setTimeout(() => {
      a.timers.delete(t)
      fn()
    }, ms)
    a.timers.add(t)
  }

  private onMessage(a: Active, raw: unknown): void {
    if (a.ended) return
    const parsed = parseFromJob(raw)
    if (!parsed.ok) {
      this.bufferLog(a, `Ignored a malformed report from the job process: ${parsed.error.message}`)
      return
    }
    const m = parsed.message
    if (m.jobId !== a.jobId) {
      this.bufferLog(a, `Ignored a report for another job (${m.jobId}).`)
      return
    }
    switch (m.kind) {
      case 'progress':
        a.pendingProgress = m.progress
        this.scheduleProgress(a)
        break
      case 'log':
        this.bufferLog(a, m.line)
        this.emit({ type: 'log', jobId: a.jobId, line: m.line })
        break
      case 'finished':
      case 'failed':
        a.final = m
        this.end(a)
        // The process should exit by itself now; do not let it linger.
        this.later(a, this.exitGraceMs, () => {
          if (!a.exited) a.proc.kill()
        })
        break
    }
  }

  private onExit(a: Active, exit: JobExit): void {
    if (a.exited) return
    a.exited = true
    if (!a.ended) {
      if (a.cancelRequested) {
        a.final = { kind: 'failed', jobId: a.jobId, error: { code: 'CANCELLED', message: 'The job was cancelled.' } }
      } else {
        const how = exit.signal ? `was ended by signal ${exit.signal}` : `exited with code ${String(exit.code)}`
        this.bufferLog(a, `The job process ${how} without reporting an outcome.`)
        a.final = {
          kind: 'failed',
          jobId: a.jobId,
          error: { code: 'JOB_CRASHED', message: `The job stopped unexpectedly (its process ${how}). Nothing was committed; start it again.` },
        }
      }
      this.end(a)
    }
    for (const t of a.timers) clearTimeout(t)
    a.timers.clear()
    this.active.delete(a.jobId)
    const exitWaiters = [...this.exitWaiters]
    this.exitWaiters.clear()
    for (const w of exitWaiters) w()
  }

  private end(a: Active): void {
    if (a.ended) return
    a.ended = true
    if (a.emitTimer) clearTimeout(a.emitTimer)
    this.flushProgress(a, true)
    this.flushLog(a)
    const final = a.final!
    if (final.kind === 'finished') {
      this.record(a.jobId, { state: 'succeeded', result: final.result })
    } else {
      const error: WireError = final.error
      this.record(a.jobId, { state: error.code === 'CANCELLED' ? 'cancelled' : 'failed', error })
    }
  }

  private record(jobId: string, outcome: { state: 'succeeded' | 'failed' | 'cancelled'; error?: WireError; result?: unknown }): void {
    finishJob(this.db, jobId, outcome)
    const row = getJob(this.db, jobId)
    if (!row) return
    this.emit({ type: 'state', jobId, state: row.state })
    const result = outcome.result
    const pointId = row.kind === 'backup' && typeof (result as { pointId?: unknown } | null)?.pointId === 'string' ? (result as { pointId: string }).pointId : row.pointId
    this.emit({
      type: 'finished',
      outcome: {
        jobId,
        kind: row.kind,
        state: outcome.state,
        pointId,
        error: outcome.error ?? null,
      },
      result: result ?? null,
    })
    const list = this.waiters.get(jobId)
    this.waiters.delete(jobId)
    for (const w of list ?? []) w(row)
  }

  private scheduleProgress(a: Active): void {
    const wait = a.lastEmitAt + this.progressIntervalMs - Date.now()
    if (wait <= 0) {
      this.flushProgress(a, false)
    } else if (!a.emitTimer) {
      a.emitTimer = setTimeout(() => {
        a.emitTimer = undefined
        this.flushProgress(a, false)
      }, wait)
    }
  }

  private flushProgress(a: Active, force: boolean): void {
    const p = a.pendingProgress
    if (!p) return
    a.pendingProgress = undefined
    const now = Date.now()
    a.lastEmitAt = now
    const phase = PHASES.includes(p.phase as JobPhase) ? (p.phase as JobPhase) : a.kind === 'restore' ? 'writing' : 'reading'
    if (force || now - a.lastDbAt >= this.dbIntervalMs) {
      a.lastDbAt = now
      updateJobProgress(this.db, a.jobId, { bytesDone: p.bytesDone, bytesTotal: p.bytesTotal, phase })
    }
    const elapsed = (now - a.startedAtMs) / 1000
    const reportedRate = typeof p.bytesPerSecond === 'number' && p.bytesPerSecond >= 0 ? p.bytesPerSecond : undefined
    const rate = reportedRate ?? (elapsed > 0 ? p.bytesDone / elapsed : 0)
    const reportedEta = p.etaSeconds === null || (typeof p.etaSeconds === 'number' && p.etaSeconds >= 0) ? p.etaSeconds : undefined
    const eta = reportedEta !== undefined ? reportedEta : rate > 0 ? Math.max(0, (p.bytesTotal - p.bytesDone) / rate) : null
    this.emit({
      type: 'progress',
      progress: {
        jobId: a.jobId,
        kind: a.kind,
        phase,
        bytesDone: Math.max(0, Math.round(p.bytesDone)),
        bytesTotal: Math.max(0, Math.round(p.bytesTotal)),
        bytesPerSecond: Math.max(0, rate),
        etaSeconds: eta,
        currentDisk: currentDiskOf(p),
      },
    })
  }

  private bufferLog(a: Active, line: string): void {
    a.logBuffer += `${new Date().toISOString()} ${line}\n`
    if (a.ended) {
      this.flushLog(a)
      return
    }
    a.logTimer ??= setTimeout(() => {
      a.logTimer = undefined
      this.flushLog(a)
    }, 500)
  }

  private flushLog(a: Active): void {
    if (a.logTimer) clearTimeout(a.logTimer)
    a.logTimer = undefined
    const text = a.logBuffer
    a.logBuffer = ''
    appendJobLog(this.db, a.jobId, text)
  }
}

function currentDiskOf(p: JobProgressReport): string | null {
  if (typeof p.currentDisk === 'string') return p.currentDisk
  if (Array.isArray(p.disks)) {
    const busy = (p.disks as { name?: unknown; state?: unknown }[]).find((d) => d.state === 'reading' || d.state === 'snapshot')
    if (busy && typeof busy.name === 'string') return busy.name
  }
  return null
}

/**
 * Runs jobs in this process (the CLI). Messages cross a structured clone, as they would between
 * processes; `kill()` aborts the job (a pipeline cannot be killed in-process) and reports the exit.
 */
export class InProcessLauncher implements JobLauncher {
  readonly name = 'in-process'
  constructor(private readonly pipelines: Pipelines = DEFAULT_PIPELINES) {}

  launch(): JobProcess {
    const messageListeners: ((raw: unknown) => void)[] = []
    const exitListeners: ((e: JobExit) => void)[] = []
    let exited = false
    const exit = (e: JobExit): void => {
      if (exited) return
      exited = true
      setImmediate(() => exitListeners.forEach((l) => l(e)))
    }
    const handler = createJobHandler(
      { send: (m) => {
        const copy = structuredClone(m)
        queueMicrotask(() => messageListeners.forEach((l) => l(copy)))
      } },
      this.pipelines,
    )
    handler.done.then(() => exit({ code: 0, signal: null })).catch(() => undefined) // done never rejects
    return {
      pid: undefined,
      send: (m) => {
        const copy = structuredClone(m)
        queueMicrotask(() => handler.receive(copy))
      },
      onMessage: (l) => void messageListeners.push(l),
      onExit: (l) => void exitListeners.push(l),
      kill: () => {
        handler.abort()
        exit({ code: null, signal: 'SIGKILL' })
      },
    }
  }
}

/**
 * The job entry file to fork: jobEntry.js beside this module when running from the build (in
 * dist/electron, or the CLI's bundle in dist/cli, where it is an entry point: scripts/build.mjs), or
 * jobEntry.ts (run through tsx) when running from the TypeScript sources.
 */
export function jobEntryPath(): { path: string; fromSources: boolean } {
  const here = fileURLToPath(import.meta.url)
  const fromSources = here.endsWith('.ts')
  const path = fileURLToPath(new URL(fromSources ? './jobEntry.ts' : './jobEntry.js', import.meta.url))
  return { path, fromSources }
}

export interface ChildProcessLauncherOptions {
  /** Module to fork. Default `jobEntryPath()`. A custom entry calls `runJobProcess(pipelines)`. */
  entryPath?: string
  /** Node options for the child. Default: ['--import', 'tsx'] for a .ts entry, none for .js. */
  execArgv?: string[]
  /** Environment of the child (secrets are removed). Default process.env. */
  env?: NodeJS.ProcessEnv
  /** Called with each child process right after the fork (tests watch pids). */
  onSpawn?: (child: ChildProcess, jobId: string) => void
}

const SECRET_ENV = ['TRESOR_PASSPHRASE', 'TRESOR_NEW_PASSPHRASE', 'TRESOR_RECOVERY_KEY']

/**
 * libuv's thread pool size for job processes (node's default is 4). A restore keeps pack reads,
 * its recipes' reads and the image writes in flight at once, and with 4 threads each waited for
 * the others: a format-2 restore of the bench disk took 5.75–6.27 s with 4 threads, 5.51–5.55 s
 * with 8, the same with 16 (alternating runs); full backups did not move. bin/tresor.js sets the
 * same for the CLI's own process.
 */
export const IO_THREADS = 8

/**
 * V8 options a job process starts with. A 4 MiB semi-space caps the young generation at ~12 MiB,
 * which otherwise grows to 16 MiB semi-spaces in any long job: a prune of 3 of 5 points peaked at
 * 260–267 instead of ~291 MiB and a scattered incremental ran as fast (twenty-fifth round,
 * docs/PERFORMANCE.md). V8 sizes a heap when its process starts, so this is given at start:
 * here to forked jobs, and in bin/tresor.js's first line to the command (test/unit/cli/nodeFlags.test.ts
 * checks that both say the same). Electron's utility processes do not get it yet: their launcher
 * cannot be run where the Electron binary is missing, so the option would go there untested.
 */
export const JOB_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=4']

/**
 * glibc's malloc arenas a Tresor process may use (MALLOC_ARENA_MAX), unless its environment says
 * otherwise. By default glibc gives busy threads arenas of their own, up to eight per core, and a
 * job has a dozen threads that allocate (its own, the chunk workers, libuv's pool, V8's); each
 * arena keeps memory it freed. A full backup of 6.2 GB of real files peaked at 293 MiB on average
 * with 2 arenas (285–298, five runs) against 306 MiB (295–312, seven runs), in the same time
 * (twenty-sixth round, docs/PERFORMANCE.md). glibc reads it when a process starts: forked jobs and
 * Electron's utility processes get it from `jobEnv`, the `tresor` command from bin/tresor.js's
 * first line.
 */
export const MALLOC_ARENAS = '2'

/**
 * The environment a job process starts with: `base` with the thread pool's size (IO_THREADS) and
 * the malloc arenas (MALLOC_ARENAS) where it does not set them, marked as a job process, without
 * secrets (a job gets its key over the protocol, never from its environment), and with
 * NODE_EXTRA_CA_CERTS set aside until the job runs (caCerts.ts: node would parse the certificates
 * at start, ~55 ms, for nothing).
 */
export function jobEnv(base: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    ...setCaCertsAside(base),
    UV_THREADPOOL_SIZE: base.UV_THREADPOOL_SIZE ?? String(IO_THREADS),
    MALLOC_ARENA_MAX: base.MALLOC_ARENA_MAX ?? MALLOC_ARENAS,
    TRESOR_JOB_PROCESS: '1',
  }
  for (const name of SECRET_ENV) delete env[name]
  return env
}

/** Runs each job in a child process (`child_process.fork`), as the web host does. */
export class ChildProcessLauncher implements JobLauncher {
  readonly name = 'child-process'
  constructor(private readonly options: ChildProcessLauncherOptions = {}) {}

  launch(jobId: string): JobProcess {
    const entry = this.options.entryPath ?? jobEntryPath().path
    if (!existsSync(entry)) throw new Error(`job entry ${entry} is missing`)
    const execArgv = this.options.execArgv ?? [...JOB_NODE_FLAGS, ...(entry.endsWith('.ts') ? ['--import', 'tsx'] : [])]
    const env = jobEnv(this.options.env ?? process.env)
    const child = fork(entry, [], { execArgv, env, stdio: ['ignore', 'inherit', 'inherit', 'ipc'], serialization: 'advanced' })
    this.options.onSpawn?.(child, jobId)
    const exitListeners: ((e: JobExit) => void)[] = []
    let exitInfo: JobExit | undefined
    child.on('exit', (code, signal) => {
      exitInfo = { code, signal }
      // Let messages already received be delivered first.
      setImmediate(() => exitListeners.forEach((l) => l(exitInfo!)))
    })
    child.on('error', () => {
      // spawn failures surface as an exit; send failures are ignored (the exit follows)
    })
    return {
      pid: child.pid,
      send: (m) => {
        if (child.connected) child.send(m, (err) => void err)
      },
      onMessage: (l) => void child.on('message', (raw) => l(raw)),
      onExit: (l) => {
        if (exitInfo) setImmediate(() => l(exitInfo!))
        else exitListeners.push(l)
      },
      kill: () => {
        if (exitInfo === undefined) child.kill('SIGKILL')
      },
    }
  }
}
