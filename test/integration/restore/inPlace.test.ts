/**
 * The restore's zero-copy path on a real vault: chunks decoded by the vault's worker threads straight
 * into shared memory (`readChunksInto`), checksummed and scanned for zero granules there, and written
 * from that memory (raw: direct I/O). Cases a synthetic image makes sure of: one chunk wanted at
 * several places of one batch, zero granules inside data blocks, a short last block, and a damaged
 * pack.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { mkdir, open, readdir, readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { addMachine, runBackup } from '../../../electron/engine/backup/index.js'
import { createImageWriter, openImage } from '../../../electron/engine/formats/index.js'
import { DEFAULT_POLICY } from '../../../electron/engine/policy/index.js'
import { restorePoint, type RestoreWorld } from '../../../electron/engine/restore/pipeline.js'
import type { ChunkReader, Vault } from '../../../electron/engine/vault/api.js'
import { makeWorld, type TestWorld } from '../backup/helpers.js'
import { randomBytes } from '../../helpers/qemu.js'

const KiB = 1024
const BLOCK = 128 * KiB
let w: TestWorld
let source = ''
let expected = Buffer.alloc(0)
let pointId = ''

beforeAll(async () => {
  w = await makeWorld({ blockSize: BLOCK })
  // 40 blocks and a short one. Block 3's content recurs at 5, 6 and 20 (one chunk, wanted four
  // times, in the same batch); blocks 8 and 9 hold zero granules between data; 12-15 stay holes.
  const size = 40 * BLOCK + 5000
  expected = Buffer.alloc(size)
  for (let b = 0; b < 40; b++) {
    if (b >= 12 && b <= 15) continue
    randomBytes(b, BLOCK).copy(expected, b * BLOCK)
  }
  const same = randomBytes(999, BLOCK)
  for (const b of [3, 5, 6, 20]) same.copy(expected, b * BLOCK)
  expected.fill(0, 8 * BLOCK + 4 * KiB, 8 * BLOCK + 60 * KiB) // zero granules inside block 8
  expected.fill(0, 9 * BLOCK, 9 * BLOCK + 8 * KiB) // block 9 starts with zeros
  expected.fill(0, 9 * BLOCK + 120 * KiB, 10 * BLOCK) // and ends with them
  randomBytes(77, 5000).copy(expected, 40 * BLOCK)
  source = join(w.dir, 'src.raw')
  const fh = await open(source, 'w')
  await fh.truncate(size)
  for (let b = 0; b <= 40; b++) {
    if (b >= 12 && b <= 15) continue
    const piece = expected.subarray(b * BLOCK, Math.min(size, (b + 1) * BLOCK))
    await fh.write(piece, 0, piece.length, b * BLOCK)
  }
  await fh.close()
  const machine = addMachine(w.catalog, { name: 'inplace', disks: [{ path: source }] })
  pointId = (await runBackup(machine, w.world, { policy: { ...DEFAULT_POLICY, snapshotTierDays: 0 }, snapshot: 'read' })).result.pointId
}, 120_000)

afterAll(async () => {
  await w?.close()
})

/** A world whose reader counts the chunks each read path delivered. */
function countingWorld(vault: Vault): { world: RestoreWorld; counts: { copied: number; inPlace: number } } {
  const counts = { copied: 0, inPlace: 0 }
  const wrapped: Vault = Object.create(vault) as Vault
  wrapped.chunkReader = (): ChunkReader => {
    const reader = vault.chunkReader()
    return {
      readChunks: (ids) => {
        counts.copied += ids.length
        return reader.readChunks(ids)
      },
      readChunksInto: (ids, target, positions, options) => {
        counts.inPlace += ids.length
        return reader.readChunksInto!(ids, target, positions, options)
      },
      close: () => reader.close(),
    }
  }
  return { world: { vault: wrapped, createWriter: createImageWriter, assertNotInUse: async () => undefined }, counts }
}

describe('restore decoded in place', () => {
  it('the vault offers the in-place read', () => {
    expect(typeof w.vault.chunkReader().readChunksInto).toBe('function')
  })

  for (const format of ['raw', 'qcow2'] as const) {
    it(`restores to ${format} byte for byte, repeated chunks and zero granules included, holes kept`, async () => {
      const { world, counts } = countingWorld(w.vault)
      const target = join(w.dir, `out-${format}`, `disk.${format}`)
      await mkdir(join(w.dir, `out-${format}`))
      // Small batches: several batches, slots reused while writes from others are in flight.
      await restorePoint(world, { pointId, mode: 'file', targetPath: target, format }, { batchBytes: 4 * BLOCK, maxBytesInFlight: 8 * BLOCK })
      expect(counts.copied).toBe(0)
      expect(counts.inPlace).toBe(37) // every data block (36 full, 1 short), repeats included
      const image = await openImage(target)
      try {
        const got = Buffer.alloc(expected.length)
        await image.read(got, 0)
        expect(got.equals(expected)).toBe(true)
      } finally {
        await image.close()
      }
      if (format === 'raw') {
        // 36 full data blocks and the short one, minus the zero granules (56 KiB + 8 KiB + 8 KiB)
        const data = 36 * BLOCK + 5000 - 72 * KiB
        expect((await stat(target)).blocks * 512).toBeLessThan(data + 64 * KiB)
        expect((await readFile(target)).equals(expected)).toBe(true)
      }
    }, 120_000)
  }

  it('a damaged pack fails the restore with CHUNK_CORRUPT and leaves no file', async () => {
    const packsDir = join(w.vaultDir, 'packs')
    const packs: string[] = []
    for (const sub of await readdir(packsDir)) for (const f of await readdir(join(packsDir, sub))) packs.push(join(packsDir, sub, f))
    expect(packs.length).toBeGreaterThan(0)
    const saved = await Promise.all(packs.map((p) => readFile(p)))
    try {
      for (const [i, p] of packs.entries()) {
        const bytes = Buffer.from(saved[i]!)
        bytes[Math.floor(bytes.length / 2)]! ^= 0x10 // inside a record: fails authentication
        await writeFile(p, bytes)
      }
      const out = join(w.dir, 'out-damaged')
      await mkdir(out)
      const { world } = countingWorld(w.vault)
      await expect(restorePoint(world, { pointId, mode: 'file', targetPath: join(out, 'disk.raw') })).rejects.toMatchObject({ code: 'CHUNK_CORRUPT' })
      expect(await readdir(out)).toEqual([])
    } finally {
      for (const [i, p] of packs.entries()) await writeFile(p, saved[i]!)
    }
  }, 120_000)
})
