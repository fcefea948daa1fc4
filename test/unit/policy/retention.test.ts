import { describe, expect, it } from 'vitest'
import fc from 'fast-check'
import { parsePolicySpec, selectPointsToPrune, selectRetention, type Retention } from '../../../electron/engine/policy/index.js'

const rule = (r: Partial<Retention>): Retention => ({ last: 0, daily: 0, weekly: 0, monthly: 0, yearly: 0, ...r })
const pts = (dates: string[]) => dates.map((d, i) => ({ id: `p${i}`, createdAt: d }))

describe('selectRetention', () => {
  it('keeps the newest point of each of the last N days that have points', () => {
    const points = pts(['2026-05-01T10:00:00Z', '2026-05-01T22:00:00Z', '2026-05-02T08:00:00Z', '2026-05-04T08:00:00Z', '2026-05-04T09:00:00Z'])
    const d = selectRetention(points, rule({ daily: 3 }), { timeZone: 'UTC' })
    expect(d.keep.sort()).toEqual(['p1', 'p2', 'p4'])
    expect(d.remove.sort()).toEqual(['p0', 'p3'])
    expect(d.reasons.p4).toEqual(['newest', 'daily'])
  })

  it('buckets by ISO week, month and year', () => {
    // 2026-01-01 is a Thursday: ISO week 2026-W01 runs Mon 2025-12-29 .. Sun 2026-01-04.
    const points = pts(['2025-12-29T12:00:00Z', '2025-12-31T12:00:00Z', '2026-01-04T12:00:00Z', '2026-01-05T12:00:00Z'])
    expect(selectRetention(points, rule({ weekly: 2 }), { timeZone: 'UTC' }).keep.sort()).toEqual(['p2', 'p3'])
    expect(selectRetention(points, rule({ monthly: 2 }), { timeZone: 'UTC' }).keep.sort()).toEqual(['p1', 'p3'])
    expect(selectRetention(points, rule({ yearly: 5 }), { timeZone: 'UTC' }).keep.sort()).toEqual(['p1', 'p3'])
  })

  it('follows the time zone for day boundaries', () => {
    const points = pts(['2026-05-01T21:30:00Z', '2026-05-01T23:30:00Z']) // Berlin: 23:30 on the 1st, 01:30 on the 2nd
    expect(selectRetention(points, rule({ daily: 5 }), { timeZone: 'UTC' }).keep).toEqual(['p1'])
    expect(selectRetention(points, rule({ daily: 5 }), { timeZone: 'Europe/Berlin' }).keep.sort()).toEqual(['p0', 'p1'])
  })

  it('keeps the last N regardless of age, and points with unreadable dates', () => {
    const points = [...pts(['2020-01-01T00:00:00Z', '2020-01-02T00:00:00Z', '2020-01-03T00:00:00Z']), { id: 'bad', createdAt: 'not a date' }]
    const d = selectRetention(points, rule({ last: 2 }))
    expect(d.keep.sort()).toEqual(['bad', 'p1', 'p2'])
  })

  it('never removes the newest point, whatever the rule (property)', () => {
    fc.assert(fc.property(
      fc.array(fc.integer({ min: Date.parse('2000-01-01'), max: Date.parse('2040-01-01') }), { minLength: 1, maxLength: 40 }),
      fc.record({ last: fc.nat(3), daily: fc.nat(5), weekly: fc.nat(5), monthly: fc.nat(5), yearly: fc.nat(3) }),
      (times, r) => {
        const points = times.map((t, i) => ({ id: `p${i}`, createdAt: new Date(t).toISOString() }))
        const d = selectRetention(points, r, { timeZone: 'UTC' })
        const newest = Math.max(...times)
        const newestIds = points.filter((p) => Date.parse(p.createdAt) === newest).map((p) => p.id)
        expect(newestIds.some((id) => d.keep.includes(id))).toBe(true)
        expect(d.keep.length + d.remove.length).toBe(points.length)
        expect(new Set([...d.keep, ...d.remove]).size).toBe(points.length)
        const budget = 1 + r.last + r.daily + r.weekly + r.monthly + r.yearly
        expect(d.keep.length).toBeLessThanOrEqual(budget)
      },
    ))
  })

  it('prunes per machine with each machine\'s rule', () => {
    const points = [
      { id: 'a1', machine: 'a', createdAt: '2026-05-01T00:00:00Z' },
      { id: 'a2', machine: 'a', createdAt: '2026-05-02T00:00:00Z' },
      { id: 'b1', machine: 'b', createdAt: '2026-05-01T00:00:00Z' },
      { id: 'b2', machine: 'b', createdAt: '2026-05-02T00:00:00Z' },
    ]
    const remove = selectPointsToPrune(points, (m) => (m === 'a' ? rule({ daily: 7 }) : rule({})), { timeZone: 'UTC' })
    expect(remove).toEqual(['b1'])
  })
})

describe('parsePolicySpec', () => {
  it('fills defaults: daily 02:00, 2 snapshot-tier days, warn on script errors, none does not fail', () => {
    const p = parsePolicySpec({})
    expect(p.schedule.daily).toEqual(['02:00'])
    expect(p.snapshotTierDays).toBe(2)
    expect(p.scripts.onError).toBe('warn')
    expect(p.failOnInconsistent).toBe(false)
    expect(p.retention.last).toBeGreaterThanOrEqual(1)
  })
  it('rejects bad times, relative script paths and negative counts with INVALID_INPUT naming the field', () => {
    expect(() => parsePolicySpec({ schedule: { daily: ['25:00'] } })).toThrow(/schedule\.daily\.0/)
    expect(() => parsePolicySpec({ scripts: { pre: { path: 'freeze.sh' } } })).toThrow(/scripts\.pre\.path/)
    expect(() => parsePolicySpec({ retention: { daily: -1 } })).toThrow(/retention\.daily/)
    const p = parsePolicySpec({ scripts: { pre: { path: '/usr/local/bin/freeze db', args: ['--all'] } } })
    expect(p.scripts.pre).toEqual({ path: '/usr/local/bin/freeze db', args: ['--all'], timeoutMs: 300_000 })
  })
})
