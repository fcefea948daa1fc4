/**
 * VMDK reader (VMware virtual disks).
 *
 * Terms
 * - descriptor: the text that describes a VMDK disk (`createType`, `CID`, `parentCID`,
 *   `parentFileNameHint`, extent lines). Either a file of its own or embedded in a sparse extent.
 * - VMDK extent (called a span in code, to keep "extent" for the guest-view ranges of types.ts):
 *   one extent line of the descriptor: a FLAT file range, a SPARSE extent file, or ZERO. Spans are
 *   laid one after the other to form the guest view.
 * - sparse extent: a `KDMV` file (versions 1-3) with a grain directory (GD), grain tables (GT) and
 *   grains (the allocation unit, `clusterSize`). streamOptimized extents deflate every grain.
 * - delta: a disk whose descriptor names a parent (`parentFileNameHint`); unallocated grains read
 *   from the parent, which must still carry the content ID (`CID`) the delta recorded (`parentCID`).
 *
 * What is read: monolithicSparse, streamOptimized (including GD_AT_END footers), monolithicFlat,
 * twoGbMaxExtentSparse, twoGbMaxExtentFlat, vmfs flat, vmfsSparse (COWD extents of ESX deltas), and
 * descriptors mixing FLAT, SPARSE, VMFSSPARSE and ZERO extents. Refused with IMAGE_UNSUPPORTED naming
 * the file: raw device mappings, full/partitioned devices, seSparse, NOACCESS extents. Where the spec and qemu differ, qemu
 * wins (it is the oracle of the tests): a sparse extent's size comes from its own header, a GTE
 * of 1 reads as zeros only when the header's zeroed-grain flag is set, and a compressed grain may
 * take at most two grains of space. Unlike qemu, ZERO and RDONLY extents are honoured (qemu
 * drops them from the disk), and a parent whose CID differs from `parentCID` is refused at open
 * (IMAGE_BACKING_MISMATCH) rather than at the first read that reaches it.
 */
import type { FormatModule, OpenContext } from '../open.js'
import type { DiskImage } from '../types.js'
import { looksLikeDescriptor } from './descriptor.js'
import { VmdkImage } from './image.js'
import { isCowdMagic, isSparseMagic } from './sparse.js'

export { VmdkImage } from './image.js'
export { parseDescriptor, looksLikeDescriptor } from './descriptor.js'

/** The VMDK format module: probes `KDMV` and `COWD` sparse extents and text descriptors. */
export const vmdkModule: FormatModule = {
  format: 'vmdk',
  probe(head: Buffer): boolean {
    return isSparseMagic(head) || isCowdMagic(head) || looksLikeDescriptor(head)
  },
  open(path: string, ctx: OpenContext): Promise<DiskImage> {
    return VmdkImage.open(path, ctx)
  },
}
