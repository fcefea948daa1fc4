/**
 * Chunk ids and checksums of many pieces in one call (vault/pieceDigests.ts, native/digest): the
 * addon is built and loads; its digests equal independent implementations (@napi-rs/blake-hash's
 * keyed BLAKE3 in Rust, @node-rs/xxhash's XXH3-128) and the fallback's, for pieces of every size
 * the SIMD paths split differently, at offsets inside larger arrays, one at a time and many side by
 * side (the batched path), consecutive or anywhere in the data (`ranges`); bad arguments throw
 * before any byte is written.
 */
import { createRequire } from 'node:module'
import { randomBytes } from 'node:crypto'
import { Blake3Hasher } from '@napi-rs/blake-hash'
import { xxh3 } from '@node-rs/xxhash'
import { describe, expect, it } from 'vitest'
import { addonIsComplete, createPieceDigester, nativeDigestLoaded } from '../../../electron/engine/vault/pieceDigests.js'

/** Deterministic bytes (a seeded generator), so a failure repeats. */
function bytes(length: number, seed: number): Buffer {
  const out = Buffer.alloc(length)
  let x = seed >>> 0 || 1
  for (let i = 0; i < length; i++) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
    out[i] = x & 0xff
  }
  return out
}

function keyedBlake3(key: Uint8Array, data: Uint8Array): string {
  const h = Blake3Hasher.newKeyed(Buffer.from(key))
  h.update(Buffer.from(data.buffer, data.byteOffset, data.byteLength))
  return h.digest('hex')
}

function xxh128Hex(data: Uint8Array): string {
  return xxh3.xxh128(data).toString(16).padStart(32, '0')
}

/** Piece lengths that cross BLAKE3's 64-byte blocks, 1 KiB chunks and the 16-chunk AVX-512 batch. */
const LENGTHS = [0, 1, 63, 64, 65, 1023, 1024, 1025, 2048, 4095, 8192, 12_345, 16 * 1024, 16 * 1024 + 1, 65_536, 131_071]

describe('piece digests', () => {
  it('has its native addon in this build (npm ci compiles native/digest)', () => {
    expect(nativeDigestLoaded(), 'tresor-digest did not load: run "npm rebuild tresor-digest"').toBe(true)
    expect(createPieceDigester(randomBytes(32)).native).toBe(true)
    expect(createPieceDigester(randomBytes(32), false).native).toBe(false)
  })

  it('takes an addon built from older sources (a call missing) as no addon at all', () => {
    const built = createRequire(import.meta.url)('tresor-digest') as Record<string, unknown>
    expect(addonIsComplete(built)).toBe(true)
    const { scanBlocks: _gone, ...older } = built
    expect(addonIsComplete(older)).toBe(false)
    expect(addonIsComplete({ ...built, aesGcm: 'not a function' })).toBe(false)
  })

  it('gives the BLAKE3 reference keyed hash of the empty input', () => {
    // BLAKE3's published test vectors: key "whats the Elvish word for friend", input length 0
    const key = Buffer.from('whats the Elvish word for friend', 'ascii')
    for (const preferNative of [true, false]) {
      const ids = new Uint8Array(32)
      createPieceDigester(key, preferNative).digest(new Uint8Array(0), Uint32Array.of(0), 0, 1, ids, 0, null, 0)
      expect(Buffer.from(ids).toString('hex')).toBe('92b2b75604ed3c761f9d6f62392c8a9227ad0ea3f09573e783f1498a4ed60d26')
    }
  })

  it('equals independent BLAKE3 and XXH3 bindings and the fallback, piece by piece, at offsets', () => {
    const key = bytes(32, 7)
    const data = bytes(LENGTHS.reduce((a, b) => a + b, 0) + 100, 11)
    const ends = new Uint32Array(LENGTHS.length + 3)
    let at = 0
    LENGTHS.forEach((length, k) => (ends[3 + k] = at += length))
    const count = LENGTHS.length
    const results = [true, false].map((preferNative) => {
      const ids = new Uint8Array(5 + count * 32 + 7).fill(0xaa)
      const sums = new Uint8Array(9 + count * 16 + 4).fill(0xbb)
      createPieceDigester(key, preferNative).digest(data, ends, 3, count, ids, 5, sums, 9)
      // nothing written outside the pieces' places
      expect(ids.subarray(0, 5).every((b) => b === 0xaa) && ids.subarray(5 + count * 32).every((b) => b === 0xaa)).toBe(true)
      expect(sums.subarray(0, 9).every((b) => b === 0xbb) && sums.subarray(9 + count * 16).every((b) => b === 0xbb)).toBe(true)
      return { ids, sums }
    })
    let from = 0
    LENGTHS.forEach((length, k) => {
      const piece = data.subarray(from, from + length)
      from += length
      for (const { ids, sums } of results) {
        expect(Buffer.from(ids.subarray(5 + k * 32, 5 + (k + 1) * 32)).toString('hex'), `id of piece ${k} (${length} B)`).toBe(keyedBlake3(key, piece))
        expect(Buffer.from(sums.subarray(9 + k * 16, 9 + (k + 1) * 16)).toString('hex'), `sum of piece ${k} (${length} B)`).toBe(xxh128Hex(piece))
      }
    })
  })

  it('hashes pieces of shared memory and leaves sums alone when given none', () => {
    const key = bytes(32, 3)
    const shared = Buffer.from(new SharedArrayBuffer(70_000))
    bytes(70_000, 5).copy(shared)
    const ids = new Uint8Array(64)
    createPieceDigester(key).digest(shared, Uint32Array.of(30_000, 70_000), 0, 2, ids, 0, null, 0)
    expect(Buffer.from(ids.subarray(0, 32)).toString('hex')).toBe(keyedBlake3(key, shared.subarray(0, 30_000)))
    expect(Buffer.from(ids.subarray(32)).toString('hex')).toBe(keyedBlake3(key, shared.subarray(30_000)))
  })

  it('hashes many pieces side by side (the batched path) as BLAKE3 does, consecutive or anywhere', () => {
    // the addon batches when a call has 16 pieces or more of at most 16 chunks: chunk position by
    // position, then the parents level by level; every length class, many times over
    for (const seed of [1, 2, 3]) {
      const key = bytes(32, 40 + seed)
      const lengths: number[] = []
      for (let r = 0; r < 3; r++) lengths.push(...LENGTHS)
      const pick = bytes(400, 90 + seed)
      for (let i = 0; i < 100; i++) lengths.push(pick.readUInt16LE(2 * i) % 20_000)
      for (let i = 0; i < 20; i++) lengths.push(1024 * (1 + (pick[200 + i]! % 16)))
      const total = lengths.reduce((a, b) => a + b, 0)
      const data = bytes(total, 50 + seed)
      const count = lengths.length
      const ends = new Uint32Array(count)
      let at = 0
      lengths.forEach((length, k) => (ends[k] = at += length))
      // the same pieces in another order, apart and overlapping: start k from anywhere in the data
      const starts = new Uint32Array(count)
      const rangeEnds = new Uint32Array(count)
      lengths.forEach((length, k) => {
        starts[k] = (pick.readUInt32LE(240 + (k % 40) * 4) + k * 7919) % (total - length + 1)
        rangeEnds[k] = starts[k]! + length
      })
      for (const preferNative of [true, false]) {
        const d = createPieceDigester(key, preferNative)
        const ids = new Uint8Array(count * 32 + 32).fill(0xaa)
        const sums = new Uint8Array(count * 16 + 16).fill(0xbb)
        d.digest(data, ends, 0, count, ids, 0, sums, 0)
        const rangeIds = new Uint8Array(count * 32)
        const rangeSums = new Uint8Array(count * 16)
        d.ranges(data, starts, rangeEnds, 0, count, rangeIds, 0, rangeSums, 0)
        expect(ids.subarray(count * 32).every((b) => b === 0xaa) && sums.subarray(count * 16).every((b) => b === 0xbb)).toBe(true)
        let from = 0
        lengths.forEach((length, k) => {
          const piece = data.subarray(from, from + length)
          from += length
          const label = `${preferNative ? 'native' : 'fallback'}, seed ${seed}, piece ${k} (${length} B)`
          expect(Buffer.from(ids.subarray(k * 32, k * 32 + 32)).toString('hex'), label).toBe(keyedBlake3(key, piece))
          expect(Buffer.from(sums.subarray(k * 16, k * 16 + 16)).toString('hex'), label).toBe(xxh128Hex(piece))
          const ranged = data.subarray(starts[k]!, rangeEnds[k]!)
          expect(Buffer.from(rangeIds.subarray(k * 32, k * 32 + 32)).toString('hex'), `range: ${label}`).toBe(keyedBlake3(key, ranged))
          expect(Buffer.from(rangeSums.subarray(k * 16, k * 16 + 16)).toString('hex'), `range: ${label}`).toBe(xxh128Hex(ranged))
        })
      }
    }
  })

  it('batches pieces of one chunk, of two and of exactly sixteen (roots at every level)', () => {
    const key = bytes(32, 77)
    for (const length of [1, 1000, 1024, 2048, 3000, 16 * 1024]) {
      const count = 40
      const data = bytes(length * count, length)
      const ends = Uint32Array.from({ length: count }, (_, k) => (k + 1) * length)
      const ids = new Uint8Array(count * 32)
      createPieceDigester(key).digest(data, ends, 0, count, ids, 0, null, 0)
      for (let k = 0; k < count; k++) {
        expect(Buffer.from(ids.subarray(k * 32, k * 32 + 32)).toString('hex'), `${length} B, piece ${k}`).toBe(keyedBlake3(key, data.subarray(k * length, (k + 1) * length)))
      }
    }
  })

  it('rejects bad arguments before writing anything, natively and in the fallback', () => {
    const key = bytes(32, 1)
    const data = bytes(1000, 2)
    for (const preferNative of [true, false]) {
      const d = createPieceDigester(key, preferNative)
      const ids = new Uint8Array(96)
      const sums = new Uint8Array(48)
      // ends going backwards, past the data, or more pieces than ends / room
      expect(() => d.digest(data, Uint32Array.of(500, 400, 1000), 0, 3, ids, 0, sums, 0)).toThrow(RangeError)
      expect(() => d.digest(data, Uint32Array.of(500, 1001), 0, 2, ids, 0, sums, 0)).toThrow(RangeError)
      expect(() => d.digest(data, Uint32Array.of(500), 0, 2, ids, 0, sums, 0)).toThrow(RangeError)
      expect(() => d.digest(data, Uint32Array.of(100, 200, 300), 0, 3, ids, 1, sums, 0)).toThrow(RangeError)
      expect(() => d.digest(data, Uint32Array.of(100, 200, 300), 0, 3, ids, 0, sums, 1)).toThrow(RangeError)
      // ranges: a piece ending before it starts or past the data, fewer starts than pieces
      expect(() => d.ranges(data, Uint32Array.of(0, 600, 10), Uint32Array.of(100, 500, 20), 0, 3, ids, 0, sums, 0)).toThrow(RangeError)
      expect(() => d.ranges(data, Uint32Array.of(0, 900), Uint32Array.of(100, 1001), 0, 2, ids, 0, sums, 0)).toThrow(RangeError)
      expect(() => d.ranges(data, Uint32Array.of(0), Uint32Array.of(100, 200), 0, 2, ids, 0, sums, 0)).toThrow(RangeError)
      expect(() => d.ranges(data, Uint32Array.of(0, 0, 0), Uint32Array.of(1, 2, 3), 1, 3, ids, 0, sums, 0)).toThrow(RangeError)
      expect(ids.every((b) => b === 0) && sums.every((b) => b === 0)).toBe(true)
    }
    expect(() => createPieceDigester(new Uint8Array(31))).toThrow(/32 bytes/)
  })

  it('the addon checks its argument types itself', () => {
    const addon = createRequire(import.meta.url)('tresor-digest') as { digestPieces: (...args: unknown[]) => number }
    const key = new Uint8Array(32)
    const ids = new Uint8Array(32)
    expect(() => addon.digestPieces(key, [1, 2], Uint32Array.of(1), 0, 1, ids, 0, null, 0)).toThrow(TypeError)
    expect(() => addon.digestPieces(key, new Uint8Array(2), [1], 0, 1, ids, 0, null, 0)).toThrow(TypeError)
    expect(() => addon.digestPieces(key, new Uint8Array(2), Uint32Array.of(1), -1, 1, ids, 0, null, 0)).toThrow(RangeError)
    expect(() => addon.digestPieces(key, new Uint8Array(2), Uint32Array.of(1), 0.5, 1, ids, 0, null, 0)).toThrow(RangeError)
    expect(() => addon.digestPieces(key, new Uint8Array(2), Uint32Array.of(1), 0, 1, ids, 0, 'x', 0)).toThrow(TypeError)
    expect(() => addon.digestPieces(new Uint8Array(16), new Uint8Array(2), Uint32Array.of(1), 0, 1, ids, 0, null, 0)).toThrow(RangeError)
    expect(addon.digestPieces(key, new Uint8Array(2), Uint32Array.of(1), 0, 1, ids, 0, null, 0)).toBe(1)
    const ranges = (createRequire(import.meta.url)('tresor-digest') as { digestRanges: (...args: unknown[]) => number }).digestRanges
    expect(() => ranges(key, new Uint8Array(2), [0], Uint32Array.of(1), 0, 1, ids, 0, null, 0)).toThrow(TypeError)
    expect(() => ranges(key, new Uint8Array(2), Uint32Array.of(0), Uint32Array.of(1), 0.5, 1, ids, 0, null, 0)).toThrow(RangeError)
    expect(() => ranges(key, new Uint8Array(2), Uint32Array.of(0), Uint32Array.of(1), 0, 1, ids, 0, null)).toThrow(TypeError)
    expect(ranges(key, new Uint8Array(2), Uint32Array.of(1), Uint32Array.of(2), 0, 1, ids, 0, null, 0)).toBe(1)
  })
})
