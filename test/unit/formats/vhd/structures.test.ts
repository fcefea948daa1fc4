import { describe, expect, it } from 'vitest'
import { candidatesFor } from '../../../../electron/engine/formats/vhd/locators.js'
import {
  bitIsSet,
  bitmapBytes,
  buildDynamicHeader,
  buildFooter,
  chsGeometry,
  decodeUtf16,
  encodeUtf16,
  parseDynamicHeader,
  parseFooter,
  vhdChecksum,
  virtualSizeOf,
  type Footer,
} from '../../../../electron/engine/formats/vhd/structures.js'

const MiB = 1024 * 1024

function footer(app: string, currentSize: number, geometry: [number, number, number]): Footer {
  const buf = buildFooter({
    diskType: 3,
    dataOffset: 512,
    currentSize,
    geometry: { cylinders: geometry[0], heads: geometry[1], sectorsPerTrack: geometry[2] },
    uniqueId: Buffer.alloc(16, 7),
    timestamp: 0,
    creatorApp: app,
    creatorVersion: 1,
    creatorHostOs: 'Wi2k',
  })
  const f = parseFooter(buf)
  if (typeof f === 'string') throw new Error(f)
  return f
}

describe('VHD footer and header', () => {
  it('round-trips a footer and detects a wrong checksum', () => {
    const buf = buildFooter({
      diskType: 2, dataOffset: undefined, currentSize: 10 * MiB, geometry: chsGeometry((10 * MiB) / 512),
      uniqueId: Buffer.alloc(16, 1), timestamp: 5, creatorApp: 'win ', creatorVersion: 2, creatorHostOs: 'Wi2k',
    })
    const f = parseFooter(buf)
    expect(typeof f).toBe('object')
    expect(f).toMatchObject({ diskType: 2, dataOffset: undefined, currentSize: 10 * MiB, creatorApp: 'win ' })
    buf[100] = 1
    expect(parseFooter(buf)).toBe('checksum')
    expect(parseFooter(Buffer.alloc(512))).toBe('cookie')
  })

  it('checksum is the one\'s complement of the byte sum without the field', () => {
    const b = Buffer.alloc(16, 1)
    expect(vhdChecksum(b, 4)).toBe(~12 >>> 0)
  })

  it('round-trips a dynamic header with locators and a UTF-16BE parent name', () => {
    const h = buildDynamicHeader({
      tableOffset: 1536, maxTableEntries: 5, blockSize: 2 * MiB, parentUniqueId: Buffer.alloc(16, 9), parentName: 'Eltern.vhd',
      locators: [{ platformCode: 'W2ru', dataSpace: 512, dataLength: 20, dataOffset: 4096 }],
    })
    const p = parseDynamicHeader(h)
    expect(p).toMatchObject({ tableOffset: 1536, maxTableEntries: 5, blockSize: 2 * MiB, parentName: 'Eltern.vhd' })
    expect(typeof p !== 'string' && p.locators).toEqual([{ platformCode: 'W2ru', dataSpace: 512, dataLength: 20, dataOffset: 4096 }])
    h[700] = h[700]! ^ 1
    expect(parseDynamicHeader(h)).toBe('checksum')
  })

  it('decodes UTF-16 up to the first NUL', () => {
    expect(decodeUtf16(Buffer.concat([encodeUtf16('a\\b', 'le'), Buffer.alloc(4), encodeUtf16('zz', 'le')]), 'le')).toBe('a\\b')
  })
})

describe('VHD geometry and virtual size rule', () => {
  it('computes the specification geometry (rounding down)', () => {
    expect(chsGeometry(20480)).toEqual({ cylinders: 301, heads: 4, sectorsPerTrack: 17 })
    expect(chsGeometry(65535 * 16 * 63 + 5).sectorsPerTrack).toBe(255)
    expect(chsGeometry(1e12)).toEqual({ cylinders: 65535, heads: 16, sectorsPerTrack: 255 })
  })

  it('uses CHS for Virtual PC, old qemu and unknown creators; current_size for the others', () => {
    const g: [number, number, number] = [100, 4, 17]
    for (const app of ['vpc ', 'qemu', 'vbox', 'abcd']) expect(virtualSizeOf(footer(app, 8 * MiB, g))).toBe(100 * 4 * 17 * 512)
    for (const app of ['win ', 'qem2', 'd2v ', 'tap\0', 'CTXS']) expect(virtualSizeOf(footer(app, 8 * MiB + 700, g))).toBe(8 * MiB + 512)
  })

  it('uses current_size whatever the creator when the geometry is at its maximum', () => {
    expect(virtualSizeOf(footer('vpc ', 3000 * MiB, [65535, 16, 255]))).toBe(3000 * MiB)
  })

  it('sizes sector bitmaps to whole sectors, most significant bit first', () => {
    expect(bitmapBytes(2 * MiB)).toBe(512)
    expect(bitmapBytes(512 * 1024)).toBe(512)
    expect(bitmapBytes(8 * MiB)).toBe(2048)
    const bm = Uint8Array.from([0x80, 0x01])
    expect(bitIsSet(bm, 0)).toBe(true)
    expect(bitIsSet(bm, 1)).toBe(false)
    expect(bitIsSet(bm, 15)).toBe(true)
  })
})

describe('parent locator paths', () => {
  const child = '/vms/disks/child.vhd'
  it('resolves relative Windows paths against the child folder', () => {
    expect(candidatesFor({ kind: 'relative', text: '.\\parent.vhd' }, child)).toEqual(['/vms/disks/parent.vhd'])
    expect(candidatesFor({ kind: 'relative', text: '..\\base\\parent.vhd\0\0' }, child)).toEqual(['/vms/base/parent.vhd'])
  })
  it('tries the file name of Windows absolute and namespace paths next to the child', () => {
    expect(candidatesFor({ kind: 'absolute', text: 'C:\\VMs\\parent.vhd' }, child)).toEqual(['/vms/disks/parent.vhd'])
    expect(candidatesFor({ kind: 'absolute', text: '\\\\?\\Volume{1234}\\VMs\\p.vhdx' }, child)).toEqual(['/vms/disks/p.vhdx'])
    expect(candidatesFor({ kind: 'absolute', text: '\\\\server\\share\\p.vhd' }, child)).toEqual(['/vms/disks/p.vhd'])
  })
  it('accepts Unix paths and file URLs', () => {
    expect(candidatesFor({ kind: 'absolute', text: '/srv/p.vhd' }, child)).toEqual(['/srv/p.vhd', '/vms/disks/p.vhd'])
    expect(candidatesFor({ kind: 'url', text: 'file://localhost/Users/me/My%20Disk.vhd' }, child)).toEqual(['/Users/me/My Disk.vhd', '/vms/disks/My Disk.vhd'])
    expect(candidatesFor({ kind: 'name', text: 'parent.vhd' }, child)).toEqual(['/vms/disks/parent.vhd'])
  })
})
