/**
 * Block map segments over an in-memory list, for the tests' vaults (Vault.readBlockMapSegments).
 * Small segments (`size`, 5 by default) so that the backup's lookups cross segment boundaries
 * often, as they do every 65,536 blocks in a real vault.
 */
import type { BlockEntry, BlockMapSegment } from '../../electron/engine/vault/api.js'

export async function* segmentsOf(entries: readonly BlockEntry[], size = 5): AsyncIterable<BlockMapSegment> {
  for (let first = 0; first < entries.length; first += size) {
    const count = Math.min(size, entries.length - first)
    yield {
      first,
      count,
      entry(k: number): BlockEntry {
        if (!(k >= 0 && k < count)) throw new Error(`segment of ${count} entries has no entry #${k}`)
        return entries[first + k]!
      },
    }
  }
}
