import { describe, expect, it } from 'vitest'
import { detectFormat } from '../../../electron/engine/formats/detect.js'

function withTail(tail: Buffer): Buffer {
  const t = Buffer.alloc(512)
  tail.copy(t)
  return t
}

describe('detectFormat (by content, never by name)', () => {
  it('recognises each magic', () => {
    const empty = Buffer.alloc(512)
    expect(detectFormat(Buffer.from([0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 3]), 1 << 20, empty)).toBe('qcow2')
    expect(detectFormat(Buffer.from('vhdxfile\0\0'), 1 << 20, empty)).toBe('vhdx')
    expect(detectFormat(Buffer.from('KDMV\x01\0\0\0'), 1 << 20, empty)).toBe('vmdk')
    expect(detectFormat(Buffer.from('# Disk DescriptorFile\nversion=1\n'), 300, empty)).toBe('vmdk')
    expect(detectFormat(Buffer.from('\n  # Disk DescriptorFile\n'), 300, empty)).toBe('vmdk')
    expect(detectFormat(Buffer.alloc(512), 1 << 20, withTail(Buffer.from('conectix')))).toBe('vhd')
    expect(detectFormat(Buffer.from('conectix'), 1 << 20, empty)).toBe('vhd')
  })

  it('falls back to raw, including for short files and near-misses', () => {
    expect(detectFormat(Buffer.alloc(0), 0, Buffer.alloc(0))).toBe('raw')
    expect(detectFormat(Buffer.from('QFI'), 3, Buffer.from('QFI'))).toBe('raw')
    expect(detectFormat(Buffer.from('vhdxfil'), 7, Buffer.alloc(7))).toBe('raw')
    expect(detectFormat(Buffer.from('# Disk Descriptor'), 17, Buffer.alloc(17))).toBe('raw')
    expect(detectFormat(Buffer.alloc(4096, 0xab), 4096, Buffer.alloc(512, 0xab))).toBe('raw')
  })

  it('prefers the most specific magic (qcow2 over a conectix tail)', () => {
    expect(detectFormat(Buffer.from([0x51, 0x46, 0x49, 0xfb]), 1 << 20, withTail(Buffer.from('conectix')))).toBe('qcow2')
  })
})
