// Large range buffers (4 MiB each) are gated per worker pool: two per worker plus one being read
// (recordReader.ts largeGate). Without the gate, ranges waiting for room in the pool's queue held
// ~10 of them in a bench restore, and 6 in this test (three packs read at once, three tasks in the pool).
// A repack's record scratch is made once with room to spare (untouched WebAssembly pages cost nothing).
import { afterAll, describe, expect, it } from 'vitest'
import { backUp, makeBlock, newVault, restoreDisk, tempDir } from './helpers.js'
import { readFile } from 'node:fs/promises'
import { largeRangeBuffers, readRecordBytes } from '../../../electron/engine/vault/recordReader.js'
import type { VaultContext } from '../../../electron/engine/vault/context.js'
import { packPath } from '../../../electron/engine/vault/layout.js'
import { isSubEntry } from '../../../electron/engine/vault/pack.js'

const cleanups: Array<() => Promise<void>> = []
afterAll(async () => {
  for (const c of cleanups.reverse()) await c()
})

/** A format-1 vault with one chunk worker and packs of `packTargetBytes`, closed and removed after the file's tests. */
async function vaultWithPacksOf(packTargetBytes: number): Promise<Awaited<ReturnType<typeof newVault>>['vault']> {
  const t = await tempDir()
  cleanups.push(t.cleanup)
  const { vault } = await newVault(t.dir, { workers: 1 }, { formatVersion: 1, packTargetBytes })
  cleanups.push(() => vault.close())
  return vault
}

describe('large range buffers', () => {
  it('keeps at most two per worker plus one out while a restore reads many packs, and restores every block', async () => {
    // incompressible blocks in 12 MiB packs: each pack is read as three ranges of up to 4 MiB (large buffers)
    const vault = await vaultWithPacksOf(12 * 1024 * 1024)
    const blocks = Array.from({ length: 640 }, (_, i) => makeBlock(7000 + i, 'random'))
    const point = await backUp(vault, [{ name: 'd', blocks }])
    const pool = (vault as unknown as { ctx: { pool(): Parameters<typeof largeRangeBuffers>[0] } }).ctx.pool()
    const back = await restoreDisk(vault, point.id, 0)
    back.forEach((b, i) => expect((b as Buffer).equals(blocks[i]!), `block ${i}`).toBe(true))
    const { out, peak, max } = largeRangeBuffers(pool)
    expect(max).toBe(3)
    expect(peak).toBeGreaterThanOrEqual(2) // the reads did overlap the worker's
    expect(peak).toBeLessThanOrEqual(max)
    expect(out).toBe(0) // every buffer came back
  })
})

describe('the scratch a repack reads records into', () => {
  it('is made once, with room past a batch, and returns every record exactly as stored', async () => {
    const vault = await vaultWithPacksOf(4 * 1024 * 1024)
    await backUp(vault, [{ name: 'd', blocks: Array.from({ length: 40 }, (_, i) => makeBlock(8000 + i, i % 2 ? 'random' : 'text')) }])
    const ctx = (vault as unknown as { ctx: VaultContext }).ctx
    const [hex] = await ctx.listPacks()
    const path = packPath(ctx.layout, hex!)
    const records = (await ctx.packEntries(hex!)).filter((e) => !isSubEntry(e))
    expect(records.length).toBeGreaterThan(10)
    const file = await readFile(path)
    const scratch = { buf: Buffer.alloc(0) }
    const one = await readRecordBytes(ctx.fs, path, records.slice(0, 1), scratch)
    const first = scratch.buf
    expect(first.length).toBeGreaterThanOrEqual(8 * 1024 * 1024)
    expect(one[0]!.equals(file.subarray(records[0]!.offset, records[0]!.offset + records[0]!.length))).toBe(true)
    // a larger batch (every record, from the end backwards) reuses the same memory
    const all = await readRecordBytes(ctx.fs, path, [...records].reverse(), scratch)
    expect(scratch.buf).toBe(first)
    ;[...records].reverse().forEach((r, k) => expect(all[k]!.equals(file.subarray(r.offset, r.offset + r.length)), `record ${r.ordinal}`).toBe(true))
  })
})
