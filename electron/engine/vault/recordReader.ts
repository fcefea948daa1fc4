/**
 * Reads chunk records of one pack by coalesced byte ranges and opens them in the worker pool
 * (decrypt, decompress, re-hash). Shared by restore reads, verify --read-data and repack.
 * Memory: at most the pool's queue of range buffers.
 */
import { Started } from '../io/started.js'
import { recordsOf, type PackIndexEntry } from './pack.js'
import { EngineError } from '../errors.js'
import type { WorkerPool } from '../workers/pool.js'
import { packOpenEntries, zeroMapBytes, type ChunkTask, type ChunkTaskResult, type InPlace } from './chunkTasks.js'
import { readExactly, vaultIoError, type VaultFileHandle, type VaultFs } from './vaultFs.js'
import { DIRECT_ALIGN, DirectSide, allocAligned, allocAlignedShared, isDirectAligned } from '../io/directIo.js'

/** What a record decoded in place (OpenTask.into) reports: see ChunkTaskResult. */
export interface OpenedInPlace {
  length: number
  checksum: Uint8Array
  zeroMap: Uint8Array
}

export interface RecordItem {
  offset: number
  length: number
  ordinal: number
  flags: number
  chunkId: Buffer
  /** A part inside a container record (format 3): its place in the record's plaintext (length 0 or absent: the record is the chunk). */
  partOffset?: number
  partLength?: number
}

/**
 * The entries of a pack index as items to open: a record as it is listed, a sub-entry (format 3)
 * as the container record listed before it with the part's place in that record's plaintext.
 */
export function recordItemsOf(entries: ReadonlyArray<PackIndexEntry>): RecordItem[] {
  // one object shape for every item, built field by field: items made by spreading and by rest
  // destructuring slowed verify --read-data of 6.2 GB of real files from ~10.7 to ~13.2 s (+35 MiB)
  const out: RecordItem[] = []
  for (const r of recordsOf(entries)) {
    const { offset, length, ordinal, flags } = r
    out.push({ offset, length, ordinal, flags, chunkId: r.chunkId, partOffset: 0, partLength: 0 })
    for (const s of r.subs ?? []) {
      const chunkId = Buffer.from(s.chunkId.buffer, s.chunkId.byteOffset, s.chunkId.byteLength)
      out.push({ offset, length, ordinal, flags, chunkId, partOffset: s.offset, partLength: s.length })
    }
  }
  return out
}

export const MAX_RANGE_BYTES = 4 * 1024 * 1024
const MAX_GAP_BYTES = 256 * 1024
/**
 * Range buffers are shared memory, reused read after read: the worker reads the records in place and
 * nothing travels back (a transferred buffer counted as new external memory each time it returned).
 * They are page aligned (a shared WebAssembly memory, whose size is whole 64 KiB pages), so ranges
 * can be read with O_DIRECT: packs are written past the page cache (pack.ts), and reading them
 * back through it costs a fresh cache page per 4 KiB. A direct read covers the range widened to
 * whole 4 KiB pages, hence the slack beyond a range and its last record.
 */
const RANGE_BUFFER_BYTES = MAX_RANGE_BYTES + 128 * 1024
/** Ranges up to this many bytes get a small buffer: the parts of blocks stored as parts are read a few KiB at a time. */
const SMALL_RANGE_BYTES = 256 * 1024
const SMALL_RANGE_BUFFER_BYTES = SMALL_RANGE_BYTES + 64 * 1024
const freeRangeBuffers: SharedArrayBuffer[] = []
const freeSmallRangeBuffers: SharedArrayBuffer[] = []
/**
 * Range buffers kept for reuse: at least as many as can be out at once (largeGate: nine for a pool
 * of four workers), so that a long read allocates none after its start. Each fresh 4 MiB buffer
 * costs page faults and, as V8 external memory, pushes the main thread towards a full garbage
 * collection (a 4 GiB restore allocated 75 with a cap of 6).
 */
const MAX_FREE_RANGE_BUFFERS = 12

/**
 * The byte ranges to read for `items` of one pack: items in offset order, neighbours closer than
 * MAX_GAP_BYTES read together, no range longer than MAX_RANGE_BYTES (or overlapping). `group`
 * lists the item indexes each range holds.
 */
function coalesce(items: ReadonlyArray<Pick<RecordItem, 'offset' | 'length'>>): Array<{ start: number; end: number; group: number[] }> {
  const order = items.map((_, i) => i).sort((a, b) => items[a]!.offset - items[b]!.offset)
  const ranges: Array<{ start: number; end: number; group: number[] }> = []
  for (let i = 0; i < order.length; ) {
    const start = items[order[i]!]!.offset
    let end = start + items[order[i]!]!.length
    const group = [order[i++]!]
    while (i < order.length) {
      const it = items[order[i]!]!
      // several parts inside one container record (format 3) are several items of one record
      const sameRecord = it.offset === items[group.at(-1)!]!.offset && it.length === items[group.at(-1)!]!.length
      if (!sameRecord && (it.offset - end > MAX_GAP_BYTES || it.offset + it.length - start > MAX_RANGE_BYTES || it.offset < end)) break
      end = it.offset + it.length
      group.push(order[i++]!)
    }
    ranges.push({ start, end, group })
  }
  return ranges
}

/** A pack opened for reading, with its direct (O_DIRECT) side when the file system has one. */
interface OpenPack {
  fh: VaultFileHandle
  direct: DirectSide<VaultFileHandle>
}

async function openPackBoth(fs: VaultFs, path: string): Promise<OpenPack> {
  const fh = await openPack(fs, path)
  return { fh, direct: new DirectSide(await fs.openDirect?.(path, 'r').catch(() => undefined)) }
}

async function closePack(p: OpenPack): Promise<void> {
  await p.fh.close().catch(() => undefined)
  await p.direct.close()
}

/**
 * Packs kept open by one reader, the least recently used closed beyond `max` (never one in use).
 * A restore of blocks stored as parts touches many packs per batch, and opening each pack and its
 * direct handle per batch cost ~0.8 s of the main thread for a 4 GiB disk.
 */
export class PackHandles {
  private readonly entries = new Map<string, { ready: Promise<OpenPack>; users: number }>()

  constructor(
    private readonly fs: VaultFs,
    private readonly max = 16,
  ) {}

  async acquire(path: string): Promise<OpenPack> {
    let e = this.entries.get(path)
    if (e) this.entries.delete(path) // most recently used last
    else e = { ready: openPackBoth(this.fs, path), users: 0 }
    this.entries.set(path, e)
    e.users++
    try {
      return await e.ready
    } catch (err) {
      e.users--
      if (this.entries.get(path) === e) this.entries.delete(path)
      throw err
    }
  }

  release(path: string): void {
    const e = this.entries.get(path)
    if (e) e.users--
    for (const [p, x] of this.entries) {
      if (this.entries.size <= this.max) break
      if (x.users > 0) continue
      this.entries.delete(p)
      void x.ready.then(closePack, () => undefined)
    }
  }

  async closeAll(): Promise<void> {
    const all = [...this.entries.values()]
    this.entries.clear()
    await Promise.all(all.map((x) => x.ready.then(closePack, () => undefined)))
  }
}

/** Opens a pack for reading; a missing one is CHUNK_MISSING. */
async function openPack(fs: VaultFs, path: string): Promise<VaultFileHandle> {
  try {
    return await fs.open(path, 'r')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new EngineError('CHUNK_MISSING', `Pack "${path}" is missing from the vault. Run "tresor verify" to see which recovery points it affects.`, { cause: err })
    }
    throw vaultIoError(err, path, 'opening pack')
  }
}

/** Range buffers out at once (being read, or held by a task queued or running), and who waits for one. */
interface BufferGate {
  out: number
  /** The most ever out at once. */
  peak: number
  readonly waiters: Array<() => void>
}

/**
 * Small range buffers out at once, at most; a reader waits for one to come back. The parts of
 * blocks stored as parts lie scattered over many packs, and their many small ranges in flight each
 * took a fresh 4 MiB buffer: a 4 GiB restore peaked at 500–750 MiB.
 */
const MAX_OUT_SMALL_RANGE_BUFFERS = 64
const smallGate: BufferGate = { out: 0, peak: 0, waiters: [] }
/**
 * Large range buffers are gated per worker pool, at two per worker (the task it runs and the one
 * sent ahead) plus one being read. The pool's queue bound alone let ~10 be out (three packs read
 * at once, each with a range waiting for room in the queue, and the queue's tasks): 41 MiB of a
 * format-2 restore's ~290 MiB peak. With this gate, alternating restores of the bench disk peaked
 * at 266–271 against 284–291 MiB, in the same times (sixteenth round, PERFORMANCE.md).
 */
const largeGates = new WeakMap<WorkerPool<ChunkTask, ChunkTaskResult>, BufferGate>()

function largeGate(pool: WorkerPool<ChunkTask, ChunkTaskResult>): { gate: BufferGate; max: number } {
  let gate = largeGates.get(pool)
  if (!gate) largeGates.set(pool, (gate = { out: 0, peak: 0, waiters: [] }))
  return { gate, max: 2 * pool.size + 1 }
}

async function passGate(gate: BufferGate, max: number): Promise<void> {
  while (gate.out >= max) await new Promise<void>((r) => gate.waiters.push(r))
  gate.peak = Math.max(gate.peak, ++gate.out)
}

/** Large range buffers of `pool`'s readers: out now, the most out at once, and the bound (for tests and diagnostics). */
export function largeRangeBuffers(pool: WorkerPool<ChunkTask, ChunkTaskResult>): { out: number; peak: number; max: number } {
  const { gate, max } = largeGate(pool)
  return { out: gate.out, peak: gate.peak, max }
}

function leaveGate(gate: BufferGate): void {
  gate.out--
  gate.waiters.shift()?.()
}

/** A buffer for a range of `size` bytes: give it back with giveRangeBuffer and the same pool. */
async function takeRangeBuffer(size: number, pool: WorkerPool<ChunkTask, ChunkTaskResult>): Promise<SharedArrayBuffer> {
  if (size <= SMALL_RANGE_BYTES) {
    await passGate(smallGate, MAX_OUT_SMALL_RANGE_BUFFERS)
    return freeSmallRangeBuffers.pop() ?? (allocAlignedShared(SMALL_RANGE_BUFFER_BYTES).buffer as SharedArrayBuffer)
  }
  if (size > RANGE_BUFFER_BYTES) return new SharedArrayBuffer(size)
  const { gate, max } = largeGate(pool)
  await passGate(gate, max)
  return freeRangeBuffers.pop() ?? (allocAlignedShared(RANGE_BUFFER_BYTES).buffer as SharedArrayBuffer)
}

/** A record scratch's first size: a repack batch of 64 records takes up to ~5.5 MiB with its page padding. */
const SCRATCH_START_BYTES = 8 * 1024 * 1024

/** Reads whole pages into `buf` from `from` (page aligned) until `end` is covered. */
async function readPages(handle: VaultFileHandle, buf: Buffer, from: number, end: number, path: string): Promise<void> {
  // a read stops short only at the end of the file, which lies past `end` in a sound pack
  let done = 0
  while (done < end - from) {
    const n = await handle.read(buf, done, buf.length - done, from + done)
    if (n <= 0) break
    done += n
  }
  if (done < end - from) throw new EngineError('VAULT_DAMAGED', `"${path}" is shorter than expected (truncated). Run "tresor verify" to see what it affects.`)
}

/**
 * Reads the pack bytes [start, end) into `room`; returns where `start` landed in it. Through
 * `direct` (O_DIRECT) when `room` is page-aligned memory with space for the range widened to whole
 * pages; else, or when the kernel refuses the direct read (EINVAL, which turns `direct` off), the
 * exact range is read through `fh` to the start of `room`.
 */
async function readRange(
  fh: VaultFileHandle,
  direct: DirectSide<VaultFileHandle>,
  room: Buffer,
  start: number,
  end: number,
  path: string,
): Promise<number> {
  const from = start - (start % DIRECT_ALIGN)
  const to = Math.ceil(end / DIRECT_ALIGN) * DIRECT_ALIGN
  const buf = to - from <= room.length ? room.subarray(0, to - from) : undefined
  if (buf && isDirectAligned(buf, from) && (await direct.attempt((handle) => readPages(handle, buf, from, end, path)))) return start - from
  await readExactly(fh, room, 0, end - start, start, path)
  return 0
}

/** Bytes `readRange` may need for [start, end): the range widened to whole pages. */
function pagesOf(start: number, end: number): number {
  return Math.ceil(end / DIRECT_ALIGN) * DIRECT_ALIGN - (start - (start % DIRECT_ALIGN))
}

function giveRangeBuffer(ab: SharedArrayBuffer, pool: WorkerPool<ChunkTask, ChunkTaskResult>): void {
  if (ab.byteLength === SMALL_RANGE_BUFFER_BYTES) {
    leaveGate(smallGate)
    if (freeSmallRangeBuffers.length < 4 * MAX_FREE_RANGE_BUFFERS) freeSmallRangeBuffers.push(ab)
  } else if (ab.byteLength === RANGE_BUFFER_BYTES) {
    leaveGate(largeGate(pool).gate)
    if (freeRangeBuffers.length < MAX_FREE_RANGE_BUFFERS) freeRangeBuffers.push(ab)
  }
}

/**
 * Opens `items` (records of the pack at `path`), calling `onResult(itemIndex, plain, error)` for
 * each; `plain` is set only when `returnPlain` (a Buffer the callee may keep). Missing file →
 * CHUNK_MISSING; I/O failures → their EngineError. Corrupt records are reported through `error`.
 */
export async function openPackRecords(
  pool: WorkerPool<ChunkTask, ChunkTaskResult>,
  fs: VaultFs,
  path: string,
  packId: Buffer,
  items: RecordItem[],
  options: {
    returnPlain: boolean
    blockSize: number
    signal?: AbortSignal
    /**
     * Decode in place (OpenTask.into): item i's plaintext goes to `sab` at `positions[i]`; `onResult`
     * then gets no plaintext but its length and XXH3-128 checksum (`opened`).
     */
    into?: InPlace
    /** Keep the pack open for later calls (a reader's handles) instead of opening and closing it here. */
    handles?: PackHandles
    /** Open on this thread (WorkerPool.runHere), not behind the queued tasks: small records whose wait is the cost. */
    here?: boolean
  },
  onResult: (index: number, plain: Buffer | undefined, error: string | null, opened?: OpenedInPlace) => void,
): Promise<void> {
  if (items.length === 0) return
  const { fh, direct } = options.handles ? await options.handles.acquire(path) : await openPackBoth(fs, path)
  // a range's result may fail (a corrupt record, `onResult` throwing) while a later range is read:
  // no further range is read then
  const results = new Started()
  try {
    for (const { start, end, group } of coalesce(items)) {
      if (results.failed) break
      if (options.signal?.aborted) throw new EngineError('CANCELLED', 'Cancelled.')
      const ab = await takeRangeBuffer(end - start, pool)
      let handedOver = false
      try {
        const at = await readRange(fh, direct, Buffer.from(ab), start, end, path)
        // each item's record lies at its offset in the pack, shifted to where the range landed
        const entries = packOpenEntries(
          group.length,
          (j) => items[group[j]!]!,
          (j) => at + items[group[j]!]!.offset - start,
        )
        const into = options.into
        const task: ChunkTask = {
          kind: 'open',
          buf: ab,
          entries,
          packId,
          blockSize: options.blockSize,
          returnPlain: options.returnPlain && !into,
          ...(into
            ? {
                into: {
                  sab: into.sab,
                  positions: group.map((k) => into.positions[k]!),
                  zeroGranule: into.zeroGranule,
                  ...(into.parts ? { parts: group.map((k) => into.parts![k]!) } : {}),
                },
              }
            : {}),
        }
        const result = options.here ? pool.runHere(task) : (await pool.submit(task)).result // shared memory: nothing to transfer
        handedOver = true
        results.add(result.finally(() => giveRangeBuffer(ab, pool)).then((r) => {
          if (r.kind !== 'open') throw new EngineError('INTERNAL', 'unexpected worker reply')
          let p = 0
          const plain = r.plain ? Buffer.from(r.plain) : undefined
          group.forEach((k, j) => {
            const len = r.lengths[j]!
            const ok = r.errors[j] === null
            const mapBytes = into ? zeroMapBytes(options.blockSize, into.zeroGranule) : 0
            const opened =
              r.checksums && r.zeroMaps && ok
                ? { length: len, checksum: r.checksums.subarray(j * 16, j * 16 + 16), zeroMap: r.zeroMaps.subarray(j * mapBytes, (j + 1) * mapBytes) }
                : undefined
            onResult(k, plain && ok ? plain.subarray(p, p + len) : undefined, r.errors[j] ?? null, opened)
            p += len
          })
        }))
      } finally {
        if (!handedOver) giveRangeBuffer(ab, pool)
      }
    }
    await results.settle()
  } catch (err) {
    await results.drain()
    throw vaultIoError(err, path, 'reading pack')
  } finally {
    if (options.handles) options.handles.release(path)
    else await closePack({ fh, direct })
  }
}

/**
 * The stored bytes of `items` (records of the pack at `path`), read by coalesced ranges like
 * `openPackRecords`, with O_DIRECT where the file system takes it (packs are written past the
 * page cache, and a repack reads each record once), and returned in item order, unopened (repack
 * moves them as they are; the worker opens each before it is sealed again). The bytes land in
 * `scratch.buf` (page-aligned memory), which grows when
 * too small and is reused by the next call: the slices returned are valid until then (no fresh
 * buffer per range, so a long repack does not drive garbage collection). Missing file → CHUNK_MISSING.
 */
export async function readRecordBytes(
  fs: VaultFs,
  path: string,
  items: ReadonlyArray<Pick<RecordItem, 'offset' | 'length'>>,
  scratch: { buf: Buffer },
  /** Keep the pack open for the next batch of the same pack (prune's repack reads a pack in batches). */
  handles?: PackHandles,
): Promise<Buffer[]> {
  const out = new Array<Buffer>(items.length)
  if (items.length === 0) return out
  const ranges = coalesce(items) // planned first, so the scratch is sized once
  // each range at a page boundary of the scratch, with room for whole pages (direct reads)
  const total = ranges.reduce((sum, r) => sum + pagesOf(r.start, r.end), 0)
  // grown at once well past what a batch needs: WebAssembly memory costs nothing until its pages are
  // touched, and a scratch grown to each batch's size left every smaller one behind as garbage that
  // the collector let pile up (prune's repack: 12 scratches, ~51 MiB, for 3 in use)
  if (scratch.buf.length < total) scratch.buf = allocAligned(Math.max(total, 2 * scratch.buf.length, SCRATCH_START_BYTES))
  const { fh, direct } = handles ? await handles.acquire(path) : await openPackBoth(fs, path)
  try {
    let at = 0
    for (const { start, end, group } of ranges) {
      const room = scratch.buf.subarray(at, at + pagesOf(start, end))
      at += room.length
      const shift = (await readRange(fh, direct, room, start, end, path)) - start
      for (const k of group) out[k] = room.subarray(items[k]!.offset + shift, items[k]!.offset + shift + items[k]!.length)
    }
    return out
  } catch (err) {
    throw vaultIoError(err, path, 'reading pack')
  } finally {
    if (handles) handles.release(path)
    else await closePack({ fh, direct })
  }
}
