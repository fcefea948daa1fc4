/**
 * VHDX (Hyper-V, [MS-VHDX]): reader and writer.
 *
 * Terms
 * - file identifier: "vhdxfile" at offset 0. headers: two 4 KiB copies at 64 and 128 KiB, each
 *   with a CRC-32C; the valid one with the higher sequence number is current.
 * - region table (two copies at 192 and 256 KiB): where the BAT and metadata regions are.
 * - metadata: file parameters (block size, LeaveBlockAllocated = fixed, HasParent =
 *   differencing), virtual disk size, logical sector size (512 or 4096), physical sector size,
 *   page 83 data (the disk id), parent locator (differencing disks).
 * - BAT: one 64-bit entry per payload block (state in bits 0-2, file offset in MiB in bits
 *   20-63), with one sector bitmap entry after every `chunk ratio` payload entries
 *   (chunk ratio = 2^23 * logical sector size / block size).
 * - payload block states, in the guest view: FULLY_PRESENT = data in this file; ZERO and UNMAPPED
 *   (3, and 5 from the 0.95 draft) = zeros, reported as `zero` extents; NOT_PRESENT and UNDEFINED
 *   = nothing in this file (the parent's data in a differencing disk, zeros otherwise, no extent);
 *   PARTIALLY_PRESENT (differencing only) = per logical sector, bit set in the sector bitmap block
 *   (least significant bit first) = this file, clear = the parent.
 * - parent locator: key/value pairs; parent_linkage (and parent_linkage2) name the parent's
 *   DataWriteGuid, which must match (else IMAGE_BACKING_MISMATCH); the parent is looked for at
 *   relative_path, then volume_path, then absolute_win32_path (Windows absolute paths are tried
 *   by file name next to the child on other systems).
 * - log: a VHDX not closed cleanly has a non-zero LogGuid. Its log is replayed IN MEMORY (log.ts):
 *   entries are validated (CRC-32C, sequence numbers, descriptor and data sector signatures), the
 *   active sequence is laid over the file as an overlay, and the user's file is never written.
 *
 * Writer: writer.ts (dynamic, default 32 MiB blocks like qemu, 512-byte logical sectors).
 */
import type { FormatModule, OpenContext } from '../open.js'
import type { DiskImage, ImageWriter, WriterOptions } from '../types.js'
import { openVhdx } from './reader.js'
import { FILE_ID_SIGNATURE } from './structures.js'
import { createVhdxWriterImpl } from './writer.js'

/** The VHDX format module: content probe ("vhdxfile" at offset 0) and opener. */
export const vhdxModule: FormatModule = {
  format: 'vhdx',
  probe(head: Buffer): boolean {
    return head.length >= 8 && head.toString('latin1', 0, 8) === FILE_ID_SIGNATURE
  },
  open(path: string, ctx: OpenContext): Promise<DiskImage> {
    return openVhdx(path, ctx)
  },
}

/**
 * Creates a dynamic VHDX at `path` (block size `options.clusterSize`, default 32 MiB; 1 to 256 MiB,
 * a power of two). Writes must come in increasing order; unwritten ranges read as zeros. `finish()`
 * writes headers, region tables, metadata and BAT, fsyncs and closes; `abort()` deletes the file.
 */
export function createVhdxWriter(path: string, options: WriterOptions): Promise<ImageWriter> {
  return createVhdxWriterImpl(path, options)
}
