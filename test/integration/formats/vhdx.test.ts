/**
 * VHDX against the oracle: images made by qemu-img / qemu-io 7.2 (always `-f vhdx`) with several
 * block sizes, log sizes, fixed and dynamic, zero writes, unmaps and discards, the last sector and
 * odd sizes; read by us and by `qemu-img convert -O raw`. Our writer's output must pass
 * `qemu-img check`, compare equal, and be read by libvhdi (`vhdimount`) the same way.
 */
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { convertImage, openImage } from '../../../electron/engine/formats/index.js'
import { createVhdxWriter } from '../../../electron/engine/formats/vhdx/index.js'
import {
  applyOps,
  collectExtents,
  compareWithQemu,
  createImage,
  mixedOps,
  ourGuestSha256,
  qemuCheck,
  qemuCompare,
  qemuInfo,
  qemuToRaw,
  requireQemu,
  sha256File,
  tempDir,
} from '../../helpers/qemu.js'
import { libvhdiGuest } from './vhd-builders.js'

const MiB = 1024 * 1024
let dir: string
let cleanup: () => Promise<void>

beforeAll(async () => {
  requireQemu()
  ;({ dir, cleanup } = await tempDir('tresor-vhdx-'))
})
afterAll(async () => {
  await cleanup?.()
})

const CASES = [
  { name: 'block-1M', size: 12 * MiB, opts: ['block_size=1M'] },
  { name: 'block-8M', size: 40 * MiB + 512 * 3, opts: ['block_size=8M'] },
  { name: 'block-32M', size: 48 * MiB, opts: ['block_size=32M'] },
  { name: 'auto-odd', size: 10_000_000, opts: [] },
  { name: 'log-2M-no-zero-state', size: 9 * MiB, opts: ['block_size=1M', 'log_size=2M', 'block_state_zero=off'] },
  { name: 'fixed-1M', size: 7 * MiB + 512, opts: ['subformat=fixed', 'block_size=1M'] },
]

describe('VHDX reader against qemu-img', () => {
  CASES.forEach((c, i) => {
    it(`reads ${c.name} exactly like qemu (bytes, virtual size, extents)`, async () => {
      const file = join(dir, `${c.name}.vhdx`)
      await createImage(file, 'vhdx', c.size, c.opts)
      const vs = Number((await qemuInfo(file, 'vhdx'))['virtual-size'])
      await applyOps(file, 'vhdx', mixedOps(500 + i, vs, 24), dir)
      const cmp = await compareWithQemu(file, 'vhdx', dir)
      expect(cmp.ourVirtualSize).toBe(cmp.qemuVirtualSize)
      expect(cmp.ourSha256).toBe(cmp.qemuSha256)
      expect(cmp.firstOmitted).toBe(-1)
      const image = await openImage(file)
      try {
        expect(image.format).toBe('vhdx')
        expect(image.variant).toBe(c.opts.includes('subformat=fixed') ? 'fixed' : 'dynamic')
        expect((await image.info()).logicalSectorSize).toBe(512)
      } finally {
        await image.close()
      }
    })
  })
})

describe('VHDX large sparse disks', () => {
  it('walks a nearly empty 60 TiB disk quickly', async () => {
    const file = join(dir, 'huge.vhdx')
    const size = 60 * 1024 * 1024 * MiB
    await createImage(file, 'vhdx', size)
    await applyOps(file, 'vhdx', [{ kind: 'pattern', offset: size - 4096, length: 4096, byte: 9 }], dir)
    const started = Date.now()
    const image = await openImage(file)
    try {
      expect(image.virtualSize).toBe(size)
      const extents = await collectExtents(image)
      const data = extents.filter((e) => !e.zero)
      expect(data).toEqual([{ offset: size - image.clusterSize, length: image.clusterSize, zero: false }])
      const tail = Buffer.alloc(4096)
      await image.read(tail, size - 4096)
      expect(tail.every((b) => b === 9)).toBe(true)
    } finally {
      await image.close()
    }
    expect(Date.now() - started).toBeLessThan(20_000)
  })
})

describe('VHDX writer', () => {
  const blockSizes = [undefined, MiB, 8 * MiB]
  blockSizes.forEach((bs, i) => {
    it(`writes a dynamic VHDX (${bs === undefined ? 'default 32 MiB' : bs / MiB + ' MiB'} blocks): qemu check clean, compare equal, libvhdi agrees`, async () => {
      const src = join(dir, `wsrc-${i}.vhdx`)
      await createImage(src, 'vhdx', 21 * MiB + 512 * 5, ['block_size=1M'])
      const vs = Number((await qemuInfo(src, 'vhdx'))['virtual-size'])
      await applyOps(src, 'vhdx', mixedOps(600 + i, vs, 30), dir)
      const raw = `${src}.raw`
      await qemuToRaw(src, 'vhdx', raw)
      const out = join(dir, `wout-${i}.vhdx`)
      await convertImage(src, out, 'vhdx', bs === undefined ? {} : { clusterSize: bs })
      const check = await qemuCheck(out, 'vhdx')
      expect(check.code, JSON.stringify(check.raw)).toBe(0)
      const cmp = await qemuCompare(out, 'vhdx', raw, 'raw')
      expect(cmp.same, cmp.output).toBe(true)
      const info = await qemuInfo(out, 'vhdx')
      expect(Number(info['virtual-size'])).toBe(vs)
      expect(Number(info['cluster-size'])).toBe(bs ?? 32 * MiB)
      const image = await openImage(out)
      try {
        expect(await ourGuestSha256(image)).toBe(await sha256File(raw))
      } finally {
        await image.close()
      }
      const lib = await libvhdiGuest(out, dir)
      expect(lib.size).toBe(vs)
      expect(lib.sha256).toBe(await sha256File(raw))
    })
  })

  it('converts a VHD into a VHDX and back', async () => {
    const src = join(dir, 'from.vhd')
    await createImage(src, 'vpc', 9 * MiB, ['force_size=on'])
    await applyOps(src, 'vpc', mixedOps(650, 9 * MiB, 16, { discard: false }), dir)
    const out = join(dir, 'from-vhd.vhdx')
    await convertImage(src, out, 'vhdx', { clusterSize: MiB })
    expect((await qemuCheck(out, 'vhdx')).code).toBe(0)
    expect((await qemuCompare(out, 'vhdx', src, 'vpc')).same).toBe(true)
    const back = join(dir, 'back.vhd')
    await convertImage(out, back, 'vhd')
    expect((await qemuCompare(back, 'vpc', src, 'vpc')).same).toBe(true)
  })

  it('leaves zero-only blocks unallocated, and rounds odd sizes up to a sector', async () => {
    const out = join(dir, 'zeros.vhdx')
    const w = await createVhdxWriter(out, { virtualSize: 5 * MiB + 1, clusterSize: MiB })
    await w.write(0, Buffer.alloc(2 * MiB))
    await w.write(3 * MiB + 7, Buffer.from('tail'))
    await w.write(5 * MiB, Buffer.from([1]))
    await w.finish()
    expect((await qemuCheck(out, 'vhdx')).code).toBe(0)
    const image = await openImage(out)
    try {
      expect(image.virtualSize).toBe(5 * MiB + 512)
      expect(await collectExtents(image)).toEqual([
        { offset: 3 * MiB, length: MiB, zero: false },
        { offset: 5 * MiB, length: 512, zero: false },
      ])
    } finally {
      await image.close()
    }
  })

  it('refuses block sizes the format does not allow', async () => {
    await expect(createVhdxWriter(join(dir, 'bad-bs.vhdx'), { virtualSize: MiB, clusterSize: 512 * 1024 })).rejects.toMatchObject({ code: 'INVALID_INPUT' })
  })
})
