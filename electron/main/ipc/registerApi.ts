import { ipcMain, type IpcMainInvokeEvent, type WebContents } from 'electron'
import { API_METHOD_NAMES, EVENT_CHANNEL, dispatch, methodChannel, type AppApi, type AppEventName, type AppEvents } from '../../shared/ipc.js'
import type { WireResult } from '../../shared/errors.js'
import { toWireError } from '../../engine/errors.js'

export interface Disposable {
  dispose(): void
}

/**
 * Registers one `ipcMain.handle` per contract method. Every call is checked in this order: sender
 * trusted (top frame of our page), method known, input valid (zod); only then does `impl` run.
 * Failures are returned as values (`WireResult`): a thrown error would reach the page as a bare string.
 */
export function registerApi(impl: AppApi, isTrusted: (e: IpcMainInvokeEvent) => boolean): Disposable {
  for (const name of API_METHOD_NAMES) {
    ipcMain.handle(methodChannel(name), async (event, input: unknown): Promise<WireResult<unknown>> => {
      if (!isTrusted(event)) return { ok: false, error: { code: 'FORBIDDEN', message: 'Not allowed.' } }
      return dispatch(impl, name, input, toWireError)
    })
  }
  return { dispose: () => API_METHOD_NAMES.forEach((n) => ipcMain.removeHandler(methodChannel(n))) }
}

/** Sends an event to the given windows' pages (those still alive). */
export function sendEvent<E extends AppEventName>(targets: Iterable<WebContents>, event: E, payload: AppEvents[E]): void {
  for (const wc of targets) {
    if (!wc.isDestroyed()) wc.send(EVENT_CHANNEL, { event, payload })
  }
}
