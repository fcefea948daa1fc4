/**
 * The guest view of an image that may sit on a backing image, shared by every format.
 *
 * Terms
 * - segment: a piece of the image's own mapping, in guest offsets: `data` (this image holds the
 *   bytes), `zero` (this image says the range reads as zeros) or `unallocated` (this image says
 *   nothing: the range comes from the backing image, or reads as zeros without one).
 *
 * A format subclasses `LayeredImage`, implementing `mapRange` (its own table walk) and `readData`
 * (reading one of its data segments). The base class provides `read` and `extents` with the
 * backing rules: unallocated ranges come from the parent (zeros past the parent's end), and
 * extents of the parent show through only where this image is unallocated.
 */
import { EngineError } from '../errors.js'
import type { DiskImage, Extent, ImageFormat, ImageInfo } from './types.js'
import { zeroFill } from './io.js'
import { Started } from '../io/started.js'

export type SegmentKind = 'data' | 'zero' | 'unallocated'

export interface Segment {
  offset: number
  length: number
  kind: SegmentKind
}

export abstract class LayeredImage<S extends Segment = Segment> implements DiskImage {
  abstract readonly path: string
  abstract readonly format: ImageFormat
  abstract readonly variant: string
  abstract readonly virtualSize: number
  abstract readonly clusterSize: number
  backing: DiskImage | undefined = undefined
  private closed = false

  /**
   * This image's own mapping of [offset, end): contiguous segments, in order, exactly covering the
   * range (clipped to it), each of positive length. `end <= virtualSize`.
   */
  protected abstract mapRange(offset: number, end: number): AsyncIterable<S>
  /** Reads the bytes of one data segment (as yielded by `mapRange`) into `target` (its exact length). */
  protected abstract readData(target: Uint8Array, segment: S): Promise<void>
  /** Closes this image's own files (not the backing image). */
  protected abstract closeOwn(): Promise<void>
  abstract info(): Promise<ImageInfo>

  async read(buffer: Uint8Array, offset: number): Promise<Uint8Array> {
    const end = offset + buffer.length
    if (!Number.isSafeInteger(offset) || offset < 0 || end > this.virtualSize) {
      throw new EngineError(
        'INVALID_INPUT',
        `Read of ${buffer.length} bytes at ${offset} is outside "${this.path}" (${this.virtualSize} bytes).`,
      )
    }
    if (buffer.length === 0) return buffer
    // reads run while the map is walked (which may itself read tables); none outlives the call
    const reads = new Started()
    try {
      for await (const seg of this.mapRange(offset, end)) {
        const target = buffer.subarray(seg.offset - offset, seg.offset - offset + seg.length)
        if (seg.kind === 'data') reads.add(this.readData(target, seg))
        else if (seg.kind === 'zero' || !this.backing) zeroFill(target)
        else reads.add(readFromBacking(this.backing, target, seg.offset))
      }
    } catch (err) {
      await reads.drain()
      throw err
    }
    await reads.settle()
    return buffer
  }

  async *extents(): AsyncIterable<Extent> {
    const backing = this.backing
    const backingEnd = backing ? Math.min(backing.virtualSize, this.virtualSize) : 0
    const parent = backing && backingEnd > 0 ? backing.extents()[Symbol.asyncIterator]() : undefined
    let parentCurrent: Extent | undefined
    let parentDone = parent === undefined
    let out: Extent | undefined
    try {
      for await (const seg of this.mapRange(0, this.virtualSize)) {
        const pieces: Extent[] = []
        if (seg.kind === 'data') pieces.push({ offset: seg.offset, length: seg.length, zero: false })
        else if (seg.kind === 'zero') pieces.push({ offset: seg.offset, length: seg.length, zero: true })
        else if (parent && !parentDone && seg.offset < backingEnd) {
          const segEnd = Math.min(seg.offset + seg.length, backingEnd)
          for (;;) {
            if (!parentCurrent) {
              const next = await parent.next()
              if (next.done) {
                parentDone = true
                break
              }
              parentCurrent = next.value
            }
            const pEnd = parentCurrent.offset + parentCurrent.length
            if (pEnd <= seg.offset) {
              parentCurrent = undefined
              continue
            }
            if (parentCurrent.offset >= segEnd) break
            const start = Math.max(parentCurrent.offset, seg.offset)
            const stop = Math.min(pEnd, segEnd)
            if (stop > start) pieces.push({ offset: start, length: stop - start, zero: parentCurrent.zero })
            if (pEnd <= segEnd) parentCurrent = undefined
            else break
          }
        }
        for (const piece of pieces) {
          if (out && out.offset + out.length === piece.offset && out.zero === piece.zero) out.length += piece.length
          else {
            if (out) yield out
            out = piece
          }
        }
      }
      if (out) yield out
    } finally {
      if (parent && !parentDone) await parent.return?.()
    }
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    try {
      await this.closeOwn()
    } finally {
      await this.backing?.close()
    }
  }
}

/** Reads `target.length` guest bytes at `offset` from `backing`, zeros past its end. */
export async function readFromBacking(backing: DiskImage, target: Uint8Array, offset: number): Promise<void> {
  const avail = Math.max(0, Math.min(target.length, backing.virtualSize - offset))
  if (avail > 0) await backing.read(target.subarray(0, avail), offset)
  if (avail < target.length) zeroFill(target, avail)
}
