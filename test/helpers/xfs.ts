/**
 * A real XFS file system with reflink (mkfs.xfs -m reflink=1) in a sparse temp file, loop-mounted:
 * for tests of reflink snapshots, the snapshot tier and instant restore. Needs root (mount): a
 * missing privilege throws, it never skips (CI runs as root).
 */
import { execFileSync } from 'node:child_process'
import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

export interface ReflinkMount {
  /** Temp folder holding the image and the mount point; removed by `unmount`. */
  root: string
  /** The mounted file system. */
  mnt: string
  /** Unmounts (retrying while the file system is busy) and removes `root`. */
  unmount(): Promise<void>
}

export async function mountReflinkXfs(prefix: string, what: string): Promise<ReflinkMount> {
  if (process.getuid?.() !== 0) throw new Error(`${what} mount an XFS image and need root (CI runs as root)`)
  const root = await mkdtemp(join(tmpdir(), prefix))
  const img = join(root, 'xfs.img')
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
    execFileSync('truncate', ['-s', '320M', img]) // mkfs.xfs needs ≥ 300 MiB; sparse, so nothing is written
    execFileSync('mkfs.xfs', ['-q', '-m', 'reflink=1', img])
    execFileSync('mount', ['-o', 'loop', img, mnt])
    mounted = true
  } catch (err) {
    await unmount()
    throw err
  }
  return { root, mnt, unmount }
}
