import { net, protocol } from 'electron'
import { extname, resolve, sep } from 'node:path'
import { pathToFileURL } from 'node:url'
import { APP_CONTENT_SECURITY_POLICY, APP_HOST, APP_SCHEME } from './security.js'

/** Must run before `app` is ready: app:// behaves like https (standard, secure origin). */
export function registerAppScheme(): void {
  protocol.registerSchemesAsPrivileged([{ scheme: APP_SCHEME, privileges: { standard: true, secure: true, supportFetchAPI: true } }])
}

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.json': 'application/json',
  '.woff2': 'font/woff2',
}

/** Serves `rendererDir` at app://tresor/ with the CSP header; nothing outside it, nothing from other hosts. */
export function serveRenderer(rendererDir: string): void {
  const root = resolve(rendererDir)
  protocol.handle(APP_SCHEME, async (request) => {
    const url = new URL(request.url)
    if (url.host !== APP_HOST) return new Response('Not found', { status: 404 })
    let pathname: string
    try {
      pathname = decodeURIComponent(url.pathname)
    } catch {
      return new Response('Bad request', { status: 400 })
    }
    const file = resolve(root, '.' + (pathname === '/' ? '/index.html' : pathname))
    if (pathname.includes('\0') || !file.startsWith(root + sep)) return new Response('Not found', { status: 404 })
    const upstream = await net.fetch(pathToFileURL(file).toString()).catch(() => undefined)
    if (!upstream || !upstream.ok) return new Response('Not found', { status: 404 })
    return new Response(upstream.body, {
      status: 200,
      headers: {
        'Content-Type': TYPES[extname(file)] ?? 'application/octet-stream',
        'Content-Security-Policy': APP_CONTENT_SECURITY_POLICY,
        'X-Content-Type-Options': 'nosniff',
      },
    })
  })
}
