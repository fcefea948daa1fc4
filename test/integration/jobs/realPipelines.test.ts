import { randomBytes as cryptoRandomBytes } from 'node:crypto'
import { existsSync, rmSync, writeFileSync } from 'node:fs'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { hostname } from 'node:os'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { addMachine, runBackup } from '../../../electron/engine/backup/index.js'
import { getMachine } from '../../../electron/engine/backup/machines.js'
import { getRestoreQueueEntry as getRestoreEntry } from '../../../electron/engine/restore/index.js'
import { openCatalog, type Db } from '../../../electron/engine/catalog/index.js'
import { registerVault } from '../../../electron/engine/catalog/vaults.js'
import { openImage } from '../../../electron/engine/formats/index.js'
import { wrapWithPassphrase } from '../../../electron/engine/keys/index.js'
import { DEFAULT_POLICY, savePolicy } from '../../../electron/engine/policy/index.js'
import { createEngineWiring } from '../../../electron/engine/app/engineWiring.js'
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
let vaultDir: string
let masterKey: Buffer
let machineId: string

/** One backup of the test machine straight through the pipeline (no job). */
async function backUpDirectly(): Promise<string> {
  const vault = await openVault(vaultDir, masterKey)
  try {
    const machine = getMachine(db, machineId)
    return (await runBackup(machine, { vault, catalog: db, openImage: (p) => openImage(p) }, { policy: { ...DEFAULT_POLICY, snapshotTierDays: 0 }, snapshot: 'read' })).result.pointId
  } finally {
    await vault.close()
  }
}

beforeAll(async () => {
  requireQemu()
  process.env.DBUS_SESSION_BUS_ADDRESS = ''
  process.env.TRESOR_PASSPHRASE = PASSPHRASE
  dir = await mkdtemp(join(tmpdir(), 'tresor-realjobs-'))
  home = join(dir, 'home')
  db = openCatalog(home)
  masterKey = cryptoRandomBytes(32)
  vaultDir = join(dir, 'vault')
  const { vaultId } = await createVault(vaultDir, { masterKey, keySlots: { passphrase: await wrapWithPassphrase(masterKey, PASSPHRASE) }, blockSize: 64 * 1024 })
  registerVault(db, { id: vaultId, path: vaultDir, lastGeneration: 1 }, { makeCurrent: true })
  source = join(dir, 'disk.qcow2')
  await createImage(source, 'qcow2', 4 * 1024 * 1024)
  await applyOps(source, 'qcow2', mixedOps(3, 4 * 1024 * 1024, 12), dir)
  machineId = addMachine(db, { name: 'vm', disks: [{ path: source }] }).id
  pointId = await backUpDirectly()
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
    await sup.drain()
  })

  it('a restore job waits for a prune that holds the vault, says so in its log, then restores', async () => {
    const id = 'd'.repeat(24)
    const now = Date.now()
    const lockFile = join(vaultDir, 'locks', `${id}.lock`)
    writeFileSync(lockFile, JSON.stringify({ id, kind: 'exclusive', host: hostname(), pid: process.pid, createdAt: now, refreshedAt: now, purpose: 'prune' }))
    const sup = new JobSupervisor({ db, home, launcher: new InProcessLauncher() })
    const target = join(dir, 'after-wait.raw')
    const job = sup.submit({ kind: 'restore', input: { pointId, mode: 'file', targetPath: target } })
    const logOf = (): string => (db.prepare('SELECT log FROM jobs WHERE id = ?').get(job) as { log: string | null }).log ?? ''
    await expect.poll(logOf, { timeout: 30_000, interval: 50 }).toMatch(/waiting up to 15 min for the vault: .*exclusive lock by prune/)
    expect((db.prepare('SELECT state FROM jobs WHERE id = ?').get(job) as { state: string }).state).toBe('running')
    rmSync(lockFile)
    const r = await sup.wait(job)
    expect(r.state, r.error?.message).toBe('succeeded')
    expect(existsSync(target)).toBe(true)
    await sup.drain()
  })

  it("a prune job applies the machine's retention: expired points leave the vault and the catalog, their space is freed", async () => {
    // two more points of a changed disk; the policy keeps the newest only
    for (let i = 0; i < 2; i++) {
      await applyOps(source, 'qcow2', mixedOps(20 + i, 4 * 1024 * 1024, 12), dir)
      await backUpDirectly()
    }
    const policy = savePolicy(db, 'keep-one', { retention: { last: 1, daily: 0, weekly: 0, monthly: 0, yearly: 0 } })
    db.prepare('UPDATE machines SET policy_id = ? WHERE id = ?').run(policy, machineId)
    const vaultId = (db.prepare('SELECT id FROM vaults').get() as { id: string }).id
    const rows = (): string[] => (db.prepare('SELECT id FROM points WHERE vault_id = ?').all(vaultId) as { id: string }[]).map((r) => r.id)
    expect(rows()).toHaveLength(3)
    const sup = new JobSupervisor({ db, home, launcher: new InProcessLauncher() })
    const prune = sup.submit({ kind: 'prune', input: {} })
    const p = await sup.wait(prune)
    expect(p.state, p.error?.message).toBe('succeeded')
    expect(p.result).toMatchObject({ pointsRemoved: 2, kept: 1 })
    expect((p.result as { bytesFreed: number }).bytesFreed).toBeGreaterThan(0)
    expect(p.log).toMatch(/retention removed 2 recovery point\(s\)/)
    expect(rows()).toHaveLength(1)
    const verify = await sup.wait(sup.submit({ kind: 'verify', input: { readData: true } }))
    expect(verify.result).toMatchObject({ ok: true, problems: [], checked: { points: 1 } })
    await sup.drain()
  })

  it('the app applies retention after a successful backup: a prune job follows it, and restores wait for the prune', async () => {
    const wired = createEngineWiring({ home, catalog: db, launcher: new InProcessLauncher(), emit: () => {}, runSchedules: false })
    try {
      const vaultId = (db.prepare('SELECT id FROM vaults').get() as { id: string }).id
      const before = (db.prepare('SELECT id FROM points WHERE vault_id = ?').all(vaultId) as { id: string }[]).map((r) => r.id)
      expect(before).toHaveLength(1)
      await applyOps(source, 'qcow2', mixedOps(30, 4 * 1024 * 1024, 12), dir)
      const { jobId } = await wired.engine.jobs!.startBackup(machineId)
      const backup = await wired.supervisor.wait(jobId)
      expect(backup.state, backup.error?.message).toBe('succeeded')
      // the prune was submitted as the backup finished: a restore queued now is held until it ends
      const pruneRow = db.prepare(`SELECT id FROM jobs WHERE kind = 'prune' ORDER BY created_at DESC LIMIT 1`).get() as { id: string } | undefined
      expect(pruneRow).toBeDefined()
      const pruneState = (db.prepare('SELECT state FROM jobs WHERE id = ?').get(pruneRow!.id) as { state: string }).state
      const newest = backup.result as { pointId: string }
      const target = join(dir, 'after-prune.raw')
      const entry = wired.restoreQueue.enqueue({ pointId: newest.pointId, mode: 'file', targetPath: target })
      expect(['queued', 'running']).toContain(pruneState)
      expect(getRestoreEntry(db, entry.id)?.state).toBe('queued')
      const pruned = await wired.supervisor.wait(pruneRow!.id)
      expect(pruned.state, pruned.error?.message).toBe('succeeded')
      expect(pruned.result).toMatchObject({ pointsRemoved: 1, kept: 1 })
      const after = (db.prepare('SELECT id FROM points WHERE vault_id = ?').all(vaultId) as { id: string }[]).map((r) => r.id)
      expect(after).toEqual([newest.pointId])
      // the held restore then runs and writes the disk as it is now
      await expect.poll(() => getRestoreEntry(db, entry.id)?.state, { timeout: 60_000, interval: 100 }).toBe('succeeded')
      const oracle = join(dir, 'oracle-now.raw')
      await qemuToRaw(source, 'qcow2', oracle)
      expect((await readFile(target)).equals(await readFile(oracle))).toBe(true)
    } finally {
      await wired.dispose()
    }
  })
})
