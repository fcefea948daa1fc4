/**
 * FaultFs: a VaultFs wrapper for fault injection (RELIABILITY.md harness). Counts every operation,
 * can fail the Nth matching one with an errno code, make writes short, fail fsyncs, and records an
 * operation log for durability checks.
 */
import { nodeVaultFs, type VaultFileHandle, type VaultFs } from '../../../electron/engine/vault/vaultFs.js'

export type FsOp = 'open' | 'readFile' | 'rename' | 'link' | 'unlink' | 'mkdir' | 'rmdir' | 'readdir' | 'stat' | 'syncDir' | 'read' | 'write' | 'sync' | 'close' | 'size'

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
}

export class FaultFs implements VaultFs {
  log: Array<{ op: FsOp; path: string }> = []
  private counts = 0
  private tripped = false
  rule: FaultRule | undefined
  shortWrites = false

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
  }

  async open(path: string, flags: 'r' | 'wx'): Promise<VaultFileHandle> {
    if (flags === 'wx') this.gate('open', path)
    else this.log.push({ op: 'open', path })
    const fh = await this.inner.open(path, flags)
    const self = this
    return {
      read: (b, o, l, p) => {
        self.log.push({ op: 'read', path })
        return fh.read(b, o, l, p)
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
    return this.inner.rename(from, to)
  }
  async link(existing: string, to: string) {
    this.gate('link', to)
    return this.inner.link(existing, to)
  }
  async unlink(path: string) {
    this.log.push({ op: 'unlink', path })
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
