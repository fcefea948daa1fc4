/**
 * Real file systems in sparse temp files, loop-mounted: XFS with reflink (mkfs.xfs -m reflink=1)
 * for tests of reflink snapshots, the snapshot tier and instant restore, and any other (`mountLoopFs`)
 * where a test needs what tmpfs lacks, such as direct I/O. Needs root (mount): a missing privilege
 * throws, it never skips (CI runs as root).
 */
import { execFileSync } from 'node:child_process'
import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

/** A loop-mounted file system. */
export interface LoopMount {
  /** Temp folder holding the image and the mount point; removed by `unmount`. */
  root: string
  /** The mounted file system. */
  mnt: string
  /** Unmounts (retrying while the file system is busy) and removes `root`. */
  unmount(): Promise<void>
}

export function mountReflinkXfs(prefix: string, what: string): Promise<LoopMount> {
  // mkfs.xfs needs ≥ 300 MiB; sparse, so nothing is written
  return mountLoopFs(prefix, what, { size: '320M', mkfs: ['mkfs.xfs', '-q', '-m', 'reflink=1'] })
}

/** A file system of `size` (truncate's syntax) made by `mkfs` (the command and its options; the image's path is added) and loop-mounted. */
export async function mountLoopFs(prefix: string, what: string, fs: { size: string; mkfs: string[] }): Promise<LoopMount> {
  if (process.getuid?.() !== 0) throw new Error(`${what} mount a file system image and need root (CI runs as root)`)
  const root = await mkdtemp(join(tmpdir(), prefix))
  const img = join(root, 'fs.img')
  const mnt = join(root, 'mnt')
  let mounted = false
  const unmount = async (): Promise<void> => {
    if (mounted) {
      for (let i = 0; i < 5; i++) {
        try {
          execFileSync('umount', [mnt])
          mounted = false
          break
        } catch {
          await new Promise((r) => setTimeout(r, 300))
        }
      }
    }
    await rm(root, { recursive: true, force: true })
  }
  try {
    await mkdir(mnt)
    execFileSync('truncate', ['-s', fs.size, img])
    execFileSync(fs.mkfs[0]!, [...fs.mkfs.slice(1), img])
    execFileSync('mount', ['-o', 'loop', img, mnt])
    mounted = true
  } catch (err) {
    await unmount()
    throw err
  }
  return { root, mnt, unmount }
}
