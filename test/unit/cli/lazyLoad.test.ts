// Start-up cost: each command loads only the modules it needs. A loader hook in the CLI child
// reports every module it loads; --help must not load the engine, a catalog-only command must not
// load the vault, the formats or the job machinery.
import { describe, expect, it } from 'vitest'
import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const root = join(import.meta.dirname, '..', '..', '..')
// The hooks run on their own thread; an asynchronous stderr write from there can be lost when the
// CLI exits right after its output, so each line is written synchronously to fd 2.
const hooks = `import { writeSync } from 'node:fs'
export async function load(url, context, next) {
  const r = await next(url, context)
  writeSync(2, 'LOADED ' + url + '\\n')
  return r
}`
const register = `import { register } from 'node:module'
register('data:text/javascript,' + encodeURIComponent(${JSON.stringify(hooks)}))`

function loadedBy(args: string[]): { status: number | null; stdout: string; loaded: string[] } {
  const home = mkdtempSync(join(tmpdir(), 'tresor-lazy-'))
  try {
    const r = spawnSync(
      process.execPath,
      ['--import', 'data:text/javascript,' + encodeURIComponent(register), '--import', 'tsx', join(root, 'electron', 'cli', 'main.ts'), '--home', home, ...args],
      { encoding: 'utf8', cwd: root, env: { ...process.env, TRESOR_HOME: undefined, NODE_OPTIONS: undefined } },
    )
    const loaded = r.stderr.split('\n').filter((l) => l.startsWith('LOADED ')).map((l) => l.slice('LOADED '.length))
    if (loaded.length === 0) throw new Error(`the loader hook reported nothing: ${r.stderr}`)
    return { status: r.status, stdout: r.stdout, loaded }
  } finally {
    rmSync(home, { recursive: true, force: true })
  }
}

const HEAVY_PACKAGES = ['better-sqlite3', 'zod', 'croner', 'fast-xml-parser', 'zstd-napi', '@napi-rs/blake-hash', 'hash-wasm', 'xxhash-addon', 'keytar', 'ws']

function packagesIn(loaded: string[]): Set<string> {
  const out = new Set<string>()
  for (const url of loaded) {
    const m = /\/node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url)
    if (m) out.add(m[1]!)
  }
  return out
}

function engineModules(loaded: string[]): string[] {
  return loaded.filter((u) => u.includes('/electron/engine/') || u.includes('/electron/shared/')).map((u) => u.replace(/.*\/electron\//, ''))
}

describe('tresor start-up loads only what the command needs', () => {
  it('--help loads commander and no engine module with a dependency', () => {
    const r = loadedBy(['--help'])
    expect(r.status).toBe(0)
    expect(r.stdout).toContain('Usage: tresor')
    const packages = packagesIn(r.loaded)
    expect(packages.has('commander')).toBe(true) // the hook sees packages
    for (const heavy of HEAVY_PACKAGES) expect(packages, heavy).not.toContain(heavy)
    // Only dependency-free modules (errors, format names) are loaded at registration time.
    expect(engineModules(r.loaded).sort()).toEqual(['engine/errors.ts', 'engine/formats/types.ts', 'shared/errors.ts'])
  })

  it('a catalog-only command (jobs) loads sqlite but not the vault, formats, zod or the job runner', () => {
    const r = loadedBy(['--json', 'jobs'])
    expect(r.status).toBe(0)
    expect(JSON.parse(r.stdout)).toEqual([])
    const packages = packagesIn(r.loaded)
    expect(packages).toContain('better-sqlite3')
    for (const heavy of HEAVY_PACKAGES.filter((p) => p !== 'better-sqlite3')) expect(packages, heavy).not.toContain(heavy)
    const engine = engineModules(r.loaded)
    expect(engine).toContain('engine/workers/jobStore.ts')
    for (const m of engine) expect(m).not.toMatch(/^engine\/(vault|formats\/(?!types)|keys|backup|restore)|supervisor|jobEntry/)
  })
})
