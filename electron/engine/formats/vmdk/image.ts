/**
 * An open VMDK disk: its extents placed one after the other in the guest view, plus the parent.
 */
import { EngineError } from '../../errors.js'
import { ImageFile, isAllZero, malformed, unsupported } from '../io.js'
import { LayeredImage } from '../layered.js'
import { resolveBackingPath, type OpenContext } from '../open.js'
import type { BackingInfo, DiskImage, Extent, ImageInfo, OpenOptions } from '../types.js'
import { MAX_DESCRIPTOR_BYTES, parseDescriptor, type Descriptor, type ExtentLine } from './descriptor.js'
import { SECTOR, SparseCaches, SparseExtent, isCowdMagic, isSparseMagic, readSparseHeader, type SparseHeader, type VmdkSegment } from './sparse.js'

/**
 * How much of a flat extent file has storage behind it (from `stat.blocks`): `full` files are read
 * as they are, `empty` ones (all holes) have no extents, `partial` ones are scanned for all-zero
 * granules when listing extents (Node has no SEEK_DATA; the raw reader makes the same choice).
 */
type Storage = 'full' | 'partial' | 'empty'

/** Unit of zero detection in flat extents while listing extents (as the raw reader). */
const FLAT_GRANULE = 64 * 1024
const FLAT_SCAN_CHUNK = 4 * 1024 * 1024

/** One extent line of the disk, placed at `start` (bytes) in the guest view. */
type Span =
  | { kind: 'flat'; start: number; length: number; file: ImageFile; position: number; storage: Storage }
  | { kind: 'zero'; start: number; length: number }
  | { kind: 'sparse'; start: number; length: number; extent: SparseExtent }

/** createTypes whose extents we understand. */
const SUPPORTED_TYPES: ReadonlySet<string> = new Set([
  'monolithicSparse',
  'monolithicFlat',
  'twoGbMaxExtentSparse',
  'twoGbMaxExtentFlat',
  'streamOptimized',
  'vmfs',
  'vmfsThin',
  'vmfsPreallocated',
  'vmfsEagerZeroedThick',
  'vmfsSparse',
  'custom',
])
/** createTypes refused by name, with what they are. */
const UNSUPPORTED_TYPES: ReadonlyMap<string, string> = new Map([
  ['vmfsRaw', 'a VMFS raw device'],
  ['vmfsRDM', 'a VMFS raw device mapping'],
  ['vmfsRawDeviceMap', 'a VMFS raw device mapping'],
  ['vmfsRDMP', 'a VMFS pass-through raw device mapping'],
  ['vmfsPassthroughRawDeviceMap', 'a VMFS pass-through raw device mapping'],
  ['fullDevice', 'a full physical device'],
  ['partitionedDevice', 'physical device partitions'],
  ['seSparse', 'the ESXi space-efficient sparse format (seSparse)'],
])

export class VmdkImage extends LayeredImage<VmdkSegment> {
  readonly format = 'vmdk' as const

  private constructor(
    readonly path: string,
    readonly variant: string,
    readonly virtualSize: number,
    readonly clusterSize: number,
    /** Content ID of this disk (descriptor `CID`), when it has one. */
    readonly cid: number | undefined,
    private readonly spans: Span[],
    private readonly files: ImageFile[],
    private readonly caches: SparseCaches,
  ) {
    super()
  }

  /** Opens the VMDK at `path` (a sparse extent or a text descriptor) and, through `ctx`, its parent. */
  static async open(path: string, ctx: OpenContext): Promise<VmdkImage> {
    const files = new Map<string, ImageFile>()
    const caches = new SparseCaches()
    const closeAll = async (): Promise<void> => {
      await Promise.all([...files.values()].map((f) => f.close().catch(() => undefined)))
    }
    let image: VmdkImage | undefined
    try {
      const top = await ImageFile.open(path, ctx.options)
      files.set(path, top)
      const head = await top.readUpTo(0, SECTOR)
      let descriptor: Descriptor
      let spans: Span[]
      let variant: string
      if (isSparseMagic(head) || isCowdMagic(head)) {
        const header = await readSparseHeader(top)
        const embedded = await readEmbeddedDescriptor(top, header)
        if (header.capacitySectors === 0 && header.descriptorOffsetSectors !== 0 && embedded !== undefined) {
          // A sparse file carrying only a descriptor (qemu reads it as a descriptor file).
          descriptor = parseDescriptor(embedded, path)
          variant = checkCreateType(descriptor, path)
          spans = await openSpans(descriptor, path, files, caches, ctx.options)
        } else {
          descriptor = embedded === undefined ? emptyDescriptor() : parseDescriptor(embedded, path)
          variant = header.magic === 'COWD' ? 'vmfsSparse' : header.compressed ? 'streamOptimized' : 'monolithicSparse'
          const extent = SparseExtent.fromHeader(top, header, 0, caches)
          spans = extent.lengthBytes > 0 ? [{ kind: 'sparse', start: 0, length: extent.lengthBytes, extent }] : []
        }
      } else {
        if (top.size > MAX_DESCRIPTOR_BYTES) {
          throw malformed(path, 'it is neither a VMDK sparse extent nor a VMDK descriptor (too large for a descriptor)')
        }
        const text = (await top.readAt(0, top.size, 'the VMDK descriptor')).toString('latin1')
        descriptor = parseDescriptor(cutAtNul(text), path)
        variant = checkCreateType(descriptor, path)
        spans = await openSpans(descriptor, path, files, caches, ctx.options)
      }
      const virtualSize = spans.reduce((sum, s) => sum + s.length, 0)
      if (!Number.isSafeInteger(virtualSize)) throw malformed(path, 'its extents add up to an impossible size')
      const firstSparse = spans.find((s) => s.kind === 'sparse')
      const clusterSize = firstSparse?.kind === 'sparse' ? firstSparse.extent.grainBytes : SECTOR
      image = new VmdkImage(path, variant, virtualSize, clusterSize, descriptor.cid, spans, [...files.values()], caches)
      const hint = descriptor.parentFileNameHint
      if (hint !== undefined && !ctx.options.noBacking) {
        const backing = await ctx.openBacking(resolveBackingPath(path, hint), 'vmdk')
        image.backing = backing
        const parentCid = descriptor.parentCid
        const actual = backing instanceof VmdkImage ? backing.cid : undefined
        if (parentCid !== undefined && parentCid !== 0xffffffff && actual !== undefined && actual !== parentCid) {
          throw new EngineError(
            'IMAGE_BACKING_MISMATCH',
            `The parent "${backing.path}" of "${path}" has changed since the delta was made (content ID ` +
              `${hex(actual)}, the delta expects ${hex(parentCid)}). Put the right parent back in place.`,
          )
        }
      }
      return image
    } catch (err) {
      if (image) await image.close().catch(() => undefined)
      else await closeAll()
      throw err
    }
  }

  protected async *mapRange(offset: number, end: number): AsyncIterable<VmdkSegment> {
    const spans = this.spans
    // Binary search for the first span ending after `offset`.
    let lo = 0
    let hi = spans.length
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      const s = spans[mid] as Span
      if (s.start + s.length <= offset) lo = mid + 1
      else hi = mid
    }
    for (let i = lo; i < spans.length; i++) {
      const span = spans[i] as Span
      if (span.start >= end) break
      const a = Math.max(offset, span.start)
      const b = Math.min(end, span.start + span.length)
      if (b <= a) continue
      if (span.kind === 'zero') yield { offset: a, length: b - a, kind: 'zero' }
      else if (span.kind === 'flat') {
        yield { offset: a, length: b - a, kind: 'data', source: { kind: 'file', file: span.file, position: span.position + (a - span.start) } }
      } else yield* span.extent.map(a, b)
    }
  }

  /**
   * The extents of the layered view, except that ranges of sparse flat files that hold only zeros
   * are left out (they read as zeros anyway), so a thin monolithicFlat disk is not read in full.
   */
  override async *extents(): AsyncIterable<Extent> {
    if (!this.spans.some((s) => s.kind === 'flat' && s.storage !== 'full')) {
      yield* super.extents()
      return
    }
    let out: Extent | undefined
    const emit = function* (piece: Extent): Generator<Extent> {
      if (out && out.offset + out.length === piece.offset && out.zero === piece.zero) out.length += piece.length
      else {
        if (out) yield out
        out = { ...piece }
      }
    }
    const spans = this.spans
    let si = 0 // extents come in increasing order: the span index only moves forward
    for await (const e of super.extents()) {
      if (e.zero) {
        yield* emit(e)
        continue
      }
      const end = e.offset + e.length
      while (si < spans.length && (spans[si] as Span).start + (spans[si] as Span).length <= e.offset) si++
      for (let k = si; k < spans.length; k++) {
        const span = spans[k] as Span
        if (span.start >= end) break
        const a = Math.max(e.offset, span.start)
        const b = Math.min(end, span.start + span.length)
        if (span.kind !== 'flat' || span.storage === 'full') yield* emit({ offset: a, length: b - a, zero: false })
        else if (span.storage === 'partial') for await (const piece of scanFlat(span, a, b)) yield* emit(piece)
      }
    }
    if (out) yield out
  }

  protected async readData(target: Uint8Array, segment: VmdkSegment): Promise<void> {
    const source = segment.source
    if (source?.kind === 'file') await source.file.readInto(target, source.position, 'VMDK grain data')
    else if (source?.kind === 'compressed') await source.extent.readCompressed(target, source.grainSector, source.offsetInGrain)
    else throw new EngineError('INTERNAL', `A VMDK data segment of "${this.path}" has no source.`)
  }

  protected async closeOwn(): Promise<void> {
    this.caches.clear()
    await Promise.all(this.files.map((f) => f.close().catch(() => undefined)))
  }

  async info(): Promise<ImageInfo> {
    let allocatedBytes = 0
    for await (const e of this.extents()) if (!e.zero) allocatedBytes += e.length
    const backingChain: BackingInfo[] = []
    for (let b: DiskImage | undefined = this.backing; b; b = b.backing) {
      backingChain.push({ path: b.path, format: b.format, variant: b.variant, virtualSize: b.virtualSize })
    }
    return {
      format: 'vmdk',
      variant: this.variant,
      virtualSize: this.virtualSize,
      allocatedBytes,
      clusterSize: this.clusterSize,
      backingChain,
    }
  }
}

function hex(n: number): string {
  return n.toString(16).padStart(8, '0')
}

function cutAtNul(text: string): string {
  const nul = text.indexOf('\0')
  return nul < 0 ? text : text.slice(0, nul)
}

function emptyDescriptor(): Descriptor {
  return { createType: undefined, cid: undefined, parentCid: undefined, parentFileNameHint: undefined, extents: [] }
}

/** The descriptor text embedded in a sparse extent, or undefined when it has none. */
async function readEmbeddedDescriptor(file: ImageFile, header: SparseHeader): Promise<string | undefined> {
  if (header.descriptorOffsetSectors === 0 || header.descriptorSizeSectors === 0) return undefined
  const position = header.descriptorOffsetSectors * SECTOR
  if (position >= file.size) throw malformed(file.path, 'the embedded VMDK descriptor lies past the end of the file')
  const length = Math.min(header.descriptorSizeSectors * SECTOR, MAX_DESCRIPTOR_BYTES, file.size - position)
  const buf = await file.readAt(position, length, 'the embedded VMDK descriptor')
  return cutAtNul(buf.toString('latin1'))
}

/** The disk type of a descriptor file; throws IMAGE_UNSUPPORTED / IMAGE_MALFORMED for others. */
function checkCreateType(descriptor: Descriptor, path: string): string {
  const type = descriptor.createType
  if (type === undefined) throw malformed(path, 'the VMDK descriptor has no createType')
  const refused = UNSUPPORTED_TYPES.get(type)
  if (refused !== undefined) throw unsupported(path, `${refused} (VMDK createType "${type}")`)
  if (!SUPPORTED_TYPES.has(type)) throw unsupported(path, `the VMDK disk type "${type}"`)
  if (descriptor.extents.length === 0) throw malformed(path, 'the VMDK descriptor lists no extents')
  return type
}

/** Opens the extent files named by a descriptor and places them one after the other. */
async function openSpans(descriptor: Descriptor, path: string, files: Map<string, ImageFile>, caches: SparseCaches, options: OpenOptions): Promise<Span[]> {
  const spans: Span[] = []
  let start = 0
  for (const line of descriptor.extents) {
    const span = await openSpan(line, start, path, files, caches, options)
    if (span.length === 0) continue
    spans.push(span)
    start += span.length
    if (!Number.isSafeInteger(start)) throw malformed(path, 'its extents add up to an impossible size')
  }
  return spans
}

async function openExtentFile(line: ExtentLine, descriptorPath: string, files: Map<string, ImageFile>, options: OpenOptions): Promise<ImageFile> {
  const extentPath = resolveBackingPath(descriptorPath, line.fileName ?? '')
  const known = files.get(extentPath)
  if (known) return known
  let file: ImageFile
  try {
    file = await ImageFile.open(extentPath, options)
  } catch (err) {
    if (err instanceof EngineError && err.code === 'NOT_FOUND') {
      throw new EngineError(
        'NOT_FOUND',
        `The extent file "${extentPath}" of the VMDK disk "${descriptorPath}" does not exist. Put it back beside the descriptor.`,
        { cause: err },
      )
    }
    throw err
  }
  files.set(extentPath, file)
  // A descriptor naming a device would make a backup read that device: only files are extents.
  if (!(await file.handle.stat()).isFile()) {
    throw unsupported(descriptorPath, `an extent on a device ("${extentPath}"), not in a file`)
  }
  return file
}

async function openSpan(line: ExtentLine, start: number, path: string, files: Map<string, ImageFile>, caches: SparseCaches, options: OpenOptions): Promise<Span> {
  const length = line.sectors * SECTOR
  if (line.access === 'NOACCESS') throw unsupported(path, 'a VMDK extent marked NOACCESS')
  switch (line.type) {
    case 'ZERO':
      return { kind: 'zero', start, length }
    case 'FLAT':
    case 'VMFS': {
      const file = await openExtentFile(line, path, files, options)
      const position = line.offsetSectors * SECTOR
      if (position + length > file.size) {
        throw malformed(path, `its flat extent "${file.path}" is shorter (${file.size} bytes) than the descriptor says (${position + length} bytes)`)
      }
      return { kind: 'flat', start, length, file, position, storage: await storageOf(file) }
    }
    case 'SPARSE':
    case 'VMFSSPARSE': {
      // Like qemu, either sparse kind (KDMV or COWD) is accepted for either extent type.
      const file = await openExtentFile(line, path, files, options)
      const head = await file.readUpTo(0, SECTOR)
      if (!isSparseMagic(head) && !isCowdMagic(head)) throw malformed(path, `its sparse extent "${file.path}" is not a VMDK sparse extent`)
      const header = await readSparseHeader(file)
      if (header.capacitySectors === 0) throw malformed(path, `its sparse extent "${file.path}" has no capacity`)
      // Like qemu, the extent's own header decides its size.
      const extent = SparseExtent.fromHeader(file, header, start, caches)
      return { kind: 'sparse', start, length: extent.lengthBytes, extent }
    }
    case 'VMFSRDM':
    case 'VMFSRAW':
      throw unsupported(path, `a VMFS raw device extent (${line.type})`)
    case 'SESPARSE':
      throw unsupported(path, 'an ESXi seSparse extent')
  }
}

async function storageOf(file: ImageFile): Promise<Storage> {
  const st = await file.handle.stat()
  const onDisk = st.blocks * 512
  if (!st.isFile() || onDisk >= st.size) return 'full'
  return onDisk === 0 ? 'empty' : 'partial'
}

/** Data pieces of guest range [a, b) of a flat span: granules (aligned in the guest view) that are not all zero. */
async function* scanFlat(span: Extract<Span, { kind: 'flat' }>, a: number, b: number): AsyncGenerator<Extent> {
  const buf = Buffer.allocUnsafe(FLAT_SCAN_CHUNK)
  let runStart = -1
  for (let pos = a; pos < b; ) {
    const n = Math.min(FLAT_SCAN_CHUNK - (pos % FLAT_GRANULE), b - pos)
    const chunk = buf.subarray(0, n)
    await span.file.readInto(chunk, span.position + (pos - span.start), 'VMDK flat extent data')
    for (let g = 0; g < n; ) {
      const gEnd = Math.min(n, g + FLAT_GRANULE - ((pos + g) % FLAT_GRANULE))
      const zero = isAllZero(chunk.subarray(g, gEnd))
      if (!zero && runStart < 0) runStart = pos + g
      else if (zero && runStart >= 0) {
        yield { offset: runStart, length: pos + g - runStart, zero: false }
        runStart = -1
      }
      g = gEnd
    }
    pos += n
  }
  if (runStart >= 0) yield { offset: runStart, length: b - runStart, zero: false }
}
