/** Messages between the vault and its chunk workers (chunkWorker.ts). */

/** Words per item in `SealItems.fields`. */
export const SEAL_ITEM_WORDS = 4

/**
 * Bits beside the record kind in a new item's fourth word (SealItems.fields): the cut task sampled
 * the item's bytes (SEAL_SAMPLED), and they sampled as random data (SEAL_INCOMPRESSIBLE, zstd is not
 * tried). The seal then does not sample them again. Never stored: the record's flags come from the seal.
 */
export const SEAL_SAMPLED = 1 << 8
export const SEAL_INCOMPRESSIBLE = 1 << 9

/**
 * The chunks of a seal batch as two typed arrays: one object per item cost a structured-clone walk
 * per chunk and a 32-byte ArrayBuffer per id, and format 2 seals ~8 KiB parts, up to ~500 of them
 * per message.
 */
export interface SealItems {
  /**
   * Per item, SEAL_ITEM_WORDS words: plaintext length (a record's length when moved; they lie back
   * to back in the batch's `input`), ordinal in the pack, and for a moved record (SealTask.fromPackId)
   * its former ordinal and flags; for a new one 0 and the record kind (FLAG_CONTAINER for a block
   * whose parts are addressed inside it, format 3, else 0) with SEAL_SAMPLED and SEAL_INCOMPRESSIBLE.
   */
  fields: Uint32Array
  /** 32 bytes per item. */
  chunkIds: Uint8Array
  /**
   * 16 bytes per item: the XXH3-128 (checksum.ts) of the plaintext, taken from the very bytes its
   * chunk id was computed from. With it, the worker's I9 check is: the batch's copy has this
   * checksum (nothing changed since the id was made), and the record opens to exactly that copy
   * (byte comparison). Without it (moved records, recipes), the opened plaintext's keyed BLAKE3
   * must equal the chunk id. Both prove the record holds the content its id names; the first
   * costs a fast checksum and a memcmp instead of a second keyed BLAKE3 over every new byte.
   */
  sums?: Uint8Array
}

/**
 * Seals a batch of chunks bound for one pack: one message for several blocks (a worker message and
 * a pack write cost about as much as sealing a small block, so they are amortised over the batch).
 */
export interface SealTask {
  kind: 'seal'
  /** Plaintexts back to back; returned for reuse. Absent when `shared` says where they lie. */
  input?: ArrayBuffer
  /**
   * The plaintexts where they lie in shared memory (a backup's read buffer, session.ts `putBlocks`):
   * item k's at `positions[k]`. Nothing is copied into a batch, and nothing travels back.
   */
  shared?: { sab: SharedArrayBuffer; positions: Uint32Array }
  items: SealItems
  /** Every item is a block's recipe (parts.ts): stored uncompressed with the recipe flag. */
  recipes?: boolean
  /** Receives the records `nonce | ciphertext | tag` back to back, in item order; capacity ≥ Σ(length + 28); returned. */
  output: ArrayBuffer
  packId: Uint8Array
  /**
   * Repack: `input` holds sealed records of the pack `fromPackId` (each item's former place), which
   * are opened and encrypted again for their new place without recompression (ChunkCodec.reseal).
   */
  fromPackId?: Uint8Array
}

export interface OpenEntry {
  /** Record position inside `buf`. */
  start: number
  length: number
  ordinal: number
  flags: number
  chunkId: Uint8Array
  /** A part inside a container record (format 3): its place in the record's plaintext; length 0 for a record of its own. */
  partOffset: number
  partLength: number
}

/** Words per entry in `PackedOpenEntries.fields`. */
const OPEN_ENTRY_WORDS = 6

/**
 * Open entries as two typed arrays: a message's cost grew with its objects (structured clone walks
 * every property; a restore of blocks stored as parts sent ~130 K entries, 0.5 s of the reader's
 * thread), while typed arrays are copied whole.
 */
export interface PackedOpenEntries {
  /** (start, length, ordinal, flags, part offset, part length) per entry. */
  fields: Uint32Array
  /** 32 bytes per entry. */
  chunkIds: Uint8Array
}

/** Packs `count` entries, entry j given by `entryAt(j)` with its start `startAt(j)` (no object per entry). */
export function packOpenEntries(
  count: number,
  entryAt: (j: number) => Pick<OpenEntry, 'length' | 'ordinal' | 'flags' | 'chunkId'> & Partial<Pick<OpenEntry, 'partOffset' | 'partLength'>>,
  startAt: (j: number) => number,
): PackedOpenEntries {
  const fields = new Uint32Array(count * OPEN_ENTRY_WORDS)
  const chunkIds = new Uint8Array(count * 32)
  for (let j = 0; j < count; j++) {
    const e = entryAt(j)
    const f = OPEN_ENTRY_WORDS * j
    fields[f] = startAt(j)
    fields[f + 1] = e.length
    fields[f + 2] = e.ordinal
    fields[f + 3] = e.flags
    fields[f + 4] = e.partOffset ?? 0
    fields[f + 5] = e.partLength ?? 0
    chunkIds.set(e.chunkId, 32 * j)
  }
  return { fields, chunkIds }
}

export function unpackOpenEntries(packed: PackedOpenEntries): OpenEntry[] {
  const n = packed.fields.length / OPEN_ENTRY_WORDS
  const out: OpenEntry[] = new Array<OpenEntry>(n)
  for (let j = 0; j < n; j++) {
    const f = OPEN_ENTRY_WORDS * j
    out[j] = {
      start: packed.fields[f]!,
      length: packed.fields[f + 1]!,
      ordinal: packed.fields[f + 2]!,
      flags: packed.fields[f + 3]!,
      partOffset: packed.fields[f + 4]!,
      partLength: packed.fields[f + 5]!,
      chunkId: packed.chunkIds.subarray(32 * j, 32 * j + 32),
    }
  }
  return out
}

export interface OpenTask {
  kind: 'open'
  /**
   * The records, read by the caller: shared memory, so it is never transferred (a 4 MiB buffer
   * transferred back and forth counted as new external memory on every return and drove the main
   * thread's scavenges).
   */
  buf: SharedArrayBuffer
  /** The records to open (`packOpenEntries`). */
  entries: PackedOpenEntries
  packId: Uint8Array
  blockSize: number
  /** True: return plaintexts (reads); false: only check them (verify, verify-before-commit). */
  returnPlain: boolean
  /**
   * Decode in place (restore): entry i's plaintext goes to `sab` at byte `positions[i]` (room for
   * blockSize bytes), nothing is returned but lengths, errors and each plaintext's XXH3-128
   * checksum. The memory is shared with the caller, so no plaintext crosses threads.
   */
  into?: InPlace
}

/** Where an open task decodes its records (OpenTask.into). */
export interface InPlace {
  sab: SharedArrayBuffer
  positions: number[]
  zeroGranule: number
  /**
   * Per entry: 0 for a whole block (room for blockSize bytes; checksum and zero map reported), or
   * the exact length of a part of a block (room for that many bytes; only authenticated and
   * decoded, not hashed: the block is checked once assembled, CheckTask).
   */
  parts?: number[]
}

/**
 * Checks blocks assembled in shared memory from their parts (recipes): the keyed BLAKE3 of each
 * must equal its id (I3), and its XXH3-128 checksum and zero map are reported as for a decoded block.
 */
export interface CheckTask {
  kind: 'check'
  sab: SharedArrayBuffer
  blocks: CheckedBlock[]
  blockSize: number
  zeroGranule: number
  /** The reader's part cache (partCache.ts), when a block copies parts from it or into it. */
  cache?: SharedArrayBuffer
}

export interface CheckedBlock {
  position: number
  length: number
  chunkId: Uint8Array
  /** Parts found in the cache, copied into the block before it is hashed: (cache offset, `sab` offset, length) triples. */
  copyIn?: number[]
  /** Parts read for this block that the cache keeps, copied there once the block checked out: (`sab` offset, cache offset, length) triples. */
  fill?: number[]
}

/**
 * Format 2, the hashing half of a put, off the vault's thread: each block's chunk id, and for a full
 * block that looks compressible its content-defined parts (parts.ts) and their ids.
 */
export interface CutTask {
  kind: 'cut'
  /** Blocks back to back; returned for reuse. Absent when `shared` says where the blocks lie. */
  input?: ArrayBuffer
  /**
   * The blocks where the caller holds them (the backup's read buffers are shared memory): block i
   * at `positions[i]`, unchanged until the reply. Saves copying every block into a slot.
   */
  shared?: { sab: SharedArrayBuffer; positions: number[] }
  lengths: number[]
  blockSize: number
}

export type ChunkTask = SealTask | OpenTask | CheckTask | CutTask

export type ChunkTaskResult =
  | {
      kind: 'seal'
      /** The task's `input`, returned (absent for a task over shared memory). */
      input?: ArrayBuffer
      output: ArrayBuffer
      /** Per item: stored length and record flags (two words). */
      stored: Uint32Array
      /**
       * Per check span of the verified records (recordCheck.ts `CheckSpans` over the stored
       * lengths): their XXH3-64, re-checked by the caller right before writing.
       */
      checks: BigUint64Array
      /**
       * I9, checked in the worker on the exact sealed bytes: the items whose record did not open
       * again (decrypt, decompress, keyed BLAKE3 equal to the chunk id), with what failed. Usually empty.
       */
      failures: Array<{ item: number; error: string }>
    }
  | {
      kind: 'open'
      /** Per entry: null when it verified, else what failed. */
      errors: Array<string | null>
      /** Per entry: plaintext length (0 on error). */
      lengths: number[]
      /** Plaintexts back to back (entry i at the sum of earlier lengths), when asked for. */
      plain: ArrayBuffer | undefined
      /** With `into`: entry i's XXH3-128 checksum (canonical) at bytes 16i..16i+16 (zeros on error). */
      checksums?: Uint8Array
      /**
       * With `into`: per entry, ceil(blockSize / zeroGranule / 8) bytes, bit g (LSB first) set when
       * the plaintext's granule g is all zeros (or lies past its end), so holes need no scan on the caller's thread.
       */
      zeroMaps?: Uint8Array
    }
  | {
      kind: 'cut'
      /** The task's `input`, moved back (absent for a `shared` task). */
      input: ArrayBuffer | undefined
      /** Chunk id of block i at bytes 32i..32i+32. */
      ids: Uint8Array
      /** Parts of block i: 0 when it is stored whole (else ≥ 2). */
      partCounts: Uint32Array
      /** End offsets of every part (within its block), block after block. */
      ends: Uint32Array
      /** Part ids, 32 bytes each, in the order of `ends`. */
      partIds: Uint8Array
      /** XXH3-128 of block i at bytes 16i..16i+16 (every block's, cut or not). */
      sums: Uint8Array
      /** XXH3-128 of every part, 16 bytes each, in the order of `ends`. */
      partSums: Uint8Array
      /**
       * Per block, the bits its seal item carries: SEAL_SAMPLED for a full block (sampled here),
       * with SEAL_INCOMPRESSIBLE when it samples as random data (chunkCodec.ts looksIncompressible);
       * 0 for a shorter block.
       */
      sampled: Uint16Array
    }
  | {
      kind: 'check'
      /** Per block: null when it checked out, else what failed. */
      errors: Array<string | null>
      /** XXH3-128 of block i at bytes 16i..16i+16. */
      checksums: Uint8Array
      /** Zero maps as in the open result, one per block. */
      zeroMaps: Uint8Array
    }

/** Bytes of one entry's zero map (see the open result's `zeroMaps`). */
export function zeroMapBytes(blockSize: number, zeroGranule: number): number {
  return Math.ceil(Math.ceil(blockSize / zeroGranule) / 8)
}
