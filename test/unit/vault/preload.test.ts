// A chunk worker loads its native modules while it waits for its first task
// (chunkHandler.ts `preloadChunkModules`): importing the handler loads none of them, the preload
// loads each. Run in a child process, whose module cache nothing else has filled.
import { describe, expect, it } from 'vitest'
import { spawnSync } from 'node:child_process'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'

const root = join(import.meta.dirname, '..', '..', '..')
const handler = pathToFileURL(join(root, 'electron', 'engine', 'vault', 'chunkHandler.ts')).href
const PACKAGES = ['@napi-rs/blake-hash', '@node-rs/xxhash', 'xxhash-addon']

const script = `
import { createRequire } from 'node:module'
const packages = ${JSON.stringify(PACKAGES)}
const cache = createRequire(import.meta.url).cache
const loaded = () => packages.filter((p) => Object.keys(cache).some((file) => file.includes('/node_modules/' + p + '/')))
const { preloadChunkModules } = await import(${JSON.stringify(handler)})
const before = loaded()
preloadChunkModules()
console.log(JSON.stringify({ before, after: loaded() }))
`

describe('chunk worker preload', () => {
  it('loads the BLAKE3, XXH3-64 and XXH3-128 bindings, none of which importing the handler loads', () => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
      encoding: 'utf8',
      cwd: root,
      env: { ...process.env, NODE_OPTIONS: undefined },
    })
    expect(r.stderr).toBe('')
    expect(r.status).toBe(0)
    expect(JSON.parse(r.stdout.trim())).toEqual({ before: [], after: PACKAGES })
  })
})
