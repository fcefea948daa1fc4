/**
 * Benchmark: qcow2 → raw conversion, ours against `qemu-img convert -O raw`, measured in the same run.
 *
 *   node --import tsx test/bench/convert.ts            # 4 GiB image
 *   BENCH_SIZE_MIB=512 node --import tsx test/bench/convert.ts
 *   BENCH_RUNS=3 (default), BENCH_COMPRESSED=1 (make the qcow2 with compressed clusters)
 *
 * The image has mixed content in 256 KiB pieces: 35% random, 25% compressible text, 40% holes.
 * It is built as a sparse raw file, then turned into qcow2 by qemu-img (qemu's own layout).
 * Runs alternate ours / qemu, the median of BENCH_RUNS is reported. Ours runs in a child process
 * so its peak RSS (process.resourceUsage().maxRSS) is its own; its time is that of `convertImage`
 * alone (open to fsync), while qemu-img is timed as a whole process. So a further line times the
 * whole CLI process, `bin/tresor.js image convert` run as a program (startup included: the dist/ build when it is
 * newer than the format sources, else the sources through tsx, which is slower to start). Also reported: the raw reader's
 * two ways to find holes (FIEMAP through `filefrag`, zero-granule scan) on the sparse raw file.
 */
import { spawn } from 'node:child_process'
import { createCipheriv } from 'node:crypto'
import { existsSync, statSync } from 'node:fs'
import { mkdtemp, open, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const MiB = 1024 * 1024
const here = fileURLToPath(import.meta.url)
const root = join(dirname(here), '..', '..')

/** True when dist/ holds a build of the conversion code at least as new as its sources. */
function distIsFresh(): boolean {
  const pairs = ['index', 'raw/index', 'qcow2/reader'].map((m) => [
    join(root, 'electron', 'engine', 'formats', `${m}.ts`),
    join(root, 'dist', 'electron', 'engine', 'formats', `${m}.js`),
  ])
  return pairs.every(([src, out]) => existsSync(out as string) && statSync(out as string).mtimeMs >= statSync(src as string).mtimeMs)
}

function run(cmd: string, args: string[], env?: Record<string, string>): Promise<{ code: number; stdout: string; stderr: string; seconds: number }> {
  return new Promise((resolvePromise, reject) => {
    const started = process.hrtime.bigint()
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    child.on('error', reject)
    child.on('close', (code) => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9
      resolvePromise({ code: code ?? -1, stdout, stderr, seconds })
    })
  })
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)] as number
}

/** Deterministic fast pseudo-random bytes: AES-128-CTR over zeros with a fixed key. */
function randomStream(): (n: number) => Buffer {
  const cipher = createCipheriv('aes-128-ctr', Buffer.alloc(16, 7), Buffer.alloc(16, 0))
  return (n) => cipher.update(Buffer.alloc(n))
}

function compressible(n: number, seed: number): Buffer {
  const words = ['tresor ', 'backup ', 'disk ', 'cluster ', 'qcow2 ', 'zero ', 'block ', 'sector\n']
  const b = Buffer.allocUnsafe(n)
  let x = seed >>> 0
  let i = 0
  while (i < n) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0
    i += b.write(words[(x >>> 16) % words.length] as string, i)
  }
  return b
}

async function makeSource(dir: string, sizeMiB: number): Promise<{ raw: string; qcow2: string }> {
  const raw = join(dir, 'source.raw')
  const piece = 256 * 1024
  const fh = await open(raw, 'w')
  const rnd = randomStream()
  let x = 12345
  const text = compressible(piece, 99)
  try {
    await fh.truncate(sizeMiB * MiB)
    for (let off = 0; off < sizeMiB * MiB; off += piece) {
      x = (Math.imul(x, 1664525) + 1013904223) >>> 0
      const r = (x >>> 8) / 2 ** 24
      if (r < 0.35) await fh.write(rnd(piece), 0, piece, off)
      else if (r < 0.6) await fh.write(text, 0, piece, off)
    }
  } finally {
    await fh.close()
  }
  const qcow2 = join(dir, 'source.qcow2')
  const args = ['convert', '-f', 'raw', '-O', 'qcow2']
  if (process.env.BENCH_COMPRESSED === '1') args.push('-c')
  const r = await run('qemu-img', [...args, raw, qcow2])
  if (r.code !== 0) throw new Error(r.stderr)
  return { raw, qcow2 }
}

async function childConvert(input: string, output: string): Promise<void> {
  const { convertImage } = await import('../../electron/engine/formats/index.js')
  const started = process.hrtime.bigint()
  const cpu0 = process.cpuUsage()
  const { bytesWritten } = await convertImage(input, output, 'raw', { overwrite: true })
  const seconds = Number(process.hrtime.bigint() - started) / 1e9
  const cpu = process.cpuUsage(cpu0)
  const cpuSeconds = (cpu.user + cpu.system) / 1e6
  process.stdout.write(JSON.stringify({ seconds, cpuSeconds, bytesWritten, maxRssKiB: process.resourceUsage().maxRSS }) + '\n')
}

async function childScan(input: string): Promise<void> {
  const { openImage } = await import('../../electron/engine/formats/index.js')
  const image = await openImage(input, { format: 'raw' })
  const started = process.hrtime.bigint()
  let data = 0
  let extents = 0
  for await (const e of image.extents()) {
    extents++
    if (!e.zero) data += e.length
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9
  await image.close()
  process.stdout.write(JSON.stringify({ seconds, data, extents }) + '\n')
}

async function main(): Promise<void> {
  const [mode, a, b] = process.argv.slice(2)
  if (mode === '--child-convert') return childConvert(a as string, b as string)
  if (mode === '--child-scan') return childScan(a as string)

  const sizeMiB = Number(process.env.BENCH_SIZE_MIB ?? 4096)
  const runs = Number(process.env.BENCH_RUNS ?? 3)
  const dir = await mkdtemp(join(tmpdir(), 'tresor-bench-'))
  try {
    console.log(`bench convert: ${sizeMiB} MiB qcow2 (35% random, 25% compressible, 40% holes${process.env.BENCH_COMPRESSED === '1' ? ', compressed clusters' : ''}), ${runs} runs each, alternating`)
    const t0 = Date.now()
    const { raw, qcow2 } = await makeSource(dir, sizeMiB)
    console.log(`  source made in ${((Date.now() - t0) / 1000).toFixed(1)} s: qcow2 ${((await stat(qcow2)).size / MiB).toFixed(0)} MiB`)
    // Warm the page cache so both sides read from memory alike.
    await run('sh', ['-c', 'cat "$1" > /dev/null', 'sh', qcow2])
    const ours: number[] = []
    const theirs: number[] = []
    const oursCpu: number[] = []
    const theirsCpu: number[] = []
    const flushed: number[] = []
    const cli: number[] = []
    const fromDist = distIsFresh()
    const outCli = join(dir, 'cli.raw')
    let rss = 0
    const outOurs = join(dir, 'ours.raw')
    const outQemu = join(dir, 'qemu.raw')
    for (let i = 0; i < runs; i++) {
      await rm(outOurs, { force: true })
      const r = await run(process.execPath, ['--import', 'tsx', here, '--child-convert', qcow2, outOurs])
      if (r.code !== 0) throw new Error(`ours failed: ${r.stderr}`)
      const res = JSON.parse(r.stdout.trim().split('\n').pop() as string) as { seconds: number; cpuSeconds: number; maxRssKiB: number }
      ours.push(res.seconds)
      oursCpu.push(res.cpuSeconds)
      rss = Math.max(rss, res.maxRssKiB)
      await rm(outQemu, { force: true })
      const q = await run('/usr/bin/time', ['-f', 'CPU %U %S', 'qemu-img', 'convert', '-f', 'qcow2', '-O', 'raw', qcow2, outQemu])
      if (q.code !== 0) throw new Error(`qemu-img failed: ${q.stderr}`)
      theirs.push(q.seconds)
      const m = /CPU ([\d.]+) ([\d.]+)/.exec(q.stderr)
      theirsCpu.push(m ? Number(m[1]) + Number(m[2]) : Number.NaN)
      // qemu-img's default cache mode for convert is 'unsafe' (no flush at the end); ours fsyncs.
      // 'writeback' flushes at close like ours: the like-for-like durability comparison.
      await rm(outQemu, { force: true })
      const w = await run('qemu-img', ['convert', '-t', 'writeback', '-f', 'qcow2', '-O', 'raw', qcow2, outQemu])
      if (w.code !== 0) throw new Error(`qemu-img -t writeback failed: ${w.stderr}`)
      flushed.push(w.seconds)
      // The whole CLI process, timed like qemu-img (startup, module loading, conversion, fsync).
      await rm(outCli, { force: true })
      const c = await run(join(root, 'bin', 'tresor.js'), ['image', 'convert', '--to', 'raw', qcow2, outCli], fromDist ? {} : { TRESOR_FROM_SOURCE: '1' })
      if (c.code !== 0) throw new Error(`tresor image convert failed: ${c.stderr}`)
      cli.push(c.seconds)
      console.log(
        `  run ${i + 1}: ours ${res.seconds.toFixed(2)} s (cpu ${res.cpuSeconds.toFixed(2)} s), qemu-img ${q.seconds.toFixed(2)} s ` +
          `(cpu ${(theirsCpu[i] as number).toFixed(2)} s), qemu-img -t writeback ${w.seconds.toFixed(2)} s, tresor CLI process ${c.seconds.toFixed(2)} s`,
      )
    }
    const same = await run('cmp', [outOurs, outQemu])
    const sameCli = await run('cmp', [outCli, outQemu])
    const mbps = (s: number): string => ((sizeMiB * MiB) / s / 1e6).toFixed(0)
    const o = median(ours)
    const q = median(theirs)
    console.log(`  ours:     ${o.toFixed(2)} s  ${mbps(o)} MB/s (virtual bytes per second)`)
    console.log(`  qemu-img: ${q.toFixed(2)} s  ${mbps(q)} MB/s`)
    console.log(`  qemu-img -t writeback (flushes like ours): ${median(flushed).toFixed(2)} s  ${mbps(median(flushed))} MB/s`)
    console.log(`  tresor CLI, whole process (${fromDist ? 'dist/ build' : 'sources via tsx: run npm run build for the shipped path'}): ${median(cli).toFixed(2)} s  ${mbps(median(cli))} MB/s; ratio qemu-img / CLI ${(q / median(cli)).toFixed(2)}x`)
    console.log(`  ratio (qemu time / our time): ${(q / o).toFixed(2)}x  (target >= 1.0x); against -t writeback: ${(median(flushed) / o).toFixed(2)}x`)
    console.log(`  cpu seconds (user+sys): ours ${median(oursCpu).toFixed(2)}, qemu-img ${median(theirsCpu).toFixed(2)}; load average ${(await import('node:os')).loadavg()[0]?.toFixed(1)} on ${(await import('node:os')).cpus().length} cores`)
    console.log(`  our peak RSS: ${(rss / 1024).toFixed(0)} MiB  (target < 200 MiB)`)
    console.log(`  outputs identical: ${same.code === 0 ? 'yes' : 'NO'} (CLI output: ${sameCli.code === 0 ? 'yes' : 'NO'})`)

    // Raw hole detection on the sparse source: FIEMAP (filefrag) against the zero-granule scan.
    const scans: number[] = []
    const maps: number[] = []
    for (let i = 0; i < runs; i++) {
      const s = await run(process.execPath, ['--import', 'tsx', here, '--child-scan', raw], { TRESOR_RAW_EXTENTS: 'scan' })
      scans.push((JSON.parse(s.stdout.trim()) as { seconds: number }).seconds)
      const f = await run(process.execPath, ['--import', 'tsx', here, '--child-scan', raw])
      maps.push((JSON.parse(f.stdout.trim()) as { seconds: number }).seconds)
    }
    console.log(`  raw extents of the sparse source: FIEMAP via filefrag ${median(maps).toFixed(2)} s, zero-granule scan ${median(scans).toFixed(2)} s (${mbps(median(scans))} MB/s)`)
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

await main()
