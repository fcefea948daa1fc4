/**
 * The policy spec: what a machine's policy says (stored as JSON in `policies.spec`). Parse any
 * stored or user-given value with `parsePolicySpec`, which fills defaults and rejects nonsense.
 */
import { z } from 'zod'
import { EngineError } from '../errors.js'
import { PolicySpec as SharedPolicySpecSchema, type PolicySpec as SharedPolicySpec } from '../../shared/models.js'

const TIME = /^([01]\d|2[0-3]):([0-5]\d)$/
export const WEEKDAYS = ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'] as const
export type Weekday = (typeof WEEKDAYS)[number]

const timeOfDay = z.string().regex(TIME, 'a time of day as HH:MM (24 h)')

export const ScriptSpecSchema = z.object({
  /** Absolute path of the program (run without a shell). */
  path: z.string().min(1).refine((p) => p.startsWith('/') || /^[A-Za-z]:[\\/]/.test(p), 'an absolute path'),
  args: z.array(z.string()).default([]),
  timeoutMs: z.number().int().positive().max(24 * 3600_000).default(5 * 60_000),
})

export const ScheduleSchema = z.object({
  /** Times of day for a daily backup, e.g. ["02:00"]. */
  daily: z.array(timeOfDay).default(['02:00']),
  /** Weekly backups: a weekday and a time. */
  weekly: z.array(z.object({ day: z.enum(WEEKDAYS), time: timeOfDay })).default([]),
  /** Each machine starts at its own fixed offset in [0, staggerMinutes) after the slot, so machines do not all start at once. */
  staggerMinutes: z.number().int().min(0).max(24 * 60).default(30),
  /** IANA time zone of the times (default: the system's). */
  timezone: z.string().min(1).optional(),
  /** False: no scheduled backups (manual only). */
  enabled: z.boolean().default(true),
})

export const RetentionSchema = z.object({
  /** Keep the newest N points regardless of age. */
  last: z.number().int().min(0).max(10_000).default(1),
  daily: z.number().int().min(0).max(10_000).default(7),
  weekly: z.number().int().min(0).max(10_000).default(4),
  monthly: z.number().int().min(0).max(10_000).default(6),
  yearly: z.number().int().min(0).max(1_000).default(1),
})

export const PolicySpecSchema = z.object({
  schedule: ScheduleSchema.prefault({}),
  retention: RetentionSchema.prefault({}),
  /** Days a reflink clone (snapshot tier, instant restore) stays beside the source; 0 removes it after the backup. */
  snapshotTierDays: z.number().int().min(0).max(365).default(2),
  scripts: z.object({
    pre: ScriptSpecSchema.optional(),
    post: ScriptSpecSchema.optional(),
    /** 'warn': a failed script lowers consistency and is logged; 'fail': it fails the job. */
    onError: z.enum(['warn', 'fail']).default('warn'),
  }).prefault({}),
  /** True: a backup whose consistency is 'none' fails (nothing is committed); false: it warns. */
  failOnInconsistent: z.boolean().default(false),
})

export type PolicySpec = z.infer<typeof PolicySpecSchema>
export type PolicyScript = z.infer<typeof ScriptSpecSchema>
export type Schedule = z.infer<typeof ScheduleSchema>
export type Retention = z.infer<typeof RetentionSchema>
/** What callers may write: every field optional, defaults filled by `parsePolicySpec`. */
export type PolicySpecInput = z.input<typeof PolicySpecSchema>

/** The policy of machines without one. */
export const DEFAULT_POLICY: PolicySpec = PolicySpecSchema.parse({})

/** True when `value` has the shape of the IPC contract's PolicySpec (shared/models.ts), as the app stores it. */
export function isSharedPolicySpec(value: unknown): boolean {
  if (typeof value !== 'object' || value === null) return false
  const v = value as Record<string, unknown>
  const schedule = v.schedule as Record<string, unknown> | undefined
  return 'preScript' in v || 'postScript' in v || (typeof schedule === 'object' && schedule !== null && 'kind' in schedule)
}

/**
 * The engine's view of a policy stored in the IPC contract's shape (what the app's policy editor
 * saves): manual → schedule disabled; daily → `times` every day; weekly → every `times` on every
 * `weekdays`; script failures warn (the contract has no setting for it).
 */
export function fromSharedPolicy(s: SharedPolicySpec): PolicySpec {
  const days = s.schedule.kind === 'weekly' ? s.schedule.weekdays : []
  return PolicySpecSchema.parse({
    schedule: {
      enabled: s.schedule.kind !== 'manual',
      daily: s.schedule.kind === 'daily' ? s.schedule.times : [],
      weekly: days.flatMap((d) => s.schedule.times.map((time) => ({ day: WEEKDAYS[d]!, time }))),
      staggerMinutes: s.schedule.staggerMinutes,
    },
    retention: s.retention,
    snapshotTierDays: s.snapshotTierDays,
    scripts: {
      ...(s.preScript ? { pre: s.preScript } : {}),
      ...(s.postScript ? { post: s.postScript } : {}),
      onError: 'warn',
    },
    failOnInconsistent: s.failOnInconsistent,
  })
}

/**
 * The IPC contract's shape of an engine policy, for storing where the app reads it. Throws
 * INVALID_INPUT when the policy says something the contract cannot hold (daily and weekly times
 * together, weekly times that differ by day, a time zone, onError 'fail').
 */
export function toSharedPolicy(p: PolicySpec): SharedPolicySpec {
  const cannot = (what: string): never => {
    throw new EngineError('INVALID_INPUT', `The policy cannot be saved: ${what} cannot be expressed in a Tresor policy yet. Simplify it and save again.`)
  }
  if (p.scripts.onError !== 'warn') cannot('"scripts.onError": "fail"')
  if (p.schedule.timezone !== undefined) cannot('a schedule time zone')
  let schedule: SharedPolicySpec['schedule']
  if (!p.schedule.enabled || (p.schedule.daily.length === 0 && p.schedule.weekly.length === 0)) {
    schedule = { kind: 'manual', times: [], weekdays: [], staggerMinutes: p.schedule.staggerMinutes }
  } else if (p.schedule.weekly.length === 0) {
    schedule = { kind: 'daily', times: [...new Set(p.schedule.daily)], weekdays: [], staggerMinutes: p.schedule.staggerMinutes }
  } else {
    if (p.schedule.daily.length > 0) cannot('daily and weekly times together')
    const times = [...new Set(p.schedule.weekly.map((w) => w.time))].sort()
    const days = [...new Set(p.schedule.weekly.map((w) => WEEKDAYS.indexOf(w.day)))].sort((a, b) => a - b)
    if (times.length * days.length !== new Set(p.schedule.weekly.map((w) => `${w.day} ${w.time}`)).size) cannot('weekly times that differ from day to day')
    schedule = { kind: 'weekly', times, weekdays: days, staggerMinutes: p.schedule.staggerMinutes }
  }
  const shared = {
    schedule,
    retention: { ...p.retention, last: Math.max(1, p.retention.last) },
    snapshotTierDays: p.snapshotTierDays,
    preScript: p.scripts.pre ?? null,
    postScript: p.scripts.post ?? null,
    failOnInconsistent: p.failOnInconsistent,
  }
  const r = SharedPolicySpecSchema.safeParse(shared)
  if (!r.success) {
    const issue = r.error.issues[0]
    throw new EngineError('INVALID_INPUT', `The policy is not valid: ${issue?.path.join('.') || 'policy'}: ${issue?.message ?? 'invalid'}. Fix it and save again.`)
  }
  return r.data
}

/**
 * Validates and fills defaults. Accepts the engine's shape (below) and the IPC contract's shape
 * (shared/models.ts `PolicySpec`, what the app stores). Throws INVALID_INPUT naming the first bad field.
 */
export function parsePolicySpec(value: unknown): PolicySpec {
  if (isSharedPolicySpec(value)) {
    const shared = SharedPolicySpecSchema.safeParse(value)
    if (!shared.success) {
      const issue = shared.error.issues[0]
      throw new EngineError('INVALID_INPUT', `The policy is not valid: ${issue?.path.join('.') || 'policy'}: ${issue?.message ?? 'invalid'}. Fix it and save again.`)
    }
    return fromSharedPolicy(shared.data)
  }
  const r = PolicySpecSchema.safeParse(value ?? {})
  if (!r.success) {
    const issue = r.error.issues[0]
    const where = issue?.path.join('.') || 'policy'
    throw new EngineError('INVALID_INPUT', `The policy is not valid: ${where}: ${issue?.message ?? 'invalid'}. Fix it and save again.`)
  }
  return r.data
}
