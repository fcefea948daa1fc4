import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { createPinia, setActivePinia } from 'pinia'
import { AppError, api, setTransport } from '../../../renderer/src/api/index.js'
import { useMachinesStore } from '../../../renderer/src/stores/machines.js'
import { useJobsStore } from '../../../renderer/src/stores/jobs.js'
import { useRestoreQueueStore } from '../../../renderer/src/stores/restoreQueue.js'
import { useNotificationsStore } from '../../../renderer/src/stores/notifications.js'
import { useAppStore } from '../../../renderer/src/stores/app.js'
import { DEFAULT_SETTINGS, type JobSummary, type MachineSummary, type RestoreQueueItem, type VaultStatus } from '../../../electron/shared/models.js'
import { FakeTransport } from './fakeTransport.js'

const machine: MachineSummary = {
  id: 'm1',
  name: 'web01',
  policyId: null,
  source: 'files',
  sourcePath: null,
  createdAt: '2025-01-01T00:00:00.000Z',
  disks: [],
  pointCount: 0,
  lastPointAt: null,
  protectedBytes: 100,
}
const job = (id: string, state: JobSummary['state']): JobSummary => ({
  id,
  kind: 'backup',
  state,
  machineId: 'm1',
  machineName: 'web01',
  pointId: null,
  createdAt: '2025-01-01T00:00:00.000Z',
  startedAt: null,
  finishedAt: null,
  bytesDone: 0,
  bytesTotal: 0,
  error: null,
})
const item = (id: string, position: number): RestoreQueueItem => ({
  id,
  jobId: null,
  pointId: 'p',
  machineName: 'web01',
  position,
  state: 'queued',
  createdAt: '2025-01-01T00:00:00.000Z',
  targetDir: '/r',
  disk: null,
  format: 'same',
})

beforeEach(() => setActivePinia(createPinia()))
afterEach(() => setTransport(undefined))

describe('API client', () => {
  it('unwraps ok results and throws AppError with the code otherwise', async () => {
    setTransport(
      new FakeTransport({
        listMachines: () => ({ ok: true, value: [machine] }),
        removeMachine: () => ({ ok: false, error: { code: 'MACHINE_NOT_FOUND', message: 'gone' } }),
      }),
    )
    expect(await api.listMachines()).toEqual([machine])
    const err = await api.removeMachine({ machineId: 'x' }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(AppError)
    expect(err).toMatchObject({ code: 'MACHINE_NOT_FOUND', message: 'gone' })
  })

  it('always sends an object input', async () => {
    const t = new FakeTransport({ listMachines: () => ({ ok: true, value: [] }) })
    setTransport(t)
    await api.listMachines()
    expect(t.calls).toEqual([{ method: 'listMachines', input: {} }])
  })
})

describe('stores', () => {
  it('machines: loads, and reports failures through the notifications store', async () => {
    let fail = false
    setTransport(
      new FakeTransport({
        listMachines: () => (fail ? { ok: false, error: { code: 'CATALOG_ERROR', message: 'The catalog is damaged.' } } : { ok: true, value: [machine] }),
      }),
    )
    const machines = useMachinesStore()
    await machines.load()
    expect(machines.machines).toEqual([machine])
    expect(machines.protectedBytes).toBe(100)
    fail = true
    await machines.load()
    const notices = useNotificationsStore()
    expect(notices.notices).toMatchObject([{ kind: 'error', code: 'CATALOG_ERROR', message: 'The catalog is damaged.' }])
    expect(machines.isLoading).toBe(false)
  })

  it('a CANCELLED outcome opens no notice', async () => {
    setTransport(new FakeTransport({ startBackup: () => ({ ok: false, error: { code: 'CANCELLED', message: 'cancelled' } }) }))
    expect(await useJobsStore().backUp('m1')).toBeNull()
    expect(useNotificationsStore().notices).toEqual([])
  })

  it('jobs: follows progress events and reloads when a job finishes; connect() returns its cleanup', async () => {
    let jobs = [job('j1', 'running')]
    const t = new FakeTransport({ listJobs: () => ({ ok: true, value: jobs }) })
    setTransport(t)
    const store = useJobsStore()
    const stop = store.connect()
    await store.load()
    expect(store.running.map((j) => j.id)).toEqual(['j1'])
    t.push('jobProgress', { jobId: 'j1', kind: 'backup', phase: 'reading', bytesDone: 5, bytesTotal: 10, bytesPerSecond: 1, etaSeconds: 5, currentDisk: 'system' })
    expect(store.progressById.j1?.bytesDone).toBe(5)
    jobs = [job('j1', 'succeeded')]
    t.push('jobFinished', { jobId: 'j1', kind: 'backup', state: 'succeeded', pointId: 'p', error: null })
    expect(store.progressById.j1).toBeUndefined()
    await expect.poll(() => store.jobs[0]?.state).toBe('succeeded')
    stop()
    expect(t.listenerCount()).toBe(0)
  })

  it('restore queue: moving an item sends the new order', async () => {
    const t = new FakeTransport({
      listRestoreQueue: () => ({ ok: true, value: [item('a', 0), item('b', 1), item('c', 2)] }),
      reorderRestoreQueue: (input) => ({ ok: true, value: (input as { itemIds: string[] }).itemIds.map((id, i) => item(id, i)) }),
    })
    setTransport(t)
    const queue = useRestoreQueueStore()
    await queue.load()
    await queue.move('c', -1)
    expect(t.calls.at(-1)).toEqual({ method: 'reorderRestoreQueue', input: { itemIds: ['a', 'c', 'b'] } })
    expect(queue.items.map((i) => i.id)).toEqual(['a', 'c', 'b'])
    await queue.move('a', -1) // already first: nothing sent
    expect(t.calls.at(-1)?.method).toBe('reorderRestoreQueue')
    expect(t.calls.filter((c) => c.method === 'reorderRestoreQueue')).toHaveLength(1)
  })

  it('app: loads info, settings and vault status; follows vault and settings events', async () => {
    const status: VaultStatus = {
      state: 'locked',
      vaultId: 'v',
      path: '/v',
      backend: 'local',
      hasPassphrase: true,
      hasKeychainKey: false,
      hasRecoveryKey: false,
      pointCount: 0,
      generation: 1,
    }
    const t = new FakeTransport({
      getAppInfo: () => ({
        ok: true,
        value: { name: 'Tresor', version: '1', host: 'web', platform: 'linux', home: '/h', features: { fileDialogs: false, openExternal: false, tray: false } },
      }),
      getSettings: () => ({ ok: true, value: DEFAULT_SETTINGS }),
      getVaultStatus: () => ({ ok: true, value: status }),
    })
    setTransport(t)
    const app = useAppStore()
    const stop = app.connect()
    await app.load()
    expect(app.isLoaded).toBe(true)
    expect(app.vaultState).toBe('locked')
    t.push('vaultStatusChanged', { ...status, state: 'open' })
    expect(app.vaultState).toBe('open')
    t.push('settingsChanged', { ...DEFAULT_SETTINGS, schedulesPaused: true })
    expect(app.settings.schedulesPaused).toBe(true)
    stop()
  })
})
