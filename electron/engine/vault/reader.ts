/**
 * ChunkReader: fetches chunks grouped by pack, coalescing neighbouring records into range reads,
 * several packs and ranges in flight, every chunk opened and re-hashed in the workers (I3).
 */
import { EngineError } from '../errors.js'
import type { ChunkReader, ChunksInPlace } from './api.js'
import type { VaultContext } from './context.js'
import { packPath } from './layout.js'
import { openPackRecords, type OpenedInPlace, type RecordItem } from './recordReader.js'

const PACKS_IN_FLIGHT = 3

/** The chunks of one call that live in one pack: records to open, and where each is wanted (indexes into the call's ids). */
interface PackGroup {
  items: RecordItem[]
  targets: number[][]
}

export class LocalChunkReader implements ChunkReader {
  private closed = false

  constructor(private readonly ctx: VaultContext) {}

  async readChunks(ids: Buffer[]): Promise<Buffer[]> {
    const out: Buffer[] = new Array<Buffer>(ids.length)
    await this.fetch(ids, { returnPlain: true, blockSize: this.ctx.blockSize }, (g, k, plain) => {
      for (const t of g.targets[k]!) out[t] = plain!
    })
    return out
  }

  async readChunksInto(ids: Buffer[], target: Buffer, positions: number[], options: { zeroGranule: number }): Promise<ChunksInPlace> {
    const sab = target.buffer
    const blockSize = this.ctx.blockSize
    if (!(sab instanceof SharedArrayBuffer) || positions.length !== ids.length) {
      throw new EngineError('INTERNAL', 'readChunksInto needs a view on shared memory and one position per chunk.')
    }
    for (const p of positions) {
      if (!Number.isSafeInteger(p) || p < 0 || p + blockSize > target.length) throw new EngineError('INTERNAL', `readChunksInto: position ${p} leaves no room for a block.`)
    }
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
          return { sab, positions: a, zeroGranule: options.zeroGranule }
        },
      },
      (g, k, _plain, opened) => {
        const [first, ...more] = g.targets[k]!
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
      into?: (group: PackGroup) => { sab: SharedArrayBuffer; positions: number[]; zeroGranule: number }
    },
    onChunk: (group: PackGroup, item: number, plain: Buffer | undefined, opened: OpenedInPlace | undefined) => void,
  ): Promise<void> {
    if (this.closed) throw new EngineError('INVALID_INPUT', 'This chunk reader is closed.')
    let table = await this.ctx.table()
    if (ids.some((id) => !table.has(id))) table = await this.ctx.table(true) // packs written since we loaded
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
      g.items.push({ offset: loc.offset, length: loc.length, ordinal: loc.ordinal, flags: loc.flags, chunkId: id })
      g.targets.push([i])
    })
    const groups = [...byPack.entries()]
    let next = 0
    const run = async (): Promise<void> => {
      while (next < groups.length) {
        const [packNo, g] = groups[next++]!
        const pack = table.packs[packNo]!
        const { into, ...rest } = options
        await openPackRecords(this.ctx.pool(), this.ctx.fs, packPath(this.ctx.layout, pack.hex), pack.id, g.items, { ...rest, ...(into ? { into: into(g) } : {}) }, (k, plain, error, opened) => {
          if (error || !(plain || opened)) {
            throw new EngineError(
              'CHUNK_CORRUPT',
              `Chunk ${g.items[k]!.chunkId.toString('hex')} in pack ${pack.hex} ${error ?? 'could not be read'}. Run "tresor verify --read-data" to see which recovery points are affected.`,
            )
          }
          onChunk(g, k, plain, opened)
        })
      }
    }
    await Promise.all(Array.from({ length: Math.min(PACKS_IN_FLIGHT, groups.length) }, run))
  }

  async close(): Promise<void> {
    this.closed = true
  }
}
