import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { spawn } from 'node:child_process'
import { afterAll, describe, expect, it } from 'vitest'
import { readVaultHeader } from '../../../electron/engine/vault/index.js'
import { unwrapWithPassphrase, unwrapWithRecoveryKey } from '../../../electron/engine/keys/index.js'
import { openCatalog } from '../../../electron/engine/catalog/index.js'
import { getCurrentVault } from '../../../electron/engine/catalog/vaults.js'
import { CLI_MAIN, ROOT, cliEnv, spawnTresor, tresor, tresorJson } from './fixtures/cli.js'

const base = mkdtempSync(join(tmpdir(), 'tresor-keys-cli-'))
afterAll(() => rmSync(base, { recursive: true, force: true }))
let n = 0
function fresh(): { home: string; dir: string } {
  n++
  return { home: join(base, `home${n}`), dir: join(base, `vault${n}`) }
}

/** CLI environment with the cheapest accepted scrypt cost (2^15) so the suite stays quick. */
function env(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  return cliEnv({ TRESOR_SCRYPT_LOG2N: '15', ...extra })
}

async function opens(dir: string, passphrase: string): Promise<boolean> {
  const header = await readVaultHeader(dir)
  try {
    await unwrapWithPassphrase(header.keySlots.passphrase, passphrase)
    return true
  } catch (err) {
    if ((err as { code?: string }).code === 'WRONG_PASSPHRASE') return false
    throw err
  }
}

/** Every file under `dir` (recursively), as bytes. */
function allBytes(dir: string): Buffer[] {
  const out: Buffer[] = []
  for (const name of readdirSync(dir)) {
    const p = join(dir, name)
    if (statSync(p).isDirectory()) out.push(...allBytes(p))
    else out.push(readFileSync(p))
  }
  return out
}

describe('tresor vault init', () => {
  it('creates a vault from TRESOR_PASSPHRASE, makes it current, and writes no secret in plain text', async () => {
    const { home, dir } = fresh()
    const passphrase = 'plain-text-canary-7781'
    const { vaultId } = await tresorJson<{ vaultId: string }>(['--json', '--home', home, 'vault', 'init', dir], cliEnv({ TRESOR_PASSPHRASE: passphrase }))
    expect(vaultId).toMatch(/^[0-9a-f]{32}$/)
    const catalog = openCatalog(home)
    try {
      expect(getCurrentVault(catalog)).toMatchObject({ id: vaultId, path: dir, isCurrent: true, lastGeneration: 1 })
    } finally {
      catalog.close()
    }
    for (const bytes of [...allBytes(dir), ...allBytes(home)]) {
      expect(bytes.includes(Buffer.from(passphrase))).toBe(false)
    }
    expect(await opens(dir, passphrase)).toBe(true)
  })

  it('refuses an empty passphrase and creates nothing', async () => {
    const { home, dir } = fresh()
    const r = await tresor(['--home', home, 'vault', 'init', dir], env({ TRESOR_PASSPHRASE: '' }))
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/passphrase is empty/)
    expect(existsSync(join(dir, 'config'))).toBe(false)
  })

  it('asks for a passphrase when none is given and there is no terminal: PASSPHRASE_REQUIRED message', async () => {
    const { home, dir } = fresh()
    const r = await tresor(['--home', home, 'vault', 'init', dir], env())
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/TRESOR_PASSPHRASE/)
  })

  it('asks twice on a terminal without echo, retrying when the entries differ', async () => {
    const { home, dir } = fresh()
    const answers = ['first try', 'typo', 'sécret pass', 'sécret pass']
    // util-linux `script` gives the CLI a pseudo-terminal; we answer each prompt as it appears.
    const child = spawn('script', ['-qec', `'${process.execPath}' --import tsx '${CLI_MAIN}' --home '${home}' vault init '${dir}'`, '/dev/null'], {
      cwd: ROOT,
      env: env(),
    })
    let out = ''
    let answered = 0
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString()
      const prompts = (out.match(/passphrase: /gi) ?? []).length
      while (answered < prompts && answered < answers.length) child.stdin.write(answers[answered++] + '\r')
    })
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve))
    expect(code).toBe(0)
    expect(out).toMatch(/differ/)
    for (const a of answers) expect(out).not.toContain(a)
    expect(await opens(dir, 'sécret pass')).toBe(true)
  })
})

describe('tresor vault passwd and export-recovery-key', () => {
  it('re-wraps the key: the old passphrase stops working, the new one works, NFC/NFD are the same', async () => {
    const { home, dir } = fresh()
    const nfd = 'Cafe\u0301 au lait'
    await tresorJson(['--json', '--home', home, 'vault', 'init', dir], env({ TRESOR_PASSPHRASE: nfd }))
    const before = readFileSync(join(dir, 'config'), 'utf8')
    const r = await tresorJson(['--json', '--home', home, 'vault', 'passwd'], env({ TRESOR_PASSPHRASE: nfd.normalize('NFC'), TRESOR_NEW_PASSPHRASE: 'new one' }))
    expect(r).toMatchObject({ changed: true })
    expect(await opens(dir, nfd)).toBe(false)
    expect(await opens(dir, 'new one')).toBe(true)
    const after = JSON.parse(readFileSync(join(dir, 'config'), 'utf8'))
    expect(after.params).toEqual(JSON.parse(before).params)
  })

  it('refuses a wrong current passphrase and changes nothing', async () => {
    const { home, dir } = fresh()
    await tresorJson(['--json', '--home', home, 'vault', 'init', dir], env({ TRESOR_PASSPHRASE: 'right' }))
    const config = readFileSync(join(dir, 'config'))
    const r = await tresor(['--home', home, 'vault', 'passwd'], env({ TRESOR_PASSPHRASE: 'wrong', TRESOR_NEW_PASSPHRASE: 'new' }))
    expect(r.code).toBe(1)
    expect(r.stderr).toMatch(/passphrase is wrong/)
    expect(readFileSync(join(dir, 'config')).equals(config)).toBe(true)
  })

  it('exports a recovery key once; it unlocks the vault after the passphrase is lost', async () => {
    const { home, dir } = fresh()
    await tresorJson(['--json', '--home', home, 'vault', 'init', dir], env({ TRESOR_PASSPHRASE: 'forgotten soon' }))
    const { recoveryKey } = await tresorJson<{ recoveryKey: string }>(['--json', '--home', home, 'vault', 'export-recovery-key'], env({ TRESOR_PASSPHRASE: 'forgotten soon' }))
    expect(recoveryKey).toMatch(/^[0-9A-Z]{5}(-[0-9A-Z]{5}){7}$/)
    expect(readFileSync(join(dir, 'config'), 'utf8')).not.toContain(recoveryKey)
    const again = await tresor(['--home', home, 'vault', 'export-recovery-key'], env({ TRESOR_PASSPHRASE: 'forgotten soon' }))
    expect(again.code).toBe(1)
    expect(again.stderr).toMatch(/already has a recovery key/)

    // The passphrase is lost: the recovery key sets a new one; the recovery slot stays valid.
    const wrong = await tresor(['--home', home, 'vault', 'passwd', '--with-recovery-key'], env({ TRESOR_RECOVERY_KEY: recoveryKey.replace(/^./, (c) => (c === 'Z' ? 'Y' : 'Z')), TRESOR_NEW_PASSPHRASE: 'x' }))
    expect(wrong.code).toBe(1)
    expect(wrong.stderr).toMatch(/not a valid Tresor recovery key/)
    await tresorJson(['--json', '--home', home, 'vault', 'passwd', '--with-recovery-key'], env({ TRESOR_RECOVERY_KEY: recoveryKey.toLowerCase(), TRESOR_NEW_PASSPHRASE: 'remembered' }))
    expect(await opens(dir, 'forgotten soon')).toBe(false)
    expect(await opens(dir, 'remembered')).toBe(true)
    const header = await readVaultHeader(dir)
    const viaRecovery = await unwrapWithRecoveryKey(header.keySlots.recovery, recoveryKey)
    expect(viaRecovery.equals(await unwrapWithPassphrase(header.keySlots.passphrase, 'remembered'))).toBe(true)
  })

  it('refuses a config whose KDF parameters were tampered with', async () => {
    const { home, dir } = fresh()
    await tresorJson(['--json', '--home', home, 'vault', 'init', dir], env({ TRESOR_PASSPHRASE: 'pw' }))
    const config = JSON.parse(readFileSync(join(dir, 'config'), 'utf8'))
    for (const N of [2 ** 4, 2 ** 40]) {
      config.keySlots.passphrase.kdf.N = N
      // Written in the vault's own layout, so the key slot's bounds (not the layout check) refuse it.
      writeFileSync(join(dir, 'config'), JSON.stringify(config, null, 2) + '\n')
      const r = await tresor(['--home', home, 'vault', 'passwd'], env({ TRESOR_PASSPHRASE: 'pw', TRESOR_NEW_PASSPHRASE: 'new' }))
      expect(r.code).toBe(1)
      expect(r.stderr).toMatch(/key slot is damaged or was tampered with/)
    }
    // Any other layout of the same values is refused too: the config has exactly one byte form.
    writeFileSync(join(dir, 'config'), JSON.stringify(config))
    const relaid = await tresor(['--home', home, 'vault', 'passwd'], env({ TRESOR_PASSPHRASE: 'pw', TRESOR_NEW_PASSPHRASE: 'new' }))
    expect(relaid.code).toBe(1)
    expect(relaid.stderr).toMatch(/vault config .* was modified or is damaged/)
  })

  it('passwd is crash-safe: killed at random moments, exactly the old or the new passphrase works', async () => {
    const { home, dir } = fresh()
    let current = 'pass-0'
    await tresorJson(['--json', '--home', home, 'vault', 'init', dir], env({ TRESOR_PASSPHRASE: current }))
    // One uninterrupted run measures how long a passwd takes here; kills then land in [0.5, 1.1] × that,
    // where the unwrap, the new wrap and the config replacement happen.
    const started = Date.now()
    await tresorJson(['--json', '--home', home, 'vault', 'passwd'], env({ TRESOR_PASSPHRASE: current, TRESOR_NEW_PASSPHRASE: 'pass-1' }))
    const fullMs = Date.now() - started
    current = 'pass-1'
    const trials = 10
    let changed = 0
    let kept = 0
    for (let i = 2; i < trials + 2; i++) {
      const next = `pass-${i}`
      const child = spawnTresor(['--home', home, 'vault', 'passwd'], env({ TRESOR_PASSPHRASE: current, TRESOR_NEW_PASSPHRASE: next }))
      const delay = Math.floor(fullMs * (0.5 + Math.random() * 0.6))
      const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()))
      const timer = setTimeout(() => child.kill('SIGKILL'), delay)
      await exited
      clearTimeout(timer)
      const oldWorks = await opens(dir, current)
      const newWorks = await opens(dir, next)
      expect(oldWorks !== newWorks, `trial ${i} (kill after ${delay} ms): old ${oldWorks}, new ${newWorks}`).toBe(true)
      if (newWorks) {
        current = next
        changed++
      } else kept++
    }
    console.log(`passwd crash trials: ${trials}, survived ${trials} (${changed} switched, ${kept} kept the old passphrase; full run ${fullMs} ms)`)
  })
})
