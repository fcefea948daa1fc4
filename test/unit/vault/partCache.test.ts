import { describe, expect, it } from 'vitest'
import { PartCache, type CachedPart } from '../../../electron/engine/vault/partCache.js'

/** Reserves and fills (settles) `key`; the entry, or undefined when no room was made. */
function put(cache: PartCache, key: string, length: number): CachedPart | undefined {
  const e = cache.reserve(key, length)
  if (e) cache.settle(e, true)
  return e
}

/** No two live entries overlap, and all lie inside the arena. */
function expectDisjoint(entries: CachedPart[], capacity: number): void {
  const live = entries.filter((e) => e.state !== 'dead').sort((a, b) => a.at - b.at)
  for (let i = 0; i < live.length; i++) {
    expect(live[i]!.at + live[i]!.length).toBeLessThanOrEqual(i + 1 < live.length ? live[i + 1]!.at : capacity)
  }
}

describe('PartCache', () => {
  it('hands out a part only once it is filled, and only for its exact length', () => {
    const cache = new PartCache(1024, 128)
    const e = cache.reserve('a', 100)!
    expect(e.state).toBe('pending')
    expect(cache.take('a', 100)).toBeUndefined()
    expect(cache.reserve('a', 100)).toBeUndefined() // already known
    cache.settle(e, true)
    expect(cache.take('a', 99)).toBeUndefined()
    const hit = cache.take('a', 100)!
    expect(hit).toBe(e)
    expect(hit.pins).toBe(1)
    cache.unpin(hit)
    expect(hit.pins).toBe(0)
  })

  it('drops a part whose block failed, and reserves it again later', () => {
    const cache = new PartCache(1024, 128)
    const e = cache.reserve('a', 64)!
    cache.settle(e, false)
    expect(e.state).toBe('dead')
    expect(cache.take('a', 64)).toBeUndefined()
    const again = cache.reserve('a', 64)!
    expect(again).not.toBe(e)
    expect(again.at).not.toBe(e.at) // the dead entry's bytes are left alone until the head passes them
  })

  it('sweeps round: the oldest unhit part makes room, and the arena is never overrun', () => {
    const cache = new PartCache(1000, 200)
    const all: CachedPart[] = []
    for (let i = 0; i < 10; i++) all.push(put(cache, `k${i}`, 100)!)
    expect(all.map((e) => e.at)).toEqual([0, 100, 200, 300, 400, 500, 600, 700, 800, 900])
    const next = put(cache, 'k10', 150)!
    expect(next.at).toBe(0) // k0 and k1 dropped
    expect(cache.take('k0', 100)).toBeUndefined()
    expect(cache.take('k1', 100)).toBeUndefined()
    expect(cache.take('k2', 100)).toBeDefined()
    expectDisjoint([...all.slice(2), next], 1000)
  })

  it('gives a part hit since the head last passed it a second chance, without moving it', () => {
    const cache = new PartCache(400, 100)
    const [a, b] = [put(cache, 'a', 100)!, put(cache, 'b', 100)!]
    put(cache, 'c', 100)
    put(cache, 'd', 100)
    cache.unpin(cache.take('a', 100)!) // a was hit
    const e = put(cache, 'e', 100)!
    expect(e.at).toBe(b.at) // the head skipped a and dropped b
    expect(cache.take('a', 100)).toBe(a)
    expect(a.at).toBe(0)
    expect(cache.take('b', 100)).toBeUndefined()
  })

  it('never gives away the place of a pinned or pending part; gives up when nothing can make room', () => {
    const cache = new PartCache(300, 100)
    put(cache, 'a', 100)
    const pending = cache.reserve('b', 100)!
    put(cache, 'c', 100)
    const pinned = cache.take('a', 100)!
    cache.take('c', 100) // pinned too
    expect(cache.reserve('d', 100)).toBeUndefined()
    expect(pending.state).toBe('pending')
    cache.settle(pending, true)
    cache.unpin(pinned)
    // a: unpinned but hit (second chance), b: ready, c: still pinned → b makes room
    const d = cache.reserve('d', 100)!
    expect(d.at).toBe(100)
    expect(cache.take('a', 100)).toBe(pinned)
  })

  it('wraps when the end of the arena is too small, and refuses parts larger than a sixteenth of it by default', () => {
    const cache = new PartCache(1600)
    const first = put(cache, 'a', 1000)
    expect(first).toBeUndefined() // larger than 100 bytes
    const entries = [put(cache, 'a', 100)!, put(cache, 'b', 100)!]
    for (let i = 0; i < 13; i++) entries.push(put(cache, `c${i}`, 100)!)
    expect(entries.at(-1)!.at).toBe(1400)
    const wrapped = put(cache, 'z', 100)!
    expect(wrapped.at).toBe(1500)
    const again = put(cache, 'y', 100)!
    expect(again.at).toBe(0) // the head wrapped; a dropped
    expect(cache.take('a', 100)).toBeUndefined()
    expectDisjoint([...entries.slice(1), wrapped, again], 1600)
  })

  it('keeps every held entry disjoint and inside the arena under a long random workload', () => {
    const cache = new PartCache(64 * 1024)
    let seed = 7
    const rnd = (n: number): number => (seed = (seed * 1103515245 + 12345) >>> 0) % n
    let held: CachedPart[] = []
    const pinned: CachedPart[] = []
    const pending: CachedPart[] = []
    let hits = 0
    for (let i = 0; i < 8_000; i++) {
      const key = `k${rnd(1500)}`
      const length = 64 + (Number(key.slice(1)) % 4000) // one length per key
      const hit = cache.take(key, length)
      if (hit) {
        hits++
        pinned.push(hit)
        if (pinned.length > 8) cache.unpin(pinned.shift()!)
      } else {
        const e = cache.reserve(key, length)
        if (e) {
          held.push(e)
          pending.push(e)
        }
      }
      if (pending.length > 4) cache.settle(pending.shift()!, rnd(10) > 0) // a few fills in flight, some fail
      for (const e of pinned) expect(cache.holds(e)).toBe(true) // never dropped while pinned
      for (const e of pending) expect(cache.holds(e)).toBe(true)
      held = held.filter((e) => cache.holds(e))
      if (i % 100 === 0) expectDisjoint(held, 64 * 1024)
    }
    expectDisjoint(held, 64 * 1024)
    expect(hits).toBeGreaterThan(1000)
    expect(cache.size).toBeGreaterThan(10)
  })
})
