import { describe, expect, it } from 'vitest'
import { spawnSync } from 'node:child_process'
import { join } from 'node:path'

const bin = join(import.meta.dirname, '..', '..', '..', 'bin', 'tresor.js')
function tresor(args: string[]) {
  return spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', env: { ...process.env, TRESOR_FROM_SOURCE: '1' } })
}

describe('tresor CLI', () => {
  it('prints help and exits 0', () => {
    const r = tresor(['--help'])
    expect(r.status).toBe(0)
    expect(r.stdout).toContain('Usage: tresor')
  })
  it('exits 2 on an unknown command', () => {
    const r = tresor(['no-such-command'])
    expect(r.status).toBe(2)
    expect(r.stderr).toMatch(/unknown command|too many arguments/)
  })
  it('exits 2 on an unknown option', () => {
    const r = tresor(['--no-such-option'])
    expect(r.status).toBe(2)
  })
})
