/**
 * Catalog queries of the backup area: machines, their disks, recovery-point rows and snapshot-tier
 * clones. Every function takes the open catalog (`Db`) and runs synchronously (better-sqlite3).
 */
import { randomUUID } from 'node:crypto'
import { existsSync, statSync } from 'node:fs'
import { basename, extname, resolve } from 'node:path'
import type { Db } from '../catalog/types.js'
import { EngineError } from '../errors.js'
import { upsertPoint } from '../catalog/vaults.js'
import type { PointManifest } from '../vault/api.js'
import type { Machine, MachineDisk, MachineSource } from './types.js'

export interface NewDisk {
  /** Defaults to the file name without extension (made unique within the machine). */
  name?: string
  path: string
  isSystem?: boolean
  isExcluded?: boolean
}

export interface NewMachine {
  name: string
  source?: MachineSource
  sourcePath?: string | null
  policyId?: string | null
  disks: NewDisk[]
}

interface MachineRow {
  id: string
  name: string
  policy_id: string | null
  source: MachineSource
  source_path: string | null
  created_at: string
  protected_bytes: number
}
interface DiskRow {
  id: string
  machine_id: string
  name: string
  path: string
  position: number
  is_system: number
  is_excluded: number
  added_at: string
}

function nowIso(): string {
  return new Date().toISOString()
}

function toDisk(r: DiskRow): MachineDisk {
  return {
    id: r.id,
    machineId: r.machine_id,
    name: r.name,
    path: r.path,
    position: r.position,
    isSystem: r.is_system === 1,
    isExcluded: r.is_excluded === 1,
    addedAt: r.added_at,
  }
}

function disksOf(db: Db, machineId: string): MachineDisk[] {
  const rows = db.prepare('SELECT * FROM disks WHERE machine_id = ? ORDER BY position').all(machineId) as DiskRow[]
  return rows.map(toDisk)
}

function toMachine(db: Db, r: MachineRow): Machine {
  return {
    id: r.id,
    name: r.name,
    policyId: r.policy_id,
    source: r.source,
    sourcePath: r.source_path,
    createdAt: r.created_at,
    protectedBytes: r.protected_bytes,
    disks: disksOf(db, r.id),
  }
}

/** A disk name derived from its file: the base name without extension. */
export function defaultDiskName(path: string): string {
  const base = basename(path)
  const ext = extname(base)
  return ext.length > 0 && ext.length < base.length ? base.slice(0, -ext.length) : base
}

function uniqueName(wanted: string, taken: Set<string>): string {
  let name = wanted
  for (let i = 2; taken.has(name); i++) name = `${wanted}-${i}`
  taken.add(name)
  return name
}

function checkDiskFile(path: string): string {
  const abs = resolve(path)
  let st
  try {
    st = statSync(abs)
  } catch (err) {
    throw new EngineError('NOT_FOUND', `The disk image "${abs}" does not exist. Check the path and try again.`, { cause: err })
  }
  if (!st.isFile() && !st.isBlockDevice()) {
    throw new EngineError('INVALID_INPUT', `"${abs}" is not a disk image file. Choose the image file itself, not a folder.`)
  }
  return abs
}

/**
 * Adds a machine and its disks in one transaction. Disk paths are made absolute and must exist;
 * disk names default to the file names and are made unique. Throws ALREADY_EXISTS when a machine of
 * that name exists, INVALID_INPUT when there is no disk or a disk file is listed twice.
 */
export function addMachine(db: Db, input: NewMachine): Machine {
  const name = input.name.trim()
  if (name.length === 0) throw new EngineError('INVALID_INPUT', 'A machine needs a name.')
  if (input.disks.length === 0) throw new EngineError('INVALID_INPUT', `Machine "${name}" needs at least one disk image.`)
  if (db.prepare('SELECT 1 FROM machines WHERE name = ?').get(name)) {
    throw new EngineError('ALREADY_EXISTS', `A machine named "${name}" is already protected. Choose another name.`)
  }
  const paths = input.disks.map((d) => checkDiskFile(d.path))
  if (new Set(paths).size !== paths.length) {
    throw new EngineError('INVALID_INPUT', `Machine "${name}" lists the same disk image twice.`)
  }
  const id = randomUUID()
  const now = nowIso()
  const taken = new Set<string>()
  const hasSystem = input.disks.some((d) => d.isSystem === true)
  db.transaction(() => {
    db.prepare('INSERT INTO machines (id, name, policy_id, source, source_path, created_at) VALUES (?, ?, ?, ?, ?, ?)').run(
      id, name, input.policyId ?? null, input.source ?? 'files', input.sourcePath ?? null, now)
    const ins = db.prepare('INSERT INTO disks (id, machine_id, name, path, position, is_system, is_excluded, added_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)')
    input.disks.forEach((d, i) => {
      const diskName = uniqueName(d.name?.trim() || defaultDiskName(paths[i]!), taken)
      const isSystem = hasSystem ? d.isSystem === true : i === 0
      ins.run(randomUUID(), id, diskName, paths[i]!, i, isSystem ? 1 : 0, d.isExcluded === true ? 1 : 0, now)
    })
  }).immediate()
  return getMachine(db, id)
}

/**
 * Adds a disk to a protected machine. Its first backup reads it fully; the other disks stay
 * incremental (the pipeline matches disks to the previous point by name).
 */
export function addDisk(db: Db, machineIdOrName: string, disk: NewDisk): MachineDisk {
  const machine = getMachine(db, machineIdOrName)
  const path = checkDiskFile(disk.path)
  if (machine.disks.some((d) => d.path === path)) {
    throw new EngineError('ALREADY_EXISTS', `"${path}" is already a disk of machine "${machine.name}".`)
  }
  const taken = new Set(machine.disks.map((d) => d.name))
  const name = uniqueName(disk.name?.trim() || defaultDiskName(path), taken)
  const position = machine.disks.reduce((m, d) => Math.max(m, d.position + 1), 0)
  const id = randomUUID()
  db.prepare('INSERT INTO disks (id, machine_id, name, path, position, is_system, is_excluded, added_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)').run(
    id, machine.id, name, path, position, disk.isSystem === true ? 1 : 0, disk.isExcluded === true ? 1 : 0, nowIso())
  return toDisk(db.prepare('SELECT * FROM disks WHERE id = ?').get(id) as DiskRow)
}

/** The machine with this id or name. Throws MACHINE_NOT_FOUND. */
export function getMachine(db: Db, idOrName: string): Machine {
  const row = (db.prepare('SELECT * FROM machines WHERE id = ?').get(idOrName) ??
    db.prepare('SELECT * FROM machines WHERE name = ?').get(idOrName)) as MachineRow | undefined
  if (!row) {
    throw new EngineError('MACHINE_NOT_FOUND', `No protected machine is named "${idOrName}". List them with "tresor machine list".`)
  }
  return toMachine(db, row)
}

/** Every machine, by name. */
export function listMachines(db: Db): Machine[] {
  const rows = db.prepare('SELECT * FROM machines ORDER BY name').all() as MachineRow[]
  return rows.map((r) => toMachine(db, r))
}

/**
 * Removes a machine from the catalog (its recovery points stay in the vault). Its snapshot-tier
 * clone rows cascade with it: call `removeMachineSnapshotClones` (snapshotTier.ts) first, or the
 * clone files would stay on disk unlisted.
 */
export function removeMachine(db: Db, idOrName: string): void {
  const m = getMachine(db, idOrName)
  db.prepare('DELETE FROM machines WHERE id = ?').run(m.id)
}

/**
 * Marks disks excluded (or included again). `disks` are names or 0-based positions as printed by
 * `tresor machine list`. Throws NOT_FOUND naming an unknown disk. Returns the updated machine.
 */
export function setDisksExcluded(db: Db, machineIdOrName: string, disks: string[], excluded: boolean): Machine {
  const machine = getMachine(db, machineIdOrName)
  const targets = disks.map((ref) => findDisk(machine, ref))
  const upd = db.prepare('UPDATE disks SET is_excluded = ? WHERE id = ?')
  db.transaction(() => { for (const d of targets) upd.run(excluded ? 1 : 0, d.id) })()
  return getMachine(db, machine.id)
}

/** The disk of `machine` named `ref`, or at position `ref`. Throws NOT_FOUND. */
export function findDisk(machine: Machine, ref: string): MachineDisk {
  const byName = machine.disks.find((d) => d.name === ref)
  if (byName) return byName
  if (/^\d+$/.test(ref)) {
    const byPos = machine.disks.find((d) => d.position === Number(ref))
    if (byPos) return byPos
  }
  throw new EngineError('NOT_FOUND', `Machine "${machine.name}" has no disk "${ref}". Its disks: ${machine.disks.map((d) => d.name).join(', ')}.`)
}

/** Sets the policy of a machine (null: the default policy). */
export function setMachinePolicy(db: Db, machineIdOrName: string, policyId: string | null): void {
  const m = getMachine(db, machineIdOrName)
  db.prepare('UPDATE machines SET policy_id = ? WHERE id = ?').run(policyId, m.id)
}

// ---------------------------------------------------------------------------------------------
// Recovery points

/** One disk as `points` rows summarise it. */
export interface PointDiskSummary {
  index: number
  name: string
  virtualSize: number
  allocatedBytes: number
  sourceFormat: string
  sourcePath?: string
}

/** A recovery point as the catalog lists it (`tresor points --json` prints `id, machine, createdAt, consistency, disks`). */
export interface PointRow {
  id: string
  vaultId: string
  machineId: string | null
  machine: string
  createdAt: string
  consistency: PointManifest['consistency']
  bytesRead: number
  bytesNew: number
  bytesStored: number
  disks: PointDiskSummary[]
}

interface PointDbRow {
  id: string
  vault_id: string
  machine_id: string | null
  machine_name: string
  created_at: string
  consistency: PointManifest['consistency']
  bytes_read: number
  bytes_new: number
  bytes_stored: number
  summary: string
}

function toPointRow(r: PointDbRow): PointRow {
  let disks: PointDiskSummary[] = []
  try {
    const s = JSON.parse(r.summary) as { disks?: PointDiskSummary[] }
    disks = Array.isArray(s.disks) ? s.disks : []
  } catch {
    disks = []
  }
  return {
    id: r.id,
    vaultId: r.vault_id,
    machineId: r.machine_id,
    machine: r.machine_name,
    createdAt: r.created_at,
    consistency: r.consistency,
    bytesRead: r.bytes_read,
    bytesNew: r.bytes_new,
    bytesStored: r.bytes_stored,
    disks,
  }
}

/**
 * Records a committed point (idempotent: the row with the same id is refreshed; the row format is
 * the catalog's `upsertPoint`, shared with the catalog rebuild) and, when the point's machine is
 * known, its protected size: the allocated bytes of the disks the point holds. Registers the vault
 * row when missing (a vault opened by path only).
 */
export function recordPoint(db: Db, vault: { id: string; path: string }, manifest: PointManifest): void {
  db.transaction(() => {
    db.prepare('INSERT OR IGNORE INTO vaults (id, path, added_at) VALUES (?, ?, ?)').run(vault.id, vault.path, nowIso())
    upsertPoint(db, vault.id, manifest)
    const known = db.prepare('SELECT id FROM machines WHERE id = ?').get(manifest.machineId) as { id: string } | undefined
    if (known) {
      const protectedBytes = manifest.disks.reduce((s, d) => s + d.allocatedBytes, 0)
      db.prepare('UPDATE machines SET protected_bytes = ? WHERE id = ?').run(protectedBytes, manifest.machineId)
    }
  }).immediate()
}

/** Points of one machine (id or name; unknown names match points by machine name) or all, oldest first. */
export function listPointRows(db: Db, options: { machine?: string; vaultId?: string } = {}): PointRow[] {
  const where: string[] = []
  const args: unknown[] = []
  if (options.machine !== undefined) {
    const m = db.prepare('SELECT id, name FROM machines WHERE id = ? OR name = ?').get(options.machine, options.machine) as { id: string; name: string } | undefined
    if (m) {
      where.push('(machine_id = ? OR (machine_id IS NULL AND machine_name = ?))')
      args.push(m.id, m.name)
    } else {
      where.push('machine_name = ?')
      args.push(options.machine)
    }
  }
  if (options.vaultId !== undefined) {
    where.push('vault_id = ?')
    args.push(options.vaultId)
  }
  const sql = `SELECT * FROM points ${where.length ? 'WHERE ' + where.join(' AND ') : ''} ORDER BY created_at, id`
  return (db.prepare(sql).all(...args) as PointDbRow[]).map(toPointRow)
}

/** The newest point of a machine in a vault, or undefined. */
export function latestPointRow(db: Db, machineId: string, vaultId: string): PointRow | undefined {
  const r = db.prepare('SELECT * FROM points WHERE machine_id = ? AND vault_id = ? ORDER BY created_at DESC, id DESC LIMIT 1').get(machineId, vaultId) as PointDbRow | undefined
  return r ? toPointRow(r) : undefined
}

// ---------------------------------------------------------------------------------------------
// Snapshot tier

export interface SnapshotCloneRow {
  id: string
  machineId: string
  pointId: string | null
  diskName: string
  sourcePath: string
  clonePath: string
  createdAt: string
}

/** Records a kept reflink clone. */
export function recordSnapshotClone(db: Db, clone: Omit<SnapshotCloneRow, 'id'>): string {
  const id = randomUUID()
  db.prepare('INSERT INTO snapshot_clones (id, machine_id, point_id, disk_name, source_path, clone_path, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)').run(
    id, clone.machineId, clone.pointId, clone.diskName, clone.sourcePath, clone.clonePath, clone.createdAt)
  return id
}

/** Kept clones of a machine (or of one point), oldest first. Rows whose file is gone are included; check `existsSync`. */
export function listSnapshotClones(db: Db, filter: { machineId?: string; pointId?: string } = {}): SnapshotCloneRow[] {
  const where: string[] = []
  const args: unknown[] = []
  if (filter.machineId !== undefined) { where.push('machine_id = ?'); args.push(filter.machineId) }
  if (filter.pointId !== undefined) { where.push('point_id = ?'); args.push(filter.pointId) }
  const rows = db.prepare(`SELECT * FROM snapshot_clones ${where.length ? 'WHERE ' + where.join(' AND ') : ''} ORDER BY created_at, id`).all(...args) as {
    id: string; machine_id: string; point_id: string | null; disk_name: string; source_path: string; clone_path: string; created_at: string
  }[]
  return rows.map((r) => ({ id: r.id, machineId: r.machine_id, pointId: r.point_id, diskName: r.disk_name, sourcePath: r.source_path, clonePath: r.clone_path, createdAt: r.created_at }))
}

export function deleteSnapshotCloneRow(db: Db, id: string): void {
  db.prepare('DELETE FROM snapshot_clones WHERE id = ?').run(id)
}

/** True when the kept clone's file still exists. */
export function cloneExists(row: SnapshotCloneRow): boolean {
  return existsSync(row.clonePath)
}
