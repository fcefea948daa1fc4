/**
 * Fills the app service's engine slots with what the engine areas publish: machines (backup area),
 * jobs (workers: JobSupervisor with the host's launcher), the restore queue (restore area) and the
 * vault and its keys (vault + keys areas). Hosts differ only in the launcher: a utility process in
 * Electron, a child process under the web host.
 *
 * The supervisor's and queue's events are forwarded as contract events (`jobProgress`,
 * `jobFinished`, `jobsChanged`, `restoreQueueChanged`, `vaultStatusChanged` after a backup).
 */
import { resolve } from 'node:path'
import type { Db } from '../catalog/index.js'
import { getCurrentVault, registerVault } from '../catalog/vaults.js'
import { EngineError } from '../errors.js'
import { addMachine, importLibvirt, importVbox, runPendingPostScripts } from '../backup/index.js'
import { JobSupervisor, type JobLauncher } from '../workers/supervisor.js'
import { isOwnerAlive } from '../workers/jobStore.js'
import { RestoreQueue } from '../restore/index.js'
import { createVault, readVaultHeader } from '../vault/index.js'
import { checkNewPassphrase, defaultKeyStore, generateMasterKey, openCurrentVault, resolveVaultKey, wrapWithPassphrase, type KeyStore } from '../keys/index.js'
import type { EmitEvent } from '../../shared/ipc.js'
import type { RestoreSpec } from '../../shared/models.js'
import type { EngineWiring } from './wiring.js'
import { createCatalogScheduler } from '../policy/index.js'

export interface EngineWiringOptions {
  home: string
  /** The host's open catalog (shared with the app service). */
  catalog: Db
  launcher: JobLauncher
  emit: EmitEvent
  keyStore?: KeyStore
  /** Restores running at once. Default 1. */
  restoreConcurrency?: number
  /** Run policy schedules (default true; tests of other flows turn it off). */
  runSchedules?: boolean
  /**
   * Apply retention after backups (default true): once a backup succeeded and no other backup is
   * queued or running, a prune job (policy/prune.ts) deletes the points the machines' retention
   * lets go and frees their space.
   */
  pruneAfterBackup?: boolean
}

export interface WiredEngine {
  engine: EngineWiring
  supervisor: JobSupervisor
  restoreQueue: RestoreQueue
  /** Cancels running jobs, stops serving the queue. Call before closing the catalog. */
  dispose(): Promise<void>
}

/** The contract's restore request as the restore area's job input: one folder, chosen disks. */
export function toRestoreJobInput(spec: RestoreSpec) {
  return {
    pointId: spec.pointId,
    mode: 'folder' as const,
    targetPath: spec.targetDir,
    disks: spec.disk === null ? [] : [spec.disk],
    ...(spec.format !== 'same' ? { format: spec.format } : {}),
    overwrite: false,
  }
}

export function createEngineWiring(options: EngineWiringOptions): WiredEngine {
  const { home, catalog: db, emit } = options
  const keyStore = options.keyStore ?? defaultKeyStore()
  const supervisor = new JobSupervisor({ db, home, launcher: options.launcher })
  /** Jobs of these kinds queued, or running in a live process (any process sharing this catalog; a crashed owner's row does not count). */
  const busy = (...kinds: string[]): boolean =>
    (db.prepare(`SELECT state, owner FROM jobs WHERE kind IN (${kinds.map(() => '?').join(',')}) AND state IN ('queued','running')`).all(...kinds) as Array<{ state: string; owner: string | null }>)
      .some((j) => j.state === 'queued' || isOwnerAlive(j.owner))
  // Restores wait for a prune (their read lock would make them wait anyway; held here they stay queued, visibly).
  const restoreQueue = new RestoreQueue({ db, supervisor, concurrency: options.restoreConcurrency ?? 1, holdWhile: () => busy('prune') })

  const stopSupervisor = supervisor.on((e) => {
    switch (e.type) {
      case 'progress':
        emit('jobProgress', e.progress)
        break
      case 'state':
        emit('jobsChanged', { jobId: e.jobId })
        break
      case 'finished':
        emit('jobFinished', e.outcome)
        if (e.outcome.kind === 'backup' || e.outcome.kind === 'prune') emit('machinesChanged', {})
        break
      default:
        break
    }
  })
  const changeListeners = new Set<(what: 'restoreQueue') => void>()
  const stopQueue = restoreQueue.on(() => {
    // The service re-reads the queue in the contract's shape and emits restoreQueueChanged.
    for (const l of changeListeners) l('restoreQueue')
  })

  async function cacheKey(vaultId: string, masterKey: Buffer, generation?: number): Promise<void> {
    await keyStore.setKey(vaultId, masterKey)
    if (generation !== undefined) await keyStore.setGeneration(vaultId, generation)
  }

  const engine: EngineWiring = {
    onChange(listener) {
      changeListeners.add(listener)
      return () => changeListeners.delete(listener)
    },
    machines: {
      async add(_home, input) {
        const m = addMachine(db, { name: input.name, policyId: input.policyId, disks: input.diskPaths.map((path) => ({ path })) })
        return { machineId: m.id }
      },
      async import(_home, input) {
        const imported = input.kind === 'libvirt' ? await importLibvirt(input.path) : await importVbox(input.path)
        const m = addMachine(db, { name: imported.name, source: imported.source, sourcePath: imported.sourcePath, disks: imported.disks })
        return { machineId: m.id }
      },
    },
    jobs: {
      async startBackup(machineId) {
        const jobId = supervisor.submit({ kind: 'backup', input: { machineId } }, { machineId })
        return { jobId }
      },
      async startVerify(readData) {
        return { jobId: supervisor.submit({ kind: 'verify', input: { readData } }) }
      },
      async startPrune() {
        // queued restores hold while it runs (holdWhile above), like the prune after a backup
        return { jobId: supervisor.submit({ kind: 'prune', input: {} }) }
      },
      async cancel(jobId) {
        const entry = db.prepare(`SELECT id FROM restore_queue WHERE job_id = ?`).get(jobId) as { id: string } | undefined
        if (entry) await restoreQueue.cancel(entry.id)
        else await supervisor.cancel(jobId)
      },
    },
    restore: {
      async enqueue(_home, spec) {
        const entry = restoreQueue.enqueue(toRestoreJobInput(spec))
        return { itemId: entry.id }
      },
      async reorder(_home, itemIds) {
        restoreQueue.reorder(itemIds)
      },
      async cancel(_home, itemId) {
        await restoreQueue.cancel(itemId)
      },
    },
    vault: {
      async init(_home, input) {
        const path = resolve(input.path)
        checkNewPassphrase(input.passphrase)
        const masterKey = generateMasterKey()
        try {
          const slot = await wrapWithPassphrase(masterKey, input.passphrase)
          const { vaultId } = await createVault(path, { masterKey, keySlots: { passphrase: slot } })
          registerVault(db, { id: vaultId, path, lastGeneration: 1 }, { makeCurrent: true })
          if (input.storeInKeychain) await cacheKey(vaultId, masterKey, 1).catch(() => undefined)
        } finally {
          masterKey.fill(0)
        }
      },
      async open(_home, input) {
        const env: NodeJS.ProcessEnv = input.passphrase === null ? {} : { TRESOR_PASSPHRASE: input.passphrase }
        const session = await openCurrentVault(home, {
          vaultOverride: resolve(input.path),
          makeCurrent: true,
          interactive: false,
          catalog: db,
          keyStore: input.storeInKeychain ? keyStore : new NoCacheKeyStore(keyStore),
          env,
          rebuildPoints: true,
        })
        await session.close()
      },
      async unlock(_home, input) {
        const row = getCurrentVault(db)
        if (!row) throw new EngineError('VAULT_NOT_CONFIGURED', 'No vault is set up yet. Create or open a vault first.')
        const header = await readVaultHeader(row.path)
        const key = await resolveVaultKey({
          vaultId: header.vaultId,
          keySlots: header.keySlots,
          keyStore,
          env: { TRESOR_PASSPHRASE: input.passphrase },
          interactive: false,
          skipKeychain: true,
          cacheInKeychain: input.storeInKeychain,
        })
        key.masterKey.fill(0)
        if (input.storeInKeychain && !key.inKeychain) {
          throw new EngineError(
            'KEYCHAIN_UNAVAILABLE',
            `The passphrase is right, but the system keychain is not available (${key.keychain.reason ?? key.keychain.backend}), so the key cannot be remembered for scheduled backups.`,
          )
        }
      },
      async lock() {
        const row = getCurrentVault(db)
        if (row) await keyStore.deleteKey(row.id)
      },
      async keyFacts(_home, vaultId) {
        const row = getCurrentVault(db)
        const key = await keyStore.getKey(vaultId).catch(() => undefined)
        const hasKeychainKey = key !== undefined
        key?.fill(0)
        let hasRecoveryKey = false
        if (row) {
          try {
            hasRecoveryKey = (await readVaultHeader(row.path)).keySlots.recovery != null
          } catch {
            // an unreadable header shows as "no recovery key"; opening the vault reports the damage
          }
        }
        return { isOpen: hasKeychainKey, hasKeychainKey, hasRecoveryKey, generation: row?.lastGeneration ?? 0 }
      },
    },
  }

  // After a restart: interrupted restores go back to the queue, other orphaned jobs are marked
  // JOB_CRASHED; then queued restores start.
  // A damaged queue row must not keep the app from starting: the queue view still shows it.
  try {
    restoreQueue.recover()
    restoreQueue.pump()
  } catch (err) {
    process.emitWarning(`The restore queue could not be resumed: ${err instanceof Error ? err.message : String(err)}`)
  }

  // Scheduled backups: each machine's policy schedule, missed slots run once, never twice
  // (engine/policy/scheduler.ts). The "Pause schedules" setting (tray, Settings view) is read on
  // every slot, so pausing takes effect at once; a slot passed while paused counts as handled.
  const schedulesPaused = (): boolean => {
    const row = db.prepare(`SELECT value FROM settings WHERE key = 'app.schedulesPaused'`).get() as { value: string } | undefined
    return row?.value === 'true'
  }
  const scheduler = options.runSchedules === false
    ? undefined
    : createCatalogScheduler(db, {
        // a slot is deferred while this machine's backup or any prune runs (it would wait for the prune's lock)
        isRunning: (machineId) =>
          busy('prune') ||
          db.prepare(`SELECT 1 FROM jobs WHERE kind = 'backup' AND machine_id = ? AND state IN ('queued','running') LIMIT 1`).get(machineId) !== undefined,
        startBackup: (machineId) => {
          if (schedulesPaused()) return
          supervisor.submit({ kind: 'backup', input: { machineId } }, { machineId })
        },
        onError: (err) => process.emitWarning(`Scheduled backup: ${err instanceof Error ? err.message : String(err)}`),
      })
  const stopScheduler = scheduler?.start()
  // Jobs queued by another process (`tresor backup --detach`) run here; checked now and then.
  const startQueued = (): void => {
    try {
      supervisor.startQueued()
    } catch (err) {
      process.emitWarning(`Queued jobs: ${err instanceof Error ? err.message : String(err)}`)
    }
  }
  startQueued()
  const queuedTimer = setInterval(startQueued, 15_000)
  queuedTimer.unref()
  // A post-script owed by a job killed between its pre- and post-script runs now (thaw the VM).
  void runPendingPostScripts(db, (line) => process.emitWarning(line)).catch((err: unknown) =>
    process.emitWarning(`Pending post-scripts: ${err instanceof Error ? err.message : String(err)}`))
  const stopTick = supervisor.on((e) => {
    if (e.type !== 'finished') return
    if (e.outcome.kind === 'prune') {
      // what waited for the prune goes on
      scheduler?.tick()
      restoreQueue.pump()
      return
    }
    if (e.outcome.kind !== 'backup') return
    // A slot deferred by a running backup starts as soon as that backup ends.
    scheduler?.tick()
    // Retention after a successful backup, once the vault is quiet: no backup, restore, verify or
    // prune queued or running (a backup still going triggers it when it ends).
    if (options.pruneAfterBackup !== false && e.outcome.state === 'succeeded' && !busy('backup', 'prune', 'restore', 'verify')) {
      try {
        supervisor.submit({ kind: 'prune', input: {} })
      } catch (err) {
        process.emitWarning(`Retention after a backup: ${err instanceof Error ? err.message : String(err)}`)
      }
    }
  })

  return {
    engine,
    supervisor,
    restoreQueue,
    async dispose() {
      stopScheduler?.dispose()
      clearInterval(queuedTimer)
      stopTick()
      stopQueue()
      restoreQueue.dispose()
      await supervisor.dispose()
      stopSupervisor()
    },
  }
}

/** A key store that reads from `inner` but never stores (the user chose not to remember the key). */
class NoCacheKeyStore implements KeyStore {
  constructor(private readonly inner: KeyStore) {}
  get backend() {
    return this.inner.backend
  }
  state() {
    return this.inner.state()
  }
  getKey(vaultId: string) {
    return this.inner.getKey(vaultId)
  }
  async setKey(): Promise<void> {}
  deleteKey(vaultId: string) {
    return this.inner.deleteKey(vaultId)
  }
  getGeneration(vaultId: string) {
    return this.inner.getGeneration(vaultId)
  }
  setGeneration(vaultId: string, generation: number) {
    return this.inner.setGeneration(vaultId, generation)
  }
}
