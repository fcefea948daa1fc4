/**
 * The restore pipeline: a recovery point's block maps → verified chunk plaintexts → new image files.
 *
 * For each selected disk the block map is streamed in block order; DATA blocks are grouped into
 * batches (`batchBytes`) decoded with `ChunkReader.readChunksInto` several at a time (bounded by
 * `maxBytesInFlight`) straight into shared memory, and written from there in increasing offset
 * order (see `writeDisk`). ZERO and UNALLOCATED blocks (and all-zero 4 KiB granules inside DATA
 * blocks) are never written: they stay holes. The chunk reader re-hashes every plaintext (I3); the
 * pipeline also checks each block's length and XXH3-128 checksum against the block map, so a block that is not exactly what was backed up is an error,
 * never data. Every file is written as `<final>.partial`, finished (fsynced), and renamed to its
 * final name only after every disk of the restore has been written and verified (I12). On failure
 * or cancellation every `.partial` of this restore is removed and no final name appears.
 *
 * Snapshot tier ("instant restore"): when the world lists a kept reflink clone of exactly this point
 * and disk (`snapshotClones`), the disk is restored from that clone instead of the vault: a reflink
 * copy when the target format is the clone's own (seconds, whatever the size), else a conversion
 * through the formats layer (also when the target's file system cannot share the clone's extents).
 * The result is always read back and checked against the point's block map (every DATA block's
 * XXH3-128, zeros elsewhere) before it may get its final name; on any mismatch or failure the
 * `.partial` is removed and the disk is restored from the vault, with the reason in the log and in
 * the result (`source`, `tierSkipped`).
 */
import { link, lstat, open, rename, unlink } from 'node:fs/promises'
import { basename, dirname, extname, resolve } from 'node:path'
import { EngineError, fromFsError } from '../errors.js'
import { createBlockHasher } from '../backup/checksum.js'
import { isAllZero } from '../formats/io.js'
import { fileState, reflinkClone, sameIdentity } from '../backup/snapshot.js'
import type { DiskImage, Extent, ImageFormat, ImageWriter, WriterFormat, WriterOptions } from '../formats/types.js'
import type { BlockEntry, ChunkReader, ChunksInPlace, FileIdentity, PointDisk, PointManifest, Vault } from '../vault/api.js'
import { allocAlignedShared } from '../io/directIo.js'
import { assertNotInUse, findFileUses } from './inUse.js'
import {
  assertNoNul,
  checkTargetFile,
  diskFileName,
  lstatOrUndefined,
  resolveTargetFolder,
  uniqueNames,
  type TargetFile,
} from './targets.js'

export type WriterFactory = (path: string, format: WriterFormat, options: WriterOptions) => Promise<ImageWriter>

/** What a restore works with; the caller opens and closes it. */
export interface RestoreWorld {
  vault: Vault
  createWriter: WriterFactory
  /** Opens a written image to read it back (default: formats' `openImage`). */
  openImage?: (path: string, options: { format: ImageFormat; noBacking: boolean }) => Promise<DiskImage>
  /** Checks that no other process uses `paths` (default: /proc scan, `assertNotInUse`). */
  assertNotInUse?: (paths: string[], options: { writersOnly?: boolean; what?: string }) => Promise<void>
  /**
   * The snapshot-tier clones the catalog lists for a point (`listSnapshotClones(db, { pointId })`).
   * Absent: every disk is restored from the vault.
   */
  snapshotClones?: (pointId: string) => SnapshotCloneRef[] | Promise<SnapshotCloneRef[]>
  /** Opens a snapshot-tier clone in its guest view, backing chain included (default: formats' `openImage`). */
  openClone?: (path: string, options: { format: ImageFormat }) => Promise<DiskImage>
}

/** A kept reflink clone as the catalog records it (the fields of `SnapshotCloneRow` a restore needs). */
export interface SnapshotCloneRef {
  pointId: string | null
  diskName: string
  sourcePath: string
  clonePath: string
}

/** Where a restored disk's data came from. */
export type RestoreSource = 'snapshot-tier' | 'vault'

export type RestoreMode = 'file' | 'folder' | 'replace'

export interface RestoreRequest {
  pointId: string
  /** `file`: one disk to `targetPath`; `folder`: selected disks into folder `targetPath`; `replace`: over their source files. */
  mode: RestoreMode
  targetPath?: string
  /** Disk names or indexes (numbers or digit strings); empty/absent = every disk of the point. */
  disks?: (string | number)[]
  /** Target format; default: from the target's extension (file mode), else the source's format, else raw. */
  format?: WriterFormat
  /** The user explicitly chose to overwrite existing target files. */
  overwrite?: boolean
  /**
   * Read every written image back through its format reader and check each block against the
   * block map before any final name appears. Default: true for `replace` (the original is deleted
   * afterwards), false otherwise (blocks are verified as they come from the vault either way).
   */
  verifyAfterWrite?: boolean
}

export interface RestoreProgress {
  phase: 'writing' | 'verifying' | 'done'
  /** Guest bytes processed (written or skipped as holes), over all selected disks. */
  bytesDone: number
  /** Sum of the selected disks' virtual sizes. */
  bytesTotal: number
  /** Guest bytes of data written so far. */
  bytesWritten: number
  currentDisk: string | null
}

export interface RestoreOptions {
  signal?: AbortSignal
  onProgress?: (progress: RestoreProgress) => void
  log?: (line: string) => void
  /** Upper bound of chunk plaintext bytes fetched but not yet written. Default 32 MiB (4 batches: enough to keep the workers busy). */
  maxBytesInFlight?: number
  /** Plaintext bytes per `readChunksInto` call. Default 8 MiB. */
  batchBytes?: number
}

export interface RestoredDisk {
  index: number
  name: string
  path: string
  format: WriterFormat
  bytesWritten: number
  /** `snapshot-tier`: from the kept reflink clone (verified against the point); `vault`: decrypted from the vault. */
  source: RestoreSource
  /** Why a snapshot-tier clone of this disk was not used (only when the catalog listed one). */
  tierSkipped?: string
}

export interface RestoreResult {
  pointId: string
  /** Final paths, in disk order. */
  files: string[]
  /** Guest data bytes written over all files (holes not counted). */
  bytesWritten: number
  disks: RestoredDisk[]
}

interface PlannedDisk {
  disk: PointDisk
  format: WriterFormat
  target: TargetFile
}

/**
 * Bytes of batches being fetched at once: six 4 MiB batches (eight slots with the two being
 * written). 24 against 32 MiB, alternating builds on the bench's disk (thirteenth round): the same
 * restore times, peak RSS 220 against 236 MiB (format 1) and 278–288 against 291–304 (format 2).
 * 4 MiB batches instead of 8 (twenty-ninth round): twice the pack reads waiting on the disk in the
 * same memory; restores of the bench disk 7 of 10 alternating pairs faster (median of the last six
 * 4.75 against 5.02 s), 3 of 3 from a cold cache, peak RSS a little lower (a 32 MiB arena, not 40).
 */
const DEFAULT_IN_FLIGHT = 24 * 1024 * 1024
const DEFAULT_BATCH = 4 * 1024 * 1024

const EXTENSION_FORMATS: Record<string, WriterFormat> = {
  '.img': 'raw',
  '.raw': 'raw',
  '.bin': 'raw',
  '.qcow2': 'qcow2',
  '.vhd': 'vhd',
  '.vhdx': 'vhdx',
}

function cancelled(): EngineError {
  return new EngineError('CANCELLED', 'The restore was cancelled. No file was changed.')
}

function damaged(point: PointManifest, disk: PointDisk, what: string): EngineError {
  return new EngineError(
    'VAULT_DAMAGED',
    `Recovery point ${point.id}, disk "${disk.name}": ${what}. Run "tresor verify" to see what is damaged.`,
  )
}

/** Picks the disks `selection` names (by index or name); all of them when the selection is empty. */
export function selectDisks(point: PointManifest, selection: (string | number)[] | undefined): PointDisk[] {
  const disks = [...point.disks].sort((a, b) => a.index - b.index)
  if (!selection || selection.length === 0) return disks
  const chosen: PointDisk[] = []
  for (const sel of selection) {
    const byName = typeof sel === 'string' ? disks.find((d) => d.name === sel) : undefined
    const asIndex = typeof sel === 'number' ? sel : /^[0-9]+$/.test(sel) ? Number(sel) : undefined
    const found = byName ?? (asIndex === undefined ? undefined : disks.find((d) => d.index === asIndex))
    if (!found) {
      throw new EngineError(
        'NOT_FOUND',
        `Recovery point ${point.id} has no disk "${sel}". Its disks are: ${disks.map((d) => `${d.index} "${d.name}"`).join(', ')}.`,
      )
    }
    if (!chosen.includes(found)) chosen.push(found)
  }
  return chosen
}

function sourceWriterFormat(disk: PointDisk): WriterFormat | undefined {
  return disk.sourceFormat === 'vmdk' ? undefined : disk.sourceFormat
}

/** Works out every target file and runs every safety check before anything is written. */
async function planTargets(world: RestoreWorld, point: PointManifest, request: RestoreRequest): Promise<PlannedDisk[]> {
  const disks = selectDisks(point, request.disks)
  const overwrite = request.overwrite === true
  const vaultPath = world.vault.path
  const inUse = world.assertNotInUse ?? assertNotInUse
  const planned: PlannedDisk[] = []

  if (request.mode === 'replace') {
    for (const disk of disks) {
      assertNoNul(disk.sourcePath, `The original path of disk "${disk.name}"`)
      const format = request.format ?? sourceWriterFormat(disk)
      if (!format) {
        throw new EngineError(
          'UNSUPPORTED',
          `Disk "${disk.name}" was a ${disk.sourceFormat} image, which Tresor cannot write. Restore it to a new file in another format instead.`,
        )
      }
      const folder = await resolveTargetFolder(dirname(disk.sourcePath), vaultPath)
      planned.push({ disk, format, target: await checkTargetFile(folder, basename(disk.sourcePath), true) })
    }
    // Only when no process has any of the machine's files open for writing.
    await inUse(
      point.disks.map((d) => d.sourcePath),
      { writersOnly: true, what: `machine "${point.machineName}"` },
    )
    await inUse(planned.map((p) => p.target.finalPath), { what: `machine "${point.machineName}"` })
    return planned
  }

  const targetPath = request.targetPath
  if (targetPath === undefined || targetPath === '') {
    throw new EngineError('INVALID_INPUT', 'Choose where to restore to (a file or a folder).')
  }
  assertNoNul(targetPath)
  const existing = await lstatOrUndefined(targetPath)
  const isFolderTarget = request.mode === 'folder' || (existing !== undefined && !existing.isSymbolicLink() && existing.isDirectory())

  if (isFolderTarget) {
    const folder = await resolveTargetFolder(targetPath, vaultPath)
    const formats = disks.map((d) => request.format ?? sourceWriterFormat(d) ?? 'raw')
    const names = uniqueNames(disks.map((d, i) => diskFileName(d.name, formats[i]!, `disk${d.index}`)))
    for (let i = 0; i < disks.length; i++) {
      planned.push({ disk: disks[i]!, format: formats[i]!, target: await checkTargetFile(folder, names[i]!, overwrite) })
    }
  } else {
    if (disks.length !== 1) {
      throw new EngineError(
        'INVALID_INPUT',
        `Recovery point ${point.id} has ${disks.length} disks. Choose one disk, or restore the whole machine to a folder.`,
      )
    }
    const disk = disks[0]!
    const format = request.format ?? EXTENSION_FORMATS[extname(targetPath).toLowerCase()] ?? sourceWriterFormat(disk) ?? 'raw'
    const folder = await resolveTargetFolder(dirname(targetPath), vaultPath)
    planned.push({ disk, format, target: await checkTargetFile(folder, basename(targetPath), overwrite) })
  }
  const overwritten = []
  for (const p of planned) if (await lstatOrUndefined(p.target.finalPath)) overwritten.push(p.target.finalPath)
  if (overwritten.length > 0) await inUse(overwritten, {})
  return planned
}

/** Removes a stale `.partial` left by an interrupted restore (checked to be a regular file first). */
async function removeStalePartial(path: string): Promise<void> {
  const s = await lstatOrUndefined(path)
  if (!s) return
  if (!s.isFile()) throw new EngineError('PATH_UNSAFE', `"${path}" exists and is not a regular file. Remove it, then restore again.`)
  // Stale only if nobody has it open: another restore to the same target (this process included) may be writing it.
  const writer = (await findFileUses([path], { excludePids: [] }))[0]
  if (writer) {
    throw new EngineError('TARGET_IN_USE', `"${path}" is being written by another restore (process ${writer.pid}). Wait for it to finish, or choose another target.`)
  }
  await unlink(path)
}

async function fsyncDir(dir: string): Promise<void> {
  let handle
  try {
    handle = await open(dir, 'r')
    await handle.sync()
  } catch (err) {
    // Windows cannot open or fsync a directory; elsewhere this is a real failure.
    if (process.platform !== 'win32') throw fromFsError(err, dir, 'saving the folder') ?? err
  } finally {
    await handle?.close()
  }
}

/** The disk's block count, after checking the manifest agrees with its size. */
function checkedBlockCount(point: PointManifest, disk: PointDisk): number {
  const expected = Math.ceil(disk.virtualSize / point.blockSize)
  if (disk.blockCount !== expected) throw damaged(point, disk, `the manifest lists ${disk.blockCount} blocks where ${expected} are expected`)
  return expected
}

/**
 * Walks a disk's block map in order, checking it has exactly `expectedBlocks` entries (see
 * `checkedBlockCount`): `onData` for DATA entries (awaited: it may wait for room), `onHole` for ZERO
 * and UNALLOCATED ones.
 */
async function walkBlockMap(
  vault: Vault,
  point: PointManifest,
  disk: PointDisk,
  expectedBlocks: number,
  signal: AbortSignal | undefined,
  onData: (index: number, entry: Extract<BlockEntry, { kind: 'data' }>) => Promise<void> | void,
  onHole: (index: number) => void,
): Promise<void> {
  let index = 0
  for await (const entry of vault.readBlockMap(point.id, disk.index)) {
    if (signal?.aborted) throw cancelled()
    if (index >= expectedBlocks) throw damaged(point, disk, 'the block map has more entries than the disk has blocks')
    if (entry.kind === 'data') await onData(index, entry)
    else onHole(index)
    index++
  }
  if (index !== expectedBlocks) throw damaged(point, disk, `the block map has ${index} entries where ${expectedBlocks} are expected`)
}

/**
 * Streams one disk's blocks from the vault into `writer`, without copies. Does not finish the writer.
 *
 * Memory is one page-aligned region shared with the decoding threads, cut into slots of one batch
 * each. A batch's k-th block is decoded at k × blockSize in its slot, so blocks with consecutive
 * indexes lie back to back exactly as in the image: each run of them is handed to the writer
 * straight from the slot (the raw writer writes it with direct I/O), cut only where the decoding
 * thread found all-zero granules (`zeroMaps`), which stay holes. The decoding thread also
 * computed each block's XXH3-128, compared here with the block map. Slots: enough for
 * `maxBytesInFlight` of batches being fetched, plus two whose writes are still in flight; a slot is
 * reused only after every write from it settled. The main thread copies, scans and hashes nothing.
 */
async function writeDisk(
  vault: Vault,
  reader: ChunkReader,
  point: PointManifest,
  disk: PointDisk,
  writer: ImageWriter,
  options: RestoreOptions,
  report: (position: number, bytesWritten: number) => void,
): Promise<number> {
  const blockSize = point.blockSize
  const expectedBlocks = checkedBlockCount(point, disk)
  const blocksPerBatch = Math.max(1, Math.floor((options.batchBytes ?? DEFAULT_BATCH) / blockSize))
  const slotBytes = blocksPerBatch * blockSize
  const fetchSlots = Math.max(1, Math.floor((options.maxBytesInFlight ?? DEFAULT_IN_FLIGHT) / slotBytes))
  const slotCount = fetchSlots + 2
  const arena = allocAlignedShared(slotCount * slotBytes, { hugePages: true }) // written out whole: huge pages, fewer write requests (directIo.ts)
  const free: number[] = Array.from({ length: slotCount }, (_, i) => slotCount - 1 - i)
  const writesFrom = new Array<number>(slotCount).fill(0)
  const drained = new Array<boolean>(slotCount).fill(false)
  const writeDepth = Math.max(1, writer.maxConcurrentWrites ?? 1)
  const writes = new Set<Promise<void>>()
  let failure: { error: unknown } | undefined
  const signal = options.signal
  const granulesPerBlock = Math.ceil(blockSize / HOLE_GRANULARITY)

  interface Batch {
    slot: number
    indices: number[]
    checksums: Buffer[]
    promise: Promise<ChunksInPlace>
  }
  const pending: Batch[] = []
  let indices: number[] = []
  let ids: Buffer[] = []
  let checksums: Buffer[] = []
  let bytesWritten = 0

  const throwFailure = (): void => {
    if (failure) throw failure.error
  }
  const releaseIfDone = (slot: number): void => {
    if (drained[slot] && writesFrom[slot] === 0) {
      drained[slot] = false
      free.push(slot)
    }
  }
  /** Starts one write from `slot` (waiting while `writeDepth` are in flight). */
  const issue = async (offset: number, data: Buffer, slot: number): Promise<void> => {
    while (writes.size >= writeDepth) await Promise.race(writes)
    throwFailure()
    writesFrom[slot]!++
    const p: Promise<void> = writer.write(offset, data).then(
      () => {
        writes.delete(p)
        writesFrom[slot]!--
        releaseIfDone(slot)
      },
      (error: unknown) => {
        writes.delete(p)
        writesFrom[slot]!--
        failure ??= { error }
      },
    )
    writes.add(p)
  }

  const launch = async (): Promise<void> => {
    if (ids.length === 0) return
    while (pending.length >= fetchSlots) await drainOne()
    while (free.length === 0) {
      if (writes.size === 0) throw new EngineError('INTERNAL', 'restore: no buffer slot is free and no write is in flight')
      await Promise.race(writes)
      throwFailure()
    }
    const slot = free.pop()!
    const base = slot * slotBytes
    const promise = reader.readChunksInto(ids, arena, ids.map((_, k) => base + k * blockSize), { zeroGranule: HOLE_GRANULARITY })
    promise.catch(() => undefined) // awaited in order below; avoid an unhandled rejection meanwhile
    pending.push({ slot, indices, checksums, promise })
    indices = []
    ids = []
    checksums = []
  }

  const drainOne = async (): Promise<void> => {
    const batch = pending.shift()!
    const got = await batch.promise
    const n = batch.indices.length
    if (got.lengths.length !== n) throw damaged(point, disk, 'the vault returned a wrong number of chunks')
    for (let k = 0; k < n; k++) {
      const index = batch.indices[k]!
      const expectedLength = Math.min(blockSize, disk.virtualSize - index * blockSize)
      if (got.lengths[k] !== expectedLength) throw damaged(point, disk, `block ${index} holds ${got.lengths[k]} bytes where ${expectedLength} are expected`)
      if (!got.checksums[k]!.equals(batch.checksums[k]!)) throw damaged(point, disk, `block ${index} does not match its recorded checksum`)
    }
    // Walk the batch's granules in order; write each run of non-zero granules of consecutive blocks.
    const base = batch.slot * slotBytes
    let runStart = -1 // byte position in the slot
    let runOffset = 0 // guest offset of runStart
    let runEnd = 0
    const flushRun = async (): Promise<void> => {
      if (runStart < 0) return
      await issue(runOffset, arena.subarray(base + runStart, base + runEnd), batch.slot)
      bytesWritten += runEnd - runStart
      runStart = -1
    }
    for (let k = 0; k < n; k++) {
      if (signal?.aborted) throw cancelled()
      const index = batch.indices[k]!
      if (k > 0 && index !== batch.indices[k - 1]! + 1) await flushRun()
      const map = got.zeroMaps[k]!
      const length = got.lengths[k]!
      for (let g = 0; g < granulesPerBlock; g++) {
        const at = g * HOLE_GRANULARITY
        if (at >= length) break
        const zero = (map[g >> 3]! & (1 << (g & 7))) !== 0
        if (zero) {
          await flushRun()
          continue
        }
        const pos = k * blockSize + at
        if (runStart < 0) {
          runStart = pos
          runOffset = index * blockSize + at
        }
        runEnd = k * blockSize + Math.min(length, at + HOLE_GRANULARITY)
      }
      report(index * blockSize + length, bytesWritten + (runStart < 0 ? 0 : runEnd - runStart))
    }
    await flushRun()
    drained[batch.slot] = true
    releaseIfDone(batch.slot)
  }

  try {
    await walkBlockMap(
      vault,
      point,
      disk,
      expectedBlocks,
      signal,
      async (index, entry) => {
        indices.push(index)
        ids.push(entry.chunkId)
        checksums.push(entry.checksum)
        if (ids.length >= blocksPerBatch) await launch()
      },
      (index) => {
        if (ids.length === 0 && pending.length === 0) report(Math.min(disk.virtualSize, (index + 1) * blockSize), bytesWritten)
      },
    )
    await launch()
    while (pending.length > 0) await drainOne()
    while (writes.size > 0) await Promise.race(writes)
    throwFailure()
    report(disk.virtualSize, bytesWritten)
    return bytesWritten
  } catch (err) {
    // Writes and decodes still in flight settle before the caller aborts the writer or frees the memory.
    await Promise.allSettled([...writes, ...pending.map((b) => b.promise)])
    throw err
  }
}

/**
 * Reads a finished image back through its format reader and checks it against the point: each DATA
 * block's XXH3-128 checksum, and zeros wherever the block map has ZERO/UNALLOCATED (only ranges the
 * image has allocated are read; the rest reads as zeros by the reader contract).
 */
async function verifyWritten(
  world: RestoreWorld,
  point: PointManifest,
  disk: PointDisk,
  path: string,
  format: WriterFormat,
  options: RestoreOptions,
  report: (position: number) => void,
): Promise<void> {
  const open = world.openImage ?? (async (p: string, o: { format: ImageFormat; noBacking: boolean }) => (await import('../formats/index.js')).openImage(p, o))
  const image = await open(path, { format: format === 'vhd-fixed' ? 'vhd' : format, noBacking: true })
  const mismatch = (what: string): EngineError =>
    new EngineError('IO_ERROR', `The restored image "${path}" does not read back as written (${what}). Nothing was replaced; check the target drive and try again.`)
  try {
    if (image.virtualSize < disk.virtualSize) throw mismatch(`its size is ${image.virtualSize} bytes instead of ${disk.virtualSize}`)
    const blockSize = point.blockSize
    const hasher = createBlockHasher()
    const buffer = Buffer.allocUnsafe(blockSize)
    const extents = image.extents()[Symbol.asyncIterator]()
    const ahead: Extent[] = []
    let exhausted = false
    const overlapsData = async (start: number, end: number): Promise<boolean> => {
      for (;;) {
        if (ahead.length === 0) {
          if (exhausted) return false
          const n = await extents.next()
          if (n.done) {
            exhausted = true
            return false
          }
          ahead.push(n.value)
        }
        const first = ahead[0]!
        if (first.offset + first.length <= start) ahead.shift()
        else break
      }
      while (!exhausted && ahead[ahead.length - 1]!.offset < end) {
        const n = await extents.next()
        if (n.done) exhausted = true
        else ahead.push(n.value)
      }
      return ahead.some((e) => !e.zero && e.offset < end && e.offset + e.length > start)
    }
    let index = 0
    for await (const entry of world.vault.readBlockMap(point.id, disk.index)) {
      if (options.signal?.aborted) throw cancelled()
      const offset = index * blockSize
      const length = Math.min(blockSize, disk.virtualSize - offset)
      const data = buffer.subarray(0, length)
      const hasData = await overlapsData(offset, offset + length)
      if (entry.kind === 'data') {
        await image.read(data, offset)
        if (!hasher.checksum(data).equals(entry.checksum)) throw mismatch(`block ${index} differs`)
      } else if (hasData) {
        await image.read(data, offset)
        if (!isAllZero(data)) throw mismatch(`block ${index} should read as zeros`)
      }
      report(offset + length)
      index++
    }
  } finally {
    await image.close()
  }
}

/** Granularity of hole detection inside a block: the page size of common file systems. */
const HOLE_GRANULARITY = 4096


/** Moves a finished `.partial` to its final name: never over an existing file unless chosen (no clobber). */
async function publish(target: TargetFile): Promise<void> {
  const { partialPath, finalPath } = target
  if (target.overwrite) {
    await rename(partialPath, finalPath)
  } else {
    try {
      await link(partialPath, finalPath) // fails with EEXIST instead of replacing
      await unlink(partialPath)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'EEXIST') {
        throw new EngineError('TARGET_EXISTS', `"${finalPath}" appeared while restoring. The restored image was not moved there; choose another target.`, { cause: err })
      }
      if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP' && code !== 'ENOSYS' && code !== 'EXDEV') {
        throw fromFsError(err, finalPath, 'naming the restored image') ?? err
      }
      // The file system has no hard links (FAT, exFAT): check, then rename.
      if (await lstatOrUndefined(finalPath)) {
        throw new EngineError('TARGET_EXISTS', `"${finalPath}" appeared while restoring. The restored image was not moved there; choose another target.`)
      }
      await rename(partialPath, finalPath)
    }
  }
  await fsyncDir(dirname(finalPath))
}

/**
 * Replaces original disks with their restored `.partial` files: each original is first renamed to
 * a kept copy, then the new file takes its name; only when every disk has been swapped are the kept
 * copies removed. A failure mid-way puts the originals back.
 */
async function swapIntoPlace(targets: TargetFile[], world: RestoreWorld, point: PointManifest, log: (l: string) => void): Promise<void> {
  const inUse = world.assertNotInUse ?? assertNotInUse
  await inUse(point.disks.map((d) => d.sourcePath), { writersOnly: true, what: `machine "${point.machineName}"` })
  const swapped: { target: TargetFile; keptPath: string | undefined }[] = []
  const stamp = Date.now().toString(36)
  try {
    for (const target of targets) {
      let keptPath: string | undefined
      const existing = await lstatOrUndefined(target.finalPath)
      if (existing) {
        if (!existing.isFile()) throw new EngineError('PATH_UNSAFE', `"${target.finalPath}" is no longer a regular file. Nothing was replaced.`)
        keptPath = `${target.finalPath}.tresor-replaced-${stamp}`
        await rename(target.finalPath, keptPath)
      }
      swapped.push({ target, keptPath })
      await rename(target.partialPath, target.finalPath)
      await fsyncDir(dirname(target.finalPath))
    }
  } catch (err) {
    for (const { target, keptPath } of swapped.reverse()) {
      if (keptPath === undefined) continue
      await rename(keptPath, target.finalPath).catch((e: unknown) => log(`Could not put back "${keptPath}" as "${target.finalPath}": ${String(e)}`))
    }
    throw err
  }
  for (const { keptPath } of swapped) {
    if (keptPath === undefined) continue
    await unlink(keptPath)
    await fsyncDir(dirname(keptPath))
  }
}

// ---------------------------------------------------------------------------------------------
// Snapshot tier

/** Manifest labels the backup pipeline writes per disk (backing chain identities, snapshot mode). */
const CHAIN_LABEL = (i: number): string => `disk.${i}.chain`
const MODE_LABEL = (i: number): string => `disk.${i}.snapshot`

interface ChainLabelEntry extends FileIdentity {
  path: string
}

type TierOutcome = { ok: true; bytesWritten: number; how: 'reflink copy' | 'conversion' } | { ok: false; reason: string }

/** The clone of exactly this point and disk (same point id, disk name and source path), if listed. */
function cloneFor(clones: readonly SnapshotCloneRef[], point: PointManifest, disk: PointDisk): SnapshotCloneRef | undefined {
  const mine = clones.filter((c) => c.pointId === point.id && c.diskName === disk.name && resolve(c.sourcePath) === resolve(disk.sourcePath))
  return mine[mine.length - 1]
}

/** The catalog's clones of `pointId`; a catalog failure only costs the tier (logged), never the restore. */
async function listClones(world: RestoreWorld, pointId: string, log: (l: string) => void): Promise<SnapshotCloneRef[]> {
  if (!world.snapshotClones) return []
  try {
    return await world.snapshotClones(pointId)
  } catch (err) {
    log(`Snapshot tier: the catalog's list of instant-restore copies could not be read (${(err as Error).message}); restoring from the vault.`)
    return []
  }
}

/** The writer format that reproduces `image` file for file (a reflink copy of it is a valid result), if any. */
function ownWriterFormat(image: DiskImage): WriterFormat | undefined {
  switch (image.format) {
    case 'raw':
    case 'qcow2':
    case 'vhdx':
      return image.format
    case 'vhd':
      return image.variant === 'fixed' ? 'vhd-fixed' : image.variant === 'dynamic' ? 'vhd' : undefined
    default:
      return undefined
  }
}

function parseChainLabel(value: string | undefined): ChainLabelEntry[] | undefined {
  if (value === undefined) return undefined
  try {
    const v = JSON.parse(value) as unknown
    return Array.isArray(v) && v.every((e) => typeof e === 'object' && e !== null && typeof (e as { path?: unknown }).path === 'string') ? (v as ChainLabelEntry[]) : undefined
  } catch {
    return undefined
  }
}

/** Why the opened clone's backing chain is not the one the point was read through, or undefined. */
async function chainMismatch(point: PointManifest, disk: PointDisk, image: DiskImage): Promise<string | undefined> {
  const recorded = parseChainLabel(point.labels[CHAIN_LABEL(disk.index)])
  if (!recorded) return 'it has backing files, and the recovery point did not record them'
  const now: string[] = []
  for (let b = image.backing; b; b = b.backing) now.push(b.path)
  if (now.length !== recorded.length || now.some((p, i) => resolve(p) !== resolve(recorded[i]!.path))) {
    return 'its backing files are not the ones it had at backup time'
  }
  for (const entry of recorded) {
    const state = await fileState(entry.path).catch(() => undefined)
    if (!sameIdentity(entry, state)) return `its backing file "${entry.path}" changed since the backup`
  }
  return undefined
}

/** Guest bytes of the image's allocated, non-zero extents (what a copy of it holds as data). */
async function dataBytes(image: DiskImage): Promise<number> {
  let n = 0
  for await (const e of image.extents()) if (!e.zero) n += e.length
  return n
}

async function fsyncFile(path: string): Promise<void> {
  const handle = await open(path, 'r+')
  try {
    await handle.sync()
  } finally {
    await handle.close()
  }
}

/**
 * Restores `disk` into `target.partialPath` from its snapshot-tier clone, then reads the result back
 * and checks it against the point (`verifyWritten`). Same format as the clone (and no backing file):
 * a reflink copy (COPYFILE_FICLONE_FORCE); another format, a backing chain (flattened: a copy of a
 * child image would lose its parents' relative names), or a target file system that cannot share
 * the clone's extents: a conversion through the formats layer (sparse). Resolves `{ ok: false }`
 * with the reason, the `.partial` removed, whenever the clone cannot be used or its result differs
 * from the point; rejects only on cancellation.
 */
async function restoreFromClone(
  world: RestoreWorld,
  point: PointManifest,
  disk: PointDisk,
  clone: SnapshotCloneRef,
  format: WriterFormat,
  target: TargetFile,
  options: RestoreOptions,
  report: { writing: (position: number, bytesWritten: number) => void; verifying: (position: number) => void },
  log: (l: string) => void,
): Promise<TierOutcome> {
  const clonePath = clone.clonePath
  const partial = target.partialPath
  const skip = (reason: string): TierOutcome => ({ ok: false, reason })
  const mode = point.labels[MODE_LABEL(disk.index)]
  if (mode !== undefined && mode !== 'reflink') return skip(`the recovery point was not read from it (snapshot "${mode}")`)
  try {
    const st = await lstat(clonePath)
    if (!st.isFile()) return skip('it is not a regular file')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    return skip(code === 'ENOENT' ? 'the file is gone' : `it cannot be read (${code ?? (err as Error).message})`)
  }
  const formats = await import('../formats/index.js')
  const openClone = world.openClone ?? ((p: string, o: { format: ImageFormat }) => formats.openImage(p, { format: o.format }))
  let image: DiskImage
  try {
    image = await openClone(clonePath, { format: disk.sourceFormat })
  } catch (err) {
    return skip(`it cannot be opened as a ${disk.sourceFormat} image (${(err as Error).message})`)
  }
  let writer: ImageWriter | undefined
  let how: 'reflink copy' | 'conversion' = 'conversion'
  let bytesWritten = 0
  try {
    if (image.virtualSize !== disk.virtualSize) {
      return skip(`its size is ${image.virtualSize} bytes where the recovery point's disk has ${disk.virtualSize}`)
    }
    if (image.backing) {
      const why = await chainMismatch(point, disk, image)
      if (why !== undefined) return skip(why)
    }
    if (!image.backing && ownWriterFormat(image) === format) {
      const r = await reflinkClone(clonePath, partial)
      if (r.ok) {
        how = 'reflink copy'
        bytesWritten = await dataBytes(image)
        await fsyncFile(partial)
      } else {
        log(`Snapshot tier: "${clonePath}" cannot be shared with "${partial}" (${r.reason}); copying its data instead.`)
      }
    }
    if (how === 'conversion') {
      writer = await world.createWriter(partial, format, { virtualSize: disk.virtualSize, overwrite: false })
      await formats.copyGuestData(image, writer, {
        ...(options.signal ? { signal: options.signal } : {}),
        onProgress: (p) => report.writing(p.doneBytes, 0),
      })
      bytesWritten = (await writer.finish()).bytesWritten
      writer = undefined
    }
  } catch (err) {
    await writer?.abort().catch(() => undefined)
    await unlink(partial).catch(() => undefined)
    if (err instanceof EngineError && err.code === 'CANCELLED') throw err
    if (options.signal?.aborted) throw cancelled()
    return skip(`copying it failed (${(err as Error).message})`)
  } finally {
    await image.close().catch(() => undefined)
  }
  report.writing(disk.virtualSize, bytesWritten)
  try {
    await verifyWritten(world, point, disk, partial, format, options, report.verifying)
  } catch (err) {
    await unlink(partial).catch(() => undefined)
    if (err instanceof EngineError && err.code === 'CANCELLED') throw err
    if (options.signal?.aborted) throw cancelled()
    return skip(`the copy does not match the recovery point (${(err as Error).message})`)
  }
  return { ok: true, bytesWritten, how }
}

/**
 * Restores disks of a recovery point (see the module comment for the guarantees). Every target is
 * checked before anything is written: NUL in paths, symlinks, targets inside the vault (PATH_UNSAFE),
 * existing files not chosen for overwrite (TARGET_EXISTS), files a running VM uses (TARGET_IN_USE).
 * Resolves once every file is complete, verified and under its final name.
 */
export async function restorePoint(world: RestoreWorld, request: RestoreRequest, options: RestoreOptions = {}): Promise<RestoreResult> {
  const log = options.log ?? (() => undefined)
  if (options.signal?.aborted) throw cancelled()
  const point = await world.vault.getPoint(request.pointId)
  const planned = await planTargets(world, point, request)
  const bytesTotal = planned.reduce((s, p) => s + p.disk.virtualSize, 0)
  let doneBefore = 0
  let writtenBefore = 0
  const restored: RestoredDisk[] = []
  const writers: ImageWriter[] = []
  const finishedPartials: string[] = []
  // Opened on first use: a restore served entirely by the snapshot tier never reads a chunk.
  let reader: ChunkReader | undefined
  const clones = await listClones(world, point.id, log)
  try {
    for (const { disk, format, target } of planned) {
      log(`Restoring disk "${disk.name}" of point ${point.id} as ${format} to "${target.finalPath}".`)
      await removeStalePartial(target.partialPath)
      let lastReport = 0
      const reportWriting = (position: number, bytesWritten: number): void => {
        if (!options.onProgress) return
        const now = Date.now()
        if (now - lastReport < 100 && position < disk.virtualSize) return
        lastReport = now
        options.onProgress({
          phase: 'writing',
          bytesDone: doneBefore + position,
          bytesTotal,
          bytesWritten: writtenBefore + bytesWritten,
          currentDisk: disk.name,
        })
      }
      let lastVerifyReport = 0
      let diskWritten = 0
      const reportVerifying = (position: number): void => {
        if (!options.onProgress) return
        const now = Date.now()
        if (now - lastVerifyReport < 100 && position < disk.virtualSize) return
        lastVerifyReport = now
        options.onProgress({ phase: 'verifying', bytesDone: doneBefore + position, bytesTotal, bytesWritten: writtenBefore + diskWritten, currentDisk: disk.name })
      }

      let source: RestoreSource = 'vault'
      let tierSkipped: string | undefined
      const clone = cloneFor(clones, point, disk)
      if (clone) {
        const tier = await restoreFromClone(world, point, disk, clone, format, target, options, { writing: reportWriting, verifying: reportVerifying }, log)
        if (tier.ok) {
          source = 'snapshot-tier'
          diskWritten = tier.bytesWritten
          finishedPartials.push(target.partialPath)
          log(`Disk "${disk.name}" restored from the snapshot tier ("${clone.clonePath}", ${tier.how}) and verified against the recovery point.`)
        } else {
          tierSkipped = tier.reason
          log(`Snapshot tier: not using "${clone.clonePath}" for disk "${disk.name}": ${tier.reason}. Restoring it from the vault.`)
        }
      }

      if (source === 'vault') {
        const writer = await world.createWriter(target.partialPath, format, { virtualSize: disk.virtualSize, overwrite: false })
        writers.push(writer)
        reader ??= world.vault.chunkReader()
        await writeDisk(world.vault, reader, point, disk, writer, options, reportWriting)
        if (options.signal?.aborted) throw cancelled()
        diskWritten = (await writer.finish()).bytesWritten
        writers.pop()
        finishedPartials.push(target.partialPath)
        if (request.verifyAfterWrite ?? request.mode === 'replace') {
          log(`Reading "${target.partialPath}" back to verify it.`)
          await verifyWritten(world, point, disk, target.partialPath, format, options, reportVerifying)
        }
      }
      restored.push({
        index: disk.index,
        name: disk.name,
        path: target.finalPath,
        format,
        bytesWritten: diskWritten,
        source,
        ...(tierSkipped === undefined ? {} : { tierSkipped }),
      })
      doneBefore += disk.virtualSize
      writtenBefore += diskWritten
    }
    if (options.signal?.aborted) throw cancelled()
    // Every block of every disk is written and verified: now the final names may appear (I12).
    if (request.mode === 'replace') {
      await swapIntoPlace(planned.map((p) => p.target), world, point, log)
    } else {
      for (const { target } of planned) {
        await publish(target)
        finishedPartials.splice(finishedPartials.indexOf(target.partialPath), 1)
      }
    }
    finishedPartials.length = 0
  } catch (err) {
    for (const w of writers) await w.abort().catch(() => undefined)
    for (const p of finishedPartials) await unlink(p).catch(() => undefined)
    if (err instanceof EngineError) throw err
    throw fromFsError(err, (err as { path?: string }).path ?? request.targetPath ?? 'the restore target', 'restoring') ?? err
  } finally {
    await reader?.close().catch(() => undefined)
  }
  options.onProgress?.({ phase: 'done', bytesDone: bytesTotal, bytesTotal, bytesWritten: writtenBefore, currentDisk: null })
  return { pointId: point.id, files: restored.map((r) => r.path), bytesWritten: writtenBefore, disks: restored }
}
