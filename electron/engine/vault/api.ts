/**
 * The vault as the backup and restore pipelines see it. The vault implementation (packs, crypto,
 * locks, manifests) lives beside this file; the pipelines depend only on these types.
 *
 * Terms
 * - block: a fixed-size slice of a disk's guest view (`blockSize` bytes; a disk's last block may be
 *   shorter). Block i covers [i*blockSize, min((i+1)*blockSize, virtualSize)).
 * - chunk: the stored, deduplicated content of one data block, named by its keyed BLAKE3-256 id.
 * - block map: one entry per block of a disk, in block order: UNALLOCATED, ZERO, or DATA (chunk id +
 *   the block's XXH3-128 checksum used for change detection by the next backup).
 * - recovery point (point): an immutable manifest naming a machine, its disks and their block maps.
 */
import type { ImageFormat } from '../formats/types.js'

export type Consistency = 'application' | 'crash' | 'none'

export type BlockEntry =
  | { kind: 'unallocated' }
  | { kind: 'zero' }
  | {
      kind: 'data'
      /** 32-byte keyed BLAKE3 id of the plaintext block. */
      chunkId: Buffer
      /** 16-byte XXH3-128 of the plaintext block (change detection). */
      checksum: Buffer
    }

/**
 * One segment of a disk's block map, opened and checked, its entries decoded on demand: blocks
 * [first, first + count). A data entry's `chunkId` and `checksum` are views of the segment's
 * plaintext (valid for as long as they are held; nothing writes to it).
 */
export interface BlockMapSegment {
  readonly first: number
  readonly count: number
  /** The entry of block `first + k`, for 0 ≤ k < count. */
  entry(k: number): BlockEntry
}

/** Identity of the source file at backup time: an unchanged file (same values) need not be read. */
export interface FileIdentity {
  sizeBytes: number
  mtimeMs: number
  ctimeMs: number
  inode: number
}

export interface PointDisk {
  /** Position of the disk in the machine (0-based); block maps are addressed by it. */
  index: number
  name: string
  virtualSize: number
  /** Format of the source image (restore may write another). */
  sourceFormat: ImageFormat
  sourcePath: string
  /** Allocated guest bytes (data + zero extents) at backup time. */
  allocatedBytes: number
  blockCount: number
  fileIdentity?: FileIdentity
  isSystem?: boolean
}

export interface PointStats {
  bytesRead: number
  /** Bytes of blocks whose content was not in the vault before this backup (plaintext). */
  bytesNew: number
  /** Bytes added to the vault on disk (compressed + encrypted + pack overhead). */
  bytesStored: number
  seconds: number
}

export interface PointManifest {
  /** Assigned by the vault at commit. */
  id: string
  machineId: string
  machineName: string
  /** ISO 8601 UTC. */
  createdAt: string
  consistency: Consistency
  blockSize: number
  disks: PointDisk[]
  stats: PointStats
  /** Free-form labels (job id, policy, host). */
  labels: Record<string, string>
}

export type NewPoint = Omit<PointManifest, 'id' | 'blockSize'>

export interface PutResult {
  chunkId: Buffer
  /** False when the chunk was already in the vault (or already put in this session). */
  isNew: boolean
  /** Bytes this put adds to the vault (0 when deduplicated). */
  storedBytes: number
  /**
   * The block's XXH3-128 checksum (canonical, as backup/checksum.ts), from the bytes its id was
   * computed from: set by `putBlocks` for a block given without one.
   */
  checksum?: Buffer
}

/** Appends a disk's block map in block order; `finish` checks that `blockCount` entries came. */
export interface BlockMapWriter {
  append(entry: BlockEntry): void
  finish(): Promise<void>
}

/**
 * One backup's write access (holds a shared vault lock until commit/abort). Not reusable.
 * Memory is bounded: `putBlock` applies back-pressure (its promise resolves once the block is
 * accepted into a bounded in-flight set), so callers may await it in a loop with a small window.
 */
export interface BackupSession {
  readonly blockSize: number
  /** Computes the chunk id, deduplicates, compresses, encrypts and packs. `data` may be reused once resolved. */
  putBlock(data: Buffer, checksum: Buffer): Promise<PutResult>
  /**
   * Optional batch form of `putBlock`: one result per block, in order, as if put one after the other
   * (a block equal to an earlier one of the batch is deduplicated against it). Lets an implementation
   * amortise per-call costs (worker messages, writes) over the batch. A block given without a
   * checksum gets it in its result: the vault hashes every block anyway (I9), so a caller with no
   * earlier checksum to compare against need not hash it a second time. The `data` buffers may be
   * reused once it resolves, as with `putBlock`; blocks in one SharedArrayBuffer may be read there
   * by the workers until then (format 2 seals a large call's new blocks where they lie).
   */
  putBlocks?(blocks: ReadonlyArray<{ data: Buffer; checksum?: Buffer }>): Promise<PutResult[]>
  blockMapWriter(disk: Pick<PointDisk, 'index' | 'blockCount'>): BlockMapWriter
  /**
   * Optional: gives disk `disk` of the new point the block map of disk `from.diskIndex` of point
   * `from.pointId` (same block count), finished: what an unchanged disk records, without decoding
   * its entries. Instead of `blockMapWriter` for that disk.
   */
  copyBlockMap?(from: { pointId: string; diskIndex: number }, disk: Pick<PointDisk, 'index' | 'blockCount'>): Promise<void>
  /** Makes every chunk durable, then writes the manifest (I1). Returns the committed manifest. */
  commit(point: NewPoint): Promise<PointManifest>
  /** Drops what was written (packs not referenced by any manifest are reclaimed later). Idempotent. */
  abort(): Promise<void>
}

/** Fetches and verifies chunk plaintexts (decrypt, decompress, re-hash). Throws CHUNK_CORRUPT/CHUNK_MISSING. */
/** Per chunk of a `readChunksInto` call, in the order of its ids. */
export interface ChunksInPlace {
  lengths: number[]
  /** XXH3-128 of each plaintext (backup/checksum.ts), computed by the thread that decoded it. */
  checksums: Buffer[]
  /** Per chunk: bit g (LSB first) set when bytes [g·zeroGranule, (g+1)·zeroGranule) are all zeros or past its end. */
  zeroMaps: Uint8Array[]
}

export interface ChunkReader {
  /** Returns plaintexts in the order of `ids`; implementations read by pack ranges, many in flight. */
  readChunks(ids: Buffer[]): Promise<Buffer[]>
  /**
   * Zero-copy read (restore): decodes chunk i straight into `target` at `positions[i]` (each
   * position with room for a whole block) and reports, per chunk, what the decoding thread found
   * there (ChunksInPlace). `target` must be a view on a SharedArrayBuffer (the decoding threads
   * write into it); the same chunk id may appear more than once.
   */
  readChunksInto(ids: Buffer[], target: Buffer, positions: number[], options: { zeroGranule: number }): Promise<ChunksInPlace>
  close(): Promise<void>
}

/** How a caller waits for a conflicting vault lock (a prune's, for readers). */
export interface LockWait {
  /** Wait this long for a conflicting lock to go away before VAULT_LOCKED (default 0: fail at once). */
  waitMs?: number
  /** Called once when a conflicting lock makes the caller wait (with the VAULT_LOCKED message naming the holder). */
  onWait?: (message: string) => void
}

export interface BeginBackupOptions {
  signal?: AbortSignal
  incremental?: boolean
}

export interface Vault {
  readonly id: string
  readonly path: string
  readonly blockSize: number
  /** Vault generation (I11), increases with every commit/prune. */
  generation(): Promise<number>
  /**
   * `incremental`: the machine has an earlier point, so most blocks will match it and little is
   * sealed: the session seals on one chunk worker and adds the others once work keeps waiting
   * (context.ts GROW_AFTER_MS). A full backup leaves it unset and gets every worker from the start.
   */
  beginBackup(options?: BeginBackupOptions): Promise<BackupSession>
  listPoints(): Promise<PointManifest[]>
  getPoint(pointId: string): Promise<PointManifest>
  /** Streams a disk's block map in block order (bounded memory for any disk size). */
  readBlockMap(pointId: string, diskIndex: number): AsyncIterable<BlockEntry>
  /**
   * The same block map a segment at a time, in block order (one segment in memory at a time): an
   * incremental backup looks up each block's earlier entry without an await per block.
   */
  readBlockMapSegments(pointId: string, diskIndex: number): AsyncIterable<BlockMapSegment>
  chunkReader(): ChunkReader
  /**
   * Holds a shared lock while points are read (a restore): a prune, which may delete packs, cannot
   * run meanwhile, and a running prune makes this wait (`waitMs`) or fail with VAULT_LOCKED.
   * Optional: vaults without locks (tests' in-memory ones) read without.
   */
  readLock?(purpose: string, options?: LockWait): Promise<{ release(): Promise<void> }>
  close(): Promise<void>
}
