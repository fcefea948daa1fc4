/**
 * An in-memory `Vault` for restore tests: recovery points built straight from image files (guest
 * view through openImage), chunks kept as plaintexts keyed by SHA-256. It follows the block-map
 * contract of vault/api.ts (UNALLOCATED outside extents, ZERO for zero extents and all-zero blocks,
 * DATA with the XXH3-128 checksum) so the restore pipeline sees what a real vault gives it.
 * Hooks let tests corrupt a chunk or slow/fail reads.
 */
import { createHash, randomUUID } from 'node:crypto'
import { createBlockHasher } from '../../../electron/engine/backup/checksum.js'
import { isAllZero } from '../../../electron/engine/formats/io.js'
import { EngineError } from '../../../electron/engine/errors.js'
import { readChunksIntoVia } from '../../helpers/chunksInPlace.js'
import { segmentsOf } from '../../helpers/mapSegments.js'
import { openImage } from '../../../electron/engine/formats/index.js'
import type {
  BackupSession,
  BlockEntry,
  BlockMapSegment,
  ChunkReader,
  PointDisk,
  PointManifest,
  Vault,
} from '../../../electron/engine/vault/api.js'

export interface MemoryVaultOptions {
  blockSize?: number
  path?: string
}

export class MemoryVault implements Vault {
  readonly id = randomUUID()
  readonly path: string
  readonly blockSize: number
  readonly chunks = new Map<string, Buffer>()
  readonly points = new Map<string, { manifest: PointManifest; maps: BlockEntry[][] }>()
  /** Called before every readChunks batch (tests slow it down or fail it). */
  beforeRead: ((ids: Buffer[]) => Promise<void> | void) | undefined
  readCalls = 0
  maxConcurrentReads = 0
  private concurrentReads = 0

  constructor(options: MemoryVaultOptions = {}) {
    this.blockSize = options.blockSize ?? 64 * 1024
    this.path = options.path ?? '/nonexistent/memory-vault'
  }

  /** Backs up the guest view of each file as one disk of a new point. */
  async addPoint(machineName: string, files: { name: string; path: string }[], options: { id?: string } = {}): Promise<PointManifest> {
    const hasher = createBlockHasher()
    const disks: PointDisk[] = []
    const maps: BlockEntry[][] = []
    for (let index = 0; index < files.length; index++) {
      const file = files[index]!
      const image = await openImage(file.path)
      try {
        const blockCount = Math.ceil(image.virtualSize / this.blockSize)
        const map: BlockEntry[] = Array.from({ length: blockCount }, () => ({ kind: 'unallocated' }) as BlockEntry)
        let allocated = 0
        for await (const extent of image.extents()) {
          allocated += extent.length
          const first = Math.floor(extent.offset / this.blockSize)
          const last = Math.floor((extent.offset + extent.length - 1) / this.blockSize)
          for (let b = first; b <= last; b++) {
            if (map[b]!.kind === 'data') continue
            if (extent.zero) {
              if (map[b]!.kind === 'unallocated') map[b] = { kind: 'zero' }
              continue
            }
            const off = b * this.blockSize
            const data = Buffer.alloc(Math.min(this.blockSize, image.virtualSize - off))
            await image.read(data, off)
            if (isAllZero(data)) {
              map[b] = { kind: 'zero' }
              continue
            }
            const chunkId = createHash('sha256').update(data).digest()
            this.chunks.set(chunkId.toString('hex'), Buffer.from(data))
            map[b] = { kind: 'data', chunkId, checksum: hasher.checksum(data) }
          }
        }
        disks.push({
          index,
          name: file.name,
          virtualSize: image.virtualSize,
          sourceFormat: image.format,
          sourcePath: file.path,
          allocatedBytes: allocated,
          blockCount,
        })
        maps.push(map)
      } finally {
        await image.close()
      }
    }
    const manifest: PointManifest = {
      id: options.id ?? randomUUID().replace(/-/g, '').slice(0, 16),
      machineId: `m-${machineName}`,
      machineName,
      createdAt: new Date().toISOString(),
      consistency: 'crash',
      blockSize: this.blockSize,
      disks,
      stats: { bytesRead: 0, bytesNew: 0, bytesStored: 0, seconds: 0 },
      labels: {},
    }
    this.points.set(manifest.id, { manifest, maps })
    return manifest
  }

  async generation(): Promise<number> {
    return this.points.size
  }
  async beginBackup(): Promise<BackupSession> {
    throw new Error('MemoryVault does not take backups')
  }
  async listPoints(): Promise<PointManifest[]> {
    return [...this.points.values()].map((p) => p.manifest)
  }
  async getPoint(pointId: string): Promise<PointManifest> {
    const p = this.points.get(pointId)
    if (!p) throw new EngineError('POINT_NOT_FOUND', `No recovery point ${pointId}.`)
    return p.manifest
  }
  async *readBlockMap(pointId: string, diskIndex: number): AsyncIterable<BlockEntry> {
    const p = this.points.get(pointId)
    if (!p) throw new EngineError('POINT_NOT_FOUND', `No recovery point ${pointId}.`)
    for (const e of p.maps[diskIndex] ?? []) yield e
  }
  async *readBlockMapSegments(pointId: string, diskIndex: number): AsyncIterable<BlockMapSegment> {
    const p = this.points.get(pointId)
    if (!p) throw new EngineError('POINT_NOT_FOUND', `No recovery point ${pointId}.`)
    yield* segmentsOf(p.maps[diskIndex] ?? [])
  }
  chunkReader(): ChunkReader {
    const readChunks = async (ids: Buffer[]): Promise<Buffer[]> => {
      this.readCalls++
      this.concurrentReads++
      this.maxConcurrentReads = Math.max(this.maxConcurrentReads, this.concurrentReads)
      try {
        await this.beforeRead?.(ids)
        await new Promise((r) => setImmediate(r))
        return ids.map((id) => {
          const data = this.chunks.get(id.toString('hex'))
          if (!data) throw new EngineError('CHUNK_MISSING', `Chunk ${id.toString('hex')} is missing.`)
          if (!createHash('sha256').update(data).digest().equals(id)) {
            throw new EngineError('CHUNK_CORRUPT', `Chunk ${id.toString('hex')} is corrupt.`)
          }
          return Buffer.from(data)
        })
      } finally {
        this.concurrentReads--
      }
    }
    return { readChunks, readChunksInto: readChunksIntoVia(readChunks, this.blockSize), close: async () => undefined }
  }
  async close(): Promise<void> {}
}
