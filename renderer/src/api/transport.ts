import type { WireResult } from '../../../electron/shared/errors.js'
import type { AppEventName, TresorBridge } from '../../../electron/shared/ipc.js'

export type ConnectionState = 'connecting' | 'connected' | 'disconnected' | 'refused'

/** How the API client reaches the host: Electron's preload bridge or the web host's WebSocket. */
export interface Transport {
  readonly kind: 'electron' | 'web'
  call(method: string, input: unknown): Promise<WireResult<unknown>>
  on(event: AppEventName, listener: (payload: unknown) => void): () => void
  /** Reports connection changes (Electron is always connected); returns an unsubscribe. */
  onState(listener: (state: ConnectionState) => void): () => void
  close(): void
}

/** Electron: forwards to `window.tresor`, which preload exposes. */
export function bridgeTransport(bridge: TresorBridge): Transport {
  return {
    kind: 'electron',
    call(method, input) {
      const fn = (bridge.call as unknown as Record<string, ((input: unknown) => Promise<WireResult<unknown>>) | undefined>)[method]
      if (!fn) return Promise.resolve({ ok: false, error: { code: 'INVALID_INPUT', message: 'Unknown method.' } })
      return fn(input)
    },
    on(event, listener) {
      return bridge.on(event, listener as never)
    },
    onState(listener) {
      listener('connected')
      return () => {}
    },
    close() {},
  }
}
