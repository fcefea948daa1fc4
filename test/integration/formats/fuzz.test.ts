/**
 * RELIABILITY row 22: malformed qcow2 / VHD / VHDX / VMDK (and raw) images give a typed error, never a
 * crash, a hang or an allocation driven by an untrusted size.
 *
 * Real small images of every format and variant are made with qemu-img, then mutated
 * deterministically (seeded: bit flips, byte sets, special 16/32/64-bit values over metadata,
 * truncation and extension, block copies and splices) in a child process (fuzzChild.ts) that runs
 * each mutant through openImage + info + extents + reads. This process watches the child: a case
 * that does not finish is a hang (the child is killed and a new one continues with the next case).
 *
 * Pass: every case is accepted (opens and reads) or rejected with an image error code; no other
 * exception, no hang, no timeout, RSS of the child under FUZZ_RSS_MIB (default 512).
 * Runs FUZZ_SECONDS (default 20); FUZZ_SEED picks the sequence (default 1); FUZZ_CASE=<n> replays
 * one case (printed with every finding); FUZZ_SEEDS=<regexp> fuzzes only the matching seed images;
 * FUZZ_JOBS=<n> runs n child processes at once (for long nightly runs).
 * Prints cases per format and the accepted/rejected counts.
 */
import { execFile, fork } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import '../../../electron/engine/formats/index.js'
import { formatModule } from '../../../electron/engine/formats/open.js'
import type { ImageFormat } from '../../../electron/engine/formats/types.js'
import type { ChildOut, FuzzSeed, RunMessage } from './fuzzChild.js'

const run = promisify(execFile)
const CHILD = fileURLToPath(new URL('./fuzzChild.ts', import.meta.url))
const SECONDS = Number(process.env.FUZZ_SECONDS ?? 20)
const BASE_SEED = Number(process.env.FUZZ_SEED ?? 1)
const ONLY = process.env.FUZZ_CASE === undefined ? undefined : Number(process.env.FUZZ_CASE)
/** Optional regular expression: fuzz only the seed images whose name matches (e.g. `^vmdk`). */
const SEED_FILTER = process.env.FUZZ_SEEDS === undefined ? undefined : new RegExp(process.env.FUZZ_SEEDS)
const RSS_LIMIT = Number(process.env.FUZZ_RSS_MIB ?? 512) * 1024 * 1024
/** Child processes fuzzing at once (FUZZ_JOBS, default 1: CI machines are small). */
const JOBS = Math.max(1, Number(process.env.FUZZ_JOBS ?? 1))
const CASE_TIMEOUT_MS = 10_000
/** A case running longer than this (child not answering at all) is a hang. */
const HANG_MS = CASE_TIMEOUT_MS + 10_000
const FORMATS: ImageFormat[] = ['raw', 'qcow2', 'vhd', 'vhdx', 'vmdk']
const DATA = 0xa5
const MiB = 1024 * 1024

let dir: string
const seeds: FuzzSeed[] = []

async function qemuImg(...args: string[]): Promise<void> {
  await run('qemu-img', args)
}
async function qemuIo(format: string, file: string, ...commands: string[]): Promise<void> {
  const args = ['-f', format]
  for (const c of commands) args.push('-c', c)
  await run('qemu-io', [...args, file])
}
/** Data writes with the pattern byte, unaligned, across clusters, zero writes and the last sector. */
function pattern(size: number, extra: string[] = []): string[] {
  return [
    `write -P ${DATA} 0 4096`,
    `write -P ${DATA} 70000 150000`,
    `write -P ${DATA} ${MiB + 512} 2048`,
    `write -z ${MiB + 65536} 131072`,
    ...extra,
    `write -P ${DATA} ${size - 512} 512`,
  ]
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tresor-fuzz-'))
  const add = (name: string, format: ImageFormat, path: string): void => {
    seeds.push({ name, format, path, dataByte: DATA })
  }
  const size = 4 * MiB
  // raw
  const raw = join(dir, 'raw', 'disk.img')
  await run('mkdir', ['-p', join(dir, 'raw')])
  await writeFile(raw, Buffer.alloc(2 * MiB))
  await qemuIo('raw', raw, ...pattern(2 * MiB))
  add('raw', 'raw', raw)
  // qcow2 variants
  const qcow2 = async (name: string, options: string, extra: string[] = []): Promise<void> => {
    const d = join(dir, name)
    await run('mkdir', ['-p', d])
    const file = join(d, 'disk.qcow2')
    await qemuImg('create', '-q', '-f', 'qcow2', '-o', options, file, String(size))
    await qemuIo('qcow2', file, ...pattern(size, extra))
    add(name, 'qcow2', file)
  }
  await qcow2('qcow2-v2', 'compat=0.10')
  await qcow2('qcow2-v3-4k', 'compat=1.1,cluster_size=4096,refcount_bits=8', ['discard 65536 8192'])
  await qcow2('qcow2-extl2', 'compat=1.1,extended_l2=on,cluster_size=65536', [`write -P ${DATA} 2050048 2048`, 'write -z 2101248 4096'])
  for (const type of ['zlib', 'zstd']) {
    const d = join(dir, `qcow2-${type}`)
    await run('mkdir', ['-p', d])
    const src = join(d, 'src.raw')
    await writeFile(src, Buffer.alloc(size))
    await qemuIo('raw', src, ...pattern(size).filter((c) => !c.startsWith('write -z')))
    const file = join(d, 'disk.qcow2')
    await qemuImg('convert', '-q', '-c', '-f', 'raw', '-O', 'qcow2', '-o', `compression_type=${type}`, src, file)
    await rm(src)
    add(`qcow2-${type}`, 'qcow2', file)
  }
  {
    const d = join(dir, 'qcow2-backing')
    await run('mkdir', ['-p', d])
    const base = join(d, 'base.raw')
    await writeFile(base, Buffer.alloc(size))
    await qemuIo('raw', base, `write -P ${DATA} 0 1M`)
    const file = join(d, 'top.qcow2')
    await qemuImg('create', '-q', '-f', 'qcow2', '-b', 'base.raw', '-F', 'raw', file)
    await qemuIo('qcow2', file, ...pattern(size))
    add('qcow2-backing', 'qcow2', file)
  }
  // vpc
  for (const sub of ['dynamic', 'fixed']) {
    const d = join(dir, `vpc-${sub}`)
    await run('mkdir', ['-p', d])
    const file = join(d, 'disk.vhd')
    const s = sub === 'fixed' ? 2 * MiB : size
    await qemuImg('create', '-q', '-f', 'vpc', '-o', `subformat=${sub}`, file, String(s))
    await qemuIo('vpc', file, ...pattern(s).filter((c) => !c.startsWith('write -z')))
    add(`vpc-${sub}`, 'vhd', file)
  }
  // vhdx
  {
    const d = join(dir, 'vhdx')
    await run('mkdir', ['-p', d])
    const file = join(d, 'disk.vhdx')
    await qemuImg('create', '-q', '-f', 'vhdx', '-o', 'block_size=1M,log_size=1M', file, String(size))
    await qemuIo('vhdx', file, ...pattern(size))
    add('vhdx', 'vhdx', file)
  }
  // vmdk
  for (const [name, options] of [
    ['vmdk-sparse', 'subformat=monolithicSparse'],
    ['vmdk-zeroed', 'subformat=monolithicSparse,zeroed_grain=on'],
    ['vmdk-descriptor', 'subformat=twoGbMaxExtentSparse'],
    ['vmdk-flat', 'subformat=monolithicFlat'],
  ] as const) {
    const d = join(dir, name)
    await run('mkdir', ['-p', d])
    const file = join(d, 'disk.vmdk')
    await qemuImg('create', '-q', '-f', 'vmdk', '-o', options, file, String(size))
    await qemuIo('vmdk', file, ...pattern(size))
    add(name, 'vmdk', file)
  }
  {
    // A delta on a parent: the mutant is the child (parent hint, CIDs, tables).
    const d = join(dir, 'vmdk-delta')
    await run('mkdir', ['-p', d])
    const base = join(d, 'base.vmdk')
    await qemuImg('create', '-q', '-f', 'vmdk', base, String(size))
    await qemuIo('vmdk', base, `write -P ${DATA} 0 1M`)
    const file = join(d, 'disk.vmdk')
    await qemuImg('create', '-q', '-f', 'vmdk', '-b', 'base.vmdk', '-F', 'vmdk', file)
    await qemuIo('vmdk', file, ...pattern(size))
    add('vmdk-delta', 'vmdk', file)
  }
  {
    const d = join(dir, 'vmdk-stream')
    await run('mkdir', ['-p', d])
    const src = join(d, 'src.raw')
    await writeFile(src, Buffer.alloc(size))
    await qemuIo('raw', src, ...pattern(size).filter((c) => !c.startsWith('write -z')))
    const file = join(d, 'disk.vmdk')
    await qemuImg('convert', '-q', '-f', 'raw', '-O', 'vmdk', '-o', 'subformat=streamOptimized', src, file)
    await rm(src)
    add('vmdk-stream', 'vmdk', file)
  }
}, 120_000)

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true })
})

interface Stats {
  cases: number
  accepted: number
  rejected: number
  ms: number
  codes: Map<string, number>
}

describe('format fuzz (RELIABILITY 22)', () => {
  it(
    'every mutant of every format is read or refused with an image error: no crash, hang or memory blow-up',
    async () => {
      for (const f of FORMATS) expect(formatModule(f), `format module ${f} is registered`).toBeDefined()
      const deadline = Date.now() + SECONDS * 1000
      const stats = new Map<string, Stats>()
      const findings: string[] = []
      let peakRss = 0
      let skipped: string[] = []
      const record = (m: Extract<ChildOut, { kind: 'end' }>): void => {
        const s = stats.get(m.seed) ?? { cases: 0, accepted: 0, rejected: 0, ms: 0, codes: new Map<string, number>() }
        stats.set(m.seed, s)
        s.cases++
        s.ms += m.ms
        if (m.outcome === 'accepted') s.accepted++
        else if (m.outcome === 'rejected') {
          s.rejected++
          s.codes.set(m.code ?? '?', (s.codes.get(m.code ?? '?') ?? 0) + 1)
        } else {
          findings.push(
            `${m.outcome} ${m.seed} case ${m.i} (seed ${m.caseSeed}, replay: FUZZ_SEED=${BASE_SEED} FUZZ_CASE=${m.i})` +
              `${m.code ? ` ${m.code}` : ''}${m.mutant ? ` mutant ${m.mutant}` : ''}${m.detail ? `\n    ${m.detail.replace(/\n/g, '\n    ')}` : ''}`,
          )
        }
      }
      let rounds = 0
      /** One child process after another, running cases k, k + JOBS, k + 2 JOBS... until the deadline. */
      const runWorker = async (k: number): Promise<void> => {
        let next = k
        do {
          rounds++
          const child = fork(CHILD, [], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
          let current: { i: number; seed: string; caseSeed: number; at: number } | undefined
          let done = false
          let killedForHang = false
          const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => {
            child.on('exit', (code, signal) => resolve({ code, signal }))
          })
          child.on('message', (m: ChildOut) => {
            if (m.kind === 'ready') {
              const msg: RunMessage = {
                kind: 'run',
                seeds: SEED_FILTER ? seeds.filter((s) => SEED_FILTER.test(s.name)) : seeds,
                deadlineMs: deadline,
                firstCase: ONLY ?? next,
              stride: JOBS,
                baseSeed: BASE_SEED,
                caseTimeoutMs: CASE_TIMEOUT_MS,
                rssLimitBytes: RSS_LIMIT,
                ...(ONLY === undefined ? {} : { only: ONLY }),
              }
              child.send(msg)
            } else if (m.kind === 'start') {
              current = { i: m.i, seed: m.seed, caseSeed: m.caseSeed, at: Date.now() }
            } else if (m.kind === 'end') {
              current = undefined
              next = m.i + JOBS
              record(m)
            } else if (m.kind === 'done') {
              done = true
              peakRss = Math.max(peakRss, m.peakRss)
              next = m.next
              skipped = m.skipped
            }
          })
          const watchdog = setInterval(() => {
            if (current && Date.now() - current.at > HANG_MS) {
              findings.push(
                `hang ${current.seed} case ${current.i} (seed ${current.caseSeed}, replay: FUZZ_SEED=${BASE_SEED} FUZZ_CASE=${current.i}): no answer for ${HANG_MS} ms`,
              )
              next = current.i + JOBS
              current = undefined
              killedForHang = true
              child.kill('SIGKILL')
            }
          }, 250)
          const { code, signal } = await exited
          clearInterval(watchdog)
          if (!done && !killedForHang) {
            findings.push(
              `crash: the fuzz child exited (code ${code}, signal ${signal})` +
                (current ? ` during ${current.seed} case ${current.i} (replay: FUZZ_SEED=${BASE_SEED} FUZZ_CASE=${current.i})` : ''),
            )
            if (current) next = current.i + JOBS
            else break
          }
          if (ONLY !== undefined) break
        } while (Date.now() < deadline - 1000 && rounds < 50)
      }
      await Promise.all(Array.from({ length: ONLY === undefined ? JOBS : 1 }, (_, k) => runWorker(k)))

      // Report.
      const casesDone = [...stats.values()].reduce((sum, s) => sum + s.cases, 0)
      const byFormat = new Map<string, { cases: number; accepted: number; rejected: number }>()
      const lines = [`format fuzz: ${SECONDS} s, FUZZ_SEED=${BASE_SEED}, cases ${casesDone}, child processes ${rounds} (${JOBS} at a time), peak child RSS ${Math.round(peakRss / MiB)} MiB`]
      for (const seed of seeds) {
        const s = stats.get(seed.name)
        if (!s) continue
        const f = byFormat.get(seed.format) ?? { cases: 0, accepted: 0, rejected: 0 }
        f.cases += s.cases
        f.accepted += s.accepted
        f.rejected += s.rejected
        byFormat.set(seed.format, f)
        const codes = [...s.codes.entries()].map(([c, n]) => `${c} ${n}`).join(', ')
        lines.push(`  ${seed.name.padEnd(16)} ${String(s.cases).padStart(6)} cases  ${String(s.accepted).padStart(6)} accepted  ${String(s.rejected).padStart(6)} rejected  ${(s.ms / s.cases).toFixed(1)} ms/case  (${codes})`)
      }
      for (const [f, s] of byFormat) lines.push(`  = ${f.padEnd(14)} ${String(s.cases).padStart(6)} cases  ${String(s.accepted).padStart(6)} accepted  ${String(s.rejected).padStart(6)} rejected`)
      if (skipped.length > 0) lines.push(`  not fuzzed (no reader registered): ${skipped.join(', ')}`)
      lines.push(`  findings: ${findings.length}`)
      for (const f of findings) lines.push(`  - ${f}`)
      console.log(lines.join('\n'))

      expect(findings).toEqual([])
      expect(peakRss).toBeLessThan(RSS_LIMIT)
      expect(skipped).toEqual([])
      if (ONLY === undefined && SEED_FILTER === undefined) for (const f of FORMATS) expect(byFormat.get(f)?.cases ?? 0, `cases of ${f}`).toBeGreaterThan(0)
    },
    (SECONDS + 240) * 1000,
  )
})
