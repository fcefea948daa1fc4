/**
 * Test-only builders for VHD files qemu 7.2 cannot create (differencing disks, damaged files),
 * written from the VHD specification, plus a libvhdi (`vhdimount`) reader used as the second,
 * independent oracle for them.
 */
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdir, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import {
  bitmapBytes,
  buildDynamicHeader,
  buildFooter,
  chsGeometry,
  encodeUtf16,
  FOOTER_SIZE,
  type ParentLocator,
} from '../../../electron/engine/formats/vhd/structures.js'
import { run, sha256File } from '../../helpers/qemu.js'

export interface SectorWrite {
  /** Guest offset, a multiple of 512. */
  offset: number
  /** Length a multiple of 512. */
  data: Buffer
}

export interface VhdLocatorSpec {
  code: 'W2ru' | 'W2ku' | 'MacX' | 'Mac '
  text: string
}

export interface VhdChildOptions {
  path: string
  virtualSize: number
  /** The parent's footer unique id (use `vhdUniqueId(parent)`); all zeros when omitted. */
  parentUniqueId?: Buffer
  blockSize?: number
  writes: SectorWrite[]
  locators?: VhdLocatorSpec[]
  parentName?: string
  uniqueId?: Buffer
  /** 4 = differencing (default), 3 = dynamic. */
  diskType?: 3 | 4
  /** Fill sectors whose bitmap bit is clear with 0xEE (they must never be read). */
  garbageInUnsetSectors?: boolean
}

/** The unique id in a VHD's footer. */
export async function vhdUniqueId(path: string): Promise<Buffer> {
  const data = await readFile(path)
  return Buffer.from(data.subarray(data.length - FOOTER_SIZE + 68, data.length - FOOTER_SIZE + 84))
}

/** Builds a dynamic or differencing VHD whose blocks hold exactly `writes` (bitmap bits set for them). */
export async function buildVhdChild(o: VhdChildOptions): Promise<{ uniqueId: Buffer }> {
  const bs = o.blockSize ?? 2 * 1024 * 1024
  const entries = Math.ceil(o.virtualSize / bs)
  const bmBytes = bitmapBytes(bs)
  const batOffset = 1536
  const batBytes = Math.ceil((entries * 4) / 512) * 512
  let next = batOffset + batBytes
  // Locator data, each padded to whole sectors.
  const locators: ParentLocator[] = []
  const locatorData: { at: number; data: Buffer }[] = []
  for (const l of o.locators ?? []) {
    const data = l.code === 'MacX' ? Buffer.from(l.text, 'utf8') : encodeUtf16(l.text, 'le')
    const space = Math.max(512, Math.ceil(data.length / 512) * 512)
    locators.push({ platformCode: l.code, dataSpace: space, dataLength: data.length, dataOffset: next })
    locatorData.push({ at: next, data })
    next += space
  }
  // Blocks touched by writes, in guest order.
  const blocks = new Map<number, { bitmap: Buffer; data: Buffer }>()
  for (const w of o.writes) {
    for (let s = 0; s < w.data.length; s += 512) {
      const g = w.offset + s
      const b = Math.floor(g / bs)
      let blk = blocks.get(b)
      if (!blk) {
        blk = { bitmap: Buffer.alloc(bmBytes), data: Buffer.alloc(bs, o.garbageInUnsetSectors ? 0xee : 0) }
        blocks.set(b, blk)
      }
      const sector = (g - b * bs) / 512
      blk.bitmap[sector >>> 3]! |= 0x80 >>> (sector & 7)
      w.data.copy(blk.data, g - b * bs, s, s + 512)
    }
  }
  const bat = Buffer.alloc(batBytes, 0xff)
  const order = [...blocks.keys()].sort((a, b) => a - b)
  const blockAt = new Map<number, number>()
  for (const b of order) {
    blockAt.set(b, next)
    bat.writeUInt32BE(next / 512, b * 4)
    next += bmBytes + bs
  }
  const uniqueId = o.uniqueId ?? randomBytes(16)
  const footer = buildFooter({
    diskType: o.diskType ?? 4,
    dataOffset: 512,
    currentSize: o.virtualSize,
    geometry: chsGeometry(o.virtualSize / 512),
    uniqueId,
    timestamp: 1000,
    creatorApp: 'win ',
    creatorVersion: 0x000a0000,
    creatorHostOs: 'Wi2k',
  })
  const header = buildDynamicHeader({
    tableOffset: batOffset,
    maxTableEntries: entries,
    blockSize: bs,
    parentUniqueId: o.parentUniqueId ?? Buffer.alloc(16),
    parentTimestamp: 1000,
    parentName: o.parentName ?? '',
    locators,
  })
  const file = Buffer.alloc(next + FOOTER_SIZE)
  footer.copy(file, 0)
  header.copy(file, 512)
  bat.copy(file, batOffset)
  for (const l of locatorData) l.data.copy(file, l.at)
  for (const b of order) {
    const at = blockAt.get(b)!
    blocks.get(b)!.bitmap.copy(file, at)
    blocks.get(b)!.data.copy(file, at + bmBytes)
  }
  footer.copy(file, next)
  await writeFile(o.path, file)
  return { uniqueId }
}

/** Expected guest bytes: `base` (the parent's view, or zeros) with `writes` laid over it. */
export function overlay(base: Buffer | undefined, virtualSize: number, writes: SectorWrite[]): Buffer {
  const out = Buffer.alloc(virtualSize)
  base?.copy(out, 0, 0, Math.min(base.length, virtualSize))
  for (const w of writes) w.data.copy(out, w.offset)
  return out
}

/**
 * The guest view of `image` according to libvhdi: mounted with `vhdimount` (FUSE) in a fresh
 * folder, hashed, unmounted. vhdimount exposes the whole chain as vhdi1 (the base) ... vhdiN (the
 * image itself); the last one is hashed. Returns the SHA-256 and size of that device file.
 *
 * libvhdi 20210425 quirk: in a VHD block's sector bitmap it reads the sectors that follow a set
 * bit, up to the end of that bitmap byte, from the child as well. Cross-checks against it therefore
 * use writes aligned to 8 sectors (4 KiB); finer writes are checked against the expected bytes.
 */
export async function libvhdiGuest(image: string, scratch: string): Promise<{ sha256: string; size: number }> {
  const mnt = join(scratch, `mnt-${Date.now()}-${Math.random().toString(16).slice(2)}`)
  await mkdir(mnt)
  const child = spawn('vhdimount', ['-v', image, mnt], { stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
  try {
    for (let i = 0; i < 100; i++) {
      const names = (await readdir(mnt).catch(() => [] as string[])).filter((n) => /^vhdi\d+$/.test(n))
      if (names.length > 0) {
        await new Promise((res) => setTimeout(res, 100)) // let the listing settle
        const all = (await readdir(mnt)).filter((n) => /^vhdi\d+$/.test(n)).sort((a, b) => Number(a.slice(4)) - Number(b.slice(4)))
        const dev = join(mnt, all[all.length - 1]!)
        const size = (await stat(dev)).size
        return { sha256: await sha256File(dev), size }
      }
      if (child.exitCode !== null) break
      await new Promise((res) => setTimeout(res, 50))
    }
    throw new Error(`vhdimount ${image} did not expose a device: ${stderr}`)
  } finally {
    await run('fusermount', ['-u', mnt])
    if (child.exitCode === null) child.kill()
    await exited
    await rm(mnt, { recursive: true, force: true })
  }
}
