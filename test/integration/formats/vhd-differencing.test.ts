/**
 * VHD differencing disks, which qemu 7.2 cannot create (and reads as plain dynamic disks): children
 * are built from the specification in test code (vhd-builders.ts) over parents made by qemu-img,
 * and checked against the expected bytes and against libvhdi (`vhdimount`), an independent reader.
 */
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { openImage } from '../../../electron/engine/formats/index.js'
import type { DiskImage } from '../../../electron/engine/formats/types.js'
import {
  applyOps,
  collectExtents,
  createImage,
  firstOmittedByte,
  mixedOps,
  ourGuestSha256,
  qemuToRaw,
  randomBytes,
  requireQemu,
  tempDir,
} from '../../helpers/qemu.js'
import { buildVhdChild, libvhdiGuest, overlay, vhdUniqueId, type SectorWrite } from './vhd-builders.js'
import { createHash } from 'node:crypto'

const MiB = 1024 * 1024
let dir: string
let cleanup: () => Promise<void>
let parent: string
let parentRaw: Buffer
const PARENT_SIZE = 10 * MiB

function sha(buf: Buffer): string {
  return createHash('sha256').update(buf).digest('hex')
}

/** Deterministic writes aligned to 4 KiB (see the libvhdi note in vhd-builders.ts). */
function alignedWrites(seed: number, virtualSize: number, count: number, unit = 4096): SectorWrite[] {
  const out: SectorWrite[] = []
  let s = seed
  const units = Math.floor(virtualSize / unit)
  for (let i = 0; i < count; i++) {
    s = (s * 1103515245 + 12345) >>> 0
    const start = s % units
    const len = 1 + ((s >>> 8) % 24)
    const n = Math.min(len, units - start)
    out.push({ offset: start * unit, data: randomBytes(s, n * unit) })
  }
  // Always touch the first and the last unit.
  out.push({ offset: 0, data: randomBytes(seed + 1, unit) })
  out.push({ offset: (units - 1) * unit, data: randomBytes(seed + 2, unit) })
  return out
}

async function expectGuest(image: DiskImage, expected: Buffer): Promise<void> {
  expect(image.virtualSize).toBe(expected.length)
  expect(await ourGuestSha256(image, 777_777)).toBe(sha(expected))
  const raw = join(dir, `expected-${Date.now()}.raw`)
  await writeFile(raw, expected)
  expect(await firstOmittedByte(await collectExtents(image), raw, expected.length)).toBe(-1)
}

beforeAll(async () => {
  requireQemu()
  ;({ dir, cleanup } = await tempDir('tresor-vhd-diff-'))
  parent = join(dir, 'parent.vhd')
  await createImage(parent, 'vpc', PARENT_SIZE, ['force_size=on'])
  await applyOps(parent, 'vpc', mixedOps(7, PARENT_SIZE, 30, { discard: false }), dir)
  await qemuToRaw(parent, 'vpc', join(dir, 'parent.raw'))
  parentRaw = await readFile(join(dir, 'parent.raw'))
})
afterAll(async () => {
  await cleanup?.()
})

describe('VHD differencing reader', () => {
  const locatorCases = [
    { name: 'W2ru relative path', locators: [{ code: 'W2ru' as const, text: '.\\parent.vhd' }], parentName: '' },
    { name: 'W2ku Windows absolute path (file name tried next to the child)', locators: [{ code: 'W2ku' as const, text: 'C:\\Hyper-V\\Disks\\parent.vhd' }], parentName: '' },
    { name: 'parent name in the header only', locators: [], parentName: 'parent.vhd' },
    { name: 'stale relative path, then absolute', locators: [{ code: 'W2ru' as const, text: '.\\moved\\parent.vhd' }, { code: 'W2ku' as const, text: '\\\\?\\D:\\x\\parent.vhd' }], parentName: '' },
  ]
  locatorCases.forEach((c, i) => {
    it(`finds the parent by ${c.name}; bytes equal the expected view and libvhdi`, async () => {
      const child = join(dir, `child-${i}.vhd`)
      const writes = alignedWrites(40 + i, PARENT_SIZE, 25)
      await buildVhdChild({ path: child, virtualSize: PARENT_SIZE, parentUniqueId: await vhdUniqueId(parent), writes, locators: c.locators, parentName: c.parentName, garbageInUnsetSectors: true })
      const expected = overlay(parentRaw, PARENT_SIZE, writes)
      const image = await openImage(child)
      try {
        expect(image.variant).toBe('differencing')
        expect((await image.info()).backingChain.map((b) => b.path)).toEqual([parent])
        await expectGuest(image, expected)
      } finally {
        await image.close()
      }
      // libvhdi finds parents only by the header's parent name: the same child with that name set.
      const forLib = join(dir, `child-${i}-lib.vhd`)
      await buildVhdChild({ path: forLib, virtualSize: PARENT_SIZE, parentUniqueId: await vhdUniqueId(parent), writes, locators: c.locators, parentName: 'parent.vhd', garbageInUnsetSectors: true })
      const lib = await libvhdiGuest(forLib, dir)
      expect(lib.sha256).toBe(sha(expected))
    })
  })

  it('finds the parent by a MacX file URL, in another folder', async () => {
    const sub = join(dir, 'elsewhere')
    await mkdir(sub, { recursive: true })
    const child = join(sub, 'child-macx.vhd')
    const writes = alignedWrites(90, PARENT_SIZE, 10)
    const url = 'file://localhost' + encodeURI(parent)
    await buildVhdChild({ path: child, virtualSize: PARENT_SIZE, parentUniqueId: await vhdUniqueId(parent), writes, locators: [{ code: 'MacX', text: url }], garbageInUnsetSectors: true })
    const image = await openImage(child)
    try {
      await expectGuest(image, overlay(parentRaw, PARENT_SIZE, writes))
    } finally {
      await image.close()
    }
  })

  it('finds a parent one folder up by a relative Windows path', async () => {
    const sub = join(dir, 'sub')
    await mkdir(sub, { recursive: true })
    const child = join(sub, 'child-up.vhd')
    const writes = alignedWrites(91, PARENT_SIZE, 10)
    await buildVhdChild({ path: child, virtualSize: PARENT_SIZE, parentUniqueId: await vhdUniqueId(parent), writes, locators: [{ code: 'W2ru', text: '..\\parent.vhd' }] })
    const image = await openImage(child)
    try {
      await expectGuest(image, overlay(parentRaw, PARENT_SIZE, writes))
    } finally {
      await image.close()
    }
  })

  it('reads single sectors per the sector bitmap (unset sectors come from the parent)', async () => {
    const child = join(dir, 'child-sectors.vhd')
    const writes: SectorWrite[] = [
      { offset: 512 * 3, data: Buffer.alloc(1024, 0x77) },
      { offset: MiB + 512, data: Buffer.alloc(512, 0x66) },
      { offset: 2 * MiB - 512, data: Buffer.alloc(1024, 0x55) }, // across a block boundary
      { offset: PARENT_SIZE - 512, data: Buffer.alloc(512, 0x44) },
    ]
    await buildVhdChild({ path: child, virtualSize: PARENT_SIZE, parentUniqueId: await vhdUniqueId(parent), writes, locators: [{ code: 'W2ru', text: 'parent.vhd' }], garbageInUnsetSectors: true })
    const image = await openImage(child)
    try {
      await expectGuest(image, overlay(parentRaw, PARENT_SIZE, writes))
      const one = Buffer.alloc(700)
      await image.read(one, 512 * 3 - 100)
      expect(one.subarray(100, 700).every((b) => b === 0x77)).toBe(true)
      expect(one.subarray(0, 100).equals(parentRaw.subarray(512 * 3 - 100, 512 * 3))).toBe(true)
    } finally {
      await image.close()
    }
  })

  it('follows a chain of two differencing disks (libvhdi agrees)', async () => {
    const mid = join(dir, 'mid.vhd')
    const top = join(dir, 'top.vhd')
    const w1 = alignedWrites(120, PARENT_SIZE, 15)
    const w2 = alignedWrites(121, PARENT_SIZE, 15)
    await buildVhdChild({ path: mid, virtualSize: PARENT_SIZE, parentUniqueId: await vhdUniqueId(parent), writes: w1, locators: [{ code: 'W2ru', text: '.\\parent.vhd' }], parentName: 'parent.vhd', garbageInUnsetSectors: true })
    await buildVhdChild({ path: top, virtualSize: PARENT_SIZE, parentUniqueId: await vhdUniqueId(mid), writes: w2, locators: [{ code: 'W2ru', text: '.\\mid.vhd' }], parentName: 'mid.vhd', garbageInUnsetSectors: true })
    const expected = overlay(overlay(parentRaw, PARENT_SIZE, w1), PARENT_SIZE, w2)
    const image = await openImage(top)
    try {
      expect((await image.info()).backingChain.map((b) => b.path)).toEqual([mid, parent])
      await expectGuest(image, expected)
    } finally {
      await image.close()
    }
    expect((await libvhdiGuest(top, dir)).sha256).toBe(sha(expected))
  })

  it('reads zeros past the end of a smaller parent', async () => {
    const child = join(dir, 'child-bigger.vhd')
    const size = PARENT_SIZE + 3 * MiB
    const writes: SectorWrite[] = [{ offset: PARENT_SIZE + MiB, data: Buffer.alloc(4096, 9) }]
    await buildVhdChild({ path: child, virtualSize: size, parentUniqueId: await vhdUniqueId(parent), writes, locators: [{ code: 'W2ru', text: 'parent.vhd' }] })
    const image = await openImage(child)
    try {
      await expectGuest(image, overlay(parentRaw, size, writes))
    } finally {
      await image.close()
    }
  })

  it('with noBacking, describes the child alone (unset sectors read as zeros)', async () => {
    const child = join(dir, 'child-nobacking.vhd')
    const writes = alignedWrites(130, PARENT_SIZE, 5)
    await buildVhdChild({ path: child, virtualSize: PARENT_SIZE, parentUniqueId: await vhdUniqueId(parent), writes, locators: [{ code: 'W2ru', text: 'parent.vhd' }], garbageInUnsetSectors: true })
    const image = await openImage(child, { noBacking: true })
    try {
      expect(image.backing).toBeUndefined()
      expect((await image.info()).backingChain).toEqual([])
      await expectGuest(image, overlay(undefined, PARENT_SIZE, writes))
    } finally {
      await image.close()
    }
  })

  it('a dynamic disk reads clear bitmap bits as zeros, like libvhdi', async () => {
    const file = join(dir, 'dynamic-bitmap.vhd')
    const writes = alignedWrites(140, 6 * MiB, 12)
    await buildVhdChild({ path: file, virtualSize: 6 * MiB, writes, diskType: 3, garbageInUnsetSectors: true })
    const expected = overlay(undefined, 6 * MiB, writes)
    const image = await openImage(file)
    try {
      expect(image.variant).toBe('dynamic')
      await expectGuest(image, expected)
    } finally {
      await image.close()
    }
    expect((await libvhdiGuest(file, dir)).sha256).toBe(sha(expected))
  })
})

describe('VHD differencing errors', () => {
  it('refuses a parent whose unique id differs (IMAGE_BACKING_MISMATCH)', async () => {
    const child = join(dir, 'child-mismatch.vhd')
    await buildVhdChild({ path: child, virtualSize: PARENT_SIZE, parentUniqueId: Buffer.alloc(16, 0xab), writes: [], locators: [{ code: 'W2ru', text: '.\\parent.vhd' }] })
    await expect(openImage(child)).rejects.toMatchObject({ code: 'IMAGE_BACKING_MISMATCH' })
  })

  it('reports a missing parent (IMAGE_BACKING_MISSING) naming the paths tried', async () => {
    const child = join(dir, 'child-missing.vhd')
    await buildVhdChild({ path: child, virtualSize: PARENT_SIZE, parentUniqueId: Buffer.alloc(16, 1), writes: [], locators: [{ code: 'W2ru', text: '.\\gone.vhd' }] })
    const err = await openImage(child).catch((e: unknown) => e)
    expect(err).toMatchObject({ code: 'IMAGE_BACKING_MISSING' })
    expect(String((err as Error).message)).toContain('gone.vhd')
  })

  it('detects a child that names itself as parent (IMAGE_BACKING_LOOP)', async () => {
    const child = join(dir, 'self.vhd')
    const id = Buffer.alloc(16, 0x31)
    await buildVhdChild({ path: child, virtualSize: PARENT_SIZE, uniqueId: id, parentUniqueId: id, writes: [], locators: [{ code: 'W2ru', text: '.\\self.vhd' }] })
    await expect(openImage(child)).rejects.toMatchObject({ code: 'IMAGE_BACKING_LOOP' })
  })

  it('detects two disks that name each other (IMAGE_BACKING_LOOP)', async () => {
    const a = join(dir, 'loop-a.vhd')
    const b = join(dir, 'loop-b.vhd')
    const idA = Buffer.alloc(16, 0xa1)
    const idB = Buffer.alloc(16, 0xb2)
    await buildVhdChild({ path: a, virtualSize: MiB * 4, uniqueId: idA, parentUniqueId: idB, writes: [], locators: [{ code: 'W2ru', text: 'loop-b.vhd' }] })
    await buildVhdChild({ path: b, virtualSize: MiB * 4, uniqueId: idB, parentUniqueId: idA, writes: [], locators: [{ code: 'W2ru', text: 'loop-a.vhd' }] })
    await expect(openImage(a)).rejects.toMatchObject({ code: 'IMAGE_BACKING_LOOP' })
  })
})
