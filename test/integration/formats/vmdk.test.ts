/**
 * VMDK reader against the oracle: images made by qemu-img / qemu-io 7.2 (always `-f vmdk`), read by
 * us and by `qemu-img convert -O raw`; the bytes, the allocation map (`qemu-img map`) and random
 * range reads must agree. Hand-built files cover what qemu cannot write (GD_AT_END streams, ZERO
 * extents, damaged tables).
 */
import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { mkdtemp, open, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { deflateSync } from 'node:zlib'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { EngineError } from '../../../electron/engine/errors.js'
import { formatModule, openImage, registerFormat } from '../../../electron/engine/formats/open.js'
import '../../../electron/engine/formats/index.js'
import type { DiskImage, Extent } from '../../../electron/engine/formats/types.js'
import { vmdkModule } from '../../../electron/engine/formats/vmdk/index.js'

const run = promisify(execFile)
// formats/index.ts registers every module; registering again is harmless and keeps this file
// independent of the order in which modules are wired.
registerFormat(vmdkModule)

const MiB = 1024 * 1024
let dir: string

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tresor-vmdk-'))
})
afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true })
})

async function qemuImg(...args: string[]): Promise<string> {
  const { stdout } = await run('qemu-img', args, { maxBuffer: 64 * MiB })
  return stdout
}
async function qemuIo(file: string, ...commands: string[]): Promise<void> {
  const args = ['-f', 'vmdk']
  for (const c of commands) args.push('-c', c)
  args.push(file)
  const { stdout } = await run('qemu-io', args, { maxBuffer: 16 * MiB })
  if (/error|failed/i.test(stdout)) throw new Error(`qemu-io ${commands.join('; ')}: ${stdout}`)
}

/** Deterministic pseudo-random bytes (xorshift32). */
function prng(seed: number): () => number {
  let x = seed >>> 0 || 0x9e3779b9
  return () => {
    x ^= x << 13
    x >>>= 0
    x ^= x >>> 17
    x ^= x << 5
    x >>>= 0
    return x
  }
}
function randomBytes(length: number, seed: number): Buffer {
  const next = prng(seed)
  const buf = Buffer.alloc(length)
  for (let i = 0; i + 4 <= length; i += 4) buf.writeUInt32LE(next(), i)
  for (let i = length - (length % 4); i < length; i++) buf[i] = next() & 0xff
  return buf
}

let seedCounter = 1
/** Writes `length` deterministic random bytes at `offset` with qemu-io (through a pattern file). */
async function writeRandom(file: string, offset: number, length: number): Promise<void> {
  const src = join(dir, `pattern-${seedCounter}`)
  await writeFile(src, randomBytes(length, seedCounter++))
  await qemuIo(file, `write -s ${src} ${offset} ${length}`)
  await rm(src)
}

async function oracleRaw(file: string): Promise<string> {
  const out = `${file}.oracle.raw`
  await qemuImg('convert', '-f', 'vmdk', '-O', 'raw', file, out)
  return out
}

async function sha256File(path: string): Promise<string> {
  return createHash('sha256').update(await readFile(path)).digest('hex')
}

async function readAll(img: DiskImage): Promise<Buffer> {
  const buf = Buffer.alloc(img.virtualSize)
  // Odd-sized chunks so reads straddle grains and extents.
  const chunk = 3 * MiB + 512 * 7
  for (let pos = 0; pos < img.virtualSize; pos += chunk) {
    await img.read(buf.subarray(pos, Math.min(img.virtualSize, pos + chunk)), pos)
  }
  return buf
}

async function collectExtents(img: DiskImage): Promise<Extent[]> {
  const out: Extent[] = []
  for await (const e of img.extents()) out.push(e)
  return out
}

/** Extents are ordered, disjoint, merged, clipped, and cover every non-zero sector of `guest`. */
function checkExtents(extents: Extent[], guest: Buffer, virtualSize: number): void {
  let prevEnd = -1
  let prev: Extent | undefined
  for (const e of extents) {
    expect(e.length).toBeGreaterThan(0)
    expect(e.offset).toBeGreaterThanOrEqual(Math.max(0, prevEnd))
    if (prev && prevEnd === e.offset) expect(e.zero).not.toBe(prev.zero)
    expect(e.offset + e.length).toBeLessThanOrEqual(virtualSize)
    prevEnd = e.offset + e.length
    prev = e
  }
  const zeroSector = Buffer.alloc(512)
  let idx = 0
  for (let pos = 0; pos < guest.length; pos += 512) {
    const sector = guest.subarray(pos, Math.min(guest.length, pos + 512))
    if (sector.equals(zeroSector.subarray(0, sector.length))) continue
    while (idx < extents.length && (extents[idx] as Extent).offset + (extents[idx] as Extent).length <= pos) idx++
    const e = extents[idx]
    if (!e || e.offset > pos || e.zero) throw new Error(`non-zero sector at ${pos} is not inside a data extent`)
  }
}

type Kind = 'data' | 'zero'
interface Run {
  start: number
  length: number
  kind: Kind
}
function mergeRuns(runs: Run[]): Run[] {
  const out: Run[] = []
  for (const r of runs) {
    const last = out[out.length - 1]
    if (last && last.start + last.length === r.start && last.kind === r.kind) last.length += r.length
    else out.push({ ...r })
  }
  return out
}
/** qemu's allocation map (present ranges only) as runs of data / zero. */
async function qemuMap(file: string): Promise<Run[]> {
  const entries = JSON.parse(await qemuImg('map', '--output=json', '-f', 'vmdk', file)) as {
    start: number
    length: number
    present: boolean
    zero: boolean
    data: boolean
  }[]
  return mergeRuns(entries.filter((e) => e.present).map((e) => ({ start: e.start, length: e.length, kind: e.data ? 'data' : 'zero' })))
}
function ourRuns(extents: Extent[]): Run[] {
  return mergeRuns(extents.map((e) => ({ start: e.offset, length: e.length, kind: e.zero ? 'zero' : 'data' })))
}

/** Random range reads (any alignment) must equal the oracle's bytes. */
async function checkRandomReads(img: DiskImage, oracle: Buffer, seed: number, count = 40): Promise<void> {
  const next = prng(seed)
  for (let i = 0; i < count; i++) {
    const len = 1 + (next() % (300 * 1024))
    const maxStart = Math.max(0, img.virtualSize - len)
    const start = next() % (maxStart + 1)
    const l = Math.min(len, img.virtualSize - start)
    const got = Buffer.alloc(l)
    await img.read(got, start)
    if (!got.equals(oracle.subarray(start, start + l))) throw new Error(`read of ${l} bytes at ${start} differs from qemu`)
  }
}

/** Opens `file` with Tresor and checks bytes, extents and (optionally) the qemu map against qemu. */
async function compareWithQemu(file: string, options: { compareMap?: boolean } = {}): Promise<DiskImage> {
  const oraclePath = await oracleRaw(file)
  const oracle = await readFile(oraclePath)
  const img = await openImage(file)
  try {
    const info = JSON.parse(await qemuImg('info', '--output=json', '-f', 'vmdk', file)) as { 'virtual-size': number }
    expect(img.format).toBe('vmdk')
    expect(img.virtualSize).toBe(info['virtual-size'])
    const guest = await readAll(img)
    expect(createHash('sha256').update(guest).digest('hex')).toBe(await sha256File(oraclePath))
    const extents = await collectExtents(img)
    checkExtents(extents, oracle, img.virtualSize)
    if (options.compareMap) expect(ourRuns(extents)).toEqual(await qemuMap(file))
    // Reading only the data extents reconstructs the guest view.
    const fromExtents = Buffer.alloc(img.virtualSize)
    for (const e of extents) if (!e.zero) await img.read(fromExtents.subarray(e.offset, e.offset + e.length), e.offset)
    expect(fromExtents.equals(oracle)).toBe(true)
    await checkRandomReads(img, oracle, 7)
    return img
  } catch (err) {
    await img.close()
    throw err
  } finally {
    await rm(oraclePath, { force: true })
  }
}

/** A fresh sub-folder for one case. */
async function caseDir(name: string): Promise<string> {
  const d = join(dir, name)
  await rm(d, { recursive: true, force: true })
  await run('mkdir', ['-p', d])
  return d
}

/** The standard write pattern: random data (unaligned, across grains), zero writes, the last sector. */
async function fillPattern(file: string, size: number): Promise<void> {
  await writeRandom(file, 0, 4096)
  await writeRandom(file, 100_000, 200_000)
  await writeRandom(file, 1 * MiB - 512, 1024)
  await qemuIo(file, `write -z ${2 * MiB} ${128 * 1024}`)
  await writeRandom(file, 3 * MiB + 1536, 70_000)
  await qemuIo(file, `write -z ${3 * MiB + 4096} 8192`)
  await writeRandom(file, size - 512, 512)
}

describe('VMDK reader matches qemu-img', () => {
  const size = 5 * MiB + 3 * 512 // odd: the last grain is partly past the end of the disk

  for (const subformat of ['monolithicSparse', 'monolithicFlat', 'twoGbMaxExtentSparse', 'twoGbMaxExtentFlat']) {
    it(`reads ${subformat} written by qemu-io`, async () => {
      const d = await caseDir(subformat)
      const file = join(d, 'disk.vmdk')
      await qemuImg('create', '-q', '-f', 'vmdk', '-o', `subformat=${subformat}`, file, String(size))
      await fillPattern(file, size)
      const sparse = subformat.endsWith('Sparse')
      const img = await compareWithQemu(file, { compareMap: sparse })
      try {
        expect(img.variant).toBe(subformat)
        const info = await img.info()
        expect(info).toMatchObject({ format: 'vmdk', variant: subformat, virtualSize: size, backingChain: [] })
        expect(info.clusterSize).toBe(sparse ? 65536 : 512)
        if (!sparse) {
          // qemu makes the flat files sparse: the all-zero ranges of a thin flat file are not extents.
          const flatFile = join(d, subformat === 'monolithicFlat' ? 'disk-flat.vmdk' : 'disk-f001.vmdk')
          const st = await stat(flatFile)
          if (st.blocks * 512 < st.size) expect(info.allocatedBytes).toBeLessThan(size / 2)
        }
        if (sparse) {
          // Grain-granular allocation: qemu's map of data ranges adds up to what we report.
          const dataBytes = (await qemuMap(file)).filter((r) => r.kind === 'data').reduce((s, r) => s + r.length, 0)
          expect(info.allocatedBytes).toBe(dataBytes)
        }
      } finally {
        await img.close()
      }
    })
  }

  it('reads an empty monolithicSparse disk as zeros with no extents', async () => {
    const d = await caseDir('empty')
    const file = join(d, 'empty.vmdk')
    await qemuImg('create', '-q', '-f', 'vmdk', file, String(3 * MiB))
    const img = await compareWithQemu(file, { compareMap: true })
    try {
      expect(await collectExtents(img)).toEqual([])
      expect((await img.info()).allocatedBytes).toBe(0)
    } finally {
      await img.close()
    }
  })

  it('reports zeroed grains (zeroed_grain=on) as zero extents', async () => {
    const d = await caseDir('zeroed')
    const file = join(d, 'zeroed.vmdk')
    await qemuImg('create', '-q', '-f', 'vmdk', '-o', 'zeroed_grain=on', file, String(4 * MiB))
    await writeRandom(file, 0, 4 * MiB)
    await qemuIo(file, `write -z ${MiB} ${512 * 1024}`, `write -z ${3 * MiB + 65536} 65536`, `write -z 7000 3000`)
    const header = Buffer.alloc(12)
    const fh = await open(file, 'r')
    await fh.read(header, 0, 12, 0)
    await fh.close()
    expect(header.readUInt32LE(4)).toBe(2) // version 2: zeroed-grain GTEs
    const img = await compareWithQemu(file, { compareMap: true })
    try {
      const extents = await collectExtents(img)
      expect(extents.some((e) => e.zero)).toBe(true)
    } finally {
      await img.close()
    }
  })

  it('reads streamOptimized images (compressed grains) converted by qemu-img', async () => {
    const d = await caseDir('stream')
    const raw = join(d, 'src.raw')
    const size = 6 * MiB + 512
    // Random data, compressible data, zeros and a last sector.
    const content = Buffer.alloc(size)
    randomBytes(700_000, 99).copy(content, 123_456)
    content.fill(0x41, 2 * MiB, 2 * MiB + 300_000)
    randomBytes(512, 98).copy(content, size - 512)
    await writeFile(raw, content)
    const file = join(d, 'stream.vmdk')
    await qemuImg('convert', '-f', 'raw', '-O', 'vmdk', '-o', 'subformat=streamOptimized', raw, file)
    const img = await compareWithQemu(file, { compareMap: true })
    try {
      expect(img.variant).toBe('streamOptimized')
      expect(img.clusterSize).toBe(65536)
      expect((await readAll(img)).equals(content)).toBe(true)
    } finally {
      await img.close()
    }
  })

  it('reads a streamOptimized image made from a qcow2 with a backing file', async () => {
    const d = await caseDir('stream-qcow2')
    const base = join(d, 'base.qcow2')
    const top = join(d, 'top.qcow2')
    await qemuImg('create', '-q', '-f', 'qcow2', base, String(3 * MiB))
    await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x5a 0 1M', base])
    await qemuImg('create', '-q', '-f', 'qcow2', '-b', base, '-F', 'qcow2', top)
    await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x11 512k 64k', '-c', 'write -z 2M 64k', top])
    const file = join(d, 'stream.vmdk')
    await qemuImg('convert', '-f', 'qcow2', '-O', 'vmdk', '-o', 'subformat=streamOptimized', top, file)
    const img = await compareWithQemu(file, { compareMap: true })
    await img.close()
  })

  it('reads a streamOptimized stream whose grain directory is in the footer (GD_AT_END)', async () => {
    const d = await caseDir('gd-at-end')
    const size = 33 * MiB + 3 * 512 // more than one grain table (32 MiB each), odd tail
    const content = Buffer.alloc(size)
    randomBytes(200_000, 5).copy(content, 70_000)
    content.fill(0x33, 32 * MiB + 4096, 32 * MiB + 65536 * 3)
    randomBytes(1536, 6).copy(content, size - 1536)
    const file = join(d, 'vmware-stream.vmdk')
    await writeFile(file, buildStream(content))
    const img = await compareWithQemu(file, { compareMap: true })
    try {
      expect(img.variant).toBe('streamOptimized')
      expect((await readAll(img)).equals(content)).toBe(true)
    } finally {
      await img.close()
    }
  })

  it('reads a twoGbMaxExtentSparse disk of several extents (data across the 2 GiB boundaries)', async () => {
    const d = await caseDir('twogb')
    const file = join(d, 'big.vmdk')
    const size = 4 * 1024 * MiB + 5 * 512
    await qemuImg('create', '-q', '-f', 'vmdk', '-o', 'subformat=twoGbMaxExtentSparse', file, String(size))
    const boundary = 2 * 1024 * MiB
    await writeRandom(file, 10_000, 100_000)
    await writeRandom(file, boundary - 70_000, 140_000)
    await writeRandom(file, 2 * boundary - 512, 1024)
    await writeRandom(file, size - 2560, 2560)
    const img = await openImage(file)
    try {
      expect(img.virtualSize).toBe(size)
      const extents = await collectExtents(img)
      expect(ourRuns(extents)).toEqual(await qemuMap(file))
      // Compare every data extent with the same range read by qemu (qemu-img dd of whole 64 KiB blocks).
      const oraclePath = await oracleRaw(file)
      const oracle = await open(oraclePath, 'r')
      try {
        for (const e of extents) {
          const ours = Buffer.alloc(e.length)
          await img.read(ours, e.offset)
          const theirs = Buffer.alloc(e.length)
          await oracle.read(theirs, 0, e.length, e.offset)
          expect(ours.equals(theirs)).toBe(true)
        }
        // Nothing outside our extents is non-zero in qemu's view: qemu's data ranges are ours.
        expect((await stat(oraclePath)).size).toBe(size)
      } finally {
        await oracle.close()
        await rm(oraclePath)
      }
      const straddle = Buffer.alloc(200_000)
      await img.read(straddle, boundary - 100_000)
      expect(straddle.subarray(30_000, 170_000).every((b) => b === 0)).toBe(false)
    } finally {
      await img.close()
    }
  })

  it('reads a delta disk through its parent (parentFileNameHint) and lists the chain', async () => {
    const d = await caseDir('delta')
    const base = join(d, 'base.vmdk')
    const child = join(d, 'child.vmdk')
    const size = 4 * MiB
    await qemuImg('create', '-q', '-f', 'vmdk', base, String(size))
    await writeRandom(base, 0, 2 * MiB)
    await writeRandom(base, size - 65536, 65536)
    await qemuImg('create', '-q', '-f', 'vmdk', '-b', 'base.vmdk', '-F', 'vmdk', child)
    await writeRandom(child, 500_000, 100_000)
    await qemuIo(child, `write -z ${MiB} 65536`)
    const img = await compareWithQemu(child, { compareMap: true })
    try {
      expect(img.backing?.path).toBe(base)
      const info = await img.info()
      expect(info.backingChain).toEqual([{ path: base, format: 'vmdk', variant: 'monolithicSparse', virtualSize: size }])
    } finally {
      await img.close()
    }
    const top = await openImage(child, { noBacking: true })
    try {
      expect(top.backing).toBeUndefined()
      expect((await top.info()).backingChain).toEqual([])
    } finally {
      await top.close()
    }
  })

  it('refuses a delta whose parent changed since (CID mismatch), like qemu', async () => {
    const d = await caseDir('cid')
    const base = join(d, 'base.vmdk')
    const child = join(d, 'child.vmdk')
    await qemuImg('create', '-q', '-f', 'vmdk', base, String(MiB))
    await qemuImg('create', '-q', '-f', 'vmdk', '-b', base, '-F', 'vmdk', child)
    await writeRandom(base, 0, 4096) // a write to the parent gives it a new CID
    await expect(qemuImg('convert', '-f', 'vmdk', '-O', 'raw', child, join(d, 'out.raw'))).rejects.toThrow()
    const err = await openImage(child).then(
      async (img) => {
        await img.close()
        return undefined
      },
      (e: unknown) => e,
    )
    expect(err).toBeInstanceOf(EngineError)
    expect((err as EngineError).code).toBe('IMAGE_BACKING_MISMATCH')
    expect((err as EngineError).userMessage).toContain(child)
  })

  it('reports a missing parent as IMAGE_BACKING_MISSING', async () => {
    const d = await caseDir('noparent')
    const base = join(d, 'base.vmdk')
    const child = join(d, 'child.vmdk')
    await qemuImg('create', '-q', '-f', 'vmdk', base, String(MiB))
    await qemuImg('create', '-q', '-f', 'vmdk', '-b', base, '-F', 'vmdk', child)
    await rm(base)
    await expect(openImage(child)).rejects.toMatchObject({ code: 'IMAGE_BACKING_MISSING' })
  })

  it('reads a hand-written descriptor mixing FLAT, SPARSE and ZERO extents', async () => {
    const d = await caseDir('mixed')
    const flatA = randomBytes(MiB, 11)
    await writeFile(join(d, 'a.raw'), Buffer.concat([Buffer.alloc(4096, 0xee), flatA])) // extent at offset 8 sectors
    const sparse = join(d, 'b.vmdk')
    await qemuImg('create', '-q', '-f', 'vmdk', sparse, String(2 * MiB))
    await writeRandom(sparse, 65536 + 100, 5000)
    const sparseRaw = await oracleRaw(sparse)
    const descriptor = [
      '# Disk DescriptorFile',
      'version=1',
      'CID=12345678',
      'parentCID=ffffffff',
      'createType="twoGbMaxExtentFlat"',
      '',
      '# Extent description',
      `RW ${MiB / 512} FLAT "a.raw" 8`,
      'RW 1024 ZERO',
      `RDONLY ${(2 * MiB) / 512} SPARSE "b.vmdk"`,
      '',
      'ddb.adapterType = "ide"',
    ].join('\r\n')
    const file = join(d, 'mixed.vmdk')
    await writeFile(file, descriptor)
    const img = await openImage(file)
    try {
      // qemu drops ZERO and RDONLY extents, so the expected view is built from the pieces qemu reads.
      const expected = Buffer.concat([flatA, Buffer.alloc(512 * 1024), await readFile(sparseRaw)])
      expect(img.virtualSize).toBe(expected.length)
      expect(img.variant).toBe('twoGbMaxExtentFlat')
      const guest = await readAll(img)
      expect(guest.equals(expected)).toBe(true)
      const extents = await collectExtents(img)
      checkExtents(extents, expected, img.virtualSize)
      expect(extents[0]).toEqual({ offset: 0, length: MiB, zero: false })
      expect(extents[1]).toEqual({ offset: MiB, length: 512 * 1024, zero: true })
      await checkRandomReads(img, expected, 3)
    } finally {
      await img.close()
    }
    // The same view with blocking reads, which every extent file is opened with.
    const blocking = await openImage(file, { blockingReads: true })
    try {
      const buf = Buffer.alloc(blocking.virtualSize)
      await blocking.read(buf, 0)
      expect(buf.equals(Buffer.concat([flatA, Buffer.alloc(512 * 1024), await readFile(sparseRaw)]))).toBe(true)
    } finally {
      await blocking.close()
    }
  })

  it('reads a vmfsSparse disk (COWD extent, 4096-entry grain tables) like qemu', async () => {
    const d = await caseDir('cowd')
    const capacity = 20480 // sectors: 10 MiB in 2-sector grains, three grain tables
    const { extent, content } = buildCowd(capacity, 2, [0, 5, 6, 7, 4096 * 2 + 3, capacity / 2 - 1])
    await writeFile(join(d, 'disk-delta.vmdk'), extent)
    const file = join(d, 'disk.vmdk')
    await writeFile(
      file,
      `# Disk DescriptorFile\nversion=1\nCID=11112222\nparentCID=ffffffff\ncreateType="vmfsSparse"\nRW ${capacity} VMFSSPARSE "disk-delta.vmdk"\n`,
    )
    const img = await compareWithQemu(file, { compareMap: true })
    try {
      expect(img.variant).toBe('vmfsSparse')
      expect(img.clusterSize).toBe(1024)
      expect((await readAll(img)).equals(content)).toBe(true)
    } finally {
      await img.close()
    }
  })

  it('refuses raw device mappings and seSparse with IMAGE_UNSUPPORTED naming the file', async () => {
    const d = await caseDir('unsupported')
    const cases: [string, string][] = [
      ['vmfsRDM', 'RW 2048 VMFSRDM "disk-rdm.vmdk"'],
      ['vmfsPassthroughRawDeviceMap', 'RW 2048 VMFSRDM "disk-rdmp.vmdk"'],
      ['seSparse', 'RW 2048 SESPARSE "disk-sesparse.vmdk"'],
      ['fullDevice', 'RW 2048 FLAT "/dev/sda" 0'],
    ]
    for (const [type, line] of cases) {
      const file = join(d, `${type}.vmdk`)
      await writeFile(file, `# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="${type}"\n${line}\n`)
      const err = await openImage(file).then(
        async (img) => {
          await img.close()
          return undefined
        },
        (e: unknown) => e,
      )
      expect(err, type).toBeInstanceOf(EngineError)
      expect((err as EngineError).code).toBe('IMAGE_UNSUPPORTED')
      expect((err as EngineError).userMessage).toContain(file)
    }
  })

  it('names the file in IMAGE_MALFORMED for truncated images and tables pointing past the end', async () => {
    const d = await caseDir('damaged')
    const file = join(d, 'disk.vmdk')
    await qemuImg('create', '-q', '-f', 'vmdk', file, String(4 * MiB))
    await writeRandom(file, 0, 2 * MiB)
    const full = await readFile(file)
    // Truncated in the middle of the grains: opening may work, reading the lost grains must not.
    const cut = join(d, 'cut.vmdk')
    await writeFile(cut, full.subarray(0, full.length - 65536 * 3))
    const img = await openImage(cut)
    try {
      const buf = Buffer.alloc(2 * MiB)
      await expect(img.read(buf, 0)).rejects.toMatchObject({ code: 'IMAGE_MALFORMED' })
      await expect(collectExtents(img)).rejects.toMatchObject({ code: 'IMAGE_MALFORMED' })
    } finally {
      await img.close()
    }
    // Truncated inside the grain directory.
    const tiny = join(d, 'tiny.vmdk')
    await writeFile(tiny, full.subarray(0, 21 * 512 + 4))
    await expect(openImage(tiny, { noBacking: true })).rejects.toMatchObject({ code: 'IMAGE_MALFORMED' })
    // A grain directory entry pointing far past the end of the file.
    const gdSector = Number(full.readBigUInt64LE(56))
    const badGd = Buffer.from(full)
    badGd.writeUInt32LE(0x7fffffff, gdSector * 512)
    const badGdFile = join(d, 'bad-gd.vmdk')
    await writeFile(badGdFile, badGd)
    const img2 = await openImage(badGdFile)
    try {
      await expect(img2.read(Buffer.alloc(512), 0)).rejects.toThrow(badGdFile)
    } finally {
      await img2.close()
    }
    // Huge capacity in a small file.
    const huge = Buffer.from(full)
    huge.writeBigUInt64LE(1n << 40n, 12)
    const hugeFile = join(d, 'huge.vmdk')
    await writeFile(hugeFile, huge)
    await expect(openImage(hugeFile)).rejects.toMatchObject({ code: 'IMAGE_MALFORMED' })
    await truncate(hugeFile, 100)
    await expect(openImage(hugeFile, { format: 'vmdk' })).rejects.toMatchObject({ code: 'IMAGE_MALFORMED' })
  })

  it('reads a qcow2 whose backing file is a VMDK', async () => {
    expect(formatModule('vmdk')).toBeDefined()
    expect(formatModule('qcow2')).toBeDefined()
    const d = await caseDir('qcow2-on-vmdk')
    const base = join(d, 'base.vmdk')
    const top = join(d, 'top.qcow2')
    await qemuImg('create', '-q', '-f', 'vmdk', base, String(3 * MiB))
    await writeRandom(base, 0, 3 * MiB)
    await qemuImg('create', '-q', '-f', 'qcow2', '-b', base, '-F', 'vmdk', top)
    await run('qemu-io', ['-f', 'qcow2', '-c', 'write -P 0x77 65536 65536', '-c', 'write -z 1M 128k', top])
    const oraclePath = `${top}.raw`
    await qemuImg('convert', '-f', 'qcow2', '-O', 'raw', top, oraclePath)
    const img = await openImage(top)
    try {
      expect((await readAll(img)).equals(await readFile(oraclePath))).toBe(true)
      expect((await img.info()).backingChain[0]).toMatchObject({ path: base, format: 'vmdk' })
    } finally {
      await img.close()
    }
  })
})

/**
 * Builds a VMware-style streamOptimized file from `content`: header with gdOffset = GD_AT_END,
 * embedded descriptor, grains each behind a marker, a GT marker + GT after each table's grains,
 * GD marker + GD, footer marker + footer (the real GD offset), end-of-stream marker.
 */
function buildStream(content: Buffer): Buffer {
  const grainSectors = 128
  const grainBytes = grainSectors * 512
  const perGT = 512
  const capacitySectors = content.length / 512
  const grains = Math.ceil(content.length / grainBytes)
  const gts = Math.ceil(grains / perGT)
  const descriptor = Buffer.alloc(512 * 2)
  descriptor.write(
    '# Disk DescriptorFile\nversion=1\nCID=a1b2c3d4\nparentCID=ffffffff\ncreateType="streamOptimized"\n' +
      `RW ${capacitySectors} SPARSE "vmware-stream.vmdk"\nddb.adapterType = "lsilogic"\n`,
    'latin1',
  )
  const header = (gdOffset: bigint): Buffer => {
    const h = Buffer.alloc(512)
    h.write('KDMV', 0, 'latin1')
    h.writeUInt32LE(3, 4)
    h.writeUInt32LE(1 | (1 << 16) | (1 << 17), 8)
    h.writeBigUInt64LE(BigInt(capacitySectors), 12)
    h.writeBigUInt64LE(BigInt(grainSectors), 20)
    h.writeBigUInt64LE(1n, 28)
    h.writeBigUInt64LE(2n, 36)
    h.writeUInt32LE(perGT, 44)
    h.writeBigUInt64LE(0n, 48)
    h.writeBigUInt64LE(gdOffset, 56)
    h.writeBigUInt64LE(128n, 64)
    h.write('\n \r\n', 73, 'latin1')
    h.writeUInt16LE(1, 77)
    return h
  }
  const marker = (val: number, type: number): Buffer => {
    const m = Buffer.alloc(512)
    m.writeBigUInt64LE(BigInt(val), 0)
    m.writeUInt32LE(0, 8)
    m.writeUInt32LE(type, 12)
    return m
  }
  const parts: Buffer[] = [header(0xffffffffffffffffn), descriptor]
  let sector = 3
  const pad = (b: Buffer): Buffer => Buffer.concat([b, Buffer.alloc((512 - (b.length % 512)) % 512)])
  const append = (b: Buffer): number => {
    const at = sector
    const padded = pad(b)
    parts.push(padded)
    sector += padded.length / 512
    return at
  }
  // Overhead: VMware starts grains at sector 128.
  append(Buffer.alloc((128 - sector) * 512))
  const gd = Buffer.alloc(gts * 4)
  const zeroGrain = Buffer.alloc(grainBytes)
  for (let t = 0; t < gts; t++) {
    const gt = Buffer.alloc(perGT * 4)
    let any = false
    for (let i = 0; i < perGT; i++) {
      const g = t * perGT + i
      if (g >= grains) break
      const data = Buffer.alloc(grainBytes)
      content.copy(data, 0, g * grainBytes, Math.min(content.length, (g + 1) * grainBytes))
      if (data.equals(zeroGrain)) continue
      const z = deflateSync(data)
      const m = Buffer.alloc(12)
      m.writeBigUInt64LE(BigInt(g * grainSectors), 0)
      m.writeUInt32LE(z.length, 8)
      gt.writeUInt32LE(append(Buffer.concat([m, z])), i * 4)
      any = true
    }
    if (any) {
      append(marker(4, 1))
      gd.writeUInt32LE(append(gt), t * 4)
    }
  }
  append(marker(Math.ceil(gd.length / 512), 2))
  const gdSector = append(gd)
  append(marker(1, 3))
  append(header(BigInt(gdSector)))
  append(marker(0, 0))
  return Buffer.concat(parts)
}

/**
 * Builds a COWD (vmfsSparse) extent: header (magic, version, flags, capacity, grain size, GD offset,
 * GD entries), GD at sector 4, one 4096-entry GT per used GD entry, then the listed grains filled
 * with a pattern. Returns the extent and the guest bytes it holds.
 */
function buildCowd(capacitySectors: number, grainSectors: number, grains: number[]): { extent: Buffer; content: Buffer } {
  const perGT = 4096
  const gdEntries = Math.ceil(capacitySectors / grainSectors / perGT)
  const header = Buffer.alloc(512)
  header.write('COWD', 0, 'latin1')
  header.writeUInt32LE(1, 4)
  header.writeUInt32LE(3, 8)
  header.writeUInt32LE(capacitySectors, 12)
  header.writeUInt32LE(grainSectors, 16)
  header.writeUInt32LE(4, 20)
  header.writeUInt32LE(gdEntries, 24)
  const gd = Buffer.alloc(512)
  const parts: Buffer[] = [header, Buffer.alloc(3 * 512), gd]
  let sector = 5
  const content = Buffer.alloc(capacitySectors * 512)
  const tables = new Map<number, Buffer>()
  for (const g of grains) {
    const t = Math.floor(g / perGT)
    if (tables.has(t)) continue
    const gt = Buffer.alloc(perGT * 4)
    tables.set(t, gt)
    gd.writeUInt32LE(sector, t * 4)
    parts.push(gt)
    sector += (perGT * 4) / 512
  }
  for (const g of grains) {
    const data = randomBytes(grainSectors * 512, 1000 + g)
    data.copy(content, g * grainSectors * 512)
    ;(tables.get(Math.floor(g / perGT)) as Buffer).writeUInt32LE(sector, (g % perGT) * 4)
    parts.push(data)
    sector += grainSectors
  }
  return { extent: Buffer.concat(parts), content }
}
