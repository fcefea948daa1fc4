// Seal batches shared by several puts (session.ts `open`): a block put alone waits in a batch
// until the batch is full, a slot is wanted, its result's `sealed` is asked for, or the session
// drains. These cases must neither hang nor lose a block.
import { afterAll, describe, expect, it } from 'vitest'
import { backUp, BLOCK, checksumOf, makeBlock, newVault, restoreDisk, tempDir } from './helpers.js'

const cleanups: Array<() => Promise<void>> = []
afterAll(async () => {
  for (const c of cleanups.reverse()) await c()
})

describe('seal batches shared by puts', () => {
  it.each([1, 2])('one slot in all (format %i): a cut or a new batch that needs the slot sends the open batch first', async (formatVersion) => {
    const t = await tempDir()
    cleanups.push(t.cleanup)
    // format 2 sends a cut message per putBlocks, which needs the only slot the open batch holds
    const { vault } = await newVault(t.dir, { workers: 2, maxBlocksInFlight: 1 }, { formatVersion })
    cleanups.push(() => vault.close())
    const blocks = Array.from({ length: 40 }, (_, i) => makeBlock(500 + i, i % 2 ? 'text' : 'random'))
    const point = await backUp(vault, [{ name: 'd', blocks }])
    const back = await restoreDisk(vault, point.id, 0)
    expect(back).toHaveLength(blocks.length)
    back.forEach((b, i) => expect((b as Buffer).equals(blocks[i]!), `block ${i}`).toBe(true))
    expect((await vault.verify({ readData: true })).problems).toEqual([])
  })

  it("asking for a lone block's `sealed` sends its batch; abort with a batch still open leaves nothing behind", async () => {
    const t = await tempDir()
    cleanups.push(t.cleanup)
    const { vault } = await newVault(t.dir)
    cleanups.push(() => vault.close())
    const lone = makeBlock(7, 'random')
    const session = await vault.beginBackup()
    const r = (await session.putBlock(lone, checksumOf(lone))) as { isNew: boolean; sealed?: Promise<number> }
    expect(r.isNew).toBe(true)
    // sealed and written: the record's stored length (random data stays uncompressed: plaintext + 28)
    expect(await r.sealed).toBe(BLOCK + 28)
    const open = makeBlock(8, 'random')
    await session.putBlock(open, checksumOf(open)) // sits in a new open batch
    await session.abort()
    expect(await vault.listPoints()).toEqual([])
    // the next backup stores both blocks again and reads them back
    const point = await backUp(vault, [{ name: 'd', blocks: [lone, open] }])
    const back = await restoreDisk(vault, point.id, 0)
    expect((back[0] as Buffer).equals(lone)).toBe(true)
    expect((back[1] as Buffer).equals(open)).toBe(true)
    expect((await vault.verify({ readData: true })).problems).toEqual([])
  })
})
