import { AppError } from '../api/index.js'
import { useNotificationsStore } from './notifications.js'

/**
 * The one place failures go: an AppError shows its user message; CANCELLED is an outcome and shows
 * nothing; anything else is a bug and shows a generic message (and is logged to the console).
 */
export function reportError(err: unknown): void {
  const notices = useNotificationsStore()
  if (err instanceof AppError) {
    if (err.code === 'CANCELLED') return
    notices.push('error', err.message, err.code)
    return
  }
  console.error(err)
  notices.push('error', 'An unexpected error occurred in the window. Reload it; if it happens again, report it with the console log.', 'INTERNAL')
}
