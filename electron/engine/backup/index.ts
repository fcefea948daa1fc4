/**
 * Backup: machines, snapshots with honest consistency, and the block pipeline.
 *
 * Terms
 * - machine: a named group of disks (one VM), added from files or imported from libvirt / VirtualBox.
 * - disk: one image file of a machine (the top of its backing chain); what is backed up is its guest view.
 * - snapshot: the point-in-time copy of a disk taken before reading it — a reflink clone where the
 *   file system can, else the file itself read under checks (not open for writing, unchanged across
 *   the read).
 * - consistency: `application` (scripts succeeded around atomic snapshots), `crash` (atomic
 *   snapshots or a file nobody wrote to), `none` (a file changed or was open for writing while read).
 * - block: a `vault.blockSize` slice of the guest view; the pipeline hashes every allocated block with
 *   XXH3-128 and moves only blocks whose checksum differs from the previous point's at that index.
 * - snapshot tier: reflink clones kept beside their source as `.<stem>.tresor-<UTC stamp>-<id><ext>`
 *   for the policy's `snapshotTierDays`, listed in the catalog (`listSnapshotClones({ pointId })`),
 *   removed by `pruneSnapshotTier` after each backup (aged out, or their point gone) and by
 *   `removeSnapshotClones` when their points are deleted (forget, retention) or their machine is
 *   removed. Only catalog-recorded files with a clone's name beside their disk are ever deleted.
 * - protected size: allocated guest bytes of the included disks at the last backup (`Machine.protectedBytes`).
 *
 * Modules: machines.ts (catalog queries), importers.ts (libvirt, VirtualBox), snapshot.ts (reflink,
 * writer scan, file identity), snapshotTier.ts (removing kept clones), scripts.ts (pre/post scripts),
 * checksum.ts (XXH3-128, zero test), pipeline.ts (`runBackup`: the world as arguments), job.ts (`runBackupJob`: opens the world of a home).
 */
import { runBackupJob as runJob, type BackupJobInput } from './job.js'
import type { BackupResult, JobEnv } from './types.js'

export type { BackupProgress, BackupResult, DiskProgress, JobEnv, Machine, MachineDisk, MachineSource } from './types.js'
export type { BackupJobInput } from './job.js'
export { runBackup, findPreviousPoint, runPendingPostScripts } from './pipeline.js'
export { pruneSnapshotTier, removeMachineSnapshotClones, removeSnapshotClones, unsafeClonePath, type CloneRemoval, type CloneRemovalFailure } from './snapshotTier.js'
export type { BackupWorld, RunBackupOptions, RunBackupOutcome } from './pipeline.js'
export * from './machines.js'
export { importLibvirt, importVbox, type ImportedMachine } from './importers.js'
export { runScript, scriptEnvironment, type ScriptSpec, type ScriptOutcome } from './scripts.js'
export { findWriters, reflinkClone, fileState, sameIdentity, type WriterScan, type FileState } from './snapshot.js'
export { createBlockHasher, CHECKSUM_BYTES, type BlockHasher } from './checksum.js'

/**
 * Runs one backup of `input.machineId` inside a job process: opens the catalog and the current vault
 * of `env.home` (or `input.vaultPath`), runs post-scripts owed by a crashed earlier job, applies the
 * machine's policy (scripts, snapshot tier, failOnInconsistent), runs the pipeline and records the
 * point in the catalog. Resolves with the committed point's figures; rejects with an EngineError
 * (CANCELLED when `env.signal` aborted: the vault is left as it was).
 */
export function runBackupJob(input: BackupJobInput, env: JobEnv): Promise<BackupResult> {
  return runJob(input, env)
}
