import { describe, expect, it } from 'vitest'
import fc from 'fast-check'
import { choosePacks, DEFAULT_MAX_UNUSED } from '../../../electron/engine/vault/prunePolicy.js'

type Usage = { live: number; records: number; small: boolean }
const MiB = 1024 * 1024

function run(usages: Usage[], maxUnused: number) {
  return choosePacks(usages.map((_, n) => n), (n) => usages[n]!, maxUnused)
}

describe('choosePacks', () => {
  it('deletes dead packs, leaves full ones, and rewrites the emptiest partly used packs first', () => {
    const usages: Usage[] = [
      { live: 0, records: 16 * MiB, small: false }, // dead
      { live: 16 * MiB, records: 16 * MiB, small: false }, // full
      { live: 15 * MiB, records: 16 * MiB, small: false }, // 1/16 unused
      { live: 4 * MiB, records: 16 * MiB, small: false }, // 3/4 unused
      { live: 12 * MiB, records: 16 * MiB, small: false }, // 1/4 unused
    ]
    expect(run(usages, 1)).toEqual({ toRemove: [0], toRepack: [] })
    // live 47 MiB: 5 % allows 2.47 MiB unused; 12 + 4 + 1 = 17 MiB unused before
    expect(run(usages, DEFAULT_MAX_UNUSED)).toEqual({ toRemove: [0], toRepack: [3, 4] })
    expect(run(usages, 0)).toEqual({ toRemove: [0], toRepack: [3, 4, 2] })
    // 30 % allows 20.1 MiB: nothing to rewrite
    expect(run(usages, 0.3)).toEqual({ toRemove: [0], toRepack: [] })
  })

  it('merges small packs when more than one is left, unless nothing may be rewritten', () => {
    const usages: Usage[] = [
      { live: MiB, records: MiB, small: true },
      { live: 16 * MiB, records: 16 * MiB, small: false },
      { live: MiB / 2, records: MiB / 2, small: true },
    ]
    expect(run(usages, DEFAULT_MAX_UNUSED).toRepack).toEqual([0, 2])
    expect(run(usages, 1).toRepack).toEqual([])
    expect(run(usages.slice(0, 2), DEFAULT_MAX_UNUSED).toRepack).toEqual([])
  })

  it('refuses a limit outside 0..1', () => {
    for (const bad of [-0.1, 1.01, Number.NaN]) expect(() => run([], bad)).toThrow(/between 0 and 1/)
  })

  it('always leaves at most the allowed share unused, and rewrites nothing when already within it', () => {
    const usage = fc.record({ live: fc.integer({ min: 0, max: 64 }), waste: fc.integer({ min: 0, max: 64 }) })
    fc.assert(
      fc.property(fc.array(usage, { maxLength: 40 }), fc.double({ min: 0, max: 0.99, noNaN: true }), (packs, maxUnused) => {
        const usages = packs.map((p) => ({ live: p.live, records: p.live + p.waste, small: false }))
        const { toRemove, toRepack } = run(usages, maxUnused)
        const kept = usages.map((_, n) => n).filter((n) => !toRemove.includes(n) && !toRepack.includes(n))
        const live = usages.reduce((s, u) => s + u.live, 0)
        const unusedLeft = kept.reduce((s, n) => s + usages[n]!.records - usages[n]!.live, 0)
        expect(toRemove.every((n) => usages[n]!.live === 0)).toBe(true)
        expect(toRepack.every((n) => usages[n]!.live > 0 && usages[n]!.records > usages[n]!.live)).toBe(true)
        expect(unusedLeft).toBeLessThanOrEqual((maxUnused / (1 - maxUnused)) * live + 1e-9)
        const unusedBefore = usages.filter((u) => u.live > 0).reduce((s, u) => s + u.records - u.live, 0)
        if (unusedBefore <= (maxUnused / (1 - maxUnused)) * live) expect(toRepack).toEqual([])
      }),
    )
  })
})
