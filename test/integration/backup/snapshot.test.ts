import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { clonePathFor, fileState, findWriters, reflinkClone, sameIdentity } from '../../../electron/engine/backup/snapshot.js'

let dir = ''
let child: ChildProcess | undefined
beforeEach(async () => { dir = await mkdtemp(join(tmpdir(), 'tresor-snap-')) })
afterEach(async () => {
  child?.kill('SIGKILL')
  child = undefined
  await rm(dir, { recursive: true, force: true })
})

describe('snapshot helpers', () => {
  it('puts the clone beside the source under a hidden, dated name keeping the extension', () => {
    const p = clonePathFor('/vms/web/disk.qcow2', Date.parse('2026-05-01T10:20:30.456Z'), 'ab12cd')
    expect(p).toBe('/vms/web/.disk.tresor-20260501T102030Z-ab12cd.qcow2')
  })

  it('never overwrites or removes an existing file at the clone path', async () => {
    const src = join(dir, 'src.raw')
    const dst = join(dir, 'dst.raw')
    await writeFile(src, 'source')
    await writeFile(dst, 'somebody else')
    const r = await reflinkClone(src, dst)
    expect(r.ok).toBe(false)
    expect(await readFile(dst, 'utf8')).toBe('somebody else')
  })

  it('compares identities by size, mtime, ctime and inode', async () => {
    const f = join(dir, 'f')
    await writeFile(f, 'a')
    const a = await fileState(f)
    expect(sameIdentity(a, await fileState(f))).toBe(true)
    await new Promise((r) => setTimeout(r, 20))
    await writeFile(f, 'b')
    expect(sameIdentity(a, await fileState(f))).toBe(false)
    expect(sameIdentity(a, undefined)).toBe(false)
  })

  it('finds processes that hold a file open for writing, through symlinks, and ignores readers', async () => {
    if (process.platform !== 'linux') throw new Error('the writer scan is Linux-only; this test runs on Linux CI')
    const f = join(dir, 'disk.raw')
    await writeFile(f, Buffer.alloc(4096))
    await mkdir(join(dir, 'links'))
    await symlink(f, join(dir, 'links', 'disk-link.raw'))
    expect((await findWriters(f)).pids).toEqual([])
    const hold = (mode: string): Promise<ChildProcess> => new Promise((resolve) => {
      const c = spawn(process.execPath, ['-e', `require('fs').openSync(${JSON.stringify(f)}, '${mode}'); process.stdout.write('x'); setInterval(() => {}, 1000)`], { stdio: ['ignore', 'pipe', 'ignore'] })
      c.stdout!.once('data', () => resolve(c))
    })
    child = await hold('r')
    expect((await findWriters(f)).pids).toEqual([])
    child.kill('SIGKILL')
    child = await hold('r+')
    const scan = await findWriters(join(dir, 'links', 'disk-link.raw'))
    expect(scan.supported).toBe(true)
    expect(scan.pids).toEqual([child.pid])
  })
})
