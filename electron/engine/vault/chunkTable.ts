/**
 * The in-memory chunk index: chunk id → (pack, offset, stored length, ordinal, flags) of its
 * record, and for a part inside a container record (format 3) its place in that record's plaintext.
 *
 * Why in memory, and why this shape: a backup must know which chunk ids exist (dedup) and a restore
 * where each lives. Loading every pack index at open is one small read per pack (32 MiB packs:
 * 32k packs for 1 TiB), and open-addressing tables in typed arrays cost 40 bytes per slot (32
 * before format 3), ~50 bytes per chunk at the 0.8 load bound: 1 TiB of unique 64 KiB chunks
 * ≈ 840 MB, of 1 MiB chunks ≈ 52 MB, no per-entry JS objects for the garbage collector to walk. A local cache file can
 * come later if loading indexes from a slow drive proves too slow; the vault stays the only truth.
 *
 * Slots keep the first 16 bytes of each 32-byte id (48-byte slots before). Ids are keyed BLAKE3
 * outputs, so two different chunks share a 128-bit prefix with probability ~n²/2^129 (~10^-23 for
 * 10^8 chunks). Even then nothing wrong is restored: every record is opened with the full id from
 * the block map as associated data and re-hashed (I3), so such a block fails as CHUNK_CORRUPT.
 *
 * The table is 64 segments by the top six bits of an id's first word, each an open-addressing table
 * that grows (by 1.6×) on its own: a growth copies 1/64 of the slots, so the old and new slots held
 * side by side for a moment are a small part of the table instead of 2.6 times all of it.
 *
 * Slot layout (40 bytes, ten 32-bit words): id prefix[16] | pack u32 | offset u32 | length u32 |
 * ordinal u32 | record flags u8 + part length << 8 | part offset u32. The last two words place a
 * part inside its container record (format 3); a part length of 0 marks a record of its own.
 * Empty slot: pack = 0xFFFFFFFF.
 *
 * Loading is paid by every backup that stores something, so it goes without an object per entry:
 * `insertIndex` takes a checked pack index as it was decrypted, and the table is probed and filled
 * through a Uint32Array (~1 µs per entry; 3.1 µs through decoded entries and Buffer compares, which
 * made 1M chunks, a 64 GiB vault, cost 3 s before the first new block was stored).
 */
import { EngineError } from '../errors.js'
import { FLAG_CONTAINER, FLAG_PART, INDEX_ENTRY_BYTES, INDEX_FIELD, MAX_ORDINAL, MAX_RECORD_FLAGS } from './pack.js'

const KEY = 16
const SLOT = 40
/** A slot in 32-bit words: id prefix [0..3], pack [4], offset [5], length [6], ordinal [7], flags + part length [8], part offset [9]. */
const WORDS = SLOT / 4
const EMPTY = 0xffffffff
const MAX_LOAD = 0.8

/** Where a chunk's record lies. */
export interface RecordLocation {
  pack: number
  offset: number
  length: number
  ordinal: number
  flags: number
}

export interface ChunkLocation extends RecordLocation {
  /** For a part inside a container record (format 3): its offset in the record's plaintext. */
  partOffset: number
  /** For a part inside a container record: its length; 0 for a chunk that is a record of its own. */
  partLength: number
}

/** The largest part length a slot holds (24 bits; parts are at most 64 KiB). */
const MAX_PART_LENGTH = 0xffffff

export interface PackInfo {
  id: Buffer
  hex: string
  /** File size in bytes. */
  sizeBytes: number
  chunkCount: number
}

/** One part of the table: the ids whose first word's top bits name it, in an open-addressing table of their own. */
interface Segment {
  /** The slots as 32-bit words (host byte order: the table is never stored). */
  words: Uint32Array
  capacity: number
  count: number
}

/**
 * The table is split by the top SEGMENT_BITS of an id's first word into segments that grow one at a
 * time: a growth holds a segment's old slots beside its new ones, 1/64 of the table rather than all
 * of it (a single table's last growth during a 6.2 GB backup of real files held ~75 MB of slots
 * beside ~47 MB for a moment).
 */
const SEGMENT_BITS = 6
const SEGMENTS = 1 << SEGMENT_BITS
const SEGMENT_SHIFT = 32 - SEGMENT_BITS
const WITHIN = 2 ** SEGMENT_SHIFT

export class ChunkTable {
  private readonly segments: Segment[]
  /** Slot numbers of each segment's first slot (a slot number is stable until a segment grows). */
  private bases: number[] = []
  private total = 0
  private count = 0
  private resized = 0
  readonly packs: PackInfo[] = []
  private readonly packByHex = new Map<string, number>()

  constructor(initialCapacity = 1024) {
    const each = Math.max(16, Math.ceil(initialCapacity / SEGMENTS))
    this.segments = Array.from({ length: SEGMENTS }, () => ({ words: new Uint32Array(each * WORDS).fill(EMPTY), capacity: each, count: 0 }))
    this.renumber()
  }

  private renumber(): void {
    let at = 0
    this.bases = this.segments.map((g) => {
      const base = at
      at += g.capacity
      return base
    })
    this.total = at
  }

  /** How many times a segment has been made anew (each copies its slots and leaves the old ones as garbage). */
  get resizes(): number {
    return this.resized
  }

  get size(): number {
    return this.count
  }

  /** Slots of all segments: slot numbers run from 0 to this, and stay valid until the table grows. */
  get slotCount(): number {
    return this.total
  }

  /** Bytes held by the table (for the memory bound). */
  get memoryBytes(): number {
    return this.segments.reduce((sum, g) => sum + g.words.byteLength, 0)
  }

  addPack(info: Omit<PackInfo, 'id'> & { id: Buffer }): number {
    const existing = this.packByHex.get(info.hex)
    if (existing !== undefined) return existing
    const n = this.packs.length
    this.packs.push(info)
    this.packByHex.set(info.hex, n)
    return n
  }

  packNumber(hex: string): number | undefined {
    return this.packByHex.get(hex)
  }

  /**
   * The slot of segment `g` holding the id prefix k0..k3 (its first KEY bytes as four little-endian
   * words), else the empty slot where it would go (linear probing from a home given by the first word).
   */
  private probe(g: Segment, k0: number, k1: number, k2: number, k3: number): number {
    const w = g.words
    let i = Math.floor(((k0 % WITHIN) / WITHIN) * g.capacity)
    for (;;) {
      const o = i * WORDS
      if (w[o + 4] === EMPTY || (w[o] === k0 && w[o + 1] === k1 && w[o + 2] === k2 && w[o + 3] === k3)) return i
      if (++i === g.capacity) i = 0
    }
  }

  /** Slot number of `id`, or -1. */
  find(id: Uint8Array): number {
    const v = new DataView(id.buffer, id.byteOffset, KEY)
    const k0 = v.getUint32(0, true)
    const s = k0 >>> SEGMENT_SHIFT
    const g = this.segments[s]!
    const i = this.probe(g, k0, v.getUint32(4, true), v.getUint32(8, true), v.getUint32(12, true))
    return g.words[i * WORDS + 4] === EMPTY ? -1 : this.bases[s]! + i
  }

  has(id: Uint8Array): boolean {
    return this.find(id) >= 0
  }

  /** The segment and its slot of slot number `slot`. */
  private place(slot: number): { g: Segment; i: number } {
    let lo = 0
    let hi = SEGMENTS - 1
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1
      if (this.bases[mid]! <= slot) lo = mid
      else hi = mid - 1
    }
    return { g: this.segments[lo]!, i: slot - this.bases[lo]! }
  }

  location(slot: number): ChunkLocation {
    const { g, i } = this.place(slot)
    const o = i * WORDS
    const w = g.words
    const fl = w[o + 8]!
    return { pack: w[o + 4]!, offset: w[o + 5]!, length: w[o + 6]!, ordinal: w[o + 7]!, flags: fl & 0xff, partOffset: w[o + 9]!, partLength: fl >>> 8 }
  }

  /** Slots in use, in table order. */
  *usedSlots(): Generator<number> {
    for (const [s, g] of this.segments.entries()) {
      for (let i = 0; i < g.capacity; i++) if (g.words[i * WORDS + 4] !== EMPTY) yield this.bases[s]! + i
    }
  }

  get(id: Uint8Array): ChunkLocation | undefined {
    const s = this.find(id)
    return s < 0 ? undefined : this.location(s)
  }

  /** Inserts unless present (the first copy of a chunk wins); returns true when inserted. Ids are 32 bytes; the table keeps their first 16. */
  insert(id: Uint8Array, loc: RecordLocation & Partial<Pick<ChunkLocation, 'partOffset' | 'partLength'>>): boolean {
    if (id.length !== 32) throw new EngineError('INTERNAL', 'chunk ids are 32 bytes')
    const v = new DataView(id.buffer, id.byteOffset, KEY)
    return this.insertPrefix(
      v.getUint32(0, true), v.getUint32(4, true), v.getUint32(8, true), v.getUint32(12, true),
      loc.pack, loc.offset, loc.length, loc.ordinal, loc.flags, loc.partOffset ?? 0, loc.partLength ?? 0,
    )
  }

  /**
   * Inserts the entries of a pack index (pack.ts `encodeIndex` layout, already checked by
   * `checkIndex`) for pack number `pack`, without an object per entry. Returns how many were new.
   */
  insertIndex(index: Buffer, pack: number): number {
    const n = index.readUInt32LE(0)
    this.reserveIndex(index, n)
    let added = 0
    // the container record a part entry lies in: the record entered last (checkIndex)
    let offset = 0
    let length = 0
    let ordinal = 0
    let flags = 0
    for (let i = 0, p = 4; i < n; i++, p += INDEX_ENTRY_BYTES) {
      const entryFlags = index[p + INDEX_FIELD.flags]!
      const k0 = index.readUInt32LE(p)
      const k1 = index.readUInt32LE(p + 4)
      const k2 = index.readUInt32LE(p + 8)
      const k3 = index.readUInt32LE(p + 12)
      let inserted: boolean
      if (entryFlags === FLAG_PART) {
        if (!(flags & FLAG_CONTAINER)) throw new EngineError('INTERNAL', 'a part entry follows no container record')
        inserted = this.insertPrefix(k0, k1, k2, k3, pack, offset, length, ordinal, flags, index.readUInt32LE(p + INDEX_FIELD.offset), index.readUInt32LE(p + INDEX_FIELD.length))
      } else {
        offset = index.readUInt32LE(p + INDEX_FIELD.offset)
        length = index.readUInt32LE(p + INDEX_FIELD.length)
        ordinal = index.readUInt32LE(p + INDEX_FIELD.ordinal)
        flags = entryFlags
        inserted = this.insertPrefix(k0, k1, k2, k3, pack, offset, length, ordinal, flags, 0, 0)
      }
      if (inserted) added++
    }
    return added
  }

  /** Adds pack `hex` with the entries of its checked index (`readPackIndexBytes`); returns its number. */
  addPackIndex(hex: string, pack: { sizeBytes: number; index: Buffer; count: number }): number {
    const n = this.addPack({ id: Buffer.from(hex, 'hex'), hex, sizeBytes: pack.sizeBytes, chunkCount: pack.count })
    this.insertIndex(pack.index, n)
    return n
  }

  /**
   * Makes room for `more` entries spread over the segments at once (one growth instead of several).
   * Loading a vault's packs calls it with the sum of their index sizes first (VaultContext
   * `reserveFor`): the segments are then made once at their final size instead of growing ~15
   * times each, which halved the load of a 710,000-entry table (0.70–0.93 s → 0.41–0.45 s) and
   * leaves none of the old segments behind as garbage. Ids are uniform, so a segment's share is
   * binomial: with four standard deviations of room (~4 % more slots at that size) a load
   * in a few hundred has one segment that still overflows, and grows on its own.
   */
  reserve(more: number): void {
    const share = more / SEGMENTS
    const each = Math.ceil(share + 4 * Math.sqrt(share))
    this.growTo((g) => g.count + each)
  }

  /** Makes room for the `n` entries of a pack index, counted per segment (an upper bound: some may be known). */
  private reserveIndex(index: Buffer, n: number): void {
    const per = new Uint32Array(SEGMENTS)
    for (let i = 0, p = 4; i < n; i++, p += INDEX_ENTRY_BYTES) per[index.readUInt32LE(p) >>> SEGMENT_SHIFT]!++
    this.growTo((g, s) => g.count + per[s]!)
  }

  /** Grows each segment that could not take `entries(segment)` entries within the load bound. */
  private growTo(entries: (g: Segment, s: number) => number): void {
    let grew = false
    this.segments.forEach((g, s) => {
      const needed = Math.ceil(entries(g, s) / MAX_LOAD) + 1
      if (needed > g.capacity) {
        this.resize(g, Math.max(needed, Math.ceil(g.capacity * 1.6)), false)
        grew = true
      }
    })
    if (grew) this.renumber()
  }

  private insertPrefix(
    k0: number, k1: number, k2: number, k3: number,
    pack: number, offset: number, length: number, ordinal: number, flags: number, partOffset: number, partLength: number,
  ): boolean {
    if (ordinal > MAX_ORDINAL || flags > MAX_RECORD_FLAGS || partLength > MAX_PART_LENGTH) throw new EngineError('INTERNAL', 'chunk ordinal/flags out of range')
    const g = this.segments[k0 >>> SEGMENT_SHIFT]!
    if ((g.count + 1) / g.capacity > MAX_LOAD) this.resize(g, Math.ceil(g.capacity * 1.6))
    const i = this.probe(g, k0, k1, k2, k3)
    const o = i * WORDS
    const w = g.words
    if (w[o + 4] !== EMPTY) return false
    w[o] = k0
    w[o + 1] = k1
    w[o + 2] = k2
    w[o + 3] = k3
    w[o + 4] = pack
    w[o + 5] = offset
    w[o + 6] = length
    w[o + 7] = ordinal
    w[o + 8] = (flags | (partLength << 8)) >>> 0
    w[o + 9] = partOffset
    g.count++
    this.count++
    return true
  }

  /** Moves every slot of segment `g` into `capacity` slots (whole slots are copied: the ids are only prefixes). */
  private resize(g: Segment, capacity: number, renumber = true): void {
    this.resized++
    const old = g.words
    g.capacity = capacity
    g.words = new Uint32Array(capacity * WORDS).fill(EMPTY)
    const w = g.words
    for (let from = 0; from < old.length; from += WORDS) {
      if (old[from + 4] === EMPTY) continue
      // the new slots hold no copy of this prefix yet: probe ends on an empty slot
      w.set(old.subarray(from, from + WORDS), this.probe(g, old[from]!, old[from + 1]!, old[from + 2]!, old[from + 3]!) * WORDS)
    }
    if (renumber) this.renumber()
  }
}
