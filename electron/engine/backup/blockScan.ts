/**
 * One pass over a run of read blocks for the backup's block loop (pipeline.ts `processRun`): which
 * blocks are all zeros, and the XXH3-128 checksum of those compared with an earlier point's.
 *
 * Per block, the loop used to take a view of the block, test it for zeros (a compare against a
 * zero page per 4 KiB) and hash it (a call and a new 16-byte Buffer): ~52,000 blocks in an
 * incremental of the bench's 4 GiB disk, on the job's thread, which is that backup's critical path.
 * The `tresor-digest` addon's `scanBlocks` does the whole run in one call, writing the checksums
 * into one array the caller reuses. Without the addon the same results come from `isAllZero` and the
 * block hasher one block at a time (test/unit/backup/blockScan.test.ts compares both).
 */
import { isAllZero } from '../formats/io.js'
import { StoredDataEntry } from '../vault/manifest.js'
import { digestAddon } from '../vault/pieceDigests.js'
import { CHECKSUM_BYTES, type BlockHasher } from './checksum.js'

/** A block's mode, in: not looked at. */
export const SCAN_SKIP = 0
/** A block's mode, in and out: tested for zeros, and it is not all zeros. */
export const SCAN_TEST = 1
/** A block's mode, in and out: tested for zeros, and not all zeros: its checksum is in `sums`. */
export const SCAN_SUM = 2
/** A block's mode, out: all zeros. */
export const SCAN_ZERO = 3

/**
 * Block j of `data` is `[j·blockSize, + blockSize)`, the last one possibly shorter. `modes[j]` in:
 * SCAN_SKIP, SCAN_TEST or SCAN_SUM; out: SCAN_ZERO for a block of zeros, else as it was, and for
 * SCAN_SUM the block's checksum at `sums[16j, + 16)`. Returns `count`.
 */
export type BlockScanner = (data: Uint8Array, blockSize: number, modes: Uint8Array, count: number, sums: Uint8Array) => number

/** The addon's scanner when it is here (and not turned off: `TRESOR_NO_NATIVE_DIGEST=1`), else one built on `hasher`. */
export function createBlockScanner(hasher: BlockHasher): BlockScanner {
  return digestAddon()?.scanBlocks ?? scanner(hasher)
}

/**
 * The scanner without the addon: the same results one block at a time, and the addon's checks of
 * its arguments (index.d.ts `scanBlocks`) before anything is written.
 */
export function scanner(hasher: BlockHasher): BlockScanner {
  return (data, blockSize, modes, count, sums) => {
    if (!(Number.isInteger(blockSize) && blockSize >= 1)) throw new RangeError('scanBlocks: blockSize must be at least 1')
    if (!(Number.isInteger(count) && count >= 0)) throw new RangeError('scanBlocks: count is not a whole non-negative number')
    if (count > modes.length || count * CHECKSUM_BYTES > sums.length || (count > 0 && (count - 1) * blockSize >= data.length)) {
      throw new RangeError('scanBlocks: the blocks do not fit the data, modes or sums given')
    }
    for (let j = 0; j < count; j++) if (modes[j]! > SCAN_SUM) throw new RangeError('scanBlocks: a mode is not 0, 1 or 2')
    for (let j = 0; j < count; j++) {
      const mode = modes[j]
      if (mode === SCAN_SKIP) continue
      const block = data.subarray(j * blockSize, Math.min(data.length, (j + 1) * blockSize))
      if (isAllZero(block)) modes[j] = SCAN_ZERO
      else if (mode === SCAN_SUM) sums.set(hasher.checksum(block), j * CHECKSUM_BYTES)
    }
    return count
  }
}

/** Whether `sums[at, + 16)` holds `entry`'s checksum; an entry read from the vault is compared where it is stored. */
export function sumMatches(sums: Buffer, at: number, entry: { checksum: Uint8Array }): boolean {
  if (entry instanceof StoredDataEntry) return entry.checksumIs(sums, at)
  return sums.compare(entry.checksum, 0, CHECKSUM_BYTES, at, at + CHECKSUM_BYTES) === 0
}
