/** In-memory stand-ins for the vault and a disk image, for pipeline unit tests. */
import { createHash } from 'node:crypto'
import type { DiskImage, Extent } from '../../../electron/engine/formats/types.js'
import type { BackupSession, BlockEntry, BlockMapSegment, ChunkReader, NewPoint, PointManifest, PutResult, Vault } from '../../../electron/engine/vault/api.js'
import { readChunksIntoVia } from '../../helpers/chunksInPlace.js'
import { segmentsOf } from '../../helpers/mapSegments.js'

export class MemoryVault implements Vault {
  readonly id = 'memvault'
  readonly path = '/mem/vault'
  chunks = new Map<string, Buffer>()
  points: PointManifest[] = []
  maps = new Map<string, BlockEntry[]>()
  puts = 0
  aborted = 0
  committed = 0
  maxInFlight = 0
  private inFlight = 0
  putDelayMs = 0
  failPutAt: number | undefined
  constructor(readonly blockSize: number) {}
  async generation(): Promise<number> { return this.committed + 1 }
  async beginBackup(): Promise<BackupSession> {
    const pending = new Map<number, BlockEntry[]>()
    const newChunks = new Map<string, Buffer>()
    let done = false
    return {
      blockSize: this.blockSize,
      putBlock: async (data: Buffer, checksum: Buffer): Promise<PutResult> => {
        if (done) throw new Error('session closed')
        if (checksum.length !== 16) throw new Error('checksum must be 16 bytes')
        this.puts++
        if (this.failPutAt !== undefined && this.puts >= this.failPutAt) throw new Error('injected put failure')
        this.inFlight++
        this.maxInFlight = Math.max(this.maxInFlight, this.inFlight)
        try {
          if (this.putDelayMs) await new Promise((r) => setTimeout(r, this.putDelayMs))
          const id = createHash('sha256').update(data).digest()
          const key = id.toString('hex')
          const isNew = !this.chunks.has(key) && !newChunks.has(key)
          if (isNew) newChunks.set(key, Buffer.from(data))
          return { chunkId: id, isNew, storedBytes: isNew ? data.length + 40 : 0 }
        } finally {
          this.inFlight--
        }
      },
      blockMapWriter: (disk) => {
        const list: BlockEntry[] = []
        pending.set(disk.index, list)
        return {
          append: (e) => { list.push(e) },
          finish: async () => { if (list.length !== disk.blockCount) throw new Error(`map has ${list.length} entries, expected ${disk.blockCount}`) },
        }
      },
      commit: async (point: NewPoint): Promise<PointManifest> => {
        done = true
        for (const [k, v] of newChunks) this.chunks.set(k, v)
        const id = `p${this.points.length + 1}`
        for (const [i, list] of pending) this.maps.set(`${id}/${i}`, list)
        const manifest: PointManifest = { ...point, id, blockSize: this.blockSize }
        this.points.push(manifest)
        this.committed++
        return manifest
      },
      abort: async () => { done = true; this.aborted++ },
    }
  }
  async listPoints(): Promise<PointManifest[]> { return [...this.points] }
  async getPoint(id: string): Promise<PointManifest> {
    const p = this.points.find((x) => x.id === id)
    if (!p) throw Object.assign(new Error('no point'), { code: 'POINT_NOT_FOUND' })
    return p
  }
  async *readBlockMap(pointId: string, diskIndex: number): AsyncIterable<BlockEntry> {
    yield* this.maps.get(`${pointId}/${diskIndex}`) ?? []
  }
  async *readBlockMapSegments(pointId: string, diskIndex: number): AsyncIterable<BlockMapSegment> {
    yield* segmentsOf(this.maps.get(`${pointId}/${diskIndex}`) ?? [])
  }
  chunkReader(): ChunkReader {
    const readChunks = async (ids: Buffer[]): Promise<Buffer[]> => ids.map((id) => this.chunks.get(id.toString('hex'))!)
    return { readChunks, readChunksInto: readChunksIntoVia(readChunks, this.blockSize), close: async () => {} }
  }
  async close(): Promise<void> {}
  /** The guest view of a point's disk. */
  async restore(pointId: string, diskIndex: number): Promise<Buffer> {
    const p = await this.getPoint(pointId)
    const d = p.disks.find((x) => x.index === diskIndex)!
    const out = Buffer.alloc(d.virtualSize)
    const map = this.maps.get(`${pointId}/${diskIndex}`)!
    map.forEach((e, i) => { if (e.kind === 'data') this.chunks.get(e.chunkId.toString('hex'))!.copy(out, i * p.blockSize) })
    return out
  }
}

/** A disk image over a buffer with explicit extents (everything outside them must be zero). */
export class MemoryImage implements DiskImage {
  readonly format = 'raw' as const
  readonly variant = 'memory'
  readonly clusterSize = 512
  readonly backing = undefined
  reads = 0
  bytesRead = 0
  /** Every read: [offset, length]. */
  readLog: Array<[number, number]> = []
  closed = false
  readDelayMs = 0
  constructor(readonly path: string, public data: Buffer, public extentList: Extent[]) {}
  get virtualSize(): number { return this.data.length }
  async *extents(): AsyncIterable<Extent> { yield* this.extentList }
  async read(buffer: Uint8Array, offset: number): Promise<Uint8Array> {
    if (offset + buffer.length > this.data.length) throw new Error('read past end')
    if (this.readDelayMs) await new Promise((r) => setTimeout(r, this.readDelayMs))
    this.reads++
    this.bytesRead += buffer.length
    this.readLog.push([offset, buffer.length])
    buffer.set(this.data.subarray(offset, offset + buffer.length))
    return buffer
  }
  async info(): Promise<never> { throw new Error('not needed') }
  async close(): Promise<void> { this.closed = true }
}
