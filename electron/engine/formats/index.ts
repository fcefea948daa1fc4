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
/** Reads in flight while converting (each one chunk): memory is CONVERT_DEPTH chunks. */
const CONVERT_DEPTH = 4

/**
 * Writes the guest view of the image at `input` as a new `to` image at `output`. Only allocated
 * extents are read; zero extents and holes stay unallocated. Memory: two 4 MiB buffers plus the
 * formats' bounded caches. On failure or cancellation (CANCELLED) the output file is removed.
 * Returns the writer's `bytesWritten` (guest bytes stored).
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
 * Streams every non-zero extent of `image` into `writer` in order. Up to CONVERT_DEPTH reads are in
 * flight while the oldest one is written (writes stay strictly in order). Does not finish the writer.
 */
export async function copyGuestData(
  image: DiskImage,
  writer: ImageWriter,
  options: { onProgress?: (p: ConvertProgress) => void; signal?: AbortSignal } = {},
): Promise<void> {
  const free: Buffer[] = []
  const inflight: Array<{ offset: number; data: Buffer; done: Promise<unknown> }> = []
  const total = image.virtualSize
  let lastReport = 0
  const checkCancel = (): void => {
    if (options.signal?.aborted) throw new EngineError('CANCELLED', `Conversion of "${image.path}" was cancelled.`)
  }
  const ranges = copyRanges(image)[Symbol.asyncIterator]()
  let exhausted = false
  try {
    for (;;) {
      while (!exhausted && inflight.length < CONVERT_DEPTH) {
        const next = await ranges.next()
        if (next.done) {
          exhausted = true
          break
        }
        const buf = free.pop() ?? Buffer.allocUnsafe(CONVERT_CHUNK)
        const data = buf.subarray(0, next.value.length)
        const done = image.read(data, next.value.offset)
        done.catch(() => undefined) // awaited below, in order
        inflight.push({ offset: next.value.offset, data, done })
      }
      const first = inflight.shift()
      if (!first) break
      checkCancel()
      await first.done
      await writer.write(first.offset, first.data)
      free.push(Buffer.from(first.data.buffer, first.data.byteOffset, CONVERT_CHUNK))
      const pos = first.offset + first.data.length
      if (options.onProgress && pos - lastReport >= 64 * 1024 * 1024) {
        lastReport = pos
        options.onProgress({ doneBytes: pos, totalBytes: total })
      }
    }
  } finally {
    if (!exhausted) await ranges.return?.(undefined)
    // Let reads still in flight settle before their buffers go away.
    await Promise.allSettled(inflight.map((f) => f.done))
  }
  checkCancel()
}
