/**
 * A run's blocks scanned in one call (backup/blockScan.ts, native/digest `scanBlocks`): the addon
 * is built and loads; its zero tests and checksums equal an independent reference (a byte loop and
 * @node-rs/xxhash's XXH3-128) and the fallback's, for blocks of zeros, blocks with one byte set
 * anywhere, a short last block and skipped blocks; bad arguments throw before anything is written.
 */
import { createRequire } from 'node:module'
import { randomBytes } from 'node:crypto'
import { xxh3 } from '@node-rs/xxhash'
import { describe, expect, it } from 'vitest'
import { createBlockHasher } from '../../../electron/engine/backup/checksum.js'
import { SCAN_SKIP, SCAN_SUM, SCAN_TEST, SCAN_ZERO, createBlockScanner, scanner, sumMatches, type BlockScanner } from '../../../electron/engine/backup/blockScan.js'
import { StoredDataEntry } from '../../../electron/engine/vault/manifest.js'
import { nativeDigestLoaded } from '../../../electron/engine/vault/pieceDigests.js'

type Addon = typeof import('tresor-digest')
const addon = createRequire(import.meta.url)('tresor-digest') as Addon

const BLOCK = 4096

/** Blocks of every kind the loop meets: zeros, one byte set at the start, middle or end, random, and a short last block. */
function run(): { data: Buffer; count: number } {
  const count = 9
  const data = Buffer.alloc(count * BLOCK - 1000) // the last block is 3,096 bytes
  data[1 * BLOCK] = 1
  data[2 * BLOCK + 2000] = 7
  data[4 * BLOCK - 1] = 255
  randomBytes(BLOCK).copy(data, 4 * BLOCK)
  // block 5 and 6 stay zeros; block 7 has its last 16 bytes set (the self-compare's tail)
  data.fill(3, 8 * BLOCK - 16, 8 * BLOCK)
  data[data.length - 1] = 9 // the short last block's final byte
  return { data, count }
}

function reference(data: Buffer, count: number, modes: Uint8Array): { modes: number[]; sums: Array<string | null> } {
  const outModes: number[] = []
  const sums: Array<string | null> = []
  for (let j = 0; j < count; j++) {
    const block = data.subarray(j * BLOCK, Math.min(data.length, (j + 1) * BLOCK))
    const zero = block.every((b) => b === 0)
    const mode = modes[j]!
    outModes.push(mode === SCAN_SKIP ? SCAN_SKIP : zero ? SCAN_ZERO : mode)
    sums.push(mode === SCAN_SUM && !zero ? xxh3.xxh128(block).toString(16).padStart(32, '0') : null)
  }
  return { modes: outModes, sums }
}

function scanWith(scan: BlockScanner, data: Buffer, count: number, modes: Uint8Array): { modes: number[]; sums: Array<string | null> } {
  const m = Uint8Array.from(modes)
  const sums = Buffer.alloc(count * 16, 0xee)
  expect(scan(data, BLOCK, m, count, sums)).toBe(count)
  return {
    modes: [...m],
    sums: [...m].map((mode, j) => (mode === SCAN_SUM ? sums.subarray(j * 16, j * 16 + 16).toString('hex') : null)),
  }
}

describe('scanning a run of blocks', () => {
  it('runs in the addon here (native/digest is built by npm ci)', () => {
    expect(nativeDigestLoaded()).toBe(true)
    expect(createBlockScanner(createBlockHasher())).toBe(addon.scanBlocks)
  })

  for (const [name, make] of [
    ['the addon', () => addon.scanBlocks],
    ['the fallback', () => scanner(createBlockHasher())],
  ] as const) {
    it(`${name}: zeros found, checksums where asked, skipped blocks left alone`, () => {
      const { data, count } = run()
      for (const modes of [
        new Uint8Array(count).fill(SCAN_SUM),
        new Uint8Array(count).fill(SCAN_TEST),
        Uint8Array.from({ length: count }, (_, j) => j % 3),
      ]) {
        const got = scanWith(make(), data, count, modes)
        expect(got).toEqual(reference(data, count, modes))
      }
      const all = scanWith(make(), data, count, new Uint8Array(count).fill(SCAN_SUM))
      expect(all.modes).toEqual([SCAN_ZERO, SCAN_SUM, SCAN_SUM, SCAN_SUM, SCAN_SUM, SCAN_ZERO, SCAN_ZERO, SCAN_SUM, SCAN_SUM])
    })

    it(`${name}: a single byte set anywhere in a block makes it data`, () => {
      for (const length of [1, 15, 16, 17, 31, 32, 33, 4096]) {
        const data = Buffer.alloc(length)
        for (let at = 0; at < length; at++) {
          data[at] = 0x80
          const modes = Uint8Array.of(SCAN_TEST)
          make()(data, length, modes, 1, Buffer.alloc(16))
          expect(modes[0]).toBe(SCAN_TEST)
          data[at] = 0
        }
        const modes = Uint8Array.of(SCAN_TEST)
        make()(data, length, modes, 1, Buffer.alloc(16))
        expect(modes[0]).toBe(SCAN_ZERO)
      }
    })

    it(`${name}: blocks that do not start inside the data are refused`, () => {
      const data = Buffer.alloc(2 * BLOCK)
      expect(() => make()(data, BLOCK, new Uint8Array(3).fill(SCAN_TEST), 3, Buffer.alloc(48))).toThrow(RangeError)
    })
  }

  it('the addon refuses arguments of the wrong type', () => {
    const data = Buffer.alloc(2 * BLOCK, 1)
    const modes = Uint8Array.of(SCAN_SUM, SCAN_SUM)
    const sums = Buffer.alloc(32)
    const call = (...args: unknown[]): unknown => (addon.scanBlocks as (...a: unknown[]) => number)(...args)
    expect(() => call(data, BLOCK, modes, 2)).toThrow(TypeError)
    expect(() => call([1, 2], BLOCK, modes, 2, sums)).toThrow(TypeError)
    expect(() => call(data, BLOCK, new Uint16Array(2), 2, sums)).toThrow(TypeError)
    expect(() => call(data, BLOCK, modes, 2, new Uint32Array(8))).toThrow(TypeError)
    expect([...modes]).toEqual([SCAN_SUM, SCAN_SUM])
    expect(sums.equals(Buffer.alloc(32))).toBe(true)
  })

  for (const [name, make] of [
    ['the addon', () => addon.scanBlocks],
    ['the fallback', () => scanner(createBlockHasher())],
  ] as const) it(`${name} checks every argument before writing anything`, () => {
    const data = Buffer.alloc(2 * BLOCK, 1)
    const modes = Uint8Array.of(SCAN_SUM, SCAN_SUM)
    const sums = Buffer.alloc(32)
    const untouched = (): void => {
      expect([...modes]).toEqual([SCAN_SUM, SCAN_SUM])
      expect(sums.equals(Buffer.alloc(32))).toBe(true)
    }
    const call = make()
    expect(() => call(data, -1, modes, 2, sums)).toThrow(RangeError)
    expect(() => call(data, 0, modes, 2, sums)).toThrow(RangeError)
    expect(() => call(data, 1.5, modes, 2, sums)).toThrow(RangeError)
    expect(() => call(data, BLOCK, modes, 3, Buffer.alloc(48))).toThrow(RangeError) // more blocks than modes
    expect(() => call(data, BLOCK, modes, 2, Buffer.alloc(31))).toThrow(RangeError) // sums too short
    expect(() => call(data, BLOCK, Uint8Array.of(SCAN_SUM, 4), 2, sums)).toThrow(RangeError)
    untouched()
    // the first block's mode is valid and its sum would fit: still nothing written when the second is bad
    expect(() => call(data, BLOCK, Uint8Array.of(SCAN_SUM, SCAN_ZERO), 2, sums)).toThrow(RangeError)
    expect(sums.equals(Buffer.alloc(32))).toBe(true)
    expect(call(data, BLOCK, modes, 0, sums)).toBe(0)
    untouched()
  })

  it('compares a checksum in place', () => {
    const sums = Buffer.from('00'.repeat(16) + 'ab'.repeat(16), 'hex')
    const near = Buffer.from('ab'.repeat(16), 'hex')
    near[15] = 0xac
    // a stored entry: kind byte, 32-byte id, then the checksum, somewhere inside a segment's plaintext
    const plain = Buffer.concat([Buffer.alloc(7), Buffer.from([1]), Buffer.alloc(32, 5), Buffer.from('ab'.repeat(16), 'hex'), Buffer.alloc(3)])
    const stored = new StoredDataEntry(plain, 7)
    const nearStored = new StoredDataEntry(Buffer.concat([Buffer.from([1]), Buffer.alloc(32, 5), near]), 0)
    for (const [entry, other] of [[{ checksum: Buffer.from('ab'.repeat(16), 'hex') }, { checksum: near }], [stored, nearStored]] as const) {
      expect(sumMatches(sums, 16, entry)).toBe(true)
      expect(sumMatches(sums, 0, entry)).toBe(false)
      expect(sumMatches(sums, 16, other)).toBe(false)
    }
    expect(stored.checksum.toString('hex')).toBe('ab'.repeat(16))
    expect(stored.chunkId.equals(Buffer.alloc(32, 5))).toBe(true)
    const encoded = Buffer.alloc(60)
    expect(stored.encodeTo(encoded, 2)).toBe(2 + 49)
    expect(encoded.subarray(2, 51).equals(plain.subarray(7, 56))).toBe(true)
  })
})
