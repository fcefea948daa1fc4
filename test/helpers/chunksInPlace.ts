/**
 * `ChunkReader.readChunksInto` for test vaults, over their `readChunks`: what the real reader's
 * workers do, on the calling thread (plaintext at each position, its XXH3-128, its map of all-zero
 * granules).
 */
import { createBlockHasher } from '../../electron/engine/backup/checksum.js'
import { isAllZero } from '../../electron/engine/formats/io.js'
import type { ChunksInPlace } from '../../electron/engine/vault/api.js'

export function readChunksIntoVia(
  readChunks: (ids: Buffer[]) => Promise<Buffer[]>,
  blockSize: number,
): (ids: Buffer[], target: Buffer, positions: number[], options: { zeroGranule: number }) => Promise<ChunksInPlace> {
  return async (ids, target, positions, { zeroGranule }) => {
    if (!(target.buffer instanceof SharedArrayBuffer)) throw new Error('readChunksInto needs shared memory')
    const plains = await readChunks(ids)
    const hasher = createBlockHasher()
    const mapBytes = Math.ceil(Math.ceil(blockSize / zeroGranule) / 8)
    const zeroMaps = plains.map((plain) => {
      const map = new Uint8Array(mapBytes).fill(0xff)
      for (let g = 0; g * zeroGranule < plain.length; g++) {
        if (!isAllZero(plain.subarray(g * zeroGranule, (g + 1) * zeroGranule))) map[g >> 3]! &= ~(1 << (g & 7))
      }
      return map
    })
    plains.forEach((plain, i) => plain.copy(target, positions[i]!))
    return { lengths: plains.map((p) => p.length), checksums: plains.map((p) => hasher.checksum(p)), zeroMaps }
  }
}
