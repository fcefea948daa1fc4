/**
 * VHD (Microsoft Virtual PC / Hyper-V, "conectix" images): reader and writers.
 *
 * Terms
 * - footer: the 512-byte record at the end of every VHD ("conectix", big-endian, byte-sum
 *   checksum). Dynamic and differencing disks keep a copy at offset 0; the reader uses that copy
 *   when the footer at the end is damaged.
 * - fixed disk: the guest bytes followed by the footer. dynamic disk: a dynamic disk header
 *   ("cxsparse") pointing to the BAT (block allocation table: one big-endian sector number per
 *   block, 0xFFFFFFFF = not allocated). Each allocated block is a sector bitmap (one bit per
 *   512-byte sector, most significant bit first, padded to a sector) followed by the block data.
 * - differencing disk: a dynamic disk whose unset bitmap bits (and unallocated blocks) read from
 *   the parent. In a plain dynamic disk they read as zeros.
 * - parent locators: where the child says its parent is: 'W2ru' (relative Windows path,
 *   UTF-16LE), 'W2ku' (absolute Windows path, UTF-16LE), 'MacX' (UTF-8 file URL), plus the
 *   parent's file name in the header (UTF-16BE). 'Mac ' alias records cannot be resolved and are
 *   skipped. Candidates are tried in that order; the parent's footer unique id must equal the
 *   child's "parent unique id", else IMAGE_BACKING_MISMATCH (IMAGE_BACKING_MISSING when no
 *   candidate exists, IMAGE_BACKING_LOOP when a parent is already in the chain).
 *
 * Virtual size (qemu 7.2 block/vpc.c behaviour, also what the creating tools intend): images whose
 * creator application is 'win ' (Hyper-V), 'qem2' (qemu force_size), 'd2v ' (Disk2vhd), 'tap\0'
 * (XenServer) or 'CTXS' (XenConverter) use the footer's current_size; all others ('vpc ' Virtual
 * PC, 'qemu', unknown) use cylinders * heads * sectors-per-track * 512, unless the geometry is the
 * maximum 65535/16/255, in which case current_size is used. See structures.ts `virtualSizeOf`.
 *
 * Writers: see writer.ts (creator 'win ', current_size authoritative, so every reader agrees on
 * the size). Virtual sizes are rounded up to whole 512-byte sectors. `bytesWritten` counts the
 * guest bytes stored; all-zero data is never stored (it stays a hole, or an unallocated block).
 */
import type { DiskImage, ImageWriter, WriterOptions } from '../types.js'
import type { FormatModule, OpenContext } from '../open.js'
import { openVhd } from './reader.js'
import { FOOTER_COOKIE } from './structures.js'
import { createVhdWriterImpl } from './writer.js'

/** The VHD format module: content probe and opener (follows differencing parents). */
export const vhdModule: FormatModule = {
  format: 'vhd',
  /** A VHD has "conectix" at offset 0 (dynamic/differencing) or 512 bytes before the end (all). */
  probe(head: Buffer, _fileSize: number, tail: Buffer): boolean {
    if (head.length >= 8 && head.toString('latin1', 0, 8) === FOOTER_COOKIE) return true
    return tail.length >= 512 && tail.toString('latin1', tail.length - 512, tail.length - 504) === FOOTER_COOKIE
  },
  open(path: string, ctx: OpenContext): Promise<DiskImage> {
    return openVhd(path, ctx)
  },
}

/**
 * Creates a VHD at `path`: dynamic (default; block size `options.clusterSize`, default 2 MiB) or
 * fixed. Writes must come in increasing order; unwritten ranges read as zeros. `finish()` writes the
 * footer(s), header and BAT, fsyncs and closes; `abort()` deletes the file.
 */
export function createVhdWriter(path: string, options: WriterOptions, variant: { fixed: boolean }): Promise<ImageWriter> {
  return createVhdWriterImpl(path, options, variant)
}
