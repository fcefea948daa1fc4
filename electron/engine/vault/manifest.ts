/**
 * Manifests and block maps (FORMAT.md "Manifest", "Block map segment").
 * A block map is stored in segments of `segmentEntries` entries, each its own encrypted object, so
 * neither writing nor reading a map ever holds more than one segment (I7).
 */
import { EngineError } from '../errors.js'
import type { BlockEntry, BlockMapSegment, BlockMapWriter, PointManifest } from './api.js'
import { damaged, openObject, sealObject, type VaultKeys } from './crypto.js'
import { manifestPath, mapDir, mapSegmentPath, type VaultLayout } from './layout.js'
import { readFileIfExists, vaultIoError, writeFileAtomic, type VaultFs } from './vaultFs.js'

export const KIND_UNALLOCATED = 0
export const KIND_ZERO = 1
export const KIND_DATA = 2
const DATA_ENTRY_BYTES = 1 + 32 + 16

export interface DiskMapInfo {
  diskIndex: number
  blockCount: number
  segmentEntries: number
  segments: number
  /** Stored bytes of the segments. */
  bytes: number
}

export interface StoredManifest {
  formatVersion: 1
  point: PointManifest
  maps: DiskMapInfo[]
  /** Generation the writing session started from. */
  baseGeneration: number
}

export function manifestAad(pointId: string): string {
  return `tresor/v1/manifest/${pointId}`
}

function segmentAad(pointId: string, diskIndex: number, segment: number, entries: number): string {
  return `tresor/v1/map/${pointId}/${diskIndex}/${segment}/${entries}`
}

export function encodeManifest(keys: VaultKeys, m: StoredManifest): Buffer {
  return sealObject(keys.meta, manifestAad(m.point.id), Buffer.from(JSON.stringify(m), 'utf8'), true)
}

export async function writeManifest(fs: VaultFs, layout: VaultLayout, keys: VaultKeys, m: StoredManifest): Promise<number> {
  const sealed = encodeManifest(keys, m)
  await writeFileAtomic(fs, layout.tmp, manifestPath(layout, m.point.id), sealed)
  return sealed.length
}

export async function readManifest(fs: VaultFs, layout: VaultLayout, keys: VaultKeys, pointId: string): Promise<StoredManifest> {
  const path = manifestPath(layout, pointId)
  const raw = await readFileIfExists(fs, path)
  if (!raw) throw new EngineError('POINT_NOT_FOUND', `Recovery point ${pointId} is not in the vault at "${layout.root}".`)
  const plain = openObject(keys.meta, manifestAad(pointId), raw, `manifest of recovery point ${pointId}`, 64 << 20)
  let m: StoredManifest
  try {
    m = JSON.parse(plain.toString('utf8')) as StoredManifest
  } catch (err) {
    throw damaged(`manifest of recovery point ${pointId}`, 'is not readable', err)
  }
  if (m.formatVersion !== 1 || !m.point || m.point.id !== pointId || !Array.isArray(m.maps) || !Array.isArray(m.point.disks)) {
    throw damaged(`manifest of recovery point ${pointId}`, 'is malformed')
  }
  for (const d of m.maps) {
    if (!Number.isInteger(d.blockCount) || d.blockCount < 0 || !Number.isInteger(d.segmentEntries) || d.segmentEntries <= 0 ||
      d.segments !== Math.ceil(d.blockCount / d.segmentEntries)) {
      throw damaged(`manifest of recovery point ${pointId}`, 'has an inconsistent block map description')
    }
  }
  return m
}

export class SegmentedMapWriter implements BlockMapWriter {
  private buf: Buffer
  private pos = 0
  private inSegment = 0
  private total = 0
  private segment = 0
  private readonly flushes: Promise<void>[] = []
  private failure: unknown
  private finished = false
  bytes = 0

  constructor(
    private readonly fs: VaultFs,
    private readonly layout: VaultLayout,
    private readonly keys: VaultKeys,
    private readonly pointId: string,
    readonly diskIndex: number,
    readonly blockCount: number,
    readonly segmentEntries: number,
    private readonly ensureDir: () => Promise<void>,
  ) {
    this.buf = Buffer.allocUnsafe(4 + Math.min(segmentEntries, Math.max(1, blockCount)) * DATA_ENTRY_BYTES)
    this.pos = 4
  }

  get entriesWritten(): number {
    return this.total
  }

  get info(): DiskMapInfo {
    return { diskIndex: this.diskIndex, blockCount: this.blockCount, segmentEntries: this.segmentEntries, segments: this.segment, bytes: this.bytes }
  }

  append(entry: BlockEntry): void {
    if (this.finished) throw new EngineError('INVALID_INPUT', `Block map of disk ${this.diskIndex} is already finished.`)
    if (this.failure) throw this.failure
    if (this.total >= this.blockCount) {
      throw new EngineError('INVALID_INPUT', `Block map of disk ${this.diskIndex} got more than its ${this.blockCount} entries.`)
    }
    if (entry.kind === 'unallocated') this.buf[this.pos++] = KIND_UNALLOCATED
    else if (entry.kind === 'zero') this.buf[this.pos++] = KIND_ZERO
    else if (entry instanceof StoredDataEntry) this.pos = entry.encodeTo(this.buf, this.pos)
    else {
      if (entry.chunkId.length !== 32 || entry.checksum.length !== 16) throw new EngineError('INVALID_INPUT', 'A data block entry needs a 32-byte chunk id and a 16-byte checksum.')
      this.buf[this.pos++] = KIND_DATA
      this.pos += entry.chunkId.copy(this.buf, this.pos)
      this.pos += entry.checksum.copy(this.buf, this.pos)
    }
    this.total++
    if (++this.inSegment === this.segmentEntries) this.flush()
  }

  /**
   * Appends a whole segment's plaintext (entry count, then `count` encoded entries), as
   * `openSegment` returns it; only at a segment boundary, with `count` the entries that segment holds.
   */
  appendSegment(plain: Buffer, count: number): void {
    if (this.finished) throw new EngineError('INVALID_INPUT', `Block map of disk ${this.diskIndex} is already finished.`)
    if (this.failure) throw this.failure
    const expected = Math.min(this.segmentEntries, this.blockCount - this.total)
    if (this.inSegment !== 0 || count !== expected || plain.length < 4 || plain.readUInt32LE(0) !== count) {
      throw new EngineError('INTERNAL', `Block map of disk ${this.diskIndex}: a segment of ${count} entries does not fit at entry ${this.total}.`)
    }
    if (this.buf.length < plain.length) this.buf = Buffer.allocUnsafe(plain.length)
    plain.copy(this.buf, 0)
    this.pos = plain.length
    this.inSegment = count
    this.total += count
    this.flush()
  }

  private flush(): void {
    const count = this.inSegment
    const seg = this.segment++
    this.buf.writeUInt32LE(count, 0)
    const plain = this.buf.subarray(0, this.pos)
    const sealed = sealObject(this.keys.meta, segmentAad(this.pointId, this.diskIndex, seg, count), plain, true)
    this.bytes += sealed.length
    this.pos = 4
    this.inSegment = 0
    const p = this.ensureDir()
      .then(() => writeFileAtomic(this.fs, this.layout.tmp, mapSegmentPath(this.layout, this.pointId, this.diskIndex, seg), sealed))
      .catch((err: unknown) => {
        this.failure ??= err
      })
    this.flushes.push(p)
  }

  async finish(): Promise<void> {
    if (this.finished) return
    if (this.total !== this.blockCount) {
      throw new EngineError('INVALID_INPUT', `Block map of disk ${this.diskIndex} has ${this.total} entries, expected ${this.blockCount}.`)
    }
    if (this.inSegment > 0) this.flush()
    this.finished = true
    await Promise.all(this.flushes)
    if (this.failure) throw vaultIoError(this.failure, mapDir(this.layout, this.pointId), 'writing block map')
  }

  get isFinished(): boolean {
    return this.finished
  }
}

/** Reads and authenticates segment `seg` of a disk's block map and checks its entry count; returns its plaintext (count, entries). */
async function openSegment(fs: VaultFs, layout: VaultLayout, keys: VaultKeys, pointId: string, info: DiskMapInfo, seg: number): Promise<{ plain: Buffer; expected: number; what: string }> {
  const expected = Math.min(info.segmentEntries, info.blockCount - seg * info.segmentEntries)
  const path = mapSegmentPath(layout, pointId, info.diskIndex, seg)
  const what = `block map of recovery point ${pointId} disk ${info.diskIndex} (segment ${seg})`
  const raw = await readFileIfExists(fs, path)
  if (!raw) throw damaged(what, 'is missing')
  const plain = openObject(keys.meta, segmentAad(pointId, info.diskIndex, seg, expected), raw, what, 4 + expected * DATA_ENTRY_BYTES)
  if (plain.length < 4 || plain.readUInt32LE(0) !== expected) throw damaged(what, 'has a wrong entry count')
  return { plain, expected, what }
}

/**
 * Checks an opened segment's structure (a known kind per entry, data entries complete, nothing after
 * the last) and returns where each entry starts.
 */
function entryStarts(plain: Buffer, count: number, what: string): Int32Array {
  const starts = new Int32Array(count)
  let p = 4
  for (let i = 0; i < count; i++) {
    starts[i] = p
    const kind = plain[p++]
    if (kind === KIND_DATA && p + 48 <= plain.length) p += 48
    else if (kind !== KIND_UNALLOCATED && kind !== KIND_ZERO) throw damaged(what, `has a malformed entry #${i}`)
  }
  if (p !== plain.length) throw damaged(what, 'has trailing bytes')
  return starts
}

/**
 * A data entry of a stored segment: its id and checksum stay in the segment's plaintext, and are
 * views of it only when asked for. An incremental backup looks up every data block's earlier entry
 * and keeps most of them as they are: as plain objects with two views each, ~52,000 of them in
 * the bench's 4 GiB disk were a good part of the job's thread's garbage collection. The block loop
 * compares checksums in place (`checksumIs`), and the map writer copies the encoded entry
 * (`encodeTo`).
 */
export class StoredDataEntry {
  readonly kind = 'data' as const

  /** `at`: where the entry (its kind byte, then the id and checksum) starts in `plain`. */
  constructor(
    private readonly plain: Buffer,
    private readonly at: number,
  ) {}

  get chunkId(): Buffer {
    return this.plain.subarray(this.at + 1, this.at + 33)
  }

  get checksum(): Buffer {
    return this.plain.subarray(this.at + 33, this.at + DATA_ENTRY_BYTES)
  }

  /** Whether `sums[from, + 16)` holds this entry's checksum. */
  checksumIs(sums: Uint8Array, from: number): boolean {
    const p = this.plain
    const at = this.at + 33
    for (let k = 0; k < 16; k++) if (sums[from + k] !== p[at + k]) return false
    return true
  }

  /**
   * Writes the encoded entry (DATA_ENTRY_BYTES) at `target[pos]`; returns the position after it.
   * Byte by byte: `Buffer.copy` from an offset makes a view of the source first.
   */
  encodeTo(target: Buffer, pos: number): number {
    const p = this.plain
    for (let k = 0, at = this.at; k < DATA_ENTRY_BYTES; k++) target[pos + k] = p[at + k]!
    return pos + DATA_ENTRY_BYTES
  }
}

const UNALLOCATED_ENTRY: BlockEntry = Object.freeze({ kind: 'unallocated' })
const ZERO_ENTRY: BlockEntry = Object.freeze({ kind: 'zero' })

/**
 * An opened segment: its structure is checked once (entryStarts), and an entry is decoded when
 * asked for (no object per block until then).
 */
class OpenedSegment implements BlockMapSegment {
  private readonly starts: Int32Array

  constructor(
    readonly first: number,
    readonly count: number,
    private readonly plain: Buffer,
    what: string,
  ) {
    this.starts = entryStarts(plain, count, what)
  }

  entry(k: number): BlockEntry {
    if (!(k >= 0 && k < this.count)) throw new EngineError('INTERNAL', `Block map segment of ${this.count} entries has no entry #${k}.`)
    const p = this.starts[k]!
    const kind = this.plain[p]
    if (kind === KIND_UNALLOCATED) return UNALLOCATED_ENTRY
    if (kind === KIND_ZERO) return ZERO_ENTRY
    return new StoredDataEntry(this.plain, p)
  }
}

/** Streams a disk's block map a segment at a time (one in memory at a time), each opened and checked. */
export async function* readMapSegments(
  fs: VaultFs,
  layout: VaultLayout,
  keys: VaultKeys,
  pointId: string,
  info: DiskMapInfo,
): AsyncGenerator<BlockMapSegment> {
  let seen = 0
  for (let seg = 0; seg < info.segments; seg++) {
    const { plain, expected, what } = await openSegment(fs, layout, keys, pointId, info, seg)
    yield new OpenedSegment(seen, expected, plain, what)
    seen += expected
  }
  if (seen !== info.blockCount) throw damaged(`block map of recovery point ${pointId} disk ${info.diskIndex}`, 'is incomplete')
}

/** Streams a disk's block map entry by entry; data entries own their bytes (copies, not views of a segment). */
export async function* readSegmentedMap(
  fs: VaultFs,
  layout: VaultLayout,
  keys: VaultKeys,
  pointId: string,
  info: DiskMapInfo,
): AsyncGenerator<BlockEntry> {
  for await (const segment of readMapSegments(fs, layout, keys, pointId, info)) {
    for (let k = 0; k < segment.count; k++) {
      const e = segment.entry(k)
      yield e.kind === 'data' ? { kind: 'data', chunkId: Buffer.from(e.chunkId), checksum: Buffer.from(e.checksum) } : e
    }
  }
}

/**
 * Writes into `writer` (empty, same block count and segment size) the block map of another
 * point's disk, segment by segment: each is opened, checked and sealed again under the new point's
 * names, with no entry decoded. What an unchanged disk's backup records.
 */
export async function copySegmentedMap(fs: VaultFs, layout: VaultLayout, keys: VaultKeys, pointId: string, info: DiskMapInfo, writer: SegmentedMapWriter): Promise<void> {
  if (writer.entriesWritten !== 0 || writer.blockCount !== info.blockCount || writer.segmentEntries !== info.segmentEntries) {
    throw new EngineError('INTERNAL', `Block map of disk ${info.diskIndex} cannot be copied into a writer of another shape.`)
  }
  let seen = 0
  for (let seg = 0; seg < info.segments; seg++) {
    const { plain, expected, what } = await openSegment(fs, layout, keys, pointId, info, seg)
    entryStarts(plain, expected, what)
    writer.appendSegment(plain, expected)
    seen += expected
  }
  if (seen !== info.blockCount) throw damaged(`block map of recovery point ${pointId} disk ${info.diskIndex}`, 'is incomplete')
}
