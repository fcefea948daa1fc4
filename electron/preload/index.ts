/**
 * Preload: exposes exactly the IPC contract to the page as `window.tresor` — `call.<method>(input)`
 * for every method of electron/shared/ipc.ts and `on(event, listener)` returning an unsubscribe.
 * Nothing else: no ipcRenderer, no Electron event objects, no Node. Bundled to CommonJS by
 * vite.preload.config.ts (a sandboxed preload cannot be an ES module).
 */
import { contextBridge, ipcRenderer, type IpcRendererEvent } from 'electron'
import { API_METHOD_NAMES, EVENT_CHANNEL, isAppEventName, methodChannel, type AppEventName } from '../shared/ipc.js'

const call: Record<string, (input?: unknown) => Promise<unknown>> = {}
for (const name of API_METHOD_NAMES) {
  call[name] = (input?: unknown) => ipcRenderer.invoke(methodChannel(name), input)
}

function on(event: AppEventName, listener: (payload: unknown) => void): () => void {
  if (!isAppEventName(event)) throw new TypeError(`Unknown event "${String(event)}".`)
  if (typeof listener !== 'function') throw new TypeError('The listener must be a function.')
  const handler = (_e: IpcRendererEvent, message: { event?: unknown; payload?: unknown }) => {
    if (message && message.event === event) listener(message.payload)
  }
  ipcRenderer.on(EVENT_CHANNEL, handler)
  return () => {
    ipcRenderer.removeListener(EVENT_CHANNEL, handler)
  }
}

contextBridge.exposeInMainWorld('tresor', Object.freeze({ call: Object.freeze(call), on }))
