import { describe, expect, it } from 'vitest'
import fc from 'fast-check'
import { LayeredImage, type Segment } from '../../../electron/engine/formats/layered.js'
import type { DiskImage, Extent, ImageInfo } from '../../../electron/engine/formats/types.js'

/**
 * An in-memory layer: `cells` gives each 16-byte cell's state ('d' data with its byte value, 'z'
 * zero, 'u' unallocated), over an optional backing image.
 */
class MemoryLayer extends LayeredImage {
  readonly path = 'mem'
  readonly format = 'raw' as const
  readonly variant = 'test'
  readonly clusterSize = 16
  readonly virtualSize: number
  ownClosed = false
  constructor(readonly cells: Array<['d', number] | ['z'] | ['u']>, backing?: DiskImage) {
    super()
    this.virtualSize = cells.length * 16
    this.backing = backing
  }
  protected async *mapRange(offset: number, end: number): AsyncIterable<Segment> {
    for (let pos = offset; pos < end; ) {
      const cell = Math.floor(pos / 16)
      const stop = Math.min((cell + 1) * 16, end)
      const c = this.cells[cell] as ['d', number] | ['z'] | ['u']
      yield { offset: pos, length: stop - pos, kind: c[0] === 'd' ? 'data' : c[0] === 'z' ? 'zero' : 'unallocated' }
      pos = stop
    }
  }
  protected async readData(target: Uint8Array, seg: Segment): Promise<void> {
    const c = this.cells[Math.floor(seg.offset / 16)] as ['d', number]
    target.fill(c[1])
  }
  protected async closeOwn(): Promise<void> {
    this.ownClosed = true
  }
  async info(): Promise<ImageInfo> {
    return { format: 'raw', variant: 'test', virtualSize: this.virtualSize, allocatedBytes: 0, clusterSize: 16, backingChain: [] }
  }
}

const cellArb = fc.oneof(
  fc.tuple(fc.constant('d' as const), fc.integer({ min: 1, max: 255 })),
  fc.constant(['z'] as ['z']),
  fc.constant(['u'] as ['u']),
)

/** The guest view by definition: top cell if allocated/zero, else the parent's byte, else 0. */
function expectedBytes(layers: Array<Array<['d', number] | ['z'] | ['u']>>, size: number): Uint8Array {
  const out = new Uint8Array(size)
  for (let i = 0; i < size; i++) {
    for (const cells of layers) {
      const c = cells[Math.floor(i / 16)]
      if (c === undefined) break // past this layer's end: zeros
      if (c[0] === 'd') {
        out[i] = c[1]
        break
      }
      if (c[0] === 'z') break
    }
  }
  return out
}

async function collect(image: DiskImage): Promise<Extent[]> {
  const out: Extent[] = []
  for await (const e of image.extents()) out.push({ ...e })
  return out
}

describe('LayeredImage (guest view over a backing image)', () => {
  it('reads and lists extents like the definition, for random layer stacks of different sizes', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.array(cellArb, { minLength: 1, maxLength: 12 }), { minLength: 1, maxLength: 3 }), fc.nat(15), async (stack, skew) => {
        let parent: DiskImage | undefined
        for (const cells of [...stack].reverse()) parent = new MemoryLayer(cells, parent)
        const top = parent as MemoryLayer
        const size = top.virtualSize
        const expected = expectedBytes(stack, size)
        const buf = new Uint8Array(size)
        await top.read(buf, 0)
        expect(Array.from(buf)).toEqual(Array.from(expected))
        // Unaligned partial read.
        if (size > skew + 1) {
          const part = new Uint8Array(size - skew - 1)
          await top.read(part, skew)
          expect(Array.from(part)).toEqual(Array.from(expected.subarray(skew, size - 1)))
        }
        const extents = await collect(top)
        let pos = 0
        for (const e of extents) {
          expect(e.offset).toBeGreaterThanOrEqual(pos)
          expect(e.length).toBeGreaterThan(0)
          pos = e.offset + e.length
        }
        expect(pos).toBeLessThanOrEqual(size)
        // Never omits data: every non-zero byte is in a non-zero extent.
        for (let i = 0; i < size; i++) {
          if (expected[i] !== 0) expect(extents.some((e) => !e.zero && i >= e.offset && i < e.offset + e.length)).toBe(true)
        }
        // Adjacent extents of the same kind are merged.
        for (let i = 1; i < extents.length; i++) {
          const a = extents[i - 1] as Extent
          const b = extents[i] as Extent
          expect(a.offset + a.length === b.offset && a.zero === b.zero).toBe(false)
        }
        await top.close()
        for (let l: DiskImage | undefined = top; l; l = l.backing) expect((l as MemoryLayer).ownClosed).toBe(true)
      }),
      { numRuns: 300 },
    )
  })

  it('zero cells hide the backing image; reads past the end are refused', async () => {
    const base = new MemoryLayer([['d', 1], ['d', 2]])
    const top = new MemoryLayer([['z'], ['u'], ['u']], base)
    expect(await collect(top)).toEqual([
      { offset: 0, length: 16, zero: true },
      { offset: 16, length: 16, zero: false },
    ])
    await expect(top.read(new Uint8Array(2), 47)).rejects.toMatchObject({ code: 'INVALID_INPUT' })
  })
})

describe('a failing read while the map is still being walked', () => {
  /** Cell 0 is data whose read fails (or succeeds slowly); the walk then waits (a table read) and may fail itself. */
  class FailingLayer extends MemoryLayer {
    readsFinished = 0
    constructor(private readonly failRead: boolean, private readonly failWalk: boolean) {
      super([['d', 1], ['d', 2], ['d', 3]])
    }
    protected override async *mapRange(offset: number, end: number): AsyncIterable<Segment> {
      for await (const seg of super.mapRange(offset, end)) {
        yield seg
        await new Promise((r) => setTimeout(r, 30))
        if (this.failWalk) throw new Error('table read failed')
      }
    }
    protected override async readData(target: Uint8Array, seg: Segment): Promise<void> {
      if (this.failRead) throw new Error(`data read at ${seg.offset} failed`)
      await new Promise((r) => setTimeout(r, 60))
      await super.readData(target, seg)
      this.readsFinished++
    }
  }

  it('rejects with the first failure, leaves no rejection unhandled, and returns only after its reads settled', async () => {
    const unhandled: unknown[] = []
    const onUnhandled = (reason: unknown): void => void unhandled.push(reason)
    process.on('unhandledRejection', onUnhandled)
    try {
      await expect(new FailingLayer(true, false).read(new Uint8Array(48), 0)).rejects.toThrow('data read at 0 failed')
      const walkFails = new FailingLayer(false, true)
      await expect(walkFails.read(new Uint8Array(48), 0)).rejects.toThrow('table read failed')
      expect(walkFails.readsFinished).toBe(1) // the read started before the walk failed had finished
      await new Promise((r) => setTimeout(r, 50))
      expect(unhandled).toEqual([])
    } finally {
      process.off('unhandledRejection', onUnhandled)
    }
  })
})
