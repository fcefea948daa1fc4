/**
 * Vault locks (I5, I13). A lock is a small JSON file in `locks/` naming its holder (host, pid,
 * random id, kind, times). Backups and readers (restore, verify, catalog rebuild) hold `shared`
 * locks, prune an `exclusive` one.
 * Acquire = write our file first, then look at the others: on conflict we remove ours, so two
 * racing writers never both proceed. Held locks are rewritten every `refreshMs`; a lock not
 * refreshed for `lifetimeMs` is stale. A stale or dead-holder lock on THIS host whose pid is gone
 * is removed automatically; any other stale lock is reported (VAULT_LOCK_STALE) with the command
 * that clears it, never broken silently. A holder that could not refresh within its lifetime
 * (e.g. the laptop slept) has lost the lock and must not commit (`assertHeld` → VAULT_LOCK_LOST).
 */
import { hostname } from 'node:os'
import { join } from 'node:path'
import { EngineError } from '../errors.js'
import { randomId } from './crypto.js'
import { layoutOf, type VaultLayout } from './layout.js'
import type { LockWait, Vault } from './api.js'
import type { Clock, LockOptions } from './types.js'
import { systemClock } from './types.js'
import { nodeVaultFs, readdirIfExists, readFileIfExists, unlinkDurable, vaultIoError, writeFileAtomic, type VaultFs } from './vaultFs.js'

export type LockKind = 'shared' | 'exclusive'

export interface LockInfo {
  id: string
  kind: LockKind
  host: string
  pid: number
  /** Wall-clock ms when taken / last refreshed (holder's clock). */
  createdAt: number
  refreshedAt: number
  purpose: string
}

export const DEFAULT_LOCK_LIFETIME_MS = 30 * 60 * 1000
/**
 * How long a job of the app (backup, prune) waits for another job's conflicting lock before
 * VAULT_LOCKED: a backup started during a prune runs once the prune is done instead of failing.
 */
export const JOB_LOCK_WAIT_MS = 15 * 60_000
/** How a job's log line about such a wait begins (the CLI shows these lines on stderr). */
export const LOCK_WAIT_LOG_PREFIX = 'waiting up to'

/** The lock options of a job: wait JOB_LOCK_WAIT_MS for a conflicting lock, and say so once in `log`. */
export function jobLockOptions(log: (line: string) => void): Required<LockWait> {
  return { waitMs: JOB_LOCK_WAIT_MS, onWait: (message) => log(`${LOCK_WAIT_LOG_PREFIX} ${JOB_LOCK_WAIT_MS / 60_000} min for the vault: ${message}`) }
}

/**
 * Runs `read` under the vault's shared lock (restore, verify, catalog rebuild): no prune can delete
 * or rewrite what it reads meanwhile, and a running prune makes it wait (`wait`) or fail with
 * VAULT_LOCKED. Vaults without locks (in-memory test vaults) just run it. Releasing never throws.
 */
export async function withReadLock<T>(vault: Pick<Vault, 'readLock'>, purpose: string, wait: LockWait, read: () => Promise<T>): Promise<T> {
  const lock = await vault.readLock?.(purpose, wait)
  try {
    return await read()
  } finally {
    await lock?.release()
  }
}
export const UNLOCK_COMMAND = 'tresor vault unlock --force'
const LOCK_RE = /^[0-9a-f]{24}\.lock$/

export function isProcessAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

export async function listLocks(dir: string, options: { fs?: VaultFs } = {}): Promise<LockInfo[]> {
  const fs = options.fs ?? nodeVaultFs
  const layout = layoutOf(dir)
  const out: LockInfo[] = []
  for (const name of await readdirIfExists(fs, layout.locks)) {
    if (!LOCK_RE.test(name)) continue
    const raw = await readFileIfExists(fs, join(layout.locks, name))
    if (!raw) continue
    try {
      const info = JSON.parse(raw.toString('utf8')) as LockInfo
      if (typeof info.id === 'string' && `${info.id}.lock` === name) out.push(info)
    } catch {
      // A torn lock file cannot exist (atomic writes); an unreadable one is reported as foreign/stale below.
      out.push({ id: name.slice(0, 24), kind: 'exclusive', host: '?', pid: 0, createdAt: 0, refreshedAt: 0, purpose: 'unreadable lock file' })
    }
  }
  return out
}

/**
 * Removes lock files: the given ids, or all locks when `ids` is omitted. This is what
 * `tresor vault unlock --force` runs after the user confirmed; returns the removed locks.
 */
export async function breakLock(dir: string, options: { ids?: string[]; fs?: VaultFs } = {}): Promise<LockInfo[]> {
  const fs = options.fs ?? nodeVaultFs
  const layout = layoutOf(dir)
  const locks = await listLocks(dir, { fs })
  const chosen = options.ids ? locks.filter((l) => options.ids!.includes(l.id)) : locks
  for (const l of chosen) await unlinkDurable(fs, join(layout.locks, `${l.id}.lock`))
  if (!options.ids) {
    // temp files of lock writes cut short by a crash (no job runs: the user said so)
    for (const name of await readdirIfExists(fs, layout.locks)) if (name.endsWith('.tmp')) await unlinkDurable(fs, join(layout.locks, name))
  }
  return chosen
}

function describe(l: LockInfo, now: number): string {
  const age = Math.max(0, Math.round((now - l.refreshedAt) / 60000))
  return `${l.kind} lock by ${l.purpose || 'a process'} (host ${l.host}, pid ${l.pid}, last refreshed ${age} min ago)`
}

export class VaultLock {
  private timer: NodeJS.Timeout | undefined
  private lastRefreshWall: number
  private lastRefreshMono: number
  private released = false
  private refreshError: unknown

  private constructor(
    private readonly fs: VaultFs,
    private readonly layout: VaultLayout,
    readonly info: LockInfo,
    private readonly clock: Clock,
    private readonly lifetimeMs: number,
    refreshMs: number,
  ) {
    this.lastRefreshWall = clock.now()
    this.lastRefreshMono = clock.monotonic()
    this.timer = setInterval(() => void this.refresh().catch(() => undefined), refreshMs)
    this.timer.unref()
  }

  private get path(): string {
    return join(this.layout.locks, `${this.info.id}.lock`)
  }

  /**
   * Takes a lock of `kind` on the vault in `layout`. Conflicts: VAULT_LOCKED (live holder),
   * VAULT_LOCK_STALE (stale holder that is not a dead process on this host).
   */
  static async acquire(
    fs: VaultFs,
    layout: VaultLayout,
    kind: LockKind,
    options: LockOptions & { clock?: Clock; purpose?: string } = {},
  ): Promise<VaultLock> {
    const clock = options.clock ?? systemClock
    const lifetimeMs = options.lifetimeMs ?? DEFAULT_LOCK_LIFETIME_MS
    const refreshMs = options.refreshMs ?? Math.max(10, Math.floor(lifetimeMs / 6))
    const host = options.host ?? hostname()
    const deadline = clock.monotonic() + (options.waitMs ?? 0)
    let told = false
    for (;;) {
      const now = clock.now()
      const info: LockInfo = { id: randomId(12), kind, host, pid: process.pid, createdAt: now, refreshedAt: now, purpose: options.purpose ?? '' }
      // the temp file goes in locks/, not tmp/: prune empties tmp/ under its exclusive lock while
      // this process, holding nothing yet, may be writing there (RELIABILITY #16's test found it)
      await writeFileAtomic(fs, layout.locks, join(layout.locks, `${info.id}.lock`), Buffer.from(JSON.stringify(info), 'utf8'))
      let conflict: EngineError | undefined
      try {
        conflict = await findConflict(fs, layout, info, clock, lifetimeMs)
      } catch (err) {
        await unlinkDurable(fs, join(layout.locks, `${info.id}.lock`)).catch(() => undefined)
        throw err
      }
      if (!conflict) return new VaultLock(fs, layout, info, clock, lifetimeMs, refreshMs)
      await unlinkDurable(fs, join(layout.locks, `${info.id}.lock`)).catch(() => undefined)
      if (conflict.code !== 'VAULT_LOCKED' || clock.monotonic() >= deadline) throw conflict
      if (!told) {
        told = true
        options.onWait?.(conflict.message)
      }
      await new Promise((r) => setTimeout(r, 50 + Math.random() * 200))
    }
  }

  /** Rewrites the lock file with a new time (atomic). Fails if the file was removed by someone else. */
  async refresh(): Promise<void> {
    if (this.released) return
    try {
      const cur = await readFileIfExists(this.fs, this.path)
      if (!cur) throw new EngineError('VAULT_LOCK_LOST', 'The vault lock of this job was removed by another process.')
      const now = this.clock.now()
      const mono = this.clock.monotonic()
      if (this.isExpired(now, mono)) throw this.lostError()
      this.info.refreshedAt = now
      await writeFileAtomic(this.fs, this.layout.locks, this.path, Buffer.from(JSON.stringify(this.info), 'utf8'))
      this.lastRefreshWall = now
      this.lastRefreshMono = mono
    } catch (err) {
      this.refreshError = err
      throw err
    }
  }

  private isExpired(now: number, mono: number): boolean {
    // Either clock may stall while suspended (monotonic) or jump (wall): trust the larger gap.
    return now - this.lastRefreshWall > this.lifetimeMs || mono - this.lastRefreshMono > this.lifetimeMs
  }

  private lostError(): EngineError {
    return new EngineError(
      'VAULT_LOCK_LOST',
      'This job could not keep its vault lock (it was paused or cut off longer than the lock lifetime), so another job may have changed the vault. Nothing was committed; run the job again.',
      { cause: this.refreshError },
    )
  }

  /**
   * VAULT_LOCK_LOST when this held lock can no longer be trusted from what is already known (not
   * refreshed within its lifetime, or found removed by a refresh), else undefined (also once
   * released: letting go is not losing). No I/O: cheap enough to ask before every step of a job.
   */
  lostReason(): EngineError | undefined {
    if (this.released) return undefined
    if (this.isExpired(this.clock.now(), this.clock.monotonic())) return this.lostError()
    const err = this.refreshError
    return err instanceof EngineError && err.code === 'VAULT_LOCK_LOST' ? err : undefined
  }

  /** Throws VAULT_LOCK_LOST unless the lock is still ours and fresh. Call right before committing. */
  async assertHeld(): Promise<void> {
    if (this.released) throw this.lostError()
    const lost = this.lostReason()
    if (lost) throw lost
    let raw: Buffer | undefined
    try {
      raw = await readFileIfExists(this.fs, this.path)
    } catch (err) {
      throw vaultIoError(err, this.path, 'checking the vault lock')
    }
    if (!raw) throw this.lostError()
    await this.refresh().catch((err: unknown) => {
      throw err instanceof EngineError && err.code === 'VAULT_LOCK_LOST' ? err : vaultIoError(err, this.path, 'refreshing the vault lock')
    })
  }

  async release(): Promise<void> {
    if (this.released) return
    this.released = true
    if (this.timer) clearInterval(this.timer)
    this.timer = undefined
    await unlinkDurable(this.fs, this.path).catch(() => undefined)
  }
}

async function findConflict(fs: VaultFs, layout: VaultLayout, mine: LockInfo, clock: Clock, lifetimeMs: number): Promise<EngineError | undefined> {
  const now = clock.now()
  const others = (await listLocks(layout.root, { fs })).filter((l) => l.id !== mine.id)
  let stale: LockInfo | undefined
  let live: LockInfo | undefined
  for (const l of others) {
    if (mine.kind === 'shared' && l.kind === 'shared') continue
    if (l.host === mine.host && l.pid > 0 && l.pid !== process.pid && !isProcessAlive(l.pid)) {
      // Dead holder on this host: its lock protects nothing any more.
      await unlinkDurable(fs, join(layout.locks, `${l.id}.lock`))
      continue
    }
    if (now - l.refreshedAt > lifetimeMs || l.pid === 0) stale ??= l
    else live ??= l
  }
  if (live) {
    return new EngineError('VAULT_LOCKED', `The vault at "${layout.root}" is in use: ${describe(live, now)}. Wait for that job to finish and try again.`)
  }
  if (stale) {
    return new EngineError(
      'VAULT_LOCK_STALE',
      `The vault at "${layout.root}" has a stale ${describe(stale, now)}. If no Tresor job is running on host ${stale.host}, clear it with "${UNLOCK_COMMAND}" and try again.`,
    )
  }
  return undefined
}
