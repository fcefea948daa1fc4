#!/usr/bin/env node
// Builds everything the app and the CLI run from:
//  - node side (engine, shared, cli, server, main) with tsc, file per module, into dist/electron
//    (worker_threads and child-process entry files must exist as real files in Node and Electron);
//  - renderer and preload with Vite (vite.renderer.config.ts → dist/renderer,
//    vite.preload.config.ts → dist/electron/preload/index.cjs; a sandboxed preload must be CommonJS).
import { spawnSync } from 'node:child_process'
import { existsSync, rmSync, writeFileSync } from 'node:fs'
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
for (const config of ['vite.renderer.config.ts', 'vite.preload.config.ts']) {
  if (existsSync(join(root, config))) run(bin('vite'), ['build', '--logLevel', 'warn', '-c', config])
}
// Stamp: scripts/test-all.sh skips a rebuild when no source is newer than this file.
writeFileSync(join(root, 'dist', '.build-stamp'), new Date().toISOString() + '\n')
