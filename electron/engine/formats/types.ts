/**
 * Disk image formats: the contract every reader and writer implements.
 *
 * Terms
 * - guest view: the bytes the virtual machine sees, `virtualSize` long. Backing chains are resolved:
 *   a reader of the top image returns what the guest reads, never the raw container bytes.
 * - extent: a byte range of the guest view that is allocated somewhere in the chain. Ranges between
 *   extents are unallocated and read as zeros. `zero: true` means the format itself says the range
 *   reads as zeros (qcow2 zero cluster, VHDX PAYLOAD_BLOCK_ZERO...), so it need not be read.
 * All offsets and lengths are byte counts in the guest view (numbers: images up to 2^53 bytes).
 */

export type ImageFormat = 'raw' | 'qcow2' | 'vhd' | 'vhdx' | 'vmdk'
/** Formats an image can be written in (convert, restore): the one list the CLI, the job protocol and the writers use. */
export const WRITER_FORMATS = ['raw', 'qcow2', 'vhd', 'vhd-fixed', 'vhdx'] as const
export type WriterFormat = (typeof WRITER_FORMATS)[number]

export interface Extent {
  offset: number
  length: number
  /** The format says this range reads as zeros: no need to read it. */
  zero: boolean
}

export interface BackingInfo {
  path: string
  format: ImageFormat
  variant: string
  virtualSize: number
}

export interface DirtyBitmapInfo {
  name: string
  granularityBytes: number
  enabled: boolean
}

export interface SnapshotInfo {
  id: string
  name: string
  vmStateBytes: number
  dateSeconds: number
}

/** What `tresor image info --json` prints (plus extra, optional fields per format). */
export interface ImageInfo {
  format: ImageFormat
  /** e.g. raw 'sparse', vhd 'fixed'|'dynamic'|'differencing', qcow2 'v2'|'v3', vmdk 'monolithicSparse'... */
  variant: string
  virtualSize: number
  /** Bytes of guest data allocated in the whole chain (what a backup reads). */
  allocatedBytes: number
  /** Allocation granularity of the top image (cluster/block/grain size; 512 or fs block for raw). */
  clusterSize: number
  /** Parents from the nearest to the base; empty when the image stands alone. */
  backingChain: BackingInfo[]
  dirtyBitmaps?: DirtyBitmapInfo[]
  snapshots?: SnapshotInfo[]
  logicalSectorSize?: number
}

/**
 * An open disk image in the guest view. Not safe for concurrent `close` with reads in flight;
 * concurrent `read` calls are allowed. The opener owns it and must `close()` it (closes the chain).
 */
export interface DiskImage {
  readonly path: string
  readonly format: ImageFormat
  readonly variant: string
  readonly virtualSize: number
  readonly clusterSize: number
  /** The parent image (already opened), when the format has a backing file. */
  readonly backing: DiskImage | undefined
  /**
   * Allocated extents of the guest view in increasing offset order, non-overlapping, merged where
   * adjacent and of the same `zero` kind, clipped to `virtualSize`. Never omits data: any byte that
   * reads non-zero lies inside an extent. Memory use is bounded (tables are walked, not collected).
   */
  extents(): AsyncIterable<Extent>
  /**
   * Fills `buffer` with the guest bytes at `offset`; bytes past `virtualSize` are an error.
   * Unallocated ranges read as zeros. Returns `buffer` for convenience.
   */
  read(buffer: Uint8Array, offset: number): Promise<Uint8Array>
  info(): Promise<ImageInfo>
  close(): Promise<void>
}

export interface OpenOptions {
  /** Do not follow backing files (describe the top file only). Default false. */
  noBacking?: boolean
  /** Maximum backing chain depth before IMAGE_BACKING_LOOP. Default 64. */
  maxChainDepth?: number
  /**
   * Read the files with blocking system calls on the calling thread instead of Node's thread pool,
   * for a caller whose event loop has nothing else to wait for meanwhile (a backup job reading one
   * disk): a page-cache read then costs its copy and no hand-off between threads, and a device read
   * still gets the kernel's read-ahead. Each read holds the loop for its own duration. Default false.
   */
  blockingReads?: boolean
}

export interface WriterOptions {
  virtualSize: number
  /** Block / cluster size of the new image; each writer has its own default. */
  clusterSize?: number
  /** qcow2 only: compress clusters with zstd. */
  compress?: boolean
  /** Overwrite an existing file. Default false: ALREADY_EXISTS. */
  overwrite?: boolean
}

/**
 * Writes a new image from guest data. `write` calls must come in strictly increasing, non-overlapping
 * offset order (any length, any alignment); ranges never written are holes (read as zeros, stay
 * unallocated where the format allows). `finish()` writes metadata, fsyncs and closes; `abort()`
 * closes and deletes the file. The caller picks the path (restore writes to `*.partial` and renames).
 */
export interface ImageWriter {
  readonly path: string
  readonly format: WriterFormat
  write(offset: number, data: Uint8Array): Promise<void>
  /**
   * When set, `write` may be called again before earlier calls have settled, with up to this many
   * calls outstanding (still in increasing offset order). The caller must leave each call's `data`
   * untouched until that call settles, and must let every call settle before `finish()`/`abort()`.
   * Unset: one call at a time.
   */
  readonly maxConcurrentWrites?: number
  /**
   * Memory the writer writes fastest from (the raw writer's direct I/O needs page-aligned memory);
   * callers that fill big buffers for `write` should take them from here when it is offered.
   */
  allocBuffer?(bytes: number): Buffer
  finish(): Promise<{ bytesWritten: number }>
  abort(): Promise<void>
}
