/**
 * qcow2 reader (v2 and v3): L1/L2 walk with bounds checks, compressed clusters (deflate, zstd),
 * zero clusters, extended L2 subclusters, external data files, backing files of any format.
 *
 * Memory: the L1 table (at most 32 MiB by qemu's own limit, usually a few KiB) plus an LRU of L2
 * tables bounded to `L2_CACHE_BYTES`, plus one decompressed cluster.
 */
import { inflateRaw, constants as zlibConstants } from 'node:zlib'
import { promisify } from 'node:util'
import { createRequire } from 'node:module'
import { EngineError } from '../../errors.js'
import { ImageFile, check, malformed, zeroFill } from '../io.js'
import { LayeredImage, type Segment } from '../layered.js'
import { resolveBackingPath, type OpenContext } from '../open.js'
import type { BackingInfo, DiskImage, ImageInfo } from '../types.js'
import { AUTOCLEAR_DATA_FILE_RAW, ourFormatName, readBitmaps, readHeader, readSnapshots, type Qcow2Header } from './header.js'

const inflateRawAsync = promisify(inflateRaw)

interface ZstdBinding {
  DCtx: new () => { decompress(dst: Uint8Array, src: Uint8Array): number }
  findFrameCompressedSize(src: Uint8Array): number
}
let zstd: ZstdBinding | undefined
function zstdBinding(): ZstdBinding {
  // zstd-napi's low-level binding exposes frame sizing, needed because a compressed cluster is
  // followed by unrelated bytes up to its sector boundary.
  zstd ??= createRequire(import.meta.url)('zstd-napi/binding.js') as ZstdBinding
  return zstd
}

/** Bound on cached L2 tables (bytes). */
export const L2_CACHE_BYTES = 32 * 1024 * 1024

interface Qcow2Segment extends Segment {
  /** data: host offset of the segment's first byte (in the data file when there is one). */
  host: number
  /** Compressed cluster: descriptor offset and size; `host` is then the offset inside the cluster. */
  cOffset?: number
  cSize?: number
}

export class Qcow2Image extends LayeredImage<Qcow2Segment> {
  readonly format = 'qcow2' as const
  readonly variant: string
  readonly virtualSize: number
  readonly clusterSize: number
  private readonly l2Entries: number
  private readonly l2Bytes: number
  private readonly l1Span: number
  private readonly l2Cache = new Map<number, Buffer>()
  private readonly l2Loading = new Map<number, Promise<Buffer>>()
  private readonly l2CacheMax: number
  private lastCompressed: { offset: number; data: Buffer } | undefined
  private readonly compressedLoading = new Map<number, Promise<Buffer>>()

  private constructor(
    private readonly file: ImageFile,
    readonly header: Qcow2Header,
    private readonly l1: Buffer,
    private readonly dataFile: ImageFile | undefined,
  ) {
    super()
    this.variant = `v${header.version}`
    this.virtualSize = header.virtualSize
    this.clusterSize = header.clusterSize
    this.l2Bytes = header.clusterSize
    this.l2Entries = header.clusterSize / (header.extendedL2 ? 16 : 8)
    this.l1Span = this.l2Entries * header.clusterSize
    this.l2CacheMax = Math.max(4, Math.floor(L2_CACHE_BYTES / header.clusterSize))
  }

  get path(): string {
    return this.file.path
  }

  static async open(path: string, ctx: OpenContext): Promise<Qcow2Image> {
    const file = await ImageFile.open(path, ctx.options)
    let dataFile: ImageFile | undefined
    let image: Qcow2Image | undefined
    try {
      const header = await readHeader(file)
      if (header.cryptMethod !== 0) {
        throw new EngineError(
          'IMAGE_ENCRYPTED',
          `"${path}" is an encrypted qcow2 image (${header.cryptMethod === 2 ? 'LUKS' : 'AES'}). Tresor cannot read encrypted images; ` +
            'convert it to an unencrypted image with qemu-img first.',
        )
      }
      const l1 = await file.readAt(header.l1TableOffset, header.l1Size * 8, 'the L1 table')
      if (header.dataFile !== undefined) {
        const dataPath = resolveBackingPath(path, header.dataFile)
        try {
          dataFile = await ImageFile.open(dataPath, ctx.options)
        } catch (err) {
          throw new EngineError('IMAGE_BACKING_MISSING', `The external data file "${dataPath}" of "${path}" cannot be opened. Put it back in place and try again.`, { cause: err })
        }
      }
      image = new Qcow2Image(file, header, l1, dataFile)
      if (header.backingFile !== undefined && !ctx.options.noBacking) {
        image.backing = await openQcow2Backing(path, header, ctx)
      }
      return image
    } catch (err) {
      await dataFile?.close().catch(() => undefined)
      await file.close().catch(() => undefined)
      throw err
    }
  }

  private l2OffsetAt(l1Index: number): number {
    if (l1Index >= this.header.l1Size) return 0
    const hi = this.l1.readUInt32BE(l1Index * 8)
    const lo = this.l1.readUInt32BE(l1Index * 8 + 4)
    return (hi & 0x00ffffff) * 0x1_0000_0000 + (lo >>> 9) * 512
  }

  private async loadL2(offset: number): Promise<Buffer> {
    const cached = this.l2Cache.get(offset)
    if (cached) {
      this.l2Cache.delete(offset)
      this.l2Cache.set(offset, cached)
      return cached
    }
    const loading = this.l2Loading.get(offset)
    if (loading) return loading
    const p = (async () => {
      check(offset % this.clusterSize === 0, this.path, `an L2 table offset (${offset}) is not cluster aligned`)
      check(offset >= this.clusterSize, this.path, 'an L2 table overlaps the header')
      const table = await this.file.readAt(offset, this.l2Bytes, 'an L2 table')
      this.l2Cache.set(offset, table)
      while (this.l2Cache.size > this.l2CacheMax) {
        const oldest = this.l2Cache.keys().next().value as number
        this.l2Cache.delete(oldest)
      }
      return table
    })()
    this.l2Loading.set(offset, p)
    try {
      return await p
    } finally {
      this.l2Loading.delete(offset)
    }
  }

  protected async *mapRange(offset: number, end: number): AsyncIterable<Qcow2Segment> {
    const cs = this.clusterSize
    const ext = this.header.extendedL2
    const hasDataFile = this.dataFile !== undefined
    const zeroFlag = this.header.version === 3 && !ext
    const sub = cs / 32
    let cur: Qcow2Segment | undefined
    const out: Qcow2Segment[] = []
    const push = (seg: Qcow2Segment): void => {
      if (
        cur &&
        cur.kind === seg.kind &&
        cur.offset + cur.length === seg.offset &&
        cur.cOffset === undefined &&
        seg.cOffset === undefined &&
        (cur.kind !== 'data' || cur.host + cur.length === seg.host)
      ) {
        cur.length += seg.length
        return
      }
      if (cur) out.push(cur)
      cur = seg
    }
    let pos = offset
    while (pos < end) {
      const l1Index = Math.floor(pos / this.l1Span)
      const spanEnd = Math.min((l1Index + 1) * this.l1Span, end)
      const l2Offset = this.l2OffsetAt(l1Index)
      if (l2Offset === 0) {
        push({ offset: pos, length: spanEnd - pos, kind: 'unallocated', host: 0 })
        pos = spanEnd
      } else {
        const table = await this.loadL2(l2Offset)
        while (pos < spanEnd) {
          const cluster = Math.floor(pos / cs)
          const clusterStart = cluster * cs
          const cEnd = Math.min(clusterStart + cs, spanEnd)
          const e = (cluster % this.l2Entries) * (ext ? 16 : 8)
          const hi = table.readUInt32BE(e)
          const lo = table.readUInt32BE(e + 4)
          if (hi & 0x40000000) {
            // Compressed cluster: x = 62 - (cluster_bits - 8) bits of byte offset, then sector count.
            check(!hasDataFile, this.path, 'a compressed cluster appears in an image with an external data file')
            const x = 62 - (this.header.clusterBits - 8)
            const full = (BigInt(hi) << 32n) | BigInt(lo)
            const cOffset = Number(full & ((1n << BigInt(x)) - 1n))
            const sectors = Number((full >> BigInt(x)) & ((1n << BigInt(62 - x)) - 1n))
            const cSize = (sectors + 1) * 512 - (cOffset % 512)
            push({ offset: pos, length: cEnd - pos, kind: 'data', host: pos - clusterStart, cOffset, cSize })
          } else {
            const host = (hi & 0x00ffffff) * 0x1_0000_0000 + (lo >>> 9) * 512
            const allocated = host !== 0 || (hasDataFile && (hi & 0x80000000) !== 0)
            if (allocated) {
              check(host % cs === 0, this.path, `a data cluster offset (${host}) is not cluster aligned`)
              check(hasDataFile || host >= cs, this.path, 'a data cluster overlaps the header')
            }
            if (!ext) {
              if (zeroFlag && (lo & 1) !== 0) push({ offset: pos, length: cEnd - pos, kind: 'zero', host: 0 })
              else if (allocated) push({ offset: pos, length: cEnd - pos, kind: 'data', host: host + (pos - clusterStart) })
              else push({ offset: pos, length: cEnd - pos, kind: 'unallocated', host: 0 })
            } else {
              const zeroBits = table.readUInt32BE(e + 8)
              const allocBits = table.readUInt32BE(e + 12)
              check((zeroBits & allocBits) === 0, this.path, 'a subcluster is marked both allocated and zero')
              check(allocated || allocBits === 0, this.path, 'a subcluster is allocated in an unallocated cluster')
              if (allocBits === 0xffffffff || allocBits === 0 && zeroBits === 0 || zeroBits === 0xffffffff) {
                const kind = allocBits === 0xffffffff ? 'data' : zeroBits === 0xffffffff ? 'zero' : 'unallocated'
                push({ offset: pos, length: cEnd - pos, kind, host: kind === 'data' ? host + (pos - clusterStart) : 0 })
              } else {
                let p = pos
                while (p < cEnd) {
                  const sc = Math.floor((p - clusterStart) / sub)
                  const scEnd = Math.min(clusterStart + (sc + 1) * sub, cEnd)
                  const bit = 1 << sc
                  if (allocBits & bit) push({ offset: p, length: scEnd - p, kind: 'data', host: host + (p - clusterStart) })
                  else if (zeroBits & bit) push({ offset: p, length: scEnd - p, kind: 'zero', host: 0 })
                  else push({ offset: p, length: scEnd - p, kind: 'unallocated', host: 0 })
                  p = scEnd
                }
              }
            }
          }
          pos = cEnd
          if (out.length > 0) {
            yield* out
            out.length = 0
          }
        }
      }
      if (out.length > 0) {
        yield* out
        out.length = 0
      }
    }
    if (cur) yield cur
  }

  protected async readData(target: Uint8Array, seg: Qcow2Segment): Promise<void> {
    if (seg.cOffset !== undefined && seg.cSize !== undefined) {
      const cluster = await this.decompressCluster(seg.cOffset, seg.cSize)
      target.set(cluster.subarray(seg.host, seg.host + seg.length))
      return
    }
    const file = this.dataFile ?? this.file
    const avail = file.size - seg.host
    if (avail >= seg.length) {
      await file.readInto(target, seg.host, 'guest data')
      return
    }
    // The last host cluster may be shorter than a cluster when its tail was never written (qemu
    // reads such bytes as zeros). A cluster that starts past the end means the file is truncated.
    const clusterStart = seg.host - (seg.host % this.clusterSize)
    check(clusterStart < file.size, file.path, `a data cluster at ${clusterStart} lies past the end of the file`)
    const n = Math.max(0, avail)
    if (n > 0) await file.readInto(target.subarray(0, n), seg.host, 'guest data')
    zeroFill(target, n)
  }

  private async decompressCluster(cOffset: number, cSize: number): Promise<Buffer> {
    if (this.lastCompressed?.offset === cOffset) return this.lastCompressed.data
    const loading = this.compressedLoading.get(cOffset)
    if (loading) return loading
    const p = (async () => {
      check(cOffset >= this.clusterSize, this.path, 'a compressed cluster overlaps the header')
      check(cOffset < this.file.size, this.path, `a compressed cluster at ${cOffset} lies past the end of the file`)
      // The last sectors of the last compressed cluster may lie past the end of the file.
      const size = Math.min(cSize, this.file.size - cOffset, this.clusterSize * 2 + 512)
      const compressed = await this.file.readAt(cOffset, size, 'a compressed cluster')
      let data: Buffer
      try {
        if (this.header.compressionType === 1) {
          const z = zstdBinding()
          const frame = z.findFrameCompressedSize(compressed)
          data = Buffer.alloc(this.clusterSize)
          const n = new z.DCtx().decompress(data, compressed.subarray(0, frame))
          if (n !== this.clusterSize) throw new Error(`zstd produced ${n} bytes`)
        } else {
          data = await inflateRawAsync(compressed, { finishFlush: zlibConstants.Z_SYNC_FLUSH, maxOutputLength: this.clusterSize })
          if (data.length < this.clusterSize) throw new Error(`deflate produced ${data.length} bytes`)
        }
      } catch (err) {
        throw malformed(this.path, `the compressed cluster at ${cOffset} cannot be decompressed`, err)
      }
      this.lastCompressed = { offset: cOffset, data }
      return data
    })()
    this.compressedLoading.set(cOffset, p)
    try {
      return await p
    } finally {
      this.compressedLoading.delete(cOffset)
    }
  }

  protected async closeOwn(): Promise<void> {
    this.l2Cache.clear()
    try {
      await this.dataFile?.close()
    } finally {
      await this.file.close()
    }
  }

  async info(): Promise<ImageInfo> {
    let allocated = 0
    for await (const e of this.extents()) if (!e.zero) allocated += e.length
    const chain: BackingInfo[] = []
    for (let b: DiskImage | undefined = this.backing; b; b = b.backing) {
      chain.push({ path: b.path, format: b.format, variant: b.variant, virtualSize: b.virtualSize })
    }
    return {
      format: 'qcow2',
      variant: this.variant,
      virtualSize: this.virtualSize,
      allocatedBytes: allocated,
      clusterSize: this.clusterSize,
      backingChain: chain,
      dirtyBitmaps: await readBitmaps(this.file, this.header),
      snapshots: await readSnapshots(this.file, this.header),
      ...(this.header.dataFile === undefined ? {} : { dataFile: this.header.dataFile, dataFileRaw: (this.header.autoclear & AUTOCLEAR_DATA_FILE_RAW) !== 0n }),
      ...(this.header.compressionType === 1 ? { compressionType: 'zstd' } : {}),
      ...(this.header.extendedL2 ? { extendedL2: true } : {}),
    } as ImageInfo
  }
}

async function openQcow2Backing(path: string, header: Qcow2Header, ctx: OpenContext): Promise<DiskImage> {
  const name = header.backingFile as string
  if (/^[a-z][a-z0-9+.-]*:/i.test(name) && !/^[a-z]:[\\/]/i.test(name)) {
    throw new EngineError('IMAGE_UNSUPPORTED', `"${path}" has a backing file given as a protocol or JSON ("${name.slice(0, 80)}"); Tresor follows only local files.`)
  }
  let format
  if (header.backingFormat !== undefined) {
    format = ourFormatName(header.backingFormat)
    if (!format) {
      throw new EngineError('IMAGE_UNSUPPORTED', `The backing file of "${path}" is in format "${header.backingFormat}", which Tresor cannot read.`)
    }
  }
  return ctx.openBacking(resolveBackingPath(path, name), format)
}
