/**
 * Importing machines from hypervisor definitions: a libvirt domain XML (`virsh dumpxml`) or a
 * VirtualBox `.vbox` file. Each importer returns the machine's name, its disk image files (in the
 * hypervisor's order, with names and which one is the system disk) and warnings about devices it
 * left out (CD-ROMs are silently skipped; network volumes, block devices and unsupported formats are
 * named in `warnings`). Nothing is written: the caller passes the result to `addMachine`.
 */
import { readFile } from 'node:fs/promises'
import { dirname, extname, isAbsolute, resolve } from 'node:path'
import type { XMLParser } from 'fast-xml-parser'
import { EngineError, fromFsError } from '../errors.js'
import type { NewDisk } from './machines.js'
import type { MachineSource } from './types.js'

export interface ImportedMachine {
  name: string
  source: MachineSource
  sourcePath: string
  disks: NewDisk[]
  warnings: string[]
}

type Node = Record<string, unknown>

function asArray(v: unknown): Node[] {
  if (v === undefined || v === null) return []
  return (Array.isArray(v) ? v : [v]).filter((x): x is Node => typeof x === 'object' && x !== null)
}

function attr(node: Node | undefined, name: string): string | undefined {
  const v = node?.[`@_${name}`]
  return v === undefined || v === null ? undefined : String(v)
}

function child(node: Node | undefined, name: string): Node | undefined {
  return asArray(node?.[name])[0]
}

function text(node: Node | undefined, name: string): string | undefined {
  const v = node?.[name]
  if (v === undefined || v === null) return undefined
  if (typeof v === 'object') {
    const t = (v as Node)['#text']
    return t === undefined ? undefined : String(t).trim()
  }
  return String(v).trim()
}

/** fast-xml-parser is loaded on first import only: backups and restores never need it. */
async function parser(): Promise<XMLParser> {
  const { XMLParser } = await import('fast-xml-parser')
  return new XMLParser({
    ignoreAttributes: false,
    attributeNamePrefix: '@_',
    removeNSPrefix: true,
    parseAttributeValue: false,
    parseTagValue: false,
    processEntities: true,
  })
}

async function readDefinition(path: string, what: string): Promise<string> {
  try {
    return await readFile(path, 'utf8')
  } catch (err) {
    throw fromFsError(err, path, `reading the ${what}`) ?? err
  }
}

function malformed(path: string, what: string, detail: string, cause?: unknown): EngineError {
  return new EngineError('INVALID_INPUT', `"${path}" is not a usable ${what}: ${detail}.`, { cause })
}

/**
 * Reads a libvirt domain XML. Disks: `<disk device="disk">` of type `file` (their `<source file>`),
 * named by their target device (vda, sdb...). The system disk is the one with the lowest
 * `<boot order>`, else the first disk. `<transient/>` disks are marked excluded.
 */
export async function importLibvirt(xmlPath: string): Promise<ImportedMachine> {
  const path = resolve(xmlPath)
  const xml = await readDefinition(path, 'libvirt domain XML')
  let doc: Node
  try {
    doc = (await parser()).parse(xml) as Node
  } catch (err) {
    throw malformed(path, 'libvirt domain XML', 'it cannot be parsed', err)
  }
  const domain = child(doc, 'domain')
  if (!domain) throw malformed(path, 'libvirt domain XML', 'there is no <domain> element (export it with "virsh dumpxml NAME")')
  const name = text(domain, 'name')
  if (!name) throw malformed(path, 'libvirt domain XML', 'the domain has no <name>')
  const warnings: string[] = []
  const found: { disk: NewDisk; bootOrder: number }[] = []
  for (const d of asArray(child(domain, 'devices')?.disk)) {
    const device = attr(d, 'device') ?? 'disk'
    if (device !== 'disk') continue
    const type = attr(d, 'type') ?? 'file'
    const target = attr(child(d, 'target'), 'dev')
    const label = target ?? `disk ${found.length}`
    if (type !== 'file') {
      warnings.push(`Disk ${label} is a libvirt "${type}" disk, not an image file: it was left out.`)
      continue
    }
    const file = attr(child(d, 'source'), 'file')
    if (!file) {
      warnings.push(`Disk ${label} has no source file (an empty drive): it was left out.`)
      continue
    }
    const order = Number(attr(child(d, 'boot'), 'order') ?? Number.NaN)
    found.push({
      disk: {
        name: target,
        path: isAbsolute(file) ? file : resolve(dirname(path), file),
        isExcluded: child(d, 'transient') !== undefined || d['transient'] !== undefined,
      },
      bootOrder: Number.isFinite(order) ? order : Number.POSITIVE_INFINITY,
    })
  }
  if (found.length === 0) throw malformed(path, 'libvirt domain XML', 'the domain has no disk image files')
  let system = 0
  found.forEach((f, i) => { if (f.bootOrder < found[system]!.bootOrder) system = i })
  found.forEach((f, i) => { f.disk.isSystem = i === system })
  return { name, source: 'libvirt', sourcePath: path, disks: found.map((f) => f.disk), warnings }
}

/** VirtualBox medium formats Tresor reads (VDI, Parallels and QED are not among them). */
const VBOX_SUPPORTED = new Set(['VMDK', 'VHD', 'VHDX', 'QCOW2', 'RAW'])

interface VboxMedium { location: string; format: string }

/**
 * Reads a VirtualBox `.vbox` machine file. Disks: the hard disks attached to the machine's current
 * state (storage controllers in order, then port, then device), resolved through its media registry
 * (nested differencing images included; relative locations are relative to the `.vbox` folder).
 * The system disk is the first disk of the first bootable controller. VDI disks are not supported by
 * Tresor and are named in `warnings` (convert them with `VBoxManage clonemedium --format VHD`).
 */
export async function importVbox(vboxPath: string): Promise<ImportedMachine> {
  const path = resolve(vboxPath)
  const xml = await readDefinition(path, 'VirtualBox machine file')
  let doc: Node
  try {
    doc = (await parser()).parse(xml) as Node
  } catch (err) {
    throw malformed(path, 'VirtualBox machine file', 'it cannot be parsed', err)
  }
  const machine = child(child(doc, 'VirtualBox'), 'Machine')
  if (!machine) throw malformed(path, 'VirtualBox machine file', 'there is no <VirtualBox><Machine> element')
  const name = attr(machine, 'name')
  if (!name) throw malformed(path, 'VirtualBox machine file', 'the machine has no name')
  const base = dirname(path)

  const media = new Map<string, VboxMedium>()
  const walk = (nodes: Node[]): void => {
    for (const hd of nodes) {
      const uuid = attr(hd, 'uuid')
      const location = attr(hd, 'location')
      if (uuid && location) media.set(normUuid(uuid), { location, format: (attr(hd, 'format') ?? '').toUpperCase() })
      walk(asArray(hd.HardDisk))
    }
  }
  walk(asArray(child(child(machine, 'MediaRegistry'), 'HardDisks')?.HardDisk))

  // Storage controllers sit under <Machine> in older files and under <Hardware> in newer ones.
  const controllers = [
    ...asArray(child(machine, 'StorageControllers')?.StorageController),
    ...asArray(child(child(machine, 'Hardware'), 'StorageControllers')?.StorageController),
  ]
  const warnings: string[] = []
  const disks: (NewDisk & { bootable: boolean })[] = []
  for (const ctl of controllers) {
    const bootable = (attr(ctl, 'Bootable') ?? 'true').toLowerCase() === 'true'
    const attached = asArray(ctl.AttachedDevice)
      .filter((a) => (attr(a, 'type') ?? '') === 'HardDisk')
      .sort((a, b) => Number(attr(a, 'port') ?? 0) - Number(attr(b, 'port') ?? 0) || Number(attr(a, 'device') ?? 0) - Number(attr(b, 'device') ?? 0))
    for (const a of attached) {
      const uuid = attr(child(a, 'Image'), 'uuid')
      const where = `${attr(ctl, 'name') ?? 'controller'} port ${attr(a, 'port') ?? 0} device ${attr(a, 'device') ?? 0}`
      const medium = uuid ? media.get(normUuid(uuid)) : undefined
      if (!medium) {
        warnings.push(`The hard disk at ${where} is not in the machine's media registry: it was left out.`)
        continue
      }
      const file = isAbsolute(medium.location) ? medium.location : resolve(base, medium.location)
      const format = medium.format || extname(file).slice(1).toUpperCase()
      if (!VBOX_SUPPORTED.has(format)) {
        warnings.push(`The hard disk "${file}" at ${where} is in ${format} format, which Tresor cannot read: it was left out. Convert it with "VBoxManage clonemedium disk ... --format VHD".`)
        continue
      }
      disks.push({ path: file, bootable })
    }
  }
  if (disks.length === 0) throw malformed(path, 'VirtualBox machine file', `no supported hard disk is attached${warnings.length ? ' (' + warnings.join(' ') + ')' : ''}`)
  const system = Math.max(0, disks.findIndex((d) => d.bootable))
  return {
    name,
    source: 'vbox',
    sourcePath: path,
    disks: disks.map((d, i) => ({ path: d.path, isSystem: i === system })),
    warnings,
  }
}

function normUuid(u: string): string {
  return u.replace(/[{}]/g, '').toLowerCase()
}
