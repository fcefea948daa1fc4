import { afterEach, describe, expect, it } from 'vitest'
import { spawn, type ChildProcess } from 'node:child_process'
import { chmod, open, readFile, writeFile } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { addMachine, listPointRows, runBackup, runPendingPostScripts } from '../../../electron/engine/backup/index.js'
import { parsePolicySpec, type PolicySpecInput } from '../../../electron/engine/policy/index.js'
import { randomBytes } from '../../helpers/qemu.js'
import { checkRecordedChecksums, makeWorld, MiB, pointDiskSha256, type TestWorld } from './helpers.js'
import { createHash } from 'node:crypto'

let w: TestWorld | undefined
let holder: ChildProcess | undefined
afterEach(async () => {
  holder?.kill('SIGKILL')
  holder = undefined
  await w?.close()
  w = undefined
})

async function setup(): Promise<{ w: TestWorld; disk: string; order: string; script: (name: string, body: string) => Promise<string> }> {
  w = await makeWorld()
  const disk = join(w.dir, 'disk.raw')
  const data = Buffer.alloc(32 * MiB) // more 4 MiB runs than the block loop reads ahead (RUN_WINDOW): tests change the file between them
  randomBytes(5, MiB).copy(data, MiB)
  await writeFile(disk, data)
  const order = join(w.dir, 'order.log')
  const dir = w.dir
  return {
    w,
    disk,
    order,
    script: async (name, body) => {
      const p = join(dir, name)
      await writeFile(p, `#!/bin/sh\necho "${name.replace('.sh', '')} $TRESOR_PHASE $TRESOR_MACHINE" >> "${order}"\n${body}\n`)
      await chmod(p, 0o755)
      return p
    },
  }
}

const policy = (p: PolicySpecInput) => parsePolicySpec({ snapshotTierDays: 0, ...p })

describe('consistency is recorded honestly', () => {
  it('application: pre- and post-script succeeded around the snapshot; post ran once', async () => {
    const s = await setup()
    const pre = await s.script('pre.sh', 'echo frozen')
    const post = await s.script('post.sh', 'echo thawed')
    const m = addMachine(s.w.catalog, { name: 'db', disks: [{ path: s.disk }] })
    const log: string[] = []
    const r = await runBackup(m, s.w.world, { snapshot: 'read', policy: policy({ scripts: { pre: { path: pre }, post: { path: post } } }), log: (l) => log.push(l) })
    expect(r.result.consistency).toBe('application')
    expect(listPointRows(s.w.catalog, { machine: 'db' })[0]!.consistency).toBe('application')
    expect((await readFile(s.order, 'utf8')).trim().split('\n')).toEqual(['pre pre db', 'post post db'])
    expect(log).toContain('[pre] frozen')
    expect(log).toContain('[post] thawed')
    expect(log.some((l) => /pre-script succeeded/.test(l))).toBe(true)
    expect(s.w.catalog.prepare('SELECT COUNT(*) AS n FROM pending_post_scripts').get()).toEqual({ n: 0 })
  })

  it('crash: no scripts and nobody writing the file', async () => {
    const s = await setup()
    const m = addMachine(s.w.catalog, { name: 'vm', disks: [{ path: s.disk }] })
    const r = await runBackup(m, s.w.world, { snapshot: 'read', policy: policy({}) })
    expect(r.result.consistency).toBe('crash')
    expect(r.manifest.disks[0]!.fileIdentity).toBeDefined()
  })

  it('a failing pre-script with onError "warn" gives crash, and the post-script still runs', async () => {
    const s = await setup()
    const pre = await s.script('pre.sh', 'echo "fsfreeze failed" >&2; exit 1')
    const post = await s.script('post.sh', '')
    const m = addMachine(s.w.catalog, { name: 'vm', disks: [{ path: s.disk }] })
    const log: string[] = []
    const r = await runBackup(m, s.w.world, { snapshot: 'read', policy: policy({ scripts: { pre: { path: pre }, post: { path: post } } }), log: (l) => log.push(l) })
    expect(r.result.consistency).toBe('crash')
    expect((await readFile(s.order, 'utf8')).trim().split('\n')).toEqual(['pre pre vm', 'post post vm'])
    expect(log).toContain('[pre] fsfreeze failed')
    expect(log.some((l) => /pre-script failed: exit code 1/.test(l))).toBe(true)
  })

  it('a failing pre-script with onError "fail" fails the job (SCRIPT_FAILED), runs the post-script, commits nothing', async () => {
    const s = await setup()
    const pre = await s.script('pre.sh', 'exit 2')
    const post = await s.script('post.sh', '')
    const m = addMachine(s.w.catalog, { name: 'vm', disks: [{ path: s.disk }] })
    await expect(runBackup(m, s.w.world, { snapshot: 'read', policy: policy({ scripts: { pre: { path: pre }, post: { path: post }, onError: 'fail' } }) }))
      .rejects.toMatchObject({ code: 'SCRIPT_FAILED' })
    expect((await readFile(s.order, 'utf8')).trim().split('\n')).toEqual(['pre pre vm', 'post post vm'])
    expect(await s.w.vault.listPoints()).toHaveLength(0)
    expect(listPointRows(s.w.catalog)).toHaveLength(0)
  })

  it('a pre-script that hangs is killed at its timeout: SCRIPT_TIMEOUT when failing, crash when warning', async () => {
    const s = await setup()
    const pre = await s.script('pre.sh', 'sleep 30')
    const post = await s.script('post.sh', '')
    const m = addMachine(s.w.catalog, { name: 'vm', disks: [{ path: s.disk }] })
    const scripts = { pre: { path: pre, timeoutMs: 500 }, post: { path: post } }
    await expect(runBackup(m, s.w.world, { snapshot: 'read', policy: policy({ scripts: { ...scripts, onError: 'fail' } }) }))
      .rejects.toMatchObject({ code: 'SCRIPT_TIMEOUT' })
    const log: string[] = []
    const r = await runBackup(m, s.w.world, { snapshot: 'read', policy: policy({ scripts: { ...scripts, onError: 'warn' } }), log: (l) => log.push(l) })
    expect(r.result.consistency).toBe('crash')
    expect(log.some((l) => /pre-script timed out/.test(l))).toBe(true)
    expect((await readFile(s.order, 'utf8')).trim().split('\n')).toEqual(['pre pre vm', 'post post vm', 'pre pre vm', 'post post vm'])
  })

  it('a failing post-script lowers application to crash', async () => {
    const s = await setup()
    const pre = await s.script('pre.sh', '')
    const post = await s.script('post.sh', 'exit 5')
    const m = addMachine(s.w.catalog, { name: 'vm', disks: [{ path: s.disk }] })
    const r = await runBackup(m, s.w.world, { snapshot: 'read', policy: policy({ scripts: { pre: { path: pre }, post: { path: post } } }) })
    expect(r.result.consistency).toBe('crash')
  })

  it('none: the file changed while it was read; the stored data still matches its recorded hashes', async () => {
    const s = await setup()
    const m = addMachine(s.w.catalog, { name: 'vm', disks: [{ path: s.disk }] })
    let mutated = false
    const log: string[] = []
    const r = await runBackup(m, s.w.world, {
      snapshot: 'read',
      policy: policy({}),
      progressIntervalMs: 0,
      log: (l) => log.push(l),
      onProgress: (p) => {
        if (!mutated && p.bytesRead > 0) {
          mutated = true
          void open(s.disk, 'r+').then(async (fh) => { await fh.write(Buffer.from('guest write'), 0, 11, 3 * MiB + 5); await fh.close() })
        }
      },
    })
    expect(mutated).toBe(true)
    expect(r.result.consistency).toBe('none')
    expect(r.manifest.disks[0]!.fileIdentity).toBeUndefined()
    expect(log.some((l) => /changed while it was read/.test(l))).toBe(true)
    // Whatever was read is self-consistent (RELIABILITY #24): each stored block matches its recorded hash.
    const checked = await checkRecordedChecksums(s.w.vault, r.result.pointId, 0)
    expect([16, 17]).toContain(checked) // 1 MiB of data in 64 KiB blocks, plus the guest write if the read saw it
    // The next backup reads the file again (no identity was recorded) and is crash-consistent.
    const r2 = await runBackup(m, s.w.world, { snapshot: 'read', policy: policy({}) })
    expect(r2.result.consistency).toBe('crash')
    expect(r2.result.bytesRead).toBeGreaterThan(0)
    expect(await pointDiskSha256(s.w.vault, r2.result.pointId, 0)).toBe(createHash('sha256').update(await readFile(s.disk)).digest('hex'))
  })

  it('none fails the job when the policy says failOnInconsistent (SOURCE_CHANGED, nothing committed)', async () => {
    const s = await setup()
    const m = addMachine(s.w.catalog, { name: 'vm', disks: [{ path: s.disk }] })
    let mutated = false
    await expect(runBackup(m, s.w.world, {
      snapshot: 'read',
      policy: policy({ failOnInconsistent: true }),
      progressIntervalMs: 0,
      onProgress: (p) => {
        if (!mutated && p.bytesRead > 0) {
          mutated = true
          void open(s.disk, 'r+').then(async (fh) => { await fh.write(Buffer.alloc(4096, 1), 0, 4096, 2 * MiB); await fh.close() })
        }
      },
    })).rejects.toMatchObject({ code: 'SOURCE_CHANGED' })
    expect(await s.w.vault.listPoints()).toHaveLength(0)
    // A file truncated under the reader is a changed source too, not a damaged image.
    let truncated = false
    await expect(runBackup(m, s.w.world, {
      snapshot: 'read',
      policy: policy({}),
      progressIntervalMs: 0,
      onProgress: (p) => {
        if (!truncated && p.bytesRead > 0) {
          truncated = true
          void writeFile(s.disk, Buffer.alloc(MiB, 1))
        }
      },
    })).rejects.toMatchObject({ code: 'SOURCE_CHANGED' })
    expect(await s.w.vault.listPoints()).toHaveLength(0)
  })

  it('none: another process holds the file open for writing (found through /proc)', async () => {
    const s = await setup()
    holder = spawn(process.execPath, ['-e', `require('fs').openSync(${JSON.stringify(s.disk)}, 'r+'); process.stdout.write('ready'); setInterval(() => {}, 1000)`], { stdio: ['ignore', 'pipe', 'inherit'] })
    await new Promise<void>((resolve) => holder!.stdout!.once('data', () => resolve()))
    const m = addMachine(s.w.catalog, { name: 'vm', disks: [{ path: s.disk }] })
    const log: string[] = []
    const r = await runBackup(m, s.w.world, { snapshot: 'read', policy: policy({}), log: (l) => log.push(l) })
    expect(r.result.consistency).toBe('none')
    expect(log.some((l) => l.includes(`open for writing by process ${holder!.pid}`))).toBe(true)
  })

  it('a post-script owed by a killed backup runs at the next start', async () => {
    const s = await setup()
    const post = await s.script('post.sh', '')
    const m = addMachine(s.w.catalog, { name: 'vm', disks: [{ path: s.disk }] })
    s.w.catalog.prepare('INSERT INTO pending_post_scripts (machine_id, script, started_at) VALUES (?, ?, ?)').run(m.id, JSON.stringify({ path: post, args: [], timeoutMs: 5000 }), new Date().toISOString())
    expect(await runPendingPostScripts(s.w.catalog)).toBe(1)
    expect((await readFile(s.order, 'utf8')).trim()).toBe('post post vm')
    expect(await runPendingPostScripts(s.w.catalog)).toBe(0)
    expect(existsSync(post)).toBe(true)
  })
})
