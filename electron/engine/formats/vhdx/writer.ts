/**
 * VHDX writer: a dynamic disk with 512-byte logical sectors (4096-byte physical), written in one
 * pass. Layout: file identifier (creator "Tresor"), two headers (sequence 1 and 2, no log to
 * replay), two identical region tables, a 1 MiB empty log at 1 MiB, the metadata region at 2 MiB,
 * the BAT at 3 MiB, then payload blocks appended (1 MiB aligned) as data arrives. Blocks that only
 * receive zeros stay PAYLOAD_BLOCK_NOT_PRESENT; within an allocated block, unwritten bytes are file
 * holes and read as zeros. Every checksum is CRC-32C.
 */
import type { ImageWriter, WriterOptions } from '../types.js'
import { checkBlockSize, checkVirtualSize, nonZeroBlockPieces, OutputFile, WriteOrder } from '../vhd/writerBase.js'
import {
  batEntryCount,
  buildHeader,
  buildMetadataRegion,
  buildRegionTable,
  chunkRatio,
  FILE_ID_SIGNATURE,
  HEADER_OFFSETS,
  MAX_VIRTUAL_DISK_SIZE,
  META_FILE_PARAMETERS,
  META_LOGICAL_SECTOR,
  META_PAGE83,
  META_PHYSICAL_SECTOR,
  META_VIRTUAL_DISK_SIZE,
  MiB,
  PAYLOAD,
  payloadIndex,
  randomGuid,
  REGION_BAT,
  REGION_METADATA,
  REGION_TABLE_OFFSETS,
} from './structures.js'

export const DEFAULT_VHDX_BLOCK_SIZE = 32 * MiB
const LOGICAL_SECTOR = 512
const PHYSICAL_SECTOR = 4096
const LOG_OFFSET = MiB
const LOG_LENGTH = MiB
const METADATA_OFFSET = 2 * MiB
const METADATA_LENGTH = MiB
const BAT_OFFSET = 3 * MiB

class VhdxWriter implements ImageWriter {
  readonly format = 'vhdx' as const
  private bytesWritten = 0
  private readonly order: WriteOrder
  private readonly ratio: number
  /** File offset of each payload block, 0 when not allocated. */
  private readonly blockOffsets: Float64Array
  private readonly batLength: number
  private nextBlockOffset: number

  constructor(
    readonly path: string,
    private readonly out: OutputFile,
    private readonly size: number,
    virtualSize: number,
    private readonly blockSize: number,
  ) {
    this.order = new WriteOrder(path, virtualSize)
    this.ratio = chunkRatio(LOGICAL_SECTOR, blockSize)
    this.blockOffsets = new Float64Array(Math.ceil(size / blockSize))
    const entries = batEntryCount(size, blockSize, this.ratio, false)
    this.batLength = Math.max(MiB, Math.ceil((entries * 8) / MiB) * MiB)
    this.nextBlockOffset = BAT_OFFSET + this.batLength
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    this.order.check(offset, data.length)
    const bs = this.blockSize
    // Zeros are never written: a new block's data area is a hole of the file until written.
    for (const { block, inBlock, piece } of nonZeroBlockPieces(offset, data, bs)) {
      if (this.blockOffsets[block] === 0) {
        this.blockOffsets[block] = this.nextBlockOffset
        this.nextBlockOffset += bs
      }
      await this.out.writeAt(piece, this.blockOffsets[block]! + inBlock)
      this.bytesWritten += piece.length
    }
  }

  async finish(): Promise<{ bytesWritten: number }> {
    const fileId = Buffer.alloc(64 * 1024)
    fileId.write(FILE_ID_SIGNATURE, 0, 'latin1')
    fileId.write('Tresor', 8, 'utf16le')
    const fileWriteGuid = randomGuid()
    const dataWriteGuid = randomGuid()
    const header = (sequenceNumber: bigint): Buffer =>
      buildHeader({ sequenceNumber, fileWriteGuid, dataWriteGuid, logGuid: Buffer.alloc(16), logVersion: 0, version: 1, logLength: LOG_LENGTH, logOffset: LOG_OFFSET })
    const regions = buildRegionTable([
      { guid: REGION_BAT, fileOffset: BAT_OFFSET, length: this.batLength, required: true },
      { guid: REGION_METADATA, fileOffset: METADATA_OFFSET, length: METADATA_LENGTH, required: true },
    ])
    const u32 = (v: number): Buffer => {
      const b = Buffer.alloc(4)
      b.writeUInt32LE(v)
      return b
    }
    const u64 = (v: number): Buffer => {
      const b = Buffer.alloc(8)
      b.writeBigUInt64LE(BigInt(v))
      return b
    }
    const params = Buffer.alloc(8)
    params.writeUInt32LE(this.blockSize, 0)
    const metadata = buildMetadataRegion(
      [
        { guid: META_FILE_PARAMETERS, data: params, isVirtualDisk: false, isRequired: true },
        { guid: META_VIRTUAL_DISK_SIZE, data: u64(this.size), isVirtualDisk: true, isRequired: true },
        { guid: META_PAGE83, data: randomGuid(), isVirtualDisk: true, isRequired: true },
        { guid: META_LOGICAL_SECTOR, data: u32(LOGICAL_SECTOR), isVirtualDisk: true, isRequired: true },
        { guid: META_PHYSICAL_SECTOR, data: u32(PHYSICAL_SECTOR), isVirtualDisk: true, isRequired: true },
      ],
      METADATA_LENGTH,
    )
    const bat = Buffer.alloc(this.batLength)
    for (let block = 0; block < this.blockOffsets.length; block++) {
      const at = this.blockOffsets[block]!
      if (at === 0) continue
      const mib = at / MiB
      const idx = payloadIndex(block, this.ratio) * 8
      bat.writeUInt32LE((((mib % 4096) << 20) | PAYLOAD.fullyPresent) >>> 0, idx)
      bat.writeUInt32LE(Math.floor(mib / 4096), idx + 4)
    }
    await this.out.writeAt(fileId, 0)
    await this.out.writeAt(header(1n), HEADER_OFFSETS[0])
    await this.out.writeAt(header(2n), HEADER_OFFSETS[1])
    await this.out.writeAt(regions, REGION_TABLE_OFFSETS[0])
    await this.out.writeAt(regions, REGION_TABLE_OFFSETS[1])
    await this.out.writeAt(metadata, METADATA_OFFSET)
    await this.out.writeAt(bat, BAT_OFFSET)
    await this.out.truncate(this.nextBlockOffset)
    await this.out.syncAndClose()
    return { bytesWritten: this.bytesWritten }
  }

  async abort(): Promise<void> {
    await this.out.closeAndDelete()
  }
}

/** See index.ts. */
export async function createVhdxWriterImpl(path: string, options: WriterOptions): Promise<ImageWriter> {
  checkVirtualSize(options.virtualSize, MAX_VIRTUAL_DISK_SIZE, 'VHDX')
  const blockSize = options.clusterSize ?? DEFAULT_VHDX_BLOCK_SIZE
  checkBlockSize(blockSize, MiB, 256 * MiB, 'VHDX')
  const size = Math.ceil(options.virtualSize / LOGICAL_SECTOR) * LOGICAL_SECTOR
  const out = await OutputFile.create(path, options.overwrite)
  return new VhdxWriter(path, out, size, options.virtualSize, blockSize)
}
