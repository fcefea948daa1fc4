/**
 * Restore targets: where each restored disk goes, and the checks that keep a restore from writing
 * anywhere the user did not choose (RELIABILITY.md row 33).
 *
 * Rules
 * - A path with NUL is refused (PATH_UNSAFE).
 * - The chosen folder is resolved once with `realpath`; every file is then placed directly inside
 *   that real folder under a sanitised name (no separators, no `..`, no reserved Windows names), so
 *   neither a disk name from a manifest nor a symlink in the parent chain can lead elsewhere.
 * - A target that exists is refused (TARGET_EXISTS) unless the user explicitly asked to overwrite it,
 *   and a symlink or non-regular file at the target is refused even then (PATH_UNSAFE).
 * - A target inside the vault folder is refused (PATH_UNSAFE).
 * - Files are created exclusively (`wx`: O_CREAT|O_EXCL, which never follows a symlink) as
 *   `<final>.partial` and renamed only when complete (I12).
 */
import { lstat, mkdir, realpath, stat } from 'node:fs/promises'
import { basename, dirname, extname, join, relative, isAbsolute, resolve, sep } from 'node:path'
import { EngineError, fromFsError } from '../errors.js'
import type { WriterFormat } from '../formats/types.js'

export const PARTIAL_SUFFIX = '.partial'

/** File name extension of each writer format. */
export const FORMAT_EXTENSIONS: Record<WriterFormat, string> = {
  raw: '.img',
  qcow2: '.qcow2',
  vhd: '.vhd',
  'vhd-fixed': '.vhd',
  vhdx: '.vhdx',
}

const IMAGE_EXTENSIONS = new Set(['.img', '.raw', '.qcow2', '.qcow', '.vhd', '.vhdx', '.vmdk', '.bin', '.disk'])
const WINDOWS_RESERVED = /^(con|prn|aux|nul|com[0-9¹²³]|lpt[0-9¹²³])(\..*)?$/i

/** Throws PATH_UNSAFE when `path` contains NUL (which no file system accepts and some APIs cut at). */
export function assertNoNul(path: string, what = 'The restore target'): void {
  if (path.includes('\0')) throw new EngineError('PATH_UNSAFE', `${what} contains a NUL character. Choose another path.`)
}

/** True when `child` is `parent` itself or lies beneath it (both absolute, already resolved). */
export function isInside(parent: string, child: string): boolean {
  const rel = relative(parent, child)
  return rel === '' || (!rel.startsWith('..' + sep) && rel !== '..' && !isAbsolute(rel))
}

/**
 * A file name for a restored disk built from its name in the point: path separators, control
 * characters and characters Windows forbids become `_`, leading dots are dropped (no `..`, no hidden
 * files), reserved Windows device names get a `_` prefix, and the extension is the target format's.
 */
export function diskFileName(diskName: string, format: WriterFormat, fallback = 'disk'): string {
  let base = basename(diskName.replace(/[\\/]/g, '/'))
  const ext = extname(base).toLowerCase()
  if (IMAGE_EXTENSIONS.has(ext)) base = base.slice(0, -ext.length)
  base = base.replace(/[\u0000-\u001f\u007f<>:"/\\|?*]/g, '_').replace(/^[.\s]+/, '').replace(/[.\s]+$/, '')
  if (base === '') base = fallback
  if (WINDOWS_RESERVED.test(base)) base = `_${base}`
  if (base.length > 200) base = base.slice(0, 200)
  return base + FORMAT_EXTENSIONS[format]
}

/** One file a restore will produce. */
export interface TargetFile {
  /** The name the file gets once complete and verified. */
  finalPath: string
  /** Where it is written until then. */
  partialPath: string
  /** The user explicitly chose to replace an existing file at `finalPath`. */
  overwrite: boolean
}

/**
 * Resolves the real folder a restore writes into: creates it (and missing parents) when absent,
 * refuses one that is not a directory or lies inside the vault.
 */
export async function resolveTargetFolder(folder: string, vaultPath: string | undefined): Promise<string> {
  assertNoNul(folder)
  const vaultReal = vaultPath === undefined ? undefined : await realpathOrSelf(vaultPath)
  const refuseInVault = (real: string): void => {
    if (vaultReal !== undefined && isInside(vaultReal, real)) {
      throw new EngineError('PATH_UNSAFE', `"${folder}" is inside the vault "${vaultPath}". Restore to a folder outside the vault.`)
    }
  }
  // Before creating anything: where would the folder be, once its existing part is resolved?
  refuseInVault(await resolveExistingPart(resolve(folder)))
  try {
    await mkdir(folder, { recursive: true })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw fromFsError(err, folder, 'creating the folder') ?? err
  }
  let real: string
  try {
    real = await realpath(folder)
    if (!(await stat(real)).isDirectory()) {
      throw new EngineError('PATH_UNSAFE', `"${folder}" is not a folder. Choose a folder to restore into.`)
    }
  } catch (err) {
    if (err instanceof EngineError) throw err
    throw fromFsError(err, folder, 'opening the folder') ?? err
  }
  refuseInVault(real)
  return real
}

async function realpathOrSelf(path: string): Promise<string> {
  try {
    return await realpath(path)
  } catch {
    return resolve(path)
  }
}

/** `realpath` of the longest existing prefix of `abs`, with the missing rest appended. */
async function resolveExistingPart(abs: string): Promise<string> {
  const missing: string[] = []
  let cur = abs
  for (;;) {
    try {
      return join(await realpath(cur), ...missing.reverse())
    } catch {
      const parent = dirname(cur)
      if (parent === cur) return abs
      missing.push(basename(cur))
      cur = parent
    }
  }
}

/**
 * Checks the final name of a target inside a resolved folder: refuses an existing entry unless
 * `overwrite` (then only a regular file, never a symlink, directory or device), and refuses a `.partial`
 * that is not a regular file (a stale regular `.partial` from an interrupted restore is ours to replace).
 */
export async function checkTargetFile(folderReal: string, name: string, overwrite: boolean): Promise<TargetFile> {
  assertNoNul(name)
  if (name === '' || name === '.' || name === '..' || name.includes('/') || (sep === '\\' && name.includes('\\'))) {
    throw new EngineError('PATH_UNSAFE', `"${name}" is not a valid file name for a restore target.`)
  }
  const finalPath = join(folderReal, name)
  const partialPath = finalPath + PARTIAL_SUFFIX
  if (dirname(finalPath) !== folderReal) {
    throw new EngineError('PATH_UNSAFE', `"${name}" would leave the folder "${folderReal}". Choose another name.`)
  }
  const existing = await lstatOrUndefined(finalPath)
  if (existing) {
    if (existing.isSymbolicLink()) {
      throw new EngineError('PATH_UNSAFE', `"${finalPath}" is a symbolic link. Tresor does not restore through links; choose another target.`)
    }
    if (!overwrite) {
      throw new EngineError('TARGET_EXISTS', `"${finalPath}" already exists. Choose another target, or confirm that it may be overwritten.`)
    }
    if (!existing.isFile()) {
      throw new EngineError('PATH_UNSAFE', `"${finalPath}" is not a regular file and cannot be overwritten by a restore.`)
    }
  }
  const partial = await lstatOrUndefined(partialPath)
  if (partial && !partial.isFile()) {
    throw new EngineError('PATH_UNSAFE', `"${partialPath}" exists and is not a regular file. Remove it, then restore again.`)
  }
  return { finalPath, partialPath, overwrite }
}

export async function lstatOrUndefined(path: string): Promise<Awaited<ReturnType<typeof lstat>> | undefined> {
  try {
    return await lstat(path)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw fromFsError(err, path, 'checking') ?? err
  }
}

/** Makes each name in `names` unique (case-insensitively) by adding `-2`, `-3`... before the extension. */
export function uniqueNames(names: string[]): string[] {
  const seen = new Set<string>()
  return names.map((name) => {
    const ext = extname(name)
    const stem = name.slice(0, name.length - ext.length)
    let candidate = name
    for (let n = 2; seen.has(candidate.toLowerCase()); n++) candidate = `${stem}-${n}${ext}`
    seen.add(candidate.toLowerCase())
    return candidate
  })
}
