// Large range buffers (4 MiB each) are gated per worker pool: two per worker plus one being read
// (recordReader.ts largeGate). Without the gate, ranges waiting for room in the pool's queue held
// ~10 of them in a bench restore, and 6 in this test (three packs read at once, three tasks in the pool).
import { afterAll, describe, expect, it } from 'vitest'
import { backUp, makeBlock, newVault, restoreDisk, tempDir } from './helpers.js'
import { largeRangeBuffers } from '../../../electron/engine/vault/recordReader.js'

const cleanups: Array<() => Promise<void>> = []
afterAll(async () => {
  for (const c of cleanups.reverse()) await c()
})

describe('large range buffers', () => {
  it('keeps at most two per worker plus one out while a restore reads many packs, and restores every block', async () => {
    const t = await tempDir()
    cleanups.push(t.cleanup)
    // incompressible blocks in 12 MiB packs: each pack is read as three ranges of up to 4 MiB (large buffers)
    const { vault } = await newVault(t.dir, { workers: 1 }, { formatVersion: 1, packTargetBytes: 12 * 1024 * 1024 })
    cleanups.push(() => vault.close())
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
