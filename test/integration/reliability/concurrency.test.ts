import { mkdtempSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { checkPointData, newTestVault, open, scratchRoot, specOf, writePoint } from './fixtures/data.js'
import { killAllChildren, startChild } from './fixtures/child.js'

// RELIABILITY #16 (restic #2452): a backup and a prune started together in two processes. The
// backup re-uses exactly the content of the point being pruned, so it deduplicates against the
// chunks the prune wants to free: with a locking or GC bug the new point would reference missing
// chunks. Both must complete (one waits for the other's lock); verify stays clean; nothing is lost.
const ROUNDS = Number(process.env.TRESOR_CONCURRENCY_ROUNDS ?? 6)
const base = mkdtempSync(join(scratchRoot(), 'tresor-concurrency-'))
afterAll(() => {
  killAllChildren()
  rmSync(base, { recursive: true, force: true })
})

describe('concurrency: backup and prune together', () => {
  // format 2 too: its dead recipes must never outlive their parts (a case this test found)
  it.each([1, 2])(`keeps every point intact over ${ROUNDS} interleavings (vault format %i)`, async (formatVersion) => {
    const { dir, key } = await newTestVault(join(base, `vault-${formatVersion}`), formatVersion)
    const target = { dir, keyB64: key.toString('base64'), waitMs: 120_000 }
    const setup = await open(dir, key)
    for (const seed of [1, 2, 3]) await writePoint(setup, { seed, blocks: 12 })
    await setup.close()

    const orders: string[] = []
    for (let round = 1; round <= ROUNDS; round++) {
      const before = await open(dir, key)
      const existing = await before.listPoints()
      await before.close()
      const victim = existing[0]!
      const victimSeed = specOf(victim).seed

      const [backup, prune] = await Promise.all([startChild(target), startChild(target)])
      const finished: string[] = []
      const backupDone = backup.outcome.then((o) => (finished.push('backup'), o))
      const pruneDone = prune.outcome.then((o) => (finished.push('prune'), o))
      const delay = Math.floor(Math.random() * 300)
      const backupFirst = Math.random() < 0.5
      const first = backupFirst ? backup : prune
      const second = backupFirst ? prune : backup
      const messages = {
        backup: { kind: 'backup', spec: { seed: victimSeed, blocks: 12 } },
        prune: { kind: 'prune', deletePointIds: [victim.id] },
      }
      first.send(backupFirst ? messages.backup : messages.prune)
      await new Promise((r) => setTimeout(r, delay))
      second.send(backupFirst ? messages.prune : messages.backup)
      const [b, p] = await Promise.all([backupDone, pruneDone])
      orders.push(`${backupFirst ? 'backup' : 'prune'}+${delay}ms→${finished.join(',')}`)
      // the whole outcome in the message: a failed child's code and message say why
      expect(b, `round ${round} backup: ${JSON.stringify(b)}`).toMatchObject({ kind: 'done' })
      expect(p, `round ${round} prune: ${JSON.stringify(p)}`).toMatchObject({ kind: 'done', result: { pointsRemoved: 1 } })
      const newId = (b as { result: { pointId: string } }).result.pointId

      const after = await open(dir, key)
      try {
        const report = await after.verify({ readData: true })
        expect(report.problems, `round ${round}`).toEqual([])
        const ids = (await after.listPoints()).map((x) => x.id).sort()
        const expected = [...existing.filter((x) => x.id !== victim.id).map((x) => x.id), newId].sort()
        expect(ids, `round ${round}`).toEqual(expected)
        for (const point of await after.listPoints()) await checkPointData(after, point)
      } finally {
        await after.close()
      }
    }
    console.log(`concurrency: ${ROUNDS} backup+prune interleavings, 0 invariant violations; ${orders.join('; ')}`)
  })
})
