/** Task module of the vault's worker pool: serves the chunk tasks (chunkHandler.ts). */
import { workerData } from 'node:worker_threads'
import { serveTasks } from '../workers/pool.js'
import { chunkTaskHandler } from './chunkHandler.js'
import type { CodecConfig } from './chunkCodec.js'
import type { ChunkTask, ChunkTaskResult } from './chunkTasks.js'

serveTasks<ChunkTask, ChunkTaskResult>(chunkTaskHandler(workerData as CodecConfig))
