/**
 * Damaged and hostile VHDX files: a typed EngineError naming the file, never a crash, a hang or an
 * allocation sized by an untrusted field. A bounded mutation fuzz prints its iteration count.
 */
import { open, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { EngineError } from '../../../electron/engine/errors.js'
import { openImage } from '../../../electron/engine/formats/index.js'
import { crc32c } from '../../../electron/engine/formats/vhdx/crc32c.js'
import { guidBytes } from '../../../electron/engine/formats/vhdx/structures.js'
import { applyOps, collectExtents, createImage, mixedOps, ourGuestSha256, prng, qemuGuestSha256, requireQemu, tempDir } from '../../helpers/qemu.js'

const MiB = 1024 * 1024
const KiB = 1024
let dir: string
let cleanup: () => Promise<void>
let good: Buffer
let goodSha: string
let batOffset: number
let metaOffset: number

beforeAll(async () => {
  requireQemu()
  ;({ dir, cleanup } = await tempDir('tresor-vhdx-bad-'))
  const f = join(dir, 'good.vhdx')
  await createImage(f, 'vhdx', 8 * MiB, ['block_size=1M'])
  await applyOps(f, 'vhdx', mixedOps(9, 8 * MiB, 12), dir)
  good = await readFile(f)
  goodSha = await qemuGuestSha256(f, 'vhdx', dir)
  // Locate the regions from the first region table.
  const count = good.readUInt32LE(192 * KiB + 8)
  for (let i = 0; i < count; i++) {
    const at = 192 * KiB + 16 + i * 32
    const guid = good.subarray(at, at + 16)
    const off = Number(good.readBigUInt64LE(at + 16))
    if (guid.equals(guidBytes('2dc27766-f623-4200-9d64-115e9bfd4a08'))) batOffset = off
    else metaOffset = off
  }
})
afterAll(async () => {
  await cleanup?.()
})

function fixCrc(b: Buffer, at: number, size: number): void {
  b.writeUInt32LE(0, at + 4)
  b.writeUInt32LE(crc32c(b.subarray(at, at + size)), at + 4)
}
const fixHeaders = (b: Buffer): void => {
  fixCrc(b, 64 * KiB, 4 * KiB)
  fixCrc(b, 128 * KiB, 4 * KiB)
}
const fixRegions = (b: Buffer): void => {
  fixCrc(b, 192 * KiB, 64 * KiB)
  fixCrc(b, 256 * KiB, 64 * KiB)
}

let n = 0
async function variant(mutate: (b: Buffer) => Buffer | void): Promise<string> {
  const copy = Buffer.from(good)
  const out = mutate(copy) ?? copy
  const file = join(dir, `bad-${n++}.vhdx`)
  await writeFile(file, out)
  return file
}

async function expectCode(file: string, code: string): Promise<void> {
  const err = await openImage(file, { format: 'vhdx' }).then(
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

async function expectReadsGood(file: string): Promise<void> {
  const image = await openImage(file)
  try {
    expect(await ourGuestSha256(image)).toBe(goodSha)
  } finally {
    await image.close()
  }
}

/** Finds metadata entry `guid` and returns the absolute file offset of its table entry. */
function metadataEntry(b: Buffer, guid: string): number {
  const count = b.readUInt16LE(metaOffset + 10)
  const want = guidBytes(guid)
  for (let i = 0; i < count; i++) {
    const at = metaOffset + 32 + i * 32
    if (b.subarray(at, at + 16).equals(want)) return at
  }
  throw new Error(`metadata ${guid} not found`)
}

describe('damaged VHDX files', () => {
  it('uses the other header when one is damaged, refuses when both are', async () => {
    await expectReadsGood(await variant((b) => void (b[64 * KiB + 30]! ^= 1)))
    await expectReadsGood(await variant((b) => void (b[128 * KiB + 30]! ^= 1)))
    await expectCode(await variant((b) => {
      b[64 * KiB + 30]! ^= 1
      b[128 * KiB + 30]! ^= 1
    }), 'IMAGE_MALFORMED')
  })

  it('uses the second region table when the first is damaged, refuses when both are', async () => {
    await expectReadsGood(await variant((b) => void (b[192 * KiB + 20]! ^= 1)))
    await expectCode(await variant((b) => {
      b[192 * KiB + 20]! ^= 1
      b[256 * KiB + 20]! ^= 1
    }), 'IMAGE_MALFORMED')
  })

  it('refuses a file without the signature, or too small', async () => {
    await expectCode(await variant((b) => void b.write('notvhdx!', 0, 'latin1')), 'IMAGE_MALFORMED')
    await expectCode(await variant((b) => b.subarray(0, 100 * KiB)), 'IMAGE_MALFORMED')
  })

  it('refuses BAT entries past the end of the file or inside the headers', async () => {
    await expectCode(await variant((b) => void b.writeUInt32LE(((4000 << 20) | 6) >>> 0, batOffset)), 'IMAGE_MALFORMED')
    await expectCode(await variant((b) => void b.writeUInt32LE(6, batOffset)), 'IMAGE_MALFORMED') // offset 0 MiB
    await expectCode(await variant((b) => void b.writeUInt32LE(4, batOffset)), 'IMAGE_MALFORMED') // reserved state
  })

  it('refuses a truncated file', async () => {
    await expectCode(await variant((b) => b.subarray(0, b.length - 512 * KiB)), 'IMAGE_MALFORMED')
  })

  it('refuses absurd sizes without allocating for them', async () => {
    const size = await variant((b) => {
      const e = metadataEntry(b, '2fa54224-cd1b-4876-b211-5dbed83bf4b8')
      b.writeBigUInt64LE(2n ** 62n, metaOffset + b.readUInt32LE(e + 16))
    })
    await expectCode(size, 'IMAGE_MALFORMED')
    const bigButLegal = await variant((b) => {
      const e = metadataEntry(b, '2fa54224-cd1b-4876-b211-5dbed83bf4b8')
      b.writeBigUInt64LE(BigInt(60 * 1024 * 1024) * BigInt(MiB), metaOffset + b.readUInt32LE(e + 16)) // 60 TiB
    })
    await expectCode(bigButLegal, 'IMAGE_MALFORMED') // the BAT region cannot describe it
    const blockSize = await variant((b) => {
      const e = metadataEntry(b, 'caa16737-fa36-4d43-b3b6-33f0aa44e76b')
      b.writeUInt32LE(3 * MiB, metaOffset + b.readUInt32LE(e + 16))
    })
    await expectCode(blockSize, 'IMAGE_MALFORMED')
    const sector = await variant((b) => {
      const e = metadataEntry(b, '8141bf1d-a96f-4709-ba47-f233a8faab5f')
      b.writeUInt32LE(1024, metaOffset + b.readUInt32LE(e + 16))
    })
    await expectCode(sector, 'IMAGE_MALFORMED')
    const itemPastRegion = await variant((b) => {
      const e = metadataEntry(b, '8141bf1d-a96f-4709-ba47-f233a8faab5f')
      b.writeUInt32LE(0xfffff000, e + 16)
    })
    await expectCode(itemPastRegion, 'IMAGE_MALFORMED')
    const regionPastEnd = await variant((b) => {
      b.writeBigUInt64LE(2n ** 50n, 192 * KiB + 16 + 16)
      b.writeBigUInt64LE(2n ** 50n, 256 * KiB + 16 + 16)
      fixRegions(b)
    })
    await expectCode(regionPastEnd, 'IMAGE_MALFORMED')
  })

  it('refuses what it does not understand (IMAGE_UNSUPPORTED)', async () => {
    const region = await variant((b) => {
      for (const t of [192 * KiB, 256 * KiB]) {
        const count = b.readUInt32LE(t + 8)
        const at = t + 16 + count * 32
        guidBytes('12345678-1234-1234-1234-123456789abc').copy(b, at)
        b.writeBigUInt64LE(BigInt(batOffset), at + 16)
        b.writeUInt32LE(0, at + 24)
        b.writeUInt32LE(1, at + 28) // required
        b.writeUInt32LE(count + 1, t + 8)
      }
      fixRegions(b)
    })
    await expectCode(region, 'IMAGE_UNSUPPORTED')
    const item = await variant((b) => {
      const e = metadataEntry(b, '8141bf1d-a96f-4709-ba47-f233a8faab5f')
      guidBytes('12345678-1234-1234-1234-123456789abc').copy(b, e)
    })
    await expectCode(item, 'IMAGE_UNSUPPORTED')
    const version = await variant((b) => {
      b.writeUInt16LE(2, 64 * KiB + 66)
      b.writeUInt16LE(2, 128 * KiB + 66)
      fixHeaders(b)
    })
    await expectCode(version, 'IMAGE_UNSUPPORTED')
  })
})

describe('VHDX mutation fuzz (bounded)', () => {
  it('never fails with anything but an EngineError', async () => {
    const next = prng(4242)
    const budgetMs = 6000
    const started = Date.now()
    let iterations = 0
    let opened = 0
    const regions: [number, number][] = [
      [64 * KiB, 4 * KiB],
      [128 * KiB, 4 * KiB],
      [192 * KiB, 256],
      [metaOffset, 512],
      [batOffset, 256],
    ]
    // The good image is written once; each iteration rewrites only the structures it mutates.
    const file = join(dir, 'fuzz.vhdx')
    await writeFile(file, good)
    const fh = await open(file, 'r+')
    const spans: [number, number][] = [
      [0, 320 * KiB], // identifier, headers, region tables
      [metaOffset, 64 * KiB],
      [batOffset, 64 * KiB],
    ]
    while (Date.now() - started < budgetMs) {
      const copy = Buffer.from(good)
      const flips = 1 + (next() % 6)
      for (let i = 0; i < flips; i++) {
        const [a, l] = regions[next() % regions.length]!
        copy[a + (next() % l)] = next() & 0xff
      }
      if (next() % 2 === 0) {
        fixHeaders(copy)
        fixRegions(copy)
      }
      for (const [a, l] of spans) await fh.write(copy, a, l, a)
      try {
        const image = await openImage(file, { format: 'vhdx' })
        try {
          opened++
          const extents = await collectExtents(image)
          const buf = Buffer.alloc(Math.min(image.virtualSize, 64 * KiB))
          if (buf.length > 0) await image.read(buf, 0)
          for (const e of extents.slice(0, 4)) await image.read(Buffer.alloc(Math.min(e.length, 4096)), e.offset)
        } finally {
          await image.close()
        }
      } catch (err) {
        if (!(err instanceof EngineError)) throw err
      }
      iterations++
    }
    await fh.close()
    console.log(`VHDX fuzz: ${iterations} iterations (${opened} opened) in ${Date.now() - started} ms`)
    expect(iterations).toBeGreaterThan(10)
  })
})
