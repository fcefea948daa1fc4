import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { openCatalog, type Db } from '../../../electron/engine/catalog/index.js'
import { getJob, listJobs } from '../../../electron/engine/workers/jobStore.js'
import { ChildProcessLauncher, InProcessLauncher, JobSupervisor, type JobLauncher, type SupervisorEvent } from '../../../electron/engine/workers/supervisor.js'
import { randomBytes } from '../../helpers/qemu.js'

const FIXTURE_ENTRY = join(import.meta.dirname, 'fixtures', 'testJobEntry.ts')

let home: string
let db: Db
beforeEach(async () => {
  home = await mkdtemp(join(tmpdir(), 'tresor-jobs-'))
  db = openCatalog(home)
})
afterEach(async () => {
  db.close()
  await rm(home, { recursive: true, force: true })
})

function supervise(launcher: JobLauncher, extra: Partial<ConstructorParameters<typeof JobSupervisor>[0]> = {}) {
  const sup = new JobSupervisor({ db, home, launcher, progressIntervalMs: 100, dbIntervalMs: 100, ...extra })
  const events: SupervisorEvent[] = []
  sup.on((e) => events.push(e))
  return { sup, events }
}

const until = async (cond: () => boolean | Promise<boolean>, timeoutMs = 20_000): Promise<void> => {
  const end = Date.now() + timeoutMs
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('timed out waiting')
    await new Promise((r) => setTimeout(r, 10))
  }
}

describe('JobSupervisor with child processes', () => {
  const launcher = () => new ChildProcessLauncher({ entryPath: FIXTURE_ENTRY, env: { ...process.env, TEST_SOURCE: '' } })

  it('runs a job in a child process and records its outcome, throttled progress and log', async () => {
    const { sup, events } = supervise(launcher())
    const id = sup.submit({ kind: 'verify', input: { readData: false, behavior: 'progress' } })
    const row = await sup.wait(id)
    expect(row.state).toBe('succeeded')
    expect(row.result).toEqual({ ok: true, problems: [] })
    expect(row.log).toContain('all packs checked')
    expect(row.bytesDone).toBe(500)
    const progress = events.filter((e) => e.type === 'progress')
    expect(progress.length).toBeGreaterThan(1)
    expect(progress.length).toBeLessThan(20) // 51 reports over ~0.6 s, throttled to 100 ms
    const last = progress.at(-1)
    expect(last?.type === 'progress' && last.progress).toMatchObject({ jobId: id, kind: 'verify', phase: 'verifying', bytesTotal: 500 })
    expect(events.at(-1)).toMatchObject({ type: 'finished', outcome: { jobId: id, state: 'succeeded', error: null } })
  })

  it('reports a process that dies without an outcome as JOB_CRASHED', async () => {
    const { sup } = supervise(launcher())
    const killed = sup.submit({ kind: 'verify', input: { behavior: 'crash' } })
    const exited = sup.submit({ kind: 'verify', input: { behavior: 'exit' } })
    const a = await sup.wait(killed)
    const b = await sup.wait(exited)
    expect(a.state).toBe('failed')
    expect(a.error?.code).toBe('JOB_CRASHED')
    expect(a.log).toMatch(/SIGKILL/)
    expect(b.error?.code).toBe('JOB_CRASHED')
    expect(b.log).toMatch(/code 3/)
  })

  it('cancels a running job, and kills one that ignores the cancellation past the deadline', async () => {
    const { sup } = supervise(launcher(), { cancelDeadlineMs: 500 })
    const polite = sup.submit({ kind: 'verify', input: { behavior: 'sleep' } })
    const stubborn = sup.submit({ kind: 'verify', input: { behavior: 'ignore-cancel' } })
    await until(() => getJob(db, polite)!.phase === 'verifying' && getJob(db, stubborn)!.phase === 'verifying')
    const t0 = Date.now()
    await sup.cancel(polite)
    await sup.cancel(stubborn)
    const a = await sup.wait(polite)
    const b = await sup.wait(stubborn)
    expect(a.state).toBe('cancelled')
    expect(a.error?.code).toBe('CANCELLED')
    expect(b.state).toBe('cancelled')
    expect(b.log).toMatch(/did not stop within/)
    expect(Date.now() - t0).toBeGreaterThanOrEqual(450)
  })

  it('the real job entry runs from the TypeScript sources (fork with tsx) and reports engine errors', async () => {
    const { sup } = supervise(new ChildProcessLauncher())
    const prune = sup.submit({ kind: 'prune', input: {} })
    const badPrune = sup.submit({ kind: 'prune', input: { maxUnused: 5 } })
    const restore = sup.submit({ kind: 'restore', input: { pointId: 'p1', mode: 'file', targetPath: join(home, 'x.img') } })
    // No vault is set up in this data folder: the job process says so.
    expect((await sup.wait(prune)).error?.code).toBe('VAULT_NOT_CONFIGURED')
    expect((await sup.wait(restore)).error?.code).toBe('VAULT_NOT_CONFIGURED')
    // The protocol refuses a share outside 0..1 before any engine code runs.
    expect((await sup.wait(badPrune)).error?.code).toBe('INVALID_INPUT')
  })

  it('kill -9 of a restore job leaves only the .partial; a new run completes the file', async () => {
    const source = join(home, 'source.img')
    // More than one 8 MiB batch of data blocks: the fixture answers the first batch at once and the
    // next one only after TEST_READ_DELAY_MS, so the job is killed half-way.
    await writeFile(source, Buffer.concat([randomBytes(7, 6 * 1024 * 1024), Buffer.alloc(1024 * 1024), randomBytes(8, 5 * 1024 * 1024 + 4096)]))
    const out = join(home, 'out')
    const pids: number[] = []
    const slow = new ChildProcessLauncher({
      entryPath: FIXTURE_ENTRY,
      env: { ...process.env, TEST_SOURCE: source, TEST_READ_DELAY_MS: '30000' },
      onSpawn: (c) => pids.push(c.pid!),
    })
    const { sup, events } = supervise(slow)
    const input = { pointId: 'point-1', mode: 'file' as const, targetPath: join(out, 'disk.img') }
    const id = sup.submit({ kind: 'restore', input })
    await until(() => events.some((e) => e.type === 'progress' && e.progress.jobId === id && e.progress.bytesDone > 0))
    expect(await readdir(out)).toEqual(['disk.img.partial'])
    process.kill(sup.pidOf(id)!, 'SIGKILL')
    const crashed = await sup.wait(id)
    expect(crashed.error?.code).toBe('JOB_CRASHED')
    expect(await readdir(out)).toEqual(['disk.img.partial'])

    const fast = supervise(new ChildProcessLauncher({ entryPath: FIXTURE_ENTRY, env: { ...process.env, TEST_SOURCE: source } })).sup
    const again = fast.submit({ kind: 'restore', input })
    const done = await fast.wait(again)
    expect(done.state).toBe('succeeded')
    expect(done.result).toMatchObject({ files: [join(out, 'disk.img')] })
    expect(await readdir(out)).toEqual(['disk.img'])
    expect((await readFile(join(out, 'disk.img'))).equals(await readFile(source))).toBe(true)
  })
})

describe('JobSupervisor in-process (CLI)', () => {
  it('runs pipelines in this process with the same protocol', async () => {
    const { sup, events } = supervise(
      new InProcessLauncher({
        verify: async (_i, env) => {
          const report = { bytesDone: 5, bytesTotal: 10, phase: 'verifying', currentDisk: 'sys' }
          env.onProgress(report)
          env.log('hello')
          return { ok: true }
        },
      }),
    )
    const id = sup.submit({ kind: 'verify', input: {} })
    const row = await sup.wait(id)
    expect(row.state).toBe('succeeded')
    expect(row.result).toEqual({ ok: true })
    expect(events.find((e) => e.type === 'progress')).toMatchObject({ progress: { currentDisk: 'sys', bytesDone: 5 } })
    expect(events.filter((e) => e.type === 'log')).toHaveLength(1)
    expect(listJobs(db).map((j) => j.id)).toEqual([id])
    await sup.drain()
    expect(sup.isActive(id)).toBe(false)
  })

  it('cancels a queued job without running it, and marks orphans of a dead host as JOB_CRASHED', async () => {
    const { sup } = supervise(new InProcessLauncher({}))
    const queued = sup.create({ kind: 'verify', input: {} })
    await sup.cancel(queued)
    expect(getJob(db, queued)!.state).toBe('cancelled')
    // A running row owned by a process that no longer exists (pid 2^22+1 is above pid_max's default).
    const orphan = sup.create({ kind: 'verify', input: {} })
    db.prepare(`UPDATE jobs SET state = 'running', owner = ? WHERE id = ?`).run(`${(await import('node:os')).hostname()}/4194305/1`, orphan)
    const live = sup.create({ kind: 'verify', input: {} })
    db.prepare(`UPDATE jobs SET state = 'running', owner = ? WHERE id = ?`).run(sup.owner, live)
    expect(sup.recoverOrphans()).toEqual([orphan])
    expect(getJob(db, orphan)).toMatchObject({ state: 'failed', error: { code: 'JOB_CRASHED' } })
    expect(getJob(db, live)!.state).toBe('running')
  })
})

describe('JobSupervisor.startQueued', () => {
  it('starts jobs queued by another process (tresor backup --detach), never restore-queue jobs', async () => {
    const ran: string[] = []
    const { sup } = supervise(
      new InProcessLauncher({
        verify: async (input) => {
          ran.push((input as { tag: string }).tag)
          return null
        },
      }),
    )
    const a = sup.create({ kind: 'verify', input: { tag: 'a' } })
    const b = sup.create({ kind: 'verify', input: { tag: 'b' } })
    const { enqueueRestore } = await import('../../../electron/engine/restore/queue.js')
    const entry = enqueueRestore(db, { pointId: 'p', mode: 'file', targetPath: '/tmp/never.img' })
    expect(sup.startQueued()).toEqual([a, b])
    await sup.wait(a)
    await sup.wait(b)
    expect(ran).toEqual(['a', 'b'])
    expect(getJob(db, entry.jobId!)!.state).toBe('queued')
    expect(sup.startQueued()).toEqual([])
  })
})
