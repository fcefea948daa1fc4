/**
 * The backup pipeline's own cost, separated from the vault's: `node --import tsx test/bench/backupPipeline.ts`
 *
 * Prints (MB/s of guest bytes, same run, same disk):
 * - read limit: sequential 1 MiB reads of the file (what any backup must at least do)
 * - XXH3-128 checksum candidates on 1 MiB blocks: xxhash-addon (used), hash-wasm, @node-rs/xxhash one-shot xxh128,
 *   and @node-rs/xxhash's streaming Xxh3 (64-bit only, for reference)
 * - runBackup into a null vault (putBlock does nothing): full, "touched but identical" (read + hash +
 *   compare, nothing put), unchanged file (no read)
 * - runBackup into a real vault: full, 1 % scattered 4 KiB writes, unchanged; with peak RSS
 * BENCH_PIPE_MIB (default 512) sets the disk size; the disk is the suite's mixed disk.
 * BENCH_PIPE_BLOCK (bytes, default: the vault's default) sets the real vault's block size.
 */
import { mkdtempSync, openSync, readSync, closeSync, rmSync, utimesSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { xxh3 } from '@node-rs/xxhash'
import { createXXHash128 } from 'hash-wasm'
import { XXHash128 } from 'xxhash-addon'
import { openCatalog } from '../../electron/engine/catalog/index.js'
import { openImage } from '../../electron/engine/formats/index.js'
import { createVault, openVault } from '../../electron/engine/vault/index.js'
import { addMachine, runBackup } from '../../electron/engine/backup/index.js'
import type { BackupSession, BlockEntry, PointManifest, Vault } from '../../electron/engine/vault/api.js'
import { MiB, writeMixedDisk, mutateScattered } from './lib.js'
import { segmentsOf } from '../helpers/mapSegments.js'

const sizeBytes = (Number(process.env.BENCH_PIPE_MIB) || 512) * MiB
const work = mkdtempSync(join(tmpdir(), 'tresor-bench-pipe-'))
const disk = join(work, 'disk.raw')
const rows: [string, string, string][] = []
const mbps = (bytes: number, ms: number): string => (bytes / MiB / (ms / 1000)).toFixed(0)
const now = (): number => performance.now()
let peakRss = 0
const rssTimer = setInterval(() => { peakRss = Math.max(peakRss, process.memoryUsage().rss) }, 20)

function row(name: string, bytes: number, ms: number, note = ''): void {
  rows.push([name, `${mbps(bytes, ms)} MB/s`, `${(ms / 1000).toFixed(2)} s ${note}`])
  process.stderr.write(`[pipe] ${name}: ${mbps(bytes, ms)} MB/s (${(ms / 1000).toFixed(2)} s) ${note}\n`)
}

/** A vault that stores nothing: isolates the pipeline's own work. */
function nullVault(blockSize: number): Vault {
  const points: PointManifest[] = []
  const maps = new Map<string, unknown[]>()
  let n = 0
  return {
    id: 'null', path: '/null', blockSize,
    generation: async () => 1,
    beginBackup: async (): Promise<BackupSession> => {
      const pending = new Map<number, unknown[]>()
      return {
        blockSize,
        putBlock: async (_d, checksum) => ({ chunkId: Buffer.concat([checksum, checksum]), isNew: true, storedBytes: 0 }),
        blockMapWriter: (d) => { const l: unknown[] = []; pending.set(d.index, l); return { append: (e) => void l.push(e), finish: async () => {} } },
        commit: async (p) => { const id = `p${++n}`; for (const [i, l] of pending) maps.set(`${id}/${i}`, l); const m = { ...p, id, blockSize }; points.push(m); return m },
        abort: async () => {},
      }
    },
    listPoints: async () => points,
    getPoint: async (id) => points.find((p) => p.id === id)!,
    readBlockMap: async function* (id, i) { yield* (maps.get(`${id}/${i}`) ?? []) as never[] },
    readBlockMapSegments: (id, i) => segmentsOf((maps.get(`${id}/${i}`) ?? []) as BlockEntry[], 65536),
    chunkReader: () => { throw new Error('no') },
    close: async () => {},
  }
}

async function main(): Promise<void> {
  process.stderr.write(`[pipe] writing a ${sizeBytes / MiB} MiB mixed disk in ${work}\n`)
  writeMixedDisk(disk, sizeBytes, 42)

  // Read limit.
  {
    const fd = openSync(disk, 'r')
    const buf = Buffer.allocUnsafe(MiB)
    const t = now()
    for (let off = 0; off < sizeBytes; off += MiB) readSync(fd, buf, 0, MiB, off)
    row('read limit (1 MiB reads, all bytes)', sizeBytes, now() - t)
    closeSync(fd)
  }
  // Checksums.
  {
    const block = randomBytes(MiB)
    const n = 512
    const w = await createXXHash128()
    let t = now()
    for (let i = 0; i < n; i++) XXHash128.hash(block)
    row('XXH3-128 xxhash-addon (used)', n * MiB, now() - t)
    t = now()
    for (let i = 0; i < n; i++) { w.init(); w.update(block); w.digest('binary') }
    row('XXH3-128 hash-wasm', n * MiB, now() - t)
    t = now()
    for (let i = 0; i < n; i++) xxh3.xxh128(block)
    row('XXH3-128 @node-rs one-shot', n * MiB, now() - t)
    const s = xxh3.Xxh3.withSeed()
    t = now()
    for (let i = 0; i < n; i++) { s.reset(); s.update(block); s.digest() }
    row('XXH3-64 @node-rs streaming (no 128-bit digest)', n * MiB, now() - t)
  }

  const home = join(work, 'home')
  const catalog = openCatalog(home)
  const m = addMachine(catalog, { name: 'bench', disks: [{ path: disk }] })
  // Null vault.
  {
    const vault = nullVault(MiB)
    const world = { vault, catalog, openImage: (p: string) => openImage(p) }
    let r = await runBackup(m, world, { snapshot: 'read', policy: undefined })
    row('pipeline, null vault: full', sizeBytes, r.result.seconds * 1000, `read ${(r.result.bytesRead / MiB).toFixed(0)} MiB`)
    const t = new Date(); utimesSync(disk, t, t)
    r = await runBackup(m, world, { snapshot: 'read' })
    row('pipeline, null vault: touched, identical (read+hash+compare)', sizeBytes, r.result.seconds * 1000, `new ${r.result.bytesNew}`)
    r = await runBackup(m, world, { snapshot: 'read' })
    row('pipeline, null vault: unchanged file', sizeBytes, r.result.seconds * 1000, `read ${r.result.bytesRead}`)
  }
  catalog.prepare('DELETE FROM points').run()
  // Real vault.
  {
    const key = randomBytes(32)
    const vdir = join(work, 'vault')
    const blockSize = Number(process.env.BENCH_PIPE_BLOCK) || undefined
    await createVault(vdir, { masterKey: key, keySlots: { passphrase: {} }, ...(blockSize ? { blockSize } : {}) })
    const vault = await openVault(vdir, key)
    const world = { vault, catalog, openImage: (p: string) => openImage(p) }
    let r = await runBackup(m, world, { snapshot: 'read' })
    row('real vault: full', sizeBytes, r.result.seconds * 1000, `new ${(r.result.bytesNew / MiB).toFixed(0)} MiB, stored ${(r.result.bytesStored / MiB).toFixed(0)} MiB`)
    const changed = mutateScattered(disk, 0.01, 7)
    r = await runBackup(m, world, { snapshot: 'read' })
    row('real vault: 1 % scattered 4 KiB writes', sizeBytes, r.result.seconds * 1000, `changed ${(changed / MiB).toFixed(1)} MiB, new ${(r.result.bytesNew / MiB).toFixed(1)} MiB`)
    r = await runBackup(m, world, { snapshot: 'read' })
    row('real vault: unchanged', sizeBytes, r.result.seconds * 1000, `read ${r.result.bytesRead}`)
    await vault.close()
  }
  catalog.close()
  clearInterval(rssTimer)
  process.stdout.write(`\n| case (${sizeBytes / MiB} MiB mixed disk, vault block ${process.env.BENCH_PIPE_BLOCK ?? 'default'}) | throughput | time |\n|---|---|---|\n`)
  for (const r of rows) process.stdout.write(`| ${r.join(' | ')} |\n`)
  process.stdout.write(`\npeak RSS ${(peakRss / MiB).toFixed(0)} MiB\n`)
  rmSync(work, { recursive: true, force: true })
}

await main()
