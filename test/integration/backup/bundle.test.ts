/**
 * The built `tresor` command is the esbuild bundle in dist/cli (scripts/build.mjs): a backup,
 * restore and verify through bin/tresor.js, with chunk workers, load every module of ours from that
 * folder and none from dist/electron or the TypeScript sources. A resolve hook, passed to the
 * command and its worker threads by NODE_OPTIONS, writes down every module URL the command loads.
 * (`tresor serve`'s job processes fork dist/cli/jobEntry.js: the e2e web tests run that path.)
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { execFileSync } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { writeMixedDisk } from '../../bench/lib.js'

const root = resolve(import.meta.dirname, '../../..')
const bundleDir = join(root, 'dist', 'cli')
const MiB = 1024 * 1024
let dir = ''
let log = ''
let hook = ''

function tresor(...args: string[]): string {
  return execFileSync(process.execPath, [join(root, 'bin', 'tresor.js'), '--home', join(dir, 'home'), '--json', ...args], {
    encoding: 'utf8',
    timeout: 120_000,
    env: {
      ...process.env,
      TRESOR_FROM_SOURCE: '',
      TRESOR_KEYCHAIN: 'none',
      TRESOR_PASSPHRASE: 'bundle test passphrase',
      TRESOR_WORKERS: '2',
      NODE_OPTIONS: `--import ${pathToFileURL(hook).href}`,
    },
  })
}

/** Module URLs the commands loaded, without duplicates. */
function loaded(): string[] {
  return [...new Set(readFileSync(log, 'utf8').split('\n').filter(Boolean))]
}

beforeAll(() => {
  for (const entry of ['main.js', 'chunkWorker.js', 'jobEntry.js']) {
    if (!existsSync(join(bundleDir, entry))) throw new Error(`${join(bundleDir, entry)} is missing: run npm run build`)
  }
  dir = mkdtempSync(join(tmpdir(), 'tresor-bundle-'))
  log = join(dir, 'modules.log')
  writeFileSync(log, '')
  const hooks = join(dir, 'hooks.mjs')
  writeFileSync(
    hooks,
    `import { appendFileSync } from 'node:fs'
export async function resolve(specifier, context, next) {
  const result = await next(specifier, context)
  appendFileSync(${JSON.stringify(log)}, result.url + '\\n')
  return result
}
`,
  )
  hook = join(dir, 'hook.mjs')
  writeFileSync(hook, `import { register } from 'node:module'\nregister(${JSON.stringify(pathToFileURL(hooks).href)})\n`)
  writeMixedDisk(join(dir, 'disk.raw'), 24 * MiB, 7)
})

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true })
})

describe('the built CLI bundle', () => {
  it('backs up, restores and verifies a disk byte for byte, loading our code only from dist/cli', () => {
    tresor('vault', 'init', join(dir, 'vault'))
    tresor('machine', 'add', 'vm', join(dir, 'disk.raw'))
    const backup = JSON.parse(tresor('backup', 'vm')) as { pointId: string; bytesNew: number }
    expect(backup.bytesNew).toBeGreaterThan(0)
    const target = join(dir, 'restored')
    tresor('restore', backup.pointId, '--to', target, '--format', 'raw')
    const restored = execFileSync('find', [target, '-type', 'f'], { encoding: 'utf8' }).trim().split('\n')
    expect(restored).toHaveLength(1)
    expect(readFileSync(restored[0]!).equals(readFileSync(join(dir, 'disk.raw')))).toBe(true)
    tresor('verify', '--read-data')

    const bin = pathToFileURL(join(root, 'bin', 'tresor.js')).href
    const ours = loaded().filter((url) => url.startsWith(pathToFileURL(root).href) && !url.includes('/node_modules/'))
    const bundle = pathToFileURL(bundleDir).href + '/'
    expect(ours.filter((url) => url !== bin && !url.startsWith(bundle))).toEqual([])
    expect(ours).toContain(bundle + 'main.js')
    // The chunk workers (started first thing for backup, restore and verify --read-data) too.
    expect(ours).toContain(bundle + 'chunkWorker.js')
  })

  it('holds zod with its English messages only (scripts/build.mjs `zodEnglishOnly`), and they work', () => {
    const code = readdirSync(bundleDir).filter((f) => f.endsWith('.js')).map((f) => readFileSync(join(bundleDir, f), 'utf8')).join('\n')
    const locales = [...code.matchAll(/^\/\/ node_modules\/zod\/v4\/locales\/([\w-]+)\.js$/gm)].map((m) => m[1])
    expect(code).toMatch(/^\/\/ node_modules\/zod\/v4\/core\/schemas\.js$/m) // zod is in the bundle, and marked as esbuild marks it
    expect(locales).toEqual(['en'])
    // a message from zod's English locale, through the built command: a policy it refuses
    const policy = join(dir, 'bad-policy.json')
    writeFileSync(policy, JSON.stringify({ retention: { daily: -1 } }))
    tresor('machine', 'add', 'zod', join(dir, 'disk.raw'))
    // execFileSync's error carries the command's stderr in its message
    expect(() => tresor('machine', 'policy', 'zod', policy)).toThrow('retention.daily: Too small: expected number to be >=0')
  })
})
