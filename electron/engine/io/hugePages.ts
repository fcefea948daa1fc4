/**
 * Huge pages for direct-I/O buffers (native/hugepages: one madvise call).
 *
 * A direct read or write leaves the block layer as requests of at most `max_segments` physically
 * contiguous pieces: 254 on a virtio disk, so a 4 MiB transfer out of 4 KiB pages becomes four or
 * more requests, while one out of 2 MiB pages goes as one. Where a device pays per request (virtual
 * disks), that weighs on a restore's time: the bench's restore took 5.95–6.17 s instead of
 * 6.81–7.48 s, and 6.2 GB of real files wrote in ~2,800 requests instead of 6,200–9,600
 * (PERFORMANCE.md, twenty-seventh round). Linux backs memory with transparent huge pages only where a program asks (the usual
 * `madvise` setting), and Node cannot ask; the addon does. It is a hint: without the addon (another
 * platform, a failed build), with THP off, or with `TRESOR_NO_HUGE_PAGES=1`, nothing changes but
 * the number of requests.
 */
import { createRequire } from 'node:module'

type Advise = (view: Uint8Array) => boolean

let advise: Advise | null | undefined

function load(): Advise | null {
  if (process.platform !== 'linux') return null
  try {
    return (createRequire(import.meta.url)('tresor-hugepages') as { adviseHugePages: Advise }).adviseHugePages
  } catch {
    return null
  }
}

/** Whether the native call is here (Linux with the addon built). */
export function hugePagesAddonLoaded(): boolean {
  advise ??= load()
  return advise !== null
}

/**
 * Asks for huge pages over the whole pages of `memory`, before anything touches it (pages already
 * in place stay small until the kernel collapses them). Returns whether the kernel took the advice.
 */
export function adviseHugePages(memory: ArrayBufferLike): boolean {
  if (process.env.TRESOR_NO_HUGE_PAGES === '1' || !hugePagesAddonLoaded()) return false
  return advise!(new Uint8Array(memory))
}
