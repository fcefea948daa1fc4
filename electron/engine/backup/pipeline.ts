/**
 * The backup pipeline: pre-script → snapshots → post-script → block pipeline per disk → commit →
 * catalog row → snapshot tier. It takes its world as arguments (vault, catalog, image opener, clock)
 * and reports through callbacks, so the job process, the CLI and tests run the same code.
 *
 * Block pipeline of one disk: the allocated extents of the guest view are walked in step with the
 * block grid (`vault.blockSize`). A block no extent touches is UNALLOCATED; one touched only by
 * extents the format marks as zeros is ZERO; any other block is read (a window of `blocksInFlight`
 * reused buffers per disk; only the ranges data extents cover, the rest is zero-filled in memory:
 * reading a raw file's holes costs the kernel fresh zeroed page-cache pages and a read-ahead through
 * them), and if all its bytes are zero it is ZERO too. A data block is hashed
 * with XXH3-128 and compared with the previous point's entry at the same index, streamed in step:
 * equal → the previous chunk id is reused and nothing moves; different → `session.putBlock`.
 * A disk whose file (and backing files) have the identity recorded by the previous point is not
 * opened at all: its previous block map is copied. Memory is bounded by the blocks in flight.
 */
import { boundedAll } from '../io/bounded.js'
import { allocAlignedShared } from '../io/directIo.js'
import { hostname } from 'node:os'
import { randomBytes } from 'node:crypto'
import { unlink } from 'node:fs/promises'
import type { Db } from '../catalog/types.js'
import { EngineError, fromFsError } from '../errors.js'
import type { DiskImage, Extent, OpenOptions } from '../formats/types.js'
import { zeroFill } from '../formats/io.js'
import { DEFAULT_POLICY, type PolicyScript, type PolicySpec } from '../policy/spec.js'
import type { BackupSession, BlockEntry, BlockMapWriter, Consistency, FileIdentity, PointDisk, PointManifest, PutResult, Vault } from '../vault/api.js'
import { CHECKSUM_BYTES, createBlockHasher, type BlockHasher } from './checksum.js'
import { SCAN_SKIP, SCAN_SUM, SCAN_TEST, SCAN_ZERO, createBlockScanner, sumMatches } from './blockScan.js'
import { ExtentCursor, PreviousMap } from './cursors.js'
import {
  latestPointRow,
  recordPoint,
  recordSnapshotClone,
} from './machines.js'
import { describeOutcome, runScript, type ScriptOutcome } from './scripts.js'
import {
  clonePathFor,
  fileState,
  findWriters,
  identityOf,
  reflinkClone,
  sameIdentity,
  type FileState,
  type WriterScan,
} from './snapshot.js'
import { pruneSnapshotTier } from './snapshotTier.js'
import type { BackupProgress, BackupResult, DiskProgress, Machine, MachineDisk } from './types.js'

export { pruneSnapshotTier }

/** What the pipeline works on. The caller opens and closes all of it. */
export interface BackupWorld {
  vault: Vault
  catalog: Db
  /** Opens an image in its guest view (formats/index.ts `openImage`, whose OpenOptions.blockingReads this passes on). */
  openImage(path: string, options?: Pick<OpenOptions, 'blockingReads'>): Promise<DiskImage>
  /** Wall clock in epoch ms. Default Date.now. */
  now?: () => number
}

export interface RunBackupOptions {
  signal?: AbortSignal
  onProgress?: (progress: BackupProgress) => void
  log?: (line: string) => void
  /** Default: DEFAULT_POLICY. */
  policy?: PolicySpec
  /** Disks read at once. Default 2. */
  diskConcurrency?: number
  /** Blocks read/hashed/put at once per disk (buffers reused). Default 8. */
  blocksInFlight?: number
  /** Extra manifest labels (job id...). */
  labels?: Record<string, string>
  /** 'auto': reflink clone where the file system can, else a checked read; 'read': never clone. */
  snapshot?: 'auto' | 'read'
  /** The point to compare against; default: the machine's newest point in this vault (catalog, else vault). */
  previousPoint?: PointManifest | null
  /** Minimum interval between progress reports (the final one is always sent). Default 200 ms. */
  progressIntervalMs?: number
}

export interface RunBackupOutcome {
  manifest: PointManifest
  result: BackupResult
  /** Reflink clones kept in the snapshot tier by this backup. */
  keptClones: string[]
}

type SnapshotMode = 'unchanged' | 'reflink' | 'read'

interface DiskPlan {
  disk: MachineDisk
  index: number
  prevDisk: PointDisk | undefined
  mode: SnapshotMode
  readPath: string
  clonePath?: string
  before: FileState
  /** Identity to record (only when the snapshot is known to match it). */
  identity: FileIdentity | undefined
  chain: ChainEntry[]
  writersBefore?: WriterScan
  /** Bytes the block loop will process, measured on the source (progress before the disk starts). */
  estimateBytes: number
}

interface ChainEntry extends FileIdentity { path: string }

interface DiskOutcome {
  pointDisk: PointDisk
  consistency: 'crash' | 'none'
  chain: ChainEntry[]
  bytesStored: number
}

const CHAIN_LABEL = (i: number): string => `disk.${i}.chain`
const MODE_LABEL = (i: number): string => `disk.${i}.snapshot`

function cancelled(): EngineError {
  return new EngineError('CANCELLED', 'The backup was cancelled. The vault is unchanged.')
}

function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw cancelled()
}

/** The machine's previous point in this vault: the catalog's newest row, else the vault's list. */
export async function findPreviousPoint(world: BackupWorld, machine: Pick<Machine, 'id'>): Promise<PointManifest | null> {
  const row = latestPointRow(world.catalog, machine.id, world.vault.id)
  if (row) {
    try {
      return await world.vault.getPoint(row.id)
    } catch (err) {
      if (!(err instanceof EngineError && err.code === 'POINT_NOT_FOUND')) throw err
    }
  }
  const points = (await world.vault.listPoints()).filter((p) => p.machineId === machine.id)
  points.sort((a, b) => (a.createdAt < b.createdAt ? 1 : a.createdAt > b.createdAt ? -1 : 0))
  return points[0] ?? null
}

/** Tracks and reports progress, throttled. */
class Progress {
  phase: BackupProgress['phase'] = 'snapshot'
  readonly disks: DiskProgress[]
  private readonly starts: number[]
  private last = 0
  private readonly t0: number
  constructor(plans: { index: number; name: string }[], private readonly now: () => number, private readonly sink: ((p: BackupProgress) => void) | undefined, private readonly intervalMs: number) {
    this.disks = plans.map((p) => ({ index: p.index, name: p.name, state: 'waiting', bytesTotal: 0, bytesDone: 0, bytesRead: 0, bytesNew: 0, bytesPerSecond: 0, etaSeconds: null }))
    this.starts = plans.map(() => 0)
    this.t0 = now()
  }
  startDisk(i: number, state: DiskProgress['state'], total: number): void {
    const d = this.disks[i]!
    d.state = state
    d.bytesTotal = total
    this.starts[i] = this.now()
    this.emit(true)
  }
  setPhase(phase: BackupProgress['phase']): void {
    this.phase = phase
    this.emit(true)
  }
  emit(force = false): void {
    if (!this.sink) return
    const t = this.now()
    if (!force && t - this.last < this.intervalMs) return
    this.last = t
    for (let i = 0; i < this.disks.length; i++) {
      const d = this.disks[i]!
      const secs = (t - this.starts[i]!) / 1000
      d.bytesPerSecond = d.state === 'reading' && secs > 0 ? d.bytesDone / secs : d.bytesPerSecond
      d.etaSeconds = d.state === 'done' || d.state === 'unchanged' ? 0 : d.bytesPerSecond > 0 ? Math.max(0, d.bytesTotal - d.bytesDone) / d.bytesPerSecond : null
    }
    const sum = (k: 'bytesTotal' | 'bytesDone' | 'bytesRead' | 'bytesNew'): number => this.disks.reduce((s, d) => s + d[k], 0)
    const secs = (t - this.t0) / 1000
    const done = sum('bytesDone')
    const total = sum('bytesTotal')
    const rate = secs > 0 ? done / secs : 0
    this.sink({
      phase: this.phase,
      bytesTotal: total,
      bytesDone: done,
      bytesRead: sum('bytesRead'),
      bytesNew: sum('bytesNew'),
      bytesPerSecond: rate,
      etaSeconds: this.phase === 'done' ? 0 : rate > 0 ? Math.max(0, total - done) / rate : null,
      currentDisk: this.disks.find((d) => d.state === 'reading')?.name ?? null,
      disks: this.disks.map((d) => ({ ...d })),
    })
  }
}

/** Extents kept in memory at most (about 40 bytes each); beyond that the extents are walked again. */
const MAX_CACHED_EXTENTS = 1 << 20

/**
 * Walks the extents once: allocated bytes, bytes of the block grid touched by any extent (what the
 * block loop processes), and the extents themselves when there are not too many (some formats'
 * extent walks are costly: raw asks the file system's map through a child process).
 */
async function measure(image: DiskImage, blockSize: number): Promise<{ allocatedBytes: number; workBytes: number; extents: Extent[] | undefined }> {
  let allocatedBytes = 0
  let workBytes = 0
  let coveredUpTo = 0 // end (exclusive) of the last block counted
  let extents: Extent[] | undefined = []
  for await (const e of image.extents()) {
    if (e.length <= 0) continue
    allocatedBytes += e.length
    const first = Math.max(Math.floor(e.offset / blockSize) * blockSize, coveredUpTo)
    const last = Math.min(Math.ceil((e.offset + e.length) / blockSize) * blockSize, image.virtualSize)
    if (last > first) { workBytes += last - first; coveredUpTo = last }
    if (extents) {
      if (extents.length < MAX_CACHED_EXTENTS) extents.push({ offset: e.offset, length: e.length, zero: e.zero })
      else extents = undefined
    }
  }
  return { allocatedBytes, workBytes, extents }
}

async function chainOf(image: DiskImage): Promise<ChainEntry[]> {
  const chain: ChainEntry[] = []
  for (let b = image.backing; b; b = b.backing) chain.push({ path: b.path, ...identityOf(await fileState(b.path)) })
  return chain
}

async function chainUnchanged(chain: ChainEntry[]): Promise<boolean> {
  for (const c of chain) {
    let now: FileState
    try { now = await fileState(c.path) } catch { return false }
    if (!sameIdentity(c, now)) return false
  }
  return true
}

function parseChainLabel(value: string | undefined): ChainEntry[] | undefined {
  if (value === undefined) return undefined
  try {
    const v = JSON.parse(value) as unknown
    return Array.isArray(v) ? (v as ChainEntry[]) : undefined
  } catch {
    return undefined
  }
}

/**
 * Backs up the included disks of `machine` into `world.vault` and records the point in the catalog.
 * Consistency is recorded honestly (index.ts). When the result is 'none' and the policy says
 * `failOnInconsistent`, nothing is committed and SOURCE_CHANGED is thrown. On any failure or
 * cancellation (CANCELLED) the session is aborted, the clones made by this run are removed and the
 * post-script has run when the pre-script did. The caller owns and closes vault and catalog.
 */
export async function runBackup(machine: Machine, world: BackupWorld, options: RunBackupOptions = {}): Promise<RunBackupOutcome> {
  const now = world.now ?? Date.now
  const t0 = now()
  const log = options.log ?? (() => {})
  const policy = options.policy ?? DEFAULT_POLICY
  const signal = options.signal
  const included = machine.disks.filter((d) => !d.isExcluded).sort((a, b) => a.position - b.position)
  if (included.length === 0) {
    throw new EngineError('INVALID_INPUT', `Every disk of machine "${machine.name}" is excluded: there is nothing to back up. Include a disk with "tresor machine include".`)
  }
  throwIfAborted(signal)
  const prev = options.previousPoint !== undefined ? options.previousPoint : await findPreviousPoint(world, machine)
  // an earlier point: most blocks will match it, and one chunk worker seals a small change sooner (api.ts)
  const session = await world.vault.beginBackup({ ...(signal ? { signal } : {}), incremental: prev !== null })
  const blockSize = session.blockSize
  const progress = new Progress(included.map((d, i) => ({ index: i, name: d.name })), now, options.onProgress, options.progressIntervalMs ?? 200)
  // Created on the first disk that is read: an unchanged machine never loads the hashing module.
  let hasherInstance: BlockHasher | undefined
  const hasher = (): BlockHasher => (hasherInstance ??= createBlockHasher())
  const clones: string[] = []
  const scripts = policy.scripts
  let preOutcome: ScriptOutcome | undefined
  let postOutcome: ScriptOutcome | undefined
  let postDue = false
  const scriptEnv = {
    TRESOR_MACHINE: machine.name,
    TRESOR_MACHINE_ID: machine.id,
    TRESOR_DISKS: included.map((d) => d.path).join('\n'),
  }
  const runPost = async (): Promise<void> => {
    if (!postDue || !scripts.post) return
    postDue = false
    progress.setPhase('post-script')
    postOutcome = await runPolicyScript(scripts.post, 'post', { ...scriptEnv, TRESOR_PHASE: 'post' }, log)
    clearPendingPost(world.catalog, machine.id)
  }

  try {
    if (scripts.pre || scripts.post) log(`policy scripts: pre ${scripts.pre ? `"${scripts.pre.path}"` : 'none'}, post ${scripts.post ? `"${scripts.post.path}"` : 'none'}`)
    if (scripts.pre) {
      progress.setPhase('pre-script')
      if (scripts.post) { postDue = true; markPendingPost(world.catalog, machine.id, scripts.post) }
      preOutcome = await runPolicyScript(scripts.pre, 'pre', { ...scriptEnv, TRESOR_PHASE: 'pre' }, log, signal)
      if (!preOutcome.ok && scripts.onError === 'fail') {
        await runPost()
        throw scriptError('pre', scripts.pre, preOutcome)
      }
    } else if (scripts.post) {
      postDue = true // a post-script without a pre-script still runs (after the snapshots)
    }
    throwIfAborted(signal)

    // Snapshots.
    progress.setPhase('snapshot')
    const plans: DiskPlan[] = []
    for (const [index, disk] of included.entries()) {
      throwIfAborted(signal)
      progress.disks[index]!.state = 'snapshot'
      const plan = await snapshotDisk(disk, index, prev, blockSize, world, options.snapshot ?? 'auto', t0, clones, log)
      progress.disks[index]!.bytesTotal = plan.mode === 'unchanged' ? (plan.prevDisk?.allocatedBytes ?? 0) : plan.estimateBytes
      plans.push(plan)
    }
    const allAtomic = plans.every((p) => p.mode !== 'read')
    if (allAtomic) await runPost()

    // Blocks.
    progress.setPhase('reading')
    // One disk to read: its reads may block this job's event loop, which waits for nothing else
    // meanwhile (a 4 GiB disk with a 1 % change: job 1.56–1.97 s → 1.32–1.48 s, page cache partly
    // cold). Disks read side by side keep the thread pool, so one's slow device never stalls another.
    const reading = plans.filter((p) => p.mode !== 'unchanged').length
    const blockingReads = reading === 1
    const diskConcurrency = options.diskConcurrency ?? 2
    // the read-ahead is shared by the disks read at once (at least 2 runs each), so a machine's peak
    // memory stays near a single disk's
    const runWindow = Math.max(2, Math.floor(RUN_WINDOW / Math.max(1, Math.min(diskConcurrency, reading))))
    const outcomes = await boundedAll(plans, diskConcurrency, (plan) =>
      backupDisk(plan, { world, session, prev, hasher, progress, signal, log, blocksInFlight: options.blocksInFlight ?? 8, blockingReads, runWindow }))
    await runPost()
    throwIfAborted(signal)

    // Consistency.
    const scriptsOk = scripts.pre !== undefined && preOutcome?.ok === true && (scripts.post === undefined || postOutcome?.ok === true)
    const diskConsistency = outcomes.some((o) => o.consistency === 'none') ? 'none' : 'crash'
    const consistency: Consistency = diskConsistency === 'none' ? 'none' : scriptsOk ? 'application' : 'crash'
    if (scripts.post && postOutcome && !postOutcome.ok && scripts.onError === 'fail') throw scriptError('post', scripts.post, postOutcome)
    if (consistency === 'none') {
      const changed = outcomes.filter((o) => o.consistency === 'none').map((o) => `"${o.pointDisk.sourcePath}"`).join(', ')
      const message = `The disk ${changed} of "${machine.name}" was in use or changed while it was read, and no atomic snapshot was possible: the copy may be inconsistent.`
      if (policy.failOnInconsistent) {
        throw new EngineError('SOURCE_CHANGED', `${message} Nothing was saved. Shut the machine down (or use a file system with reflink support: btrfs, XFS), then back up again.`)
      }
      log(`warning: ${message} The recovery point is marked "none".`)
    }
    log(`consistency: ${consistency}`)

    // Commit.
    progress.setPhase('committing')
    const labels: Record<string, string> = { host: hostname(), ...options.labels }
    for (const [i, o] of outcomes.entries()) {
      labels[MODE_LABEL(i)] = plans[i]!.mode
      if (o.chain.length > 0) labels[CHAIN_LABEL(i)] = JSON.stringify(o.chain)
    }
    const bytesStored = outcomes.reduce((s, o) => s + o.bytesStored, 0)
    const bytesRead = progress.disks.reduce((s, d) => s + d.bytesRead, 0)
    const bytesNew = progress.disks.reduce((s, d) => s + d.bytesNew, 0)
    const manifest = await session.commit({
      machineId: machine.id,
      machineName: machine.name,
      createdAt: new Date(t0).toISOString(),
      consistency,
      disks: outcomes.map((o) => o.pointDisk),
      stats: { bytesRead, bytesNew, bytesStored, seconds: (now() - t0) / 1000 },
      labels,
    })
    recordPoint(world.catalog, { id: world.vault.id, path: world.vault.path }, manifest)

    // Snapshot tier.
    const keptClones = keepClones(world.catalog, machine, plans, manifest, policy, now(), log)
    for (const c of clones) if (!keptClones.includes(c)) await unlink(c).catch(() => {})
    await pruneSnapshotTier(world.catalog, machine.id, policy.snapshotTierDays, now(), new Set(keptClones), log)
    progress.setPhase('done')
    const result: BackupResult = {
      pointId: manifest.id,
      consistency,
      bytesRead: manifest.stats.bytesRead,
      bytesNew: manifest.stats.bytesNew,
      bytesStored: manifest.stats.bytesStored,
      seconds: (now() - t0) / 1000,
    }
    log(`point ${manifest.id}: read ${result.bytesRead} bytes, new ${result.bytesNew}, stored ${result.bytesStored}, ${result.seconds.toFixed(2)} s`)
    return { manifest, result, keptClones }
  } catch (err) {
    await runPost().catch((e: unknown) => log(`post-script could not run: ${String(e)}`))
    await session.abort().catch((e: unknown) => log(`abort failed: ${String(e)}`))
    for (const c of clones) await unlink(c).catch(() => {})
    if (signal?.aborted) throw cancelled()
    throw err
  }
}

function scriptError(phase: 'pre' | 'post', spec: PolicyScript, o: ScriptOutcome): EngineError {
  if (o.timedOut) return new EngineError('SCRIPT_TIMEOUT', `The ${phase}-script "${spec.path}" did not finish within ${spec.timeoutMs} ms and was stopped. Nothing was saved. See the job log.`)
  return new EngineError('SCRIPT_FAILED', `The ${phase}-script "${spec.path}" failed (${o.error ?? (o.signal ? `killed by ${o.signal}` : `exit code ${o.exitCode}`)}). Nothing was saved. See the job log.`)
}

async function runPolicyScript(spec: PolicyScript, phase: 'pre' | 'post', env: Record<string, string>, log: (l: string) => void, signal?: AbortSignal): Promise<ScriptOutcome> {
  log(`${phase}-script: running "${spec.path}"${spec.args.length ? ' ' + JSON.stringify(spec.args) : ''} (timeout ${spec.timeoutMs} ms)`)
  const o = await runScript({ path: spec.path, args: spec.args, timeoutMs: spec.timeoutMs }, { env, log, label: `[${phase}]`, ...(signal ? { signal } : {}) })
  log(describeOutcome(`${phase}-script`, o))
  return o
}

function markPendingPost(db: Db, machineId: string, post: PolicyScript): void {
  try {
    db.prepare('INSERT OR REPLACE INTO pending_post_scripts (machine_id, script, started_at) VALUES (?, ?, ?)').run(machineId, JSON.stringify(post), new Date().toISOString())
  } catch { /* machine not in this catalog: nothing to remember */ }
}

function clearPendingPost(db: Db, machineId: string): void {
  db.prepare('DELETE FROM pending_post_scripts WHERE machine_id = ?').run(machineId)
}

/**
 * Runs the post-scripts owed by backups that were killed between their pre- and post-script
 * (RELIABILITY #34). Call once when the app (or a job process) starts. Returns how many ran.
 */
export async function runPendingPostScripts(db: Db, log: (line: string) => void = () => {}): Promise<number> {
  const rows = db.prepare('SELECT p.machine_id, p.script, m.name FROM pending_post_scripts p LEFT JOIN machines m ON m.id = p.machine_id').all() as { machine_id: string; script: string; name: string | null }[]
  for (const r of rows) {
    try {
      const spec = JSON.parse(r.script) as PolicyScript
      log(`machine "${r.name ?? r.machine_id}": a backup ended between its pre- and post-script; running the post-script now`)
      await runPolicyScript(spec, 'post', { TRESOR_MACHINE: r.name ?? '', TRESOR_MACHINE_ID: r.machine_id, TRESOR_PHASE: 'post', TRESOR_RECOVERY: '1' }, log)
    } finally {
      clearPendingPost(db, r.machine_id)
    }
  }
  return rows.length
}

async function snapshotDisk(
  disk: MachineDisk,
  index: number,
  prev: PointManifest | null,
  blockSize: number,
  world: BackupWorld,
  snapshot: 'auto' | 'read',
  t0: number,
  clones: string[],
  log: (l: string) => void,
): Promise<DiskPlan> {
  let before: FileState
  try {
    before = await fileState(disk.path)
  } catch (err) {
    throw fromFsError(err, disk.path, `reading disk "${disk.name}" of`) ?? err
  }
  const prevDisk = prev && prev.blockSize === blockSize ? prev.disks.find((d) => d.name === disk.name) : undefined
  if (prevDisk?.fileIdentity && sameIdentity(prevDisk.fileIdentity, before) && prev) {
    const chain = parseChainLabel(prev.labels[CHAIN_LABEL(prevDisk.index)]) ?? []
    const chainKnown = prev.labels[CHAIN_LABEL(prevDisk.index)] !== undefined || prev.labels[MODE_LABEL(prevDisk.index)] !== undefined
    if (chainKnown && (await chainUnchanged(chain))) {
      log(`disk "${disk.name}": unchanged since point ${prev.id} (size, mtime, ctime, inode): not read`)
      return { disk, index, prevDisk, mode: 'unchanged', readPath: disk.path, before, identity: identityOf(before), chain, estimateBytes: 0 }
    }
  }
  // Look at the image first: a VMDK split over several files cannot be cloned as one file.
  const image = await world.openImage(disk.path)
  let singleFile: boolean
  let estimate = 0
  try {
    singleFile = image.format !== 'vmdk' || /^(monolithicSparse|streamOptimized)$/i.test(image.variant)
    // For progress and ETA before the disk's turn: the file's allocated bytes, no extent walk.
    estimate = Math.min(image.virtualSize, before.allocatedOnDisk)
  } finally {
    await image.close()
  }
  if (snapshot === 'auto' && singleFile) {
    const clonePath = clonePathFor(disk.path, t0, randomBytes(3).toString('hex'))
    const r = await reflinkClone(disk.path, clonePath)
    if (r.ok) {
      clones.push(clonePath)
      const after = await fileState(disk.path)
      const identity = sameIdentity(before, after) ? identityOf(before) : undefined
      log(`disk "${disk.name}": reflink clone "${clonePath}" (atomic snapshot)`)
      return { disk, index, prevDisk, mode: 'reflink', readPath: clonePath, clonePath, before, identity, chain: [], estimateBytes: estimate }
    }
    log(`disk "${disk.name}": no reflink clone (${r.reason}); reading the file itself with checks`)
  } else if (snapshot === 'auto') {
    log(`disk "${disk.name}": ${image.format} ${image.variant} spans several files; reading them with checks`)
  }
  const writersBefore = await findWriters(disk.path)
  if (!writersBefore.supported) log(`disk "${disk.name}": this system offers no way to see which processes write to the file; relying on size and times only`)
  if (writersBefore.uninspectable > 0) log(`disk "${disk.name}": ${writersBefore.uninspectable} processes of other users could not be inspected for open files`)
  if (writersBefore.pids.length > 0) log(`disk "${disk.name}": open for writing by process ${writersBefore.pids.join(', ')}`)
  return { disk, index, prevDisk, mode: 'read', readPath: disk.path, before, identity: undefined, chain: [], writersBefore, estimateBytes: estimate }
}

interface DiskContext {
  world: BackupWorld
  session: BackupSession
  prev: PointManifest | null
  /** The block hasher, created on first call. */
  hasher: () => BlockHasher
  progress: Progress
  signal: AbortSignal | undefined
  log: (l: string) => void
  blocksInFlight: number
  /** Runs read ahead at least (RUN_WINDOW, shared by the disks read at once). */
  runWindow: number
  /** Read the image with OpenOptions.blockingReads. */
  blockingReads: boolean
}

async function backupDisk(plan: DiskPlan, ctx: DiskContext): Promise<DiskOutcome> {
  const { session, progress } = ctx
  const dp = progress.disks[plan.index]!
  if (plan.mode === 'unchanged') {
    const prevDisk = plan.prevDisk!
    progress.startDisk(plan.index, 'unchanged', prevDisk.allocatedBytes)
    const target = { index: plan.index, blockCount: prevDisk.blockCount }
    if (session.copyBlockMap) {
      await session.copyBlockMap({ pointId: ctx.prev!.id, diskIndex: prevDisk.index }, target)
    } else {
      const writer = session.blockMapWriter(target)
      let n = 0
      for await (const e of ctx.world.vault.readBlockMap(ctx.prev!.id, prevDisk.index)) {
        writer.append(e)
        if (++n % 65536 === 0) throwIfAborted(ctx.signal)
      }
      await writer.finish()
    }
    dp.bytesDone = dp.bytesTotal
    progress.emit(true)
    return {
      pointDisk: { ...prevDisk, index: plan.index, name: plan.disk.name, sourcePath: plan.disk.path, fileIdentity: plan.identity!, isSystem: plan.disk.isSystem },
      consistency: 'crash',
      chain: plan.chain,
      bytesStored: 0,
    }
  }

  const image = await ctx.world.openImage(plan.readPath, { blockingReads: ctx.blockingReads })
  let stored = 0
  let pointDisk: PointDisk
  let chain: ChainEntry[]
  try {
    chain = await chainOf(image)
    const blockSize = session.blockSize
    const virtualSize = image.virtualSize
    const blockCount = Math.ceil(virtualSize / blockSize)
    const { allocatedBytes, workBytes, extents } = await measure(image, blockSize)
    progress.startDisk(plan.index, 'reading', workBytes)
    // Block i covers the same guest range in every point (same block size), so a resized disk still compares index by index.
    const prevDisk = plan.prevDisk
    const prevMap = prevDisk && ctx.prev ? new PreviousMap(ctx.world.vault.readBlockMapSegments(ctx.prev.id, prevDisk.index), prevDisk.blockCount) : new PreviousMap(undefined, 0)
    if (!prevDisk) ctx.log(`disk "${plan.disk.name}": no earlier backup of this disk: full backup`)
    const writer = session.blockMapWriter({ index: plan.index, blockCount })
    const cursor = new ExtentCursor(extents ?? image.extents())
    try {
      stored = await blockLoop({ image, blockSize, blockCount, virtualSize, cursor, prevMap, writer, ctx, dp })
    } catch (err) {
      // A read that fails because the file was truncated or replaced under us is a changed source.
      if (plan.mode === 'read' && !(err instanceof EngineError && err.code === 'CANCELLED')) {
        const now = await fileState(plan.disk.path).catch(() => undefined)
        if (!now || !sameIdentity(plan.before, now)) {
          throw new EngineError('SOURCE_CHANGED', `The disk "${plan.disk.path}" changed while it was read and could not be read to the end. Nothing was saved. Shut the machine down, then back up again.`, { cause: err })
        }
      }
      throw err
    } finally {
      await cursor.close().catch(() => {})
      await prevMap.close().catch(() => {})
    }
    await writer.finish()
    pointDisk = {
      index: plan.index,
      name: plan.disk.name,
      virtualSize,
      sourceFormat: image.format,
      sourcePath: plan.disk.path,
      allocatedBytes,
      blockCount,
      isSystem: plan.disk.isSystem,
    }
  } finally {
    await image.close()
  }

  // Was the snapshot consistent?
  let consistency: 'crash' | 'none' = 'crash'
  if (!(await chainUnchanged(chain))) {
    ctx.log(`disk "${plan.disk.name}": a backing file changed during the backup`)
    consistency = 'none'
  }
  let identity = plan.identity
  if (plan.mode === 'read') {
    const after = await fileState(plan.disk.path).catch(() => undefined)
    const writersAfter = await findWriters(plan.disk.path)
    const unchanged = after !== undefined && sameIdentity(plan.before, after)
    const writers = [...new Set([...(plan.writersBefore?.pids ?? []), ...writersAfter.pids])]
    if (!unchanged) ctx.log(`disk "${plan.disk.name}": the file changed while it was read (size, mtime or ctime differ)`)
    if (writers.length > 0) ctx.log(`disk "${plan.disk.name}": open for writing by process ${writers.join(', ')} during the read`)
    if (unchanged && writers.length === 0) {
      identity = identityOf(plan.before)
    } else {
      consistency = 'none'
      identity = undefined
    }
  }
  if (consistency === 'crash' && identity) pointDisk.fileIdentity = identity
  dp.state = 'done'
  progress.emit(true)
  return { pointDisk, consistency, chain, bytesStored: stored }
}

interface LoopArgs {
  image: DiskImage
  blockSize: number
  blockCount: number
  virtualSize: number
  cursor: ExtentCursor
  prevMap: PreviousMap
  writer: BlockMapWriter
  ctx: DiskContext
  dp: DiskProgress
}

const UNALLOCATED: BlockEntry = { kind: 'unallocated' }
const ZERO: BlockEntry = { kind: 'zero' }

/** Data ranges of a run closer than this are read as one (a page: never a whole hole page). */
const RANGE_MERGE_GAP = 4096

/**
 * Bytes read at once: consecutive data blocks are read together (fewer, larger reads) and put as one
 * batch. 4 MiB, measured on the bench's 4 GiB disk (two runs each, 1/4/8/16 MiB): the scattered
 * incremental took 5.75–5.92 s at 1 MiB, 4.87–5.15 s at 4 MiB (a quarter of the reads, and the few
 * changed blocks of a run go to the workers in fewer messages), 5.0–5.5 s at 8 MiB, 5.35–5.70 s at
 * 16 MiB; full and contiguous backups did not move; peak RSS +10 MiB.
 */
const RUN_BYTES = 4 * 1024 * 1024

/**
 * Runs read ahead at least (each with its own read buffer) when one disk is read alone.
 *
 * A format-2 vault seals a full run's new bytes where they were read (session.ts SharedUnits), so
 * a run's buffer stays out until its seal is done, not just until its blocks are copied.
 * Alternating full backups of the bench disk (sixteenth round): 5 buffers 5.99–6.18 s, 6 buffers
 * 5.94–6.16 s, 3 buffers 6.44–6.45 s, against 6.20–6.67 s before sealing in place; peak RSS within
 * noise (246–262 MiB).
 *
 * Disks read at once share it, at least 2 runs each: a machine of four quarter-size disks (two
 * read at once) added to a vault holding the bench disk peaked at 269 MiB with 2 runs each against
 * 273–290 MiB with 3 (its bench run: 309 MiB), and took 6.61–6.81 against 6.48–6.67 s.
 */
const RUN_WINDOW = 5

/**
 * The ordered, windowed block loop. Consecutive data blocks form a run of up to RUN_BYTES that is
 * read with one read and put with one `putBlocks`; runs are processed concurrently (a window of
 * reused buffers) and their entries appended in block order. Returns the bytes this disk added.
 */
async function blockLoop(a: LoopArgs): Promise<number> {
  const { image, blockSize, blockCount, virtualSize, cursor, prevMap, writer, ctx, dp } = a
  const runBlocks = Math.max(1, Math.floor(RUN_BYTES / blockSize))
  const window = Math.max(ctx.runWindow, Math.ceil(Math.max(1, ctx.blocksInFlight) / runBlocks))
  // Shared memory: a format-2 vault's cut workers read the blocks where they were read (session.ts
  // cutBlocks). Page-aligned (directIo.ts): the kernel copies the image's cached pages into an
  // aligned buffer faster; a contiguous incremental of the bench disk took 1.64–1.80 s against
  // 1.80–1.94 s in a SharedArrayBuffer (system time 0.41–0.55 against 0.52–0.65 s, seven
  // alternating pairs). Huge pages added nothing here.
  const free: Buffer[] = Array.from({ length: window }, () => allocAlignedShared(runBlocks * blockSize))
  const pending: Promise<BlockEntry[]>[] = []
  let stored = 0
  const hasher = ctx.hasher()
  // one run's block modes and checksums (blockScan.ts), used between a run's read and its first await
  const scan = createBlockScanner(hasher)
  const modes = new Uint8Array(runBlocks)
  const sums = Buffer.allocUnsafe(runBlocks * CHECKSUM_BYTES)

  /**
   * Zeroes `data`'s bytes [from, to) that a data block of the run holds: the holes inside blocks
   * that are read. Blocks whose entry is already known (`fixed`: holes and zero extents) are never
   * looked at, so their bytes stay as they are; zeroing them cost ~70 ms of the main thread in a
   * contiguous incremental of the bench's disk. By copy: the buffer is shared memory (io.ts zeroFill).
   */
  const zeroGap = (data: Buffer, from: number, to: number, fixed: ReadonlyArray<BlockEntry | undefined>): void => {
    for (let j = Math.floor(from / blockSize); from < to; j++) {
      const stop = Math.min(to, (j + 1) * blockSize)
      if (!fixed[j]) zeroFill(data, from, stop)
      from = stop
    }
  }

  const processRun = async (
    offset: number,
    length: number,
    buf: Buffer,
    prevEntries: Array<BlockEntry | undefined>,
    fixed: Array<BlockEntry | undefined>,
    ranges: Array<[number, number]> | undefined,
    dataBytes: number,
  ): Promise<BlockEntry[]> => {
    try {
      const data = buf.subarray(0, length)
      if (!ranges) {
        await image.read(data, offset)
        dp.bytesRead += length
      } else {
        // only what data extents cover: the rest reads as zeros, and reading it would make the
        // kernel fill page-cache pages with zeros for the holes (and read ahead through them)
        let at = offset
        for (const [from, to] of ranges) {
          if (from > at) zeroGap(data, at - offset, from - offset, fixed)
          await image.read(data.subarray(from - offset, to - offset), from)
          dp.bytesRead += to - from
          at = to
        }
        if (at < offset + length) zeroGap(data, at - offset, length, fixed)
      }
      const session = ctx.session
      const count = prevEntries.length
      const entries: BlockEntry[] = new Array<BlockEntry>(count)
      // a block with no earlier data entry to compare against goes without a checksum: the vault
      // hashes it anyway and returns it (PutResult.checksum), one pass over its bytes fewer here
      for (let j = 0; j < count; j++) modes[j] = fixed[j] ? SCAN_SKIP : prevEntries[j]?.kind === 'data' ? SCAN_SUM : SCAN_TEST
      scan(data, blockSize, modes, count, sums) // synchronous: `modes` and `sums` are read before any await
      const puts: Array<{ data: Buffer; checksum: Buffer | undefined; at: number }> = []
      for (let j = 0; j < count; j++) {
        const mode = modes[j]
        if (mode === SCAN_SKIP) entries[j] = fixed[j]!
        else if (mode === SCAN_ZERO) entries[j] = ZERO
        else {
          const prevEntry = prevEntries[j]
          // unchanged: the earlier entry is this block's entry (same id, same checksum)
          if (mode === SCAN_SUM && prevEntry?.kind === 'data' && sumMatches(sums, j * CHECKSUM_BYTES, prevEntry)) entries[j] = prevEntry
          else {
            const view = data.subarray(j * blockSize, Math.min(length, (j + 1) * blockSize))
            const checksum = mode === SCAN_SUM ? Buffer.from(sums.subarray(j * CHECKSUM_BYTES, (j + 1) * CHECKSUM_BYTES)) : undefined
            puts.push({ data: view, checksum, at: j })
          }
        }
      }
      if (puts.length > 0) {
        const results = session.putBlocks ? await session.putBlocks(puts) : await putEach(session, puts, hasher)
        results.forEach((r, n) => {
          const put = puts[n]!
          if (r.isNew) dp.bytesNew += put.data.length
          stored += r.storedBytes
          // a result without one breaks putBlocks' contract; the buffer is still ours to hash (it returns to `free` below)
          const checksum = put.checksum ?? r.checksum ?? hasher.checksum(put.data)
          entries[put.at] = { kind: 'data', chunkId: r.chunkId, checksum }
        })
      }
      dp.bytesDone += dataBytes
      ctx.progress.emit()
      return entries
    } finally {
      free.push(buf)
    }
  }

  const drainOne = async (): Promise<void> => {
    for (const entry of await pending.shift()!) writer.append(entry)
  }
  const emit = (entry: BlockEntry): void => {
    if (pending.length === 0) writer.append(entry)
    else pending.push(Promise.resolve([entry]))
  }
  // The run being gathered: blocks [first, first + prevs.length), which starts at a data block;
  // `ranges` (merged, in order) when data extents do not cover all of it. Holes and zero extents
  // inside it stay in it as `fixed` entries (not read): a run ends only when it is full, so the
  // data blocks that scattered writes left in a hole go to the vault together, not one run (one
  // read, one putBlocks, one worker message) each.
  let run:
    | { first: number; prevs: Array<BlockEntry | undefined>; fixed: Array<BlockEntry | undefined>; ranges: Array<[number, number]>; partial: boolean; dataBytes: number; dataEnd: number }
    | undefined
  const flushRun = async (): Promise<void> => {
    if (!run) return
    const { first, prevs, fixed, ranges, partial, dataBytes, dataEnd } = run
    run = undefined
    // blocks after the last data block are not part of the read: their entries follow the run's
    const tail = fixed.splice(dataEnd)
    prevs.length = dataEnd
    while (free.length === 0) await drainOne()
    const start = first * blockSize
    const end = Math.min((first + prevs.length) * blockSize, virtualSize)
    const p = processRun(start, end - start, free.pop()!, prevs, fixed, partial ? ranges : undefined, dataBytes)
    p.catch(() => {}) // observed when drained; avoids an unhandled rejection meanwhile
    pending.push(p)
    for (const entry of tail) emit(entry!)
  }

  const blockRanges: Array<[number, number]> = []
  try {
    for (let i = 0; i < blockCount; i++) {
      throwIfAborted(ctx.signal)
      const start = i * blockSize
      const end = Math.min(start + blockSize, virtualSize)
      if (!cursor.holds(end)) await cursor.fill(end)
      // Fast paths: no extent before the end of this block; the block inside a data extent.
      const untouched = cursor.nextStart() >= end
      const inside = !untouched && cursor.insideData(start, end)
      const kind = untouched ? 0 : inside ? 2 : cursor.classify(start, end, blockRanges)
      if (run && run.prevs.length >= runBlocks) await flushRun()
      if (kind !== 2) {
        if (kind === 1) { dp.bytesDone += end - start; ctx.progress.emit() }
        const entry = kind === 1 ? ZERO : UNALLOCATED
        if (run) {
          run.prevs.push(undefined)
          run.fixed.push(entry)
          run.partial = true
        } else emit(entry)
      } else {
        if (!prevMap.holds(i)) await prevMap.load(i)
        const prevEntry = prevMap.get(i)
        if (run) {
          run.prevs.push(prevEntry)
          run.fixed.push(undefined)
        } else run = { first: i, prevs: [prevEntry], fixed: [undefined], ranges: [], partial: false, dataBytes: 0, dataEnd: 0 }
        run.dataBytes += end - start
        run.dataEnd = run.prevs.length
        if (inside) addRange(run.ranges, start, end)
        else {
          let covered = 0
          for (let r = 0; r < blockRanges.length; r++) {
            const [from, to] = blockRanges[r]!
            covered += to - from
            addRange(run.ranges, from, to)
          }
          if (covered < end - start) run.partial = true
        }
      }
      while (pending.length >= window * runBlocks * 4) await drainOne()
    }
    await flushRun()
    while (pending.length > 0) await drainOne()
  } catch (err) {
    await Promise.allSettled(pending) // no read may still target a buffer or the image after we return
    throw err
  }
  return stored
}

/** Adds [from, to) to a run's ranges (in order): gaps within a page (sector-granular formats) are read with their neighbours. */
function addRange(ranges: Array<[number, number]>, from: number, to: number): void {
  const last = ranges[ranges.length - 1]
  if (last && from - last[1] < RANGE_MERGE_GAP) last[1] = Math.max(last[1], to)
  else ranges.push([from, to])
}

/** For sessions without `putBlocks`: one put after the other, in order, each with its checksum (taken here when missing) in its result. */
async function putEach(session: BackupSession, puts: Array<{ data: Buffer; checksum: Buffer | undefined }>, hasher: BlockHasher): Promise<PutResult[]> {
  const out: PutResult[] = []
  for (const p of puts) {
    const checksum = p.checksum ?? hasher.checksum(p.data)
    out.push({ ...(await session.putBlock(p.data, checksum)), checksum })
  }
  return out
}

function keepClones(db: Db, machine: Machine, plans: DiskPlan[], manifest: PointManifest, policy: PolicySpec, nowMs: number, log: (l: string) => void): string[] {
  const kept: string[] = []
  if (policy.snapshotTierDays <= 0) return kept
  for (const p of plans) {
    if (!p.clonePath) continue
    recordSnapshotClone(db, { machineId: machine.id, pointId: manifest.id, diskName: p.disk.name, sourcePath: p.disk.path, clonePath: p.clonePath, createdAt: new Date(nowMs).toISOString() })
    kept.push(p.clonePath)
  }
  if (kept.length > 0) log(`snapshot tier: kept ${kept.length} clone(s) for ${policy.snapshotTierDays} day(s)`)
  return kept
}
