/**
 * `tresor serve`: the web host. Opens the catalog of `home`, creates the app service and serves the
 * renderer plus the contract over a WebSocket on 127.0.0.1 (see webHost.ts for the security rules).
 */
import { existsSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { openCatalog } from '../engine/catalog/index.js'
import { createAppService, type EngineWiring } from '../engine/app/index.js'
import { createEngineWiring } from '../engine/app/engineWiring.js'
import { ChildProcessLauncher } from '../engine/workers/supervisor.js'
import { startWebHost, type WebHost } from './webHost.js'

export { startWebHost, type WebHost, type WebHostOptions } from './webHost.js'

/** The repository / package root (the folder holding Tresor's package.json), from this module's place. */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url))
  for (let i = 0; i < 6; i++) {
    const pkg = join(dir, 'package.json')
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'tresor') return dir
      } catch {
        // not ours; keep walking up
      }
    }
    dir = dirname(dir)
  }
  throw new Error('Cannot find the Tresor package root from ' + fileURLToPath(import.meta.url))
}

export function packageVersion(): string {
  return (JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string }).version
}

/** dist/renderer of the package, or TRESOR_RENDERER_DIR. */
export function defaultRendererDir(): string {
  return process.env.TRESOR_RENDERER_DIR ?? join(packageRoot(), 'dist', 'renderer')
}

export interface ServeOptions {
  home: string
  port?: number
  rendererDir?: string
  /** Replaces the engine wiring (tests); default: the real engine, jobs in child processes. */
  engine?: EngineWiring
  onRefused?: (reason: string) => void
}

export interface RunningApp {
  host: WebHost
  close(): Promise<void>
}

/** Opens the catalog and starts the web host. The caller calls `close()` (closes host, service, catalog). */
export async function serveApp(options: ServeOptions): Promise<RunningApp> {
  const catalog = openCatalog(options.home)
  let host: WebHost | undefined
  const version = packageVersion()
  const emit: Parameters<typeof createAppService>[0]['emit'] = (event, payload) => host?.emit(event, payload)
  const wired = options.engine ? undefined : createEngineWiring({ home: options.home, catalog, launcher: new ChildProcessLauncher(), emit })
  const service = createAppService({
    host: { kind: 'web', home: options.home, version, hasTray: false },
    catalog,
    engine: options.engine ?? wired!.engine,
    emit,
  })
  try {
    host = await startWebHost({
      api: service,
      rendererDir: options.rendererDir ?? defaultRendererDir(),
      ...(options.port !== undefined ? { port: options.port } : {}),
      version,
      ...(options.onRefused ? { onRefused: options.onRefused } : {}),
    })
  } catch (err) {
    service.dispose()
    await wired?.dispose()
    catalog.close()
    throw err
  }
  const running = host
  return {
    host: running,
    async close() {
      await running.close()
      service.dispose()
      await wired?.dispose()
      catalog.close()
    },
  }
}
