import type { Command } from 'commander'
import type { CliContext } from '../context.js'
import { EngineError } from '../../engine/errors.js'
import type { BackupResult } from '../../engine/backup/index.js'
import { isErrorCode } from '../../shared/errors.js'
import { formatBytes } from '../format.js'
import { withChunkWorkers } from '../workers.js'

function progressLine(p: { phase: string; bytesDone: number; bytesTotal: number; bytesPerSecond: number; etaSeconds: number | null; currentDisk: string | null }): string {
  const width = 24
  const frac = p.bytesTotal > 0 ? Math.min(1, p.bytesDone / p.bytesTotal) : 0
  const filled = Math.round(frac * width)
  const bar = '#'.repeat(filled) + '.'.repeat(width - filled)
  const eta = p.etaSeconds === null ? '' : ` ETA ${Math.ceil(p.etaSeconds)}s`
  return `[${bar}] ${(frac * 100).toFixed(0).padStart(3)}% ${p.phase} ${formatBytes(p.bytesDone)}/${formatBytes(p.bytesTotal)} ${formatBytes(p.bytesPerSecond)}/s${eta}${p.currentDisk ? ` ${p.currentDisk}` : ''}`
}

/**
 * `tresor backup <machine> [--detach]` → {pointId, consistency, bytesRead, bytesNew, bytesStored, seconds};
 * `tresor points [<machine>]` → [{id, machine, createdAt, consistency, disks: [{name, virtualSize}]}].
 *
 * The backup runs as a job in this process (DESIGN.md: in-process in the CLI), through the job
 * supervisor, so it has a job row, a log and progress like any other job. `--detach` only queues the
 * job row: a running Tresor (app or `tresor serve`) picks up queued jobs; the CLI itself runs nothing.
 */
export function registerBackupCommands(program: Command, ctx: CliContext): void {
  program
    .command('backup <machine>')
    .description('back up a machine now and wait for the recovery point')
    .option('--detach', 'only queue the backup (a running Tresor app or "tresor serve" runs it) and print its job id')
    .action((ref: string, opts: { detach?: boolean }) => (opts.detach ? runBackup(ref, opts) : withChunkWorkers('backup', {}, () => runBackup(ref, opts))))

  async function runBackup(ref: string, opts: { detach?: boolean }): Promise<void> {
    const home = ctx.home()
    const [{ openCatalog }, { getMachine }, { createJob }, supervision, { LOCK_WAIT_LOG_PREFIX }] = await Promise.all([
      import('../../engine/catalog/index.js'),
      import('../../engine/backup/machines.js'),
      import('../../engine/workers/jobStore.js'),
      opts.detach ? undefined : import('../../engine/workers/supervisor.js'),
      import('../../engine/vault/locks.js'),
    ])
    const db = openCatalog(home)
    try {
      const machine = getMachine(db, ref)
      const vaultPath = ctx.vaultOverride()
      const spec = { kind: 'backup' as const, input: { machineId: machine.id, ...(vaultPath !== undefined ? { vaultPath } : {}) } }
      if (opts.detach) {
        const jobId = createJob(db, spec, { machineId: machine.id })
        ctx.print({ jobId, state: 'queued' }, `Backup of "${machine.name}" queued as job ${jobId}; a running Tresor app or "tresor serve" will run it.`)
        return
      }
      const { InProcessLauncher, JobSupervisor } = supervision!
      const supervisor = new JobSupervisor({ db, home, launcher: new InProcessLauncher(), progressIntervalMs: 200 })
      const stop = supervisor.on((e) => {
        if (e.type === 'progress') ctx.progress(progressLine(e.progress))
        // a wait for another job's vault lock would otherwise look like a hang
        if (e.type === 'log' && e.line.startsWith(LOCK_WAIT_LOG_PREFIX)) ctx.warn(e.line)
      })
      const onSigint = (): void => void supervisor.cancel(jobId).catch(() => undefined)
      const jobId = supervisor.submit(spec, { machineId: machine.id })
      process.once('SIGINT', onSigint)
      let row
      try {
        row = await supervisor.wait(jobId)
      } finally {
        process.off('SIGINT', onSigint)
        stop()
        ctx.progress('')
        if (!ctx.json() && process.stderr.isTTY) process.stderr.write('\r\x1b[2K')
      }
      if (row.state !== 'succeeded') {
        const code = row.error && isErrorCode(row.error.code) ? row.error.code : 'INTERNAL'
        throw new EngineError(code, row.error?.message ?? `The backup job ${jobId} ended ${row.state}.`)
      }
      const r = row.result as BackupResult
      const out: BackupResult = {
        pointId: r.pointId,
        consistency: r.consistency,
        bytesRead: r.bytesRead,
        bytesNew: r.bytesNew,
        bytesStored: r.bytesStored,
        seconds: r.seconds,
      }
      ctx.print(out, () =>
        `Recovery point ${out.pointId} of "${machine.name}" (${out.consistency}-consistent): read ${formatBytes(out.bytesRead)}, ` +
        `new ${formatBytes(out.bytesNew)}, stored ${formatBytes(out.bytesStored)} in ${out.seconds.toFixed(1)} s.`)
    } finally {
      db.close()
    }
  }

  program
    .command('points [machine]')
    .description('list recovery points (of one machine, or all) in the current vault')
    .action(async (ref: string | undefined) => {
      const [{ openCatalog }, { getCurrentVault, getVaultByPath }, { getMachine, listPointRows }] = await Promise.all([
        import('../../engine/catalog/index.js'),
        import('../../engine/catalog/vaults.js'),
        import('../../engine/backup/machines.js'),
      ])
      const db = openCatalog(ctx.home())
      try {
        const override = ctx.vaultOverride()
        const vault = override !== undefined ? getVaultByPath(db, override) : getCurrentVault(db)
        if (override !== undefined && !vault) {
          throw new EngineError('VAULT_NOT_FOUND', `"${override}" is not a registered vault. Register it with "tresor vault open ${override}".`)
        }
        const rows = listPointRows(db, { ...(ref !== undefined ? { machine: ref } : {}), ...(vault ? { vaultId: vault.id } : {}) })
        if (ref !== undefined && rows.length === 0) getMachine(db, ref) // MACHINE_NOT_FOUND for a typo
        const out = rows.map((r) => ({
          id: r.id,
          machine: r.machine,
          createdAt: r.createdAt,
          consistency: r.consistency,
          bytesRead: r.bytesRead,
          bytesNew: r.bytesNew,
          bytesStored: r.bytesStored,
          disks: r.disks.map((d) => ({ name: d.name, virtualSize: d.virtualSize })),
        }))
        ctx.print(out, () =>
          out.length === 0
            ? 'No recovery points yet.'
            : out.map((p) => `${p.id}  ${p.machine}  ${p.createdAt}  ${p.consistency}  ${p.disks.map((d) => `${d.name} ${formatBytes(d.virtualSize)}`).join(', ')}`).join('\n'))
      } finally {
        db.close()
      }
    })
}
