#!/usr/bin/env -S -u NODE_EXTRA_CA_CERTS TRESOR_EXTRA_CA_CERTS=${NODE_EXTRA_CA_CERTS} MALLOC_ARENA_MAX=2 node --max-semi-space-size=4
// The `tresor` command. Runs the CLI's bundle from dist/cli (built by `npm ci` via the prepare
// script, scripts/build.mjs); in a source checkout without a build it falls back to the TypeScript
// sources through tsx (also with TRESOR_FROM_SOURCE set).
//
// CommonJS (bin/package.json): libuv sizes its thread pool (reads and writes of packs and images)
// on the pool's first use, and loading an ES module entry already uses it, so only a CommonJS
// entry can still choose the size. 8 threads, not node's 4: IO_THREADS in
// electron/engine/workers/supervisor.ts says why.
//
// The first line gives node the V8 options every job process gets (JOB_NODE_FLAGS in
// electron/engine/workers/supervisor.ts), and glibc the malloc arenas a job gets (MALLOC_ARENAS
// there): a heap is sized and malloc set up when the process starts, so only the command line can.
// `node bin/tresor.js` runs without them; the installed `tresor` command, and the benchmarks, run
// this file itself.
//
// It also sets NODE_EXTRA_CA_CERTS aside, so node does not parse those certificates at start (~55 ms
// for Debian's bundle; Tresor has no TLS client), and puts it back here, first thing, so the
// programs the command starts see it (electron/engine/workers/caCerts.ts, SAVED_CA_CERTS).
'use strict'
{
  const saved = process.env.TRESOR_EXTRA_CA_CERTS
  delete process.env.TRESOR_EXTRA_CA_CERTS
  if (saved) process.env.NODE_EXTRA_CA_CERTS = saved
}
process.env.UV_THREADPOOL_SIZE ??= '8'

const { existsSync } = require('node:fs')
const { join } = require('node:path')
const { pathToFileURL } = require('node:url')

const root = join(__dirname, '..')
const built = join(root, 'dist', 'cli', 'main.js')
if (existsSync(built) && !process.env.TRESOR_FROM_SOURCE) {
  void import(pathToFileURL(built).href)
} else {
  void import('tsx/esm/api').then(({ register }) => {
    register()
    return import(pathToFileURL(join(root, 'electron', 'cli', 'main.ts')).href)
  })
}
