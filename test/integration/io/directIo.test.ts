/**
 * The raw and qcow2 writers' direct I/O (io/directIo.ts): aligned writes from the writer's own buffers
 * bypass the page cache (checked with util-linux `fincore`, which counts a file's cached pages),
 * everything else goes through the ordinary handle, and the file reads back exactly, holes kept,
 * with direct I/O on and off.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { join } from 'node:path'
import { readFile, stat, writeFile } from 'node:fs/promises'
import { createImageWriter, openImage } from '../../../electron/engine/formats/index.js'
import { openDirect } from '../../../electron/engine/io/directIo.js'
import { randomBytes, run, tempDir } from '../../helpers/qemu.js'

const MiB = 1024 * 1024
let dir = ''
let cleanup: () => Promise<void> = async () => {}

beforeAll(async () => {
  ;({ dir, cleanup } = await tempDir('tresor-direct-'))
})
afterAll(async () => {
  await cleanup()
})

/** Bytes of `file` in the page cache, from `fincore`. */
async function cachedBytes(file: string): Promise<number> {
  const r = await run('fincore', ['--bytes', '--noheadings', '--raw', '--output', 'RES', file])
  expect(r.code, r.stderr).toBe(0)
  return Number(r.stdout.trim())
}

/**
 * Writes a 40 MiB + 1000 B image: 32 MiB from the writer's buffers at aligned offsets, then pieces
 * that cannot go direct (a 512-byte-aligned offset, an odd length, a caller's own buffer, the
 * unaligned tail of the disk). Returns the path and the expected content.
 */
async function writeMixed(name: string): Promise<{ file: string; expected: Buffer; cached: number }> {
  const size = 40 * MiB + 1000
  const expected = Buffer.alloc(size)
  const file = join(dir, name)
  const writer = await createImageWriter(file, 'raw', { virtualSize: size })
  expect(writer.allocBuffer).toBeTypeOf('function')
  const a = writer.allocBuffer!(4 * MiB)
  const b = writer.allocBuffer!(4 * MiB)
  let offset = 0
  for (let i = 0; i < 8; i++, offset += 4 * MiB) {
    const buf = i % 2 === 0 ? a : b
    randomBytes(100 + i, 4 * MiB).copy(buf)
    buf.copy(expected, offset)
    await writer.write(offset, buf)
  }
  const pieces: Array<[number, Buffer]> = [
    [offset + 512, randomBytes(7, 8192)], // 512-aligned position
    [offset + MiB, randomBytes(8, 65536 + 77)], // odd length: aligned head direct, tail buffered
    [offset + 3 * MiB, randomBytes(9, 2 * MiB)], // a caller's buffer (not aligned memory)
  ]
  for (const [at, data] of pieces) {
    const buf = at === offset + 3 * MiB ? data : writer.allocBuffer!(data.length)
    if (buf !== data) data.copy(buf)
    data.copy(expected, at)
    await writer.write(at, buf.subarray(0, data.length))
  }
  const tail = randomBytes(10, 1000)
  tail.copy(expected, size - 1000)
  await writer.write(size - 1000, tail)
  const cached = await cachedBytes(file)
  const { bytesWritten } = await writer.finish()
  expect(bytesWritten).toBe(32 * MiB + 8192 + 65536 + 77 + 2 * MiB + 1000)
  return { file, expected, cached }
}

describe('raw writer direct I/O', () => {
  it('is available on the test file system', async () => {
    await writeFile(join(dir, 'probe'), '')
    const direct = await openDirect(join(dir, 'probe'))
    expect(direct, 'O_DIRECT must open on the temp folder (ext4, XFS and tmpfs all allow it)').toBeDefined()
    await direct!.close()
  })

  it('writes aligned data around the page cache and the rest through it; content and holes exact', async () => {
    const { file, expected, cached } = await writeMixed('direct.raw')
    // 32 MiB went direct; only the few buffered pieces (about 2.1 MiB) may sit in the cache.
    expect(cached).toBeLessThan(4 * MiB)
    expect((await readFile(file)).equals(expected)).toBe(true)
    const st = await stat(file)
    expect(st.size).toBe(expected.length)
    expect(st.blocks * 512).toBeLessThan(38 * MiB) // the unwritten ranges stay holes
  })

  it('with direct I/O turned off writes the same bytes through the page cache', async () => {
    process.env.TRESOR_NO_DIRECT_IO = '1'
    try {
      const { file, expected, cached } = await writeMixed('buffered.raw')
      expect(cached).toBeGreaterThan(32 * MiB)
      expect((await readFile(file)).equals(expected)).toBe(true)
    } finally {
      delete process.env.TRESOR_NO_DIRECT_IO
    }
  })

  it('qcow2: whole clusters from the writer\'s buffers go direct, the rest (partial clusters, metadata) buffered; reads back exactly', async () => {
    const size = 24 * MiB + 3000
    const expected = Buffer.alloc(size)
    const file = join(dir, 'direct.qcow2')
    const writer = await createImageWriter(file, 'qcow2', { virtualSize: size })
    const buf = writer.allocBuffer!(4 * MiB)
    for (let i = 0; i < 4; i++) {
      randomBytes(200 + i, 4 * MiB).copy(buf)
      buf.copy(expected, i * 4 * MiB)
      await writer.write(i * 4 * MiB, buf)
    }
    const odd = randomBytes(300, 70_000) // a caller's buffer, not cluster aligned at its end
    odd.copy(expected, 20 * MiB + 512)
    await writer.write(20 * MiB + 512, odd)
    const tail = randomBytes(301, 3000)
    tail.copy(expected, size - 3000)
    await writer.write(size - 3000, tail)
    const cached = await cachedBytes(file)
    await writer.finish()
    expect(cached).toBeLessThan(4 * MiB) // 16 MiB of clusters went around the page cache
    const image = await openImage(file)
    try {
      const got = Buffer.alloc(size)
      await image.read(got, 0)
      expect(got.equals(expected)).toBe(true)
    } finally {
      await image.close()
    }
    const check = await run('qemu-img', ['check', '-f', 'qcow2', file])
    expect(check.code, check.stdout + check.stderr).toBe(0)
  })
})

