import { app } from 'electron'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url)) // dist/electron/main

/** The package root in development (dist/electron/main → ../../..). */
export function appRoot(): string {
  return join(here, '..', '..', '..')
}

/** dist/renderer: inside app.asar when packaged, beside dist/electron otherwise. */
export function rendererDir(): string {
  return join(appRoot(), 'dist', 'renderer')
}

/** The bundled (CommonJS) preload: sandboxed preloads cannot be ES modules. */
export function preloadPath(): string {
  return join(here, '..', 'preload', 'index.cjs')
}

/** Icons: resources/ in development, process.resourcesPath/resources when packaged (extraResources). */
export function resourcePath(name: string): string {
  return app.isPackaged ? join(process.resourcesPath, 'resources', name) : join(appRoot(), 'resources', name)
}
