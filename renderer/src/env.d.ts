/// <reference types="vite/client" />
import type { TresorBridge } from '../../electron/shared/ipc.js'

declare global {
  interface Window {
    /** Exposed by preload in Electron; absent in a browser (the web host is used instead). */
    tresor?: TresorBridge
  }
}

declare module '*.vue' {
  import type { DefineComponent } from 'vue'
  const component: DefineComponent<object, object, unknown>
  export default component
}

export {}
