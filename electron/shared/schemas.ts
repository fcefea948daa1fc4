/**
 * Building blocks of the IPC contract: zod schemas for the plain data that crosses the boundary
 * between the renderer and main / the web host. Runs anywhere (imports nothing but zod).
 *
 * Every string the page can send is bounded and NUL-free; every object is strict (unknown keys,
 * including `__proto__`, are rejected); every number is finite and bounded. The page is not trusted.
 */
import { z } from 'zod'
import { ERROR_CODES } from './errors.js'

/** Longest path we accept (Linux PATH_MAX is 4096; Windows long paths are shorter in practice). */
export const MAX_PATH_CHARS = 4096
/** Longest free-text field (names, labels). */
export const MAX_NAME_CHARS = 200
/** Longest id (UUIDs and vault point ids fit comfortably). */
export const MAX_ID_CHARS = 128

const NO_NUL = /^[^\u0000]*$/

/** Bounded, NUL-free text. */
export function text(maxChars: number) {
  return z.string().max(maxChars).regex(NO_NUL, { message: 'must not contain NUL characters' })
}

/** A user-visible name: 1..200 characters, trimmed, no control characters. */
export const Name = z
  .string()
  .trim()
  .min(1)
  .max(MAX_NAME_CHARS)
  .regex(/^[^\u0000-\u001f\u007f]+$/, { message: 'must not contain control characters' })

/** An opaque identifier: letters, digits, `-`, `_`, `.` (never a path separator or `..`). */
export const Id = z
  .string()
  .min(1)
  .max(MAX_ID_CHARS)
  .regex(/^[A-Za-z0-9_][A-Za-z0-9_.-]*$/, { message: 'is not a valid identifier' })
  .refine((s) => !s.includes('..'), { message: 'is not a valid identifier' })

/**
 * True for an absolute path on POSIX (`/x`) or Windows (`C:\x`, `\\server\share\x`) without `.`/`..`
 * segments. Written without node:path so the renderer can use it too.
 */
export function isCleanAbsolutePath(p: string): boolean {
  const isPosixAbs = p.startsWith('/')
  const isWinAbs = /^[A-Za-z]:[\\/]/.test(p) || /^\\\\[^\\/]+[\\/][^\\/]+/.test(p)
  if (!isPosixAbs && !isWinAbs) return false
  const segments = p.split(/[\\/]+/)
  return !segments.some((s) => s === '..' || s === '.')
}

/** An absolute file-system path, bounded, NUL-free, without `.`/`..` segments. */
export const AbsolutePath = text(MAX_PATH_CHARS)
  .min(1)
  .refine(isCleanAbsolutePath, { message: 'must be an absolute path without "." or ".." segments' })

/** ISO 8601 timestamp string as stored in the catalog. */
export const IsoTime = z.string().max(40)

export const ByteCount = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER)

export const ErrorCodeSchema = z.enum(ERROR_CODES)

export const WireErrorSchema = z.strictObject({
  code: ErrorCodeSchema,
  message: z.string(),
})

/** Time of day `HH:MM` (24 h). */
export const TimeOfDay = z.string().regex(/^([01]\d|2[0-3]):[0-5]\d$/, { message: 'must be a time HH:MM' })

/** An http(s) URL, bounded. Which hosts may actually be opened is decided by main's allow-list. */
export const ExternalUrl = text(2048).min(1)
