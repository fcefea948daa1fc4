import { describe, expect, it, vi } from 'vitest'
import fc from 'fast-check'
import { API, API_METHOD_NAMES, API_METHODS, EVENTS, EVENT_NAMES, dispatch, isApiMethod, parseInput, type AppApi } from '../../../electron/shared/ipc.js'
import { DEFAULT_POLICY_SPEC, DEFAULT_SETTINGS, PolicySpec, Settings } from '../../../electron/shared/models.js'
import { isCleanAbsolutePath } from '../../../electron/shared/schemas.js'
import { ERROR_CODES } from '../../../electron/shared/errors.js'

const toWire = () => ({ code: 'INTERNAL' as const, message: 'boom' })

/** A valid input for every method (kept here so a new method without one fails the test below). */
const VALID: { [M in keyof typeof API]: unknown } = {
  getAppInfo: {},
  getSettings: {},
  updateSettings: { language: 'de' },
  getVaultStatus: {},
  initVault: { path: '/media/backup/vault', passphrase: 'correct horse', storeInKeychain: true },
  openVault: { path: '/media/backup/vault', passphrase: null, storeInKeychain: false },
  unlockVault: { passphrase: 'pass', storeInKeychain: false },
  lockVault: {},
  listMachines: {},
  addMachine: { name: 'web01', diskPaths: ['/var/lib/vms/web01.qcow2'], policyId: null },
  importMachine: { kind: 'libvirt', path: '/etc/libvirt/qemu/web01.xml' },
  removeMachine: { machineId: 'm-1' },
  setMachinePolicy: { machineId: 'm-1', policyId: 'p-1' },
  setDiskExcluded: { machineId: 'm-1', diskId: 'd-1', isExcluded: true },
  listPolicies: {},
  savePolicy: { id: null, name: 'Nightly', spec: DEFAULT_POLICY_SPEC },
  deletePolicy: { policyId: 'p-1' },
  startBackup: { machineId: 'm-1' },
  startVerify: { readData: true },
  startPrune: {},
  cancelJob: { jobId: 'j-1' },
  listJobs: { limit: 10 },
  getJob: { jobId: 'j-1' },
  listPoints: { machineId: null },
  listRestoreQueue: {},
  enqueueRestore: { pointId: 'p-1', targetDir: 'C:\\restore\\web01', disk: 0, format: 'vhdx' },
  reorderRestoreQueue: { itemIds: ['a', 'b'] },
  cancelRestore: { itemId: 'a' },
  chooseFiles: { purpose: 'disks' },
  openExternal: { url: 'https://github.com/' },
}

describe('the IPC contract', () => {
  it('declares every method once, with input and output schemas', () => {
    expect(Object.keys(API_METHODS).sort()).toEqual([...API_METHOD_NAMES].sort())
    expect(Object.keys(VALID).sort()).toEqual([...API_METHOD_NAMES].sort())
    for (const m of API_METHOD_NAMES) {
      expect(typeof API[m].input.safeParse, m).toBe('function')
      expect(typeof API[m].output.safeParse, m).toBe('function')
    }
    expect(EVENT_NAMES).toEqual(expect.arrayContaining(['jobProgress', 'jobFinished', 'restoreQueueChanged', 'vaultStatusChanged']))
    for (const e of EVENT_NAMES) expect(typeof EVENTS[e].safeParse).toBe('function')
  })

  it('accepts a valid input for every method', () => {
    for (const m of API_METHOD_NAMES) {
      const r = parseInput(m, VALID[m])
      expect(r.ok, `${m}: ${JSON.stringify(r)}`).toBe(true)
    }
  })

  it('treats a missing input as {} for methods without required fields only', () => {
    expect(parseInput('listMachines', undefined).ok).toBe(true)
    expect(parseInput('listJobs', undefined).ok).toBe(true)
    expect(parseInput('removeMachine', undefined).ok).toBe(false)
  })

  it('rejects an extra key, including __proto__ and constructor, on every method', () => {
    for (const m of API_METHOD_NAMES) {
      const base = VALID[m] as Record<string, unknown>
      expect(parseInput(m, { ...base, extra: 1 }).ok, `${m} extra`).toBe(false)
      const proto = JSON.parse(`{"__proto__": {"isAdmin": true}}`) as Record<string, unknown>
      expect(parseInput(m, Object.assign(proto, base)).ok, `${m} __proto__`).toBe(false)
      expect(parseInput(m, { ...base, constructor: { prototype: {} } }).ok, `${m} constructor`).toBe(false)
    }
    expect(({} as Record<string, unknown>).isAdmin).toBeUndefined()
  })

  it('rejects non-object inputs on every method', () => {
    for (const m of API_METHOD_NAMES) {
      for (const bad of [null, 42, 'x', [], true]) {
        const r = parseInput(m, bad)
        expect(r.ok, `${m} ${JSON.stringify(bad)}`).toBe(false)
        if (!r.ok) expect(r.error.code).toBe('INVALID_INPUT')
      }
    }
  })

  it('rejects wrong types, huge strings, NUL and dot-dot in every string field', () => {
    for (const m of API_METHOD_NAMES) {
      const base = VALID[m] as Record<string, unknown>
      for (const [key, value] of Object.entries(base)) {
        if (typeof value !== 'string') continue
        for (const bad of [42, null, { a: 1 }, 'x'.repeat(100_000), `${value}\u0000`, '../../etc/passwd']) {
          const r = parseInput(m, { ...base, [key]: bad })
          // ".." is data in free text (passphrases, names, URLs); ids, paths and enums reject it.
          if (bad === '../../etc/passwd' && ['passphrase', 'name', 'url'].includes(key)) continue
          // Nullable fields (policyId: "no policy") accept null by design.
          if (bad === null && API[m].input.safeParse({ ...base, [key]: null }).success && ['policyId', 'passphrase'].includes(key)) continue
          expect(r.ok, `${m}.${key} = ${String(bad).slice(0, 30)}`).toBe(false)
          if (!r.ok) expect(r.error.message.length).toBeLessThan(1000)
        }
      }
    }
  })

  it('accepts only clean absolute paths (POSIX and Windows)', () => {
    for (const ok of ['/', '/a/b', 'C:\\x', 'c:/x/y', '\\\\server\\share\\x', '/a/.b/..c']) expect(isCleanAbsolutePath(ok), ok).toBe(true)
    for (const bad of ['', 'a/b', './a', '/a/../b', '/a/./b', 'C:x', '..', '\\\\server', 'C:\\a\\..\\b']) expect(isCleanAbsolutePath(bad), bad).toBe(false)
  })

  it('bounds numbers and enums', () => {
    expect(parseInput('updateSettings', { maxParallelDisks: 0 }).ok).toBe(false)
    expect(parseInput('updateSettings', { maxParallelDisks: 1.5 }).ok).toBe(false)
    expect(parseInput('updateSettings', { maxParallelDisks: Number.NaN }).ok).toBe(false)
    expect(parseInput('updateSettings', { language: 'fr' }).ok).toBe(false)
    expect(parseInput('listJobs', { limit: 1e9 }).ok).toBe(false)
    expect(parseInput('savePolicy', { ...(VALID.savePolicy as object), spec: { ...DEFAULT_POLICY_SPEC, schedule: { ...DEFAULT_POLICY_SPEC.schedule, times: ['24:00'] } } }).ok).toBe(false)
  })

  it('never throws and answers INVALID_INPUT for arbitrary inputs (fuzz)', () => {
    let calls = 0
    let rejected = 0
    fc.assert(
      fc.property(fc.constantFrom(...API_METHOD_NAMES), fc.anything({ withObjectString: true, withNullPrototype: true, withBigInt: true }), (m, input) => {
        calls++
        const r = parseInput(m, input)
        if (!r.ok) {
          rejected++
          expect(r.error.code).toBe('INVALID_INPUT')
        }
      }),
      { numRuns: 3000 },
    )
    expect(calls).toBe(3000)
    expect(rejected).toBeGreaterThan(0)
  })

  it('dispatch validates before the implementation runs and turns throws into values', async () => {
    const impl = { removeMachine: vi.fn(async () => null), getSettings: vi.fn(async () => { throw new Error('secret detail') }) } as unknown as AppApi
    expect(await dispatch(impl, 'removeMachine', { machineId: 7 }, toWire)).toMatchObject({ ok: false, error: { code: 'INVALID_INPUT' } })
    expect((impl.removeMachine as ReturnType<typeof vi.fn>).mock.calls.length).toBe(0)
    expect(await dispatch(impl, 'removeMachine', { machineId: 'm' }, toWire)).toEqual({ ok: true, value: null })
    expect(await dispatch(impl, 'getSettings', {}, toWire)).toEqual({ ok: false, error: { code: 'INTERNAL', message: 'boom' } })
    for (const name of ['constructor', '__proto__', 'toString', 'nope', 42, null]) {
      expect(isApiMethod(name)).toBe(false)
      expect(await dispatch(impl, name, {}, toWire)).toMatchObject({ ok: false, error: { code: 'INVALID_INPUT' } })
    }
  })

  it('ships defaults that satisfy their own schemas', () => {
    expect(Settings.parse(DEFAULT_SETTINGS)).toEqual(DEFAULT_SETTINGS)
    expect(PolicySpec.parse(DEFAULT_POLICY_SPEC)).toEqual(DEFAULT_POLICY_SPEC)
    expect(ERROR_CODES).toContain('DISCONNECTED')
  })
})
