/**
 * Damaged and hostile VHD files: every failure is an EngineError with a clear code, never a crash,
 * a hang or an allocation sized by an untrusted field. A bounded mutation fuzz runs last and prints
 * its iteration count.
 */
import { open, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { EngineError } from '../../../electron/engine/errors.js'
import { openImage } from '../../../electron/engine/formats/index.js'
import { vhdChecksum } from '../../../electron/engine/formats/vhd/structures.js'
import { applyOps, collectExtents, createImage, mixedOps, ourGuestSha256, prng, qemuGuestSha256, requireQemu, tempDir } from '../../helpers/qemu.js'
import { buildVhdChild } from './vhd-builders.js'

const MiB = 1024 * 1024
let dir: string
let cleanup: () => Promise<void>
let dynamic: Buffer
let fixed: Buffer
let dynamicSha: string

beforeAll(async () => {
  requireQemu()
  ;({ dir, cleanup } = await tempDir('tresor-vhd-bad-'))
  const d = join(dir, 'good-dynamic.vhd')
  await createImage(d, 'vpc', 6 * MiB, ['force_size=on'])
  await applyOps(d, 'vpc', mixedOps(5, 6 * MiB, 12, { discard: false }), dir)
  dynamic = await readFile(d)
  dynamicSha = await qemuGuestSha256(d, 'vpc', dir)
  const f = join(dir, 'good-fixed.vhd')
  await createImage(f, 'vpc', 2 * MiB, ['subformat=fixed'])
  fixed = await readFile(f)
})
afterAll(async () => {
  await cleanup?.()
})

let n = 0
async function variant(base: Buffer, mutate: (b: Buffer) => Buffer | void): Promise<string> {
  const copy = Buffer.from(base)
  const out = mutate(copy) ?? copy
  const file = join(dir, `bad-${n++}.vhd`)
  await writeFile(file, out)
  return file
}

/** Fixes the checksum of the footer at `at` after a field change. */
function refooter(b: Buffer, at: number): void {
  b.writeUInt32BE(vhdChecksum(b.subarray(at, at + 512), 64), at + 64)
}
function reheader(b: Buffer): void {
  b.writeUInt32BE(vhdChecksum(b.subarray(512, 1536), 36), 512 + 36)
}

async function expectCode(file: string, code: string): Promise<void> {
  const err = await openImage(file, { format: 'vhd' }).then(
    async (img) => {
      await img.close()
      return undefined
    },
    (e: unknown) => e,
  )
  expect(err).toBeInstanceOf(EngineError)
  expect((err as EngineError).code).toBe(code)
  expect((err as EngineError).userMessage).toContain(file)
}

describe('damaged VHD files', () => {
  it('uses the footer copy at offset 0 when the footer at the end is damaged', async () => {
    const file = await variant(dynamic, (b) => {
      b[b.length - 512 + 70]! ^= 0xff // inside the unique id: checksum now wrong
    })
    const image = await openImage(file)
    try {
      expect(await ourGuestSha256(image)).toBe(dynamicSha)
    } finally {
      await image.close()
    }
  })

  it('refuses a dynamic disk whose two footers are both damaged', async () => {
    const file = await variant(dynamic, (b) => {
      b[b.length - 512 + 70]! ^= 0xff
      b[70]! ^= 0xff
    })
    await expectCode(file, 'IMAGE_MALFORMED')
  })

  it('refuses a fixed disk with a bad footer checksum', async () => {
    const file = await variant(fixed, (b) => {
      b[b.length - 512 + 64]! ^= 1
    })
    await expectCode(file, 'IMAGE_MALFORMED')
  })

  it('refuses a dynamic header with a bad checksum', async () => {
    const file = await variant(dynamic, (b) => {
      b[512 + 100]! ^= 0x10
    })
    await expectCode(file, 'IMAGE_MALFORMED')
  })

  it('refuses BAT entries past the end of the file', async () => {
    const file = await variant(dynamic, (b) => {
      const bat = Number(b.readBigUInt64BE(512 + 16))
      b.writeUInt32BE(0x00ffffff, bat)
    })
    await expectCode(file, 'IMAGE_MALFORMED')
  })

  it('refuses a BAT entry pointing into the headers', async () => {
    const file = await variant(dynamic, (b) => {
      const bat = Number(b.readBigUInt64BE(512 + 16))
      b.writeUInt32BE(1, bat)
    })
    await expectCode(file, 'IMAGE_MALFORMED')
  })

  it('refuses a truncated dynamic disk', async () => {
    const file = await variant(dynamic, (b) => {
      // Drop the middle of the last block but keep a valid footer at the end.
      const cut = Buffer.concat([b.subarray(0, b.length - 512 - 300 * 1024), b.subarray(b.length - 512)])
      return cut
    })
    await expectCode(file, 'IMAGE_MALFORMED')
  })

  it('refuses absurd sizes without allocating for them', async () => {
    const huge = await variant(fixed, (b) => {
      const at = b.length - 512
      b.write('win ', at + 28, 'latin1')
      b.writeBigUInt64BE(2n ** 60n, at + 48)
      refooter(b, at)
    })
    await expectCode(huge, 'IMAGE_MALFORMED')
    const entries = await variant(dynamic, (b) => {
      b.writeUInt32BE(0xfffffff0, 512 + 28) // max table entries
      reheader(b)
    })
    await expectCode(entries, 'IMAGE_MALFORMED')
    const tooFew = await variant(dynamic, (b) => {
      b.writeUInt32BE(1, 512 + 28)
      reheader(b)
    })
    await expectCode(tooFew, 'IMAGE_MALFORMED')
    const blockSize = await variant(dynamic, (b) => {
      b.writeUInt32BE(3 * 1024 * 1024, 512 + 32)
      reheader(b)
    })
    await expectCode(blockSize, 'IMAGE_MALFORMED')
    const headerPastEnd = await variant(dynamic, (b) => {
      for (const at of [0, b.length - 512]) {
        b.writeBigUInt64BE(2n ** 40n, at + 16)
        refooter(b, at)
      }
    })
    await expectCode(headerPastEnd, 'IMAGE_MALFORMED')
  })

  it('refuses a tiny file', async () => {
    const file = join(dir, 'tiny.vhd')
    await writeFile(file, Buffer.from('conectix'))
    await expectCode(file, 'IMAGE_MALFORMED')
  })

  it('refuses a parent locator that points past the end of the file', async () => {
    const file = join(dir, 'locator-past-end.vhd')
    await buildVhdChild({ path: file, virtualSize: 2 * MiB, parentUniqueId: Buffer.alloc(16, 3), writes: [], locators: [{ code: 'W2ru', text: 'p.vhd' }] })
    const b = await readFile(file)
    b.writeBigUInt64BE(2n ** 33n, 512 + 576 + 16)
    reheader(b)
    await writeFile(file, b)
    await expectCode(file, 'IMAGE_MALFORMED')
  })
})

describe('VHD mutation fuzz (bounded)', () => {
  it('never fails with anything but an EngineError', async () => {
    const next = prng(2024)
    const budgetMs = 6000
    const started = Date.now()
    let iterations = 0
    let opened = 0
    const bases = [dynamic, fixed]
    // Each base is written once; an iteration rewrites only the structures it mutates.
    const files = bases.map((_, i) => join(dir, `fuzz-${i}.vhd`))
    for (const [i, f] of files.entries()) await writeFile(f, bases[i]!)
    const handles = await Promise.all(files.map((f) => open(f, 'r+')))
    while (Date.now() - started < budgetMs) {
      const which = iterations % 2
      const base = bases[which]!
      const copy = Buffer.from(base)
      // Mutate the structures: footer copy, header, BAT and the footer at the end.
      const regions: [number, number][] = [
        [0, 1536 + 512],
        [copy.length - 512, 512],
      ]
      const flips = 1 + (next() % 6)
      for (let i = 0; i < flips; i++) {
        const [a, l] = regions[next() % regions.length]!
        const at = a + (next() % l)
        copy[at] = next() & 0xff
      }
      // Sometimes repair the checksums so the mutation reaches deeper checks.
      if (next() % 2 === 0) {
        if (copy.toString('latin1', 0, 8) === 'conectix') refooter(copy, 0)
        refooter(copy, copy.length - 512)
        if (copy.toString('latin1', 512, 520) === 'cxsparse') reheader(copy)
      }
      for (const [a, l] of regions) await handles[which]!.write(copy, a, l, a)
      const file = files[which]!
      try {
        const image = await openImage(file, { format: 'vhd' })
        try {
          opened++
          const extents = await collectExtents(image)
          const buf = Buffer.alloc(Math.min(image.virtualSize, 64 * 1024))
          if (buf.length > 0) await image.read(buf, 0)
          for (const e of extents.slice(0, 4)) {
            const len = Math.min(e.length, 4096)
            await image.read(Buffer.alloc(len), e.offset)
          }
        } finally {
          await image.close()
        }
      } catch (err) {
        if (!(err instanceof EngineError)) throw err
      }
      iterations++
    }
    await Promise.all(handles.map((h) => h.close()))
    console.log(`VHD fuzz: ${iterations} iterations (${opened} opened) in ${Date.now() - started} ms`)
    expect(iterations).toBeGreaterThan(10)
  })
})
