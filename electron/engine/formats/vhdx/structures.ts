/**
 * VHDX on-disk structures ([MS-VHDX]): file type identifier, headers, region table, metadata
 * table and items, parent locator, BAT entry layout. All integers are little-endian; GUIDs are
 * stored in the Windows mixed-endian layout.
 */
import { randomBytes } from 'node:crypto'
import { crc32c, crc32cWithZeroField } from './crc32c.js'

export const KiB = 1024
export const MiB = 1024 * 1024
export const FILE_ID_SIGNATURE = 'vhdxfile'
export const HEADER_OFFSETS = [64 * KiB, 128 * KiB] as const
export const HEADER_SIZE = 4 * KiB
export const REGION_TABLE_OFFSETS = [192 * KiB, 256 * KiB] as const
export const REGION_TABLE_SIZE = 64 * KiB
export const METADATA_TABLE_SIZE = 64 * KiB
export const SECTOR_BITMAP_BLOCK_SIZE = MiB
/** Sectors described by one sector bitmap block: 2^23. */
export const SECTORS_PER_BITMAP_BLOCK = 2 ** 23
export const MAX_VIRTUAL_DISK_SIZE = 64 * 1024 * 1024 * MiB // 64 TiB

export const SIG_HEAD = 0x64616568 // "head"
export const SIG_REGI = 0x69676572 // "regi"

export const PAYLOAD = {
  notPresent: 0,
  undefined: 1,
  zero: 2,
  unmapped: 3,
  /** UNMAPPED as numbered by the 0.95 draft of the specification (qemu reads it as zeros too). */
  unmappedV095: 5,
  fullyPresent: 6,
  partiallyPresent: 7,
} as const
export const SB_PRESENT = 6

/** Canonical lower-case text of a GUID stored in Windows layout. */
export function guidText(b: Uint8Array, at = 0): string {
  const h = (i: number): string => b[at + i]!.toString(16).padStart(2, '0')
  return (
    h(3) + h(2) + h(1) + h(0) + '-' + h(5) + h(4) + '-' + h(7) + h(6) + '-' + h(8) + h(9) + '-' +
    h(10) + h(11) + h(12) + h(13) + h(14) + h(15)
  )
}

/** GUID text (braces and case ignored) to its 16-byte Windows layout. */
export function guidBytes(text: string): Buffer {
  const hex = text.replace(/[{}-]/g, '')
  if (!/^[0-9a-fA-F]{32}$/.test(hex)) throw new Error(`not a GUID: ${text}`)
  const raw = Buffer.from(hex, 'hex')
  const out = Buffer.alloc(16)
  out[0] = raw[3]!; out[1] = raw[2]!; out[2] = raw[1]!; out[3] = raw[0]!
  out[4] = raw[5]!; out[5] = raw[4]!; out[6] = raw[7]!; out[7] = raw[6]!
  raw.copy(out, 8, 8, 16)
  return out
}

/** Normalises GUID text from a parent locator: lower case, no braces; undefined when not a GUID. */
export function normalizeGuid(text: string | undefined): string | undefined {
  if (!text) return undefined
  const t = text.trim().replace(/^\{|\}$/g, '').toLowerCase()
  return /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(t) ? t : undefined
}

export function randomGuid(): Buffer {
  const b = randomBytes(16)
  b[7] = (b[7]! & 0x0f) | 0x40 // version 4 (Data3 high nibble, little-endian storage)
  b[8] = (b[8]! & 0x3f) | 0x80
  return b
}

export function isZeroGuid(b: Uint8Array): boolean {
  for (const x of b) if (x !== 0) return false
  return true
}

export const REGION_BAT = '2dc27766-f623-4200-9d64-115e9bfd4a08'
export const REGION_METADATA = '8b7ca206-4790-4b9a-b8fe-575f050f886e'
export const META_FILE_PARAMETERS = 'caa16737-fa36-4d43-b3b6-33f0aa44e76b'
export const META_VIRTUAL_DISK_SIZE = '2fa54224-cd1b-4876-b211-5dbed83bf4b8'
export const META_PAGE83 = 'beca12ab-b2e6-4523-93ef-c309e000c746'
export const META_LOGICAL_SECTOR = '8141bf1d-a96f-4709-ba47-f233a8faab5f'
export const META_PHYSICAL_SECTOR = 'cda348c7-445d-4471-9cc9-e9885251c556'
export const META_PARENT_LOCATOR = 'a8d35f2d-b30b-454d-abf7-d3d84834ab0c'
export const PARENT_LOCATOR_TYPE_VHDX = 'b04aefb7-d19e-4a81-b789-25b8e9445913'

export interface Header {
  sequenceNumber: bigint
  fileWriteGuid: Buffer
  dataWriteGuid: Buffer
  logGuid: Buffer
  logVersion: number
  version: number
  logLength: number
  logOffset: number
}

/** Parses a 4 KiB header; undefined when its signature or CRC-32C is wrong. */
export function parseHeader(buf: Buffer): Header | undefined {
  if (buf.length < HEADER_SIZE || buf.readUInt32LE(0) !== SIG_HEAD) return undefined
  if (crc32cWithZeroField(buf.subarray(0, HEADER_SIZE), 4) !== buf.readUInt32LE(4)) return undefined
  return {
    sequenceNumber: buf.readBigUInt64LE(8),
    fileWriteGuid: Buffer.from(buf.subarray(16, 32)),
    dataWriteGuid: Buffer.from(buf.subarray(32, 48)),
    logGuid: Buffer.from(buf.subarray(48, 64)),
    logVersion: buf.readUInt16LE(64),
    version: buf.readUInt16LE(66),
    logLength: buf.readUInt32LE(68),
    logOffset: Number(buf.readBigUInt64LE(72)),
  }
}

export function buildHeader(h: Header): Buffer {
  const buf = Buffer.alloc(HEADER_SIZE)
  buf.writeUInt32LE(SIG_HEAD, 0)
  buf.writeBigUInt64LE(h.sequenceNumber, 8)
  h.fileWriteGuid.copy(buf, 16)
  h.dataWriteGuid.copy(buf, 32)
  h.logGuid.copy(buf, 48)
  buf.writeUInt16LE(h.logVersion, 64)
  buf.writeUInt16LE(h.version, 66)
  buf.writeUInt32LE(h.logLength, 68)
  buf.writeBigUInt64LE(BigInt(h.logOffset), 72)
  buf.writeUInt32LE(crc32c(buf), 4)
  return buf
}

export interface RegionEntry {
  guid: string
  fileOffset: number
  length: number
  required: boolean
}

/** Parses a 64 KiB region table; undefined when its signature, CRC or entry count is wrong. */
export function parseRegionTable(buf: Buffer): RegionEntry[] | undefined {
  if (buf.length < REGION_TABLE_SIZE || buf.readUInt32LE(0) !== SIG_REGI) return undefined
  if (crc32cWithZeroField(buf.subarray(0, REGION_TABLE_SIZE), 4) !== buf.readUInt32LE(4)) return undefined
  const count = buf.readUInt32LE(8)
  if (count > 2047) return undefined
  const out: RegionEntry[] = []
  for (let i = 0; i < count; i++) {
    const at = 16 + i * 32
    const off = buf.readBigUInt64LE(at + 16)
    out.push({
      guid: guidText(buf, at),
      fileOffset: off > BigInt(Number.MAX_SAFE_INTEGER) ? Number.POSITIVE_INFINITY : Number(off),
      length: buf.readUInt32LE(at + 24),
      required: (buf.readUInt32LE(at + 28) & 1) !== 0,
    })
  }
  return out
}

export function buildRegionTable(entries: RegionEntry[]): Buffer {
  const buf = Buffer.alloc(REGION_TABLE_SIZE)
  buf.writeUInt32LE(SIG_REGI, 0)
  buf.writeUInt32LE(entries.length, 8)
  entries.forEach((e, i) => {
    const at = 16 + i * 32
    guidBytes(e.guid).copy(buf, at)
    buf.writeBigUInt64LE(BigInt(e.fileOffset), at + 16)
    buf.writeUInt32LE(e.length, at + 24)
    buf.writeUInt32LE(e.required ? 1 : 0, at + 28)
  })
  buf.writeUInt32LE(crc32c(buf), 4)
  return buf
}

export interface MetadataEntry {
  guid: string
  /** Offset from the start of the metadata region. */
  offset: number
  length: number
  isUser: boolean
  isVirtualDisk: boolean
  isRequired: boolean
}

/** Parses the metadata table (first 64 KiB of the metadata region); undefined when invalid. */
export function parseMetadataTable(buf: Buffer): MetadataEntry[] | undefined {
  if (buf.length < METADATA_TABLE_SIZE || buf.toString('latin1', 0, 8) !== 'metadata') return undefined
  const count = buf.readUInt16LE(10)
  if (count > 2047) return undefined
  const out: MetadataEntry[] = []
  for (let i = 0; i < count; i++) {
    const at = 32 + i * 32
    const flags = buf.readUInt32LE(at + 24)
    out.push({
      guid: guidText(buf, at),
      offset: buf.readUInt32LE(at + 16),
      length: buf.readUInt32LE(at + 20),
      isUser: (flags & 1) !== 0,
      isVirtualDisk: (flags & 2) !== 0,
      isRequired: (flags & 4) !== 0,
    })
  }
  return out
}

export interface MetadataItem {
  guid: string
  data: Buffer
  isVirtualDisk: boolean
  isRequired: boolean
}

/** Builds a metadata region: the table, then the items from offset 64 KiB. */
export function buildMetadataRegion(items: MetadataItem[], regionLength: number): Buffer {
  const buf = Buffer.alloc(regionLength)
  buf.write('metadata', 0, 'latin1')
  buf.writeUInt16LE(items.length, 10)
  let dataAt = METADATA_TABLE_SIZE
  items.forEach((item, i) => {
    const at = 32 + i * 32
    guidBytes(item.guid).copy(buf, at)
    buf.writeUInt32LE(item.data.length === 0 ? 0 : dataAt, at + 16)
    buf.writeUInt32LE(item.data.length, at + 20)
    buf.writeUInt32LE((item.isVirtualDisk ? 2 : 0) | (item.isRequired ? 4 : 0), at + 24)
    item.data.copy(buf, dataAt)
    dataAt += Math.ceil(item.data.length / 8) * 8 || 0
  })
  return buf
}

/** Key/value pairs of a parent locator item (keys and values UTF-16LE). */
export function parseParentLocator(buf: Buffer): { type: string; entries: Map<string, string> } | undefined {
  if (buf.length < 20) return undefined
  const type = guidText(buf, 0)
  const count = buf.readUInt16LE(18)
  const entries = new Map<string, string>()
  for (let i = 0; i < count; i++) {
    const at = 20 + i * 12
    if (at + 12 > buf.length) return undefined
    const keyOff = buf.readUInt32LE(at)
    const valOff = buf.readUInt32LE(at + 4)
    const keyLen = buf.readUInt16LE(at + 8)
    const valLen = buf.readUInt16LE(at + 10)
    if (keyOff + keyLen > buf.length || valOff + valLen > buf.length) return undefined
    const key = buf.toString('utf16le', keyOff, keyOff + keyLen)
    const value = buf.toString('utf16le', valOff, valOff + valLen)
    entries.set(key, value)
  }
  return { type, entries }
}

export function buildParentLocator(entries: [string, string][]): Buffer {
  const head = Buffer.alloc(20 + entries.length * 12)
  guidBytes(PARENT_LOCATOR_TYPE_VHDX).copy(head, 0)
  head.writeUInt16LE(entries.length, 18)
  const chunks: Buffer[] = [head]
  let at = head.length
  entries.forEach(([k, v], i) => {
    const kb = Buffer.from(k, 'utf16le')
    const vb = Buffer.from(v, 'utf16le')
    head.writeUInt32LE(at, 20 + i * 12)
    head.writeUInt32LE(at + kb.length, 20 + i * 12 + 4)
    head.writeUInt16LE(kb.length, 20 + i * 12 + 8)
    head.writeUInt16LE(vb.length, 20 + i * 12 + 10)
    chunks.push(kb, vb)
    at += kb.length + vb.length
  })
  return Buffer.concat(chunks)
}

/** Payload blocks per sector bitmap block. */
export function chunkRatio(logicalSectorSize: number, blockSize: number): number {
  return (SECTORS_PER_BITMAP_BLOCK * logicalSectorSize) / blockSize
}

/** BAT entries a disk needs (payload entries interleaved with a sector bitmap entry per chunk). */
export function batEntryCount(virtualSize: number, blockSize: number, ratio: number, hasParent: boolean): number {
  const payloadBlocks = Math.ceil(virtualSize / blockSize)
  if (hasParent) return Math.ceil(payloadBlocks / ratio) * (ratio + 1)
  return payloadBlocks + Math.floor(Math.max(0, payloadBlocks - 1) / ratio)
}

/** Index in the BAT of payload block `block`. */
export function payloadIndex(block: number, ratio: number): number {
  return block + Math.floor(block / ratio)
}

/** Index in the BAT of the sector bitmap entry of chunk `chunk`. */
export function bitmapIndex(chunk: number, ratio: number): number {
  return chunk * (ratio + 1) + ratio
}
