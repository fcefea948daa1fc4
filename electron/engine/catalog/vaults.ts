import { nowIso } from './db.js'
import type { Db } from './types.js'
import type { PointManifest } from '../vault/api.js'

/**
 * Vault registrations in the catalog: which vaults this data folder knows, which one is current,
 * and the last vault generation seen (I11: a vault whose generation went backwards is an old copy
 * put back in place). Also the recovery-point rows mirrored from a vault's manifests.
 */
export interface VaultRow {
  id: string
  path: string
  backend: string
  isCurrent: boolean
  lastGeneration: number
  addedAt: string
}

interface RawVaultRow {
  id: string
  path: string
  backend: string
  is_current: number
  last_generation: number
  added_at: string
}

function toRow(raw: RawVaultRow): VaultRow {
  return {
    id: raw.id,
    path: raw.path,
    backend: raw.backend,
    isCurrent: raw.is_current === 1,
    lastGeneration: raw.last_generation,
    addedAt: raw.added_at,
  }
}

/**
 * Registers (or re-registers) a vault. A row for another vault id at the same path is removed
 * with its points (the folder now holds a different vault). `lastGeneration` only ever increases.
 * With `makeCurrent` the vault becomes the only current one. One transaction.
 */
export function registerVault(
  db: Db,
  vault: { id: string; path: string; backend?: string; lastGeneration?: number },
  options: { makeCurrent?: boolean } = {},
): VaultRow {
  db.transaction(() => {
    db.prepare('DELETE FROM vaults WHERE path = ? AND id <> ?').run(vault.path, vault.id)
    db.prepare(
      `INSERT INTO vaults (id, path, backend, is_current, last_generation, added_at)
       VALUES (@id, @path, @backend, 0, @gen, @now)
       ON CONFLICT (id) DO UPDATE SET path = excluded.path, backend = excluded.backend,
         last_generation = MAX(vaults.last_generation, excluded.last_generation)`,
    ).run({ id: vault.id, path: vault.path, backend: vault.backend ?? 'local', gen: vault.lastGeneration ?? 0, now: nowIso() })
    if (options.makeCurrent) {
      db.prepare('UPDATE vaults SET is_current = (id = ?)').run(vault.id)
    }
  }).immediate()
  return getVault(db, vault.id)!
}

export function getVault(db: Db, id: string): VaultRow | undefined {
  const raw = db.prepare('SELECT * FROM vaults WHERE id = ?').get(id) as RawVaultRow | undefined
  return raw && toRow(raw)
}

export function getVaultByPath(db: Db, path: string): VaultRow | undefined {
  const raw = db.prepare('SELECT * FROM vaults WHERE path = ?').get(path) as RawVaultRow | undefined
  return raw && toRow(raw)
}

export function listVaults(db: Db): VaultRow[] {
  return (db.prepare('SELECT * FROM vaults ORDER BY added_at, id').all() as RawVaultRow[]).map(toRow)
}

/** The current vault of this data folder, or undefined when none was set up. */
export function getCurrentVault(db: Db): VaultRow | undefined {
  const raw = db.prepare('SELECT * FROM vaults WHERE is_current = 1 ORDER BY added_at LIMIT 1').get() as RawVaultRow | undefined
  return raw && toRow(raw)
}

export function setCurrentVault(db: Db, id: string): void {
  db.transaction(() => {
    const found = db.prepare('SELECT 1 FROM vaults WHERE id = ?').get(id)
    if (!found) throw new Error(`vault ${id} is not registered`)
    db.prepare('UPDATE vaults SET is_current = (id = ?)').run(id)
  }).immediate()
}

/** Records a generation seen (monotonic: a lower value never replaces a higher one). Returns the stored value. */
export function updateLastGeneration(db: Db, id: string, generation: number): number {
  db.prepare('UPDATE vaults SET last_generation = MAX(last_generation, ?) WHERE id = ?').run(generation, id)
  return getVault(db, id)?.lastGeneration ?? generation
}

/**
 * Sets the remembered generation to a lower value: only when the user confirmed that an older copy
 * of the vault was put back on purpose (`--accept-rollback`).
 */
export function resetLastGeneration(db: Db, id: string, generation: number): void {
  db.prepare('UPDATE vaults SET last_generation = ? WHERE id = ?').run(generation, id)
}

/** The points row of a manifest (what `tresor points` and the UI list). */
export function pointRowFromManifest(vaultId: string, manifest: PointManifest, machineId: string | null) {
  return {
    id: manifest.id,
    vault_id: vaultId,
    machine_id: machineId,
    machine_name: manifest.machineName,
    created_at: manifest.createdAt,
    consistency: manifest.consistency,
    bytes_read: manifest.stats.bytesRead,
    bytes_new: manifest.stats.bytesNew,
    bytes_stored: manifest.stats.bytesStored,
    summary: JSON.stringify({
      blockSize: manifest.blockSize,
      disks: manifest.disks.map((d) => ({
        index: d.index,
        name: d.name,
        virtualSize: d.virtualSize,
        allocatedBytes: d.allocatedBytes,
        sourceFormat: d.sourceFormat,
        sourcePath: d.sourcePath,
      })),
      labels: manifest.labels,
      machineId: manifest.machineId,
    }),
  }
}

/** The catalog machine a manifest belongs to: same id, else same name, else null. */
function machineIdFor(db: Db, manifest: PointManifest): string | null {
  const byId = db.prepare('SELECT id FROM machines WHERE id = ?').get(manifest.machineId) as { id: string } | undefined
  if (byId) return byId.id
  const byName = db.prepare('SELECT id FROM machines WHERE name = ?').get(manifest.machineName) as { id: string } | undefined
  return byName?.id ?? null
}

const UPSERT_POINT = `INSERT INTO points (id, vault_id, machine_id, machine_name, created_at, consistency, bytes_read, bytes_new, bytes_stored, summary)
  VALUES (@id, @vault_id, @machine_id, @machine_name, @created_at, @consistency, @bytes_read, @bytes_new, @bytes_stored, @summary)
  ON CONFLICT (id) DO UPDATE SET vault_id = excluded.vault_id, machine_id = excluded.machine_id,
    machine_name = excluded.machine_name, created_at = excluded.created_at, consistency = excluded.consistency,
    bytes_read = excluded.bytes_read, bytes_new = excluded.bytes_new, bytes_stored = excluded.bytes_stored,
    summary = excluded.summary`

/** Adds or refreshes one point row (after a backup commit). The vault must be registered. */
export function upsertPoint(db: Db, vaultId: string, manifest: PointManifest): void {
  db.prepare(UPSERT_POINT).run(pointRowFromManifest(vaultId, manifest, machineIdFor(db, manifest)))
}

/**
 * Makes the catalog's points of `vaultId` exactly the given manifests (the vault is the source of
 * truth): rows of points no longer in the vault are removed, others inserted or refreshed. One
 * transaction. Returns the number of points.
 */
export function replacePoints(db: Db, vaultId: string, manifests: PointManifest[]): number {
  db.transaction(() => {
    const keep = new Set(manifests.map((m) => m.id))
    const existing = db.prepare('SELECT id FROM points WHERE vault_id = ?').all(vaultId) as { id: string }[]
    const remove = db.prepare('DELETE FROM points WHERE id = ?')
    for (const row of existing) if (!keep.has(row.id)) remove.run(row.id)
    const upsert = db.prepare(UPSERT_POINT)
    for (const m of manifests) upsert.run(pointRowFromManifest(vaultId, m, machineIdFor(db, m)))
  }).immediate()
  return manifests.length
}

/** Removes the rows of points deleted from the vault (after a prune). */
export function deletePointRows(db: Db, pointIds: string[]): void {
  const remove = db.prepare('DELETE FROM points WHERE id = ?')
  db.transaction(() => {
    for (const id of pointIds) remove.run(id)
  }).immediate()
}

export function countPoints(db: Db, vaultId: string): number {
  return (db.prepare('SELECT COUNT(*) AS n FROM points WHERE vault_id = ?').get(vaultId) as { n: number }).n
}
