/**
 * Where the vault's chunk workers come from: their task module, how many, and starting them early.
 * Kept apart from context.ts so that a command can start them (`prewarmChunkWorkers`) before it
 * imports the vault: the workers then load their modules on another core meanwhile (~0.3 s each).
 */
import { availableParallelism } from 'node:os'
import { prewarmWorkers } from '../workers/pool.js'
import type { JobKind } from '../workers/protocol.js'

/**
 * The chunk workers' task module beside this one: chunkWorker.ts in tests and source checkouts,
 * chunkWorker.js in dist/electron, and an entry of the CLI's bundle in dist/cli (scripts/build.mjs).
 */
export function chunkWorkerUrl(): URL {
  const ext = import.meta.url.endsWith('.ts') ? '.ts' : '.js'
  return new URL(`./chunkWorker${ext}`, import.meta.url)
}

export const CHUNK_WORKER_NAME = 'vault chunk worker'

/** The chunk-worker count when a vault is opened without `workers`: TRESOR_WORKERS, else one per core, at most 4. */
export function defaultChunkWorkers(): number {
  return workersFromEnv() ?? Math.min(4, availableParallelism())
}

/**
 * Whether a job of this kind (the CLI's command of the same name) seals or opens chunks, so that
 * starting the chunk workers early pays: backup, restore, and verify with readData.
 */
export function needsChunkWorkers(kind: JobKind, input: unknown): boolean {
  return kind === 'backup' || kind === 'restore' || (kind === 'verify' && (input as { readData?: unknown } | null)?.readData === true)
}

/**
 * Starts the default number of chunk workers as spares (pool.ts `prewarmWorkers`): the next vault
 * this process opens adopts them. For commands that will seal or open chunks; the caller ends
 * unused ones with `releaseSpareWorkers`.
 */
export function prewarmChunkWorkers(): void {
  prewarmWorkers(chunkWorkerUrl(), defaultChunkWorkers(), CHUNK_WORKER_NAME)
}

/**
 * TRESOR_WORKERS=n (1..16) overrides the default chunk-worker count (one per core, at most 4);
 * the benchmark's worker table uses it. Anything else is ignored.
 */
function workersFromEnv(): number | undefined {
  const n = Number(process.env.TRESOR_WORKERS)
  return Number.isInteger(n) && n >= 1 && n <= 16 ? n : undefined
}
