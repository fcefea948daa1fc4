/**
 * VHDX reader: dynamic, fixed and differencing disks in the guest view (see index.ts for terms).
 */
import { ImageFile, malformed, unsupported } from '../io.js'
import { LayeredImage, type Segment } from '../layered.js'
import type { OpenContext } from '../open.js'
import type { DiskImage, ImageInfo } from '../types.js'
import { allocatedBytesOf, backingChainOf } from '../vhd/fileAccess.js'
import type { LocatorHint } from '../vhd/locators.js'
import { openParent } from '../vhd/parent.js'
import { replayLog, type Container } from './log.js'
import {
  batEntryCount,
  bitmapIndex,
  chunkRatio,
  FILE_ID_SIGNATURE,
  guidText,
  HEADER_OFFSETS,
  HEADER_SIZE,
  isZeroGuid,
  MAX_VIRTUAL_DISK_SIZE,
  META_FILE_PARAMETERS,
  META_LOGICAL_SECTOR,
  META_PAGE83,
  META_PARENT_LOCATOR,
  META_PHYSICAL_SECTOR,
  META_VIRTUAL_DISK_SIZE,
  METADATA_TABLE_SIZE,
  MiB,
  normalizeGuid,
  PARENT_LOCATOR_TYPE_VHDX,
  parseHeader,
  parseMetadataTable,
  parseParentLocator,
  parseRegionTable,
  PAYLOAD,
  payloadIndex,
  REGION_BAT,
  REGION_METADATA,
  REGION_TABLE_OFFSETS,
  REGION_TABLE_SIZE,
  SB_PRESENT,
  SECTOR_BITMAP_BLOCK_SIZE,
  type Header,
} from './structures.js'

const MIN_FILE_SIZE = REGION_TABLE_OFFSETS[1] + REGION_TABLE_SIZE
const BITMAP_CACHE_BYTES = 4 * MiB

/** Reads the file identifier and both headers; returns the current (valid, newest) header. */
export async function readCurrentHeader(file: ImageFile): Promise<Header> {
  if (file.size < MIN_FILE_SIZE) throw malformed(file.path, `the file is only ${file.size} bytes, too small for a VHDX`)
  const id = await file.readAt(0, 8, 'the VHDX file identifier')
  if (id.toString('latin1') !== FILE_ID_SIGNATURE) throw malformed(file.path, 'no "vhdxfile" signature at the start of the file')
  const headers: Header[] = []
  for (const at of HEADER_OFFSETS) {
    const h = parseHeader(await file.readAt(at, HEADER_SIZE, 'a VHDX header'))
    if (h) headers.push(h)
  }
  const current = headers.sort((a, b) => (a.sequenceNumber < b.sequenceNumber ? 1 : -1))[0]
  if (!current) throw malformed(file.path, 'both VHDX headers are damaged (bad signature or CRC-32C)')
  if (current.version !== 1) throw unsupported(file.path, `VHDX version ${current.version}`)
  return current
}

/** DataWriteGuid of a VHDX file (what children record as parent_linkage), or undefined. */
export async function vhdxIdentity(path: string): Promise<string | undefined> {
  let file: ImageFile | undefined
  try {
    file = await ImageFile.open(path)
    return guidText((await readCurrentHeader(file)).dataWriteGuid)
  } catch {
    return undefined
  } finally {
    await file?.close().catch(() => undefined)
  }
}

interface VhdxSegment extends Segment {
  fileOffset: number
}

interface Geometry {
  blockSize: number
  logicalSectorSize: number
  ratio: number
}

class VhdxImage extends LayeredImage<VhdxSegment> {
  readonly format = 'vhdx' as const
  readonly clusterSize: number
  private readonly bitmaps = new Map<number, Promise<Buffer>>()
  private readonly bitmapBytesPerBlock: number
  private readonly maxCachedBitmaps: number

  constructor(
    readonly path: string,
    private readonly file: ImageFile,
    private readonly container: Container,
    readonly variant: string,
    readonly virtualSize: number,
    private readonly geo: Geometry,
    private readonly states: Uint8Array,
    private readonly offsets: Float64Array,
    readonly physicalSectorSize: number,
  ) {
    super()
    this.clusterSize = geo.blockSize
    this.bitmapBytesPerBlock = geo.blockSize / geo.logicalSectorSize / 8
    this.maxCachedBitmaps = Math.max(4, Math.floor(BITMAP_CACHE_BYTES / this.bitmapBytesPerBlock))
  }

  /** The sector bitmap bytes of a PARTIALLY_PRESENT payload block. */
  private bitmap(block: number): Promise<Buffer> {
    let p = this.bitmaps.get(block)
    if (p) {
      this.bitmaps.delete(block)
      this.bitmaps.set(block, p)
      return p
    }
    const sb = bitmapIndex(Math.floor(block / this.geo.ratio), this.geo.ratio)
    const at = this.offsets[sb]! + (block % this.geo.ratio) * this.bitmapBytesPerBlock
    p = this.container.readAt(at, this.bitmapBytesPerBlock, `the sector bitmap of block ${block}`)
    p.catch(() => this.bitmaps.delete(block))
    this.bitmaps.set(block, p)
    if (this.bitmaps.size > this.maxCachedBitmaps) {
      const oldest = this.bitmaps.keys().next().value
      if (oldest !== undefined) this.bitmaps.delete(oldest)
    }
    return p
  }

  /** Segment kind of a whole-block state; undefined for PARTIALLY_PRESENT (per sector). */
  private static kindOf(state: number): 'data' | 'zero' | 'unallocated' | undefined {
    switch (state) {
      case PAYLOAD.fullyPresent:
        return 'data'
      case PAYLOAD.zero:
      case PAYLOAD.unmapped:
      case PAYLOAD.unmappedV095:
        return 'zero'
      case PAYLOAD.partiallyPresent:
        return undefined
      default: // NOT_PRESENT, UNDEFINED: nothing here (the parent's data, or zeros)
        return 'unallocated'
    }
  }

  protected async *mapRange(offset: number, end: number): AsyncGenerator<VhdxSegment> {
    const bs = this.geo.blockSize
    const ss = this.geo.logicalSectorSize
    let g = offset
    while (g < end) {
      const block = Math.floor(g / bs)
      const blockStart = block * bs
      const stop = Math.min(end, blockStart + bs)
      const idx = payloadIndex(block, this.geo.ratio)
      const state = this.states[idx]!
      const data = this.offsets[idx]!
      const kind = VhdxImage.kindOf(state)
      if (kind !== undefined) {
        // One segment for a run of blocks of the same kind (data only when contiguous in the file).
        let runEnd = stop
        for (let b = block + 1; runEnd < end; b++) {
          const i = payloadIndex(b, this.geo.ratio)
          if (VhdxImage.kindOf(this.states[i]!) !== kind) break
          if (kind === 'data' && this.offsets[i] !== data + (b - block) * bs) break
          runEnd = Math.min(end, (b + 1) * bs)
        }
        yield { offset: g, length: runEnd - g, kind, fileOffset: kind === 'data' ? data + (g - blockStart) : 0 }
        g = runEnd
        continue
      }
      switch (state) {
        case PAYLOAD.partiallyPresent: {
          const bitmap = await this.bitmap(block)
          let s = Math.floor((g - blockStart) / ss)
          const last = Math.ceil((stop - blockStart) / ss)
          while (s < last) {
            const present = ((bitmap[s >>> 3]! >>> (s & 7)) & 1) === 1
            let e = s + 1
            while (e < last) {
              if ((e & 7) === 0 && e + 8 <= last && bitmap[e >>> 3] === (present ? 0xff : 0)) {
                e += 8
                continue
              }
              if ((((bitmap[e >>> 3]! >>> (e & 7)) & 1) === 1) !== present) break
              e++
            }
            const a = Math.max(blockStart + s * ss, g)
            const b = Math.min(blockStart + e * ss, stop)
            yield { offset: a, length: b - a, kind: present ? 'data' : 'unallocated', fileOffset: data + (a - blockStart) }
            s = e
          }
          break
        }
        default:
          throw new Error(`unexpected payload state ${state}`) // refused at open
      }
      g = stop
    }
  }

  protected async readData(target: Uint8Array, segment: VhdxSegment): Promise<void> {
    await this.container.readInto(target, segment.fileOffset, 'disk data')
  }

  protected async closeOwn(): Promise<void> {
    await this.file.close()
  }

  async info(): Promise<ImageInfo> {
    return {
      format: 'vhdx',
      variant: this.variant,
      virtualSize: this.virtualSize,
      allocatedBytes: await allocatedBytesOf(this),
      clusterSize: this.clusterSize,
      backingChain: backingChainOf(this),
      logicalSectorSize: this.geo.logicalSectorSize,
    }
  }
}

function overlaps(a: number, alen: number, b: number, blen: number): boolean {
  return a < b + blen && b < a + alen
}

/** Opens a VHDX file (see index.ts). The caller closes the returned image. */
export async function openVhdx(path: string, ctx: OpenContext): Promise<DiskImage> {
  const file = await ImageFile.open(path, ctx.options)
  let backing: DiskImage | undefined
  try {
    const header = await readCurrentHeader(file)
    const container: Container = isZeroGuid(header.logGuid) ? file : await replayLog(file, header)

    // Region table: the first valid copy.
    let regions = parseRegionTable(await container.readAt(REGION_TABLE_OFFSETS[0], REGION_TABLE_SIZE, 'the region table'))
    regions ??= parseRegionTable(await container.readAt(REGION_TABLE_OFFSETS[1], REGION_TABLE_SIZE, 'the region table copy'))
    if (!regions) throw malformed(path, 'both region tables are damaged (bad signature, CRC-32C or entry count)')
    const reserved: [number, number][] = [[0, MiB]]
    if (header.logLength > 0) reserved.push([header.logOffset, header.logLength])
    let batRegion: { fileOffset: number; length: number } | undefined
    let metaRegion: { fileOffset: number; length: number } | undefined
    for (const r of regions) {
      if (r.guid === REGION_BAT) batRegion = r
      else if (r.guid === REGION_METADATA) metaRegion = r
      else if (r.required) throw unsupported(path, `a required region ${r.guid} unknown to this reader`)
      else continue
      if (r.fileOffset % MiB !== 0 || r.length % MiB !== 0 || r.length === 0 || r.fileOffset + r.length > container.size) {
        throw malformed(path, `region ${r.guid} (offset ${r.fileOffset}, ${r.length} bytes) is misplaced or past the end of the file`)
      }
      for (const [a, l] of reserved) if (overlaps(r.fileOffset, r.length, a, l)) throw malformed(path, `region ${r.guid} overlaps the headers, log or another region`)
      reserved.push([r.fileOffset, r.length])
    }
    if (!batRegion || !metaRegion) throw malformed(path, 'the BAT or metadata region is missing')

    // Metadata.
    const table = parseMetadataTable(await container.readAt(metaRegion.fileOffset, METADATA_TABLE_SIZE, 'the metadata table'))
    if (!table) throw malformed(path, 'the metadata table is damaged')
    const items = new Map<string, Buffer>()
    for (const e of table) {
      const known = [META_FILE_PARAMETERS, META_VIRTUAL_DISK_SIZE, META_PAGE83, META_LOGICAL_SECTOR, META_PHYSICAL_SECTOR, META_PARENT_LOCATOR]
      if (!known.includes(e.guid) || e.isUser) {
        if (e.isRequired) throw unsupported(path, `a required metadata item ${e.guid} unknown to this reader`)
        continue
      }
      if (e.length === 0) continue
      if (e.offset < METADATA_TABLE_SIZE || e.offset + e.length > metaRegion.length || e.length > MiB) {
        throw malformed(path, `metadata item ${e.guid} lies outside the metadata region`)
      }
      items.set(e.guid, await container.readAt(metaRegion.fileOffset + e.offset, e.length, `metadata item ${e.guid}`))
    }
    const need = (guid: string, size: number, what: string): Buffer => {
      const b = items.get(guid)
      if (!b || b.length < size) throw malformed(path, `the ${what} metadata item is missing or too short`)
      return b
    }
    const params = need(META_FILE_PARAMETERS, 8, 'file parameters')
    const blockSize = params.readUInt32LE(0)
    const leaveAllocated = (params.readUInt32LE(4) & 1) !== 0
    const hasParent = (params.readUInt32LE(4) & 2) !== 0
    const sizeBig = need(META_VIRTUAL_DISK_SIZE, 8, 'virtual disk size').readBigUInt64LE(0)
    const logicalSectorSize = need(META_LOGICAL_SECTOR, 4, 'logical sector size').readUInt32LE(0)
    const physicalSectorSize = need(META_PHYSICAL_SECTOR, 4, 'physical sector size').readUInt32LE(0)
    if (blockSize < MiB || blockSize > 256 * MiB || (blockSize & (blockSize - 1)) !== 0) throw malformed(path, `invalid block size ${blockSize}`)
    if (logicalSectorSize !== 512 && logicalSectorSize !== 4096) throw malformed(path, `invalid logical sector size ${logicalSectorSize}`)
    if (physicalSectorSize !== 512 && physicalSectorSize !== 4096) throw malformed(path, `invalid physical sector size ${physicalSectorSize}`)
    if (sizeBig > BigInt(MAX_VIRTUAL_DISK_SIZE)) throw malformed(path, `its virtual size (${sizeBig} bytes) is larger than a VHDX can be (64 TiB)`)
    const virtualSize = Number(sizeBig)
    if (virtualSize % logicalSectorSize !== 0) throw malformed(path, `its virtual size ${virtualSize} is not a multiple of the ${logicalSectorSize}-byte sector`)

    // BAT.
    const ratio = chunkRatio(logicalSectorSize, blockSize)
    const entries = batEntryCount(virtualSize, blockSize, ratio, hasParent)
    if (entries * 8 > batRegion.length) throw malformed(path, `the BAT region (${batRegion.length} bytes) is too small for ${entries} entries`)
    const raw = await container.readAt(batRegion.fileOffset, entries * 8, 'the BAT')
    const states = new Uint8Array(entries)
    const offsets = new Float64Array(entries)
    for (let i = 0; i < entries; i++) {
      const lo = raw.readUInt32LE(i * 8)
      const hi = raw.readUInt32LE(i * 8 + 4)
      const state = lo & 7
      const offsetMiB = (lo >>> 20) + hi * 4096
      states[i] = state
      offsets[i] = offsetMiB * MiB
      const isBitmapEntry = i % (ratio + 1) === ratio
      if (isBitmapEntry) {
        if (state === 0) continue
        if (state !== SB_PRESENT || !hasParent) throw malformed(path, `sector bitmap entry ${i} has state ${state}, invalid for this disk`)
        if (offsets[i]! < MiB || offsets[i]! + SECTOR_BITMAP_BLOCK_SIZE > container.size) throw malformed(path, `the sector bitmap block of BAT entry ${i} lies past the end of the file`)
        continue
      }
      switch (state) {
        case PAYLOAD.notPresent:
        case PAYLOAD.undefined:
        case PAYLOAD.zero:
        case PAYLOAD.unmapped:
        case PAYLOAD.unmappedV095:
          break
        case PAYLOAD.partiallyPresent: {
          if (!hasParent) throw malformed(path, `BAT entry ${i} is partially present in a disk without a parent`)
          const sb = bitmapIndex(Math.floor(i / (ratio + 1)), ratio)
          if (sb >= entries || raw.readUInt32LE(sb * 8) % 8 !== SB_PRESENT) throw malformed(path, `BAT entry ${i} is partially present but its sector bitmap block is missing`)
        }
        // falls through: the data block must exist like a fully present one
        case PAYLOAD.fullyPresent: {
          const at = offsets[i]!
          if (at < MiB || at + blockSize > container.size) throw malformed(path, `payload block of BAT entry ${i} lies past the end of the file (the image is truncated)`)
          for (const [a, l] of reserved) if (overlaps(at, blockSize, a, l)) throw malformed(path, `payload block of BAT entry ${i} overlaps the headers, log or tables`)
          break
        }
        default:
          throw malformed(path, `BAT entry ${i} has the reserved state ${state}`)
      }
    }

    if (hasParent && !ctx.options.noBacking) {
      const locatorBuf = items.get(META_PARENT_LOCATOR)
      const locator = locatorBuf ? parseParentLocator(locatorBuf) : undefined
      if (!locator) throw malformed(path, 'the differencing disk has no readable parent locator')
      if (locator.type !== PARENT_LOCATOR_TYPE_VHDX) throw unsupported(path, `a parent locator of type ${locator.type}`)
      const linkage = normalizeGuid(locator.entries.get('parent_linkage'))
      if (!linkage) throw malformed(path, 'the parent locator has no valid parent_linkage')
      const linkage2 = normalizeGuid(locator.entries.get('parent_linkage2'))
      const hints: LocatorHint[] = []
      const rel = locator.entries.get('relative_path')
      const vol = locator.entries.get('volume_path')
      const abs = locator.entries.get('absolute_win32_path')
      if (rel) hints.push({ kind: 'relative', text: rel })
      if (vol) hints.push({ kind: 'absolute', text: vol })
      if (abs) hints.push({ kind: 'absolute', text: abs })
      backing = await openParent({
        childPath: path,
        format: 'vhdx',
        hints,
        expectedIds: linkage2 ? [linkage, linkage2] : [linkage],
        identityOf: vhdxIdentity,
        ctx,
      })
    }
    const variant = hasParent ? 'differencing' : leaveAllocated ? 'fixed' : 'dynamic'
    const image = new VhdxImage(path, file, container, variant, virtualSize, { blockSize, logicalSectorSize, ratio }, states, offsets, physicalSectorSize)
    image.backing = backing
    return image
  } catch (err) {
    await backing?.close().catch(() => undefined)
    await file.close().catch(() => undefined)
    throw err
  }
}
