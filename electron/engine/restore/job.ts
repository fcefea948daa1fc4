/**
 * A restore job as a job process runs it: opens the vault of the data folder, runs the restore
 * pipeline, closes everything. The same function runs in a utility process, a child process or
 * in-process (CLI).
 */
import type { Db } from '../catalog/index.js'
import { createImageWriter } from '../formats/index.js'
import type { Vault } from '../vault/api.js'
import { jobLockOptions, withReadLock } from '../vault/locks.js'
import { restoreJobInputSchema, type RestoreJobInput } from '../workers/protocol.js'
import { restorePoint, type RestoreProgress, type RestoreResult, type RestoreWorld, type WriterFactory } from './pipeline.js'

/** What a restore job needs from its process (the same shape as backup's `JobEnv`). */
export interface RestoreJobEnv {
  /** TRESOR_HOME: the catalog and the current vault registration live there. */
  home: string
  signal: AbortSignal
  onProgress(progress: RestoreProgress): void
  log(line: string): void
}

/** An opened vault and how to close it. */
export interface OpenedRestoreVault {
  vault: Vault
  /** The catalog of the data folder (owned by the opener: `close()` closes it). Without it the snapshot tier is not used. */
  catalog?: Db
  close(): Promise<void>
}

export interface RestoreJobDeps {
  /** Default: `openCurrentVault(home, { vaultOverride })` of engine/keys. */
  openVault?: (home: string, vaultPath: string | undefined) => Promise<OpenedRestoreVault>
  createWriter?: WriterFactory
}

async function openDefaultVault(home: string, vaultPath: string | undefined): Promise<OpenedRestoreVault> {
  const { openCurrentVault } = await import('../keys/index.js')
  const opened = await openCurrentVault(home, vaultPath === undefined ? {} : { vaultOverride: vaultPath })
  return { vault: opened.vault as Vault, catalog: opened.catalog, close: () => opened.close() }
}

/** The snapshot-tier clones the catalog lists for a point (what `RestoreWorld.snapshotClones` wants). */
async function catalogClones(db: Db): Promise<NonNullable<RestoreWorld['snapshotClones']>> {
  const { listSnapshotClones } = await import('../backup/machines.js')
  return (pointId) => listSnapshotClones(db, { pointId })
}

/**
 * Runs one restore (see `restorePoint` for the guarantees). Input is validated here (INVALID_INPUT
 * on a malformed one). Resolves with the final file paths and the bytes written; rejects with an
 * EngineError (CANCELLED when `env.signal` aborted: no final file appears, `.partial` files removed).
 */
export async function runRestoreJob(input: RestoreJobInput, env: RestoreJobEnv, deps: RestoreJobDeps = {}): Promise<RestoreResult> {
  const parsed = restoreJobInputSchema.safeParse(input)
  if (!parsed.success) {
    const { EngineError } = await import('../errors.js')
    throw new EngineError('INVALID_INPUT', `The restore request is malformed: ${parsed.error.issues[0]?.message ?? 'invalid'}.`)
  }
  const request = parsed.data
  const opened = await (deps.openVault ?? openDefaultVault)(env.home, request.vaultPath)
  try {
    // a shared lock for the whole restore: no prune can delete a pack it still has to read
    return await withReadLock(opened.vault, 'restore', jobLockOptions((l) => env.log(l)), async () => {
      const world: RestoreWorld = { vault: opened.vault, createWriter: deps.createWriter ?? createImageWriter }
      // Kept reflink clones of the point ("instant restore"): used when present and verified; else the vault.
      if (opened.catalog) world.snapshotClones = await catalogClones(opened.catalog)
      return restorePoint(
        world,
        {
          pointId: request.pointId,
          mode: request.mode,
          ...(request.targetPath === undefined ? {} : { targetPath: request.targetPath }),
          disks: request.disks,
          ...(request.format === undefined ? {} : { format: request.format }),
          overwrite: request.overwrite,
          ...(request.verify === undefined ? {} : { verifyAfterWrite: request.verify }),
        },
        { signal: env.signal, onProgress: (p) => env.onProgress(p), log: (l) => env.log(l) },
      )
    })
  } finally {
    await opened.close()
  }
}
