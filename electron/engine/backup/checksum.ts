/**
 * Block checksums for change detection: XXH3-128, 16 bytes, canonical (big-endian) byte order —
 * the same value as `xxh3.xxh128` of @node-rs/xxhash printed as 32 hex digits.
 *
 * Why xxhash-addon: it binds the reference xxHash C code (a prebuilt N-API module, built from
 * source where no prebuild fits) and hashes 128 KiB blocks at about 40 GB/s here, against about
 * 7 GB/s for hash-wasm's XXH3-128 (which first copies the block into wasm memory) and about 2 GB/s
 * for @node-rs/xxhash's one-shot `xxh128`; @node-rs/xxhash's fast streaming class digests only 64
 * bits. `node --import tsx test/bench/backupPipeline.ts` prints all of them. The digests are
 * identical (test/unit/backup/checksum.test.ts), so the block maps written before stay valid.
 */
import { createRequire } from 'node:module'

/** Length of a block checksum in bytes. */
export const CHECKSUM_BYTES = 16

/** Computes XXH3-128 checksums, one block at a time. */
export interface BlockHasher {
  /** Returns a new 16-byte Buffer (canonical big-endian digest) of `data`. Synchronous. */
  checksum(data: Uint8Array): Buffer
}

interface XXHash128Static {
  hash(data: Buffer): Buffer
}

let loaded: XXHash128Static | undefined

/** xxhash-addon's XXH3-128, loaded on the first call. */
function xxhash128(): XXHash128Static {
  loaded ??= (createRequire(import.meta.url)('xxhash-addon') as { XXHash128: XXHash128Static }).XXHash128
  return loaded
}

/** Loads xxhash-addon now (a chunk worker, before its first task: chunkHandler.ts `preloadChunkModules`). */
export function preloadBlockHasher(): void {
  xxhash128()
}

/**
 * Creates a hasher. The native module is loaded on first use, not with this module: an unchanged
 * disk never needs it.
 */
export function createBlockHasher(): BlockHasher {
  const XXHash128 = xxhash128()
  return {
    checksum(data) {
      const view = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength)
      return XXHash128.hash(view)
    },
  }
}
