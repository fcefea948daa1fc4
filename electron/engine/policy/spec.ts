/**
 * The policy spec: what a machine's policy says (stored as JSON in `policies.spec`). Parse any
 * stored or user-given value with `parsePolicySpec`, which fills defaults and rejects nonsense.
 */
import { z } from 'zod'
import { EngineError } from '../errors.js'

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

/** Validates and fills defaults. Throws INVALID_INPUT naming the first bad field. */
export function parsePolicySpec(value: unknown): PolicySpec {
  const r = PolicySpecSchema.safeParse(value ?? {})
  if (!r.success) {
    const issue = r.error.issues[0]
    const where = issue?.path.join('.') || 'policy'
    throw new EngineError('INVALID_INPUT', `The policy is not valid: ${where}: ${issue?.message ?? 'invalid'}. Fix it and save again.`)
  }
  return r.data
}
