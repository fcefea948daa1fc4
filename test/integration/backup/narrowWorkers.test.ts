import { afterEach, describe, expect, it } from 'vitest'
import { join } from 'node:path'
import { createHash } from 'node:crypto'
import { open, readFile } from 'node:fs/promises'
import { addMachine, runBackup, type BackupWorld } from '../../../electron/engine/backup/index.js'
import { openImage } from '../../../electron/engine/formats/index.js'
import { parsePolicySpec } from '../../../electron/engine/policy/index.js'
import { openVault, type LocalVault } from '../../../electron/engine/vault/index.js'
import type { WorkerPool } from '../../../electron/engine/workers/pool.js'
import { randomBytes } from '../../helpers/qemu.js'
import { makeWorld, MiB, pointDiskSha256, TEST_BLOCK_SIZE, type TestWorld } from './helpers.js'

let w: TestWorld | undefined
let vault: LocalVault | undefined
afterEach(async () => {
  await vault?.close()
  vault = undefined
  await w?.close()
  w = undefined
})

const policy = parsePolicySpec({ snapshotTierDays: 0 })

describe('chunk workers of an incremental backup', () => {
  it('an incremental backup starts sealing on one chunk worker; a full one, and every session after either, use them all', async () => {
    w = await makeWorld()
    vault = await openVault(w.vaultDir, w.masterKey, { workers: 2 })
    const pool = (vault as unknown as { ctx: { pool(): WorkerPool<unknown, unknown> } }).ctx.pool()
    expect(pool.size).toBe(2)
    // the workers taking tasks whenever a backup opens its disk (cleared before each backup)
    let seen: number[] = []
    const controller = new AbortController()
    let abortOnOpen = false
    const world: BackupWorld = {
      ...w.world,
      vault,
      openImage: (p) => {
        seen.push(pool.activeWorkers)
        if (abortOnOpen) controller.abort()
        return openImage(p)
      },
    }
    const disk = join(w.dir, 'd.raw')
    const fh = await open(disk, 'w')
    await fh.write(randomBytes(1, 8 * MiB), 0, 8 * MiB, 0)
    await fh.close()
    const m = addMachine(w.catalog, { name: 'vm', disks: [{ path: disk }] })

    const full = await runBackup(m, world, { policy, snapshot: 'read' })
    expect(new Set(seen)).toEqual(new Set([2]))
    expect(full.result.bytesNew).toBe(8 * MiB)

    const change = await open(disk, 'r+')
    await change.write(randomBytes(2, 3 * TEST_BLOCK_SIZE), 0, 3 * TEST_BLOCK_SIZE, 2 * MiB)
    await change.close()
    seen = []
    const incremental = await runBackup(m, world, { policy, snapshot: 'read' })
    expect(new Set(seen)).toEqual(new Set([1]))
    expect(incremental.result.bytesNew).toBe(3 * TEST_BLOCK_SIZE)
    expect(pool.activeWorkers).toBe(2) // widened again when the session committed
    const sha = createHash('sha256').update(await readFile(disk)).digest('hex')
    expect(await pointDiskSha256(vault, incremental.result.pointId, 0)).toBe(sha)

    // an incremental session that is cancelled widens the pool too
    const again = await open(disk, 'r+')
    await again.write(randomBytes(3, TEST_BLOCK_SIZE), 0, TEST_BLOCK_SIZE, 5 * MiB)
    await again.close()
    abortOnOpen = true
    seen = []
    await expect(runBackup(m, world, { policy, snapshot: 'read', signal: controller.signal })).rejects.toMatchObject({ code: 'CANCELLED' })
    expect(new Set(seen)).toEqual(new Set([1]))
    expect(pool.activeWorkers).toBe(2)
    expect((await vault.listPoints()).map((p) => p.id).sort()).toEqual([full.result.pointId, incremental.result.pointId].sort())
  })
})
