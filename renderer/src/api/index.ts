/**
 * The one typed API client of the renderer. `api.<method>(input)` resolves to the method's output or
 * throws `AppError` (code + user message) when the host answers `ok: false`. `onAppEvent` subscribes
 * to host events and returns the unsubscribe. The same code runs in Electron (window.tresor, exposed
 * by preload) and in a browser (WebSocket to `tresor serve`).
 */
import type { ErrorCode, WireError } from '../../../electron/shared/errors.js'
import { API_METHOD_NAMES, type AppClient, type AppEventName, type AppEvents } from '../../../electron/shared/ipc.js'
import { bridgeTransport, type ConnectionState, type Transport } from './transport.js'
import { takeToken, webSocketTransport } from './wsTransport.js'

export type { ConnectionState, Transport } from './transport.js'

export class AppError extends Error {
  override readonly name = 'AppError'
  readonly code: ErrorCode
  constructor(error: WireError) {
    super(error.message)
    this.code = error.code
  }
}

let transport: Transport | undefined

/** The transport in use; created on first use from the environment. */
export function getTransport(): Transport {
  if (!transport) transport = defaultTransport()
  return transport
}

/** Replaces the transport (tests; called before any store uses the API). Returns the previous one. */
export function setTransport(next: Transport | undefined): Transport | undefined {
  const prev = transport
  transport = next
  return prev
}

function defaultTransport(): Transport {
  if (typeof window !== 'undefined' && window.tresor) return bridgeTransport(window.tresor)
  const token = takeToken()
  const scheme = window.location.protocol === 'https:' ? 'wss' : 'ws'
  const query = `token=${encodeURIComponent(token ?? '')}`
  return webSocketTransport({
    url: `${scheme}://${window.location.host}/ws?${query}`,
    async checkToken() {
      const res = await fetch(`/session?${query}`, { cache: 'no-store' })
      return res.status === 401 ? false : res.ok ? true : undefined
    },
  })
}

async function invoke(method: string, input: unknown): Promise<unknown> {
  const result = await getTransport().call(method, input ?? {})
  if (!result.ok) throw new AppError(result.error)
  return result.value
}

export const api: AppClient = Object.fromEntries(API_METHOD_NAMES.map((m) => [m, (input?: unknown) => invoke(m, input)])) as AppClient

export function onAppEvent<E extends AppEventName>(event: E, listener: (payload: AppEvents[E]) => void): () => void {
  return getTransport().on(event, listener as (payload: unknown) => void)
}

export function onConnectionState(listener: (state: ConnectionState) => void): () => void {
  return getTransport().onState(listener)
}

export function errorCodeOf(err: unknown): ErrorCode {
  return err instanceof AppError ? err.code : 'INTERNAL'
}
