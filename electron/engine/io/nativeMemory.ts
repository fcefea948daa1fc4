/**
 * Tresor's native memory calls (native/memory, the `tresor-memory` addon), each with its fallback.
 *
 * Huge pages for direct-I/O buffers. A direct read or write leaves the block layer as requests of
 * at most `max_segments` physically contiguous pieces: 254 on a virtio disk, so a 4 MiB transfer
 * out of 4 KiB pages becomes four or more requests, while one out of 2 MiB pages goes as one. Where
 * a device pays per request (virtual disks), that weighs on a restore's time: the bench's restore
 * took 5.95–6.17 s instead of 6.81–7.48 s, and 6.2 GB of real files wrote in ~2,800 requests
 * instead of 6,200–9,600 (PERFORMANCE.md, twenty-seventh round). Linux backs memory with
 * transparent huge pages only where a program asks (the usual `madvise` setting), and Node cannot
 * ask; the addon does. It is a hint: without the addon (another platform, a failed build), with THP
 * off, or with `TRESOR_NO_HUGE_PAGES=1`, nothing changes but the number of requests.
 *
 * Copies between views of shared memory. V8 copies into or out of a SharedArrayBuffer (or shared
 * WebAssembly memory) with relaxed atomic stores: scattered 8 KiB pieces move at ~2.2 GB/s here
 * against ~5.9 GB/s between ordinary buffers. `copyTriples` does them with memmove, and falls back
 * to Buffer.copy without the addon.
 */
import { readFileSync } from 'node:fs'
import { loadOptionalAddon } from './optionalAddon.js'

interface Addon {
  adviseHugePages(view: Uint8Array): boolean
  copyTriples(source: Uint8Array, target: Uint8Array, triples: readonly number[]): number
}

let addon: Addon | null | undefined

/** Whether the addon is here (built by `npm ci` from native/memory). */
export function nativeMemoryLoaded(): boolean {
  addon ??= loadOptionalAddon<Addon>('tresor-memory')
  return addon !== null
}

/** What `tresor vault info` tells about the addon, so that its absence is not silent. */
export interface NativeMemoryState {
  /** The addon loaded (without it: no huge pages, copies between shared views at V8's speed). */
  addon: boolean
  /** Whether direct-I/O buffers ask for huge pages, or why not. */
  hugePages: 'on' | 'off: TRESOR_NO_HUGE_PAGES=1' | 'off: transparent huge pages are disabled in the kernel' | 'off: not Linux' | 'off: no native addon'
}

/** Why direct-I/O buffers do not ask for huge pages, or null when they do (the kernel's setting aside). */
function hugePagesOff(): Exclude<NativeMemoryState['hugePages'], 'on' | 'off: transparent huge pages are disabled in the kernel'> | null {
  if (process.platform !== 'linux') return 'off: not Linux'
  if (process.env.TRESOR_NO_HUGE_PAGES === '1') return 'off: TRESOR_NO_HUGE_PAGES=1'
  if (!nativeMemoryLoaded()) return 'off: no native addon'
  return null
}

export function nativeMemoryState(): NativeMemoryState {
  const off = hugePagesOff()
  if (off) return { addon: nativeMemoryLoaded(), hugePages: off }
  let kernelOn = false
  try {
    kernelOn = !readFileSync('/sys/kernel/mm/transparent_hugepage/enabled', 'utf8').includes('[never]')
  } catch {
    // no such file: a kernel built without transparent huge pages
  }
  return { addon: true, hugePages: kernelOn ? 'on' : 'off: transparent huge pages are disabled in the kernel' }
}

/**
 * Asks for huge pages over the whole pages of `memory`, before anything touches it (pages already
 * in place stay small until the kernel collapses them). Returns whether the kernel took the advice.
 */
export function adviseHugePages(memory: ArrayBufferLike): boolean {
  if (hugePagesOff()) return false
  return addon!.adviseHugePages(new Uint8Array(memory))
}

/**
 * Copies source[from, from + length) to target[to, to + length) for each (from, to, length) in
 * `triples`. Returns null, or what was wrong (nothing is copied then): a triple outside its buffers,
 * not whole or negative, or an incomplete triple. The addon checks every triple before it copies;
 * the fallback checks them here.
 */
export function copyTriples(source: Buffer, target: Buffer, triples: readonly number[]): string | null {
  if (triples.length % 3 !== 0) return 'holds an incomplete triple'
  if (nativeMemoryLoaded()) {
    try {
      addon!.copyTriples(source, target, triples)
      return null
    } catch (error) {
      if (error instanceof RangeError || error instanceof TypeError) return 'names a part outside its buffers'
      throw error
    }
  }
  return copyTriplesInJs(source, target, triples)
}

/** copyTriples without the addon: every triple checked, then Buffer.copy. Exported for its tests. */
export function copyTriplesInJs(source: Buffer, target: Buffer, triples: readonly number[]): string | null {
  if (triples.length % 3 !== 0) return 'holds an incomplete triple'
  for (let k = 0; k < triples.length; k += 3) {
    const from = triples[k]!
    const to = triples[k + 1]!
    const length = triples[k + 2]!
    const whole = Number.isSafeInteger(from) && Number.isSafeInteger(to) && Number.isSafeInteger(length)
    if (!(whole && from >= 0 && to >= 0 && length > 0 && from + length <= source.length && to + length <= target.length)) return 'names a part outside its buffers'
  }
  for (let k = 0; k < triples.length; k += 3) source.copy(target, triples[k + 1]!, triples[k]!, triples[k]! + triples[k + 2]!)
  return null
}
