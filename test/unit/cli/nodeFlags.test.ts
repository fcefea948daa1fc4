// The V8 options and malloc arenas a Tresor process starts with (JOB_NODE_FLAGS, MALLOC_ARENAS):
// the `tresor` command gets them from bin/tresor.js's first line (`env -S`), forked job processes
// from their launcher. Both must say the same, and the command must really start node with them
// when it is run as a program.
import { describe, expect, it } from 'vitest'
import { spawnSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ChildProcessLauncher, JOB_NODE_FLAGS, jobEnv, MALLOC_ARENAS } from '../../../electron/engine/workers/supervisor.js'

const bin = join(import.meta.dirname, '..', '..', '..', 'bin', 'tresor.js')

describe('the V8 options Tresor processes start with', () => {
  it('are the same in bin/tresor.js’s first line and for forked jobs', () => {
    const first = readFileSync(bin, 'utf8').split('\n')[0]!
    expect(first).toBe(`#!/usr/bin/env -S MALLOC_ARENA_MAX=${MALLOC_ARENAS} node ${JOB_NODE_FLAGS.join(' ')}`)
    expect(JOB_NODE_FLAGS).toContain('--max-semi-space-size=4')
  })

  it('reach node when the command is run as a program', () => {
    const dir = mkdtempSync(join(tmpdir(), 'tresor-flags-'))
    try {
      const out = join(dir, 'argv.json')
      const probe = join(dir, 'probe.cjs')
      writeFileSync(probe, `process.on('exit', () => require('node:fs').writeFileSync(${JSON.stringify(out)}, JSON.stringify({ argv: process.execArgv, arenas: process.env.MALLOC_ARENA_MAX })))\n`)
      const r = spawnSync(bin, ['--help'], { encoding: 'utf8', env: { ...process.env, TRESOR_FROM_SOURCE: '1', NODE_OPTIONS: `--require ${probe}` } })
      expect(r.status, r.stderr).toBe(0)
      expect(r.stdout).toContain('Usage: tresor')
      const seen = JSON.parse(readFileSync(out, 'utf8')) as { argv: string[]; arenas: string }
      expect(seen.argv).toEqual(expect.arrayContaining([...JOB_NODE_FLAGS]))
      expect(seen.arenas).toBe(MALLOC_ARENAS)
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it('reach a forked job process', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tresor-flags-'))
    try {
      const entry = join(dir, 'entry.mjs')
      const out = join(dir, 'env.json')
      writeFileSync(entry, `import { writeFileSync } from 'node:fs'\nwriteFileSync(${JSON.stringify(out)}, JSON.stringify({ arenas: process.env.MALLOC_ARENA_MAX }))\nprocess.exit(0)\n`)
      let spawned: ChildProcess | undefined
      const base = { ...process.env }
      delete base.MALLOC_ARENA_MAX
      const job = new ChildProcessLauncher({ entryPath: entry, env: base, onSpawn: (child) => (spawned = child) }).launch('flags')
      await new Promise<void>((done) => job.onExit(() => done()))
      expect(spawned?.spawnargs.slice(1, 1 + JOB_NODE_FLAGS.length)).toEqual([...JOB_NODE_FLAGS])
      expect(JSON.parse(readFileSync(out, 'utf8'))).toEqual({ arenas: MALLOC_ARENAS })
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })

  it('give a job its thread pool and malloc arenas unless its environment sets them, and no secrets', () => {
    const env = jobEnv({ PATH: '/bin', TRESOR_PASSPHRASE: 'secret', TRESOR_RECOVERY_KEY: 'k', TRESOR_NEW_PASSPHRASE: 'n' })
    expect(env).toEqual({ PATH: '/bin', UV_THREADPOOL_SIZE: '8', MALLOC_ARENA_MAX: MALLOC_ARENAS, TRESOR_JOB_PROCESS: '1' })
    expect(jobEnv({ MALLOC_ARENA_MAX: '4', UV_THREADPOOL_SIZE: '16' })).toMatchObject({ MALLOC_ARENA_MAX: '4', UV_THREADPOOL_SIZE: '16' })
  })
})
