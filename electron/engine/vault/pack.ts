/**
 * Pack files (FORMAT.md "Pack"): header | chunk records | encrypted index | trailer.
 * A pack is written under `tmp/`, fsynced, then renamed to `packs/<xx>/<id>` and the directory
 * fsynced (I2); its records were checked before they were appended (I9, session.ts). Packs are
 * never modified afterwards.
 *
 * Records are gathered in page-aligned staging memory and written in aligned pieces of about
 * 2 MiB, which the vault's file handles send with direct I/O (vaultFs.ts): a backup writes
 * gigabytes of packs that are not read again soon, and copying them into fresh page-cache pages
 * was the largest single cost of a full backup (DECISIONS.md). The last, unaligned piece goes out
 * with the index and trailer through the page cache, and one fsync covers the whole file.
 */
import { join } from 'node:path'
import { allocAligned, DIRECT_ALIGN } from '../directIo.js'
import { EngineError } from '../errors.js'
import { CHUNK_ID_BYTES, damaged, openObject, randomId, sealObject, type VaultKeys } from './crypto.js'
import { packPath, type VaultLayout } from './layout.js'
import { readExactly, vaultIoError, writeAll, type VaultFileHandle, type VaultFs } from './vaultFs.js'

export const PACK_MAGIC = Buffer.from('TRSRPK01', 'ascii')
export const TRAILER_MAGIC = Buffer.from('TPKE', 'ascii')
export const PACK_HEADER_BYTES = 24
export const TRAILER_BYTES = 16
export const INDEX_ENTRY_BYTES = 49

export interface PackIndexEntry {
  chunkId: Buffer
  offset: number
  length: number
  ordinal: number
  flags: number
  plainLength: number
}

export function indexAad(packHex: string, indexOffset: number): string {
  return `tresor/v1/pack-index/${packHex}/${indexOffset}`
}

export function encodeIndex(entries: PackIndexEntry[]): Buffer {
  const buf = Buffer.allocUnsafe(4 + entries.length * INDEX_ENTRY_BYTES)
  buf.writeUInt32LE(entries.length, 0)
  let p = 4
  for (const e of entries) {
    e.chunkId.copy(buf, p)
    buf.writeUInt32LE(e.offset, p + 32)
    buf.writeUInt32LE(e.length, p + 36)
    buf.writeUInt32LE(e.ordinal, p + 40)
    buf[p + 44] = e.flags
    buf.writeUInt32LE(e.plainLength, p + 45)
    p += INDEX_ENTRY_BYTES
  }
  return buf
}

export function decodeIndex(buf: Buffer, packHex: string, indexOffset: number, maxPlain: number): PackIndexEntry[] {
  const what = `pack ${packHex} index`
  if (buf.length < 4) throw damaged(what, 'is truncated')
  const n = buf.readUInt32LE(0)
  if (buf.length !== 4 + n * INDEX_ENTRY_BYTES) throw damaged(what, 'has a wrong length')
  const out: PackIndexEntry[] = []
  let p = 4
  for (let i = 0; i < n; i++, p += INDEX_ENTRY_BYTES) {
    const e: PackIndexEntry = {
      chunkId: Buffer.from(buf.subarray(p, p + CHUNK_ID_BYTES)),
      offset: buf.readUInt32LE(p + 32),
      length: buf.readUInt32LE(p + 36),
      ordinal: buf.readUInt32LE(p + 40),
      flags: buf[p + 44]!,
      plainLength: buf.readUInt32LE(p + 45),
    }
    if (e.offset < PACK_HEADER_BYTES || e.offset + e.length > indexOffset || e.flags > 1 || e.plainLength > maxPlain || e.ordinal > 0x7fffffff) {
      throw damaged(what, `has an impossible entry (#${i})`)
    }
    out.push(e)
  }
  return out
}

/** Reads and authenticates a pack's index. Size is the file size. */
export async function readPackIndex(
  fs: VaultFs,
  path: string,
  packHex: string,
  keys: VaultKeys,
  maxPlain: number,
): Promise<{ entries: PackIndexEntry[]; sizeBytes: number; indexOffset: number }> {
  let fh: VaultFileHandle
  try {
    fh = await fs.open(path, 'r')
  } catch (err) {
    throw vaultIoError(err, path, 'opening pack')
  }
  try {
    const size = await fh.size()
    if (size < PACK_HEADER_BYTES + TRAILER_BYTES) throw damaged(`pack ${packHex}`, 'is truncated')
    const head = Buffer.alloc(PACK_HEADER_BYTES)
    await readExactly(fh, head, 0, PACK_HEADER_BYTES, 0, path)
    if (!head.subarray(0, 8).equals(PACK_MAGIC) || head.subarray(8, 24).toString('hex') !== packHex) {
      throw damaged(`pack ${packHex}`, 'has a wrong header (not this pack)')
    }
    const trailer = Buffer.alloc(TRAILER_BYTES)
    await readExactly(fh, trailer, 0, TRAILER_BYTES, size - TRAILER_BYTES, path)
    if (!trailer.subarray(12, 16).equals(TRAILER_MAGIC)) throw damaged(`pack ${packHex}`, 'has a damaged trailer (truncated?)')
    const indexOffset = Number(trailer.readBigUInt64LE(0))
    const indexLength = trailer.readUInt32LE(8)
    if (indexOffset < PACK_HEADER_BYTES || indexOffset + indexLength !== size - TRAILER_BYTES) {
      throw damaged(`pack ${packHex}`, 'has a damaged trailer (index position)')
    }
    const sealed = Buffer.allocUnsafe(indexLength)
    await readExactly(fh, sealed, 0, indexLength, indexOffset, path)
    const plain = openObject(keys.meta, indexAad(packHex, indexOffset), sealed, `pack ${packHex} index`)
    return { entries: decodeIndex(plain, packHex, indexOffset, maxPlain), sizeBytes: size, indexOffset }
  } catch (err) {
    throw vaultIoError(err, path, 'reading pack')
  } finally {
    await fh.close().catch(() => undefined)
  }
}

/** Staging memory of one pack: aligned pieces are written from it once this much is gathered. */
const STAGE_BYTES = 4 * 1024 * 1024
const STAGE_FLUSH_BYTES = 2 * 1024 * 1024
/** Writes of staged pieces one pack may have in flight before `append` waits (memory bound). */
const MAX_STAGED_WRITES = 2
/** Staging buffers kept for the next pieces and packs (each fresh one costs page faults). */
const freeStages: Buffer[] = []
const MAX_FREE_STAGES = 8

function takeStage(): Buffer {
  return freeStages.pop() ?? allocAligned(STAGE_BYTES)
}

function giveStage(stage: Buffer): void {
  if (stage.length === STAGE_BYTES && freeStages.length < MAX_FREE_STAGES && !freeStages.includes(stage)) freeStages.push(stage)
}

/**
 * Builds one pack under tmp/. Ordinals are reserved in dispatch order (they go into the chunk's
 * AAD before its size is known); records are appended at byte offsets in arrival order.
 */
export class PackWriter {
  readonly id: Buffer
  readonly hex: string
  readonly tmpPath: string
  readonly finalPath: string
  readonly entries: PackIndexEntry[] = []
  private nextOrdinal = 0
  private writeOffset = PACK_HEADER_BYTES
  private reservedBytes = 0
  private readonly writes = new Set<Promise<void>>()
  private failure: unknown
  /** Bytes from file offset `stageStart` (aligned) not written yet: `stage[0, staged)`. */
  private stage: Buffer | undefined = takeStage()
  private stageStart = 0
  private staged = 0

  private constructor(
    private readonly fs: VaultFs,
    private readonly fh: VaultFileHandle,
    layout: VaultLayout,
    hex: string,
    private readonly targetBytes: number,
  ) {
    this.hex = hex
    this.id = Buffer.from(hex, 'hex')
    this.tmpPath = join(layout.tmp, `${hex}.pack.tmp`)
    this.finalPath = packPath(layout, hex)
  }

  static async create(fs: VaultFs, layout: VaultLayout, targetBytes: number): Promise<PackWriter> {
    const hex = randomId(16)
    const tmpPath = join(layout.tmp, `${hex}.pack.tmp`)
    let fh: VaultFileHandle
    try {
      fh = await fs.open(tmpPath, 'wx')
    } catch (err) {
      throw vaultIoError(err, tmpPath, 'creating pack')
    }
    const w = new PackWriter(fs, fh, layout, hex, targetBytes)
    w.gather(Buffer.concat([PACK_MAGIC, w.id]))
    return w
  }

  /**
   * Copies `data` (the bytes at the end of the file so far) into the staging memory, starting the
   * write of every aligned piece that fills up. Synchronous, so concurrent appends keep their order.
   */
  private gather(data: Buffer): void {
    for (let from = 0; from < data.length; ) {
      const stage = this.stage
      if (!stage) throw new EngineError('INTERNAL', `pack ${this.hex}: written after it was finished`)
      const n = Math.min(data.length - from, stage.length - this.staged)
      data.copy(stage, this.staged, from, from + n)
      this.staged += n
      from += n
      if (this.staged >= STAGE_FLUSH_BYTES) this.writeStaged()
    }
  }

  /** Starts the write of the staged bytes up to the last aligned offset; the rest moves to a new stage. */
  private writeStaged(): void {
    const stage = this.stage!
    const aligned = this.staged - (this.staged % DIRECT_ALIGN)
    if (aligned === 0) return
    const next = takeStage()
    stage.copy(next, 0, aligned, this.staged)
    const position = this.stageStart
    this.stage = next
    this.stageStart += aligned
    this.staged -= aligned
    this.track(writeAll(this.fh, stage.subarray(0, aligned), position, this.tmpPath).finally(() => giveStage(stage)))
  }

  /** Returns the staging memory (finish, discard). */
  private releaseStage(): void {
    if (this.stage) giveStage(this.stage)
    this.stage = undefined
  }

  private track(p: Promise<void>): void {
    const t = p.catch((err: unknown) => {
      this.failure ??= vaultIoError(err, this.tmpPath, 'writing pack')
    })
    this.writes.add(t)
    void t.finally(() => this.writes.delete(t))
  }

  /** True once written + reserved bytes reach the target: take no more chunks. */
  get isFull(): boolean {
    return this.writeOffset + this.reservedBytes >= this.targetBytes
  }

  get chunkCount(): number {
    return this.nextOrdinal
  }

  /**
   * Reserves `count` consecutive ordinals for chunks of at most `maxStoredBytes` in all; returns the
   * first. A batch may take the pack past its target by less than one batch.
   */
  reserve(maxStoredBytes: number, count = 1): number {
    this.reservedBytes += maxStoredBytes
    const first = this.nextOrdinal
    this.nextOrdinal += count
    return first
  }

  /**
   * Appends sealed records that lie back to back in `records`; `entries` give their lengths in
   * order. The records are copied into the staging memory at once (`records` may be reused when this
   * resolves) and reach the file in aligned pieces; a failed write fails the next `append` or
   * `finish`. Resolves when few enough pieces are in flight (back-pressure).
   */
  async append(records: Buffer, entries: Array<Omit<PackIndexEntry, 'offset'>>, reservedBytes: number): Promise<void> {
    if (this.failure) throw this.failure
    let offset = this.writeOffset
    const total = entries.reduce((sum, e) => sum + e.length, 0)
    if (total !== records.length) throw new EngineError('INTERNAL', `pack ${this.hex}: ${entries.length} records of ${total} bytes in a buffer of ${records.length}`)
    this.writeOffset += records.length
    this.reservedBytes -= reservedBytes
    for (const e of entries) {
      this.entries.push({ ...e, offset })
      offset += e.length
    }
    this.gather(records)
    while (this.writes.size > MAX_STAGED_WRITES) await Promise.race([...this.writes])
    if (this.failure) throw this.failure
  }

  /** Releases a reservation whose chunk will not come (error paths). */
  unreserve(reservedBytes: number): void {
    this.reservedBytes -= reservedBytes
  }

  /** Writes index and trailer, fsyncs and closes. The pack is still under tmp/. Returns its size. */
  async finish(keys: VaultKeys): Promise<number> {
    try {
      if (this.stage) this.writeStaged()
      while (this.writes.size) await Promise.all([...this.writes])
      if (this.failure) throw this.failure
      if (this.entries.length !== this.nextOrdinal) throw new EngineError('INTERNAL', `pack ${this.hex}: ${this.nextOrdinal - this.entries.length} chunks never arrived`)
      const indexOffset = this.writeOffset
      const index = sealObject(keys.meta, indexAad(this.hex, indexOffset), encodeIndex(this.entries), false)
      const trailer = Buffer.alloc(TRAILER_BYTES)
      trailer.writeBigUInt64LE(BigInt(indexOffset), 0)
      trailer.writeUInt32LE(index.length, 8)
      TRAILER_MAGIC.copy(trailer, 12)
      if (!this.stage || this.stageStart + this.staged !== indexOffset) throw new EngineError('INTERNAL', `pack ${this.hex}: staged bytes do not end at the index`)
      // the unaligned rest of the records, the index and the trailer: one ordinary write
      await writeAll(this.fh, Buffer.concat([this.stage.subarray(0, this.staged), index, trailer]), this.stageStart, this.tmpPath)
      await this.fh.sync()
      return indexOffset + index.length + TRAILER_BYTES
    } catch (err) {
      throw vaultIoError(err, this.tmpPath, 'writing pack')
    } finally {
      this.releaseStage()
      await this.fh.close().catch(() => undefined)
    }
  }

  /** Moves the finished, checked pack to its final name and makes that durable. */
  async publish(): Promise<void> {
    try {
      await this.fs.rename(this.tmpPath, this.finalPath)
      await this.fs.syncDir(join(this.finalPath, '..'))
    } catch (err) {
      throw vaultIoError(err, this.finalPath, 'storing pack')
    }
  }

  /** Removes the temp file (abort paths). */
  async discard(): Promise<void> {
    while (this.writes.size) await Promise.all([...this.writes])
    this.releaseStage()
    await this.fh.close().catch(() => undefined)
    await this.fs.unlink(this.tmpPath).catch(() => undefined)
  }
}
