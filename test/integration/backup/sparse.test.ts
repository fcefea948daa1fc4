import { afterEach, describe, expect, it } from 'vitest'
import { open } from 'node:fs/promises'
import { join } from 'node:path'
import { addMachine, runBackup } from '../../../electron/engine/backup/index.js'
import { parsePolicySpec } from '../../../electron/engine/policy/index.js'
import { randomBytes } from '../../helpers/qemu.js'
import { makeWorld, mapKinds, TEST_BLOCK_SIZE, type TestWorld } from './helpers.js'

let w: TestWorld | undefined
afterEach(async () => { await w?.close(); w = undefined })

const GiB = 1024 ** 3
const BS = TEST_BLOCK_SIZE

describe('sparse disks with odd sizes and offsets past 4 GiB', () => {
  it('reads only allocated blocks, keeps holes as UNALLOCATED and restores data at every offset', async () => {
    w = await makeWorld()
    const path = join(w.dir, 'big.raw')
    const size = 5 * GiB + 4096 + 100 // not a multiple of the block size
    const pieces: { offset: number; data: Buffer }[] = [
      { offset: 0, data: randomBytes(1, 4096) },
      { offset: 4 * GiB + 12345, data: randomBytes(2, 3 * BS) }, // straddles blocks past 2^32
      { offset: size - 50, data: randomBytes(3, 50) }, // inside the short last block
    ]
    const fh = await open(path, 'w')
    await fh.truncate(size)
    for (const p of pieces) await fh.write(p.data, 0, p.data.length, p.offset)
    await fh.close()
    const m = addMachine(w.catalog, { name: 'big', disks: [{ path }] })
    const r = await runBackup(m, w.world, { policy: parsePolicySpec({ snapshotTierDays: 0 }), snapshot: 'read' })
    const disk = r.manifest.disks[0]!
    expect(disk.virtualSize).toBe(size)
    expect(disk.blockCount).toBe(Math.ceil(size / BS))
    const touched = new Set<number>()
    for (const p of pieces) for (let b = Math.floor(p.offset / BS); b <= Math.floor((p.offset + p.data.length - 1) / BS); b++) touched.add(b)
    const kinds = await mapKinds(w.vault, r.result.pointId, 0)
    expect(kinds.data).toBe(touched.size)
    expect(kinds.unallocated + kinds.zero).toBe(disk.blockCount - touched.size)
    // A file system reports allocation in its own blocks: at most the touched blocks are read.
    expect(r.result.bytesRead).toBeLessThanOrEqual(touched.size * BS)
    expect(r.result.bytesRead).toBeGreaterThan(0)
    // Each piece reads back from the vault at its offset.
    const bytes = await readRange(w, r.result.pointId, [...touched].sort((a, b) => a - b), size)
    for (const p of pieces) {
      for (let i = 0; i < p.data.length; i += 997) expect(bytes(p.offset + i)).toBe(p.data[i])
      expect(bytes(p.offset + p.data.length - 1)).toBe(p.data[p.data.length - 1])
    }
    expect(bytes(2 * GiB)).toBe(0)
  })
})

/** Reads the given blocks of a point back through the chunk reader; returns a byte lookup. */
async function readRange(t: TestWorld, pointId: string, blocks: number[], size: number): Promise<(offset: number) => number> {
  const wanted = new Set(blocks)
  const got = new Map<number, Buffer>()
  const ids: { block: number; id: Buffer }[] = []
  let i = 0
  for await (const e of t.vault.readBlockMap(pointId, 0)) {
    if (wanted.has(i) && e.kind === 'data') ids.push({ block: i, id: e.chunkId })
    i++
  }
  const reader = t.vault.chunkReader()
  try {
    const data = await reader.readChunks(ids.map((x) => x.id))
    ids.forEach((x, k) => got.set(x.block, data[k]!))
  } finally {
    await reader.close()
  }
  return (offset) => {
    if (offset >= size) throw new Error('past the end')
    const b = got.get(Math.floor(offset / BS))
    return b ? b[offset % BS]! : 0
  }
}
