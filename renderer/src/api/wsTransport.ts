import type { WireResult } from '../../../electron/shared/errors.js'
import type { AppEventName, WsServerFrame } from '../../../electron/shared/ipc.js'
import type { ConnectionState, Transport } from './transport.js'

const TOKEN_KEY = 'tresor.token'

/**
 * The per-launch token: from the page URL (`?token=`, printed by `tresor serve`), remembered for this
 * tab in sessionStorage and then removed from the address bar so it does not end up in bookmarks,
 * screenshots or history.
 */
export function takeToken(loc: Location = window.location, storage: Storage = window.sessionStorage): string | null {
  const params = new URLSearchParams(loc.search)
  const fromUrl = params.get('token')
  if (fromUrl) {
    storage.setItem(TOKEN_KEY, fromUrl)
    params.delete('token')
    const query = params.toString()
    window.history.replaceState(window.history.state, '', `${loc.pathname}${query ? `?${query}` : ''}${loc.hash}`)
    return fromUrl
  }
  return storage.getItem(TOKEN_KEY)
}

interface Pending {
  resolve(result: WireResult<unknown>): void
}

/**
 * The web host: one WebSocket to `/ws?token=…` on the page's own host. Calls made while connecting
 * wait; a lost connection fails pending calls with DISCONNECTED and reconnects with back-off.
 */
export function webSocketTransport(options: {
  url: string
  WebSocketImpl?: typeof WebSocket
  reconnectMs?: number
  /** Asks the host whether the token is valid (false = refused at once; undefined = cannot tell). */
  checkToken?: () => Promise<boolean | undefined>
}): Transport {
  const WS = options.WebSocketImpl ?? WebSocket
  let socket: WebSocket | undefined
  let state: ConnectionState = 'connecting'
  let nextId = 1
  let closed = false
  let failures = 0
  let everConnected = false
  const pending = new Map<number, Pending>()
  const waiting: string[] = []
  const listeners = new Map<string, Set<(payload: unknown) => void>>()
  const stateListeners = new Set<(s: ConnectionState) => void>()

  function setState(s: ConnectionState): void {
    state = s
    for (const l of stateListeners) l(s)
  }

  function failPending(): void {
    for (const [id, p] of pending) {
      pending.delete(id)
      p.resolve({ ok: false, error: { code: 'DISCONNECTED', message: 'The connection to Tresor was lost. Check that "tresor serve" is still running, then try again.' } })
    }
  }

  function connect(): void {
    if (closed) return
    setState('connecting')
    const ws = new WS(options.url)
    socket = ws
    let helloSeen = false
    ws.onmessage = (ev: MessageEvent) => {
      let frame: WsServerFrame
      try {
        frame = JSON.parse(String(ev.data)) as WsServerFrame
      } catch {
        return
      }
      if (frame.t === 'hello') {
        helloSeen = true
        everConnected = true
        failures = 0
        setState('connected')
        while (waiting.length > 0) ws.send(waiting.shift()!)
      } else if (frame.t === 'result') {
        const p = pending.get(frame.id)
        if (p) {
          pending.delete(frame.id)
          p.resolve(frame.result)
        }
      } else if (frame.t === 'event') {
        for (const l of listeners.get(frame.event) ?? []) l(frame.payload)
      }
    }
    ws.onclose = () => {
      if (socket !== ws) return
      socket = undefined
      failPending()
      waiting.length = 0
      if (closed) return setState('disconnected')
      failures++
      // Refused at the handshake before ever connecting: a wrong or outdated token, or a foreign origin.
      if (!helloSeen && !everConnected && failures >= 3) return setState('refused')
      setState('disconnected')
      const retry = () => setTimeout(connect, Math.min(10_000, (options.reconnectMs ?? 500) * 2 ** Math.min(failures, 5)))
      if (helloSeen || !options.checkToken) return void retry()
      options.checkToken().then(
        (valid) => (valid === false ? setState('refused') : retry()),
        () => retry(),
      )
    }
  }

  connect()

  return {
    kind: 'web',
    call(method, input) {
      const id = nextId++
      const text = JSON.stringify({ t: 'call', id, method, input })
      return new Promise((resolve) => {
        if (state === 'refused') {
          resolve({ ok: false, error: { code: 'FORBIDDEN', message: 'Tresor refused this page. Open the URL printed by "tresor serve" again.' } })
          return
        }
        pending.set(id, { resolve })
        if (socket && state === 'connected') socket.send(text)
        else waiting.push(text)
      })
    },
    on(event: AppEventName, listener) {
      let set = listeners.get(event)
      if (!set) listeners.set(event, (set = new Set()))
      set.add(listener)
      return () => set.delete(listener)
    },
    onState(listener) {
      stateListeners.add(listener)
      listener(state)
      return () => stateListeners.delete(listener)
    },
    close() {
      closed = true
      socket?.close()
    },
  }
}
