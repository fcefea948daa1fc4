/**
 * VHDX differencing disks and 4 KiB logical sectors, which qemu 7.2 can neither create nor read:
 * built in test code from [MS-VHDX] (vhdx-builders.ts) over parents made by qemu-img or the
 * builder, checked against the expected bytes and against libvhdi (`vhdimount`).
 * libvhdi finds a VHDX parent by the file name of absolute_win32_path (next to the child), so the
 * children checked with it carry one.
 */
import { createHash } from 'node:crypto'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { openImage } from '../../../electron/engine/formats/index.js'
import type { DiskImage } from '../../../electron/engine/formats/types.js'
import { vhdxIdentity } from '../../../electron/engine/formats/vhdx/reader.js'
import { guidText } from '../../../electron/engine/formats/vhdx/structures.js'
import { applyOps, collectExtents, createImage, firstOmittedByte, mixedOps, ourGuestSha256, qemuToRaw, randomBytes, requireQemu, tempDir } from '../../helpers/qemu.js'
import { libvhdiGuest } from './vhd-builders.js'
import { buildVhdx, type VhdxBlock, type VhdxParentSpec } from './vhdx-builders.js'

const MiB = 1024 * 1024
let dir: string
let cleanup: () => Promise<void>
let parent: string
let parentRaw: Buffer
let parentId: string
const SIZE = 16 * MiB

function sha(buf: Buffer): string {
  return createHash('sha256').update(buf).digest('hex')
}

beforeAll(async () => {
  requireQemu()
  ;({ dir, cleanup } = await tempDir('tresor-vhdx-diff-'))
  parent = join(dir, 'parent.vhdx')
  await createImage(parent, 'vhdx', SIZE, ['block_size=1M'])
  await applyOps(parent, 'vhdx', mixedOps(77, SIZE, 30), dir)
  await qemuToRaw(parent, 'vhdx', join(dir, 'parent.raw'))
  parentRaw = await readFile(join(dir, 'parent.raw'))
  parentId = (await vhdxIdentity(parent))!
})
afterAll(async () => {
  await cleanup?.()
})

/** A child's blocks (every payload state) and the guest view they give over `base`. */
function childBlocks(seed: number, blockSize: number, sectorSize: number, size: number, base: Buffer | undefined): { blocks: Map<number, VhdxBlock>; expected: Buffer } {
  const expected = Buffer.alloc(size)
  base?.copy(expected, 0, 0, Math.min(base.length, size))
  const blocks = new Map<number, VhdxBlock>()
  const last = Math.ceil(size / blockSize) - 1
  const full = randomBytes(seed, blockSize)
  blocks.set(0, { state: 6, data: full })
  full.copy(expected, 0)
  // Partially present: runs of present sectors (4 KiB-aligned groups, see below) and single ones.
  const partial = (block: number, s0: number): void => {
    const data = randomBytes(s0, blockSize)
    const present = (s: number): boolean => (Math.floor(s / 8) % 3 === 0) || s === (blockSize / sectorSize) - 1
    const masked = Buffer.from(data)
    for (let s = 0; s < blockSize / sectorSize; s++) {
      if (present(s)) data.copy(expected, block * blockSize + s * sectorSize, s * sectorSize, (s + 1) * sectorSize)
      else masked.fill(0xee, s * sectorSize, (s + 1) * sectorSize) // never to be read
    }
    blocks.set(block, { state: 7, data: masked, present })
  }
  partial(1, seed + 1)
  blocks.set(2, { state: 2 })
  expected.fill(0, 2 * blockSize, 3 * blockSize)
  blocks.set(3, { state: 3 })
  expected.fill(0, 3 * blockSize, 4 * blockSize)
  blocks.set(4, { state: 0 })
  blocks.set(5, { state: 1 })
  partial(last, seed + 2)
  return { blocks, expected: expected.subarray(0, size) }
}

async function expectGuest(image: DiskImage, expected: Buffer): Promise<void> {
  expect(image.virtualSize).toBe(expected.length)
  expect(await ourGuestSha256(image, 999_999)).toBe(sha(expected))
  const raw = join(dir, `expected-${Date.now()}.raw`)
  await writeFile(raw, expected)
  expect(await firstOmittedByte(await collectExtents(image), raw, expected.length)).toBe(-1)
}

describe('VHDX differencing reader', () => {
  const locators: { name: string; spec: (id: string) => VhdxParentSpec }[] = [
    { name: 'relative_path', spec: (id) => ({ linkage: id, relativePath: '.\\parent.vhdx' }) },
    { name: 'absolute_win32_path (file name next to the child)', spec: (id) => ({ linkage: id, absoluteWin32Path: 'C:\\VMs\\parent.vhdx' }) },
    { name: 'volume_path after a stale relative_path', spec: (id) => ({ linkage: id, relativePath: '..\\old\\parent.vhdx', volumePath: '\\\\?\\Volume{26a21bda-a627-11d7-9931-806e6f6e6963}\\VMs\\parent.vhdx' }) },
    { name: 'parent_linkage2', spec: (id) => ({ linkage: '11111111-2222-3333-4444-555555555555', linkage2: id, relativePath: 'parent.vhdx' }) },
  ]
  locators.forEach((l, i) => {
    it(`reads every payload state over its parent, found by ${l.name}`, async () => {
      const child = join(dir, `child-${i}.vhdx`)
      const { blocks, expected } = childBlocks(10 + i, MiB, 512, SIZE, parentRaw)
      await buildVhdx(child, { virtualSize: SIZE, blockSize: MiB, logicalSectorSize: 512, blocks, parent: l.spec(parentId) })
      const image = await openImage(child)
      try {
        expect(image.variant).toBe('differencing')
        expect((await image.info()).backingChain.map((b) => b.path)).toEqual([parent])
        await expectGuest(image, expected)
      } finally {
        await image.close()
      }
    })
  })

  it('agrees with libvhdi on a differencing disk (512-byte sectors)', async () => {
    const child = join(dir, 'child-lib.vhdx')
    const { blocks, expected } = childBlocks(30, MiB, 512, SIZE, parentRaw)
    // libvhdi 20210425 reads ZERO, UNMAPPED and UNDEFINED blocks of a child from its parent
    // ([MS-VHDX]: ZERO reads zeros); compare on FULLY/PARTIALLY/NOT_PRESENT blocks only.
    for (const b of [2, 3, 5]) {
      blocks.delete(b)
      parentRaw.copy(expected, b * MiB, b * MiB, (b + 1) * MiB)
    }
    await buildVhdx(child, { virtualSize: SIZE, blockSize: MiB, logicalSectorSize: 512, blocks, parent: { linkage: parentId, relativePath: '.\\parent.vhdx', absoluteWin32Path: 'C:\\VMs\\parent.vhdx' } })
    const image = await openImage(child)
    try {
      await expectGuest(image, expected)
    } finally {
      await image.close()
    }
    expect((await libvhdiGuest(child, dir)).sha256).toBe(sha(expected))
  })

  it('reads 4 KiB logical sectors: a dynamic parent and a differencing child (libvhdi agrees)', async () => {
    const base = join(dir, 'base4k.vhdx')
    const size = 12 * MiB
    const b0 = randomBytes(400, MiB)
    const b3 = randomBytes(401, MiB)
    const { dataWriteGuid } = await buildVhdx(base, {
      virtualSize: size,
      blockSize: MiB,
      logicalSectorSize: 4096,
      blocks: new Map([
        [0, { state: 6, data: b0 }],
        [1, { state: 6, data: b3 }],
        [6, { state: 6, data: b3 }],
        [11, { state: 6, data: b0 }],
      ]),
    })
    const baseView = Buffer.alloc(size)
    b0.copy(baseView, 0)
    b3.copy(baseView, MiB)
    b3.copy(baseView, 6 * MiB)
    b0.copy(baseView, 11 * MiB)
    const baseImage = await openImage(base)
    try {
      expect((await baseImage.info()).logicalSectorSize).toBe(4096)
      await expectGuest(baseImage, baseView)
    } finally {
      await baseImage.close()
    }
    expect((await libvhdiGuest(base, dir)).sha256).toBe(sha(baseView))

    const child = join(dir, 'child4k.vhdx')
    const { blocks, expected } = childBlocks(50, MiB, 4096, size, baseView)
    for (const b of [2, 3, 5]) {
      blocks.delete(b) // see the libvhdi note above
      baseView.copy(expected, b * MiB, b * MiB, (b + 1) * MiB)
    }
    await buildVhdx(child, { virtualSize: size, blockSize: MiB, logicalSectorSize: 4096, blocks, parent: { linkage: guidText(dataWriteGuid), relativePath: 'base4k.vhdx', absoluteWin32Path: 'D:\\base4k.vhdx' } })
    const image = await openImage(child)
    try {
      await expectGuest(image, expected)
    } finally {
      await image.close()
    }
    expect((await libvhdiGuest(child, dir)).sha256).toBe(sha(expected))
  })

  it('with noBacking, reads the child alone', async () => {
    const child = join(dir, 'child-alone.vhdx')
    const { blocks } = childBlocks(60, MiB, 512, SIZE, parentRaw)
    const { expected } = childBlocks(60, MiB, 512, SIZE, undefined)
    await buildVhdx(child, { virtualSize: SIZE, blockSize: MiB, logicalSectorSize: 512, blocks, parent: { linkage: parentId, relativePath: 'parent.vhdx' } })
    const image = await openImage(child, { noBacking: true })
    try {
      expect(image.backing).toBeUndefined()
      await expectGuest(image, expected)
    } finally {
      await image.close()
    }
  })

  it('follows a child in a sub-folder to its parent one level up', async () => {
    await mkdir(join(dir, 'kids'), { recursive: true })
    const child = join(dir, 'kids', 'child.vhdx')
    const { blocks, expected } = childBlocks(70, MiB, 512, SIZE, parentRaw)
    await buildVhdx(child, { virtualSize: SIZE, blockSize: MiB, logicalSectorSize: 512, blocks, parent: { linkage: parentId, relativePath: '..\\parent.vhdx' } })
    const image = await openImage(child)
    try {
      await expectGuest(image, expected)
    } finally {
      await image.close()
    }
  })
})

describe('VHDX differencing errors', () => {
  it('refuses a parent with another DataWriteGuid (IMAGE_BACKING_MISMATCH)', async () => {
    const child = join(dir, 'mismatch.vhdx')
    await buildVhdx(child, { virtualSize: SIZE, blockSize: MiB, logicalSectorSize: 512, blocks: new Map(), parent: { linkage: '01234567-89ab-cdef-0123-456789abcdef', relativePath: 'parent.vhdx' } })
    await expect(openImage(child)).rejects.toMatchObject({ code: 'IMAGE_BACKING_MISMATCH' })
  })

  it('reports a missing parent (IMAGE_BACKING_MISSING)', async () => {
    const child = join(dir, 'missing.vhdx')
    await buildVhdx(child, { virtualSize: SIZE, blockSize: MiB, logicalSectorSize: 512, blocks: new Map(), parent: { linkage: parentId, relativePath: 'nowhere.vhdx' } })
    await expect(openImage(child)).rejects.toMatchObject({ code: 'IMAGE_BACKING_MISSING' })
  })

  it('detects two disks that name each other (IMAGE_BACKING_LOOP)', async () => {
    const a = join(dir, 'loop-a.vhdx')
    const b = join(dir, 'loop-b.vhdx')
    const ga = Buffer.alloc(16, 0xa1)
    const gb = Buffer.alloc(16, 0xb2)
    await buildVhdx(a, { virtualSize: 4 * MiB, blockSize: MiB, logicalSectorSize: 512, blocks: new Map(), dataWriteGuid: ga, parent: { linkage: guidText(gb), relativePath: 'loop-b.vhdx' } })
    await buildVhdx(b, { virtualSize: 4 * MiB, blockSize: MiB, logicalSectorSize: 512, blocks: new Map(), dataWriteGuid: gb, parent: { linkage: guidText(ga), relativePath: 'loop-a.vhdx' } })
    await expect(openImage(a)).rejects.toMatchObject({ code: 'IMAGE_BACKING_LOOP' })
  })

  it('refuses a partially present block in a disk without a parent (IMAGE_MALFORMED)', async () => {
    const file = join(dir, 'partial-no-parent.vhdx')
    await buildVhdx(file, { virtualSize: 4 * MiB, blockSize: MiB, logicalSectorSize: 512, blocks: new Map([[1, { state: 7, data: Buffer.alloc(MiB), present: () => true }]]) })
    await expect(openImage(file)).rejects.toMatchObject({ code: 'IMAGE_MALFORMED' })
  })
})
