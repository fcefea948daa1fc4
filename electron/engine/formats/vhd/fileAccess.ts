/**
 * Small helpers shared by the VHD and VHDX readers: bounded, exact positioned reads of an image
 * file, errors that name the file, guest-view helpers for backing files, and extent merging.
 *
 * Terms
 * - container offset: a byte offset in the image file itself.
 * - guest offset: a byte offset in the guest view (see ../types.ts).
 */
import { open, type FileHandle } from 'node:fs/promises'
import { EngineError, fromFsError } from '../../errors.js'
import type { DiskImage, Extent } from '../types.js'

/** Largest single metadata read we allow; bigger requests come from a hostile size field. */
export const MAX_METADATA_READ = 64 * 1024 * 1024

export function malformed(path: string, problem: string, cause?: unknown): EngineError {
  return new EngineError(
    'IMAGE_MALFORMED',
    `"${path}" is damaged or not a valid image: ${problem}. Check the file, or restore it from a backup.`,
    cause === undefined ? undefined : { cause },
  )
}

/** A read-only image file with exact positioned reads. Concurrent reads are allowed. */
export class ImageFile {
  private constructor(
    readonly path: string,
    private readonly handle: FileHandle,
    readonly size: number,
  ) {}

  static async open(path: string): Promise<ImageFile> {
    let handle: FileHandle
    try {
      handle = await open(path, 'r')
    } catch (err) {
      throw fromFsError(err, path, 'opening') ?? err
    }
    try {
      const st = await handle.stat()
      return new ImageFile(path, handle, st.size)
    } catch (err) {
      await handle.close().catch(() => undefined)
      throw fromFsError(err, path, 'reading') ?? err
    }
  }

  /** Reads exactly `length` bytes at `offset`; a range past the end of the file is IMAGE_MALFORMED. */
  async readAt(offset: number, length: number, what: string): Promise<Buffer> {
    if (length > MAX_METADATA_READ) throw malformed(this.path, `${what} is implausibly large (${length} bytes)`)
    const buf = Buffer.alloc(length)
    await this.readInto(buf, offset, what)
    return buf
  }

  /** Fills `target` from `offset`; a range past the end of the file is IMAGE_MALFORMED. */
  async readInto(target: Uint8Array, offset: number, what: string): Promise<void> {
    if (!Number.isSafeInteger(offset) || offset < 0 || offset + target.length > this.size) {
      throw malformed(this.path, `${what} lies past the end of the file (offset ${offset}, ${target.length} bytes, file ${this.size} bytes)`)
    }
    let done = 0
    while (done < target.length) {
      let n: number
      try {
        ;({ bytesRead: n } = await this.handle.read(target, done, target.length - done, offset + done))
      } catch (err) {
        throw fromFsError(err, this.path, 'reading') ?? err
      }
      if (n === 0) throw malformed(this.path, `${what} was cut short (the file shrank while it was read)`)
      done += n
    }
  }

  async close(): Promise<void> {
    await this.handle.close()
  }
}

/** Checks a guest read request against the virtual size. */
export function checkReadRange(path: string, virtualSize: number, offset: number, length: number): void {
  if (!Number.isSafeInteger(offset) || offset < 0 || offset + length > virtualSize) {
    throw new EngineError('INVALID_INPUT', `Read of ${length} bytes at ${offset} is outside the ${virtualSize}-byte disk "${path}".`)
  }
}

/**
 * Reads guest bytes from a backing image into `target` (guest offset `offset`). Bytes past the
 * parent's own virtual size, or all bytes when there is no parent, read as zeros.
 */
export async function readFromBacking(backing: DiskImage | undefined, target: Uint8Array, offset: number): Promise<void> {
  const inside = backing ? Math.max(0, Math.min(target.length, backing.virtualSize - offset)) : 0
  if (inside > 0 && backing) await backing.read(target.subarray(0, inside), offset)
  if (inside < target.length) target.fill(0, inside)
}

/** Merges adjacent extents of the same kind; input must be ordered and non-overlapping. */
export class ExtentMerger {
  private pending: Extent | undefined

  /** Adds an extent; returns a finished extent when one can no longer grow. */
  push(e: Extent): Extent | undefined {
    if (e.length <= 0) return undefined
    const p = this.pending
    if (p && p.offset + p.length === e.offset && p.zero === e.zero) {
      p.length += e.length
      return undefined
    }
    this.pending = { offset: e.offset, length: e.length, zero: e.zero }
    return p
  }

  flush(): Extent | undefined {
    const p = this.pending
    this.pending = undefined
    return p
  }
}

/**
 * Walks a parent's extents once, in increasing order, handing out the parts inside successive
 * guest ranges. Calls to `within` must come with non-decreasing, non-overlapping ranges.
 */
export class ExtentCursor {
  private readonly it: AsyncIterator<Extent> | undefined
  private current: Extent | undefined
  private done = false

  constructor(source: AsyncIterable<Extent> | undefined) {
    this.it = source?.[Symbol.asyncIterator]()
    if (!this.it) this.done = true
  }

  async *within(start: number, end: number): AsyncGenerator<Extent> {
    while (!this.done) {
      if (!this.current) {
        const next = await this.it!.next()
        if (next.done) {
          this.done = true
          return
        }
        this.current = { ...next.value }
      }
      const c = this.current
      const cEnd = c.offset + c.length
      if (cEnd <= start) {
        this.current = undefined
        continue
      }
      if (c.offset >= end) return
      const s = Math.max(c.offset, start)
      const e = Math.min(cEnd, end)
      yield { offset: s, length: e - s, zero: c.zero }
      if (cEnd <= end) this.current = undefined
      else return
    }
  }

  async close(): Promise<void> {
    await this.it?.return?.()
  }
}

const ZERO_CHUNK = Buffer.alloc(64 * 1024)

/** True when every byte of `buf` is zero (memcmp against a zero page, chunk by chunk). */
export function isAllZero(buf: Uint8Array): boolean {
  const view = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength)
  for (let i = 0; i < view.length; i += ZERO_CHUNK.length) {
    const end = Math.min(view.length, i + ZERO_CHUNK.length)
    if (!view.subarray(i, end).equals(ZERO_CHUNK.subarray(0, end - i))) return false
  }
  return true
}
