/**
 * Oracle helpers shared by the format tests: run qemu-img / qemu-io (the reference implementation),
 * build deterministic images, hash guest views, compare.
 *
 * Everything is deterministic: data comes from a seeded PRNG (`prng`), never from Math.random.
 * Always pass the format (`-f`) to qemu tools: probing would read a fixed VHD as raw.
 */
import { execFile } from 'node:child_process'
import { createHash } from 'node:crypto'
import { createReadStream, existsSync } from 'node:fs'
import { mkdtemp, rm, writeFile, open } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import type { DiskImage, Extent } from '../../electron/engine/formats/types.js'

const execFileP = promisify(execFile)

/** qemu's name of a format (`vhd` is `vpc` to qemu). */
export type QemuFormat = 'raw' | 'qcow2' | 'vpc' | 'vhdx' | 'vmdk'

/** Fails (never skips) when qemu-img or qemu-io is missing. */
export function requireQemu(): void {
  for (const tool of ['qemu-img', 'qemu-io']) {
    const found = (process.env.PATH ?? '').split(':').some((dir) => existsSync(join(dir, tool)))
    if (!found) throw new Error(`${tool} is required for the format oracle tests (Debian: apt-get install qemu-utils)`)
  }
}

export interface RunResult {
  stdout: string
  stderr: string
  code: number
}

/** Runs a tool; resolves with its exit code instead of throwing on a non-zero exit. */
export async function run(cmd: string, args: string[], options: { timeoutMs?: number } = {}): Promise<RunResult> {
  try {
    const { stdout, stderr } = await execFileP(cmd, args, { maxBuffer: 64 * 1024 * 1024, timeout: options.timeoutMs ?? 120_000 })
    return { stdout, stderr, code: 0 }
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string; code?: number | string }
    if (typeof e.code !== 'number') throw err
    return { stdout: e.stdout ?? '', stderr: e.stderr ?? '', code: e.code }
  }
}

/** Runs qemu-img and throws with its stderr on failure. */
export async function qemuImg(...args: string[]): Promise<string> {
  const r = await run('qemu-img', args)
  if (r.code !== 0) throw new Error(`qemu-img ${args.join(' ')} failed (${r.code}): ${r.stderr}`)
  return r.stdout
}

/** Runs qemu-io commands (`-c` each) on `file` opened as `format`; throws on failure. */
export async function qemuIo(file: string, format: QemuFormat, commands: string[]): Promise<string> {
  if (commands.length === 0) return ''
  const args = ['-f', format]
  for (const c of commands) args.push('-c', c)
  args.push(file)
  const r = await run('qemu-io', args)
  // qemu-io exits 0 even when a command fails; its messages say so.
  if (r.code !== 0 || /failed|error|Error/.test(r.stdout + r.stderr)) {
    throw new Error(`qemu-io ${commands.join(' ; ')} on ${file} failed: ${r.stdout}${r.stderr}`)
  }
  return r.stdout
}

/** A temporary folder; `cleanup()` removes it. */
export async function tempDir(prefix = 'tresor-fmt-'): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix))
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) }
}

/** A small, fast, seeded PRNG (mulberry32). */
export function prng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return (t ^ (t >>> 14)) >>> 0
  }
}

/** `length` deterministic pseudo-random bytes for `seed`. */
export function randomBytes(seed: number, length: number): Buffer {
  const next = prng(seed)
  const buf = Buffer.allocUnsafe(length)
  let i = 0
  for (; i + 4 <= length; i += 4) buf.writeUInt32LE(next(), i)
  for (; i < length; i++) buf[i] = next() & 0xff
  return buf
}

/** Bytes that compress well but are not all zero (text-like, seeded). */
export function compressibleBytes(seed: number, length: number): Buffer {
  const next = prng(seed)
  const words = ['tresor ', 'backup ', 'disk ', 'cluster ', 'qcow2 ', 'zero ', 'block ', '\n']
  const buf = Buffer.allocUnsafe(length)
  let i = 0
  while (i < length) i += buf.write(words[next() % words.length] as string, i)
  return buf
}

/** One guest write applied with qemu-io. */
export type IoOp =
  | { kind: 'random'; offset: number; length: number; seed: number }
  | { kind: 'pattern'; offset: number; length: number; byte: number }
  | { kind: 'compressed'; offset: number; length: number; seed: number; compressible?: boolean }
  | { kind: 'zero'; offset: number; length: number; unmap?: boolean }
  | { kind: 'discard'; offset: number; length: number }

/** Applies `ops` in order to `file` with qemu-io (random data goes through files in `scratchDir`). */
export async function applyOps(file: string, format: QemuFormat, ops: IoOp[], scratchDir: string): Promise<void> {
  const commands: string[] = []
  let n = 0
  for (const op of ops) {
    switch (op.kind) {
      case 'random':
      case 'compressed': {
        const src = join(scratchDir, `src-${n++}.bin`)
        const data = op.kind === 'compressed' && op.compressible ? compressibleBytes(op.seed, op.length) : randomBytes(op.seed, op.length)
        await writeFile(src, data)
        commands.push(`write ${op.kind === 'compressed' ? '-c ' : ''}-q -s ${src} ${op.offset} ${op.length}`)
        break
      }
      case 'pattern':
        commands.push(`write -q -P ${op.byte} ${op.offset} ${op.length}`)
        break
      case 'zero':
        commands.push(`write -q -z ${op.unmap ? '-u ' : ''}${op.offset} ${op.length}`)
        break
      case 'discard':
        commands.push(`discard -q ${op.offset} ${op.length}`)
        break
    }
  }
  // Keep command lines reasonably short.
  for (let i = 0; i < commands.length; i += 40) await qemuIo(file, format, commands.slice(i, i + 40))
}

/**
 * Deterministic mixed writes over a disk of `virtualSize`: random and pattern data, zero writes,
 * discards, and always the first and the last sector. Offsets are 512-byte aligned, lengths vary.
 */
export function mixedOps(seed: number, virtualSize: number, count: number, options: { discard?: boolean; zero?: boolean } = {}): IoOp[] {
  const next = prng(seed)
  const sectors = Math.floor(virtualSize / 512)
  const ops: IoOp[] = [
    { kind: 'random', offset: 0, length: 4096 > virtualSize ? 512 : 4096, seed: seed + 1 },
    { kind: 'pattern', offset: (sectors - 1) * 512, length: 512, byte: 0x5a },
  ]
  for (let i = 0; i < count; i++) {
    const maxLen = Math.min(sectors, 512) // up to 256 KiB
    const lenSectors = 1 + (next() % maxLen)
    const start = next() % Math.max(1, sectors - lenSectors + 1)
    const offset = start * 512
    const length = lenSectors * 512
    const pick = next() % 10
    if (pick < 5) ops.push({ kind: 'random', offset, length, seed: next() })
    else if (pick < 7) ops.push({ kind: 'pattern', offset, length, byte: 1 + (next() % 255) })
    else if (pick < 9 && options.zero !== false) ops.push({ kind: 'zero', offset, length, unmap: (next() & 1) === 1 })
    else if (options.discard !== false) ops.push({ kind: 'discard', offset, length })
  }
  return ops
}

/** Creates an image with qemu-img create. */
export async function createImage(file: string, format: QemuFormat, size: number, opts: string[] = [], backing?: { file: string; format: QemuFormat }): Promise<void> {
  const args = ['create', '-q', '-f', format]
  if (opts.length > 0) args.push('-o', opts.join(','))
  if (backing) args.push('-b', backing.file, '-F', backing.format)
  args.push(file, String(size))
  await qemuImg(...args)
}

/** qemu's guest view of `file` as a raw file at `out`. */
export async function qemuToRaw(file: string, format: QemuFormat, out: string): Promise<void> {
  await qemuImg('convert', '-f', format, '-O', 'raw', file, out)
}

/** SHA-256 (hex) of a file's bytes. */
export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256')
  for await (const chunk of createReadStream(path, { highWaterMark: 4 * 1024 * 1024 })) h.update(chunk as Buffer)
  return h.digest('hex')
}

/** SHA-256 of qemu's guest view of `file` (via `qemu-img convert -O raw`). */
export async function qemuGuestSha256(file: string, format: QemuFormat, scratchDir: string): Promise<string> {
  const out = join(scratchDir, `oracle-${Date.now()}-${Math.random().toString(16).slice(2)}.raw`)
  try {
    await qemuToRaw(file, format, out)
    return await sha256File(out)
  } finally {
    await rm(out, { force: true })
  }
}

/** SHA-256 of our guest view of `image`, read in chunks of `chunk` bytes. */
export async function ourGuestSha256(image: DiskImage, chunk = 1024 * 1024): Promise<string> {
  const h = createHash('sha256')
  const buf = Buffer.allocUnsafe(chunk)
  for (let pos = 0; pos < image.virtualSize; pos += chunk) {
    const n = Math.min(chunk, image.virtualSize - pos)
    await image.read(buf.subarray(0, n), pos)
    h.update(buf.subarray(0, n))
  }
  return h.digest('hex')
}

/** Collects all extents, checking the contract's shape (ordered, non-overlapping, merged, clipped). */
export async function collectExtents(image: DiskImage): Promise<Extent[]> {
  const out: Extent[] = []
  for await (const e of image.extents()) {
    const prev = out[out.length - 1]
    if (e.length <= 0) throw new Error(`empty extent at ${e.offset}`)
    if (prev && prev.offset + prev.length > e.offset) throw new Error(`extents overlap or go backwards at ${e.offset}`)
    if (prev && prev.offset + prev.length === e.offset && prev.zero === e.zero) throw new Error(`adjacent extents not merged at ${e.offset}`)
    if (e.offset + e.length > image.virtualSize) throw new Error(`extent past virtual size at ${e.offset}`)
    out.push(e)
  }
  return out
}

/**
 * Checks against qemu's raw guest view (`rawPath`) that every non-zero byte lies in a non-zero
 * extent of `extents` (zero extents and gaps must read as zeros). Returns the first offending
 * offset, or -1 when the extents never omit data.
 */
export async function firstOmittedByte(extents: Extent[], rawPath: string, virtualSize: number): Promise<number> {
  const fh = await open(rawPath, 'r')
  try {
    const buf = Buffer.allocUnsafe(1024 * 1024)
    let pos = 0
    const gaps: Array<[number, number]> = []
    for (const e of extents) {
      if (e.offset > pos) gaps.push([pos, e.offset])
      if (e.zero) gaps.push([e.offset, e.offset + e.length])
      pos = e.offset + e.length
    }
    if (pos < virtualSize) gaps.push([pos, virtualSize])
    for (const [from, to] of gaps) {
      for (let p = from; p < to; p += buf.length) {
        const n = Math.min(buf.length, to - p)
        const { bytesRead } = await fh.read(buf, 0, n, p)
        for (let i = 0; i < bytesRead; i++) if (buf[i] !== 0) return p + i
      }
    }
    return -1
  } finally {
    await fh.close()
  }
}

export interface QemuCheck {
  code: number
  corruptions: number
  leaks: number
  raw: unknown
}

/** `qemu-img check` as JSON (exit 0 clean, 2 corruptions, 3 leaks). */
export async function qemuCheck(file: string, format: QemuFormat): Promise<QemuCheck> {
  const r = await run('qemu-img', ['check', '-f', format, '--output=json', file])
  let raw: Record<string, unknown> = {}
  try {
    raw = JSON.parse(r.stdout) as Record<string, unknown>
  } catch {
    raw = { stdout: r.stdout, stderr: r.stderr }
  }
  return { code: r.code, corruptions: Number(raw.corruptions ?? 0), leaks: Number(raw.leaks ?? 0), raw }
}

/** `qemu-img compare` of two images (each with its format); true when their guest views match. */
export async function qemuCompare(a: string, formatA: QemuFormat, b: string, formatB: QemuFormat): Promise<{ same: boolean; output: string }> {
  const r = await run('qemu-img', ['compare', '-f', formatA, '-F', formatB, a, b])
  return { same: r.code === 0, output: r.stdout + r.stderr }
}

/** `qemu-img info --output=json`. */
export async function qemuInfo(file: string, format: QemuFormat): Promise<Record<string, unknown>> {
  return JSON.parse(await qemuImg('info', '-f', format, '--output=json', file)) as Record<string, unknown>
}

export interface OracleComparison {
  ourSha256: string
  qemuSha256: string
  ourVirtualSize: number
  qemuVirtualSize: number
  /** First byte that reads non-zero but lies outside our non-zero extents; -1 when none. */
  firstOmitted: number
  extents: Extent[]
}

/**
 * Opens `file` with our reader (content detection, or `format` when given) and compares it with
 * qemu's guest view: hashes (read in odd-sized chunks to exercise unaligned reads), virtual
 * sizes, and that our extents never omit data.
 */
export async function compareWithQemu(
  file: string,
  qemuFormat: QemuFormat,
  scratchDir: string,
  options: { chunk?: number; format?: import('../../electron/engine/formats/types.js').ImageFormat; blockingReads?: boolean } = {},
): Promise<OracleComparison> {
  const { openImage } = await import('../../electron/engine/formats/index.js')
  const raw = join(scratchDir, `oracle-${Date.now()}-${Math.random().toString(16).slice(2)}.raw`)
  await qemuToRaw(file, qemuFormat, raw)
  const image = await openImage(file, {
    ...(options.format === undefined ? {} : { format: options.format }),
    ...(options.blockingReads === undefined ? {} : { blockingReads: options.blockingReads }),
  })
  try {
    const info = await qemuInfo(file, qemuFormat)
    const extents = await collectExtents(image)
    return {
      ourSha256: await ourGuestSha256(image, options.chunk ?? 1_000_003),
      qemuSha256: await sha256File(raw),
      ourVirtualSize: image.virtualSize,
      qemuVirtualSize: Number(info['virtual-size']),
      firstOmitted: await firstOmittedByte(extents, raw, image.virtualSize),
      extents,
    }
  } finally {
    await image.close()
    await rm(raw, { force: true })
  }
}
