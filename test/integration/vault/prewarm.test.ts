// Chunk workers started before the vault is opened (chunkWorkers.ts prewarmChunkWorkers, as the CLI's
// backup, restore and verify do) are adopted by the vault's pool and configured with its keys: what
// they seal, workers started the usual way read back, and the reverse.
import { afterAll, describe, expect, it } from 'vitest'
import { backUp, BLOCK, makeBlock, newVault, restoreDisk, tempDir } from './helpers.js'
import { openVault } from '../../../electron/engine/vault/index.js'
import { defaultChunkWorkers, prewarmChunkWorkers } from '../../../electron/engine/vault/chunkWorkers.js'
import { releaseSpareWorkers, spareWorkerCount } from '../../../electron/engine/workers/pool.js'

const cleanups: Array<() => Promise<void>> = []
afterAll(async () => {
  await releaseSpareWorkers()
  for (const c of cleanups.reverse()) await c()
})

describe('chunk workers started before the vault', () => {
  it('are adopted by the vault and seal and open with its keys', async () => {
    const t = await tempDir()
    cleanups.push(t.cleanup)
    const blocks = Array.from({ length: 16 }, (_, i) => makeBlock(700 + i, i % 4 === 0 ? 'random' : 'text'))
    expect(blocks[0]!.length).toBe(BLOCK)

    prewarmChunkWorkers()
    expect(spareWorkerCount()).toBe(defaultChunkWorkers())
    const { dir, key, vault } = await newVault(t.dir, { workers: 2 }, { formatVersion: 2 })
    const first = await backUp(vault, [{ name: 'd', blocks }])
    expect(spareWorkerCount()).toBe(Math.max(0, defaultChunkWorkers() - 2)) // the pool took two
    await vault.close()
    await releaseSpareWorkers()
    expect(spareWorkerCount()).toBe(0)

    // workers started the usual way (keys in workerData) open what the adopted ones sealed …
    const fresh = await openVault(dir, key, { workers: 2 })
    expect(await restoreDisk(fresh, first.id, 0)).toEqual(blocks)
    const changed = blocks.map((b, i) => (i % 5 === 1 ? makeBlock(800 + i, 'text') : b))
    const second = await backUp(fresh, [{ name: 'd', blocks: changed }])
    await fresh.close()

    // … and adopted workers open what those sealed
    prewarmChunkWorkers()
    const again = await openVault(dir, key, { workers: 2 })
    cleanups.push(() => again.close())
    expect(await restoreDisk(again, second.id, 0)).toEqual(changed)
    expect(spareWorkerCount()).toBe(Math.max(0, defaultChunkWorkers() - 2))
  })
})
