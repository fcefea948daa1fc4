/**
 * Direct I/O for the bulk writes of new images (restore, convert).
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
 * FUSE mounts) is written the buffered way throughout.
 */
import { constants } from 'node:fs'
import { open, type FileHandle } from 'node:fs/promises'

/** Alignment of direct writes: 4 KiB covers devices with 512 B and 4 KiB logical sectors. */
export const DIRECT_ALIGN = 4096
const WASM_PAGE = 64 * 1024

const alignedMemory = new WeakSet<ArrayBufferLike>()

/** The one WebAssembly API used here (the project's type libraries do not declare WebAssembly). */
interface WasmMemoryApi {
  Memory: new (descriptor: { initial: number; maximum?: number; shared?: boolean }) => { readonly buffer: ArrayBuffer | SharedArrayBuffer }
}
const wasm = (globalThis as unknown as { WebAssembly?: WasmMemoryApi }).WebAssembly

/**
 * `bytes` of page-aligned memory usable for direct writes (see `isDirectWritable`). Falls back to
 * an ordinary buffer, which direct writes then skip, when WebAssembly memory cannot be reserved.
 */
export function allocAligned(bytes: number): Buffer {
  try {
    if (!wasm) throw new Error('no WebAssembly')
    const memory = new wasm.Memory({ initial: Math.max(1, Math.ceil(bytes / WASM_PAGE)) })
    alignedMemory.add(memory.buffer)
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
export function allocAlignedShared(bytes: number): Buffer {
  const pages = Math.max(1, Math.ceil(bytes / WASM_PAGE))
  try {
    if (!wasm) throw new Error('no WebAssembly')
    const memory = new wasm.Memory({ initial: pages, maximum: pages, shared: true })
    alignedMemory.add(memory.buffer)
    return Buffer.from(memory.buffer, 0, bytes)
  } catch {
    return Buffer.from(new SharedArrayBuffer(bytes))
  }
}

/** True when `data` lies in aligned memory at an aligned offset and `position` is aligned. */
export function isDirectWritable(data: Uint8Array, position: number): boolean {
  return (
    data.length >= DIRECT_ALIGN &&
    position % DIRECT_ALIGN === 0 &&
    data.byteOffset % DIRECT_ALIGN === 0 &&
    alignedMemory.has(data.buffer)
  )
}

/**
 * A second, write-only O_DIRECT handle on an existing file, or undefined when the platform or the
 * file system does not offer direct I/O (the caller then writes through its ordinary handle).
 */
export async function openDirect(path: string): Promise<FileHandle | undefined> {
  const flag = (constants as Record<string, number | undefined>).O_DIRECT
  if (flag === undefined || process.env.TRESOR_NO_DIRECT_IO === '1') return undefined
  try {
    return await open(path, constants.O_WRONLY | flag)
  } catch {
    return undefined
  }
}
