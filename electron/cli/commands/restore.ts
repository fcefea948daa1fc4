import { resolve, sep } from 'node:path'
import type { Command } from 'commander'
import type { CliContext } from '../context.js'
import { usage } from '../context.js'
import { EngineError } from '../../engine/errors.js'
import type { Db } from '../../engine/catalog/index.js'
import type { RestoreQueueEntry } from '../../engine/restore/index.js'
import type { RestoreJobInput } from '../../engine/workers/protocol.js'
import { WRITER_FORMATS as RESTORE_FORMATS, type WriterFormat } from '../../engine/formats/types.js'
import { withChunkWorkers } from '../workers.js'
import { formatBytes } from '../format.js'

interface RestoreOpts {
  to?: string
  disk?: string[]
  format?: string
  overwrite?: boolean
  replaceOriginal?: boolean
  verify?: boolean
  concurrency?: string
}

/** A unique point id for `given`: itself, or the only catalog point whose id starts with it. */
function resolvePointId(db: Db, given: string): string {
  const rows = db.prepare(`SELECT id FROM points WHERE id = ? OR substr(id, 1, length(?)) = ? LIMIT 3`).all(given, given, given) as { id: string }[]
  if (rows.some((r) => r.id === given)) return given
  if (rows.length === 1) return rows[0]!.id
  if (rows.length > 1) usage(`"${given}" matches several recovery points; give more of its id.`)
  return given // unknown to the catalog: the vault decides (POINT_NOT_FOUND)
}


function bar(done: number, total: number, width = 30): string {
  const f = total > 0 ? Math.min(1, done / total) : 0
  const full = Math.round(f * width)
  return `[${'#'.repeat(full)}${'.'.repeat(width - full)}] ${(f * 100).toFixed(0).padStart(3)}%`
}

/**
 * `tresor restore <point> --to <path> [--disk <name|index>]... [--format f] [--overwrite]`,
 * `tresor restore <point> --replace-original`, `tresor restore queue`.
 * Restores go through the restore queue (this process serves it until its own entry has ended).
 */
export function registerRestoreCommands(program: Command, ctx: CliContext): void {
  const restore = program
    .command('restore')
    .description('restore a recovery point (one disk to a file, or every disk into a folder) and wait')
    .argument('<point>', 'recovery point id (or a unique prefix)')
    .option('--to <path>', 'target file, or folder (an existing folder or a path ending in "/") for one file per disk')
    .option('--disk <name|index>', 'disk to restore (repeatable); default: every disk', (v: string, prev: string[] = []) => [...prev, v])
    .option('--format <format>', `image format to write: ${RESTORE_FORMATS.join('|')} (default: from the file extension, else the source format)`)
    .option('--overwrite', 'replace an existing target file (never a link or a folder)')
    .option('--replace-original', "write over the disks' original files (the machine must be shut down)")
    .option('--verify', 'read each restored image back and check it before naming it (always on with --replace-original)')
    .option('--concurrency <n>', 'restores running at once from the queue', '1')
    .action(async (point: string, opts: RestoreOpts) => {
      if (opts.format !== undefined && !(RESTORE_FORMATS as readonly string[]).includes(opts.format)) {
        usage(`--format must be one of ${RESTORE_FORMATS.join(', ')}.`)
      }
      if (opts.replaceOriginal && opts.to !== undefined) usage('Use either --to or --replace-original, not both.')
      if (!opts.replaceOriginal && opts.to === undefined) usage('Say where to restore to with --to <path> (or use --replace-original).')
      if (opts.to !== undefined && opts.to.includes('\0')) usage('The target path contains a NUL character.')
      const concurrency = Number(opts.concurrency ?? '1')
      if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 16) usage('--concurrency must be a whole number from 1 to 16.')

      // the chunk workers start loading now (../workers.ts); a restore from the snapshot tier ends them unused
      await withChunkWorkers('restore', {}, async () => {
        const home = ctx.home()
        const [{ openCatalog }, { RestoreQueue, listRestoreQueue }, { getJob }, { InProcessLauncher, JobSupervisor }] = await Promise.all([
          import('../../engine/catalog/index.js'),
          import('../../engine/restore/queue.js'),
          import('../../engine/workers/jobStore.js'),
          import('../../engine/workers/supervisor.js'),
        ])
        const db = openCatalog(home)
        const supervisor = new JobSupervisor({ db, home, launcher: new InProcessLauncher() })
        const queue = new RestoreQueue({ db, supervisor, concurrency })
        let stopProgress = (): void => undefined
        try {
          const to = opts.to === undefined ? undefined : resolve(opts.to)
          const isFolder = opts.to !== undefined && (opts.to.endsWith('/') || opts.to.endsWith(sep))
          const vaultPath = ctx.vaultOverride()
          const input: RestoreJobInput = {
            pointId: resolvePointId(db, point),
            mode: opts.replaceOriginal ? 'replace' : isFolder ? 'folder' : 'file',
            ...(to === undefined ? {} : { targetPath: to }),
            disks: (opts.disk ?? []).map((d) => (/^[0-9]+$/.test(d) ? Number(d) : d)),
            ...(opts.format === undefined ? {} : { format: opts.format as WriterFormat }),
            overwrite: opts.overwrite === true,
            ...(opts.verify ? { verify: true } : {}),
            ...(vaultPath === undefined ? {} : { vaultPath }),
          }
          queue.recover()
          const entry = queue.enqueue(input)
          const jobId = entry.jobId
          const unsubscribe = supervisor.on((e) => {
            if (e.type === 'progress' && e.progress.jobId === jobId) {
              const p = e.progress
              const disk = p.currentDisk ? ` ${p.currentDisk}` : ''
              ctx.progress(`restore${disk} ${bar(p.bytesDone, p.bytesTotal)} ${formatBytes(p.bytesDone)} / ${formatBytes(p.bytesTotal)}`)
            }
          })
          stopProgress = () => {
            unsubscribe()
            ctx.progress('')
            if (!ctx.json() && process.stderr.isTTY) process.stderr.write('\r\x1b[2K')
          }
          if (entry.state === 'queued') {
            const ahead = listRestoreQueue(db).filter((e) => e.id !== entry.id).length
            if (ahead > 0) ctx.progress(`waiting in the restore queue (${ahead} ahead)`)
          }
          // Ctrl-C cancels this restore (its .partial files are removed), not the whole queue.
          const onSigint = (): void => {
            void queue.cancel(entry.id).catch(() => undefined)
          }
          process.once('SIGINT', onSigint)
          const ended = await queue.waitFor(entry.id).finally(() => process.removeListener('SIGINT', onSigint))
          queue.stopClaiming()
          stopProgress()
          // Restores this process started for other entries finish before it exits.
          await supervisor.drain()
          const job = ended.jobId ? getJob(db, ended.jobId) : undefined
          if (ended.state !== 'succeeded' || !job) {
            const error = job?.error ?? { code: 'INTERNAL' as const, message: 'The restore did not complete.' }
            throw new EngineError(error.code, error.message)
          }
          const result = job.result as { files: string[]; bytesWritten: number; disks?: { name: string; path: string; source?: string; tierSkipped?: string }[] }
          const disks = (result.disks ?? []).map((d) => ({ name: d.name, path: d.path, source: d.source ?? 'vault', ...(d.tierSkipped === undefined ? {} : { tierSkipped: d.tierSkipped }) }))
          const fromTier = (f: string): string => {
            const d = disks.find((x) => x.path === f)
            if (d?.source === 'snapshot-tier') return '  (from the snapshot tier: instant restore)'
            return d?.tierSkipped === undefined ? '' : `  (from the vault: the snapshot-tier copy was not used, ${d.tierSkipped})`
          }
          ctx.print({ files: result.files, bytesWritten: result.bytesWritten, disks }, () =>
            [`Restored ${result.files.length} file${result.files.length === 1 ? '' : 's'} (${formatBytes(result.bytesWritten)} of data written):`, ...result.files.map((f) => `  ${f}${fromTier(f)}`)].join('\n'),
          )
        } finally {
          stopProgress()
          queue.dispose()
          db.close()
        }
      })
    })

  restore
    .command('queue')
    .description('list the restore queue')
    .option('--all', 'include ended entries')
    .action(async (opts: { all?: boolean }) => {
      const [{ openCatalog }, { listRestoreQueue }] = await Promise.all([import('../../engine/catalog/index.js'), import('../../engine/restore/queue.js')])
      const db = openCatalog(ctx.home())
      try {
        const entries = listRestoreQueue(db, { includeEnded: opts.all === true })
        ctx.print(entries.map(queueView), () => (entries.length === 0 ? 'The restore queue is empty.' : entries.map(queueLine).join('\n')))
      } finally {
        db.close()
      }
    })
}

function queueView(e: RestoreQueueEntry) {
  return { id: e.id, jobId: e.jobId, pointId: e.pointId, state: e.state, position: e.position, attempts: e.attempts, createdAt: e.createdAt, finishedAt: e.finishedAt, spec: e.spec }
}

function queueLine(e: RestoreQueueEntry): string {
  const target = e.spec.mode === 'replace' ? '(original files)' : (e.spec.targetPath ?? '')
  return `${e.id.slice(0, 8)}  ${e.state.padEnd(9)}  point ${e.pointId.slice(0, 12)}  → ${target}`
}
