// The seal task's I9 check with checksums (SealItems.sums): the batch's copy must carry the
// checksum taken where the id was made, and each record must open to exactly that copy.
import { randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { chunkTaskHandler } from '../../../electron/engine/vault/chunkHandler.js'
import { ChunkCodec } from '../../../electron/engine/vault/chunkCodec.js'
import { chunkIdOf, deriveKeys } from '../../../electron/engine/vault/crypto.js'
import { packOpenEntries, SEAL_ITEM_WORDS, type ChunkTaskResult } from '../../../electron/engine/vault/chunkTasks.js'
import { createBlockHasher } from '../../../electron/engine/backup/checksum.js'
import { CHECK_SPAN_BYTES, CheckSpans, recordCheck } from '../../../electron/engine/vault/recordCheck.js'

const BS = 64 * 1024
const keys = deriveKeys(randomBytes(32), 'cd'.repeat(16))
const config = { dataKey: keys.data, chunkIdKey: keys.chunkId, blockSize: BS, compressionLevel: 1 }
const sums = createBlockHasher()

function task(plains: Buffer[], sumOf: (p: Buffer, k: number) => Buffer) {
  const input = new ArrayBuffer(plains.reduce((s, p) => s + p.length, 0))
  const output = new ArrayBuffer(plains.reduce((s, p) => s + p.length + 28, 0))
  const fields = new Uint32Array(plains.length * SEAL_ITEM_WORDS)
  const chunkIds = new Uint8Array(plains.length * 32)
  const sumBytes = new Uint8Array(plains.length * 16)
  let at = 0
  plains.forEach((p, k) => {
    p.copy(Buffer.from(input), at)
    at += p.length
    fields[k * SEAL_ITEM_WORDS] = p.length
    fields[k * SEAL_ITEM_WORDS + 1] = k
    chunkIds.set(chunkIdOf(keys.chunkId, p), k * 32)
    sumBytes.set(sumOf(p, k), k * 16)
  })
  return { kind: 'seal' as const, input, output, items: { fields, chunkIds, sums: sumBytes }, packId: new Uint8Array(randomBytes(16)) }
}

type Sealed = Extract<ChunkTaskResult, { kind: 'seal' }>

/** Each sealed record of `r` opens (ordinal = item index) to its plaintext. */
function expectOpensTo(r: Sealed, t: { items: { chunkIds: Uint8Array }; packId: Uint8Array }, plains: Buffer[]): void {
  const codec = new ChunkCodec(config)
  const out = Buffer.from(r.output)
  let pos = 0
  plains.forEach((p, k) => {
    const length = r.stored[2 * k]!
    const opened = codec.open(out.subarray(pos, pos + length), t.items.chunkIds.subarray(k * 32, k * 32 + 32), t.packId, k, r.stored[2 * k + 1]!)
    expect(Buffer.isBuffer(opened) && opened.equals(p), `item ${k}`).toBe(true)
    pos += length
  })
}

describe('seal task with checksums (I9)', () => {
  const text = Buffer.from('a line of a log file, again and again\n'.repeat(2000)).subarray(0, BS)
  const plains = [randomBytes(BS), text, randomBytes(5000)]

  it('seals records that open, with the id check, to the plaintexts', async () => {
    const t = task(plains, (p) => sums.checksum(p))
    const r = (await chunkTaskHandler(config)(t)).value as Sealed
    expect(r.failures).toEqual([])
    expectOpensTo(r, t, plains)
  })

  it('refuses a plaintext whose checksum differs from the one taken with its id', async () => {
    // item 1's checksum was taken from other bytes (as if the buffer changed after its id was made)
    const t = task(plains, (p, k) => sums.checksum(k === 1 ? Buffer.concat([p.subarray(1), Buffer.from([7])]) : p))
    const r = (await chunkTaskHandler(config)(t)).value as Sealed
    expect(r.failures).toEqual([{ item: 1, error: 'changed in memory between its id and its seal' }])
  })

  it('refuses a record that does not open to its plaintext (a corrupting compressor)', async () => {
    const t = task(plains, (p) => sums.checksum(p))
    const r = (await chunkTaskHandler({ ...config, corruptCompressor: true })(t)).value as Sealed
    // only the text is compressed; its record opens to other bytes, or not at all
    expect(r.failures.map((f) => f.item)).toEqual([1])
    expect(r.failures[0]!.error).toMatch(/did not open to its plaintext|could not be decompressed/)
  })
})

describe('I9 check spans', () => {
  /** The spans `CheckSpans` cuts from `lengths`, as [start, end] byte ranges. */
  function spansOf(lengths: number[]): Array<[number, number]> {
    const spans: Array<[number, number]> = []
    const cutter = new CheckSpans((start, end) => spans.push([start, end]))
    for (const length of lengths) cutter.add(length)
    cutter.finish()
    return spans
  }

  it('closes a span with the record that reaches the span size, keeps a large record whole, and closes the rest at the end', () => {
    const S = CHECK_SPAN_BYTES
    expect(spansOf([S / 2, S / 2 - 1, 2, 5, 3 * S, 0, 7])).toEqual([
      [0, S + 1],
      [S + 1, 4 * S + 6],
      [4 * S + 6, 4 * S + 13],
    ])
    expect(spansOf([S, 0])).toEqual([[0, S]]) // a record of no bytes after a closed span opens none
    expect(spansOf([])).toEqual([])
  })

  it("a seal task's checks are the XXH3-64 of the spans its stored records form", async () => {
    // 60 records of 10–14 KiB: a few spans of many records each
    const many = Array.from({ length: 60 }, (_, k) => (k % 3 === 0 ? Buffer.from(`record ${k} `.repeat(1400)).subarray(0, 10_000 + k * 70) : randomBytes(10_000 + k * 70)))
    const t = task(many, (p) => sums.checksum(p))
    const r = (await chunkTaskHandler(config)(t)).value as Sealed
    expect(r.failures).toEqual([])
    const lengths = many.map((_, k) => r.stored[2 * k]!)
    const spans = spansOf(lengths)
    expect(spans.length).toBeGreaterThan(1)
    expect(spans.length).toBeLessThan(many.length / 10)
    expectOpensTo(r, t, many)
    const out = Buffer.from(r.output)
    expect([...r.checks]).toEqual(spans.map(([start, end]) => recordCheck(out.subarray(start, end))))
    // a bit flipped anywhere in a span changes that span's value
    out[spans[1]![0] + 12_345]! ^= 1
    expect(recordCheck(out.subarray(...spans[1]!))).not.toBe(r.checks[1])
  })
})

describe('seal task over shared memory (SealTask.shared)', () => {
  const text = Buffer.from('a line of a log file, again and again\n'.repeat(2000)).subarray(0, BS)
  const plains = [randomBytes(BS), text, randomBytes(5000)]

  /** The plaintexts placed out of order in a shared buffer, with a gap: the task names each one's position. */
  function sharedTask() {
    const t = task(plains, (p) => sums.checksum(p))
    const sab = new SharedArrayBuffer(2 * BS + 16384)
    const positions = Uint32Array.from([BS + 12288, 8192, 0])
    plains.forEach((p, k) => p.copy(Buffer.from(sab), positions[k]))
    const { input: _, ...rest } = t
    return { ...rest, shared: { sab, positions } }
  }

  it('seals each item where it lies, returns no input, and its records open to the plaintexts', async () => {
    const t = sharedTask()
    const reply = await chunkTaskHandler(config)(t)
    const r = reply.value as Sealed
    expect(r.failures).toEqual([])
    expect(r.input).toBeUndefined()
    expect(reply.transfer).toEqual([t.output])
    expectOpensTo(r, t, plains)
  })

  it('refuses bytes changed where they lie, positions outside the buffer, and a task without plaintexts', async () => {
    const changed = sharedTask()
    Buffer.from(changed.shared.sab)[8192 + 100]! ^= 1 // item 1, after its checksum was taken
    const r = (await chunkTaskHandler(config)(changed)).value as Sealed
    expect(r.failures).toEqual([{ item: 1, error: 'changed in memory between its id and its seal' }])
    const outside = sharedTask()
    outside.shared.positions[0] = BS + 16385 // item 0 would end past the buffer
    await expect(Promise.resolve().then(() => chunkTaskHandler(config)(outside))).rejects.toMatchObject({ code: 'INTERNAL' })
    const { shared: _, ...none } = sharedTask()
    await expect(Promise.resolve().then(() => chunkTaskHandler(config)(none))).rejects.toMatchObject({ code: 'INTERNAL' })
  })
})

describe('restore of a block stored as parts (I3 on the assembled block)', () => {
  it('a part that opens (authentic record) but holds other bytes than its id names fails its block, not silently', async () => {
    const codec = new ChunkCodec(config)
    const handler = chunkTaskHandler(config)
    const block = Buffer.from('part one of the block; '.repeat(2900)).subarray(0, BS)
    const cut = 20_000
    const parts = [block.subarray(0, cut), block.subarray(cut)]
    const packId = randomBytes(16)
    // the second record carries the second part's id but other bytes of the same length (what a
    // faulty compressor or a writer bug could have stored): AES-GCM authenticates it all the same
    const forged = Buffer.from(parts[1]!)
    forged[100]! ^= 0x20
    const records = [parts[0]!, forged].map((plain, k) => {
      const out = Buffer.alloc(plain.length + 64)
      const r = codec.seal(plain, out, chunkIdOf(keys.chunkId, parts[k]!), packId, k)
      return { bytes: Buffer.from(out.subarray(0, r.storedLength)), flags: r.flags }
    })
    const buf = new SharedArrayBuffer(records[0]!.bytes.length + records[1]!.bytes.length)
    Buffer.from(buf).set(records[0]!.bytes, 0)
    Buffer.from(buf).set(records[1]!.bytes, records[0]!.bytes.length)
    const { fields, chunkIds } = packOpenEntries(
      2,
      (k) => ({ length: records[k]!.bytes.length, ordinal: k, flags: records[k]!.flags, chunkId: chunkIdOf(keys.chunkId, parts[k]!) }),
      (k) => (k === 0 ? 0 : records[0]!.bytes.length),
    )
    const sab = new SharedArrayBuffer(BS)
    const opened = (
      await handler({ kind: 'open', buf, entries: { fields, chunkIds }, packId: new Uint8Array(packId), blockSize: BS, returnPlain: false, into: { sab, positions: [0, cut], zeroGranule: 4096, parts: [cut, BS - cut] } })
    ).value as Extract<ChunkTaskResult, { kind: 'open' }>
    expect(opened.errors).toEqual([null, null]) // parts are authenticated and decoded, not hashed
    const check = async () =>
      ((await handler({ kind: 'check', sab, blocks: [{ position: 0, length: BS, chunkId: new Uint8Array(chunkIdOf(keys.chunkId, block)) }], blockSize: BS, zeroGranule: 4096 })).value as Extract<ChunkTaskResult, { kind: 'check' }>)
        .errors
    const errors = await check()
    expect(errors).toHaveLength(1)
    expect(errors[0]).toMatch(/does not match/)
    // the genuine bytes in place: the same block checks out
    Buffer.from(sab).set(parts[1]!, cut)
    expect(await check()).toEqual([null])
  })
})
