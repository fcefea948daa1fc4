import { cpSync, mkdtempSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { MemoryKeyStore, openCurrentVault, generateMasterKey } from '../../../electron/engine/keys/index.js'
import { openCatalog } from '../../../electron/engine/catalog/index.js'
import { getVault, registerVault } from '../../../electron/engine/catalog/vaults.js'
import { newTestVault, PASSPHRASE, scratchRoot, writePoint } from '../reliability/fixtures/data.js'

const base = mkdtempSync(join(scratchRoot(), 'tresor-session-'))
afterAll(() => rmSync(base, { recursive: true, force: true }))
let n = 0
async function setup() {
  n++
  const home = join(base, `home${n}`)
  const { dir, vaultId, key } = await newTestVault(join(base, `vault${n}`))
  const catalog = openCatalog(home)
  registerVault(catalog, { id: vaultId, path: dir, lastGeneration: 1 }, { makeCurrent: true })
  catalog.close()
  return { home, dir, vaultId, key, store: new MemoryKeyStore() }
}
const withPass = { TRESOR_PASSPHRASE: PASSPHRASE }

describe('openCurrentVault', () => {
  it('refuses a data folder without a vault: VAULT_NOT_CONFIGURED', async () => {
    await expect(openCurrentVault(join(base, 'empty-home'), { env: {}, interactive: false, keyStore: new MemoryKeyStore() })).rejects.toMatchObject({
      code: 'VAULT_NOT_CONFIGURED',
    })
  })

  it('uses the passphrase once, then the keychain; records the generation after a commit', async () => {
    const { home, vaultId, key, store } = await setup()
    const first = await openCurrentVault(home, { env: withPass, interactive: false, keyStore: store })
    expect(first).toMatchObject({ vaultId, keySource: 'passphrase-env', keyInKeychain: true })
    expect((await store.getKey(vaultId))?.equals(key)).toBe(true)
    await writePoint(first.vault, { seed: 1, blocks: 2 })
    const generation = await first.vault.generation()
    await first.close()
    const catalog = openCatalog(home)
    expect(getVault(catalog, vaultId)?.lastGeneration).toBe(generation)
    catalog.close()
    expect(await store.getGeneration(vaultId)).toBe(generation)

    const second = await openCurrentVault(home, { env: {}, interactive: false, keyStore: store })
    expect(second.keySource).toBe('keychain')
    await second.close()
  })

  it('replaces the point rows once when the vault moved without this catalog, and not when it did not', async () => {
    const { home, store } = await setup()
    const first = await openCurrentVault(home, { env: withPass, interactive: false, keyStore: store })
    await writePoint(first.vault, { seed: 2, blocks: 2 })
    await writePoint(first.vault, { seed: 3, blocks: 2 })
    await first.vault.close() // committed, but the catalog never recorded the new generation
    first.catalog.close()
    const second = await openCurrentVault(home, { env: {}, interactive: false, keyStore: store })
    expect(second.pointsReconciled).toBe(2)
    await second.close()
    const third = await openCurrentVault(home, { env: {}, interactive: false, keyStore: store })
    expect(third.pointsReconciled).toBeUndefined()
    await third.close()
  })

  it('without keychain key or passphrase: PASSPHRASE_REQUIRED; wrong passphrase: WRONG_PASSPHRASE', async () => {
    const { home } = await setup()
    await expect(openCurrentVault(home, { env: {}, interactive: false, keyStore: new MemoryKeyStore(false) })).rejects.toMatchObject({ code: 'PASSPHRASE_REQUIRED' })
    await expect(openCurrentVault(home, { env: { TRESOR_PASSPHRASE: 'nope' }, interactive: false, keyStore: new MemoryKeyStore(false) })).rejects.toMatchObject({
      code: 'WRONG_PASSPHRASE',
    })
  })

  it('ignores and replaces a keychain key that does not open the vault', async () => {
    const { home, vaultId, key, store } = await setup()
    await store.setKey(vaultId, generateMasterKey())
    const s = await openCurrentVault(home, { env: withPass, interactive: false, keyStore: store })
    expect(s.keySource).toBe('passphrase-env')
    expect((await store.getKey(vaultId))?.equals(key)).toBe(true)
    await s.close()
  })

  it('detects an older copy of the vault put back (I11), via the catalog and via the keychain alone', async () => {
    const { home, dir, store } = await setup()
    const old = join(base, `old${n}`)
    cpSync(dir, old, { recursive: true })
    const s = await openCurrentVault(home, { env: withPass, interactive: false, keyStore: store })
    await writePoint(s.vault, { seed: 2, blocks: 2 })
    await s.close()

    rmSync(dir, { recursive: true })
    cpSync(old, dir, { recursive: true })
    await expect(openCurrentVault(home, { env: withPass, interactive: false, keyStore: store })).rejects.toMatchObject({ code: 'VAULT_ROLLBACK' })

    // A new data folder (catalog lost) still remembers through the keychain entry.
    const otherHome = join(base, `other${n}`)
    await expect(openCurrentVault(otherHome, { vaultOverride: dir, env: withPass, interactive: false, keyStore: store })).rejects.toMatchObject({
      code: 'VAULT_ROLLBACK',
    })

    // The user confirms the old copy on purpose: accepted, and the remembered generation follows it.
    const accepted = await openCurrentVault(home, { env: withPass, interactive: false, keyStore: store, acceptRollback: true })
    const generation = await accepted.vault.generation()
    await accepted.close()
    const again = await openCurrentVault(home, { env: {}, interactive: false, keyStore: store })
    expect(await again.vault.generation()).toBe(generation)
    await again.close()
  })
})
