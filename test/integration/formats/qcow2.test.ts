import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { join } from 'node:path'
import { open, truncate, writeFile } from 'node:fs/promises'
import { EngineError } from '../../../electron/engine/errors.js'
import { openImage } from '../../../electron/engine/formats/index.js'
import {
  applyOps,
  compareWithQemu,
  compressibleBytes,
  createImage,
  mixedOps,
  qemuImg,
  randomBytes,
  requireQemu,
  tempDir,
  type IoOp,
} from '../../helpers/qemu.js'

const MiB = 1024 * 1024
let dir = ''
let cleanup: () => Promise<void> = async () => {}

beforeAll(async () => {
  requireQemu()
  ;({ dir, cleanup } = await tempDir('tresor-qcow2-'))
})
afterAll(async () => {
  await cleanup()
})

async function expectSameAsQemu(file: string): Promise<void> {
  const r = await compareWithQemu(file, 'qcow2', dir)
  expect(r.ourVirtualSize).toBe(r.qemuVirtualSize)
  expect(r.ourSha256).toBe(r.qemuSha256)
  expect(r.firstOmitted).toBe(-1)
}

async function expectCode(promise: Promise<unknown>, code: string): Promise<EngineError> {
  try {
    const image = (await promise) as { close?: () => Promise<void>; read?: unknown } | undefined
    await image?.close?.()
  } catch (err) {
    expect(err).toBeInstanceOf(EngineError)
    expect((err as EngineError).code).toBe(code)
    return err as EngineError
  }
  throw new Error(`expected EngineError ${code}, but it succeeded`)
}

describe('qcow2 reader matches qemu-img', () => {
  // Odd virtual sizes (not cluster multiples), every cluster size, both compat levels.
  const cases: Array<{ compat: string; cluster: number; size: number; seed: number }> = [
    { compat: '0.10', cluster: 512, size: 3 * MiB + 7 * 512, seed: 11 },
    { compat: '0.10', cluster: 65536, size: 9 * MiB + 512, seed: 12 },
    { compat: '1.1', cluster: 512, size: 3 * MiB + 512, seed: 13 },
    { compat: '1.1', cluster: 4096, size: 6 * MiB + 3 * 512, seed: 14 },
    { compat: '1.1', cluster: 65536, size: 12 * MiB + 512, seed: 15 },
    { compat: '1.1', cluster: 2 * MiB, size: 13 * MiB + 5 * 512, seed: 16 },
  ]
  for (const c of cases) {
    it(`compat ${c.compat}, ${c.cluster}-byte clusters, mixed writes, zero writes, discards, last sector`, async () => {
      const file = join(dir, `mixed-${c.compat}-${c.cluster}.qcow2`)
      await createImage(file, 'qcow2', c.size, [`compat=${c.compat}`, `cluster_size=${c.cluster}`])
      await applyOps(file, 'qcow2', mixedOps(c.seed, c.size, 40), dir)
      await expectSameAsQemu(file)
      const image = await openImage(file)
      try {
        expect(image.format).toBe('qcow2')
        expect(image.variant).toBe(c.compat === '0.10' ? 'v2' : 'v3')
        expect(image.clusterSize).toBe(c.cluster)
      } finally {
        await image.close()
      }
    })
  }

  for (const bits of [1, 64]) {
    it(`refcount width ${bits} bits`, async () => {
      const size = 5 * MiB + 512
      const file = join(dir, `refbits-${bits}.qcow2`)
      await createImage(file, 'qcow2', size, [`refcount_bits=${bits}`])
      await applyOps(file, 'qcow2', mixedOps(200 + bits, size, 25), dir)
      await expectSameAsQemu(file)
    })
  }

  for (const cluster of [16384, 65536, 2 * MiB]) {
    it(`extended L2 (subclusters) with ${cluster}-byte clusters`, async () => {
      const size = 10 * MiB + 512
      const file = join(dir, `extl2-${cluster}.qcow2`)
      await createImage(file, 'qcow2', size, ['extended_l2=on', `cluster_size=${cluster}`])
      // Small writes make partially allocated clusters; zero writes set subcluster zero bits.
      const ops: IoOp[] = [...mixedOps(100 + cluster, size, 30)]
      for (let i = 0; i < 12; i++) ops.push({ kind: 'random', offset: (i * 37 + 3) * 4096, length: 4096, seed: i })
      ops.push({ kind: 'zero', offset: 2 * cluster + cluster / 32, length: cluster / 16 })
      await applyOps(file, 'qcow2', ops, dir)
      await expectSameAsQemu(file)
    })
  }

  it('extended L2 subclusters over a backing file show the parent where unallocated', async () => {
    const base = join(dir, 'extl2-base.qcow2')
    const top = join(dir, 'extl2-top.qcow2')
    const size = 4 * MiB
    await createImage(base, 'qcow2', size)
    await applyOps(base, 'qcow2', [{ kind: 'pattern', offset: 0, length: size, byte: 0x77 }], dir)
    await createImage(top, 'qcow2', size, ['extended_l2=on', 'cluster_size=65536'], { file: base, format: 'qcow2' })
    await applyOps(top, 'qcow2', [
      { kind: 'random', offset: 4096, length: 2048, seed: 1 },
      { kind: 'zero', offset: 65536 + 8192, length: 4096 },
      { kind: 'random', offset: 3 * MiB + 512, length: 512, seed: 2 },
    ], dir)
    await expectSameAsQemu(top)
  })

  it('zlib-compressed clusters (qemu-io write -c and qemu-img convert -c)', async () => {
    const size = 8 * MiB
    const file = join(dir, 'zlib-io.qcow2')
    await createImage(file, 'qcow2', size)
    const ops: IoOp[] = []
    for (let i = 0; i < 16; i++) ops.push({ kind: 'compressed', offset: i * 4 * 65536, length: 65536 * (1 + (i % 3)), seed: 500 + i, compressible: i % 2 === 0 })
    ops.push({ kind: 'random', offset: 65536 + 100 * 512, length: 4096, seed: 9 }) // overwrite inside a compressed cluster
    await applyOps(file, 'qcow2', ops, dir)
    await expectSameAsQemu(file)

    const raw = join(dir, 'zlib-src.raw')
    await writeFile(raw, Buffer.concat([compressibleBytes(1, 3 * MiB), Buffer.alloc(MiB), randomBytes(2, MiB + 512)]))
    const conv = join(dir, 'zlib-convert.qcow2')
    await qemuImg('convert', '-f', 'raw', '-O', 'qcow2', '-c', raw, conv)
    await expectSameAsQemu(conv)
    const small = join(dir, 'zlib-convert-4k.qcow2')
    await qemuImg('convert', '-f', 'raw', '-O', 'qcow2', '-c', '-o', 'cluster_size=4096', raw, small)
    await expectSameAsQemu(small)
  })

  it('zstd-compressed clusters (qemu-img convert -c -o compression_type=zstd)', async () => {
    const raw = join(dir, 'zstd-src.raw')
    await writeFile(raw, Buffer.concat([compressibleBytes(3, 2 * MiB + 4096), Buffer.alloc(MiB), randomBytes(4, MiB), compressibleBytes(5, 777 * 512)]))
    for (const cluster of [4096, 65536, 2 * MiB]) {
      const conv = join(dir, `zstd-${cluster}.qcow2`)
      await qemuImg('convert', '-f', 'raw', '-O', 'qcow2', '-c', '-o', `compression_type=zstd,cluster_size=${cluster}`, raw, conv)
      await expectSameAsQemu(conv)
    }
  })

  it('external data file (raw and not raw)', async () => {
    for (const rawFlag of ['on', 'off']) {
      const file = join(dir, `ext-${rawFlag}.qcow2`)
      const size = 6 * MiB + 512
      // qemu-img create resolves a relative data file name against its working folder: pass it absolute.
      await createImage(file, 'qcow2', size, [`data_file=${join(dir, `ext-${rawFlag}.data`)}`, `data_file_raw=${rawFlag}`])
      await applyOps(file, 'qcow2', mixedOps(77, size, 25, { discard: rawFlag === 'off' }), dir)
      await expectSameAsQemu(file)
    }
  })

  it('lists internal snapshots and persistent dirty bitmaps in info()', async () => {
    const file = join(dir, 'snap.qcow2')
    await createImage(file, 'qcow2', 4 * MiB)
    await applyOps(file, 'qcow2', [{ kind: 'random', offset: 0, length: MiB, seed: 3 }], dir)
    await qemuImg('snapshot', '-c', 'before-upgrade', file) // qemu-img snapshot has no -f
    await applyOps(file, 'qcow2', [{ kind: 'pattern', offset: 0, length: 65536, byte: 9 }], dir)
    await qemuImg('snapshot', '-c', 'second', file)
    await qemuImg('bitmap', '-f', 'qcow2', '--add', '-g', '131072', file, 'backup-0')
    await qemuImg('bitmap', '-f', 'qcow2', '--add', '--disable', file, 'old')
    await expectSameAsQemu(file)
    const image = await openImage(file)
    try {
      const info = await image.info()
      expect(info.snapshots?.map((s) => s.name)).toEqual(['before-upgrade', 'second'])
      expect(info.dirtyBitmaps).toEqual([
        { name: 'backup-0', granularityBytes: 131072, enabled: true },
        { name: 'old', granularityBytes: 65536, enabled: false },
      ])
      expect(info.allocatedBytes).toBe(MiB)
    } finally {
      await image.close()
    }
  })
})

describe('qcow2 bad input gives typed errors', () => {
  async function goodImage(name: string): Promise<string> {
    const file = join(dir, name)
    await createImage(file, 'qcow2', 4 * MiB)
    await applyOps(file, 'qcow2', [{ kind: 'random', offset: 0, length: 2 * MiB, seed: 42 }], dir)
    return file
  }
  async function patch(file: string, offset: number, bytes: Buffer): Promise<void> {
    const fh = await open(file, 'r+')
    try {
      await fh.write(bytes, 0, bytes.length, offset)
    } finally {
      await fh.close()
    }
  }
  async function readAll(file: string): Promise<void> {
    const image = await openImage(file)
    try {
      const buf = Buffer.alloc(MiB)
      for (let p = 0; p < image.virtualSize; p += buf.length) await image.read(buf.subarray(0, Math.min(buf.length, image.virtualSize - p)), p)
      for await (const e of image.extents()) void e
    } finally {
      await image.close()
    }
  }

  it('encrypted image: IMAGE_ENCRYPTED', async () => {
    const file = join(dir, 'enc.qcow2')
    // qemu-img times PBKDF2 by the thread's CPU time to pick the LUKS iteration count; on a loaded
    // machine with tick-based accounting that can read 0 ms ("Unable to get accurate CPU usage").
    // Only this fixture step is retried.
    for (let attempt = 1; ; attempt++) {
      try {
        await qemuImg('create', '-q', '-f', 'qcow2', '--object', 'secret,id=sec0,data=hunter2', '-o', 'encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=200', file, '1M')
        break
      } catch (err) {
        if (attempt === 5 || !String(err).includes('Unable to get accurate CPU usage')) throw err
      }
    }
    await expectCode(openImage(file), 'IMAGE_ENCRYPTED')
  })

  it('truncated file: IMAGE_MALFORMED', async () => {
    const file = await goodImage('trunc.qcow2')
    await truncate(file, 300 * 1024)
    await expectCode(readAll(file), 'IMAGE_MALFORMED')
    await truncate(file, 50)
    await expectCode(openImage(file), 'IMAGE_MALFORMED')
  })

  it('L1 table offset past the end of the file: IMAGE_MALFORMED', async () => {
    const file = await goodImage('l1past.qcow2')
    const b = Buffer.alloc(8)
    b.writeBigUInt64BE(1n << 40n)
    await patch(file, 40, b)
    const err = await expectCode(openImage(file), 'IMAGE_MALFORMED')
    expect(err.userMessage).toContain(file)
  })

  it('absurd sizes and fields: IMAGE_MALFORMED or IMAGE_UNSUPPORTED, never a huge allocation', async () => {
    const l1 = await goodImage('absurd-l1.qcow2')
    const b = Buffer.alloc(4)
    b.writeUInt32BE(0xffffffff)
    await patch(l1, 36, b) // l1_size
    await expectCode(openImage(l1), 'IMAGE_MALFORMED')

    const bits = await goodImage('absurd-bits.qcow2')
    b.writeUInt32BE(40)
    await patch(bits, 20, b) // cluster_bits
    await expectCode(openImage(bits), 'IMAGE_MALFORMED')

    const vsize = await goodImage('absurd-size.qcow2')
    const s = Buffer.alloc(8)
    s.writeBigUInt64BE(1n << 62n)
    await patch(vsize, 24, s)
    await expectCode(openImage(vsize), 'IMAGE_MALFORMED')

    const l2 = await goodImage('absurd-l2.qcow2')
    // Point the first L1 entry at an unaligned offset, then past the end of the file.
    const hdr = await open(l2, 'r')
    const h = Buffer.alloc(48)
    await hdr.read(h, 0, 48, 0)
    await hdr.close()
    const l1Offset = Number(h.readBigUInt64BE(40))
    const e = Buffer.alloc(8)
    e.writeBigUInt64BE((1n << 63n) | 512n)
    await patch(l2, l1Offset, e)
    await expectCode(readAll(l2), 'IMAGE_MALFORMED')
    e.writeBigUInt64BE((1n << 63n) | (1n << 40n))
    await patch(l2, l1Offset, e)
    await expectCode(readAll(l2), 'IMAGE_MALFORMED')

    const ver = await goodImage('version.qcow2')
    b.writeUInt32BE(9)
    await patch(ver, 4, b)
    await expectCode(openImage(ver), 'IMAGE_UNSUPPORTED')
  })

  it('backing loop a -> b -> a: IMAGE_BACKING_LOOP, no hang', async () => {
    const a = join(dir, 'loop-a.qcow2')
    const b = join(dir, 'loop-b.qcow2')
    await createImage(b, 'qcow2', MiB)
    await createImage(a, 'qcow2', MiB, [], { file: b, format: 'qcow2' })
    await qemuImg('rebase', '-u', '-f', 'qcow2', '-b', a, '-F', 'qcow2', b)
    await expectCode(openImage(a), 'IMAGE_BACKING_LOOP')
    const self = join(dir, 'loop-self.qcow2')
    await createImage(self, 'qcow2', MiB)
    await qemuImg('rebase', '-u', '-f', 'qcow2', '-b', 'loop-self.qcow2', '-F', 'qcow2', self)
    await expectCode(openImage(self), 'IMAGE_BACKING_LOOP')
  })

  it('missing backing file: IMAGE_BACKING_MISSING naming it', async () => {
    const base = join(dir, 'gone-base.qcow2')
    const top = join(dir, 'gone-top.qcow2')
    await createImage(base, 'qcow2', MiB)
    await createImage(top, 'qcow2', MiB, [], { file: base, format: 'qcow2' })
    await truncate(base, 0)
    const { rm } = await import('node:fs/promises')
    await rm(base)
    const err = await expectCode(openImage(top), 'IMAGE_BACKING_MISSING')
    expect(err.userMessage).toContain('gone-base.qcow2')
    // Without following backing files, the top image still opens.
    const image = await openImage(top, { noBacking: true })
    expect(image.backing).toBeUndefined()
    await image.close()
  })

  it('a chain deeper than maxChainDepth: IMAGE_BACKING_LOOP', async () => {
    let prev = join(dir, 'deep-0.qcow2')
    await createImage(prev, 'qcow2', MiB)
    for (let i = 1; i <= 4; i++) {
      const next = join(dir, `deep-${i}.qcow2`)
      await createImage(next, 'qcow2', MiB, [], { file: prev, format: 'qcow2' })
      prev = next
    }
    await expectCode(openImage(prev, { maxChainDepth: 2 }), 'IMAGE_BACKING_LOOP')
    const image = await openImage(prev, { maxChainDepth: 4 })
    expect((await image.info()).backingChain).toHaveLength(4)
    await image.close()
  })
})
