/**
 * The VMDK text descriptor: a small `key=value` file (or a text block embedded in a sparse extent)
 * that names the disk type (`createType`), its content IDs (`CID`, `parentCID`), its parent
 * (`parentFileNameHint`) and the extents that make up the disk, one line each, in guest order:
 *
 *   RW 4192256 SPARSE "disk-s001.vmdk"
 *   RW 4192256 FLAT "disk-f001.vmdk" 0
 *   RDONLY 2048 ZERO
 *
 * Pure functions over text; nothing here touches a file.
 */
import { EngineError } from '../../errors.js'

/** Largest descriptor text we read (the same cap qemu uses: anything larger is not a descriptor). */
export const MAX_DESCRIPTOR_BYTES = 1024 * 1024 - 1
/** More extent lines than this is refused (a 2 TiB twoGbMaxExtent disk has ~1000). */
export const MAX_EXTENTS = 4096

export type ExtentAccess = 'RW' | 'RDONLY' | 'NOACCESS'
/** Extent types of the VMDK specification. */
export type ExtentType = 'FLAT' | 'SPARSE' | 'ZERO' | 'VMFS' | 'VMFSSPARSE' | 'VMFSRDM' | 'VMFSRAW' | 'SESPARSE'

export interface ExtentLine {
  access: ExtentAccess
  sectors: number
  type: ExtentType
  /** File name as written (relative names are relative to the descriptor's folder); absent for ZERO. */
  fileName?: string
  /** FLAT/VMFS only: where the extent starts in its file, in sectors. */
  offsetSectors: number
}

export interface Descriptor {
  createType: string | undefined
  /** Content ID of this disk (hex in the file), undefined when absent or unreadable. */
  cid: number | undefined
  /** Content ID the parent had when this delta was created; 0xffffffff means "no parent". */
  parentCid: number | undefined
  parentFileNameHint: string | undefined
  extents: ExtentLine[]
}

const EXTENT_TYPES: ReadonlySet<string> = new Set(['FLAT', 'SPARSE', 'ZERO', 'VMFS', 'VMFSSPARSE', 'VMFSRDM', 'VMFSRAW', 'SESPARSE'])
const ACCESS: ReadonlySet<string> = new Set(['RW', 'RDONLY', 'NOACCESS'])

/** `ACCESS SECTORS TYPE ["FILE" [OFFSET]]` with any amount of blank space between fields. */
const EXTENT_LINE = /^(RW|RDONLY|NOACCESS)\s+(\d+)\s+([A-Za-z]+)(?:\s+"([^"\r\n]*)"(?:\s+(\d+))?)?\s*$/

function bad(path: string, problem: string): EngineError {
  return new EngineError('IMAGE_MALFORMED', `"${path}" is not a valid VMDK descriptor: ${problem}. The file may be damaged.`)
}

function unquote(value: string): string {
  const v = value.trim()
  return v.length >= 2 && v.startsWith('"') && v.endsWith('"') ? v.slice(1, -1) : v
}

function parseHex32(value: string | undefined): number | undefined {
  if (value === undefined) return undefined
  const m = /^\s*(?:0x)?([0-9a-fA-F]{1,8})\b/.exec(value)
  return m?.[1] === undefined ? undefined : Number.parseInt(m[1], 16) >>> 0
}

/**
 * Parses descriptor text (`path` only names the file in errors). Keys are matched case-sensitively
 * as VMware writes them; unknown keys and comments are ignored. Extent lines are validated:
 * FLAT needs an offset, ZERO needs no file, every other type needs a file name and no offset.
 * Throws IMAGE_MALFORMED for a line that starts like an extent but is not one.
 */
export function parseDescriptor(text: string, path: string): Descriptor {
  const values = new Map<string, string>()
  const extents: ExtentLine[] = []
  const lines = text.split('\n')
  for (const rawLine of lines) {
    const line = rawLine.replace(/\r$/, '').trim()
    if (line === '' || line.startsWith('#')) continue
    const firstWord = /^[A-Za-z]+/.exec(line)?.[0] ?? ''
    if (ACCESS.has(firstWord) && /^[A-Z]+\s+\d/.test(line)) {
      const m = EXTENT_LINE.exec(line)
      if (!m) throw bad(path, `invalid extent line "${line.slice(0, 200)}"`)
      const [, access, sectorsText, typeText, fileName, offsetText] = m
      const type = (typeText ?? '').toUpperCase()
      if (!EXTENT_TYPES.has(type)) throw bad(path, `unknown extent type "${typeText}"`)
      const sectors = Number(sectorsText)
      // An empty extent adds nothing to the disk (qemu skips it too).
      if (sectors === 0) continue
      if (!Number.isSafeInteger(sectors) || sectors > Number.MAX_SAFE_INTEGER / 512) {
        throw bad(path, `extent line "${line.slice(0, 200)}" has an impossible size`)
      }
      const offsetSectors = offsetText === undefined ? 0 : Number(offsetText)
      if (!Number.isSafeInteger(offsetSectors) || offsetSectors > Number.MAX_SAFE_INTEGER / 512) {
        throw bad(path, `extent line "${line.slice(0, 200)}" has an impossible offset`)
      }
      if (type === 'ZERO') {
        if (fileName !== undefined) throw bad(path, `ZERO extent line "${line.slice(0, 200)}" names a file`)
      } else {
        if (fileName === undefined || fileName === '') throw bad(path, `extent line "${line.slice(0, 200)}" names no file`)
        if (type === 'FLAT' && offsetText === undefined) throw bad(path, `FLAT extent line "${line.slice(0, 200)}" has no offset`)
        if (type !== 'FLAT' && type !== 'VMFS' && type !== 'VMFSRDM' && type !== 'VMFSRAW' && offsetText !== undefined) {
          throw bad(path, `${type} extent line "${line.slice(0, 200)}" has an offset`)
        }
      }
      if (extents.length >= MAX_EXTENTS) throw bad(path, `more than ${MAX_EXTENTS} extents`)
      extents.push({
        access: access as ExtentAccess,
        sectors,
        type: type as ExtentType,
        ...(fileName === undefined ? {} : { fileName }),
        offsetSectors,
      })
      continue
    }
    const eq = line.indexOf('=')
    if (eq > 0) {
      const key = line.slice(0, eq).trim()
      if (!values.has(key)) values.set(key, line.slice(eq + 1))
    }
  }
  const createType = values.get('createType')
  const hint = values.get('parentFileNameHint')
  return {
    createType: createType === undefined ? undefined : unquote(createType),
    cid: parseHex32(values.get('CID')),
    parentCid: parseHex32(values.get('parentCID')),
    parentFileNameHint: hint === undefined || unquote(hint) === '' ? undefined : unquote(hint),
    extents,
  }
}

/**
 * True when `head` (the first bytes of a file) looks like a VMDK text descriptor: optional blank
 * lines and `#` comments, then a `version=N` line, or the `# Disk DescriptorFile` banner.
 */
export function looksLikeDescriptor(head: Uint8Array): boolean {
  const text = Buffer.from(head.buffer, head.byteOffset, Math.min(head.length, 4096)).toString('latin1').replace(/^\xef\xbb\xbf/, '')
  if (/^\s*# Disk DescriptorFile/.test(text)) return true
  for (const raw of text.split('\n')) {
    const line = raw.replace(/\r$/, '')
    if (line.trim() === '' || line.trimStart().startsWith('#')) continue
    return /^version=[123]\s*$/.test(line)
  }
  return false
}
