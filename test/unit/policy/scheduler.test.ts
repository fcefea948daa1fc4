import { describe, expect, it } from 'vitest'
import {
  BackupScheduler,
  dueSlot,
  latestSlot,
  machineStaggerMs,
  nextSlot,
  parsePolicySpec,
  type Clock,
  type Schedule,
  type ScheduledMachine,
} from '../../../electron/engine/policy/index.js'

/** A clock whose time only moves when the test says so; timers fire in order while advancing. */
class FakeClock implements Clock {
  private timers: { at: number; fn: () => void; id: number }[] = []
  private seq = 0
  constructor(public t: number) {}
  now(): number { return this.t }
  setTimeout(fn: () => void, ms: number): unknown {
    const id = ++this.seq
    this.timers.push({ at: this.t + ms, fn, id })
    return id
  }
  clearTimeout(h: unknown): void { this.timers = this.timers.filter((x) => x.id !== h) }
  /** Advances time, firing due timers in order (a normal, awake machine). */
  advance(ms: number): void {
    const end = this.t + ms
    for (;;) {
      this.timers.sort((a, b) => a.at - b.at)
      const next = this.timers[0]
      if (!next || next.at > end) break
      this.timers.shift()
      this.t = Math.max(this.t, next.at)
      next.fn()
    }
    this.t = end
  }
  /** Moves time without firing anything (suspend, or a wall-clock step). Pending timers fire later. */
  jump(ms: number): void {
    this.t += ms
    for (const x of this.timers) x.at = Math.max(x.at, this.t) // timers were frozen during sleep
  }
  pending(): number { return this.timers.length }
}

const schedule = (s: Partial<Schedule> = {}): Schedule => ({ ...parsePolicySpec({}).schedule, staggerMinutes: 0, timezone: 'UTC', ...s })
const H = 3600_000
const D = 24 * H

function harness(machines: ScheduledMachine[], clock: FakeClock) {
  const last = new Map<string, number>()
  const running = new Set<string>()
  const starts: { id: string; slot: number; at: number }[] = []
  const scheduler = new BackupScheduler({
    clock,
    machines: () => machines,
    getLastSlot: (id) => last.get(id) ?? null,
    setLastSlot: (id, s) => { last.set(id, s) },
    isRunning: (id) => running.has(id),
    startBackup: (id, slot) => { starts.push({ id, slot, at: clock.now() }) },
    maxSleepMs: 15 * 60_000,
  })
  return { scheduler, starts, running, last }
}

describe('slots', () => {
  it('finds the latest slot at or before now and the next one after it', () => {
    const s = schedule({ daily: ['02:00', '14:30'] })
    const now = Date.parse('2026-05-10T15:00:00Z')
    expect(latestSlot(s, 0, now)).toBe(Date.parse('2026-05-10T14:30:00Z'))
    expect(latestSlot(s, 0, Date.parse('2026-05-10T14:30:00Z'))).toBe(Date.parse('2026-05-10T14:30:00Z'))
    expect(nextSlot(s, 0, now)).toBe(Date.parse('2026-05-11T02:00:00Z'))
  })

  it('adds weekly slots on their weekday', () => {
    const s = schedule({ daily: [], weekly: [{ day: 'sun', time: '03:15' }] })
    // 2026-05-10 is a Sunday.
    expect(latestSlot(s, 0, Date.parse('2026-05-13T00:00:00Z'))).toBe(Date.parse('2026-05-10T03:15:00Z'))
    expect(nextSlot(s, 0, Date.parse('2026-05-13T00:00:00Z'))).toBe(Date.parse('2026-05-17T03:15:00Z'))
  })

  it('staggers machines by a fixed whole-minute offset below the limit', () => {
    const offsets = ['a', 'b', 'c', 'd', 'e', 'f'].map((id) => machineStaggerMs(id, 30))
    for (const o of offsets) {
      expect(o % 60_000).toBe(0)
      expect(o).toBeGreaterThanOrEqual(0)
      expect(o).toBeLessThan(30 * 60_000)
    }
    expect(new Set(offsets).size).toBeGreaterThan(1)
    expect(machineStaggerMs('a', 30)).toBe(offsets[0])
    expect(machineStaggerMs('a', 0)).toBe(0)
    const s = schedule({ daily: ['02:00'], staggerMinutes: 30 })
    const m = { id: 'a', createdAtMs: 0, schedule: s }
    const slot = Date.parse('2026-05-10T02:00:00Z') + offsets[0]!
    expect(dueSlot(m, null, slot - 1)).toBe(Date.parse('2026-05-09T02:00:00Z') + offsets[0]!)
    expect(dueSlot(m, null, slot)).toBe(slot)
  })

  it('owes nothing for slots before the machine existed, and nothing when disabled', () => {
    const s = schedule({ daily: ['02:00'] })
    const created = Date.parse('2026-05-10T03:00:00Z')
    expect(dueSlot({ id: 'm', createdAtMs: created, schedule: s }, null, Date.parse('2026-05-10T20:00:00Z'))).toBeNull()
    expect(dueSlot({ id: 'm', createdAtMs: created, schedule: s }, null, Date.parse('2026-05-11T02:00:00Z'))).toBe(Date.parse('2026-05-11T02:00:00Z'))
    expect(dueSlot({ id: 'm', createdAtMs: 0, schedule: { ...s, enabled: false } }, null, created)).toBeNull()
  })
})

describe('BackupScheduler', () => {
  it('runs each daily slot once while awake, waking at the slot itself', () => {
    const clock = new FakeClock(Date.parse('2026-05-10T00:00:00Z'))
    const { scheduler, starts } = harness([{ id: 'm', createdAtMs: clock.now(), schedule: schedule({ daily: ['02:00'] }) }], clock)
    scheduler.start()
    clock.advance(3 * D)
    expect(starts.map((s) => new Date(s.slot).toISOString())).toEqual([
      '2026-05-10T02:00:00.000Z', '2026-05-11T02:00:00.000Z', '2026-05-12T02:00:00.000Z',
    ])
    for (const s of starts) expect(s.at).toBe(s.slot)
    scheduler.stop()
    expect(clock.pending()).toBe(0)
  })

  it('runs missed slots once after the app was closed or the machine slept, never twice', () => {
    const clock = new FakeClock(Date.parse('2026-05-10T00:00:00Z'))
    const machines = [{ id: 'm', createdAtMs: clock.now(), schedule: schedule({ daily: ['02:00', '14:00'] }) }]
    const { scheduler, starts } = harness(machines, clock)
    scheduler.start()
    clock.jump(3 * D + 5 * H) // asleep across six slots
    clock.advance(1) // the frozen timer fires on wake
    expect(starts).toHaveLength(1)
    expect(new Date(starts[0]!.slot).toISOString()).toBe('2026-05-13T02:00:00.000Z')
    scheduler.tick()
    scheduler.tick()
    expect(starts).toHaveLength(1)
    clock.advance(10 * H) // through 14:00
    expect(starts).toHaveLength(2)
  })

  it('an app started late runs the missed slot once (state persisted between runs)', () => {
    const clock = new FakeClock(Date.parse('2026-05-10T01:00:00Z'))
    const machines = [{ id: 'm', createdAtMs: Date.parse('2026-05-01T00:00:00Z'), schedule: schedule({ daily: ['02:00'] }) }]
    const first = harness(machines, clock)
    first.last.set('m', Date.parse('2026-05-09T02:00:00Z'))
    clock.jump(4 * H) // app not running at 02:00
    const second = harness(machines, clock)
    for (const [k, v] of first.last) second.last.set(k, v)
    expect(second.scheduler.tick()).toEqual(['m'])
    expect(second.scheduler.tick()).toEqual([])
    second.scheduler.stop()
  })

  it('does not start a machine whose backup is still running; runs it once when that ends', () => {
    const clock = new FakeClock(Date.parse('2026-05-10T00:00:00Z'))
    const machines = [{ id: 'm', createdAtMs: clock.now(), schedule: schedule({ daily: ['02:00', '02:30'] }) }]
    const { scheduler, starts, running } = harness(machines, clock)
    scheduler.start()
    clock.advance(2 * H)
    expect(starts).toHaveLength(1)
    running.add('m') // the 02:00 run takes over an hour
    clock.advance(H)
    expect(starts).toHaveLength(1)
    running.delete('m')
    scheduler.tick() // the supervisor ticks when a job ends; the periodic wake would find it too
    expect(starts).toHaveLength(2)
    expect(new Date(starts[1]!.slot).toISOString()).toBe('2026-05-10T02:30:00.000Z')
    clock.advance(5 * H)
    expect(starts).toHaveLength(2)
    scheduler.stop()
  })

  it('a clock stepping backwards causes no second run of a slot', () => {
    const clock = new FakeClock(Date.parse('2026-05-10T01:59:00Z'))
    const { scheduler, starts } = harness([{ id: 'm', createdAtMs: 0, schedule: schedule({ daily: ['02:00'] }) }], clock)
    const lastSlot = harness([], clock)
    void lastSlot
    scheduler.start()
    expect(starts).toHaveLength(1) // yesterday's slot was owed (created at epoch 0)
    clock.advance(2 * 60_000)
    expect(starts).toHaveLength(2)
    clock.jump(-2 * H) // wall clock steps back before 02:00
    clock.advance(3 * H)
    expect(starts).toHaveLength(2)
    scheduler.stop()
  })

  it('is DST-safe: one run per local day across spring-forward and fall-back (Europe/Berlin)', () => {
    for (const [from, days] of [['2026-03-26T12:00:00Z', 5], ['2026-10-22T12:00:00Z', 5]] as const) {
      for (const time of ['02:30', '02:00', '03:00']) {
        const clock = new FakeClock(Date.parse(from))
        const s = schedule({ daily: [time], timezone: 'Europe/Berlin' })
        const { scheduler, starts } = harness([{ id: 'm', createdAtMs: clock.now(), schedule: s }], clock)
        scheduler.start()
        clock.advance(days * D - 60_000)
        scheduler.stop()
        const localDays = starts.map((x) => new Intl.DateTimeFormat('en-CA', { timeZone: 'Europe/Berlin' }).format(new Date(x.slot)))
        expect(new Set(localDays).size, `${from} ${time}: ${localDays.join(',')}`).toBe(localDays.length)
        expect(localDays.length, `${from} ${time}`).toBe(days)
      }
    }
  })

  it('keeps going when one machine fails and reports the error', () => {
    const clock = new FakeClock(Date.parse('2026-05-10T03:00:00Z'))
    const errors: unknown[] = []
    const good = { id: 'good', createdAtMs: 0, schedule: schedule({ daily: ['02:00'] }) }
    const bad = { id: 'bad', createdAtMs: 0, schedule: schedule({ daily: ['02:00'] }) }
    const started: string[] = []
    const scheduler = new BackupScheduler({
      clock,
      machines: () => [bad, good],
      getLastSlot: (id) => { if (id === 'bad') throw new Error('boom'); return null },
      setLastSlot: () => {},
      isRunning: () => false,
      startBackup: (id) => { started.push(id) },
      onError: (e) => errors.push(e),
    })
    expect(scheduler.tick()).toEqual(['good'])
    expect(errors).toHaveLength(1)
    scheduler.stop()
  })
})
