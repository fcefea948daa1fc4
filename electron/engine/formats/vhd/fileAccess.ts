/**
 * Helpers the VHD and VHDX readers share beyond ../io.ts: the info() every layered image of these
 * formats returns, and scanning a fully stored (fixed) data area for all-zero holes.
 */
import { isAllZero, type ImageFile } from '../io.js'
import type { BackingInfo, DiskImage, Extent } from '../types.js'

/** Parents from the nearest to the base, as ImageInfo.backingChain wants them. */
export function backingChainOf(image: DiskImage): BackingInfo[] {
  const chain: BackingInfo[] = []
  for (let b = image.backing; b; b = b.backing) chain.push({ path: b.path, format: b.format, variant: b.variant, virtualSize: b.virtualSize })
  return chain
}

/** Bytes of non-zero extents in the whole chain (what a backup reads). */
export async function allocatedBytesOf(image: DiskImage): Promise<number> {
  let total = 0
  for await (const e of image.extents()) if (!e.zero) total += e.length
  return total
}

const GRANULE = 64 * 1024
const SCAN_CHUNK = 4 * 1024 * 1024

/**
 * Extents of `length` guest bytes stored contiguously at container offset `start`. When the file
 * has storage behind every byte, one extent; otherwise the area is scanned and all-zero 64 KiB
 * granules (file holes, mostly) are left out. Never omits a non-zero byte.
 */
export async function* scanStoredArea(file: ImageFile, start: number, length: number): AsyncGenerator<Extent> {
  if (length <= 0) return
  const st = await file.handle.stat()
  if (st.blocks * 512 >= st.size) {
    yield { offset: 0, length, zero: false }
    return
  }
  const buf = Buffer.allocUnsafe(SCAN_CHUNK)
  let runStart = -1
  for (let pos = 0; pos < length; pos += SCAN_CHUNK) {
    const n = Math.min(SCAN_CHUNK, length - pos)
    const chunk = buf.subarray(0, n)
    await file.readInto(chunk, start + pos, 'disk data')
    for (let g = 0; g < n; g += GRANULE) {
      const zero = isAllZero(chunk.subarray(g, Math.min(n, g + GRANULE)))
      if (!zero && runStart < 0) runStart = pos + g
      else if (zero && runStart >= 0) {
        yield { offset: runStart, length: pos + g - runStart, zero: false }
        runStart = -1
      }
    }
  }
  if (runStart >= 0) yield { offset: runStart, length: length - runStart, zero: false }
}
