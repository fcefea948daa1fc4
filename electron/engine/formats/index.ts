/**
 * Disk image formats: open any supported image in its guest view, write new images, convert.
 *
 * Terms (see types.ts for the contract)
 * - guest view: the bytes the virtual machine sees, backing chains resolved.
 * - extent: an allocated range of the guest view; everything else reads as zeros.
 * - format module: one format's probe + opener (open.ts `FormatModule`), registered here.
 * - writer: creates a new image from guest data written in increasing offset order.
 *
 * Entry points: `openImage` (detects the format by content), `createImageWriter`, `convertImage`.
 */
import { EngineError } from '../errors.js'
import { openImage, registerFormat } from './open.js'
import { createRawWriter, rawModule } from './raw/index.js'
import { createQcow2Writer, qcow2Module } from './qcow2/index.js'
import { createVhdWriter, vhdModule } from './vhd/index.js'
import { createVhdxWriter, vhdxModule } from './vhdx/index.js'
import { vmdkModule } from './vmdk/index.js'
import type { DiskImage, ImageWriter, WriterFormat, WriterOptions } from './types.js'

registerFormat(rawModule)
registerFormat(qcow2Module)
registerFormat(vhdModule)
registerFormat(vhdxModule)
registerFormat(vmdkModule)

export * from './types.js'
export { formatModule, openImage, probeFormat, registerFormat, resolveBackingPath } from './open.js'
export type { FormatModule, OpenContext, OpenImageOptions } from './open.js'

/**
 * Creates a writer for a new image at `path`. Refuses an existing file unless `options.overwrite`
 * (ALREADY_EXISTS). The caller owns the writer: `finish()` or `abort()` it.
 */
export async function createImageWriter(path: string, format: WriterFormat, options: WriterOptions): Promise<ImageWriter> {
  switch (format) {
    case 'raw':
      return createRawWriter(path, options)
    case 'qcow2':
      return createQcow2Writer(path, options)
    case 'vhd':
      return createVhdWriter(path, options, { fixed: false })
    case 'vhd-fixed':
      return createVhdWriter(path, options, { fixed: true })
    case 'vhdx':
      return createVhdxWriter(path, options)
    default:
      throw new EngineError('UNSUPPORTED', `Writing ${format} images is not available in this build of Tresor.`)
  }
}

export interface ConvertProgress {
  /** Guest bytes processed so far (extents read plus holes skipped), up to `totalBytes`. */
  doneBytes: number
  /** The virtual size of the input. */
  totalBytes: number
}

export interface ConvertOptions {
  overwrite?: boolean
  onProgress?: (progress: ConvertProgress) => void
  signal?: AbortSignal
  /** Writer options other than the size (cluster size, compression). */
  clusterSize?: number
  compress?: boolean
}

/** Size (and alignment) of each read while converting. */
const CONVERT_CHUNK = 4 * 1024 * 1024
/** Chunk buffers of a copy, shared by reads in flight and writes in flight: memory is CONVERT_BUFFERS chunks. */
const CONVERT_BUFFERS = 8
/** Reads in flight at most (each one chunk). */
const CONVERT_READ_DEPTH = 4

/**
 * Writes the guest view of the image at `input` as a new `to` image at `output`. Only allocated
 * extents are read; zero extents and holes stay unallocated. Memory: CONVERT_BUFFERS 4 MiB buffers
 * plus the formats' bounded caches. The output is durable (fsynced) when this resolves. On failure or cancellation
 * (CANCELLED) the output file is removed. Returns the writer's `bytesWritten` (guest bytes stored).
 */
export async function convertImage(input: string, output: string, to: WriterFormat, options: ConvertOptions = {}): Promise<{ bytesWritten: number }> {
  const image = await openImage(input)
  let writer: ImageWriter | undefined
  try {
    writer = await createImageWriter(output, to, {
      virtualSize: image.virtualSize,
      overwrite: options.overwrite ?? false,
      ...(options.clusterSize === undefined ? {} : { clusterSize: options.clusterSize }),
      ...(options.compress === undefined ? {} : { compress: options.compress }),
    })
    await copyGuestData(image, writer, options)
    const result = await writer.finish()
    options.onProgress?.({ doneBytes: image.virtualSize, totalBytes: image.virtualSize })
    return result
  } catch (err) {
    await writer?.abort().catch(() => undefined)
    throw err
  } finally {
    await image.close()
  }
}

/**
 * The read ranges of a copy: the non-zero extents of `image`, cut at CONVERT_CHUNK boundaries,
 * with the pieces that fall in the same chunk merged (small gaps read as zeros, which writers skip):
 * fewer, larger I/Os for fragmented images.
 */
async function* copyRanges(image: DiskImage): AsyncGenerator<{ offset: number; length: number }> {
  let cur: { offset: number; length: number; chunk: number } | undefined
  for await (const extent of image.extents()) {
    if (extent.zero) continue
    const end = extent.offset + extent.length
    for (let pos = extent.offset; pos < end; ) {
      const chunk = Math.floor(pos / CONVERT_CHUNK)
      const stop = Math.min((chunk + 1) * CONVERT_CHUNK, end)
      if (cur && cur.chunk === chunk) cur.length = stop - cur.offset
      else {
        if (cur) yield { offset: cur.offset, length: cur.length }
        cur = { offset: pos, length: stop - pos, chunk }
      }
      pos = stop
    }
  }
  if (cur) yield { offset: cur.offset, length: cur.length }
}

/**
 * Streams every non-zero extent of `image` into `writer` in order. Up to CONVERT_READ_DEPTH reads
 * are in flight; the oldest finished read is handed to the writer in offset order, with up to the
 * writer's `maxConcurrentWrites` writes in flight (one when unset). Reads and writes share
 * CONVERT_BUFFERS chunk buffers. Does not finish the writer.
 */
export async function copyGuestData(
  image: DiskImage,
  writer: ImageWriter,
  options: { onProgress?: (p: ConvertProgress) => void; signal?: AbortSignal } = {},
): Promise<void> {
  const free: Buffer[] = []
  let allocated = 0
  const reading: Array<{ offset: number; buf: Buffer; data: Buffer; done: Promise<unknown> }> = []
  const writing = new Set<Promise<void>>()
  const maxWrites = Math.max(1, writer.maxConcurrentWrites ?? 1)
  let writeError: { error: unknown } | undefined
  const total = image.virtualSize
  let lastReport = 0
  const checkCancel = (): void => {
    if (options.signal?.aborted) throw new EngineError('CANCELLED', `Conversion of "${image.path}" was cancelled.`)
  }
  const ranges = copyRanges(image)[Symbol.asyncIterator]()
  let exhausted = false
  try {
    for (;;) {
      while (!exhausted && reading.length < CONVERT_READ_DEPTH && (free.length > 0 || allocated < CONVERT_BUFFERS)) {
        const next = await ranges.next()
        if (next.done) {
          exhausted = true
          break
        }
        let buf = free.pop()
        if (!buf) {
          buf = writer.allocBuffer?.(CONVERT_CHUNK) ?? Buffer.allocUnsafe(CONVERT_CHUNK)
          allocated++
        }
        const data = buf.subarray(0, next.value.length)
        const done = image.read(data, next.value.offset)
        done.catch(() => undefined) // awaited below, in order
        reading.push({ offset: next.value.offset, buf, data, done })
      }
      // before the next read leaves `reading`: the finally below waits only for the reads still in it
      checkCancel()
      const first = reading.shift()
      if (!first) {
        if (exhausted) break
        // Every buffer is being written: wait for one to come back.
        if (writing.size === 0) throw new Error('copyGuestData: no buffer free and nothing in flight')
        await Promise.race(writing)
        continue
      }
      await first.done
      while (writing.size >= maxWrites) await Promise.race(writing)
      if (writeError) throw writeError.error
      const w: Promise<void> = writer.write(first.offset, first.data).then(
        () => {
          writing.delete(w)
          free.push(first.buf)
        },
        (error: unknown) => {
          writing.delete(w)
          writeError ??= { error }
        },
      )
      writing.add(w)
      const pos = first.offset + first.data.length
      if (options.onProgress && pos - lastReport >= 64 * 1024 * 1024) {
        lastReport = pos
        options.onProgress({ doneBytes: pos, totalBytes: total })
      }
    }
    while (writing.size > 0) await Promise.race(writing)
    if (writeError) throw writeError.error
  } finally {
    if (!exhausted) await ranges.return?.(undefined)
    // Let reads and writes still in flight settle before their buffers go away.
    await Promise.allSettled([...reading.map((f) => f.done), ...writing])
  }
  checkCancel()
}
