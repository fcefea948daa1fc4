/**
 * VHD reader: fixed, dynamic and differencing disks in the guest view.
 */
import type { BackingInfo, DiskImage, Extent, ImageInfo } from '../types.js'
import type { OpenContext } from './contract.js'
import {
  checkReadRange,
  ExtentCursor,
  ExtentMerger,
  ImageFile,
  malformed,
  readFromBacking,
} from './fileAccess.js'
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

abstract class VhdBase implements DiskImage {
  readonly format = 'vhd' as const
  abstract readonly variant: string
  abstract readonly clusterSize: number
  abstract readonly backing: DiskImage | undefined

  constructor(
    readonly path: string,
    protected readonly file: ImageFile,
    readonly virtualSize: number,
    readonly footer: Footer,
  ) {}

  abstract extents(): AsyncIterable<Extent>
  abstract read(buffer: Uint8Array, offset: number): Promise<Uint8Array>

  async info(): Promise<ImageInfo> {
    let allocatedBytes = 0
    for await (const e of this.extents()) if (!e.zero) allocatedBytes += e.length
    const backingChain: BackingInfo[] = []
    for (let b = this.backing; b; b = b.backing) {
      backingChain.push({ path: b.path, format: b.format, variant: b.variant, virtualSize: b.virtualSize })
    }
    return {
      format: 'vhd',
      variant: this.variant,
      virtualSize: this.virtualSize,
      allocatedBytes,
      clusterSize: this.clusterSize,
      backingChain,
      logicalSectorSize: SECTOR,
    }
  }

  async close(): Promise<void> {
    await this.file.close()
    await this.backing?.close()
  }
}

class FixedVhd extends VhdBase {
  readonly variant = 'fixed'
  readonly clusterSize = SECTOR
  readonly backing = undefined

  async *extents(): AsyncGenerator<Extent> {
    if (this.virtualSize > 0) yield { offset: 0, length: this.virtualSize, zero: false }
  }

  async read(buffer: Uint8Array, offset: number): Promise<Uint8Array> {
    checkReadRange(this.path, this.virtualSize, offset, buffer.length)
    await this.file.readInto(buffer, offset, 'disk data')
    return buffer
  }
}

class DynamicVhd extends VhdBase {
  readonly variant: string
  readonly clusterSize: number
  private readonly bitmapSize: number
  private readonly sectorsPerBlock: number
  private readonly bitmaps = new Map<number, Promise<Uint8Array>>()
  private readonly maxCachedBitmaps: number

  constructor(
    path: string,
    file: ImageFile,
    virtualSize: number,
    footer: Footer,
    private readonly header: DynamicHeader,
    private readonly bat: Uint32Array,
    readonly backing: DiskImage | undefined,
    private readonly isDifferencing: boolean,
  ) {
    super(path, file, virtualSize, footer)
    this.variant = isDifferencing ? 'differencing' : 'dynamic'
    this.clusterSize = header.blockSize
    this.bitmapSize = bitmapBytes(header.blockSize)
    this.sectorsPerBlock = header.blockSize / SECTOR
    this.maxCachedBitmaps = Math.max(4, Math.floor(BITMAP_CACHE_BYTES / this.bitmapSize))
  }

  private bitmap(block: number): Promise<Uint8Array> {
    let p = this.bitmaps.get(block)
    if (p) {
      // Refresh LRU position.
      this.bitmaps.delete(block)
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

  /** Calls `fn` for each run of sectors [first, last) of one bit value. */
  private static runs(bitmap: Uint8Array, first: number, last: number, fn: (from: number, to: number, present: boolean) => void): void {
    let s = first
    while (s < last) {
      const present = bitIsSet(bitmap, s)
      let e = s + 1
      // Skip whole bytes of the same value when aligned.
      while (e < last) {
        if ((e & 7) === 0 && e + 8 <= last) {
          const byte = bitmap[e >>> 3]!
          if (byte === (present ? 0xff : 0)) {
            e += 8
            continue
          }
        }
        if (bitIsSet(bitmap, e) !== present) break
        e++
      }
      fn(s, e, present)
      s = e
    }
  }

  private async readAbsent(target: Uint8Array, guestOffset: number): Promise<void> {
    if (this.isDifferencing) await readFromBacking(this.backing, target, guestOffset)
    else target.fill(0)
  }

  async read(buffer: Uint8Array, offset: number): Promise<Uint8Array> {
    checkReadRange(this.path, this.virtualSize, offset, buffer.length)
    const bs = this.header.blockSize
    let pos = 0
    while (pos < buffer.length) {
      const g = offset + pos
      const block = Math.floor(g / bs)
      const inBlock = g - block * bs
      const n = Math.min(buffer.length - pos, bs - inBlock)
      const target = buffer.subarray(pos, pos + n)
      const entry = this.bat[block]!
      if (entry === BAT_UNUSED) {
        await this.readAbsent(target, g)
      } else {
        const bitmap = await this.bitmap(block)
        const dataStart = entry * SECTOR + this.bitmapSize
        const jobs: Promise<void>[] = []
        DynamicVhd.runs(bitmap, Math.floor(inBlock / SECTOR), Math.ceil((inBlock + n) / SECTOR), (from, to, present) => {
          const a = Math.max(from * SECTOR, inBlock)
          const b = Math.min(to * SECTOR, inBlock + n)
          const part = target.subarray(a - inBlock, b - inBlock)
          jobs.push(present ? this.file.readInto(part, dataStart + a, `data of block ${block}`) : this.readAbsent(part, block * bs + a))
        })
        await Promise.all(jobs)
      }
      pos += n
    }
    return buffer
  }

  async *extents(): AsyncGenerator<Extent> {
    const bs = this.header.blockSize
    const merger = new ExtentMerger()
    const parent = this.isDifferencing && this.backing ? new ExtentCursor(this.backing.extents()) : undefined
    const blocks = Math.ceil(this.virtualSize / bs)
    try {
      for (let block = 0; block < blocks; block++) {
        const start = block * bs
        const end = Math.min(start + bs, this.virtualSize)
        const entry = this.bat[block]!
        const pieces: Extent[] = []
        if (entry === BAT_UNUSED) {
          if (parent) for await (const e of parent.within(start, end)) pieces.push(e)
        } else {
          const bitmap = await this.bitmap(block)
          const ranges: { a: number; b: number; present: boolean }[] = []
          DynamicVhd.runs(bitmap, 0, Math.ceil((end - start) / SECTOR), (from, to, present) => {
            ranges.push({ a: start + from * SECTOR, b: Math.min(start + to * SECTOR, end), present })
          })
          for (const r of ranges) {
            if (r.present) pieces.push({ offset: r.a, length: r.b - r.a, zero: false })
            else if (parent) for await (const e of parent.within(r.a, r.b)) pieces.push(e)
          }
        }
        for (const p of pieces) {
          const out = merger.push(p)
          if (out) yield out
        }
      }
      const last = merger.flush()
      if (last) yield last
    } finally {
      await parent?.close()
    }
  }
}

function parentHints(file: ImageFile, header: DynamicHeader, locatorTexts: Map<string, string>): LocatorHint[] {
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
  void file
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
  const file = await ImageFile.open(path)
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
      const hints = parentHints(file, header, await readLocators(file, header))
      backing = await openParent({
        childPath: path,
        format: 'vhd',
        hints,
        expectedId: uuidText(header.parentUniqueId),
        identityOf: vhdIdentity,
        ctx,
      })
    }
    return new DynamicVhd(path, file, virtualSize, footer, header, bat, backing, isDifferencing)
  } catch (err) {
    await backing?.close().catch(() => undefined)
    await file.close().catch(() => undefined)
    throw err
  }
}
