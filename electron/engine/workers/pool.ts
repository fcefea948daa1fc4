/**
 * A generic `worker_threads` pool for CPU work (hashing, compression, encryption).
 *
 * Terms
 * - task module: an ES module that calls `serveTasks(handler)`; each worker loads it once.
 * - task: a structured-clone message; large byte arrays travel as transferables (ArrayBuffers
 *   moved, not copied — never serialized arrays). The handler returns `{ value, transfer }` so
 *   buffers travel back the same way and can be reused by the caller.
 *
 * Contract
 * - At most `size` tasks run at once (one per worker); at most `maxQueue` more wait. `submit`
 *   resolves once the task is accepted (queue space), giving the result promise: a caller awaiting
 *   `submit` in a loop is back-pressured. `run` = submit + await the result.
 * - A worker is sent up to `ahead` tasks (default 2): it runs them one after the other, so it starts
 *   its next task the moment it replies instead of waiting for this thread to take the reply and
 *   post another (this thread may be busy reading or copying: workers sat idle a fifth of a backup).
 *   Tasks go to the worker with the fewest outstanding, so a second one is only sent ahead when
 *   every worker has one.
 * - A task that throws rejects its promise (EngineError code and message preserved); a worker
 *   that dies rejects the tasks sent to it with INTERNAL and is replaced.
 * - `dispose()` rejects queued tasks with CANCELLED, terminates the workers and is idempotent.
 * - With `inline`, tasks run on the caller's thread, one at a time, until the first worker has
 *   loaded its task module: a worker takes ~0.2 s to start, and a small incremental backup's whole
 *   sealing work is shorter than that.
 * - Task modules written in TypeScript (`.ts`, tests and source checkouts) are bundled on first use
 *   (see bootstrapFor).
 * - Spare workers (`prewarmWorkers`): a command that will need a pool can start its workers before
 *   it knows their configuration (a vault's keys come late: the keychain, or scrypt). They load
 *   their task module on another core meanwhile; the first pool of that module adopts them and
 *   sends the configuration as their first message. Task modules served with
 *   `serveConfiguredTasks` can be spares; `releaseSpareWorkers` ends those no pool took.
 * - Narrowed (`narrow`): tasks go to the first worker only, and one more worker takes tasks each
 *   time tasks have kept waiting for `growAfterMs` (looked at whenever a task is submitted or
 *   answered, which a busy pool does every few milliseconds). For work that is mostly not the
 *   workers': an incremental backup of a 1 % change sealed faster on one chunk worker than on two
 *   (the second competed for the cores with the thread reading the disk; docs/PERFORMANCE.md,
 *   twenty-ninth round), while a large change still gets them all. Every worker is started.
 */
import { Worker, parentPort, workerData as thisWorkerData, type Transferable } from 'node:worker_threads'
import { availableParallelism } from 'node:os'
import { fileURLToPath } from 'node:url'
import { createRequire } from 'node:module'
import { createHash } from 'node:crypto'
import { mkdirSync, renameSync, writeFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { EngineError } from '../errors.js'
import { isErrorCode } from '../../shared/errors.js'

export interface WorkerPoolOptions<T = unknown, R = unknown> {
  /** Number of workers (default: available parallelism). */
  size?: number
  /** Tasks allowed to wait beyond the running ones (default 2 × size). */
  maxQueue?: number
  /** Tasks sent to one worker at a time, run in order (default 2; 1 = send the next on reply). */
  ahead?: number
  /** Passed to every worker as `workerData` (structured clone). */
  workerData?: unknown
  /** For error messages and thread names. */
  name?: string
  /**
   * The task module's handler for the caller's thread (loaded on first use), run while no worker
   * has started yet; tasks then go to the workers only.
   */
  inline?: () => Promise<TaskHandler<T, R>>
}

export type TaskHandler<T, R> = (task: T) => TaskReply<R> | Promise<TaskReply<R>>

export interface TaskReply<R> {
  value: R
  transfer?: Transferable[]
}

interface Pending<T, R> {
  task: T
  transfer: Transferable[]
  resolve: (value: R) => void
  reject: (err: unknown) => void
}

interface Slot<T, R> {
  worker: Worker
  /** Tasks sent to this worker and not answered yet, oldest first (the first is running). */
  running: Array<Pending<T, R> & { id: number }>
  /** Settles once the task module has loaded (its `serveTasks` ran) or the worker is gone. */
  ready: Promise<void>
  /** True once the task module has loaded. */
  started: boolean
}

type WireReply =
  | { id: number; ok: true; value: unknown }
  | { id: number; ok: false; error: { code?: string; message: string; userMessage?: string } }
  | { ready: true }

/**
 * How long `dispose` waits for a worker still loading its task module before terminating it.
 * Terminating a thread while a native addon initialises makes the addon's init fail, and some
 * addons abort the whole process then (seen with @ronomon/crypto-async: a pool disposed right after
 * it was created, by a backup that found nothing to read).
 */
const READY_WAIT_MS = 10_000

/**
 * How a worker loads its task module. Compiled `.js` modules load directly. A `.ts` module (tests,
 * source checkouts) is bundled once per process with esbuild (a tsx/vite dependency; packages stay
 * external) into node_modules/.cache, so each worker starts as plain JS instead of paying tsx's
 * loader start-up per thread; without esbuild, tsx is registered inside the worker.
 */
const bundled = new Map<string, string>()

function bootstrapFor(moduleUrl: string): { code: string; eval: boolean } {
  if (!moduleUrl.endsWith('.ts')) return { code: fileURLToPath(moduleUrl), eval: false }
  const bundle = bundled.get(moduleUrl) ?? bundleTs(moduleUrl)
  if (bundle) {
    bundled.set(moduleUrl, bundle)
    return { code: bundle, eval: false }
  }
  const tsxApi = import.meta.resolve('tsx/esm/api')
  return {
    code: `import(${JSON.stringify(tsxApi)}).then((m) => { m.register(); return import(${JSON.stringify(moduleUrl)}) })`,
    eval: true,
  }
}

function bundleTs(moduleUrl: string): string | undefined {
  try {
    const require = createRequire(import.meta.url)
    const esbuild = require('esbuild') as { buildSync(o: Record<string, unknown>): { outputFiles?: Array<{ contents: Uint8Array }> } }
    const nodeModules = dirname(dirname(require.resolve('esbuild/package.json')))
    const out = esbuild.buildSync({
      entryPoints: [fileURLToPath(moduleUrl)],
      bundle: true,
      platform: 'node',
      format: 'esm',
      packages: 'external',
      write: false,
      logLevel: 'silent',
    }).outputFiles?.[0]?.contents
    if (!out) return undefined
    const dir = join(nodeModules, '.cache', 'tresor-workers')
    mkdirSync(dir, { recursive: true })
    const file = join(dir, `${createHash('sha256').update(out).digest('hex').slice(0, 16)}.mjs`)
    const tmp = `${file}.${process.pid}.${Math.random().toString(16).slice(2)}.tmp`
    writeFileSync(tmp, out)
    renameSync(tmp, file)
    return file
  } catch {
    return undefined
  }
}

/** A worker thread running the task module at `moduleUrl`; it does not keep the process alive. */
function startWorker(moduleUrl: string, workerData: unknown, name: string): Worker {
  const boot = bootstrapFor(moduleUrl)
  const worker = new Worker(boot.code, { eval: boot.eval, workerData, name })
  worker.unref()
  return worker
}

export class WorkerPool<T, R> {
  readonly size: number
  private readonly maxQueue: number
  private readonly ahead: number
  private readonly slots: Slot<T, R>[] = []
  private readonly queue: Pending<T, R>[] = []
  private readonly spaceWaiters: Array<() => void> = []
  private nextId = 1
  private disposed = false
  /** The inline handler (options.inline), loaded on first use, and whether a task runs inline now. */
  private inlineHandler: Promise<TaskHandler<T, R>> | undefined
  private inlineBusy = false
  private inlineUnavailable = false
  /** Workers that take tasks now: all, or fewer while narrowed (`narrow`). */
  private active: number
  /** Narrowing holds not yet released, and how long tasks wait before one more worker takes them. */
  private narrowHolds = 0
  private growAfterMs = 0
  /** When tasks began to wait for the active workers (performance.now()), or -1. */
  private waitingSince = -1

  constructor(
    private readonly moduleUrl: URL | string,
    private readonly options: WorkerPoolOptions<T, R> = {},
  ) {
    this.size = Math.max(1, options.size ?? availableParallelism())
    this.maxQueue = Math.max(0, options.maxQueue ?? 2 * this.size)
    this.ahead = Math.max(1, Math.floor(options.ahead ?? 2))
    this.active = this.size
    for (let i = 0; i < this.size; i++) this.slots.push(this.spawn())
  }

  /**
   * Sends tasks to the first worker only until tasks have waited `growAfterMs` for it, then to one
   * more, and so on (each grown worker stays). Returns the release: once every hold is released the
   * pool uses all its workers again.
   */
  narrow(growAfterMs: number): () => void {
    if (this.narrowHolds++ === 0) {
      this.active = 1
      this.waitingSince = -1
    }
    this.growAfterMs = Math.max(0, growAfterMs)
    let released = false
    return () => {
      if (released) return
      released = true
      if (--this.narrowHolds === 0) {
        this.active = this.size
        if (!this.disposed) this.pump()
      }
    }
  }

  /** Workers that take tasks now (`narrow`). */
  get activeWorkers(): number {
    return this.active
  }

  private spawn(): Slot<T, R> {
    const spare = takeSpare(String(this.moduleUrl))
    let worker: Worker
    if (spare) {
      worker = spare.worker
      // the first message a spare reads; tasks sent after it are served with this configuration
      worker.postMessage({ configure: this.options.workerData })
    } else {
      worker = startWorker(String(this.moduleUrl), this.options.workerData, this.options.name ?? 'tresor-worker')
    }
    let markReady!: () => void
    const slot: Slot<T, R> = { worker, running: [], ready: new Promise<void>((r) => (markReady = r)), started: spare?.loaded ?? false }
    if (slot.started) markReady()
    worker.on('message', (msg: WireReply) => {
      if ('ready' in msg) {
        slot.started = true
        markReady()
        this.pump()
      } else this.onReply(slot, msg)
    })
    worker.on('error', (err) => {
      markReady()
      this.onDeath(slot, err)
    })
    worker.on('exit', (code) => {
      markReady()
      if (!this.disposed) this.onDeath(slot, new Error(`worker exited with code ${code}`))
    })
    return slot
  }

  private onReply(slot: Slot<T, R>, msg: Exclude<WireReply, { ready: true }>): void {
    const at = slot.running.findIndex((j) => j.id === msg.id)
    if (at < 0) return
    const job = slot.running.splice(at, 1)[0]!
    if (msg.ok) job.resolve(msg.value as R)
    else job.reject(reviveError(msg.error, this.options.name))
    this.pump()
  }

  private onDeath(slot: Slot<T, R>, err: unknown): void {
    const idx = this.slots.indexOf(slot)
    if (idx < 0) return
    const jobs = slot.running.splice(0)
    void slot.worker.terminate().catch(() => undefined)
    for (const job of jobs) job.reject(new EngineError('INTERNAL', `A ${this.options.name ?? 'worker'} thread failed: ${(err as Error)?.message ?? String(err)}`, { cause: err }))
    if (this.disposed) return
    this.slots[idx] = this.spawn()
    this.pump()
  }

  private pump(): void {
    if (this.options.inline && !this.inlineUnavailable && !this.slots.some((s) => s.started)) {
      this.runInline()
    } else {
      this.dispatch()
      if (this.active < this.size) this.growIfWaiting()
    }
    while (this.spaceWaiters.length > 0 && this.hasSpace()) this.spaceWaiters.shift()!()
  }

  /** Narrowed: one more worker takes tasks once tasks have kept waiting for `growAfterMs`. */
  private growIfWaiting(): void {
    if (this.queue.length === 0) {
      this.waitingSince = -1
      return
    }
    const now = performance.now()
    if (this.waitingSince < 0) this.waitingSince = now
    else if (now - this.waitingSince >= this.growAfterMs) {
      this.active++
      this.waitingSince = -1
      this.dispatch()
    }
  }

  /**
   * Fills every active worker to one outstanding task, then to two, …: a task waits behind another
   * only when every active worker is busy.
   */
  private dispatch(): void {
    for (let depth = 1; depth <= this.ahead && this.queue.length > 0; depth++) {
      for (let i = 0; i < this.active; i++) {
        const slot = this.slots[i]!
        if (slot.running.length >= depth || this.queue.length === 0) continue
        const job = this.queue.shift()!
        const sent = { ...job, id: this.nextId++ }
        slot.running.push(sent)
        try {
          slot.worker.postMessage({ id: sent.id, task: job.task }, job.transfer)
        } catch (err) {
          slot.running.pop()
          job.reject(err)
        }
      }
    }
  }

  /** Runs the oldest queued task on this thread (no worker has started yet). */
  private runInline(): void {
    if (this.inlineBusy || this.queue.length === 0 || !this.options.inline) return
    const job = this.queue.shift()!
    this.inlineBusy = true
    this.inlineHandler ??= this.options.inline()
    void this.inlineHandler
      .then(
        async (handler) => {
          try {
            job.resolve((await handler(job.task)).value)
          } catch (err) {
            job.reject(this.taskError(err))
          }
        },
        () => {
          // the handler does not load on this thread: this task and the next wait for a worker
          this.inlineUnavailable = true
          if (this.disposed) job.reject(new EngineError('CANCELLED', 'The worker pool was closed.'))
          else this.queue.unshift(job)
        },
      )
      .finally(() => {
        this.inlineBusy = false
        if (!this.disposed) this.pump()
      })
  }

  private hasSpace(): boolean {
    // a task sent ahead to a busy worker counts as waiting: the bound stays size + maxQueue
    const waiting = this.queue.length + this.slots.reduce((sum, s) => sum + Math.max(0, s.running.length - 1), 0)
    return waiting < this.maxQueue || (this.queue.length === 0 && this.slots.some((s) => s.running.length === 0))
  }

  /** Tasks running or queued. */
  get pending(): number {
    return this.queue.length + this.slots.reduce((sum, s) => sum + s.running.length, 0) + (this.inlineBusy ? 1 : 0)
  }

  /**
   * Enqueues `task` once there is room (back-pressure). The buffers in `transfer` are moved to the
   * worker: the caller must not touch them until they come back in the reply.
   */
  async submit(task: T, transfer: Transferable[] = []): Promise<{ result: Promise<R> }> {
    while (!this.disposed && !this.hasSpace()) await new Promise<void>((r) => this.spaceWaiters.push(r))
    if (this.disposed) throw new EngineError('CANCELLED', 'The worker pool was closed.')
    let resolve!: (v: R) => void
    let reject!: (e: unknown) => void
    const result = new Promise<R>((res, rej) => {
      resolve = res
      reject = rej
    })
    result.catch(() => undefined) // callers observe it; avoid unhandled rejections while it waits
    this.queue.push({ task, transfer, resolve, reject })
    this.pump()
    return { result }
  }

  async run(task: T, transfer: Transferable[] = []): Promise<R> {
    return (await this.submit(task, transfer)).result
  }

  /**
   * Runs `task` on this thread with the inline handler (`options.inline`), now, ahead of every
   * queued task: for small tasks that need not wait behind large ones (a format-2 restore's
   * recipes, ~20 µs of decryption a batch; most of their ~17 ms round was libuv's thread pool,
   * see IO_THREADS in supervisor.ts, but the queue hop is gone too).
   * Without an inline handler, or when it does not load, the task goes to the workers like any other.
   */
  async runHere(task: T): Promise<R> {
    if (this.disposed) throw new EngineError('CANCELLED', 'The worker pool was closed.')
    if (!this.options.inline || this.inlineUnavailable) return this.run(task)
    this.inlineHandler ??= this.options.inline()
    let handler: TaskHandler<T, R>
    try {
      handler = await this.inlineHandler
    } catch {
      this.inlineUnavailable = true
      return this.run(task)
    }
    try {
      return (await handler(task)).value
    } catch (err) {
      throw this.taskError(err)
    }
  }

  /** What a task run on this thread threw, as callers of a worker's task would see it. */
  private taskError(err: unknown): EngineError {
    return err instanceof EngineError ? err : new EngineError('INTERNAL', `A ${this.options.name ?? 'worker'} task failed: ${(err as Error)?.message ?? String(err)}`, { cause: err })
  }

  /** Rejects waiting tasks, terminates the workers. Idempotent. */
  async dispose(): Promise<void> {
    if (this.disposed) return
    this.disposed = true
    const cancelled = new EngineError('CANCELLED', 'The worker pool was closed.')
    for (const job of this.queue.splice(0)) job.reject(cancelled)
    for (const w of this.spaceWaiters.splice(0)) w()
    await Promise.all(
      this.slots.map(async (slot) => {
        for (const job of slot.running.splice(0)) job.reject(cancelled)
        let timer: NodeJS.Timeout | undefined
        await Promise.race([slot.ready, new Promise<void>((r) => (timer = setTimeout(r, READY_WAIT_MS)))])
        clearTimeout(timer)
        await slot.worker.terminate().catch(() => undefined)
      }),
    )
  }
}

function reviveError(e: { code?: string; message: string; userMessage?: string }, name?: string): Error {
  if (e.code && isErrorCode(e.code) && e.userMessage !== undefined) return new EngineError(e.code, e.userMessage)
  return new EngineError('INTERNAL', `A ${name ?? 'worker'} task failed: ${e.message}`)
}

/** The workerData of a spare (prewarmWorkers): no configuration yet, it comes as the first message. */
const SPARE_MARK = 'tresor:spare-worker'

interface Spare {
  worker: Worker
  /** True once its task module has loaded (its "ready" came). */
  loaded: boolean
  /** Settles once loaded, or once the worker is gone. */
  ready: Promise<void>
  /** Removes the spare's own listeners (a pool that adopts it adds its own). */
  detach: () => void
}

/** Spare workers by task module URL, oldest first. */
const spares = new Map<string, Spare[]>()

/**
 * Starts `count` workers of the task module at `moduleUrl` now, before any pool needs them, so that
 * they load on another core while this thread does other set-up. The first pools of that module
 * adopt them (WorkerPool's constructor); `releaseSpareWorkers` ends those left over. The module must
 * serve with `serveConfiguredTasks`. Returns the spares' thread ids.
 */
export function prewarmWorkers(moduleUrl: URL | string, count: number, name = 'tresor-worker'): number[] {
  const url = String(moduleUrl)
  const list = spares.get(url) ?? []
  spares.set(url, list)
  const ids: number[] = []
  for (let i = 0; i < count; i++) {
    const worker = startWorker(url, SPARE_MARK, name)
    let markReady!: () => void
    const onMessage = (msg: WireReply): void => {
      if ('ready' in msg) {
        spare.loaded = true
        markReady()
      }
    }
    const onGone = (): void => {
      markReady()
      const at = list.indexOf(spare)
      if (at >= 0) list.splice(at, 1)
    }
    const spare: Spare = {
      worker,
      loaded: false,
      ready: new Promise<void>((r) => (markReady = r)),
      detach: () => {
        worker.off('message', onMessage)
        worker.off('error', onGone)
        worker.off('exit', onGone)
      },
    }
    worker.on('message', onMessage)
    worker.on('error', onGone)
    worker.on('exit', onGone)
    list.push(spare)
    ids.push(worker.threadId)
  }
  return ids
}

function takeSpare(url: string): Spare | undefined {
  const spare = spares.get(url)?.shift()
  spare?.detach()
  return spare
}

/** Spare workers that no pool has taken yet. */
export function spareWorkerCount(): number {
  let n = 0
  for (const list of spares.values()) n += list.length
  return n
}

/**
 * Ends the spare workers no pool took: each may still be loading its task module (native addons
 * among it), so each is first given up to READY_WAIT_MS to finish, as `dispose` does.
 */
export async function releaseSpareWorkers(): Promise<void> {
  const all = [...spares.values()].flatMap((list) => list.splice(0))
  await Promise.all(
    all.map(async (spare) => {
      let timer: NodeJS.Timeout | undefined
      await Promise.race([spare.ready, new Promise<void>((r) => (timer = setTimeout(r, READY_WAIT_MS)))])
      clearTimeout(timer)
      // its own listeners stay: an 'error' on the way out must not go unheard
      await spare.worker.terminate().catch(() => undefined)
    }),
  )
}

/**
 * Worker side: call once from a task module. Each task is handled in order; the reply carries
 * `value` and moves `transfer` back to the caller.
 */
export function serveTasks<T, R>(handler: (task: T) => TaskReply<R> | Promise<TaskReply<R>>): void {
  serve(handler, undefined)
}

/**
 * Worker side, for task modules whose handler needs the pool's configuration (its `workerData`):
 * `make` builds the handler from it. A worker started as a spare (prewarmWorkers) gets the
 * configuration as its first message instead, from the pool that adopts it.
 */
export function serveConfiguredTasks<T, R>(make: (config: unknown) => TaskHandler<T, R>): void {
  if (thisWorkerData === SPARE_MARK) serve(undefined, make)
  else serve(make(thisWorkerData), undefined)
}

function serve<T, R>(configured: TaskHandler<T, R> | undefined, make: ((config: unknown) => TaskHandler<T, R>) | undefined): void {
  const port = parentPort
  if (!port) throw new Error('serveTasks must run inside a worker thread')
  let handler = configured
  let configError: unknown
  port.postMessage({ ready: true })
  // one task at a time, in the order sent (a pool sends a worker its next task ahead of time)
  let last: Promise<void> = Promise.resolve()
  const serveOne = async (msg: { id: number; task: T }): Promise<void> => {
    try {
      if (!handler) throw configError ?? new Error('the worker got a task before its configuration')
      const reply = await handler(msg.task)
      port.postMessage({ id: msg.id, ok: true, value: reply.value }, reply.transfer ?? [])
    } catch (err) {
      const e = err as Partial<EngineError> & Error
      port.postMessage({ id: msg.id, ok: false, error: { code: e?.code, message: e?.message ?? String(err), userMessage: e?.userMessage } })
    }
  }
  port.on('message', (msg: { id: number; task: T } | { configure: unknown }) => {
    if ('configure' in msg) {
      // a spare's configuration, from the pool that adopted it; built in order with the tasks
      if (make && !handler) {
        try {
          handler = make(msg.configure)
        } catch (err) {
          configError = err // each task then fails with it
        }
      }
      return
    }
    last = last.then(() => serveOne(msg))
  })
}
