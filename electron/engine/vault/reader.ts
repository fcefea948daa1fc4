/**
 * ChunkReader: fetches chunks grouped by pack, coalescing neighbouring records into range reads,
 * several packs and ranges in flight, every chunk opened and re-hashed in the workers (I3).
 *
 * A block stored as parts (format 2) is read in two rounds: its recipe (a small record under the
 * block's id; the blocks of the call stored whole are read meanwhile), then its parts, each decoded
 * straight into its place in the block and checked against its own id, or copied from the reader's
 * part cache (partCache.ts); the assembled block is then checked against the block's id, and its
 * checksum and zero map computed, in a worker (CheckTask), which also copies the cached parts in
 * before hashing and the parts just read into the cache after. A part that names another recipe
 * is refused. A part inside a container record (format 3) is read as that record's item with the
 * part's place, decoded once per task for all its parts and sliced (ChunkCodec.openPart).
 */
import { EngineError } from '../errors.js'
import { Started } from '../io/started.js'
import type { ChunkReader, ChunksInPlace } from './api.js'
import type { ChunkTable } from './chunkTable.js'
import { zeroMapBytes, type InPlace } from './chunkTasks.js'
import type { VaultContext } from './context.js'
import { packPath } from './layout.js'
import { decodeRecipe, type RecipePart } from './parts.js'
import { PartCache, type CachedPart } from './partCache.js'
import { isRecipeEntry } from './recipes.js'
import { openPackRecords, PackHandles, type OpenedInPlace, type RecordItem } from './recordReader.js'

const PACKS_IN_FLIGHT = 3
/** The parts of a batch lie scattered over many packs, a few small records in each: more packs at a time keep the workers fed. */
const PART_PACKS_IN_FLIGHT = 8

/** The chunks of one call that live in one pack: records to open, and where each is wanted (indexes into the call's ids). */
interface PackGroup {
  items: RecordItem[]
  targets: number[][]
}

export class LocalChunkReader implements ChunkReader {
  private closed = false
  /** Decoded parts, in shared memory the workers copy from and into. */
  private readonly partCache = new PartCache()
  /** Packs kept open while calls are in flight; all closed when none is (a reader never closed leaks nothing). */
  private readonly handles: PackHandles
  private active = 0
  /** Whether this reader has brought the vault's chunk table up to date yet (tableWith). */
  private current = false

  constructor(private readonly ctx: VaultContext) {
    this.handles = new PackHandles(ctx.fs)
  }

  async readChunks(ids: Buffer[]): Promise<Buffer[]> {
    return this.tracked(() => this.readChunksNow(ids))
  }

  /** Runs one call, closing the kept packs once no call is in flight. */
  private async tracked<T>(call: () => Promise<T>): Promise<T> {
    this.active++
    try {
      return await call()
    } finally {
      if (--this.active === 0) await this.handles.closeAll()
    }
  }

  private async readChunksNow(ids: Buffer[]): Promise<Buffer[]> {
    const table = await this.tableWith(ids)
    if (ids.some((id) => isRecipe(table, id))) {
      // blocks stored as parts are read as a restore reads them (the workers assemble and check
      // them, the part cache serves), through shared memory copied out afterwards
      const blockSize = this.ctx.blockSize
      const scratch = Buffer.from(new SharedArrayBuffer(ids.length * blockSize))
      const got = await this.readChunksIntoNow(ids, scratch, ids.map((_, k) => k * blockSize), { zeroGranule: blockSize })
      return ids.map((_, k) => Buffer.from(scratch.subarray(k * blockSize, k * blockSize + got.lengths[k]!)))
    }
    const out: Buffer[] = new Array<Buffer>(ids.length)
    await this.fetch(ids, { returnPlain: true, blockSize: this.ctx.blockSize }, (g, k, plain) => {
      for (const t of g.targets[k]!) out[t] = plain!
    })
    return out
  }

  /** The decoded recipe stored under block `id`, or CHUNK_CORRUPT. */
  private recipeOf(id: Buffer, plain: Buffer): RecipePart[] {
    const parts = decodeRecipe(plain, this.ctx.blockSize)
    if (typeof parts === 'string') throw corrupt(id, `has a damaged recipe (${parts})`)
    return parts
  }

  async readChunksInto(ids: Buffer[], target: Buffer, positions: number[], options: { zeroGranule: number }): Promise<ChunksInPlace> {
    return this.tracked(() => this.readChunksIntoNow(ids, target, positions, options))
  }

  private async readChunksIntoNow(ids: Buffer[], target: Buffer, positions: number[], options: { zeroGranule: number }): Promise<ChunksInPlace> {
    const sab = target.buffer
    const blockSize = this.ctx.blockSize
    if (!(sab instanceof SharedArrayBuffer) || positions.length !== ids.length) {
      throw new EngineError('INTERNAL', 'readChunksInto needs a view on shared memory and one position per chunk.')
    }
    for (const p of positions) {
      if (!Number.isSafeInteger(p) || p < 0 || p + blockSize > target.length) throw new EngineError('INTERNAL', `readChunksInto: position ${p} leaves no room for a block.`)
    }
    const table = await this.tableWith(ids)
    const recipes = ids.flatMap((id, i) => (isRecipe(table, id) ? [i] : []))
    if (recipes.length === 0) return this.readInto(ids, target, positions, options.zeroGranule)
    // 1. the recipes; 2. the blocks stored whole and the parts, decoded into place, in one read per
    // pack; 3. the assembled blocks checked
    const isPart = new Set(recipes)
    const wholes = ids.flatMap((_, i) => (isPart.has(i) ? [] : [i]))
    const lists = await this.readRecipes(recipes.map((i) => ids[i]!))
    // Whole blocks first, then the parts the cache lacks (part length 0: a whole block). Read together,
    // a part inside a range that whole blocks of the same pack need is read once, in the same request:
    // read apart, while the recipes were read, they cost a fifth more requests and 140 MB of a full
    // point's 1,818 MB read twice (PERFORMANCE.md, twenty-sixth and twenty-seventh rounds).
    const readIds: Buffer[] = wholes.map((i) => ids[i]!)
    const readPositions: number[] = wholes.map((i) => positions[i]!)
    const partLengths: number[] = wholes.map(() => 0)
    const partIds: Buffer[] = []
    // parts the cache holds are copied in by the worker that checks their block; parts read from the
    // store are copied into the cache by that worker once their block checked out (partCache.ts)
    const cache = this.partCache
    const copyIns: number[][] = []
    const fills: number[][] = []
    const pinned: CachedPart[] = []
    const reserved: CachedPart[] = []
    let settled = false
    try {
      recipes.forEach((i, r) => {
        let at = positions[i]!
        const copyIn: number[] = []
        const fill: number[] = []
        for (const p of lists[r]!) {
          const key = p.id.toString('latin1')
          const hit = cache.take(key, p.length)
          if (hit) {
            pinned.push(hit)
            copyIn.push(hit.at, target.byteOffset + at, p.length)
          } else {
            partIds.push(p.id)
            readIds.push(p.id)
            readPositions.push(at)
            partLengths.push(p.length)
            const room = cache.reserve(key, p.length)
            if (room) {
              reserved.push(room)
              fill.push(target.byteOffset + at, room.at, p.length)
            }
          }
          at += p.length
        }
        copyIns.push(copyIn)
        fills.push(fill)
      })
      const nested = refuseNested(table, partIds)
      if (nested) throw nested
      const got = await this.readInto(readIds, target, readPositions, options.zeroGranule, partLengths, PART_PACKS_IN_FLIGHT)
      const lengths = new Array<number>(ids.length)
      const checksums = new Array<Buffer>(ids.length)
      const zeroMaps = new Array<Uint8Array>(ids.length)
      wholes.forEach((i, k) => {
        lengths[i] = got.lengths[k]!
        checksums[i] = got.checksums[k]!
        zeroMaps[i] = got.zeroMaps[k]!
      })
      await this.checkAssembled(
        recipes.map((i, r) => ({ index: i, position: target.byteOffset + positions[i]!, id: ids[i]!, copyIn: copyIns[r]!, fill: fills[r]! })),
        sab,
        options.zeroGranule,
        (i, checksum, zeroMap) => {
          lengths[i] = blockSize
          checksums[i] = checksum
          zeroMaps[i] = zeroMap
        },
      )
      settled = true
      return { lengths, checksums, zeroMaps }
    } finally {
      // every task naming these entries has replied (checkAssembled waits for all of its tasks)
      for (const e of pinned) cache.unpin(e)
      for (const e of reserved) cache.settle(e, settled)
    }
  }

  /** Recipes of blocks `ids` (each stored as a recipe), decoded and checked; CHUNK_CORRUPT when one is not a recipe. */
  private async readRecipes(ids: Buffer[]): Promise<RecipePart[][]> {
    const plains = new Array<Buffer>(ids.length)
    // recipes are small (~40 bytes a part) and decrypted on this thread: in the workers' queue they
    // waited behind the open tasks of the batches before, a third of each batch's time
    await this.fetch(ids, { returnPlain: true, blockSize: this.ctx.blockSize, here: true }, (g, k, plain) => {
      for (const t of g.targets[k]!) plains[t] = plain!
    })
    return ids.map((id, i) => this.recipeOf(id, plains[i]!))
  }

  /**
   * CheckTask over the blocks assembled in `sab`, split among the workers. Returns only once every
   * task has replied, also when one fails: their copies from and into the part cache are then over.
   */
  private async checkAssembled(
    blocks: Array<{ index: number; position: number; id: Buffer; copyIn: number[]; fill: number[] }>,
    sab: SharedArrayBuffer,
    zeroGranule: number,
    onBlock: (index: number, checksum: Buffer, zeroMap: Uint8Array) => void,
  ): Promise<void> {
    const blockSize = this.ctx.blockSize
    const per = Math.max(1, Math.ceil(blocks.length / this.ctx.workerCount))
    const mapBytes = zeroMapBytes(blockSize, zeroGranule)
    const usesCache = blocks.some((b) => b.copyIn.length > 0 || b.fill.length > 0)
    const runs = new Started()
    try {
      for (let from = 0; from < blocks.length && !runs.failed; from += per) {
        const part = blocks.slice(from, from + per)
        const { result } = await this.ctx.pool().submit({
          kind: 'check',
          sab,
          blocks: part.map((b) => ({
            position: b.position,
            length: blockSize,
            chunkId: new Uint8Array(b.id),
            ...(b.copyIn.length > 0 ? { copyIn: b.copyIn } : {}),
            ...(b.fill.length > 0 ? { fill: b.fill } : {}),
          })),
          blockSize,
          zeroGranule,
          ...(usesCache ? { cache: this.partCache.memory() } : {}),
        })
        // a check may fail while the next task waits for room in the pool's queue
        runs.add(
          result.then((r) => {
            if (r.kind !== 'check') throw new EngineError('INTERNAL', 'unexpected worker reply')
            part.forEach((b, j) => {
              const error = r.errors[j]
              if (error) throw corrupt(b.id, error)
              onBlock(b.index, Buffer.from(r.checksums.subarray(j * 16, j * 16 + 16)), r.zeroMaps.slice(j * mapBytes, (j + 1) * mapBytes))
            })
          }),
        )
      }
    } catch (err) {
      await runs.drain()
      throw err
    }
    await runs.settle()
  }

  /**
   * The table, brought up to date on this reader's first lookup, and again when it lacks one of
   * `ids` (packs written since it was loaded). The first: a prune since the table was loaded (by
   * another handle of the vault or another process) may have moved live chunks to new packs and
   * deleted the old ones; the refresh sees the prune's mark (generation.ts lastPrune) and loads the
   * table anew. Without it a long-lived handle's next restore failed with CHUNK_MISSING.
   */
  private async tableWith(ids: Buffer[]): Promise<ChunkTable> {
    if (!this.current) {
      this.current = true
      return this.ctx.table(true)
    }
    const table = await this.ctx.table()
    return ids.some((id) => !table.has(id)) ? this.ctx.table(true) : table
  }

  /** readChunksInto's work for chunks that are whole blocks or (partLengths[i] > 0) parts decoded into their place. */
  private async readInto(ids: Buffer[], target: Buffer, positions: number[], zeroGranule: number, partLengths?: number[], packsInFlight = PACKS_IN_FLIGHT): Promise<ChunksInPlace> {
    const sab = target.buffer as SharedArrayBuffer
    const blockSize = this.ctx.blockSize
    const lengths = new Array<number>(ids.length)
    const checksums = new Array<Buffer>(ids.length)
    const zeroMaps = new Array<Uint8Array>(ids.length)
    // Absolute positions in the shared memory, per (pack group, item): the first request of a chunk.
    const absolute = new Map<PackGroup, number[]>()
    await this.fetch(
      ids,
      {
        returnPlain: false,
        blockSize,
        into: (g) => {
          let a = absolute.get(g)
          if (!a) absolute.set(g, (a = g.targets.map((t) => target.byteOffset + positions[t[0]!]!)))
          return { sab, positions: a, zeroGranule, ...(partLengths ? { parts: g.targets.map((t) => partLengths[t[0]!]!) } : {}) }
        },
        packsInFlight,
      },
      (g, k, _plain, opened) => {
        const [first, ...more] = g.targets[k]!
        // A short whole chunk (a disk's last block) may also be some block's part: whole uses come first (readChunksInto).
        for (const t of more) {
          const want = partLengths?.[t] ?? 0
          if (want > 0 && want !== opened!.length) throw corrupt(ids[t]!, `holds ${opened!.length} bytes where a recipe says ${want}`)
        }
        const checksum = Buffer.from(opened!.checksum)
        for (const t of [first!, ...more]) {
          lengths[t] = opened!.length
          checksums[t] = checksum
          zeroMaps[t] = opened!.zeroMap
        }
        // The same chunk asked for again in this call: decoded once, copied to the other places.
        for (const t of more) target.copy(target, positions[t]!, positions[first!]!, positions[first!]! + opened!.length)
      },
    )
    return { lengths, checksums, zeroMaps }
  }

  /** Groups `ids` by pack (each chunk once) and opens each group's records, PACKS_IN_FLIGHT packs at a time. */
  private async fetch(
    ids: Buffer[],
    options: {
      returnPlain: boolean
      blockSize: number
      into?: (group: PackGroup) => InPlace
      packsInFlight?: number
      here?: boolean
    },
    onChunk: (group: PackGroup, item: number, plain: Buffer | undefined, opened: OpenedInPlace | undefined) => void,
  ): Promise<void> {
    if (this.closed) throw new EngineError('INVALID_INPUT', 'This chunk reader is closed.')
    const table = await this.tableWith(ids)
    const byPack = new Map<number, PackGroup>()
    const seen = new Map<string, [number, number]>()
    ids.forEach((id, i) => {
      const key = id.toString('latin1')
      const prior = seen.get(key)
      if (prior) {
        byPack.get(prior[0])!.targets[prior[1]]!.push(i)
        return
      }
      const loc = table.get(id)
      if (!loc) {
        throw new EngineError('CHUNK_MISSING', `Chunk ${id.toString('hex')} is not in the vault. Run "tresor verify" to see which recovery points are affected.`)
      }
      let g = byPack.get(loc.pack)
      if (!g) byPack.set(loc.pack, (g = { items: [], targets: [] }))
      seen.set(key, [loc.pack, g.items.length])
      g.items.push({ offset: loc.offset, length: loc.length, ordinal: loc.ordinal, flags: loc.flags, chunkId: id, partOffset: loc.partOffset, partLength: loc.partLength })
      g.targets.push([i])
    })
    const groups = [...byPack.entries()]
    let next = 0
    // the first failure stops every run from taking another pack, and is thrown once all have
    // stopped: no read is left writing into the caller's memory or using the reader's open packs
    let failure: { error: unknown } | undefined
    const run = async (): Promise<void> => {
      while (!failure && next < groups.length) {
        const [packNo, g] = groups[next++]!
        const pack = table.packs[packNo]!
        const { into, packsInFlight: _, ...rest } = options
        try {
          await openPackRecords(this.ctx.pool(), this.ctx.fs, packPath(this.ctx.layout, pack.hex), pack.id, g.items, { ...rest, handles: this.handles, ...(into ? { into: into(g) } : {}) }, (k, plain, error, opened) => {
            if (error || !(plain || opened)) {
              throw new EngineError(
                'CHUNK_CORRUPT',
                `Chunk ${g.items[k]!.chunkId.toString('hex')} in pack ${pack.hex} ${error ?? 'could not be read'}. Run "tresor verify --read-data" to see which recovery points are affected.`,
              )
            }
            onChunk(g, k, plain, opened)
          })
        } catch (error) {
          failure ??= { error }
        }
      }
    }
    await Promise.all(Array.from({ length: Math.min(options.packsInFlight ?? PACKS_IN_FLIGHT, groups.length) }, run))
    if (failure) throw failure.error
  }

  async close(): Promise<void> {
    this.closed = true
    this.partCache.clear()
    await this.handles.closeAll()
  }
}

function isRecipe(table: ChunkTable, id: Buffer): boolean {
  const loc = table.get(id)
  return loc !== undefined && isRecipeEntry(loc)
}

/** Parts are never recipes (only full blocks get recipes, and parts are shorter): one that is points to damage. */
function refuseNested(table: ChunkTable, partIds: Buffer[]): EngineError | undefined {
  const nested = partIds.find((p) => isRecipe(table, p))
  return nested ? corrupt(nested, 'is listed as a part of a block but is itself a recipe') : undefined
}

function corrupt(id: Buffer, what: string): EngineError {
  return new EngineError('CHUNK_CORRUPT', `Chunk ${id.toString('hex')} ${what}. Run "tresor verify --read-data" to see which recovery points are affected.`)
}
