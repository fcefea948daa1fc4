/**
 * Request checks of the web host: the per-launch token, the Host header (DNS-rebinding defence)
 * and the Origin of WebSocket upgrades. Pure functions, unit-tested.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto'

/** A fresh per-launch token: 32 random bytes, base64url (43 characters). */
export function newToken(): string {
  return randomBytes(32).toString('base64url')
}

/** Constant-time comparison of a presented token with the expected one. */
export function tokenMatches(expected: string, presented: string | null | undefined): boolean {
  if (typeof presented !== 'string' || presented.length === 0 || presented.length > 256) return false
  const a = Buffer.from(expected)
  const b = Buffer.from(presented)
  return a.length === b.length && timingSafeEqual(a, b)
}

/** The hosts a page served by us may be reached under (the server binds 127.0.0.1 only). */
export function allowedHosts(port: number): string[] {
  return [`127.0.0.1:${port}`, `localhost:${port}`]
}

/** True when the Host header names this server (rejects DNS-rebinding names such as evil.example:port). */
export function hostAllowed(hostHeader: string | undefined, port: number): boolean {
  return typeof hostHeader === 'string' && allowedHosts(port).includes(hostHeader.toLowerCase())
}

/** True when the Origin header is exactly this server's own origin. A missing Origin is refused. */
export function originAllowed(origin: string | undefined, port: number): boolean {
  return typeof origin === 'string' && allowedHosts(port).some((h) => origin.toLowerCase() === `http://${h}`)
}

/**
 * The Content-Security-Policy the web host sends with every response (the page carries the same
 * policy in a meta tag; frame-ancestors only works as a header). Styles allow 'unsafe-inline'
 * because the component library injects its styles at run time; scripts never do.
 */
export function contentSecurityPolicy(port: number): string {
  return [
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data:",
    "font-src 'self' data:",
    `connect-src 'self' ws://127.0.0.1:${port} ws://localhost:${port}`,
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'none'",
    "frame-src 'none'",
    "frame-ancestors 'none'",
  ].join('; ')
}
