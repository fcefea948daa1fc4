import { afterEach, describe, expect, it } from 'vitest'
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { openCatalog, type Db } from '../../../../electron/engine/catalog/index.js'
import { createAppService, type AppService } from '../../../../electron/engine/app/index.js'
import type { EngineWiring } from '../../../../electron/engine/app/wiring.js'
import { API, type AppEventName } from '../../../../electron/shared/ipc.js'
import { DEFAULT_POLICY_SPEC } from '../../../../electron/shared/models.js'
import { EngineError } from '../../../../electron/engine/errors.js'

const cleanups: (() => void)[] = []
afterEach(() => {
  for (const c of cleanups.splice(0).reverse()) c()
})

function setup(engine: EngineWiring = {}): { service: AppService; db: Db; home: string; events: { event: AppEventName; payload: unknown }[] } {
  const home = mkdtempSync(join(tmpdir(), 'tresor-app-'))
  const db = openCatalog(home)
  const events: { event: AppEventName; payload: unknown }[] = []
  const service = createAppService({
    host: { kind: 'web', home, version: '9.9.9', hasTray: false },
    catalog: db,
    engine,
    emit: (event, payload) => events.push({ event, payload }),
  })
  cleanups.push(() => {
    service.dispose()
    db.close()
    rmSync(home, { recursive: true, force: true })
  })
  return { service, db, home, events }
}

function seed(db: Db, home: string): void {
  const vaultDir = join(home, 'vault')
  mkdirSync(vaultDir)
  const t = '2025-01-02T03:04:05.000Z'
  db.prepare(`INSERT INTO vaults (id, path, is_current, last_generation, added_at) VALUES ('v1', ?, 1, 3, ?)`).run(vaultDir, t)
  db.prepare(`INSERT INTO policies (id, name, spec, created_at) VALUES ('p1', 'Nightly', ?, ?)`).run(JSON.stringify(DEFAULT_POLICY_SPEC), t)
  db.prepare(`INSERT INTO policies (id, name, spec, created_at) VALUES ('p2', 'Broken', '{"not":"a spec"}', ?)`).run(t)
  db.prepare(`INSERT INTO machines (id, name, policy_id, created_at, protected_bytes) VALUES ('m1', 'web01', 'p1', ?, 4096)`).run(t)
  db.prepare(`INSERT INTO disks (id, machine_id, name, path, position, is_system, added_at) VALUES ('d1', 'm1', 'system', '/vms/web01.qcow2', 0, 1, ?)`).run(t)
  db.prepare(
    `INSERT INTO points (id, vault_id, machine_id, machine_name, created_at, consistency, bytes_read, bytes_new, bytes_stored, summary) VALUES ('pt1', 'v1', 'm1', 'web01', ?, 'crash', 10, 5, 3, ?)`,
  ).run(t, JSON.stringify({ disks: [{ name: 'system', virtualSize: 1024 }, { bogus: true }] }))
  db.prepare(`INSERT INTO jobs (id, kind, state, machine_id, created_at, error_code, error_message, log) VALUES ('j1', 'backup', 'failed', 'm1', ?, 'NOT_A_CODE', 'odd', 'line')`).run(t)
  db.prepare(`INSERT INTO restore_queue (id, point_id, spec, position, state, created_at) VALUES ('q1', 'pt1', ?, 0, 'queued', ?)`).run(
    JSON.stringify({ pointId: 'pt1', mode: 'folder', targetPath: '/srv/r', disks: ['system'], format: 'raw', overwrite: false }),
    t,
  )
}

describe('app service', () => {
  it('answers every listing method with data that matches the contract output schema', async () => {
    const { service, db, home } = setup()
    seed(db, home)
    const calls: [keyof typeof API, unknown][] = [
      ['getAppInfo', {}],
      ['getSettings', {}],
      ['getVaultStatus', {}],
      ['listMachines', {}],
      ['listPolicies', {}],
      ['listJobs', {}],
      ['getJob', { jobId: 'j1' }],
      ['listPoints', {}],
      ['listRestoreQueue', {}],
    ]
    for (const [m, input] of calls) {
      const value = await (service[m] as (i: unknown) => Promise<unknown>)(input)
      const check = API[m].output.safeParse(value)
      expect(check.success, `${m}: ${JSON.stringify(check.error?.issues)}`).toBe(true)
    }
    const machines = await service.listMachines({})
    expect(machines[0]).toMatchObject({ name: 'web01', pointCount: 1, protectedBytes: 4096, disks: [{ name: 'system', isSystem: true }] })
    // A policy whose spec does not parse is left out, never guessed.
    expect((await service.listPolicies({})).map((p) => p.name)).toEqual(['Nightly'])
    expect((await service.listPoints({})).at(0)?.disks).toEqual([{ name: 'system', virtualSize: 1024 }])
    expect((await service.getJob({ jobId: 'j1' })).error).toEqual({ code: 'INTERNAL', message: 'odd' })
    expect((await service.listRestoreQueue({}))[0]).toMatchObject({ targetDir: '/srv/r', disk: 'system', format: 'raw' })
    expect(await service.getVaultStatus({})).toMatchObject({ state: 'locked', vaultId: 'v1', pointCount: 1, hasPassphrase: true, hasKeychainKey: false })
  })

  it('persists settings and emits settingsChanged', async () => {
    const { service, events } = setup()
    expect((await service.getSettings({})).language).toBe('system')
    await service.updateSettings({ language: 'de', schedulesPaused: true })
    expect(await service.getSettings({})).toMatchObject({ language: 'de', schedulesPaused: true })
    expect(events.at(-1)).toMatchObject({ event: 'settingsChanged', payload: { language: 'de' } })
  })

  it('creates, renames and deletes policies; refuses duplicate names', async () => {
    const { service, db, home } = setup()
    seed(db, home)
    const created = await service.savePolicy({ id: null, name: 'Weekly', spec: DEFAULT_POLICY_SPEC })
    expect(created).toMatchObject({ name: 'Weekly', machineCount: 0 })
    await expect(service.savePolicy({ id: null, name: 'Nightly', spec: DEFAULT_POLICY_SPEC })).rejects.toMatchObject({ code: 'ALREADY_EXISTS' })
    expect(await service.savePolicy({ id: created.id, name: 'Weekend', spec: DEFAULT_POLICY_SPEC })).toMatchObject({ id: created.id, name: 'Weekend' })
    await service.deletePolicy({ policyId: created.id })
    await expect(service.deletePolicy({ policyId: created.id })).rejects.toMatchObject({ code: 'NOT_FOUND' })
  })

  it('removes a machine without deleting its recovery points', async () => {
    const { service, db, home, events } = setup()
    seed(db, home)
    await service.removeMachine({ machineId: 'm1' })
    expect(await service.listMachines({})).toEqual([])
    expect((await service.listPoints({})).map((p) => p.id)).toEqual(['pt1'])
    expect(events.map((e) => e.event)).toContain('machinesChanged')
    await expect(service.removeMachine({ machineId: 'm1' })).rejects.toMatchObject({ code: 'MACHINE_NOT_FOUND' })
  })

  it('answers UNSUPPORTED (never fake data) for engine parts that are not wired', async () => {
    const { service, db, home } = setup({})
    seed(db, home)
    for (const call of [
      () => service.startBackup({ machineId: 'm1' }),
      () => service.startVerify({ readData: true }),
      () => service.startPrune({}),
      () => service.addMachine({ name: 'x', diskPaths: ['/x'], policyId: null }),
      () => service.initVault({ path: '/v', passphrase: 'p', storeInKeychain: false }),
      () => service.enqueueRestore({ pointId: 'pt1', targetDir: '/r', disk: null, format: 'same' }),
      () => service.chooseFiles({ purpose: 'disks' }),
      () => service.openExternal({ url: 'https://github.com/' }),
    ]) {
      await expect(call()).rejects.toSatisfy((e: unknown) => e instanceof EngineError && e.code === 'UNSUPPORTED')
    }
  })

  it('calls the wired engine and emits the change events', async () => {
    const started: string[] = []
    const { service, db, home, events } = setup({
      jobs: {
        startBackup: async (machineId) => {
          started.push(machineId)
          return { jobId: 'job-42' }
        },
        startVerify: async (readData) => {
          started.push(`verify:${readData}`)
          return { jobId: 'job-43' }
        },
        startPrune: async () => {
          started.push('prune')
          return { jobId: 'job-44' }
        },
        cancel: async () => {},
      },
    })
    seed(db, home)
    expect(await service.startBackup({ machineId: 'm1' })).toEqual({ jobId: 'job-42' })
    expect(started).toEqual(['m1'])
    expect(events.at(-1)).toEqual({ event: 'jobsChanged', payload: { jobId: 'job-42' } })
    await expect(service.startBackup({ machineId: 'nope' })).rejects.toMatchObject({ code: 'MACHINE_NOT_FOUND' })
    expect(await service.startVerify({ readData: false })).toEqual({ jobId: 'job-43' })
    expect(events.at(-1)).toEqual({ event: 'jobsChanged', payload: { jobId: 'job-43' } })
    expect(await service.startPrune({})).toEqual({ jobId: 'job-44' })
    expect(events.at(-1)).toEqual({ event: 'jobsChanged', payload: { jobId: 'job-44' } })
    expect(started).toEqual(['m1', 'verify:false', 'prune'])
  })

  it('reports a host-provided status with booleans only', async () => {
    const { service, db, home } = setup({
      vault: {
        init: async () => {},
        open: async () => {},
        unlock: async () => {},
        lock: async () => {},
        keyFacts: async () => ({ isOpen: true, hasKeychainKey: true, hasRecoveryKey: false, generation: 9 }),
      },
    })
    seed(db, home)
    const status = await service.getVaultStatus({})
    expect(status).toMatchObject({ state: 'open', hasKeychainKey: true, generation: 9 })
    expect(Object.values(status).every((v) => v === null || ['string', 'number', 'boolean'].includes(typeof v))).toBe(true)
  })
})
