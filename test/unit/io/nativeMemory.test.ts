/**
 * Tresor's native memory calls (io/nativeMemory.ts, native/memory): the addon is built and loads;
 * the memory that direct writes go out from (allocAligned and allocAlignedShared with `hugePages`)
 * is advised and then really backed by 2 MiB pages, read buffers are not, and the opt-out and bad
 * input behave; copies between shared buffers land exactly, and bad triples copy nothing.
 *
 * The kernel's answer is read back from /proc/self/smaps: madvise splits the advised range into a
 * mapping of its own, flagged `hg`, whose AnonHugePages counts the huge pages behind it. vitest runs
 * each file in a process of its own (pool: forks), so no other test's buffers are in this one.
 */
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { afterEach, describe, expect, it } from 'vitest'
import { allocAligned, allocAlignedShared } from '../../../electron/engine/io/directIo.js'
import { adviseHugePages, copyTriples, copyTriplesInJs, nativeMemoryLoaded } from '../../../electron/engine/io/nativeMemory.js'

const MiB = 1024 * 1024

interface Mapping {
  start: bigint
  kib: number
  anonHugeKib: number
  advised: boolean
}

/** This process's mappings, from /proc/self/smaps. */
function mappings(): Mapping[] {
  const out: Mapping[] = []
  let cur: Mapping | undefined
  for (const line of readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    const head = /^([0-9a-f]+)-([0-9a-f]+) /.exec(line)
    if (head) {
      cur = { start: BigInt('0x' + head[1]), kib: Number((BigInt('0x' + head[2]) - BigInt('0x' + head[1])) / 1024n), anonHugeKib: 0, advised: false }
      out.push(cur)
    } else if (cur && line.startsWith('AnonHugePages:')) {
      cur.anonHugeKib = Number(/(\d+)/.exec(line)![1])
    } else if (cur && line.startsWith('VmFlags:')) {
      cur.advised = line.split(/\s+/).includes('hg')
    }
  }
  return out
}

/** Advised mappings of exactly `bytes` (the size each test picks is one no other mapping has). */
function advisedOfSize(bytes: number): Mapping[] {
  return mappings().filter((m) => m.advised && m.kib === bytes / 1024)
}

function thpSetting(): string {
  return readFileSync('/sys/kernel/mm/transparent_hugepage/enabled', 'utf8').trim()
}

describe('huge pages for direct-I/O buffers (Linux, like the rest of the suite)', () => {
  afterEach(() => {
    delete process.env.TRESOR_NO_HUGE_PAGES
  })

  it('the addon is built and loads', () => {
    expect(nativeMemoryLoaded()).toBe(true)
  })

  it('the kernel offers transparent huge pages where a program asks (a prerequisite of the tests below)', () => {
    // "[always] madvise never" or "always [madvise] never": both honour the advice
    expect(thpSetting(), 'transparent huge pages are turned off on this host').not.toMatch(/\[never\]/)
  })

  it('shared aligned memory for writes (a restore\'s slots) is advised and filled with 2 MiB pages', () => {
    const bytes = 13 * MiB + 64 * 1024 // whole WebAssembly pages, a size no other mapping has
    const buf = allocAlignedShared(bytes, { hugePages: true })
    expect(buf.buffer).toBeInstanceOf(SharedArrayBuffer)
    buf.fill(0xa5) // first touch: the kernel places huge pages now
    const [m, ...more] = advisedOfSize(bytes)
    expect(more).toEqual([])
    expect(m, 'no advised mapping of the buffer\'s size').toBeDefined()
    // 13 MiB hold at least five aligned 2 MiB ranges wherever the memory starts
    expect(m!.anonHugeKib).toBeGreaterThanOrEqual(5 * 2048)
    expect(buf[bytes - 1]).toBe(0xa5)
  })

  it('unshared aligned memory for writes (a pack writer\'s stage, an image writer\'s buffers) is advised too', () => {
    const bytes = 9 * MiB + 128 * 1024
    const buf = allocAligned(bytes, { hugePages: true })
    buf.fill(1)
    const found = advisedOfSize(bytes)
    expect(found).toHaveLength(1)
    expect(found[0]!.anonHugeKib).toBeGreaterThanOrEqual(3 * 2048)
  })

  it('read buffers (no `hugePages`) keep small pages: a range read fills only part of its buffer', () => {
    const bytes = 6 * MiB + 320 * 1024
    const buf = allocAlignedShared(bytes)
    buf.fill(3)
    expect(advisedOfSize(bytes)).toEqual([])
  })

  it('TRESOR_NO_HUGE_PAGES=1 turns the advice off', () => {
    process.env.TRESOR_NO_HUGE_PAGES = '1'
    const bytes = 7 * MiB + 192 * 1024
    const buf = allocAlignedShared(bytes, { hugePages: true })
    buf.fill(2)
    expect(adviseHugePages(new SharedArrayBuffer(4096))).toBe(false)
    expect(advisedOfSize(bytes)).toEqual([])
  })

  it('the addon refuses anything but a Uint8Array with a TypeError', () => {
    const addon = createRequire(import.meta.url)('tresor-memory') as { adviseHugePages: (v: unknown) => boolean }
    expect(() => addon.adviseHugePages({ length: 4096 })).toThrow(TypeError)
    expect(() => addon.adviseHugePages(new Uint16Array(4096))).toThrow(TypeError)
    expect(() => addon.adviseHugePages(undefined)).toThrow(TypeError)
    // less than a whole page: nothing to advise, and nothing breaks
    expect(addon.adviseHugePages(new Uint8Array(100))).toBe(false)
  })
})

describe('copies between views of shared memory', () => {
  const shared = (bytes: number): Buffer => Buffer.from(new SharedArrayBuffer(bytes))

  it.each([
    ['with the addon', copyTriples],
    ['without it', copyTriplesInJs],
  ])('copies every (from, to, length) triple exactly, overlapping ones included, and leaves the rest alone (%s)', (_how, copy) => {
    const source = shared(64 * 1024)
    for (let i = 0; i < source.length; i++) source[i] = (i * 31 + 7) & 0xff
    const target = shared(96 * 1024).fill(0xee)
    const triples = [0, 5000, 8192, 40_000, 70_000, 12_345, 65_536 - 3, 96 * 1024 - 3, 3]
    expect(copy(source, target, triples)).toBeNull()
    const want = Buffer.alloc(96 * 1024, 0xee)
    for (let k = 0; k < triples.length; k += 3) source.copy(want, triples[k + 1]!, triples[k]!, triples[k]! + triples[k + 2]!)
    expect(target.equals(want)).toBe(true)
    // within one buffer, overlapping (memmove)
    const one = shared(1024)
    for (let i = 0; i < one.length; i++) one[i] = i & 0xff
    const expected = Buffer.from(one)
    expected.copy(expected, 10, 0, 500)
    expect(copy(one, one, [0, 10, 500])).toBeNull()
    expect(one.equals(expected)).toBe(true)
  })

  it.each([
    ['with the addon', copyTriples],
    ['without it', copyTriplesInJs],
  ])('copies nothing when any triple is outside its buffers, negative, fractional, empty or incomplete (%s)', (_how, copy) => {
    const source = shared(4096).fill(1)
    const target = shared(4096).fill(0)
    for (const [bad, why] of [
      [[0, 0, 100, 4000, 0, 200], /outside its buffers/], // the second leaves the source
      [[0, 4000, 200], /outside its buffers/],
      [[-1, 0, 10], /outside its buffers/],
      [[0, 0, 1.5], /outside its buffers/],
      [[0, 0], /incomplete triple/],
      [[0, 0, 0], /outside its buffers/], // a part has bytes
    ] as const) {
      expect(copy(source, target, bad), JSON.stringify(bad)).toMatch(why)
      expect(target.every((b) => b === 0), JSON.stringify(bad)).toBe(true)
    }
  })

  it('the addon itself refuses bad triples with a RangeError and copies nothing', () => {
    const addon = createRequire(import.meta.url)('tresor-memory') as { copyTriples: (s: unknown, t: unknown, x: unknown) => number }
    const source = shared(4096).fill(9)
    const target = shared(4096).fill(0)
    expect(addon.copyTriples(source, target, [0, 0, 16, 100, 200, 8])).toBe(24)
    expect(target.subarray(0, 16).every((b) => b === 9) && target.subarray(200, 208).every((b) => b === 9) && target[16] === 0).toBe(true)
    target.fill(0)
    expect(() => addon.copyTriples(source, target, [0, 0, 16, 4090, 0, 16])).toThrow(RangeError)
    expect(() => addon.copyTriples(source, target, [0, 0, -4])).toThrow(RangeError)
    expect(() => addon.copyTriples(source, target, [0, 0, 0])).toThrow(RangeError)
    expect(() => addon.copyTriples(source, target, [0, 0])).toThrow(TypeError)
    expect(() => addon.copyTriples(source, 'target', [0, 0, 1])).toThrow(TypeError)
    expect(target.every((b) => b === 0)).toBe(true)
  })
})
