/**
 * Raw images: the file is the guest view, byte for byte.
 *
 * Terms
 * - hole: a range of the file with no storage behind it (sparse file); reads as zeros.
 * - granule: the unit of hole detection and of sparse writing (64 KiB, aligned in the guest view).
 *
 * Extents rule (chosen by measurement, see test/bench/convert.ts "raw extents"): Node has no
 * lseek(SEEK_DATA/SEEK_HOLE) binding and a native addon is out of scope. So:
 * - a file whose allocated blocks (`stat.blocks * 512`) cover its size has no holes: one data
 *   extent, nothing read up front;
 * - a file with no allocated block is all holes: no extent;
 * - otherwise, on Linux, the file system's own map is asked through `filefrag -e` (FIEMAP): one
 *   process per image, milliseconds whatever the size, where scanning costs a read of every hole
 *   (measured: 512 MiB sparse, scan 0.24 s vs filefrag 0.10 s; the gap grows with the size of the
 *   holes). Data not yet written back shows as delayed-allocation extents, which are data, so the
 *   file is not synced first: syncing a disk image just copied or just used by its VM waits for
 *   gigabytes of writeback. Only when the map shows an unwritten (preallocated) range is it asked
 *   again with `-s` (sync first), because a page written into such a range keeps it "unwritten"
 *   until written back; after the sync, unwritten ranges read as zeros and are left out. The output
 *   is checked (header, order, the kernel's last-extent flag); any doubt falls back to:
 * - scanning: the file is read in large chunks and every all-zero granule is reported as a hole
 *   (reading a hole costs the kernel a page of zeros, not a disk read).
 * Either way only ranges that read as zeros are left out, so extents never omit data.
 */
import { spawn } from 'node:child_process'
import { open, stat, statfs, unlink, type FileHandle } from 'node:fs/promises'
import { resolve } from 'node:path'
import { createInterface } from 'node:readline'
import { EngineError, fromFsError } from '../../errors.js'
import { ImageFile, isAllZero } from '../io.js'
import { DIRECT_ALIGN, DirectWriter } from '../../io/directIo.js'
import type { FormatModule, OpenContext } from '../open.js'
import type { DiskImage, Extent, ImageInfo, ImageWriter, OpenOptions, WriterOptions } from '../types.js'

/** Unit of hole detection and sparse writing. */
export const RAW_GRANULE = 64 * 1024
/** Size of each read while scanning for holes. */
const SCAN_CHUNK = 4 * 1024 * 1024

export class RawImage implements DiskImage {
  readonly format = 'raw' as const
  readonly backing = undefined
  /** How the last `extents()` pass found the map (tests and diagnostics). */
  extentMethod: 'none' | 'whole file' | 'fiemap' | 'fiemap, synced' | 'fiemap, then scan' | 'fiemap, synced, then scan' | 'scan' | undefined

  private constructor(
    private readonly file: ImageFile,
    readonly variant: 'sparse' | 'full',
    readonly clusterSize: number,
    private readonly allocatedOnDisk: number,
  ) {}

  get path(): string {
    return this.file.path
  }
  get virtualSize(): number {
    return this.file.size
  }

  static async open(path: string, options: Pick<OpenOptions, 'blockingReads'> = {}): Promise<RawImage> {
    const file = await ImageFile.open(path, options)
    try {
      const st = await file.handle.stat()
      const onDisk = Math.min(st.blocks * 512, st.size)
      const variant = onDisk < st.size ? 'sparse' : 'full'
      return new RawImage(file, variant, st.blksize > 0 ? st.blksize : 4096, onDisk)
    } catch (err) {
      await file.close()
      throw err
    }
  }

  async read(buffer: Uint8Array, offset: number): Promise<Uint8Array> {
    if (!Number.isSafeInteger(offset) || offset < 0 || offset + buffer.length > this.virtualSize) {
      throw new EngineError('INVALID_INPUT', `Read of ${buffer.length} bytes at ${offset} is outside "${this.path}" (${this.virtualSize} bytes).`)
    }
    await this.file.readInto(buffer, offset, 'guest data')
    return buffer
  }

  async *extents(): AsyncIterable<Extent> {
    const size = this.virtualSize
    if (size === 0 || this.allocatedOnDisk === 0) {
      this.extentMethod = 'none'
      return
    }
    if (this.variant === 'full') {
      this.extentMethod = 'whole file'
      yield { offset: 0, length: size, zero: false }
      return
    }
    let from = 0
    this.extentMethod = 'scan'
    if (process.platform === 'linux' && process.env.TRESOR_RAW_EXTENTS !== 'scan') {
      const progress = { end: 0 }
      // Other file systems may not map data still in memory: their map is read after a sync.
      const unsyncedOk = await mapsDelayedAllocation(this.path)
      this.extentMethod = unsyncedOk ? 'fiemap' : 'fiemap, synced'
      let outcome = yield* fiemapExtents(this.path, size, progress, !unsyncedOk)
      if (outcome === 'needs sync') {
        // Preallocated ranges are only known to read as zeros once the file's dirty pages are on
        // disk: map the rest again after a sync.
        this.extentMethod = 'fiemap, synced'
        outcome = yield* fiemapExtents(this.path, size, progress, true)
      }
      if (outcome === 'complete') return
      this.extentMethod = this.extentMethod === 'fiemap' ? 'fiemap, then scan' : 'fiemap, synced, then scan'
      from = progress.end // continue by scanning after what FIEMAP already reported
    }
    yield* this.scanExtents(from)
  }

  /** Extents by reading the file from `from` and leaving out all-zero granules. */
  private async *scanExtents(from: number): AsyncIterable<Extent> {
    const size = this.virtualSize
    const buf = Buffer.allocUnsafe(SCAN_CHUNK)
    let runStart = -1
    for (let pos = from; pos < size; pos += SCAN_CHUNK) {
      const n = Math.min(SCAN_CHUNK, size - pos)
      const chunk = buf.subarray(0, n)
      await this.file.readInto(chunk, pos, 'guest data')
      for (let g = 0; g < n; g += RAW_GRANULE) {
        const zero = isAllZero(chunk.subarray(g, Math.min(n, g + RAW_GRANULE)))
        if (!zero && runStart < 0) runStart = pos + g
        else if (zero && runStart >= 0) {
          yield { offset: runStart, length: pos + g - runStart, zero: false }
          runStart = -1
        }
      }
    }
    if (runStart >= 0) yield { offset: runStart, length: size - runStart, zero: false }
  }

  async info(): Promise<ImageInfo> {
    let allocated = 0
    if (this.variant === 'full') allocated = this.virtualSize
    else for await (const e of this.extents()) if (!e.zero) allocated += e.length
    return {
      format: 'raw',
      variant: this.variant,
      virtualSize: this.virtualSize,
      allocatedBytes: allocated,
      clusterSize: this.clusterSize,
      backingChain: [],
    }
  }

  async close(): Promise<void> {
    await this.file.close()
  }
}

/**
 * File systems whose FIEMAP reports data still only in memory as delayed-allocation extents (ext4,
 * XFS, btrfs; `statfs` magic numbers). Elsewhere the map is read after a sync.
 */
const MAPS_DELAYED_ALLOCATION = new Set([0xef53, 0x58465342, 0x9123683e])

/** True when `path` lies on a file system whose FIEMAP maps delayed allocations (statfs). */
async function mapsDelayedAllocation(path: string): Promise<boolean> {
  try {
    return MAPS_DELAYED_ALLOCATION.has((await statfs(path)).type)
  } catch {
    return false
  }
}

const FILEFRAG_EXTENT = /^\s*(\d+):\s+(\d+)\.\.\s*(\d+):\s+\d+\.\.\s*\d+:\s+\d+:\s*(?:\d+:)?\s*(\S*)\s*$/

/** The block size (bytes) a line of `filefrag -e` output states, if it is the size line. */
export function filefragBlockSize(line: string): number | undefined {
  const m = /\((\d+) blocks? of (\d+) bytes\)/.exec(line)
  return m ? Number(m[2]) : undefined
}

/** One extent line of `filefrag -e` output: its index, logical first and last block, and flags. */
export function filefragExtent(line: string): { index: number; first: number; last: number; flags: string[] } | undefined {
  const m = FILEFRAG_EXTENT.exec(line)
  return m ? { index: Number(m[1]), first: Number(m[2]), last: Number(m[3]), flags: (m[4] ?? '').split(',') } : undefined
}

/**
 * Data extents of `path` from FIEMAP via `filefrag -e` (`-s` first syncs the file), merged, clipped
 * to `size` and to what follows `progress.end` (a second pass resumes there). Returns 'complete'
 * when the whole map was read and checked; 'needs sync' when an unsynced map shows a preallocated
 * range, whose written pages may still be only in memory (map again with `sync`); 'failed' when
 * filefrag is missing, fails or prints something unexpected. `progress.end` is the end of what was
 * yielded. Call it unsynced only on a file system that maps delayed allocations.
 */
async function* fiemapExtents(path: string, size: number, progress: { end: number }, sync: boolean): AsyncGenerator<Extent, 'complete' | 'needs sync' | 'failed'> {
  const args = sync ? ['-s', '-e', resolve(path)] : ['-e', resolve(path)]
  const child = spawn('filefrag', args, { stdio: ['ignore', 'pipe', 'ignore'], env: { ...process.env, LC_ALL: 'C' } })
  const exited = new Promise<number>((done) => {
    child.on('error', () => done(-1))
    child.on('close', (code) => done(code ?? -1))
  })
  const floor = progress.end
  let blockSize = 0
  let sawHeader = false
  let lines = 0
  let lastFlag = false
  let count = -1
  let expectedIndex = 0
  let previousEnd = 0
  let pending: Extent | undefined
  let ok = true
  let needsSync = false
  const lineReader = createInterface({ input: child.stdout })
  try {
    for await (const line of lineReader) {
      const stated = filefragBlockSize(line)
      if (stated !== undefined && blockSize === 0) {
        blockSize = stated
        continue
      }
      if (/^\s*ext:\s+logical_offset:/.test(line)) {
        sawHeader = true
        continue
      }
      const found = /: (\d+) extents? found\s*$/.exec(line)
      if (found) {
        count = Number(found[1])
        continue
      }
      const e = filefragExtent(line)
      if (!e) continue
      if (!sawHeader || blockSize <= 0 || e.index !== expectedIndex) {
        ok = false
        break
      }
      expectedIndex++
      lines++
      const flags = e.flags
      lastFlag = flags.includes('last')
      const logicalStart = e.first * blockSize
      const logicalEnd = (e.last + 1) * blockSize
      if (logicalStart < previousEnd) {
        ok = false // not in increasing order: do not trust the map
        break
      }
      previousEnd = logicalEnd
      if (flags.includes('unwritten')) {
        if (sync) continue // on disk and never written: reads as zeros
        needsSync = true
        break
      }
      const start = Math.max(logicalStart, floor)
      const end = Math.min(size, logicalEnd)
      if (!(start < end)) continue // before the resume point or past the end of the file
      if (pending && pending.offset + pending.length === start) pending.length = end - pending.offset
      else {
        if (pending) {
          yield pending
          progress.end = pending.offset + pending.length
        }
        pending = { offset: start, length: end - start, zero: false }
      }
    }
  } finally {
    lineReader.close()
    if (child.exitCode === null) child.kill()
  }
  const code = await exited
  // filefrag counts physically contiguous lines as one extent, so its count is at most the lines
  // printed; the kernel flags the map's final extent as last, which proves nothing was cut off.
  const complete = ok && !needsSync && code === 0 && count >= 0 && count <= lines && (lines > 0 ? lastFlag : count === 0)
  if (complete || (ok && needsSync)) {
    // what came before is data whatever a sync would change
    if (pending) {
      yield pending
      progress.end = pending.offset + pending.length
    }
    return complete ? 'complete' : 'needs sync'
  }
  return 'failed'
}

export const rawModule: FormatModule = {
  format: 'raw',
  probe: () => true,
  open: (path: string, ctx: OpenContext) => RawImage.open(path, ctx.options),
}

/** Opens `path` for a new image: exclusive unless `overwrite` (ALREADY_EXISTS otherwise). */
export async function createOutputFile(path: string, overwrite: boolean | undefined): Promise<FileHandle> {
  try {
    return await open(path, overwrite ? 'w' : 'wx')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
      throw new EngineError('ALREADY_EXISTS', `"${path}" already exists. Choose another name or allow overwriting it.`, { cause: err })
    }
    throw fromFsError(err, path, 'creating') ?? err
  }
}

/** Writes all of `data` at `position` (loops over short writes); fs errors name the path. */
export async function writeFully(handle: FileHandle, path: string, data: Uint8Array, position: number): Promise<void> {
  let done = 0
  while (done < data.length) {
    try {
      const { bytesWritten } = await handle.write(data, done, data.length - done, position + done)
      if (bytesWritten <= 0) throw new EngineError('IO_ERROR', `Writing "${path}" made no progress.`)
      done += bytesWritten
    } catch (err) {
      if (err instanceof EngineError) throw err
      throw fromFsError(err, path, 'writing') ?? err
    }
  }
}

/** Checks the writer contract's ordering rule; `next` is the first offset a write may use. */
export function checkWriteOrder(path: string, next: number, offset: number, length: number, virtualSize: number): void {
  if (!Number.isSafeInteger(offset) || offset < next) {
    throw new EngineError('INVALID_INPUT', `Writes to "${path}" must come in increasing, non-overlapping order (got ${offset}, expected >= ${next}).`)
  }
  if (offset + length > virtualSize) {
    throw new EngineError('INVALID_INPUT', `A write of ${length} bytes at ${offset} lies past the end of "${path}" (${virtualSize} bytes).`)
  }
}

/** Write calls a raw writer accepts at once (`ImageWriter.maxConcurrentWrites`). */
const RAW_WRITE_DEPTH = 4
/** Bytes written between two background flushes (see RawWriter). */
const RAW_FLUSH_EVERY = 512 * 1024 * 1024

/**
 * A sparse raw writer: all-zero granules are skipped (left as holes), the file is sized to
 * `virtualSize` and fsynced at `finish()`. `bytesWritten` counts guest bytes stored (non-hole).
 *
 * Direct I/O (directIo.ts): where the file system allows it, data in memory from `allocBuffer` at
 * 4 KiB-aligned positions is written with O_DIRECT through a second handle, bypassing the page
 * cache; everything else (unaligned heads and tails, caller buffers) goes through the ordinary
 * handle. A direct write the kernel refuses (EINVAL) turns direct I/O off for the rest of the file
 * and is redone buffered.
 *
 * Early flushing: every RAW_FLUSH_EVERY bytes written, an fdatasync starts in the background (at
 * most one at a time; writes never wait for it), so the disk writes while the copy goes on and the
 * final fsync has little left to do. A failed background flush fails the next `write` or `finish`
 * (the error is kept: a later fsync may not report it again).
 */
class RawWriter implements ImageWriter {
  readonly format = 'raw' as const
  readonly maxConcurrentWrites = RAW_WRITE_DEPTH
  private next = 0
  private written = 0
  private unflushed = 0
  private flushing: Promise<void> | undefined
  private flushError: { error: unknown } | undefined
  private done = false
  constructor(
    readonly path: string,
    private readonly handle: FileHandle,
    private readonly virtualSize: number,
    private readonly direct: DirectWriter,
  ) {}

  /** Memory this writer writes fastest from: page aligned when direct I/O is on. */
  allocBuffer(bytes: number): Buffer {
    return this.direct.alloc(bytes)
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    checkWriteOrder(this.path, this.next, offset, data.length, this.virtualSize)
    this.next = offset + data.length
    this.throwFlushError()
    // Walk granules aligned in the guest view; write runs of non-zero granules in one call each,
    // all of them at once.
    const runs: Promise<void>[] = []
    let runStart = -1
    let pos = 0
    while (pos < data.length) {
      const abs = offset + pos
      const stop = Math.min(data.length, abs - (abs % RAW_GRANULE) + RAW_GRANULE - offset)
      const zero = isAllZero(data.subarray(pos, stop))
      if (!zero && runStart < 0) runStart = pos
      else if (zero && runStart >= 0) {
        runs.push(this.writeRun(data, runStart, pos, offset))
        runStart = -1
      }
      pos = stop
    }
    if (runStart >= 0) runs.push(this.writeRun(data, runStart, data.length, offset))
    // Every run must settle before the caller may reuse `data`; the first failure is reported.
    const results = await Promise.allSettled(runs)
    for (const r of results) if (r.status === 'rejected') throw r.reason
  }

  private async writeRun(data: Uint8Array, from: number, to: number, offset: number): Promise<void> {
    const run = data.subarray(from, to)
    const position = offset + from
    // The aligned prefix directly when it qualifies; the rest (or all) through the ordinary handle.
    const directBytes = run.length - (run.length % DIRECT_ALIGN)
    const wroteDirect = directBytes > 0 && (await this.direct.write([run.subarray(0, directBytes)], position)) ? directBytes : 0
    if (wroteDirect < run.length) {
      await writeFully(this.handle, this.path, run.subarray(wroteDirect), position + wroteDirect)
      this.unflushed += run.length - wroteDirect
    }
    this.written += run.length
    if (this.unflushed >= RAW_FLUSH_EVERY && !this.flushing && !this.done) this.startFlush()
  }

  private startFlush(): void {
    this.unflushed = 0
    this.flushing = this.handle.datasync().then(
      () => {
        this.flushing = undefined
      },
      (error: unknown) => {
        this.flushing = undefined
        this.flushError ??= { error: fromFsError(error, this.path, 'flushing') ?? error }
      },
    )
  }

  private throwFlushError(): void {
    if (this.flushError) throw this.flushError.error
  }

  async finish(): Promise<{ bytesWritten: number }> {
    if (this.done) throw new EngineError('INVALID_INPUT', `"${this.path}" is already finished.`)
    this.done = true
    try {
      await this.flushing
      this.throwFlushError()
      await this.direct.close()
      await this.handle.truncate(this.virtualSize)
      await this.handle.sync()
    } catch (err) {
      await this.handle.close().catch(() => undefined)
      throw fromFsError(err, this.path, 'finishing') ?? err
    }
    await this.handle.close()
    return { bytesWritten: this.written }
  }

  async abort(): Promise<void> {
    if (!this.done) {
      this.done = true
      await this.flushing
      await this.direct.close()
      await this.handle.close().catch(() => undefined)
    }
    await unlink(this.path).catch(() => undefined)
  }
}

/** Creates a sparse raw image at `path` (see RawWriter). */
export async function createRawWriter(path: string, options: WriterOptions): Promise<ImageWriter> {
  if (!Number.isSafeInteger(options.virtualSize) || options.virtualSize < 0) {
    throw new EngineError('INVALID_INPUT', `Invalid virtual size ${options.virtualSize} for "${path}".`)
  }
  const handle = await createOutputFile(path, options.overwrite)
  return new RawWriter(path, handle, options.virtualSize, await DirectWriter.open(path))
}

/** Size of the file's allocated storage (for tests and info). */
export async function allocatedOnDisk(path: string): Promise<number> {
  const st = await stat(path)
  return st.blocks * 512
}
