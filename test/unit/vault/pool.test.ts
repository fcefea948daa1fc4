import { afterEach, describe, expect, it } from 'vitest'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { prewarmWorkers, releaseSpareWorkers, spareWorkerCount, WorkerPool } from '../../../electron/engine/workers/pool.js'
import { EngineError } from '../../../electron/engine/errors.js'

const url = new URL('./echoWorker.ts', import.meta.url)
let pool: WorkerPool<any, any> | undefined
afterEach(async () => {
  await pool?.dispose()
  pool = undefined
  await releaseSpareWorkers()
})

describe('WorkerPool', () => {
  it('moves buffers to the worker and back (transfer, not copy) and returns results', async () => {
    pool = new WorkerPool(url, { size: 2, maxQueue: 2 })
    const ab = new ArrayBuffer(1000)
    new Uint8Array(ab).fill(1)
    const r = await pool.run({ op: 'sum', buf: ab }, [ab])
    expect(ab.byteLength).toBe(0) // detached on our side while away
    expect(r.sum).toBe(1000)
    expect(new Uint8Array(r.buf)[0]).toBe(42)
  })

  it('applies back-pressure: submit waits while running + queued tasks are at the bound', async () => {
    pool = new WorkerPool(url, { size: 1, maxQueue: 1 })
    const a = await pool.submit({ op: 'sleep', ms: 300 })
    const b = await pool.submit({ op: 'sleep', ms: 10 })
    let accepted = false
    const c = pool.submit({ op: 'sleep', ms: 10 }).then((x) => ((accepted = true), x))
    await new Promise((r) => setTimeout(r, 100))
    expect(accepted).toBe(false)
    expect(pool.pending).toBe(2)
    await a.result
    await (await c).result
    expect(accepted).toBe(true)
    await b.result
  })

  it('sends a worker its next task ahead, so it starts while this thread is busy, and runs them one at a time', async () => {
    pool = new WorkerPool(url, { size: 1, maxQueue: 2 })
    await pool.run({ op: 'sleep', ms: 1 }) // the worker has started
    const sab = new SharedArrayBuffer(8 * 4)
    const a = await pool.submit({ op: 'stamp', sab, slot: 0, ms: 40 })
    const b = await pool.submit({ op: 'stamp', sab, slot: 1, ms: 40 })
    const c = await pool.submit({ op: 'stamp', sab, slot: 2, ms: 1 })
    // this thread stays busy, taking no reply: only a task already sent can start meanwhile (1.5 s:
    // wide enough for a loaded machine, where the worker may wait long for a core)
    const busyUntil = performance.timeOrigin + performance.now() + 1500
    while (performance.timeOrigin + performance.now() < busyUntil);
    expect(await a.result).toBe('stamped')
    expect(await b.result).toBe('stamped')
    expect(await c.result).toBe('stamped')
    const starts = new Float64Array(sab)
    const counts = new Int32Array(sab, 0, 2)
    expect(counts[1]).toBe(1) // never two at once
    expect(starts[2]! - starts[1]!).toBeGreaterThanOrEqual(35) // b after a ended
    expect(starts[2]!).toBeLessThan(busyUntil) // b was sent ahead: it began during the busy loop
    expect(starts[3]!).toBeGreaterThanOrEqual(busyUntil) // c was not (two ahead at most): it waited for a reply
  })

  it('narrowed, sends tasks that do not wait long to one worker; released, to all', async () => {
    pool = new WorkerPool(url, { size: 2, maxQueue: 4 })
    await Promise.all([pool.run({ op: 'sleep', ms: 1 }), pool.run({ op: 'sleep', ms: 1 })])
    const release = pool.narrow(10_000)
    expect(pool.activeWorkers).toBe(1)
    // four at once: they queue behind the one worker, but not for 10 s
    const narrowed = await Promise.all([0, 1, 2, 3].map(() => pool!.run({ op: 'who', ms: 20 })))
    expect(new Set(narrowed).size).toBe(1)
    release()
    release() // idempotent
    expect(pool.activeWorkers).toBe(2)
    const wide = await Promise.all([0, 1, 2, 3].map(() => pool!.run({ op: 'who', ms: 50 })))
    expect(new Set(wide).size).toBe(2)
  })

  it('narrowed, lets one more worker take tasks once tasks have kept waiting', async () => {
    pool = new WorkerPool(url, { size: 2, maxQueue: 8 })
    await Promise.all([pool.run({ op: 'sleep', ms: 1 }), pool.run({ op: 'sleep', ms: 1 })])
    pool.narrow(60)
    const tasks = await Promise.all(Array.from({ length: 8 }, () => pool!.submit({ op: 'who', ms: 40 })))
    const threads = await Promise.all(tasks.map((t) => t.result))
    expect(pool.activeWorkers).toBe(2)
    expect(new Set(threads).size).toBe(2)
    // the first two went to the first worker before anything had waited (one running, one sent ahead)
    expect(threads[1]).toBe(threads[0])
  })

  it('keeps EngineError codes, replaces a crashed worker, rejects queued work on dispose', async () => {
    pool = new WorkerPool(url, { size: 1, maxQueue: 4 })
    const err = await pool.run({ op: 'fail' }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(EngineError)
    expect((err as EngineError).code).toBe('CHUNK_CORRUPT')
    const crash = await pool.run({ op: 'crash' }).catch((e: unknown) => e)
    expect((crash as EngineError).code).toBe('INTERNAL')
    expect(await pool.run({ op: 'sleep', ms: 1 })).toBe('slept') // replacement worker
    const running = await pool.submit({ op: 'sleep', ms: 200 })
    const queued = await pool.submit({ op: 'sleep', ms: 1 })
    await pool.dispose()
    await expect(queued.result).rejects.toMatchObject({ code: 'CANCELLED' })
    await expect(running.result).rejects.toMatchObject({ code: 'CANCELLED' })
    await pool.dispose() // idempotent
  })

  it('dispose right after creation lets each worker finish loading its module before terminating it', async () => {
    // Terminating a thread while a native addon initialises can abort the whole process; the pool
    // waits for the module's serveTasks (its "ready") first.
    const loaded = new SharedArrayBuffer(4)
    pool = new WorkerPool(new URL('./slowLoadWorker.ts', import.meta.url), { size: 1, workerData: loaded })
    await pool.dispose()
    expect(Atomics.load(new Int32Array(loaded), 0)).toBe(1)
  })

  it('runs tasks inline on the calling thread until a worker has started, then only in workers', async () => {
    const loaded = new SharedArrayBuffer(4)
    let inlineLoads = 0
    pool = new WorkerPool<string, string>(new URL('./slowLoadWorker.ts', import.meta.url), {
      size: 1,
      workerData: loaded,
      inline: async () => {
        inlineLoads++
        return (task) => {
          if (task === 'engine-fail') throw new EngineError('CHUNK_CORRUPT', 'bad chunk for test')
          if (task === 'plain-fail') throw new Error('boom')
          return { value: `inline:${task}` }
        }
      },
    })
    // the worker needs ~300 ms to load: these run here, one at a time, in order
    expect(await Promise.all(['a', 'b', 'c'].map((t) => pool!.run(t)))).toEqual(['inline:a', 'inline:b', 'inline:c'])
    expect(inlineLoads).toBe(1)
    expect(Atomics.load(new Int32Array(loaded), 0)).toBe(0)
    await expect(pool.run('engine-fail')).rejects.toMatchObject({ code: 'CHUNK_CORRUPT' })
    await expect(pool.run('plain-fail')).rejects.toMatchObject({ code: 'INTERNAL' })
    // once the worker has started, tasks go to it (it echoes them)
    while (Atomics.load(new Int32Array(loaded), 0) === 0) await new Promise((r) => setTimeout(r, 20))
    await new Promise((r) => setTimeout(r, 50)) // its "ready" message
    expect(await Promise.all(['d', 'e'].map((t) => pool!.run(t)))).toEqual(['d', 'e'])
    // runHere: on this thread even now, ahead of queued work, with the same error mapping
    expect(await pool.runHere('f')).toBe('inline:f')
    await expect(pool.runHere('plain-fail')).rejects.toMatchObject({ code: 'INTERNAL' })
    expect(inlineLoads).toBe(1)
  })

  it('runHere without an inline handler sends the task to the workers', async () => {
    pool = new WorkerPool(url, { size: 1, maxQueue: 1 })
    expect(await pool.runHere({ op: 'sleep', ms: 1 })).toBe('slept')
    await pool.dispose()
    await expect(pool.runHere({ op: 'sleep', ms: 1 })).rejects.toMatchObject({ code: 'CANCELLED' })
  })

  it('sends tasks to the workers when the inline handler cannot be loaded', async () => {
    pool = new WorkerPool<string, string>(new URL('./slowLoadWorker.ts', import.meta.url), {
      size: 1,
      workerData: new SharedArrayBuffer(4),
      inline: () => Promise.reject(new Error('no codec on this thread')),
    })
    expect(await Promise.all(['a', 'b'].map((t) => pool!.run(t)))).toEqual(['a', 'b'])
  })

  it('a pool adopts the spare workers started before it: the same threads, configured by the pool', async () => {
    const configured = new URL('./configuredWorker.ts', import.meta.url)
    const spares = prewarmWorkers(configured, 2)
    expect(spares).toHaveLength(2)
    expect(spareWorkerCount()).toBe(2)
    pool = new WorkerPool(configured, { size: 2, workerData: { vault: 'one' } })
    expect(spareWorkerCount()).toBe(0)
    const replies = await Promise.all(['a', 'b', 'c', 'd'].map((t) => pool!.run(t)))
    expect(replies.map((r) => r.task)).toEqual(['a', 'b', 'c', 'd'])
    for (const r of replies) expect(r.config).toEqual({ vault: 'one' })
    expect(new Set(replies.map((r) => r.threadId))).toEqual(new Set(spares))
    // with no spare left, the next pool starts its own worker, configured through workerData
    const other = new WorkerPool<string, { config: unknown; threadId: number }>(configured, { size: 1, workerData: { vault: 'two' } })
    try {
      const r = await other.run('e')
      expect(r.config).toEqual({ vault: 'two' })
      expect(spares).not.toContain(r.threadId)
    } finally {
      await other.dispose()
    }
  })

  it('fails each task of a spare whose configuration its module refuses, with that error', async () => {
    const configured = new URL('./configuredWorker.ts', import.meta.url)
    prewarmWorkers(configured, 1)
    pool = new WorkerPool(configured, { size: 1, workerData: 'bad' })
    const err = await pool.run('a').catch((e: unknown) => e)
    expect(err).toMatchObject({ code: 'INTERNAL' })
    expect((err as Error).message).toContain('a configuration this module refuses')
  })

  it('releaseSpareWorkers lets a spare no pool took finish loading before ending it', async () => {
    // as with dispose: ending a thread while a native addon initialises can abort the process
    const dir = mkdtempSync(join(tmpdir(), 'tresor-spares-'))
    const marks = join(dir, 'loaded')
    process.env.TRESOR_TEST_LOADED = marks
    try {
      const spares = prewarmWorkers(new URL('./configuredWorker.ts', import.meta.url), 2)
      await releaseSpareWorkers()
      expect(spareWorkerCount()).toBe(0)
      expect(readFileSync(marks, 'utf8').trim().split('\n').map(Number).sort()).toEqual([...spares].sort())
    } finally {
      delete process.env.TRESOR_TEST_LOADED
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
