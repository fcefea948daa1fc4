/**
 * Task module of the vault's worker pool: seals (and at once re-opens, I9) and opens chunk records
 * (chunkCodec.ts).
 * Buffers arrive and return as transferables, so the caller's buffer pool circulates.
 */
import { workerData } from 'node:worker_threads'
import { crc32 } from 'node:zlib'
import { serveTasks } from '../workers/pool.js'
import { ChunkCodec, type CodecConfig } from './chunkCodec.js'
import type { ChunkTask, ChunkTaskResult, SealedRecord } from './chunkTasks.js'

const codec = new ChunkCodec(workerData as CodecConfig)
/** Plaintext buffers are allocated in whole MiBs, so a reader can reuse one for a later range. */
const PLAIN_ROUND = 1024 * 1024

serveTasks<ChunkTask, ChunkTaskResult>((task) => {
  if (task.kind === 'seal') {
    const input = Buffer.from(task.input)
    const out = Buffer.from(task.output)
    const records: SealedRecord[] = []
    let inPos = 0
    let outPos = 0
    for (const item of task.items) {
      const plain = input.subarray(inPos, inPos + item.length)
      inPos += item.length
      const target = out.subarray(outPos)
      const r = codec.seal(plain, target, item.chunkId, task.packId, item.ordinal)
      // I9 verify-before-commit: open the very bytes that will be written, here in memory. Re-reading
      // the pack from disk (page cache) cost ~40 % of the write path's CPU and checked nothing more.
      const record = target.subarray(0, r.storedLength)
      const opened = codec.open(record, item.chunkId, task.packId, item.ordinal, r.flags)
      records.push({ storedLength: r.storedLength, flags: r.flags, verifyError: typeof opened === 'string' ? opened : null, recordCrc: crc32(record) })
      outPos += r.storedLength
    }
    const value: ChunkTaskResult = { kind: 'seal', input: task.input, output: task.output, records }
    return { value, transfer: [task.input, task.output] }
  }
  // open: records packed in `buf`; plaintexts copied into one new buffer when wanted
  const buf = Buffer.from(task.buf)
  const errors: Array<string | null> = []
  const lengths: number[] = []
  const need = task.entries.length * task.blockSize
  const plainOut = !task.returnPlain ? undefined : task.plainBuf && task.plainBuf.byteLength >= need ? Buffer.from(task.plainBuf) : Buffer.allocUnsafeSlow(Math.ceil(need / PLAIN_ROUND) * PLAIN_ROUND)
  let p = 0
  for (const e of task.entries) {
    // plaintexts land directly in plainOut (no scratch copy); a failed entry leaves p where it was
    const r = codec.open(buf.subarray(e.start, e.start + e.length), e.chunkId, task.packId, e.ordinal, e.flags, plainOut?.subarray(p, p + task.blockSize))
    if (typeof r === 'string') {
      errors.push(r)
      lengths.push(0)
      continue
    }
    errors.push(null)
    lengths.push(r.length)
    if (plainOut) p += r.buffer === plainOut.buffer ? r.length : r.copy(plainOut, p)
  }
  const value: ChunkTaskResult = { kind: 'open', buf: task.buf, errors, lengths, plain: plainOut ? (plainOut.buffer as ArrayBuffer) : undefined }
  return { value, transfer: plainOut ? [task.buf, plainOut.buffer as ArrayBuffer] : [task.buf] }
})
