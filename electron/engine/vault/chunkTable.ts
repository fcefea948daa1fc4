/**
 * The in-memory chunk index: chunk id → (pack, offset, stored length, ordinal, flags).
 *
 * Why in memory, and why this shape: a backup must know which chunk ids exist (dedup) and a restore
 * where each lives. Loading every pack index at open is one small read per pack (32 MiB packs:
 * 32k packs for 1 TiB), and an open-addressing table in ONE Buffer costs 48 bytes per slot
 * (~60 bytes per chunk at the 0.8 load bound) — 1 TiB of unique 1 MiB chunks ≈ 60 MB, no per-entry
 * JS objects for the garbage collector to walk. A local cache file can come later if loading
 * indexes from a slow drive proves too slow; the vault stays the only truth.
 *
 * Slot layout (48 bytes): id[32] | pack u32 | offset u32 | length u32 | ordinal u31 + zstd flag (top bit).
 * Empty slot: pack = 0xFFFFFFFF.
 */
import { EngineError } from '../errors.js'

const SLOT = 48
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

  /** Slot index of `id`, or -1. */
  find(id: Uint8Array): number {
    let i = this.home(id)
    for (;;) {
      const off = i * SLOT
      if (this.slots.readUInt32LE(off + 32) === EMPTY) return -1
      if (this.slots.compare(id, 0, 32, off, off + 32) === 0) return i
      if (++i === this.capacity) i = 0
    }
  }

  has(id: Uint8Array): boolean {
    return this.find(id) >= 0
  }

  location(slot: number): ChunkLocation {
    const off = slot * SLOT
    const of = this.slots.readUInt32LE(off + 44)
    return {
      pack: this.slots.readUInt32LE(off + 32),
      offset: this.slots.readUInt32LE(off + 36),
      length: this.slots.readUInt32LE(off + 40),
      ordinal: of & 0x7fffffff,
      flags: of >>> 31,
    }
  }

  idAt(slot: number): Buffer {
    return Buffer.from(this.slots.subarray(slot * SLOT, slot * SLOT + 32))
  }

  /** Slots in use, in table order. */
  *usedSlots(): Generator<number> {
    for (let i = 0; i < this.capacity; i++) if (this.slots.readUInt32LE(i * SLOT + 32) !== EMPTY) yield i
  }

  get(id: Uint8Array): ChunkLocation | undefined {
    const s = this.find(id)
    return s < 0 ? undefined : this.location(s)
  }

  /** Inserts unless present (the first copy of a chunk wins); returns true when inserted. */
  insert(id: Uint8Array, loc: ChunkLocation): boolean {
    if (id.length !== 32) throw new EngineError('INTERNAL', 'chunk ids are 32 bytes')
    if (loc.ordinal > 0x7fffffff || loc.flags > 1) throw new EngineError('INTERNAL', 'chunk ordinal/flags out of range')
    if ((this.count + 1) / this.capacity > MAX_LOAD) this.grow()
    let i = this.home(id)
    for (;;) {
      const off = i * SLOT
      if (this.slots.readUInt32LE(off + 32) === EMPTY) break
      if (this.slots.compare(id, 0, 32, off, off + 32) === 0) return false
      if (++i === this.capacity) i = 0
    }
    const off = i * SLOT
    this.slots.set(id, off)
    this.slots.writeUInt32LE(loc.pack, off + 32)
    this.slots.writeUInt32LE(loc.offset, off + 36)
    this.slots.writeUInt32LE(loc.length, off + 40)
    this.slots.writeUInt32LE(((loc.ordinal | (loc.flags << 31)) >>> 0), off + 44)
    this.count++
    return true
  }

  private grow(): void {
    const old = this.slots
    const oldCap = this.capacity
    this.capacity = Math.ceil(oldCap * 1.6)
    this.slots = Buffer.alloc(this.capacity * SLOT, 0xff)
    this.count = 0
    for (let i = 0; i < oldCap; i++) {
      const off = i * SLOT
      if (old.readUInt32LE(off + 32) === EMPTY) continue
      const of = old.readUInt32LE(off + 44)
      this.insert(old.subarray(off, off + 32), {
        pack: old.readUInt32LE(off + 32),
        offset: old.readUInt32LE(off + 36),
        length: old.readUInt32LE(off + 40),
        ordinal: of & 0x7fffffff,
        flags: of >>> 31,
      })
    }
  }
}
