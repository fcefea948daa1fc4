import { mkdir, mkdtemp, open, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { createImageWriter } from '../../../electron/engine/formats/index.js'
import { restorePoint, type RestoreWorld } from '../../../electron/engine/restore/pipeline.js'
import { diskFileName } from '../../../electron/engine/restore/targets.js'
import { MemoryVault } from './memoryVault.js'
import { randomBytes } from '../../helpers/qemu.js'

const MiB = 1024 * 1024

let dir: string
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tresor-restore-'))
})
afterEach(async () => {
  await rm(dir, { recursive: true, force: true })
})

const seeded = (seed: number, length: number): Buffer => randomBytes(seed, length)

/** A sparse raw image: data at a few places (one not block-aligned, one at the very end), holes elsewhere. */
async function makeSource(path: string, sizeBytes = 4 * MiB + 12_345): Promise<Buffer> {
  const fh = await open(path, 'w')
  await fh.truncate(sizeBytes)
  await fh.write(seeded(1, 100_000), 0, 100_000, 0)
  await fh.write(seeded(2, 70_000), 0, 70_000, 1 * MiB + 333)
  await fh.write(Buffer.alloc(200_000), 0, 200_000, 2 * MiB) // explicit zeros: allocated, but stay holes on restore
  await fh.write(seeded(3, 5_000), 0, 5_000, sizeBytes - 5_000)
  await fh.close()
  return readFile(path)
}

function world(vault: MemoryVault, extra: Partial<RestoreWorld> = {}): RestoreWorld {
  return { vault, createWriter: createImageWriter, assertNotInUse: async () => undefined, ...extra }
}

describe('restorePoint', () => {
  it('restores a disk byte for byte and keeps holes as holes', async () => {
    const src = join(dir, 'src.img')
    const expected = await makeSource(src)
    const vault = new MemoryVault()
    const point = await vault.addPoint('vm', [{ name: 'system', path: src }])
    const progress: number[] = []
    const target = join(dir, 'out', 'restored.img')
    const result = await restorePoint(world(vault), { pointId: point.id, mode: 'file', targetPath: target }, { onProgress: (p) => progress.push(p.bytesDone) })
    expect(result.files).toEqual([target])
    expect((await readFile(target)).equals(expected)).toBe(true)
    const restoredBlocks = (await stat(target)).blocks
    const sourceBlocks = (await stat(src)).blocks
    expect(restoredBlocks).toBeLessThanOrEqual(sourceBlocks + 64 * 8) // + 256 KiB slack in 512 B units
    expect(result.bytesWritten).toBeLessThan(expected.length)
    expect(progress.at(-1)).toBe(expected.length)
    expect(await readdir(join(dir, 'out'))).toEqual(['restored.img'])
  })

  it('fetches chunks many at a time within the memory bound', async () => {
    const src = join(dir, 'dense.img')
    await writeFile(src, Buffer.concat(Array.from({ length: 32 }, (_, i) => seeded(i + 10, 64 * 1024))))
    const vault = new MemoryVault({ blockSize: 64 * 1024 })
    vault.beforeRead = () => new Promise((r) => setTimeout(r, 5))
    const point = await vault.addPoint('vm', [{ name: 'd', path: src }])
    await restorePoint(world(vault), { pointId: point.id, mode: 'file', targetPath: join(dir, 'dense-out.img') }, {
      batchBytes: 128 * 1024,
      maxBytesInFlight: 512 * 1024,
    })
    expect(vault.readCalls).toBe(16)
    expect(vault.maxConcurrentReads).toBeGreaterThan(1)
    expect(vault.maxConcurrentReads).toBeLessThanOrEqual(4)
    expect((await readFile(join(dir, 'dense-out.img'))).equals(await readFile(src))).toBe(true)
  })

  it('restores a whole machine into a folder, one file per disk with safe names', async () => {
    const a = join(dir, 'a.img')
    const b = join(dir, 'b.img')
    const da = await makeSource(a, 1 * MiB)
    const db = await makeSource(b, 2 * MiB + 512)
    const vault = new MemoryVault()
    const point = await vault.addPoint('vm', [
      { name: '../../escape.qcow2', path: a },
      { name: 'CON', path: b },
    ])
    const folder = join(dir, 'machine')
    const result = await restorePoint(world(vault), { pointId: point.id, mode: 'folder', targetPath: folder, format: 'raw' })
    expect(result.files).toEqual([join(folder, 'escape.img'), join(folder, '_CON.img')])
    expect((await readFile(result.files[0]!)).equals(da)).toBe(true)
    expect((await readFile(result.files[1]!)).equals(db)).toBe(true)
    expect((await readdir(folder)).sort()).toEqual(['_CON.img', 'escape.img'])
  })

  it('refuses an existing target unless overwrite was chosen', async () => {
    const src = join(dir, 'src.img')
    const expected = await makeSource(src, MiB)
    const vault = new MemoryVault()
    const point = await vault.addPoint('vm', [{ name: 'd', path: src }])
    const target = join(dir, 'exists.img')
    await writeFile(target, 'precious')
    await expect(restorePoint(world(vault), { pointId: point.id, mode: 'file', targetPath: target })).rejects.toMatchObject({ code: 'TARGET_EXISTS' })
    expect(await readFile(target, 'utf8')).toBe('precious')
    expect(await readdir(dir)).not.toContain('exists.img.partial')
    await restorePoint(world(vault), { pointId: point.id, mode: 'file', targetPath: target, overwrite: true })
    expect((await readFile(target)).equals(expected)).toBe(true)
  })

  it('refuses symlinks at the target, NUL in paths and targets inside the vault', async () => {
    const src = join(dir, 'src.img')
    await makeSource(src, MiB)
    const outside = join(dir, 'outside.txt')
    await writeFile(outside, 'keep me')
    const vaultDir = join(dir, 'vault')
    await mkdir(vaultDir)
    const vault = new MemoryVault({ path: vaultDir })
    const point = await vault.addPoint('vm', [{ name: 'd', path: src }])
    const link = join(dir, 'link.img')
    await symlink(outside, link)
    const w = world(vault)
    await expect(restorePoint(w, { pointId: point.id, mode: 'file', targetPath: link })).rejects.toMatchObject({ code: 'PATH_UNSAFE' })
    await expect(restorePoint(w, { pointId: point.id, mode: 'file', targetPath: link, overwrite: true })).rejects.toMatchObject({ code: 'PATH_UNSAFE' })
    expect(await readFile(outside, 'utf8')).toBe('keep me')
    // a symlink where a disk's file would go inside the chosen folder
    const folder = join(dir, 'folder')
    await mkdir(folder)
    await symlink(outside, join(folder, 'd.img'))
    await expect(restorePoint(w, { pointId: point.id, mode: 'folder', targetPath: folder, format: 'raw' })).rejects.toMatchObject({ code: 'PATH_UNSAFE' })
    // a symlinked .partial is never written through
    await symlink(outside, join(dir, 'x.img.partial'))
    await expect(restorePoint(w, { pointId: point.id, mode: 'file', targetPath: join(dir, 'x.img') })).rejects.toMatchObject({ code: 'PATH_UNSAFE' })
    expect(await readFile(outside, 'utf8')).toBe('keep me')
    await expect(restorePoint(w, { pointId: point.id, mode: 'file', targetPath: join(dir, 'a\0b.img') })).rejects.toMatchObject({ code: 'PATH_UNSAFE' })
    await expect(restorePoint(w, { pointId: point.id, mode: 'file', targetPath: join(vaultDir, 'sub', 'r.img') })).rejects.toMatchObject({ code: 'PATH_UNSAFE' })
    // through a symlinked folder that points into the vault
    await symlink(vaultDir, join(dir, 'innocent'))
    await expect(restorePoint(w, { pointId: point.id, mode: 'folder', targetPath: join(dir, 'innocent') })).rejects.toMatchObject({ code: 'PATH_UNSAFE' })
    expect(await readdir(vaultDir)).toEqual([])
  })

  it('fails loudly on a corrupt chunk and leaves neither the final file nor a .partial', async () => {
    const src = join(dir, 'src.img')
    await makeSource(src, 2 * MiB)
    const vault = new MemoryVault()
    const point = await vault.addPoint('vm', [{ name: 'd', path: src }])
    const [firstId] = [...vault.chunks.keys()]
    const chunk = vault.chunks.get(firstId!)!
    chunk[10] = chunk[10]! ^ 0x40
    await mkdir(join(dir, 'out'))
    await expect(restorePoint(world(vault), { pointId: point.id, mode: 'file', targetPath: join(dir, 'out', 'r.img') })).rejects.toMatchObject({ code: 'CHUNK_CORRUPT' })
    expect(await readdir(join(dir, 'out'))).toEqual([])
  })

  it('checks each block against its recorded checksum', async () => {
    const src = join(dir, 'src.img')
    await makeSource(src, 2 * MiB)
    const vault = new MemoryVault()
    const point = await vault.addPoint('vm', [{ name: 'd', path: src }])
    const entry = vault.points.get(point.id)!.maps[0]!.find((e) => e.kind === 'data')!
    if (entry.kind === 'data') entry.checksum = Buffer.alloc(16, 7)
    await mkdir(join(dir, 'out'))
    await expect(restorePoint(world(vault), { pointId: point.id, mode: 'file', targetPath: join(dir, 'out', 'r.img') })).rejects.toMatchObject({ code: 'VAULT_DAMAGED' })
    expect(await readdir(join(dir, 'out'))).toEqual([])
  })

  it('cancels: CANCELLED, and no file is left', async () => {
    const src = join(dir, 'src.img')
    await writeFile(src, Buffer.concat(Array.from({ length: 32 }, (_, i) => seeded(i, 64 * 1024))))
    const vault = new MemoryVault()
    const point = await vault.addPoint('vm', [{ name: 'd', path: src }])
    const controller = new AbortController()
    vault.beforeRead = () => {
      if (vault.readCalls === 2) controller.abort()
    }
    await mkdir(join(dir, 'out'))
    await expect(
      restorePoint(world(vault), { pointId: point.id, mode: 'file', targetPath: join(dir, 'out', 'r.img') }, { signal: controller.signal, batchBytes: 64 * 1024 }),
    ).rejects.toMatchObject({ code: 'CANCELLED' })
    expect(await readdir(join(dir, 'out'))).toEqual([])
  })

  it('replaces an original disk, keeping it until the new one is complete, then removing it', async () => {
    const src = join(dir, 'vm', 'disk.img')
    await mkdir(join(dir, 'vm'))
    const expected = await makeSource(src, MiB)
    const vault = new MemoryVault()
    const point = await vault.addPoint('vm', [{ name: 'disk', path: src }])
    await writeFile(src, 'the guest wrecked this disk')
    const checked: string[][] = []
    const result = await restorePoint(
      world(vault, {
        assertNotInUse: async (paths, o) => {
          checked.push(o.writersOnly ? paths : [])
        },
      }),
      { pointId: point.id, mode: 'replace' },
    )
    expect(result.files).toEqual([src])
    expect((await readFile(src)).equals(expected)).toBe(true)
    expect(await readdir(join(dir, 'vm'))).toEqual(['disk.img'])
    expect(checked.some((p) => p.includes(src))).toBe(true)
  })

  it('refuses to replace a disk that is in use, changing nothing', async () => {
    const src = join(dir, 'disk.img')
    await makeSource(src, MiB)
    const vault = new MemoryVault()
    const point = await vault.addPoint('vm', [{ name: 'disk', path: src }])
    await writeFile(src, 'running')
    const { EngineError } = await import('../../../electron/engine/errors.js')
    await expect(
      restorePoint(
        world(vault, {
          assertNotInUse: async () => {
            throw new EngineError('TARGET_IN_USE', 'in use')
          },
        }),
        { pointId: point.id, mode: 'replace' },
      ),
    ).rejects.toMatchObject({ code: 'TARGET_IN_USE' })
    expect(await readFile(src, 'utf8')).toBe('running')
    expect(await readdir(dir)).toEqual(['disk.img'])
  })

  it('reads the image back before replacing the original: a writer that corrupts data changes nothing', async () => {
    const src = join(dir, 'disk.img')
    const expected = await makeSource(src, MiB)
    const vault = new MemoryVault()
    const point = await vault.addPoint('vm', [{ name: 'disk', path: src }])
    await writeFile(src, 'current contents')
    const { createImageWriter: create } = await import('../../../electron/engine/formats/index.js')
    const sabotage: RestoreWorld['createWriter'] = async (path, format, options) => {
      const inner = await create(path, format, options)
      let first = true
      return {
        path: inner.path,
        format: inner.format,
        write: (offset, data) => {
          if (first) {
            first = false
            const copy = Buffer.from(data)
            copy[0] = copy[0]! ^ 1
            return inner.write(offset, copy)
          }
          return inner.write(offset, data)
        },
        finish: () => inner.finish(),
        abort: () => inner.abort(),
      }
    }
    await expect(restorePoint(world(vault, { createWriter: sabotage }), { pointId: point.id, mode: 'replace' })).rejects.toMatchObject({ code: 'IO_ERROR' })
    expect(await readFile(src, 'utf8')).toBe('current contents')
    expect(await readdir(dir)).toEqual(['disk.img'])
    // The same check is available for new files; with an honest writer it passes.
    const progress: string[] = []
    await restorePoint(world(vault), { pointId: point.id, mode: 'file', targetPath: join(dir, 'checked.img'), verifyAfterWrite: true }, { onProgress: (p) => progress.push(p.phase) })
    expect(progress).toContain('verifying')
    expect((await readFile(join(dir, 'checked.img'))).equals(expected)).toBe(true)
  })

  it('replaces a stale .partial, but never one that another restore is writing', async () => {
    const src = join(dir, 'src.img')
    const expected = await makeSource(src, MiB)
    const vault = new MemoryVault()
    const point = await vault.addPoint('vm', [{ name: 'd', path: src }])
    const target = join(dir, 'r.img')
    const busy = await open(target + '.partial', 'w') // "another restore" holds it open
    try {
      await expect(restorePoint(world(vault), { pointId: point.id, mode: 'file', targetPath: target })).rejects.toMatchObject({ code: 'TARGET_IN_USE' })
    } finally {
      await busy.close()
    }
    // Left behind by a killed restore (nobody has it open): replaced by a fresh one.
    await restorePoint(world(vault), { pointId: point.id, mode: 'file', targetPath: target })
    expect((await readFile(target)).equals(expected)).toBe(true)
    expect(await readdir(dir)).not.toContain('r.img.partial')
  })

  it('names disk files safely', () => {
    expect(diskFileName('../../etc/passwd', 'raw')).toBe('passwd.img')
    expect(diskFileName('win.vhdx', 'qcow2')).toBe('win.qcow2')
    expect(diskFileName('..', 'vhdx', 'disk0')).toBe('disk0.vhdx')
    expect(diskFileName('a\u0000b:c', 'vhd-fixed')).toBe('a_b_c.vhd')
    expect(diskFileName('lpt1.vmdk', 'raw')).toBe('_lpt1.img')
  })
})
