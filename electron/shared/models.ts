/**
 * The plain data the API returns and the events carry, as zod schemas with inferred types.
 * Vocabulary of DESIGN.md: Machine, Disk, Policy, Job, Recovery point (`point`), Vault.
 * Nothing here is secret: the renderer learns only booleans such as `hasPassphrase`.
 */
import { z } from 'zod'
import { ByteCount, Id, IsoTime, Name, TimeOfDay, WireErrorSchema, text, MAX_PATH_CHARS, AbsolutePath } from './schemas.js'

// ---------------------------------------------------------------------------------------------
// App and settings

export const HostKind = z.enum(['electron', 'web'])
export type HostKind = z.infer<typeof HostKind>

export const AppInfo = z.strictObject({
  name: z.string(),
  version: z.string(),
  host: HostKind,
  platform: z.string(),
  /** The data folder (TRESOR_HOME or Electron's userData). */
  home: z.string(),
  /** Which optional host features exist (file pickers, opening links). */
  features: z.strictObject({
    fileDialogs: z.boolean(),
    openExternal: z.boolean(),
    tray: z.boolean(),
  }),
})
export type AppInfo = z.infer<typeof AppInfo>

export const Language = z.enum(['system', 'en', 'de'])
export type Language = z.infer<typeof Language>
export const Theme = z.enum(['system', 'light', 'dark'])
export type Theme = z.infer<typeof Theme>

export const Settings = z.strictObject({
  language: Language,
  theme: Theme,
  /** When true, no scheduled backup starts (manual backups still run). */
  schedulesPaused: z.boolean(),
  /** Disks backed up at once within one job. */
  maxParallelDisks: z.number().int().min(1).max(16),
  /** Keep running in the tray when the window is closed (Electron). */
  keepInTray: z.boolean(),
  /** Send a desktop notification when a job fails. */
  notifyOnFailure: z.boolean(),
})
export type Settings = z.infer<typeof Settings>

export const DEFAULT_SETTINGS: Settings = {
  language: 'system',
  theme: 'system',
  schedulesPaused: false,
  maxParallelDisks: 2,
  keepInTray: true,
  notifyOnFailure: true,
}

// ---------------------------------------------------------------------------------------------
// Vault

export const VaultState = z.enum(['none', 'locked', 'open', 'unavailable'])
export type VaultState = z.infer<typeof VaultState>

export const VaultStatus = z.strictObject({
  /** none: no vault registered; locked: registered, key not available; open: usable; unavailable: folder missing. */
  state: VaultState,
  vaultId: z.string().nullable(),
  path: z.string().nullable(),
  backend: z.string().nullable(),
  /** The vault has a passphrase-wrapped key (always true for an initialised vault). */
  hasPassphrase: z.boolean(),
  /** The unwrapped key is in the OS keychain, so scheduled backups run unattended. */
  hasKeychainKey: z.boolean(),
  /** A recovery key was exported for this vault. */
  hasRecoveryKey: z.boolean(),
  pointCount: z.number().int().nonnegative(),
  generation: z.number().int().nonnegative(),
})
export type VaultStatus = z.infer<typeof VaultStatus>

// ---------------------------------------------------------------------------------------------
// Machines and disks

export const MachineSource = z.enum(['files', 'libvirt', 'vbox'])
export type MachineSource = z.infer<typeof MachineSource>

export const DiskSummary = z.strictObject({
  id: z.string(),
  name: z.string(),
  path: z.string(),
  position: z.number().int().nonnegative(),
  isSystem: z.boolean(),
  isExcluded: z.boolean(),
})
export type DiskSummary = z.infer<typeof DiskSummary>

export const MachineSummary = z.strictObject({
  id: z.string(),
  name: z.string(),
  policyId: z.string().nullable(),
  source: MachineSource,
  sourcePath: z.string().nullable(),
  createdAt: IsoTime,
  disks: z.array(DiskSummary),
  pointCount: z.number().int().nonnegative(),
  lastPointAt: IsoTime.nullable(),
  /** Allocated guest bytes of the included disks at the last backup (0 before the first). */
  protectedBytes: ByteCount,
})
export type MachineSummary = z.infer<typeof MachineSummary>

// ---------------------------------------------------------------------------------------------
// Policies

export const Weekday = z.number().int().min(0).max(6)

export const ScheduleSpec = z.strictObject({
  kind: z.enum(['manual', 'daily', 'weekly']),
  /** Start times (local time). */
  times: z.array(TimeOfDay).max(24),
  /** 0 = Sunday … 6 = Saturday (weekly only). */
  weekdays: z.array(Weekday).max(7),
  /** Per-machine stagger so machines sharing a policy do not all start at once. */
  staggerMinutes: z.number().int().min(0).max(720),
})
export type ScheduleSpec = z.infer<typeof ScheduleSpec>

export const RetentionSpec = z.strictObject({
  last: z.number().int().min(1).max(1000),
  daily: z.number().int().min(0).max(1000),
  weekly: z.number().int().min(0).max(1000),
  monthly: z.number().int().min(0).max(1000),
  yearly: z.number().int().min(0).max(100),
})
export type RetentionSpec = z.infer<typeof RetentionSpec>

export const ScriptSpec = z.strictObject({
  /** Executable run without a shell. */
  path: AbsolutePath,
  args: z.array(text(1000)).max(32),
  timeoutMs: z.number().int().min(1000).max(3_600_000),
})
export type ScriptSpec = z.infer<typeof ScriptSpec>

export const PolicySpec = z.strictObject({
  schedule: ScheduleSpec,
  retention: RetentionSpec,
  /** Days the snapshot tier (reflink clones beside the source) keeps points; 0 = off. */
  snapshotTierDays: z.number().int().min(0).max(365),
  preScript: ScriptSpec.nullable(),
  postScript: ScriptSpec.nullable(),
  /** Fail the job when no atomic snapshot was possible and a disk changed while read. */
  failOnInconsistent: z.boolean(),
})
export type PolicySpec = z.infer<typeof PolicySpec>

export const DEFAULT_POLICY_SPEC: PolicySpec = {
  schedule: { kind: 'daily', times: ['02:00'], weekdays: [], staggerMinutes: 10 },
  retention: { last: 3, daily: 7, weekly: 4, monthly: 6, yearly: 1 },
  snapshotTierDays: 0,
  preScript: null,
  postScript: null,
  failOnInconsistent: false,
}

export const PolicySummary = z.strictObject({
  id: z.string(),
  name: z.string(),
  spec: PolicySpec,
  createdAt: IsoTime,
  machineCount: z.number().int().nonnegative(),
})
export type PolicySummary = z.infer<typeof PolicySummary>

// ---------------------------------------------------------------------------------------------
// Jobs

export const JobKind = z.enum(['backup', 'restore', 'verify', 'prune', 'rebuild'])
export type JobKind = z.infer<typeof JobKind>
export const JobState = z.enum(['queued', 'running', 'succeeded', 'failed', 'cancelled'])
export type JobState = z.infer<typeof JobState>

export const JobSummary = z.strictObject({
  id: z.string(),
  kind: JobKind,
  state: JobState,
  machineId: z.string().nullable(),
  machineName: z.string().nullable(),
  pointId: z.string().nullable(),
  createdAt: IsoTime,
  startedAt: IsoTime.nullable(),
  finishedAt: IsoTime.nullable(),
  bytesDone: ByteCount,
  bytesTotal: ByteCount,
  error: WireErrorSchema.nullable(),
})
export type JobSummary = z.infer<typeof JobSummary>

export const JobDetail = z.strictObject({
  ...JobSummary.shape,
  log: z.string(),
})
export type JobDetail = z.infer<typeof JobDetail>

export const JobPhase = z.enum(['queued', 'pre-script', 'snapshot', 'post-script', 'reading', 'writing', 'verifying', 'committing', 'done'])
export type JobPhase = z.infer<typeof JobPhase>

export const JobProgress = z.strictObject({
  jobId: z.string(),
  kind: JobKind,
  phase: JobPhase,
  bytesDone: ByteCount,
  bytesTotal: ByteCount,
  bytesPerSecond: z.number().nonnegative(),
  etaSeconds: z.number().nonnegative().nullable(),
  /** Name of the disk being processed, when one is. */
  currentDisk: z.string().nullable(),
})
export type JobProgress = z.infer<typeof JobProgress>

export const JobOutcome = z.strictObject({
  jobId: z.string(),
  kind: JobKind,
  state: z.enum(['succeeded', 'failed', 'cancelled']),
  pointId: z.string().nullable(),
  error: WireErrorSchema.nullable(),
})
export type JobOutcome = z.infer<typeof JobOutcome>

// ---------------------------------------------------------------------------------------------
// Recovery points

export const Consistency = z.enum(['application', 'crash', 'none'])
export type Consistency = z.infer<typeof Consistency>

export const PointSummary = z.strictObject({
  id: z.string(),
  vaultId: z.string(),
  machineId: z.string().nullable(),
  machineName: z.string(),
  createdAt: IsoTime,
  consistency: Consistency,
  bytesRead: ByteCount,
  bytesNew: ByteCount,
  bytesStored: ByteCount,
  disks: z.array(z.strictObject({ name: z.string(), virtualSize: ByteCount })),
})
export type PointSummary = z.infer<typeof PointSummary>

// ---------------------------------------------------------------------------------------------
// Restore queue

export const RestoreFormat = z.enum(['same', 'raw', 'qcow2', 'vhd', 'vhd-fixed', 'vhdx'])
export type RestoreFormat = z.infer<typeof RestoreFormat>

export const RestoreSpec = z.strictObject({
  pointId: Id,
  /** Folder the restored image files are written into (created if missing). */
  targetDir: AbsolutePath,
  /** Disk name or index; null = every disk of the point. */
  disk: z.union([Name, z.number().int().min(0).max(1023)]).nullable(),
  format: RestoreFormat,
})
export type RestoreSpec = z.infer<typeof RestoreSpec>

export const RestoreQueueItem = z.strictObject({
  id: z.string(),
  jobId: z.string().nullable(),
  pointId: z.string(),
  machineName: z.string().nullable(),
  position: z.number().int().nonnegative(),
  state: JobState,
  createdAt: IsoTime,
  targetDir: z.string().max(MAX_PATH_CHARS),
  disk: z.union([z.string(), z.number()]).nullable(),
  format: RestoreFormat,
})
export type RestoreQueueItem = z.infer<typeof RestoreQueueItem>

// Re-exported so consumers import models from one place.
export { Name, Id, AbsolutePath }
