import type { Command } from 'commander'
import type { CliContext } from '../context.js'
import { usage } from '../context.js'
import { EngineError } from '../../engine/errors.js'
import type { Db } from '../../engine/catalog/index.js'
import type { JobRecord, JobState } from '../../engine/workers/jobStore.js'

/** The catalog and the job store, loaded when a jobs command runs. */
async function engine() {
  const [{ openCatalog }, jobStore] = await Promise.all([import('../../engine/catalog/index.js'), import('../../engine/workers/jobStore.js')])
  return { openCatalog, ...jobStore }
}

const STATES: readonly JobState[] = ['queued', 'running', 'succeeded', 'failed', 'cancelled']

function view(j: JobRecord) {
  return {
    id: j.id,
    kind: j.kind,
    state: j.state,
    machineId: j.machineId,
    pointId: j.pointId,
    createdAt: j.createdAt,
    startedAt: j.startedAt,
    finishedAt: j.finishedAt,
    bytesDone: j.bytesDone,
    bytesTotal: j.bytesTotal,
    phase: j.phase,
    error: j.error,
  }
}

function line(j: JobRecord): string {
  const pct = j.bytesTotal > 0 ? ` ${Math.min(100, Math.round((j.bytesDone / j.bytesTotal) * 100))}%` : ''
  const what = j.kind === 'restore' ? `point ${j.pointId ?? '?'}` : j.kind === 'backup' ? `machine ${j.machineId ?? '?'}` : ''
  const err = j.error ? `  ${j.error.code}: ${j.error.message}` : ''
  return `${j.id.slice(0, 8)}  ${j.kind.padEnd(7)}  ${j.state.padEnd(9)}${pct.padEnd(5)}  ${j.createdAt}  ${what}${err}`
}

/** `tresor jobs [--json] [--state s] [--limit n]`, `tresor jobs show <id>`, `tresor jobs cancel <id>`. */
export function registerJobsCommands(program: Command, ctx: CliContext): void {
  const jobs = program
    .command('jobs')
    .description('list recent jobs (backup, restore, verify, prune), newest first')
    .option('--state <state>', `only jobs in this state (${STATES.join('|')}); repeatable`, (v: string, prev: string[] = []) => [...prev, v])
    .option('--limit <n>', 'at most this many jobs', '50')
    .action(async (opts: { state?: string[]; limit: string }) => {
      const limit = Number(opts.limit)
      if (!Number.isInteger(limit) || limit < 1 || limit > 10_000) usage('--limit must be a whole number from 1 to 10000.')
      for (const s of opts.state ?? []) if (!(STATES as readonly string[]).includes(s)) usage(`--state must be one of ${STATES.join(', ')}.`)
      const { openCatalog, listJobs } = await engine()
      const db = openCatalog(ctx.home())
      try {
        const rows = listJobs(db, { limit, states: (opts.state ?? []) as JobState[] })
        ctx.print(rows.map(view), () => (rows.length === 0 ? 'No jobs yet.' : rows.map(line).join('\n')))
      } finally {
        db.close()
      }
    })

  jobs
    .command('show <id>')
    .description("one job with its log")
    .action(async (id: string) => {
      const { openCatalog, getJob } = await engine()
      const db = openCatalog(ctx.home())
      try {
        const job = findJob(db, getJob, id)
        ctx.print({ ...view(job), result: job.result, log: job.log }, () => `${line(job)}\n${job.log}`)
      } finally {
        db.close()
      }
    })

  jobs
    .command('cancel <id>')
    .description('cancel a queued job (a running one is cancelled where it runs: the app, or its command)')
    .action(async (id: string) => {
      const { openCatalog, getJob, finishJob, isOwnerAlive } = await engine()
      const db = openCatalog(ctx.home())
      try {
        const job = findJob(db, getJob, id)
        if (job.state === 'queued') {
          finishJob(db, job.id, { state: 'cancelled', error: { code: 'CANCELLED', message: 'The job was cancelled before it started.' } })
          db.prepare(`UPDATE restore_queue SET state = 'cancelled', finished_at = ? WHERE job_id = ? AND state = 'queued'`).run(new Date().toISOString(), job.id)
          ctx.print({ id: job.id, state: 'cancelled' }, `Job ${job.id} cancelled.`)
          return
        }
        if (job.state === 'running') {
          const where = isOwnerAlive(job.owner) ? 'Cancel it in the app or stop the command that runs it.' : 'Its process is gone; it will be marked as crashed or restarted when Tresor next starts.'
          throw new EngineError('FORBIDDEN', `Job ${job.id} is running in another process. ${where}`)
        }
        ctx.print({ id: job.id, state: job.state }, `Job ${job.id} has already ended (${job.state}).`)
      } finally {
        db.close()
      }
    })
}

function findJob(db: Db, getJob: (db: Db, id: string) => JobRecord | undefined, id: string): JobRecord {
  const exact = getJob(db, id)
  if (exact) return exact
  const rows = db.prepare(`SELECT id FROM jobs WHERE substr(id, 1, length(?)) = ? LIMIT 2`).all(id, id) as { id: string }[]
  if (rows.length === 1) return getJob(db, rows[0]!.id)!
  if (rows.length > 1) usage(`"${id}" matches several jobs; give more of its id.`)
  throw new EngineError('NOT_FOUND', `No job "${id}". List jobs with "tresor jobs".`)
}
