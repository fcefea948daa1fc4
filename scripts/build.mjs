#!/usr/bin/env node
// Builds everything the app and the CLI run from:
//  - node side (engine, shared, cli, server, main) with tsc, file per module, into dist/electron
//    (worker_threads and child-process entry files must exist as real files in Node and Electron);
//  - the CLI bundled with esbuild from that output into dist/cli (see bundleCli below);
//  - renderer and preload with Vite (vite.renderer.config.ts → dist/renderer,
//    vite.preload.config.ts → dist/electron/preload/index.cjs; a sandboxed preload must be CommonJS).
import { spawnSync } from 'node:child_process'
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const bin = (name) => join(root, 'node_modules', '.bin', name)

function run(cmd, args) {
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit' })
  if (r.status !== 0) {
    console.error(`build: "${[cmd, ...args].join(' ')}" failed`)
    process.exit(r.status ?? 1)
  }
}

rmSync(join(root, 'dist'), { recursive: true, force: true })
run(bin('tsc'), ['-p', 'tsconfig.build.json'])
await bundleCli()
for (const config of ['vite.renderer.config.ts', 'vite.preload.config.ts']) {
  if (existsSync(join(root, config))) run(bin('vite'), ['build', '--logLevel', 'warn', '-c', config])
}
/**
 * The `tresor` command's bundle (bin/tresor.js runs dist/cli/main.js). A command loads ~200 ES
 * modules file per file, and compiling and linking them is most of its first half second on one
 * core (PERFORMANCE.md, eighteenth and nineteenth rounds). The bundle has three entry points: the
 * CLI, the chunk worker and the job process entry (`tresor serve` forks it), with their shared
 * code split into chunks beside them. All files lie in one folder, because chunkWorkers.ts and
 * supervisor.ts find `./chunkWorker.js` and `./jobEntry.js` next to their own module. Packages
 * stay external (native addons are loaded by `require` from node_modules) except zod and croner,
 * pure ES modules our own modules import (zod's ~95 files were a fifth of a command's module
 * loading); commander is CommonJS, and bundled into an ES module it would need a `require` shim.
 * Of zod's locales only English is bundled (`zodEnglishOnly`).
 */
async function bundleCli() {
  const require = createRequire(import.meta.url)
  const esbuild = require('esbuild')
  const from = join(root, 'dist', 'electron')
  const inline = new Set(['zod', 'croner'])
  const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8'))
  const external = Object.keys({ ...pkg.dependencies, ...pkg.devDependencies })
    .filter((name) => !inline.has(name))
    .flatMap((name) => [name, `${name}/*`])
  await esbuild.build({
    entryPoints: {
      main: join(from, 'cli', 'main.js'),
      chunkWorker: join(from, 'engine', 'vault', 'chunkWorker.js'),
      jobEntry: join(from, 'engine', 'workers', 'jobEntry.js'),
    },
    outdir: join(root, 'dist', 'cli'),
    bundle: true,
    splitting: true,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    chunkNames: 'shared-[hash]',
    logLevel: 'warning',
    external,
    plugins: [zodEnglishOnly()],
  })
}

/**
 * zod's `z` namespace re-exports all of its 64 locales (`z.locales`), so bundling `z` bundled them
 * all: ~400 KB of the CLI's ~1.6 MB, compiled by every command on its critical path (~20 ms), and
 * never used (error messages are English: zod configures `en` itself, and no module of ours names a
 * locale). Its locales index resolves here to a module exporting `en` alone. The renderer's Vite
 * bundle is not affected.
 */
function zodEnglishOnly() {
  return {
    name: 'zod-english-only',
    setup(build) {
      build.onResolve({ filter: /^\.\.\/locales\/index\.js$/ }, (args) =>
        /[\\/]node_modules[\\/]zod[\\/]/.test(args.importer) ? { path: join(args.resolveDir, '..', 'locales', 'index.js'), namespace: 'zod-locales' } : undefined,
      )
      build.onLoad({ filter: /.*/, namespace: 'zod-locales' }, (args) => ({
        contents: 'export { default as en } from "./en.js"\n',
        resolveDir: dirname(args.path),
        loader: 'js',
      }))
    },
  }
}

// Stamp: scripts/test-all.sh skips a rebuild when no source is newer than this file.
writeFileSync(join(root, 'dist', '.build-stamp'), new Date().toISOString() + '\n')
