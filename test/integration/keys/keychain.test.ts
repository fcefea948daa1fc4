import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'

// The real Secret Service: every scenario runs in child processes inside scripts/with-keyring.sh
// (a private D-Bus session with gnome-keyring unlocked), or deliberately without any D-Bus session.
const run = promisify(execFile)
const root = join(import.meta.dirname, '..', '..', '..')
const withKeyring = join(root, 'scripts', 'with-keyring.sh')
const child = join(import.meta.dirname, 'fixtures', 'keychainChild.ts')
const node = [process.execPath, '--import', 'tsx', child]

function lastJson(stdout: string): Record<string, any> {
  const lines = stdout.trim().split('\n').filter((l) => l.startsWith('{'))
  return JSON.parse(lines.at(-1)!)
}

describe('OS keychain through keytar (gnome-keyring)', () => {
  it('stores the key as ≤ 64-byte base64 under service/account, readable by another process and by secret-tool', async () => {
    const q = (s: string) => `'${s}'`
    const script = [
      `${node.map(q).join(' ')} round-trip`,
      `echo "secret-tool:$(secret-tool lookup service TresorTest account ${'a'.repeat(32)})"`,
      `${node.map(q).join(' ')} read-back`,
    ].join(' && ')
    const { stdout } = await run(withKeyring, ['bash', '-c', script], { cwd: root, timeout: 120_000 })
    const lines = stdout.trim().split('\n')
    const written = JSON.parse(lines.find((l) => l.startsWith('{"state"'))!)
    const viaTool = lines.find((l) => l.startsWith('secret-tool:'))!.slice('secret-tool:'.length)
    const readBack = JSON.parse(lines.at(-1)!)
    expect(written.state).toEqual({ available: true, backend: 'secret-service' })
    expect(written.before).toBeNull()
    expect(written.same).toBe(true)
    expect(written.generation).toBe(42)
    expect(viaTool).toBe(written.keyB64)
    expect(Buffer.byteLength(viaTool)).toBeLessThanOrEqual(64)
    expect(Buffer.from(viaTool, 'base64')).toHaveLength(32)
    expect(readBack).toEqual({ keyB64: written.keyB64, deleted: true, after: null, generationAfter: null })
  })

  it('resolves keychain first, else TRESOR_PASSPHRASE, caching the unwrapped key', async () => {
    const { stdout } = await run(withKeyring, [...node, 'resolve'], { cwd: root, timeout: 120_000 })
    const r = lastJson(stdout)
    expect(r.first).toMatchObject({ source: 'passphrase-env', same: true, inKeychain: true, keychain: { available: true } })
    expect(r.second).toMatchObject({ source: 'keychain', same: true })
    expect(r.noSecret).toBe('PASSPHRASE_REQUIRED')
  })

  for (const [label, env] of [
    ['no D-Bus session (env -u DBUS_SESSION_BUS_ADDRESS)', (e: NodeJS.ProcessEnv) => { delete e.DBUS_SESSION_BUS_ADDRESS }],
    ['an unreachable D-Bus address (keytar throws)', (e: NodeJS.ProcessEnv) => { e.DBUS_SESSION_BUS_ADDRESS = 'unix:path=/nonexistent/tresor-bus' }],
  ] as const) {
    it(`reports KEYCHAIN_UNAVAILABLE clearly with ${label}, and the passphrase path still works`, async () => {
      const childEnv = { ...process.env }
      env(childEnv)
      const { stdout } = await run(node[0]!, [...node.slice(1), 'unavailable'], { cwd: root, env: childEnv, timeout: 60_000 })
      const r = lastJson(stdout)
      expect(r.state.available).toBe(false)
      expect(r.getCode).toBe('KEYCHAIN_UNAVAILABLE')
      expect(r.setCode).toBe('KEYCHAIN_UNAVAILABLE')
      expect(r.message).toMatch(/keychain .* is not available/)
      expect(r.message).toMatch(/passphrase/)
      expect(r.resolved).toMatchObject({ source: 'passphrase-env', same: true, inKeychain: false, keychain: { available: false } })
      expect(r.required).toBe('PASSPHRASE_REQUIRED')
    })
  }
})

describe('CLI with the real keychain', () => {
  it('vault init caches the key; later commands run without a passphrase; without D-Bus they ask for it', async () => {
    const { mkdtempSync, rmSync } = await import('node:fs')
    const { tmpdir } = await import('node:os')
    const work = mkdtempSync(join(tmpdir(), 'tresor-keychain-cli-'))
    try {
      const cli = `'${process.execPath}' --import tsx '${join(root, 'electron', 'cli', 'main.ts')}' --json --home '${work}/home'`
      const script = [
        `TRESOR_PASSPHRASE=cli-pass TRESOR_SCRYPT_LOG2N=15 ${cli} vault init '${work}/vault' > '${work}/init.json'`,
        `${cli} vault info > '${work}/info.json'`,
        `${cli} verify > '${work}/verify.json'`,
        `vault_id=$(node -e "process.stdout.write(require('${work}/init.json').vaultId)")`,
        `secret-tool lookup service Tresor account "$vault_id" > '${work}/secret.txt'`,
        // The same data folder without any D-Bus session: the keychain is unavailable.
        `(env -u DBUS_SESSION_BUS_ADDRESS ${cli} verify > '${work}/locked.json' 2> '${work}/locked.err'; echo $? > '${work}/locked.code')`,
        `env -u DBUS_SESSION_BUS_ADDRESS TRESOR_PASSPHRASE=cli-pass ${cli} verify > '${work}/unlocked.json'`,
        `secret-tool clear service Tresor account "$vault_id"; secret-tool clear service Tresor account "$vault_id#generation"`,
      ].join(' && ')
      const env = { ...process.env }
      for (const k of Object.keys(env)) if (k.startsWith('TRESOR_')) delete env[k]
      await run(withKeyring, ['bash', '-c', script], { cwd: root, env, timeout: 240_000 })
      const { readFileSync } = await import('node:fs')
      const read = (f: string) => readFileSync(join(work, f), 'utf8')
      const { vaultId } = JSON.parse(read('init.json'))
      const info = JSON.parse(read('info.json'))
      expect(info).toMatchObject({ vaultId, keySource: 'keychain', keychain: { available: true, hasKey: true }, generation: 1 })
      expect(JSON.parse(read('verify.json')).ok).toBe(true)
      const secret = read('secret.txt').trim()
      expect(secret).toMatch(/^[A-Za-z0-9+/]{43}=$/)
      expect(read('locked.code').trim()).toBe('1')
      expect(read('locked.err')).toMatch(/locked: its key is not in the system keychain and no passphrase was given/)
      expect(read('locked.err')).toMatch(/TRESOR_PASSPHRASE/)
      expect(JSON.parse(read('unlocked.json')).ok).toBe(true)
    } finally {
      rmSync(work, { recursive: true, force: true })
    }
  })
})
