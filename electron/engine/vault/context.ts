/** What every part of an open vault shares: fs, paths, keys, params, the worker pool and the chunk table. */
import { join } from 'node:path'
import { WorkerPool } from '../workers/pool.js'
import type { ChunkTask, ChunkTaskResult } from './chunkTasks.js'
import { CHUNK_WORKER_NAME, chunkWorkerUrl, defaultChunkWorkers } from './chunkWorkers.js'
import type { CodecConfig } from './chunkCodec.js'
import { ChunkTable } from './chunkTable.js'
import type { VaultConfig } from './config.js'
import type { VaultKeys } from './crypto.js'
import { readGeneration } from './generation.js'
import { PACK_ID_RE, packPath, type VaultLayout } from './layout.js'
import { readPackIndex, readPackIndexBytes, readPackTrailer, type PackIndexEntry } from './pack.js'
import type { Clock, OpenVaultOptions, VaultTestHooks } from './types.js'
import { readdirIfExists, type VaultFs } from './vaultFs.js'
import { boundedAll } from '../io/bounded.js'

/**
 * How long sealing work waits for a narrowed pool's busy workers before one more takes tasks:
 * longer than a 1 % change keeps one worker busy (~0.1–0.2 s on the bench disk, which one worker
 * seals sooner than two), shorter than the start of a worker's share of a large change is worth.
 */
const GROW_AFTER_MS = 250

export interface DamagedPack {
  hex: string
  error: unknown
}

export class VaultContext {
  readonly blockSize: number
  readonly packTargetBytes: number
  readonly segmentEntries: number
  readonly vaultId: string
  readonly maxInFlight: number
  readonly workerCount: number
  readonly hooks: VaultTestHooks
  /** Format 2: compressible blocks are stored as content-defined parts plus a recipe (parts.ts). */
  readonly usesParts: boolean
  /** Format 3: a cut block none of whose parts is stored yet is stored whole, its parts addressed inside it (FORMAT.md "Container"). */
  readonly usesContainers: boolean
  private poolInstance: WorkerPool<ChunkTask, ChunkTaskResult> | undefined
  /** Holders of `narrowPool`, and the pool's own narrowing while there are any. */
  private narrowHolds = 0
  private poolNarrowing: (() => void) | undefined
  private tableInstance: ChunkTable | undefined
  private tableLastPrune = -1
  private loading: Promise<ChunkTable> | undefined
  damagedPacks: DamagedPack[] = []
  private readonly manifestCache = new Map<string, unknown>()

  constructor(
    readonly fs: VaultFs,
    readonly layout: VaultLayout,
    readonly keys: VaultKeys,
    readonly config: VaultConfig,
    readonly clock: Clock,
    readonly options: OpenVaultOptions,
  ) {
    this.blockSize = config.params.blockSize
    this.packTargetBytes = config.params.packTargetBytes
    this.segmentEntries = config.params.mapSegmentEntries
    this.vaultId = config.vaultId
    this.workerCount = Math.max(1, options.workers ?? defaultChunkWorkers())
    this.maxInFlight = Math.max(1, options.maxBlocksInFlight ?? 2 * this.workerCount)
    this.hooks = options.testHooks ?? {}
    this.usesParts = config.formatVersion >= 2
    this.usesContainers = config.formatVersion >= 3
  }

  pool(): WorkerPool<ChunkTask, ChunkTaskResult> {
    if (!this.poolInstance) {
      const workerData: CodecConfig = {
        dataKey: this.keys.data,
        chunkIdKey: this.keys.chunkId,
        blockSize: this.blockSize,
        compressionLevel: this.config.params.compressionLevel,
        corruptCompressor: this.hooks.corruptCompressor ?? false,
      }
      this.poolInstance = new WorkerPool<ChunkTask, ChunkTaskResult>(chunkWorkerUrl(), {
        size: this.workerCount,
        maxQueue: this.workerCount * 2,
        workerData,
        name: CHUNK_WORKER_NAME,
        inline: async () => (await import('./chunkHandler.js')).chunkTaskHandler(workerData),
      })
      if (this.narrowHolds > 0) this.poolNarrowing = this.poolInstance.narrow(GROW_AFTER_MS)
    }
    return this.poolInstance
  }

  /**
   * Narrows the chunk workers (pool.ts `narrow`) until the returned release is called, now or when
   * the pool is made: for a backup whose disks mostly match an earlier point. Idempotent release.
   */
  narrowPool(): () => void {
    if (this.narrowHolds++ === 0 && this.poolInstance) this.poolNarrowing = this.poolInstance.narrow(GROW_AFTER_MS)
    let released = false
    return () => {
      if (released) return
      released = true
      if (--this.narrowHolds === 0) {
        this.poolNarrowing?.()
        this.poolNarrowing = undefined
      }
    }
  }

  cachedManifest<T>(id: string): T | undefined {
    return this.manifestCache.get(id) as T | undefined
  }

  cacheManifest(id: string, m: unknown): void {
    if (this.manifestCache.size > 256) this.manifestCache.clear()
    this.manifestCache.set(id, m)
  }

  forgetManifest(id: string): void {
    this.manifestCache.delete(id)
  }

  /** Drops the chunk table (after a prune in this process). */
  invalidateTable(): void {
    this.tableInstance = undefined
    this.tableLastPrune = -1
  }

  /**
   * Room in `table` for the index entries of packs `hexes`, counted from their trailers (two small
   * reads a pack, nothing decrypted), so that adding them grows no segment. A pack whose trailer
   * cannot be read counts for nothing here; reading its index reports it.
   */
  async reserveFor(table: ChunkTable, hexes: string[]): Promise<void> {
    const counts = await boundedAll(hexes, PACKS_AT_ONCE, (hex) =>
      readPackTrailer(this.fs, packPath(this.layout, hex), hex).then(
        (t) => t.entries,
        () => 0,
      ),
    )
    table.reserve(counts.reduce((sum, n) => sum + n, 0))
  }

  /** The checked index of pack `hex` as decrypted (for `ChunkTable.addPackIndex`). */
  packIndexBytes(hex: string): Promise<{ index: Buffer; count: number; sizeBytes: number; indexOffset: number }> {
    return readPackIndexBytes(this.fs, packPath(this.layout, hex), hex, this.keys, this.blockSize)
  }

  /** The entries of pack `hex`'s index, as objects. */
  async packEntries(hex: string): Promise<PackIndexEntry[]> {
    return (await readPackIndex(this.fs, packPath(this.layout, hex), hex, this.keys, this.blockSize)).entries
  }

  /** Lists pack ids present in the vault. */
  async listPacks(): Promise<string[]> {
    const out: string[] = []
    for (const sub of await readdirIfExists(this.fs, this.layout.packs)) {
      if (!/^[0-9a-f]{2}$/.test(sub)) continue
      for (const name of await readdirIfExists(this.fs, join(this.layout.packs, sub))) {
        if (PACK_ID_RE.test(name) && name.startsWith(sub)) out.push(name)
      }
    }
    return out.sort()
  }

  /**
   * The chunk table, loaded on first use and brought up to date with packs added since (by this or
   * another process). If a prune ran since it was built (generation record), it is rebuilt: pruned
   * packs must never be deduplicated against.
   */
  async table(refresh = false): Promise<ChunkTable> {
    if (this.tableInstance && !refresh) return this.tableInstance
    if (this.loading) return this.loading
    this.loading = this.loadTable().finally(() => (this.loading = undefined))
    return this.loading
  }

  private async loadTable(): Promise<ChunkTable> {
    const gen = await readGeneration(this.fs, this.layout, this.keys, this.vaultId)
    if (!this.tableInstance || gen.lastPrune !== this.tableLastPrune) {
      this.tableInstance = new ChunkTable()
      this.damagedPacks = []
    }
    this.tableLastPrune = gen.lastPrune
    const table = this.tableInstance
    const missing = (await this.listPacks()).filter((hex) => table.packNumber(hex) === undefined)
    await this.reserveFor(table, missing)
    const damaged: DamagedPack[] = []
    await boundedAll(missing, PACKS_AT_ONCE, async (hex) => {
      try {
        table.addPackIndex(hex, await this.packIndexBytes(hex))
      } catch (error) {
        // A damaged pack's chunks are simply unknown: a backup stores them again, verify reports it.
        damaged.push({ hex, error })
      }
    })
    this.damagedPacks = [...this.damagedPacks.filter((d) => !damaged.some((x) => x.hex === d.hex)), ...damaged]
    return table
  }

  async dispose(): Promise<void> {
    await this.poolInstance?.dispose()
    this.poolInstance = undefined
    this.poolNarrowing = undefined
  }
}

/** Pack files read at a time: their reads wait on the drive, not on this thread. */
const PACKS_AT_ONCE = 8
