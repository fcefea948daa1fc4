/**
 * LocalVault: the local-folder vault. Implements api.ts's Vault (backup sessions, points, block
 * maps, chunk reads) plus verify, prune (GC + repack) and stats.
 */
import { join } from 'node:path'
import { EngineError, isEngineError } from '../errors.js'
import type { BackupSession, BeginBackupOptions, BlockEntry, BlockMapSegment, ChunkReader, LockWait, PointManifest } from './api.js'
import { ChunkTable, type PackInfo } from './chunkTable.js'
import { loadConfig } from './config.js'
import { VaultContext } from './context.js'
import { bumpGeneration, readGeneration, trimGenerations } from './generation.js'
import { layoutOf, manifestPath, mapDir, packPath, POINT_ID_RE, RESERVE_BYTES } from './layout.js'
import { VaultLock, withReadLock } from './locks.js'
import { readManifest, readMapSegments, readSegmentedMap, type DiskMapInfo, type StoredManifest } from './manifest.js'
import { indexHasRecipe, isSubEntry, recordBytesOf, recordsOf, type PackIndexEntry, type PackWriter, type RecordEntry } from './pack.js'
import { LocalChunkReader } from './reader.js'
import { choosePacks, DEFAULT_MAX_UNUSED } from './prunePolicy.js'
import { openPackRecords, PackHandles, readRecordBytes, recordItemsOf, type RecordItem } from './recordReader.js'
import { LocalBackupSession } from './session.js'
import { isRecipeEntry, readPackRecipes } from './recipes.js'
import type { AffectedPoint, LocalVault, PointScan, OpenVaultOptions, PruneOptions, PruneResult, VaultStats, VerifyOptions, VerifyProblem, VerifyReport } from './types.js'
import { systemClock } from './types.js'
import { nodeVaultFs, readdirIfExists, unlinkDurable, vaultIoError, writeFileAtomic } from './vaultFs.js'
import { randomBytes } from 'node:crypto'

const MAX_PROBLEMS = 1000

/** Live records read and moved at once while repacking. */
const REPACK_BATCH = 64
/** Batches whose records are read while an earlier one is moved (memory: this many more batches). */
const REPACK_READS_AHEAD = 2

/**
 * Opens the vault in `dir` with its master key: authenticates the config (tampered → VAULT_DAMAGED,
 * wrong key → WRONG_PASSPHRASE), reads the generation and refuses an older copy of the vault
 * (generation < lastGeneration → VAULT_ROLLBACK). Takes no lock; sessions and prune do.
 * The caller closes the vault (`close()` stops its worker threads).
 */
export async function openVault(dir: string, masterKey: Buffer, options: OpenVaultOptions = {}): Promise<LocalVault> {
  const fs = options.fs ?? nodeVaultFs
  const layout = layoutOf(dir)
  const { config, keys } = await loadConfig(fs, layout, masterKey)
  const gen = await readGeneration(fs, layout, keys, config.vaultId)
  if (options.lastGeneration !== undefined && gen.generation < options.lastGeneration) {
    throw new EngineError(
      'VAULT_ROLLBACK',
      `The vault at "${dir}" is at generation ${gen.generation}, older than generation ${options.lastGeneration} seen before: an older copy of the vault was put back. Nothing was written; check which copy is current.`,
    )
  }
  return new LocalVaultImpl(new VaultContext(fs, layout, keys, config, options.clock ?? systemClock, options))
}

class LocalVaultImpl implements LocalVault {
  readonly id: string
  readonly path: string
  readonly blockSize: number
  private closed = false

  constructor(private readonly ctx: VaultContext) {
    this.id = ctx.vaultId
    this.path = ctx.layout.root
    this.blockSize = ctx.blockSize
  }

  private get fs() {
    return this.ctx.fs
  }
  private get layout() {
    return this.ctx.layout
  }

  private lockOptions(purpose: string) {
    return { ...this.ctx.options.locks, clock: this.ctx.clock, purpose: this.ctx.options.purpose ?? purpose }
  }

  async generation(): Promise<number> {
    return (await readGeneration(this.fs, this.layout, this.ctx.keys, this.id)).generation
  }

  async beginBackup(options: BeginBackupOptions = {}): Promise<BackupSession> {
    this.assertOpen()
    const lock = await VaultLock.acquire(this.fs, this.layout, 'shared', this.lockOptions('backup'))
    try {
      const start = await readGeneration(this.fs, this.layout, this.ctx.keys, this.id)
      // the session loads the chunk table on its first put (an unchanged disk never needs it)
      return new LocalBackupSession(this.ctx, lock, start, options.signal, undefined, options.incremental === true)
    } catch (err) {
      await lock.release()
      throw err
    }
  }

  private async manifest(pointId: string): Promise<StoredManifest> {
    const cached = this.ctx.cachedManifest<StoredManifest>(pointId)
    if (cached) return cached
    if (!POINT_ID_RE.test(pointId)) throw new EngineError('POINT_NOT_FOUND', `"${pointId}" is not a recovery point id.`)
    const m = await readManifest(this.fs, this.layout, this.ctx.keys, pointId)
    this.ctx.cacheManifest(pointId, m)
    return m
  }

  private async pointIds(): Promise<string[]> {
    return (await readdirIfExists(this.fs, this.layout.manifests)).filter((n) => POINT_ID_RE.test(n))
  }

  /** Every readable point plus the manifests that could not be read (verify, rebuild). */
  async scanPoints(): Promise<PointScan> {
    const scan: PointScan = { points: [], damaged: [] }
    for (const id of await this.pointIds()) {
      try {
        scan.points.push((await this.manifest(id)).point)
      } catch (err) {
        if (isEngineError(err) && err.code === 'POINT_NOT_FOUND') continue // deleted meanwhile
        scan.damaged.push({ pointId: id, error: isEngineError(err) ? err : vaultIoError(err, manifestPath(this.layout, id), 'reading') })
      }
    }
    scan.points.sort((a, b) => a.createdAt.localeCompare(b.createdAt) || a.id.localeCompare(b.id))
    return scan
  }

  /** All points, oldest first. A damaged manifest is an error (VAULT_DAMAGED naming it): see scanPoints. */
  async listPoints(): Promise<PointManifest[]> {
    const scan = await this.scanPoints()
    if (scan.damaged.length > 0) throw scan.damaged[0]!.error
    return scan.points
  }

  async getPoint(pointId: string): Promise<PointManifest> {
    return (await this.manifest(pointId)).point
  }

  async *readBlockMap(pointId: string, diskIndex: number): AsyncIterable<BlockEntry> {
    yield* readSegmentedMap(this.fs, this.layout, this.ctx.keys, pointId, await this.mapInfo(pointId, diskIndex))
  }

  async *readBlockMapSegments(pointId: string, diskIndex: number): AsyncIterable<BlockMapSegment> {
    yield* readMapSegments(this.fs, this.layout, this.ctx.keys, pointId, await this.mapInfo(pointId, diskIndex))
  }

  private async mapInfo(pointId: string, diskIndex: number): Promise<DiskMapInfo> {
    const m = await this.manifest(pointId)
    const info = m.maps.find((d) => d.diskIndex === diskIndex)
    if (!info) throw new EngineError('NOT_FOUND', `Recovery point ${pointId} has no disk ${diskIndex}.`)
    return info
  }

  chunkReader(): ChunkReader {
    this.assertOpen()
    return new LocalChunkReader(this.ctx)
  }

  async readLock(purpose: string, options: LockWait = {}): Promise<{ release(): Promise<void> }> {
    this.assertOpen()
    const lock = await VaultLock.acquire(this.fs, this.layout, 'shared', { ...this.lockOptions(purpose), ...options, purpose })
    return { release: () => lock.release() }
  }

  async stats(): Promise<VaultStats> {
    const table = await this.ctx.table(true)
    const bytesOnDisk = table.packs.reduce((s, p) => s + p.sizeBytes, 0)
    return { packs: table.packs.length, bytesOnDisk, chunks: table.size, points: (await this.pointIds()).length }
  }

  // ---------------------------------------------------------------- verify

  /**
   * Checks the vault under a shared lock (like a restore): a prune, which holds the exclusive lock
   * while it deletes and rewrites packs, cannot make a healthy vault look damaged mid-check.
   */
  async verify(options: VerifyOptions): Promise<VerifyReport> {
    this.assertOpen()
    return withReadLock(this, 'verify', options.lock ?? {}, () => this.verifyLocked(options))
  }

  private async verifyLocked(options: VerifyOptions): Promise<VerifyReport> {
    const problems: VerifyProblem[] = []
    let dropped = 0
    const report = (p: VerifyProblem): void => {
      if (problems.length < MAX_PROBLEMS) problems.push(p)
      else dropped++
    }
    const checked = { packs: 0, chunks: 0, points: 0, chunksRead: 0, bytesRead: 0 }
    try {
      await readGeneration(this.fs, this.layout, this.ctx.keys, this.id)
    } catch (err) {
      report({ kind: 'generation', object: 'generations', message: messageOf(err), affectedPoints: [] })
    }
    // 1. pack indexes → a fresh table (independent of what this process cached)
    const table = new ChunkTable()
    const readablePacks: number[] = []
    const packs = await this.ctx.listPacks()
    await this.ctx.reserveFor(table, packs)
    const damagedPacks = new Set<string>()
    for (const [i, hex] of packs.entries()) {
      options.onProgress?.({ phase: 'indexes', done: i, total: packs.length })
      try {
        readablePacks.push(table.addPackIndex(hex, await this.ctx.packIndexBytes(hex)))
        checked.packs++
      } catch (err) {
        damagedPacks.add(hex)
        report({ kind: 'pack-index', object: `pack:${hex}`, message: messageOf(err), affectedPoints: [] })
      }
    }
    checked.chunks = table.size
    // 2. --read-data: open every record of every pack
    const corrupt = new Map<string, { pack: string; error: string }>() // chunk hex → where
    if (options.readData) {
      let done = 0
      for (const n of readablePacks) {
        if (options.signal?.aborted) throw new EngineError('CANCELLED', 'Verify was cancelled.')
        options.onProgress?.({ phase: 'data', done: done++, total: readablePacks.length })
        const pack = table.packs[n]!
        let entries: RecordItem[] = []
        try {
          // re-read the index per pack: memory stays one pack's index, not the whole vault's (I7);
          // a part inside a container record (format 3) is opened from it and checked against its own id
          entries = recordItemsOf(await this.ctx.packEntries(pack.hex))
          await openPackRecords(this.ctx.pool(), this.fs, packPath(this.layout, pack.hex), pack.id, entries, { returnPlain: false, blockSize: this.blockSize }, (k, _p, error) => {
            const e = entries[k]!
            checked.chunksRead++
            checked.bytesRead += e.partLength ? 0 : e.length
            if (!error) return
            // only the copy the table uses matters to points (a duplicate elsewhere may be fine)
            const loc = table.get(e.chunkId)
            if (loc && loc.pack === n && loc.offset === e.offset && loc.partOffset === (e.partOffset ?? 0)) corrupt.set(e.chunkId.toString('hex'), { pack: pack.hex, error })
          })
        } catch (err) {
          damagedPacks.add(pack.hex)
          for (const e of entries) {
            const loc = table.get(e.chunkId)
            if (loc && loc.pack === n) corrupt.set(e.chunkId.toString('hex'), { pack: pack.hex, error: messageOf(err) })
          }
        }
      }
    }
    // 2b. blocks stored as parts (format 2): every recipe the table uses must open and list parts that are there and sound
    const referencedPacks = new Set<number>()
    const recipePacks = new Set<number>()
    for (const slot of table.usedSlots()) {
      const loc = table.location(slot)
      if (isRecipeEntry(loc)) recipePacks.add(loc.pack)
    }
    const badParts = new Map<string, Array<{ hex: string; missing: boolean }>>() // recipe (block) → its missing or corrupt parts
    for (const [i, n] of [...recipePacks].entries()) {
      if (options.signal?.aborted) throw new EngineError('CANCELLED', 'Verify was cancelled.')
      options.onProgress?.({ phase: 'recipes', done: i, total: recipePacks.size })
      const pack = table.packs[n]!
      if (damagedPacks.has(pack.hex)) continue
      let mine: PackIndexEntry[] = []
      try {
        mine = (await this.ctx.packEntries(pack.hex)).filter((e) => {
          const loc = table.get(e.chunkId)
          return isRecipeEntry(e) && loc !== undefined && loc.pack === n && loc.offset === e.offset
        })
        await readPackRecipes(this.ctx, pack, mine, (e, parts) => {
          const hex = e.chunkId.toString('hex')
          if (typeof parts === 'string') {
            corrupt.set(hex, { pack: pack.hex, error: `is a recipe that cannot be used: it ${parts}` })
            return
          }
          for (const p of parts) {
            const loc = table.get(p.id)
            const partHex = p.id.toString('hex')
            if (loc) referencedPacks.add(loc.pack)
            if (loc && !corrupt.has(partHex)) continue
            // the part is reported itself, with the points of every block that needs it (step 3)
            let list = badParts.get(hex)
            if (!list) badParts.set(hex, (list = []))
            list.push({ hex: partHex, missing: !loc })
          }
        })
      } catch (err) {
        // the pack's recipes could not be read: every block stored through them is in doubt
        damagedPacks.add(pack.hex)
        for (const e of mine) corrupt.set(e.chunkId.toString('hex'), { pack: pack.hex, error: `is a recipe that could not be read: ${messageOf(err)}` })
      }
    }
    // 3. points: manifests and block maps; which chunks they need
    const missingBy = new Map<string, Map<string, Set<string>>>() // chunk → point → disks
    const corruptBy = new Map<string, Map<string, Set<string>>>()
    const note = (m: Map<string, Map<string, Set<string>>>, chunk: string, point: string, disk: string): void => {
      let byPoint = m.get(chunk)
      if (!byPoint) m.set(chunk, (byPoint = new Map()))
      let disks = byPoint.get(point)
      if (!disks) byPoint.set(point, (disks = new Set()))
      disks.add(disk)
    }
    const ids = await this.pointIds()
    for (const [i, pointId] of ids.entries()) {
      options.onProgress?.({ phase: 'points', done: i, total: ids.length })
      let m: StoredManifest
      try {
        this.ctx.forgetManifest(pointId)
        m = await this.manifest(pointId)
      } catch (err) {
        report({ kind: 'manifest', object: `point:${pointId}`, message: messageOf(err), affectedPoints: [{ pointId, disks: [] }] })
        continue
      }
      checked.points++
      for (const info of m.maps) {
        const diskName = m.point.disks.find((d) => d.index === info.diskIndex)?.name ?? String(info.diskIndex)
        try {
          for await (const entry of readSegmentedMap(this.fs, this.layout, this.ctx.keys, pointId, info)) {
            if (entry.kind !== 'data') continue
            const loc = table.get(entry.chunkId)
            const hex = entry.chunkId.toString('hex')
            if (!loc) note(missingBy, hex, pointId, diskName)
            else {
              referencedPacks.add(loc.pack)
              if (corrupt.has(hex)) note(corruptBy, hex, pointId, diskName)
              for (const part of badParts.get(hex) ?? []) note(part.missing ? missingBy : corruptBy, part.hex, pointId, diskName)
            }
          }
        } catch (err) {
          report({ kind: 'block-map', object: `map:${pointId}/${info.diskIndex}`, message: messageOf(err), affectedPoints: [{ pointId, disks: [diskName] }] })
        }
      }
    }
    const affected = (byPoint: Map<string, Set<string>> | undefined): AffectedPoint[] =>
      [...(byPoint ?? new Map<string, Set<string>>()).entries()].map(([pointId, disks]) => ({ pointId, disks: [...disks].sort() }))
    for (const [hex, where] of corrupt) {
      report({
        kind: 'chunk-corrupt',
        object: `chunk:${hex}`,
        message: `Chunk ${hex} in pack ${where.pack} ${where.error}.`,
        affectedPoints: affected(corruptBy.get(hex)),
      })
    }
    for (const [hex, byPoint] of missingBy) {
      report({
        kind: 'chunk-missing',
        object: `chunk:${hex}`,
        message: `Chunk ${hex} is referenced but not in any readable pack${damagedPacks.size ? ` (damaged packs: ${[...damagedPacks].join(', ')})` : ''}.`,
        affectedPoints: affected(byPoint),
      })
    }
    // A pack whose index is unreadable hides which chunks it held: the points missing chunks are its suspects.
    const suspects = new Map<string, Set<string>>()
    for (const byPoint of missingBy.values()) {
      for (const [pt, disks] of byPoint) {
        let s = suspects.get(pt)
        if (!s) suspects.set(pt, (s = new Set()))
        for (const d of disks) s.add(d)
      }
    }
    for (const p of problems) if (p.kind === 'pack-index') p.affectedPoints = affected(suspects)
    if (dropped > 0) problems.push({ kind: 'truncated', object: 'report', message: `${dropped} more problems not listed.`, affectedPoints: [] })
    const unreferencedPacks = table.packs.filter((_, n) => !referencedPacks.has(n)).length
    return { ok: problems.length === 0, problems, checked, unreferencedPacks }
  }

  // ---------------------------------------------------------------- delete / prune

  async deletePoints(ids: string[]): Promise<number> {
    const r = await this.prune({ deletePointIds: ids, gc: false } as PruneOptions & { deletePointIds: string[] })
    return r.pointsRemoved
  }

  /**
   * Under the exclusive lock: deletes the manifests of `deletePointIds`, then (unless gc: false)
   * marks every chunk the remaining points reference, deletes packs with no live chunk, rewrites
   * partly used packs until at most `maxUnused` of the record bytes stay unused (`choosePacks`;
   * new packs durable before old ones go),
   * removes orphan block maps and temp files. Crash-safe at every step; a backup that lost its lock
   * meanwhile cannot commit (the first prune generation is written before anything is deleted).
   */
  async prune(options: PruneOptions & { deletePointIds?: string[]; gc?: boolean } = {}): Promise<PruneResult> {
    this.assertOpen()
    try {
      return await this.pruneOnce(options)
    } catch (err) {
      // A full drive must not block the one operation that frees space (borg #9573): give up the
      // reserve file and run again (every prune step is idempotent), then take the reserve back.
      if (!isEngineError(err) || err.code !== 'DISK_FULL' || !(await this.fs.stat(this.layout.reserve).catch(() => undefined))) throw err
      await unlinkDurable(this.fs, this.layout.reserve)
      const result = await this.pruneOnce(options)
      await writeFileAtomic(this.fs, this.layout.tmp, this.layout.reserve, randomBytes(RESERVE_BYTES)).catch(() => undefined)
      return result
    }
  }

  private async pruneOnce(options: PruneOptions & { deletePointIds?: string[]; gc?: boolean }): Promise<PruneResult> {
    const result: PruneResult = { pointsRemoved: 0, bytesFreed: 0, packsDeleted: 0, packsRepacked: 0 }
    const lock = await VaultLock.acquire(this.fs, this.layout, 'exclusive', this.lockOptions('prune'))
    try {
      const startGen = await bumpGeneration(this.fs, this.layout, this.ctx.keys, this.id, 'prune')
      const onProgress = options.onProgress
      // 1. delete manifests
      const toDelete = options.deletePointIds ?? []
      for (const [i, id] of toDelete.entries()) {
        onProgress?.({ phase: 'delete', done: i, total: toDelete.length })
        if (!POINT_ID_RE.test(id)) throw new EngineError('POINT_NOT_FOUND', `"${id}" is not a recovery point id.`)
        const path = manifestPath(this.layout, id)
        const st = await this.fs.stat(path)
        if (!st) continue
        await unlinkDurable(this.fs, path)
        this.ctx.forgetManifest(id)
        result.pointsRemoved++
      }
      if (options.gc === false) {
        for (const id of toDelete) await this.removeMapDir(id)
        await lock.assertHeld()
        return result
      }
      // 2. fresh table from every readable pack
      const table = new ChunkTable()
      const packs = await this.ctx.listPacks()
      await this.ctx.reserveFor(table, packs)
      const unreadable = new Set<string>()
      const recordBytes: number[] = []
      const recipeBearing: number[] = [] // packs whose index lists a recipe (format 2)
      for (const hex of packs) {
        try {
          const idx = await this.ctx.packIndexBytes(hex)
          const n = table.addPackIndex(hex, idx)
          recordBytes[n] = recordBytesOf(idx.index, idx.count)
          if (indexHasRecipe(idx.index, idx.count)) recipeBearing.push(n)
        } catch {
          unreadable.add(hex) // never delete what cannot be read; verify reports it
        }
      }
      // 3. mark
      const live = new Uint8Array(table.slotCount)
      let unfound = 0
      const ids = await this.pointIds()
      for (const [i, pointId] of ids.entries()) {
        onProgress?.({ phase: 'mark', done: i, total: ids.length })
        this.ctx.forgetManifest(pointId)
        const m = await this.manifest(pointId).catch((err: unknown) => {
          throw new EngineError('VAULT_DAMAGED', `Prune stopped: the manifest of recovery point ${pointId} cannot be read, so what it references is unknown. Run "tresor verify" first.`, { cause: err })
        })
        for (const info of m.maps) {
          for await (const entry of readSegmentedMap(this.fs, this.layout, this.ctx.keys, pointId, info)) {
            if (entry.kind !== 'data') continue
            const slot = table.find(entry.chunkId)
            if (slot >= 0) live[slot] = 1
            else unfound++
          }
        }
      }
      /** Whether record `e` of pack `n` is live under its own id and the copy the table uses (others are dead duplicates). */
      const isLiveCopy = (e: PackIndexEntry, n: number): boolean => {
        const slot = table.find(e.chunkId)
        if (slot < 0 || !live[slot]) return false
        const loc = table.location(slot)
        return loc.pack === n && loc.offset === e.offset && loc.partLength === 0
      }
      // 3b. a live block stored as parts keeps its parts: open the live recipes (format 2)
      if (this.ctx.usesParts) {
        if (unfound > 0 && unreadable.size > 0) {
          throw new EngineError(
            'VAULT_DAMAGED',
            `Prune stopped: pack(s) ${[...unreadable].join(', ')} cannot be read, and recovery points reference ${unfound} chunk(s) found nowhere else. Some may be recipes whose parts prune cannot see, so nothing was deleted. Run "tresor verify" first.`,
          )
        }
        const recipePacks = new Set<number>()
        for (const slot of table.usedSlots()) {
          if (!live[slot]) continue
          const loc = table.location(slot)
          if (isRecipeEntry(loc)) recipePacks.add(loc.pack)
        }
        for (const n of recipePacks) {
          const pack = table.packs[n]!
          const mine = (await this.ctx.packEntries(pack.hex)).filter((e) => isRecipeEntry(e) && isLiveCopy(e, n))
          await readPackRecipes(this.ctx, pack, mine, (e, parts) => {
            if (typeof parts === 'string') {
              throw new EngineError(
                'VAULT_DAMAGED',
                `Prune stopped: the recipe of block ${e.chunkId.toString('hex')} in pack ${pack.hex} ${parts}, so which parts that block needs is unknown. Nothing was deleted. Run "tresor verify --read-data".`,
              )
            }
            for (const p of parts) {
              const slot = table.find(p.id)
              if (slot >= 0) live[slot] = 1
            }
          })
        }
      }
      // 4. sweep: the records live slots point at (a container record, format 3, is kept when its
      // block or any of its parts is live), and their bytes per pack, each record counted once
      const liveBytes = new Array<number>(table.packs.length).fill(0)
      const keptRecords = new Set<number>() // pack number × 2^32 + record offset
      for (const slot of table.usedSlots()) {
        if (!live[slot]) continue
        const loc = table.location(slot)
        const at = loc.pack * 2 ** 32 + loc.offset
        if (keptRecords.has(at)) continue
        keptRecords.add(at)
        liveBytes[loc.pack]! += loc.length
      }
      /** Whether prune keeps record `e` of pack `n`: a live slot points at it (the copy the table uses; others are dead duplicates). */
      const isKept = (e: PackIndexEntry, n: number): boolean => !isSubEntry(e) && keptRecords.has(n * 2 ** 32 + e.offset)
      const { toRemove, toRepack } = choosePacks(
        table.packs.map((_, n) => n).filter((n) => recordBytes[n] !== undefined),
        (n) => ({ live: liveBytes[n]!, records: recordBytes[n]!, small: table.packs[n]!.sizeBytes < this.ctx.packTargetBytes / 8 }),
        options.maxUnused ?? DEFAULT_MAX_UNUSED,
      )
      // 4b. No dead recipe may outlive its parts: a later backup would deduplicate a block against it
      // and reference parts this prune deletes. Every pack holding a recipe that is not live (or not
      // the copy the table uses) is rewritten or deleted whatever its unused share (recipes are a
      // small fraction of the data), and such packs are deleted first: a crash in the sweep leaves
      // at most parts without a recipe.
      for (const n of recipeBearing) {
        if (toRemove.includes(n) || toRepack.includes(n)) continue
        const entries = await this.ctx.packEntries(table.packs[n]!.hex)
        if (entries.some((e) => isRecipeEntry(e) && !isKept(e, n))) (liveBytes[n] === 0 ? toRemove : toRepack).push(n)
      }
      /** The records of pack `n` prune keeps, each container with the sub-entries of its parts (all of them: its bytes hold them). */
      const liveEntries = async (n: number): Promise<RecordEntry[]> => recordsOf(await this.ctx.packEntries(table.packs[n]!.hex)).filter((e) => isKept(e, n))
      if (toRepack.length > 0) {
        const fresh = new ChunkTable()
        const session = new LocalBackupSession(this.ctx, lock, startGen, undefined, { table: fresh })
        // each pack is opened once for all its batches (the last few stay open until the repack ends)
        const handles = new PackHandles(this.fs, 2)
        // Batches in flight: while one is moved, the next ones' records are read. A read waits on
        // the disk (direct reads of packs that were written past the page cache) and a move on the
        // workers; one after the other, the reads were ~80 % of the repack's time. Each batch in
        // flight has its own scratch, free again once that batch has been moved.
        const scratches = Array.from({ length: REPACK_READS_AHEAD + 1 }, () => ({ buf: Buffer.alloc(0) }))
        let reads = 0
        const inFlight: Array<{ pack: PackInfo; batch: RecordEntry[]; bytes: Promise<Buffer[]> }> = []
        const moveOldest = async (): Promise<void> => {
          const b = inFlight[0]!
          const bytes = await b.bytes
          // the stored records as they are: a worker opens each (I3) and encrypts its body again
          // for the new pack, with no recompression and no plaintext crossing threads;
          // resolves once every record was copied into the session's own buffers
          await session.moveRecords(
            b.batch.map((e, k) => ({ record: bytes[k]!, chunkId: e.chunkId, ordinal: e.ordinal, flags: e.flags, plainLength: e.plainLength, ...(e.subs ? { subs: e.subs } : {}) })),
            b.pack.id,
          )
          inFlight.shift()
        }
        let written: PackWriter[]
        try {
          for (const [i, n] of toRepack.entries()) {
            onProgress?.({ phase: 'repack', done: i, total: toRepack.length })
            const pack = table.packs[n]!
            const keep = await liveEntries(n)
            for (let b = 0; b < keep.length; b += REPACK_BATCH) {
              if (inFlight.length > REPACK_READS_AHEAD) await moveOldest()
              const batch = keep.slice(b, b + REPACK_BATCH)
              const bytes = readRecordBytes(this.fs, packPath(this.layout, pack.hex), batch, scratches[reads++ % scratches.length]!, handles)
              bytes.catch(() => undefined) // awaited in `moveOldest`; meanwhile a failure must not go unhandled
              inFlight.push({ pack, batch, bytes })
            }
          }
          while (inFlight.length > 0) await moveOldest()
          written = await session.flushPacks()
        } catch (err) {
          // no read into a scratch may outlive the repack; and a failed repack (a full disk) leaves no
          // pack half written: the session's open packs are closed and their temp files removed, not
          // left to the garbage collector and the next prune
          await Promise.all(inFlight.map((b) => b.bytes.catch(() => undefined)))
          await session.abort().catch(() => undefined)
          throw err
        } finally {
          await handles.closeAll()
        }
        for (const w of written) result.bytesFreed -= (await this.fs.stat(w.finalPath))?.size ?? 0
        result.packsRepacked = toRepack.length
        toRemove.push(...toRepack)
      }
      // new packs are durable: now the old ones may go, those holding recipes first (4b)
      await lock.assertHeld()
      const bearing = new Set(recipeBearing)
      toRemove.sort((a, b) => Number(bearing.has(b)) - Number(bearing.has(a)))
      for (const [i, n] of toRemove.entries()) {
        onProgress?.({ phase: 'sweep', done: i, total: toRemove.length })
        const pack = table.packs[n]!
        await unlinkDurable(this.fs, packPath(this.layout, pack.hex))
        result.bytesFreed += pack.sizeBytes
        result.packsDeleted++
      }
      // 5. orphans: block maps without a manifest, temp files (no writer can run: exclusive lock)
      const keepIds = new Set(await this.pointIds())
      for (const name of await readdirIfExists(this.fs, this.layout.maps)) {
        if (!keepIds.has(name)) await this.removeMapDir(name)
      }
      for (const name of await readdirIfExists(this.fs, this.layout.tmp)) await this.fs.unlink(join(this.layout.tmp, name)).catch(() => undefined)
      await trimGenerations(this.fs, this.layout)
      await bumpGeneration(this.fs, this.layout, this.ctx.keys, this.id, 'prune')
      return result
    } finally {
      this.ctx.invalidateTable()
      await lock.release()
    }
  }

  private async removeMapDir(pointId: string): Promise<void> {
    const dir = mapDir(this.layout, pointId)
    for (const name of await readdirIfExists(this.fs, dir)) await this.fs.unlink(join(dir, name)).catch(() => undefined)
    await this.fs.rmdir(dir).catch(() => undefined)
    await this.fs.syncDir(this.layout.maps).catch(() => undefined)
  }

  private assertOpen(): void {
    if (this.closed) throw new EngineError('INVALID_INPUT', 'This vault is closed.')
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    await this.ctx.dispose()
  }
}

function messageOf(err: unknown): string {
  return isEngineError(err) ? err.userMessage : (err as Error)?.message ?? String(err)
}

