import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { EngineError } from '../../../../electron/engine/errors.js'
import { looksLikeDescriptor, parseDescriptor } from '../../../../electron/engine/formats/vmdk/descriptor.js'

const QEMU_DESCRIPTOR = `# Disk DescriptorFile
version=1
CID=bd9ab407
parentCID=ffffffff
createType="twoGbMaxExtentSparse"

# Extent description
RW 4194304 SPARSE "x-s001.vmdk"
RW 4194304 SPARSE "x-s002.vmdk"
RW 8192 SPARSE "x-s003.vmdk"

# The Disk Data Base
#DDB

ddb.virtualHWVersion = "4"
ddb.adapterType = "ide"
`

function code(fn: () => unknown): string | undefined {
  try {
    fn()
    return undefined
  } catch (err) {
    return err instanceof EngineError ? err.code : `not an EngineError: ${String(err)}`
  }
}

describe('VMDK descriptor', () => {
  it('reads createType, CIDs and extents as qemu writes them', () => {
    const d = parseDescriptor(QEMU_DESCRIPTOR, 'x.vmdk')
    expect(d.createType).toBe('twoGbMaxExtentSparse')
    expect(d.cid).toBe(0xbd9ab407)
    expect(d.parentCid).toBe(0xffffffff)
    expect(d.parentFileNameHint).toBeUndefined()
    expect(d.extents).toEqual([
      { access: 'RW', sectors: 4194304, type: 'SPARSE', fileName: 'x-s001.vmdk', offsetSectors: 0 },
      { access: 'RW', sectors: 4194304, type: 'SPARSE', fileName: 'x-s002.vmdk', offsetSectors: 0 },
      { access: 'RW', sectors: 8192, type: 'SPARSE', fileName: 'x-s003.vmdk', offsetSectors: 0 },
    ])
  })

  it('reads FLAT offsets, ZERO extents, CRLF line ends and the parent hint', () => {
    const text = [
      'version=1',
      'CID=0000000a',
      'parentCID=12ab34cd',
      'createType="monolithicFlat"',
      'parentFileNameHint="../base disk.vmdk"',
      'RW 2048 FLAT "disk-flat.vmdk" 128',
      'RDONLY 100 ZERO',
      'RW   16\tVMFS   "vmfs.vmdk"',
    ].join('\r\n')
    const d = parseDescriptor(text, 'd.vmdk')
    expect(d.cid).toBe(10)
    expect(d.parentCid).toBe(0x12ab34cd)
    expect(d.parentFileNameHint).toBe('../base disk.vmdk')
    expect(d.extents).toEqual([
      { access: 'RW', sectors: 2048, type: 'FLAT', fileName: 'disk-flat.vmdk', offsetSectors: 128 },
      { access: 'RDONLY', sectors: 100, type: 'ZERO', offsetSectors: 0 },
      { access: 'RW', sectors: 16, type: 'VMFS', fileName: 'vmfs.vmdk', offsetSectors: 0 },
    ])
  })

  it('refuses extent lines that are malformed, with IMAGE_MALFORMED', () => {
    for (const line of [
      'RW 2048 FLAT "a.vmdk"', // FLAT without offset
      'RW 2048 SPARSE "a.vmdk" 5', // offset on a sparse extent
      'RW 2048 SPARSE', // no file
      'RW 2048 ZERO "a.vmdk"', // ZERO with a file
      'RW 2048 BOGUS "a.vmdk"', // unknown type
      'RW 99999999999999999999 SPARSE "a.vmdk"', // absurd size
      'RW 2048 FLAT "a.vmdk" 99999999999999999999', // absurd offset
    ]) {
      expect(code(() => parseDescriptor(`createType="custom"\n${line}\n`, 'a.vmdk')), line).toBe('IMAGE_MALFORMED')
    }
  })

  it('skips empty extents like qemu', () => {
    expect(parseDescriptor('RW 0 SPARSE "a.vmdk"\n', 'a').extents).toEqual([])
  })

  it('probes descriptors and nothing else', () => {
    expect(looksLikeDescriptor(Buffer.from(QEMU_DESCRIPTOR))).toBe(true)
    expect(looksLikeDescriptor(Buffer.from('\n\n# comment\nversion=1\r\nCID=1\n'))).toBe(true)
    expect(looksLikeDescriptor(Buffer.from('version=4\n'))).toBe(false)
    expect(looksLikeDescriptor(Buffer.from('hello world\nversion=1\n'))).toBe(false)
    expect(looksLikeDescriptor(Buffer.alloc(4096))).toBe(false)
  })

  it('never throws anything but IMAGE_MALFORMED on arbitrary text (property)', () => {
    const token = fc.constantFrom('RW', 'RDONLY', 'NOACCESS', 'FLAT', 'SPARSE', 'ZERO', 'VMFS', '"', ' ', '\n', '\r\n', '=', 'createType', 'CID', '0', '512', '-1', '99999999999999999999', 'parentFileNameHint', '#')
    const text = fc.oneof(fc.string({ maxLength: 400 }), fc.array(token, { maxLength: 80 }).map((t) => t.join('')))
    fc.assert(
      fc.property(text, (t) => {
        const c = code(() => parseDescriptor(t, 'fuzz.vmdk'))
        expect(c === undefined || c === 'IMAGE_MALFORMED').toBe(true)
        looksLikeDescriptor(Buffer.from(t, 'latin1'))
      }),
      { numRuns: 2000 },
    )
  })
})
