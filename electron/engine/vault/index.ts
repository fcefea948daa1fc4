/**
 * The vault: where recovery points live (DESIGN.md "Vault invariants", FORMAT.md for the bytes).
 *
 * Terms
 * - vault: a folder holding `config`, `generations/`, `locks/`, `packs/`, `manifests/`, `maps/`, `tmp/`.
 * - master key: 32 random bytes (engine/keys wraps it into key slots); every vault key derives from it.
 * - chunk: one stored data block, named by its keyed BLAKE3-256 id, zstd-compressed when that saves
 *   space, AES-256-GCM encrypted with its id, pack and position bound as associated data.
 * - pack: a file of chunk records (bounded size, default 32 MiB) ending with its encrypted index.
 * - manifest: the encrypted record of one recovery point; its block maps are separate encrypted
 *   segment objects. A point exists once its manifest exists (I1).
 * - generation: a monotonic counter bumped by every commit and prune (I11).
 * - lock: shared (backup) or exclusive (prune/rebuild) lock files with host, pid and refresh time (I5, I13).
 *
 * Entry points: `createVault`, `readVaultHeader` (no key), `openVault` (key) → `LocalVault`
 * (api.ts's `Vault` plus verify/prune/stats), `updateKeySlots`, `listLocks`/`breakLock`.
 */
export type * from './api.js'
export { createVault, readVaultHeader, updateKeySlots, DEFAULT_BLOCK_SIZE, MIN_BLOCK_SIZE, MAX_BLOCK_SIZE } from './config.js'
export type { KeySlots } from './config.js'
export { openVault } from './localVault.js'
export { breakLock, listLocks, UNLOCK_COMMAND, DEFAULT_LOCK_LIFETIME_MS, JOB_LOCK_WAIT_MS, LOCK_WAIT_LOG_PREFIX, jobLockOptions } from './locks.js'
export type { LockInfo, LockKind } from './locks.js'
export { nodeVaultFs } from './vaultFs.js'
export type { VaultFs, VaultFileHandle } from './vaultFs.js'
export { systemClock } from './types.js'
export type {
  Clock,
  LocalVault,
  LockOptions,
  OpenVaultOptions,
  PruneOptions,
  PruneResult,
  VaultStats,
  VerifyOptions,
  VerifyProblem,
  VerifyReport,
  AffectedPoint,
  VaultTestHooks,
  PointScan,
} from './types.js'
