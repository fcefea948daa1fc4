import { createHash } from 'node:crypto'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { cliEnv, spawnTresor, tresorJson } from '../keys/fixtures/cli.js'
import { scratchRoot } from './fixtures/data.js'

// RELIABILITY #1 end to end: the real `tresor backup` (job, pipeline, vault) is SIGKILLed at random
// moments while the source disk changes between versions. After each kill `tresor verify
// --read-data` is clean, `tresor points` lists only complete points, and each point restores
// byte-identical to the source version it was taken from (SHA-256 oracle). The next backup succeeds.
const TRIALS = Number(process.env.TRESOR_CLI_CRASH_TRIALS ?? 6)
const DISK_BYTES = 3 * 1024 * 1024
const base = mkdtempSync(join(scratchRoot(), 'tresor-crash-cli-'))
afterAll(() => rmSync(base, { recursive: true, force: true }))

/** Version v of the source disk: every 64 KiB region changes with probability 1/3 from the last version. */
function writeVersion(path: string, version: number, previous: Buffer | undefined): Buffer {
  const out = previous ? Buffer.from(previous) : Buffer.alloc(DISK_BYTES)
  for (let region = 0; region < DISK_BYTES / 65536; region++) {
    if (previous && (region * 7 + version * 13) % 3 !== 0) continue
    if (region % 5 === 4) {
      out.fill(0, region * 65536, (region + 1) * 65536) // zero regions stay zero blocks
      continue
    }
    let x = (version * 7919 + region * 104729 + 1) >>> 0
    for (let p = region * 65536; p < (region + 1) * 65536; p += 4) {
      x ^= x << 13
      x >>>= 0
      x ^= x >>> 17
      x ^= x << 5
      x >>>= 0
      out.writeUInt32LE(x, p)
    }
  }
  writeFileSync(path, out)
  return out
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex')

describe('crash: SIGKILL of the real `tresor backup`', () => {
  it(`survives ${TRIALS} kills; every point restores byte-identical`, { timeout: 1_800_000 }, async () => {
    const home = join(base, 'home')
    const vaultDir = join(base, 'vault')
    const disk = join(base, 'disk.img')
    const restoreDir = join(base, 'restored')
    mkdirSync(restoreDir)
    const env = cliEnv({ TRESOR_HOME: home, TRESOR_PASSPHRASE: 'crash cli', TRESOR_SCRYPT_LOG2N: '15' })
    await tresorJson(['--json', 'vault', 'init', vaultDir, '--block-size', '64K'], env)
    let content = writeVersion(disk, 0, undefined)
    await tresorJson(['--json', 'machine', 'add', 'vm', disk], env)

    const expected = new Map<string, string>() // point id → sha256 of the source version
    const restored = new Set<string>()
    const started = Date.now()
    const first = await tresorJson(['--json', 'backup', 'vm'], env)
    const fullMs = Date.now() - started
    expected.set(first.pointId, sha(content))

    const stats = { killed: 0, finished: 0, lateCommits: 0, survived: 0 }
    const failures: string[] = []
    for (let t = 1; t <= TRIALS; t++) {
      content = writeVersion(disk, t, content)
      const versionSha = sha(content)
      const child = spawnTresor(['--json', 'backup', 'vm'], env)
      let stdout = ''
      child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
      const delay = Math.floor(fullMs * (0.1 + Math.random() * 0.7))
      const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)))
      const timer = setTimeout(() => child.kill('SIGKILL'), delay)
      const code = await exited
      clearTimeout(timer)
      if (code === 0) {
        expected.set(JSON.parse(stdout).pointId, versionSha)
        stats.finished++
      } else stats.killed++

      try {
        const verify = await tresorJson(['--json', 'verify', '--read-data'], env)
        if (!verify.ok) failures.push(`trial ${t}: verify ${JSON.stringify(verify.problems)}`)
        const points = (await tresorJson<{ id: string }[]>(['--json', 'points', 'vm'], env)).map((p) => p.id)
        for (const id of expected.keys()) if (!points.includes(id)) failures.push(`trial ${t}: point ${id} disappeared`)
        for (const id of points) {
          if (!expected.has(id)) {
            // Committed just before the kill: it must be this trial's version.
            expected.set(id, versionSha)
            stats.lateCommits++
          }
          if (restored.has(id)) continue
          const target = join(restoreDir, `${id}.img`)
          await tresorJson(['--json', 'restore', id, '--to', target, '--format', 'raw'], env)
          const got = sha(readFileSync(target))
          rmSync(target)
          if (got !== expected.get(id)) failures.push(`trial ${t}: point ${id} restores with a different SHA-256`)
          restored.add(id)
        }
        stats.survived++
      } catch (err) {
        failures.push(`trial ${t} (kill after ${delay} ms): ${String((err as Error)?.message ?? err)}`)
      }
    }
    // The next backup succeeds and restores identical.
    content = writeVersion(disk, TRIALS + 1, content)
    const last = await tresorJson(['--json', 'backup', 'vm'], env)
    const target = join(restoreDir, 'last.img')
    await tresorJson(['--json', 'restore', last.pointId, '--to', target, '--format', 'raw'], env)
    expect(sha(readFileSync(target))).toBe(sha(content))
    console.log(`CLI backup crash trials: ${TRIALS}, survived: ${stats.survived}; ${JSON.stringify(stats)}; full backup ${fullMs} ms; points restored ${restored.size + 1}`)
    expect(failures).toEqual([])
  })
})
