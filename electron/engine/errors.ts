import type { ErrorCode, WireError } from '../shared/errors.js'

/**
 * A failure the user can act on. `code` picks the UI treatment, `userMessage` says what happened
 * and what to do, `cause` keeps the root for the log. Anything that is not an EngineError is a bug
 * and is reported as INTERNAL with a generic message.
 */
export class EngineError extends Error {
  override readonly name = 'EngineError'
  constructor(
    readonly code: ErrorCode,
    readonly userMessage: string,
    options?: { cause?: unknown },
  ) {
    super(`${code}: ${userMessage}`, options)
  }
}

export function isEngineError(err: unknown): err is EngineError {
  return err instanceof EngineError
}

/** Maps Node's file-system error codes to ours, naming the path; returns undefined for others. */
export function fromFsError(err: unknown, path: string, action: string): EngineError | undefined {
  const code = (err as NodeJS.ErrnoException | undefined)?.code
  switch (code) {
    case 'ENOSPC':
    case 'EDQUOT':
      return new EngineError('DISK_FULL', `The destination is full while ${action} "${path}". Free some space and try again.`, { cause: err })
    case 'ENOENT':
      return new EngineError('NOT_FOUND', `"${path}" does not exist (${action}).`, { cause: err })
    case 'EACCES':
    case 'EPERM':
      return new EngineError('PERMISSION_DENIED', `Permission denied while ${action} "${path}".`, { cause: err })
    case 'ENODEV':
    case 'ENXIO':
      return new EngineError('DEVICE_GONE', `The drive holding "${path}" is no longer available. Reconnect it and try again.`, { cause: err })
    case 'EIO':
      return new EngineError('IO_ERROR', `An I/O error occurred while ${action} "${path}". The drive may be failing.`, { cause: err })
    case 'EEXIST':
      return new EngineError('ALREADY_EXISTS', `"${path}" already exists.`, { cause: err })
    default:
      return undefined
  }
}

/** Converts anything thrown into what may cross a boundary. Non-engine errors become INTERNAL. */
export function toWireError(err: unknown): WireError {
  if (err instanceof EngineError) return { code: err.code, message: err.userMessage }
  const fsErr = fromFsError(err, (err as { path?: string } | undefined)?.path ?? 'a file', 'accessing')
  if (fsErr) return { code: fsErr.code, message: fsErr.userMessage }
  return { code: 'INTERNAL', message: 'An internal error occurred. See the log for details.' }
}
