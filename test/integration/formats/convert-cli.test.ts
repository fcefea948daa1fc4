import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { execFile } from 'node:child_process'
import { join, resolve } from 'node:path'
import { readFile, writeFile } from 'node:fs/promises'
import { promisify } from 'node:util'
import { applyOps, createImage, mixedOps, qemuCheck, qemuCompare, requireQemu, tempDir, type QemuFormat } from '../../helpers/qemu.js'

const execFileP = promisify(execFile)
const MiB = 1024 * 1024
const root = resolve(import.meta.dirname, '../../..')
let dir = ''
let cleanup: () => Promise<void> = async () => {}
let source = ''

/** Runs `tresor` from source; resolves with exit code, stdout, stderr. */
async function tresor(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await execFileP(process.execPath, [join(root, 'bin', 'tresor.js'), '--home', join(dir, 'home'), ...args], {
      env: { ...process.env, TRESOR_FROM_SOURCE: '1' },
      timeout: 120_000,
    })
    return { code: 0, stdout, stderr }
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string }
    if (typeof e.code !== 'number') throw err
    return { code: e.code, stdout: e.stdout ?? '', stderr: e.stderr ?? '' }
  }
}

beforeAll(async () => {
  requireQemu()
  ;({ dir, cleanup } = await tempDir('tresor-cli-'))
  const base = join(dir, 'base.qcow2')
  source = join(dir, 'top.qcow2')
  await createImage(base, 'qcow2', 8 * MiB)
  await applyOps(base, 'qcow2', mixedOps(61, 8 * MiB, 20), dir)
  await createImage(source, 'qcow2', 8 * MiB + 512, [], { file: base, format: 'qcow2' })
  await applyOps(source, 'qcow2', mixedOps(62, 8 * MiB + 512, 20), dir)
})
afterAll(async () => {
  await cleanup()
})

describe('tresor image', () => {
  it('info --json prints the contract fields with the backing chain', async () => {
    const r = await tresor('--json', 'image', 'info', source)
    expect(r.code, r.stderr).toBe(0)
    const info = JSON.parse(r.stdout) as Record<string, unknown>
    expect(info).toMatchObject({ format: 'qcow2', variant: 'v3', virtualSize: 8 * MiB + 512, clusterSize: 65536 })
    expect(typeof info.allocatedBytes).toBe('number')
    expect(info.backingChain).toEqual([{ path: join(dir, 'base.qcow2'), format: 'qcow2', variant: 'v3', virtualSize: 8 * MiB }])
    const human = await tresor('image', 'info', source)
    expect(human.stdout).toContain('format: qcow2 (v3)')
    expect(human.stdout).toContain('backing chain:')
  })

  const targets: Array<{ to: string; qemu: QemuFormat }> = [
    { to: 'raw', qemu: 'raw' },
    { to: 'qcow2', qemu: 'qcow2' },
    { to: 'vhd', qemu: 'vpc' },
    { to: 'vhd-fixed', qemu: 'vpc' },
    { to: 'vhdx', qemu: 'vhdx' },
  ]
  for (const t of targets) {
    it(`convert --to ${t.to} writes the guest view (qemu-img compare)`, async () => {
      const out = join(dir, `out.${t.to}`)
      const r = await tresor('--json', 'image', 'convert', source, out, '--to', t.to)
      expect(r.code, r.stderr).toBe(0)
      const { bytesWritten } = JSON.parse(r.stdout) as { bytesWritten: number }
      expect(bytesWritten).toBeGreaterThan(0)
      if (t.qemu !== 'raw') {
        const check = await qemuCheck(out, t.qemu)
        expect(check.corruptions, JSON.stringify(check.raw)).toBe(0)
        expect(check.leaks).toBe(0)
      }
      // A VHD's size is CHS-rounded; compare the source's range (compare's default tolerates a larger tail of zeros).
      const cmp = await qemuCompare(source, 'qcow2', out, t.qemu)
      expect(cmp.same, cmp.output).toBe(true)
    })
  }

  it('refuses to overwrite without --force (exit 1), overwrites with it', async () => {
    const out = join(dir, 'exists.raw')
    await writeFile(out, 'precious')
    const r = await tresor('image', 'convert', source, out, '--to', 'raw')
    expect(r.code).toBe(1)
    expect(r.stderr).toContain('already exists')
    expect(await readFile(out, 'utf8')).toBe('precious')
    const forced = await tresor('image', 'convert', source, out, '--to', 'raw', '--force')
    expect(forced.code, forced.stderr).toBe(0)
    expect((await qemuCompare(source, 'qcow2', out, 'raw')).same).toBe(true)
  })

  it('usage errors exit 2; a missing input exits 1 naming it', async () => {
    expect((await tresor('image', 'convert', source, join(dir, 'x.img'), '--to', 'iso')).code).toBe(2)
    expect((await tresor('image', 'convert', source, join(dir, 'x.img'))).code).toBe(2)
    const missing = await tresor('image', 'info', join(dir, 'nope.qcow2'))
    expect(missing.code).toBe(1)
    expect(missing.stderr).toContain('nope.qcow2')
  })
})
