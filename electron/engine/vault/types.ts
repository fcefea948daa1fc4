/** Types of the local vault beyond the pipelines' view (api.ts). */
import type { LockWait, PointManifest, Vault } from './api.js'
import type { EngineError } from '../errors.js'
import type { VaultFs } from './vaultFs.js'

/** Time source, injectable for tests (RELIABILITY "Injected Clock"). */
export interface Clock {
  /** Wall-clock milliseconds since the epoch (written into lock files). */
  now(): number
  /** Monotonic milliseconds (elapsed-time checks that must ignore wall-clock jumps). */
  monotonic(): number
}

export const systemClock: Clock = {
  now: () => Date.now(),
  monotonic: () => performance.now(),
}

export interface LockOptions extends LockWait {
  /** A lock not refreshed for this long is stale (default 30 min). */
  lifetimeMs?: number
  /** Refresh period while held (default lifetime / 6). */
  refreshMs?: number
  /** Host name written into lock files (default os.hostname()). */
  host?: string
}

/** Test hooks (fault injection); never set in production. */
export interface VaultTestHooks {
  /** Flip a bit of every compressed chunk inside the worker before encryption (a buggy compressor). */
  corruptCompressor?: boolean
  /** Called with each sealed chunk record before it is written to its pack (mutate to simulate a bit flip in memory). */
  afterSeal?: (record: Buffer) => void
}

export interface OpenVaultOptions {
  /** Last generation the caller saw (catalog/keychain); an older vault is refused (VAULT_ROLLBACK). */
  lastGeneration?: number
  clock?: Clock
  fs?: VaultFs
  locks?: LockOptions
  /** Worker threads for sealing/opening chunks (default: available parallelism, at most 4). */
  workers?: number
  /** Seal batches (each up to SEAL_BATCH_BYTES) in flight at once per session (back-pressure bound; default 2 × workers). */
  maxBlocksInFlight?: number
  /** Free-form description written into lock files (e.g. "backup vm1"). */
  purpose?: string
  testHooks?: VaultTestHooks
}

export interface AffectedPoint {
  pointId: string
  disks: string[]
}

export interface VerifyProblem {
  /** 'config' | 'generation' | 'pack' | 'pack-index' | 'chunk-corrupt' | 'chunk-missing' | 'manifest' | 'block-map' */
  kind: string
  /** What is damaged: 'pack:<id>', 'chunk:<id>', 'point:<id>', 'map:<point>/<disk>'... */
  object: string
  message: string
  affectedPoints: AffectedPoint[]
}

export interface VerifyReport {
  ok: boolean
  problems: VerifyProblem[]
  /** Counts of what was checked. */
  checked: { packs: number; chunks: number; points: number; chunksRead: number; bytesRead: number }
  /** Packs no point references (left by an interrupted backup); reclaimed by prune, not a problem. */
  unreferencedPacks: number
}

export interface VerifyOptions {
  readData: boolean
  onProgress?: (progress: { phase: 'indexes' | 'data' | 'recipes' | 'points'; done: number; total: number }) => void
  signal?: AbortSignal
  /** Waiting for the shared lock verify takes (a prune holds the exclusive one); default: no wait, VAULT_LOCKED. */
  lock?: LockWait
}

export interface PruneOptions {
  /**
   * The share of the vault's record bytes that may stay unused after the prune, 0..1 (default
   * DEFAULT_MAX_UNUSED, 5 %). Packs holding no live chunk are always deleted; partly used packs are
   * rewritten, those with the largest unused share first, until what stays unused is within this
   * limit. 1 rewrites nothing; 0 rewrites every pack that holds any unused record.
   */
  maxUnused?: number
  onProgress?: (progress: { phase: 'delete' | 'mark' | 'repack' | 'sweep'; done: number; total: number }) => void
}

export interface PruneResult {
  pointsRemoved: number
  bytesFreed: number
  packsDeleted: number
  packsRepacked: number
}

export interface VaultStats {
  packs: number
  bytesOnDisk: number
  chunks: number
  points: number
}

/** Result of reading every manifest: readable points (oldest first) and the damaged ones. */
export interface PointScan {
  points: PointManifest[]
  damaged: Array<{ pointId: string; error: EngineError }>
}

/** The local-folder vault: the pipelines' Vault plus maintenance. */
export interface LocalVault extends Vault {
  readLock(purpose: string, options?: LockWait): Promise<{ release(): Promise<void> }>
  /** Like listPoints, but a damaged manifest is listed instead of failing the whole listing (rebuild). */
  scanPoints(): Promise<PointScan>
  verify(options: VerifyOptions): Promise<VerifyReport>
  /** Deletes the manifests of these points (exclusive lock). Space is freed by `prune`. */
  deletePoints(ids: string[]): Promise<number>
  /** Deletes the given points (if any), then garbage-collects and repacks under the exclusive lock. */
  prune(options?: PruneOptions & { deletePointIds?: string[] }): Promise<PruneResult>
  stats(): Promise<VaultStats>
}
