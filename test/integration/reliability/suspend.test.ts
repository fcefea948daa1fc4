import { mkdtempSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { afterAll, describe, expect, it } from 'vitest'
import { breakLock } from '../../../electron/engine/vault/index.js'
import { checkPointData, newTestVault, open, scratchRoot, writePoint } from './fixtures/data.js'
import { killAllChildren, startChild } from './fixtures/child.js'

// RELIABILITY #19: a backup in another process is suspended (SIGSTOP) for longer than its lock
// lifetime. Meanwhile a prune finds its lock stale, the user clears it (`tresor vault unlock
// --force`) and the prune runs. Resumed (SIGCONT), the backup must notice that it lost its lock and
// abort before committing: no point appears, the earlier point and a later backup are intact.
const base = mkdtempSync(join(scratchRoot(), 'tresor-suspend-'))
afterAll(() => {
  killAllChildren()
  rmSync(base, { recursive: true, force: true })
})

describe('suspend: SIGSTOP a backup past its lock lifetime', () => {
  it('the resumed backup aborts with VAULT_LOCK_LOST after a prune ran; nothing is lost', { timeout: 120_000 }, async () => {
    const { dir, key } = await newTestVault(join(base, 'vault'))
    const setup = await open(dir, key)
    await writePoint(setup, { seed: 1, blocks: 16 })
    const before = (await setup.listPoints()).map((p) => p.id)
    await setup.close()

    const lifetimeMs = 1500
    const child = await startChild({ dir, keyB64: key.toString('base64'), lockLifetimeMs: lifetimeMs })
    let stopped = false
    const stoppedMidway = new Promise<void>((resolve) => {
      child.onMessage((m) => {
        if (m.kind === 'block' && m.i === 24 && !stopped) {
          stopped = true
          child.proc.kill('SIGSTOP')
          resolve()
        }
      })
    })
    child.send({ kind: 'backup', spec: { seed: 2, blocks: 64 } })
    await stoppedMidway
    await sleep(lifetimeMs + 1000)

    // The suspended holder is alive, so its lock is reported as stale, never broken silently (every
    // process judges staleness by the same lifetime, here the short one).
    const other = await open(dir, key, { locks: { lifetimeMs } })
    try {
      await expect(other.prune({ deletePointIds: [] })).rejects.toMatchObject({ code: 'VAULT_LOCK_STALE' })
      const broken = await breakLock(dir)
      expect(broken.map((l) => l.pid)).toContain(child.proc.pid)
      const pruned = await other.prune({ deletePointIds: [] })
      expect(pruned.pointsRemoved).toBe(0)
    } finally {
      await other.close()
    }

    child.proc.kill('SIGCONT')
    const outcome = await child.outcome
    expect(outcome).toMatchObject({ kind: 'failed', code: 'VAULT_LOCK_LOST' })

    const after = await open(dir, key)
    try {
      expect((await after.listPoints()).map((p) => p.id)).toEqual(before)
      expect((await after.verify({ readData: true })).ok).toBe(true)
      for (const p of await after.listPoints()) await checkPointData(after, p)
      const next = await writePoint(after, { seed: 3, blocks: 16 })
      await checkPointData(after, next)
    } finally {
      await after.close()
    }
  })
})
