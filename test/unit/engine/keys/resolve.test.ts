import { afterEach, describe, expect, it } from 'vitest'
import { childProcessEnv, MemoryKeyStore, resolveVaultKey, takeSecretEnv, generateMasterKey, wrapWithPassphrase } from '../../../../electron/engine/keys/index.js'

const FAST = { N: 2 ** 15, r: 8, p: 1 }

afterEach(() => {
  delete process.env.TRESOR_PASSPHRASE
  delete process.env.TRESOR_RECOVERY_KEY
})

describe('secrets in the environment', () => {
  it('takes TRESOR_PASSPHRASE out of process.env but keeps it for this process', () => {
    process.env.TRESOR_PASSPHRASE = 'from-env'
    expect(takeSecretEnv('TRESOR_PASSPHRASE')).toBe('from-env')
    expect(process.env.TRESOR_PASSPHRASE).toBeUndefined()
    expect(takeSecretEnv('TRESOR_PASSPHRASE')).toBe('from-env')
  })

  it('never hands secret variables to child processes', () => {
    const env = childProcessEnv({ PATH: '/bin', TRESOR_PASSPHRASE: 'x', TRESOR_NEW_PASSPHRASE: 'y', TRESOR_RECOVERY_KEY: 'z', TRESOR_HOME: '/h' })
    expect(env).toEqual({ PATH: '/bin', TRESOR_HOME: '/h' })
  })

  it('resolving a key from the keychain still removes the secrets from process.env', async () => {
    const store = new MemoryKeyStore()
    const key = generateMasterKey()
    await store.setKey('v1', key)
    process.env.TRESOR_RECOVERY_KEY = 'AAAAA-BBBBB'
    const r = await resolveVaultKey({ vaultId: 'v1', keySlots: { passphrase: await wrapWithPassphrase(key, 'pw', FAST) }, keyStore: store, interactive: false })
    expect(r.source).toBe('keychain')
    expect(process.env.TRESOR_RECOVERY_KEY).toBeUndefined()
  })

  it('a prompt gets three tries, then WRONG_PASSPHRASE; a right answer on the second try works', async () => {
    const key = generateMasterKey()
    const slot = await wrapWithPassphrase(key, 'right', FAST)
    const answers = ['wrong', 'right']
    const r = await resolveVaultKey({ vaultId: 'v2', keySlots: { passphrase: slot }, keyStore: new MemoryKeyStore(false), env: {}, interactive: true, prompt: async () => answers.shift()! })
    expect(r).toMatchObject({ source: 'prompt', inKeychain: false })
    expect(r.masterKey.equals(key)).toBe(true)
    let asked = 0
    await expect(
      resolveVaultKey({ vaultId: 'v2', keySlots: { passphrase: slot }, keyStore: new MemoryKeyStore(false), env: {}, interactive: true, prompt: async () => (asked++, 'nope') }),
    ).rejects.toMatchObject({ code: 'WRONG_PASSPHRASE' })
    expect(asked).toBe(3)
  })
})
