import { mkdtempSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { checkPointData, newTestVault, open, scratchRoot, writePoint } from './fixtures/data.js'
import { killAllChildren, startChild, type VaultChild } from './fixtures/child.js'

// RELIABILITY #2: prune (delete manifests, mark, repack, sweep) is SIGKILLed at random phase
// boundaries and random times. After each kill no kept point has lost a chunk, the point being
// deleted is either complete or gone, verify --read-data is clean, and a rerun of prune completes.
const TRIALS = Number(process.env.TRESOR_PRUNE_CRASH_TRIALS ?? 12)
const base = mkdtempSync(join(scratchRoot(), 'tresor-crash-prune-'))
afterAll(() => {
  killAllChildren()
  rmSync(base, { recursive: true, force: true })
})

describe('crash: SIGKILL during prune', () => {
  it(`survives ${TRIALS} kills at phase boundaries and random moments`, { timeout: 1_200_000 }, async () => {
    const { dir, key } = await newTestVault(join(base, 'vault'))
    const target = { dir, keyB64: key.toString('base64') }
    const setup = await open(dir, key)
    let seed = 1
    for (; seed <= 4; seed++) await writePoint(setup, { seed, blocks: 16 })
    await setup.close()

    const phasesSeen = new Map<string, number>()
    const stats = { killedAtPhase: 0, killedByTimer: 0, finished: 0, victimGone: 0, victimKept: 0, survived: 0 }
    const failures: string[] = []
    let next: Promise<VaultChild> = startChild(target)
    for (let t = 1; t <= TRIALS; t++) {
      const vault = await open(dir, key)
      const before = await vault.listPoints()
      await vault.close()
      const victim = before[0]!

      const child = await next
      next = startChild(target)
      const byPhase = t % 2 === 1
      let killed = false
      if (byPhase) {
        // Kill at the k-th progress event (phase boundaries and progress steps).
        const at = 1 + Math.floor(Math.random() * 8)
        let seen = 0
        child.onMessage((m) => {
          if (m.kind !== 'phase') return
          phasesSeen.set(m.phase, (phasesSeen.get(m.phase) ?? 0) + 1)
          if (++seen === at && !killed) {
            killed = true
            child.proc.kill('SIGKILL')
          }
        })
      } else {
        setTimeout(() => child.proc.kill('SIGKILL'), 50 + Math.floor(Math.random() * 1500))
      }
      child.send({ kind: 'prune', deletePointIds: [victim.id] })
      const outcome = await child.outcome
      if (outcome.kind === 'done') stats.finished++
      else if (outcome.kind === 'killed') stats[byPhase ? 'killedAtPhase' : 'killedByTimer']++
      else failures.push(`trial ${t}: prune failed ${JSON.stringify(outcome)}`)

      const after = await open(dir, key)
      try {
        const report = await after.verify({ readData: true })
        if (!report.ok) failures.push(`trial ${t}: verify ${JSON.stringify(report.problems)}`)
        const listed = await after.listPoints()
        const ids = new Set(listed.map((p) => p.id))
        for (const p of before) if (p.id !== victim.id && !ids.has(p.id)) failures.push(`trial ${t}: kept point ${p.id} disappeared`)
        if (ids.has(victim.id)) stats.victimKept++
        else stats.victimGone++
        for (const p of listed) await checkPointData(after, p)
        // Rerun completes (it finishes the interrupted deletion), then the next backup works.
        const rerun = await after.prune({ deletePointIds: ids.has(victim.id) ? [victim.id] : [] })
        expect(rerun.pointsRemoved).toBe(ids.has(victim.id) ? 1 : 0)
        expect((await after.verify({ readData: true })).ok).toBe(true)
        await writePoint(after, { seed: seed++, blocks: 16 })
        stats.survived++
      } catch (err) {
        failures.push(`trial ${t}: ${String((err as Error)?.message ?? err)}`)
      } finally {
        await after.close()
      }
    }
    ;(await next).proc.kill('SIGKILL')
    console.log(`prune crash trials: ${TRIALS}, survived: ${stats.survived}; ${JSON.stringify(stats)}; progress events seen ${JSON.stringify(Object.fromEntries(phasesSeen))}`)
    expect(failures).toEqual([])
  })
})
