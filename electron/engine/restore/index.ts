/**
 * Restore: recovery points back to disk images, through a persistent queue.
 *
 * Terms
 * - restore target: where restored disks go — a new image file (`file`, any writer format: format
 *   conversion on restore), a folder with one file per disk (`folder`, a whole machine), or the
 *   disks' original files (`replace`, only when no process has the machine's files open for
 *   writing; the replaced file is kept until the new one is in place, then removed).
 * - `.partial`: the name a file is written under until every block of the restore is written and
 *   verified (I12); only then does the final name appear.
 * - hole: a ZERO or UNALLOCATED block (or an all-zero DATA block): never written, so the restored
 *   image stays sparse.
 * - restore queue: restore requests in the catalog, run in order with bounded concurrency; an entry
 *   interrupted by a restart runs again from scratch.
 * - snapshot tier source: a disk whose recovery point left a kept reflink clone beside its source
 *   ("instant restore") is restored from that clone (reflink copy, or conversion to another format)
 *   and verified against the point's block map; otherwise, or when the check fails, from the vault.
 *   Each restored disk says which (`source`).
 *
 * Entry points: `restorePoint` (the pipeline; world and options as arguments), `runRestoreJob`
 * (what a job process runs), `RestoreQueue` and the queue functions (catalog side).
 */
export {
  restorePoint,
  selectDisks,
  type RestoreWorld,
  type RestoreRequest,
  type RestoreMode,
  type RestoreOptions,
  type RestoreProgress,
  type RestoreResult,
  type RestoredDisk,
  type RestoreSource,
  type SnapshotCloneRef,
  type WriterFactory,
} from './pipeline.js'
export { runRestoreJob, type RestoreJobEnv, type RestoreJobDeps, type OpenedRestoreVault } from './job.js'
export {
  RestoreQueue,
  enqueueRestore,
  listRestoreQueue,
  reorderRestoreQueue,
  getEntry as getRestoreQueueEntry,
  type RestoreQueueEntry,
  type RestoreQueueOptions,
} from './queue.js'
export { findFileUses, assertNotInUse, type FileUse } from './inUse.js'
export { diskFileName, PARTIAL_SUFFIX, FORMAT_EXTENSIONS } from './targets.js'
