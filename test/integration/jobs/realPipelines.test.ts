import { randomBytes as cryptoRandomBytes } from 'node:crypto'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { addMachine, runBackup } from '../../../electron/engine/backup/index.js'
import { openCatalog, type Db } from '../../../electron/engine/catalog/index.js'
import { registerVault } from '../../../electron/engine/catalog/vaults.js'
import { openImage } from '../../../electron/engine/formats/index.js'
import { wrapWithPassphrase } from '../../../electron/engine/keys/index.js'
import { DEFAULT_POLICY } from '../../../electron/engine/policy/index.js'
import { createVault, openVault } from '../../../electron/engine/vault/index.js'
import { InProcessLauncher, JobSupervisor } from '../../../electron/engine/workers/supervisor.js'
import { applyOps, createImage, mixedOps, qemuToRaw, requireQemu } from '../../helpers/qemu.js'

// The engine's own pipelines (DEFAULT_PIPELINES) in the CLI's in-process launcher, against a real
// vault registered in the data folder and unlocked by TRESOR_PASSPHRASE (no keychain here).
const PASSPHRASE = 'jobs test passphrase'
let dir: string
let home: string
let db: Db
let pointId: string
let source: string

beforeAll(async () => {
  requireQemu()
  process.env.DBUS_SESSION_BUS_ADDRESS = ''
  process.env.TRESOR_PASSPHRASE = PASSPHRASE
  dir = await mkdtemp(join(tmpdir(), 'tresor-realjobs-'))
  home = join(dir, 'home')
  db = openCatalog(home)
  const masterKey = cryptoRandomBytes(32)
  const vaultDir = join(dir, 'vault')
  const { vaultId } = await createVault(vaultDir, { masterKey, keySlots: { passphrase: await wrapWithPassphrase(masterKey, PASSPHRASE) }, blockSize: 64 * 1024 })
  registerVault(db, { id: vaultId, path: vaultDir, lastGeneration: 1 }, { makeCurrent: true })
  source = join(dir, 'disk.qcow2')
  await createImage(source, 'qcow2', 4 * 1024 * 1024)
  await applyOps(source, 'qcow2', mixedOps(3, 4 * 1024 * 1024, 12), dir)
  const vault = await openVault(vaultDir, masterKey)
  try {
    const machine = addMachine(db, { name: 'vm', disks: [{ path: source }] })
    pointId = (await runBackup(machine, { vault, catalog: db, openImage: (p) => openImage(p) }, { policy: { ...DEFAULT_POLICY, snapshotTierDays: 0 }, snapshot: 'read' })).result.pointId
  } finally {
    await vault.close()
  }
})
afterAll(async () => {
  db?.close()
  await rm(dir, { recursive: true, force: true })
})

describe('engine pipelines as jobs', () => {
  it('verify and restore jobs run the vault and restore pipelines and record their results', async () => {
    const sup = new JobSupervisor({ db, home, launcher: new InProcessLauncher() })
    const verify = sup.submit({ kind: 'verify', input: { readData: true } })
    const v = await sup.wait(verify)
    expect(v.state, v.error?.message).toBe('succeeded')
    expect(v.result).toMatchObject({ ok: true, problems: [], checked: { points: 1 } })

    const target = join(dir, 'restored.raw')
    const restore = sup.submit({ kind: 'restore', input: { pointId, mode: 'file', targetPath: target } })
    const r = await sup.wait(restore)
    expect(r.state, r.error?.message).toBe('succeeded')
    expect(r.result).toMatchObject({ files: [target] })
    const oracle = join(dir, 'oracle.raw')
    await qemuToRaw(source, 'qcow2', oracle)
    expect((await readFile(target)).equals(await readFile(oracle))).toBe(true)

    const prune = sup.submit({ kind: 'prune', input: {} })
    expect((await sup.wait(prune)).error?.code).toBe('UNSUPPORTED')
    await sup.drain()
  })
})
