/**
 * The qcow2 header and its extensions (qemu docs/interop/qcow2.txt), parsed with bounds checks.
 *
 * Every size, offset and count is checked against the file size and against qemu's own
 * implementation limits before anything is allocated from it.
 */
import { EngineError } from '../../errors.js'
import { check, malformed, u16be, u32be, u64be, u64beBig, u8, type ImageFile } from '../io.js'
import type { DirtyBitmapInfo, ImageFormat, SnapshotInfo } from '../types.js'

export const QCOW2_MAGIC = 0x514649fb
export const EXT_END = 0x00000000
export const EXT_BACKING_FORMAT = 0xe2792aca
export const EXT_FEATURE_NAMES = 0x6803f857
export const EXT_BITMAPS = 0x23852875
export const EXT_CRYPTO = 0x0537be77
export const EXT_DATA_FILE = 0x44415441

export const INCOMPAT_DIRTY = 1n << 0n
export const INCOMPAT_CORRUPT = 1n << 1n
export const INCOMPAT_DATA_FILE = 1n << 2n
export const INCOMPAT_COMPRESSION = 1n << 3n
export const INCOMPAT_EXTL2 = 1n << 4n
const INCOMPAT_KNOWN = INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2
export const AUTOCLEAR_BITMAPS = 1n << 0n
export const AUTOCLEAR_DATA_FILE_RAW = 1n << 1n

/** qemu's limits: L1 table at most 32 MiB, 65536 snapshots, bitmap directory at most 64 MiB. */
export const MAX_L1_BYTES = 32 * 1024 * 1024
const MAX_SNAPSHOTS = 65536
const MAX_BITMAP_DIRECTORY = 64 * 1024 * 1024
const MAX_BACKING_NAME = 1023

export interface Qcow2Header {
  version: 2 | 3
  clusterBits: number
  clusterSize: number
  virtualSize: number
  cryptMethod: number
  l1Size: number
  l1TableOffset: number
  refcountTableOffset: number
  refcountTableClusters: number
  nbSnapshots: number
  snapshotsOffset: number
  incompatible: bigint
  compatible: bigint
  autoclear: bigint
  refcountOrder: number
  headerLength: number
  /** 0 zlib, 1 zstd. */
  compressionType: number
  extendedL2: boolean
  backingFile: string | undefined
  backingFormat: string | undefined
  dataFile: string | undefined
  bitmaps: { count: number; directorySize: number; directoryOffset: number } | undefined
}

/** qemu's format names (as stored in the backing format extension) mapped to ours. */
export function ourFormatName(qemuName: string): ImageFormat | undefined {
  switch (qemuName) {
    case 'raw':
      return 'raw'
    case 'qcow2':
      return 'qcow2'
    case 'vpc':
      return 'vhd'
    case 'vhdx':
      return 'vhdx'
    case 'vmdk':
      return 'vmdk'
    default:
      return undefined
  }
}

export async function readHeader(file: ImageFile): Promise<Qcow2Header> {
  const path = file.path
  check(file.size >= 72, path, 'the qcow2 header is cut short')
  const h = await file.readAt(0, 104 <= file.size ? 104 : 72, 'the qcow2 header')
  check(u32be(h, 0) === QCOW2_MAGIC, path, 'the qcow2 magic is missing')
  const version = u32be(h, 4)
  if (version !== 2 && version !== 3) {
    throw new EngineError('IMAGE_UNSUPPORTED', `"${path}" is a qcow2 image of version ${version}; Tresor reads versions 2 and 3.`)
  }
  const backingFileOffset = u64be(h, 8, 'backing_file_offset')
  const backingFileSize = u32be(h, 16)
  const clusterBits = u32be(h, 20)
  check(clusterBits >= 9 && clusterBits <= 21, path, `the cluster size 2^${clusterBits} is outside 512 B..2 MiB`)
  const clusterSize = 2 ** clusterBits
  const virtualSize = u64be(h, 24, 'size')
  const cryptMethod = u32be(h, 32)
  const l1Size = u32be(h, 36)
  const l1TableOffset = u64be(h, 40, 'l1_table_offset')
  const refcountTableOffset = u64be(h, 48, 'refcount_table_offset')
  const refcountTableClusters = u32be(h, 56)
  const nbSnapshots = u32be(h, 60)
  const snapshotsOffset = u64be(h, 64, 'snapshots_offset')
  let incompatible = 0n
  let compatible = 0n
  let autoclear = 0n
  let refcountOrder = 4
  let headerLength = 72
  let compressionType = 0
  if (version === 3) {
    check(h.length >= 104, path, 'the qcow2 v3 header is cut short')
    incompatible = u64beBig(h, 72)
    compatible = u64beBig(h, 80)
    autoclear = u64beBig(h, 88)
    refcountOrder = u32be(h, 96)
    headerLength = u32be(h, 100)
    check(headerLength >= 104 && headerLength % 8 === 0 && headerLength <= clusterSize, path, `the header length ${headerLength} is invalid`)
    check(refcountOrder <= 6, path, `the refcount order ${refcountOrder} is invalid`)
  }
  const unknown = incompatible & ~INCOMPAT_KNOWN
  if (unknown !== 0n) {
    throw new EngineError('IMAGE_UNSUPPORTED', `"${path}" uses qcow2 features Tresor does not know (incompatible bits 0x${unknown.toString(16)}).`)
  }
  const first = await file.readAt(0, Math.min(clusterSize, file.size), 'the qcow2 header cluster')
  if (headerLength > 104) compressionType = u8(first, 104)
  if ((incompatible & INCOMPAT_COMPRESSION) !== 0n) {
    if (compressionType !== 1) {
      throw new EngineError('IMAGE_UNSUPPORTED', `"${path}" uses qcow2 compression type ${compressionType}; Tresor reads zlib and zstd.`)
    }
  } else check(compressionType === 0, path, 'a compression type is set without its feature bit')

  // Sanity of the main tables (allocation is driven by these fields).
  check(l1TableOffset % clusterSize === 0, path, 'the L1 table is not cluster aligned')
  check(l1Size * 8 <= MAX_L1_BYTES, path, `the L1 table is impossibly large (${l1Size} entries)`)
  const extendedL2 = (incompatible & INCOMPAT_EXTL2) !== 0n
  const l2Entries = clusterSize / (extendedL2 ? 16 : 8)
  const needed = Math.ceil(virtualSize / (clusterSize * l2Entries))
  check(l1Size >= needed, path, `the L1 table (${l1Size} entries) is too small for the virtual size`)
  if (l1Size > 0) {
    check(l1TableOffset >= clusterSize, path, 'the L1 table overlaps the header')
    check(l1TableOffset + l1Size * 8 <= file.size, path, 'the L1 table lies past the end of the file')
  }
  check(nbSnapshots <= MAX_SNAPSHOTS, path, `the snapshot count ${nbSnapshots} is impossible`)

  // Extensions: from the end of the header to the end of the first cluster.
  let backingFormat: string | undefined
  let dataFile: string | undefined
  let bitmaps: Qcow2Header['bitmaps']
  let pos = headerLength
  const seen = new Set<number>()
  for (;;) {
    if (pos + 8 > first.length) break
    const type = u32be(first, pos)
    const len = u32be(first, pos + 4)
    if (type === EXT_END) break
    check(pos + 8 + len <= first.length, path, `header extension 0x${type.toString(16)} runs past the header cluster`)
    check(!seen.has(type), path, `header extension 0x${type.toString(16)} appears twice`)
    seen.add(type)
    const data = first.subarray(pos + 8, pos + 8 + len)
    switch (type) {
      case EXT_BACKING_FORMAT:
        backingFormat = data.toString('utf8')
        break
      case EXT_DATA_FILE:
        dataFile = data.toString('utf8')
        break
      case EXT_BITMAPS:
        check(len >= 24, path, 'the bitmaps extension is too short')
        bitmaps = { count: u32be(data, 0), directorySize: u64be(data, 8, 'bitmap_directory_size'), directoryOffset: u64be(data, 16, 'bitmap_directory_offset') }
        break
      default:
        break
    }
    pos += 8 + Math.ceil(len / 8) * 8
  }

  let backingFile: string | undefined
  if (backingFileOffset !== 0) {
    check(backingFileSize <= MAX_BACKING_NAME, path, `the backing file name is too long (${backingFileSize} bytes)`)
    check(backingFileOffset + backingFileSize <= file.size, path, 'the backing file name lies past the end of the file')
    if (backingFileSize > 0) backingFile = (await file.readAt(backingFileOffset, backingFileSize, 'the backing file name')).toString('utf8')
  }

  if ((incompatible & INCOMPAT_DATA_FILE) === 0n) dataFile = undefined
  else if (dataFile === undefined) {
    throw new EngineError('IMAGE_UNSUPPORTED', `"${path}" stores its data in an external file whose name is not recorded; open it with its data file explicitly (not supported).`)
  }

  return {
    version,
    clusterBits,
    clusterSize,
    virtualSize,
    cryptMethod,
    l1Size,
    l1TableOffset,
    refcountTableOffset,
    refcountTableClusters,
    nbSnapshots,
    snapshotsOffset,
    incompatible,
    compatible,
    autoclear,
    refcountOrder,
    headerLength,
    compressionType,
    extendedL2,
    backingFile,
    backingFormat,
    dataFile,
    bitmaps: (autoclear & AUTOCLEAR_BITMAPS) !== 0n ? bitmaps : undefined,
  }
}

/** The internal snapshots listed in the snapshot table. */
export async function readSnapshots(file: ImageFile, header: Qcow2Header): Promise<SnapshotInfo[]> {
  const out: SnapshotInfo[] = []
  if (header.nbSnapshots === 0) return out
  check(header.snapshotsOffset % header.clusterSize === 0 && header.snapshotsOffset >= header.clusterSize, file.path, 'the snapshot table is misplaced')
  let pos = header.snapshotsOffset
  for (let i = 0; i < header.nbSnapshots; i++) {
    const fixed = await file.readAt(pos, 40, 'a snapshot table entry')
    const idSize = u16be(fixed, 12)
    const nameSize = u16be(fixed, 14)
    const dateSeconds = u32be(fixed, 16)
    let vmState = u32be(fixed, 32)
    const extraSize = u32be(fixed, 36)
    check(extraSize <= 1024 * 1024, file.path, `a snapshot entry has an impossible extra data size (${extraSize})`)
    const rest = await file.readAt(pos + 40, extraSize + idSize + nameSize, 'a snapshot table entry')
    if (extraSize >= 8) vmState = u64be(rest, 0, 'vm_state_size_large')
    const id = rest.subarray(extraSize, extraSize + idSize).toString('utf8')
    const name = rest.subarray(extraSize + idSize, extraSize + idSize + nameSize).toString('utf8')
    out.push({ id, name, vmStateBytes: vmState, dateSeconds })
    pos += Math.ceil((40 + extraSize + idSize + nameSize) / 8) * 8
  }
  return out
}

/** The persistent dirty bitmaps listed in the bitmap directory (when the extension is consistent). */
export async function readBitmaps(file: ImageFile, header: Qcow2Header): Promise<DirtyBitmapInfo[]> {
  const ext = header.bitmaps
  if (!ext || ext.count === 0) return []
  if (ext.directorySize > MAX_BITMAP_DIRECTORY || ext.count > 65535) {
    throw malformed(file.path, `the bitmap directory is impossibly large (${ext.directorySize} bytes)`)
  }
  const dir = await file.readAt(ext.directoryOffset, ext.directorySize, 'the bitmap directory')
  const out: DirtyBitmapInfo[] = []
  let pos = 0
  for (let i = 0; i < ext.count; i++) {
    check(pos + 24 <= dir.length, file.path, 'the bitmap directory is cut short')
    const flags = u32be(dir, pos + 12)
    const granularityBits = u8(dir, pos + 17)
    const nameSize = u16be(dir, pos + 18)
    const extraSize = u32be(dir, pos + 20)
    check(granularityBits <= 63 && pos + 24 + extraSize + nameSize <= dir.length, file.path, 'a bitmap directory entry is damaged')
    const name = dir.subarray(pos + 24 + extraSize, pos + 24 + extraSize + nameSize).toString('utf8')
    out.push({ name, granularityBytes: 2 ** granularityBits, enabled: (flags & 2) !== 0 })
    pos += Math.ceil((24 + extraSize + nameSize) / 8) * 8
  }
  return out
}
