import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { findFileUses } from '../../../electron/engine/restore/inUse.js'

let dir: string
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tresor-inuse-'))
})
afterEach(async () => {
  await rm(dir, { recursive: true, force: true })
})

/** A fake /proc: process `pid` has `fds` (fd → target, octal flags). */
async function fakeProc(root: string, pid: number, comm: string, fds: { fd: number; target: string; flags: string }[]): Promise<void> {
  await mkdir(join(root, String(pid), 'fd'), { recursive: true })
  await mkdir(join(root, String(pid), 'fdinfo'), { recursive: true })
  await writeFile(join(root, String(pid), 'comm'), comm + '\n')
  for (const f of fds) {
    await symlink(f.target, join(root, String(pid), 'fd', String(f.fd)))
    await writeFile(join(root, String(pid), 'fdinfo', String(f.fd)), `pos:\t0\nflags:\t${f.flags}\nmnt_id:\t1\n`)
  }
}

describe('findFileUses', () => {
  it('finds readers and writers of a file by device and inode, through other names', async () => {
    const disk = join(dir, 'disk.img')
    const other = join(dir, 'other.img')
    await writeFile(disk, 'x')
    await writeFile(other, 'y')
    const alias = join(dir, 'alias.img')
    await symlink(disk, alias)
    const proc = join(dir, 'proc')
    await fakeProc(proc, 100, 'qemu-system-x86', [
      { fd: 3, target: alias, flags: '0100002' }, // O_RDWR, opened through another name
      { fd: 4, target: other, flags: '0100002' },
    ])
    await fakeProc(proc, 200, 'cat', [{ fd: 3, target: disk, flags: '0100000' }]) // O_RDONLY
    await fakeProc(proc, 300, 'self', [{ fd: 3, target: disk, flags: '0100001' }])
    await mkdir(join(proc, 'self'))
    const uses = await findFileUses([disk], { procRoot: proc, excludePids: [300] })
    expect(uses.sort((a, b) => a.pid - b.pid)).toEqual([
      { pid: 100, path: alias, forWriting: true, command: 'qemu-system-x86' },
      { pid: 200, path: disk, forWriting: false, command: 'cat' },
    ])
    expect(await findFileUses([join(dir, 'missing.img')], { procRoot: proc })).toEqual([])
  })

  it('sees this host: a file held open for writing by a real process', async () => {
    const disk = join(dir, 'held.img')
    await writeFile(disk, 'z')
    const { spawn } = await import('node:child_process')
    const holder = spawn('sh', ['-c', 'exec 3>>"$1"; exec sleep 30', 'sh', disk], { stdio: 'ignore' })
    try {
      let uses = await findFileUses([disk])
      for (let i = 0; i < 200 && uses.length === 0; i++) {
        await new Promise((r) => setTimeout(r, 20))
        uses = await findFileUses([disk])
      }
      expect(uses).toEqual([expect.objectContaining({ pid: holder.pid, forWriting: true })])
    } finally {
      holder.kill('SIGKILL')
    }
  })
})
