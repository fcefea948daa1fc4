/**
 * Decoded parts kept by a chunk reader (format 2), in one shared arena that the chunk workers copy
 * from and into, so that the reader's thread never copies a part.
 *
 * A disk whose text repeats asks for the same parts again and again, scattered over packs written
 * long before. A part found here is copied by the worker that checks the block it belongs to, right
 * before the whole block is hashed (I3: a cached byte gone bad fails the read like a damaged
 * record). A part read from the store is copied into its reserved place by that same worker, only
 * once its block has checked out.
 *
 * The arena is a ring: new parts are placed at the head, which sweeps round and drops what it finds
 * in its way, except parts hit since the head last passed them (a second chance: they keep their
 * place and the head skips over them, so nothing is moved), parts still being filled, and parts a
 * worker is about to copy (pinned). This keeps the hit rate of a least-recently-used list (a
 * simulation over a bench restore: 88.4 K hits of 128.8 K parts against LRU's 87.4 K and FIFO's
 * 77.7 K, at 32 MiB) without a list to maintain.
 *
 * Only the reader's thread changes the index; a worker touches the bytes of an entry only between
 * the task that names it and that task's reply, which is what pins and the pending state cover.
 */

export const PART_CACHE_BYTES = 32 * 1024 * 1024

export interface CachedPart {
  readonly key: string
  readonly at: number
  readonly length: number
  /** pending: reserved, its worker has not filled it yet; dead: dropped, waiting for the head to pass. */
  state: 'pending' | 'ready' | 'dead'
  /** Hit since the head last passed it. */
  hit: boolean
  /** Tasks in flight that copy from it. */
  pins: number
}

export class PartCache {
  private arena: SharedArrayBuffer | undefined
  private readonly index = new Map<string, CachedPart>()
  /** Entries in the order the head will meet them, starting at `first`. */
  private queue: CachedPart[] = []
  private first = 0
  private head = 0

  constructor(
    readonly capacity = PART_CACHE_BYTES,
    /** Longest part kept (parts are at most 64 KiB; a sixteenth of the arena by default). */
    readonly maxPart = capacity / 16,
  ) {}

  /** The arena (allocated on first use: a reader of a format-1 vault never needs one). */
  memory(): SharedArrayBuffer {
    return (this.arena ??= new SharedArrayBuffer(this.capacity))
  }

  /** A ready part of `length` bytes under `key`, pinned (unpin it once its task has replied), or undefined. */
  take(key: string, length: number): CachedPart | undefined {
    const e = this.index.get(key)
    if (!e || e.state !== 'ready' || e.length !== length) return undefined
    e.hit = true
    e.pins++
    return e
  }

  unpin(e: CachedPart): void {
    e.pins--
  }

  /**
   * Room for a part about to be read (state pending: fill it, then `settle`), or undefined when the
   * part is already known here, or no room can be made now.
   */
  reserve(key: string, length: number): CachedPart | undefined {
    if (this.index.has(key) || length <= 0 || length > this.maxPart) return undefined
    this.memory()
    // each entry is met at most twice (a hit is skipped once, then dropped), plus one wrap
    for (let guard = 2 * (this.queue.length - this.first) + 2; guard >= 0; guard--) {
      const next = this.queue[this.first]
      const end = next && next.at >= this.head ? next.at : this.capacity
      if (end - this.head >= length) {
        const e: CachedPart = { key, at: this.head, length, state: 'pending', hit: false, pins: 0 }
        this.head += length
        this.queue.push(e)
        this.index.set(key, e)
        return e
      }
      if (!next || next.at < this.head) {
        this.head = 0 // the rest of the arena is free but too small: wrap
        continue
      }
      this.shift()
      if (next.pins > 0 || next.state === 'pending' || (next.hit && next.state === 'ready')) {
        next.hit = next.pins > 0 // kept in place, the head passes it (a pinned part is in use: as good as hit)
        this.head = next.at + next.length
        this.queue.push(next)
      } else if (next.state === 'ready') {
        this.index.delete(next.key) // dropped (a dead entry just leaves the queue)
      }
    }
    return undefined
  }

  /** A reserved part has been filled (`ok`) or will not be (its block failed or the read was abandoned). */
  settle(e: CachedPart, ok: boolean): void {
    if (e.state !== 'pending') return
    if (ok) {
      e.state = 'ready'
      return
    }
    e.state = 'dead'
    if (this.index.get(e.key) === e) this.index.delete(e.key)
  }

  clear(): void {
    this.index.clear()
    this.queue = []
    this.first = 0
    this.head = 0
    this.arena = undefined
  }

  /** Whether `e` is the entry held under its key (pending or ready). */
  holds(e: CachedPart): boolean {
    return this.index.get(e.key) === e
  }

  /** Parts held (ready), for tests. */
  get size(): number {
    let n = 0
    for (const e of this.index.values()) if (e.state === 'ready') n++
    return n
  }

  private shift(): void {
    this.first++
    if (this.first > 1024 && this.first * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.first)
      this.first = 0
    }
  }
}
