// Format 2's cut tasks read blocks that lie in shared memory (the backup's read buffers) where they
// are, instead of a copy in a slot (session.ts cutBlocks). Same ids, same parts, same restore.
import { randomBytes } from 'node:crypto'
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest'
import { backUp, BLOCK, makeBlock, newVault, restoreDisk, tempDir } from './helpers.js'
import { WorkerPool } from '../../../electron/engine/workers/pool.js'
import { chunkTaskHandler } from '../../../electron/engine/vault/chunkHandler.js'
import { chunkIdOf, deriveKeys } from '../../../electron/engine/vault/crypto.js'
import type { LocalVault } from '../../../electron/engine/vault/index.js'

const cleanups: Array<() => Promise<void>> = []
afterAll(async () => {
  for (const c of cleanups.reverse()) await c()
})
afterEach(() => vi.restoreAllMocks())

async function idsOf(vault: LocalVault, pointId: string): Promise<string[]> {
  const out: string[] = []
  for await (const e of vault.readBlockMap(pointId, 0)) out.push(e.kind === 'data' ? Buffer.from(e.chunkId).toString('hex') : e.kind)
  return out
}

describe('cut tasks over shared memory', () => {
  it('cuts blocks where they lie in a SharedArrayBuffer, with the ids, parts and restore of copied blocks', async () => {
    const t = await tempDir()
    cleanups.push(t.cleanup)
    const { vault } = await newVault(t.dir, { workers: 2 }, { formatVersion: 2 })
    cleanups.push(() => vault.close())
    const plain = Array.from({ length: 24 }, (_, i) => makeBlock(900 + i, i % 3 === 0 ? 'random' : 'text'))
    const shared = Buffer.from(new SharedArrayBuffer(plain.length * BLOCK))
    const views = plain.map((b, i) => {
      b.copy(shared, i * BLOCK)
      return shared.subarray(i * BLOCK, (i + 1) * BLOCK)
    })
    const submit = vi.spyOn(WorkerPool.prototype, 'submit')
    const first = await backUp(vault, [{ name: 'd', blocks: views }])
    const cuts = submit.mock.calls.map(([task]) => task as { kind: string; shared?: unknown; input?: unknown }).filter((task) => task.kind === 'cut')
    expect(cuts.length).toBeGreaterThan(0)
    expect(cuts.every((task) => task.shared !== undefined && task.input === undefined)).toBe(true)
    const back = await restoreDisk(vault, first.id, 0)
    back.forEach((b, i) => expect((b as Buffer).equals(plain[i]!), `block ${i}`).toBe(true))

    // the same blocks in ordinary memory go through a slot's copy and find everything stored
    submit.mockClear()
    const second = await backUp(vault, [{ name: 'd', blocks: plain.map((b) => Buffer.from(b)) }])
    const copied = submit.mock.calls.map(([task]) => task as { kind: string; shared?: unknown; input?: unknown }).filter((task) => task.kind === 'cut')
    expect(copied.length).toBeGreaterThan(0)
    expect(copied.every((task) => task.shared === undefined && task.input instanceof ArrayBuffer)).toBe(true)
    expect(await idsOf(vault, second.id)).toEqual(await idsOf(vault, first.id))
    expect(second.stats.bytesNew).toBe(0)
    expect((await vault.verify({ readData: true })).problems).toEqual([])
  })

  it('refuses a shared cut task that names bytes outside its buffer or no blocks at all', async () => {
    const keys = deriveKeys(randomBytes(32), 'ab'.repeat(16))
    const handler = chunkTaskHandler({ dataKey: keys.data, chunkIdKey: keys.chunkId, blockSize: BLOCK, compressionLevel: 1 })
    const sab = new SharedArrayBuffer(2 * BLOCK)
    const block = makeBlock(3, 'text')
    block.copy(Buffer.from(sab), BLOCK)
    const ok = (await handler({ kind: 'cut', shared: { sab, positions: [BLOCK] }, lengths: [BLOCK], blockSize: BLOCK })).value
    expect(ok.kind === 'cut' && Buffer.from(ok.ids).equals(chunkIdOf(keys.chunkId, block))).toBe(true)
    await expect(Promise.resolve().then(() => handler({ kind: 'cut', shared: { sab, positions: [BLOCK + 1] }, lengths: [BLOCK], blockSize: BLOCK }))).rejects.toMatchObject({ code: 'INTERNAL' })
    await expect(Promise.resolve().then(() => handler({ kind: 'cut', lengths: [BLOCK], blockSize: BLOCK }))).rejects.toMatchObject({ code: 'INTERNAL' })
  })
})
