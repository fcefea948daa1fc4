import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { join } from 'node:path'
import { open, readFile } from 'node:fs/promises'
import { copyGuestData, createImageWriter, openImage, type DiskImage, type Extent, type ImageInfo, type ImageWriter, type WriterFormat } from '../../../electron/engine/formats/index.js'
import { randomBytes, tempDir } from '../../helpers/qemu.js'

const MiB = 1024 * 1024
let dir = ''
let cleanup: () => Promise<void> = async () => {}

beforeAll(async () => {
  ;({ dir, cleanup } = await tempDir('tresor-copy-'))
})
afterAll(async () => {
  await cleanup()
})

/** A sparse raw file of `size` bytes with data at `pieces`; returns its path and its full content. */
async function sparseSource(name: string, size: number, pieces: Array<[number, Buffer]>): Promise<{ file: string; content: Buffer }> {
  const file = join(dir, name)
  const content = Buffer.alloc(size)
  const fh = await open(file, 'w')
  try {
    await fh.truncate(size)
    for (const [offset, data] of pieces) {
      await fh.write(data, 0, data.length, offset)
      data.copy(content, offset)
    }
  } finally {
    await fh.close()
  }
  return { file, content }
}

/** An in-memory image over `content` whose reads settle at once (so writes are the slow side). */
function memoryImage(content: Buffer): DiskImage {
  return {
    path: 'memory image',
    format: 'raw',
    variant: 'memory',
    virtualSize: content.length,
    clusterSize: 4096,
    backing: undefined,
    async *extents(): AsyncIterable<Extent> {
      yield { offset: 0, length: content.length, zero: false }
    },
    async read(buffer: Uint8Array, offset: number): Promise<Uint8Array> {
      buffer.set(content.subarray(offset, offset + buffer.length))
      return buffer
    },
    info: async () => ({}) as ImageInfo,
    close: async () => {},
  }
}

const sleep = (ms: number): Promise<void> => new Promise((done) => setTimeout(done, ms))

/**
 * A writer that keeps what it is given in memory, takes `max` calls at once, settles them after
 * random delays (out of order), checks the caller's promises (order, outstanding count, buffers left
 * untouched until settled) and fails the call numbered `failAt` when given.
 */
function recordingWriter(size: number, max: number | undefined, failAt?: number) {
  const out = Buffer.alloc(size)
  const state = { calls: 0, outstanding: 0, peak: 0, next: 0, violations: [] as string[], failed: false }
  let seed = 7
  const writer: ImageWriter = {
    path: 'memory',
    format: 'raw' as WriterFormat,
    ...(max === undefined ? {} : { maxConcurrentWrites: max }),
    async write(offset: number, data: Uint8Array): Promise<void> {
      const call = ++state.calls
      if (offset < state.next) state.violations.push(`call ${call} at ${offset} before ${state.next}`)
      state.next = offset + data.length
      state.outstanding++
      state.peak = Math.max(state.peak, state.outstanding)
      if (state.outstanding > (max ?? 1)) state.violations.push(`call ${call}: ${state.outstanding} outstanding`)
      const snapshot = Buffer.from(data)
      try {
        seed = (seed * 1103515245 + 12345) % 2147483648
        await sleep(15 + (seed % 10))
        if (!snapshot.equals(data)) state.violations.push(`call ${call}: buffer changed while in flight`)
        if (call === failAt) {
          state.failed = true
          throw new Error(`injected failure at call ${call}`)
        }
        out.set(snapshot, offset)
      } finally {
        state.outstanding--
      }
    },
    finish: async () => ({ bytesWritten: 0 }),
    abort: async () => {},
  }
  return { writer, out, state }
}

describe('copyGuestData', () => {
  const size = 48 * MiB + 4096
  const pieces: Array<[number, Buffer]> = []
  for (let i = 0; i < 40; i++) pieces.push([Math.floor(i * 1.2 * MiB) + ((i * 4099) % 65536), randomBytes(100 + i, 300_000 + i * 1000)])
  pieces.push([size - 1000, randomBytes(99, 1000)])

  for (const max of [undefined, 2, 4, 64]) {
    it(`hands every byte to a writer taking ${max ?? 'one call'} at once, in order, never touching buffers in flight`, async () => {
      const { file, content } = await sparseSource(`src-${max ?? 1}.raw`, size, pieces)
      const image = await openImage(file)
      const { writer, out, state } = recordingWriter(size, max)
      try {
        await copyGuestData(image, writer)
      } finally {
        await image.close()
      }
      expect(state.violations).toEqual([])
      expect(state.outstanding).toBe(0)
      if (max !== undefined && max > 1) expect(state.peak).toBeGreaterThan(1)
      expect(out.equals(content)).toBe(true)
    })
  }

  it('reports a failed write once every call has settled, and issues no write after it is known', async () => {
    const { file } = await sparseSource('src-fail.raw', size, pieces)
    const image = await openImage(file)
    const { writer, state } = recordingWriter(size, 4, 3)
    try {
      await expect(copyGuestData(image, writer)).rejects.toThrow('injected failure at call 3')
    } finally {
      await image.close()
    }
    expect(state.failed).toBe(true)
    expect(state.outstanding).toBe(0)
    // At most the calls already outstanding when the failure was seen, plus one queued behind it.
    expect(state.calls).toBeLessThanOrEqual(3 + 4)
  })

  it('a cancellation returns only once every read it started has settled', async () => {
    const content = randomBytes(32, 64 * MiB)
    const image = memoryImage(content)
    const inner = image.read.bind(image)
    let reading = 0
    let started = 0
    const controller = new AbortController()
    image.read = async (buffer, offset) => {
      reading++
      // the second read cancels the copy while the first, the slowest, is still running
      const n = ++started
      if (n === 2) controller.abort()
      try {
        await sleep(n === 1 ? 150 : 10)
        return await inner(buffer, offset)
      } finally {
        reading--
      }
    }
    const { writer } = recordingWriter(content.length, 4)
    await expect(copyGuestData(image, writer, { signal: controller.signal })).rejects.toMatchObject({ code: 'CANCELLED' })
    expect(started).toBeGreaterThanOrEqual(2)
    expect(reading).toBe(0)
  })

  it('keeps copying while every buffer is out with the writer (a writer taking more calls than there are buffers)', async () => {
    const content = randomBytes(31, 64 * MiB + 12345)
    const { writer, out, state } = recordingWriter(content.length, 1000)
    await copyGuestData(memoryImage(content), writer)
    expect(state.violations).toEqual([])
    expect(state.peak).toBeGreaterThan(4)
    expect(out.equals(content)).toBe(true)
  })
})

describe('raw writer with overlapping writes', () => {
  it('takes several calls at once (all settled before finish) and writes exactly the data given', async () => {
    const size = 20 * MiB + 777
    const file = join(dir, 'overlap.raw')
    const writer = await createImageWriter(file, 'raw', { virtualSize: size })
    expect(writer.maxConcurrentWrites).toBeGreaterThan(1)
    const expected = Buffer.alloc(size)
    const calls: Promise<void>[] = []
    let offset = 0
    for (let i = 0; offset < size; i++) {
      const length = Math.min(size - offset, 1 * MiB + i * 65536 + 13)
      // Every other call is all zeros (left as a hole); the others mix data and zero granules.
      const data = i % 2 === 1 ? Buffer.alloc(length) : randomBytes(500 + i, length)
      if (i % 2 === 0) data.fill(0, 70000, Math.min(length, 70000 + 200_000))
      data.copy(expected, offset)
      calls.push(writer.write(offset, data))
      if (calls.length >= (writer.maxConcurrentWrites ?? 1)) await calls.shift()
      offset += length
    }
    await Promise.all(calls)
    const { bytesWritten } = await writer.finish()
    expect((await readFile(file)).equals(expected)).toBe(true)
    expect(bytesWritten).toBeLessThan(size)
  })
})
