/**
 * The security rules of the Electron window, as plain data and pure functions (no electron import),
 * so unit tests can read them (RELIABILITY.md #30–#32).
 */

/** The custom scheme the renderer is served from (privileged: standard, secure). */
export const APP_SCHEME = 'app'
export const APP_HOST = 'tresor'
export const APP_ORIGIN = `${APP_SCHEME}://${APP_HOST}`
export const APP_START_URL = `${APP_ORIGIN}/index.html`

/**
 * webPreferences of every Tresor window: the page is untrusted content with no Node access, isolated
 * from preload, sandboxed, without <webview>, and unable to load insecure content.
 */
export const SECURE_WEB_PREFERENCES = {
  contextIsolation: true,
  sandbox: true,
  nodeIntegration: false,
  nodeIntegrationInWorker: false,
  nodeIntegrationInSubFrames: false,
  webviewTag: false,
  webSecurity: true,
  allowRunningInsecureContent: false,
  experimentalFeatures: false,
  enableBlinkFeatures: '',
  navigateOnDragDrop: false,
  spellcheck: false,
  safeDialogs: true,
} as const

/** Hosts whose https pages may be opened in the system browser (documentation, project home). */
export const EXTERNAL_HOST_ALLOW_LIST: readonly string[] = ['github.com', 'tresor.app', 'www.tresor.app']

/**
 * True when `raw` may be handed to `shell.openExternal`: an https URL without credentials, on the
 * default port, whose host is exactly an allow-listed host. `file:`, `smb:`, `javascript:`, custom
 * schemes, IP literals, look-alike hosts (IDN/punycode, `github.com.evil.example`, `evil.example#github.com`)
 * are refused.
 */
export function isAllowedExternalUrl(raw: unknown, allowList: readonly string[] = EXTERNAL_HOST_ALLOW_LIST): boolean {
  if (typeof raw !== 'string' || raw.length === 0 || raw.length > 2048) return false
  // Control characters, whitespace and backslashes are never part of a URL we open.
  if (/[\u0000-\u0020\u007f-\u009f\\]/.test(raw)) return false
  let url: URL
  try {
    url = new URL(raw)
  } catch {
    return false
  }
  if (url.protocol !== 'https:') return false
  if (url.username !== '' || url.password !== '') return false
  if (url.port !== '') return false
  // The WHATWG parser lower-cases and punycodes the host: an IDN look-alike becomes xn--… and fails.
  return allowList.includes(url.hostname)
}

/**
 * True when an IPC call comes from our own page: the sending frame is the top frame of the window
 * (not an iframe, not about:blank) and its URL is on the app origin (or the dev-server origin in
 * development).
 */
export function isTrustedSender(frame: { url: string; isMainFrame: boolean } | null | undefined, devOrigin?: string): boolean {
  if (!frame || !frame.isMainFrame) return false
  let url: URL
  try {
    url = new URL(frame.url)
  } catch {
    return false
  }
  if (`${url.protocol}//${url.host}` === APP_ORIGIN) return true
  return devOrigin !== undefined && url.origin === devOrigin
}

/** True when a navigation target stays on our page (hash-route changes only). */
export function isSameAppPage(target: string): boolean {
  try {
    const url = new URL(target)
    return `${url.protocol}//${url.host}` === APP_ORIGIN && url.pathname === '/index.html'
  } catch {
    return false
  }
}

/** The CSP the app:// protocol sends with the page (the page carries the same policy in a meta tag). */
export const APP_CONTENT_SECURITY_POLICY = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self' data:",
  "font-src 'self' data:",
  "connect-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-src 'none'",
  "frame-ancestors 'none'",
].join('; ')
