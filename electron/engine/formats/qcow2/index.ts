/**
 * qcow2 (QEMU copy-on-write v2/v3) as Tresor reads and writes it.
 *
 * Terms
 * - host cluster: a cluster-sized unit of the image file; guest cluster: of the guest view.
 * - L1/L2 tables: the two-level map from guest clusters to host clusters.
 * - subcluster: 1/32 of a cluster with its own allocation and zero bits (extended L2 images).
 * - refcount: how many references a host cluster has (only the writer needs them).
 */
import { isQcow2 } from '../detect.js'
import type { FormatModule, OpenContext } from '../open.js'
import { Qcow2Image } from './reader.js'

export { Qcow2Image } from './reader.js'
export { createQcow2Writer } from './writer.js'

export const qcow2Module: FormatModule = {
  format: 'qcow2',
  probe: (head: Buffer) => isQcow2(head),
  open: (path: string, ctx: OpenContext) => Qcow2Image.open(path, ctx),
}
