import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { applyOps, createImage, requireQemu } from '../../helpers/qemu.js'
import { cliEnv, ROOT, tresor, tresorJson } from '../keys/fixtures/cli.js'
import { openCatalog } from '../../../electron/engine/catalog/index.js'

const base = mkdtempSync(join(tmpdir(), 'tresor-backup-cli-'))
const home = join(base, 'home')
const env = cliEnv({ TRESOR_HOME: home, TRESOR_PASSPHRASE: 'backup cli test passphrase', TRESOR_SCRYPT_LOG2N: '15' })
const MiB = 1024 * 1024
const d1 = join(base, 'system.qcow2')
const d2 = join(base, 'swap.raw')

beforeAll(async () => {
  requireQemu()
  await createImage(d1, 'qcow2', 16 * MiB)
  await applyOps(d1, 'qcow2', [{ kind: 'random', offset: MiB, length: 2 * MiB, seed: 5 }], base)
  writeFileSync(d2, Buffer.alloc(MiB, 1))
  await tresorJson(['vault', 'init', join(base, 'vault'), '--block-size', '65536', '--json'], env)
})
afterAll(() => rmSync(base, { recursive: true, force: true }))

describe('tresor machine / backup / points', () => {
  it('adds a machine, excludes a disk, backs up, lists points, and moves only changed blocks next time', async () => {
    const { machineId } = await tresorJson<{ machineId: string }>(['machine', 'add', 'web', d1, d2, '--exclude', 'swap', '--json'], env)
    expect(machineId).toMatch(/^[0-9a-f-]{36}$/)
    const list = await tresorJson<{ id: string; name: string; disks: { name: string; isExcluded: boolean; isSystem: boolean }[] }[]>(['machine', 'list', '--json'], env)
    expect(list).toHaveLength(1)
    expect(list[0]!.disks).toEqual([
      expect.objectContaining({ name: 'system', isExcluded: false, isSystem: true }),
      expect.objectContaining({ name: 'swap', isExcluded: true, isSystem: false }),
    ])

    const r1 = await tresorJson<Record<string, unknown>>(['backup', 'web', '--json'], env)
    expect(Object.keys(r1).sort()).toEqual(['bytesNew', 'bytesRead', 'bytesStored', 'consistency', 'pointId', 'seconds'])
    expect(r1).toMatchObject({ consistency: 'crash', bytesRead: 2 * MiB, bytesNew: 2 * MiB })

    await applyOps(d1, 'qcow2', [{ kind: 'random', offset: MiB + 100 * 1024, length: 4096, seed: 6 }], base)
    const r2 = await tresorJson<{ pointId: string; bytesNew: number; bytesRead: number }>(['backup', machineId, '--json'], env)
    expect(r2.bytesNew).toBe(65536)
    expect(r2.bytesRead).toBe(2 * MiB)

    const points = await tresorJson<{ id: string; machine: string; createdAt: string; consistency: string; disks: { name: string; virtualSize: number }[] }[]>(['points', 'web', '--json'], env)
    expect(points.map((p) => p.id)).toEqual([r1.pointId, r2.pointId])
    expect(points[0]).toMatchObject({ machine: 'web', consistency: 'crash', disks: [{ name: 'system', virtualSize: 16 * MiB }] })
    expect(Date.parse(points[0]!.createdAt)).toBeGreaterThan(0)
    expect(await tresorJson(['points', '--json'], env)).toHaveLength(2)

    // Each backup ran as a job (in-process) with a row in the catalog.
    const db = openCatalog(home)
    try {
      const rows = db.prepare("SELECT state, machine_id FROM jobs WHERE kind = 'backup' ORDER BY created_at").all()
      expect(rows).toEqual([{ state: 'succeeded', machine_id: machineId }, { state: 'succeeded', machine_id: machineId }])
    } finally {
      db.close()
    }
  })

  it('imports a libvirt domain and queues a detached backup', async () => {
    const xml = join(base, 'db.xml')
    writeFileSync(xml, `<domain type='kvm'><name>db-vm</name><devices><disk type='file' device='disk'><source file='${d1}'/><target dev='vda'/></disk></devices></domain>`)
    const { machineId } = await tresorJson<{ machineId: string }>(['machine', 'add', '--libvirt', xml, '--json'], env)
    const list = await tresorJson<{ id: string; name: string; source: string; disks: { name: string }[] }[]>(['machine', 'list', '--json'], env)
    expect(list.find((m) => m.id === machineId)).toMatchObject({ name: 'db-vm', source: 'libvirt', disks: [{ name: 'vda' }] })
    const queued = await tresorJson<{ jobId: string; state: string }>(['backup', 'db-vm', '--detach', '--json'], env)
    expect(queued.state).toBe('queued')
  })

  it('without its native addons (a failed build) says so, and backs up and restores all the same', async () => {
    // tresor-digest and tresor-memory fail to load in the CLI and its worker threads
    const hidden = { ...env, NODE_OPTIONS: `--require ${join(ROOT, 'test', 'helpers', 'hideModules.cjs')}`, TRESOR_TEST_HIDE_MODULES: 'tresor-digest,tresor-memory' }
    const disk = join(base, 'plain.raw')
    const text = (n: number): Buffer =>
      Buffer.from(Array.from({ length: 4000 }, (_, k) => `${n}: request ${k * 7919 + n} took ${(k * 31) % 997} ms ${'abcdefghij'.repeat(k % 7)}\n`).join('')).subarray(0, 65536)
    writeFileSync(disk, Buffer.concat(Array.from({ length: 24 }, (_, b) => (b % 4 === 3 ? Buffer.alloc(65536) : b % 4 === 1 ? randomBytes(65536) : text(b)))))
    await tresorJson(['machine', 'add', 'plain', disk, '--json'], env)
    await tresorJson(['machine', 'add', 'plain-again', disk, '--json'], env)

    const info = await tresorJson<{ memory: { addon: boolean }; digest: { addon: boolean; pieces: string } }>(['vault', 'info', '--json'], hidden)
    expect(info.memory.addon).toBe(false)
    expect(info.digest).toEqual({ addon: false, pieces: 'one per call: no native addon', cuts: 'WebAssembly', cipher: 'a context per call' })
    const text1 = await tresor(['vault', 'info'], hidden)
    expect(text1.stdout).toMatch(/^Memory {5}native addon tresor-memory missing \(rebuild it with "npm rebuild tresor-memory"\)/m)
    expect(text1.stdout).toMatch(/^Hashing {4}native addon tresor-digest missing \(rebuild it with "npm rebuild tresor-digest"\); chunk ids one per call, parts cut in WebAssembly, AES-GCM a context per call, slower$/m)

    const r1 = await tresorJson<{ pointId: string; bytesNew: number }>(['backup', 'plain', '--json'], hidden)
    expect(r1.bytesNew).toBe(18 * 65536)
    // the same bytes backed up with the addons find every id the fallback stored
    const r2 = await tresorJson<{ pointId: string; bytesNew: number; bytesRead: number }>(['backup', 'plain-again', '--json'], env)
    expect(r2).toMatchObject({ bytesRead: 24 * 65536, bytesNew: 0 })
    for (const [point, e] of [[r1.pointId, hidden], [r2.pointId, env]] as const) {
      const out = join(base, `plain-${point}.raw`)
      const restored = await tresor(['restore', point, '--to', out, '--format', 'raw'], e)
      expect(restored.code, restored.stderr).toBe(0)
      expect(readFileSync(out).equals(readFileSync(disk)), `restore of ${point}`).toBe(true)
    }
  })

  it('exits 1 with a message for an unknown machine and 2 for a usage error', async () => {
    const r = await tresor(['backup', 'nope', '--json'], env)
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/No protected machine is named "nope"/)
    const u = await tresor(['machine', 'add', 'lonely'], env)
    expect(u.code).toBe(2)
    const dup = await tresor(['machine', 'add', 'web', d1], env)
    expect(dup.code).toBe(1)
    expect(dup.stderr).toMatch(/already protected/)
  })
})
