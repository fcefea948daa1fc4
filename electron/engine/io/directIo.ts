/**
 * Direct I/O for bulk transfers: the writes of new images (restore, convert) and the vault's pack
 * files (backup and prune's repack write them; restore, verify and the repack read them).
 *
 * A restore or conversion writes gigabytes that nobody reads again soon. Written through the page
 * cache, every byte first lands in a newly allocated cache page and is flushed by the final fsync
 * anyway; on a desktop that also evicts the user's working set (and on virtual machines that back
 * guest memory lazily, each fresh page costs a host fault: measured here, 2.4 GiB of buffered
 * writes took 6–7 s of system time with cold memory against 0.3 s warm). With O_DIRECT the data
 * goes from our buffer to the device. The final fsync still runs: it commits the metadata (block
 * allocation) and flushes the device's write cache, so durability is unchanged.
 *
 * O_DIRECT needs the memory address, the file position and the length aligned to the device's
 * logical block size. Positions and lengths are checked per write; the memory comes from
 * `allocAligned`, carved out of a WebAssembly.Memory (V8 allocates those at page-aligned addresses;
 * JavaScript cannot see the address of an ordinary Buffer). Anything not aligned goes through the
 * ordinary buffered handle of the same file, and a file system that refuses O_DIRECT (tmpfs, some
 * FUSE mounts) is written the buffered way throughout. That fallback rule lives in one place,
 * `DirectSide`, over any handle type (node's FileHandle here, the vault's VaultFileHandle, through
 * which fault injection reaches pack I/O).
 *
 * Buffers that are written out whole (a restore's slots, a pack's stage, an image writer's buffers)
 * ask for huge pages (`hugePages`, nativeMemory.ts): a direct write from 2 MiB pages leaves as one
 * device request instead of one per ~1 MiB of 4 KiB pages. Read buffers do not: a range read often
 * fills a fraction of its buffer and a touched huge page commits 2 MiB, and advised range buffers
 * did not make a restore faster (the bench's: a quarter fewer read requests in the same time; real
 * files: no fewer, their ranges are small).
 */
import { constants } from 'node:fs'
import { open, type FileHandle } from 'node:fs/promises'
import { EngineError, fromFsError } from '../errors.js'
import { wasm, WASM_PAGE } from './wasm.js'
import { adviseHugePages } from './nativeMemory.js'

/** Alignment of direct writes: 4 KiB covers devices with 512 B and 4 KiB logical sectors. */
export const DIRECT_ALIGN = 4096

const alignedMemory = new WeakSet<ArrayBufferLike>()

export interface AlignedOptions {
  /** The memory is filled and written out whole, again and again: back it with huge pages where the kernel offers them. */
  hugePages?: boolean
}

/**
 * `bytes` of page-aligned memory usable for direct writes (see `isDirectAligned`). Falls back to
 * an ordinary buffer, which direct writes then skip, when WebAssembly memory cannot be reserved.
 */
export function allocAligned(bytes: number, options: AlignedOptions = {}): Buffer {
  try {
    if (!wasm) throw new Error('no WebAssembly')
    const memory = new wasm.Memory({ initial: Math.max(1, Math.ceil(bytes / WASM_PAGE)) })
    alignedMemory.add(memory.buffer)
    if (options.hugePages) adviseHugePages(memory.buffer)
    return Buffer.from(memory.buffer, 0, bytes)
  } catch {
    return Buffer.allocUnsafeSlow(bytes)
  }
}

/**
 * `bytes` of page-aligned memory shared with worker threads (a shared WebAssembly.Memory, whose
 * buffer is a SharedArrayBuffer): workers can fill it and the main thread write it out directly,
 * with no copy and no transfer. Falls back to an ordinary SharedArrayBuffer (not aligned).
 */
export function allocAlignedShared(bytes: number, options: AlignedOptions = {}): Buffer {
  const pages = Math.max(1, Math.ceil(bytes / WASM_PAGE))
  try {
    if (!wasm) throw new Error('no WebAssembly')
    const memory = new wasm.Memory({ initial: pages, maximum: pages, shared: true })
    alignedMemory.add(memory.buffer)
    if (options.hugePages) adviseHugePages(memory.buffer)
    return Buffer.from(memory.buffer, 0, bytes)
  } catch {
    return Buffer.from(new SharedArrayBuffer(bytes))
  }
}

/** True when `data` lies in aligned memory at an aligned offset and `position` is aligned (reads and writes alike). */
export function isDirectAligned(data: Uint8Array, position: number): boolean {
  return (
    data.length >= DIRECT_ALIGN &&
    position % DIRECT_ALIGN === 0 &&
    data.byteOffset % DIRECT_ALIGN === 0 &&
    alignedMemory.has(data.buffer)
  )
}

/**
 * A second O_DIRECT handle on an existing file, write-only (default) or read-only, or undefined
 * when the platform or the file system does not offer direct I/O (the caller then uses its
 * ordinary handle).
 */
export async function openDirect(path: string, mode: 'r' | 'w' = 'w'): Promise<FileHandle | undefined> {
  const flag = (constants as Record<string, number | undefined>).O_DIRECT
  if (flag === undefined || process.env.TRESOR_NO_DIRECT_IO === '1') return undefined
  try {
    return await open(path, (mode === 'r' ? constants.O_RDONLY : constants.O_WRONLY) | flag)
  } catch {
    return undefined
  }
}

/**
 * The O_DIRECT side of one open file, over any handle type. `attempt` runs one operation through
 * the direct handle; the first one the kernel refuses (EINVAL: the file system or the request does
 * not suit direct I/O) turns the side off for good, and the caller does that operation, and every
 * later one, through its ordinary handle. An operation may have partly happened before it was
 * refused; positioned reads and writes are simply done again. The handle is closed by `close()`,
 * once the caller's operations have settled (a refused one may overlap others still in flight).
 */
export class DirectSide<H extends { close(): Promise<void> }> {
  private on: boolean

  constructor(private readonly handle: H | undefined) {
    this.on = handle !== undefined
  }

  /** True until direct I/O was refused or the side closed (false from the start without a handle). */
  get isOn(): boolean {
    return this.on
  }

  /** Runs `op` on the direct handle: true when it ran, false (turned off) when off or refused; other errors are thrown. */
  async attempt(op: (handle: H) => Promise<void>): Promise<boolean> {
    const handle = this.handle
    if (!this.on || !handle) return false
    try {
      await op(handle)
      return true
    } catch (err) {
      if ((err as NodeJS.ErrnoException | undefined)?.code !== 'EINVAL') throw err
      this.on = false
      return false
    }
  }

  /** Closes the direct handle; every operation must have settled. */
  async close(): Promise<void> {
    this.on = false
    await this.handle?.close().catch(() => undefined)
  }
}

/**
 * A writer's O_DIRECT side of one file (raw and qcow2 writers): hands out the memory it can write
 * from and writes runs that qualify (aligned memory, position and lengths) through a `DirectSide`.
 */
export class DirectWriter {
  private constructor(
    private readonly path: string,
    private readonly side: DirectSide<FileHandle>,
  ) {}

  /** Opens the direct side of the existing file `path` (off where direct I/O is not offered). */
  static async open(path: string): Promise<DirectWriter> {
    return new DirectWriter(path, new DirectSide(await openDirect(path)))
  }

  /** Memory to fill for `write`: page aligned while direct I/O is on. */
  alloc(bytes: number): Buffer {
    return this.side.isOn ? allocAligned(bytes, { hugePages: true }) : Buffer.allocUnsafeSlow(bytes)
  }

  /**
   * Writes `bufs`, lying back to back in the file from `position`, with O_DIRECT. Returns false,
   * having written nothing that counts, when they do not qualify or direct I/O is (now) off: the
   * caller then writes them through its ordinary handle. Other errors are thrown.
   */
  async write(bufs: Uint8Array[], position: number): Promise<boolean> {
    if (!this.side.isOn || bufs.length === 0) return false
    if (!bufs.every((b, i) => b.length % DIRECT_ALIGN === 0 && isDirectAligned(b, i === 0 ? position : 0))) return false
    try {
      return await this.side.attempt((handle) => writevAll(handle, bufs, position, this.path))
    } catch (err) {
      throw err instanceof EngineError ? err : (fromFsError(err, this.path, 'writing') ?? err)
    }
  }

  /** Closes the direct handle; every write must have settled. */
  close(): Promise<void> {
    return this.side.close()
  }
}

/** Writes `bufs` back to back from `position`, finishing a short vectored write buffer by buffer. */
async function writevAll(handle: FileHandle, bufs: Uint8Array[], position: number, path: string): Promise<void> {
  let { bytesWritten } = await handle.writev(bufs, position)
  for (const b of bufs) {
    if (bytesWritten >= b.length) {
      bytesWritten -= b.length
      position += b.length
      continue
    }
    for (let done = bytesWritten; done < b.length; ) {
      const r = await handle.write(b, done, b.length - done, position + done)
      if (r.bytesWritten <= 0) throw new EngineError('IO_ERROR', `Writing "${path}" made no progress.`)
      done += r.bytesWritten
    }
    position += b.length
    bytesWritten = 0
  }
}
