// Format 2's cut tasks read blocks that lie in shared memory (the backup's read buffers) where they
// are, instead of a copy in a slot (session.ts cutBlocks). Same ids, same parts, same restore. A
// call with enough new bytes is also sealed there (SharedUnits), and resolves only once it is.
import { randomBytes } from 'node:crypto'
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest'
import { backUp, BLOCK, makeBlock, newVault, restoreDisk, tempDir } from './helpers.js'
import { openVault, type NewPoint } from '../../../electron/engine/vault/index.js'
import { WorkerPool } from '../../../electron/engine/workers/pool.js'
import { chunkTaskHandler } from '../../../electron/engine/vault/chunkHandler.js'
import { chunkIdOf, deriveKeys } from '../../../electron/engine/vault/crypto.js'
import { looksIncompressible } from '../../../electron/engine/vault/chunkCodec.js'
import { SEAL_INCOMPRESSIBLE, SEAL_SAMPLED, type ChunkTaskResult } from '../../../electron/engine/vault/chunkTasks.js'
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

  it("reports each full block's sampling verdict, the one the seal would reach itself", async () => {
    const keys = deriveKeys(randomBytes(32), 'ab'.repeat(16))
    const handler = chunkTaskHandler({ dataKey: keys.data, chunkIdKey: keys.chunkId, blockSize: BLOCK, compressionLevel: 1 })
    const blocks = [makeBlock(5, 'random'), makeBlock(6, 'text'), Buffer.concat([Buffer.alloc(BLOCK / 8), randomBytes(BLOCK - BLOCK / 8)]), makeBlock(7, 'random').subarray(0, BLOCK / 2)]
    const input = Buffer.concat(blocks)
    const r = (await handler({ kind: 'cut', input: input.buffer.slice(input.byteOffset, input.byteOffset + input.length), lengths: blocks.map((b) => b.length), blockSize: BLOCK })).value
    if (r.kind !== 'cut') throw new Error('not a cut reply')
    // full blocks: sampled, and incompressible when they sample as random; the short last block is left to the seal
    const [sampledBit, randomBit] = [SEAL_SAMPLED, SEAL_SAMPLED | SEAL_INCOMPRESSIBLE]
    expect([...r.sampled]).toEqual([...blocks.slice(0, 3).map((b) => (looksIncompressible(b) ? randomBit : sampledBit)), 0])
    expect([...r.sampled]).toEqual([randomBit, sampledBit, sampledBit, 0])
  })

  it('gives the same ids, parts and checksums with the native digest addon as one piece at a time (TRESOR_NO_NATIVE_DIGEST=1)', async () => {
    const keys = deriveKeys(randomBytes(32), 'ab'.repeat(16))
    // log-like text that varies line by line (a repeated line has no content-defined cuts)
    const text = (n: number): Buffer =>
      Buffer.from(Array.from({ length: 4000 }, (_, k) => `${n}: event ${k * 7919 + n} at ${(k * 31) % 997} ${'abcdefghij'.repeat(k % 7)}\n`).join('')).subarray(0, BLOCK)
    const blocks = [text(11), makeBlock(12, 'random'), text(13), text(14).subarray(0, BLOCK / 3)]
    const input = Buffer.concat(blocks)
    const cut = async (): Promise<Extract<ChunkTaskResult, { kind: 'cut' }>> => {
      const handler = chunkTaskHandler({ dataKey: keys.data, chunkIdKey: keys.chunkId, blockSize: BLOCK, compressionLevel: 1 })
      const r = (await handler({ kind: 'cut', input: input.buffer.slice(input.byteOffset, input.byteOffset + input.length), lengths: blocks.map((b) => b.length), blockSize: BLOCK })).value
      if (r.kind !== 'cut') throw new Error('not a cut reply')
      return r
    }
    const native = await cut()
    process.env.TRESOR_NO_NATIVE_DIGEST = '1'
    let bindings
    try {
      bindings = await cut()
    } finally {
      delete process.env.TRESOR_NO_NATIVE_DIGEST
    }
    // the text blocks were cut into parts, and every digest is the one its bytes give
    expect(native.partCounts[0]).toBeGreaterThan(1)
    expect(native.partCounts[2]).toBeGreaterThan(1)
    blocks.forEach((b, i) => expect(Buffer.from(native.ids.subarray(i * 32, (i + 1) * 32)).equals(chunkIdOf(keys.chunkId, b)), `block ${i}`).toBe(true))
    for (const field of ['ids', 'partCounts', 'ends', 'partIds', 'sums', 'partSums', 'sampled'] as const) {
      expect(Buffer.from(native[field].buffer, native[field].byteOffset, native[field].byteLength).toString('hex'), field).toBe(
        Buffer.from(bindings[field].buffer, bindings[field].byteOffset, bindings[field].byteLength).toString('hex'),
      )
    }
  })

  /** Blocks copied into one shared buffer, and their views there (a backup's read buffer). */
  function inShared(plain: Buffer[]): { shared: Buffer; views: Buffer[] } {
    const shared = Buffer.from(new SharedArrayBuffer(plain.length * BLOCK))
    return { shared, views: plain.map((b, i) => shared.subarray(i * BLOCK, i * BLOCK + b.copy(shared, i * BLOCK))) }
  }

  const point = (n: number): NewPoint => ({
    machineId: 'vm1',
    machineName: 'vm1',
    createdAt: new Date().toISOString(),
    consistency: 'crash',
    disks: [{ index: 0, name: 'd', virtualSize: n * BLOCK, sourceFormat: 'raw', sourcePath: '/src/d', allocatedBytes: n * BLOCK, blockCount: n }],
    stats: { bytesRead: 0, bytesNew: 0, bytesStored: 0, seconds: 0 },
    labels: {},
  })

  it('seals a call of at least 1 MiB of new blocks where they lie, and resolves only once they are sealed', async () => {
    const t = await tempDir()
    cleanups.push(t.cleanup)
    // 1 MiB packs: batches of at most half a pack, so the call's 2 MiB go out in several batches
    const { vault } = await newVault(t.dir, { workers: 2 }, { formatVersion: 2 })
    cleanups.push(() => vault.close())
    const plain = Array.from({ length: 32 }, (_, i) => makeBlock(1300 + i, i % 2 ? 'random' : 'text'))
    const { shared, views } = inShared(plain)
    const submit = vi.spyOn(WorkerPool.prototype, 'submit')
    const session = await vault.beginBackup()
    const writer = session.blockMapWriter({ index: 0, blockCount: plain.length })
    const results = await session.putBlocks!(views.map((data) => ({ data })))
    // the caller reuses its buffer at once: nothing already sealed may change, nothing may still read it
    shared.fill(0xa5)
    const seals = submit.mock.calls.map(([task]) => task as { kind: string; recipes?: true; shared?: { sab: SharedArrayBuffer }; input?: unknown }).filter((task) => task.kind === 'seal' && !task.recipes)
    expect(seals.length).toBeGreaterThan(1)
    expect(seals.every((task) => task.shared?.sab === shared.buffer && task.input === undefined)).toBe(true)
    results.forEach((r) => writer.append({ kind: 'data', chunkId: r.chunkId, checksum: r.checksum! }))
    await writer.finish()
    const first = await session.commit(point(plain.length))
    const back = await restoreDisk(vault, first.id, 0)
    back.forEach((b, i) => expect((b as Buffer).equals(plain[i]!), `block ${i}`).toBe(true))

    // a call with a few new blocks copies them into the open batch shared by calls, as before
    submit.mockClear()
    const few = Array.from({ length: 4 }, (_, i) => makeBlock(1400 + i, 'random'))
    const second = inShared(few)
    const s2 = await vault.beginBackup()
    const w2 = s2.blockMapWriter({ index: 0, blockCount: few.length })
    for (const r of await s2.putBlocks!(second.views.map((data) => ({ data })))) w2.append({ kind: 'data', chunkId: r.chunkId, checksum: r.checksum! })
    await w2.finish()
    const p2 = await s2.commit(point(few.length))
    const copied = submit.mock.calls.map(([task]) => task as { kind: string; shared?: unknown; input?: unknown }).filter((task) => task.kind === 'seal')
    expect(copied.length).toBeGreaterThan(0)
    expect(copied.every((task) => task.shared === undefined && task.input instanceof ArrayBuffer)).toBe(true)
    ;(await restoreDisk(vault, p2.id, 0)).forEach((b, i) => expect((b as Buffer).equals(few[i]!), `block ${i}`).toBe(true))
    expect((await vault.verify({ readData: true })).problems).toEqual([])
  })

  it('a failed seal over shared memory rejects the call only once no worker reads its buffer, and commits nothing', async () => {
    const t = await tempDir()
    cleanups.push(t.cleanup)
    const { dir, key } = await newVault(t.dir, {}, { formatVersion: 2 }).then(async (v) => {
      await v.vault.close()
      return v
    })
    const vault = await openVault(dir, key, { workers: 2, testHooks: { corruptCompressor: true } })
    cleanups.push(() => vault.close())
    const plain = Array.from({ length: 32 }, (_, i) => makeBlock(1500 + i, 'text'))
    const { views } = inShared(plain)
    const session = await vault.beginBackup()
    const pool = (vault as unknown as { ctx: { pool(): WorkerPool<unknown, unknown> } }).ctx.pool()
    const err = await session.putBlocks!(views.map((data) => ({ data }))).then(
      () => undefined,
      (e: unknown) => e as { code?: string },
    )
    expect(err?.code).toBe('CHUNK_CORRUPT')
    expect(pool.pending).toBe(0) // every seal task over the buffer has replied
    await session.abort()
    expect(await vault.listPoints()).toEqual([])
  })
})
