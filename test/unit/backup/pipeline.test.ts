import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { mkdtemp, rm, utimes, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { openCatalog, type Db } from '../../../electron/engine/catalog/index.js'
import { addDisk, addMachine, getMachine, listPointRows, runBackup, setDisksExcluded, type BackupProgress, type BackupWorld } from '../../../electron/engine/backup/index.js'
import { EngineError } from '../../../electron/engine/errors.js'
import { MemoryImage, MemoryVault } from './fakes.js'

const BS = 64 * 1024
let dir = ''
let db: Db
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tresor-pipe-'))
  db = openCatalog(join(dir, 'home'))
})
afterEach(async () => {
  db.close()
  await rm(dir, { recursive: true, force: true })
})

/** A real file (for its identity) whose guest view is served from memory. */
async function diskFile(name: string): Promise<string> {
  const p = join(dir, name)
  await writeFile(p, 'placeholder')
  return p
}

async function touch(path: string): Promise<void> {
  await writeFile(path, `changed ${Math.random()}`)
  const t = new Date(Date.now() + 5000)
  await utimes(path, t, t)
}

function worldOf(vault: MemoryVault, images: Map<string, MemoryImage>, opened: string[] = [], blocking: Array<boolean | undefined> = []): BackupWorld {
  return {
    vault,
    catalog: db,
    openImage: async (p, options) => {
      opened.push(p)
      blocking.push(options?.blockingReads)
      const img = images.get(p)
      if (!img) throw new Error(`no image for ${p}`)
      img.closed = false
      return img
    },
  }
}

/** Disks a (4 blocks) and b (6 blocks) of random data, as files served from memory, and an empty vault. */
async function twoDisks(): Promise<{ a: Buffer; b: Buffer; pa: string; pb: string; images: Map<string, MemoryImage>; vault: MemoryVault }> {
  const a = randomBytes(4 * BS)
  const b = randomBytes(6 * BS)
  const pa = await diskFile('a.raw')
  const pb = await diskFile('b.raw')
  const images = new Map([
    [pa, new MemoryImage('a', a, [{ offset: 0, length: a.length, zero: false }])],
    [pb, new MemoryImage('b', b, [{ offset: 0, length: b.length, zero: false }])],
  ])
  return { a, b, pa, pb, images, vault: new MemoryVault(BS) }
}

describe('block pipeline', () => {
  it('classifies blocks: UNALLOCATED, ZERO (format zero or read zeros), DATA; reads only what data extents cover; restores exactly', async () => {
    const size = 10 * BS + 1000 // last block is short
    const data = Buffer.alloc(size)
    randomBytes(100).copy(data, 10) // block 0
    randomBytes(BS * 2).copy(data, 4 * BS) // blocks 4, 5
    data.fill(0, 5 * BS, 6 * BS) // ...but block 5 reads as zeros
    randomBytes(500).copy(data, 10 * BS + 100) // last, short block
    const img = new MemoryImage('x', data, [
      { offset: 0, length: 4096, zero: false },
      { offset: 2 * BS, length: BS, zero: true },
      { offset: 4 * BS, length: 2 * BS, zero: false },
      { offset: 10 * BS, length: 1000, zero: false },
    ])
    const path = await diskFile('a.raw')
    const vault = new MemoryVault(BS)
    const m = addMachine(db, { name: 'vm', disks: [{ path }] })
    const r = await runBackup(m, worldOf(vault, new Map([[path, img]])), { snapshot: 'read' })
    const map = vault.maps.get(`${r.manifest.id}/0`)!
    expect(map.map((e) => e.kind)).toEqual(['data', 'unallocated', 'zero', 'unallocated', 'data', 'zero', 'unallocated', 'unallocated', 'unallocated', 'unallocated', 'data'])
    // block 0 holds one 4 KiB extent: only that is read, the rest of the block is a hole
    expect(img.bytesRead).toBe(4096 + 2 * BS + 1000)
    expect(r.result.bytesRead).toBe(4096 + 2 * BS + 1000)
    expect(r.result.bytesNew).toBe(2 * BS + 1000)
    expect(r.manifest.disks[0]).toMatchObject({ virtualSize: size, blockCount: 11, allocatedBytes: 4096 + 3 * BS + 1000, sourcePath: path, isSystem: true })
    expect((await vault.restore(r.manifest.id, 0)).equals(data)).toBe(true)
    expect(img.closed).toBe(true)
  })

  it('never reads outside data extents: holes and format zeros inside data blocks are filled in memory', async () => {
    const size = 8 * BS
    const data = Buffer.alloc(size)
    const extents = [
      { offset: 1000, length: 3000, zero: false }, // odd piece inside block 0
      { offset: BS - 4096, length: 8192, zero: false }, // across the block 0/1 border
      { offset: BS + 8192, length: 4096, zero: true }, // format zeros inside block 1
      { offset: BS + 16384, length: BS, zero: false }, // the rest of block 1 into block 2
      { offset: 4 * BS, length: 2 * BS, zero: false }, // blocks 4 and 5 in full
      { offset: 7 * BS + 512, length: 512, zero: false }, // a sector in the last block
    ]
    for (const e of extents) if (!e.zero) randomBytes(e.length).copy(data, e.offset)
    data.fill(0, 4 * BS + 100, 4 * BS + 200) // zeros inside data are read like any data
    const img = new MemoryImage('x', data, extents)
    const path = await diskFile('holes.raw')
    const vault = new MemoryVault(BS)
    const m = addMachine(db, { name: 'vm', disks: [{ path }] })
    const r = await runBackup(m, worldOf(vault, new Map([[path, img]])), { snapshot: 'read' })
    const inData = (from: number, to: number): boolean => extents.some((e) => !e.zero && e.offset <= from && to <= e.offset + e.length)
    for (const [offset, length] of img.readLog) expect(inData(offset, offset + length), `read ${offset}+${length}`).toBe(true)
    const dataBytes = extents.filter((e) => !e.zero).reduce((s, e) => s + e.length, 0)
    expect(img.bytesRead).toBe(dataBytes)
    expect(r.result.bytesRead).toBe(dataBytes)
    expect((await vault.restore(r.manifest.id, 0)).equals(data)).toBe(true)
  })

  it('an incremental moves only changed blocks and reuses the chunk ids of the others', async () => {
    const data = randomBytes(16 * BS)
    const img = new MemoryImage('x', data, [{ offset: 0, length: data.length, zero: false }])
    const path = await diskFile('a.raw')
    const vault = new MemoryVault(BS)
    const m = addMachine(db, { name: 'vm', disks: [{ path }] })
    const world = worldOf(vault, new Map([[path, img]]))
    const r1 = await runBackup(m, world, { snapshot: 'read' })
    expect(vault.puts).toBe(16)
    data[3 * BS + 7]! ^= 0xff
    data[9 * BS]! ^= 0x01
    await touch(path)
    const r2 = await runBackup(m, world, { snapshot: 'read' })
    expect(vault.puts).toBe(18)
    expect(r2.result.bytesRead).toBe(16 * BS)
    expect(r2.result.bytesNew).toBe(2 * BS)
    const m1 = vault.maps.get(`${r1.manifest.id}/0`)!
    const m2 = vault.maps.get(`${r2.manifest.id}/0`)!
    m2.forEach((e, i) => {
      const same = i !== 3 && i !== 9
      expect(e.kind === 'data' && m1[i]!.kind === 'data' && e.chunkId.equals(m1[i]!.chunkId)).toBe(same)
    })
    expect((await vault.restore(r2.manifest.id, 0)).equals(data)).toBe(true)
  })

  it('does not open an unchanged disk file: it copies the previous block map', async () => {
    const data = randomBytes(4 * BS)
    const img = new MemoryImage('x', data, [{ offset: 0, length: data.length, zero: false }])
    const path = await diskFile('a.raw')
    const vault = new MemoryVault(BS)
    const m = addMachine(db, { name: 'vm', disks: [{ path }] })
    const opened: string[] = []
    const world = worldOf(vault, new Map([[path, img]]), opened)
    const r1 = await runBackup(m, world, { snapshot: 'read' })
    const opensAfterFirst = opened.length
    const r2 = await runBackup(m, world, { snapshot: 'read' })
    expect(opened.length).toBe(opensAfterFirst)
    expect(r2.result.bytesRead).toBe(0)
    expect(r2.result.bytesNew).toBe(0)
    expect(vault.maps.get(`${r2.manifest.id}/0`)).toEqual(vault.maps.get(`${r1.manifest.id}/0`))
    expect(r2.manifest.disks[0]!.fileIdentity).toEqual(r1.manifest.disks[0]!.fileIdentity)
    expect(r2.manifest.labels['disk.0.snapshot']).toBe('unchanged')
  })

  it('a disk added later is backed up in full while the others stay incremental', async () => {
    const { a, b, pa, pb, images, vault } = await twoDisks()
    addMachine(db, { name: 'vm', disks: [{ path: pa }] })
    await runBackup(getMachine(db, 'vm'), worldOf(vault, images), { snapshot: 'read' })
    addDisk(db, 'vm', { path: pb })
    const r2 = await runBackup(getMachine(db, 'vm'), worldOf(vault, images), { snapshot: 'read' })
    expect(r2.manifest.disks.map((d) => d.name)).toEqual(['a', 'b'])
    expect(r2.manifest.labels['disk.0.snapshot']).toBe('unchanged')
    expect(r2.result.bytesRead).toBe(6 * BS)
    expect(r2.result.bytesNew).toBe(6 * BS)
    expect((await vault.restore(r2.manifest.id, 1)).equals(b)).toBe(true)
    expect((await vault.restore(r2.manifest.id, 0)).equals(a)).toBe(true)
  })

  it('reads with blocking reads only when one disk of the machine is read', async () => {
    const { b, pa, pb, images, vault } = await twoDisks()
    addMachine(db, { name: 'vm', disks: [{ path: pa }, { path: pb }] })
    const opened: string[] = []
    const blocking: Array<boolean | undefined> = []
    const world = worldOf(vault, images, opened, blocking)
    // both disks read: the snapshot step opens each (no option), then the block loop (thread pool)
    await runBackup(getMachine(db, 'vm'), world, { snapshot: 'read' })
    const bulk = (): Array<[string, boolean | undefined]> => opened.map((p, i): [string, boolean | undefined] => [p, blocking[i]]).filter(([, m]) => m !== undefined)
    expect(bulk().sort()).toEqual([[pa, false], [pb, false]])
    opened.length = 0
    blocking.length = 0
    b[BS + 3]! ^= 0xff
    await touch(pb)
    const r2 = await runBackup(getMachine(db, 'vm'), world, { snapshot: 'read' })
    expect(r2.manifest.labels['disk.0.snapshot']).toBe('unchanged')
    expect(bulk()).toEqual([[pb, true]])
    expect((await vault.restore(r2.manifest.id, 1)).equals(b)).toBe(true)
  })

  it('skips excluded disks and counts only included ones in the protected size', async () => {
    const a = randomBytes(2 * BS)
    const pa = await diskFile('a.raw')
    const pswap = await diskFile('swap.raw')
    const images = new Map([[pa, new MemoryImage('a', a, [{ offset: 0, length: a.length, zero: false }])]])
    const vault = new MemoryVault(BS)
    addMachine(db, { name: 'vm', disks: [{ path: pa }, { path: pswap, isExcluded: true }] })
    const r = await runBackup(getMachine(db, 'vm'), worldOf(vault, images), { snapshot: 'read' })
    expect(r.manifest.disks.map((d) => d.name)).toEqual(['a'])
    expect(getMachine(db, 'vm').protectedBytes).toBe(2 * BS)
    expect(listPointRows(db, { machine: 'vm' })).toHaveLength(1)
    setDisksExcluded(db, 'vm', ['a'], true)
    await expect(runBackup(getMachine(db, 'vm'), worldOf(vault, images), { snapshot: 'read' })).rejects.toMatchObject({ code: 'INVALID_INPUT' })
  })

  it('cancellation aborts the session and leaves the vault without a new point', async () => {
    const data = randomBytes(512 * BS) // several read runs (1 MiB each) beyond the window
    const img = new MemoryImage('x', data, [{ offset: 0, length: data.length, zero: false }])
    img.readDelayMs = 2
    const path = await diskFile('a.raw')
    const vault = new MemoryVault(BS)
    const m = addMachine(db, { name: 'vm', disks: [{ path }] })
    const ac = new AbortController()
    const p = runBackup(m, worldOf(vault, new Map([[path, img]])), {
      snapshot: 'read',
      signal: ac.signal,
      progressIntervalMs: 0,
      onProgress: (pr) => { if (pr.bytesRead >= 8 * BS) ac.abort() },
    })
    await expect(p).rejects.toMatchObject({ code: 'CANCELLED' })
    expect(vault.aborted).toBe(1)
    expect(vault.points).toHaveLength(0)
    expect(img.bytesRead).toBeLessThan(data.length)
    expect(listPointRows(db)).toHaveLength(0)
  })

  it('a failing put aborts the session and rejects with the cause', async () => {
    const data = randomBytes(8 * BS)
    const path = await diskFile('a.raw')
    const vault = new MemoryVault(BS)
    vault.failPutAt = 3
    const m = addMachine(db, { name: 'vm', disks: [{ path }] })
    await expect(runBackup(m, worldOf(vault, new Map([[path, new MemoryImage('x', data, [{ offset: 0, length: data.length, zero: false }])]])), { snapshot: 'read' }))
      .rejects.toThrow(/injected put failure/)
    expect(vault.aborted).toBe(1)
    expect(vault.points).toHaveLength(0)
  })

  it('keeps memory bounded: at most blocksInFlight puts at once per disk', async () => {
    const data = randomBytes(200 * BS) // several 4 MiB runs
    const path = await diskFile('a.raw')
    const vault = new MemoryVault(BS)
    vault.putDelayMs = 3
    const m = addMachine(db, { name: 'vm', disks: [{ path }] })
    const r = await runBackup(m, worldOf(vault, new Map([[path, new MemoryImage('x', data, [{ offset: 0, length: data.length, zero: false }])]])), { snapshot: 'read', blocksInFlight: 4 })
    expect(vault.maxInFlight).toBeGreaterThan(1)
    expect(vault.maxInFlight).toBeLessThanOrEqual(4)
    expect((await vault.restore(r.manifest.id, 0)).equals(data)).toBe(true)
  })

  it('reports progress per disk and per job, ending with everything done', async () => {
    const a = randomBytes(8 * BS)
    const b = Buffer.alloc(4 * BS)
    const pa = await diskFile('a.raw')
    const pb = await diskFile('b.raw')
    const images = new Map([
      [pa, new MemoryImage('a', a, [{ offset: 0, length: a.length, zero: false }])],
      [pb, new MemoryImage('b', b, [{ offset: 0, length: 2 * BS, zero: true }])],
    ])
    const vault = new MemoryVault(BS)
    addMachine(db, { name: 'vm', disks: [{ path: pa }, { path: pb }] })
    const seen: BackupProgress[] = []
    await runBackup(getMachine(db, 'vm'), worldOf(vault, images), { snapshot: 'read', progressIntervalMs: 0, onProgress: (p) => seen.push(p) })
    const last = seen.at(-1)!
    expect(last.phase).toBe('done')
    expect(last.bytesTotal).toBe(10 * BS)
    expect(last.bytesDone).toBe(10 * BS)
    expect(last.bytesRead).toBe(8 * BS)
    expect(last.bytesNew).toBe(8 * BS)
    expect(last.etaSeconds).toBe(0)
    expect(last.disks.map((d) => [d.name, d.state, d.bytesDone])).toEqual([['a', 'done', 8 * BS], ['b', 'done', 2 * BS]])
    // Every disk has an estimated total before the first block is read (an ETA from the start).
    expect(seen.find((p) => p.phase === 'reading')!.disks.every((d) => d.bytesTotal > 0)).toBe(true)
    const phases = [...new Set(seen.map((p) => p.phase))]
    expect(phases).toEqual(['snapshot', 'reading', 'committing', 'done'])
    for (let i = 1; i < seen.length; i++) expect(seen[i]!.bytesDone).toBeGreaterThanOrEqual(seen[i - 1]!.bytesDone)
  })

  it('rejects with an EngineError naming the file when a disk file is missing', async () => {
    const path = await diskFile('a.raw')
    const vault = new MemoryVault(BS)
    const m = addMachine(db, { name: 'vm', disks: [{ path }] })
    await rm(path)
    const err = await runBackup(m, worldOf(vault, new Map()), { snapshot: 'read' }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(EngineError)
    expect((err as EngineError).code).toBe('NOT_FOUND')
    expect((err as EngineError).userMessage).toContain(path)
    expect(vault.aborted).toBe(1)
  })
})
