/**
 * Every byte the vault reads or writes goes through `VaultFs`, so tests can inject faults (ENOSPC at
 * operation N, EIO, failing fsync, short writes) and check the durability protocol (I2). The default
 * implementation is node:fs. Helpers here implement the protocol once: temp file → write all →
 * fsync → close → rename → fsync the directory.
 */
import { constants as fsConstants, promises as fsp } from 'node:fs'
import { dirname, join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { EngineError, fromFsError, isEngineError } from '../errors.js'
import { openDirect } from '../io/directIo.js'

export interface VaultFileHandle {
  /** Reads up to `length` bytes at `position`; may return fewer (callers loop). */
  read(buffer: Uint8Array, offset: number, length: number, position: number): Promise<number>
  /** Writes up to `length` bytes at `position`; may write fewer (callers loop). */
  write(buffer: Uint8Array, offset: number, length: number, position: number): Promise<number>
  sync(): Promise<void>
  size(): Promise<number>
  close(): Promise<void>
}

export interface VaultFs {
  /** 'r' read; 'wx' create exclusively for writing (fails EEXIST). */
  open(path: string, flags: 'r' | 'wx'): Promise<VaultFileHandle>
  /**
   * A second handle on the existing file `path` that bypasses the page cache (O_DIRECT), write-only
   * ('w') or read-only ('r'), or undefined where that is not offered (platform, file system,
   * TRESOR_NO_DIRECT_IO=1). Its reads and writes need page-aligned memory, positions and lengths
   * (directIo.ts); the kernel refuses others with EINVAL. Optional: a VaultFs without it has every
   * byte go through `open`.
   */
  openDirect?(path: string, mode: 'r' | 'w'): Promise<VaultFileHandle | undefined>
  readFile(path: string): Promise<Buffer>
  rename(from: string, to: string): Promise<void>
  /** Hard link: an exclusive create of `to` (fails EEXIST), used for generation records. */
  link(existing: string, to: string): Promise<void>
  unlink(path: string): Promise<void>
  mkdir(path: string): Promise<void>
  rmdir(path: string): Promise<void>
  readdir(path: string): Promise<string[]>
  /** Size in bytes, or undefined when the path does not exist. */
  stat(path: string): Promise<{ size: number; isDirectory: boolean } | undefined>
  /** fsync of a directory, making renames/creates/unlinks in it durable. */
  syncDir(path: string): Promise<void>
}

class NodeFileHandle implements VaultFileHandle {
  constructor(private readonly fh: fsp.FileHandle) {}
  async read(buffer: Uint8Array, offset: number, length: number, position: number): Promise<number> {
    return (await this.fh.read(buffer, offset, length, position)).bytesRead
  }
  async write(buffer: Uint8Array, offset: number, length: number, position: number): Promise<number> {
    return (await this.fh.write(buffer, offset, length, position)).bytesWritten
  }
  sync(): Promise<void> {
    return this.fh.sync()
  }
  async size(): Promise<number> {
    return (await this.fh.stat()).size
  }
  close(): Promise<void> {
    return this.fh.close()
  }
}

/** node:fs implementation (the default). */
export const nodeVaultFs: VaultFs = {
  async open(path, flags) {
    const mode = flags === 'r' ? fsConstants.O_RDONLY : fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL
    return new NodeFileHandle(await fsp.open(path, mode, 0o600))
  },
  async openDirect(path, mode) {
    const fh = await openDirect(path, mode)
    return fh && new NodeFileHandle(fh)
  },
  readFile: (path) => fsp.readFile(path),
  rename: (from, to) => fsp.rename(from, to),
  link: (existing, to) => fsp.link(existing, to),
  unlink: (path) => fsp.unlink(path),
  async mkdir(path) {
    await fsp.mkdir(path, { recursive: true, mode: 0o700 })
  },
  rmdir: (path) => fsp.rmdir(path),
  readdir: (path) => fsp.readdir(path),
  async stat(path) {
    try {
      const st = await fsp.stat(path)
      return { size: st.size, isDirectory: st.isDirectory() }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
      throw err
    }
  },
  async syncDir(path) {
    const fh = await fsp.open(path, fsConstants.O_RDONLY)
    try {
      await fh.sync()
    } catch (err) {
      // Some file systems (e.g. exFAT through FUSE, Windows) refuse fsync on a directory handle.
      const code = (err as NodeJS.ErrnoException).code
      if (code !== 'EINVAL' && code !== 'EPERM' && code !== 'EISDIR') throw err
    } finally {
      await fh.close()
    }
  },
}

/** Turns a file-system failure into an EngineError naming the path; EngineErrors pass through. */
export function vaultIoError(err: unknown, path: string, action: string): EngineError {
  if (isEngineError(err)) return err
  return (
    fromFsError(err, path, action) ??
    new EngineError('IO_ERROR', `Could not complete ${action} "${path}": ${(err as Error)?.message ?? String(err)}. Check the vault drive.`, {
      cause: err,
    })
  )
}

export async function writeAll(fh: VaultFileHandle, data: Uint8Array, position: number, path: string): Promise<void> {
  let done = 0
  let zeroWrites = 0
  while (done < data.length) {
    const n = await fh.write(data, done, data.length - done, position + done)
    if (n <= 0) {
      if (++zeroWrites > 3) throw new EngineError('IO_ERROR', `Writing "${path}" made no progress. Check the vault drive.`)
      continue
    }
    done += n
  }
}

/** Reads exactly `length` bytes at `position` into `buffer` (at `offset`); a short file is VAULT_DAMAGED. */
export async function readExactly(
  fh: VaultFileHandle,
  buffer: Uint8Array,
  offset: number,
  length: number,
  position: number,
  path: string,
): Promise<void> {
  let done = 0
  while (done < length) {
    const n = await fh.read(buffer, offset + done, length - done, position + done)
    if (n <= 0) {
      throw new EngineError('VAULT_DAMAGED', `"${path}" is shorter than expected (truncated). Run "tresor verify" to see what it affects.`)
    }
    done += n
  }
}

export function tempName(finalPath: string): string {
  return `${finalPath.split(/[\\/]/).pop() ?? 'file'}.${randomBytes(6).toString('hex')}.tmp`
}

/**
 * Writes `data` to `finalPath` durably and atomically (I2): a temp file in `tmpDir` (same file
 * system), fully written and fsynced, renamed over the final name, then the directory fsynced.
 * On failure the temp file is removed and the final name is untouched.
 */
export async function writeFileAtomic(fs: VaultFs, tmpDir: string, finalPath: string, data: Uint8Array): Promise<void> {
  const tmp = join(tmpDir, tempName(finalPath))
  let fh: VaultFileHandle | undefined
  try {
    fh = await fs.open(tmp, 'wx')
    await writeAll(fh, data, 0, finalPath)
    await fh.sync()
    const h = fh
    fh = undefined
    await h.close()
    await fs.rename(tmp, finalPath)
    await fs.syncDir(dirname(finalPath))
  } catch (err) {
    if (fh) await fh.close().catch(() => undefined)
    await fs.unlink(tmp).catch(() => undefined)
    throw vaultIoError(err, finalPath, 'writing')
  }
}

/** Reads a whole file; a missing file yields undefined. */
export async function readFileIfExists(fs: VaultFs, path: string): Promise<Buffer | undefined> {
  try {
    return await fs.readFile(path)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw vaultIoError(err, path, 'reading')
  }
}

/** Removes a file, durably (directory fsynced); a missing file is fine. */
export async function unlinkDurable(fs: VaultFs, path: string): Promise<void> {
  try {
    await fs.unlink(path)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return
    throw vaultIoError(err, path, 'deleting')
  }
  await fs.syncDir(dirname(path)).catch((err: unknown) => {
    throw vaultIoError(err, dirname(path), 'syncing')
  })
}

export async function readdirIfExists(fs: VaultFs, path: string): Promise<string[]> {
  try {
    return await fs.readdir(path)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return []
    throw vaultIoError(err, path, 'listing')
  }
}
