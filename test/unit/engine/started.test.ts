import { describe, expect, it } from 'vitest'
import { Started } from '../../../electron/engine/io/started.js'

const after = <T>(ms: number, value: () => T): Promise<T> => new Promise((resolve, reject) => setTimeout(() => {
  try {
    resolve(value())
  } catch (err) {
    reject(err)
  }
}, ms))

describe('Started', () => {
  it('settles every piece of work before it throws the first failure, and none is unhandled', async () => {
    const unhandled: unknown[] = []
    const onUnhandled = (reason: unknown): void => void unhandled.push(reason)
    process.on('unhandledRejection', onUnhandled)
    try {
      const work = new Started()
      let slowDone = false
      work.add(after(10, () => { throw new Error('first') }))
      work.add(after(60, () => (slowDone = true)))
      work.add(after(30, () => { throw new Error('second') }))
      expect(work.failed).toBe(false)
      await after(40, () => undefined) // both failures happen while nobody awaits them
      expect(work.failed).toBe(true)
      await expect(work.settle()).rejects.toThrow('first')
      expect(slowDone).toBe(true)
      expect(unhandled).toEqual([])
    } finally {
      process.off('unhandledRejection', onUnhandled)
    }
  })

  it('settles quietly when all the work succeeds', async () => {
    const work = new Started()
    const done: number[] = []
    for (const ms of [20, 5, 10]) work.add(after(ms, () => done.push(ms)))
    await work.settle()
    expect(done.sort((a, b) => a - b)).toEqual([5, 10, 20])
    expect(work.failed).toBe(false)
  })
})
