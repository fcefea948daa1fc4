import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { basename, join, relative } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { EngineError } from '../../../electron/engine/errors.js'
import type { LocalVault, PointManifest, VerifyReport } from '../../../electron/engine/vault/index.js'
import { newTestVault, open, PASSPHRASE, scratchRoot, writePoint } from './fixtures/data.js'
import { cliEnv, tresor } from '../keys/fixtures/cli.js'

// RELIABILITY #12: one flipped bit anywhere in a pack (header, chunk data, index, trailer), a
// manifest, a block map or the config is detected, and the report names the damaged object and the
// recovery points it affects. Each sample flips one bit, checks, and flips it back.
const SAMPLES = { packHeader: 8, packData: 40, packIndex: 16, packTrailer: 8, manifest: 16, map: 16, config: 30 }
const base = mkdtempSync(join(scratchRoot(), 'tresor-tamper-'))
afterAll(() => rmSync(base, { recursive: true, force: true }))

function filesUnder(dir: string): string[] {
  const out: string[] = []
  for (const name of readdirSync(dir)) {
    const p = join(dir, name)
    if (statSync(p).isDirectory()) out.push(...filesUnder(p))
    else out.push(p)
  }
  return out.sort()
}

function flipBit(path: string, bit: number): void {
  const bytes = readFileSync(path)
  bytes[bit >> 3]! ^= 1 << (bit & 7)
  writeFileSync(path, bytes)
}

function pick<T>(items: T[], random: () => number): T {
  return items[Math.floor(random() * items.length)]!
}

describe('tamper: single bit flips', () => {
  it('detects and names every flipped bit in packs, indexes, manifests, block maps and the config', async () => {
    let state = Number(process.env.TRESOR_TAMPER_SEED ?? Date.now() % 1_000_000)
    const seed = state
    const random = () => {
      state = (Math.imul(state, 1103515245) + 12345) >>> 0
      return state / 4294967296
    }
    const { dir, key } = await newTestVault(join(base, 'vault'))
    const setup = await open(dir, key)
    const points: PointManifest[] = []
    for (const s of [1, 2, 3]) points.push(await writePoint(setup, { seed: s, blocks: 12 }))
    await setup.close()

    const all = filesUnder(dir)
    const packs = all.filter((p) => relative(dir, p).startsWith('packs/'))
    const manifests = all.filter((p) => relative(dir, p).startsWith('manifests/'))
    const maps = all.filter((p) => relative(dir, p).startsWith('maps/'))
    const config = join(dir, 'config')
    expect(packs.length).toBeGreaterThan(1)
    expect(manifests).toHaveLength(3)
    expect(maps.length).toBeGreaterThanOrEqual(3)

    const live = await open(dir, key) // pack checks re-read everything from disk on each verify
    const results: Record<string, { injected: number; detected: number; named: number }> = {}
    const misses: string[] = []
    const record = (category: string, detected: boolean, named: boolean, what: string) => {
      const r = (results[category] ??= { injected: 0, detected: 0, named: 0 })
      r.injected++
      if (detected) r.detected++
      if (named) r.named++
      if (!detected || !named) misses.push(`${category} ${what}: detected ${detected}, named ${named}`)
    }
    const names = (report: VerifyReport, id: string) =>
      report.problems.some((p) => p.object.includes(id) || p.message.includes(id)) && report.problems.some((p) => p.affectedPoints.length > 0)

    async function freshVerify(): Promise<VerifyReport | EngineError> {
      let vault: LocalVault | undefined
      try {
        vault = await open(dir, key)
        return await vault.verify({ readData: false })
      } catch (err) {
        if (err instanceof EngineError) return err
        throw err
      } finally {
        await vault?.close()
      }
    }

    try {
      for (const [category, count] of Object.entries(SAMPLES)) {
        for (let i = 0; i < count; i++) {
          let path: string
          let bit: number
          if (category.startsWith('pack')) {
            path = pick(packs, random)
            const size = statSync(path).size
            const range: Record<string, [number, number]> = {
              packHeader: [0, 24],
              packData: [24, Math.max(25, size - 16 - 400)],
              packIndex: [size - 16 - 200, size - 16], // the encrypted index sits just before the trailer
              packTrailer: [size - 16, size],
            }
            const [from, to] = range[category]!
            bit = (from + Math.floor(random() * (to - from))) * 8 + Math.floor(random() * 8)
          } else {
            path = category === 'manifest' ? pick(manifests, random) : category === 'map' ? pick(maps, random) : config
            bit = Math.floor(random() * statSync(path).size * 8)
          }
          const what = `${relative(dir, path)} bit ${bit}`
          flipBit(path, bit)
          try {
            if (category.startsWith('pack')) {
              const report = await live.verify({ readData: true })
              record(category, !report.ok, names(report, basename(path)), what)
            } else if (category === 'config') {
              const outcome = await freshVerify()
              const detected = outcome instanceof EngineError
              record(category, detected, detected && /config|key|vault/i.test(outcome.userMessage), what)
            } else {
              const outcome = await freshVerify()
              const id = category === 'manifest' ? basename(path) : basename(join(path, '..'))
              if (outcome instanceof EngineError) record(category, true, outcome.userMessage.includes(id), what)
              else record(category, !outcome.ok, names(outcome, id), what)
            }
          } finally {
            flipBit(path, bit)
          }
        }
      }
      // Restored: the vault is clean again (no false positives left behind).
      expect((await live.verify({ readData: true })).ok).toBe(true)
    } finally {
      await live.close()
    }
    const injected = Object.values(results).reduce((a, r) => a + r.injected, 0)
    const detected = Object.values(results).reduce((a, r) => a + r.detected, 0)
    console.log(`bit flips detected ${detected}/${injected} (seed ${seed}): ${JSON.stringify(results)}`)
    expect(misses).toEqual([])

    // The real CLI: a damaged pack makes `tresor verify --read-data` exit 1 and name the point.
    const home = join(base, 'home')
    const env = cliEnv({ TRESOR_PASSPHRASE: PASSPHRASE, TRESOR_HOME: home })
    const victim = packs[0]!
    flipBit(victim, 24 * 8 + 13)
    const r = await tresor(['--json', '--vault', dir, 'verify', '--read-data'], env)
    flipBit(victim, 24 * 8 + 13)
    expect(r.code).toBe(1)
    const report = JSON.parse(r.stdout) as VerifyReport
    expect(report.ok).toBe(false)
    expect(report.problems.flatMap((p) => p.affectedPoints.map((a) => a.pointId)).some((id) => points.some((p) => p.id === id))).toBe(true)
    const human = await tresor(['--vault', dir, 'verify'], env)
    expect(human.code).toBe(0)
    expect(human.stdout).toMatch(/intact/)
  })
})
