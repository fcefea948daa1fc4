import { randomUUID } from 'node:crypto'
import { existsSync } from 'node:fs'
import type { Db } from '../catalog/index.js'
import { nowIso } from '../catalog/index.js'
import { EngineError } from '../errors.js'
import type { AppApi, ApiParsedInput, EmitEvent } from '../../shared/ipc.js'
import {
  DEFAULT_SETTINGS,
  JobKind,
  JobState,
  PolicySpec,
  RestoreFormat,
  Settings,
  type AppInfo,
  type HostKind,
  type JobDetail,
  type JobSummary,
  type MachineSummary,
  type PointSummary,
  type PolicySummary,
  type RestoreQueueItem,
  type VaultStatus,
} from '../../shared/models.js'
import { isErrorCode, type WireError } from '../../shared/errors.js'
import type { EngineWiring } from './wiring.js'
import { removeMachineSnapshotClones } from '../backup/snapshotTier.js'

/** What the host (Electron main or the web host) provides. */
export interface AppHost {
  kind: HostKind
  /** The data folder (catalog, vault registration). */
  home: string
  version: string
  hasTray: boolean
  /** Opens an allow-listed https URL in the system browser; absent in the web host. */
  openExternal?(url: string): Promise<boolean>
  /** Shows a native file dialog; absent in the web host. */
  chooseFiles?(purpose: ApiParsedInput<'chooseFiles'>['purpose']): Promise<string[]>
}

export interface AppServiceDeps {
  host: AppHost
  /** The open catalog; the caller owns it and closes it after `dispose()`. */
  catalog: Db
  emit: EmitEvent
  engine: EngineWiring
}

export type AppService = AppApi & { dispose(): void }

const SETTINGS_PREFIX = 'app.'

function unsupported(what: string): never {
  throw new EngineError('UNSUPPORTED', `${what} is not available in this version of Tresor yet.`)
}

function parseJson(textValue: string | null | undefined): unknown {
  if (textValue === null || textValue === undefined) return undefined
  try {
    return JSON.parse(textValue)
  } catch {
    return undefined
  }
}

interface JobRow {
  id: string
  kind: string
  state: string
  machine_id: string | null
  machine_name: string | null
  point_id: string | null
  created_at: string
  started_at: string | null
  finished_at: string | null
  bytes_done: number
  bytes_total: number
  error_code: string | null
  error_message: string | null
  log?: string
}

function toJobSummary(r: JobRow): JobSummary {
  const error: WireError | null =
    r.error_code === null ? null : { code: isErrorCode(r.error_code) ? r.error_code : 'INTERNAL', message: r.error_message ?? '' }
  return {
    id: r.id,
    kind: JobKind.catch('backup').parse(r.kind),
    state: JobState.catch('failed').parse(r.state),
    machineId: r.machine_id,
    machineName: r.machine_name,
    pointId: r.point_id,
    createdAt: r.created_at,
    startedAt: r.started_at,
    finishedAt: r.finished_at,
    bytesDone: r.bytes_done,
    bytesTotal: r.bytes_total,
    error,
  }
}

/**
 * Creates the AppApi implementation over an open catalog. Listing methods query the catalog;
 * mutating methods call the engine wiring (UNSUPPORTED while a slot is empty) and emit the
 * matching change events. The caller disposes it before closing the catalog.
 */
export function createAppService(deps: AppServiceDeps): AppService {
  const { host, catalog: db, emit, engine } = deps

  function readSettings(): Settings {
    const rows = db.prepare(`SELECT key, value FROM settings WHERE key LIKE ?`).all(`${SETTINGS_PREFIX}%`) as { key: string; value: string }[]
    const merged: Record<string, unknown> = { ...DEFAULT_SETTINGS }
    for (const row of rows) {
      const key = row.key.slice(SETTINGS_PREFIX.length)
      if (!(key in DEFAULT_SETTINGS)) continue
      const field = Settings.shape[key as keyof Settings]
      const parsed = field.safeParse(parseJson(row.value))
      if (parsed.success) merged[key] = parsed.data
    }
    return Settings.parse(merged)
  }

  function currentVaultRow(): { id: string; path: string; backend: string; last_generation: number } | undefined {
    return db.prepare(`SELECT id, path, backend, last_generation FROM vaults WHERE is_current = 1 LIMIT 1`).get() as
      | { id: string; path: string; backend: string; last_generation: number }
      | undefined
  }

  async function vaultStatus(): Promise<VaultStatus> {
    const row = currentVaultRow()
    if (!row) {
      return { state: 'none', vaultId: null, path: null, backend: null, hasPassphrase: false, hasKeychainKey: false, hasRecoveryKey: false, pointCount: 0, generation: 0 }
    }
    const pointCount = (db.prepare(`SELECT count(*) AS n FROM points WHERE vault_id = ?`).get(row.id) as { n: number }).n
    const base: VaultStatus = {
      state: existsSync(row.path) ? 'locked' : 'unavailable',
      vaultId: row.id,
      path: row.path,
      backend: row.backend,
      hasPassphrase: true,
      hasKeychainKey: false,
      hasRecoveryKey: false,
      pointCount,
      generation: row.last_generation,
    }
    if (base.state === 'unavailable' || !engine.vault) return base
    try {
      const facts = await engine.vault.keyFacts(host.home, row.id)
      return {
        ...base,
        state: facts.isOpen ? 'open' : 'locked',
        hasKeychainKey: facts.hasKeychainKey,
        hasRecoveryKey: facts.hasRecoveryKey,
        generation: facts.generation,
      }
    } catch {
      // Key facts are a status nicety; a failing keychain must not break the status call.
      return base
    }
  }

  async function afterVaultChange(): Promise<VaultStatus> {
    const status = await vaultStatus()
    emit('vaultStatusChanged', status)
    return status
  }

  function listPolicies(): PolicySummary[] {
    const rows = db
      .prepare(
        `SELECT p.id, p.name, p.spec, p.created_at, (SELECT count(*) FROM machines m WHERE m.policy_id = p.id) AS machine_count
         FROM policies p ORDER BY p.name COLLATE NOCASE`,
      )
      .all() as { id: string; name: string; spec: string; created_at: string; machine_count: number }[]
    const out: PolicySummary[] = []
    for (const r of rows) {
      const spec = PolicySpec.safeParse(parseJson(r.spec))
      if (!spec.success) continue // written by a newer version or damaged: not shown rather than guessed
      out.push({ id: r.id, name: r.name, spec: spec.data, createdAt: r.created_at, machineCount: r.machine_count })
    }
    return out
  }

  function listRestoreQueue(): RestoreQueueItem[] {
    const rows = db
      .prepare(
        `SELECT q.id, q.job_id, q.point_id, q.spec, q.position, q.state, q.created_at, p.machine_name
         FROM restore_queue q LEFT JOIN points p ON p.id = q.point_id ORDER BY q.position, q.created_at`,
      )
      .all() as { id: string; job_id: string | null; point_id: string; spec: string; position: number; state: string; created_at: string; machine_name: string | null }[]
    return rows.map((r) => {
      // The restore area stores its job input ({targetPath, disks: [...]}); older rows may hold {targetDir, disk}.
      const spec = (parseJson(r.spec) ?? {}) as { targetDir?: unknown; targetPath?: unknown; disk?: unknown; disks?: unknown; format?: unknown }
      const target = typeof spec.targetDir === 'string' ? spec.targetDir : typeof spec.targetPath === 'string' ? spec.targetPath : ''
      const first = Array.isArray(spec.disks) && spec.disks.length === 1 ? (spec.disks[0] as unknown) : spec.disk
      const disk = typeof first === 'string' || typeof first === 'number' ? first : null
      return {
        id: r.id,
        jobId: r.job_id,
        pointId: r.point_id,
        machineName: r.machine_name,
        position: Math.max(0, r.position),
        state: JobState.catch('failed').parse(r.state),
        createdAt: r.created_at,
        targetDir: target,
        disk,
        format: RestoreFormat.catch('same').parse(spec.format ?? 'same'),
      }
    })
  }

  function requireMachine(machineId: string): void {
    const row = db.prepare(`SELECT 1 FROM machines WHERE id = ?`).get(machineId)
    if (!row) throw new EngineError('MACHINE_NOT_FOUND', `No machine with id "${machineId}" exists. Reload the list of machines.`)
  }

  function requirePolicy(policyId: string): void {
    const row = db.prepare(`SELECT 1 FROM policies WHERE id = ?`).get(policyId)
    if (!row) throw new EngineError('NOT_FOUND', `No policy with id "${policyId}" exists. Reload the list of policies.`)
  }

  const stopEngineChanges = engine.onChange?.((what) => {
    if (what === 'restoreQueue') emit('restoreQueueChanged', { items: listRestoreQueue() })
  })

  const api: AppService = {
    async getAppInfo(): Promise<AppInfo> {
      return {
        name: 'Tresor',
        version: host.version,
        host: host.kind,
        platform: process.platform,
        home: host.home,
        features: { fileDialogs: host.chooseFiles !== undefined, openExternal: host.openExternal !== undefined, tray: host.hasTray },
      }
    },

    async getSettings() {
      return readSettings()
    },

    async updateSettings(patch) {
      const next = Settings.parse({ ...readSettings(), ...patch })
      const put = db.prepare(`INSERT INTO settings (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value`)
      db.transaction(() => {
        for (const [key, value] of Object.entries(patch)) {
          if (value !== undefined) put.run(SETTINGS_PREFIX + key, JSON.stringify(value))
        }
      })()
      emit('settingsChanged', next)
      return next
    },

    async getVaultStatus() {
      return vaultStatus()
    },

    async initVault(input) {
      if (!engine.vault) unsupported('Creating a vault')
      await engine.vault.init(host.home, input)
      return afterVaultChange()
    },

    async openVault(input) {
      if (!engine.vault) unsupported('Opening a vault')
      await engine.vault.open(host.home, input)
      return afterVaultChange()
    },

    async unlockVault(input) {
      if (!engine.vault) unsupported('Unlocking a vault')
      if (!currentVaultRow()) throw new EngineError('VAULT_NOT_CONFIGURED', 'No vault is set up yet. Create or open a vault first.')
      await engine.vault.unlock(host.home, input)
      return afterVaultChange()
    },

    async lockVault() {
      if (!engine.vault) unsupported('Locking a vault')
      await engine.vault.lock(host.home)
      return afterVaultChange()
    },

    async listMachines(): Promise<MachineSummary[]> {
      const machines = db
        .prepare(
          `SELECT m.id, m.name, m.policy_id, m.source, m.source_path, m.created_at,
                  (SELECT count(*) FROM points p WHERE p.machine_id = m.id) AS point_count,
                  (SELECT max(created_at) FROM points p WHERE p.machine_id = m.id) AS last_point_at,
                  m.protected_bytes
           FROM machines m ORDER BY m.name COLLATE NOCASE`,
        )
        .all() as {
        id: string
        name: string
        policy_id: string | null
        source: string
        source_path: string | null
        created_at: string
        point_count: number
        last_point_at: string | null
        protected_bytes: number
      }[]
      const disks = db.prepare(`SELECT id, name, path, position, is_system, is_excluded FROM disks WHERE machine_id = ? ORDER BY position`)
      return machines.map((m) => {
        const protectedBytes = Number.isSafeInteger(m.protected_bytes) && m.protected_bytes > 0 ? m.protected_bytes : 0
        return {
          id: m.id,
          name: m.name,
          policyId: m.policy_id,
          source: m.source === 'libvirt' || m.source === 'vbox' ? m.source : 'files',
          sourcePath: m.source_path,
          createdAt: m.created_at,
          pointCount: m.point_count,
          lastPointAt: m.last_point_at,
          protectedBytes,
          disks: (disks.all(m.id) as { id: string; name: string; path: string; position: number; is_system: number; is_excluded: number }[]).map((d) => ({
            id: d.id,
            name: d.name,
            path: d.path,
            position: d.position,
            isSystem: d.is_system !== 0,
            isExcluded: d.is_excluded !== 0,
          })),
        }
      })
    },

    async addMachine(input) {
      if (!engine.machines) unsupported('Adding a machine')
      if (input.policyId !== null) requirePolicy(input.policyId)
      const result = await engine.machines.add(host.home, input)
      emit('machinesChanged', {})
      return result
    },

    async importMachine(input) {
      if (!engine.machines) unsupported('Importing a machine')
      const result = await engine.machines.import(host.home, input)
      emit('machinesChanged', {})
      return result
    },

    async removeMachine({ machineId }) {
      requireMachine(machineId)
      // Its instant-restore copies go first: their rows cascade with the machine, and a copy that
      // cannot be removed keeps the machine (IO_ERROR names it) rather than becoming invisible.
      await removeMachineSnapshotClones(db, machineId)
      // Recovery points stay in the vault (and in the catalog, unlinked): removing protection never deletes backups.
      db.transaction(() => {
        db.prepare(`UPDATE points SET machine_id = NULL WHERE machine_id = ?`).run(machineId)
        db.prepare(`DELETE FROM machines WHERE id = ?`).run(machineId)
      })()
      emit('machinesChanged', {})
      return null
    },

    async setMachinePolicy({ machineId, policyId }) {
      requireMachine(machineId)
      if (policyId !== null) requirePolicy(policyId)
      db.prepare(`UPDATE machines SET policy_id = ? WHERE id = ?`).run(policyId, machineId)
      emit('machinesChanged', {})
      emit('policiesChanged', {})
      return null
    },

    async setDiskExcluded({ machineId, diskId, isExcluded }) {
      const info = db.prepare(`UPDATE disks SET is_excluded = ? WHERE id = ? AND machine_id = ?`).run(isExcluded ? 1 : 0, diskId, machineId)
      if (info.changes === 0) throw new EngineError('NOT_FOUND', `The disk "${diskId}" is not part of machine "${machineId}". Reload the list of machines.`)
      emit('machinesChanged', {})
      return null
    },

    async listPolicies() {
      return listPolicies()
    },

    async savePolicy({ id, name, spec }) {
      const clash = db.prepare(`SELECT id FROM policies WHERE name = ? AND id IS NOT ?`).get(name, id) as { id: string } | undefined
      if (clash) throw new EngineError('ALREADY_EXISTS', `A policy named "${name}" already exists. Choose another name.`)
      const policyId = id ?? randomUUID()
      if (id !== null) {
        const info = db.prepare(`UPDATE policies SET name = ?, spec = ? WHERE id = ?`).run(name, JSON.stringify(spec), id)
        if (info.changes === 0) throw new EngineError('NOT_FOUND', `No policy with id "${id}" exists. Reload the list of policies.`)
      } else {
        db.prepare(`INSERT INTO policies (id, name, spec, created_at) VALUES (?, ?, ?, ?)`).run(policyId, name, JSON.stringify(spec), nowIso())
      }
      emit('policiesChanged', {})
      const saved = listPolicies().find((p) => p.id === policyId)
      if (!saved) throw new EngineError('CATALOG_ERROR', 'The policy was saved but cannot be read back. Check the catalog with "tresor verify".')
      return saved
    },

    async deletePolicy({ policyId }) {
      const info = db.prepare(`DELETE FROM policies WHERE id = ?`).run(policyId)
      if (info.changes === 0) throw new EngineError('NOT_FOUND', `No policy with id "${policyId}" exists. Reload the list of policies.`)
      emit('policiesChanged', {})
      emit('machinesChanged', {})
      return null
    },

    async startBackup({ machineId }) {
      if (!engine.jobs) unsupported('Starting a backup')
      requireMachine(machineId)
      const result = await engine.jobs.startBackup(machineId)
      emit('jobsChanged', { jobId: result.jobId })
      return result
    },

    async startVerify({ readData }) {
      if (!engine.jobs) unsupported('Verifying the vault')
      const result = await engine.jobs.startVerify(readData)
      emit('jobsChanged', { jobId: result.jobId })
      return result
    },

    async startPrune() {
      if (!engine.jobs) unsupported('Pruning the vault')
      const result = await engine.jobs.startPrune()
      emit('jobsChanged', { jobId: result.jobId })
      return result
    },

    async cancelJob({ jobId }) {
      if (!engine.jobs) unsupported('Cancelling a job')
      const row = db.prepare(`SELECT state FROM jobs WHERE id = ?`).get(jobId) as { state: string } | undefined
      if (!row) throw new EngineError('NOT_FOUND', `No job with id "${jobId}" exists. Reload the list of jobs.`)
      await engine.jobs.cancel(jobId)
      emit('jobsChanged', { jobId })
      return null
    },

    async listJobs({ limit, states }) {
      const where = states && states.length > 0 ? `WHERE j.state IN (${states.map(() => '?').join(',')})` : ''
      const rows = db
        .prepare(
          `SELECT j.id, j.kind, j.state, j.machine_id, m.name AS machine_name, j.point_id, j.created_at, j.started_at, j.finished_at,
                  j.bytes_done, j.bytes_total, j.error_code, j.error_message
           FROM jobs j LEFT JOIN machines m ON m.id = j.machine_id ${where}
           ORDER BY j.created_at DESC LIMIT ?`,
        )
        .all(...(states ?? []), limit ?? 200) as JobRow[]
      return rows.map(toJobSummary)
    },

    async getJob({ jobId }): Promise<JobDetail> {
      const row = db
        .prepare(
          `SELECT j.id, j.kind, j.state, j.machine_id, m.name AS machine_name, j.point_id, j.created_at, j.started_at, j.finished_at,
                  j.bytes_done, j.bytes_total, j.error_code, j.error_message, j.log
           FROM jobs j LEFT JOIN machines m ON m.id = j.machine_id WHERE j.id = ?`,
        )
        .get(jobId) as JobRow | undefined
      if (!row) throw new EngineError('NOT_FOUND', `No job with id "${jobId}" exists. Reload the list of jobs.`)
      return { ...toJobSummary(row), log: row.log ?? '' }
    },

    async listPoints({ machineId }): Promise<PointSummary[]> {
      const vault = currentVaultRow()
      if (!vault) return []
      const rows = db
        .prepare(
          `SELECT id, vault_id, machine_id, machine_name, created_at, consistency, bytes_read, bytes_new, bytes_stored, summary
           FROM points WHERE vault_id = ? ${machineId ? 'AND machine_id = ?' : ''} ORDER BY created_at DESC`,
        )
        .all(...(machineId ? [vault.id, machineId] : [vault.id])) as {
        id: string
        vault_id: string
        machine_id: string | null
        machine_name: string
        created_at: string
        consistency: 'application' | 'crash' | 'none'
        bytes_read: number
        bytes_new: number
        bytes_stored: number
        summary: string
      }[]
      return rows.map((r) => {
        const summary = parseJson(r.summary) as { disks?: unknown } | undefined
        const disks = Array.isArray(summary?.disks)
          ? (summary.disks as unknown[]).flatMap((d) => {
              const disk = d as { name?: unknown; virtualSize?: unknown }
              return typeof disk.name === 'string' && typeof disk.virtualSize === 'number' && disk.virtualSize >= 0
                ? [{ name: disk.name, virtualSize: Math.floor(disk.virtualSize) }]
                : []
            })
          : []
        return {
          id: r.id,
          vaultId: r.vault_id,
          machineId: r.machine_id,
          machineName: r.machine_name,
          createdAt: r.created_at,
          consistency: r.consistency,
          bytesRead: r.bytes_read,
          bytesNew: r.bytes_new,
          bytesStored: r.bytes_stored,
          disks,
        }
      })
    },

    async listRestoreQueue() {
      return listRestoreQueue()
    },

    async enqueueRestore(spec) {
      if (!engine.restore) unsupported('Restoring')
      const point = db.prepare(`SELECT 1 FROM points WHERE id = ?`).get(spec.pointId)
      if (!point) throw new EngineError('POINT_NOT_FOUND', `No recovery point with id "${spec.pointId}" exists. Reload the list of recovery points.`)
      const result = await engine.restore.enqueue(host.home, spec)
      emit('restoreQueueChanged', { items: listRestoreQueue() })
      return result
    },

    async reorderRestoreQueue({ itemIds }) {
      if (!engine.restore) unsupported('Reordering the restore queue')
      await engine.restore.reorder(host.home, itemIds)
      const items = listRestoreQueue()
      emit('restoreQueueChanged', { items })
      return items
    },

    async cancelRestore({ itemId }) {
      if (!engine.restore) unsupported('Cancelling a restore')
      await engine.restore.cancel(host.home, itemId)
      emit('restoreQueueChanged', { items: listRestoreQueue() })
      return null
    },

    async chooseFiles({ purpose }) {
      if (!host.chooseFiles) throw new EngineError('UNSUPPORTED', 'File dialogs exist only in the desktop app. Type the path instead.')
      return { paths: await host.chooseFiles(purpose) }
    },

    async openExternal({ url }) {
      if (!host.openExternal) throw new EngineError('UNSUPPORTED', 'Links open in the browser directly in the web host.')
      return { opened: await host.openExternal(url) }
    },

    dispose() {
      // The catalog belongs to the caller; only our subscription ends here.
      stopEngineChanges?.()
    },
  }
  return api
}
