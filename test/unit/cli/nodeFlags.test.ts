// The V8 options and malloc arenas a Tresor process starts with (JOB_NODE_FLAGS, MALLOC_ARENAS):
// the `tresor` command gets them from bin/tresor.js's first line (`env -S`), forked job processes
// from their launcher. Both must say the same, and the command must really start node with them
// when it is run as a program. Both also start node without NODE_EXTRA_CA_CERTS (caCerts.ts: node
// would parse those certificates at start for nothing) and put it back once running.
import { describe, expect, it } from 'vitest'
import { spawnSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ChildProcessLauncher, JOB_NODE_FLAGS, jobEnv, MALLOC_ARENAS } from '../../../electron/engine/workers/supervisor.js'
import { restoreExtraCaCerts, SAVED_CA_CERTS } from '../../../electron/engine/workers/caCerts.js'

const bin = join(import.meta.dirname, '..', '..', '..', 'bin', 'tresor.js')

describe('the V8 options Tresor processes start with', () => {
  it('are the same in bin/tresor.js’s first line and for forked jobs', () => {
    const first = readFileSync(bin, 'utf8').split('\n')[0]!
    expect(first).toBe(`#!/usr/bin/env -S -u NODE_EXTRA_CA_CERTS ${SAVED_CA_CERTS}=\${NODE_EXTRA_CA_CERTS} MALLOC_ARENA_MAX=${MALLOC_ARENAS} node ${JOB_NODE_FLAGS.join(' ')}`)
    expect(JOB_NODE_FLAGS).toContain('--max-semi-space-size=4')
  })

  it('reach node when the command is run as a program', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tresor-flags-'))
    try {
      const out = join(dir, 'argv.json')
      const probe = join(dir, 'probe.cjs')
      writeFileSync(probe, `const start = { ca: process.env.NODE_EXTRA_CA_CERTS }\nprocess.on('exit', () => require('node:fs').writeFileSync(${JSON.stringify(out)}, JSON.stringify({ argv: process.execArgv, arenas: process.env.MALLOC_ARENA_MAX, start, ca: process.env.NODE_EXTRA_CA_CERTS, saved: process.env.${SAVED_CA_CERTS} })))\n`)
      // a file that is not there: node warns when it tries to load it, so a start that reads it shows
      const missing = join(dir, 'no such dir', 'certs.pem')
      const control = spawnSync(process.execPath, ['-e', '0'], { encoding: 'utf8', env: { ...process.env, NODE_EXTRA_CA_CERTS: missing } })
      expect(control.stderr).toMatch(/Ignoring extra certs/)
      const r = spawnSync(bin, ['--help'], { encoding: 'utf8', env: { ...process.env, TRESOR_FROM_SOURCE: '1', NODE_OPTIONS: `--require ${probe}`, NODE_EXTRA_CA_CERTS: missing } })
      expect(r.status, r.stderr).toBe(0)
      expect(r.stdout).toContain('Usage: tresor')
      expect(r.stderr).not.toMatch(/extra certs/)
      const seen = JSON.parse(readFileSync(out, 'utf8')) as { argv: string[]; arenas: string; start: { ca?: string }; ca?: string; saved?: string }
      expect(seen.argv).toEqual(expect.arrayContaining([...JOB_NODE_FLAGS]))
      expect(seen.arenas).toBe(MALLOC_ARENAS)
      // not there when node started, there again (and only there) once the command runs
      expect(seen.start.ca).toBeUndefined()
      expect(seen.ca).toBe(missing)
      expect(seen.saved).toBeUndefined()
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it('reach a forked job process', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tresor-flags-'))
    try {
      const entry = join(dir, 'entry.mjs')
      const out = join(dir, 'env.json')
      writeFileSync(entry, `import { writeFileSync } from 'node:fs'\nwriteFileSync(${JSON.stringify(out)}, JSON.stringify({ arenas: process.env.MALLOC_ARENA_MAX, ca: process.env.NODE_EXTRA_CA_CERTS, saved: process.env.${SAVED_CA_CERTS} }))\nprocess.exit(0)\n`)
      let spawned: ChildProcess | undefined
      const base: NodeJS.ProcessEnv = { ...process.env, NODE_EXTRA_CA_CERTS: join(dir, 'missing.pem') }
      delete base.MALLOC_ARENA_MAX
      const job = new ChildProcessLauncher({ entryPath: entry, env: base, onSpawn: (child) => (spawned = child) }).launch('flags')
      await new Promise<void>((done) => job.onExit(() => done()))
      expect(spawned?.spawnargs.slice(1, 1 + JOB_NODE_FLAGS.length)).toEqual([...JOB_NODE_FLAGS])
      // started without the certificates (the real job entry puts them back: restoreExtraCaCerts)
      expect(JSON.parse(readFileSync(out, 'utf8'))).toEqual({ arenas: MALLOC_ARENAS, saved: base.NODE_EXTRA_CA_CERTS })
      expect(spawned?.exitCode).toBe(0)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it('give a job its thread pool and malloc arenas unless its environment sets them, and no secrets', () => {
    const env = jobEnv({ PATH: '/bin', TRESOR_PASSPHRASE: 'secret', TRESOR_RECOVERY_KEY: 'k', TRESOR_NEW_PASSPHRASE: 'n' })
    expect(env).toEqual({ PATH: '/bin', UV_THREADPOOL_SIZE: '8', MALLOC_ARENA_MAX: MALLOC_ARENAS, TRESOR_JOB_PROCESS: '1' })
    expect(jobEnv({ MALLOC_ARENA_MAX: '4', UV_THREADPOOL_SIZE: '16' })).toMatchObject({ MALLOC_ARENA_MAX: '4', UV_THREADPOOL_SIZE: '16' })
  })

  it('set NODE_EXTRA_CA_CERTS aside for a job, and put it back as it was', () => {
    const env = jobEnv({ PATH: '/bin', NODE_EXTRA_CA_CERTS: '/etc/x y.pem' })
    expect(env.NODE_EXTRA_CA_CERTS).toBeUndefined()
    expect(env[SAVED_CA_CERTS]).toBe('/etc/x y.pem')
    restoreExtraCaCerts(env)
    expect(env).toEqual({ PATH: '/bin', UV_THREADPOOL_SIZE: '8', MALLOC_ARENA_MAX: MALLOC_ARENAS, TRESOR_JOB_PROCESS: '1', NODE_EXTRA_CA_CERTS: '/etc/x y.pem' })
    // not set before: not set after (the command's first line leaves it empty)
    const unset: NodeJS.ProcessEnv = { [SAVED_CA_CERTS]: '' }
    restoreExtraCaCerts(unset)
    expect(unset).toEqual({})
    const untouched: NodeJS.ProcessEnv = { NODE_EXTRA_CA_CERTS: '/a.pem' }
    restoreExtraCaCerts(untouched)
    expect(untouched).toEqual({ NODE_EXTRA_CA_CERTS: '/a.pem' })
    expect(jobEnv({ PATH: '/bin' })[SAVED_CA_CERTS]).toBeUndefined()
  })
})
