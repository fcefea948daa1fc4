/**
 * Plain types of the backup area: machines and disks as the catalog holds them, progress and
 * results as the job process reports them. No behaviour here.
 */
import type { Consistency, FileIdentity } from '../vault/api.js'

export type MachineSource = 'files' | 'libvirt' | 'vbox'

/** One disk image file of a machine, as the catalog holds it. */
export interface MachineDisk {
  id: string
  machineId: string
  /** Unique within the machine; recovery points name disks by it (a renamed disk starts full). */
  name: string
  /** Absolute path of the image file (the top of its backing chain). */
  path: string
  /** Order in the machine (0-based, stable). */
  position: number
  isSystem: boolean
  /** Excluded disks (temporary, swap) are neither read nor counted in the protected size. */
  isExcluded: boolean
  addedAt: string
}

export interface Machine {
  id: string
  name: string
  policyId: string | null
  source: MachineSource
  sourcePath: string | null
  createdAt: string
  /** Allocated guest bytes of the included disks at the last backup (0 before the first). */
  protectedBytes: number
  disks: MachineDisk[]
}

/** Progress of one disk within a backup job. Byte counts are guest-view bytes. */
export interface DiskProgress {
  index: number
  name: string
  state: 'waiting' | 'snapshot' | 'reading' | 'unchanged' | 'done'
  /** Allocated bytes to process (known once the extents have been walked; else virtual size). */
  bytesTotal: number
  /** Bytes processed so far (read, or known zero/unchanged without reading). */
  bytesDone: number
  /** Bytes actually read from the source. */
  bytesRead: number
  /** Bytes of blocks whose content was new to the vault. */
  bytesNew: number
  bytesPerSecond: number
  /** Seconds left at the current rate; null when unknown. */
  etaSeconds: number | null
}

/** Progress of a whole backup job (sums over disks). Sent often; callers throttle. */
export interface BackupProgress {
  phase: 'pre-script' | 'snapshot' | 'post-script' | 'reading' | 'committing' | 'done'
  bytesTotal: number
  bytesDone: number
  bytesRead: number
  bytesNew: number
  bytesPerSecond: number
  etaSeconds: number | null
  /** Name of a disk being read now (the first one), or null. */
  currentDisk: string | null
  disks: DiskProgress[]
}

/** What `tresor backup --json` prints and a backup job returns. */
export interface BackupResult {
  pointId: string
  consistency: Consistency
  bytesRead: number
  bytesNew: number
  bytesStored: number
  seconds: number
}

/** What a backup job needs from its process: where the data lives, cancellation, reporting. */
export interface JobEnv {
  /** TRESOR_HOME: the catalog and the current vault registration live there. */
  home: string
  signal: AbortSignal
  onProgress(p: BackupProgress): void
  /** One line of the job log (script output, warnings, decisions). */
  log(line: string): void
}

export type { Consistency, FileIdentity }
