/**
 * The backup job as a job process runs it: opens the world of a TRESOR_HOME (catalog, current
 * vault with its key, image opener), runs the pipeline, closes everything.
 */
import type { OpenOptions } from '../formats/types.js'
import { openCurrentVault } from '../keys/index.js'
import { jobLockOptions } from '../vault/locks.js'
import { policyForMachine } from '../policy/index.js'
import { getMachine } from './machines.js'
import { runBackup, runPendingPostScripts, type RunBackupOptions } from './pipeline.js'
import type { BackupResult, JobEnv } from './types.js'

export interface BackupJobInput {
  /** Machine id (or name). */
  machineId: string
  /** Use this vault folder instead of the current one (`--vault`). */
  vaultPath?: string
  /** Job id for the manifest labels and the log. */
  jobId?: string
}

/** See index.ts `runBackupJob`. */
export async function runBackupJob(input: BackupJobInput, env: JobEnv, extra: Pick<RunBackupOptions, 'snapshot' | 'diskConcurrency' | 'blocksInFlight' | 'progressIntervalMs'> = {}): Promise<BackupResult> {
  const opened = await openCurrentVault(env.home, {
    interactive: false,
    locks: jobLockOptions((l) => env.log(l)),
    ...(input.vaultPath !== undefined ? { vaultOverride: input.vaultPath } : {}),
  })
  try {
    const catalog = opened.catalog
    await runPendingPostScripts(catalog, env.log)
    const machine = getMachine(catalog, input.machineId)
    const policy = policyForMachine(catalog, machine.id)
    const { result } = await runBackup(machine, { vault: opened.vault, catalog, openImage: openImageLazily }, {
      ...extra,
      signal: env.signal,
      onProgress: env.onProgress,
      log: env.log,
      policy,
      labels: input.jobId !== undefined ? { job: input.jobId } : {},
    })
    await opened.recordGeneration().catch((err: unknown) => env.log(`could not record the vault generation: ${String(err)}`))
    return result
  } finally {
    await opened.close()
  }
}

/** The format modules load on the first disk that is read: a backup of unchanged disks never needs them. */
async function openImageLazily(path: string, options?: Pick<OpenOptions, 'blockingReads'>): ReturnType<typeof import('../formats/index.js').openImage> {
  const { openImage } = await import('../formats/index.js')
  return openImage(path, options)
}
