/**
 * Restore pipeline throughput, in-process (no CLI start-up): a mixed qcow2 image (random, compressible,
 * zeros and holes) is backed up into a real vault, then restored to raw and to qcow2 with
 * `restorePoint`; the same run times `qemu-img convert` of the source to the same formats as the peer.
 *
 *   node --import tsx test/bench/restorePipeline.ts            (256 MiB)
 *   RESTORE_BENCH_MIB=1024 node --import tsx test/bench/restorePipeline.ts
 */
import { rm, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { addMachine, runBackup } from '../../electron/engine/backup/index.js'
import { createImageWriter } from '../../electron/engine/formats/index.js'
import { DEFAULT_POLICY } from '../../electron/engine/policy/index.js'
import { restorePoint } from '../../electron/engine/restore/pipeline.js'
import { applyOps, createImage, qemuImg, type IoOp } from '../helpers/qemu.js'
import { makeWorld, MiB } from '../integration/backup/helpers.js'

const sizeMiB = Number(process.env.RESTORE_BENCH_MIB) || 256
/** Optional pipeline tuning (MiB): batch per readChunks call, bytes in flight. */
const batchMiB = Number(process.env.RESTORE_BENCH_BATCH_MIB) || undefined
const inFlightMiB = Number(process.env.RESTORE_BENCH_INFLIGHT_MIB) || undefined
const tuning = {
  ...(batchMiB ? { batchBytes: batchMiB * 1024 * 1024 } : {}),
  ...(inFlightMiB ? { maxBytesInFlight: inFlightMiB * 1024 * 1024 } : {}),
}
const size = sizeMiB * MiB

const w = await makeWorld({ blockSize: 1024 * 1024 })
try {
  const src = join(w.dir, 'src.qcow2')
  await createImage(src, 'qcow2', size)
  const ops: IoOp[] = []
  for (let off = 0, i = 0; off < size; off += 8 * MiB, i++) {
    // per 8 MiB: 35 % random, 25 % compressible, the rest zeros or never written
    ops.push({ kind: 'random', offset: off, length: Math.round(2.8 * MiB / 4096) * 4096, seed: i })
    ops.push({ kind: 'compressed', offset: off + 3 * MiB, length: 2 * MiB, seed: 1000 + i, compressible: true })
    if (i % 2 === 0) ops.push({ kind: 'zero', offset: off + 5 * MiB, length: MiB })
  }
  await applyOps(src, 'qcow2', ops, w.dir)
  const machine = addMachine(w.catalog, { name: 'bench', disks: [{ path: src }] })
  const point = (await runBackup(machine, w.world, { policy: { ...DEFAULT_POLICY, snapshotTierDays: 0 }, snapshot: 'read' })).result.pointId

  const time = async (fn: () => Promise<unknown>): Promise<number> => {
    const t = process.hrtime.bigint()
    await fn()
    return Number(process.hrtime.bigint() - t) / 1e9
  }
  const rows: string[] = []
  for (const format of ['raw', 'qcow2'] as const) {
    const out = join(w.dir, `restored.${format}`)
    const peerOut = join(w.dir, `peer.${format}`)
    const rss0 = process.memoryUsage().rss
    const ours = await time(() => restorePoint({ vault: w.vault, createWriter: createImageWriter }, { pointId: point, mode: 'file', targetPath: out, format }, tuning))
    const rss1 = process.memoryUsage().rss
    const peer = await time(() => qemuImg('convert', '-f', 'qcow2', '-O', format, src, peerOut))
    const mbps = (s: number) => (size / MiB / s).toFixed(0)
    rows.push(
      `restore → ${format.padEnd(5)}  ${ours.toFixed(2)} s  ${mbps(ours)} MiB/s   qemu-img convert ${peer.toFixed(2)} s  ${mbps(peer)} MiB/s   ratio ${(peer / ours).toFixed(2)}×   ` +
        `allocated ${((await stat(out)).blocks * 512 / MiB).toFixed(1)} MiB (qemu ${((await stat(peerOut)).blocks * 512 / MiB).toFixed(1)} MiB)   rss +${((rss1 - rss0) / MiB).toFixed(0)} MiB`,
    )
    await rm(out, { force: true })
    await rm(peerOut, { force: true })
  }
  console.log(`Restore pipeline, ${sizeMiB} MiB mixed qcow2 source, 1 MiB vault blocks, tuning ${JSON.stringify(tuning)} (ratio > 1: Tresor faster than qemu-img reading the source itself)`)
  for (const r of rows) console.log(r)
} finally {
  await w.close()
}
