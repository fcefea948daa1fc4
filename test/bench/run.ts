/**
 * `npm run bench`: Tresor against cat, cp, qemu-img, restic and borg on the same deterministic
 * disks, in the same run, alternating tools, median of BENCH_RUNS (default 3) with min–max.
 *
 *   npm run bench                       4 GiB mixed disk, 3 runs, writes docs/benchmarks.md
 *   BENCH_SIZE_MIB=1024 npm run bench   smaller disk
 *   BENCH_SMOKE=1 npm run bench         seconds: 64 MiB, 1 run, writes test-results/bench-smoke.md
 *   BENCH_BLOCKSIZES=1 npm run bench    adds the block-size table (64 KiB … 4 MiB)
 *   BENCH_DIR=/path                     where disks and repositories go (default: a temp folder)
 *
 * Keys: Tresor runs as the app does, with the vault key in the OS keychain (a private Secret Service
 * session through scripts/with-keyring.sh, which the suite starts itself); restic and borg derive
 * their keys from the passphrase on every command, as they always do. The "unchanged disk, no
 * keychain" row shows Tresor deriving its key from the passphrase too (scrypt, N = 2^17). Without
 * dbus-run-session/gnome-keyring the suite runs without a keychain locally and fails under CI=true.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, openSync, writeSync, closeSync, ftruncateSync } from 'node:fs'
import { tmpdir, cpus, totalmem } from 'node:os'
import { spawnSync } from 'node:child_process'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import {
  MiB, GiB, copyAllocated, writeMixedDisk, writeRealImage, mutateScattered, mutateContiguous, measure, canDropPageCache, sh, duBytes, allocatedBytes, stat, fmt, table,
  type Measure, type Stat,
} from './lib.js'

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
const smoke = process.env.BENCH_SMOKE === '1'
const sizeBytes = (Number(process.env.BENCH_SIZE_MIB) || (smoke ? 64 : 4096)) * MiB
const runs = Number(process.env.BENCH_RUNS) || (smoke ? 1 : 3)
const work = process.env.BENCH_DIR ?? mkdtempSync(join(tmpdir(), 'tresor-bench-'))
const passphrase = 'bench-passphrase-not-secret'
const tresorBin = join(root, 'bin', 'tresor.js')

mkdirSync(work, { recursive: true })
const disk = join(work, 'disk.raw') // the path every tool backs up
const versions = { a: join(work, 'v-a.raw'), b: join(work, 'v-b.raw'), c: join(work, 'v-c.raw') }

function say(line: string): void {
  process.stderr.write(`[bench] ${line}\n`)
}

/**
 * Puts a version of the disk in place for the next tool: a fresh copy with the version's
 * allocation (written zeros stay written, holes stay holes). Its data pages are in the page cache
 * (just written), its holes are not: nothing has read them, as with a VM's sparse image.
 */
function place(version: string): void {
  rmSync(disk, { force: true })
  copyAllocated(version, disk)
}

// ---------------------------------------------------------------------------------------------
// Tools
interface Tool {
  name: string
  init(repo: string): void
  backup(repo: string, label: string): Measure
  /**
   * Restores the newest point into the empty folder `folder`. `durable`: the image is on disk when
   * the timed command ends (a tool that does not sync its restore runs `sync` in the same command).
   * `cold`: the page cache is emptied first (`measure`), as for a restore days after its backup.
   */
  restore(repo: string, folder: string, how: { durable: boolean; cold: boolean }): Measure
  /** Its plain restore already ends with the image on disk (Tresor: I12), so its durable row reuses it. */
  syncsRestore?: boolean
  verify(repo: string): Measure
  /** Deletes the two oldest of its four points and frees what only they used (one Measure: all commands). */
  pruneOldest(repo: string): Measure
  size(repo: string): number
}

/** One Measure for commands run one after the other: times and CPU add up, peak RSS is the largest. */
function sequence(ms: Measure[]): Measure {
  return {
    seconds: ms.reduce((s, m) => s + m.seconds, 0),
    cpuSeconds: ms.reduce((s, m) => s + m.cpuSeconds, 0),
    peakRssMiB: Math.max(...ms.map((m) => m.peakRssMiB)),
    stdout: ms.map((m) => m.stdout).join(''),
  }
}

function tresor(home: string, args: string[], env: NodeJS.ProcessEnv = {}, cold = false): Measure {
  // run as the installed `tresor` command runs: the file itself, so its first line's node options apply
  return measure(tresorBin, ['--home', home, '--json', ...args], { env: { TRESOR_PASSPHRASE: passphrase, ...env }, cold })
}

/**
 * A peer's restore command, timed: as it is, or (`durable`) followed by `sync` in the same command,
 * since a peer that does not sync leaves the image in memory.
 */
function peerRestore(tool: string, args: string[], options: { env: NodeJS.ProcessEnv; cwd?: string }, how: { durable: boolean; cold: boolean }): Measure {
  return how.durable ? measure('sh', ['-c', `${tool} "$@" && sync`, 'sh', ...args], { ...options, cold: how.cold }) : measure(tool, args, { ...options, cold: how.cold })
}

function makeTresor(blockSizeKiB?: number, workers?: number): Tool {
  const env: NodeJS.ProcessEnv = workers ? { TRESOR_WORKERS: String(workers) } : {}
  return {
    name: blockSizeKiB ? `tresor (${blockSizeKiB} KiB)` : workers ? `tresor (${workers} workers)` : 'tresor',
    init(repo) {
      mkdirSync(repo, { recursive: true })
      const extra = blockSizeKiB ? ['--block-size', String(blockSizeKiB * 1024)] : []
      tresor(join(repo, 'home'), ['vault', 'init', join(repo, 'vault'), ...extra])
      tresor(join(repo, 'home'), ['machine', 'add', 'bench-vm', disk])
    },
    backup(repo) {
      return tresor(join(repo, 'home'), ['backup', 'bench-vm'], env)
    },
    // the point is looked up first, untimed; the image is synced before the command ends (I12)
    restore(repo, folder, how) {
      const points = JSON.parse(tresor(join(repo, 'home'), ['points', 'bench-vm']).stdout) as Array<{ id: string; createdAt: string }>
      const newest = points.sort((x, y) => x.createdAt.localeCompare(y.createdAt)).at(-1)!
      return tresor(join(repo, 'home'), ['restore', newest.id, '--to', join(folder, 'disk.raw'), '--format', 'raw'], {}, how.cold)
    },
    syncsRestore: true,
    verify(repo) {
      return tresor(join(repo, 'home'), ['verify', '--read-data'])
    },
    pruneOldest(repo) {
      const list = tresor(join(repo, 'home'), ['points', 'bench-vm'])
      const points = JSON.parse(list.stdout) as Array<{ id: string; createdAt: string }>
      const oldest = points.sort((x, y) => x.createdAt.localeCompare(y.createdAt)).slice(0, 2).map((p) => p.id)
      return sequence([list, tresor(join(repo, 'home'), ['forget', ...oldest]), tresor(join(repo, 'home'), ['prune'])])
    },
    size(repo) {
      return duBytes(join(repo, 'vault'))
    },
  }
}

const resticEnv = { RESTIC_PASSWORD: passphrase, RESTIC_CACHE_DIR: join(work, 'restic-cache') }
const restic: Tool = {
  name: 'restic',
  init(repo) {
    measure('restic', ['init', '--repo', repo], { env: resticEnv })
  },
  backup(repo, label) {
    return measure('restic', ['backup', '--repo', repo, '--tag', label, '--quiet', disk], { env: resticEnv })
  },
  restore(repo, folder, how) {
    return peerRestore('restic', ['restore', 'latest', '--repo', repo, '--target', folder, '--quiet'], { env: resticEnv }, how)
  },
  verify(repo) {
    return measure('restic', ['check', '--read-data', '--repo', repo, '--quiet'], { env: resticEnv })
  },
  pruneOldest(repo) {
    return measure('restic', ['forget', '--keep-last', '2', '--prune', '--repo', repo, '--quiet'], { env: resticEnv })
  },
  size: (repo) => duBytes(repo),
}

const borgEnv = { BORG_PASSPHRASE: passphrase, BORG_BASE_DIR: join(work, 'borg-base'), BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK: 'yes', BORG_RELOCATED_REPO_ACCESS_IS_OK: 'yes' }
const borg: Tool = {
  name: 'borg (lz4)',
  init(repo) {
    measure('borg', ['init', '--encryption', 'repokey-blake2', repo], { env: borgEnv })
  },
  backup(repo, label) {
    return measure('borg', ['create', '--compression', 'lz4', `${repo}::${label}-${Date.now()}`, disk], { env: borgEnv })
  },
  // the newest archive is looked up first, untimed; holes kept
  restore(repo, folder, how) {
    const last = sh('borg', ['list', '--short', '--last', '1', repo], borgEnv).trim()
    return peerRestore('borg', ['extract', '--sparse', `${repo}::${last}`], { env: borgEnv, cwd: folder }, how)
  },
  verify(repo) {
    return measure('borg', ['check', '--verify-data', repo], { env: borgEnv })
  },
  pruneOldest(repo) {
    // borg 1.2: prune marks, compact frees the space
    return sequence([measure('borg', ['prune', '--keep-last', '2', repo], { env: borgEnv }), measure('borg', ['compact', repo], { env: borgEnv })])
  },
  size: (repo) => duBytes(repo),
}

// ---------------------------------------------------------------------------------------------
// Results
type CaseName = 'full' | 'full-cached' | 'incr-scattered' | 'incr-contiguous' | 'unchanged' | 'unchanged-nokeychain' | 'restore-raw' | 'restore-durable' | 'restore-cold' | 'verify' | 'prune'
const results = new Map<string, Map<CaseName, Measure[]>>()
const extra: Record<string, Measure[]> = {}
const sizes = new Map<string, number[]>()
const storedGrowth = new Map<string, number[]>()
const pruneFreed = new Map<string, number[]>()

function record(tool: string, c: CaseName, m: Measure): void {
  if (!results.has(tool)) results.set(tool, new Map())
  const t = results.get(tool)!
  if (!t.has(c)) t.set(c, [])
  t.get(c)!.push(m)
}

function pushTo<K, V>(map: Map<K, V[]>, key: K, value: V): void {
  if (!map.has(key)) map.set(key, [])
  map.get(key)!.push(value)
}

// ---------------------------------------------------------------------------------------------
function prepare(): { scatteredBytes: number; contiguousBytes: number } {
  say(`work folder ${work}; disk ${fmt(sizeBytes / MiB)} MiB; ${runs} run(s)`)
  writeMixedDisk(versions.a, sizeBytes, 42)
  copyAllocated(versions.a, versions.b)
  const scatteredBytes = mutateScattered(versions.b, 0.01, 7)
  copyAllocated(versions.b, versions.c)
  const contiguousBytes = mutateContiguous(versions.c, 0.01, 9)
  say(`disk allocated ${fmt(allocatedBytes(versions.a) / MiB)} MiB; scattered change ${fmt(scatteredBytes / MiB, 1)} MiB; contiguous ${fmt(contiguousBytes / MiB, 1)} MiB`)
  return { scatteredBytes, contiguousBytes }
}

function runTool(tool: Tool, run: number): void {
  const repo = join(work, `repo-${tool.name.replace(/\W+/g, '_')}-${run}`)
  rmSync(repo, { recursive: true, force: true })
  tool.init(repo)
  place(versions.a)
  record(tool.name, 'full', tool.backup(repo, 'a'))
  pushTo(sizes, tool.name, tool.size(repo))
  const afterFull = tool.size(repo)
  place(versions.b)
  record(tool.name, 'incr-scattered', tool.backup(repo, 'b'))
  pushTo(storedGrowth, tool.name, tool.size(repo) - afterFull)
  place(versions.c)
  record(tool.name, 'incr-contiguous', tool.backup(repo, 'c'))
  record(tool.name, 'unchanged', tool.backup(repo, 'c2'))
  if (tool.name === 'tresor' && keychain) record(tool.name, 'unchanged-nokeychain', tresor(join(repo, 'home'), ['backup', 'bench-vm'], { DBUS_SESSION_BUS_ADDRESS: '' }))
  const target = join(work, `restore-${run}`)
  /** One restore into an empty `target`. */
  const restore = (how: { durable: boolean; cold: boolean }): Measure => {
    rmSync(target, { recursive: true, force: true })
    mkdirSync(target, { recursive: true })
    return tool.restore(repo, target, how)
  }
  const restored = restore({ durable: false, cold: false })
  record(tool.name, 'restore-raw', restored)
  record(tool.name, 'restore-durable', tool.syncsRestore ? restored : restore({ durable: true, cold: false }))
  if (canDropPageCache) record(tool.name, 'restore-cold', restore({ durable: true, cold: true }))
  record(tool.name, 'verify', tool.verify(repo))
  // prune after deleting half the points (the full and the scattered one of four)
  const beforePrune = tool.size(repo)
  record(tool.name, 'prune', tool.pruneOldest(repo))
  pushTo(pruneFreed, tool.name, beforePrune - tool.size(repo))
  rmSync(target, { recursive: true, force: true })
  rmSync(repo, { recursive: true, force: true })
  // the full backup again into an empty repository, the whole disk cached first: its holes too
  // (read once, untimed), so a tool that reads them reads zeros from memory
  tool.init(repo)
  place(versions.a)
  sh('sh', ['-c', 'cat "$1" > /dev/null', 'sh', disk])
  record(tool.name, 'full-cached', tool.backup(repo, 'a'))
  rmSync(repo, { recursive: true, force: true })
}

function peers(run: number): void {
  const target = join(work, 'peer-out.raw')
  place(versions.a)
  ;(extra['cat'] ??= []).push(measure('sh', ['-c', `cat '${disk}' > /dev/null`]))
  rmSync(target, { force: true })
  ;(extra['cp --sparse=always'] ??= []).push(measure('cp', ['--sparse=always', disk, target]))
  rmSync(target, { force: true })
  ;(extra['cp --sparse=always, then sync'] ??= []).push(measure('sh', ['-c', 'cp --sparse=always "$1" "$2" && sync', 'sh', disk, target]))
  rmSync(target, { force: true })
  ;(extra['qemu-img convert -O raw'] ??= []).push(measure('qemu-img', ['convert', '-f', 'raw', '-O', 'raw', disk, target]))
  rmSync(target, { force: true })
  void run
}

/**
 * The same tools on a real file system instead of the generated disk: an ext4 image of the bench's
 * size filled with real files (this repository's sources and dependencies, then the host's /usr
 * folders, whole folders while they fit in 55 % of the image). Real files compress far better than
 * the generated disk's text and random regions, so the work moves to zstd and the record count
 * grows; the generated disk alone hid both. Full backup, then the repository's size.
 */
function realImageCase(tools: Tool[]): string[] {
  const image = join(work, 'real-ext4.raw')
  const made = writeRealImage(image, sizeBytes, [join(root, 'electron'), join(root, 'docs'), join(root, 'test'), join(root, 'node_modules'),
    '/usr/share', '/usr/lib/x86_64-linux-gnu', '/usr/bin'], sizeBytes * 0.55)
  say(`real image: ${fmt(made.bytes / MiB)} MiB of files from ${made.sources.join(', ')}; ${fmt(allocatedBytes(image) / MiB)} MiB allocated`)
  const times = new Map<string, Measure[]>()
  const repoSizes = new Map<string, number[]>()
  for (let run = 0; run < runs; run++) {
    for (const tool of run % 2 ? [...tools].reverse() : tools) {
      const repo = join(work, `real-repo-${tool.name.replace(/\W+/g, '_')}`)
      rmSync(repo, { recursive: true, force: true })
      place(image)
      tool.init(repo)
      pushTo(times, tool.name, tool.backup(repo, 'real'))
      pushTo(repoSizes, tool.name, tool.size(repo))
      rmSync(repo, { recursive: true, force: true })
    }
  }
  const allocated = allocatedBytes(image)
  rmSync(image, { force: true })
  const resticSize = repoSizes.has('restic') ? stat(repoSizes.get('restic')!).median : undefined
  const rows = tools.filter((t) => times.has(t.name)).map((t) => {
    const ms = times.get(t.name)!
    const s = stat(ms.map((m) => m.seconds))
    const size = stat(repoSizes.get(t.name)!).median
    const ratios = t.name === 'tresor' ? ratiosText(tools, t, s.median, (o) => times.has(o.name) ? stat(times.get(o.name)!.map((m) => m.seconds)).median : undefined) : ''
    return [t.name, `${fmt(s.median, 2)} [${fmt(s.min, 2)}–${fmt(s.max, 2)}]`, fmt(mbps(made.bytes, s.median)), ratios, fmt(stat(ms.map((m) => m.peakRssMiB)).max),
      fmt((stat(ms.map((m) => m.cpuSeconds)).median / made.bytes) * GiB, 2), fmt(size / MiB, 1), resticSize ? `${fmt(size / resticSize, 2)}×` : '']
  })
  return ['## A real file system image (full backup)', '',
    `An ext4 image of ${fmt(sizeBytes / MiB)} MiB (${fmt(allocated / MiB)} MiB allocated) made with \`mkfs.ext4 -d\` from ${fmt(made.bytes / MiB)} MiB of real files: ` +
    `${made.sources.map((d) => d.startsWith(root) ? d.slice(root.length + 1) : d).join(', ')}` +
    `${made.sources.some((d) => !d.startsWith(root)) ? ' (folders outside the repository are the host\'s, so the bytes differ between machines)' : ''}. ` +
    'MB/s and CPU s/GiB are per byte of those files. Median of the runs, min–max in brackets.', '',
    table(['tool', 'seconds', 'MB/s', 'vs peers', 'peak RSS MiB', 'CPU s/GiB', 'repository MiB', 'vs restic\'s'], rows), '']
}

/** Cases only Tresor has (or compares with qemu-img): qcow2 source, 4-disk machine, restore to qcow2,
 * catalog rebuild, prune after deleting half the points, a 64 GiB sparse disk (RSS). */
function tresorExtras(): string[][] {
  const rows: string[][] = []
  const repo = join(work, 'repo-extras')
  rmSync(repo, { recursive: true, force: true })
  const home = join(repo, 'home')
  mkdirSync(repo, { recursive: true })
  tresor(home, ['vault', 'init', join(repo, 'vault')])
  // qcow2 source: the same guest data as a qcow2 image
  const qcow = join(work, 'disk.qcow2')
  sh('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', versions.a, qcow])
  tresor(home, ['machine', 'add', 'qcow-vm', qcow])
  const q = stat(Array.from({ length: runs }, (_, i) => {
    if (i > 0) { sh('touch', [qcow]) } // a changed file is read again (blocks compared, nothing new stored)
    return tresor(home, ['backup', 'qcow-vm']).seconds
  }))
  const qFirst = results.get('tresor')?.get('full')
  rows.push(['backup of the qcow2 image (first full, then re-read)', `${fmt(q.median, 2)} [${fmt(q.min, 2)}–${fmt(q.max, 2)}]`, fmt(mbps(sizeBytes, q.median)), qFirst ? `raw full: ${fmt(stat(qFirst.map((m) => m.seconds)).median, 2)} s` : '', ''])
  // a machine of four disks (each a quarter of the size): disks in parallel
  const parts = [0, 1, 2, 3].map((i) => join(work, `m4-${i}.raw`))
  parts.forEach((p, i) => writeMixedDisk(p, Math.floor(sizeBytes / 4 / MiB) * MiB, 100 + i))
  tresor(home, ['machine', 'add', 'four-disks', ...parts])
  const m4 = tresor(home, ['backup', 'four-disks'])
  rows.push(['full backup, machine of 4 disks (¼ size each)', fmt(m4.seconds, 2), fmt(mbps(sizeBytes, m4.seconds)), '', fmt(m4.peakRssMiB)])
  // restore to qcow2 vs qemu-img convert raw → qcow2
  const points = JSON.parse(tresor(home, ['points', 'qcow-vm']).stdout) as Array<{ id: string }>
  const outQ = join(work, 'restored.qcow2')
  rmSync(outQ, { force: true })
  const rq = tresor(home, ['restore', points[0]!.id, '--to', outQ, '--format', 'qcow2'])
  rmSync(outQ, { force: true })
  const qi = measure('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', versions.a, outQ])
  rows.push(['restore to qcow2', fmt(rq.seconds, 2), fmt(mbps(sizeBytes, rq.seconds)), `qemu-img convert raw→qcow2 ${fmt(qi.seconds, 2)} s (${fmt(qi.seconds / Math.max(rq.seconds, 1e-3), 2)}×)`, fmt(rq.peakRssMiB)])
  rmSync(outQ, { force: true })
  // catalog rebuild from the vault alone
  const rb = tresor(home, ['catalog', 'rebuild'])
  rows.push(['catalog rebuild', fmt(rb.seconds, 2), '', '', fmt(rb.peakRssMiB)])
  // prune: the qcow2 machine gets a second point of a changed disk, then a retention of the newest
  // point only (there is no "delete point" command: retention decides what goes)
  copyAllocated(versions.b, join(work, 'v-b-copy.raw'))
  sh('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', join(work, 'v-b-copy.raw'), qcow])
  rmSync(join(work, 'v-b-copy.raw'), { force: true })
  tresor(home, ['backup', 'qcow-vm'])
  const all = JSON.parse(tresor(home, ['points']).stdout) as Array<{ id: string }>
  const policy = JSON.parse(tresor(home, ['machine', 'policy', 'qcow-vm']).stdout) as Record<string, unknown>
  const spec = { schedule: policy.schedule, snapshotTierDays: policy.snapshotTierDays, preScript: policy.preScript, postScript: policy.postScript,
    failOnInconsistent: policy.failOnInconsistent, retention: { last: 1, daily: 0, weekly: 0, monthly: 0, yearly: 0 } }
  const policyFile = join(work, 'keep-newest.json')
  writeFileSync(policyFile, JSON.stringify(spec))
  tresor(home, ['machine', 'policy', 'qcow-vm', policyFile])
  const pr = tresor(home, ['prune'])
  const pruned = JSON.parse(pr.stdout) as { pointsRemoved: number; bytesFreed: number }
  rows.push([`prune (${pruned.pointsRemoved} of ${all.length} points expire)`, fmt(pr.seconds, 2), '', `freed ${fmt(pruned.bytesFreed / MiB, 1)} MiB`, fmt(pr.peakRssMiB)])
  // vault format 1 (vault init --format 1): every block stored whole, as before formats 2 and 3
  const prepo = join(work, 'repo-format1')
  rmSync(prepo, { recursive: true, force: true })
  mkdirSync(prepo, { recursive: true })
  const ph = join(prepo, 'home')
  tresor(ph, ['vault', 'init', '--format', '1', join(prepo, 'vault')])
  tresor(ph, ['machine', 'add', 'f1-vm', versions.a])
  const pf = tresor(ph, ['backup', 'f1-vm'])
  const pSize = duBytes(join(prepo, 'vault'))
  const resticSize = sizes.get('restic') ? stat(sizes.get('restic')!).median : undefined
  const tresorFull = results.get('tresor')?.get('full')
  rows.push([
    'full backup, vault made with --format 1',
    fmt(pf.seconds, 2),
    fmt(mbps(sizeBytes, pf.seconds)),
    `vault ${fmt(pSize / MiB, 1)} MiB${resticSize ? ` = ${fmt(pSize / resticSize, 2)}× restic's` : ''}${tresorFull ? `; default format full: ${fmt(stat(tresorFull.map((m) => m.seconds)).median, 2)} s` : ''}`,
    fmt(pf.peakRssMiB),
  ])
  const pPoint = (JSON.parse(tresor(ph, ['points', 'f1-vm']).stdout) as Array<{ id: string }>)[0]!.id
  const pOut = join(work, 'restored-format1.raw')
  rmSync(pOut, { force: true })
  const pr2 = tresor(ph, ['restore', pPoint, '--to', pOut, '--format', 'raw'])
  rmSync(pOut, { force: true })
  rows.push(['restore to raw, vault made with --format 1', fmt(pr2.seconds, 2), fmt(mbps(sizeBytes, pr2.seconds)), '', fmt(pr2.peakRssMiB)])
  rmSync(prepo, { recursive: true, force: true })
  // a 64 GiB sparse disk with a little data: memory must not grow with the disk size
  const big = join(work, 'big-sparse.raw')
  const fd = openSync(big, 'w')
  ftruncateSync(fd, 64 * GiB)
  const chunk = Buffer.alloc(MiB, 7)
  for (let i = 0; i < 16; i++) writeSync(fd, chunk, 0, MiB, i * 4 * GiB)
  closeSync(fd)
  tresor(home, ['machine', 'add', 'big-sparse', big])
  const bs = tresor(home, ['backup', 'big-sparse'])
  rows.push(['full backup, 64 GiB sparse disk (16 MiB of data)', fmt(bs.seconds, 2), '', '', fmt(bs.peakRssMiB)])
  rmSync(big, { force: true })
  parts.forEach((p) => rmSync(p, { force: true }))
  rmSync(repo, { recursive: true, force: true })
  return rows
}

/** Block size choice: incremental bytes after the scattered change, metadata size, throughput. */
function blockSizeTable(scatteredBytes: number): string[] {
  const rows: string[][] = []
  for (const kib of [64, 128, 256, 512, 1024, 2048, 4096]) {
    const tool = makeTresor(kib)
    const repo = join(work, `repo-bs-${kib}`)
    rmSync(repo, { recursive: true, force: true })
    tool.init(repo)
    place(versions.a)
    const full = tool.backup(repo, 'a')
    const afterFull = tool.size(repo)
    place(versions.b)
    const incr = tool.backup(repo, 'b')
    const growth = tool.size(repo) - afterFull
    const meta = duBytes(join(repo, 'vault', 'maps')) + duBytes(join(repo, 'vault', 'manifests'))
    const alloc = allocatedBytes(versions.b)
    rows.push([`${kib} KiB`, fmt(mbps(sizeBytes, full.seconds)), fmt((full.cpuSeconds / sizeBytes) * GiB, 2), fmt(mbps(sizeBytes, incr.seconds)), fmt((incr.cpuSeconds / sizeBytes) * GiB, 2),
      fmt(growth / MiB, 1), `${fmt(growth / scatteredBytes, 1)}×`, `${fmt(meta / 2 / 1024, 1)} KiB (${fmt((meta / 2 / alloc) * 100, 3)} %)`, fmt(full.peakRssMiB)])
    rmSync(repo, { recursive: true, force: true })
  }
  const workerRows: string[][] = []
  for (const workers of [1, 2, 3, 4]) {
    const tool = makeTresor(undefined, workers)
    const repo = join(work, `repo-w-${workers}`)
    rmSync(repo, { recursive: true, force: true })
    tool.init(repo)
    place(versions.a)
    const full = tool.backup(repo, 'a')
    workerRows.push([String(workers), fmt(mbps(sizeBytes, full.seconds)), fmt((full.cpuSeconds / sizeBytes) * GiB, 2), fmt(full.peakRssMiB)])
    rmSync(repo, { recursive: true, force: true })
  }
  return ['## Block size', '', 'Growth = vault growth after the 1 % scattered change; metadata = block maps + manifest per point, as a share of allocated bytes. ' +
    'CPU s/GiB = user + system CPU seconds of the whole process per GiB of disk (the figure that stays meaningful on a loaded machine).', '',
    table(['block size', 'full MB/s', 'full CPU s/GiB', 'incremental MB/s', 'incr. CPU s/GiB', 'growth MiB', 'growth / changed', 'metadata per point', 'peak RSS MiB'], rows), '',
    '## Worker count (full backup, default block size, TRESOR_WORKERS)', '',
    table(['workers', 'full MB/s', 'CPU s/GiB', 'peak RSS MiB'], workerRows), '']
}

/** "how many times faster Tresor is" against each peer with a median (`peerMedian` undefined: left out). */
function ratiosText(tools: Tool[], ours: Tool, oursMedian: number, peerMedian: (peer: Tool) => number | undefined): string {
  return tools.filter((t) => t !== ours).flatMap((t) => {
    const p = peerMedian(t)
    return p === undefined ? [] : [`${fmt(p / Math.max(oursMedian, 1e-3), 2)}× ${t.name}`]
  }).join(', ')
}

function mbps(bytes: number, seconds: number): number {
  return bytes / 1e6 / Math.max(seconds, 1e-3)
}

/** True when this process runs inside a Secret Service session (scripts/with-keyring.sh). */
const keychain = process.env.TRESOR_KEYRING_SESSION === '1' && !!process.env.DBUS_SESSION_BUS_ADDRESS

/** Re-runs the suite inside a private keyring session (true once it has run, its status this process's exit code); false when that cannot be done here. */
function runInKeyringSession(): boolean {
  const have = (tool: string): boolean => spawnSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' }).status === 0
  if (process.env.TRESOR_BENCH_REEXEC === '1') throw new Error('bench: the keyring session did not come up (TRESOR_KEYRING_SESSION / DBUS_SESSION_BUS_ADDRESS unset)')
  if (!have('dbus-run-session') || !have('gnome-keyring-daemon')) {
    if (process.env.CI) throw new Error('bench: dbus-run-session and gnome-keyring-daemon are needed (apt-get install dbus gnome-keyring)')
    say('no dbus-run-session/gnome-keyring here: running without a keychain (Tresor derives its key from the passphrase every command)')
    return false
  }
  const r = spawnSync(join(root, 'scripts', 'with-keyring.sh'), [process.execPath, ...process.execArgv, ...process.argv.slice(1)], { stdio: 'inherit', env: { ...process.env, TRESOR_BENCH_REEXEC: '1' } })
  process.exitCode = r.status ?? 1
  return true
}

function main(): void {
  if (!keychain && runInKeyringSession()) return
  const t0 = Date.now()
  const { scatteredBytes, contiguousBytes } = prepare()
  const only = process.env.BENCH_TOOLS?.split(',')
  const tools = [makeTresor(), restic, borg].filter((t) => !only || only.some((o) => t.name.startsWith(o)))
  for (let run = 0; run < runs; run++) {
    peers(run)
    // alternate the order so no tool always runs on the warmest cache
    const order = run % 2 ? [...tools].reverse() : tools
    for (const tool of order) {
      say(`run ${run + 1}/${runs}: ${tool.name}`)
      runTool(tool, run)
    }
  }

  const real = realImageCase(tools)
  const tresorOnly = tools.some((t) => t.name === 'tresor') ? tresorExtras() : []

  const report: string[] = []
  const cpuModel = cpus()[0]?.model ?? 'unknown CPU'
  const versionsLine = [sh('restic', ['version']).trim(), sh('borg', ['--version']).trim(), sh('qemu-img', ['--version']).split('\n')[0]!.trim(), `node ${process.version}`].join('; ')
  report.push(`# Benchmarks`, '', `Measured ${new Date().toISOString().slice(0, 10)} on ${cpus().length} × ${cpuModel}, ${fmt(totalmem() / GiB)} GiB RAM; every measured command starts after a \`sync\` (not timed). ` +
      'Each backup reads a fresh copy of its disk version, made just before with the version\'s allocation (written zeros stay written, holes stay holes): the data is in the page cache, the holes are not, as in a VM\'s sparse image that nothing has read. The "whole disk cached" row reads the disk once first (untimed), holes included.',
    `Peers: ${versionsLine}.`, `Disk: ${fmt(sizeBytes / MiB)} MiB mixed image (35 % incompressible, 25 % compressible, 20 % zeros, 20 % holes); ` +
    `scattered change ${fmt(scatteredBytes / MiB, 1)} MiB in 4 KiB writes; contiguous change ${fmt(contiguousBytes / MiB, 1)} MiB. ` +
    `Median of ${runs} run(s), min–max in brackets. Command: \`${smoke ? 'BENCH_SMOKE=1 ' : ''}npm run bench\`.`,
    keychain
      ? 'Tresor\'s vault key comes from the OS keychain (Secret Service), as in the app; restic and borg derive theirs from the passphrase on every command. The "no keychain" row is Tresor deriving its key from the passphrase as well.'
      : 'No keychain was available: Tresor derived its vault key from the passphrase (scrypt) on every command, like restic and borg.', '')

  const cases: Array<[CaseName, string]> = [
    ['full', 'full backup'], ['full-cached', 'full backup, the whole disk cached (its holes read once before)'], ['incr-scattered', 'incremental, 1 % scattered'], ['incr-contiguous', 'incremental, 1 % contiguous'],
    ['unchanged', 'unchanged disk'], ['unchanged-nokeychain', 'unchanged disk, no keychain (key from passphrase)'], ['restore-raw', 'restore to raw'],
    ['restore-durable', 'restore to raw, on disk at the end (peers: restore, then sync)'],
    ['restore-cold', 'restore to raw from a cold page cache, on disk at the end (peers: restore, then sync)'], ['verify', 'verify --read-data'],
    ['prune', 'prune after deleting the 2 oldest of 4 points'],
  ]
  const rows: string[][] = []
  const med = (tool: string, c: CaseName): Stat | undefined => {
    const ms = results.get(tool)?.get(c)
    return ms ? stat(ms.map((m) => m.seconds)) : undefined
  }
  for (const [c, label] of cases) {
    for (const tool of tools) {
      const ms = results.get(tool.name)?.get(c)
      if (!ms) continue
      const s = stat(ms.map((m) => m.seconds))
      const rss = stat(ms.map((m) => m.peakRssMiB))
      const cpu = stat(ms.map((m) => m.cpuSeconds))
      const ratios = tool.name === 'tresor' ? ratiosText(tools, tool, s.median, (t) => med(t.name, c === 'unchanged-nokeychain' ? 'unchanged' : c)?.median) : ''
      rows.push([label, tool.name, `${fmt(s.median, 2)} [${fmt(s.min, 2)}–${fmt(s.max, 2)}]`, fmt(mbps(sizeBytes, s.median)), ratios,
        fmt(rss.max), fmt((cpu.median / sizeBytes) * GiB, 2)])
    }
  }
  report.push('## Backup, restore, verify', '', 'MB/s is the disk\'s apparent size divided by the time. "vs peers" is how many times faster Tresor is. Peak RSS is the highest of the runs\' peaks (the target is a bound on every run), the other figures medians.', '',
    table(['case', 'tool', 'seconds', 'MB/s', 'vs peers', 'peak RSS MiB', 'CPU s/GiB'], rows), '')
  report.push(canDropPageCache
    ? 'The cold-cache restore empties the page cache first (`/proc/sys/vm/drop_caches`, untimed): the vault, the tool\'s own files and the target folder are read from the disk, as in a restore days after its backup. The other rows run with whatever the earlier commands left cached; Tresor writes its data packs and reads packs past the page cache (O_DIRECT), the peers use it.'
    : 'Restore from a cold page cache: not measured (emptying the page cache needs root).', '')

  const readLimit = stat(extra['cat']!.map((m) => m.seconds)).median
  report.push('## Limits measured in the same run', '', table(['command', 'seconds', 'MB/s'], Object.entries(extra).map(([name, ms]) => {
    const s = stat(ms.map((m) => m.seconds))
    return [name, `${fmt(s.median, 2)} [${fmt(s.min, 2)}–${fmt(s.max, 2)}]`, fmt(mbps(sizeBytes, s.median))]
  })), '')
  const tresorFull = med('tresor', 'full')
  if (tresorFull) report.push(`Tresor full backup runs at ${fmt((readLimit / Math.max(tresorFull.median, 1e-3)) * 100, 1)} % of the read limit (cat).`, '')

  report.push('## Repository size', '', table(['tool', 'after full backup (MiB)', 'growth after 1 % scattered change (MiB)', 'growth / changed bytes', 'freed by the prune (MiB)'],
    tools.map((t) => {
      const s = stat(sizes.get(t.name)!)
      const g = stat(storedGrowth.get(t.name)!)
      const f = stat(pruneFreed.get(t.name)!)
      return [t.name, fmt(s.median / MiB, 1), fmt(g.median / MiB, 1), `${fmt(g.median / scatteredBytes, 2)}×`, fmt(f.median / MiB, 1)]
    })), '')
  report.push(...real)
  if (tresorOnly.length) {
    report.push('## Tresor-only cases', '', table(['case', 'seconds', 'MB/s', 'reference', 'peak RSS MiB'], tresorOnly), '')
  }
  if (process.env.BENCH_BLOCKSIZES === '1') report.push(...blockSizeTable(scatteredBytes))
  report.push(`Total bench time ${fmt((Date.now() - t0) / 1000)} s.`, '')

  const text = report.join('\n')
  process.stdout.write(text + '\n')
  const out = smoke ? join(root, 'test-results', 'bench-smoke.md') : join(root, 'docs', 'benchmarks.md')
  mkdirSync(dirname(out), { recursive: true })
  writeFileSync(out, text)
  say(`written ${out}`)
}

try {
  main()
} finally {
  // also when a case fails: a full bench leaves ~20 GiB of disks and repositories behind
  if (!process.env.BENCH_DIR) rmSync(work, { recursive: true, force: true })
}
