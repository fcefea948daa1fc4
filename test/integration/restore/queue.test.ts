import { spawn } from 'node:child_process'
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { openCatalog, type Db } from '../../../electron/engine/catalog/index.js'
import { enqueueRestore, getRestoreQueueEntry, listRestoreQueue, RestoreQueue } from '../../../electron/engine/restore/index.js'
import { getJob } from '../../../electron/engine/workers/jobStore.js'
import { ChildProcessLauncher, InProcessLauncher, JobSupervisor } from '../../../electron/engine/workers/supervisor.js'
import { EngineError } from '../../../electron/engine/errors.js'
import { randomBytes } from '../../helpers/qemu.js'

const JOB_ENTRY = join(import.meta.dirname, '..', 'jobs', 'fixtures', 'testJobEntry.ts')
const HOST = join(import.meta.dirname, 'fixtures', 'queueHost.ts')

let home: string
let db: Db
beforeEach(async () => {
  home = await mkdtemp(join(tmpdir(), 'tresor-queue-'))
  db = openCatalog(home)
})
afterEach(async () => {
  db.close()
  await rm(home, { recursive: true, force: true })
})

const until = async (cond: () => boolean | Promise<boolean>, timeoutMs = 30_000): Promise<void> => {
  const end = Date.now() + timeoutMs
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('timed out waiting')
    await new Promise((r) => setTimeout(r, 20))
  }
}

describe('restore queue', () => {
  it('survives a restart mid-restore: the interrupted entry restarts from scratch and completes, then the next one runs', async () => {
    const source = join(home, 'source.img')
    // More than one 8 MiB batch of data blocks: the fixture's vault answers the first batch at once
    // and the next one only after TEST_READ_DELAY_MS, so the restore is caught half-way.
    const data = Buffer.concat([randomBytes(11, 6 * 1024 * 1024), Buffer.alloc(2 * 1024 * 1024), randomBytes(12, 6 * 1024 * 1024 + 512)])
    await writeFile(source, data)
    const out = join(home, 'out')
    const first = enqueueRestore(db, { pointId: 'p-1', mode: 'file', targetPath: join(out, 'disk.img') })
    const second = enqueueRestore(db, { pointId: 'p-1', mode: 'file', targetPath: join(out, 'second.img'), format: 'raw' })

    // "The app": serves the queue; its job processes read slowly.
    const host = spawn(process.execPath, ['--import', 'tsx', HOST], {
      env: { ...process.env, TRESOR_HOME: home, TEST_SOURCE: source, TEST_READ_DELAY_MS: '30000' },
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    const jobPids: number[] = []
    createInterface({ input: host.stdout! }).on('line', (l) => {
      const m = JSON.parse(l) as { pid?: number }
      if (m.pid) jobPids.push(m.pid)
    })
    try {
      await until(() => jobPids.length === 1 && (getJob(db, first.jobId!)?.bytesDone ?? 0) > 0)
      expect(getRestoreQueueEntry(db, second.id)!.state).toBe('queued') // concurrency 1
      expect(await readdir(out)).toEqual(['disk.img.partial'])
    } finally {
      // The app and its job process die at once (power cut, kill -9).
      host.kill('SIGKILL')
      for (const pid of jobPids) process.kill(pid, 'SIGKILL')
    }
    await new Promise((r) => host.once('exit', r))
    expect(await readdir(out)).toEqual(['disk.img.partial'])
    expect(getRestoreQueueEntry(db, first.id)!.state).toBe('running')

    // The app starts again.
    const supervisor = new JobSupervisor({ db, home, launcher: new ChildProcessLauncher({ entryPath: JOB_ENTRY, env: { ...process.env, TEST_SOURCE: source } }) })
    const queue = new RestoreQueue({ db, supervisor })
    try {
      expect(queue.recover()).toEqual([first.id])
      const requeued = getRestoreQueueEntry(db, first.id)!
      expect(requeued).toMatchObject({ state: 'queued', attempts: 1, jobId: first.jobId })
      expect(getJob(db, first.jobId!)!.state).toBe('queued')
      queue.pump()
      const a = await queue.waitFor(first.id)
      const b = await queue.waitFor(second.id)
      expect(a.state).toBe('succeeded')
      expect(b.state).toBe('succeeded')
      const job = getJob(db, first.jobId!)!
      expect(job.state).toBe('succeeded')
      expect(job.log).toMatch(/Interrupted/)
      expect((await readdir(out)).sort()).toEqual(['disk.img', 'second.img'])
      expect((await readFile(join(out, 'disk.img'))).equals(data)).toBe(true)
      expect((await readFile(join(out, 'second.img'))).equals(data)).toBe(true)
    } finally {
      queue.dispose()
      await supervisor.dispose()
    }
  })

  it('runs entries in position order within the concurrency bound; reorders and cancels', async () => {
    const started: string[] = []
    const releases = new Map<string, () => void>()
    const supervisor = new JobSupervisor({
      db,
      home,
      launcher: new InProcessLauncher({
        restore: async (input, env) => {
          const target = (input as { targetPath: string }).targetPath
          started.push(target)
          await new Promise<void>((resolve, reject) => {
            releases.set(target, resolve)
            env.signal.addEventListener('abort', () => reject(new EngineError('CANCELLED', 'cancelled')))
          })
          return { files: [target], bytesWritten: 0 }
        },
      }),
    })
    const queue = new RestoreQueue({ db, supervisor, concurrency: 2, pollMs: 20 })
    try {
      const e = ['/r/a', '/r/b', '/r/c', '/r/d', '/r/e'].map((t) => enqueueRestore(db, { pointId: 'p', mode: 'file', targetPath: t }))
      queue.reorder([e[4]!.id, e[3]!.id]) // e, d, then a, b, c
      expect(listRestoreQueue(db).map((x) => x.spec.targetPath)).toEqual(['/r/e', '/r/d', '/r/a', '/r/b', '/r/c'])
      await queue.cancel(e[0]!.id) // queued: never runs
      expect(queue.pump()).toHaveLength(2)
      await until(() => started.length === 2)
      expect(started).toEqual(['/r/e', '/r/d'])
      expect(queue.pump()).toEqual([]) // bound reached
      releases.get('/r/e')!()
      await until(() => started.length === 3)
      expect(started[2]).toBe('/r/b')
      await queue.cancel(e[3]!.id) // running: cancelled through its job
      expect((await queue.waitFor(e[3]!.id)).state).toBe('cancelled')
      await until(() => started.length === 4)
      releases.get('/r/b')!()
      releases.get('/r/c')!()
      expect((await queue.waitFor(e[2]!.id)).state).toBe('succeeded')
      expect((await queue.waitFor(e[4]!.id)).state).toBe('succeeded')
      expect(started).toEqual(['/r/e', '/r/d', '/r/b', '/r/c'])
      expect(getRestoreQueueEntry(db, e[0]!.id)!.state).toBe('cancelled')
      expect(getJob(db, e[0]!.jobId!)!.state).toBe('cancelled')
      expect(listRestoreQueue(db)).toEqual([])
    } finally {
      queue.dispose()
      await supervisor.dispose()
    }
  })

  it('refuses a malformed restore request', () => {
    expect(() => enqueueRestore(db, { pointId: 'p', mode: 'file', targetPath: '/a\0b' })).toThrow(/malformed/)
    expect(listRestoreQueue(db)).toEqual([])
  })
})
