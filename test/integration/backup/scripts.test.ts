import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { runScript, scriptEnvironment } from '../../../electron/engine/backup/scripts.js'
import { tempDir } from '../../helpers/qemu.js'

let dir = ''
let cleanup: () => Promise<void> = async () => {}
beforeEach(async () => { ({ dir, cleanup } = await tempDir('tresor-scripts-')) })
afterEach(async () => { await cleanup() })

async function script(name: string, body: string): Promise<string> {
  const p = join(dir, name)
  await writeFile(p, `#!/bin/sh\n${body}\n`)
  await chmod(p, 0o755)
  return p
}

function alive(pid: number): boolean {
  try { process.kill(pid, 0); return true } catch { return false }
}

describe('runScript', () => {
  it('runs a program without a shell: spaces and ; in its path and arguments are plain characters', async () => {
    await mkdir(join(dir, 'odd dir; rm -rf x'))
    const p = await script('odd dir; rm -rf x/freeze $HOME.sh', 'printf "%s|" "$@"; echo; echo "phase=$TRESOR_PHASE"')
    const lines: string[] = []
    const o = await runScript({ path: p, args: ['a b', '; echo pwned', '$(id)'] }, { label: '[pre]', log: (l) => lines.push(l), env: { TRESOR_PHASE: 'pre' } })
    expect(o.ok).toBe(true)
    expect(o.exitCode).toBe(0)
    expect(lines).toEqual(['[pre] a b|; echo pwned|$(id)|', '[pre] phase=pre'])
  })

  it('reports a non-zero exit and a missing program as failures', async () => {
    const p = await script('fail.sh', 'echo "cannot freeze" >&2; exit 3')
    const lines: string[] = []
    const o = await runScript({ path: p }, { label: '[pre]', log: (l) => lines.push(l) })
    expect(o).toMatchObject({ ok: false, exitCode: 3, timedOut: false })
    expect(lines).toContain('[pre] cannot freeze')
    const m = await runScript({ path: join(dir, 'nope') }, { label: '[pre]', log: () => {} })
    expect(m.ok).toBe(false)
    expect(m.error).toMatch(/could not be started/)
  })

  it('kills the whole process group on timeout, grandchildren included', async () => {
    const pidFile = join(dir, 'child.pid')
    const p = await script('hang.sh', `sleep 60 & echo $! > "${pidFile}"; trap '' TERM; while true; do sleep 1; done`)
    const started = Date.now()
    const o = await runScript({ path: p, timeoutMs: 700 }, { label: '[pre]', log: () => {}, killGraceMs: 300 })
    expect(o.ok).toBe(false)
    expect(o.timedOut).toBe(true)
    expect(Date.now() - started).toBeLessThan(10_000)
    const child = Number(await readFile(pidFile, 'utf8'))
    await new Promise((r) => setTimeout(r, 200))
    expect(alive(child)).toBe(false)
  })

  it('keeps the log bounded when a script floods its output, keeping head and tail', async () => {
    const p = await script('flood.sh', 'echo FIRST; i=0; while [ $i -lt 20000 ]; do echo "line $i of noise noise noise noise"; i=$((i+1)); done; echo LAST')
    const lines: string[] = []
    const o = await runScript({ path: p }, { label: '[post]', log: (l) => lines.push(l), maxOutputBytes: 8192 })
    expect(o.ok).toBe(true)
    expect(o.outputBytes).toBeGreaterThan(500_000)
    const logged = lines.join('\n').length
    expect(logged).toBeLessThan(8192 + 2000)
    expect(lines[0]).toBe('[post] FIRST')
    expect(lines.at(-1)).toBe('[post] LAST')
    expect(lines.some((l) => /bytes of output omitted/.test(l))).toBe(true)
  })

  it('stops the script when the job is cancelled', async () => {
    const p = await script('slow.sh', 'sleep 30')
    const ac = new AbortController()
    setTimeout(() => ac.abort(), 200)
    const o = await runScript({ path: p, timeoutMs: 60_000 }, { label: '[pre]', log: () => {}, signal: ac.signal, killGraceMs: 200 })
    expect(o.ok).toBe(false)
    expect(o.timedOut).toBe(false)
  })

  it('does not pass secrets to scripts', async () => {
    const env = scriptEnvironment({ TRESOR_PHASE: 'pre' }, { PATH: '/bin', TRESOR_PASSPHRASE: 'x', TRESOR_RECOVERY_KEY: 'y', AWS_SECRET_ACCESS_KEY: 'z', GITHUB_TOKEN: 't', HOME: '/root' })
    expect(env).toEqual({ PATH: '/bin', HOME: '/root', TRESOR_PHASE: 'pre' })
    const p = await script('env.sh', 'echo "pass=${TRESOR_PASSPHRASE:-unset}"')
    process.env.TRESOR_PASSPHRASE = 'hunter2'
    try {
      const lines: string[] = []
      await runScript({ path: p }, { label: '', log: (l) => lines.push(l.trim()) })
      expect(lines).toEqual(['pass=unset'])
    } finally {
      delete process.env.TRESOR_PASSPHRASE
    }
    expect(existsSync(p)).toBe(true)
  })
})
