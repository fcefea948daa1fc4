import { afterEach, describe, expect, it } from 'vitest'
import { readdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { addMachine, listPointRows, runBackup } from '../../../electron/engine/backup/index.js'
import { parsePolicySpec } from '../../../electron/engine/policy/index.js'
import { randomBytes } from '../../helpers/qemu.js'
import { makeWorld, MiB, pointDiskSha256, type TestWorld } from './helpers.js'
import { createHash } from 'node:crypto'

let w: TestWorld | undefined
afterEach(async () => { await w?.close(); w = undefined })

describe('cancellation', () => {
  it('leaves the vault as it was: earlier points intact, no new point, the next backup works', async () => {
    w = await makeWorld()
    const disk = join(w.dir, 'disk.raw')
    const v1 = randomBytes(31, 6 * MiB)
    await writeFile(disk, v1)
    const m = addMachine(w.catalog, { name: 'vm', disks: [{ path: disk }] })
    const policy = parsePolicySpec({ snapshotTierDays: 0 })
    const r1 = await runBackup(m, w.world, { policy, snapshot: 'read' })
    const before = (await w.vault.listPoints()).map((p) => p.id)
    const generation = await w.vault.generation()

    const v2 = randomBytes(32, 6 * MiB)
    await writeFile(disk, v2)
    const ac = new AbortController()
    await expect(runBackup(m, w.world, {
      policy,
      snapshot: 'read',
      signal: ac.signal,
      progressIntervalMs: 0,
      onProgress: (p) => { if (p.bytesRead >= MiB) ac.abort() },
    })).rejects.toMatchObject({ code: 'CANCELLED' })
    expect((await w.vault.listPoints()).map((p) => p.id)).toEqual(before)
    expect(await w.vault.generation()).toBe(generation)
    expect(listPointRows(w.catalog).map((p) => p.id)).toEqual([r1.result.pointId])
    expect(await pointDiskSha256(w.vault, r1.result.pointId, 0)).toBe(createHash('sha256').update(v1).digest('hex'))
    expect((await readdir(w.dir)).filter((f) => f.includes('.tresor-'))).toEqual([])

    const r3 = await runBackup(m, w.world, { policy, snapshot: 'read' })
    expect(await pointDiskSha256(w.vault, r3.result.pointId, 0)).toBe(createHash('sha256').update(v2).digest('hex'))
  })
})
