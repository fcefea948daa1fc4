// Task module for the pool tests: echoes, sums bytes, fails or crashes on request.
import { serveTasks } from '../../../electron/engine/workers/pool.js'
import { EngineError } from '../../../electron/engine/errors.js'

type Task = { op: 'sum'; buf: ArrayBuffer } | { op: 'fail' } | { op: 'crash' } | { op: 'sleep'; ms: number }

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
  await new Promise((r) => setTimeout(r, task.ms))
  return { value: 'slept' }
})
