/**
 * The backup scheduler: decides when each machine's backup is due from its policy's schedule.
 *
 * Rules (RELIABILITY #21)
 * - A slot is an instant at which a schedule fires (daily or weekly time, in the schedule's time
 *   zone, via croner, so DST gaps and repeats are handled: a time inside the spring-forward gap
 *   runs at the shifted time, the repeated hour of fall-back runs once), plus the machine's fixed
 *   stagger offset.
 * - A machine is due when the latest slot at or before now is later than the last slot handled
 *   (persisted). However many slots were missed (app closed, machine asleep, clock jumped forward),
 *   it runs once; then the handled slot moves to that latest slot, so nothing runs twice.
 *   A clock stepping backwards makes nothing due until the clock passes the handled slot again.
 * - A machine whose backup is still running is not started again; its slot stays due until the
 *   run ends (then it runs once).
 * - Before its first scheduled run, the machine's creation time counts as the handled slot, so
 *   adding a machine does not fire at once for slots before it existed.
 * The clock is injected; the scheduler wakes at the next slot or after `maxSleepMs`, whichever
 * comes first (timers stop during sleep; the periodic wake notices missed slots).
 */
import { createHash } from 'node:crypto'
import { Cron } from 'croner'
import type { Schedule } from './spec.js'
import { WEEKDAYS } from './spec.js'

export interface Clock {
  now(): number
  setTimeout(fn: () => void, ms: number): unknown
  clearTimeout(handle: unknown): void
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => { const t = setTimeout(fn, ms); t.unref?.(); return t },
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
}

/** Cron patterns (minute hour dom month dow) of a schedule. */
export function schedulePatterns(schedule: Pick<Schedule, 'daily' | 'weekly'>): string[] {
  const patterns: string[] = []
  for (const t of schedule.daily) {
    const [h, m] = t.split(':').map(Number)
    patterns.push(`${m} ${h} * * *`)
  }
  for (const w of schedule.weekly) {
    const [h, m] = w.time.split(':').map(Number)
    patterns.push(`${m} ${h} * * ${WEEKDAYS.indexOf(w.day)}`)
  }
  return [...new Set(patterns)]
}

/** A machine's fixed offset in [0, staggerMinutes) minutes, derived from its id (whole minutes). */
export function machineStaggerMs(machineId: string, staggerMinutes: number): number {
  if (staggerMinutes <= 0) return 0
  const h = createHash('sha256').update(machineId).digest().readUInt32BE(0)
  return (h % staggerMinutes) * 60_000
}

const cronCache = new Map<string, Cron[]>()

/** Parsed cron objects of a schedule (cached: the scheduler asks every tick). */
function crons(schedule: Schedule): Cron[] {
  const patterns = schedulePatterns(schedule)
  const key = `${schedule.timezone ?? ''}|${patterns.join('|')}`
  let list = cronCache.get(key)
  if (!list) {
    if (cronCache.size > 256) cronCache.clear()
    list = patterns.map((p) => new Cron(p, { paused: true, timezone: schedule.timezone }))
    cronCache.set(key, list)
  }
  return list
}

/** The latest slot (epoch ms, stagger included) at or before `nowMs`, or null when there is none. */
export function latestSlot(schedule: Schedule, staggerMs: number, nowMs: number): number | null {
  if (!schedule.enabled) return null
  const ref = nowMs - staggerMs
  let best: number | null = null
  for (const c of crons(schedule)) {
    // previousRuns excludes its reference; ask from one second later and keep what is not in the future.
    for (const d of c.previousRuns(2, new Date(ref + 1000))) {
      const t = d.getTime()
      if (t <= ref && (best === null || t > best)) best = t
    }
  }
  return best === null ? null : best + staggerMs
}

/** The first slot (epoch ms, stagger included) strictly after `nowMs`, or null. */
export function nextSlot(schedule: Schedule, staggerMs: number, nowMs: number): number | null {
  if (!schedule.enabled) return null
  const ref = nowMs - staggerMs
  let best: number | null = null
  for (const c of crons(schedule)) {
    const d = c.nextRun(new Date(ref))
    if (d && d.getTime() > ref && (best === null || d.getTime() < best)) best = d.getTime()
  }
  return best === null ? null : best + staggerMs
}

export interface ScheduledMachine {
  id: string
  /** Epoch ms the machine was added: slots before it are not owed. */
  createdAtMs: number
  schedule: Schedule
}

/** The slot a machine is due for now, or null. Pure. */
export function dueSlot(machine: ScheduledMachine, lastSlotMs: number | null, nowMs: number): number | null {
  const stagger = machineStaggerMs(machine.id, machine.schedule.staggerMinutes)
  const latest = latestSlot(machine.schedule, stagger, nowMs)
  const handled = lastSlotMs ?? machine.createdAtMs
  return latest !== null && latest > handled ? latest : null
}

export interface SchedulerDeps {
  clock?: Clock
  /** The machines to schedule, read on every tick (policies may change). */
  machines(): ScheduledMachine[]
  getLastSlot(machineId: string): number | null
  setLastSlot(machineId: string, slotMs: number): void
  isRunning(machineId: string): boolean
  /** Starts (queues) a backup; must not throw for one machine's trouble (log it instead). */
  startBackup(machineId: string, slotMs: number): void
  /** Longest sleep between ticks. Default 60 s. */
  maxSleepMs?: number
  onError?(err: unknown): void
}

/** Runs `tick` at every slot and at least every `maxSleepMs`. `dispose()` stops it. */
export class BackupScheduler {
  private readonly clock: Clock
  private timer: unknown
  private stopped = true

  constructor(private readonly deps: SchedulerDeps) {
    this.clock = deps.clock ?? systemClock
  }

  start(): { dispose(): void } {
    this.stopped = false
    this.tick()
    return { dispose: () => this.stop() }
  }

  stop(): void {
    this.stopped = true
    if (this.timer !== undefined) this.clock.clearTimeout(this.timer)
    this.timer = undefined
  }

  /**
   * Starts every due machine once, then sleeps until the next slot. Returns the ids started. Call it
   * also when a backup job ends, so a slot deferred by a running backup starts at once.
   */
  tick(): string[] {
    const started: string[] = []
    const now = this.clock.now()
    let wake = now + (this.deps.maxSleepMs ?? 60_000)
    let machines: ScheduledMachine[] = []
    try {
      machines = this.deps.machines()
    } catch (err) {
      this.deps.onError?.(err)
    }
    for (const m of machines) {
      try {
        const slot = dueSlot(m, this.deps.getLastSlot(m.id), now)
        if (slot !== null && !this.deps.isRunning(m.id)) {
          this.deps.setLastSlot(m.id, slot) // first, so a crash in startBackup cannot cause a double run
          this.deps.startBackup(m.id, slot)
          started.push(m.id)
        }
        const next = nextSlot(m.schedule, machineStaggerMs(m.id, m.schedule.staggerMinutes), now)
        if (next !== null && next < wake) wake = next
      } catch (err) {
        this.deps.onError?.(err)
      }
    }
    if (!this.stopped) {
      if (this.timer !== undefined) this.clock.clearTimeout(this.timer)
      this.timer = this.clock.setTimeout(() => { this.timer = undefined; this.tick() }, Math.max(1000, wake - now))
    }
    return started
  }
}
