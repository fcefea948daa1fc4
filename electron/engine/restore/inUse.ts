/**
 * Which processes have a file open, from /proc (Linux). Used to refuse a restore over a disk that a
 * running virtual machine uses (TARGET_IN_USE).
 *
 * Files are matched by device and inode, not by name, so hard links and other names of the same
 * file are caught. Processes whose descriptors this user cannot read (other users' processes when
 * not root) are not seen; on systems without /proc the answer is empty.
 */
import { readdir, readFile, readlink, stat } from 'node:fs/promises'
import { EngineError } from '../errors.js'

export interface FileUse {
  pid: number
  /** The path as the process opened it (from /proc/<pid>/fd). */
  path: string
  /** Opened with O_WRONLY or O_RDWR. */
  forWriting: boolean
  /** Short command name (/proc/<pid>/comm), when readable. */
  command?: string
}

const O_ACCMODE = 0o3

/**
 * Lists the open descriptors of other processes that refer to any of `paths` (missing paths are
 * ignored). `excludePids` defaults to this process.
 */
export async function findFileUses(paths: string[], options: { excludePids?: number[]; procRoot?: string } = {}): Promise<FileUse[]> {
  const procRoot = options.procRoot ?? '/proc'
  const exclude = new Set(options.excludePids ?? [process.pid])
  const wanted = new Set<string>()
  for (const p of paths) {
    try {
      const s = await stat(p, { bigint: true })
      wanted.add(`${s.dev}:${s.ino}`)
    } catch {
      // not there: nothing can have it open
    }
  }
  if (wanted.size === 0) return []
  let pids: string[]
  try {
    pids = (await readdir(procRoot)).filter((n) => /^[0-9]+$/.test(n))
  } catch {
    return []
  }
  const uses: FileUse[] = []
  for (const pidText of pids) {
    const pid = Number(pidText)
    if (exclude.has(pid)) continue
    let fds: string[]
    try {
      fds = await readdir(`${procRoot}/${pidText}/fd`)
    } catch {
      continue
    }
    let command: string | undefined
    for (const fd of fds) {
      const link = `${procRoot}/${pidText}/fd/${fd}`
      let target: string
      try {
        target = await readlink(link)
      } catch {
        continue
      }
      if (!target.startsWith('/')) continue // socket:, pipe:, anon_inode:...
      let key: string
      try {
        const s = await stat(link, { bigint: true })
        key = `${s.dev}:${s.ino}`
      } catch {
        continue
      }
      if (!wanted.has(key)) continue
      let forWriting = false
      try {
        const info = await readFile(`${procRoot}/${pidText}/fdinfo/${fd}`, 'utf8')
        const m = /^flags:\s*([0-7]+)/m.exec(info)
        if (m) forWriting = (parseInt(m[1]!, 8) & O_ACCMODE) !== 0
      } catch {
        forWriting = true // cannot tell: assume the worst
      }
      if (command === undefined) {
        try {
          command = (await readFile(`${procRoot}/${pidText}/comm`, 'utf8')).trim()
        } catch {
          command = ''
        }
      }
      uses.push({ pid, path: target, forWriting, ...(command ? { command } : {}) })
    }
  }
  return uses
}

/**
 * Throws TARGET_IN_USE when another process has one of `paths` open (for writing only when
 * `writersOnly`), naming the first such process.
 */
export async function assertNotInUse(paths: string[], options: { writersOnly?: boolean; what?: string } = {}): Promise<void> {
  const uses = (await findFileUses(paths)).filter((u) => !options.writersOnly || u.forWriting)
  const first = uses[0]
  if (!first) return
  const who = first.command ? `${first.command} (pid ${first.pid})` : `process ${first.pid}`
  throw new EngineError(
    'TARGET_IN_USE',
    `"${first.path}" is in use by ${who}${first.forWriting ? ', which has it open for writing' : ''}. ` +
      `Shut down the virtual machine using ${options.what ?? 'it'}, then restore again.`,
  )
}
