/**
 * The prune's choice of packs to delete and to rewrite, from each pack's live and record bytes.
 * Pure: the vault (localVault.ts) measures, this decides.
 */
import { EngineError } from '../errors.js'

/** Default `PruneOptions.maxUnused`: like restic's default `--max-unused 5%`. */
export const DEFAULT_MAX_UNUSED = 0.05

/**
 * Which packs a prune deletes and which it rewrites. Packs with no live byte are deleted. Partly
 * used packs are rewritten in order of their unused share (most first: the most space freed per
 * byte rewritten) until the unused bytes left are at most `maxUnused` of the record bytes kept,
 * i.e. unused ≤ maxUnused / (1 − maxUnused) × live. Small packs (the tail pack of every backup)
 * are merged whenever more than one is left.
 */
export function choosePacks(
  packs: readonly number[],
  usage: (n: number) => { live: number; records: number; small: boolean },
  maxUnused: number,
): { toRemove: number[]; toRepack: number[] } {
  if (!(maxUnused >= 0 && maxUnused <= 1)) throw new EngineError('INVALID_INPUT', `The unused share a prune may leave must lie between 0 and 1 (got ${maxUnused}).`)
  const toRemove: number[] = []
  const partial: Array<{ n: number; unused: number; share: number }> = []
  let live = 0
  let unused = 0
  for (const n of packs) {
    const u = usage(n)
    if (u.live === 0) {
      toRemove.push(n)
      continue
    }
    const waste = Math.max(0, u.records - u.live)
    live += u.live
    unused += waste
    if (waste > 0) partial.push({ n, unused: waste, share: waste / Math.max(1, u.records) })
  }
  const allowed = maxUnused >= 1 ? Number.POSITIVE_INFINITY : (maxUnused / (1 - maxUnused)) * live
  partial.sort((a, b) => b.share - a.share || b.unused - a.unused)
  const toRepack: number[] = []
  for (const p of partial) {
    if (unused <= allowed) break
    toRepack.push(p.n)
    unused -= p.unused
  }
  if (maxUnused < 1) {
    const small = packs.filter((n) => !toRemove.includes(n) && !toRepack.includes(n) && usage(n).small)
    if (small.length > 1) toRepack.push(...small)
  }
  return { toRemove, toRepack }
}
