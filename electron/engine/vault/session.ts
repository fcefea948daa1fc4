/**
 * A backup session (api.ts BackupSession): holds a shared lock, hashes blocks on the calling thread
 * (keyed BLAKE3 runs at several GB/s here, see test/bench/vaultHash.ts), deduplicates against the
 * chunk table and its own pending chunks, and sends new blocks to the worker pool to be sealed.
 * In a format-2 vault the workers hash instead (CutTask), and a new full block that looks
 * compressible is cut there into content-defined parts (parts.ts), each deduplicated like a block
 * here, and stored as its parts plus a recipe under the block's own id. Recipes go to packs of
 * their own (written through the page cache: they stay open until the end) that are published
 * after every data pack of the session, so a crash can leave parts without a recipe but never a
 * recipe without its parts. In a format-3 vault a cut block none of whose parts is stored yet is
 * stored whole instead (one record, one zstd frame), its parts listed as sub-entries after its
 * index entry, claimed in `pending` with it (FORMAT.md "Container").
 * Memory is bounded by `maxInFlight` circulating buffer pairs (I7). Every record is opened again
 * in the worker right after sealing, on the exact bytes that will be written, and its check value
 * is recomputed here just before the write (I9, recordCheck.ts); each full pack is then finished
 * (one fsync) and published; `commit` waits for all packs, the block maps, re-checks the lock and
 * the generation, and only then writes the manifest (I1).
 */
import { EngineError, isEngineError } from '../errors.js'
import type { BackupSession, BlockMapWriter, NewPoint, PointDisk, PointManifest, PutResult } from './api.js'
import { ChunkIdHasher, randomId, SEAL_OVERHEAD } from './crypto.js'
import { bumpGeneration, readGeneration, type GenerationRecord } from './generation.js'
import { manifestPath, mapDir } from './layout.js'
import { unlinkDurable } from './vaultFs.js'
import type { VaultLock } from './locks.js'
import { copySegmentedMap, readManifest, readSegmentedMap, SegmentedMapWriter, writeManifest, type StoredManifest } from './manifest.js'
import { FLAG_CONTAINER, INDEX_ENTRY_BYTES, PackWriter, type PackIndexEntry, type SubEntry } from './pack.js'
import { SEAL_ITEM_WORDS, type ChunkTaskResult } from './chunkTasks.js'
import { CheckSpans, recordCheck } from './recordCheck.js'
import type { VaultContext } from './context.js'
import { ChunkTable } from './chunkTable.js'
import { encodeRecipe, type RecipePart } from './parts.js'
import { CHECKSUM_BYTES, createBlockHasher, type BlockHasher } from '../backup/checksum.js'

/**
 * Plaintext bytes per seal message, at most: one message and one pack write per 4 MiB instead of
 * per block. 4 MiB with two batches in flight per worker (tenth round, PERFORMANCE.md): full
 * backups 8.1–9.6 s against 8.7–10.3 s with 1 MiB batches.
 */
export const SEAL_BATCH_BYTES = 4 * 1024 * 1024
/**
 * Plaintext bytes of all batches in flight, at most: with more workers (more batches in flight)
 * the batches get smaller, so the buffers stay at ~2 × 16 MiB whatever the core count (two
 * workers: 4 MiB batches; four: 2 MiB).
 */
export const SEAL_BUDGET_BYTES = 16 * 1024 * 1024
/**
 * Recipes (~300 bytes each) are queued and sealed this many bytes at a time (~3,000 recipes), not
 * one small message per `putBlocks` call: each batch takes a seal slot like 4 MiB of data would.
 */
export const RECIPE_BATCH_BYTES = 1024 * 1024

/**
 * New bytes a `putBlocks` call needs, at least, to have them sealed where they lie (SharedUnits)
 * rather than copied into the open batch. A full backup's calls (4 MiB runs) pass it; an
 * incremental's few changed blocks per run do not, and still share batches with other calls (one
 * batch per call made ~4,000 seal messages for ~10,000 scattered blocks, fourteenth round).
 */
const SHARED_SEAL_MIN_BYTES = 1024 * 1024

/** A sealed record to move (LocalBackupSession.moveRecords): its bytes and where it was. */
export interface MovedRecord {
  record: Buffer
  chunkId: Buffer
  ordinal: number
  flags: number
  plainLength: number
  /** A container record's parts (format 3): written again as sub-entries after it. */
  subs?: SubEntry[]
}

interface Slot {
  input: ArrayBuffer
  output: ArrayBuffer
}

export interface SessionPutResult extends PutResult {
  /** For a new chunk: resolves with its exact stored bytes once sealed and written (a recipe's, for a block stored as parts). */
  sealed?: Promise<number>
}

/**
 * The result of a put that stored a new chunk. `sealed` is made on first use: format 2 puts ~8
 * parts per block, and a promise pair per part that nobody reads was garbage on the vault's thread.
 */
class NewChunk implements SessionPutResult {
  readonly isNew = true
  readonly storedBytes = 0
  checksum?: Buffer
  constructor(
    readonly chunkId: Buffer,
    private readonly batch: Batch,
    private readonly item: number,
  ) {}

  get sealed(): Promise<number> {
    this.batch.asked?.() // a batch still being filled is sent now: someone waits for it
    const one = this.batch.sealed.then((lengths) => lengths[this.item]!)
    one.catch(() => undefined) // the session records the failure; callers may ignore `sealed`
    return one
  }
}

/** The result of a put whose chunk the vault or this session already has. */
function duplicateOf(chunkId: Buffer): SessionPutResult {
  return { chunkId, isNew: false, storedBytes: 0 }
}

/** Data packs take blocks and parts; recipe packs take recipes and are published last (see the header). */
type Lane = 'data' | 'recipe'
/** What `heldRecipes` stores per recipe: nothing but the id's presence is read. */
const HELD_RECIPE = { pack: 0, offset: 0, length: 0, ordinal: 0, flags: 0 }

/**
 * One seal message in the making: chunks copied into a slot's input, their ids claimed in
 * `pending`. Pack space is reserved when it is sent (`submitBatch`).
 */
interface Batch {
  readonly slot: Slot
  readonly input: Buffer
  readonly lane: Lane
  /** Plaintext bytes copied so far (moved records: record bytes). */
  used: number
  /** Σ(length + SEAL_OVERHEAD): the pack space the batch reserves. */
  reserved: number
  readonly ids: Buffer[]
  readonly keys: string[]
  readonly lengths: number[]
  /** Per item, the XXH3-128 of its plaintext from where its id was made (SealItems.sums), if known. */
  readonly sums: Array<Uint8Array | undefined>
  /** Per item, the parts addressed inside it (a container record, format 3), else undefined. */
  readonly subs: Array<SubEntry[] | undefined>
  /** Per item, its Unit.sampled bits (0 when not sampled). */
  readonly sampled: number[]
  /** `pending` keys of those parts, claimed with their record. */
  readonly partKeys: string[]
  /** Moved records (repack): the pack they come from, and per item its former ordinal, flags and plaintext length. */
  readonly moved?: { fromPackId: Buffer; from: Array<{ ordinal: number; flags: number; plainLength: number }> }
  /** Items left where they lie in shared memory (SealTask.shared), not copied into `input`: per item, its position. */
  readonly shared?: { sab: SharedArrayBuffer; positions: number[] }
  /** Settles with each item's stored length once the batch is sealed and written. */
  readonly sealed: Promise<number[]>
  settle(lengths: number[] | undefined, err?: unknown): void
  /** For a data batch: sends it now if it is still the session's open batch (NewChunk.sealed). */
  asked?: () => void
}

function newBatch(slot: Slot, lane: Lane, moved?: { fromPackId: Buffer }, sab?: SharedArrayBuffer): Batch {
  let resolve!: (v: number[]) => void
  let reject!: (e: unknown) => void
  const sealed = new Promise<number[]>((res, rej) => ((resolve = res), (reject = rej)))
  sealed.catch(() => undefined) // the session records the failure; callers may never ask
  return {
    slot,
    input: Buffer.from(slot.input),
    lane,
    used: 0,
    reserved: 0,
    ids: [],
    keys: [],
    lengths: [],
    sums: [],
    subs: [],
    sampled: [],
    partKeys: [],
    // every field present from the start, in one order: batches of all kinds share one hidden
    // class, so the optimized code that handles them is not thrown away for each new kind
    moved: moved ? { fromPackId: moved.fromPackId, from: [] } : undefined,
    shared: sab ? { sab, positions: [] } : undefined,
    sealed,
    settle: (lengths, err) => (lengths ? resolve(lengths) : reject(err)),
    asked: undefined,
  }
}

/** A block's parts as a worker cut them (CutTask): end offsets, the part ids 32 bytes each, their checksums 16 bytes each. */
interface Cut {
  ends: Uint32Array
  ids: Buffer
  sums: Uint8Array
}

/**
 * A chunk to seal: its plaintext, the XXH3-128 taken where its id was made (SealItems.sums), and
 * for a block stored whole with its parts addressed inside it (format 3) those parts.
 */
interface Unit {
  data: Buffer
  sum?: Uint8Array
  /** SEAL_SAMPLED, with SEAL_INCOMPRESSIBLE when it sampled as random data: the cut task sampled its bytes (0: not sampled). */
  sampled?: number
  subs?: SubEntry[]
  /** The `pending` keys of `subs`, made when they were checked (or made on their claim). */
  subKeys?: string[]
}

/** Units in one shared buffer, sealed where they lie: their batches' `sealed`, for the caller to wait on. */
interface SharedUnits {
  sab: SharedArrayBuffer
  held: Array<Promise<unknown>>
}

/** The SharedArrayBuffer every block lies in, if they all lie in one. */
function inOneSharedBuffer(blocks: ReadonlyArray<{ data: Buffer }>): SharedArrayBuffer | undefined {
  const sab = blocks[0]?.data.buffer
  return sab instanceof SharedArrayBuffer && blocks.every((b) => b.data.buffer === sab) ? sab : undefined
}

interface LaneState {
  current: PackWriter | undefined
  creating: Promise<PackWriter> | undefined
  /** Recipe lane: full packs waiting for the end of the session to be finished. */
  held: PackWriter[]
}

export class LocalBackupSession implements BackupSession {
  readonly blockSize: number
  /** Blocks sealed per worker message (about 1 MiB of plaintext). */
  readonly sealBatch: number
  readonly pointId = randomId(8)
  private readonly free: Slot[] = []
  private allocated = 0
  private readonly slotWaiters: Array<() => void> = []
  /**
   * Chunks put in this session whose pack is not published yet (null: being reserved), but
   * recipes already written into their pack: those are in `heldRecipes`.
   */
  private readonly pending = new Map<string, PackWriter | null>()
  /**
   * Recipes written into a recipe pack, which stays unpublished until the session's end (see the
   * header): one per stored block, so they are kept as a set of id prefixes (chunkTable.ts, ~40
   * bytes each, the chunk table's prefix argument) rather than as `pending` keys (a string and a map
   * entry, ~150 bytes). A backup of 5.7 GB of real files held ~90,000 of them at its end.
   */
  private readonly heldRecipes = new ChunkTable()
  private readonly lanes: Record<Lane, LaneState> = {
    data: { current: undefined, creating: undefined, held: [] },
    recipe: { current: undefined, creating: undefined, held: [] },
  }
  /** Keyed BLAKE3 for chunk ids, made on the first put (the binding loads on first use). */
  private idHasher: ChunkIdHasher | undefined
  /** XXH3-128 of new blocks, taken with their ids (SealItems.sums). */
  private sumHasher: BlockHasher | undefined
  /** Recipes waiting to be sealed (RECIPE_BATCH_BYTES); their ids are claimed in `pending` meanwhile. */
  private recipeQueue: Array<{ data: Buffer; id: Buffer }> = []
  private recipeQueueBytes = 0
  private readonly inFlight = new Set<Promise<void>>()
  /**
   * The data batch being filled: new blocks and parts of several `putBlocks` calls share one seal
   * message. An incremental puts a few changed blocks per call, and one message per call kept the
   * main thread waiting for slots while the workers idled (see PERFORMANCE.md, fourteenth round).
   * Sent when full, when a slot is wanted and none is free, when a result's `sealed` is asked
   * for, and before the session drains.
   */
  private open: Batch | undefined
  /** Open batches sent without a caller waiting (sendOpen): drained before the packs are finished. */
  private readonly sending = new Set<Promise<void>>()
  private readonly finalizing = new Set<Promise<void>>()
  /** Repack mode: the packs published so far (a backup keeps none: their index entries would grow with the disk). */
  private readonly published: PackWriter[] = []
  private readonly maps = new Map<number, SegmentedMapWriter>()
  private mapDirReady: Promise<void> | undefined
  private failure: unknown
  private state: 'open' | 'committing' | 'committed' | 'aborted' = 'open'
  private bytesStored = 0
  private bytesNew = 0
  private tableLoad: Promise<ChunkTable> | undefined
  /** Releases the narrowing of an incremental session (constructor). */
  private readonly widen: (() => void) | undefined

  constructor(
    private readonly ctx: VaultContext,
    private readonly lock: VaultLock,
    private readonly start: GenerationRecord,
    private readonly signal?: AbortSignal,
    /** Repack mode: deduplicate only against this table (fresh packs), and never release the lock. */
    private readonly repack?: { table: ChunkTable },
    /** Vault.beginBackup's `incremental`: the chunk workers narrowed (context.ts narrowPool) until the session ends. */
    incremental = false,
  ) {
    this.blockSize = ctx.blockSize
    if (incremental) this.widen = ctx.narrowPool()
    this.sealBatch = Math.max(1, Math.floor(Math.min(SEAL_BATCH_BYTES, SEAL_BUDGET_BYTES / ctx.maxInFlight) / ctx.blockSize))
  }

  /**
   * The chunk table, brought up to date on first use (after the lock was taken and the generation
   * read, so packs pruned before are never deduplicated against). A session that puts nothing (an
   * unchanged disk) never reads the pack indexes.
   */
  private tableFor(): Promise<ChunkTable> {
    if (this.repack) return Promise.resolve(this.repack.table)
    this.tableLoad ??= this.ctx.table(true)
    return this.tableLoad
  }

  /** `committing`: also while committing (the queued recipes are sealed then). */
  private checkOpen(committing = false): void {
    if (this.failure) throw this.failure
    if (this.state !== 'open' && !(committing && this.state === 'committing')) throw new EngineError('INVALID_INPUT', `This backup session is already ${this.state}.`)
    if (this.signal?.aborted) throw new EngineError('CANCELLED', 'The backup was cancelled.')
  }

  /** Before each step: open, not cancelled, and still holding its lock (a lost lock fails the session at once). */
  private check(committing = false): void {
    this.checkOpen(committing)
    if (this.lock.lostReason()) {
      this.fail(undefined) // records the lock's own error
      throw this.failure
    }
  }

  private fail(err: unknown): void {
    // A session that lost its lock (suspended past the lock lifetime, lock cleared) fails for that
    // reason, not for whatever another process's changes to the vault then broke under it.
    this.failure ??=
      this.lock.lostReason() ??
      (isEngineError(err) ? err : new EngineError('INTERNAL', `Backup to the vault failed: ${(err as Error)?.message ?? String(err)}`, { cause: err }))
    for (const w of this.slotWaiters.splice(0)) w()
  }

  private async takeSlot(): Promise<Slot> {
    for (;;) {
      if (this.failure) throw this.failure
      const s = this.free.pop()
      if (s) return s
      if (this.allocated >= this.ctx.maxInFlight && this.open) {
        // the open batch holds a slot: send it (its slot comes back once it is sealed)
        this.sendOpen()
        continue
      }
      if (this.allocated < this.ctx.maxInFlight) {
        this.allocated++
        return {
          // room for sealBatch plaintexts, or as many sealed records being moved (each up to a block + SEAL_OVERHEAD)
          input: new ArrayBuffer(this.sealBatch * (this.blockSize + SEAL_OVERHEAD)),
          output: new ArrayBuffer(this.sealBatch * (this.blockSize + SEAL_OVERHEAD)),
        }
      }
      await new Promise<void>((r) => this.slotWaiters.push(r))
    }
  }

  /** A slot whose buffers went to a worker that failed: a new one may be allocated in its place; fails the session. */
  private loseSlot(err: unknown): never {
    this.allocated--
    this.slotWaiters.shift()?.()
    this.fail(err)
    throw this.failure
  }

  private giveSlot(s: Slot): void {
    this.free.push(s)
    this.slotWaiters.shift()?.()
  }

  /** Whether the chunk `id` (`key`: its `pending` key) is in a published pack or claimed by this session. */
  private isStored(table: ChunkTable, id: Buffer, key: string): boolean {
    return table.has(id) || this.pending.has(key) || this.heldRecipes.has(id)
  }

  /**
   * Reserves an ordinal in the current pack (rotating to a new pack when it is full). The
   * reservation happens in the same synchronous step as the fullness check, so a pack is never
   * finished while a chunk it promised is still on its way (finalize waits for every reservation).
   */
  private async reserve(maxStoredBytes: number, count: number, lane: Lane): Promise<{ pack: PackWriter; ordinal: number }> {
    const l = this.lanes[lane]
    for (;;) {
      if (this.failure) throw this.failure
      const cur = l.current
      if (cur && !cur.isFull) return { pack: cur, ordinal: cur.reserve(maxStoredBytes, count) }
      if (cur) {
        l.current = undefined
        if (lane === 'recipe') l.held.push(cur)
        else this.startFinalize(cur, lane)
      }
      if (!l.creating) {
        l.creating = PackWriter.create(this.ctx.fs, this.ctx.layout, this.ctx.packTargetBytes, { buffered: lane === 'recipe' })
          .then((w) => {
            l.current = w
            return w
          })
          .finally(() => (l.creating = undefined))
      }
      await l.creating
    }
  }

  async putBlock(data: Buffer, checksum: Buffer): Promise<SessionPutResult> {
    return (await this.putBlocks([{ data, checksum }]))[0]!
  }

  /**
   * Puts several blocks. Each gets its chunk id and is deduplicated against the vault, this session
   * and the blocks before it; the new ones go to the workers in batches of up to `sealBatch` (one
   * message per batch) and each sealed batch reaches its pack with one write. Resolves, with one
   * result per block in order, once every new block is accepted: the `data` buffers may then be
   * reused. Accepted means copied into a batch, or, for a call sealed where its blocks lie
   * (SharedUnits), sealed.
   */
  async putBlocks(blocks: ReadonlyArray<{ data: Buffer; checksum?: Buffer }>): Promise<SessionPutResult[]> {
    this.check()
    for (const b of blocks) {
      if (b.data.length === 0 || b.data.length > this.blockSize) {
        throw new EngineError('INVALID_INPUT', `A block must hold 1..${this.blockSize} bytes (got ${b.data.length}).`)
      }
      if (b.checksum !== undefined && b.checksum.length !== 16) throw new EngineError('INVALID_INPUT', 'The block checksum must be 16 bytes (XXH3-128).')
    }
    if (!this.ctx.usesParts) {
      const hasher = (this.idHasher ??= new ChunkIdHasher(this.ctx.keys.chunkId))
      const sums = (this.sumHasher ??= createBlockHasher())
      // the id and the checksum from the same bytes, in one synchronous step
      const checksums = blocks.map((b) => sums.checksum(b.data))
      const units: Unit[] = blocks.map((b, i) => ({ data: b.data, sum: checksums[i] }))
      const ids = blocks.map((b) => hasher.of(b.data))
      const table = await this.tableFor()
      const results: SessionPutResult[] = new Array<SessionPutResult>(blocks.length)
      await this.putUnits(units, ids, table, results, 'data')
      results.forEach((r, i) => (r.checksum = checksums[i]))
      return results
    }
    // Format 2: new compressible full blocks become parts (deduplicated one by one) and a recipe.
    // The workers hash and cut (CutTask): done here, it made this thread the backup's bottleneck.
    const { ids, cuts, sums, sampled } = await this.cutBlocks(blocks)
    const table = await this.tableFor()
    const results: SessionPutResult[] = new Array<SessionPutResult>(blocks.length)
    const units: Unit[] = []
    const unitIds: Buffer[] = []
    const unitBlock: number[] = [] // the block a unit stands for, or -1 for a part
    const recipes: Array<{ data: Buffer; id: Buffer; block: number }> = []
    const seen = new Set<string>()
    for (let i = 0; i < blocks.length; i++) {
      const id = ids[i]!
      const key = id.toString('latin1')
      if (this.isStored(table, id, key) || seen.has(key)) {
        results[i] = duplicateOf(id)
        continue
      }
      seen.add(key)
      const data = blocks[i]!.data
      // Only full blocks are cut: a part is then always shorter than any recipe's block, so a part's id can never name a recipe.
      const cut = cuts[i]
      if (!cut) {
        units.push({ data, sum: sums.subarray(i * CHECKSUM_BYTES, (i + 1) * CHECKSUM_BYTES), sampled: sampled[i] })
        unitIds.push(id)
        unitBlock.push(i)
        continue
      }
      const subKeys = this.ctx.usesContainers ? this.keysIfAllPartsNew(table, cut, seen) : undefined
      if (subKeys) {
        // Format 3: no part is stored yet (92 % of the cut blocks of real files): the block is one
        // record, one zstd frame, and its parts are addressed inside it for later blocks to share
        const subs: SubEntry[] = []
        for (let k = 0, at = 0; k < cut.ends.length; at = cut.ends[k++]!) {
          seen.add(subKeys[k]!)
          subs.push({ chunkId: cut.ids.subarray(k * 32, k * 32 + 32), offset: at, length: cut.ends[k]! - at })
        }
        units.push({ data, sum: sums.subarray(i * CHECKSUM_BYTES, (i + 1) * CHECKSUM_BYTES), subs, subKeys, sampled: sampled[i] })
        unitIds.push(id)
        unitBlock.push(i)
        continue
      }
      const parts: RecipePart[] = []
      for (let k = 0, at = 0; k < cut.ends.length; at = cut.ends[k++]!) {
        const part = data.subarray(at, cut.ends[k]!)
        const partId = cut.ids.subarray(k * 32, k * 32 + 32)
        parts.push({ id: partId, length: part.length })
        units.push({ data: part, sum: cut.sums.subarray(k * CHECKSUM_BYTES, (k + 1) * CHECKSUM_BYTES) })
        unitIds.push(partId)
        unitBlock.push(-1)
      }
      recipes.push({ data: encodeRecipe(parts), id, block: i })
    }
    const unitResults: SessionPutResult[] = new Array<SessionPutResult>(units.length)
    // Blocks in one shared buffer (the backup's read buffer) are sealed where they lie, with no copy
    // into a batch, when there are enough new bytes to fill batches of their own: this call then
    // resolves only once those batches are sealed (its contract: the caller may reuse `data` once it
    // resolves). Fewer go into the open batch, shared by calls (an incremental's few changed blocks).
    const sab = units.reduce((sum, u) => sum + u.data.length, 0) >= SHARED_SEAL_MIN_BYTES ? inOneSharedBuffer(blocks) : undefined
    const held: Array<Promise<unknown>> = []
    const put = await Promise.allSettled([this.putUnits(units, unitIds, table, unitResults, 'data', sab ? { sab, held } : undefined)])
    // also on failure: no worker may still read the caller's buffer once this call settles
    const failed = [...put, ...(await Promise.allSettled(held))].find((r): r is PromiseRejectedResult => r.status === 'rejected')
    if (failed) throw failed.reason
    unitBlock.forEach((b, u) => {
      if (b >= 0) results[b] = unitResults[u]!
    })
    // every part is accepted: queue the recipes (a concurrent call may have claimed the same block meanwhile)
    for (const r of recipes) {
      const key = r.id.toString('latin1')
      if (this.isStored(table, r.id, key)) {
        results[r.block] = duplicateOf(r.id)
        continue
      }
      this.pending.set(key, null)
      this.recipeQueue.push({ data: r.data, id: r.id })
      this.recipeQueueBytes += r.data.length + SEAL_OVERHEAD
      results[r.block] = { chunkId: r.id, isNew: true, storedBytes: 0 }
    }
    if (this.recipeQueueBytes >= RECIPE_BATCH_BYTES) await this.flushRecipes()
    results.forEach((r, i) => (r.checksum = sums.subarray(i * CHECKSUM_BYTES, (i + 1) * CHECKSUM_BYTES)))
    return results
  }

  /** The `pending` keys of `cut`'s parts when none is stored, claimed by this session, or met earlier in this call (`seen`). */
  private keysIfAllPartsNew(table: ChunkTable, cut: Cut, seen: Set<string>): string[] | undefined {
    const keys: string[] = []
    for (let k = 0; k < cut.ends.length; k++) {
      const partId = cut.ids.subarray(k * 32, k * 32 + 32)
      const key = partId.toString('latin1')
      if (seen.has(key) || this.isStored(table, partId, key)) return undefined
      keys.push(key)
    }
    return keys
  }

  /** Seals the queued recipes (into recipe packs, published last: see the header). */
  private async flushRecipes(): Promise<void> {
    const batch = this.recipeQueue
    this.recipeQueue = []
    this.recipeQueueBytes = 0
    if (batch.length === 0) return
    const table = await this.tableFor()
    // putBatch claims the ids again, in the same synchronous step as its own check
    for (const r of batch) this.pending.delete(r.id.toString('latin1'))
    const results: SessionPutResult[] = new Array<SessionPutResult>(batch.length)
    await this.putUnits(batch, batch.map((r) => r.id), table, results, 'recipe')
  }

  /**
   * Chunk ids of `blocks`, and the parts of those a worker cut (CutTask), a slot's bytes per message.
   * Only full blocks that look compressible are cut (parts.ts).
   */
  private async cutBlocks(blocks: ReadonlyArray<{ data: Buffer }>): Promise<{ ids: Buffer[]; cuts: Array<Cut | undefined>; sums: Buffer; sampled: number[] }> {
    const capacity = this.sealBatch * (this.blockSize + SEAL_OVERHEAD)
    const ids = new Array<Buffer>(blocks.length)
    const cuts = new Array<Cut | undefined>(blocks.length)
    const sums = Buffer.alloc(blocks.length * CHECKSUM_BYTES)
    const sampled = new Array<number>(blocks.length).fill(0)
    for (let from = 0; from < blocks.length; ) {
      let to = from
      let bytes = 0
      while (to < blocks.length && bytes + blocks[to]!.data.length <= capacity) bytes += blocks[to++]!.data.length
      const lengths: number[] = []
      for (let i = from; i < to; i++) lengths.push(blocks[i]!.data.length)
      const sab = inOneSharedBuffer(blocks.slice(from, to))
      let r: ChunkTaskResult
      if (sab) {
        // the blocks are in shared memory (the backup's read buffers), which stays unchanged until
        // this call resolves (putBlocks' contract): the worker reads them there, no slot, no copy
        const positions: number[] = []
        for (let i = from; i < to; i++) positions.push(blocks[i]!.data.byteOffset)
        const { result } = await this.ctx.pool().submit({ kind: 'cut', shared: { sab, positions }, lengths, blockSize: this.blockSize })
        r = await result
      } else {
        const slot = await this.takeSlot()
        const input = Buffer.from(slot.input)
        for (let i = from, pos = 0; i < to; i++) pos += blocks[i]!.data.copy(input, pos)
        try {
          const { result } = await this.ctx.pool().submit({ kind: 'cut', input: slot.input, lengths, blockSize: this.blockSize }, [slot.input])
          r = await result
        } catch (err) {
          this.loseSlot(err) // its input was transferred or lost
        }
        if (r.kind !== 'cut' || !r.input) throw new EngineError('INTERNAL', 'unexpected worker reply')
        this.giveSlot({ input: r.input, output: slot.output })
      }
      if (r.kind !== 'cut' || r.partCounts.length !== to - from || r.sums.length !== (to - from) * CHECKSUM_BYTES || r.sampled.length !== to - from) throw new EngineError('INTERNAL', 'unexpected worker reply')
      sums.set(r.sums, from * CHECKSUM_BYTES)
      for (let i = from; i < to; i++) sampled[i] = r.sampled[i - from]!
      const idBytes = Buffer.from(r.ids.buffer, r.ids.byteOffset, r.ids.byteLength)
      const partIdBytes = Buffer.from(r.partIds.buffer, r.partIds.byteOffset, r.partIds.byteLength)
      for (let i = from, e = 0; i < to; i++) {
        const k = i - from
        ids[i] = idBytes.subarray(k * 32, k * 32 + 32)
        const n = r.partCounts[k]!
        if (n === 0) continue
        cuts[i] = { ends: r.ends.subarray(e, e + n), ids: partIdBytes.subarray(e * 32, (e + n) * 32), sums: r.partSums.subarray(e * CHECKSUM_BYTES, (e + n) * CHECKSUM_BYTES) }
        e += n
      }
      from = to
    }
    return { ids, cuts, sums, sampled }
  }

  /** Puts chunks (blocks, parts or recipes) in batches of at most a slot's bytes. */
  private async putUnits(units: ReadonlyArray<Unit>, ids: Buffer[], table: ChunkTable, results: SessionPutResult[], lane: Lane, shared?: SharedUnits): Promise<void> {
    const capacity = this.sealBatch * (this.blockSize + SEAL_OVERHEAD) // a slot's input and output (takeSlot)
    for (let from = 0; from < units.length; ) {
      let to = from
      let bytes = 0
      while (to < units.length && bytes + units[to]!.data.length + SEAL_OVERHEAD <= capacity) bytes += units[to++]!.data.length + SEAL_OVERHEAD
      await this.putBatch(units, ids, from, to, table, results, undefined, lane, shared)
      from = to
    }
  }

  /**
   * Repack: moves sealed records of the pack `fromPackId` into this session's packs without
   * recompressing them. Each is opened where it was (decrypt, decompress, keyed BLAKE3 = its id) and
   * encrypted again for its new place in a worker, then checked like every new record (I9). Batches
   * are cut by count (`sealBatch`) and by bytes (a slot's input). Resolves once every record is
   * accepted; a record that does not open fails the session with CHUNK_CORRUPT.
   */
  async moveRecords(records: ReadonlyArray<MovedRecord>, fromPackId: Buffer): Promise<void> {
    this.check()
    for (const r of records) {
      if (r.record.length < SEAL_OVERHEAD || r.record.length > this.blockSize + SEAL_OVERHEAD || r.chunkId.length !== 32) {
        throw new EngineError('INVALID_INPUT', `A moved record must hold ${SEAL_OVERHEAD}..${this.blockSize + SEAL_OVERHEAD} bytes and a 32-byte chunk id.`)
      }
    }
    const blocks = records.map((r) => ({ data: r.record, subs: r.subs }))
    const ids = records.map((r) => r.chunkId)
    const results: SessionPutResult[] = new Array<SessionPutResult>(records.length)
    const table = await this.tableFor()
    const capacity = this.sealBatch * (this.blockSize + SEAL_OVERHEAD) // a slot's input (takeSlot)
    for (let from = 0; from < records.length; ) {
      let to = from
      let bytes = 0
      while (to < records.length && to - from < this.sealBatch && bytes + records[to]!.record.length <= capacity) bytes += records[to++]!.record.length
      await this.putBatch(blocks, ids, from, to, table, results, { fromPackId, records })
      from = to
    }
  }

  private async putBatch(
    blocks: ReadonlyArray<Unit>,
    ids: Buffer[],
    from: number,
    to: number,
    table: ChunkTable,
    results: SessionPutResult[],
    /** Set when `blocks` are sealed records being moved (moveRecords). */
    moved?: { fromPackId: Buffer; records: ReadonlyArray<MovedRecord> },
    lane: Lane = 'data',
    /** The units lie in this shared buffer: sealed there, in batches of their own (SharedUnits). */
    shared?: SharedUnits,
  ): Promise<void> {
    // pending's keys, made once per chunk (a string per lookup was most of a part's garbage)
    const keyAt: string[] = new Array<string>(to - from)
    const known = (i: number): boolean => this.isStored(table, ids[i]!, keyAt[i - from]!)
    let fresh: number[] = []
    const inBatch = new Set<string>()
    for (let i = from; i < to; i++) {
      const key = ids[i]!.toString('latin1')
      keyAt[i - from] = key
      if (known(i) || inBatch.has(key)) results[i] = duplicateOf(ids[i]!)
      else {
        inBatch.add(key)
        fresh.push(i)
      }
    }
    if (fresh.length === 0) return
    const add = (b: Batch, i: number): void => {
      const data = blocks[i]!.data
      const key = keyAt[i - from]!
      this.pending.set(key, null)
      if (b.shared) b.shared.positions.push(data.byteOffset)
      else b.used += data.copy(b.input, b.used)
      b.reserved += data.length + SEAL_OVERHEAD
      b.ids.push(ids[i]!)
      b.keys.push(key)
      b.lengths.push(data.length)
      b.sums.push(blocks[i]!.sum)
      b.sampled.push(blocks[i]!.sampled ?? 0)
      const { subs, subKeys } = blocks[i]!
      b.subs.push(subs)
      subs?.forEach((sub, k) => {
        const partKey = subKeys?.[k] ?? Buffer.from(sub.chunkId.buffer, sub.chunkId.byteOffset, 32).toString('latin1')
        this.pending.set(partKey, null)
        b.partKeys.push(partKey)
      })
      if (moved) {
        const r = moved.records[i]!
        b.moved!.from.push({ ordinal: r.ordinal, flags: r.flags, plainLength: r.plainLength })
      }
      this.bytesNew += data.length
      results[i] = new NewChunk(ids[i]!, b, b.ids.length - 1)
    }
    // at most half a pack, so packs (which take whole batches) stay near their target size
    const capacity = Math.max(this.blockSize + SEAL_OVERHEAD, Math.min(this.sealBatch * (this.blockSize + SEAL_OVERHEAD), this.ctx.packTargetBytes / 2))
    if (lane === 'data' && !moved && shared) {
      // batches of this call's own, sealed where the units lie; the caller waits for `held`
      let b: Batch | undefined
      const send = async (full: Batch): Promise<void> => {
        b = undefined
        if (full.ids.length === 0) return this.giveSlot(full.slot)
        shared.held.push(full.sealed)
        await this.submitBatch(full)
      }
      for (const i of fresh) {
        const need = blocks[i]!.data.length + SEAL_OVERHEAD
        if (b && b.reserved + need > capacity) await send(b)
        b ??= newBatch(await this.takeSlot(), 'data', undefined, shared.sab)
        // re-checked after any wait, then claimed in the same synchronous step
        if (known(i)) results[i] = duplicateOf(ids[i]!)
        else add(b, i)
      }
      if (b) await send(b)
      return
    }
    if (lane === 'data' && !moved) {
      // into the open batch, which is sent once it is full
      for (const i of fresh) {
        const need = blocks[i]!.data.length + SEAL_OVERHEAD
        for (;;) {
          const b = this.open
          if (b && b.reserved + need <= capacity) break
          if (b) {
            await this.submitBatch(this.detachOpen()!)
            continue
          }
          const slot = await this.takeSlot()
          if (this.open) this.giveSlot(slot) // another call opened one meanwhile
          else this.openBatch(slot)
        }
        // re-checked after any wait, then claimed in the same synchronous step
        if (known(i)) results[i] = duplicateOf(ids[i]!)
        else add(this.open!, i)
      }
      if (this.open && this.open.reserved + this.blockSize + SEAL_OVERHEAD > capacity) await this.submitBatch(this.detachOpen()!)
      return
    }
    const slot = await this.takeSlot()
    // Re-check after waiting, then claim the ids synchronously so concurrent puts of the same block dedup.
    fresh = fresh.filter((i) => {
      if (!known(i)) return true
      results[i] = duplicateOf(ids[i]!)
      return false
    })
    if (fresh.length === 0) {
      this.giveSlot(slot)
      return
    }
    const b = newBatch(slot, lane, moved)
    for (const i of fresh) add(b, i)
    await this.submitBatch(b)
  }

  /** Makes `slot` the open data batch. */
  private openBatch(slot: Slot): void {
    const b = newBatch(slot, 'data')
    b.asked = () => {
      if (this.open === b) this.sendOpen()
    }
    this.open = b
  }

  /** Takes the open data batch (to send it): puts go to a new one from now on. */
  private detachOpen(): Batch | undefined {
    const b = this.open
    this.open = undefined
    return b
  }

  /** Sends the open data batch without waiting (a failure fails the session). */
  private sendOpen(): void {
    const b = this.detachOpen()
    if (!b) return
    const p = this.submitBatch(b).catch((err: unknown) => this.fail(err))
    this.sending.add(p)
    p.finally(() => this.sending.delete(p)).catch(() => undefined) // p has its catch: never rejects
  }

  /**
   * Reserves pack space for a batch and sends it to a worker. Resolves once a worker queue took it;
   * the seal, the I9 re-check and the pack write follow (tracked in `inFlight`, settling the batch).
   */
  private async submitBatch(b: Batch): Promise<void> {
    const count = b.ids.length
    let pack: PackWriter
    let first: number
    try {
      // the recipe lane and the last data batch are sent while committing
      this.check(this.state === 'committing')
      ;({ pack, ordinal: first } = await this.reserve(b.reserved, count, b.lane))
    } catch (err) {
      for (const key of b.keys) this.pending.delete(key)
      for (const key of b.partKeys) this.pending.delete(key)
      this.giveSlot(b.slot)
      b.settle(undefined, err)
      this.fail(err) // other calls may hold results in this batch: the session cannot commit
      throw err
    }
    for (const key of b.keys) this.pending.set(key, pack)
    const fields = new Uint32Array(count * SEAL_ITEM_WORDS)
    const chunkIds = new Uint8Array(count * 32)
    const sums = b.sums.every((s) => s !== undefined) ? new Uint8Array(count * CHECKSUM_BYTES) : undefined
    for (let n = 0; n < count; n++) {
      sums?.set(b.sums[n]!, n * CHECKSUM_BYTES)
      fields[n * SEAL_ITEM_WORDS] = b.lengths[n]!
      fields[n * SEAL_ITEM_WORDS + 1] = first + n
      const from = b.moved?.from[n]
      if (from) {
        fields[n * SEAL_ITEM_WORDS + 2] = from.ordinal
        fields[n * SEAL_ITEM_WORDS + 3] = from.flags
      } else {
        fields[n * SEAL_ITEM_WORDS + 3] = (b.subs[n] ? FLAG_CONTAINER : 0) | b.sampled[n]!
      }
      chunkIds.set(b.ids[n]!, n * 32)
    }
    const hooks = this.ctx.hooks
    const moved = b.moved
    const accepted = this.ctx
      .pool()
      .submit(
        {
          // every key present, in one order, whatever the batch: the worker's seal handler then
          // sees tasks of a single shape (absent fields are undefined)
          kind: 'seal',
          input: b.shared ? undefined : b.slot.input,
          shared: b.shared ? { sab: b.shared.sab, positions: Uint32Array.from(b.shared.positions) } : undefined,
          items: { fields, chunkIds, sums },
          recipes: b.lane === 'recipe',
          output: b.slot.output,
          packId: pack.id,
          fromPackId: moved ? new Uint8Array(moved.fromPackId) : undefined,
        },
        b.shared ? [b.slot.output] : [b.slot.input, b.slot.output],
      )
      .then(({ result }) => {
        const sealed = result.then(async (r) => {
          if (r.kind !== 'seal' || r.stored.length !== 2 * count) throw new EngineError('INTERNAL', 'unexpected worker reply')
          const input = b.shared ? b.slot.input : r.input // a shared batch's input never left
          if (!input) throw new EngineError('INTERNAL', 'unexpected worker reply')
          const back: Slot = { input, output: r.output }
          try {
            const failed = r.failures[0]
            if (failed) {
              const chunkId = b.ids[failed.item]?.toString('hex') ?? `#${failed.item}`
              throw new EngineError(
                'CHUNK_CORRUPT',
                moved
                  ? `Chunk ${chunkId} could not be moved out of pack ${moved.fromPackId.toString('hex')}: it ${failed.error}. Nothing was deleted. Run "tresor verify --read-data" to see which recovery points it affects.`
                  : `A new chunk did not check out before it was written: chunk ${chunkId} (${failed.error}). Nothing was committed; this points to faulty memory or a software defect. Run the backup again.`,
              )
            }
            const out = Buffer.from(r.output)
            const entries: PackIndexEntry[] = []
            const lengths: number[] = new Array<number>(count)
            // the worker's check spans, cut again from the same lengths
            const spanEnds: number[] = []
            const spans = new CheckSpans((_start, end) => spanEnds.push(end))
            let pos = 0
            for (let n = 0; n < count; n++) {
              const storedLength = r.stored[2 * n]!
              const chunkId = b.ids[n]!
              const plainLength = moved ? moved.from[n]!.plainLength : b.lengths[n]!
              entries.push({ chunkId, offset: 0, ordinal: first + n, flags: r.stored[2 * n + 1]!, plainLength, length: storedLength })
              lengths[n] = storedLength
              pos += storedLength
              spans.add(storedLength)
            }
            spans.finish()
            if (pos > out.length || spanEnds.length !== r.checks.length) throw new EngineError('INTERNAL', 'unexpected worker reply')
            if (hooks.afterSeal) for (let n = 0, at = 0; n < count; at += lengths[n++]!) hooks.afterSeal(out.subarray(at, at + lengths[n]!))
            // I9: each span's check value again, right before its bytes are staged for the pack
            await pack.append(out.subarray(0, pos), entries, b.reserved, {
              ends: spanEnds,
              verify: (span, n) => {
                if (recordCheck(span) === r.checks[n]) return
                // the span's records, found from the lengths only on this path
                const start = n > 0 ? spanEnds[n - 1]! : 0
                let first = 0
                for (let at = 0; at < start; at += lengths[first++]!);
                let last = first
                for (let at = start + lengths[first]!; at < spanEnds[n]!; at += lengths[++last]!);
                const others = last - first
                throw new EngineError(
                  'CHUNK_CORRUPT',
                  `A new chunk did not check out before it was written: chunk ${b.ids[first]!.toString('hex')}${others > 0 ? ` or one of the ${others} written after it` : ''} (changed in memory after it was verified). Nothing was committed; this points to faulty memory or a software defect. Run the backup again.`,
                )
              },
            }, b.partKeys.length > 0 ? b.subs : undefined)
            if (b.lane === 'recipe') {
              // written into a held recipe pack: claimed from now on by the compact set (same tick)
              for (let n = 0; n < count; n++) {
                this.heldRecipes.insert(b.ids[n]!, HELD_RECIPE)
                this.pending.delete(b.keys[n]!)
              }
            }
            this.bytesStored += pos
            return lengths
          } finally {
            this.giveSlot(back)
          }
        })
        const tracked = sealed.then(
          (lengths) => b.settle(lengths),
          (err: unknown) => {
            b.settle(undefined, err)
            pack.unreserve(0)
            this.fail(err)
          },
        )
        this.inFlight.add(tracked)
        tracked.finally(() => this.inFlight.delete(tracked)).catch(() => undefined) // tracked never rejects
      })
    try {
      await accepted
    } catch (err) {
      b.settle(undefined, err)
      this.loseSlot(err) // its buffers were detached or never sent
    }
  }

  private startFinalize(pack: PackWriter, lane: Lane): void {
    const p = this.finalize(pack, lane).catch(async (err: unknown) => {
      this.fail(err)
      await pack.discard().catch(() => undefined)
    })
    this.finalizing.add(p)
    p.finally(() => this.finalizing.delete(p)).catch(() => undefined) // p never rejects
  }

  /** Finish (index, trailer, one fsync) → publish → visible to dedup. Records were verified when sealed (I9). */
  private async finalize(pack: PackWriter, lane: Lane): Promise<void> {
    // wait for this pack's outstanding seals
    while (pack.recordsAppended < pack.chunkCount) {
      if (this.failure) throw this.failure
      await Promise.race([...this.inFlight, new Promise((r) => setTimeout(r, 50))])
    }
    if (this.failure) throw this.failure
    const size = await pack.finish(this.ctx.keys)
    await pack.publish()
    this.bytesStored += size - pack.recordBytes
    const index = pack.indexBytes
    // While committing nothing more is deduplicated against the table: the last packs are left to
    // the next load (VaultContext.table adds the packs it does not know). Inserting them grew the
    // table at the very end of a large backup, and a growth holds the old slots beside the new
    // (+28 MiB, the peak of a 6.2 GB backup of real files).
    if (this.state !== 'committing' || this.repack) {
      const table = await this.tableFor()
      table.insertIndex(index, table.addPack({ id: pack.id, hex: pack.hex, sizeBytes: size, chunkCount: pack.entriesAppended }))
    }
    // a recipe pack's ids left `pending` when they were written (heldRecipes claims them): no key to make
    if (lane === 'data') for (let i = 0, p = 4; i < pack.entriesAppended; i++, p += INDEX_ENTRY_BYTES) this.pending.delete(index.toString('latin1', p, p + 32))
    // only a repack reads them back (flushPacks); a backup kept an object per chunk until its end
    if (this.repack) this.published.push(pack)
  }

  blockMapWriter(disk: Pick<PointDisk, 'index' | 'blockCount'>): BlockMapWriter {
    this.check()
    if (this.maps.has(disk.index)) throw new EngineError('INVALID_INPUT', `Disk ${disk.index} already has a block map in this session.`)
    const w = new SegmentedMapWriter(this.ctx.fs, this.ctx.layout, this.ctx.keys, this.pointId, disk.index, disk.blockCount, this.ctx.segmentEntries, () =>
      this.ensureMapDir(),
    )
    this.maps.set(disk.index, w)
    return w
  }

  async copyBlockMap(from: { pointId: string; diskIndex: number }, disk: Pick<PointDisk, 'index' | 'blockCount'>): Promise<void> {
    this.check()
    const source = await readManifest(this.ctx.fs, this.ctx.layout, this.ctx.keys, from.pointId)
    const info = source.maps.find((d) => d.diskIndex === from.diskIndex)
    if (!info) throw new EngineError('NOT_FOUND', `Recovery point ${from.pointId} has no disk ${from.diskIndex}.`)
    if (info.blockCount !== disk.blockCount) {
      throw new EngineError('INVALID_INPUT', `Disk ${from.diskIndex} of point ${from.pointId} has ${info.blockCount} blocks, not ${disk.blockCount}.`)
    }
    const writer = this.blockMapWriter(disk) as SegmentedMapWriter
    if (info.segmentEntries === writer.segmentEntries) {
      await copySegmentedMap(this.ctx.fs, this.ctx.layout, this.ctx.keys, from.pointId, info, writer)
    } else {
      // A vault whose segment size changed since that point: entry by entry.
      for await (const e of readSegmentedMap(this.ctx.fs, this.ctx.layout, this.ctx.keys, from.pointId, info)) writer.append(e)
    }
    await writer.finish()
  }

  private ensureMapDir(): Promise<void> {
    this.mapDirReady ??= (async () => {
      await this.ctx.fs.mkdir(mapDir(this.ctx.layout, this.pointId))
      await this.ctx.fs.syncDir(this.ctx.layout.maps)
    })()
    return this.mapDirReady
  }

  private async drain(): Promise<void> {
    const open = this.detachOpen()
    if (open) await this.submitBatch(open)
    while (this.sending.size > 0) await Promise.all([...this.sending])
    if (this.failure) return
    await this.flushRecipes()
    while (this.inFlight.size > 0) await Promise.all([...this.inFlight])
    for (const l of Object.values(this.lanes)) while (l.creating) await l.creating.catch(() => undefined)
    // data packs first; recipe packs only once every data pack is published (see the header)
    for (const lane of ['data', 'recipe'] as const) {
      const l = this.lanes[lane]
      const last = l.current
      l.current = undefined
      for (const pack of [...l.held.splice(0), ...(last ? [last] : [])]) {
        if (pack.chunkCount > 0) this.startFinalize(pack, lane)
        else await pack.discard()
      }
      while (this.finalizing.size > 0) await Promise.all([...this.finalizing])
      if (this.failure) return
    }
  }

  async commit(point: NewPoint): Promise<PointManifest> {
    this.checkOpen() // the lock is checked below, where a failure also cleans up
    this.state = 'committing'
    let manifestWritten = false
    try {
      await this.drain()
      if (this.failure) throw this.failure
      for (const d of point.disks) {
        const w = this.maps.get(d.index)
        if (!w || !w.isFinished) throw new EngineError('INVALID_INPUT', `Disk ${d.index} ("${d.name}") has no finished block map.`)
        if (w.blockCount !== d.blockCount) throw new EngineError('INVALID_INPUT', `Disk ${d.index}: block map has ${w.blockCount} entries, the point says ${d.blockCount}.`)
      }
      for (const idx of this.maps.keys()) {
        if (!point.disks.some((d) => d.index === idx)) throw new EngineError('INVALID_INPUT', `A block map was written for disk ${idx}, which the point does not list.`)
      }
      // I13: a session that lost its lock (or whose vault was pruned meanwhile) must not commit.
      await this.lock.assertHeld()
      const now = await readGeneration(this.ctx.fs, this.ctx.layout, this.ctx.keys, this.ctx.vaultId)
      if (now.lastPrune > this.start.generation) {
        throw new EngineError('VAULT_LOCK_LOST', 'The vault was pruned while this backup ran (its lock was lost or broken). Nothing was committed; run the backup again.')
      }
      const mapBytes = [...this.maps.values()].reduce((s, w) => s + w.bytes, 0)
      const manifest: PointManifest = {
        ...point,
        id: this.pointId,
        blockSize: this.blockSize,
        stats: { ...point.stats, bytesNew: point.stats.bytesNew, bytesStored: 0 },
      }
      const stored: StoredManifest = {
        formatVersion: 1,
        point: manifest,
        maps: [...this.maps.values()].map((w) => w.info).sort((a, b) => a.diskIndex - b.diskIndex),
        baseGeneration: this.start.generation,
      }
      // The generation goes up first: a failure after this point leaves at most an unused number.
      await bumpGeneration(this.ctx.fs, this.ctx.layout, this.ctx.keys, this.ctx.vaultId, 'commit')
      manifest.stats.bytesStored = this.bytesStored + mapBytes + 512
      manifestWritten = true
      const manifestBytes = await writeManifest(this.ctx.fs, this.ctx.layout, this.ctx.keys, stored)
      manifest.stats.bytesStored = this.bytesStored + mapBytes + manifestBytes
      this.state = 'committed'
      this.ctx.forgetManifest(this.pointId)
      return manifest
    } catch (err) {
      this.fail(err)
      // A manifest that reached its final name but not durably (failed rename/dir fsync) is taken
      // back; if even that fails, the block maps stay so the visible point remains whole.
      let keepMaps = false
      if (manifestWritten) {
        const path = manifestPath(this.ctx.layout, this.pointId)
        try {
          if (await this.ctx.fs.stat(path)) await unlinkDurable(this.ctx.fs, path)
        } catch {
          keepMaps = true
        }
      }
      await this.cleanup(keepMaps)
      this.state = 'aborted'
      throw this.failure
    } finally {
      this.widen?.()
      if (!this.repack) await this.lock.release()
    }
  }

  /** Repack mode: makes every put chunk durable in published packs; returns them. */
  async flushPacks(): Promise<PackWriter[]> {
    await this.drain()
    if (this.failure) throw this.failure
    return [...this.published]
  }

  /** Bytes of new chunks (plaintext) and stored bytes so far. */
  progress(): { bytesNew: number; bytesStored: number } {
    return { bytesNew: this.bytesNew, bytesStored: this.bytesStored }
  }

  private async cleanup(keepMaps = false): Promise<void> {
    this.fail(new EngineError('CANCELLED', 'The backup session was aborted.'))
    this.recipeQueue = []
    this.detachOpen()?.settle(undefined, this.failure)
    await Promise.allSettled([...this.sending])
    await Promise.allSettled([...this.inFlight])
    for (const l of Object.values(this.lanes)) {
      if (l.creating) await l.creating.catch(() => undefined)
      for (const pack of [...l.held.splice(0), ...(l.current ? [l.current] : [])]) await pack.discard()
      l.current = undefined
    }
    await Promise.allSettled([...this.finalizing])
    for (const w of this.maps.values()) await w.finish().catch(() => undefined)
    // Published packs stay (durable, unreferenced): prune reclaims them. Map segments are removed.
    if (keepMaps) return
    const dir = mapDir(this.ctx.layout, this.pointId)
    try {
      for (const name of await this.ctx.fs.readdir(dir)) await this.ctx.fs.unlink(`${dir}/${name}`).catch(() => undefined)
      await this.ctx.fs.rmdir(dir).catch(() => undefined)
    } catch {
      // no map written
    }
  }

  async abort(): Promise<void> {
    if (this.state === 'aborted' || this.state === 'committed') return
    this.state = 'aborted'
    try {
      await this.cleanup()
    } finally {
      this.widen?.()
      if (!this.repack) await this.lock.release()
    }
  }
}
