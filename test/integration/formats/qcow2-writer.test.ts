import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { join } from 'node:path'
import { writeFile } from 'node:fs/promises'
import { EngineError } from '../../../electron/engine/errors.js'
import { convertImage, createImageWriter, openImage } from '../../../electron/engine/formats/index.js'
import {
  applyOps,
  compareWithQemu,
  compressibleBytes,
  createImage,
  mixedOps,
  qemuCheck,
  qemuCompare,
  qemuImg,
  qemuInfo,
  randomBytes,
  requireQemu,
  tempDir,
} from '../../helpers/qemu.js'

const MiB = 1024 * 1024
let dir = ''
let cleanup: () => Promise<void> = async () => {}
let source = ''

beforeAll(async () => {
  requireQemu()
  ;({ dir, cleanup } = await tempDir('tresor-qcow2w-'))
  // A source with random, compressible and zero data, zero writes, discards and an odd size.
  source = join(dir, 'source.qcow2')
  const size = 21 * MiB + 3 * 512
  await createImage(source, 'qcow2', size, ['cluster_size=4096'])
  await applyOps(source, 'qcow2', [
    ...mixedOps(900, size, 60),
    { kind: 'compressed', offset: 5 * MiB, length: 3 * 65536, seed: 1, compressible: true },
    { kind: 'pattern', offset: size - 512, length: 512, byte: 0xee },
  ], dir)
})
afterAll(async () => {
  await cleanup()
})

async function expectCleanCopy(out: string): Promise<void> {
  const check = await qemuCheck(out, 'qcow2')
  expect(check, JSON.stringify(check.raw)).toMatchObject({ code: 0, corruptions: 0, leaks: 0 })
  const cmp = await qemuCompare(source, 'qcow2', out, 'qcow2')
  expect(cmp.same, cmp.output).toBe(true)
  const r = await compareWithQemu(out, 'qcow2', dir)
  expect(r.ourSha256).toBe(r.qemuSha256)
  expect(r.firstOmitted).toBe(-1)
}

describe('qcow2 writer passes qemu-img check and compare', () => {
  for (const cluster of [512, 4096, 65536, 2 * MiB]) {
    it(`converts with ${cluster}-byte clusters`, async () => {
      const out = join(dir, `out-${cluster}.qcow2`)
      const { bytesWritten } = await convertImage(source, out, 'qcow2', { clusterSize: cluster })
      expect(bytesWritten).toBeGreaterThan(0)
      await expectCleanCopy(out)
      const info = await qemuInfo(out, 'qcow2')
      expect(info['cluster-size']).toBe(cluster)
      expect((info['format-specific'] as { data: { compat: string } }).data.compat).toBe('1.1')
    })
  }

  for (const cluster of [4096, 65536]) {
    it(`zstd-compressed clusters (${cluster}-byte clusters)`, async () => {
      const out = join(dir, `out-zstd-${cluster}.qcow2`)
      await convertImage(source, out, 'qcow2', { compress: true, clusterSize: cluster })
      await expectCleanCopy(out)
      const info = await qemuInfo(out, 'qcow2')
      expect((info['format-specific'] as { data: { 'compression-type': string } }).data['compression-type']).toBe('zstd')
    })
  }

  it('many refcount blocks (512-byte clusters: one block per 128 KiB of file) with compression', async () => {
    const raw = join(dir, 'many.raw')
    await writeFile(raw, Buffer.concat([randomBytes(7, 3 * MiB), compressibleBytes(8, 2 * MiB), Buffer.alloc(MiB), randomBytes(9, 512 * 3)]))
    const out = join(dir, 'many.qcow2')
    await convertImage(raw, out, 'qcow2', { clusterSize: 512, compress: true })
    const check = await qemuCheck(out, 'qcow2')
    expect(check, JSON.stringify(check.raw)).toMatchObject({ code: 0, corruptions: 0, leaks: 0 })
    expect((await qemuCompare(raw, 'raw', out, 'qcow2')).same).toBe(true)
  })

  it('unaligned writes of any length, holes between them, the last partial cluster', async () => {
    const size = 5 * MiB + 512
    const out = join(dir, 'unaligned.qcow2')
    const w = await createImageWriter(out, 'qcow2', { virtualSize: size })
    const expected = Buffer.alloc(size)
    const writes: Array<[number, number]> = [[100, 3], [4000, 70000], [65536 * 3 + 1, 65535], [2 * MiB, MiB + 17], [size - 700, 700]]
    for (const [offset, length] of writes) {
      const data = randomBytes(offset, length)
      data.copy(expected, offset)
      await w.write(offset, data)
    }
    await w.finish()
    const raw = join(dir, 'unaligned-expected.raw')
    await writeFile(raw, expected)
    const check = await qemuCheck(out, 'qcow2')
    expect(check, JSON.stringify(check.raw)).toMatchObject({ code: 0, corruptions: 0, leaks: 0 })
    expect((await qemuCompare(raw, 'raw', out, 'qcow2')).same).toBe(true)
  })

  it('an all-zero or empty disk allocates no data cluster', async () => {
    const out = join(dir, 'empty.qcow2')
    const w = await createImageWriter(out, 'qcow2', { virtualSize: 4 * MiB })
    await w.write(0, Buffer.alloc(MiB))
    expect(await w.finish()).toEqual({ bytesWritten: 0 })
    const check = await qemuCheck(out, 'qcow2')
    expect(check.code).toBe(0)
    const image = await openImage(out)
    try {
      expect((await image.info()).allocatedBytes).toBe(0)
    } finally {
      await image.close()
    }
    const zero = join(dir, 'zero-size.qcow2')
    const z = await createImageWriter(zero, 'qcow2', { virtualSize: 0 })
    await z.finish()
    expect((await qemuCheck(zero, 'qcow2')).code).toBe(0)
  })

  it('refuses out-of-order writes, an existing file, and removes the file on abort', async () => {
    const out = join(dir, 'order.qcow2')
    const w = await createImageWriter(out, 'qcow2', { virtualSize: MiB })
    await w.write(4096, Buffer.alloc(512, 1))
    await expect(w.write(0, Buffer.alloc(512, 1))).rejects.toMatchObject({ code: 'INVALID_INPUT' })
    await w.abort()
    await expect(openImage(out)).rejects.toMatchObject({ code: 'NOT_FOUND' })
    await writeFile(out, 'x')
    await expect(createImageWriter(out, 'qcow2', { virtualSize: MiB })).rejects.toBeInstanceOf(EngineError)
    await expect(createImageWriter(out, 'qcow2', { virtualSize: MiB })).rejects.toMatchObject({ code: 'ALREADY_EXISTS' })
  })

  it('converts a backing chain to one standalone image', async () => {
    const base = join(dir, 'chain-base.qcow2')
    const top = join(dir, 'chain-top.qcow2')
    await createImage(base, 'qcow2', 6 * MiB)
    await applyOps(base, 'qcow2', mixedOps(31, 6 * MiB, 20), dir)
    await createImage(top, 'qcow2', 6 * MiB, [], { file: base, format: 'qcow2' })
    await applyOps(top, 'qcow2', mixedOps(32, 6 * MiB, 20), dir)
    const out = join(dir, 'chain-flat.qcow2')
    await convertImage(top, out, 'qcow2')
    const info = await qemuInfo(out, 'qcow2')
    expect(info['backing-filename']).toBeUndefined()
    expect((await qemuCheck(out, 'qcow2')).code).toBe(0)
    expect((await qemuCompare(top, 'qcow2', out, 'qcow2')).same).toBe(true)
    await qemuImg('check', '-f', 'qcow2', out)
  })
})
