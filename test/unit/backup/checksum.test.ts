import { describe, expect, it } from 'vitest'
import { xxh3 } from '@node-rs/xxhash'
import { randomBytes } from 'node:crypto'
import { CHECKSUM_BYTES, createBlockHasher } from '../../../electron/engine/backup/checksum.js'
import { isAllZero } from '../../../electron/engine/formats/io.js'

describe('block checksum', () => {
  it('is XXH3-128 in canonical byte order (same digest as @node-rs/xxhash xxh128)', async () => {
    const hasher = createBlockHasher()
    for (const n of [0, 1, 15, 16, 17, 128, 129, 240, 241, 4096, 65536, 1024 * 1024 + 3]) {
      const data = randomBytes(n)
      const ours = hasher.checksum(data)
      expect(ours.length).toBe(CHECKSUM_BYTES)
      expect(ours.toString('hex')).toBe(xxh3.xxh128(data).toString(16).padStart(32, '0'))
    }
  })

  it('hashes a view without its neighbours and gives a fresh buffer each time', async () => {
    const hasher = createBlockHasher()
    const big = randomBytes(3000)
    const view = big.subarray(1000, 2000)
    const a = hasher.checksum(view)
    const b = hasher.checksum(Buffer.from(view))
    expect(a.equals(b)).toBe(true)
    expect(a).not.toBe(b)
  })
})

describe('isAllZero', () => {
  it('finds a single non-zero byte anywhere, in views of any length', () => {
    for (const n of [1, 7, 65535, 65536, 65537, 200_000]) {
      const buf = Buffer.alloc(n + 10)
      const view = buf.subarray(5, 5 + n)
      expect(isAllZero(view)).toBe(true)
      for (const pos of [0, Math.floor(n / 2), n - 1]) {
        view[pos] = 1
        expect(isAllZero(view)).toBe(false)
        view[pos] = 0
      }
      buf[0] = 9 // outside the view
      buf[buf.length - 1] = 9
      expect(isAllZero(view)).toBe(true)
    }
  })
  it('is true for an empty view', () => {
    expect(isAllZero(new Uint8Array(0))).toBe(true)
  })
})
