/**
 * Benchmark toolkit: deterministic test disks that look like real VM disks, command timing with
 * peak RSS and CPU seconds (GNU time), medians with min–max, markdown tables.
 */
import { createCipheriv, createHash } from 'node:crypto'
import { spawnSync } from 'node:child_process'
import { prng as uint32Prng } from '../helpers/qemu.js'
import { closeSync, existsSync, writeFileSync, ftruncateSync, mkdirSync, openSync, readSync, realpathSync, rmSync, truncateSync, writeSync, fsyncSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { filefragBlockSize, filefragExtent } from '../../electron/engine/formats/raw/index.js'

export const MiB = 1024 * 1024
export const GiB = 1024 * MiB

/** Deterministic PRNG in [0, 1): same seed, same disk, on every machine (the tests' mulberry32). */
export function prng(seed: number): () => number {
  const next = uint32Prng(seed)
  return () => next() / 4294967296
}

/** Incompressible bytes from an AES-CTR keystream keyed by the seed: fast and reproducible. */
export class RandomStream {
  private readonly cipher
  private readonly zeros: Buffer
  constructor(seed: string, chunkBytes: number) {
    const key = createHash('sha256').update(seed).digest()
    this.cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16))
    this.zeros = Buffer.alloc(chunkBytes)
  }
  next(length: number): Buffer {
    return this.cipher.update(this.zeros.subarray(0, length))
  }
}

const WORDS = ('the quick brown fox jumps over lazy dog kernel module driver init systemd journal ' +
  'log error warning info debug usr lib share bin etc var opt home root config service network ' +
  'package install update library function return value static const struct void int char').split(' ')

/** A pool of compressible content (text and structured binary), reused with varying offsets. */
export function compressiblePool(seed: number, bytes: number): Buffer {
  const rnd = prng(seed)
  const out = Buffer.alloc(bytes)
  let pos = 0
  while (pos < bytes) {
    if (rnd() < 0.6) {
      // text: log-like lines
      const line = `${Math.floor(rnd() * 1e9)} ${Array.from({ length: 4 + Math.floor(rnd() * 10) }, () => WORDS[Math.floor(rnd() * WORDS.length)]).join(' ')}\n`
      pos += out.write(line, pos)
    } else {
      // binary: small integers and repeated structures, like executables and tables
      const n = Math.min(256, bytes - pos)
      for (let i = 0; i < n; i++) out[pos + i] = rnd() < 0.5 ? 0 : Math.floor(rnd() * 16)
      pos += n
    }
  }
  return out
}

export type RegionKind = 'random' | 'text' | 'zero' | 'hole'

/**
 * Layout of a mixed disk in runs of `runBytes`: 35 % incompressible, 25 % compressible,
 * 20 % written zeros, 20 % holes (never written). Deterministic for a seed.
 */
export function diskLayout(sizeBytes: number, seed: number, runBytes = 4 * MiB): RegionKind[] {
  const rnd = prng(seed)
  const runs = Math.ceil(sizeBytes / runBytes)
  const kinds: RegionKind[] = []
  for (let i = 0; i < runs; i++) {
    const r = rnd()
    kinds.push(r < 0.35 ? 'random' : r < 0.6 ? 'text' : r < 0.8 ? 'zero' : 'hole')
  }
  return kinds
}

/** Writes a mixed raw disk image (sparse where the layout says hole). */
export function writeMixedDisk(path: string, sizeBytes: number, seed: number): void {
  const runBytes = 4 * MiB
  const layout = diskLayout(sizeBytes, seed, runBytes)
  const random = new RandomStream(`disk-${seed}`, runBytes)
  const pool = compressiblePool(seed, 8 * MiB)
  const zero = Buffer.alloc(runBytes)
  const rnd = prng(seed ^ 0x5eed)
  const fd = openSync(path, 'w')
  try {
    ftruncateSync(fd, sizeBytes)
    layout.forEach((kind, i) => {
      const offset = i * runBytes
      const length = Math.min(runBytes, sizeBytes - offset)
      if (kind === 'hole') return
      let data: Buffer
      if (kind === 'random') data = random.next(length)
      else if (kind === 'zero') data = zero.subarray(0, length)
      else {
        const start = Math.floor(rnd() * (pool.length - runBytes))
        data = Buffer.from(pool.subarray(start, start + length))
        data.writeUInt32LE(i, 0) // every run differs a little: no free dedup of the whole region
      }
      writeSync(fd, data, 0, length, offset)
    })
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
}

/**
 * The data extents of `path` as [offset, end) byte ranges, from the file system's map (FIEMAP,
 * through `filefrag -e`, parsed as the raw format reads it; `-s` syncs the file first).
 * Preallocated extents count as data.
 */
function dataExtents(path: string): Array<[number, number]> {
  const lines = sh('filefrag', ['-s', '-e', path], { LC_ALL: 'C' }).split('\n')
  const unit = lines.map(filefragBlockSize).find((n) => n !== undefined) ?? 0
  if (!(unit > 0)) throw new Error(`filefrag printed no block size for ${path}`)
  const extents: Array<[number, number]> = []
  for (const e of lines.map(filefragExtent)) {
    if (!e) continue
    const [from, to] = [e.first * unit, (e.last + 1) * unit]
    const last = extents.at(-1)
    if (last && last[1] === from) last[1] = to
    else extents.push([from, to])
  }
  return extents
}

/**
 * Copies a disk image keeping its allocation: every data extent is written as it is, zeros
 * included, and holes stay holes. `cp --sparse=always` (and `--sparse=auto` for a sparse source)
 * turns written zeros into holes, which a backup tool that skips holes never reads: the disk under
 * test would hold twice the holes the layout says and half the written zeros. Not synced: every
 * measured command starts after a `sync` (`measure`).
 */
export function copyAllocated(from: string, to: string): void {
  const size = statSync(from).size
  const buf = Buffer.allocUnsafe(8 * MiB)
  const src = openSync(from, 'r')
  const dst = openSync(to, 'w')
  try {
    ftruncateSync(dst, size)
    for (const [start, end] of dataExtents(from)) {
      const stop = Math.min(end, size)
      for (let at = start; at < stop; ) {
        const n = readSync(src, buf, 0, Math.min(buf.length, stop - at), at)
        if (n <= 0) throw new Error(`short read of ${from} at ${at}`)
        writeSync(dst, buf, 0, n, at)
        at += n
      }
    }
  } finally {
    closeSync(src)
    closeSync(dst)
  }
}

/** "A day of work": 1 % of the disk rewritten as scattered 4 KiB writes. Returns bytes changed. */
export function mutateScattered(path: string, fraction: number, seed: number): number {
  const size = statSync(path).size
  const block = 4096
  const count = Math.floor((size * fraction) / block)
  const rnd = prng(seed)
  const random = new RandomStream(`scatter-${seed}`, block)
  const fd = openSync(path, 'r+')
  try {
    for (let i = 0; i < count; i++) {
      const offset = Math.floor(rnd() * (size / block)) * block
      writeSync(fd, random.next(block), 0, block, offset)
    }
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
  return count * block
}

/** "A day of work": one contiguous region of `fraction` of the disk rewritten. Returns bytes changed. */
export function mutateContiguous(path: string, fraction: number, seed: number): number {
  const size = statSync(path).size
  const length = Math.floor((size * fraction) / MiB) * MiB || MiB
  const rnd = prng(seed)
  const offset = Math.floor((rnd() * (size - length)) / MiB) * MiB
  const random = new RandomStream(`contig-${seed}`, MiB)
  const fd = openSync(path, 'r+')
  try {
    for (let done = 0; done < length; done += MiB) writeSync(fd, random.next(MiB), 0, MiB, offset + done)
    fsyncSync(fd)
  } finally {
    closeSync(fd)
  }
  return length
}

export interface Measure {
  seconds: number
  cpuSeconds: number
  peakRssMiB: number
  stdout: string
}

/** Whether this process may empty the kernel's page cache (root: /proc/sys/vm/drop_caches). */
export const canDropPageCache = process.getuid?.() === 0

/**
 * Empties the kernel's page cache (clean pages, dentries, inodes), so the next command reads
 * everything from the disk, as a restore days after its backup does. Root only (`canDropPageCache`).
 */
function dropPageCache(): void {
  writeFileSync('/proc/sys/vm/drop_caches', '3')
}

/**
 * Runs a command under GNU time; throws with its stderr when it fails. Dirty pages are written out
 * first (`sync`, not timed): a command that syncs must not wait for what an earlier one left
 * unflushed (a catalog rebuild took 1.0–1.6 s instead of 0.17 s right after qemu-img's 4 GiB
 * convert, twentieth round of PERFORMANCE.md).
 */
export function measure(cmd: string, args: string[], options: { env?: NodeJS.ProcessEnv; cwd?: string; input?: string; cold?: boolean } = {}): Measure {
  spawnSync('sync')
  if (options.cold) dropPageCache()
  const r = spawnSync('/usr/bin/time', ['-f', '@@TIME %e %U %S %M', cmd, ...args], {
    encoding: 'utf8',
    env: { ...process.env, ...options.env },
    cwd: options.cwd,
    input: options.input,
    maxBuffer: 256 * MiB,
  })
  const line = (r.stderr ?? '').split('\n').reverse().find((l) => l.startsWith('@@TIME '))
  if (r.status !== 0 || !line) {
    throw new Error(`"${cmd} ${args.join(' ')}" failed (${r.status}): ${(r.stderr ?? '').slice(-2000)}`)
  }
  const [, e, u, s, m] = line.split(' ')
  return { seconds: Number(e), cpuSeconds: Number(u) + Number(s), peakRssMiB: Number(m) / 1024, stdout: r.stdout }
}

/**
 * A disk image holding a real ext4 file system, `sizeBytes` large, made by `mkfs.ext4 -d` from real
 * files: `sources` taken whole and in order while their bytes stay within `budgetBytes` (folders
 * that do not exist or would overflow it are passed over). The files are hard-linked into a staging
 * folder beside `path` (copied where that fails). Returns the folders taken and their bytes.
 */
export function writeRealImage(path: string, sizeBytes: number, sources: string[], budgetBytes: number): { sources: string[]; bytes: number } {
  const stage = `${path}.stage`
  rmSync(stage, { recursive: true, force: true })
  mkdirSync(stage)
  const taken: string[] = []
  let bytes = 0
  try {
    for (const source of sources) {
      if (!existsSync(source)) continue
      const dir = realpathSync(source) // a linked folder (node_modules in a worktree) is taken as its target
      const size = duBytes(dir)
      if (bytes + size > budgetBytes) continue
      const into = join(stage, dir.replace(/^\/+/, '').replace(/\//g, '_'))
      if (spawnSync('cp', ['-al', dir, into]).status !== 0) {
        rmSync(into, { recursive: true, force: true })
        sh('cp', ['-a', dir, into])
      }
      taken.push(source)
      bytes += size
    }
    rmSync(path, { force: true })
    closeSync(openSync(path, 'w'))
    truncateSync(path, sizeBytes)
    sh('mkfs.ext4', ['-q', '-F', '-d', stage, path])
  } finally {
    rmSync(stage, { recursive: true, force: true })
  }
  return { sources: taken, bytes }
}

export function sh(cmd: string, args: string[], env?: NodeJS.ProcessEnv): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', env: { ...process.env, ...env }, maxBuffer: 256 * MiB })
  if (r.status !== 0) throw new Error(`"${cmd} ${args.join(' ')}" failed (${r.status}): ${r.stderr}`)
  return r.stdout
}

export function duBytes(path: string): number {
  return Number(sh('du', ['-sb', path]).split(/\s+/)[0])
}

/** Bytes actually allocated on disk (st_blocks), not the apparent size. */
export function allocatedBytes(path: string): number {
  return Number(sh('du', ['-s', '--block-size=1', path]).split(/\s+/)[0])
}

export interface Stat {
  median: number
  min: number
  max: number
}

export function stat(values: number[]): Stat {
  const s = [...values].sort((a, b) => a - b)
  const mid = Math.floor(s.length / 2)
  const median = s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2
  return { median, min: s[0]!, max: s.at(-1)! }
}

export function fmt(n: number, digits = 0): string {
  return n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })
}

export function table(header: string[], rows: string[][]): string {
  const line = (cells: string[]) => `| ${cells.join(' | ')} |`
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n')
}
