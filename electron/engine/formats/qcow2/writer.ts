/**
 * qcow2 v3 writer (compat 1.1): sequential writes, optional zstd-compressed clusters.
 *
 * Layout: host clusters are handed out in increasing order, so the image is written front to back
 * and memory stays bounded whatever the disk size:
 * - cluster 0 holds the header (written last, at `finish()`), cluster 1 the first refcount block;
 * - data clusters follow in guest order; an L2 table is appended as soon as the writes move past
 *   the guest range it maps; all-zero clusters are never allocated (they read as zeros);
 * - compressed clusters are packed byte by byte into shared host clusters;
 * - refcounts are kept for one refcount block ("window") at a time: each window's first cluster is
 *   reserved for its own refcount block, written when allocation leaves the window;
 * - at `finish()`: the last L2 table, the L1 table, the last refcount block, the refcount table and
 *   the header are written, then the file is fsynced.
 * Every host cluster in use has its exact refcount (compressed host clusters count each cluster
 * packed into them, as qemu does), so `qemu-img check` finds neither errors nor leaks.
 */
import { unlink, type FileHandle } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { EngineError, fromFsError } from '../../errors.js'
import { isAllZero } from '../io.js'
import { checkWriteOrder, createOutputFile, writeFully } from '../raw/index.js'
import { DIRECT_ALIGN, DirectWriter } from '../../io/directIo.js'
import type { ImageWriter, WriterOptions } from '../types.js'
import { INCOMPAT_COMPRESSION, MAX_L1_BYTES, QCOW2_MAGIC } from './header.js'

export const QCOW2_DEFAULT_CLUSTER = 64 * 1024
const REFCOUNT_ORDER = 4 // 16-bit refcounts, qemu's default
const REFCOUNT_MAX = 0xffff
const HEADER_LENGTH = 112
const COPIED_HI = 0x80000000
const MAX_RUN_BYTES = 8 * 1024 * 1024

interface ZstdSimple {
  compress(data: Uint8Array, parameters?: Record<string, unknown>): Buffer
}
let zstdSimple: ZstdSimple | undefined
function zstdCompress(data: Uint8Array): Buffer {
  zstdSimple ??= createRequire(import.meta.url)('zstd-napi') as ZstdSimple
  return zstdSimple.compress(data)
}

class Qcow2Writer implements ImageWriter {
  readonly format = 'qcow2' as const
  private readonly cs: number
  private readonly clusterBits: number
  private readonly l2Entries: number
  private readonly l1Size: number
  private readonly l1: Buffer
  private readonly refEntries: number
  /** Next free host offset (always cluster aligned). */
  private next = 0
  // Refcount window: counts of clusters [windowBase, windowBase + refEntries).
  private windowBase = 0
  private windowBlock = 0
  private readonly counts: Uint16Array
  private readonly refTable: number[] = []
  // L2 table being filled.
  private l2Index = -1
  private l2: Buffer
  // Partially written guest cluster.
  private pendingIndex = -1
  private readonly pendingBuf: Buffer
  // Host run of consecutive data clusters not yet written.
  private runHost = -1
  private runLen = 0
  private runBufs: Uint8Array[] = []
  // Compressed packing: current host cluster, its bytes, bytes used.
  private cHost = -1
  private readonly cBuf: Buffer
  private cUsed = 0
  private nextGuest = 0
  private stored = 0
  private state: 'open' | 'finished' | 'aborted' = 'open'

  constructor(
    readonly path: string,
    private readonly handle: FileHandle,
    private readonly virtualSize: number,
    clusterSize: number,
    private readonly compress: boolean,
    /** The O_DIRECT side of the file, for runs of whole clusters in aligned memory (directIo.ts). */
    private readonly direct: DirectWriter,
  ) {
    this.cs = clusterSize
    this.clusterBits = Math.log2(clusterSize)
    this.l2Entries = clusterSize / 8
    this.l1Size = Math.max(1, Math.ceil(virtualSize / (clusterSize * this.l2Entries)))
    this.l1 = Buffer.alloc(this.l1Size * 8)
    this.refEntries = (clusterSize * 8) / (1 << REFCOUNT_ORDER)
    this.counts = new Uint16Array(this.refEntries)
    this.l2 = Buffer.alloc(clusterSize)
    this.pendingBuf = Buffer.alloc(clusterSize)
    this.cBuf = Buffer.alloc(clusterSize)
    // Cluster 0: header; cluster 1: refcount block of window 0.
    this.counts[0] = 1
    this.counts[1] = 1
    this.windowBlock = clusterSize
    this.next = 2 * clusterSize
  }

  // ---- host allocation and refcounts ----

  /** Allocates `n` contiguous clusters (never across a window boundary) and counts them once. */
  private async allocClusters(n: number): Promise<number> {
    let idx = this.next / this.cs
    const windowEnd = this.windowBase + this.refEntries
    if (idx + n > windowEnd) {
      await this.enterWindow(Math.max(windowEnd, Math.floor(idx / this.refEntries) * this.refEntries))
      idx = this.next / this.cs
      if (idx + n > this.windowBase + this.refEntries) {
        throw new EngineError('INVALID_INPUT', `"${this.path}": a metadata table does not fit in one refcount block; use a larger cluster size.`)
      }
    }
    for (let i = 0; i < n; i++) this.counts[idx + i - this.windowBase] = 1
    this.next = (idx + n) * this.cs
    return idx * this.cs
  }

  /** Writes the current window's refcount block and starts the window at cluster `base`. */
  private async enterWindow(base: number): Promise<void> {
    await this.flushRun()
    // Close the shared compressed cluster: its refcount is final once the block is written.
    await this.flushCompressed()
    await this.writeRefBlock()
    this.windowBase = base
    this.counts.fill(0)
    // The window's first cluster holds its refcount block.
    this.windowBlock = base * this.cs
    this.counts[0] = 1
    this.next = (base + 1) * this.cs
  }

  private async writeRefBlock(): Promise<void> {
    const block = Buffer.alloc(this.cs)
    for (let i = 0; i < this.refEntries; i++) if (this.counts[i]) block.writeUInt16BE(this.counts[i] as number, i * 2)
    await this.writeAt(block, this.windowBlock)
    this.refTable[this.windowBase / this.refEntries] = this.windowBlock
  }

  private async writeAt(data: Uint8Array, position: number): Promise<void> {
    await writeFully(this.handle, this.path, data, position)
  }

  // ---- data runs ----

  private async appendRun(host: number, data: Uint8Array): Promise<void> {
    if (this.runHost >= 0 && this.runHost + this.runLen === host && this.runLen + data.length <= MAX_RUN_BYTES) {
      this.runBufs.push(data)
      this.runLen += data.length
      return
    }
    await this.flushRun()
    this.runHost = host
    this.runLen = data.length
    this.runBufs = [data]
  }

  private async flushRun(): Promise<void> {
    if (this.runHost < 0) return
    const bufs = this.runBufs
    let position = this.runHost
    this.runHost = -1
    this.runBufs = []
    this.runLen = 0
    try {
      if (this.cs >= DIRECT_ALIGN && (await this.direct.write(bufs, position))) return
      let { bytesWritten } = await this.handle.writev(bufs, position)
      const total = bufs.reduce((s, b) => s + b.length, 0)
      if (bytesWritten < total) {
        // Short vectored write: finish buffer by buffer.
        for (const b of bufs) {
          if (bytesWritten >= b.length) {
            bytesWritten -= b.length
            position += b.length
            continue
          }
          await this.writeAt(b.subarray(bytesWritten), position + bytesWritten)
          position += b.length
          bytesWritten = 0
        }
      }
    } catch (err) {
      if (err instanceof EngineError) throw err
      throw fromFsError(err, this.path, 'writing') ?? err
    }
  }

  /** Memory this writer writes fastest from: page aligned when direct I/O is on. */
  allocBuffer(bytes: number): Buffer {
    return this.direct.alloc(bytes)
  }

  // ---- L2 / L1 ----

  private async setL2(guestCluster: number, entry: bigint): Promise<void> {
    const l1Index = Math.floor(guestCluster / this.l2Entries)
    if (l1Index !== this.l2Index) {
      await this.flushL2()
      this.l2Index = l1Index
      this.l2.fill(0)
    }
    this.l2.writeBigUInt64BE(entry, (guestCluster % this.l2Entries) * 8)
  }

  private async flushL2(): Promise<void> {
    if (this.l2Index < 0) return
    await this.flushRun()
    const at = await this.allocClusters(1)
    await this.writeAt(this.l2, at)
    this.l1.writeUInt32BE(COPIED_HI + Math.floor(at / 0x1_0000_0000), this.l2Index * 8)
    this.l1.writeUInt32BE(at % 0x1_0000_0000, this.l2Index * 8 + 4)
    this.l2Index = -1
  }

  // ---- clusters ----

  /** Stores one guest cluster (`data` is cs bytes). `stable`: data outlives this write call. */
  private async storeCluster(guestCluster: number, data: Uint8Array, stable: boolean): Promise<void> {
    if (isAllZero(data)) return
    const guestBytes = Math.min(this.cs, this.virtualSize - guestCluster * this.cs)
    this.stored += guestBytes
    if (this.compress) {
      const packed = zstdCompress(data)
      if (packed.length < this.cs - 512) {
        await this.storeCompressed(guestCluster, packed)
        return
      }
    }
    const host = await this.allocClusters(1)
    await this.setL2(guestCluster, (BigInt(COPIED_HI) << 32n) | BigInt(host))
    await this.appendRun(host, stable ? data : Buffer.from(data))
  }

  private async storeCompressed(guestCluster: number, packed: Buffer): Promise<void> {
    const size = packed.length
    let start: number
    const fits = this.cHost >= 0 && this.cUsed + size <= this.cs && this.counts[this.cHost / this.cs - this.windowBase] !== REFCOUNT_MAX
    const spansNext =
      !fits &&
      this.cHost >= 0 &&
      this.cHost + this.cs === this.next &&
      this.next / this.cs < this.windowBase + this.refEntries &&
      this.counts[this.cHost / this.cs - this.windowBase] !== REFCOUNT_MAX
    if (fits) {
      start = this.cHost + this.cUsed
      this.cBuf.set(packed, this.cUsed)
      this.cUsed += size
      this.counts[this.cHost / this.cs - this.windowBase]! += 1
    } else if (spansNext) {
      // Fill the rest of this host cluster and continue in the next (contiguous) one.
      start = this.cHost + this.cUsed
      const first = this.cs - this.cUsed
      this.cBuf.set(packed.subarray(0, first), this.cUsed)
      this.cUsed = this.cs
      this.counts[this.cHost / this.cs - this.windowBase]! += 1
      await this.flushCompressed()
      const host = await this.allocClusters(1) // counts it once
      this.cHost = host
      this.cBuf.fill(0)
      this.cBuf.set(packed.subarray(first), 0)
      this.cUsed = size - first
    } else {
      await this.flushCompressed()
      const host = await this.allocClusters(1)
      this.cHost = host
      this.cBuf.fill(0)
      this.cBuf.set(packed, 0)
      this.cUsed = size
      start = host
    }
    const x = 62 - (this.clusterBits - 8)
    const extraSectors = Math.floor((start + size - 1) / 512) - Math.floor(start / 512)
    const entry = (1n << 62n) | (BigInt(extraSectors) << BigInt(x)) | BigInt(start)
    await this.setL2(guestCluster, entry)
  }

  private async flushCompressed(): Promise<void> {
    if (this.cHost < 0) return
    await this.writeAt(this.cBuf.subarray(0, this.cUsed), this.cHost)
    this.cHost = -1
    this.cUsed = 0
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    if (this.state !== 'open') throw new EngineError('INVALID_INPUT', `"${this.path}" is no longer open for writing.`)
    checkWriteOrder(this.path, this.nextGuest, offset, data.length, this.virtualSize)
    this.nextGuest = offset + data.length
    const cs = this.cs
    let pos = 0
    while (pos < data.length) {
      const abs = offset + pos
      const ci = Math.floor(abs / cs)
      const within = abs - ci * cs
      const take = Math.min(cs - within, data.length - pos)
      if (this.pendingIndex >= 0 && this.pendingIndex !== ci) await this.flushPending()
      if (within === 0 && take === cs) {
        await this.storeCluster(ci, data.subarray(pos, pos + cs), true)
      } else {
        if (this.pendingIndex !== ci) {
          this.pendingBuf.fill(0)
          this.pendingIndex = ci
        }
        this.pendingBuf.set(data.subarray(pos, pos + take), within)
        if (within + take === cs || abs + take === this.virtualSize) await this.flushPending()
      }
      pos += take
    }
    // The caller may reuse `data` once this resolves: write what refers to it now.
    await this.flushRun()
  }

  private async flushPending(): Promise<void> {
    if (this.pendingIndex < 0) return
    const ci = this.pendingIndex
    this.pendingIndex = -1
    await this.storeCluster(ci, this.pendingBuf, false)
  }

  async finish(): Promise<{ bytesWritten: number }> {
    if (this.state !== 'open') throw new EngineError('INVALID_INPUT', `"${this.path}" is no longer open for writing.`)
    this.state = 'finished'
    try {
      await this.flushPending()
      await this.flushRun()
      await this.flushCompressed()
      await this.flushL2()
      const l1Clusters = Math.ceil(this.l1.length / this.cs)
      const l1Offset = await this.allocClusters(l1Clusters)
      await this.writeAt(this.l1, l1Offset)
      // Refcount table: room for every window, including those its own allocation may open.
      const windowsNow = this.windowBase / this.refEntries + 1
      let capacity = windowsNow + 2
      for (;;) {
        const clusters = Math.ceil((capacity * 8) / this.cs)
        const worst = windowsNow + Math.ceil(clusters / (this.refEntries - 1)) + 1
        if (worst <= capacity) break
        capacity = worst
      }
      const rtClusters = Math.ceil((capacity * 8) / this.cs)
      const rtOffset = await this.allocClusters(rtClusters)
      await this.writeRefBlock()
      const rt = Buffer.alloc(rtClusters * this.cs)
      this.refTable.forEach((off, i) => rt.writeBigUInt64BE(BigInt(off), i * 8))
      await this.writeAt(rt, rtOffset)
      await this.writeAt(this.buildHeader(l1Offset, rtOffset, rtClusters), 0)
      await this.direct.close()
      await this.handle.truncate(this.next)
      await this.handle.sync()
    } catch (err) {
      await this.direct.close()
      await this.handle.close().catch(() => undefined)
      if (err instanceof EngineError) throw err
      throw fromFsError(err, this.path, 'finishing') ?? err
    }
    await this.handle.close()
    return { bytesWritten: this.stored }
  }

  private buildHeader(l1Offset: number, rtOffset: number, rtClusters: number): Buffer {
    const h = Buffer.alloc(Math.min(this.cs, 4096))
    h.writeUInt32BE(QCOW2_MAGIC, 0)
    h.writeUInt32BE(3, 4)
    // 8: backing_file_offset, 16: backing_file_size (none)
    h.writeUInt32BE(this.clusterBits, 20)
    h.writeBigUInt64BE(BigInt(this.virtualSize), 24)
    // 32: crypt_method 0
    h.writeUInt32BE(this.l1Size, 36)
    h.writeBigUInt64BE(BigInt(l1Offset), 40)
    h.writeBigUInt64BE(BigInt(rtOffset), 48)
    h.writeUInt32BE(rtClusters, 56)
    // 60: nb_snapshots 0, 64: snapshots_offset 0
    h.writeBigUInt64BE(this.compress ? INCOMPAT_COMPRESSION : 0n, 72)
    // 80: compatible 0, 88: autoclear 0
    h.writeUInt32BE(REFCOUNT_ORDER, 96)
    h.writeUInt32BE(HEADER_LENGTH, 100)
    h[104] = this.compress ? 1 : 0
    // Header extensions: none; the end marker is the 8 zero bytes at HEADER_LENGTH.
    return h
  }

  async abort(): Promise<void> {
    if (this.state === 'open') {
      this.state = 'aborted'
      await this.direct.close()
      await this.handle.close().catch(() => undefined)
    }
    await unlink(this.path).catch(() => undefined)
  }
}

/**
 * Creates a qcow2 v3 image at `path` (cluster size `options.clusterSize`, default 64 KiB; zstd
 * compressed clusters when `options.compress`). The virtual size is rounded up to a multiple of
 * 512 bytes, as qemu does. `bytesWritten` counts guest bytes stored.
 */
export async function createQcow2Writer(path: string, options: WriterOptions): Promise<ImageWriter> {
  const cs = options.clusterSize ?? QCOW2_DEFAULT_CLUSTER
  if (!Number.isInteger(Math.log2(cs)) || cs < 512 || cs > 2 * 1024 * 1024) {
    throw new EngineError('INVALID_INPUT', `The qcow2 cluster size must be a power of two from 512 B to 2 MiB (got ${cs}).`)
  }
  if (!Number.isSafeInteger(options.virtualSize) || options.virtualSize < 0) {
    throw new EngineError('INVALID_INPUT', `Invalid virtual size ${options.virtualSize} for "${path}".`)
  }
  const l1Bytes = Math.ceil(options.virtualSize / (cs * (cs / 8))) * 8
  if (l1Bytes > MAX_L1_BYTES) {
    throw new EngineError('INVALID_INPUT', `A ${options.virtualSize}-byte disk needs a larger qcow2 cluster size than ${cs} bytes.`)
  }
  const handle = await createOutputFile(path, options.overwrite)
  // qemu counts qcow2 sizes in 512-byte sectors (a smaller tail would be cut off): round up; the
  // extra bytes read as zeros.
  const size = Math.ceil(options.virtualSize / 512) * 512
  return new Qcow2Writer(path, handle, size, cs, options.compress === true, await DirectWriter.open(path))
}
