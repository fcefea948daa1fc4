/**
 * VHDX log replay, in memory. A VHDX whose header names a log (non-zero LogGuid) may hold metadata
 * updates that were logged but not yet written in place. We never write the user's file: the
 * active log sequence is validated and its updates become an overlay that every later read of the
 * file goes through.
 *
 * Terms ([MS-VHDX] 2.3)
 * - entry: "loge" header, descriptors, then 4 KiB data sectors; CRC-32C over the whole entry.
 * - data descriptor ("desc"): one 4 KiB page at FileOffset = LeadingBytes (8) + the data sector's
 *   4084 payload bytes + TrailingBytes (4). zero descriptor ("zero"): ZeroLength bytes of zeros.
 * - active sequence: consecutive entries (sequence numbers +1, laid end to end in the circular
 *   log) from the tail named by the newest valid entry up to that entry. Older entries are spent.
 */
import { EngineError } from '../../errors.js'
import { malformed, zeroFill, type ImageFile } from '../io.js'
import { crc32cWithZeroField } from './crc32c.js'
import { MiB, type Header } from './structures.js'

const PAGE = 4096
/** Largest log replayed in memory. Hyper-V and qemu create 1 MiB logs. */
export const MAX_REPLAY_LOG = 64 * MiB
const SIG_LOGE = 0x65676f6c
const SIG_DESC = 0x63736564
const SIG_ZERO = 0x6f72657a
const SIG_DATA = 0x61746164

/** What the readers need from the image file: exact positioned reads within `size`. */
export interface Container {
  readonly path: string
  readonly size: number
  readAt(position: number, length: number, what: string): Promise<Buffer>
  readInto(target: Uint8Array, position: number, what: string): Promise<void>
}

interface Update {
  kind: 'data' | 'zero'
  fileOffset: number
  length: number
  page?: Buffer
}

interface Entry {
  offset: number
  length: number
  tail: number
  sequence: bigint
  flushedFileOffset: number
  lastFileOffset: number
  updates: Update[]
}

function u64(buf: Buffer, at: number): number {
  const v = buf.readBigUInt64LE(at)
  return v > BigInt(Number.MAX_SAFE_INTEGER) ? Number.POSITIVE_INFINITY : Number(v)
}

/** Bytes [at, at+length) of the circular log. */
function circular(log: Buffer, at: number, length: number): Buffer {
  if (at + length <= log.length) return log.subarray(at, at + length)
  return Buffer.concat([log.subarray(at), log.subarray(0, at + length - log.length)])
}

/** Bytes the scan may checksum, as a multiple of the log length (bounds work on hostile logs). */
const SCAN_BUDGET_FACTOR = 8

function parseEntry(log: Buffer, at: number, logGuid: Buffer, fileSize: number, budget: { bytes: number }): Entry | undefined {
  if (log.readUInt32LE(at) !== SIG_LOGE) return undefined
  const length = log.readUInt32LE(at + 8)
  const tail = log.readUInt32LE(at + 12)
  if (length < PAGE || length % PAGE !== 0 || length > log.length || tail % PAGE !== 0 || tail >= log.length) return undefined
  // Cheap checks before the checksum: the log GUID and the descriptor area must fit.
  if (!circular(log, at + 32, 16).equals(logGuid)) return undefined
  const declared = log.readUInt32LE((at + 24) % log.length)
  if (Math.ceil((64 + declared * 32) / PAGE) * PAGE > length) return undefined
  budget.bytes -= length
  if (budget.bytes < 0) return undefined
  const entry = circular(log, at, length)
  if (crc32cWithZeroField(entry, 4) !== entry.readUInt32LE(4)) return undefined
  if (!entry.subarray(32, 48).equals(logGuid)) return undefined
  const sequence = entry.readBigUInt64LE(16)
  const count = entry.readUInt32LE(24)
  const flushedFileOffset = u64(entry, 48)
  const lastFileOffset = u64(entry, 56)
  const descBytes = Math.ceil((64 + count * 32) / PAGE) * PAGE
  if (descBytes > length) return undefined
  const limit = Math.max(fileSize, lastFileOffset)
  const updates: Update[] = []
  let dataAt = descBytes
  for (let i = 0; i < count; i++) {
    const d = 64 + i * 32
    const sig = entry.readUInt32LE(d)
    const fileOffset = u64(entry, d + 16)
    if (entry.readBigUInt64LE(d + 24) !== sequence) return undefined
    if (sig === SIG_ZERO) {
      const zeroLength = u64(entry, d + 8)
      if (fileOffset % PAGE !== 0 || zeroLength % PAGE !== 0 || fileOffset + zeroLength > limit) return undefined
      updates.push({ kind: 'zero', fileOffset, length: zeroLength })
    } else if (sig === SIG_DESC) {
      if (fileOffset % PAGE !== 0 || fileOffset + PAGE > limit || dataAt + PAGE > length) return undefined
      const sector = entry.subarray(dataAt, dataAt + PAGE)
      dataAt += PAGE
      if (sector.readUInt32LE(0) !== SIG_DATA) return undefined
      if (sector.readUInt32LE(4) !== Number(sequence >> 32n) || sector.readUInt32LE(4092) !== Number(sequence & 0xffffffffn)) return undefined
      const page = Buffer.alloc(PAGE)
      entry.copy(page, 0, d + 8, d + 16) // leading bytes
      sector.copy(page, 8, 8, 4092)
      entry.copy(page, 4092, d + 4, d + 8) // trailing bytes
      updates.push({ kind: 'data', fileOffset, length: PAGE, page })
    } else {
      return undefined
    }
  }
  return { offset: at, length, tail, sequence, flushedFileOffset, lastFileOffset, updates }
}

/** The image file with replayed log pages laid over it. Reads past the real end read zeros. */
export class OverlayContainer implements Container {
  constructor(
    private readonly file: ImageFile,
    private readonly pages: Map<number, Buffer>,
    private readonly zeros: [number, number][],
    readonly size: number,
  ) {}

  get path(): string {
    return this.file.path
  }

  async readAt(position: number, length: number, what: string): Promise<Buffer> {
    const buf = Buffer.alloc(length)
    await this.readInto(buf, position, what)
    return buf
  }

  async readInto(target: Uint8Array, position: number, what: string): Promise<void> {
    const end = position + target.length
    if (!Number.isSafeInteger(position) || position < 0 || end > this.size) {
      throw malformed(this.path, `${what} lies past the end of the file (offset ${position}, ${target.length} bytes)`)
    }
    const real = Math.max(0, Math.min(end, this.file.size) - position)
    if (real > 0) await this.file.readInto(target.subarray(0, real), position, what)
    if (real < target.length) zeroFill(target, real)
    for (const [a, b] of this.zeros) {
      const s = Math.max(a, position)
      const e = Math.min(b, end)
      if (s < e) zeroFill(target, s - position, e - position)
    }
    if (this.pages.size === 0) return
    for (let p = Math.floor(position / PAGE) * PAGE; p < end; p += PAGE) {
      const page = this.pages.get(p)
      if (!page) continue
      const s = Math.max(p, position)
      const e = Math.min(p + PAGE, end)
      target.set(page.subarray(s - p, e - p), s - position)
    }
  }
}

/**
 * Replays the log named by `header` into an overlay over `file`. Returns `file` itself when the log
 * holds no active sequence. Throws IMAGE_DIRTY_LOG when the log cannot be replayed in memory and
 * IMAGE_MALFORMED when the log region is impossible.
 */
export async function replayLog(file: ImageFile, header: Header): Promise<Container> {
  const { logOffset, logLength } = header
  if (logLength === 0 || logLength % MiB !== 0 || logOffset % MiB !== 0 || logOffset < MiB || logOffset + logLength > file.size) {
    throw malformed(file.path, `the log region (offset ${logOffset}, ${logLength} bytes) is invalid`)
  }
  if (logLength > MAX_REPLAY_LOG) {
    throw new EngineError(
      'IMAGE_DIRTY_LOG',
      `"${file.path}" was not closed cleanly and its ${logLength}-byte log is too large to replay in memory. ` +
        'Open the disk once in Hyper-V (or mount it in Windows) so the log is applied, then try again.',
    )
  }
  const log = await file.readAt(logOffset, logLength, 'the log')
  const entries = new Map<number, Entry>()
  const budget = { bytes: SCAN_BUDGET_FACTOR * logLength }
  for (let at = 0; at < logLength; at += PAGE) {
    const e = parseEntry(log, at, header.logGuid, file.size, budget)
    if (e) entries.set(at, e)
  }
  if (budget.bytes < 0) {
    throw new EngineError(
      'IMAGE_DIRTY_LOG',
      `"${file.path}" was not closed cleanly and its log is too damaged to replay safely. ` +
        'Open the disk once in Hyper-V (or mount it in Windows) so the log is applied, then try again.',
    )
  }
  const byNewest = [...entries.values()].sort((a, b) => (a.sequence < b.sequence ? 1 : a.sequence > b.sequence ? -1 : 0))
  let active: Entry[] | undefined
  // The newest entry that closes a complete sequence wins; a bounded number of candidates is tried.
  for (const head of byNewest.slice(0, 1024)) {
    const chain: Entry[] = []
    let cur = entries.get(head.tail)
    while (cur && chain.length <= entries.size) {
      const prev = chain[chain.length - 1]
      if (prev && cur.sequence !== prev.sequence + 1n) break
      chain.push(cur)
      if (cur === head) break
      cur = entries.get((cur.offset + cur.length) % logLength)
    }
    if (chain[chain.length - 1] === head) {
      active = chain
      break
    }
  }
  if (!active) return file
  const newest = active[active.length - 1]!
  if (file.size < newest.flushedFileOffset) {
    throw malformed(file.path, `the log says the file was at least ${newest.flushedFileOffset} bytes long, it is ${file.size} (truncated)`)
  }
  const pages = new Map<number, Buffer>()
  const zeros: [number, number][] = []
  for (const entry of active) {
    for (const u of entry.updates) {
      if (u.kind === 'data') pages.set(u.fileOffset, u.page!)
      else {
        for (const p of [...pages.keys()]) if (p >= u.fileOffset && p < u.fileOffset + u.length) pages.delete(p)
        zeros.push([u.fileOffset, u.fileOffset + u.length])
      }
    }
  }
  return new OverlayContainer(file, pages, zeros, Math.max(file.size, newest.lastFileOffset))
}
