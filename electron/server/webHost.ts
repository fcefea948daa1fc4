/**
 * The web host: an HTTP server on 127.0.0.1 that serves the built renderer and speaks the IPC
 * contract over a WebSocket at `/ws`. The same renderer code runs here and in Electron.
 *
 * Security: binds 127.0.0.1 only; the WebSocket requires the per-launch token (`?token=`), an
 * Origin equal to the server's own origin and a Host naming 127.0.0.1/localhost; every input is
 * validated with the contract's zod schemas (`dispatch`); frames are capped at WS_MAX_FRAME_BYTES.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Duplex } from 'node:stream'
import { realpath, readFile, stat } from 'node:fs/promises'
import { extname, join, resolve, sep } from 'node:path'
import { WebSocketServer, WebSocket } from 'ws'
import { dispatch, WS_MAX_FRAME_BYTES, WsCallFrame, type AppApi, type AppEventName, type AppEvents, type WsServerFrame } from '../shared/ipc.js'
import { toWireError } from '../engine/errors.js'
import { contentSecurityPolicy, hostAllowed, newToken, originAllowed, tokenMatches } from './security.js'

export interface WebHostOptions {
  api: AppApi
  /** Folder of the built renderer (index.html + assets). */
  rendererDir: string
  /** 0 or undefined: a random free port. */
  port?: number
  /** Fixed token (tests); default: a fresh random one. */
  token?: string
  version: string
  /** Called with every refused request (for the log). */
  onRefused?: (reason: string) => void
}

export interface WebHost {
  /** The URL to open, token included: http://127.0.0.1:<port>/?token=<token> */
  readonly url: string
  readonly port: number
  readonly token: string
  /** Pushes an event to every connected page. */
  emit<E extends AppEventName>(event: E, payload: AppEvents[E]): void
  /** Number of open WebSocket connections. */
  connections(): number
  close(): Promise<void>
}

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
  '.ico': 'image/x-icon',
  '.woff': 'font/woff',
  '.woff2': 'font/woff2',
  '.txt': 'text/plain; charset=utf-8',
}

export async function startWebHost(options: WebHostOptions): Promise<WebHost> {
  const token = options.token ?? newToken()
  const rendererRoot = resolve(options.rendererDir)
  let port = 0
  const refuse = (reason: string) => options.onRefused?.(reason)

  function securityHeaders(res: ServerResponse): void {
    res.setHeader('Content-Security-Policy', contentSecurityPolicy(port))
    res.setHeader('X-Content-Type-Options', 'nosniff')
    res.setHeader('X-Frame-Options', 'DENY')
    // The token travels in the page URL: never leak it in a Referer.
    res.setHeader('Referrer-Policy', 'no-referrer')
    res.setHeader('Cross-Origin-Opener-Policy', 'same-origin')
    res.setHeader('Cross-Origin-Resource-Policy', 'same-origin')
    res.setHeader('Permissions-Policy', 'camera=(), microphone=(), geolocation=(), usb=(), serial=(), hid=()')
  }

  function sendText(res: ServerResponse, status: number, body: string): void {
    securityHeaders(res)
    res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', 'Cache-Control': 'no-store' })
    res.end(body)
  }

  async function serveStatic(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (!hostAllowed(req.headers.host, port)) {
      refuse(`http host ${String(req.headers.host)}`)
      return sendText(res, 421, 'Misdirected request: open Tresor at http://127.0.0.1:' + port + '/')
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') return sendText(res, 405, 'Method not allowed')
    let pathname: string
    try {
      pathname = decodeURIComponent(new URL(req.url ?? '/', 'http://127.0.0.1').pathname)
    } catch {
      return sendText(res, 400, 'Bad request')
    }
    if (pathname.includes('\0')) return sendText(res, 400, 'Bad request')
    if (pathname === '/session') {
      // Lets the page tell "wrong token" (401, shown at once) from "host not running" (no answer).
      const presented = new URL(req.url ?? '/', 'http://127.0.0.1').searchParams.get('token')
      if (tokenMatches(token, presented)) return sendText(res, 204, '')
      refuse('session token')
      return sendText(res, 401, 'This link is not valid (any more). Open the URL printed by "tresor serve".')
    }
    if (pathname === '/' || pathname === '') pathname = '/index.html'
    const candidate = resolve(rendererRoot, '.' + pathname)
    if (candidate !== rendererRoot && !candidate.startsWith(rendererRoot + sep)) return sendText(res, 404, 'Not found')
    let file: string
    try {
      file = await realpath(candidate)
      const root = await realpath(rendererRoot)
      if (!file.startsWith(root + sep)) return sendText(res, 404, 'Not found')
      if (!(await stat(file)).isFile()) return sendText(res, 404, 'Not found')
    } catch {
      if (pathname === '/index.html') {
        return sendText(res, 503, `The renderer is not built (${join(rendererRoot, 'index.html')} is missing). Run "npm run build" and start again.`)
      }
      return sendText(res, 404, 'Not found')
    }
    const body = await readFile(file)
    securityHeaders(res)
    const isHtml = extname(file) === '.html'
    res.writeHead(200, {
      'Content-Type': CONTENT_TYPES[extname(file)] ?? 'application/octet-stream',
      'Content-Length': body.length,
      'Cache-Control': isHtml ? 'no-store' : 'public, max-age=3600',
    })
    res.end(req.method === 'HEAD' ? undefined : body)
  }

  const server = createServer((req, res) => {
    serveStatic(req, res).catch(() => {
      if (!res.headersSent) sendText(res, 500, 'Internal error')
      else res.destroy()
    })
  })

  const wss = new WebSocketServer({ noServer: true, maxPayload: WS_MAX_FRAME_BYTES, perMessageDeflate: false })

  function reject(socket: Duplex, status: number, text: string, reason: string): void {
    refuse(reason)
    socket.write(`HTTP/1.1 ${status} ${text}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`)
    socket.destroy()
  }

  server.on('upgrade', (req, socket, head) => {
    let url: URL
    try {
      url = new URL(req.url ?? '/', 'http://127.0.0.1')
    } catch {
      return reject(socket, 400, 'Bad Request', 'bad upgrade url')
    }
    if (url.pathname !== '/ws') return reject(socket, 404, 'Not Found', `upgrade path ${url.pathname}`)
    if (!hostAllowed(req.headers.host, port)) return reject(socket, 403, 'Forbidden', `ws host ${String(req.headers.host)}`)
    if (!originAllowed(req.headers.origin, port)) return reject(socket, 403, 'Forbidden', `ws origin ${String(req.headers.origin)}`)
    if (!tokenMatches(token, url.searchParams.get('token'))) return reject(socket, 401, 'Unauthorized', 'ws token')
    wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req))
  })

  function send(ws: WebSocket, frame: WsServerFrame): void {
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(frame))
  }

  wss.on('connection', (ws: WebSocket) => {
    send(ws, { t: 'hello', host: 'web', version: options.version })
    ws.on('message', (data, isBinary) => {
      if (isBinary) return send(ws, { t: 'error', error: { code: 'INVALID_INPUT', message: 'Binary frames are not accepted.' } })
      let raw: unknown
      try {
        raw = JSON.parse(data.toString())
      } catch {
        return send(ws, { t: 'error', error: { code: 'INVALID_INPUT', message: 'A frame is not valid JSON.' } })
      }
      const frame = WsCallFrame.safeParse(raw)
      if (!frame.success) {
        const id = (raw as { id?: unknown } | null)?.id
        const error = { code: 'INVALID_INPUT' as const, message: 'A frame does not follow the protocol ({t:"call", id, method, input}).' }
        return typeof id === 'number' && Number.isSafeInteger(id) && id >= 0 ? send(ws, { t: 'result', id, result: { ok: false, error } }) : send(ws, { t: 'error', error })
      }
      const { id, method, input } = frame.data
      dispatch(options.api, method, input, toWireError)
        .then((result) => send(ws, { t: 'result', id, result }))
        .catch((err: unknown) => send(ws, { t: 'result', id, result: { ok: false, error: toWireError(err) } }))
    })
    ws.on('error', () => ws.terminate())
  })

  await new Promise<void>((resolvePromise, rejectPromise) => {
    server.once('error', rejectPromise)
    server.listen({ host: '127.0.0.1', port: options.port ?? 0, exclusive: true }, () => {
      server.off('error', rejectPromise)
      resolvePromise()
    })
  })
  port = (server.address() as AddressInfo).port

  return {
    url: `http://127.0.0.1:${port}/?token=${token}`,
    port,
    token,
    emit(event, payload) {
      const text = JSON.stringify({ t: 'event', event, payload } satisfies WsServerFrame)
      for (const client of wss.clients) if (client.readyState === WebSocket.OPEN) client.send(text)
    },
    connections: () => wss.clients.size,
    async close() {
      for (const client of wss.clients) client.terminate()
      await new Promise<void>((r) => wss.close(() => r()))
      server.closeAllConnections()
      await new Promise<void>((r) => server.close(() => r()))
    },
  }
}
