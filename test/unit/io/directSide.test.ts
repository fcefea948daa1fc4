/**
 * DirectSide (io/directIo.ts): the one place that decides when direct I/O gives way to the
 * ordinary handle. The raw and qcow2 writers, the pack writer and the pack reader all go through it;
 * their own tests cover the real file systems, this one the rule itself.
 */
import { describe, expect, it } from 'vitest'
import { DirectSide } from '../../../electron/engine/io/directIo.js'

class FakeHandle {
  closes = 0
  calls = 0
  async close(): Promise<void> {
    this.closes++
  }
}

function errno(code: string): NodeJS.ErrnoException {
  return Object.assign(new Error(code), { code })
}

describe('DirectSide', () => {
  it('runs operations on the direct handle while the kernel takes them', async () => {
    const h = new FakeHandle()
    const side = new DirectSide(h)
    expect(side.isOn).toBe(true)
    expect(await side.attempt(async (x) => void x.calls++)).toBe(true)
    expect(await side.attempt(async (x) => void x.calls++)).toBe(true)
    expect(h.calls).toBe(2)
    expect(side.isOn).toBe(true)
  })

  it('turns itself off for good at the first EINVAL, without closing a handle others may still use', async () => {
    const h = new FakeHandle()
    const side = new DirectSide(h)
    expect(await side.attempt(async () => Promise.reject(errno('EINVAL')))).toBe(false)
    expect(side.isOn).toBe(false)
    expect(await side.attempt(async (x) => void x.calls++)).toBe(false)
    expect(h.calls).toBe(0)
    expect(h.closes).toBe(0)
    await side.close()
    expect(h.closes).toBe(1)
  })

  it('passes every other error through and stays on', async () => {
    const side = new DirectSide(new FakeHandle())
    await expect(side.attempt(async () => Promise.reject(errno('ENOSPC')))).rejects.toMatchObject({ code: 'ENOSPC' })
    await expect(side.attempt(async () => Promise.reject(new Error('no code')))).rejects.toThrow('no code')
    expect(side.isOn).toBe(true)
  })

  it('is off from the start without a handle, and after close', async () => {
    const none = new DirectSide<FakeHandle>(undefined)
    expect(none.isOn).toBe(false)
    expect(await none.attempt(async () => undefined)).toBe(false)
    await none.close()

    const h = new FakeHandle()
    const side = new DirectSide(h)
    await side.close()
    expect(side.isOn).toBe(false)
    expect(await side.attempt(async (x) => void x.calls++)).toBe(false)
    expect(h.calls).toBe(0)
  })
})
