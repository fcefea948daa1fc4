/**
 * Format detection by content, never by file name. Pure functions over the first bytes (`head`,
 * up to 64 KiB), the file size and the last bytes (`tail`, up to 512) of a file.
 *
 * Rules, most specific first:
 * - qcow2: magic `QFI\xfb` at 0;
 * - VHDX: `vhdxfile` at 0;
 * - VMDK: `KDMV` at 0 (hosted sparse extent), or a text descriptor starting with `# Disk DescriptorFile`;
 * - VHD: `conectix` footer in the last 512 bytes (fixed and dynamic) or its copy at 0 (dynamic);
 * - anything else is raw.
 */
import type { ImageFormat } from './types.js'

const QCOW2_MAGIC = Buffer.from([0x51, 0x46, 0x49, 0xfb])
const VHDX_MAGIC = Buffer.from('vhdxfile', 'latin1')
const VMDK_SPARSE_MAGIC = Buffer.from('KDMV', 'latin1')
const VMDK_DESCRIPTOR = Buffer.from('# Disk DescriptorFile', 'latin1')
const VHD_COOKIE = Buffer.from('conectix', 'latin1')

function startsWith(buf: Buffer, magic: Buffer, at = 0): boolean {
  return buf.length >= at + magic.length && buf.subarray(at, at + magic.length).equals(magic)
}

export function isQcow2(head: Buffer): boolean {
  return startsWith(head, QCOW2_MAGIC)
}
export function isVhdx(head: Buffer): boolean {
  return startsWith(head, VHDX_MAGIC)
}
export function isVmdk(head: Buffer): boolean {
  if (startsWith(head, VMDK_SPARSE_MAGIC)) return true
  // A descriptor may start with a UTF-8 BOM or blank lines before its first comment.
  const text = head.subarray(0, Math.min(head.length, 1024)).toString('latin1').replace(/^\ufeff|^\xef\xbb\xbf/, '').trimStart()
  return text.startsWith(VMDK_DESCRIPTOR.toString('latin1'))
}
export function isVhd(head: Buffer, fileSize: number, tail: Buffer): boolean {
  // The footer is the last 512 bytes; old Virtual PC images have a 511-byte footer.
  if (fileSize >= 512 && tail.length >= 512 && startsWith(tail, VHD_COOKIE, tail.length - 512)) return true
  if (fileSize >= 511 && tail.length >= 511 && startsWith(tail, VHD_COOKIE, tail.length - 511)) return true
  return startsWith(head, VHD_COOKIE)
}

/** The format of a file from its first and last bytes (see the module comment for the rules). */
export function detectFormat(head: Buffer, fileSize: number, tail: Buffer): ImageFormat {
  if (isQcow2(head)) return 'qcow2'
  if (isVhdx(head)) return 'vhdx'
  if (isVmdk(head)) return 'vmdk'
  if (isVhd(head, fileSize, tail)) return 'vhd'
  return 'raw'
}
