// Task module for the pool tests: its loading takes a while (as a native addon's init can), then it
// marks in shared memory (workerData) that it finished loading, then serves echo tasks.
import { workerData } from 'node:worker_threads'
import { serveTasks } from '../../../electron/engine/workers/pool.js'

const flag = new Int32Array(workerData as SharedArrayBuffer)
Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 300) // a slow module load
Atomics.store(flag, 0, 1)
serveTasks<string, string>((task) => ({ value: task }))
