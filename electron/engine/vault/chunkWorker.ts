/** Task module of the vault's worker pool: serves the chunk tasks (chunkHandler.ts). */
import { serveConfiguredTasks } from '../workers/pool.js'
import { chunkTaskHandler, preloadChunkModules } from './chunkHandler.js'
import type { CodecConfig } from './chunkCodec.js'
import type { ChunkTask, ChunkTaskResult } from './chunkTasks.js'

serveConfiguredTasks<ChunkTask, ChunkTaskResult>((config) => chunkTaskHandler(config as CodecConfig))
// workers start first thing (pool.ts `prewarmWorkers`) and wait ~0.2 s for their first task
preloadChunkModules()
