import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { openCatalog, type Db } from '../../../electron/engine/catalog/index.js'
import { DEFAULT_POLICY_SPEC, PolicySpec as SharedPolicySpec } from '../../../electron/shared/models.js'
import { fromSharedPolicy, getPolicy, parsePolicySpec, policyForMachine, savePolicy, toSharedPolicy } from '../../../electron/engine/policy/index.js'

describe('policies in the IPC contract\'s shape (what the app stores)', () => {
  it('reads daily, weekly and manual schedules and the scripts', () => {
    const daily = parsePolicySpec({ ...DEFAULT_POLICY_SPEC, preScript: { path: '/bin/freeze', args: ['-a'], timeoutMs: 5000 } })
    expect(daily.schedule).toMatchObject({ enabled: true, daily: ['02:00'], weekly: [], staggerMinutes: 10 })
    expect(daily.scripts).toEqual({ pre: { path: '/bin/freeze', args: ['-a'], timeoutMs: 5000 }, onError: 'warn' })
    expect(daily.retention).toEqual(DEFAULT_POLICY_SPEC.retention)
    const weekly = parsePolicySpec({ ...DEFAULT_POLICY_SPEC, schedule: { kind: 'weekly', times: ['01:00', '13:00'], weekdays: [0, 3], staggerMinutes: 0 } })
    expect(weekly.schedule.daily).toEqual([])
    expect(weekly.schedule.weekly).toEqual([
      { day: 'sun', time: '01:00' }, { day: 'sun', time: '13:00' }, { day: 'wed', time: '01:00' }, { day: 'wed', time: '13:00' },
    ])
    const manual = parsePolicySpec({ ...DEFAULT_POLICY_SPEC, schedule: { kind: 'manual', times: [], weekdays: [], staggerMinutes: 0 } })
    expect(manual.schedule.enabled).toBe(false)
  })

  it('round-trips engine → contract → engine for what the contract can hold', () => {
    for (const shared of [
      DEFAULT_POLICY_SPEC,
      { ...DEFAULT_POLICY_SPEC, schedule: { kind: 'weekly' as const, times: ['01:00'], weekdays: [1, 5], staggerMinutes: 5 }, failOnInconsistent: true, snapshotTierDays: 3 },
    ]) {
      expect(toSharedPolicy(fromSharedPolicy(shared))).toEqual(shared)
    }
  })

  it('refuses to store what the contract cannot express, and bad contract values', () => {
    expect(() => toSharedPolicy(parsePolicySpec({ scripts: { onError: 'fail' } }))).toThrow(/onError/)
    expect(() => toSharedPolicy(parsePolicySpec({ schedule: { daily: ['01:00'], weekly: [{ day: 'mon', time: '02:00' }] } }))).toThrow(/daily and weekly/)
    expect(() => toSharedPolicy(parsePolicySpec({ schedule: { daily: [], weekly: [{ day: 'mon', time: '02:00' }, { day: 'tue', time: '03:00' }] } }))).toThrow(/differ/)
    expect(() => parsePolicySpec({ ...DEFAULT_POLICY_SPEC, preScript: { path: 'relative', args: [], timeoutMs: 5000 } })).toThrow(expect.objectContaining({ code: 'INVALID_INPUT' }))
  })

  describe('in the catalog', () => {
    let dir = ''
    let db: Db
    beforeEach(async () => { dir = await mkdtemp(join(tmpdir(), 'tresor-pol-')); db = openCatalog(dir) })
    afterEach(async () => { db.close(); await rm(dir, { recursive: true, force: true }) })

    it('savePolicy stores the contract shape (the app lists it) and machines run with it', () => {
      const id = savePolicy(db, 'nightly', { schedule: { daily: ['03:30'] }, snapshotTierDays: 1, scripts: { post: { path: '/bin/thaw' } } })
      const stored = JSON.parse((db.prepare('SELECT spec FROM policies WHERE id = ?').get(id) as { spec: string }).spec) as unknown
      expect(SharedPolicySpec.safeParse(stored).success).toBe(true)
      expect(getPolicy(db, 'nightly').spec.scripts.post?.path).toBe('/bin/thaw')
      db.prepare("INSERT INTO machines (id, name, policy_id, created_at) VALUES ('m1', 'vm', ?, '2026-01-01T00:00:00Z')").run(id)
      expect(policyForMachine(db, 'm1').schedule.daily).toEqual(['03:30'])
      // What the app's editor writes is read as well.
      db.prepare('UPDATE policies SET spec = ? WHERE id = ?').run(JSON.stringify({ ...DEFAULT_POLICY_SPEC, failOnInconsistent: true }), id)
      expect(policyForMachine(db, 'm1').failOnInconsistent).toBe(true)
      expect(savePolicy(db, 'nightly', DEFAULT_POLICY_SPEC)).toBe(id)
    })
  })
})
