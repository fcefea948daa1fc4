/**
 * VHD writers: fixed (raw data followed by a footer; holes stay sparse in the file) and dynamic
 * (footer copy, dynamic header, BAT, then blocks appended as data arrives; blocks that only ever
 * receive zeros are never allocated).
 *
 * Size and geometry: the footer stores `current_size` = the virtual size rounded up to whole
 * sectors, and the CHS geometry computed from it by the specification's algorithm. The creator
 * application is 'win ' (Hyper-V semantics: `current_size` is the disk size, the geometry is only
 * informational), which qemu, Hyper-V, VirtualBox and libvhdi all read as `current_size`. Writing
 * our own creator tag would make qemu 7.2 size the disk by its (rounded down) geometry.
 */
import { randomBytes } from 'node:crypto'
import type { ImageWriter, WriterOptions } from '../types.js'
import { isAllZero } from '../io.js'
import {
  BAT_UNUSED,
  bitmapBytes,
  buildDynamicHeader,
  buildFooter,
  chsGeometry,
  DISK_TYPE,
  DYNAMIC_HEADER_SIZE,
  FOOTER_SIZE,
  MAX_VHD_SECTORS,
  SECTOR,
  VHD_EPOCH_SECONDS,
  type FooterFields,
} from './structures.js'
import { checkBlockSize, checkVirtualSize, nonZeroBlockPieces, OutputFile, WriteOrder } from './writerBase.js'

export const DEFAULT_VHD_BLOCK_SIZE = 2 * 1024 * 1024
const CREATOR_APP = 'win '
const CREATOR_VERSION = 0x000a0000
const CREATOR_HOST_OS = 'Wi2k'

function footerFields(diskType: number, size: number, dataOffset: number | undefined): FooterFields {
  return {
    diskType,
    dataOffset,
    currentSize: size,
    geometry: chsGeometry(size / SECTOR),
    uniqueId: randomBytes(16),
    timestamp: Math.max(0, Math.floor(Date.now() / 1000) - VHD_EPOCH_SECONDS),
    creatorApp: CREATOR_APP,
    creatorVersion: CREATOR_VERSION,
    creatorHostOs: CREATOR_HOST_OS,
  }
}

class FixedVhdWriter implements ImageWriter {
  readonly format = 'vhd-fixed' as const
  private bytesWritten = 0
  private readonly order: WriteOrder

  constructor(
    readonly path: string,
    private readonly out: OutputFile,
    private readonly size: number,
    virtualSize: number,
  ) {
    this.order = new WriteOrder(path, virtualSize)
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    this.order.check(offset, data.length)
    if (isAllZero(data)) return // the file is pre-sized: holes read as zeros
    await this.out.writeAt(data, offset)
    this.bytesWritten += data.length
  }

  async finish(): Promise<{ bytesWritten: number }> {
    await this.out.writeAt(buildFooter(footerFields(DISK_TYPE.fixed, this.size, undefined)), this.size)
    await this.out.syncAndClose()
    return { bytesWritten: this.bytesWritten }
  }

  async abort(): Promise<void> {
    await this.out.closeAndDelete()
  }
}

class DynamicVhdWriter implements ImageWriter {
  readonly format = 'vhd' as const
  private bytesWritten = 0
  private readonly order: WriteOrder
  private readonly bat: Uint32Array
  private readonly bitmapSize: number
  private readonly batOffset = FOOTER_SIZE + DYNAMIC_HEADER_SIZE
  private readonly batBytes: number
  private nextBlockOffset: number
  private readonly fullBitmap: Buffer

  constructor(
    readonly path: string,
    private readonly out: OutputFile,
    private readonly size: number,
    virtualSize: number,
    private readonly blockSize: number,
  ) {
    this.order = new WriteOrder(path, virtualSize)
    this.bat = new Uint32Array(Math.ceil(size / blockSize)).fill(BAT_UNUSED)
    this.bitmapSize = bitmapBytes(blockSize)
    this.fullBitmap = Buffer.alloc(this.bitmapSize, 0xff)
    this.batBytes = Math.ceil((this.bat.length * 4) / SECTOR) * SECTOR
    this.nextBlockOffset = this.batOffset + this.batBytes
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    this.order.check(offset, data.length)
    const bs = this.blockSize
    // Zeros are never written: a new block's data area is a hole of the file until written.
    for (const { block, inBlock, piece } of nonZeroBlockPieces(offset, data, bs)) {
      if (this.bat[block] === BAT_UNUSED) {
        // Sectors never written inside an allocated block are file holes: they read as zeros.
        this.bat[block] = this.nextBlockOffset / SECTOR
        await this.out.writeAt(this.fullBitmap, this.nextBlockOffset)
        this.nextBlockOffset += this.bitmapSize + bs
      }
      await this.out.writeAt(piece, this.bat[block]! * SECTOR + this.bitmapSize + inBlock)
      this.bytesWritten += piece.length
    }
  }

  async finish(): Promise<{ bytesWritten: number }> {
    const footer = buildFooter(footerFields(DISK_TYPE.dynamic, this.size, FOOTER_SIZE))
    const header = buildDynamicHeader({ tableOffset: this.batOffset, maxTableEntries: this.bat.length, blockSize: this.blockSize })
    const bat = Buffer.alloc(this.batBytes, 0xff)
    for (let i = 0; i < this.bat.length; i++) bat.writeUInt32BE(this.bat[i]!, i * 4)
    await this.out.writeAt(footer, 0)
    await this.out.writeAt(header, FOOTER_SIZE)
    await this.out.writeAt(bat, this.batOffset)
    await this.out.writeAt(footer, this.nextBlockOffset)
    await this.out.syncAndClose()
    return { bytesWritten: this.bytesWritten }
  }

  async abort(): Promise<void> {
    await this.out.closeAndDelete()
  }
}

/** See index.ts. */
export async function createVhdWriterImpl(path: string, options: WriterOptions, variant: { fixed: boolean }): Promise<ImageWriter> {
  checkVirtualSize(options.virtualSize, MAX_VHD_SECTORS * SECTOR, 'VHD')
  const size = Math.ceil(options.virtualSize / SECTOR) * SECTOR
  if (variant.fixed) {
    const out = await OutputFile.create(path, options.overwrite)
    try {
      await out.truncate(size)
    } catch (err) {
      await out.closeAndDelete()
      throw err
    }
    return new FixedVhdWriter(path, out, size, options.virtualSize)
  }
  const blockSize = options.clusterSize ?? DEFAULT_VHD_BLOCK_SIZE
  checkBlockSize(blockSize, SECTOR, 256 * 1024 * 1024, 'VHD')
  const out = await OutputFile.create(path, options.overwrite)
  return new DynamicVhdWriter(path, out, size, options.virtualSize, blockSize)
}
