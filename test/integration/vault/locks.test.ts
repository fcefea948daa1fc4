import { writeFile, readdir, unlink } from 'node:fs/promises'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { spawnSync } from 'node:child_process'
import { hostname } from 'node:os'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { backUp, checksumOf, makeBlock, newVault, tempDir } from './helpers.js'
import { breakLock, listLocks, nodeVaultFs, openVault, UNLOCK_COMMAND, type Clock, type LocalVault, type VaultFs } from '../../../electron/engine/vault/index.js'
import { EngineError } from '../../../electron/engine/errors.js'

async function errorOf(p: Promise<unknown>): Promise<EngineError> {
  try {
    await p
  } catch (err) {
    if (err instanceof EngineError) return err
    throw err
  }
  throw new Error('expected an error')
}

function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'])
  return Number(r.stdout.toString())
}

async function forgeLock(dir: string, over: Record<string, unknown>): Promise<string> {
  const id = 'ab'.repeat(12)
  const now = Date.now()
  await writeFile(join(dir, 'locks', `${id}.lock`), JSON.stringify({ id, kind: 'exclusive', host: hostname(), pid: process.pid, createdAt: now, refreshedAt: now, purpose: 'forged', ...over }))
  return id
}

describe('vault locks', () => {
  let t: Awaited<ReturnType<typeof tempDir>>
  let vault: LocalVault
  let dir: string
  let key: Buffer

  beforeAll(async () => {
    t = await tempDir()
    ;({ vault, dir, key } = await newVault(t.dir, { locks: { lifetimeMs: 60_000 } }))
  })
  afterAll(async () => {
    await vault.close()
    await t.cleanup()
  })

  it('backups share; prune is exclusive; contention is VAULT_LOCKED', async () => {
    const s1 = await vault.beginBackup()
    const s2 = await vault.beginBackup()
    expect((await listLocks(dir)).map((l) => l.kind)).toEqual(['shared', 'shared'])
    expect((await errorOf(vault.prune())).code).toBe('VAULT_LOCKED')
    await s1.abort()
    await s2.abort()
    expect(await listLocks(dir)).toEqual([])
    await forgeLock(dir, { kind: 'exclusive' }) // a live exclusive holder (this pid)
    const err = await errorOf(vault.beginBackup())
    expect(err.code).toBe('VAULT_LOCKED')
    expect(err.userMessage).toContain('forged')
    await breakLock(dir)
  })

  it('removes a lock whose holder is a dead process on this host', async () => {
    await forgeLock(dir, { pid: deadPid(), kind: 'exclusive' })
    const s = await vault.beginBackup()
    await s.abort()
    expect(await listLocks(dir)).toEqual([])
  })

  it('reports a stale foreign lock with the command that clears it, never breaks it', async () => {
    const id = await forgeLock(dir, { host: 'other-host', pid: 4242, refreshedAt: Date.now() - 3_600_000 })
    const err = await errorOf(vault.beginBackup())
    expect(err.code).toBe('VAULT_LOCK_STALE')
    expect(err.userMessage).toContain(UNLOCK_COMMAND)
    expect((await listLocks(dir)).map((l) => l.id)).toEqual([id])
    // a fresh foreign lock is simply "locked"
    await forgeLock(dir, { host: 'other-host', pid: 4242 })
    expect((await errorOf(vault.beginBackup())).code).toBe('VAULT_LOCKED')
    expect((await breakLock(dir, { ids: [id] })).length).toBe(1)
    expect(await listLocks(dir)).toEqual([])
    const s = await vault.beginBackup()
    await s.abort()
  })

  it('a session that could not refresh its lock within the lifetime aborts before committing', async () => {
    let offset = 0
    const clock: Clock = { now: () => Date.now() + offset, monotonic: () => performance.now() + offset }
    const v = await openVault(dir, key, { workers: 1, clock, locks: { lifetimeMs: 60_000, refreshMs: 3_600_000 } })
    try {
      const before = await v.generation()
      const s = await v.beginBackup()
      const b = makeBlock(5, 'text')
      const r = await s.putBlock(b, checksumOf(b))
      const w = s.blockMapWriter({ index: 0, blockCount: 1 })
      w.append({ kind: 'data', chunkId: r.chunkId, checksum: checksumOf(b) })
      await w.finish()
      offset = 120_000 // "suspended" for two minutes
      const err = await errorOf(
        s.commit({
          machineId: 'm',
          machineName: 'm',
          createdAt: new Date().toISOString(),
          consistency: 'crash',
          disks: [{ index: 0, name: 'd', virtualSize: b.length, sourceFormat: 'raw', sourcePath: '/d', allocatedBytes: b.length, blockCount: 1 }],
          stats: { bytesRead: 0, bytesNew: 0, bytesStored: 0, seconds: 0 },
          labels: {},
        }),
      )
      expect(err.code).toBe('VAULT_LOCK_LOST')
      expect(await v.listPoints()).toEqual([])
      expect(await v.generation()).toBe(before)
      expect(await listLocks(dir)).toEqual([])
    } finally {
      await v.close()
    }
  })

  it('a session whose lock file was removed (forced unlock) cannot commit', async () => {
    const s = await vault.beginBackup()
    for (const f of await readdir(join(dir, 'locks'))) await unlink(join(dir, 'locks', f))
    const w = s.blockMapWriter({ index: 0, blockCount: 1 })
    w.append({ kind: 'zero' })
    await w.finish()
    const err = await errorOf(
      s.commit({
        machineId: 'm',
        machineName: 'm',
        createdAt: new Date().toISOString(),
        consistency: 'crash',
        disks: [{ index: 0, name: 'd', virtualSize: 1, sourceFormat: 'raw', sourcePath: '/d', allocatedBytes: 0, blockCount: 1 }],
        stats: { bytesRead: 0, bytesNew: 0, bytesStored: 0, seconds: 0 },
        labels: {},
      }),
    )
    expect(err.code).toBe('VAULT_LOCK_LOST')
    expect(await vault.listPoints()).toEqual([])
    // and the vault still works
    await backUp(vault, [{ name: 'd', blocks: ['zero'] }])
    expect((await vault.listPoints()).length).toBe(1)
  })

  it('a restore\'s read lock keeps prune out, and waits for a prune that holds the vault', async () => {
    await backUp(vault, [{ name: 'd', blocks: [makeBlock(21, 'random')] }])
    const read = await vault.readLock('restore')
    const other = await openVault(dir, key, { workers: 1 })
    try {
      const blocked = await errorOf(other.prune({ maxUnused: 0 }))
      expect(blocked.code).toBe('VAULT_LOCKED')
      expect(blocked.message).toMatch(/shared lock by restore/)
      // reads do not exclude each other, nor backups
      const second = await other.readLock('restore')
      await second.release()
      await backUp(other, [{ name: 'd', blocks: [makeBlock(22, 'random')] }])
      await read.release()
      await other.prune({ maxUnused: 0 })
      // a prune holding the vault: a read lock fails at once, or waits and says so
      const id = await forgeLock(dir, { purpose: 'prune' })
      expect((await errorOf(vault.readLock('restore'))).code).toBe('VAULT_LOCKED')
      const waits: string[] = []
      const waiting = vault.readLock('restore', { waitMs: 60_000, onWait: (m) => waits.push(m) })
      await expect.poll(() => waits.length, { timeout: 10_000, interval: 20 }).toBe(1)
      expect(waits[0]).toMatch(/exclusive lock by prune/)
      await unlink(join(dir, 'locks', `${id}.lock`))
      await (await waiting).release()
      expect((await listLocks(dir)).length).toBe(0)
    } finally {
      await other.close()
    }
  })

  it('verify holds a shared lock: it waits for a prune that holds the vault, holds the lock while it reads, then releases it', async () => {
    await backUp(vault, [{ name: 'd', blocks: [makeBlock(31, 'random'), makeBlock(32, 'text')] }])
    const id = await forgeLock(dir, { purpose: 'prune' })
    expect((await errorOf(vault.verify({ readData: true }))).code).toBe('VAULT_LOCKED')
    const waits: string[] = []
    let progressed = false
    const verifying = vault.verify({
      readData: true,
      lock: { waitMs: 60_000, onWait: (m) => waits.push(m) },
      onProgress: () => {
        progressed ||= true
      },
    })
    await expect.poll(() => waits.length, { timeout: 10_000, interval: 20 }).toBe(1)
    expect(waits[0]).toMatch(/exclusive lock by prune/)
    expect(progressed).toBe(false) // nothing read while the prune holds the vault
    await unlink(join(dir, 'locks', `${id}.lock`))
    const report = await verifying
    expect(report.ok).toBe(true)
    expect(report.checked.chunksRead).toBeGreaterThanOrEqual(2)
    expect((await listLocks(dir)).length).toBe(0) // released
    // while it reads, its shared lock is on disk (read synchronously from inside its progress callback)
    const during: string[] = []
    const again = await vault.verify({
      readData: true,
      onProgress: () => {
        if (during.length > 0) return
        for (const name of readdirSync(join(dir, 'locks')).filter((n) => n.endsWith('.lock'))) {
          const l = JSON.parse(readFileSync(join(dir, 'locks', name), 'utf8')) as { kind: string; purpose: string }
          during.push(`${l.kind}:${l.purpose}`)
        }
      },
    })
    expect(again.ok).toBe(true)
    expect(during).toEqual(['shared:verify'])
    expect((await listLocks(dir)).length).toBe(0)
  })

  it('backup and prune started together: prune waits for the backup (waitMs), nothing is lost', async () => {
    const waits: string[] = []
    const waiting = await openVault(dir, key, { workers: 1, locks: { waitMs: 60_000, lifetimeMs: 60_000, onWait: (m) => waits.push(m) } })
    try {
      const blocks = [makeBlock(11, 'random'), makeBlock(12, 'text')]
      const session = await vault.beginBackup()
      const pruning = waiting.prune({ maxUnused: 0 })
      await new Promise((r) => setTimeout(r, 300))
      const w = session.blockMapWriter({ index: 0, blockCount: blocks.length })
      for (const b of blocks) {
        const r = await session.putBlock(b, checksumOf(b))
        w.append({ kind: 'data', chunkId: r.chunkId, checksum: checksumOf(b) })
      }
      await w.finish()
      const point = await session.commit({
        machineId: 'm', machineName: 'm', createdAt: new Date().toISOString(), consistency: 'crash',
        disks: [{ index: 0, name: 'd', virtualSize: 2 * 65536, sourceFormat: 'raw', sourcePath: '/d', allocatedBytes: 0, blockCount: 2 }],
        stats: { bytesRead: 0, bytesNew: 0, bytesStored: 0, seconds: 0 }, labels: {},
      })
      await pruning
      // the prune said once that it waited, and for whom
      expect(waits).toHaveLength(1)
      expect(waits[0]).toMatch(/is in use: shared lock by backup/)
      const reader = waiting.chunkReader()
      const entries = []
      for await (const e of waiting.readBlockMap(point.id, 0)) entries.push(e)
      const data = await reader.readChunks(entries.map((e) => (e.kind === 'data' ? e.chunkId : Buffer.alloc(32))))
      expect(data[0]).toEqual(blocks[0])
      expect(data[1]).toEqual(blocks[1])
      expect((await waiting.verify({ readData: true })).problems).toEqual([])
    } finally {
      await waiting.close()
    }
  })

  // RELIABILITY #16, found by the backup+prune concurrency test: prune empties tmp/ under its
  // exclusive lock, while a backup waiting for its own lock writes a lock file every try. A lock
  // file written through tmp/ could lose its temp file between write and rename: the backup then
  // failed with NOT_FOUND instead of waiting. Here tmp/ is emptied at the worst moment, right
  // before every lock file's rename.
  it('takes and refreshes a lock while tmp/ is emptied under it', async () => {
    const u = await tempDir()
    const sweeps: string[] = []
    const sweeping: VaultFs = {
      ...nodeVaultFs,
      async rename(from, to) {
        if (to.endsWith('.lock')) {
          const tmp = join(u.dir, 'vault', 'tmp')
          for (const name of await readdir(tmp)) {
            await unlink(join(tmp, name)).catch(() => undefined)
            sweeps.push(name)
          }
          sweeps.push('(swept)')
        }
        return nodeVaultFs.rename(from, to)
      },
    }
    try {
      const { vault: made, dir: d, key: k } = await newVault(u.dir)
      await made.close()
      const v = await openVault(d, k, { fs: sweeping })
      try {
        const blocks = [makeBlock(1, 'random')]
        const point = await backUp(v, [{ name: 'd', blocks }]) // acquire, then commit's refresh
        expect(sweeps.filter((s) => s === '(swept)').length).toBeGreaterThanOrEqual(2)
        expect((await v.listPoints()).map((p) => p.id)).toEqual([point.id])
        expect(readdirSync(join(d, 'locks'))).toEqual([])
        // a lock write cut short by a crash leaves its temp file in locks/: not a lock, and
        // `vault unlock --force` (breakLock) clears it
        await writeFile(join(d, 'locks', `${'cd'.repeat(12)}.lock.0a0b0c0d0e0f.tmp`), '{"id":')
        expect(await listLocks(d)).toEqual([])
        await breakLock(d)
        expect(readdirSync(join(d, 'locks'))).toEqual([])
      } finally {
        await v.close()
      }
    } finally {
      await u.cleanup()
    }
  })
})
