/**
 * Retention: which recovery points a policy keeps. Grandfather-father-son buckets: the newest point
 * of each of the last N days, ISO weeks, months and years that have points, plus the newest `last`
 * points. The newest point of a machine is always kept (I13), whatever the rule says.
 */
import type { Retention } from './spec.js'

export interface RetainablePoint {
  id: string
  /** ISO 8601. */
  createdAt: string
}

export interface RetentionDecision {
  keep: string[]
  remove: string[]
  /** Why each kept point is kept ('newest', 'last', 'daily', 'weekly', 'monthly', 'yearly'). */
  reasons: Record<string, string[]>
}

type Bucket = 'daily' | 'weekly' | 'monthly' | 'yearly'

function parts(ms: number, timeZone: string | undefined): { y: number; m: number; d: number } {
  const f = new Intl.DateTimeFormat('en-CA', { timeZone, year: 'numeric', month: '2-digit', day: '2-digit' })
  const p = Object.fromEntries(f.formatToParts(new Date(ms)).map((x) => [x.type, x.value]))
  return { y: Number(p.year), m: Number(p.month), d: Number(p.day) }
}

/** ISO 8601 week-numbering year and week of a calendar date. */
function isoWeek(y: number, m: number, d: number): string {
  const date = new Date(Date.UTC(y, m - 1, d))
  const dow = date.getUTCDay() || 7
  date.setUTCDate(date.getUTCDate() + 4 - dow) // Thursday of this week decides the year
  const yearStart = Date.UTC(date.getUTCFullYear(), 0, 1)
  const week = Math.ceil(((date.getTime() - yearStart) / 86_400_000 + 1) / 7)
  return `${date.getUTCFullYear()}-W${String(week).padStart(2, '0')}`
}

function bucketKey(kind: Bucket, ms: number, timeZone: string | undefined): string {
  const { y, m, d } = parts(ms, timeZone)
  switch (kind) {
    case 'daily': return `${y}-${m}-${d}`
    case 'weekly': return isoWeek(y, m, d)
    case 'monthly': return `${y}-${m}`
    case 'yearly': return `${y}`
  }
}

/**
 * Decides which points of ONE machine to keep. Pure; order of `points` does not matter. Points with
 * an unparsable date are kept (never delete what we cannot judge). Bucket boundaries follow
 * `timeZone` (default: the system's).
 */
export function selectRetention(points: RetainablePoint[], rule: Retention, options: { timeZone?: string } = {}): RetentionDecision {
  const reasons: Record<string, string[]> = {}
  const why = (id: string, r: string): void => { (reasons[id] ??= []).push(r) }
  const dated = points.map((p) => ({ p, ms: Date.parse(p.createdAt) }))
  for (const x of dated) if (!Number.isFinite(x.ms)) why(x.p.id, 'undated')
  const sorted = dated.filter((x) => Number.isFinite(x.ms)).sort((a, b) => b.ms - a.ms || (a.p.id < b.p.id ? 1 : -1))
  if (sorted[0]) why(sorted[0].p.id, 'newest')
  sorted.slice(0, rule.last).forEach((x) => why(x.p.id, 'last'))
  for (const kind of ['daily', 'weekly', 'monthly', 'yearly'] as const) {
    let left = rule[kind]
    let lastKey: string | undefined
    for (const x of sorted) {
      if (left <= 0) break
      const key = bucketKey(kind, x.ms, options.timeZone)
      if (key === lastKey) continue
      lastKey = key
      why(x.p.id, kind)
      left--
    }
  }
  const keep = points.filter((p) => reasons[p.id]).map((p) => p.id)
  const remove = points.filter((p) => !reasons[p.id]).map((p) => p.id)
  return { keep, remove, reasons }
}

/** Applies `selectRetention` per machine; `rules` gives each machine's rule. Returns ids to remove. */
export function selectPointsToPrune<P extends RetainablePoint & { machine: string }>(
  points: P[],
  ruleFor: (machine: string) => Retention,
  options: { timeZone?: string } = {},
): string[] {
  const byMachine = new Map<string, P[]>()
  for (const p of points) {
    const list = byMachine.get(p.machine) ?? []
    list.push(p)
    byMachine.set(p.machine, list)
  }
  const remove: string[] = []
  for (const [machine, list] of byMachine) remove.push(...selectRetention(list, ruleFor(machine), options).remove)
  return remove
}
