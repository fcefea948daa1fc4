/**
 * The block loop's two cursors (pipeline.ts blockLoop): over a disk's extents and over the previous
 * point's block map, both walked in block order without an await per block.
 */
import type { Extent } from '../formats/types.js'
import type { BlockEntry, BlockMapSegment } from '../vault/api.js'

/** Extents pulled at once from an image's extent walk when they are not held in memory. */
export const EXTENTS_PER_FILL = 4096

/**
 * Walks extents in step with the block grid. Extents held in memory (the usual case: `measure`
 * keeps them) are walked with no await; an image's extent walk is pulled ahead in batches
 * (`holds`/`fill`), so that the block loop awaits once per batch, not once per block.
 */
export class ExtentCursor {
  private held: Extent[]
  private pos = 0
  private done: boolean
  private readonly it: AsyncIterator<Extent> | undefined

  constructor(extents: Extent[] | AsyncIterable<Extent>) {
    if (Array.isArray(extents)) {
      this.held = extents
      this.done = true
    } else {
      this.held = []
      this.done = false
      this.it = extents[Symbol.asyncIterator]()
    }
  }

  /** Whether every extent that starts before `end` is held: `nextStart` and `classify` up to `end` need no `fill`. */
  holds(end: number): boolean {
    return this.done || (this.held.length > this.pos && this.held[this.held.length - 1]!.offset >= end)
  }

  /** Pulls extents until `holds(end)`, at least EXTENTS_PER_FILL when there are that many. */
  async fill(end: number): Promise<void> {
    if (this.pos > 0) {
      this.held = this.held.slice(this.pos)
      this.pos = 0
    }
    let pulled = 0
    while (!this.done && (pulled < EXTENTS_PER_FILL || !this.holds(end))) {
      const r = await this.it!.next()
      if (r.done) this.done = true
      else {
        this.held.push(r.value)
        pulled++
      }
    }
  }

  /** Start of the next extent not yet passed (Infinity at the end). Needs `holds` for the block asked about. */
  nextStart(): number {
    const cur = this.held[this.pos]
    return cur ? cur.offset : Number.POSITIVE_INFINITY
  }

  /**
   * Whether the extent at hand is data that covers [start, end) and runs on past `end`: `classify`
   * would return 2 with the one range [start, end) and consume nothing. The block loop asks this
   * first, so a block inside a long data extent costs no range array (a full disk's worth of
   * blocks inside a few extents made ~50,000 of them). Needs `holds(end)`.
   */
  insideData(start: number, end: number): boolean {
    const cur = this.held[this.pos]
    return cur !== undefined && !cur.zero && cur.offset <= start && cur.offset + cur.length > end
  }

  /**
   * 0: no extent touches [start, end); 1: only zero extents; 2: data. Consumes extents ending by
   * `end`. `dataRanges` receives the parts of [start, end) that data extents cover, in order.
   * Needs `holds(end)`.
   */
  classify(start: number, end: number, dataRanges: Array<[number, number]>): 0 | 1 | 2 {
    let kind: 0 | 1 | 2 = 0
    dataRanges.length = 0
    for (let cur = this.held[this.pos]; cur && cur.offset < end; cur = this.held[this.pos]) {
      const extEnd = cur.offset + cur.length
      if (extEnd > start && cur.length > 0) {
        kind = cur.zero ? (kind === 2 ? 2 : 1) : 2
        if (!cur.zero) dataRanges.push([Math.max(start, cur.offset), Math.min(end, extEnd)])
      }
      if (extEnd <= end) this.pos++
      else break
    }
    return kind
  }

  async close(): Promise<void> {
    await this.it?.return?.()
  }
}

/**
 * The previous point's block map in step with the block index, a segment at a time: looking up a
 * block awaits only when it lies past the segment at hand (`holds`/`load`). Per block, the
 * entry-by-entry stream cost two async-generator steps, a copy of the id and checksum and a
 * promise: ~0.1 s of garbage collection and microtasks on the job's thread for the bench's 4 GiB disk.
 * Blocks at or past `blockCount` (a disk grown since, or no earlier map) have no entry and read nothing.
 */
export class PreviousMap {
  private segment: BlockMapSegment | undefined
  private ended: boolean
  private readonly it: AsyncIterator<BlockMapSegment> | undefined

  constructor(
    segments: AsyncIterable<BlockMapSegment> | undefined,
    private readonly blockCount: number,
  ) {
    this.it = segments?.[Symbol.asyncIterator]()
    this.ended = !this.it
  }

  /** Whether block `i`'s entry can be had with `get` now. */
  holds(i: number): boolean {
    return i >= this.blockCount || this.ended || this.covers(i)
  }

  /** Reads segments until one holds block `i` (blocks are asked for in increasing order), or the map ends. */
  async load(i: number): Promise<void> {
    while (!this.holds(i)) {
      const r = await this.it!.next()
      if (r.done) {
        this.ended = true
        this.segment = undefined
      } else this.segment = r.value
    }
  }

  /** Block `i`'s entry, or undefined when the map has none. Needs `holds(i)`. */
  get(i: number): BlockEntry | undefined {
    return this.covers(i) ? this.segment!.entry(i - this.segment!.first) : undefined
  }

  async close(): Promise<void> {
    await this.it?.return?.()
  }

  private covers(i: number): boolean {
    const s = this.segment
    return s !== undefined && i >= s.first && i < s.first + s.count
  }
}
