/**
 * VHD reader: fixed, dynamic and differencing disks in the guest view.
 */
import { ImageFile, malformed } from '../io.js'
import { LayeredImage, type Segment } from '../layered.js'
import type { OpenContext } from '../open.js'
import type { DiskImage, Extent, ImageInfo } from '../types.js'
import { allocatedBytesOf, backingChainOf, scanStoredArea } from './fileAccess.js'
import type { LocatorHint } from './locators.js'
import { openParent } from './parent.js'
import {
  BAT_UNUSED,
  bitIsSet,
  bitmapBytes,
  decodeUtf16,
  DISK_TYPE,
  DYNAMIC_HEADER_SIZE,
  FOOTER_SIZE,
  MAX_VHD_SECTORS,
  parseDynamicHeader,
  parseFooter,
  SECTOR,
  virtualSizeOf,
  type DynamicHeader,
  type Footer,
} from './structures.js'

const MAX_LOCATOR_BYTES = 64 * 1024
/** Bitmaps kept in memory per open image, in bytes. */
const BITMAP_CACHE_BYTES = 4 * 1024 * 1024

export function uuidText(id: Uint8Array): string {
  return Buffer.from(id).toString('hex')
}

/** Reads the footer at the end of the file, falling back to the copy at offset 0 (dynamic disks). */
export async function readFooter(file: ImageFile): Promise<{ footer: Footer; usedCopy: boolean }> {
  if (file.size < FOOTER_SIZE) throw malformed(file.path, `the file is only ${file.size} bytes, too small for a VHD footer`)
  const end = parseFooter(await file.readAt(file.size - FOOTER_SIZE, FOOTER_SIZE, 'the VHD footer'))
  if (typeof end !== 'string') return { footer: end, usedCopy: false }
  if (file.size >= FOOTER_SIZE + DYNAMIC_HEADER_SIZE) {
    const copy = parseFooter(await file.readAt(0, FOOTER_SIZE, 'the VHD footer copy'))
    if (typeof copy !== 'string' && copy.diskType !== DISK_TYPE.fixed) return { footer: copy, usedCopy: true }
  }
  throw malformed(file.path, end === 'cookie' ? 'no VHD footer ("conectix") at the end of the file' : 'the VHD footer checksum is wrong')
}

/** The footer unique id of a VHD file as hex, or undefined when the file is not a valid VHD. */
export async function vhdIdentity(path: string): Promise<string | undefined> {
  let file: ImageFile | undefined
  try {
    file = await ImageFile.open(path)
    return uuidText((await readFooter(file)).footer.uniqueId)
  } catch {
    return undefined
  } finally {
    await file?.close().catch(() => undefined)
  }
}

interface VhdSegment extends Segment {
  /** Container offset of the segment's first byte (data segments). */
  fileOffset: number
}

abstract class VhdImage extends LayeredImage<VhdSegment> {
  readonly format = 'vhd' as const

  constructor(
    readonly path: string,
    protected readonly file: ImageFile,
    readonly virtualSize: number,
    readonly footer: Footer,
  ) {
    super()
  }

  protected async readData(target: Uint8Array, segment: VhdSegment): Promise<void> {
    await this.file.readInto(target, segment.fileOffset, 'disk data')
  }

  protected async closeOwn(): Promise<void> {
    await this.file.close()
  }

  async info(): Promise<ImageInfo> {
    return {
      format: 'vhd',
      variant: this.variant,
      virtualSize: this.virtualSize,
      allocatedBytes: await allocatedBytesOf(this),
      clusterSize: this.clusterSize,
      backingChain: backingChainOf(this),
      logicalSectorSize: SECTOR,
    }
  }
}

class FixedVhd extends VhdImage {
  readonly variant = 'fixed'
  readonly clusterSize = SECTOR

  protected async *mapRange(offset: number, end: number): AsyncGenerator<VhdSegment> {
    if (end > offset) yield { offset, length: end - offset, kind: 'data', fileOffset: offset }
  }

  /** The data area is scanned for all-zero holes unless the file is fully allocated. */
  override extents(): AsyncIterable<Extent> {
    return scanStoredArea(this.file, 0, this.virtualSize)
  }
}

class DynamicVhd extends VhdImage {
  readonly variant: string
  readonly clusterSize: number
  private readonly bitmapSize: number
  private readonly bitmaps = new Map<number, Promise<Uint8Array>>()
  private readonly maxCachedBitmaps: number

  constructor(
    path: string,
    file: ImageFile,
    virtualSize: number,
    footer: Footer,
    private readonly blockSize: number,
    private readonly bat: Uint32Array,
    isDifferencing: boolean,
  ) {
    super(path, file, virtualSize, footer)
    this.variant = isDifferencing ? 'differencing' : 'dynamic'
    this.clusterSize = blockSize
    this.bitmapSize = bitmapBytes(blockSize)
    this.maxCachedBitmaps = Math.max(4, Math.floor(BITMAP_CACHE_BYTES / this.bitmapSize))
  }

  private bitmap(block: number): Promise<Uint8Array> {
    let p = this.bitmaps.get(block)
    if (p) {
      this.bitmaps.delete(block) // refresh its LRU position
      this.bitmaps.set(block, p)
      return p
    }
    p = this.file.readAt(this.bat[block]! * SECTOR, this.bitmapSize, `the sector bitmap of block ${block}`)
    p.catch(() => this.bitmaps.delete(block))
    this.bitmaps.set(block, p)
    if (this.bitmaps.size > this.maxCachedBitmaps) {
      const oldest = this.bitmaps.keys().next().value
      if (oldest !== undefined) this.bitmaps.delete(oldest)
    }
    return p
  }

  /** Calls `fn` for each run of sectors [from, to) with the same bit, within [first, last). */
  private static runs(bitmap: Uint8Array, first: number, last: number, fn: (from: number, to: number, present: boolean) => void): void {
    let s = first
    while (s < last) {
      const present = bitIsSet(bitmap, s)
      let e = s + 1
      while (e < last) {
        if ((e & 7) === 0 && e + 8 <= last && bitmap[e >>> 3] === (present ? 0xff : 0)) {
          e += 8
          continue
        }
        if (bitIsSet(bitmap, e) !== present) break
        e++
      }
      fn(s, e, present)
      s = e
    }
  }

  protected async *mapRange(offset: number, end: number): AsyncGenerator<VhdSegment> {
    const bs = this.blockSize
    let g = offset
    while (g < end) {
      const block = Math.floor(g / bs)
      const blockStart = block * bs
      const stop = Math.min(end, blockStart + bs)
      const entry = this.bat[block]!
      if (entry === BAT_UNUSED) {
        // One segment for a whole run of unallocated blocks (sparse disks have millions).
        let runEnd = stop
        for (let b = block + 1; runEnd < end && this.bat[b] === BAT_UNUSED; b++) runEnd = Math.min(end, (b + 1) * bs)
        yield { offset: g, length: runEnd - g, kind: 'unallocated', fileOffset: 0 }
        g = runEnd
        continue
      } else {
        const bitmap = await this.bitmap(block)
        const dataStart = entry * SECTOR + this.bitmapSize
        const segs: VhdSegment[] = []
        DynamicVhd.runs(bitmap, Math.floor((g - blockStart) / SECTOR), Math.ceil((stop - blockStart) / SECTOR), (from, to, present) => {
          const a = Math.max(blockStart + from * SECTOR, g)
          const b = Math.min(blockStart + to * SECTOR, stop)
          segs.push({ offset: a, length: b - a, kind: present ? 'data' : 'unallocated', fileOffset: dataStart + (a - blockStart) })
        })
        yield* segs
      }
      g = stop
    }
  }
}

/** Where to look for the parent, in order: W2ru, W2ku, MacX, the deprecated Wi2r/Wi2k, the header name. */
function parentHints(header: DynamicHeader, locatorTexts: Map<string, string>): LocatorHint[] {
  const hints: LocatorHint[] = []
  const rel = locatorTexts.get('W2ru')
  const abs = locatorTexts.get('W2ku')
  const macx = locatorTexts.get('MacX')
  if (rel) hints.push({ kind: 'relative', text: rel })
  if (abs) hints.push({ kind: 'absolute', text: abs })
  if (macx) hints.push({ kind: 'url', text: macx })
  for (const old of ['Wi2r', 'Wi2k']) {
    const t = locatorTexts.get(old)
    if (t) hints.push({ kind: old === 'Wi2r' ? 'relative' : 'absolute', text: t })
  }
  if (header.parentName) hints.push({ kind: 'name', text: header.parentName })
  return hints
}

async function readLocators(file: ImageFile, header: DynamicHeader): Promise<Map<string, string>> {
  const texts = new Map<string, string>()
  for (const loc of header.locators) {
    if (texts.has(loc.platformCode)) continue
    if (loc.dataLength === 0 || loc.dataLength > MAX_LOCATOR_BYTES) continue
    const data = await file.readAt(loc.dataOffset, loc.dataLength, `the ${loc.platformCode} parent locator`)
    let text: string | undefined
    switch (loc.platformCode) {
      case 'W2ru':
      case 'W2ku':
        text = decodeUtf16(data, 'le')
        break
      case 'MacX':
        text = data.toString('utf8')
        break
      case 'Wi2r':
      case 'Wi2k':
        text = data.toString('latin1')
        break
      default:
        // 'Mac ' holds a classic Mac OS alias record, which cannot be resolved here.
        text = undefined
    }
    const clean = text?.replace(/\0.*$/s, '')
    if (clean) texts.set(loc.platformCode, clean)
  }
  return texts
}

/** Opens a VHD file (see index.ts for the rules). The caller closes the returned image. */
export async function openVhd(path: string, ctx: OpenContext): Promise<DiskImage> {
  const file = await ImageFile.open(path, ctx.options)
  let backing: DiskImage | undefined
  try {
    const { footer } = await readFooter(file)
    const virtualSize = virtualSizeOf(footer)
    if (virtualSize / SECTOR > MAX_VHD_SECTORS) {
      throw malformed(path, `its virtual size (${footer.currentSize} bytes) is larger than a VHD can be (2040 GiB)`)
    }
    if (footer.diskType === DISK_TYPE.fixed) {
      if (virtualSize > file.size - FOOTER_SIZE) {
        throw malformed(path, `the fixed disk claims ${virtualSize} bytes but the file holds only ${file.size - FOOTER_SIZE}`)
      }
      return new FixedVhd(path, file, virtualSize, footer)
    }
    if (footer.diskType !== DISK_TYPE.dynamic && footer.diskType !== DISK_TYPE.differencing) {
      throw malformed(path, `unknown VHD disk type ${footer.diskType}`)
    }
    if (footer.dataOffset === undefined) throw malformed(path, 'the dynamic disk header offset is missing')
    const headerResult = parseDynamicHeader(await file.readAt(footer.dataOffset, DYNAMIC_HEADER_SIZE, 'the dynamic disk header'))
    if (typeof headerResult === 'string') {
      throw malformed(path, headerResult === 'cookie' ? 'no dynamic disk header ("cxsparse") where the footer points' : 'the dynamic disk header checksum is wrong')
    }
    const header = headerResult
    const bs = header.blockSize
    if (bs < SECTOR || bs > 2 ** 31 || (bs & (bs - 1)) !== 0) throw malformed(path, `invalid block size ${bs}`)
    const entries = header.maxTableEntries
    if (entries * bs < virtualSize) {
      throw malformed(path, `its block allocation table (${entries} blocks of ${bs} bytes) is too small for the ${virtualSize}-byte disk`)
    }
    const batBytes = entries * 4
    if (header.tableOffset + batBytes > file.size) throw malformed(path, 'the block allocation table lies past the end of the file')
    const raw = await file.readAt(header.tableOffset, batBytes, 'the block allocation table')
    const bat = new Uint32Array(entries)
    const bitmapSize = bitmapBytes(bs)
    const reserved: [number, number][] = [
      [0, FOOTER_SIZE],
      [footer.dataOffset, footer.dataOffset + DYNAMIC_HEADER_SIZE],
      [header.tableOffset, header.tableOffset + batBytes],
    ]
    for (let i = 0; i < entries; i++) {
      const v = raw.readUInt32BE(i * 4)
      bat[i] = v
      if (v === BAT_UNUSED) continue
      const a = v * SECTOR
      const b = a + bitmapSize + bs
      if (b > file.size) throw malformed(path, `block ${i} lies past the end of the file (the image is truncated)`)
      for (const [ra, rb] of reserved) {
        if (a < rb && ra < b) throw malformed(path, `block ${i} overlaps the image's own headers or tables`)
      }
    }
    const isDifferencing = footer.diskType === DISK_TYPE.differencing
    if (isDifferencing && !ctx.options.noBacking) {
      const hints = parentHints(header, await readLocators(file, header))
      backing = await openParent({
        childPath: path,
        format: 'vhd',
        hints,
        expectedIds: [uuidText(header.parentUniqueId)],
        identityOf: vhdIdentity,
        ctx,
      })
    }
    const image = new DynamicVhd(path, file, virtualSize, footer, bs, bat, isDifferencing)
    image.backing = backing
    return image
  } catch (err) {
    await backing?.close().catch(() => undefined)
    await file.close().catch(() => undefined)
    throw err
  }
}
