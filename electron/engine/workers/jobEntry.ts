/**
 * The one job entry module, used by all three hosts: an Electron utility process, a child process
 * of the web host, and the CLI (in-process). It only wires the job protocol (protocol.ts) to the
 * engine pipelines: backup → runBackupJob, restore → runRestoreJob, verify → the vault's verify
 * (result: its VerifyReport); prune → retention and the vault's prune (policy/prune.ts, the same
 * code as `tresor prune`).
 *
 * Lifecycle in a process: the host sends `start` (exactly one), maybe `cancel`; the job answers with
 * `progress` and `log` messages and ends with exactly one `finished` or `failed`, after which the
 * process exits. An unparseable message is answered with `failed` (INVALID_INPUT).
 *
 * When this file is the main module of a process started by a launcher (environment
 * `TRESOR_JOB_PROCESS=1`), it wires itself to `process.parentPort` (Electron utility process) or to
 * `process.send`/`'message'` (child_process.fork) at load time, so no message can be missed.
 */
import { EngineError, toWireError } from '../errors.js'
import { restoreExtraCaCerts } from './caCerts.js'
import { needsChunkWorkers, prewarmChunkWorkers } from '../vault/chunkWorkers.js'
import { releaseSpareWorkers } from './pool.js'
import {
  clampLogLine,
  parseToJob,
  type FromJob,
  type JobKind,
  type JobProgressReport,
} from './protocol.js'

/** What a pipeline gets from the job process (the shape of backup's `JobEnv`). */
export interface PipelineEnv {
  home: string
  signal: AbortSignal
  /** Any pipeline progress object with these members (further plain-data members are passed on). */
  onProgress(progress: { bytesDone: number; bytesTotal: number; phase?: string }): void
  log(line: string): void
}

/** One engine pipeline as the entry calls it: validated plain-data input → plain-data result. */
export type Pipeline = (input: never, env: PipelineEnv) => Promise<unknown>
export type Pipelines = Partial<Record<JobKind, Pipeline>>

/** Where a job's reports go. */
export interface JobPort {
  send(message: FromJob): void
}

export interface JobHandler {
  /** Feeds one raw message from the host (validated here). */
  receive(raw: unknown): void
  /** Aborts the running job (as a `cancel` message would). */
  abort(): void
  /** Settles once the job has sent its final message (or immediately fails to start). */
  readonly done: Promise<void>
}

export interface JobHandlerOptions {
  /** Minimum interval between progress messages (the last report before the end is always sent). Default 200 ms. */
  progressIntervalMs?: number
  /**
   * Start the vault's chunk workers as the job starts, for the kinds that seal or open chunks
   * (backup, restore, verify with readData): they load while the pipeline loads and opens the vault
   * (pool.ts prewarmWorkers). Those no vault took are ended before the job's last message. Job
   * processes do this; the CLI, which runs jobs in its own process, starts them itself.
   */
  prewarmWorkers?: boolean
}

/** The engine's pipelines, loaded lazily so a job process only loads what it runs. */
export const DEFAULT_PIPELINES: Pipelines = {
  backup: async (input, env) => {
    const { runBackupJob } = await import('../backup/index.js')
    return runBackupJob(input as { machineId: string }, env)
  },
  restore: async (input, env) => {
    const { runRestoreJob } = await import('../restore/job.js')
    return runRestoreJob(input, env)
  },
  verify: async (input, env) => {
    const { readData, vaultPath } = input as { readData?: boolean; vaultPath?: unknown }
    const [{ openCurrentVault }, { jobLockOptions }] = await Promise.all([import('../keys/index.js'), import('../vault/locks.js')])
    const session = await openCurrentVault(env.home, {
      interactive: false,
      ...(typeof vaultPath === 'string' && vaultPath !== '' ? { vaultOverride: vaultPath } : {}),
    })
    try {
      return await session.vault.verify({
        readData: readData === true,
        signal: env.signal,
        lock: jobLockOptions((l) => env.log(l)),
        onProgress: (p) => env.onProgress({ phase: 'verifying', bytesDone: p.done, bytesTotal: p.total }),
      })
    } finally {
      await session.close()
    }
  },
  prune: async (input, env) => {
    // maxUnused was checked (0..1) with the message (protocol.ts)
    const { maxUnused, vaultPath } = input as { maxUnused?: number; vaultPath?: unknown }
    const [{ openCurrentVault }, { runRetentionPrune }, { jobLockOptions }] = await Promise.all([import('../keys/index.js'), import('../policy/prune.js'), import('../vault/locks.js')])
    const session = await openCurrentVault(env.home, {
      interactive: false,
      locks: jobLockOptions((l) => env.log(l)),
      ...(typeof vaultPath === 'string' && vaultPath !== '' ? { vaultOverride: vaultPath } : {}),
    })
    try {
      const result = await runRetentionPrune(session, {
        ...(maxUnused === undefined ? {} : { maxUnused }),
        onProgress: (p) => env.onProgress({ phase: p.phase, bytesDone: p.done, bytesTotal: p.total }),
      })
      env.log(`retention removed ${result.pointsRemoved} recovery point(s); ${result.bytesFreed} bytes freed (${result.packsRepacked} pack(s) rewritten, ${result.packsDeleted} deleted)`)
      for (const f of result.clonesNotRemoved) env.log(`could not remove the instant-restore copy "${f.clonePath}" (${f.reason})`)
      return result
    } finally {
      await session.close()
    }
  },
}

/**
 * Creates the protocol handler of one job. `port.send` must not throw; messages are plain data.
 * The handler never throws: every failure becomes a `failed` message.
 */
export function createJobHandler(port: JobPort, pipelines: Pipelines = DEFAULT_PIPELINES, options: JobHandlerOptions = {}): JobHandler {
  const controller = new AbortController()
  const interval = options.progressIntervalMs ?? 200
  let started = false
  let ended = false
  let jobId = ''
  let resolveDone!: () => void
  const done = new Promise<void>((r) => (resolveDone = r))

  let pendingProgress: JobProgressReport | undefined
  let lastProgressAt = 0
  let progressTimer: NodeJS.Timeout | undefined

  const send = (message: FromJob): void => {
    if (ended) return
    try {
      port.send(message)
    } catch {
      // the host is gone; nothing else can be done from here
    }
  }
  const flushProgress = (): void => {
    if (progressTimer) clearTimeout(progressTimer)
    progressTimer = undefined
    if (!pendingProgress) return
    const progress = pendingProgress
    pendingProgress = undefined
    lastProgressAt = Date.now()
    send({ kind: 'progress', jobId, progress })
  }
  const end = (message: FromJob): void => {
    flushProgress()
    send(message)
    ended = true
    resolveDone()
  }

  const start = async (id: string, home: string, kind: JobKind, input: unknown): Promise<void> => {
    const pipeline = pipelines[kind]
    if (!pipeline) {
      end({ kind: 'failed', jobId: id, error: { code: 'UNSUPPORTED', message: `This job process cannot run ${kind} jobs.` } })
      return
    }
    const env: PipelineEnv = {
      home,
      signal: controller.signal,
      onProgress(progress) {
        if (ended) return
        pendingProgress = progress as JobProgressReport
        const wait = lastProgressAt + interval - Date.now()
        if (wait <= 0) flushProgress()
        else progressTimer ??= setTimeout(flushProgress, wait)
      },
      log(line) {
        if (ended) return
        flushProgress() // keep the order of progress and log as the pipeline produced them
        send({ kind: 'log', jobId: id, line: clampLogLine(line) })
      },
    }
    const warm = options.prewarmWorkers === true && needsChunkWorkers(kind, input)
    // spares no vault took end before the last message: the process exits right after it
    const settle = (): Promise<void> => (warm ? releaseSpareWorkers() : Promise.resolve())
    try {
      if (warm) prewarmChunkWorkers() // in the try: a worker that cannot start fails the job with a message
      const result = await pipeline(input as never, env)
      if (controller.signal.aborted) {
        // Finished anyway: the work is done, report it as such (nothing half-done is left).
        env.log('A cancellation arrived after the job had completed.')
      }
      await settle()
      end({ kind: 'finished', jobId: id, result: toPlainData(result) })
    } catch (err) {
      const error = controller.signal.aborted && !(err instanceof EngineError)
        ? { code: 'CANCELLED' as const, message: 'The job was cancelled.' }
        : toWireError(err)
      if (error.code === 'INTERNAL') env.log(`Internal error: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`)
      await settle()
      end({ kind: 'failed', jobId: id, error })
    }
  }

  return {
    done,
    abort: () => controller.abort(),
    receive(raw) {
      const parsed = parseToJob(raw)
      if (!parsed.ok) {
        const id = typeof (raw as { jobId?: unknown } | null)?.jobId === 'string' ? (raw as { jobId: string }).jobId : jobId || 'unknown'
        if (!started) {
          started = true
          jobId = id
          end({ kind: 'failed', jobId: id, error: parsed.error })
        } else {
          send({ kind: 'log', jobId, line: `Ignored a malformed message from the host: ${parsed.error.message}` })
        }
        return
      }
      const message = parsed.message
      if (message.kind === 'cancel') {
        if (started && message.jobId === jobId) controller.abort()
        return
      }
      if (started) {
        send({ kind: 'log', jobId, line: 'Ignored a second start message: a job process runs one job.' })
        return
      }
      started = true
      jobId = message.jobId
      start(message.jobId, message.home, message.spec.kind, message.spec.input).catch((err: unknown) => {
        // start reports the job's own failures; should reporting one fail, the job still ends (a
        // host waiting for `done` must not wait forever)
        end({ kind: 'failed', jobId: message.jobId, error: toWireError(err) })
      })
    },
  }
}

/** Results cross process boundaries: keep JSON-safe plain data only. */
function toPlainData(value: unknown): unknown {
  if (value === undefined) return null
  return JSON.parse(JSON.stringify(value, (_k, v: unknown) => (typeof v === 'bigint' ? Number(v) : v))) as unknown
}

/** The message port of an Electron utility process (`process.parentPort`), as far as we use it. */
interface ParentPort {
  on(event: 'message', listener: (event: { data: unknown }) => void): void
  postMessage(message: unknown): void
}

/**
 * Runs this process as a job process: wires the protocol to the parent (Electron utility process
 * or child_process.fork IPC), then exits once the job has ended and its last message is out.
 * A process whose parent disconnects aborts its job and exits.
 */
export function runJobProcess(pipelines: Pipelines = DEFAULT_PIPELINES): JobHandler {
  const parentPort = (process as unknown as { parentPort?: ParentPort }).parentPort
  let handler: JobHandler
  if (parentPort) {
    handler = createJobHandler({ send: (m) => parentPort.postMessage(m) }, pipelines, { prewarmWorkers: true })
    parentPort.on('message', (e) => handler.receive(e.data))
    handler.done.then(() => setTimeout(() => process.exit(0), 50)).catch(() => undefined) // done never rejects
  } else if (typeof process.send === 'function') {
    let lastSend: Promise<void> = Promise.resolve()
    handler = createJobHandler(
      {
        send: (m) => {
          if (!process.connected) return
          let resolve = (): void => {}
          const sent = new Promise<void>((r) => (resolve = r))
          process.send!(m, undefined, {}, () => resolve()) // a throw goes to the handler's send (the host is gone)
          lastSend = sent
        },
      },
      pipelines,
      { prewarmWorkers: true },
    )
    process.on('message', (m) => handler.receive(m))
    process.on('disconnect', () => {
      handler.abort()
      // Give the pipeline a moment to clean up its .partial / temp files, then go.
      setTimeout(() => process.exit(1), 5000).unref()
    })
    handler.done.then(async () => {
      await lastSend
      process.exit(0)
    }).catch(() => undefined) // neither done nor a send's promise rejects
  } else {
    throw new Error('runJobProcess: this process has no parent to talk to (start it with a JobLauncher).')
  }
  return handler
}

if (process.env.TRESOR_JOB_PROCESS === '1' && process.env.TRESOR_JOB_ENTRY_CUSTOM !== '1') {
  restoreExtraCaCerts() // set aside by jobEnv: the job's scripts see it again
  runJobProcess()
}
