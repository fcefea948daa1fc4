// Task module for the pool tests: echoes, sums bytes, fails or crashes on request.
import { threadId } from 'node:worker_threads'
import { serveTasks } from '../../../electron/engine/workers/pool.js'
import { EngineError } from '../../../electron/engine/errors.js'

type Task =
  | { op: 'sum'; buf: ArrayBuffer }
  | { op: 'fail' }
  | { op: 'crash' }
  | { op: 'sleep'; ms: number }
  // sleeps `ms`, counting tasks running at once in i32[0] (most seen in i32[1]) and writing its start time (ms) to f64[1 + slot]
  | { op: 'stamp'; sab: SharedArrayBuffer; slot: number; ms: number }
  // sleeps `ms`, then answers with the thread that ran it
  | { op: 'who'; ms: number }

serveTasks<Task, unknown>(async (task) => {
  if (task.op === 'sum') {
    const bytes = new Uint8Array(task.buf)
    let s = 0
    for (const b of bytes) s += b
    bytes[0] = 42 // mutate and send back: proves the buffer travelled, not a copy
    return { value: { sum: s, buf: task.buf }, transfer: [task.buf] }
  }
  if (task.op === 'fail') throw new EngineError('CHUNK_CORRUPT', 'bad chunk for test')
  if (task.op === 'crash') process.exit(3)
  if (task.op === 'stamp') {
    const counts = new Int32Array(task.sab, 0, 2)
    new Float64Array(task.sab)[1 + task.slot] = performance.timeOrigin + performance.now()
    const now = Atomics.add(counts, 0, 1) + 1
    if (now > Atomics.load(counts, 1)) Atomics.store(counts, 1, now)
    await new Promise((r) => setTimeout(r, task.ms))
    Atomics.sub(counts, 0, 1)
    return { value: 'stamped' }
  }
  await new Promise((r) => setTimeout(r, task.ms))
  if (task.op === 'who') return { value: threadId }
  return { value: 'slept' }
})
