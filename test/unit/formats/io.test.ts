import { describe, expect, it } from 'vitest'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import fc from 'fast-check'
import { EngineError } from '../../../electron/engine/errors.js'
import { checkedAlloc, ImageFile, isAllZero, u32be, u64be, u64le } from '../../../electron/engine/formats/io.js'

describe('formats/io', () => {
  it('checkedAlloc refuses negative, fractional and over-limit sizes before allocating', () => {
    expect(checkedAlloc(16, 16, 'a table').length).toBe(16)
    for (const bad of [-1, 1.5, 17, Number.MAX_SAFE_INTEGER + 2, Number.NaN]) {
      expect(() => checkedAlloc(bad, 16, 'a table', '/x.img')).toThrowError(EngineError)
    }
    try {
      checkedAlloc(2 ** 40, 1024, 'the L1 table', '/disk.qcow2')
    } catch (err) {
      expect((err as EngineError).code).toBe('IMAGE_MALFORMED')
      expect((err as EngineError).userMessage).toContain('/disk.qcow2')
      expect((err as EngineError).userMessage).toContain('the L1 table')
    }
  })

  it('field readers refuse reads past the buffer and 64-bit values beyond 2^53', () => {
    const b = Buffer.alloc(8)
    expect(() => u32be(b, 6)).toThrowError(EngineError)
    b.writeBigUInt64BE(2n ** 60n)
    expect(() => u64be(b, 0)).toThrowError(EngineError)
    b.writeBigUInt64LE(123456789012345n)
    expect(u64le(b, 0)).toBe(123456789012345)
  })

  it('isAllZero agrees with a byte loop at any length and alignment', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 3000 }), fc.nat(16), fc.boolean(), (data, start, zeroed) => {
        const buf = Buffer.from(data)
        if (zeroed) buf.fill(0)
        const view = buf.subarray(Math.min(start, buf.length))
        expect(isAllZero(view)).toBe(view.every((x) => x === 0))
      }),
    )
    const big = Buffer.alloc(3 * 1024 * 1024 + 5)
    expect(isAllZero(big)).toBe(true)
    big[big.length - 1] = 1
    expect(isAllZero(big)).toBe(false)
  })

  it('ImageFile.readAt reads exactly or throws IMAGE_MALFORMED naming the file', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'tresor-io-'))
    try {
      const path = join(dir, 'f.bin')
      await writeFile(path, Buffer.from('0123456789'))
      const f = await ImageFile.open(path)
      try {
        expect((await f.readAt(2, 3, 'x')).toString()).toBe('234')
        await expect(f.readAt(8, 4, 'the BAT')).rejects.toMatchObject({ code: 'IMAGE_MALFORMED' })
        await expect(f.readAt(-1, 1, 'x')).rejects.toMatchObject({ code: 'IMAGE_MALFORMED' })
        const err = await f.readAt(8, 4, 'the BAT').catch((e: EngineError) => e)
        expect((err as EngineError).userMessage).toContain(path)
        expect((err as EngineError).userMessage).toContain('the BAT')
      } finally {
        await f.close()
      }
      await expect(ImageFile.open(join(dir, 'missing'))).rejects.toMatchObject({ code: 'NOT_FOUND' })
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })
})
