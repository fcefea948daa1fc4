import { utilityProcess, type UtilityProcess } from 'electron'
import type { JobExit, JobLauncher, JobProcess } from '../engine/workers/supervisor.js'
import { jobEntryPath, jobEnv } from '../engine/workers/supervisor.js'

/**
 * The Electron job launcher: each job runs in its own utility process (`utilityProcess.fork` of the
 * engine's job entry), so main and the window stay responsive and a crash ends one job, not the app.
 */
export class UtilityProcessLauncher implements JobLauncher {
  readonly name = 'utility-process'
  constructor(private readonly options: { entryPath?: string; env?: NodeJS.ProcessEnv } = {}) {}

  launch(jobId: string): JobProcess {
    const entry = this.options.entryPath ?? jobEntryPath().path
    // the same environment as a forked job's: thread pool, malloc arenas, no secrets
    const env = jobEnv(this.options.env ?? process.env)
    const child: UtilityProcess = utilityProcess.fork(entry, [], {
      serviceName: `Tresor job ${jobId}`,
      env,
      stdio: 'inherit',
    })
    let exited = false
    const exitListeners: ((e: JobExit) => void)[] = []
    child.once('exit', (code) => {
      exited = true
      // Let messages already received be delivered first.
      setImmediate(() => exitListeners.forEach((l) => l({ code, signal: null })))
    })
    return {
      get pid() {
        return child.pid
      },
      send(message) {
        if (exited) return
        try {
          child.postMessage(message)
        } catch {
          // the process is gone; its exit is reported through onExit
        }
      },
      onMessage(listener) {
        child.on('message', (raw: unknown) => listener(raw))
      },
      onExit(listener) {
        if (exited) listener({ code: null, signal: null })
        else exitListeners.push(listener)
      },
      kill() {
        if (!exited) child.kill()
      },
    }
  }
}
