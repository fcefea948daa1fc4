// Task module for the pool's spare-worker tests: loads slowly (as native addons can), notes in the
// file named by TRESOR_TEST_LOADED (if set) that it finished loading, then serves tasks with the
// configuration its pool gave it, echoing it with its thread id.
import { appendFileSync } from 'node:fs'
import { threadId } from 'node:worker_threads'
import { serveConfiguredTasks } from '../../../electron/engine/workers/pool.js'

Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 300) // a slow module load
if (process.env.TRESOR_TEST_LOADED) appendFileSync(process.env.TRESOR_TEST_LOADED, `${threadId}\n`)
serveConfiguredTasks<string, { config: unknown; task: string; threadId: number }>((config) => {
  if (config === 'bad') throw new Error('a configuration this module refuses')
  return (task) => ({ value: { config, task, threadId } })
})
