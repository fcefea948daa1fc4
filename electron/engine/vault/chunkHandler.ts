/**
 * The chunk tasks (seal, and at once re-open, I9; open) as a handler: run by every chunk worker
 * (chunkWorker.ts) and, while no worker has started yet, on the vault's own thread (WorkerPool's
 * `inline`). Seal buffers come back in the reply (`transfer`), so the caller's buffer pool
 * circulates; open tasks read their records from shared memory (nothing to return).
 */
import { CheckSpans, preloadRecordCheck, recordCheck } from './recordCheck.js'
import { ChunkCodec, FLAG_CONTAINER, FLAG_ZSTD, incompressibleByEntropy, SEAL_OVERHEAD, type CodecConfig, type SealOutcome } from './chunkCodec.js'
import type { CheckTask, ChunkTask, ChunkTaskResult, CutTask, InPlace, OpenEntry, OpenTask, SealTask } from './chunkTasks.js'
import { compressibleByEntropy, gearTable, PART_MIN_BYTES, sampledEntropy } from './parts.js'
import { createBlockCutter, type BlockCutter } from './partCutter.js'
import { createPieceDigester, nativeDigestState, type PieceDigester } from './pieceDigests.js'
import { preloadBlake3 } from './crypto.js'
import { CHECKSUM_BYTES, createBlockHasher, preloadBlockHasher, type BlockHasher } from '../backup/checksum.js'
import type { TaskReply } from '../workers/pool.js'
import { EngineError } from '../errors.js'
import { SEAL_INCOMPRESSIBLE, SEAL_ITEM_WORDS, SEAL_SAMPLED, unpackOpenEntries, zeroMapBytes } from './chunkTasks.js'
import { copyTriples } from '../io/nativeMemory.js'

/** Copies (from, to, length) triples from `source` to `target` (natively: both are shared memory); what was wrong, or null. */
function copyParts(triples: number[] | undefined, source: Buffer | undefined, target: Buffer | undefined): string | null {
  if (!triples || triples.length === 0) return null
  if (!source || !target) return 'names parts of a cache it was not given'
  return copyTriples(source, target, triples)
}

export type ChunkTaskHandler = (task: ChunkTask) => Promise<TaskReply<ChunkTaskResult>>

/**
 * Loads what a chunk worker's first task needs while the worker still waits for it: the BLAKE3 and
 * XXH3 bindings, xxhash-addon, and the tresor-digest addon with its AES-GCM engines. Loaded on
 * first use they took ~35 ms of a backup's first task in each worker (18 ms of it
 * @napi-rs/blake-hash's libc check through process.report), while the workers had waited idle for
 * ~0.2 s for the job's thread to open the vault and read the disk's first blocks.
 */
export function preloadChunkModules(): void {
  preloadBlake3()
  preloadRecordCheck()
  preloadBlockHasher()
  nativeDigestState()
}

export function chunkTaskHandler(config: CodecConfig): ChunkTaskHandler {
  const codec = new ChunkCodec(config)
  let hasher: BlockHasher | undefined
  let zeroPage = Buffer.alloc(0)
  let digester: PieceDigester | undefined
  const wholeEnd = new Uint32Array(1)

  /** Clears bit g of `zeroMaps` at `mapAt` for every granule g of `plain` that holds a non-zero byte. */
  function markNonZero(plain: Buffer, granule: number, zeroMaps: Uint8Array, mapAt: number): void {
    if (zeroPage.length < granule) zeroPage = Buffer.alloc(granule)
    for (let g = 0, at = 0; at < plain.length; g++, at += granule) {
      const piece = plain.subarray(at, Math.min(plain.length, at + granule))
      if (piece.compare(zeroPage, 0, piece.length) !== 0) zeroMaps[mapAt + (g >> 3)]! &= ~(1 << (g & 7))
    }
  }

  /**
   * Opens entry `e` of `buf` (ChunkCodec.open), or the part it names inside a container record
   * (format 3, ChunkCodec.openPart: a part is checked against its own id only when `checkId`, as a
   * block; `intoExact` does not apply, the part is copied to its place).
   */
  function openEntry(buf: Buffer, e: OpenEntry, packId: Uint8Array, into?: Buffer, checkId = true, intoExact = false): Buffer | string {
    const record = buf.subarray(e.start, e.start + e.length)
    if (e.partLength > 0) return codec.openPart(record, e.chunkId, packId, e.ordinal, e.flags, e.partOffset, e.partLength, into, checkId)
    return codec.open(record, e.chunkId, packId, e.ordinal, e.flags, into, checkId, intoExact)
  }

  /** Opens the records of `task` straight into the caller's shared memory and checksums them there. */
  async function openInto(task: OpenTask, into: InPlace): Promise<TaskReply<ChunkTaskResult>> {
    hasher ??= createBlockHasher()
    const buf = Buffer.from(task.buf)
    const shared = Buffer.from(into.sab)
    const errors: Array<string | null> = []
    const lengths: number[] = []
    const entries = unpackOpenEntries(task.entries)
    const checksums = new Uint8Array(entries.length * CHECKSUM_BYTES)
    const granule = into.zeroGranule
    const mapBytes = zeroMapBytes(task.blockSize, granule)
    const zeroMaps = new Uint8Array(entries.length * mapBytes).fill(0xff)
    entries.forEach((e, j) => {
      const at = into.positions[j]!
      const part = into.parts?.[j] ?? 0
      const room = part > 0 ? part : task.blockSize
      const slot = shared.subarray(at, at + room)
      // A part is authenticated (AES-GCM binds its id) and decoded, but not hashed: the block it is
      // assembled into is (CheckTask, I3), which no wrong part can pass, and only checked blocks'
      // parts enter the part cache. Its own keyed BLAKE3, over ~8 KiB at a time, was a fifth of a
      // format-2 restore's worker time.
      let r = slot.length === room ? openEntry(buf, e, task.packId, slot, part === 0, part > 0) : 'has no room in the target buffer'
      if (typeof r !== 'string' && part > 0 && r.length !== part) r = `holds ${r.length} bytes where its recipe says ${part}`
      if (typeof r === 'string') {
        errors.push(r)
        lengths.push(0)
        return
      }
      if (r.buffer !== shared.buffer || r.byteOffset !== slot.byteOffset) r.copy(slot)
      errors.push(null)
      lengths.push(r.length)
      if (part > 0) return // a part: the assembled block is checked (CheckTask)
      const plain = slot.subarray(0, r.length)
      checksums.set(hasher!.checksum(plain), j * CHECKSUM_BYTES)
      markNonZero(plain, granule, zeroMaps, j * mapBytes)
    })
    return { value: { kind: 'open', errors, lengths, plain: undefined, checksums, zeroMaps } }
  }

  /** Cuts a block into parts: natively, in WebAssembly or in JavaScript (partCutter.ts); the same cuts. */
  let cutter: BlockCutter | undefined

  /** CutTask: chunk ids, and parts of the full blocks that look compressible. */
  function cutBlocks(task: CutTask): TaskReply<ChunkTaskResult> {
    digester ??= createPieceDigester(config.chunkIdKey)
    cutter ??= createBlockCutter(gearTable(config.chunkIdKey))
    const input = task.input ? Buffer.from(task.input) : undefined
    const shared = task.shared ? Buffer.from(task.shared.sab) : undefined
    if (!input && !(shared && task.shared!.positions.length === task.lengths.length)) throw new EngineError('INTERNAL', 'A cut task names no blocks.')
    const blockIds = new Uint8Array(task.lengths.length * 32)
    const partCounts = new Uint32Array(task.lengths.length)
    // room for the most parts the blocks can have (each but a block's last is ≥ PART_MIN_BYTES)
    const most = task.lengths.reduce((sum, length) => sum + Math.ceil(length / PART_MIN_BYTES), 0)
    const allEnds = new Uint32Array(most)
    const partIds = new Uint8Array(most * 32)
    const sums = new Uint8Array(task.lengths.length * CHECKSUM_BYTES)
    const partSums = new Uint8Array(most * CHECKSUM_BYTES)
    // where each part lies in the task's buffer: every block's parts are digested in one call
    const partStarts = new Uint32Array(most)
    const partEnds = new Uint32Array(most)
    const sampled = new Uint16Array(task.lengths.length)
    const source = shared ?? input!
    if (source.length > 0xffffffff) throw new EngineError('INTERNAL', 'A cut task came with a buffer over 4 GiB.')
    let parts = 0
    let at = 0
    task.lengths.forEach((length, i) => {
      const from = shared ? task.shared!.positions[i]! : at
      if (!(from >= 0 && length > 0 && from + length <= source.length)) throw new EngineError('INTERNAL', 'A cut task names a block outside its buffer.')
      const block = source.subarray(from, from + length)
      at += length
      // every block's id, and its checksum: the I9 sum of one stored whole and the block map's (PutResult)
      wholeEnd[0] = length
      digester!.digest(block, wholeEnd, 0, 1, blockIds, i * 32, sums, i * CHECKSUM_BYTES)
      // a full block is sampled once: to cut it, and for its seal's choice to try zstd
      let n = 0
      if (length === task.blockSize) {
        const bits = sampledEntropy(block)
        sampled[i] = SEAL_SAMPLED | (incompressibleByEntropy(length, bits) ? SEAL_INCOMPRESSIBLE : 0)
        if (compressibleByEntropy(bits)) n = cutter!.cut(block, allEnds, parts)
      }
      if (n < 2) return
      partCounts[i] = n
      for (let k = 0; k < n; k++) {
        partStarts[parts + k] = from + (k > 0 ? allEnds[parts + k - 1]! : 0)
        partEnds[parts + k] = from + allEnds[parts + k]!
      }
      parts += n
    })
    digester.ranges(source, partStarts, partEnds, 0, parts, partIds, 0, partSums, 0)
    const value: ChunkTaskResult = {
      kind: 'cut',
      input: task.input,
      ids: blockIds,
      partCounts,
      ends: allEnds.slice(0, parts),
      partIds: partIds.slice(0, parts * 32),
      sums,
      partSums: partSums.slice(0, parts * CHECKSUM_BYTES),
      sampled,
    }
    return { value, transfer: task.input ? [task.input] : [] }
  }

  /** CheckTask: keyed BLAKE3, checksum and zero map of blocks assembled from their parts. */
  function checkAssembled(task: CheckTask): TaskReply<ChunkTaskResult> {
    digester ??= createPieceDigester(config.chunkIdKey)
    const id = new Uint8Array(32)
    const shared = Buffer.from(task.sab)
    const cache = task.cache ? Buffer.from(task.cache) : undefined
    const mapBytes = zeroMapBytes(task.blockSize, task.zeroGranule)
    const errors: Array<string | null> = []
    const checksums = new Uint8Array(task.blocks.length * CHECKSUM_BYTES)
    const zeroMaps = new Uint8Array(task.blocks.length * mapBytes).fill(0xff)
    task.blocks.forEach((b, j) => {
      const plain = shared.subarray(b.position, b.position + b.length)
      const copied = copyParts(b.copyIn, cache, shared)
      if (copied !== null) {
        errors.push(copied)
        return
      }
      // its id, and its checksum in the same pass (a failed block's is never read: the reader throws)
      wholeEnd[0] = plain.length
      digester!.digest(plain, wholeEnd, 0, 1, id, 0, checksums, j * CHECKSUM_BYTES)
      if (plain.length !== b.length || !Buffer.from(id.buffer).equals(Buffer.from(b.chunkId.buffer, b.chunkId.byteOffset, b.chunkId.byteLength))) {
        errors.push('assembled from its parts does not match its id')
        return
      }
      const filled = copyParts(b.fill, shared, cache)
      if (filled !== null) {
        errors.push(filled)
        return
      }
      errors.push(null)
      markNonZero(plain, task.zeroGranule, zeroMaps, j * mapBytes)
    })
    return { value: { kind: 'check', errors, checksums, zeroMaps } }
  }

  /** SealTask: seal each item, then open the very bytes that will be written (I9). */
  function seal(task: SealTask): TaskReply<ChunkTaskResult> {
    const { fields, chunkIds, sums } = task.items
    const count = fields.length / SEAL_ITEM_WORDS
    const shared = task.shared ? Buffer.from(task.shared.sab) : undefined
    const positions = task.shared?.positions
    if (positions && (positions.length !== count || positions.some((at, k) => at + fields[k * SEAL_ITEM_WORDS]! > shared!.length))) {
      throw new EngineError('INTERNAL', 'A seal task named bytes outside its shared buffer.')
    }
    if (!task.input && !shared) throw new EngineError('INTERNAL', 'A seal task came without its plaintexts.')
    const input = task.input ? Buffer.from(task.input) : undefined
    const out = Buffer.from(task.output)
    if (sums) hasher ??= createBlockHasher()
    const stored = new Uint32Array(count * 2)
    const checks: bigint[] = []
    const spans = new CheckSpans((start, end) => checks.push(recordCheck(out.subarray(start, end))))
    const failures: Array<{ item: number; error: string }> = []
    let inPos = 0
    let outPos = 0
    for (let k = 0; k < count; k++) {
      const length = fields[k * SEAL_ITEM_WORDS]!
      const ordinal = fields[k * SEAL_ITEM_WORDS + 1]!
      const chunkId = chunkIds.subarray(k * 32, k * 32 + 32)
      const plain = positions ? shared!.subarray(positions[k]!, positions[k]! + length) : input!.subarray(inPos, inPos + length)
      inPos += length
      const sum = sums?.subarray(k * CHECKSUM_BYTES, (k + 1) * CHECKSUM_BYTES)
      if (sum && !hasher!.checksum(plain).equals(sum)) {
        failures.push({ item: k, error: 'changed in memory between its id and its seal' })
        continue
      }
      const target = out.subarray(outPos)
      let r: SealOutcome
      if (task.fromPackId) {
        // a moved record: opened where it was (I3) and encrypted for its new place
        const from = { ordinal: fields[k * SEAL_ITEM_WORDS + 2]!, flags: fields[k * SEAL_ITEM_WORDS + 3]! }
        const moved = codec.reseal(plain, chunkId, task.fromPackId, from, target, task.packId, ordinal)
        if (typeof moved === 'string') {
          failures.push({ item: k, error: `did not open where it was stored: ${moved}` })
          continue
        }
        r = moved
      } else {
        const kind = fields[k * SEAL_ITEM_WORDS + 3]!
        const incompressible = kind & SEAL_SAMPLED ? (kind & SEAL_INCOMPRESSIBLE) !== 0 : undefined
        r = codec.seal(plain, target, chunkId, task.packId, ordinal, task.recipes === true, (kind & FLAG_CONTAINER) !== 0, incompressible)
      }
      // I9 verify-before-commit: open the very bytes that will be written, here in memory. Re-reading
      // the pack from disk (page cache) cost ~40 % of the write path's CPU and checked nothing more.
      // A moved record must decrypt to the body it was moved with (its plaintext was checked by id in
      // `reseal`); a new one is opened in full and compared with its plaintext or id.
      const record = target.subarray(0, r.storedLength)
      if (task.fromPackId) {
        const wrong = codec.checkResealed(record, chunkId, task.packId, ordinal, r.flags)
        if (wrong) failures.push({ item: k, error: wrong })
      } else {
        const opened = codec.open(record, chunkId, task.packId, ordinal, r.flags, undefined, !sum)
        if (typeof opened === 'string') failures.push({ item: k, error: opened })
        else if (sum && !opened.equals(plain)) failures.push({ item: k, error: 'did not open to its plaintext' })
      }
      stored[2 * k] = r.storedLength
      stored[2 * k + 1] = r.flags
      outPos += r.storedLength
      spans.add(r.storedLength) // a span is checked as soon as it closes, while it is still in cache
    }
    spans.finish()
    const value: ChunkTaskResult = { kind: 'seal', input: task.input, output: task.output, stored, checks: BigUint64Array.from(checks), failures }
    return { value, transfer: task.input ? [task.input, task.output] : [task.output] }
  }

  return async (task) => {
    codec.forgetDecoded() // the records of an earlier task may have been read into the same memory
    if (task.kind === 'seal') return seal(task)
    if (task.kind === 'check') return checkAssembled(task)
    if (task.kind === 'cut') return cutBlocks(task)
    if (task.into) return openInto(task, task.into)
    // open: records packed in `buf`; plaintexts copied into one new buffer when wanted
    const buf = Buffer.from(task.buf)
    const errors: Array<string | null> = []
    const lengths: number[] = []
    // room per entry: a stored (uncompressed) record's plaintext is exactly its body; a zstd one may
    // fill a block (a 4 MiB range of small recipes must not cost a block of memory each)
    const entries = unpackOpenEntries(task.entries)
    const need = entries.reduce((sum, e) => sum + (e.flags & FLAG_ZSTD ? task.blockSize : Math.min(task.blockSize, Math.max(0, e.length - SEAL_OVERHEAD))), 0)
    const plainOut = task.returnPlain ? Buffer.allocUnsafeSlow(need) : undefined
    let p = 0
    for (const e of entries) {
      // plaintexts land directly in plainOut (no scratch copy); a failed entry leaves p where it was
      const r = openEntry(buf, e, task.packId, plainOut?.subarray(p, p + task.blockSize))
      if (typeof r === 'string') {
        errors.push(r)
        lengths.push(0)
        continue
      }
      errors.push(null)
      lengths.push(r.length)
      if (plainOut) p += r.buffer === plainOut.buffer ? r.length : r.copy(plainOut, p)
    }
    const value: ChunkTaskResult = { kind: 'open', errors, lengths, plain: plainOut ? (plainOut.buffer as ArrayBuffer) : undefined }
    return { value, transfer: plainOut ? [plainOut.buffer as ArrayBuffer] : [] }
  }
}
