import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { join } from 'node:path'
import { openImage } from '../../../electron/engine/formats/index.js'
import { applyOps, compareWithQemu, createImage, mixedOps, qemuImg, requireQemu, tempDir, type QemuFormat } from '../../helpers/qemu.js'

const MiB = 1024 * 1024
let dir = ''
let cleanup: () => Promise<void> = async () => {}

beforeAll(async () => {
  requireQemu()
  ;({ dir, cleanup } = await tempDir('tresor-chain-'))
})
afterAll(async () => {
  await cleanup()
})

async function expectSameAsQemu(file: string, format: QemuFormat = 'qcow2'): Promise<void> {
  const r = await compareWithQemu(file, format, dir)
  expect(r.ourVirtualSize).toBe(r.qemuVirtualSize)
  expect(r.ourSha256).toBe(r.qemuSha256)
  expect(r.firstOmitted).toBe(-1)
}

describe('backing chains give the guest view', () => {
  for (const compat of ['0.10', '1.1']) {
    it(`depth 3: raw base, qcow2 mid, qcow2 top (compat ${compat}), growing sizes, zero writes and discards on top`, async () => {
      const base = join(dir, `c${compat}-base.raw`)
      const mid = join(dir, `c${compat}-mid.qcow2`)
      const top = join(dir, `c${compat}-top.qcow2`)
      await createImage(base, 'raw', 6 * MiB)
      await applyOps(base, 'raw', mixedOps(1, 6 * MiB, 30, { discard: false, zero: false }), dir)
      await applyOps(base, 'raw', [{ kind: 'pattern', offset: 0, length: 6 * MiB, byte: 0x3c }, ...mixedOps(2, 6 * MiB, 20, { discard: false, zero: false })], dir)
      // The mid image is larger than its base: the tail reads zeros from the base's end.
      await createImage(mid, 'qcow2', 8 * MiB + 512, [`compat=${compat}`, 'cluster_size=4096'], { file: 'c' + compat + '-base.raw', format: 'raw' })
      await applyOps(mid, 'qcow2', mixedOps(3, 8 * MiB + 512, 30), dir)
      await createImage(top, 'qcow2', 10 * MiB + 3 * 512, [`compat=${compat}`], { file: mid, format: 'qcow2' })
      await applyOps(top, 'qcow2', [
        ...mixedOps(4, 10 * MiB + 3 * 512, 30),
        { kind: 'zero', offset: 65536, length: 3 * 65536 },
        { kind: 'discard', offset: 2 * MiB, length: MiB },
      ], dir)
      await expectSameAsQemu(top)
      const blocking = await compareWithQemu(top, 'qcow2', dir, { blockingReads: true })
      expect(blocking.ourSha256).toBe(blocking.qemuSha256)
      const image = await openImage(top)
      try {
        const info = await image.info()
        expect(info.backingChain.map((b) => b.format)).toEqual(['qcow2', 'raw'])
        expect(info.backingChain[1]?.path).toBe(base)
      } finally {
        await image.close()
      }
    })
  }

  it('a backing file larger than its child is clipped to the child', async () => {
    const base = join(dir, 'big-base.qcow2')
    const top = join(dir, 'small-top.qcow2')
    await createImage(base, 'qcow2', 8 * MiB)
    await applyOps(base, 'qcow2', [{ kind: 'pattern', offset: 0, length: 8 * MiB, byte: 0x42 }], dir)
    await createImage(top, 'qcow2', 3 * MiB + 512, [], { file: base, format: 'qcow2' })
    await applyOps(top, 'qcow2', [{ kind: 'random', offset: MiB, length: 4096, seed: 5 }], dir)
    await expectSameAsQemu(top)
  })

  it('the backing format named by the image is honoured (a qcow2 file declared raw is read raw)', async () => {
    const inner = join(dir, 'inner.qcow2')
    const top = join(dir, 'declared-raw-top.qcow2')
    await createImage(inner, 'qcow2', 4 * MiB)
    await applyOps(inner, 'qcow2', [{ kind: 'random', offset: 0, length: MiB, seed: 8 }], dir)
    const { stat } = await import('node:fs/promises')
    const innerSize = (await stat(inner)).size
    await createImage(top, 'qcow2', innerSize, [], { file: inner, format: 'raw' })
    await applyOps(top, 'qcow2', [{ kind: 'pattern', offset: 65536 * 3, length: 4096, byte: 7 }], dir)
    await expectSameAsQemu(top)
    const image = await openImage(top)
    try {
      expect(image.backing?.format).toBe('raw')
    } finally {
      await image.close()
    }
  })

  const parents: Array<{ format: QemuFormat; opts: string[]; ours: string }> = [
    { format: 'vmdk', opts: ['subformat=monolithicSparse'], ours: 'vmdk' },
    { format: 'vpc', opts: ['subformat=dynamic'], ours: 'vhd' },
    { format: 'vhdx', opts: [], ours: 'vhdx' },
  ]
  for (const p of parents) {
    it(`qcow2 over ${p.format} (${p.opts.join(',') || 'default'})`, async () => {
      const base = join(dir, `over-${p.format}.base`)
      const top = join(dir, `over-${p.format}.qcow2`)
      await createImage(base, p.format, 8 * MiB, p.opts)
      await applyOps(base, p.format, mixedOps(20, 8 * MiB, 25, { discard: false, zero: false }), dir)
      const info = JSON.parse(await qemuImg('info', '-f', p.format, '--output=json', base)) as { 'virtual-size': number }
      await createImage(top, 'qcow2', info['virtual-size'], [], { file: base, format: p.format })
      await applyOps(top, 'qcow2', mixedOps(21, info['virtual-size'], 20), dir)
      await expectSameAsQemu(top)
      const image = await openImage(top)
      try {
        expect(image.backing?.format).toBe(p.ours)
      } finally {
        await image.close()
      }
    })
  }
})
