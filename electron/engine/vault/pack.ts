/**
 * Pack files (FORMAT.md "Pack"): header | chunk records | encrypted index | trailer.
 * A pack is written under `tmp/`, fsynced, then renamed to `packs/<xx>/<id>` and the directory
 * fsynced (I2); its records were checked in memory before they were appended (I9, session.ts).
 * Packs are never modified afterwards.
 */
import { join } from 'node:path'
import { EngineError } from '../errors.js'
import { CHUNK_ID_BYTES, FLAG_CONTAINER, SEAL_OVERHEAD, damaged, openObject, randomId, sealObject, type VaultKeys } from './crypto.js'
import { packPath, type VaultLayout } from './layout.js'
import { readExactly, vaultIoError, writeAll, type VaultFileHandle, type VaultFs } from './vaultFs.js'
import { DIRECT_ALIGN, DirectSide, allocAligned, isDirectAligned } from '../io/directIo.js'

export const PACK_MAGIC = Buffer.from('TRSRPK01', 'ascii')
export const TRAILER_MAGIC = Buffer.from('TPKE', 'ascii')
export const PACK_HEADER_BYTES = 24
// Record flags (FORMAT.md "Chunk record"), as an index lists them and a record's associated data
// binds them (I10). Defined here, not in chunkCodec.ts, so that reading an index never loads the
// zstd binding.
/** The record's body is zstd-compressed. */
export const FLAG_ZSTD = 1
/** The record is a block's recipe (parts.ts), stored under the block's chunk id; never compressed. */
export const FLAG_RECIPE = 2
/** Format 3: a whole block whose parts are addressed inside it (crypto.ts, where its associated data is made). */
export { FLAG_CONTAINER }
/**
 * Format 3: an index entry that is no record of its own but a part inside the container record
 * entered just before it: `offset` and `length` are the part's place in that record's plaintext,
 * `ordinal` the record's. Never in a record's associated data.
 */
export const FLAG_PART = 8

/** Every record flag set: an index entry with any other bit (but a lone FLAG_PART) is refused as damage. */
export const MAX_RECORD_FLAGS = FLAG_ZSTD | FLAG_RECIPE | FLAG_CONTAINER
/** Ordinals fit 30 bits: the chunk table keeps the two flag bits beside them in one word. */
export const MAX_ORDINAL = 0x3fffffff
export const TRAILER_BYTES = 16
export const INDEX_ENTRY_BYTES = 49
/** Byte positions of an index entry's fields after its 32-byte chunk id (FORMAT.md "Pack"; u32 LE but `flags`, a byte). */
export const INDEX_FIELD = { offset: 32, length: 36, ordinal: 40, flags: 44, plainLength: 45 } as const

export interface PackIndexEntry {
  chunkId: Buffer
  offset: number
  length: number
  ordinal: number
  flags: number
  plainLength: number
}

/** A part addressed inside a container record (FLAG_PART): its id, and its place in the record's plaintext. */
export interface SubEntry {
  chunkId: Uint8Array
  offset: number
  length: number
}

/** Whether an index entry is a part inside the record before it (FLAG_PART), not a record. */
export function isSubEntry(e: { flags: number }): boolean {
  return (e.flags & FLAG_PART) !== 0
}

/** A record of a pack index, with the parts its sub-entries address inside it (a container, format 3). */
export type RecordEntry = PackIndexEntry & { subs?: SubEntry[] }

/** The records of a checked index's entries (`readPackIndex`), each container with its sub-entries. */
export function recordsOf(entries: ReadonlyArray<PackIndexEntry>): RecordEntry[] {
  const out: RecordEntry[] = []
  for (const e of entries) {
    if (!isSubEntry(e)) out.push({ ...e })
    else if (out.length > 0) (out[out.length - 1]!.subs ??= []).push({ chunkId: e.chunkId, offset: e.offset, length: e.length })
    else throw new EngineError('INTERNAL', 'a part entry follows no container record')
  }
  return out
}

export function indexAad(packHex: string, indexOffset: number): string {
  return `tresor/v1/pack-index/${packHex}/${indexOffset}`
}

export function encodeIndex(entries: PackIndexEntry[]): Buffer {
  const buf = Buffer.allocUnsafe(4 + entries.length * INDEX_ENTRY_BYTES)
  buf.writeUInt32LE(entries.length, 0)
  let p = 4
  for (const e of entries) p = encodeEntry(buf, p, e, e.offset)
  return buf
}

/** Writes one index entry (at `offset` in its pack) at `p` of `buf`; returns the position after it. */
function encodeEntry(buf: Buffer, p: number, e: Omit<PackIndexEntry, 'offset' | 'chunkId'> & { chunkId: Uint8Array }, offset: number): number {
  buf.set(e.chunkId, p)
  buf.writeUInt32LE(offset, p + INDEX_FIELD.offset)
  buf.writeUInt32LE(e.length, p + INDEX_FIELD.length)
  buf.writeUInt32LE(e.ordinal, p + INDEX_FIELD.ordinal)
  buf[p + INDEX_FIELD.flags] = e.flags
  buf.writeUInt32LE(e.plainLength, p + INDEX_FIELD.plainLength)
  return p + INDEX_ENTRY_BYTES
}

/** Writes the sub-entry of part `s` inside the record of ordinal `ordinal` at `p`; returns the position after it. */
function encodeSubEntry(buf: Buffer, p: number, s: SubEntry, ordinal: number): number {
  return encodeEntry(buf, p, { chunkId: s.chunkId, length: s.length, ordinal, flags: FLAG_PART, plainLength: s.length }, s.offset)
}

/**
 * Checks a decrypted index (its length, and every entry inside the pack's records, with a possible
 * flag, plain length and ordinal; a sub-entry inside the container record entered before it, with
 * its ordinal); returns its entry count. Throws VAULT_DAMAGED.
 */
export function checkIndex(buf: Buffer, packHex: string, indexOffset: number, maxPlain: number): number {
  const what = `pack ${packHex} index`
  if (buf.length < 4) throw damaged(what, 'is truncated')
  const n = buf.readUInt32LE(0)
  if (buf.length !== 4 + n * INDEX_ENTRY_BYTES) throw damaged(what, 'has a wrong length')
  // the record entered last, while it is a container: its ordinal and plain length
  let container: { ordinal: number; plainLength: number } | undefined
  for (let i = 0, p = 4; i < n; i++, p += INDEX_ENTRY_BYTES) {
    const offset = buf.readUInt32LE(p + INDEX_FIELD.offset)
    const length = buf.readUInt32LE(p + INDEX_FIELD.length)
    const flags = buf[p + INDEX_FIELD.flags]!
    const ordinal = buf.readUInt32LE(p + INDEX_FIELD.ordinal)
    const plainLength = buf.readUInt32LE(p + INDEX_FIELD.plainLength)
    if (flags === FLAG_PART) {
      const inRecord = container !== undefined && ordinal === container.ordinal && length >= 1 && plainLength === length && offset + length <= container.plainLength
      if (!inRecord) throw damaged(what, `has an impossible part entry (#${i})`)
      continue
    }
    const inPack = offset >= PACK_HEADER_BYTES && offset + length <= indexOffset
    const knownFlags = flags <= MAX_RECORD_FLAGS && (flags & (FLAG_RECIPE | FLAG_CONTAINER)) !== (FLAG_RECIPE | FLAG_CONTAINER)
    if (!inPack || !knownFlags || plainLength > maxPlain || ordinal > MAX_ORDINAL) {
      throw damaged(what, `has an impossible entry (#${i})`)
    }
    container = flags & FLAG_CONTAINER ? { ordinal, plainLength } : undefined
  }
  return n
}

/** The bytes of the records listed by a checked index of `n` entries (sub-entries have none of their own). */
export function recordBytesOf(index: Buffer, n: number): number {
  let sum = 0
  for (let i = 0, p = 4; i < n; i++, p += INDEX_ENTRY_BYTES) if (index[p + INDEX_FIELD.flags] !== FLAG_PART) sum += index.readUInt32LE(p + INDEX_FIELD.length)
  return sum
}

/** Whether a checked index of `n` entries lists a recipe record (format 2). */
export function indexHasRecipe(index: Buffer, n: number): boolean {
  for (let i = 0, p = 4; i < n; i++, p += INDEX_ENTRY_BYTES) if (index[p + INDEX_FIELD.flags]! & FLAG_RECIPE) return true
  return false
}

/** The `n` entries of a checked index as objects. */
function entriesOf(buf: Buffer, n: number): PackIndexEntry[] {
  const out: PackIndexEntry[] = new Array<PackIndexEntry>(n)
  for (let i = 0, p = 4; i < n; i++, p += INDEX_ENTRY_BYTES) {
    out[i] = {
      chunkId: Buffer.from(buf.subarray(p, p + CHUNK_ID_BYTES)),
      offset: buf.readUInt32LE(p + INDEX_FIELD.offset),
      length: buf.readUInt32LE(p + INDEX_FIELD.length),
      ordinal: buf.readUInt32LE(p + INDEX_FIELD.ordinal),
      flags: buf[p + INDEX_FIELD.flags]!,
      plainLength: buf.readUInt32LE(p + INDEX_FIELD.plainLength),
    }
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
  const { index, count, sizeBytes, indexOffset } = await readPackIndexBytes(fs, path, packHex, keys, maxPlain)
  return { entries: entriesOf(index, count), sizeBytes, indexOffset }
}

/**
 * Where a pack's index lies, from its checked header and trailer, and how many entries the index's
 * length implies (it is sealed uncompressed: `SEAL_OVERHEAD + 1 + 4 + entries × INDEX_ENTRY_BYTES`
 * bytes). `entries` is a size hint for the chunk table, read without decrypting anything; the index
 * itself is checked when it is read (`readPackIndexBytes`).
 */
export interface PackTrailer {
  sizeBytes: number
  indexOffset: number
  indexLength: number
  entries: number
}

/** The entry count an index of `indexLength` sealed bytes holds, if it is well formed (else 0: only a hint). */
function entriesOfIndexLength(indexLength: number): number {
  const n = (indexLength - SEAL_OVERHEAD - 1 - 4) / INDEX_ENTRY_BYTES
  return Number.isSafeInteger(n) && n > 0 ? n : 0
}

async function readTrailerOf(fh: VaultFileHandle, path: string, packHex: string): Promise<PackTrailer> {
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
  return { sizeBytes: size, indexOffset, indexLength, entries: entriesOfIndexLength(indexLength) }
}

/** Opens pack `path` and runs `read` on it, closing it after; I/O errors name the pack. */
async function withPack<T>(fs: VaultFs, path: string, read: (fh: VaultFileHandle) => Promise<T>): Promise<T> {
  let fh: VaultFileHandle
  try {
    fh = await fs.open(path, 'r')
  } catch (err) {
    throw vaultIoError(err, path, 'opening pack')
  }
  try {
    return await read(fh)
  } catch (err) {
    throw vaultIoError(err, path, 'reading pack')
  } finally {
    await fh.close().catch(() => undefined)
  }
}

/** A pack's header and trailer, checked (two small reads): where its index lies and how many entries it holds. */
export function readPackTrailer(fs: VaultFs, path: string, packHex: string): Promise<PackTrailer> {
  return withPack(fs, path, (fh) => readTrailerOf(fh, path, packHex))
}

/**
 * `readPackIndex` without an object per entry: the decrypted, checked index (`encodeIndex` layout)
 * and its entry count, for `ChunkTable.insertIndex`.
 */
export function readPackIndexBytes(
  fs: VaultFs,
  path: string,
  packHex: string,
  keys: VaultKeys,
  maxPlain: number,
): Promise<{ index: Buffer; count: number; sizeBytes: number; indexOffset: number }> {
  return withPack(fs, path, async (fh) => {
    const { sizeBytes, indexOffset, indexLength } = await readTrailerOf(fh, path, packHex)
    const sealed = Buffer.allocUnsafe(indexLength)
    await readExactly(fh, sealed, 0, indexLength, indexOffset, path)
    const plain = openObject(keys.meta, indexAad(packHex, indexOffset), sealed, `pack ${packHex} index`)
    return { index: plain, count: checkIndex(plain, packHex, indexOffset, maxPlain), sizeBytes, indexOffset }
  })
}

/** Bytes of a staging buffer for direct writes: each full one is one write to the pack. */
const STAGE_BYTES = 4 * 1024 * 1024

/** Staging buffers of finished packs, kept for the next pack: reused memory is warm memory. */
const stagePool: Buffer[] = []
const STAGE_POOL_MAX = 4

function takeStage(): Buffer {
  return stagePool.pop() ?? allocAligned(STAGE_BYTES, { hugePages: true })
}

function giveStage(buf: Buffer): void {
  if (stagePool.length < STAGE_POOL_MAX) stagePool.push(buf)
}

/**
 * Full staging buffers queued for writing, in all packs of the process, oldest first (each removes
 * itself once written). The packs of a session go to one device, so the bound is shared: while a
 * finished pack's last buffers were still being written, the next pack queued its own, and a full
 * backup held six 4 MiB buffers at once (twelfth round).
 */
const queuedStages = new Set<Promise<void>>() // in insertion order: the oldest first
/**
 * An append stages its records only while at most this many full buffers are queued (across packs),
 * so at most two more wait behind the one being written. With one, a full backup on the AMD host of
 * the nineteenth round spent 1.0–1.9 core-s in iowait (its disk takes a 4 MiB direct write in
 * ~6 ms): while a write was slow, appends waited, batches kept their slots, and the chunk workers
 * ran dry. With two: 7.50–7.91 s against 8.58–9.62 s, ~5 MiB more peak memory; with four, no
 * faster than two and up to 275 MiB (PERFORMANCE.md).
 */
const MAX_QUEUED_STAGES = 2

/**
 * Builds one pack under tmp/. Ordinals are reserved in dispatch order (they go into the chunk's
 * AAD before its size is known); records are appended at byte offsets in arrival order.
 *
 * One write per pack is in flight at a time; appends that arrive meanwhile wait in order. Writes to
 * one file serialize in the kernel anyway (the inode's lock), and a second one issued meanwhile
 * spins on that lock: a full backup spent ~5 % of all CPU samples in `rwsem_spin_on_owner` with
 * two batches of the chunk workers written at once.
 *
 * Where the vault's file system takes direct I/O (`VaultFs.openDirect`), records are copied into a
 * page-aligned staging buffer and every full buffer goes to the device with O_DIRECT, bypassing the
 * page cache. A pack is written once and read back only by a restore, a verify or a prune, so
 * caching it buys nothing, and filling fresh cache pages is what a full backup's CPU time went to:
 * measured here, 1.9 GiB written through the page cache cost 3.1–7.5 s of system time, with O_DIRECT
 * 0.1 s (DECISIONS.md). The last partial page, the index and the trailer go through the ordinary
 * handle, and the fsync in `finish` makes the whole file durable as before. A direct write the
 * kernel refuses (EINVAL) is written again through the ordinary handle, and the pack stays buffered.
 */
export class PackWriter {
  readonly id: Buffer
  readonly hex: string
  readonly tmpPath: string
  readonly finalPath: string
  /**
   * The entries appended so far, already in the index's layout (a 4-byte count, set at `finish`,
   * then INDEX_ENTRY_BYTES each): 49 bytes a record instead of an object and an id buffer (~250
   * bytes of heap). A recipe pack stays open for a whole backup and takes a record per stored
   * block: a backup of 5.7 GB of real files kept ~90,000 such objects alive until its end.
   */
  private index = Buffer.allocUnsafe(4 + 64 * INDEX_ENTRY_BYTES)
  /** Index entries appended: records and the sub-entries of container records. */
  private entryCount = 0
  private recordCount = 0
  private entryBytes = 0
  private nextOrdinal = 0
  private writeOffset = PACK_HEADER_BYTES
  private reservedBytes = 0
  /** The last write queued, settled either way: every write starts after the one before it. */
  private lastWrite: Promise<void> = Promise.resolve()
  private failure: unknown
  /** The staging buffer being filled (direct I/O only), its file position and fill. */
  private stage: Buffer | undefined
  private stageBase = 0
  private stageFill = 0

  private constructor(
    private readonly fs: VaultFs,
    private readonly fh: VaultFileHandle,
    private readonly direct: DirectSide<VaultFileHandle>,
    layout: VaultLayout,
    hex: string,
    private readonly targetBytes: number,
  ) {
    this.hex = hex
    this.id = Buffer.from(hex, 'hex')
    this.tmpPath = join(layout.tmp, `${hex}.pack.tmp`)
    this.finalPath = packPath(layout, hex)
    if (direct.isOn) this.stage = takeStage()
  }

  /**
   * `buffered`: write through the page cache only, with no staging buffer. For packs of small
   * records that stay open long (format 2's recipe packs are held until the session's data packs
   * are published): a staging buffer each would cost 4 MiB per held pack.
   */
  static async create(fs: VaultFs, layout: VaultLayout, targetBytes: number, options: { buffered?: boolean } = {}): Promise<PackWriter> {
    const hex = randomId(16)
    const tmpPath = join(layout.tmp, `${hex}.pack.tmp`)
    let fh: VaultFileHandle
    try {
      fh = await fs.open(tmpPath, 'wx')
    } catch (err) {
      throw vaultIoError(err, tmpPath, 'creating pack')
    }
    const direct = options.buffered ? undefined : await fs.openDirect?.(tmpPath, 'w').catch(() => undefined)
    const w = new PackWriter(fs, fh, new DirectSide(direct), layout, hex, targetBytes)
    const header = Buffer.concat([PACK_MAGIC, w.id])
    if (w.stage) w.stageBytes(header)
    else void w.enqueueWrite(header, 0).catch(() => undefined) // recorded in `failure`
    return w
  }

  /**
   * Writes `data` at `position` once the writes queued before it have ended (whatever their
   * outcome): with O_DIRECT when `direct` is set and still on, else through the ordinary handle.
   * The first failure is kept for `append` and `finish`.
   */
  private enqueueWrite(data: Buffer, position: number, direct = false): Promise<void> {
    const p = this.lastWrite.then(() => (direct ? this.writeDirect(data, position) : writeAll(this.fh, data, position, this.tmpPath)))
    this.lastWrite = p.catch((err: unknown) => {
      this.failure ??= vaultIoError(err, this.tmpPath, 'writing pack')
    })
    return p
  }

  /** One direct write of aligned `data`; refused (EINVAL), direct I/O goes off and `data` is written buffered. */
  private async writeDirect(data: Buffer, position: number): Promise<void> {
    const qualifies = isDirectAligned(data, position) && data.length % DIRECT_ALIGN === 0
    if (qualifies && (await this.direct.attempt((handle) => writeAll(handle, data, position, this.tmpPath)))) return
    await writeAll(this.fh, data, position, this.tmpPath)
  }

  /** Copies `data` into the staging buffer; each buffer that fills up is queued for writing. */
  private stageBytes(data: Buffer): void {
    for (let done = 0; done < data.length; ) {
      const stage = this.stage!
      const n = Math.min(data.length - done, stage.length - this.stageFill)
      data.copy(stage, this.stageFill, done, done + n)
      done += n
      this.stageFill += n
      if (this.stageFill < stage.length) continue
      const written = this.enqueueWrite(stage, this.stageBase, true).finally(() => {
        queuedStages.delete(written)
        giveStage(stage)
      })
      queuedStages.add(written)
      written.catch(() => undefined) // recorded in `failure`
      this.stage = takeStage()
      this.stageBase += stage.length
      this.stageFill = 0
    }
  }

  /** Resolves once every write queued so far (and any queued meanwhile) has ended. */
  private async writesSettled(): Promise<void> {
    let last: Promise<void>
    do {
      last = this.lastWrite
      await last
    } while (last !== this.lastWrite)
  }

  /** True once written + reserved bytes reach the target: take no more chunks. */
  get isFull(): boolean {
    return this.writeOffset + this.reservedBytes >= this.targetBytes
  }

  get chunkCount(): number {
    return this.nextOrdinal
  }

  /** Records appended so far (`chunkCount` counts those reserved). */
  get recordsAppended(): number {
    return this.recordCount
  }

  /** Index entries appended so far: records, and the sub-entries of container records (format 3). */
  get entriesAppended(): number {
    return this.entryCount
  }

  /** Bytes of the records appended so far. */
  get recordBytes(): number {
    return this.entryBytes
  }

  /** The appended entries in the index's layout (`encodeIndex`, `ChunkTable.insertIndex`); a view, valid until the next append. */
  get indexBytes(): Buffer {
    this.index.writeUInt32LE(this.entryCount, 0)
    return this.index.subarray(0, 4 + this.entryCount * INDEX_ENTRY_BYTES)
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
   * order (their offsets are set here, and the pack keeps them). Resolves once `records` may be
   * reused: written, or copied into the staging buffer.
   * `check.verify` sees each span of `records` (the bytes up to `check.ends[n]`, the last end at
   * most `records.length`) right before it is staged (or, unstaged, before the write), so the copy
   * reads bytes the check has just brought into cache (checking a whole batch first, then copying
   * it, read it from memory twice); when it throws, the pack is failed (it can no longer be
   * finished) and the error is thrown.
   */
  async append(
    records: Buffer,
    entries: PackIndexEntry[],
    reservedBytes: number,
    check?: { ends: ReadonlyArray<number>; verify: (span: Buffer, n: number) => void },
    /** Per entry, the parts addressed inside it (a container record, format 3): written as sub-entries right after it. */
    subs?: ReadonlyArray<ReadonlyArray<SubEntry> | undefined>,
  ): Promise<void> {
    if (this.failure) throw this.failure
    // Memory stays bounded (MAX_QUEUED_STAGES). The wait comes before the offset is given out:
    // each concurrent append would otherwise queue one more buffer before waiting.
    if (this.stage) while (queuedStages.size > MAX_QUEUED_STAGES) await queuedStages.values().next().value!.catch(() => undefined)
    if (this.failure) throw this.failure
    let offset = this.writeOffset
    const total = entries.reduce((sum, e) => sum + e.length, 0)
    if (total !== records.length) throw new EngineError('INTERNAL', `pack ${this.hex}: ${entries.length} records of ${total} bytes in a buffer of ${records.length}`)
    if (check && (check.ends.at(-1) ?? 0) !== records.length) throw new EngineError('INTERNAL', `pack ${this.hex}: check spans do not cover the ${records.length} bytes of records`)
    this.writeOffset += records.length
    this.reservedBytes -= reservedBytes
    const subCount = subs ? subs.reduce((sum, list) => sum + (list?.length ?? 0), 0) : 0
    const need = 4 + (this.entryCount + entries.length + subCount) * INDEX_ENTRY_BYTES
    if (need > this.index.length) {
      const grown = Buffer.allocUnsafe(Math.max(need, this.index.length * 2))
      this.index.copy(grown, 0, 0, 4 + this.entryCount * INDEX_ENTRY_BYTES)
      this.index = grown
    }
    let p = 4 + this.entryCount * INDEX_ENTRY_BYTES
    entries.forEach((e, k) => {
      p = encodeEntry(this.index, p, e, offset)
      offset += e.length
      for (const s of subs?.[k] ?? []) p = encodeSubEntry(this.index, p, s, e.ordinal)
    })
    this.entryCount += entries.length + subCount
    this.recordCount += entries.length
    this.entryBytes += total
    if (check) {
      try {
        // span by span: each is verified, then (staging) copied while it is still in cache; all
        // before any await, so records land in the order their offsets were given out
        for (let n = 0, at = 0; n < check.ends.length; at = check.ends[n++]!) {
          const span = records.subarray(at, check.ends[n]!)
          check.verify(span, n)
          if (this.stage) this.stageBytes(span)
        }
      } catch (err) {
        // part of the batch may be staged: this pack must never be finished
        this.failure ??= err instanceof EngineError ? err : vaultIoError(err, this.tmpPath, 'writing pack')
        throw err
      }
      if (this.stage) {
        if (this.failure) throw this.failure
        return
      }
    }
    try {
      if (!this.stage) {
        await this.enqueueWrite(records, offset - records.length)
        return
      }
      // copied before any await, so records land in the order their offsets were given out
      this.stageBytes(records)
    } catch (err) {
      throw vaultIoError(err, this.tmpPath, 'writing pack')
    }
    if (this.failure) throw this.failure
  }

  /** Releases a reservation whose chunk will not come (error paths). */
  unreserve(reservedBytes: number): void {
    this.reservedBytes -= reservedBytes
  }

  /** Writes index and trailer, fsyncs and closes. The pack is still under tmp/. Returns its size. */
  async finish(keys: VaultKeys): Promise<number> {
    try {
      await this.writesSettled()
      if (this.failure) throw this.failure
      if (this.recordCount !== this.nextOrdinal) throw new EngineError('INTERNAL', `pack ${this.hex}: ${this.nextOrdinal - this.recordCount} chunks never arrived`)
      const indexOffset = this.writeOffset
      const index = sealObject(keys.meta, indexAad(this.hex, indexOffset), this.indexBytes, false)
      const trailer = Buffer.alloc(TRAILER_BYTES)
      trailer.writeBigUInt64LE(BigInt(indexOffset), 0)
      trailer.writeUInt32LE(index.length, 8)
      TRAILER_MAGIC.copy(trailer, 12)
      const stage = this.stage
      if (!stage) {
        await writeAll(this.fh, Buffer.concat([index, trailer]), indexOffset, this.tmpPath)
      } else {
        if (this.stageBase + this.stageFill !== indexOffset) throw new EngineError('INTERNAL', `pack ${this.hex}: staged ${this.stageBase + this.stageFill} bytes of ${indexOffset}`)
        // whole pages of the staging buffer directly; the rest with the index and the trailer
        const aligned = this.stageFill - (this.stageFill % DIRECT_ALIGN)
        if (aligned > 0) await this.writeDirect(stage.subarray(0, aligned), this.stageBase)
        await writeAll(this.fh, Buffer.concat([stage.subarray(aligned, this.stageFill), index, trailer]), this.stageBase + aligned, this.tmpPath)
        // written: the next pack may have it while this one is synced
        this.stage = undefined
        giveStage(stage)
      }
      await this.fh.sync()
      return indexOffset + index.length + TRAILER_BYTES
    } catch (err) {
      throw vaultIoError(err, this.tmpPath, 'writing pack')
    } finally {
      await this.close()
    }
  }

  /** Closes both handles and keeps the staging buffer for the next pack; no write may be in flight. */
  private async close(): Promise<void> {
    await this.fh.close().catch(() => undefined)
    await this.direct.close()
    if (this.stage) giveStage(this.stage)
    this.stage = undefined
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
    await this.writesSettled()
    await this.close()
    await this.fs.unlink(this.tmpPath).catch(() => undefined)
  }
}
