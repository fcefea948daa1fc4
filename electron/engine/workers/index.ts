/**
 * Workers: where jobs run and how they talk to their host.
 *
 * Terms
 * - job: one backup, restore, verify or prune run, with a row in the catalog's `jobs` table
 *   (queued → running → succeeded / failed / cancelled; progress, byte counts, log, result).
 * - job process: the process a job runs in — an Electron utility process, a child process of the
 *   web host, or the CLI itself. One job entry module (`jobEntry.ts`) serves all three.
 * - protocol: `ToJob` (start, cancel) and `FromJob` (progress, log, finished, failed) messages,
 *   discriminated on `kind` and validated with zod on receipt (`protocol.ts`).
 * - supervisor: the host side (`JobSupervisor`): job rows, launching through a `JobLauncher`,
 *   throttled progress events, cancel deadline, JOB_CRASHED for a process that exits without an
 *   outcome, orphan recovery after a restart.
 * - worker pool: the `worker_threads` pool a job process spreads CPU work over (`pool.ts`).
 */
export * from './protocol.js'
export { createJobHandler, runJobProcess, DEFAULT_PIPELINES, type JobHandler, type JobPort, type Pipeline, type Pipelines, type PipelineEnv } from './jobEntry.js'
export {
  JobSupervisor,
  InProcessLauncher,
  ChildProcessLauncher,
  jobEntryPath,
  type JobLauncher,
  type JobProcess,
  type JobExit,
  type SupervisorEvent,
  type JobSupervisorOptions,
  type ChildProcessLauncherOptions,
} from './supervisor.js'
export {
  createJob,
  getJob,
  listJobs,
  finishJob,
  currentOwner,
  isOwnerAlive,
  TERMINAL_STATES,
  type JobRecord,
  type JobState,
} from './jobStore.js'
export { WorkerPool, serveTasks, type WorkerPoolOptions, type TaskReply } from './pool.js'
