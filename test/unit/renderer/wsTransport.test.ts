import { describe, expect, it } from 'vitest'
import { webSocketTransport } from '../../../renderer/src/api/wsTransport.js'
import type { ConnectionState } from '../../../renderer/src/api/transport.js'

/** A minimal WebSocket stand-in the test drives by hand. */
class FakeSocket {
  static instances: FakeSocket[] = []
  sent: string[] = []
  onmessage: ((ev: { data: string }) => void) | null = null
  onclose: (() => void) | null = null
  constructor(readonly url: string) {
    FakeSocket.instances.push(this)
  }
  send(text: string): void {
    this.sent.push(text)
  }
  close(): void {
    this.onclose?.()
  }
  serverSends(frame: unknown): void {
    this.onmessage?.({ data: JSON.stringify(frame) })
  }
}

function make(reconnectMs = 1) {
  FakeSocket.instances = []
  const states: ConnectionState[] = []
  const t = webSocketTransport({ url: 'ws://127.0.0.1:1/ws?token=t', WebSocketImpl: FakeSocket as unknown as typeof WebSocket, reconnectMs })
  t.onState((s) => states.push(s))
  return { t, states }
}

describe('WebSocket transport', () => {
  it('queues calls until hello, then matches results by id', async () => {
    const { t, states } = make()
    const ws = FakeSocket.instances[0]!
    const pending = t.call('getSettings', {})
    expect(ws.sent).toEqual([])
    ws.serverSends({ t: 'hello', host: 'web', version: '1' })
    expect(states.at(-1)).toBe('connected')
    const frame = JSON.parse(ws.sent[0]!) as { id: number; method: string }
    expect(frame.method).toBe('getSettings')
    ws.serverSends({ t: 'result', id: frame.id, result: { ok: true, value: 42 } })
    expect(await pending).toEqual({ ok: true, value: 42 })
    t.close()
  })

  it('delivers events to subscribers until they unsubscribe', () => {
    const { t } = make()
    const ws = FakeSocket.instances[0]!
    ws.serverSends({ t: 'hello', host: 'web', version: '1' })
    const got: unknown[] = []
    const stop = t.on('jobsChanged', (p) => got.push(p))
    ws.serverSends({ t: 'event', event: 'jobsChanged', payload: { jobId: 'a' } })
    stop()
    ws.serverSends({ t: 'event', event: 'jobsChanged', payload: { jobId: 'b' } })
    expect(got).toEqual([{ jobId: 'a' }])
    t.close()
  })

  it('fails pending calls with DISCONNECTED when the socket drops, then reconnects', async () => {
    const { t } = make()
    const ws = FakeSocket.instances[0]!
    ws.serverSends({ t: 'hello', host: 'web', version: '1' })
    const pending = t.call('listMachines', {})
    ws.close()
    expect(await pending).toMatchObject({ ok: false, error: { code: 'DISCONNECTED' } })
    await expect.poll(() => FakeSocket.instances.length).toBe(2)
    t.close()
  })

  it('reports "refused" after repeated handshake failures without ever connecting', async () => {
    const { t, states } = make()
    for (let i = 0; i < 3; i++) {
      await expect.poll(() => FakeSocket.instances.length).toBe(i + 1)
      FakeSocket.instances[i]!.close()
    }
    expect(states.at(-1)).toBe('refused')
    expect(await t.call('getSettings', {})).toMatchObject({ ok: false, error: { code: 'FORBIDDEN' } })
    t.close()
  })
})

describe('WebSocket transport token check', () => {
  it('reports "refused" at the first failed handshake when the host says the token is wrong', async () => {
    FakeSocket.instances = []
    const states: ConnectionState[] = []
    const t = webSocketTransport({
      url: 'ws://x/ws?token=bad',
      WebSocketImpl: FakeSocket as unknown as typeof WebSocket,
      reconnectMs: 1,
      checkToken: async () => false,
    })
    t.onState((s) => states.push(s))
    FakeSocket.instances[0]!.close()
    await expect.poll(() => states.at(-1)).toBe('refused')
    expect(FakeSocket.instances).toHaveLength(1)
    t.close()
  })

  it('keeps retrying when the host cannot be asked (not running)', async () => {
    FakeSocket.instances = []
    const t = webSocketTransport({
      url: 'ws://x/ws?token=t',
      WebSocketImpl: FakeSocket as unknown as typeof WebSocket,
      reconnectMs: 1,
      checkToken: async () => {
        throw new Error('connection refused')
      },
    })
    FakeSocket.instances[0]!.close()
    await expect.poll(() => FakeSocket.instances.length).toBe(2)
    t.close()
  })
})
