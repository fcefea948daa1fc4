import type { WireResult } from '../../../electron/shared/errors.js'
import type { AppEventName } from '../../../electron/shared/ipc.js'
import type { ConnectionState, Transport } from '../../../renderer/src/api/transport.js'

/** A scripted transport: answers by method, records calls, lets tests push events. */
export class FakeTransport implements Transport {
  readonly kind = 'web' as const
  calls: { method: string; input: unknown }[] = []
  private listeners = new Map<string, Set<(p: unknown) => void>>()
  constructor(private readonly answers: Record<string, (input: unknown) => WireResult<unknown>>) {}
  async call(method: string, input: unknown): Promise<WireResult<unknown>> {
    this.calls.push({ method, input })
    const answer = this.answers[method]
    if (!answer) return { ok: false, error: { code: 'UNSUPPORTED', message: `${method} is not scripted` } }
    return answer(input)
  }
  on(event: AppEventName, listener: (payload: unknown) => void): () => void {
    let set = this.listeners.get(event)
    if (!set) this.listeners.set(event, (set = new Set()))
    set.add(listener)
    return () => set.delete(listener)
  }
  push(event: AppEventName, payload: unknown): void {
    for (const l of this.listeners.get(event) ?? []) l(payload)
  }
  listenerCount(): number {
    return [...this.listeners.values()].reduce((n, s) => n + s.size, 0)
  }
  onState(listener: (s: ConnectionState) => void): () => void {
    listener('connected')
    return () => {}
  }
  close(): void {}
}
