import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import { join } from 'node:path'
import { addMachine, runBackup } from '../../../electron/engine/backup/index.js'
import { DEFAULT_POLICY } from '../../../electron/engine/policy/index.js'
import { applyOps, createImage, mixedOps, qemuGuestSha256, requireQemu, type QemuFormat } from '../../helpers/qemu.js'
import { makeWorld, mapKinds, MiB, pointDiskSha256, TEST_BLOCK_SIZE, type TestWorld } from './helpers.js'

let w: TestWorld | undefined
beforeAll(() => requireQemu())
afterEach(async () => { await w?.close(); w = undefined })

const noTier = { ...DEFAULT_POLICY, snapshotTierDays: 0 }

describe('backup round trip through the vault matches qemu-img', () => {
  const cases: { format: QemuFormat; opts: string[]; size: number }[] = [
    { format: 'raw', opts: [], size: 8 * MiB + 512 * 3 },
    { format: 'qcow2', opts: ['cluster_size=65536'], size: 12 * MiB + 512 },
    { format: 'vpc', opts: ['subformat=dynamic'], size: 8 * MiB },
    { format: 'vhdx', opts: [], size: 16 * MiB },
    { format: 'vmdk', opts: [], size: 10 * MiB },
  ]
  for (const c of cases) {
    it(`${c.format}: full then incremental, both points byte-identical to the source at each moment`, async () => {
      w = await makeWorld()
      const file = join(w.dir, `disk.${c.format}`)
      await createImage(file, c.format, c.size, c.opts)
      await applyOps(file, c.format, mixedOps(7, c.size, 30, { discard: c.format !== 'vpc' }), w.dir)
      const oracle1 = await qemuGuestSha256(file, c.format, w.dir)
      const machine = addMachine(w.catalog, { name: `m-${c.format}`, disks: [{ path: file }] })
      const r1 = await runBackup(machine, w.world, { policy: noTier, snapshot: 'read' })
      expect(await pointDiskSha256(w.vault, r1.result.pointId, 0)).toBe(oracle1)
      expect(r1.result.consistency).toBe('crash')
      expect(r1.result.bytesNew).toBeGreaterThan(0)

      // Guest writes: two 4 KiB writes in distinct blocks → exactly two blocks change.
      const off1 = 2 * TEST_BLOCK_SIZE + 4096
      const off2 = 5 * TEST_BLOCK_SIZE
      await applyOps(file, c.format, [
        { kind: 'random', offset: off1, length: 4096, seed: 991 },
        { kind: 'random', offset: off2, length: 4096, seed: 992 },
      ], w.dir)
      const oracle2 = await qemuGuestSha256(file, c.format, w.dir)
      const r2 = await runBackup(machine, w.world, { policy: noTier, snapshot: 'read' })
      expect(await pointDiskSha256(w.vault, r2.result.pointId, 0)).toBe(oracle2)
      expect(await pointDiskSha256(w.vault, r1.result.pointId, 0)).toBe(oracle1)
      expect(r2.result.bytesNew).toBe(2 * TEST_BLOCK_SIZE)
      const kinds = await mapKinds(w.vault, r2.result.pointId, 0)
      const disk = (await w.vault.getPoint(r2.result.pointId)).disks[0]!
      expect(kinds.data + kinds.zero + kinds.unallocated).toBe(Math.ceil(disk.virtualSize / TEST_BLOCK_SIZE))
      expect(disk.blockCount).toBe(Math.ceil(disk.virtualSize / TEST_BLOCK_SIZE))
    })
  }
})
