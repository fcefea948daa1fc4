/**
 * Parent locators of VHD and VHDX differencing disks: turning what the child file says about its
 * parent (Windows relative/absolute paths, Mac file URLs, bare file names) into candidate paths on
 * this machine, in the order they should be tried.
 */
import { basename, dirname, isAbsolute, posix, resolve, win32 } from 'node:path'

export type LocatorKind = 'relative' | 'absolute' | 'url' | 'name'

export interface LocatorHint {
  kind: LocatorKind
  /** The text as stored in the image (already decoded). */
  text: string
}

const isWindowsHost = process.platform === 'win32'

function stripNuls(s: string): string {
  const i = s.indexOf('\0')
  return (i >= 0 ? s.slice(0, i) : s).trim()
}

/** Turns a `file://host/path` URL (MacX locators, VHDX volume paths are not URLs) into a path. */
function fromFileUrl(text: string): string | undefined {
  const m = /^file:\/\/([^/]*)(\/.*)$/i.exec(text)
  if (!m) return undefined
  try {
    return decodeURIComponent(m[2]!)
  } catch {
    return m[2]
  }
}

/** True when a stored path is in Windows syntax (drive letter, UNC, or backslashes). */
function looksWindows(p: string): boolean {
  return /^[A-Za-z]:/.test(p) || p.startsWith('\\\\') || p.includes('\\')
}

/**
 * Candidate host paths for one hint, relative paths resolved against the child's directory.
 * A Windows absolute path (drive letter, UNC, `\\?\`) cannot be used as is on Linux or macOS: its
 * file name is tried in the child's directory instead (the parent's identity is checked by UUID, so
 * a wrong guess is refused, never used).
 */
export function candidatesFor(hint: LocatorHint, childPath: string): string[] {
  const childDir = dirname(resolve(childPath))
  let text = stripNuls(hint.text)
  if (!text) return []
  if (hint.kind === 'url' || /^file:\/\//i.test(text)) {
    const p = fromFileUrl(text)
    if (!p) return []
    text = p
  }
  // Win32 namespace paths: \\?\C:\..., \\?\UNC\server\..., \\?\Volume{guid}\... are all absolute.
  const namespaced = text.startsWith('\\\\?\\') || text.startsWith('\\\\.\\')
  if (namespaced) text = text.slice(4)
  if (namespaced || looksWindows(text)) {
    const isWinAbsolute = namespaced || /^[A-Za-z]:/.test(text) || text.startsWith('\\\\')
    if (isWindowsHost) return [namespaced && !/^[A-Za-z]:/.test(text) ? `\\\\?\\${text}` : win32.resolve(childDir, text)]
    if (isWinAbsolute) return [resolve(childDir, win32.basename(text))]
    return [resolve(childDir, text.split('\\').join('/'))]
  }
  if (isAbsolute(text) || posix.isAbsolute(text)) return [resolve(text), resolve(childDir, basename(text))]
  return [resolve(childDir, text)]
}

/** All candidates of all hints, first hint first, duplicates removed. */
export function candidatePaths(hints: LocatorHint[], childPath: string): string[] {
  const out: string[] = []
  for (const h of hints) for (const c of candidatesFor(h, childPath)) if (!out.includes(c)) out.push(c)
  return out
}
