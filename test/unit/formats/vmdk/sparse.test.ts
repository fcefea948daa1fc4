import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { EngineError } from '../../../../electron/engine/errors.js'
import { vmdkModule } from '../../../../electron/engine/formats/vmdk/index.js'
import { AsyncLru } from '../../../../electron/engine/formats/vmdk/lru.js'
import { isSparseMagic, parseSparseHeader } from '../../../../electron/engine/formats/vmdk/sparse.js'

/** A header as qemu-img 7.2 writes it for a 10 MiB monolithicSparse disk. */
function qemuHeader(): Buffer {
  const h = Buffer.alloc(512)
  h.write('KDMV', 0, 'latin1')
  h.writeUInt32LE(1, 4)
  h.writeUInt32LE(3, 8)
  h.writeBigUInt64LE(20480n, 12)
  h.writeBigUInt64LE(128n, 20)
  h.writeBigUInt64LE(1n, 28)
  h.writeBigUInt64LE(20n, 36)
  h.writeUInt32LE(512, 44)
  h.writeBigUInt64LE(21n, 48)
  h.writeBigUInt64LE(26n, 56)
  h.writeBigUInt64LE(128n, 64)
  h.write('\n \r\n', 73, 'latin1')
  return h
}

function code(fn: () => unknown): string | undefined {
  try {
    fn()
    return undefined
  } catch (err) {
    return err instanceof EngineError ? err.code : `not an EngineError: ${String(err)}`
  }
}

describe('VMDK sparse extent header', () => {
  it('decodes a qemu-made header', () => {
    const h = parseSparseHeader(qemuHeader(), 'disk.vmdk')
    expect(h).toMatchObject({
      version: 1,
      capacitySectors: 20480,
      grainSectors: 128,
      descriptorOffsetSectors: 1,
      descriptorSizeSectors: 20,
      numGTEsPerGT: 512,
      gdOffsetSectors: 26,
      overheadSectors: 128,
      compressed: false,
      hasMarkers: false,
      zeroGrains: false,
      gdAtEnd: false,
    })
  })

  it('reads the stream flags, GD_AT_END and the zeroed-grain flag', () => {
    const b = qemuHeader()
    b.writeUInt32LE(3, 4)
    b.writeUInt32LE(1 | (1 << 2) | (1 << 16) | (1 << 17), 8)
    b.writeBigUInt64LE(0xffffffffffffffffn, 56)
    b.writeUInt16LE(1, 77)
    expect(parseSparseHeader(b, 'x')).toMatchObject({ compressed: true, hasMarkers: true, zeroGrains: true, gdAtEnd: true })
  })

  it('refuses unknown versions and compression as unsupported, absurd geometry as malformed', () => {
    const cases: [string, (b: Buffer) => void, string][] = [
      ['version 4', (b) => b.writeUInt32LE(4, 4), 'IMAGE_UNSUPPORTED'],
      ['version 0', (b) => b.writeUInt32LE(0, 4), 'IMAGE_UNSUPPORTED'],
      ['compression 2', (b) => b.writeUInt16LE(2, 77), 'IMAGE_UNSUPPORTED'],
      ['grain size 0', (b) => b.writeBigUInt64LE(0n, 20), 'IMAGE_MALFORMED'],
      ['grain size 1 GiB', (b) => b.writeBigUInt64LE(1n << 21n, 20), 'IMAGE_UNSUPPORTED'],
      ['grain size 2^64-1', (b) => b.writeBigUInt64LE(0xffffffffffffffffn, 20), 'IMAGE_UNSUPPORTED'],
      ['0 GTEs per GT', (b) => b.writeUInt32LE(0, 44), 'IMAGE_MALFORMED'],
      ['513 GTEs per GT', (b) => b.writeUInt32LE(513, 44), 'IMAGE_MALFORMED'],
      ['capacity 2^63', (b) => b.writeBigUInt64LE(1n << 63n, 12), 'IMAGE_MALFORMED'],
      ['gd offset 2^60', (b) => b.writeBigUInt64LE(1n << 60n, 56), 'IMAGE_MALFORMED'],
      ['bad magic', (b) => b.write('KDMW', 0, 'latin1'), 'IMAGE_MALFORMED'],
    ]
    for (const [name, change, expected] of cases) {
      const b = qemuHeader()
      change(b)
      expect(code(() => parseSparseHeader(b, 'x')), name).toBe(expected)
    }
  })

  it('never throws anything but an image error on arbitrary headers (property)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 600 }), fc.boolean(), (bytes, withMagic) => {
        const b = Buffer.from(bytes)
        if (withMagic && b.length >= 4) b.write('KDMV', 0, 'latin1')
        const c = code(() => parseSparseHeader(b, 'x'))
        expect(c === undefined || c === 'IMAGE_MALFORMED' || c === 'IMAGE_UNSUPPORTED').toBe(true)
      }),
      { numRuns: 3000 },
    )
  })

  it('probes sparse extents and descriptors by content', () => {
    expect(isSparseMagic(qemuHeader())).toBe(true)
    expect(vmdkModule.probe(qemuHeader(), 1 << 20, Buffer.alloc(0))).toBe(true)
    expect(vmdkModule.probe(Buffer.from('# Disk DescriptorFile\nversion=1\n'), 40, Buffer.alloc(0))).toBe(true)
    expect(vmdkModule.probe(Buffer.from('QFI\xfb', 'latin1'), 4, Buffer.alloc(0))).toBe(false)
    expect(vmdkModule.probe(Buffer.alloc(0), 0, Buffer.alloc(0))).toBe(false)
  })
})

describe('AsyncLru', () => {
  it('keeps at most its bound, evicts the least recently used and shares loads', async () => {
    const lru = new AsyncLru<number, string>(2)
    let loads = 0
    const load = (k: number) => () => {
      loads++
      return Promise.resolve(`v${k}`)
    }
    expect(await Promise.all([lru.get(1, load(1)), lru.get(1, load(1))])).toEqual(['v1', 'v1'])
    expect(loads).toBe(1)
    await lru.get(2, load(2))
    await lru.get(1, load(1)) // 1 is now the most recent
    await lru.get(3, load(3)) // evicts 2
    expect(loads).toBe(3)
    await lru.get(1, load(1))
    expect(loads).toBe(3)
    await lru.get(2, load(2))
    expect(loads).toBe(4)
  })

  it('forgets failed loads', async () => {
    const lru = new AsyncLru<number, string>(2)
    await expect(lru.get(1, () => Promise.reject(new Error('boom')))).rejects.toThrow('boom')
    expect(await lru.get(1, () => Promise.resolve('ok'))).toBe('ok')
  })
})
