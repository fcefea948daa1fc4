import { mkdtempSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { checkPointData, newTestVault, open, PASSPHRASE, scratchRoot, writePoint, type PointSpec } from './fixtures/data.js'
import { killAllChildren, startChild, type VaultChild } from './fixtures/child.js'
import { cliEnv, tresor } from '../keys/fixtures/cli.js'
import { prng as uint32Prng } from '../../helpers/qemu.js'

// RELIABILITY #1: a child process backing up into the vault is SIGKILLed at random moments. After
// each kill: verify --read-data is clean, every committed point reads back byte-identical, no
// partial point is listed, and the next backup succeeds (the dead holder's lock is cleared).
const TRIALS = Number(process.env.TRESOR_CRASH_TRIALS ?? 50)
const BLOCKS = 12

function prng(seed: number): () => number {
  const next = uint32Prng(seed)
  return () => next() / 4294967296
}

const base = mkdtempSync(join(scratchRoot(), 'tresor-crash-'))
afterAll(() => {
  killAllChildren()
  rmSync(base, { recursive: true, force: true })
})

describe('crash: SIGKILL during backup', () => {
  // Formats 3 (the default) and 2 with fewer kills: their recipe packs are published after the
  // data packs, so a kill must never leave a recipe whose parts are missing; format 3's container
  // records carry their parts' sub-entries in the same pack index.
  it.each([
    { formatVersion: 1, trials: TRIALS },
    { formatVersion: 3, trials: Math.ceil(TRIALS / 2) },
    { formatVersion: 2, trials: Math.ceil(TRIALS / 4) },
  ])(`survives random kills (vault format $formatVersion, $trials kills)`, { timeout: 1_800_000 }, async ({ formatVersion, trials }) => {
    const seed = Number(process.env.TRESOR_CRASH_SEED ?? Date.now() % 1_000_000)
    const random = prng(seed)
    console.log(`crash test seed ${seed} (rerun with TRESOR_CRASH_SEED=${seed}), vault format ${formatVersion}`)
    const { dir, key } = await newTestVault(join(base, `vault-${formatVersion}`), formatVersion)
    const keyB64 = key.toString('base64')
    const committed = new Map<string, number>()

    // An uninterrupted run measures how long one backup takes here (timed kills are drawn from it).
    // The first point is written here; its first chunk lets each child start its workers early.
    const parent = await open(dir, key)
    const firstPoint = await writePoint(parent, { seed: 1, blocks: BLOCKS })
    committed.set(firstPoint.id, 1)
    let warmChunkHex = ''
    for await (const e of parent.readBlockMap(firstPoint.id, 0)) {
      if (e.kind === 'data') {
        warmChunkHex = e.chunkId.toString('hex')
        break
      }
    }
    const target = { dir, keyB64, warmChunkHex }

    // An uninterrupted child run measures how long one backup takes here (timed kills are drawn from it).
    let next: Promise<VaultChild> = startChild(target)
    const first = await next
    next = startChild(target)
    const started = Date.now()
    first.send({ kind: 'backup', spec: { seed: 2, blocks: BLOCKS } })
    const firstOutcome = await first.outcome
    const fullMs = Date.now() - started
    expect(firstOutcome).toMatchObject({ kind: 'done' })
    committed.set((firstOutcome as { result: { pointId: string } }).result.pointId, 2)

    const stats = { killedDuringBlocks: 0, killedDuringCommit: 0, killedByTimer: 0, finishedBeforeKill: 0, lateCommits: 0, survived: 0 }
    const failures: string[] = []
    let tinySeed = 1_000_000
    for (let t = 1; t <= trials; t++) {
      const child = await next
      next = startChild(target)
      const spec: PointSpec = { seed: 100 + t, blocks: BLOCKS }
      const r = random()
      let mode: 'block' | 'commit' | 'timer'
      if (r < 0.45) {
        mode = 'block'
        const at = Math.floor(random() * BLOCKS)
        child.onMessage((m) => {
          if (m.kind === 'block' && m.i === at) child.proc.kill('SIGKILL')
        })
      } else if (r < 0.75) {
        mode = 'commit'
        const delay = Math.floor(random() * 40)
        child.onMessage((m) => {
          if (m.kind === 'committing') setTimeout(() => child.proc.kill('SIGKILL'), delay)
        })
      } else {
        mode = 'timer'
        setTimeout(() => child.proc.kill('SIGKILL'), Math.floor(random() * fullMs * 1.2))
      }
      child.send({ kind: 'backup', spec })
      const outcome = await child.outcome
      if (outcome.kind === 'done') {
        committed.set(outcome.result.pointId, spec.seed)
        stats.finishedBeforeKill++
      } else if (outcome.kind === 'killed') {
        stats[mode === 'block' ? 'killedDuringBlocks' : mode === 'commit' ? 'killedDuringCommit' : 'killedByTimer']++
      } else {
        failures.push(`trial ${t}: backup failed ${JSON.stringify(outcome)}`)
        continue
      }

      const vault = parent // long-lived, like the app's; sees the children's packs and manifests
      try {
        const report = await vault.verify({ readData: true })
        if (!report.ok) {
          failures.push(`trial ${t} (${mode}): verify found ${JSON.stringify(report.problems)}`)
          continue
        }
        const listed = await vault.listPoints()
        const ids = new Set(listed.map((p) => p.id))
        for (const id of committed.keys()) if (!ids.has(id)) failures.push(`trial ${t}: committed point ${id} disappeared`)
        for (const p of listed) {
          if (!committed.has(p.id)) {
            // Killed after the manifest became durable but before it could report: a complete point.
            if (Number(p.labels.seed) !== spec.seed) failures.push(`trial ${t}: unexpected point ${p.id}`)
            committed.set(p.id, spec.seed)
            stats.lateCommits++
          }
          await checkPointData(vault, p)
        }
        // The next backup succeeds at once: the dead child's lock must not block it.
        const tiny = await writePoint(vault, { seed: tinySeed++, blocks: 2 })
        committed.set(tiny.id, Number(tiny.labels.seed))
        await checkPointData(vault, tiny)
        stats.survived++
      } catch (err) {
        failures.push(`trial ${t} (${mode}): ${String((err as Error)?.message ?? err)}`)
      }
    }
    ;(await next).proc.kill('SIGKILL')
    await parent.close()
    console.log(`crash trials: ${trials}, survived: ${stats.survived}; ${JSON.stringify(stats)}; full backup ${fullMs} ms; points ${committed.size}`)
    expect(failures).toEqual([])

    // The real CLI agrees, and prune reclaims what the killed backups left behind.
    const home = join(base, 'home')
    const env = cliEnv({ TRESOR_PASSPHRASE: PASSPHRASE, TRESOR_HOME: home })
    const verify = await tresor(['--json', '--vault', dir, 'verify', '--read-data'], env)
    expect(verify.code, verify.stderr).toBe(0)
    const verified = JSON.parse(verify.stdout)
    expect(verified.ok).toBe(true)
    const prune = await tresor(['--json', '--vault', dir, 'prune'], env)
    expect(prune.code, prune.stderr).toBe(0)
    expect(JSON.parse(prune.stdout).pointsRemoved).toBe(0)
    const rebuild = await tresor(['--json', '--vault', dir, 'catalog', 'rebuild'], env)
    expect(rebuild.code, rebuild.stderr).toBe(0)
    expect(JSON.parse(rebuild.stdout).points).toBe(committed.size)
    const after = await tresor(['--json', '--vault', dir, 'verify', '--read-data'], env)
    expect(JSON.parse(after.stdout)).toMatchObject({ ok: true, unreferencedPacks: 0 })
    console.log(`orphan packs before prune: ${verified.unreferencedPacks}; prune freed ${JSON.parse(prune.stdout).bytesFreed} bytes`)
  })
})
