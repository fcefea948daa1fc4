import { describe, expect, it } from 'vitest'
import { zeroFill } from '../../../electron/engine/formats/io.js'

describe('zeroFill', () => {
  it.each([
    ['ordinary', (n: number) => Buffer.alloc(n)],
    ['shared', (n: number) => Buffer.from(new SharedArrayBuffer(n))],
  ])('zeros exactly [start, end) of %s memory, across its 64 KiB steps', (_, make) => {
    const n = 200_000
    const buf = make(n)
    buf.fill(0xab)
    zeroFill(buf, 1000, 150_001)
    expect(buf.subarray(0, 1000).every((b) => b === 0xab)).toBe(true)
    expect(buf.subarray(1000, 150_001).every((b) => b === 0)).toBe(true)
    expect(buf.subarray(150_001).every((b) => b === 0xab)).toBe(true)
    zeroFill(buf.subarray(199_990))
    expect(buf.subarray(199_990).every((b) => b === 0)).toBe(true)
    expect(buf[199_989]).toBe(0xab)
  })
})
