/**
 * Instant restore (snapshot tier) against a vault restore of the same recovery point, in-process.
 * A mixed raw disk (random, compressible, zeros, holes) on a loop-mounted XFS (reflink=1) is backed
 * up with the default policy, so its reflink clone is kept beside it; the source then changes. The
 * point is restored twice to the same XFS: once with the catalog's clone list (snapshot tier:
 * reflink copy + read-back check against the block map) and once without (vault: read, decrypt,
 * decompress, write). Both results are compared byte for byte. Needs root (mount).
 *
 *   node --import tsx test/bench/instantRestore.ts              (256 MiB)
 *   INSTANT_BENCH_MIB=1024 node --import tsx test/bench/instantRestore.ts
 */
import { execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { mkdir, mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { addMachine, listSnapshotClones, runBackup } from '../../electron/engine/backup/index.js'
import { createImageWriter } from '../../electron/engine/formats/index.js'
import { DEFAULT_POLICY } from '../../electron/engine/policy/index.js'
import { restorePoint, type RestoreWorld } from '../../electron/engine/restore/pipeline.js'
import { makeWorld } from '../integration/backup/helpers.js'
import { MiB, allocatedBytes, mutateScattered, writeMixedDisk } from './lib.js'

if (process.getuid?.() !== 0) throw new Error('the instant-restore benchmark mounts an XFS image and needs root')
const sizeMiB = Number(process.env.INSTANT_BENCH_MIB) || 256
const size = sizeMiB * MiB

const root = await mkdtemp(join(tmpdir(), 'tresor-bench-instant-'))
const mnt = join(root, 'mnt')
await mkdir(mnt)
const img = join(root, 'xfs.img')
// Source, clone (shared extents) and two restores: room for about three full copies.
execFileSync('truncate', ['-s', `${Math.max(320, sizeMiB * 4)}M`, img])
execFileSync('mkfs.xfs', ['-q', '-m', 'reflink=1', img])
execFileSync('mount', ['-o', 'loop', img, mnt])
const w = await makeWorld({ blockSize: 1024 * 1024 })

async function sha256(path: string): Promise<string> {
  const h = createHash('sha256')
  for await (const chunk of createReadStream(path, { highWaterMark: 4 * MiB })) h.update(chunk as Buffer)
  return h.digest('hex')
}

const time = async <T>(fn: () => Promise<T>): Promise<[number, T]> => {
  const t = process.hrtime.bigint()
  const r = await fn()
  return [Number(process.hrtime.bigint() - t) / 1e9, r]
}

try {
  const src = join(mnt, 'disk.raw')
  writeMixedDisk(src, size, 7)
  const atBackup = await sha256(src)
  const machine = addMachine(w.catalog, { name: 'bench', disks: [{ path: src }] })
  const [backupSeconds, backup] = await time(() => runBackup(machine, w.world, { policy: DEFAULT_POLICY }))
  const pointId = backup.result.pointId
  if (listSnapshotClones(w.catalog, { pointId }).length !== 1) throw new Error('the backup kept no reflink clone: is the mount XFS with reflink=1?')
  mutateScattered(src, 0.05, 8) // the source moves on after the backup

  const base: RestoreWorld = { vault: w.vault, createWriter: createImageWriter }
  const tierWorld: RestoreWorld = { ...base, snapshotClones: (id) => listSnapshotClones(w.catalog, { pointId: id }) }
  const tierOut = join(mnt, 'restored-tier.raw')
  const vaultOut = join(mnt, 'restored-vault.raw')
  const [tierSeconds, tier] = await time(() => restorePoint(tierWorld, { pointId, mode: 'file', targetPath: tierOut }))
  const [vaultSeconds, vault] = await time(() => restorePoint(base, { pointId, mode: 'file', targetPath: vaultOut }))
  if (tier.disks[0]?.source !== 'snapshot-tier') throw new Error(`the tier restore came from ${tier.disks[0]?.source}: ${tier.disks[0]?.tierSkipped ?? ''}`)
  if (vault.disks[0]?.source !== 'vault') throw new Error('the vault restore did not come from the vault')
  const [tierSha, vaultSha] = [await sha256(tierOut), await sha256(vaultOut)]
  if (tierSha !== atBackup || vaultSha !== atBackup) throw new Error('a restore differs from the disk at backup time')

  const mbps = (s: number): string => (sizeMiB / s).toFixed(0)
  console.log(`instant restore bench: ${sizeMiB} MiB mixed raw disk on XFS (reflink), block size 1 MiB, backup ${backupSeconds.toFixed(2)} s`)
  console.log(`  snapshot tier (reflink copy + verify)  ${tierSeconds.toFixed(2)} s  ${mbps(tierSeconds)} MiB/s   new space ${(allocatedBytes(tierOut) / MiB).toFixed(0)} MiB allocated (shared with the clone)`)
  console.log(`  vault (read, decrypt, write)           ${vaultSeconds.toFixed(2)} s  ${mbps(vaultSeconds)} MiB/s   ${(allocatedBytes(vaultOut) / MiB).toFixed(0)} MiB allocated`)
  console.log(`  ratio vault / snapshot tier            ${(vaultSeconds / tierSeconds).toFixed(1)}×   both byte-identical to the disk at backup time`)
} finally {
  await w.close()
  for (let i = 0; i < 5; i++) {
    try { execFileSync('umount', [mnt]); break } catch { await new Promise((r) => setTimeout(r, 300)) }
  }
  await rm(root, { recursive: true, force: true })
}
