/**
 * The in-memory chunk index: chunk id → (pack, offset, stored length, ordinal, flags).
 *
 * Why in memory, and why this shape: a backup must know which chunk ids exist (dedup) and a restore
 * where each lives. Loading every pack index at open is one small read per pack (32 MiB packs:
 * 32k packs for 1 TiB), and an open-addressing table in ONE Buffer costs 32 bytes per slot
 * (~40 bytes per chunk at the 0.8 load bound): 1 TiB of unique 64 KiB chunks ≈ 670 MB, of 1 MiB
 * chunks ≈ 42 MB, no per-entry JS objects for the garbage collector to walk. A local cache file can
 * come later if loading indexes from a slow drive proves too slow; the vault stays the only truth.
 *
 * Slots keep the first 16 bytes of each 32-byte id (48-byte slots before). Ids are keyed BLAKE3
 * outputs, so two different chunks share a 128-bit prefix with probability ~n²/2^129 (~10^-23 for
 * 10^8 chunks). Even then nothing wrong is restored: every record is opened with the full id from
 * the block map as associated data and re-hashed (I3), so such a block fails as CHUNK_CORRUPT.
 *
 * Slot layout (32 bytes): id prefix[16] | pack u32 | offset u32 | length u32 | ordinal u31 + zstd flag (top bit).
 * Empty slot: pack = 0xFFFFFFFF.
 */
import { EngineError } from '../errors.js'

const KEY = 16
const SLOT = 32
const EMPTY = 0xffffffff
const MAX_LOAD = 0.8

export interface ChunkLocation {
  pack: number
  offset: number
  length: number
  ordinal: number
  flags: number
}

export interface PackInfo {
  id: Buffer
  hex: string
  /** File size in bytes. */
  sizeBytes: number
  chunkCount: number
}

export class ChunkTable {
  private slots: Buffer
  private capacity: number
  private count = 0
  readonly packs: PackInfo[] = []
  private readonly packByHex = new Map<string, number>()

  constructor(initialCapacity = 1024) {
    this.capacity = Math.max(16, initialCapacity)
    this.slots = Buffer.alloc(this.capacity * SLOT, 0xff)
  }

  get size(): number {
    return this.count
  }

  get slotCount(): number {
    return this.capacity
  }

  /** Bytes held by the table (for the memory bound). */
  get memoryBytes(): number {
    return this.slots.length
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

  private home(id: Uint8Array): number {
    const h = ((id[0]! << 24) | (id[1]! << 16) | (id[2]! << 8) | id[3]!) >>> 0
    return Math.floor((h / 4294967296) * this.capacity)
  }

  /** The slot holding `id`'s first KEY bytes, else the empty slot where they would go (linear probing). */
  private probe(id: Uint8Array): number {
    let i = this.home(id)
    for (;;) {
      const off = i * SLOT
      if (this.isEmpty(i) || this.slots.compare(id, 0, KEY, off, off + KEY) === 0) return i
      if (++i === this.capacity) i = 0
    }
  }

  private isEmpty(slot: number): boolean {
    return this.slots.readUInt32LE(slot * SLOT + KEY) === EMPTY
  }

  /** Slot index of `id`, or -1. */
  find(id: Uint8Array): number {
    const i = this.probe(id)
    return this.isEmpty(i) ? -1 : i
  }

  has(id: Uint8Array): boolean {
    return this.find(id) >= 0
  }

  location(slot: number): ChunkLocation {
    const off = slot * SLOT
    const of = this.slots.readUInt32LE(off + KEY + 12)
    return {
      pack: this.slots.readUInt32LE(off + KEY),
      offset: this.slots.readUInt32LE(off + KEY + 4),
      length: this.slots.readUInt32LE(off + KEY + 8),
      ordinal: of & 0x7fffffff,
      flags: of >>> 31,
    }
  }

  /** Slots in use, in table order. */
  *usedSlots(): Generator<number> {
    for (let i = 0; i < this.capacity; i++) if (!this.isEmpty(i)) yield i
  }

  get(id: Uint8Array): ChunkLocation | undefined {
    const s = this.find(id)
    return s < 0 ? undefined : this.location(s)
  }

  /** Inserts unless present (the first copy of a chunk wins); returns true when inserted. Ids are 32 bytes; the table keeps their first 16. */
  insert(id: Uint8Array, loc: ChunkLocation): boolean {
    if (id.length !== 32) throw new EngineError('INTERNAL', 'chunk ids are 32 bytes')
    if (loc.ordinal > 0x7fffffff || loc.flags > 1) throw new EngineError('INTERNAL', 'chunk ordinal/flags out of range')
    if ((this.count + 1) / this.capacity > MAX_LOAD) this.grow()
    const i = this.probe(id)
    if (!this.isEmpty(i)) return false
    const off = i * SLOT
    this.slots.set(id.subarray(0, KEY), off)
    this.slots.writeUInt32LE(loc.pack, off + KEY)
    this.slots.writeUInt32LE(loc.offset, off + KEY + 4)
    this.slots.writeUInt32LE(loc.length, off + KEY + 8)
    this.slots.writeUInt32LE(((loc.ordinal | (loc.flags << 31)) >>> 0), off + KEY + 12)
    this.count++
    return true
  }

  /** Moves every slot into a table 1.6× larger (whole slots are copied: the ids are only prefixes now). */
  private grow(): void {
    const old = this.slots
    this.capacity = Math.ceil(this.capacity * 1.6)
    this.slots = Buffer.alloc(this.capacity * SLOT, 0xff)
    for (let from = 0; from < old.length; from += SLOT) {
      if (old.readUInt32LE(from + KEY) === EMPTY) continue
      // the new table holds no copy of this prefix yet: probe ends on an empty slot
      old.copy(this.slots, this.probe(old.subarray(from, from + KEY)) * SLOT, from, from + SLOT)
    }
  }
}
