import { spawn, spawnSync } from 'node:child_process'
import { lstat, mkdir, readdir, readFile, stat, symlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import { addMachine, runBackup } from '../../../electron/engine/backup/index.js'
import { createImageWriter, WRITER_FORMATS, type WriterFormat } from '../../../electron/engine/formats/index.js'
import { DEFAULT_POLICY } from '../../../electron/engine/policy/index.js'
import { findFileUses } from '../../../electron/engine/restore/inUse.js'
import { restorePoint, type RestoreWorld } from '../../../electron/engine/restore/pipeline.js'
import { applyOps, createImage, mixedOps, qemuCheck, qemuCompare, qemuToRaw, requireQemu, sha256File, type QemuFormat } from '../../helpers/qemu.js'
import { makeWorld, MiB, type TestWorld } from '../backup/helpers.js'

let w: TestWorld | undefined
beforeAll(() => requireQemu())
afterEach(async () => {
  await w?.close()
  w = undefined
})

const noTier = { ...DEFAULT_POLICY, snapshotTierDays: 0 }
const QEMU: Record<WriterFormat, QemuFormat> = { raw: 'raw', qcow2: 'qcow2', vhd: 'vpc', 'vhd-fixed': 'vpc', vhdx: 'vhdx' }
const EXT: Record<WriterFormat, string> = { raw: 'img', qcow2: 'qcow2', vhd: 'vhd', 'vhd-fixed': 'vhd', vhdx: 'vhdx' }

function restoreWorld(t: TestWorld): RestoreWorld {
  return { vault: t.vault, createWriter: createImageWriter }
}

/** Bytes a file really occupies. */
async function allocated(path: string): Promise<number> {
  return (await stat(path)).blocks * 512
}

describe('restore through the real vault', () => {
  // format 2 (the default): compressible blocks come back from their parts through the same pipeline
  it.each([1, 2])('restores both points of a machine byte-identical to qemu-img convert -O raw at backup time, in every writer format, sparse (vault format %i)', async (formatVersion) => {
    w = await makeWorld({ formatVersion })
    const q = join(w.dir, 'system.qcow2')
    const qSize = 24 * MiB + 512
    await createImage(q, 'qcow2', qSize, ['cluster_size=65536'])
    await applyOps(q, 'qcow2', mixedOps(31, qSize, 40), w.dir)
    const r = join(w.dir, 'data.img')
    await createImage(r, 'raw', 6 * MiB + 4096 * 3)
    await applyOps(r, 'raw', mixedOps(32, 6 * MiB + 4096 * 3, 12, { discard: false }), w.dir)
    const oracle = async (name: string) => {
      const sys = join(w!.dir, `${name}-system.raw`)
      const data = join(w!.dir, `${name}-data.raw`)
      await qemuToRaw(q, 'qcow2', sys)
      await qemuToRaw(r, 'raw', data)
      return { sys, data }
    }
    const machine = addMachine(w.catalog, { name: 'vm', disks: [{ path: q }, { path: r }] })
    const o1 = await oracle('p1')
    const p1 = (await runBackup(machine, w.world, { policy: noTier, snapshot: 'read' })).result.pointId
    await applyOps(q, 'qcow2', [
      { kind: 'random', offset: 3 * MiB + 4096, length: 8192, seed: 77 },
      { kind: 'zero', offset: 0, length: 65536, unmap: true },
      { kind: 'pattern', offset: qSize - 1024, length: 1024, byte: 0x42 },
    ], w.dir)
    const o2 = await oracle('p2')
    const p2 = (await runBackup(machine, w.world, { policy: noTier, snapshot: 'read' })).result.pointId

    const out = join(w.dir, 'out')
    const world = restoreWorld(w)
    // Both points, raw: byte for byte, holes kept.
    for (const [point, o] of [[p1, o1], [p2, o2]] as const) {
      const res = await restorePoint(world, { pointId: point, mode: 'folder', targetPath: join(out, point), format: 'raw' })
      expect(res.files).toEqual([join(out, point, 'system.img'), join(out, point, 'data.img')])
      expect(await sha256File(res.files[0]!)).toBe(await sha256File(o.sys))
      expect(await sha256File(res.files[1]!)).toBe(await sha256File(o.data))
      expect(await allocated(res.files[0]!)).toBeLessThanOrEqual(await allocated(o.sys) + 256 * 1024)
      expect(await allocated(res.files[1]!)).toBeLessThanOrEqual(await allocated(o.data) + 256 * 1024)
      expect(await allocated(res.files[0]!)).toBeLessThan(qSize / 2) // the disk is far from full: holes stayed holes
    }
    // Format conversion on restore: every writer format, checked by qemu.
    for (const format of WRITER_FORMATS) {
      const target = join(out, `system-${format}.${EXT[format]}`)
      const res = await restorePoint(world, { pointId: p2, mode: 'file', targetPath: target, disks: ['system'], format, verifyAfterWrite: true })
      expect(res.files).toEqual([target])
      const cmp = await qemuCompare(target, QEMU[format], o2.sys, 'raw')
      expect(cmp.output).toContain('identical')
      expect(cmp.same).toBe(true)
      if (format === 'qcow2' || format === 'vhdx') expect((await qemuCheck(target, QEMU[format])).corruptions).toBe(0)
      if (format !== 'vhd-fixed') expect(await allocated(target)).toBeLessThan(qSize / 2)
    }
    // The format follows the target's extension when none is given.
    const byExt = await restorePoint(world, { pointId: p1, mode: 'file', targetPath: join(out, 'by-ext.vhdx'), disks: [0] })
    expect((await qemuCompare(byExt.files[0]!, 'vhdx', o1.sys, 'raw')).same).toBe(true)
    expect((await readdir(out)).filter((n) => n.endsWith('.partial'))).toEqual([])
  })

  it('replaces the original disks when no process writes to them, and refuses while one does', async () => {
    w = await makeWorld()
    const disk = join(w.dir, 'vm', 'disk.qcow2')
    await mkdir(join(w.dir, 'vm'))
    await createImage(disk, 'qcow2', 8 * MiB)
    await applyOps(disk, 'qcow2', mixedOps(5, 8 * MiB, 20), w.dir)
    const before = join(w.dir, 'before.raw')
    await qemuToRaw(disk, 'qcow2', before)
    const machine = addMachine(w.catalog, { name: 'vm', disks: [{ path: disk }] })
    const point = (await runBackup(machine, w.world, { policy: noTier, snapshot: 'read' })).result.pointId
    // The guest wrecks the disk.
    await applyOps(disk, 'qcow2', [{ kind: 'random', offset: 0, length: 2 * MiB, seed: 666 }], w.dir)
    const wrecked = await sha256File(disk)

    // A "running VM": a process holding the disk open for writing.
    const vm = spawn('sh', ['-c', 'exec 3<>"$1"; exec sleep 60', 'sh', disk], { stdio: 'ignore' })
    try {
      for (let i = 0; i < 200 && (await findFileUses([disk])).length === 0; i++) await new Promise((r) => setTimeout(r, 20))
      expect((await findFileUses([disk]))[0]).toMatchObject({ forWriting: true })
      await expect(restorePoint(restoreWorld(w), { pointId: point, mode: 'replace' })).rejects.toMatchObject({ code: 'TARGET_IN_USE' })
      expect(await sha256File(disk)).toBe(wrecked)
      expect(await readdir(join(w.dir, 'vm'))).toEqual(['disk.qcow2'])
    } finally {
      vm.kill('SIGKILL')
      await new Promise((r) => vm.once('exit', r))
    }
    const res = await restorePoint(restoreWorld(w), { pointId: point, mode: 'replace' })
    expect(res.files).toEqual([disk])
    expect((await qemuCompare(disk, 'qcow2', before, 'raw')).same).toBe(true)
    expect(await readdir(join(w.dir, 'vm'))).toEqual(['disk.qcow2']) // the replaced file is gone once the new one is in place
  })

  it('the CLI restores through the queue and prints {files, bytesWritten}; refuses existing files and symlinks (a vault of the default format, 2)', async () => {
    w = await makeWorld()
    const bin = join(import.meta.dirname, '..', '..', '..', 'bin', 'tresor.js')
    const home = join(w.dir, 'cli-home')
    const env = { ...process.env, TRESOR_FROM_SOURCE: '1', TRESOR_HOME: home, TRESOR_PASSPHRASE: 'restore test passphrase', DBUS_SESSION_BUS_ADDRESS: '' }
    const tresor = (...args: string[]) => spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', env, timeout: 120_000 })
    const src = join(w.dir, 'src.qcow2')
    await createImage(src, 'qcow2', 4 * MiB)
    await applyOps(src, 'qcow2', mixedOps(9, 4 * MiB, 10), w.dir)
    const oracle = join(w.dir, 'oracle.raw')
    await qemuToRaw(src, 'qcow2', oracle)
    expect(tresor('vault', 'init', join(w.dir, 'cli-vault'), '--json').status).toBe(0)
    expect((JSON.parse(tresor('vault', 'info', '--json').stdout) as { formatVersion: number }).formatVersion).toBe(3)
    expect(tresor('machine', 'add', 'box', src, '--json').status).toBe(0)
    const backup = tresor('backup', 'box', '--json')
    expect(backup.status, backup.stderr).toBe(0)
    const pointId = (JSON.parse(backup.stdout) as { pointId: string }).pointId

    const target = join(w.dir, 'restored.img')
    const r = tresor('restore', pointId.slice(0, 8), '--to', target, '--json')
    expect(r.status, r.stderr).toBe(0)
    const printed = JSON.parse(r.stdout) as { files: string[]; bytesWritten: number }
    expect(printed.files).toEqual([target])
    expect(printed.bytesWritten).toBeGreaterThan(0)
    expect((await readFile(target)).equals(await readFile(oracle))).toBe(true)

    const again = tresor('restore', pointId, '--to', target)
    expect(again.status).toBe(1)
    expect(again.stderr).toMatch(/already exists/)
    const outside = join(w.dir, 'outside.txt')
    await writeFile(outside, 'not yours')
    await symlink(outside, join(w.dir, 'trap.img'))
    const trap = tresor('restore', pointId, '--to', join(w.dir, 'trap.img'), '--overwrite')
    expect(trap.status).toBe(1)
    expect(trap.stderr).toMatch(/symbolic link/)
    expect(await readFile(outside, 'utf8')).toBe('not yours')
    expect((await lstat(join(w.dir, 'trap.img'))).isSymbolicLink()).toBe(true)

    const jobs = tresor('jobs', '--json')
    const list = JSON.parse(jobs.stdout) as { kind: string; state: string; error: { code: string } | null }[]
    expect(list.filter((j) => j.kind === 'restore').map((j) => j.state)).toEqual(['failed', 'failed', 'succeeded'])
    expect(list.filter((j) => j.kind === 'restore').map((j) => j.error?.code ?? null)).toEqual(['PATH_UNSAFE', 'TARGET_EXISTS', null])
    expect(tresor('restore', pointId, '--to', join(w.dir, 'x.img'), '--format', 'vmdk').status).toBe(2)
  })
})
