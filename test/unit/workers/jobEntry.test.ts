import { describe, expect, it } from 'vitest'
import { EngineError } from '../../../electron/engine/errors.js'
import { createJobHandler, type Pipelines } from '../../../electron/engine/workers/jobEntry.js'
import { parseFromJob, parseToJob, type FromJob } from '../../../electron/engine/workers/protocol.js'
import { spareWorkerCount } from '../../../electron/engine/workers/pool.js'
import { defaultChunkWorkers } from '../../../electron/engine/vault/chunkWorkers.js'

function harness(pipelines: Pipelines, progressIntervalMs = 200) {
  const sent: FromJob[] = []
  const handler = createJobHandler({ send: (m) => sent.push(structuredClone(m)) }, pipelines, { progressIntervalMs })
  return { sent, handler }
}

const start = (kind: 'backup' | 'restore' | 'verify' | 'prune', input: unknown, jobId = 'j1') => ({ kind: 'start', jobId, home: '/tmp/h', spec: { kind, input } })

describe('job protocol', () => {
  it('accepts well-formed messages and rejects malformed ones', () => {
    expect(parseToJob(start('verify', { readData: true })).ok).toBe(true)
    expect(parseToJob({ kind: 'cancel', jobId: 'x' }).ok).toBe(true)
    expect(parseToJob({ kind: 'explode', jobId: 'x' }).ok).toBe(false)
    expect(parseToJob({ ...start('verify', {}), home: '/tmp/\0evil' }).ok).toBe(false)
    expect(parseToJob(start('restore', { pointId: 'p', mode: 'file', targetPath: '/a\0b' })).ok).toBe(false)
    expect(parseToJob(start('restore', { pointId: 'p', mode: 'sideways' })).ok).toBe(false)
    expect(parseToJob(start('restore', { pointId: 'p', mode: 'folder', targetPath: '/r', format: 'vmdk' })).ok).toBe(false)
    expect(parseFromJob({ kind: 'failed', jobId: 'j', error: { code: 'NOT_A_CODE', message: 'x' } }).ok).toBe(false)
    expect(parseFromJob({ kind: 'progress', jobId: 'j', progress: { bytesDone: 1, bytesTotal: 2, disks: [] } }).ok).toBe(true)
    expect(parseFromJob({ kind: 'progress', jobId: 'j', progress: { bytesDone: -1, bytesTotal: 2 } }).ok).toBe(false)
    const bad = parseToJob({ kind: 'start', jobId: 'j' })
    expect(bad.ok === false && bad.error.code).toBe('INVALID_INPUT')
  })
})

describe('job entry handler', () => {
  it('runs the pipeline, throttles progress and reports the result', async () => {
    const { sent, handler } = harness({
      verify: async (_input, env) => {
        for (let i = 1; i <= 100; i++) env.onProgress({ bytesDone: i, bytesTotal: 100, phase: 'verifying' })
        env.log('checked 100 packs')
        return { ok: true, problems: [] }
      },
    })
    handler.receive(start('verify', { readData: true }))
    await handler.done
    const kinds = sent.map((m) => m.kind)
    expect(kinds.at(-1)).toBe('finished')
    const progress = sent.filter((m) => m.kind === 'progress')
    expect(progress.length).toBeGreaterThanOrEqual(1)
    expect(progress.length).toBeLessThan(10)
    // the log flushes the latest progress first, so the last report before it is the newest
    const logAt = kinds.indexOf('log')
    const before = sent[logAt - 1]
    expect(before?.kind === 'progress' && before.progress.bytesDone).toBe(100)
    expect(sent.at(-1)).toEqual({ kind: 'finished', jobId: 'j1', result: { ok: true, problems: [] } })
  })

  it('reports an EngineError with its code, and anything else as INTERNAL without details', async () => {
    const a = harness({ prune: async () => { throw new EngineError('VAULT_LOCKED', 'The vault is in use by a backup.') } })
    a.handler.receive(start('prune', {}))
    await a.handler.done
    expect(a.sent.at(-1)).toEqual({ kind: 'failed', jobId: 'j1', error: { code: 'VAULT_LOCKED', message: 'The vault is in use by a backup.' } })
    const b = harness({ prune: async () => { throw new TypeError('secret internals') } })
    b.handler.receive(start('prune', {}))
    await b.handler.done
    const last = b.sent.at(-1)
    expect(last?.kind === 'failed' && last.error.code).toBe('INTERNAL')
    expect(JSON.stringify(last)).not.toContain('secret internals')
  })

  it('cancels: the pipeline sees the abort and the job fails with CANCELLED', async () => {
    const { sent, handler } = harness({
      verify: (_i, env) =>
        new Promise((_resolve, reject) => {
          env.signal.addEventListener('abort', () => reject(new EngineError('CANCELLED', 'Verification was cancelled.')))
        }),
    })
    handler.receive(start('verify', {}))
    await new Promise((r) => setTimeout(r, 10))
    handler.receive({ kind: 'cancel', jobId: 'other' }) // not ours: ignored
    await new Promise((r) => setTimeout(r, 10))
    expect(sent).toEqual([])
    handler.receive({ kind: 'cancel', jobId: 'j1' })
    await handler.done
    expect(sent.at(-1)).toEqual({ kind: 'failed', jobId: 'j1', error: { code: 'CANCELLED', message: 'Verification was cancelled.' } })
  })

  it('answers a malformed start with failed INVALID_INPUT and never runs anything', async () => {
    let ran = false
    const { sent, handler } = harness({ verify: async () => { ran = true } })
    handler.receive({ kind: 'start', jobId: 'j9', home: 42 })
    await handler.done
    expect(ran).toBe(false)
    expect(sent).toHaveLength(1)
    expect(sent[0]).toMatchObject({ kind: 'failed', jobId: 'j9', error: { code: 'INVALID_INPUT' } })
  })

  it('runs one job per process and refuses kinds it has no pipeline for', async () => {
    const calls: string[] = []
    const { sent, handler } = harness({ verify: async () => { calls.push('v'); await new Promise((r) => setTimeout(r, 5)); return 1 } })
    handler.receive(start('verify', {}))
    handler.receive(start('verify', {}, 'j2'))
    await handler.done
    expect(calls).toEqual(['v'])
    expect(sent.some((m) => m.kind === 'log' && /second start/.test(m.line))).toBe(true)
    const other = harness({})
    other.handler.receive(start('backup', { machineId: 'm' }))
    await other.handler.done
    expect(other.sent.at(-1)).toMatchObject({ kind: 'failed', error: { code: 'UNSUPPORTED' } })
  })

  it('sends nothing after the final message', async () => {
    let late: ((n: number) => void) | undefined
    const { sent, handler } = harness({
      verify: async (_i, env) => {
        late = (n) => env.onProgress({ bytesDone: n, bytesTotal: 10 })
        env.log('x'.repeat(20_000))
        return null
      },
    })
    handler.receive(start('verify', {}))
    await handler.done
    const count = sent.length
    late!(5)
    await new Promise((r) => setTimeout(r, 250))
    expect(sent.length).toBe(count)
    const log = sent.find((m) => m.kind === 'log')
    expect(log?.kind === 'log' && log.line.length).toBeLessThanOrEqual(16_384)
    expect(sent.at(-1)).toEqual({ kind: 'finished', jobId: 'j1', result: null })
  })

  it('a job process starts the chunk workers with the jobs that need them, and ends unused ones before its last message', async () => {
    const seen: Record<string, number> = {}
    const pipelines: Pipelines = {
      backup: async () => ((seen.backup = spareWorkerCount()), {}),
      verify: async () => ((seen.verify = spareWorkerCount()), { ok: true, problems: [] }),
      prune: async () => ((seen.prune = spareWorkerCount()), {}),
    }
    for (const [kind, input] of [['backup', { machineId: 'm' }], ['verify', { readData: false }], ['prune', {}]] as const) {
      const sent: FromJob[] = []
      const handler = createJobHandler({ send: (m) => sent.push(structuredClone(m)) }, pipelines, { prewarmWorkers: true })
      handler.receive(start(kind, input))
      await handler.done
      expect(sent.at(-1)?.kind).toBe('finished')
      expect(spareWorkerCount()).toBe(0) // ended before the last message: the process exits after it
    }
    // a backup seals chunks: its workers were loading while the pipeline ran; a verify without
    // readData and a prune open none
    expect(seen).toEqual({ backup: defaultChunkWorkers(), verify: 0, prune: 0 })
  })
})
