/**
 * The hosted sparse extent (magic `KDMV`, VMDK versions 1 to 3): what monolithicSparse,
 * twoGbMaxExtentSparse and streamOptimized disks are made of; and its ESX ancestor, the VMFS sparse
 * extent (magic `COWD`, vmfsSparse deltas), which has the same GD/GT/grain structure with 4096-entry
 * GTs and an explicit GD length.
 *
 * Layout: a 512-byte header; an optional embedded text descriptor; a grain directory (GD) of
 * 32-bit sector numbers of grain tables (GT); GTs of `numGTEsPerGT` 32-bit sector numbers of grains;
 * the grains. A GTE of 0 is unallocated (the parent shows through), 1 is a zeroed grain when the
 * header says so (flag bit 2), anything else is where the grain lives. streamOptimized extents
 * deflate each grain behind a 12-byte marker (lba u64, size u32) and may keep the real header in a
 * footer (gdOffset = GD_AT_END) 1024 bytes before the end of the file, after a footer marker and
 * before the end-of-stream marker.
 *
 * Every table position is checked against the file size before it is read; the GD is read in
 * pages and GTs through a bounded LRU, so memory does not grow with the disk size.
 */
import { inflate, inflateRaw, type InputType, type ZlibOptions } from 'node:zlib'
import { promisify } from 'node:util'
import { EngineError } from '../../errors.js'
import { ImageFile, malformed, unsupported } from '../io.js'
import type { Segment } from '../layered.js'
import { AsyncLru } from './lru.js'

const inflateAsync = promisify<InputType, ZlibOptions, Buffer>(inflate)
const inflateRawAsync = promisify<InputType, ZlibOptions, Buffer>(inflateRaw)

export const SECTOR = 512
const MAGIC_KDMV = 0x564d444b // "KDMV" read little-endian
const MAGIC_COWD = 0x44574f43 // "COWD" read little-endian
const COWD_GTES_PER_GT = 4096
const GD_AT_END = 0xffffffffffffffffn
const FLAG_ZERO_GRAIN = 1 << 2
const FLAG_MARKERS = 1 << 17
const COMPRESSION_NONE = 0
const COMPRESSION_DEFLATE = 1
const MARKER_EOS = 0
const MARKER_FOOTER = 3
/** Largest grain we accept (qemu creates 64 KiB, VMware 64 KiB; the spec allows larger powers of two). */
export const MAX_GRAIN_BYTES = 16 * 1024 * 1024
/** qemu and VMware use 512 GTEs per GT; qemu refuses more. */
const MAX_GTES_PER_GT = 512
const GD_PAGE_ENTRIES = 1024
const GT_CACHE_ENTRIES = 1024
const GD_PAGE_CACHE_ENTRIES = 64
const MAX_SAFE_SECTORS = Math.floor(Number.MAX_SAFE_INTEGER / SECTOR)

/** Where the bytes of a data segment come from. */
export type SegmentSource =
  | { kind: 'file'; file: ImageFile; position: number }
  | { kind: 'compressed'; extent: SparseExtent; grainSector: number; offsetInGrain: number }

export interface VmdkSegment extends Segment {
  source?: SegmentSource
}

export interface SparseHeader {
  version: number
  flags: number
  capacitySectors: number
  grainSectors: number
  descriptorOffsetSectors: number
  descriptorSizeSectors: number
  numGTEsPerGT: number
  gdOffsetSectors: number
  overheadSectors: number
  compressed: boolean
  hasMarkers: boolean
  zeroGrains: boolean
  /** The header came from the footer (streamOptimized written by a stream, GD_AT_END). */
  fromFooter: boolean
  /** COWD (vmfsSparse) extents state their GD length; hosted sparse extents derive it from the capacity. */
  gdEntries?: number
  /** 'KDMV' hosted sparse extent or 'COWD' VMFS sparse extent. */
  magic: 'KDMV' | 'COWD'
}

function sectors(value: bigint, path: string, what: string): number {
  if (value > BigInt(MAX_SAFE_SECTORS)) throw malformed(path, `the VMDK ${what} is impossibly large (${value} sectors)`)
  return Number(value)
}

/** True when `head` starts with the hosted sparse extent magic `KDMV`. */
export function isSparseMagic(head: Uint8Array): boolean {
  return head.length >= 4 && Buffer.from(head.buffer, head.byteOffset, 4).readUInt32LE(0) === MAGIC_KDMV
}

/** True when `head` starts with the VMFS sparse extent magic `COWD` (vmfsSparse, VMDK 3). */
export function isCowdMagic(head: Uint8Array): boolean {
  return head.length >= 4 && Buffer.from(head.buffer, head.byteOffset, 4).readUInt32LE(0) === MAGIC_COWD
}

/**
 * Decodes a COWD header (ESX 2 / vmfsSparse): magic, version, flags, capacity, grain size, GD
 * offset and GD length (all 32-bit, in sectors or entries), GTs of 4096 entries. No zeroed grains,
 * no compression.
 */
export function parseCowdHeader(buf: Buffer, path: string): SparseHeader {
  if (buf.length < SECTOR || buf.readUInt32LE(0) !== MAGIC_COWD) throw malformed(path, 'the VMDK sparse header has no COWD magic')
  const version = buf.readUInt32LE(4)
  const flags = buf.readUInt32LE(8)
  const capacitySectors = buf.readUInt32LE(12)
  const grainSectors = buf.readUInt32LE(16)
  const gdOffsetSectors = buf.readUInt32LE(20)
  const gdEntries = buf.readUInt32LE(24)
  if (grainSectors === 0) throw malformed(path, 'the VMDK grain size is 0')
  if (grainSectors * SECTOR > MAX_GRAIN_BYTES) {
    throw unsupported(path, `VMDK grains of ${grainSectors} sectors (more than ${MAX_GRAIN_BYTES / (1024 * 1024)} MiB)`)
  }
  return {
    version,
    flags,
    capacitySectors,
    grainSectors,
    descriptorOffsetSectors: 0,
    descriptorSizeSectors: 0,
    numGTEsPerGT: COWD_GTES_PER_GT,
    gdOffsetSectors,
    overheadSectors: 0,
    compressed: false,
    hasMarkers: false,
    zeroGrains: false,
    fromFooter: false,
    gdEntries,
    magic: 'COWD',
  }
}

/**
 * Decodes and validates a 512-byte sparse extent header (at `buf[0]`). `gdAtEnd` is set instead of
 * `gdOffsetSectors` when the header defers to the footer. Throws IMAGE_MALFORMED / IMAGE_UNSUPPORTED.
 */
export function parseSparseHeader(buf: Buffer, path: string): SparseHeader & { gdAtEnd: boolean } {
  if (buf.length < SECTOR || buf.readUInt32LE(0) !== MAGIC_KDMV) throw malformed(path, 'the VMDK sparse header has no KDMV magic')
  const version = buf.readUInt32LE(4)
  const flags = buf.readUInt32LE(8)
  if (version < 1 || version > 3) throw unsupported(path, `VMDK sparse extent version ${version}`)
  const capacitySectors = sectors(buf.readBigUInt64LE(12), path, 'capacity')
  const grainSectorsBig = buf.readBigUInt64LE(20)
  const descriptorOffsetSectors = sectors(buf.readBigUInt64LE(28), path, 'descriptor offset')
  const descriptorSizeSectors = sectors(buf.readBigUInt64LE(36), path, 'descriptor size')
  const numGTEsPerGT = buf.readUInt32LE(44)
  const gdRaw = buf.readBigUInt64LE(56)
  const overheadSectors = sectors(buf.readBigUInt64LE(64), path, 'overhead')
  const compressAlgorithm = buf.readUInt16LE(77)
  if (grainSectorsBig === 0n) throw malformed(path, 'the VMDK grain size is 0')
  if (grainSectorsBig * BigInt(SECTOR) > BigInt(MAX_GRAIN_BYTES)) {
    throw unsupported(path, `VMDK grains of ${grainSectorsBig} sectors (more than ${MAX_GRAIN_BYTES / (1024 * 1024)} MiB)`)
  }
  if (numGTEsPerGT === 0 || numGTEsPerGT > MAX_GTES_PER_GT) {
    throw malformed(path, `the VMDK grain tables hold ${numGTEsPerGT} entries (expected 1 to ${MAX_GTES_PER_GT})`)
  }
  if (compressAlgorithm !== COMPRESSION_NONE && compressAlgorithm !== COMPRESSION_DEFLATE) {
    throw unsupported(path, `VMDK compression algorithm ${compressAlgorithm}`)
  }
  const gdAtEnd = gdRaw === GD_AT_END
  return {
    version,
    flags,
    capacitySectors,
    grainSectors: Number(grainSectorsBig),
    descriptorOffsetSectors,
    descriptorSizeSectors,
    numGTEsPerGT,
    gdOffsetSectors: gdAtEnd ? 0 : sectors(gdRaw, path, 'grain directory offset'),
    overheadSectors,
    compressed: compressAlgorithm === COMPRESSION_DEFLATE,
    hasMarkers: (flags & FLAG_MARKERS) !== 0,
    zeroGrains: (flags & FLAG_ZERO_GRAIN) !== 0,
    fromFooter: false,
    magic: 'KDMV',
    gdAtEnd,
  }
}

/** Reads the header of a sparse extent file (KDMV or COWD), following GD_AT_END to the footer. */
export async function readSparseHeader(file: ImageFile): Promise<SparseHeader> {
  const head = await file.readAt(0, SECTOR, 'the VMDK sparse header')
  if (isCowdMagic(head)) return parseCowdHeader(head, file.path)
  const header = parseSparseHeader(head, file.path)
  if (!header.gdAtEnd) return header
  // Footer marker, footer (a header copy with the real GD offset), end-of-stream marker.
  if (file.size < 4 * SECTOR) throw malformed(file.path, 'the VMDK stream is too short to hold its footer')
  const tail = await file.readAt(file.size - 3 * SECTOR, 3 * SECTOR, 'the VMDK footer')
  const footerMarkerOk = tail.readUInt32LE(8) === 0 && tail.readUInt32LE(12) === MARKER_FOOTER
  const eos = tail.subarray(2 * SECTOR)
  const eosOk = eos.readBigUInt64LE(0) === 0n && eos.readUInt32LE(8) === 0 && eos.readUInt32LE(12) === MARKER_EOS
  if (!footerMarkerOk || !eosOk) throw malformed(file.path, 'the VMDK stream footer or end-of-stream marker is missing')
  const footer = parseSparseHeader(tail.subarray(SECTOR, 2 * SECTOR), file.path)
  if (footer.gdAtEnd) throw malformed(file.path, 'the VMDK footer defers its grain directory to itself')
  return { ...footer, fromFooter: true }
}

/**
 * The metadata and inflated-grain caches of one disk, shared by all its sparse extents so that a
 * descriptor listing thousands of extents still uses bounded memory: at most 64 GD pages (4 KiB),
 * 1024 GTs (2 KiB each, 16 KiB for COWD) and 16 inflated grains (at most 32 MiB in all).
 */
export class SparseCaches {
  readonly gdPages = new AsyncLru<string, Buffer>(GD_PAGE_CACHE_ENTRIES)
  readonly tables = new AsyncLru<string, Buffer>(GT_CACHE_ENTRIES)
  private grainCache: AsyncLru<string, Buffer> | undefined
  private nextId = 0

  /** A key prefix unique to one extent. */
  newId(): number {
    return this.nextId++
  }

  /** The inflated-grain cache, sized on first use from the grain size (about 8 MiB, 2 to 16 grains). */
  grains(grainBytes: number): AsyncLru<string, Buffer> {
    this.grainCache ??= new AsyncLru(Math.max(2, Math.min(16, Math.floor((8 * 1024 * 1024) / grainBytes))))
    return this.grainCache
  }

  clear(): void {
    this.gdPages.clear()
    this.tables.clear()
    this.grainCache?.clear()
  }
}

/**
 * One hosted sparse extent, placed at `start` (bytes) in the guest view. Maps guest ranges to
 * segments and reads compressed grains. Does not own `file`.
 */
export class SparseExtent {
  readonly grainBytes: number
  readonly lengthBytes: number
  private readonly gtBytes: number
  private readonly gtCoverBytes: number
  private readonly gdEntries: number
  private readonly gdPosition: number
  private readonly id: number

  private constructor(
    readonly file: ImageFile,
    readonly header: SparseHeader,
    readonly start: number,
    private readonly caches: SparseCaches,
  ) {
    this.id = caches.newId()
    const path = file.path
    this.grainBytes = header.grainSectors * SECTOR
    this.lengthBytes = header.capacitySectors * SECTOR
    this.gtBytes = header.numGTEsPerGT * 4
    this.gtCoverBytes = this.grainBytes * header.numGTEsPerGT
    const needed = Math.ceil(this.lengthBytes / this.gtCoverBytes)
    if (header.gdEntries !== undefined && header.gdEntries < needed) {
      throw malformed(path, `the VMDK grain directory has ${header.gdEntries} entries, fewer than the ${needed} the capacity needs`)
    }
    this.gdEntries = needed
    this.gdPosition = header.gdOffsetSectors * SECTOR
    if (this.gdEntries > 0) {
      if (header.gdOffsetSectors === 0) throw malformed(path, 'the VMDK grain directory overlaps the header')
      if (this.gdPosition + this.gdEntries * 4 > file.size) {
        throw malformed(path, `the VMDK grain directory (${this.gdEntries} entries at sector ${header.gdOffsetSectors}) lies past the end of the file`)
      }
    }
    if (header.overheadSectors * SECTOR > file.size) {
      throw malformed(path, `the file is shorter than its VMDK metadata (${header.overheadSectors} sectors)`)
    }
  }

  /** Opens the extent whose header is at the start of `file`, placed at guest byte `start`. */
  /** The extent whose header (see `readSparseHeader`) is `header`, at guest byte `start`, caching in `caches`. */
  static fromHeader(file: ImageFile, header: SparseHeader, start: number, caches: SparseCaches): SparseExtent {
    return new SparseExtent(file, header, start, caches)
  }

  private async gdEntry(index: number): Promise<number> {
    const page = Math.floor(index / GD_PAGE_ENTRIES)
    const buf = await this.caches.gdPages.get(`${this.id}:${page}`, () => {
      const first = page * GD_PAGE_ENTRIES
      const count = Math.min(GD_PAGE_ENTRIES, this.gdEntries - first)
      return this.file.readAt(this.gdPosition + first * 4, count * 4, 'the VMDK grain directory')
    })
    return buf.readUInt32LE((index - page * GD_PAGE_ENTRIES) * 4)
  }

  private table(sector: number): Promise<Buffer> {
    return this.caches.tables.get(`${this.id}:${sector}`, async () => {
      const position = sector * SECTOR
      if (position + this.gtBytes > this.file.size) {
        throw malformed(this.file.path, `a VMDK grain table (sector ${sector}) lies past the end of the file`)
      }
      return this.file.readAt(position, this.gtBytes, 'a VMDK grain table')
    })
  }

  /**
   * This extent's segments of the guest range [offset, end) (absolute guest offsets, inside the
   * extent), in order, covering it exactly. Adjacent uncompressed grains that are adjacent in the
   * file become one segment.
   */
  async *map(offset: number, end: number): AsyncGenerator<VmdkSegment> {
    const { file, start, grainBytes, gtCoverBytes } = this
    const perGT = this.header.numGTEsPerGT
    let pending: VmdkSegment | undefined
    const push = function* (seg: VmdkSegment): Generator<VmdkSegment> {
      if (pending && pending.offset + pending.length === seg.offset && pending.kind === seg.kind) {
        const a = pending.source
        const b = seg.source
        if (seg.kind !== 'data') {
          pending.length += seg.length
          return
        }
        if (a?.kind === 'file' && b?.kind === 'file' && a.position + pending.length === b.position) {
          pending.length += seg.length
          return
        }
      }
      if (pending) yield pending
      pending = seg
    }
    let pos = offset
    while (pos < end) {
      const rel = pos - start
      const gdIndex = Math.floor(rel / gtCoverBytes)
      const gtStart = start + gdIndex * gtCoverBytes
      const gtEnd = Math.min(end, gtStart + gtCoverBytes)
      const gtSector = await this.gdEntry(gdIndex)
      if (gtSector === 0) {
        yield* push({ offset: pos, length: gtEnd - pos, kind: 'unallocated' })
        pos = gtEnd
        continue
      }
      const gt = await this.table(gtSector)
      while (pos < gtEnd) {
        const gi = Math.floor((pos - gtStart) / grainBytes)
        const grainStart = gtStart + gi * grainBytes
        const segEnd = Math.min(gtEnd, grainStart + grainBytes)
        const length = segEnd - pos
        const entry = gi < perGT ? gt.readUInt32LE(gi * 4) : 0
        if (entry === 0) {
          yield* push({ offset: pos, length, kind: 'unallocated' })
        } else if (entry === 1 && this.header.zeroGrains) {
          yield* push({ offset: pos, length, kind: 'zero' })
        } else if (this.header.compressed) {
          if (entry * SECTOR + 12 > file.size) {
            throw malformed(file.path, `a compressed VMDK grain (sector ${entry}) lies past the end of the file`)
          }
          yield* push({
            offset: pos,
            length,
            kind: 'data',
            source: { kind: 'compressed', extent: this, grainSector: entry, offsetInGrain: pos - grainStart },
          })
        } else {
          const position = entry * SECTOR + (pos - grainStart)
          if (position + length > file.size) {
            throw malformed(file.path, `a VMDK grain (sector ${entry}) lies past the end of the file`)
          }
          yield* push({ offset: pos, length, kind: 'data', source: { kind: 'file', file, position } })
        }
        pos = segEnd
      }
    }
    if (pending) yield pending
  }

  /** Copies bytes of a compressed grain into `target` (its exact length). */
  async readCompressed(target: Uint8Array, grainSector: number, offsetInGrain: number): Promise<void> {
    const grain = await this.caches.grains(this.grainBytes).get(`${this.id}:${grainSector}`, () => this.inflateGrain(grainSector))
    if (offsetInGrain + target.length > grain.length) {
      throw malformed(this.file.path, `a compressed VMDK grain (sector ${grainSector}) inflates to ${grain.length} bytes, fewer than the disk needs`)
    }
    target.set(grain.subarray(offsetInGrain, offsetInGrain + target.length))
  }

  private async inflateGrain(grainSector: number): Promise<Buffer> {
    const { file, grainBytes } = this
    const position = grainSector * SECTOR
    // qemu bounds a compressed grain (with its marker) by two grains; so do we.
    const limit = 2 * grainBytes
    let data: Buffer
    if (this.header.hasMarkers) {
      // One read usually holds the marker and the whole grain (incompressible data grows a little).
      const headLength = Math.min(file.size - position, 12 + grainBytes + 1024)
      const head = await file.readAt(position, headLength, 'a compressed VMDK grain')
      if (head.length < 12) throw malformed(file.path, `the compressed VMDK grain at sector ${grainSector} is cut short`)
      const size = head.readUInt32LE(8)
      if (size === 0) throw malformed(file.path, `a VMDK grain table points at a marker, not a grain (sector ${grainSector})`)
      if (size > limit) throw malformed(file.path, `the compressed VMDK grain at sector ${grainSector} claims ${size} bytes`)
      data = 12 + size <= head.length ? head.subarray(12, 12 + size) : await file.readAt(position + 12, size, 'a compressed VMDK grain')
    } else {
      data = await file.readAt(position, Math.min(limit, file.size - position), 'a compressed VMDK grain')
    }
    const isZlib = data.length >= 2 && ((data[0] as number) & 0x0f) === 8 && (((data[0] as number) << 8) | (data[1] as number)) % 31 === 0
    try {
      return await (isZlib ? inflateAsync : inflateRawAsync)(data, { maxOutputLength: grainBytes })
    } catch (err) {
      if (err instanceof EngineError) throw err
      throw malformed(file.path, `the compressed VMDK grain at sector ${grainSector} does not inflate (${(err as Error).message})`, err)
    }
  }
}
