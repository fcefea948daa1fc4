import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import { join } from 'node:path'
import { open, readFile, writeFile } from 'node:fs/promises'
import { createHash } from 'node:crypto'
import { createBlockHasher } from '../../../electron/engine/backup/checksum.js'
import { addMachine, runBackup, type BackupWorld } from '../../../electron/engine/backup/index.js'
import { openImage } from '../../../electron/engine/formats/index.js'
import { parsePolicySpec } from '../../../electron/engine/policy/index.js'
import { applyOps, createImage, qemuGuestSha256, randomBytes, requireQemu } from '../../helpers/qemu.js'
import { makeWorld, MiB, pointDiskSha256, TEST_BLOCK_SIZE, type TestWorld } from './helpers.js'
import { openVault } from '../../../electron/engine/vault/index.js'

let w: TestWorld | undefined
beforeAll(() => requireQemu())
afterEach(async () => { await w?.close(); w = undefined })

const policy = parsePolicySpec({ snapshotTierDays: 0 })
const BS = TEST_BLOCK_SIZE

describe('deduplication and skipping', () => {
  it('two machines whose disks share a base image store the shared blocks once', async () => {
    w = await makeWorld()
    const base = join(w.dir, 'base.qcow2')
    await createImage(base, 'qcow2', 32 * MiB)
    await applyOps(base, 'qcow2', [{ kind: 'random', offset: 0, length: 8 * MiB, seed: 1 }, { kind: 'random', offset: 20 * MiB, length: 2 * MiB, seed: 2 }], w.dir)
    const a = join(w.dir, 'a.qcow2')
    const b = join(w.dir, 'b.qcow2')
    await createImage(a, 'qcow2', 32 * MiB, [], { file: base, format: 'qcow2' })
    await createImage(b, 'qcow2', 32 * MiB, [], { file: base, format: 'qcow2' })
    await applyOps(a, 'qcow2', [{ kind: 'random', offset: 30 * MiB, length: 4096, seed: 3 }], w.dir)
    await applyOps(b, 'qcow2', [{ kind: 'random', offset: 3 * MiB, length: 4096, seed: 4 }], w.dir)
    const ma = addMachine(w.catalog, { name: 'a', disks: [{ path: a }] })
    const mb = addMachine(w.catalog, { name: 'b', disks: [{ path: b }] })
    const ra = await runBackup(ma, w.world, { policy, snapshot: 'read' })
    expect(ra.result.bytesNew).toBe(10 * MiB + BS)
    const rb = await runBackup(mb, w.world, { policy, snapshot: 'read' })
    expect(rb.result.bytesRead).toBe(10 * MiB) // b's write falls inside the base's data
    expect(rb.result.bytesNew).toBe(BS)
    expect(rb.result.bytesStored).toBeLessThan(ra.result.bytesStored / 20)
    expect(await pointDiskSha256(w.vault, ra.result.pointId, 0)).toBe(await qemuGuestSha256(a, 'qcow2', w.dir))
    expect(await pointDiskSha256(w.vault, rb.result.pointId, 0)).toBe(await qemuGuestSha256(b, 'qcow2', w.dir))
  })

  it('an unchanged disk file is not opened; a changed backing file makes it read again', async () => {
    w = await makeWorld()
    const base = join(w.dir, 'base.qcow2')
    const top = join(w.dir, 'top.qcow2')
    await createImage(base, 'qcow2', 16 * MiB)
    await applyOps(base, 'qcow2', [{ kind: 'random', offset: 0, length: 4 * MiB, seed: 9 }], w.dir)
    await createImage(top, 'qcow2', 16 * MiB, [], { file: base, format: 'qcow2' })
    await applyOps(top, 'qcow2', [{ kind: 'random', offset: 8 * MiB, length: MiB, seed: 10 }], w.dir)
    const opened: string[] = []
    const world: BackupWorld = { ...w.world, openImage: (p) => { opened.push(p); return openImage(p) } }
    const m = addMachine(w.catalog, { name: 'vm', disks: [{ path: top }] })
    const r1 = await runBackup(m, world, { policy, snapshot: 'read' })
    expect(r1.result.bytesRead).toBe(5 * MiB)
    opened.length = 0
    const r2 = await runBackup(m, world, { policy, snapshot: 'read' })
    expect(opened).toEqual([])
    expect(r2.result).toMatchObject({ bytesRead: 0, bytesNew: 0 })
    expect(await pointDiskSha256(w.vault, r2.result.pointId, 0)).toBe(await qemuGuestSha256(top, 'qcow2', w.dir))
    // The base changes under an unchanged overlay (e.g. a rebase): the guest view changed, so it is read.
    await applyOps(base, 'qcow2', [{ kind: 'random', offset: 12 * MiB, length: BS, seed: 11 }], w.dir)
    const r3 = await runBackup(m, world, { policy, snapshot: 'read' })
    expect(opened.length).toBeGreaterThan(0)
    expect(r3.result.bytesNew).toBe(BS)
    expect(await pointDiskSha256(w.vault, r3.result.pointId, 0)).toBe(await qemuGuestSha256(top, 'qcow2', w.dir))
  })

  it.each([1, 2])('format %i: block map checksums come from the vault (XXH3-128 of each block), and the next backup matches them', async (formatVersion) => {
    w = await makeWorld({ formatVersion })
    const disk = join(w.dir, 'd.raw')
    const fh = await open(disk, 'w')
    await fh.truncate(24 * BS)
    const text = Buffer.from('a log line that repeats, with a counter 0000\n'.repeat(4000)).subarray(0, BS)
    for (const b of [0, 1, 2, 7, 8, 20]) await fh.write(b % 2 ? text : randomBytes(b, BS), 0, BS, b * BS)
    await fh.close()
    const m = addMachine(w.catalog, { name: 'sums', disks: [{ path: disk }] })
    const r1 = await runBackup(m, w.world, { policy, snapshot: 'read' })
    const source = await readFile(disk)
    const hasher = createBlockHasher()
    let data = 0
    let i = 0
    for await (const e of w.vault.readBlockMap(r1.result.pointId, 0)) {
      if (e.kind === 'data') {
        expect(e.checksum.toString('hex'), `block ${i}`).toBe(hasher.checksum(source.subarray(i * BS, (i + 1) * BS)).toString('hex'))
        data++
      }
      i++
    }
    expect(data).toBe(6)
    // one block changes: the others match their recorded checksums and are not put again
    const again = await open(disk, 'r+')
    await again.write(randomBytes(99, BS), 0, BS, 7 * BS)
    await again.close()
    const r2 = await runBackup(m, w.world, { policy, snapshot: 'read' })
    expect(r2.result.bytesNew).toBe(BS)
    expect(await pointDiskSha256(w.vault, r2.result.pointId, 0)).toBe(createHash('sha256').update(await readFile(disk)).digest('hex'))
  })

  it('chunk ids and checksums are the same with and without the native digest addon (format 3, blocks cut into parts)', async () => {
    w = await makeWorld()
    const disk = join(w.dir, 'd.raw')
    const fh = await open(disk, 'w')
    // text blocks (compressible: cut into parts, each part hashed), random blocks (ids only), a short last block
    const text = (n: number): Buffer => Buffer.from(Array.from({ length: 3000 }, (_, k) => `line ${k * n} of block ${n}: ${'abcdefghij'.repeat(k % 7)}\n`).join('')).subarray(0, BS)
    for (let b = 0; b < 12; b++) await fh.write(b % 3 === 0 ? randomBytes(b, BS) : text(b), 0, BS, b * BS)
    await fh.write(text(99).subarray(0, 5000), 0, 5000, 12 * BS)
    await fh.close()
    const copy = join(w.dir, 'copy.raw')
    await writeFile(copy, await readFile(disk))
    const entries = async (vault: TestWorld['vault'], pointId: string): Promise<string[]> => {
      const out: string[] = []
      for await (const e of vault.readBlockMap(pointId, 0)) out.push(e.kind === 'data' ? `${e.chunkId.toString('hex')}:${e.checksum.toString('hex')}` : e.kind)
      return out
    }
    // the first backup hashes one piece per call in JavaScript (the addon switched off)…
    process.env.TRESOR_NO_NATIVE_DIGEST = '1'
    const ma = addMachine(w.catalog, { name: 'bindings', disks: [{ path: disk }] })
    let ra
    try {
      ra = await runBackup(ma, w.world, { policy, snapshot: 'read' })
    } finally {
      delete process.env.TRESOR_NO_NATIVE_DIGEST
    }
    expect(ra.result.bytesNew).toBe(12 * BS + 5000)
    await w.vault.close()
    // …the second, of the same bytes as another machine in a vault opened again, uses the addon:
    // every block and part id is found, nothing new is stored, and the block maps are equal
    const vault = await openVault(w.vaultDir, w.masterKey)
    try {
      const mb = addMachine(w.catalog, { name: 'native', disks: [{ path: copy }] })
      const rb = await runBackup(mb, { ...w.world, vault }, { policy, snapshot: 'read' })
      expect(rb.result.bytesRead).toBe(12 * BS + 5000)
      expect(rb.result.bytesNew).toBe(0)
      const a = await entries(vault, ra.result.pointId)
      expect(a.filter((e) => e.includes(':'))).toHaveLength(13)
      expect(await entries(vault, rb.result.pointId)).toEqual(a)
      const sha = createHash('sha256').update(await readFile(disk)).digest('hex')
      expect(await pointDiskSha256(vault, ra.result.pointId, 0)).toBe(sha)
      expect(await pointDiskSha256(vault, rb.result.pointId, 0)).toBe(sha)
    } finally {
      await vault.close()
    }
  })

  it("an unchanged disk's block map is copied segment by segment: every entry equal, over two segments", async () => {
    w = await makeWorld()
    // 65 536 entries per segment (MAP_SEGMENT_ENTRIES): 70 000 blocks of 64 KiB make two, the second partial.
    const blocks = 70_000
    const disk = join(w.dir, 'big.raw')
    const fh = await open(disk, 'w')
    await fh.truncate(blocks * BS)
    for (const b of [0, 1, 5, 40_000, 65_535, 65_536, 69_999]) await fh.write(randomBytes(b, BS), 0, BS, b * BS)
    await fh.write(Buffer.alloc(BS), 0, BS, 3 * BS) // written zeros: a ZERO entry
    await fh.close()
    const m = addMachine(w.catalog, { name: 'big', disks: [{ path: disk }] })
    const r1 = await runBackup(m, w.world, { policy, snapshot: 'read' })
    const r2 = await runBackup(m, w.world, { policy, snapshot: 'read' })
    expect(r2.result.bytesRead).toBe(0)
    const entries = async (pointId: string): Promise<string[]> => {
      const out: string[] = []
      for await (const e of w!.vault.readBlockMap(pointId, 0)) out.push(e.kind === 'data' ? `data:${e.chunkId.toString('hex')}:${e.checksum.toString('hex')}` : e.kind)
      return out
    }
    const before = await entries(r1.result.pointId)
    const after = await entries(r2.result.pointId)
    expect(before).toHaveLength(blocks)
    expect(before.filter((k) => k.startsWith('data:'))).toHaveLength(7)
    expect(before.filter((k) => k === 'zero')).toHaveLength(1)
    expect(after).toEqual(before)
  }, 120_000)

  it('an incremental finds the same unchanged, changed, zeroed and new blocks with and without the addon scanning its runs', async () => {
    w = await makeWorld()
    const size = 24 * BS + 3000 // a short last block
    // two disks of the same layout, with different bytes (each machine stores its own blocks)
    const disks = [
      { name: 'native', path: join(w.dir, 'native.raw'), seed: 0 },
      { name: 'bindings', path: join(w.dir, 'bindings.raw'), seed: 1000 },
    ]
    const entries = async (pointId: string): Promise<string[]> => {
      const out: string[] = []
      for await (const e of w!.vault.readBlockMap(pointId, 0)) out.push(e.kind === 'data' ? `${e.chunkId.toString('hex')}:${e.checksum.toString('hex')}` : e.kind)
      return out
    }
    const patterns: string[][] = []
    for (const disk of disks) {
      const fh = await open(disk.path, 'w')
      await fh.truncate(size)
      for (const b of [0, 1, 2, 3, 7, 8, 9, 20]) await fh.write(randomBytes(disk.seed + b, BS), 0, BS, b * BS)
      await fh.write(randomBytes(disk.seed + 24, 3000), 0, 3000, 24 * BS)
      await fh.close()
      const m = addMachine(w.catalog, { name: disk.name, disks: [{ path: disk.path }] })
      const full = await runBackup(m, w.world, { policy, snapshot: 'read' })
      // a day of work: block 2 changed, block 8 written with zeros, block 15 new in a hole, the last
      // byte of the short last block changed; the other data blocks as they were
      const again = await open(disk.path, 'r+')
      await again.write(randomBytes(disk.seed + 102, BS), 0, BS, 2 * BS)
      await again.write(Buffer.alloc(BS), 0, BS, 8 * BS)
      await again.write(randomBytes(disk.seed + 115, BS), 0, BS, 15 * BS)
      await again.write(Buffer.from([0xa5]), 0, 1, 24 * BS + 2999)
      await again.close()
      if (disk.name === 'bindings') process.env.TRESOR_NO_NATIVE_DIGEST = '1'
      let incremental
      try {
        incremental = await runBackup(m, w.world, { policy, snapshot: 'read' })
      } finally {
        delete process.env.TRESOR_NO_NATIVE_DIGEST
      }
      expect(incremental.result.bytesNew).toBe(2 * BS + 3000) // blocks 2 and 15 and the last block
      expect(await pointDiskSha256(w.vault, incremental.result.pointId, 0)).toBe(createHash('sha256').update(await readFile(disk.path)).digest('hex'))
      const before = await entries(full.result.pointId)
      const after = await entries(incremental.result.pointId)
      expect(after).toHaveLength(25)
      patterns.push(after.map((e, i) => (e === before[i] ? 'same' : e.includes(':') ? 'data' : e)))
    }
    const same = 'same'
    expect(patterns[0]).toEqual([same, same, 'data', same, same, same, same, same, 'zero', same, same, same, same, same, same, 'data', same, same, same, same, same, same, same, same, 'data'])
    expect(patterns[1]).toEqual(patterns[0])
  })
})
