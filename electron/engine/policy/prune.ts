/**
 * Retention, then the vault's prune: the one implementation behind `tresor prune`, the app's
 * prune job (workers/jobEntry.ts) and the prune the app runs after each successful backup.
 *
 * Retention applies to machines this catalog knows (by id, else by name) with their policy (or the
 * default one); points of machines unknown here (another computer's, or a rebuilt catalog without
 * machines) are never selected. The newest point of each machine always survives. The vault then
 * deletes the expired points and frees what nothing else uses (LocalVault.prune: exclusive lock,
 * crash-safe); the catalog's point rows and the snapshot-tier clones of deleted points follow.
 */
import type { OpenedVault } from '../keys/index.js'
import { deletePointRows } from '../catalog/vaults.js'
import { removeSnapshotClones } from '../backup/snapshotTier.js'
import { policyForMachine } from './index.js'
import { selectPointsToPrune } from './retention.js'

export interface PruneRunOptions {
  /** Only report which points retention would remove. */
  dryRun?: boolean
  /** LocalVault PruneOptions.maxUnused (default 5 %). */
  maxUnused?: number
  onProgress?: (progress: { phase: 'delete' | 'mark' | 'repack' | 'sweep'; done: number; total: number }) => void
}

export interface PruneRunResult {
  /** Recovery points the vault deleted. */
  pointsRemoved: number
  bytesFreed: number
  packsRepacked: number
  packsDeleted: number
  /** Points retention selected (with dryRun: would select). */
  removed: string[]
  /** Points left in the vault. */
  kept: number
  clonesRemoved: string[]
  /** Snapshot-tier clones that could not be removed (their catalog rows stay; the next tier prune retries). */
  clonesNotRemoved: Array<{ clonePath: string; reason: string }>
}

/** Applies every known machine's retention to the open vault and frees the space (see the module comment). */
export async function runRetentionPrune(session: OpenedVault, options: PruneRunOptions = {}): Promise<PruneRunResult> {
  const points = await session.vault.listPoints()
  const byId = session.catalog.prepare('SELECT id FROM machines WHERE id = ?')
  const byName = session.catalog.prepare('SELECT id FROM machines WHERE name = ?')
  const machineOf = (p: { machineId: string; machineName: string }): string | undefined =>
    (byId.get(p.machineId) as { id: string } | undefined)?.id ?? (byName.get(p.machineName) as { id: string } | undefined)?.id
  const judged = points.flatMap((p) => {
    const machine = machineOf(p)
    return machine === undefined ? [] : [{ id: p.id, createdAt: p.createdAt, machine }]
  })
  const expired = selectPointsToPrune(judged, (machine) => policyForMachine(session.catalog, machine).retention)
  const none = { pointsRemoved: 0, bytesFreed: 0, packsRepacked: 0, packsDeleted: 0, clonesRemoved: [], clonesNotRemoved: [] }
  if (options.dryRun) return { ...none, removed: expired, kept: points.length - expired.length }
  const result = await session.vault.prune({
    deletePointIds: expired,
    ...(options.maxUnused === undefined ? {} : { maxUnused: options.maxUnused }),
    ...(options.onProgress ? { onProgress: options.onProgress } : {}),
  })
  const remaining = new Set((await session.vault.listPoints()).map((p) => p.id))
  const rows = session.catalog.prepare('SELECT id FROM points WHERE vault_id = ?').all(session.vaultId) as { id: string }[]
  const gone = rows.map((r) => r.id).filter((id) => !remaining.has(id))
  deletePointRows(session.catalog, gone)
  await session.recordGeneration()
  const clones = await removePointClones(session.catalog, [...new Set([...expired, ...gone])].filter((id) => !remaining.has(id)))
  return {
    pointsRemoved: result.pointsRemoved,
    bytesFreed: result.bytesFreed,
    packsRepacked: result.packsRepacked,
    packsDeleted: result.packsDeleted,
    removed: expired,
    kept: remaining.size,
    clonesRemoved: clones.removed,
    clonesNotRemoved: clones.failed,
  }
}

/** Removes the snapshot-tier clones (instant-restore copies) of deleted points. */
export async function removePointClones(db: OpenedVault['catalog'], pointIds: string[]): Promise<{ removed: string[]; failed: Array<{ clonePath: string; reason: string }> }> {
  const r = await removeSnapshotClones(db, { pointIds })
  return { removed: r.removed, failed: r.failed.map((f) => ({ clonePath: f.clonePath, reason: f.reason })) }
}
