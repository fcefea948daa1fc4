/**
 * FaultFs: a VaultFs wrapper for fault injection (RELIABILITY.md harness). Counts every operation,
 * can fail the Nth matching one with an errno code, make writes short, fail fsyncs, and records an
 * operation log for durability checks.
 */
import { nodeVaultFs, type VaultFileHandle, type VaultFs } from '../../../electron/engine/vault/vaultFs.js'

export type FsOp = 'open' | 'openRead' | 'openDirect' | 'readFile' | 'rename' | 'link' | 'unlink' | 'mkdir' | 'rmdir' | 'readdir' | 'stat' | 'syncDir' | 'read' | 'write' | 'sync' | 'close' | 'size'

export interface FaultRule {
  /** Which operations count toward `afterOps` (default: all writes-ish: open wx, write, sync, rename, link). */
  ops?: FsOp[]
  /** Fail the operation after this many matching ones succeeded. */
  afterOps: number
  code: string
  /** Keep failing every later matching op too (a full disk stays full). */
  sticky?: boolean
  /** Only paths containing this. */
  pathIncludes?: string
  /** The fault stops once a file whose path contains this is unlinked (space freed). */
  clearOnUnlink?: string
}

export class FaultFs implements VaultFs {
  log: Array<{ op: FsOp; path: string; from?: string }> = []
  /** Every read that returned, with where it read and how many bytes came back (ordinary and direct handles). */
  reads: Array<{ path: string; position: number; bytes: number }> = []
  private counts = 0
  private tripped = false
  rule: FaultRule | undefined
  shortWrites = false
  /** Runs before each read (after its fault check): a test can hold a read until something else happened. */
  beforeRead: ((path: string, position: number) => Promise<void> | void) | undefined

  constructor(private readonly inner: VaultFs = nodeVaultFs) {}

  private gate(op: FsOp, path: string): void {
    this.log.push({ op, path })
    const r = this.rule
    if (!r) return
    const ops = r.ops ?? ['open', 'write', 'sync', 'rename', 'link', 'syncDir']
    if (!ops.includes(op)) return
    if (r.pathIncludes && !path.includes(r.pathIncludes)) return
    if (this.tripped && r.sticky) throw errno(r.code, op, path)
    if (this.counts++ >= r.afterOps && !this.tripped) {
      this.tripped = true
      throw errno(r.code, op, path)
    }
  }

  get hasTripped(): boolean {
    return this.tripped
  }

  reset(): void {
    this.rule = undefined
    this.counts = 0
    this.tripped = false
    this.shortWrites = false
    this.beforeRead = undefined
    this.reads = []
  }

  async open(path: string, flags: 'r' | 'wx'): Promise<VaultFileHandle> {
    if (flags === 'wx') this.gate('open', path)
    else this.log.push({ op: 'openRead', path })
    return this.wrap(await this.inner.open(path, flags), path)
  }

  /** The inner file system's direct handle, with the same faults and log as `open`'s (writes count alike). */
  async openDirect(path: string, mode: 'r' | 'w'): Promise<VaultFileHandle | undefined> {
    this.log.push({ op: 'openDirect', path })
    const fh = await this.inner.openDirect?.(path, mode)
    return fh && this.wrap(fh, path)
  }

  private wrap(fh: VaultFileHandle, path: string): VaultFileHandle {
    const self = this
    return {
      async read(b, o, l, p) {
        self.gate('read', path) // counted only by a rule that names 'read'
        await self.beforeRead?.(path, p)
        const bytes = await fh.read(b, o, l, p)
        self.reads.push({ path, position: p, bytes })
        return bytes
      },
      async write(b, o, l, p) {
        self.gate('write', path)
        const n = self.shortWrites && l > 1 ? Math.ceil(l / 2) : l
        return fh.write(b, o, n, p)
      },
      async sync() {
        self.gate('sync', path)
        return fh.sync()
      },
      size: () => fh.size(),
      close: () => {
        self.log.push({ op: 'close', path })
        return fh.close()
      },
    }
  }
  readFile(path: string) {
    this.log.push({ op: 'readFile', path })
    return this.inner.readFile(path)
  }
  async rename(from: string, to: string) {
    this.gate('rename', to)
    this.log[this.log.length - 1]!.from = from
    return this.inner.rename(from, to)
  }
  async link(existing: string, to: string) {
    this.gate('link', to)
    this.log[this.log.length - 1]!.from = existing
    return this.inner.link(existing, to)
  }
  async unlink(path: string) {
    this.log.push({ op: 'unlink', path })
    if (this.rule?.clearOnUnlink && path.includes(this.rule.clearOnUnlink)) this.rule = undefined
    return this.inner.unlink(path)
  }
  async mkdir(path: string) {
    this.gate('mkdir', path)
    return this.inner.mkdir(path)
  }
  rmdir(path: string) {
    this.log.push({ op: 'rmdir', path })
    return this.inner.rmdir(path)
  }
  readdir(path: string) {
    this.log.push({ op: 'readdir', path })
    return this.inner.readdir(path)
  }
  stat(path: string) {
    return this.inner.stat(path)
  }
  async syncDir(path: string) {
    this.gate('syncDir', path)
    return this.inner.syncDir(path)
  }
}

function errno(code: string, op: string, path: string): NodeJS.ErrnoException {
  const e = new Error(`${code}: injected fault, ${op} '${path}'`) as NodeJS.ErrnoException
  e.code = code
  e.path = path
  return e
}

/**
 * Durability lint over an op log (RELIABILITY #5): every file reaching a final name was written,
 * fsynced before its rename/link, and its directory fsynced afterwards; every manifest appears only
 * after every pack renamed earlier in the log is durable. Returns the violations.
 */
export function durabilityViolations(log: FaultFs['log']): string[] {
  const out: string[] = []
  const dirOf = (p: string): string => p.slice(0, p.lastIndexOf('/'))
  const synced = new Set<string>()
  const pendingDirs = new Map<string, string>() // final path → dir awaiting fsync
  for (const e of log) {
    if (e.op === 'sync') synced.add(e.path)
    if (e.op === 'open') synced.delete(e.path)
    if (e.op === 'rename' || e.op === 'link') {
      if (!e.from || !synced.has(e.from)) out.push(`${e.op} to ${e.path} without fsync of ${e.from}`)
      pendingDirs.set(e.path, dirOf(e.path))
    }
    if (e.op === 'syncDir') for (const [f, d] of pendingDirs) if (d === e.path) pendingDirs.delete(f)
    if (e.op === 'rename' && e.path.includes('/manifests/')) {
      for (const [f] of pendingDirs) if (f.includes('/packs/') || f.includes('/maps/')) out.push(`manifest ${e.path} before ${f} was durable`)
    }
  }
  for (const [f] of pendingDirs) if (!f.includes('/locks/')) out.push(`${f}: directory never fsynced`)
  return out
}
