import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { join } from 'node:path'
import { open, stat, writeFile } from 'node:fs/promises'
import { convertImage, createImageWriter, openImage, probeFormat } from '../../../electron/engine/formats/index.js'
import { applyOps, collectExtents, compareWithQemu, createImage, mixedOps, qemuCompare, randomBytes, requireQemu, run, sha256File, tempDir } from '../../helpers/qemu.js'

const MiB = 1024 * 1024
let dir = ''
let cleanup: () => Promise<void> = async () => {}

beforeAll(async () => {
  requireQemu()
  ;({ dir, cleanup } = await tempDir('tresor-raw-'))
})
afterAll(async () => {
  await cleanup()
})

/** A sparse file: data written at a few places, holes elsewhere. */
async function sparseFile(name: string, size: number, pieces: Array<[number, Buffer]>): Promise<string> {
  const file = join(dir, name)
  const fh = await open(file, 'w')
  try {
    await fh.truncate(size)
    for (const [offset, data] of pieces) await fh.write(data, 0, data.length, offset)
  } finally {
    await fh.close()
  }
  return file
}

/** Our bytes equal qemu's for `file`, and our extents omit none of its data. */
async function expectSameAsQemu(file: string): Promise<void> {
  const r = await compareWithQemu(file, 'raw', dir)
  expect(r.ourSha256).toBe(r.qemuSha256)
  expect(r.firstOmitted).toBe(-1)
}

describe('raw reader', () => {
  it('reads a sparse file exactly, reports its data in extents, and never reads holes as data', async () => {
    const size = 16 * MiB + 512
    const file = await sparseFile('sparse.raw', size, [
      [0, randomBytes(1, 4096)],
      [3 * MiB + 100, randomBytes(2, 70000)],
      [9 * MiB, Buffer.alloc(MiB, 0x11)],
      [size - 512, Buffer.alloc(512, 0xff)],
    ])
    expect(await probeFormat(file)).toBe('raw')
    await expectSameAsQemu(file)
    const image = await openImage(file)
    try {
      expect(image.variant).toBe('sparse')
      const info = await image.info()
      // Extents cover the data written (granule-rounded) and little more.
      expect(info.allocatedBytes).toBeGreaterThanOrEqual(4096 + 70000 + MiB + 512)
      expect(info.allocatedBytes).toBeLessThan(3 * MiB)
    } finally {
      await image.close()
    }
  })

  it('maps a file still being written back without syncing it (delayed allocations are data)', async () => {
    const size = 8 * MiB
    const file = await sparseFile('delalloc.raw', size, [
      [192 * 1024, randomBytes(40, 64 * 1024)],
      [4000 * 1024, randomBytes(41, 4096)],
    ])
    const image = await openImage(file)
    try {
      const extents = await collectExtents(image)
      // unsynced map, accepted as it is (a file with no preallocated range needs no sync)
      expect((image as { extentMethod?: string }).extentMethod).toBe('fiemap')
      expect(extents).toEqual([
        { offset: 192 * 1024, length: 64 * 1024, zero: false },
        { offset: 4000 * 1024, length: 4096, zero: false },
      ])
    } finally {
      await image.close()
    }
  })

  it('FIEMAP and scanning agree: fresh (delayed-allocation) writes are data, preallocated ranges are not', async () => {
    const size = 8 * MiB
    const file = await sparseFile('fresh.raw', size, [
      [MiB + 5, randomBytes(11, 10000)],
      [size - 1, Buffer.from([1])],
    ])
    expect((await run('fallocate', ['-o', String(4 * MiB), '-l', String(MiB), file])).code).toBe(0)
    const byMap = await (async () => {
      const image = await openImage(file)
      try {
        return await collectExtents(image)
      } finally {
        await image.close()
      }
    })()
    process.env.TRESOR_RAW_EXTENTS = 'scan'
    let byScan
    try {
      const image = await openImage(file)
      byScan = await collectExtents(image)
      await image.close()
    } finally {
      delete process.env.TRESOR_RAW_EXTENTS
    }
    for (const extents of [byMap, byScan]) {
      const r = await compareWithQemu(file, 'raw', dir)
      expect(r.firstOmitted).toBe(-1)
      const covered = (at: number): boolean => extents.some((e) => !e.zero && at >= e.offset && at < e.offset + e.length)
      expect(covered(MiB + 5)).toBe(true)
      expect(covered(MiB + 10004)).toBe(true)
      expect(covered(size - 1)).toBe(true)
      expect(covered(4 * MiB + 4096)).toBe(false) // unwritten preallocation reads as zeros
      expect(covered(6 * MiB)).toBe(false)
    }
    // The file system's map is block-exact where scanning rounds to 64 KiB granules.
    expect(byMap.reduce((s, e) => s + e.length, 0)).toBeLessThanOrEqual(byScan.reduce((s, e) => s + e.length, 0))
  })

  it('never takes data written into a preallocated range for zeros, synced or not', async () => {
    // ext4 keeps showing such a range as unwritten until the page is written back: the reader must
    // sync before it trusts the map. Fresh writes elsewhere show as delayed allocations: data.
    const size = 8 * MiB
    const file = await sparseFile('prealloc.raw', size, [])
    expect((await run('fallocate', ['-o', String(MiB), '-l', String(MiB), file])).code).toBe(0)
    expect((await run('sync', [file])).code).toBe(0)
    const inside = randomBytes(30, 4096)
    const fresh = randomBytes(31, 8192)
    const fh = await open(file, 'r+')
    try {
      await fh.write(inside, 0, inside.length, MiB + 300 * 1024)
      await fh.write(fresh, 0, fresh.length, 5 * MiB)
    } finally {
      await fh.close() // no fsync: both writes may be in memory only
    }
    const image = await openImage(file)
    try {
      const extents = await collectExtents(image)
      expect((image as { extentMethod?: string }).extentMethod).toBe('fiemap, synced')
      const covered = (at: number): boolean => extents.some((e) => !e.zero && at >= e.offset && at < e.offset + e.length)
      expect(covered(MiB + 300 * 1024)).toBe(true)
      expect(covered(MiB + 300 * 1024 + 4095)).toBe(true)
      expect(covered(5 * MiB)).toBe(true)
      expect(covered(5 * MiB + 8191)).toBe(true)
      expect(covered(MiB + 700 * 1024)).toBe(false) // still preallocated, never written
      const back = Buffer.alloc(inside.length)
      await image.read(back, MiB + 300 * 1024)
      expect(back.equals(inside)).toBe(true)
    } finally {
      await image.close()
    }
    await expectSameAsQemu(file)
  })

  it('takes the file system map as it is when its pieces lie back to back on disk (no scan after it)', async () => {
    // Written in one go, the pieces get consecutive disk blocks: filefrag prints one line per piece
    // but counts them as one extent. The map is complete all the same.
    const size = 8 * MiB
    const pieces: Array<[number, Buffer]> = [0, 2, 4, 6, 40].map((k, i) => [k * 64 * 1024, randomBytes(20 + i, 64 * 1024)])
    const file = await sparseFile('contiguous.raw', size, pieces)
    expect((await run('sync', [file])).code).toBe(0) // on disk: lines with physical addresses
    const image = await openImage(file)
    try {
      const extents = await collectExtents(image)
      expect((image as { extentMethod?: string }).extentMethod).toBe('fiemap')
      expect(extents).toEqual([0, 2, 4, 6, 40].map((k) => ({ offset: k * 64 * 1024, length: 64 * 1024, zero: false })))
    } finally {
      await image.close()
    }
    await expectSameAsQemu(file)
  })

  it('a fully allocated file is one data extent; an empty sparse file has none', async () => {
    const full = join(dir, 'full.raw')
    await writeFile(full, randomBytes(3, 2 * MiB + 512))
    let image = await openImage(full)
    expect(await collectExtents(image)).toEqual([{ offset: 0, length: 2 * MiB + 512, zero: false }])
    await image.close()
    const empty = await sparseFile('empty.raw', 8 * MiB, [])
    image = await openImage(empty)
    expect(await collectExtents(image)).toEqual([])
    expect(image.virtualSize).toBe(8 * MiB)
    await image.close()
  })

  it('matches qemu on an image written by qemu-io (zero writes, discards, last sector)', async () => {
    const file = join(dir, 'qemu.raw')
    const size = 10 * MiB + 3 * 512
    await createImage(file, 'raw', size)
    await applyOps(file, 'raw', mixedOps(17, size, 40), dir)
    await expectSameAsQemu(file)
  })

  it('blockingReads reads on the calling thread: the bytes are there before the first await', async () => {
    const data = randomBytes(77, 3 * MiB + 1000)
    const file = await sparseFile('blocking.raw', 8 * MiB, [[MiB + 5, data]])
    for (const blockingReads of [true, false]) {
      const image = await openImage(file, { blockingReads })
      try {
        const buf = Buffer.alloc(data.length)
        const pending = image.read(buf, MiB + 5)
        // Blocking: filled before read() returns. Without, a thread-pool thread fills it at some
        // point before `pending` settles (possibly already, on a loaded machine: no assertion).
        if (blockingReads) expect(buf.equals(data)).toBe(true)
        await pending
        expect(buf.equals(data)).toBe(true)
        await expect(image.read(Buffer.alloc(10), 8 * MiB - 5)).rejects.toMatchObject({ code: 'INVALID_INPUT' })
      } finally {
        await image.close()
      }
    }
  })

  it('refuses reads past the end', async () => {
    const file = join(dir, 'small.raw')
    await writeFile(file, Buffer.alloc(1024, 1))
    const image = await openImage(file)
    try {
      await expect(image.read(Buffer.alloc(512), 768)).rejects.toMatchObject({ code: 'INVALID_INPUT' })
    } finally {
      await image.close()
    }
  })
})

describe('raw writer', () => {
  it('writes holes for zero ranges, sizes the file, and matches the source', async () => {
    const size = 12 * MiB + 512
    const src = await sparseFile('wsrc.raw', size, [
      [MiB, randomBytes(5, 2 * MiB)],
      [6 * MiB, Buffer.alloc(3 * MiB)], // explicit zeros: must become a hole
      [10 * MiB + 7, randomBytes(6, 1000)],
      [size - 100, Buffer.alloc(100, 9)],
    ])
    const out = join(dir, 'wout.raw')
    const { bytesWritten } = await convertImage(src, out, 'raw')
    expect(bytesWritten).toBeGreaterThan(2 * MiB)
    expect(bytesWritten).toBeLessThan(3 * MiB)
    const st = await stat(out)
    expect(st.size).toBe(size)
    expect(st.blocks * 512).toBeLessThan(3 * MiB) // sparse: not 12 MiB
    expect(await sha256File(out)).toBe(await sha256File(src))
    expect((await qemuCompare(src, 'raw', out, 'raw')).same).toBe(true)
  })

  it('refuses an existing file unless overwrite, and accepts unaligned writes', async () => {
    const out = join(dir, 'exists.raw')
    await writeFile(out, 'keep me')
    await expect(createImageWriter(out, 'raw', { virtualSize: MiB })).rejects.toMatchObject({ code: 'ALREADY_EXISTS' })
    const w = await createImageWriter(out, 'raw', { virtualSize: MiB, overwrite: true })
    await w.write(3, Buffer.from('abc'))
    await w.write(70000, Buffer.alloc(5, 1))
    await w.finish()
    const data = await import('node:fs/promises').then((m) => m.readFile(out))
    expect(data.length).toBe(MiB)
    expect(data.subarray(0, 6).toString('latin1')).toBe('\0\0\0abc')
    expect(data[70004]).toBe(1)
  })
})
