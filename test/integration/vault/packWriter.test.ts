/**
 * PackWriter's staging buffers (pack.ts): while the device is slow, appends wait instead of queuing
 * more 4 MiB buffers, across packs; once the writes go through, every record is where its index says.
 */
import { mkdir, readFile } from 'node:fs/promises'
import { randomBytes } from 'node:crypto'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { encodeIndex, PackWriter, PACK_HEADER_BYTES, readPackIndex, type PackIndexEntry } from '../../../electron/engine/vault/pack.js'
import { layoutOf } from '../../../electron/engine/vault/layout.js'
import { deriveKeys } from '../../../electron/engine/vault/crypto.js'
import { nodeVaultFs, type VaultFileHandle, type VaultFs } from '../../../electron/engine/vault/vaultFs.js'
import { tempDir } from './helpers.js'

const MiB = 1024 * 1024

/** A VaultFs whose direct writes wait until `release()`; counts the direct writes started. */
function heldDirectFs(): { fs: VaultFs; release: () => void; started: () => number } {
  let open = false
  let waiters: Array<() => void> = []
  let count = 0
  const fs: VaultFs = {
    ...nodeVaultFs,
    async openDirect(path, mode) {
      const fh = await nodeVaultFs.openDirect!(path, mode)
      if (!fh) return undefined
      const held: VaultFileHandle = {
        ...fh,
        read: (b, o, l, p) => fh.read(b, o, l, p),
        size: () => fh.size(),
        sync: () => fh.sync(),
        close: () => fh.close(),
        async write(b, o, l, p) {
          count++
          if (!open) await new Promise<void>((r) => waiters.push(r))
          return fh.write(b, o, l, p)
        },
      }
      return held
    },
  }
  return {
    fs,
    started: () => count,
    release: () => {
      open = true
      for (const w of waiters) w()
      waiters = []
    },
  }
}

const settledSoon = async (p: Promise<unknown>): Promise<boolean> => {
  let done = false
  void p.then(
    () => (done = true),
    () => (done = true),
  )
  for (let i = 0; i < 20; i++) await new Promise((r) => setTimeout(r, 5))
  return done
}

describe('pack writer staging', () => {
  let dir: string
  let cleanup: () => Promise<void>
  beforeEach(async () => {
    ;({ dir, cleanup } = await tempDir('tresor-pack-'))
    for (const d of ['tmp']) await mkdir(`${dir}/${d}`, { recursive: true })
  })
  afterEach(async () => cleanup())

  it('an append waits while two full buffers are queued behind the one being written, across packs; then every record reads back', async () => {
    const { fs, release, started } = heldDirectFs()
    const layout = layoutOf(dir)
    const keys = deriveKeys(randomBytes(32), 'test-vault')
    const a = await PackWriter.create(fs, layout, 64 * MiB)
    const b = await PackWriter.create(fs, layout, 64 * MiB)
    const batches = Array.from({ length: 5 }, () => randomBytes(4 * MiB))
    const entriesOf = (batch: Buffer, n: number): PackIndexEntry[] => [{ chunkId: randomBytes(32), offset: 0, length: batch.length, ordinal: n, flags: 0, plainLength: batch.length }]
    const writer = (n: number): PackWriter => (n < 3 ? a : b)
    const ordinals = batches.map((_, n) => writer(n).reserve(4 * MiB + 28))
    expect(ordinals).toEqual([0, 1, 2, 0, 1])

    // pack a: the first append fills a buffer (queued, its write held), the second and third two more
    const appends = batches.map((batch, n) => writer(n).append(batch, entriesOf(batch, ordinals[n]!), 4 * MiB + 28))
    for (const n of [0, 1, 2]) expect(await settledSoon(appends[n]!), `append ${n} is staged`).toBe(true)
    // three full buffers are queued (one write started and held): the next appends wait, pack b's
    for (const n of [3, 4]) expect(await settledSoon(appends[n]!), `append ${n} must wait for the device`).toBe(false)
    expect(started()).toBe(1)

    release()
    await Promise.all(appends)
    const sizes = [await a.finish(keys), await b.finish(keys)]
    for (const [k, w] of [a, b].entries()) {
      const { entries, sizeBytes } = await readPackIndex(fs, w.tmpPath, w.hex, keys, 8 * MiB)
      expect(sizeBytes).toBe(sizes[k])
      const file = await readFile(w.tmpPath)
      const mine = batches.filter((_, n) => (n < 3 ? 0 : 1) === k)
      expect(entries.map((e) => file.subarray(e.offset, e.offset + e.length).equals(mine[e.ordinal]!))).toEqual(mine.map(() => true))
    }
  })

  for (const buffered of [true, false]) {
    it(`a pack of many small records (${buffered ? 'buffered, as recipe packs are' : 'direct'}) keeps its index in one buffer and writes it whole`, async () => {
      const layout = layoutOf(dir)
      const keys = deriveKeys(randomBytes(32), 'test-vault')
      const w = await PackWriter.create(nodeVaultFs, layout, 64 * MiB, { buffered })
      const expected: PackIndexEntry[] = []
      const bodies: Buffer[] = []
      let offset = PACK_HEADER_BYTES
      // 1,000 records of 200–400 bytes in appends of 1 to 37: the index grows past its first buffer several times
      for (let sent = 0, k = 0; sent < 1000; k++) {
        const n = Math.min(1000 - sent, 1 + ((k * 7) % 37))
        const records = Array.from({ length: n }, (_, i) => randomBytes(200 + ((sent + i) * 13) % 201))
        const first = w.reserve(records.reduce((a, r) => a + r.length, 0), n)
        const entries = records.map((r, i): PackIndexEntry => ({ chunkId: randomBytes(32), offset: 0, length: r.length, ordinal: first + i, flags: (sent + i) % 4, plainLength: r.length + i }))
        await w.append(Buffer.concat(records), entries, records.reduce((a, r) => a + r.length, 0))
        for (const [i, e] of entries.entries()) {
          expected.push({ ...e, offset })
          offset += records[i]!.length
        }
        bodies.push(...records)
        sent += n
      }
      expect(w.entriesAppended).toBe(1000)
      expect(w.recordBytes).toBe(bodies.reduce((a, b) => a + b.length, 0))
      expect(w.indexBytes.equals(encodeIndex(expected))).toBe(true)
      const size = await w.finish(keys)
      const read = await readPackIndex(nodeVaultFs, w.tmpPath, w.hex, keys, 8 * MiB)
      expect(read.sizeBytes).toBe(size)
      expect(read.entries).toEqual(expected)
      const file = await readFile(w.tmpPath)
      expect(read.entries.every((e, i) => file.subarray(e.offset, e.offset + e.length).equals(bodies[i]!))).toBe(true)
    })
  }
})
