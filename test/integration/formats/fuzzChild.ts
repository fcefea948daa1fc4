/**
 * Child process of fuzz.test.ts (run with `node --import tsx`): mutates real images of every format
 * deterministically and runs each mutant through openImage + info + extents + reads, reporting every
 * case to the parent over IPC. The parent watches for hangs (it kills and restarts this process)
 * and for memory: this process samples its own RSS and reports the peak.
 *
 * Messages in: { kind: 'run', seeds, deadlineMs, firstCase, stride, baseSeed, caseTimeoutMs, rssLimitBytes, only? }
 * Messages out: 'ready', 'start' {i}, 'end' {i, seed, outcome, code?, detail?}, 'done' {peakRss, next}.
 */
import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { basename, dirname, join } from 'node:path'
import { isEngineError } from '../../../electron/engine/errors.js'
import { openImage } from '../../../electron/engine/formats/index.js'
import { formatModule } from '../../../electron/engine/formats/open.js'
import type { DiskImage, ImageFormat } from '../../../electron/engine/formats/types.js'

export interface FuzzSeed {
  /** Unique name, e.g. 'qcow2-v3'. */
  name: string
  format: ImageFormat
  path: string
  /** Byte value the data writes used: other non-zero bytes are metadata (mutation targets). */
  dataByte: number
}
export interface RunMessage {
  kind: 'run'
  seeds: FuzzSeed[]
  deadlineMs: number
  firstCase: number
  /** Cases run are firstCase, firstCase + stride... (parallel children share the sequence). */
  stride: number
  baseSeed: number
  caseTimeoutMs: number
  rssLimitBytes: number
  /** Reproduce one case: run only this case number. */
  only?: number
}
export type Outcome = 'accepted' | 'rejected' | 'failure' | 'timeout' | 'memory'
export type ChildOut =
  | { kind: 'ready' }
  | { kind: 'start'; i: number; seed: string; format: ImageFormat; caseSeed: number }
  | { kind: 'end'; i: number; seed: string; format: ImageFormat; caseSeed: number; outcome: Outcome; ms: number; code?: string; detail?: string; mutant?: string }
  | { kind: 'done'; peakRss: number; next: number; skipped: string[] }

/** Error codes a damaged image may legitimately produce. */
export const IMAGE_CODES: ReadonlySet<string> = new Set([
  'IMAGE_MALFORMED',
  'IMAGE_UNSUPPORTED',
  'IMAGE_ENCRYPTED',
  'IMAGE_BACKING_MISSING',
  'IMAGE_BACKING_LOOP',
  'IMAGE_BACKING_MISMATCH',
  'IMAGE_DIRTY_LOG',
  'NOT_FOUND',
])

/** xorshift32: small, fast, deterministic. */
export function prng(seed: number): () => number {
  let x = seed >>> 0 || 0x9e3779b9
  return () => {
    x ^= x << 13
    x >>>= 0
    x ^= x >>> 17
    x ^= x << 5
    x >>>= 0
    return x
  }
}
/** The seed of case `i` (spread so neighbouring cases differ in every bit). */
export function caseSeedOf(baseSeed: number, i: number): number {
  let h = (baseSeed ^ Math.imul(i + 1, 0x9e3779b1)) >>> 0
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b) >>> 0
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35) >>> 0
  return (h ^ (h >>> 16)) >>> 0
}

interface SeedData {
  seed: FuzzSeed
  bytes: Buffer
  /** Offsets of metadata bytes (non-zero, not the data pattern), sampled. */
  meta: number[]
  mutantPath: string
}

const SPECIAL_32 = [0, 1, 2, 0x7f, 0x80, 0xff, 0x100, 0x200, 0x1000, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff]

/**
 * One deterministic mutant of `data`: 1 to 4 edits among bit flips, byte sets, special 16/32/64-bit
 * values (both endians) written over metadata, truncation or extension, block copies inside the
 * file (splices that make tables overlap or repeat) and splices from another image of the format.
 */
export function mutate(data: SeedData, rnd: () => number, others: Buffer[]): Buffer {
  let buf = Buffer.from(data.bytes)
  const pick = (n: number): number => (n <= 0 ? 0 : rnd() % n)
  const target = (): number => {
    const r = rnd() % 100
    if (r < 60 && data.meta.length > 0) return data.meta[pick(data.meta.length)] as number
    if (r < 75) return pick(Math.min(buf.length, 4096))
    if (r < 85) return Math.max(0, buf.length - 1 - pick(Math.min(buf.length, 1536)))
    return pick(buf.length)
  }
  const edits = 1 + pick(4)
  for (let e = 0; e < edits && buf.length > 0; e++) {
    const op = rnd() % 100
    if (op < 25) {
      const flips = 1 + pick(8)
      for (let k = 0; k < flips; k++) {
        const at = target()
        if (at < buf.length) buf[at] = (buf[at] as number) ^ (1 << pick(8))
      }
    } else if (op < 35) {
      const at = target()
      if (at < buf.length) buf[at] = [0, 0xff, 0x7f, 0x80, 1][pick(5)] as number
    } else if (op < 65) {
      const width = [2, 4, 4, 8, 8][pick(5)] as number
      const at = target() & ~(width - 1)
      if (at + width > buf.length) continue
      const le = rnd() % 2 === 0
      const special = SPECIAL_32[pick(SPECIAL_32.length)] as number
      const choice = rnd() % 6
      const fileSize = buf.length
      if (width === 2) {
        const v = (choice === 0 ? rnd() : special) & 0xffff
        if (le) buf.writeUInt16LE(v, at)
        else buf.writeUInt16BE(v, at)
      } else if (width === 4) {
        const v = choice === 0 ? rnd() : choice === 1 ? fileSize >>> 0 : choice === 2 ? (fileSize / 512) >>> 0 : special
        if (le) buf.writeUInt32LE(v >>> 0, at)
        else buf.writeUInt32BE(v >>> 0, at)
      } else {
        const values = [
          0n,
          BigInt(fileSize),
          BigInt(fileSize) - 1n,
          BigInt(fileSize) * 2n,
          1n << 40n,
          1n << 53n,
          (1n << 63n) - 1n,
          0xffffffffffffffffn,
          BigInt(special),
          (BigInt(rnd()) << 32n) | BigInt(rnd()),
        ]
        const v = values[pick(values.length)] as bigint
        if (le) buf.writeBigUInt64LE(v, at)
        else buf.writeBigUInt64BE(v, at)
      }
    } else if (op < 75) {
      // Truncate (often inside metadata) or extend with garbage.
      if (rnd() % 4 === 0) {
        const extra = Buffer.alloc(1 + pick(4096))
        for (let k = 0; k < extra.length; k++) extra[k] = rnd() & 0xff
        buf = Buffer.concat([buf, extra])
      } else {
        const at = rnd() % 2 === 0 ? target() : pick(buf.length)
        buf = buf.subarray(0, at)
      }
    } else if (op < 90) {
      // Copy a block elsewhere in the file: duplicated/overlapping tables, headers over tables.
      const len = [4, 8, 16, 64, 512, 4096][pick(6)] as number
      const from = target()
      const to = target()
      if (from + len <= buf.length && to + len <= buf.length) buf.copyWithin(to, from, from + len)
    } else {
      // Splice in a block of another image of the same format.
      const other = others[pick(others.length)]
      if (!other || other.length === 0) continue
      const len = Math.min(other.length, [512, 4096, 65536][pick(3)] as number)
      const from = pick(other.length - len + 1)
      const to = target()
      if (to + len <= buf.length) other.copy(buf, to, from, from + len)
    }
  }
  return buf
}

function metaOffsets(bytes: Buffer, dataByte: number, rnd: () => number): number[] {
  const all: number[] = []
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i] as number
    if (b !== 0 && b !== dataByte) all.push(i)
  }
  if (all.length <= 20000) return all
  const sample: number[] = []
  for (let k = 0; k < 20000; k++) sample.push(all[rnd() % all.length] as number)
  return sample
}

async function withTimeout<T>(p: Promise<T>, ms: number): Promise<T | 'timeout'> {
  let timer: NodeJS.Timeout | undefined
  const t = new Promise<'timeout'>((resolve) => {
    timer = setTimeout(() => resolve('timeout'), ms)
  })
  try {
    return await Promise.race([p, t])
  } finally {
    clearTimeout(timer)
  }
}

/** openImage (probing or forced format) + info + every extent + a few reads, then close. */
async function exercise(path: string, format: ImageFormat | undefined, rnd: () => number): Promise<void> {
  const img: DiskImage = await openImage(path, format === undefined ? {} : { format })
  try {
    await img.info()
    let count = 0
    let last = -1
    for await (const e of img.extents()) {
      if (e.offset < last || e.length <= 0 || e.offset + e.length > img.virtualSize) {
        throw new Error(`extents out of order or out of range: ${JSON.stringify(e)} after ${last}, size ${img.virtualSize}`)
      }
      last = e.offset + e.length
      if (++count > 200_000) break
    }
    const size = img.virtualSize
    const buf = Buffer.alloc(256 * 1024)
    const reads = [0, size - Math.min(size, buf.length), rnd() % Math.max(1, size), rnd() % Math.max(1, size)]
    for (const at of reads) {
      const len = Math.min(buf.length, size - at)
      if (len <= 0) continue
      await img.read(buf.subarray(0, len), at)
    }
  } finally {
    await img.close()
  }
}

let peakRss = 0
function sampleRss(): number {
  const rss = process.memoryUsage.rss()
  if (rss > peakRss) peakRss = rss
  return rss
}

async function runAll(msg: RunMessage): Promise<void> {
  const send = (m: ChildOut): void => {
    process.send?.(m)
  }
  sampleRss()
  const rndInit = prng(msg.baseSeed)
  const skipped: string[] = []
  const seeds: SeedData[] = []
  for (const seed of msg.seeds) {
    if (!formatModule(seed.format)) {
      skipped.push(seed.name)
      continue
    }
    const bytes = await readFile(seed.path)
    const ext = basename(seed.path).split('.').pop() ?? 'img'
    seeds.push({ seed, bytes, meta: metaOffsets(bytes, seed.dataByte, rndInit), mutantPath: join(dirname(seed.path), `mutant-${process.pid}.${ext}`) })
  }
  const byFormat = new Map<ImageFormat, Buffer[]>()
  for (const s of seeds) byFormat.set(s.seed.format, [...(byFormat.get(s.seed.format) ?? []), s.bytes])
  const sampler = setInterval(sampleRss, 20)
  sampler.unref()
  let i = msg.firstCase
  while (seeds.length > 0 && (msg.only === undefined ? Date.now() < msg.deadlineMs : i === msg.only)) {
    const caseSeed = caseSeedOf(msg.baseSeed, i)
    const rnd = prng(caseSeed)
    const data = seeds[i % seeds.length] as SeedData
    const mutant = mutate(data, rnd, byFormat.get(data.seed.format) ?? [])
    await writeFile(data.mutantPath, mutant)
    // Mostly the format's own parser; sometimes the whole path through content detection.
    const forced = rnd() % 4 === 0 ? undefined : data.seed.format
    send({ kind: 'start', i, seed: data.seed.name, format: data.seed.format, caseSeed })
    let outcome: Outcome
    let code: string | undefined
    let detail: string | undefined
    const t0 = performance.now()
    try {
      const result = await withTimeout(exercise(data.mutantPath, forced, rnd), msg.caseTimeoutMs)
      outcome = result === 'timeout' ? 'timeout' : 'accepted'
    } catch (err) {
      if (isEngineError(err) && IMAGE_CODES.has(err.code)) {
        outcome = 'rejected'
        code = err.code
      } else {
        outcome = 'failure'
        code = isEngineError(err) ? err.code : (err as Error)?.name ?? typeof err
        detail = ((err as Error)?.stack ?? String(err)).split('\n').slice(0, 6).join('\n')
      }
    }
    if (sampleRss() > msg.rssLimitBytes && outcome !== 'failure') {
      outcome = 'memory'
      detail = `RSS ${Math.round(process.memoryUsage.rss() / 1048576)} MiB after this case`
    }
    let kept: string | undefined
    if (outcome === 'failure' || outcome === 'timeout' || outcome === 'memory') {
      const findings = join(tmpdir(), 'tresor-fuzz-findings')
      await mkdir(findings, { recursive: true })
      kept = join(findings, `${data.seed.name}-case${i}-seed${caseSeed}.bin`)
      await copyFile(data.mutantPath, kept)
    }
    send({
      kind: 'end',
      i,
      seed: data.seed.name,
      format: data.seed.format,
      caseSeed,
      outcome,
      ms: performance.now() - t0,
      ...(code === undefined ? {} : { code }),
      ...(detail === undefined ? {} : { detail }),
      ...(kept === undefined ? {} : { mutant: kept }),
    })
    i += msg.stride
    // A case that timed out may still be running: start afresh in a new process.
    if (outcome === 'timeout') break
  }
  clearInterval(sampler)
  await new Promise<void>((resolve) => {
    if (!process.send) resolve()
    else process.send({ kind: 'done', peakRss, next: i, skipped } satisfies ChildOut, () => resolve())
  })
}

process.on('message', (msg: RunMessage) => {
  if (msg.kind !== 'run') return
  runAll(msg).then(
    () => process.exit(0),
    (err: unknown) => {
      console.error('fuzz child failed:', err)
      process.exit(3)
    },
  )
})
process.send?.({ kind: 'ready' } satisfies ChildOut)
