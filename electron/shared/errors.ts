/**
 * Error codes shared by the engine, the IPC contract, the CLI and the renderer.
 * The code picks the UI treatment; the message (always written for the user) says what happened
 * and what to do. Add codes here, never inline string literals elsewhere.
 */
export const ERROR_CODES = [
  // generic
  'INTERNAL',
  'INVALID_INPUT',
  'FORBIDDEN',
  'NOT_FOUND',
  'ALREADY_EXISTS',
  'CANCELLED',
  'TIMEOUT',
  'UNSUPPORTED',
  'JOB_CRASHED',
  // the renderer lost its connection to the host (web host stopped, socket closed)
  'DISCONNECTED',
  // files and devices
  'IO_ERROR',
  'DISK_FULL',
  'DEVICE_GONE',
  'PERMISSION_DENIED',
  'PATH_UNSAFE',
  // disk images
  'IMAGE_MALFORMED',
  'IMAGE_UNSUPPORTED',
  'IMAGE_ENCRYPTED',
  'IMAGE_BACKING_MISSING',
  'IMAGE_BACKING_LOOP',
  'IMAGE_BACKING_MISMATCH',
  'IMAGE_DIRTY_LOG',
  // vault and keys
  'VAULT_NOT_FOUND',
  'VAULT_NOT_CONFIGURED',
  'VAULT_DAMAGED',
  'VAULT_VERSION_UNSUPPORTED',
  'VAULT_ROLLBACK',
  'VAULT_LOCKED',
  'VAULT_LOCK_STALE',
  'VAULT_LOCK_LOST',
  'WRONG_PASSPHRASE',
  'PASSPHRASE_REQUIRED',
  'KEYCHAIN_UNAVAILABLE',
  'CHUNK_CORRUPT',
  'CHUNK_MISSING',
  // machines, backup, restore
  'MACHINE_NOT_FOUND',
  'POINT_NOT_FOUND',
  'SOURCE_LOCKED',
  'SOURCE_CHANGED',
  'SCRIPT_FAILED',
  'SCRIPT_TIMEOUT',
  'TARGET_EXISTS',
  'TARGET_IN_USE',
  'CATALOG_ERROR',
] as const

export type ErrorCode = (typeof ERROR_CODES)[number]

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && (ERROR_CODES as readonly string[]).includes(value)
}

/** What crosses a process or IPC boundary: never a stack, never a secret. */
export interface WireError {
  code: ErrorCode
  message: string
}

export type WireResult<T> = { ok: true; value: T } | { ok: false; error: WireError }
