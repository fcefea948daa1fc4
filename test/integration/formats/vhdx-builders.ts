/**
 * Test-only builder for VHDX files qemu 7.2 cannot create: 4 KiB logical sectors, differencing
 * disks (parent locator, PARTIALLY_PRESENT blocks with sector bitmaps, every payload state), and
 * files with a log to replay. Written from [MS-VHDX]; the results are cross-checked against libvhdi
 * and (for logs) against qemu, which replays a log when it opens a copy read-write.
 */
import { writeFile } from 'node:fs/promises'
import { crc32c } from '../../../electron/engine/formats/vhdx/crc32c.js'
import {
  batEntryCount,
  bitmapIndex,
  buildHeader,
  buildMetadataRegion,
  buildParentLocator,
  buildRegionTable,
  chunkRatio,
  guidBytes,
  META_FILE_PARAMETERS,
  META_LOGICAL_SECTOR,
  META_PAGE83,
  META_PARENT_LOCATOR,
  META_PHYSICAL_SECTOR,
  META_VIRTUAL_DISK_SIZE,
  payloadIndex,
  randomGuid,
  REGION_BAT,
  REGION_METADATA,
  SB_PRESENT,
  type MetadataItem,
} from '../../../electron/engine/formats/vhdx/structures.js'

const MiB = 1024 * 1024
const PAGE = 4096

export interface VhdxBlock {
  /** Payload state (0 NOT_PRESENT, 1 UNDEFINED, 2 ZERO, 3 UNMAPPED, 6 FULLY_PRESENT, 7 PARTIALLY_PRESENT). */
  state: number
  /** Block contents (FULLY/PARTIALLY_PRESENT), `blockSize` bytes. */
  data?: Buffer
  /** PARTIALLY_PRESENT: which logical sectors of the block are present in this file. */
  present?: (sector: number) => boolean
}

export interface VhdxParentSpec {
  linkage: string
  linkage2?: string
  relativePath?: string
  volumePath?: string
  absoluteWin32Path?: string
}

export interface VhdxBuild {
  virtualSize: number
  blockSize: number
  logicalSectorSize: 512 | 4096
  physicalSectorSize?: 512 | 4096
  blocks: Map<number, VhdxBlock>
  parent?: VhdxParentSpec
  leaveAllocated?: boolean
  dataWriteGuid?: Buffer
}

/** Lays out a complete, clean VHDX file in memory (same layout as the writer, but any content). */
export function buildVhdxBytes(b: VhdxBuild): { file: Buffer; dataWriteGuid: Buffer; batOffset: number; logOffset: number; logLength: number } {
  const ratio = chunkRatio(b.logicalSectorSize, b.blockSize)
  const hasParent = b.parent !== undefined
  const entries = batEntryCount(b.virtualSize, b.blockSize, ratio, hasParent)
  const batLength = Math.max(MiB, Math.ceil((entries * 8) / MiB) * MiB)
  const logOffset = MiB
  const logLength = MiB
  const metaOffset = 2 * MiB
  const batOffset = 3 * MiB
  let next = batOffset + batLength
  const bat = Buffer.alloc(batLength)
  const setEntry = (i: number, state: number, at: number): void => {
    const mib = at / MiB
    bat.writeUInt32LE((((mib % 4096) << 20) | state) >>> 0, i * 8)
    bat.writeUInt32LE(Math.floor(mib / 4096), i * 8 + 4)
  }
  const chunks: { at: number; data: Buffer }[] = []
  const sectorsPerBlock = b.blockSize / b.logicalSectorSize
  const bitmaps = new Map<number, Buffer>()
  for (const [block, spec] of [...b.blocks.entries()].sort((x, y) => x[0] - y[0])) {
    const idx = payloadIndex(block, ratio)
    if (spec.state === 6 || spec.state === 7) {
      setEntry(idx, spec.state, next)
      chunks.push({ at: next, data: spec.data ?? Buffer.alloc(b.blockSize) })
      next += b.blockSize
      if (spec.state === 7) {
        const chunk = Math.floor(block / ratio)
        let bm = bitmaps.get(chunk)
        if (!bm) {
          bm = Buffer.alloc(MiB)
          bitmaps.set(chunk, bm)
        }
        const first = (block % ratio) * sectorsPerBlock
        for (let s = 0; s < sectorsPerBlock; s++) {
          if (spec.present?.(s)) bm[(first + s) >>> 3]! |= 1 << ((first + s) & 7)
        }
      }
    } else {
      setEntry(idx, spec.state, 0)
    }
  }
  for (const [chunk, bm] of bitmaps) {
    setEntry(bitmapIndex(chunk, ratio), SB_PRESENT, next)
    chunks.push({ at: next, data: bm })
    next += MiB
  }
  const u32 = (v: number): Buffer => {
    const x = Buffer.alloc(4)
    x.writeUInt32LE(v)
    return x
  }
  const u64 = (v: number): Buffer => {
    const x = Buffer.alloc(8)
    x.writeBigUInt64LE(BigInt(v))
    return x
  }
  const params = Buffer.alloc(8)
  params.writeUInt32LE(b.blockSize, 0)
  params.writeUInt32LE((b.leaveAllocated ? 1 : 0) | (hasParent ? 2 : 0), 4)
  const items: MetadataItem[] = [
    { guid: META_FILE_PARAMETERS, data: params, isVirtualDisk: false, isRequired: true },
    { guid: META_VIRTUAL_DISK_SIZE, data: u64(b.virtualSize), isVirtualDisk: true, isRequired: true },
    { guid: META_PAGE83, data: randomGuid(), isVirtualDisk: true, isRequired: true },
    { guid: META_LOGICAL_SECTOR, data: u32(b.logicalSectorSize), isVirtualDisk: true, isRequired: true },
    { guid: META_PHYSICAL_SECTOR, data: u32(b.physicalSectorSize ?? 4096), isVirtualDisk: true, isRequired: true },
  ]
  if (b.parent) {
    const kv: [string, string][] = [['parent_linkage', `{${b.parent.linkage}}`]]
    if (b.parent.linkage2) kv.push(['parent_linkage2', `{${b.parent.linkage2}}`])
    if (b.parent.relativePath) kv.push(['relative_path', b.parent.relativePath])
    if (b.parent.volumePath) kv.push(['volume_path', b.parent.volumePath])
    if (b.parent.absoluteWin32Path) kv.push(['absolute_win32_path', b.parent.absoluteWin32Path])
    items.push({ guid: META_PARENT_LOCATOR, data: buildParentLocator(kv), isVirtualDisk: false, isRequired: true })
  }
  const metadata = buildMetadataRegion(items, MiB)
  const file = Buffer.alloc(next)
  file.write('vhdxfile', 0, 'latin1')
  file.write('tresor-test', 8, 'utf16le')
  const dataWriteGuid = b.dataWriteGuid ?? randomGuid()
  const fileWriteGuid = randomGuid()
  const header = (seq: bigint): Buffer =>
    buildHeader({ sequenceNumber: seq, fileWriteGuid, dataWriteGuid, logGuid: Buffer.alloc(16), logVersion: 0, version: 1, logLength, logOffset })
  header(10n).copy(file, 64 * 1024)
  header(11n).copy(file, 128 * 1024)
  const regions = buildRegionTable([
    { guid: REGION_BAT, fileOffset: batOffset, length: batLength, required: true },
    { guid: REGION_METADATA, fileOffset: metaOffset, length: MiB, required: true },
  ])
  regions.copy(file, 192 * 1024)
  regions.copy(file, 256 * 1024)
  metadata.copy(file, metaOffset)
  bat.copy(file, batOffset)
  for (const c of chunks) c.data.copy(file, c.at)
  return { file, dataWriteGuid, batOffset, logOffset, logLength }
}

export async function buildVhdx(path: string, b: VhdxBuild): Promise<{ dataWriteGuid: Buffer }> {
  const { file, dataWriteGuid } = buildVhdxBytes(b)
  await writeFile(path, file)
  return { dataWriteGuid }
}

/** One log entry: pages written (data descriptors) and zeroed ranges (zero descriptors). */
export interface LogEntrySpec {
  sequence: bigint
  /** Offset of this entry in the log (4 KiB multiple); entries may wrap around the log's end. */
  at: number
  /** Offset in the log of the first entry of the active sequence. */
  tail: number
  pages: { fileOffset: number; data: Buffer }[]
  zeros?: { fileOffset: number; length: number }[]
  flushedFileOffset: number
  lastFileOffset: number
  /** Break the CRC (the entry must then be ignored). */
  corrupt?: boolean
}

/** Encodes one log entry (header, descriptors, data sectors) with its CRC-32C. */
export function encodeLogEntry(e: LogEntrySpec, logGuid: Buffer): Buffer {
  const zeros = e.zeros ?? []
  const count = zeros.length + e.pages.length
  const descArea = Math.ceil((64 + count * 32) / PAGE) * PAGE
  const length = descArea + e.pages.length * PAGE
  const buf = Buffer.alloc(length)
  buf.write('loge', 0, 'latin1')
  buf.writeUInt32LE(length, 8)
  buf.writeUInt32LE(e.tail, 12)
  buf.writeBigUInt64LE(e.sequence, 16)
  buf.writeUInt32LE(count, 24)
  logGuid.copy(buf, 32)
  buf.writeBigUInt64LE(BigInt(e.flushedFileOffset), 48)
  buf.writeBigUInt64LE(BigInt(e.lastFileOffset), 56)
  let d = 64
  for (const z of zeros) {
    buf.write('zero', d, 'latin1')
    buf.writeBigUInt64LE(BigInt(z.length), d + 8)
    buf.writeBigUInt64LE(BigInt(z.fileOffset), d + 16)
    buf.writeBigUInt64LE(e.sequence, d + 24)
    d += 32
  }
  e.pages.forEach((p, i) => {
    buf.write('desc', d, 'latin1')
    p.data.copy(buf, d + 4, 4092, 4096) // trailing bytes
    p.data.copy(buf, d + 8, 0, 8) // leading bytes
    buf.writeBigUInt64LE(BigInt(p.fileOffset), d + 16)
    buf.writeBigUInt64LE(e.sequence, d + 24)
    d += 32
    const s = descArea + i * PAGE
    buf.write('data', s, 'latin1')
    buf.writeUInt32LE(Number(e.sequence >> 32n), s + 4)
    p.data.copy(buf, s + 8, 8, 4092)
    buf.writeUInt32LE(Number(e.sequence & 0xffffffffn), s + 4092)
  })
  buf.writeUInt32LE(crc32c(buf), 4)
  if (e.corrupt) buf[100]! ^= 0xff
  return buf
}

/**
 * Writes `entries` into the log region of `file` (circularly) and sets the LogGuid of both
 * headers, so the file needs a log replay.
 */
export function installLog(file: Buffer, logOffset: number, logLength: number, entries: LogEntrySpec[], logGuid = randomGuid()): void {
  for (const e of entries) {
    const enc = encodeLogEntry(e, logGuid)
    for (let i = 0; i < enc.length; i++) file[logOffset + ((e.at + i) % logLength)] = enc[i]!
  }
  for (const at of [64 * 1024, 128 * 1024]) {
    logGuid.copy(file, at + 48)
    file.writeUInt32LE(0, at + 4)
    file.writeUInt32LE(crc32c(file.subarray(at, at + 4096)), at + 4)
  }
}

export { guidBytes }
