import { describe, expect, it } from 'vitest'
import { crc32c, crc32cWithZeroField } from '../../../../electron/engine/formats/vhdx/crc32c.js'
import {
  batEntryCount,
  bitmapIndex,
  buildHeader,
  buildMetadataRegion,
  buildParentLocator,
  buildRegionTable,
  chunkRatio,
  guidBytes,
  guidText,
  normalizeGuid,
  parseHeader,
  parseMetadataTable,
  parseParentLocator,
  parseRegionTable,
  payloadIndex,
} from '../../../../electron/engine/formats/vhdx/structures.js'

const MiB = 1024 * 1024

describe('CRC-32C', () => {
  it('matches the standard check values', () => {
    expect(crc32c(Buffer.from('123456789'))).toBe(0xe3069283)
    expect(crc32c(Buffer.alloc(32))).toBe(0x8a9136aa)
    expect(crc32c(Buffer.alloc(32, 0xff))).toBe(0x62a8ab43)
    expect(crc32c(new Uint8Array(0))).toBe(0)
  })
  it('chains and skips a field', () => {
    const b = Buffer.from('The quick brown fox jumps over the lazy dog')
    expect(crc32c(b.subarray(7), crc32c(b.subarray(0, 7)))).toBe(crc32c(b))
    const z = Buffer.from(b)
    z.fill(0, 8, 12)
    expect(crc32cWithZeroField(b, 8)).toBe(crc32c(z))
  })
})

describe('VHDX structures', () => {
  it('writes GUIDs in the Windows mixed-endian layout', () => {
    const text = '2dc27766-f623-4200-9d64-115e9bfd4a08'
    expect(guidBytes(text).toString('hex')).toBe('6677c22d23f600429d64115e9bfd4a08')
    expect(guidText(guidBytes(`{${text.toUpperCase()}}`))).toBe(text)
    expect(normalizeGuid('{2DC27766-F623-4200-9D64-115E9BFD4A08}')).toBe(text)
    expect(normalizeGuid('nope')).toBeUndefined()
  })

  it('round-trips headers and region tables, refusing a bad CRC', () => {
    const h = buildHeader({ sequenceNumber: 7n, fileWriteGuid: Buffer.alloc(16, 1), dataWriteGuid: Buffer.alloc(16, 2), logGuid: Buffer.alloc(16), logVersion: 0, version: 1, logLength: MiB, logOffset: MiB })
    expect(parseHeader(h)).toMatchObject({ sequenceNumber: 7n, version: 1, logLength: MiB, logOffset: MiB })
    h[200] = 1
    expect(parseHeader(h)).toBeUndefined()
    const r = buildRegionTable([{ guid: '2dc27766-f623-4200-9d64-115e9bfd4a08', fileOffset: 3 * MiB, length: MiB, required: true }])
    expect(parseRegionTable(r)).toEqual([{ guid: '2dc27766-f623-4200-9d64-115e9bfd4a08', fileOffset: 3 * MiB, length: MiB, required: true }])
    r[1000] = 1
    expect(parseRegionTable(r)).toBeUndefined()
  })

  it('round-trips the metadata table and a parent locator', () => {
    const loc = buildParentLocator([['parent_linkage', '{abc}'], ['relative_path', '..\\p.vhdx']])
    const region = buildMetadataRegion([{ guid: 'a8d35f2d-b30b-454d-abf7-d3d84834ab0c', data: loc, isVirtualDisk: false, isRequired: true }], MiB)
    const table = parseMetadataTable(region)!
    expect(table).toHaveLength(1)
    expect(table[0]).toMatchObject({ offset: 64 * 1024, length: loc.length, isRequired: true, isVirtualDisk: false })
    const parsed = parseParentLocator(region.subarray(64 * 1024, 64 * 1024 + loc.length))!
    expect(parsed.type).toBe('b04aefb7-d19e-4a81-b789-25b8e9445913')
    expect([...parsed.entries]).toEqual([['parent_linkage', '{abc}'], ['relative_path', '..\\p.vhdx']])
  })

  it('interleaves sector bitmap entries every chunk ratio', () => {
    expect(chunkRatio(512, 32 * MiB)).toBe(128)
    expect(chunkRatio(4096, MiB)).toBe(32768)
    expect(payloadIndex(0, 128)).toBe(0)
    expect(payloadIndex(128, 128)).toBe(129)
    expect(bitmapIndex(0, 128)).toBe(128)
    expect(bitmapIndex(1, 128)).toBe(257)
    expect(batEntryCount(128 * 32 * MiB, 32 * MiB, 128, false)).toBe(128)
    expect(batEntryCount(129 * 32 * MiB, 32 * MiB, 128, false)).toBe(130)
    expect(batEntryCount(1, 32 * MiB, 128, true)).toBe(129)
  })
})
