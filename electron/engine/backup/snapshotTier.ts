/**
 * Snapshot tier upkeep: removing kept reflink clones ("instant restore" copies) and their catalog
 * rows, when they age out (`pruneSnapshotTier`), when their recovery point is deleted
 * (`removeSnapshotClones({ pointIds })`) or when their machine stops being protected
 * (`removeSnapshotClones({ machineId })`).
 *
 * Path safety: only files the catalog recorded are touched, and only when the recorded path still
 * has the shape `clonePathFor` gives (a hidden `.<stem>.tresor-<UTC stamp>-<hex><ext>` beside its
 * recorded source, never the source itself). A row failing that check is reported and kept; the
 * file it names is left alone.
 */
import { lstat, unlink } from 'node:fs/promises'
import { basename, dirname, extname, resolve } from 'node:path'
import type { Db } from '../catalog/index.js'
import { EngineError } from '../errors.js'
import { deleteSnapshotCloneRow, listSnapshotClones, type SnapshotCloneRow } from './machines.js'

/** A clone that could not be removed; its catalog row stays so a later prune retries it. */
export interface CloneRemovalFailure {
  clonePath: string
  pointId: string | null
  machineId: string
  reason: string
}

export interface CloneRemoval {
  /** Clone files deleted (their rows too). */
  removed: string[]
  /** Rows dropped because their file was already gone. */
  missing: string[]
  /** Clones left in place, with why; their rows stay. */
  failed: CloneRemovalFailure[]
}

const CLONE_NAME = /^\.(.+)\.tresor-\d{8}T\d{6}Z-[0-9a-f]+$/

/**
 * Why `row` must not be deleted, or undefined when its path is a snapshot-tier clone of its source:
 * same folder, a different file, the hidden name `clonePathFor` builds from the source's name.
 */
export function unsafeClonePath(row: Pick<SnapshotCloneRow, 'clonePath' | 'sourcePath'>): string | undefined {
  const clone = resolve(row.clonePath)
  const source = resolve(row.sourcePath)
  if (clone === source) return 'it is the disk itself'
  if (dirname(clone) !== dirname(source)) return 'it is not beside its disk'
  const sourceBase = basename(source)
  const ext = extname(sourceBase)
  const stem = ext ? sourceBase.slice(0, -ext.length) : sourceBase
  const base = basename(clone)
  if (!base.endsWith(ext)) return 'its name is not a snapshot-tier clone name'
  const m = CLONE_NAME.exec(ext ? base.slice(0, -ext.length) : base)
  if (!m || m[1] !== stem) return 'its name is not a snapshot-tier clone name'
  return undefined
}

/**
 * Deletes one recorded clone and its row. ENOENT drops the row (nothing left to free). Anything
 * else (a path that fails `unsafeClonePath`, a folder, EACCES, EBUSY...) keeps the row and returns
 * the failure. Never throws.
 */
async function removeOne(db: Db, row: SnapshotCloneRow, out: CloneRemoval): Promise<void> {
  const fail = (reason: string): void => {
    out.failed.push({ clonePath: row.clonePath, pointId: row.pointId, machineId: row.machineId, reason })
  }
  const unsafe = unsafeClonePath(row)
  if (unsafe !== undefined) return fail(`left in place: ${unsafe}`)
  try {
    const st = await lstat(row.clonePath)
    if (!st.isFile() && !st.isSymbolicLink()) return fail('left in place: it is not a file')
    await unlink(row.clonePath)
    out.removed.push(row.clonePath)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code !== 'ENOENT') return fail(`${code ?? 'error'}: ${(err as Error).message}`)
    out.missing.push(row.clonePath)
  }
  deleteSnapshotCloneRow(db, row.id)
}

function logFailures(result: CloneRemoval, log: (l: string) => void): void {
  for (const f of result.failed) {
    log(`snapshot tier: could not remove the instant-restore copy "${f.clonePath}" (${f.reason}); it stays listed and a later prune tries again`)
  }
}

/**
 * Removes the snapshot-tier clones of the given recovery points (`pointIds`) or of a whole machine
 * (`machineId`), files and catalog rows, as listed in the catalog: nothing else is ever deleted.
 * A clone file already missing just loses its row. A clone that cannot be removed is logged and
 * returned in `failed`; its row stays. Idempotent; never throws for file system errors. Call it
 * after the points are deleted from the vault (a clone without its point is unreachable space),
 * and before a machine's row is deleted (the rows cascade with the machine).
 */
export async function removeSnapshotClones(
  db: Db,
  select: { pointIds: readonly string[] } | { machineId: string },
  log: (l: string) => void = () => {},
): Promise<CloneRemoval> {
  const rows = 'machineId' in select
    ? listSnapshotClones(db, { machineId: select.machineId })
    : [...new Set(select.pointIds)].flatMap((pointId) => listSnapshotClones(db, { pointId }))
  const out: CloneRemoval = { removed: [], missing: [], failed: [] }
  for (const row of rows) await removeOne(db, row, out)
  if (out.removed.length > 0) log(`snapshot tier: removed ${out.removed.length} instant-restore copy(ies)`)
  logFailures(out, log)
  return out
}

/**
 * Removes snapshot-tier clones of a machine older than `days` (all of them when days is 0), except
 * those in `keep`, and clones whose recovery point no longer has a catalog row (deleted by another
 * computer, or dropped by a catalog rebuild). Rows whose file is already gone are dropped; clones
 * that cannot be removed are logged and keep their row. Returns the paths removed.
 */
export async function pruneSnapshotTier(db: Db, machineId: string, days: number, nowMs: number, keep: Set<string> = new Set(), log: (l: string) => void = () => {}): Promise<string[]> {
  const cutoff = nowMs - days * 86_400_000
  const hasPoint = db.prepare('SELECT 1 FROM points WHERE id = ?')
  const out: CloneRemoval = { removed: [], missing: [], failed: [] }
  for (const row of listSnapshotClones(db, { machineId })) {
    if (keep.has(row.clonePath)) continue
    const orphan = row.pointId !== null && hasPoint.get(row.pointId) === undefined
    if (!orphan && days > 0 && Date.parse(row.createdAt) > cutoff) continue
    await removeOne(db, row, out)
  }
  if (out.removed.length > 0) log(`snapshot tier: removed ${out.removed.length} clone(s) older than ${days} day(s) or without their recovery point`)
  logFailures(out, log)
  return out.removed
}

/**
 * Before a machine's catalog row is deleted (its clone rows cascade with it): removes all of its
 * snapshot-tier clones. Throws IO_ERROR naming each clone left in place, so the caller keeps the
 * machine and no clone becomes invisible. Returns the paths removed.
 */
export async function removeMachineSnapshotClones(db: Db, machineId: string, log: (l: string) => void = () => {}): Promise<string[]> {
  const r = await removeSnapshotClones(db, { machineId }, log)
  if (r.failed.length > 0) {
    const list = r.failed.map((f) => `"${f.clonePath}" (${f.reason})`).join(', ')
    throw new EngineError('IO_ERROR', `The instant-restore copies ${list} could not be removed, so the machine is still protected. ` +
      'Delete them by hand (or fix their permissions), then remove the machine again.')
  }
  return r.removed
}
