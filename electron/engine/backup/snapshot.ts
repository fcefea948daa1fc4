/**
 * Snapshots of disk image files, and the checks behind the consistency we record.
 *
 * - Reflink clone: `fs.copyFile(src, clone, COPYFILE_FICLONE_FORCE)` shares the file's extents
 *   atomically (btrfs, XFS with reflink=1, APFS, ReFS). Reading the clone gives one instant's
 *   content: crash-consistent. The clone is written beside the source (same folder, a hidden name),
 *   so relative backing-file names inside it still resolve to the same parents.
 * - Checked read: where cloning is impossible, the file itself is read; the read is crash-consistent
 *   only when no process has the file open for writing (Linux: /proc/<pid>/fd + fdinfo flags) and
 *   its size, mtime, ctime and inode are the same before and after the read. Otherwise: 'none'.
 */
import { constants, readdirSync, readFileSync, readlinkSync } from 'node:fs'
import { copyFile, readdir, realpath, stat, unlink } from 'node:fs/promises'
import { basename, dirname, extname, join } from 'node:path'
import type { FileIdentity } from '../vault/api.js'

/** What is compared to decide whether a file changed. */
export interface FileState extends FileIdentity {
  dev: number
  /** Bytes of storage the file uses (st_blocks × 512); not part of the identity. */
  allocatedOnDisk: number
}

export async function fileState(path: string): Promise<FileState> {
  const st = await stat(path)
  return { sizeBytes: st.size, mtimeMs: st.mtimeMs, ctimeMs: st.ctimeMs, inode: st.ino, dev: st.dev, allocatedOnDisk: st.blocks * 512 }
}

/** Same size, mtime, ctime and inode (dev too when both have it). */
export function sameIdentity(a: FileIdentity | undefined, b: FileIdentity | undefined): boolean {
  if (!a || !b) return false
  const da = (a as Partial<FileState>).dev
  const db = (b as Partial<FileState>).dev
  return a.sizeBytes === b.sizeBytes && a.mtimeMs === b.mtimeMs && a.ctimeMs === b.ctimeMs && a.inode === b.inode &&
    (da === undefined || db === undefined || da === db)
}

/** The identity part of a state (what a point manifest keeps). */
export function identityOf(s: FileState): FileIdentity {
  return { sizeBytes: s.sizeBytes, mtimeMs: s.mtimeMs, ctimeMs: s.ctimeMs, inode: s.inode }
}

export interface WriterScan {
  /** Processes that have the file open for writing (O_WRONLY or O_RDWR). */
  pids: number[]
  /** False where the platform offers no way to look (not Linux). */
  supported: boolean
  /** Processes whose open files could not be inspected (other users' processes without root). */
  uninspectable: number
}

/**
 * Finds processes holding `path` open for writing. Linux only (/proc); elsewhere `supported` is
 * false and the caller relies on the before/after comparison alone. Processes that vanish during
 * the scan are ignored.
 *
 * The /proc calls are synchronous, a batch of processes at a time with a turn of the event loop in
 * between: they are answered from kernel memory in microseconds, and as thread-pool requests each
 * cost a hand-off between threads (66 processes, ~500 descriptors here: 20–22 ms async, 7–13 ms so;
 * a desktop has tens of thousands of descriptors, and the scan runs before and after every disk).
 */
export async function findWriters(path: string, procRoot = '/proc'): Promise<WriterScan> {
  if (process.platform !== 'linux') return { pids: [], supported: false, uninspectable: 0 }
  let target: string
  try {
    target = await realpath(path)
  } catch {
    return { pids: [], supported: true, uninspectable: 0 }
  }
  let entries: string[]
  try {
    entries = await readdir(procRoot)
  } catch {
    return { pids: [], supported: false, uninspectable: 0 }
  }
  const pids: number[] = []
  let uninspectable = 0
  const scanPid = (pid: string): void => {
    let fds: string[]
    try {
      fds = readdirSync(join(procRoot, pid, 'fd'))
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EACCES' || (err as NodeJS.ErrnoException).code === 'EPERM') uninspectable++
      return
    }
    for (const fd of fds) {
      let link: string
      try {
        link = readlinkSync(join(procRoot, pid, 'fd', fd))
      } catch {
        continue
      }
      if (link !== target) continue
      try {
        const info = readFileSync(join(procRoot, pid, 'fdinfo', fd), 'utf8')
        const m = /^flags:\s*([0-7]+)/m.exec(info)
        const flags = m ? parseInt(m[1]!, 8) : 0
        if ((flags & 3) !== 0) { // O_WRONLY = 1, O_RDWR = 2
          pids.push(Number(pid))
          return
        }
      } catch {
        continue
      }
    }
  }
  const numeric = entries.filter((e) => /^\d+$/.test(e))
  for (let i = 0; i < numeric.length; i += 32) {
    if (i > 0) await new Promise<void>((r) => setImmediate(r))
    for (const pid of numeric.slice(i, i + 32)) scanPid(pid)
  }
  return { pids, supported: true, uninspectable }
}

/** Errors that mean "this file system cannot clone", as opposed to a real failure. */
const NO_REFLINK = new Set(['ENOTSUP', 'EOPNOTSUPP', 'EXDEV', 'EINVAL', 'ENOSYS', 'ENOTTY', 'EPERM', 'EACCES', 'EROFS', 'EBADF'])

export type CloneResult = { ok: true } | { ok: false; reason: string }

/**
 * Clones `source` to `clone` (which must not exist) with COPYFILE_FICLONE_FORCE. Never falls back
 * to a full copy. Resolves `{ok: false}` (and removes any partial file) when the file system cannot
 * clone; rejects on other errors (e.g. ENOSPC).
 */
export async function reflinkClone(source: string, clone: string): Promise<CloneResult> {
  try {
    await copyFile(source, clone, constants.COPYFILE_FICLONE_FORCE | constants.COPYFILE_EXCL)
    return { ok: true }
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? ''
    if (code === 'EEXIST') return { ok: false, reason: `"${clone}" already exists` } // not ours: never remove it
    await unlink(clone).catch(() => {})
    if (NO_REFLINK.has(code)) return { ok: false, reason: `${code}: the file system of "${dirname(source)}" cannot clone files` }
    throw err
  }
}

/** Where the clone of `source` for a backup started at `stampMs` goes: the same folder, a hidden name. */
export function clonePathFor(source: string, stampMs: number, unique: string): string {
  const base = basename(source)
  const ext = extname(base)
  const stem = ext ? base.slice(0, -ext.length) : base
  const stamp = new Date(stampMs).toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')
  return join(dirname(source), `.${stem}.tresor-${stamp}-${unique}${ext}`)
}
