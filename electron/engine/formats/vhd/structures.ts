/**
 * VHD on-disk structures (Microsoft "Virtual Hard Disk Image Format Specification"): the hard disk
 * footer, the dynamic disk header, CHS geometry and the rule that turns a footer into a virtual
 * size. All fields are big-endian.
 */

export const SECTOR = 512
export const FOOTER_SIZE = 512
export const DYNAMIC_HEADER_SIZE = 1024
export const FOOTER_COOKIE = 'conectix'
export const DYNAMIC_COOKIE = 'cxsparse'
/** BAT entry of a block that is not allocated in this file. */
export const BAT_UNUSED = 0xffffffff
/** 0xFFFFFFFF'FFFFFFFF: "no next structure" (fixed disks). */
export const NO_DATA_OFFSET = 2n ** 64n - 1n

export const DISK_TYPE = { fixed: 2, dynamic: 3, differencing: 4 } as const

/** Largest CHS geometry the footer can describe: 65535 cylinders, 16 heads, 255 sectors/track. */
export const MAX_CHS_SECTORS = 65535 * 16 * 255
/** qemu's ceiling for a VHD (about 2040 GiB), also Hyper-V's: 65535 * 255 * 255 sectors. */
export const MAX_VHD_SECTORS = 65535 * 255 * 255

/** Seconds between 1970-01-01 and 2000-01-01 (VHD timestamps count from 2000). */
export const VHD_EPOCH_SECONDS = 946_684_800

export interface Geometry {
  cylinders: number
  heads: number
  sectorsPerTrack: number
}

export interface Footer {
  features: number
  version: number
  /** Container offset of the dynamic disk header; undefined for fixed disks. */
  dataOffset: number | undefined
  timestamp: number
  /** 4 characters, e.g. 'vpc ', 'qemu', 'qem2', 'win ', 'd2v ', 'tap\0', 'CTXS'. */
  creatorApp: string
  creatorVersion: number
  creatorHostOs: number
  originalSize: number
  currentSize: number
  geometry: Geometry
  diskType: number
  checksum: number
  uniqueId: Buffer
  savedState: number
}

export interface ParentLocator {
  platformCode: string
  dataSpace: number
  dataLength: number
  dataOffset: number
}

export interface DynamicHeader {
  tableOffset: number
  headerVersion: number
  maxTableEntries: number
  blockSize: number
  checksum: number
  parentUniqueId: Buffer
  parentTimestamp: number
  /** Parent file name from the header (UTF-16 big-endian), NULs trimmed. */
  parentName: string
  locators: ParentLocator[]
}

/** One's complement of the byte sum of `buf`, skipping the 4-byte checksum field at `skipAt`. */
export function vhdChecksum(buf: Uint8Array, skipAt: number): number {
  let sum = 0
  for (let i = 0; i < buf.length; i++) {
    if (i >= skipAt && i < skipAt + 4) continue
    sum = (sum + buf[i]!) >>> 0
  }
  return ~sum >>> 0
}

function u64(buf: Buffer, at: number): bigint {
  return buf.readBigUInt64BE(at)
}

/** A u64 field as a number; values beyond 2^53 become Infinity so that range checks reject them. */
function u64n(buf: Buffer, at: number): number {
  const v = u64(buf, at)
  return v > BigInt(Number.MAX_SAFE_INTEGER) ? Number.POSITIVE_INFINITY : Number(v)
}

export type FooterProblem = 'cookie' | 'checksum'

/** Parses a 512-byte footer; returns the problem instead when the cookie or checksum is wrong. */
export function parseFooter(buf: Buffer): Footer | FooterProblem {
  if (buf.length < FOOTER_SIZE || buf.toString('latin1', 0, 8) !== FOOTER_COOKIE) return 'cookie'
  const checksum = buf.readUInt32BE(64)
  if (vhdChecksum(buf.subarray(0, FOOTER_SIZE), 64) !== checksum) return 'checksum'
  const dataOffsetRaw = u64(buf, 16)
  return {
    features: buf.readUInt32BE(8),
    version: buf.readUInt32BE(12),
    dataOffset: dataOffsetRaw === NO_DATA_OFFSET ? undefined : u64n(buf, 16),
    timestamp: buf.readUInt32BE(24),
    creatorApp: buf.toString('latin1', 28, 32),
    creatorVersion: buf.readUInt32BE(32),
    creatorHostOs: buf.readUInt32BE(36),
    originalSize: u64n(buf, 40),
    currentSize: u64n(buf, 48),
    geometry: { cylinders: buf.readUInt16BE(56), heads: buf.readUInt8(58), sectorsPerTrack: buf.readUInt8(59) },
    diskType: buf.readUInt32BE(60),
    checksum,
    uniqueId: Buffer.from(buf.subarray(68, 84)),
    savedState: buf.readUInt8(84),
  }
}

export type HeaderProblem = 'cookie' | 'checksum'

export function parseDynamicHeader(buf: Buffer): DynamicHeader | HeaderProblem {
  if (buf.length < DYNAMIC_HEADER_SIZE || buf.toString('latin1', 0, 8) !== DYNAMIC_COOKIE) return 'cookie'
  const checksum = buf.readUInt32BE(36)
  if (vhdChecksum(buf.subarray(0, DYNAMIC_HEADER_SIZE), 36) !== checksum) return 'checksum'
  const locators: ParentLocator[] = []
  for (let i = 0; i < 8; i++) {
    const at = 576 + i * 24
    const code = buf.readUInt32BE(at)
    if (code === 0) continue
    locators.push({
      platformCode: buf.toString('latin1', at, at + 4),
      dataSpace: buf.readUInt32BE(at + 4),
      dataLength: buf.readUInt32BE(at + 8),
      dataOffset: u64n(buf, at + 16),
    })
  }
  return {
    tableOffset: u64n(buf, 16),
    headerVersion: buf.readUInt32BE(24),
    maxTableEntries: buf.readUInt32BE(28),
    blockSize: buf.readUInt32BE(32),
    checksum,
    parentUniqueId: Buffer.from(buf.subarray(40, 56)),
    parentTimestamp: buf.readUInt32BE(56),
    parentName: decodeUtf16(buf.subarray(64, 576), 'be'),
    locators,
  }
}

/** Decodes UTF-16 text, stopping at the first NUL code unit. */
export function decodeUtf16(bytes: Uint8Array, endian: 'le' | 'be'): string {
  const units: number[] = []
  for (let i = 0; i + 1 < bytes.length; i += 2) {
    const u = endian === 'le' ? bytes[i]! | (bytes[i + 1]! << 8) : (bytes[i]! << 8) | bytes[i + 1]!
    if (u === 0) break
    units.push(u)
  }
  let s = ''
  for (let i = 0; i < units.length; i += 4096) s += String.fromCharCode(...units.slice(i, i + 4096))
  return s
}

export function encodeUtf16(text: string, endian: 'le' | 'be'): Buffer {
  const buf = Buffer.alloc(text.length * 2)
  for (let i = 0; i < text.length; i++) {
    const u = text.charCodeAt(i)
    if (endian === 'le') buf.writeUInt16LE(u, i * 2)
    else buf.writeUInt16BE(u, i * 2)
  }
  return buf
}

/**
 * CHS geometry for a sector count, the algorithm of the VHD specification's appendix: it rounds
 * down, and saturates at 65535/16/255.
 */
export function chsGeometry(totalSectorsIn: number): Geometry {
  const totalSectors = Math.min(totalSectorsIn, MAX_CHS_SECTORS)
  let sectorsPerTrack: number
  let heads: number
  let cylTimesHeads: number
  if (totalSectors >= 65535 * 16 * 63) {
    sectorsPerTrack = 255
    heads = 16
    cylTimesHeads = Math.floor(totalSectors / sectorsPerTrack)
  } else {
    sectorsPerTrack = 17
    cylTimesHeads = Math.floor(totalSectors / sectorsPerTrack)
    heads = Math.max(4, Math.floor((cylTimesHeads + 1023) / 1024))
    if (cylTimesHeads >= heads * 1024 || heads > 16) {
      sectorsPerTrack = 31
      heads = 16
      cylTimesHeads = Math.floor(totalSectors / sectorsPerTrack)
    }
    if (cylTimesHeads >= heads * 1024) {
      sectorsPerTrack = 63
      heads = 16
      cylTimesHeads = Math.floor(totalSectors / sectorsPerTrack)
    }
  }
  return { cylinders: Math.floor(cylTimesHeads / heads), heads, sectorsPerTrack }
}

/** Creator applications whose `current_size` qemu 7.2 trusts over the CHS geometry. */
const CURRENT_SIZE_CREATORS = new Set(['win ', 'qem2', 'd2v ', 'CTXS', 'tap\0'])

/**
 * The guest-visible size of a VHD in bytes, the rule of qemu 7.2 (block/vpc.c), which is also what
 * Virtual PC and Hyper-V do for the images they create:
 * - Images from Hyper-V ('win '), qemu with force_size ('qem2'), Disk2vhd ('d2v '), XenServer
 *   ('tap\0') and XenConverter ('CTXS') use `current_size` from the footer.
 * - Every other creator (Virtual PC 'vpc ', qemu without force_size 'qemu', unknown tools) uses the
 *   CHS geometry: cylinders * heads * sectors per track * 512 — Virtual PC sized disks that way and
 *   stored a larger, rounded `current_size`.
 * - Except: a geometry at the CHS maximum (65535 * 16 * 255) cannot describe larger disks, so then
 *   `current_size` is used whatever the creator.
 * `current_size` is rounded down to whole 512-byte sectors.
 */
export function virtualSizeOf(footer: Footer): number {
  const chsSectors = footer.geometry.cylinders * footer.geometry.heads * footer.geometry.sectorsPerTrack
  const useChs = !CURRENT_SIZE_CREATORS.has(footer.creatorApp)
  if (!useChs || chsSectors === MAX_CHS_SECTORS) return Math.floor(footer.currentSize / SECTOR) * SECTOR
  return chsSectors * SECTOR
}

export interface FooterFields {
  diskType: number
  dataOffset: number | undefined
  currentSize: number
  geometry: Geometry
  uniqueId: Buffer
  timestamp: number
  creatorApp: string
  creatorVersion: number
  creatorHostOs: string
}

export function buildFooter(f: FooterFields): Buffer {
  const buf = Buffer.alloc(FOOTER_SIZE)
  buf.write(FOOTER_COOKIE, 0, 'latin1')
  buf.writeUInt32BE(2, 8) // features: the reserved bit the spec requires
  buf.writeUInt32BE(0x00010000, 12)
  buf.writeBigUInt64BE(f.dataOffset === undefined ? NO_DATA_OFFSET : BigInt(f.dataOffset), 16)
  buf.writeUInt32BE(f.timestamp >>> 0, 24)
  buf.write(f.creatorApp.padEnd(4, ' ').slice(0, 4), 28, 'latin1')
  buf.writeUInt32BE(f.creatorVersion >>> 0, 32)
  buf.write(f.creatorHostOs.slice(0, 4), 36, 'latin1')
  buf.writeBigUInt64BE(BigInt(f.currentSize), 40)
  buf.writeBigUInt64BE(BigInt(f.currentSize), 48)
  buf.writeUInt16BE(f.geometry.cylinders, 56)
  buf.writeUInt8(f.geometry.heads, 58)
  buf.writeUInt8(f.geometry.sectorsPerTrack, 59)
  buf.writeUInt32BE(f.diskType, 60)
  f.uniqueId.copy(buf, 68, 0, 16)
  buf.writeUInt32BE(vhdChecksum(buf, 64), 64)
  return buf
}

export interface DynamicHeaderFields {
  tableOffset: number
  maxTableEntries: number
  blockSize: number
  parentUniqueId?: Buffer
  parentTimestamp?: number
  parentName?: string
  locators?: ParentLocator[]
}

export function buildDynamicHeader(h: DynamicHeaderFields): Buffer {
  const buf = Buffer.alloc(DYNAMIC_HEADER_SIZE)
  buf.write(DYNAMIC_COOKIE, 0, 'latin1')
  buf.writeBigUInt64BE(NO_DATA_OFFSET, 8)
  buf.writeBigUInt64BE(BigInt(h.tableOffset), 16)
  buf.writeUInt32BE(0x00010000, 24)
  buf.writeUInt32BE(h.maxTableEntries, 28)
  buf.writeUInt32BE(h.blockSize, 32)
  h.parentUniqueId?.copy(buf, 40, 0, 16)
  buf.writeUInt32BE((h.parentTimestamp ?? 0) >>> 0, 56)
  if (h.parentName) encodeUtf16(h.parentName.slice(0, 255), 'be').copy(buf, 64)
  ;(h.locators ?? []).slice(0, 8).forEach((l, i) => {
    const at = 576 + i * 24
    buf.write(l.platformCode.slice(0, 4), at, 'latin1')
    buf.writeUInt32BE(l.dataSpace, at + 4)
    buf.writeUInt32BE(l.dataLength, at + 8)
    buf.writeBigUInt64BE(BigInt(l.dataOffset), at + 16)
  })
  buf.writeUInt32BE(vhdChecksum(buf, 36), 36)
  return buf
}

/** Bytes of the sector bitmap in front of each block: one bit per sector, padded to a sector. */
export function bitmapBytes(blockSize: number): number {
  return Math.ceil(blockSize / SECTOR / 8 / SECTOR) * SECTOR
}

/** Sector `i` of a block is present when its bit (most significant bit first) is set. */
export function bitIsSet(bitmap: Uint8Array, i: number): boolean {
  return (bitmap[i >>> 3]! & (0x80 >>> (i & 7))) !== 0
}
