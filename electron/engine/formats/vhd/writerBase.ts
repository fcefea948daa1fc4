/**
 * What the VHD and VHDX writers share: the output file (created exclusively unless overwrite),
 * ordered-write checks, positioned writes, abort that deletes the file.
 */
import { open, unlink, type FileHandle } from 'node:fs/promises'
import { EngineError, fromFsError } from '../../errors.js'
import { isAllZero } from '../io.js'

export class OutputFile {
  private closed = false
  private constructor(
    readonly path: string,
    private readonly handle: FileHandle,
  ) {}

  static async create(path: string, overwrite: boolean | undefined): Promise<OutputFile> {
    try {
      return new OutputFile(path, await open(path, overwrite ? 'w' : 'wx'))
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
        throw new EngineError('ALREADY_EXISTS', `"${path}" already exists. Choose another name, or allow overwriting.`, { cause: err })
      }
      throw fromFsError(err, path, 'creating') ?? err
    }
  }

  async writeAt(data: Uint8Array, position: number): Promise<void> {
    let done = 0
    try {
      while (done < data.length) {
        const { bytesWritten } = await this.handle.write(data, done, data.length - done, position + done)
        done += bytesWritten
      }
    } catch (err) {
      throw fromFsError(err, this.path, 'writing') ?? err
    }
  }

  async truncate(size: number): Promise<void> {
    try {
      await this.handle.truncate(size)
    } catch (err) {
      throw fromFsError(err, this.path, 'writing') ?? err
    }
  }

  async syncAndClose(): Promise<void> {
    try {
      await this.handle.sync()
    } catch (err) {
      throw fromFsError(err, this.path, 'writing') ?? err
    } finally {
      await this.close()
    }
  }

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    await this.handle.close()
  }

  async closeAndDelete(): Promise<void> {
    await this.close().catch(() => undefined)
    await unlink(this.path).catch(() => undefined)
  }
}

/** Enforces the ImageWriter ordering contract: increasing, non-overlapping, inside the disk. */
export class WriteOrder {
  private end = 0
  constructor(
    private readonly path: string,
    private readonly virtualSize: number,
  ) {}

  check(offset: number, length: number): void {
    if (!Number.isSafeInteger(offset) || offset < this.end) {
      throw new EngineError('INVALID_INPUT', `Writes to "${this.path}" must come in increasing order (got offset ${offset} after ${this.end}).`)
    }
    if (offset + length > this.virtualSize) {
      throw new EngineError('INVALID_INPUT', `Write of ${length} bytes at ${offset} goes past the ${this.virtualSize}-byte disk "${this.path}".`)
    }
    this.end = offset + length
  }
}

export function checkVirtualSize(virtualSize: number, max: number, what: string): void {
  if (!Number.isSafeInteger(virtualSize) || virtualSize <= 0) {
    throw new EngineError('INVALID_INPUT', `The disk size must be a positive number of bytes (got ${virtualSize}).`)
  }
  if (virtualSize > max) {
    throw new EngineError('UNSUPPORTED', `A ${what} can hold at most ${max} bytes; this disk has ${virtualSize}. Choose another format.`)
  }
}

export function checkBlockSize(size: number, min: number, max: number, what: string): void {
  if (!Number.isSafeInteger(size) || size < min || size > max || (size & (size - 1)) !== 0) {
    throw new EngineError('INVALID_INPUT', `The ${what} block size must be a power of two between ${min} and ${max} bytes (got ${size}).`)
  }
}

/**
 * Cuts a guest write into per-block pieces and yields only those that hold a non-zero byte (zeros
 * are never written: an unwritten block or sector reads as zeros in both formats).
 */
export function* nonZeroBlockPieces(offset: number, data: Uint8Array, blockSize: number): Generator<{ block: number; inBlock: number; piece: Uint8Array }> {
  let pos = 0
  while (pos < data.length) {
    const g = offset + pos
    const block = Math.floor(g / blockSize)
    const inBlock = g - block * blockSize
    const n = Math.min(data.length - pos, blockSize - inBlock)
    const piece = data.subarray(pos, pos + n)
    pos += n
    if (!isAllZero(piece)) yield { block, inBlock, piece }
  }
}
