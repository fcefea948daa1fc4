import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { hostname } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { execFile } from 'node:child_process'
import { createRequire } from 'node:module'
import { afterAll, describe, expect, it } from 'vitest'
import { openCatalog } from '../../../electron/engine/catalog/index.js'
import { savePolicy } from '../../../electron/engine/policy/index.js'
import { newTestVault, open, PASSPHRASE, scratchRoot, writePoint } from '../reliability/fixtures/data.js'
import { CLI_MAIN, cliEnv, ROOT, spawnTresor, tresor, tresorJson } from './fixtures/cli.js'

const base = mkdtempSync(join(scratchRoot(), 'tresor-vault-cli-'))
afterAll(() => rmSync(base, { recursive: true, force: true }))
let n = 0

/** A vault with `count` points of machine "rel-vm" (and one of "other-vm"), and a fresh data folder. */
async function vaultWithPoints(count: number) {
  n++
  const { dir, key, vaultId } = await newTestVault(join(base, `vault${n}`))
  const vault = await open(dir, key)
  const ids: string[] = []
  for (let i = 0; i < count; i++) ids.push((await writePoint(vault, { seed: i + 1, blocks: 3 })).id)
  await vault.close()
  const home = join(base, `home${n}`)
  return { dir, key, vaultId, ids, home, env: cliEnv({ TRESOR_PASSPHRASE: PASSPHRASE, TRESOR_HOME: home }) }
}

function pointRows(home: string): string[] {
  const db = openCatalog(home)
  try {
    return (db.prepare('SELECT id FROM points ORDER BY id').all() as { id: string }[]).map((r) => r.id)
  } finally {
    db.close()
  }
}

describe('vault open, catalog rebuild, info', () => {
  it('registers an existing vault and rebuilds the catalog from it, also after the catalog is lost or damaged', async () => {
    const v = await vaultWithPoints(3)
    const opened = await tresorJson(['--json', 'vault', 'open', v.dir], v.env)
    expect(opened).toEqual({ vaultId: v.vaultId, points: 3 })
    expect(pointRows(v.home)).toEqual([...v.ids].sort())

    const info = await tresorJson(['--json', 'vault', 'info'], v.env)
    expect(info).toMatchObject({ vaultId: v.vaultId, path: v.dir, formatVersion: 3, isCurrent: true, keySlots: { passphrase: true, recovery: false } })
    expect(info.stats.points).toBe(3)
    expect(info.generation).toBeGreaterThanOrEqual(4)
    // Without the key (no keychain, no passphrase): what the header tells, marked locked.
    const locked = await tresorJson(['--json', 'vault', 'info'], cliEnv({ TRESOR_HOME: v.home }))
    expect(locked).toMatchObject({ vaultId: v.vaultId, locked: true, keychain: { available: false, hasKey: false } })
    // The native addon is part of the install (npm ci builds it); huge pages follow the host and the switch.
    expect(info.memory.addon).toBe(true)
    expect(info.memory.hugePages).toMatch(/^(on|off: transparent huge pages are disabled in the kernel)$/)
    const switchedOff = await tresorJson(['--json', 'vault', 'info'], { ...v.env, TRESOR_NO_HUGE_PAGES: '1' })
    expect(switchedOff.memory).toEqual({ addon: true, hugePages: 'off: TRESOR_NO_HUGE_PAGES=1' })
    // AES-GCM through ipsec-mb where the addon offers it (a CPU with VAES, aead.test requires it there), else OpenSSL
    const viaIpsecMb = (createRequire(import.meta.url)('tresor-digest') as typeof import('tresor-digest')).aesGcmEngines()[0] === 'ipsec-mb'
    const cipher = viaIpsecMb ? 'native, ipsec-mb (VAES), a schedule per key' : 'native, a context per key'
    expect(info.digest).toEqual({ addon: true, pieces: 'native, a block per call', cuts: 'native', cipher })
    const ipsecOff = await tresorJson(['--json', 'vault', 'info'], { ...v.env, TRESOR_NO_IPSEC_MB: '1' })
    expect(ipsecOff.digest).toEqual({ addon: true, pieces: 'native, a block per call', cuts: 'native', cipher: 'native, a context per key' })
    const digestOff = await tresorJson(['--json', 'vault', 'info'], { ...v.env, TRESOR_NO_NATIVE_DIGEST: '1' })
    expect(digestOff.digest).toEqual({ addon: true, pieces: 'one per call: TRESOR_NO_NATIVE_DIGEST=1', cuts: 'WebAssembly', cipher: 'a context per call' })
    const text = await tresor(['vault', 'info'], v.env)
    expect(text.stdout).toMatch(/^Memory {5}native addon loaded; huge pages for direct I\/O (on|off)/m)
    const cipherText = viaIpsecMb ? 'natively, ipsec-mb \\(VAES\\), a schedule per key' : 'natively, a context per key'
    expect(text.stdout).toMatch(new RegExp(`^Hashing {4}native addon loaded; chunk ids and checksums native, a block per call; parts cut natively; AES-GCM ${cipherText}$`, 'm'))

    // Lost catalog: rebuilt from the vault alone.
    for (const f of readdirSync(v.home)) rmSync(join(v.home, f))
    expect(await tresorJson(['--json', '--vault', v.dir, 'catalog', 'rebuild'], v.env)).toEqual({ vaultId: v.vaultId, points: 3 })
    expect(pointRows(v.home)).toEqual([...v.ids].sort())

    // Damaged catalog: moved aside, rebuilt.
    for (const f of readdirSync(v.home)) rmSync(join(v.home, f))
    writeFileSync(join(v.home, 'catalog.sqlite'), randomBytes(8192))
    const rebuilt = await tresor(['--json', '--vault', v.dir, 'catalog', 'rebuild'], v.env)
    expect(rebuilt.code, rebuilt.stderr).toBe(0)
    expect(rebuilt.stderr).toMatch(/moved to/)
    expect(pointRows(v.home)).toEqual([...v.ids].sort())
    expect(readdirSync(v.home).some((f) => f.startsWith('catalog.sqlite.damaged-'))).toBe(true)

    // Without any registration there is nothing to rebuild from: a clear message, exit 1.
    const empty = await tresor(['catalog', 'rebuild'], cliEnv({ TRESOR_PASSPHRASE: PASSPHRASE, TRESOR_HOME: join(base, 'nothing') }))
    expect(empty.code).toBe(1)
    expect(empty.stderr).toMatch(/No vault is set up/)
  })
})

describe('catalog behind the vault (RELIABILITY #3)', () => {
  it('vault init makes format 2 unless --format 1 is asked for, and refuses any other format before asking for a passphrase', async () => {
    const made: Record<string, number> = {}
    for (const format of [undefined, '1', '2', '3']) {
      const home = join(base, `init-home-${format ?? 'default'}`)
      const env = cliEnv({ TRESOR_PASSPHRASE: PASSPHRASE, TRESOR_HOME: home })
      const created = await tresor(['--json', 'vault', 'init', join(base, `init-${format ?? 'default'}`), ...(format ? ['--format', format] : [])], env)
      expect(created.code, created.stderr).toBe(0)
      made[format ?? 'default'] = (await tresorJson<{ formatVersion: number }>(['--json', 'vault', 'info'], env)).formatVersion
    }
    expect(made).toEqual({ default: 3, '1': 1, '2': 2, '3': 3 })
    const bad = await tresor(['vault', 'init', join(base, 'init-bad'), '--format', '4'], cliEnv({ TRESOR_HOME: join(base, 'init-home-bad') }))
    expect(bad.code).not.toBe(0)
    expect(bad.stderr).toMatch(/--format takes 1, 2 or 3/)
    expect(existsSync(join(base, 'init-bad'))).toBe(false)
  })

  it('a job killed between its vault commit and its catalog write, or a point from elsewhere: the next opening of the vault brings the catalog up to date', async () => {
    const v = await vaultWithPoints(2)
    await tresorJson(['--json', 'vault', 'open', v.dir], v.env)
    expect(pointRows(v.home)).toEqual([...v.ids].sort())

    // Another computer (here: the vault API) commits a point; this catalog has not seen it.
    const vault = await open(v.dir, v.key)
    const third = await writePoint(vault, { seed: 3, blocks: 3 })
    await vault.close()
    expect(pointRows(v.home)).toEqual([...v.ids].sort())
    // Any command that opens the vault reconciles: a verify here.
    const verified = await tresor(['--json', 'verify'], v.env)
    expect(verified.code, verified.stderr).toBe(0)
    expect(pointRows(v.home)).toEqual([...v.ids, third.id].sort())

    // The state a SIGKILL right after a commit leaves: the vault has the point, the catalog neither
    // the row nor the generation.
    const db = openCatalog(v.home)
    try {
      db.prepare('DELETE FROM points WHERE id = ?').run(third.id)
      db.prepare('UPDATE vaults SET last_generation = last_generation - 1').run()
    } finally {
      db.close()
    }
    expect(pointRows(v.home)).not.toContain(third.id)
    const again = await tresor(['--json', 'verify'], v.env)
    expect(again.code, again.stderr).toBe(0)
    expect(pointRows(v.home)).toEqual([...v.ids, third.id].sort())

    // A point deleted elsewhere disappears from the catalog the same way.
    const pruner = await open(v.dir, v.key)
    await pruner.prune({ deletePointIds: [v.ids[0]!] })
    await pruner.close()
    const afterPrune = await tresor(['--json', 'verify'], v.env)
    expect(afterPrune.code, afterPrune.stderr).toBe(0)
    expect(pointRows(v.home)).toEqual([v.ids[1]!, third.id].sort())
  })
})

describe('tresor prune with retention', () => {
  it("removes what each known machine's policy expires, keeps the newest, and never touches unknown machines", async () => {
    const v = await vaultWithPoints(5)
    await tresorJson(['--json', 'vault', 'open', v.dir], v.env)
    // Points of a machine this catalog does not know are never judged.
    const db = openCatalog(v.home)
    try {
      const policy = savePolicy(db, 'keep-two', { retention: { last: 2, daily: 0, weekly: 0, monthly: 0, yearly: 0 } })
      const dry = await tresorJson(['--json', 'prune', '--dry-run'], v.env)
      expect(dry.removed).toEqual([])
      db.prepare("INSERT INTO machines (id, name, policy_id, created_at) VALUES ('local-1', 'rel-vm', ?, 'now')").run(policy)
    } finally {
      db.close()
    }
    const dry = await tresorJson(['--json', 'prune', '--dry-run'], v.env)
    expect([...dry.removed].sort()).toEqual(v.ids.slice(0, 3).sort())
    const result = await tresorJson(['--json', 'prune'], v.env)
    expect(result).toMatchObject({ pointsRemoved: 3 })
    expect(result.bytesFreed).toBeGreaterThan(0)
    expect(pointRows(v.home)).toEqual(v.ids.slice(3).sort())
    const verify = await tresorJson(['--json', 'verify', '--read-data'], v.env)
    expect(verify.ok).toBe(true)
    const again = await tresorJson(['--json', 'prune'], v.env)
    expect(again.pointsRemoved).toBe(0)
  })
})

describe('tresor prune on a terminal', () => {
  it('shows its phases as it goes (a pseudo-terminal from script(1)), and ends with the summary', async () => {
    const v = await vaultWithPoints(2)
    await tresorJson(['--json', 'vault', 'open', v.dir], v.env)
    await tresorJson(['--json', 'forget', v.ids[0]!], v.env)
    const quote = (a: string): string => `'${a.replace(/'/g, `'\\''`)}'`
    const command = [process.execPath, '--import', 'tsx', CLI_MAIN, 'prune', '--max-unused', '0'].map(quote).join(' ')
    const out = await new Promise<{ code: number; output: string }>((resolve, reject) => {
      execFile('script', ['-qec', command, '/dev/null'], { cwd: ROOT, env: v.env, timeout: 120_000 }, (err, stdout) => {
        if (err && typeof (err as { code?: unknown }).code !== 'number') return reject(err)
        resolve({ code: err ? (err as { code: number }).code : 0, output: stdout })
      })
    })
    expect(out.code, out.output).toBe(0)
    expect(out.output).toMatch(/prune mark \d+\/\d+/)
    expect(out.output).toMatch(/prune (repack|sweep) \d+\/\d+/)
    expect(out.output).toMatch(/recovery point\(s\) removed, [1-9]\d* bytes freed/)
  })
})

describe('tresor forget', () => {
  it('deletes the named points (by id prefix), keeps the others readable, and prune then frees their space', async () => {
    const v = await vaultWithPoints(3)
    await tresorJson(['--json', 'vault', 'open', v.dir], v.env)
    const gone = v.ids[0]!
    const result = await tresorJson(['--json', 'forget', gone.slice(0, 10)], v.env)
    expect(result).toMatchObject({ pointsRemoved: 1, ids: [gone] })
    expect(pointRows(v.home)).toEqual(v.ids.slice(1).sort())
    const unknown = await tresor(['forget', 'ffffffffffffffff'], v.env)
    expect(unknown.code).toBe(1)
    expect(unknown.stderr).toMatch(/No recovery point/)
    for (const bad of ['abc', '101', '-1', '']) {
      const refused = await tresor(['prune', '--max-unused', bad], v.env)
      expect(refused.code).toBe(2)
      expect(refused.stderr).toMatch(/--max-unused takes a percentage from 0 to 100/)
    }
    const pruned = await tresorJson(['--json', 'prune', '--max-unused', '0'], v.env)
    expect(pruned.bytesFreed).toBeGreaterThan(0)
    const verify = await tresorJson(['--json', 'verify', '--read-data'], v.env)
    expect(verify.ok).toBe(true)
  })
})

/**
 * Runs `tresor <args>` while a live exclusive lock (this test process, this host) holds the vault, as
 * a running prune does: checks that it waits and says so on stderr, removes the lock, and returns its
 * output once it has exited 0.
 */
async function runDuringPrune(vaultDir: string, args: string[], env: NodeJS.ProcessEnv): Promise<{ stdout: string; stderr: string }> {
  const id = 'c'.repeat(24)
  const now = Date.now()
  const lockFile = join(vaultDir, 'locks', `${id}.lock`)
  writeFileSync(lockFile, JSON.stringify({ id, kind: 'exclusive', host: hostname(), pid: process.pid, createdAt: now, refreshedAt: now, purpose: 'prune' }))
  const child = spawnTresor(args, env)
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
  const exited = new Promise<number | null>((done) => child.on('close', (code) => done(code)))
  await expect.poll(() => stderr, { timeout: 60_000, interval: 100 }).toMatch(/waiting up to 15 min for the vault: .*exclusive lock by prune/)
  expect(child.exitCode, args.join(' ')).toBeNull() // still waiting, not failed
  rmSync(lockFile)
  expect(await exited, stderr).toBe(0)
  return { stdout, stderr }
}

describe('tresor backup and another job\'s lock', () => {
  it('waits for a prune holding the vault, says so on stderr, and backs up once the lock is gone', async () => {
    const v = await vaultWithPoints(1)
    await tresorJson(['--json', 'vault', 'open', v.dir], v.env)
    const disk = join(base, `lockwait-${n}.raw`)
    writeFileSync(disk, randomBytes(1024 * 1024))
    await tresorJson(['--json', 'machine', 'add', 'lock-vm', disk], v.env)
    const { stdout } = await runDuringPrune(v.dir, ['--json', 'backup', 'lock-vm'], v.env)
    expect(JSON.parse(stdout)).toMatchObject({ pointId: expect.any(String), consistency: 'crash' })
  })

  it('verify and catalog rebuild wait for a prune holding the vault the same way, then run', async () => {
    const v = await vaultWithPoints(1)
    await tresorJson(['--json', 'vault', 'open', v.dir], v.env)
    for (const args of [['--json', 'verify', '--read-data'], ['--json', '--vault', v.dir, 'catalog', 'rebuild']]) {
      const { stdout } = await runDuringPrune(v.dir, args, v.env)
      const out = JSON.parse(stdout) as { ok?: boolean; points?: number }
      if (args.includes('verify')) expect(out.ok).toBe(true)
      else expect(out.points).toBe(1)
    }
  })
})

describe('tresor vault unlock', () => {
  it('removes dead local locks, stale ones only with --force, and never a live lock', async () => {
    const v = await vaultWithPoints(1)
    await tresorJson(['--json', 'vault', 'open', v.dir], v.env)
    const now = Date.now()
    const lock = (id: string, host: string, pid: number, refreshedAt: number) =>
      writeFileSync(join(v.dir, 'locks', `${id}.lock`), JSON.stringify({ id, kind: 'shared', host, pid, createdAt: refreshedAt, refreshedAt, purpose: 'test' }))
    const dead = 'a'.repeat(24)
    const staleForeign = 'b'.repeat(24)
    const liveForeign = 'c'.repeat(24)
    lock(dead, hostname(), 2 ** 22 + 12345, now) // no such pid on this host
    lock(staleForeign, 'other-host', 4242, now - 2 * 3600_000)
    lock(liveForeign, 'other-host', 4243, now)

    const plain = await tresorJson(['--json', 'vault', 'unlock'], v.env)
    expect(plain.removed.map((l: { id: string }) => l.id)).toEqual([dead])
    expect(plain.kept.map((l: { id: string }) => l.id).sort()).toEqual([staleForeign, liveForeign])

    const unconfirmed = await tresor(['vault', 'unlock', '--force'], v.env)
    expect(unconfirmed.code).toBe(2)
    expect(existsSync(join(v.dir, 'locks', `${staleForeign}.lock`))).toBe(true)

    const forced = await tresorJson(['--json', 'vault', 'unlock', '--force', '--yes'], v.env)
    expect(forced.removed.map((l: { id: string }) => l.id)).toEqual([staleForeign])
    expect(existsSync(join(v.dir, 'locks', `${liveForeign}.lock`))).toBe(true)
  })
})
