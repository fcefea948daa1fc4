import type { Command } from 'commander'
import type { CliContext } from '../context.js'
import { usage } from '../context.js'
import { EngineError } from '../../engine/errors.js'

/**
 * `tresor serve [--port n]`: the web host on 127.0.0.1. The first stdout line is the URL to open
 * (token included); it runs until SIGINT/SIGTERM. With --json the first line is {"url": ...}.
 */
export function registerServeCommand(program: Command, ctx: CliContext): void {
  program
    .command('serve')
    .description('manage Tresor from a browser: serve the app on 127.0.0.1 and print the URL to open')
    .option('--port <n>', 'port to listen on (default: a random free port)')
    .action(async (opts: { port?: string }) => {
      let port: number | undefined
      if (opts.port !== undefined) {
        port = Number(opts.port)
        if (!/^\d+$/.test(opts.port) || port < 1 || port > 65535) usage(`--port must be a number from 1 to 65535, not "${opts.port}"`)
      }
      const { serveApp } = await import('../../server/index.js')
      let app
      try {
        app = await serveApp({
          home: ctx.home(),
          ...(port !== undefined ? { port } : {}),
          onRefused: (reason) => {
            if (process.env.TRESOR_DEBUG) process.stderr.write(`tresor serve: refused ${reason}\n`)
          },
        })
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') {
          throw new EngineError('ALREADY_EXISTS', `Port ${port} is already in use. Choose another with --port, or omit it for a random port.`, { cause: err })
        }
        throw err
      }
      process.stdout.write(ctx.json() ? JSON.stringify({ url: app.host.url }) + '\n' : app.host.url + '\n')
      if (!ctx.json()) process.stderr.write('Tresor is served on 127.0.0.1 only. Open the URL above; press Ctrl+C to stop.\n')
      await new Promise<void>((resolve) => {
        const stop = () => resolve()
        process.once('SIGINT', stop)
        process.once('SIGTERM', stop)
      })
      await app.close()
    })
}
