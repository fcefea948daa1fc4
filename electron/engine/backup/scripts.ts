/**
 * Pre- and post-scripts (freeze / thaw hooks). A script is a program and its arguments — never a
 * shell command line: it is started with `spawn` and `shell: false`, so spaces, `;` or `$` in paths
 * and arguments are plain characters. Each runs in its own process group with a timeout; past the
 * timeout the whole group gets SIGTERM, then SIGKILL after a grace period. Output (stdout and stderr)
 * goes to the job log, bounded: the first and last `maxOutputBytes / 2` bytes are kept, the middle
 * is counted. Secrets (passphrases, tokens, keys) are removed from the script's environment.
 */
import { spawn } from 'node:child_process'

export interface ScriptSpec {
  /** Absolute path of the program to run. */
  path: string
  args?: string[]
  /** Default 5 minutes. */
  timeoutMs?: number
  cwd?: string
}

export interface ScriptOutcome {
  ok: boolean
  exitCode: number | null
  /** Signal that ended the script (after a timeout: the one we sent). */
  signal: NodeJS.Signals | null
  timedOut: boolean
  durationMs: number
  /** Bytes of output the script wrote (all of it, also what the log left out). */
  outputBytes: number
  /** Why it could not run (e.g. the file does not exist), when it did not start. */
  error?: string
}

export interface RunScriptOptions {
  /** Extra variables for the script (TRESOR_PHASE, TRESOR_MACHINE...). */
  env?: Record<string, string>
  /** Receives each output line, prefixed by `label`. */
  log(line: string): void
  label: string
  signal?: AbortSignal
  /** Default 64 KiB. */
  maxOutputBytes?: number
  /** Time between SIGTERM and SIGKILL of the process group. Default 2 s. */
  killGraceMs?: number
}

export const DEFAULT_SCRIPT_TIMEOUT_MS = 5 * 60_000
const SECRET_NAME = /PASS(WORD|PHRASE)?|SECRET|TOKEN|CREDENTIAL|PRIVATE|(^|_)KEY($|_)|API_?KEY/i

/** The environment a script sees: ours without anything that looks like a secret, plus `extra`. */
export function scriptEnvironment(extra: Record<string, string> = {}, base: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const env: Record<string, string> = {}
  for (const [k, v] of Object.entries(base)) {
    if (v === undefined || SECRET_NAME.test(k)) continue
    env[k] = v
  }
  return { ...env, ...extra }
}

/** Keeps the head and tail of a stream of output and hands complete lines to `emit`. */
class BoundedLog {
  private headLeft: number
  private tail: Buffer[] = []
  private tailBytes = 0
  private omitted = 0
  private partial = ''
  total = 0
  constructor(private readonly max: number, private readonly emit: (line: string) => void) {
    this.headLeft = Math.floor(max / 2)
  }
  push(chunk: Buffer): void {
    this.total += chunk.length
    if (this.headLeft > 0) {
      const take = chunk.subarray(0, this.headLeft)
      this.headLeft -= take.length
      this.lines(take.toString('utf8'))
      chunk = chunk.subarray(take.length)
      if (this.headLeft === 0) this.flushPartial()
    }
    if (chunk.length === 0) return
    this.tail.push(chunk)
    this.tailBytes += chunk.length
    const keep = this.max - Math.floor(this.max / 2)
    while (this.tailBytes - (this.tail[0]?.length ?? 0) >= keep && this.tail.length > 1) {
      const dropped = this.tail.shift()!
      this.tailBytes -= dropped.length
      this.omitted += dropped.length
    }
  }
  private lines(s: string): void {
    const parts = (this.partial + s).split(/\r?\n/)
    this.partial = parts.pop() ?? ''
    for (const p of parts) this.emit(p)
  }
  private flushPartial(): void {
    if (this.partial.length > 0) this.emit(this.partial)
    this.partial = ''
  }
  end(): void {
    this.flushPartial()
    if (this.tail.length === 0) return
    let buf = Buffer.concat(this.tail)
    const keep = this.max - Math.floor(this.max / 2)
    if (buf.length > keep) {
      this.omitted += buf.length - keep
      buf = buf.subarray(buf.length - keep)
    }
    if (this.omitted > 0) this.emit(`… ${this.omitted} bytes of output omitted …`)
    this.lines(buf.toString('utf8'))
    this.flushPartial()
  }
}

/**
 * Runs a script and resolves with its outcome (never rejects). `ok` is true when it exited 0 within
 * its timeout. Aborting `options.signal` kills the process group like a timeout.
 */
export function runScript(spec: ScriptSpec, options: RunScriptOptions): Promise<ScriptOutcome> {
  const timeoutMs = spec.timeoutMs ?? DEFAULT_SCRIPT_TIMEOUT_MS
  const grace = options.killGraceMs ?? 2000
  const started = Date.now()
  const log = new BoundedLog(options.maxOutputBytes ?? 64 * 1024, (line) => options.log(`${options.label} ${line}`))
  return new Promise<ScriptOutcome>((resolvePromise) => {
    let settled = false
    let timedOut = false
    let killTimer: NodeJS.Timeout | undefined
    const child = spawn(spec.path, spec.args ?? [], {
      shell: false,
      detached: process.platform !== 'win32', // own process group, so a timeout kills its children too
      stdio: ['ignore', 'pipe', 'pipe'],
      cwd: spec.cwd,
      env: scriptEnvironment(options.env),
      windowsHide: true,
    })
    const killGroup = (sig: NodeJS.Signals): void => {
      try {
        if (child.pid !== undefined && process.platform !== 'win32') process.kill(-child.pid, sig)
        else child.kill(sig)
      } catch { /* already gone */ }
    }
    const stop = (): void => {
      if (settled) return
      killGroup('SIGTERM')
      killTimer = setTimeout(() => killGroup('SIGKILL'), grace)
      killTimer.unref()
    }
    const timer = setTimeout(() => { timedOut = true; options.log(`${options.label} timed out after ${timeoutMs} ms: stopping it`); stop() }, timeoutMs)
    const onAbort = (): void => { options.log(`${options.label} cancelled: stopping it`); stop() }
    options.signal?.addEventListener('abort', onAbort, { once: true })
    child.stdout?.on('data', (c: Buffer) => log.push(c))
    child.stderr?.on('data', (c: Buffer) => log.push(c))
    const finish = (outcome: Omit<ScriptOutcome, 'durationMs' | 'outputBytes' | 'timedOut'>): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      options.signal?.removeEventListener('abort', onAbort)
      // Whatever is left in the group (a child that ignored SIGTERM, a grandchild) goes now.
      if (timedOut || options.signal?.aborted) { killGroup('SIGKILL'); if (killTimer) clearTimeout(killTimer) }
      log.end()
      resolvePromise({ ...outcome, timedOut, durationMs: Date.now() - started, outputBytes: log.total })
    }
    child.on('error', (err) => {
      finish({ ok: false, exitCode: null, signal: null, error: `${spec.path} could not be started: ${err.message}` })
    })
    child.on('exit', (code, sig) => {
      // Give the pipes a moment to drain; a grandchild holding them open must not hold us.
      const done = (): void => finish({ ok: code === 0 && !timedOut && !options.signal?.aborted, exitCode: code, signal: sig })
      let closed = false
      child.once('close', () => { closed = true; done() })
      setTimeout(() => {
        if (closed) return
        child.stdout?.destroy()
        child.stderr?.destroy()
        done()
      }, 250).unref()
    })
  })
}

/** A one-line description of an outcome for the job log. */
export function describeOutcome(label: string, o: ScriptOutcome): string {
  if (o.error) return `${label} failed: ${o.error}`
  if (o.timedOut) return `${label} timed out after ${o.durationMs} ms and was killed`
  if (o.ok) return `${label} succeeded in ${o.durationMs} ms`
  return `${label} failed: ${o.signal ? `killed by ${o.signal}` : `exit code ${o.exitCode}`}`
}
