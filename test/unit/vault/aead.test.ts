/**
 * Records' AES-256-GCM (chunkCodec.ts `createRecordCipher`, native/digest/src/aead.c): the addon's
 * context per key writes the very bytes node:crypto and @ronomon/crypto-async write, opens what
 * they sealed and the other way round, keeps working across many calls in both directions with
 * one handle, refuses altered records without leaving plaintext behind, and checks its arguments
 * before writing anything.
 */
import { createRequire } from 'node:module'
import { createCipheriv, randomBytes } from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { ChunkCodec, createRecordCipher } from '../../../electron/engine/vault/chunkCodec.js'
import { NONCE_BYTES, SEAL_OVERHEAD, TAG_BYTES } from '../../../electron/engine/vault/crypto.js'

type Addon = typeof import('tresor-digest')
const addon = createRequire(import.meta.url)('tresor-digest') as Addon

/** A record of `body` the node:crypto way: nonce, ciphertext, tag. */
function nodeRecord(key: Buffer, nonce: Buffer, body: Buffer, aad: Buffer): Buffer {
  const c = createCipheriv('aes-256-gcm', key, nonce)
  c.setAAD(aad)
  const ct = Buffer.concat([c.update(body), c.final()])
  return Buffer.concat([nonce, ct, c.getAuthTag()])
}

const LENGTHS = [0, 1, 15, 16, 17, 1000, 8192, 65_536 + 5]

describe('record cipher', () => {
  it('seals as node:crypto does, natively and through @ronomon/crypto-async, and each opens the other', () => {
    const key = randomBytes(32)
    const native = createRecordCipher(key)
    const fallback = createRecordCipher(key, false)
    expect(native.native).toBe(true)
    expect(fallback.native).toBe(false)
    for (const length of LENGTHS) {
      for (const aadLength of [0, 40, 77]) {
        // views into larger buffers: @ronomon/crypto-async asserts on a buffer with no memory at all
        const body = randomBytes(length + 1).subarray(0, length)
        const aad = randomBytes(aadLength + 1).subarray(0, aadLength)
        const nonce = randomBytes(NONCE_BYTES)
        const expected = nodeRecord(key, nonce, body, aad)
        const records = [native, fallback].map((c) => {
          const out = Buffer.alloc(length + SEAL_OVERHEAD + 9, 0xee)
          nonce.copy(out)
          expect(c.seal(body, out, aad)).toBe(length)
          expect(out.subarray(length + SEAL_OVERHEAD).every((b) => b === 0xee)).toBe(true)
          return out.subarray(0, length + SEAL_OVERHEAD)
        })
        for (const record of records) expect(record.equals(expected), `${length} B, ${aadLength} B of aad`).toBe(true)
        for (const c of [native, fallback]) {
          const target = Buffer.alloc(length + 1).subarray(0, length)
          expect(c.open(expected, length, target, aad)).toBe(length)
          expect(target.equals(body)).toBe(true)
        }
      }
    }
  })

  it('keeps one context for many calls, sealing and opening in turn under fresh nonces', () => {
    const key = randomBytes(32)
    const native = createRecordCipher(key)
    const aad = randomBytes(40)
    for (let i = 0; i < 300; i++) {
      const body = randomBytes((i * 977) % 20_000)
      const nonce = randomBytes(NONCE_BYTES)
      const out = Buffer.alloc(body.length + SEAL_OVERHEAD)
      nonce.copy(out)
      native.seal(body, out, aad)
      expect(out.equals(nodeRecord(key, nonce, body, aad))).toBe(true)
      const back = Buffer.alloc(body.length)
      native.open(out, body.length, back, aad)
      expect(back.equals(body)).toBe(true)
    }
  })

  it('refuses an altered record, a wrong key or other associated data, and leaves no plaintext', () => {
    const key = randomBytes(32)
    const aad = randomBytes(40)
    const body = randomBytes(5000)
    const record = nodeRecord(key, randomBytes(NONCE_BYTES), body, aad)
    const cases: Array<[string, Buffer, Buffer, Buffer]> = []
    for (const at of [0, NONCE_BYTES, NONCE_BYTES + 2500, record.length - 1]) {
      const altered = Buffer.from(record)
      altered[at]! ^= 0x01
      cases.push([`byte ${at} flipped`, key, altered, aad])
    }
    const otherAad = Buffer.from(aad)
    otherAad[3]! ^= 0x80
    cases.push(['other associated data', key, record, otherAad], ['another key', randomBytes(32), record, aad])
    for (const [label, k, rec, a] of cases) {
      for (const c of [createRecordCipher(k), createRecordCipher(k, false)]) {
        const target = Buffer.alloc(body.length, 0x55)
        expect(() => c.open(rec, body.length, target, a), label).toThrow()
        if (c.native) expect(target.every((b) => b === 0), label).toBe(true)
      }
    }
    // the handle still works after a failure
    const target = Buffer.alloc(body.length)
    createRecordCipher(key).open(record, body.length, target, aad)
    expect(target.equals(body)).toBe(true)
  })

  it('a chunk record sealed with one cipher opens with the other (ChunkCodec, TRESOR_NO_NATIVE_DIGEST)', () => {
    const config = { dataKey: randomBytes(32), chunkIdKey: randomBytes(32), blockSize: 65_536, compressionLevel: 1 }
    const plain = Buffer.from('text that compresses well '.repeat(2000)).subarray(0, 40_000)
    const id = new ChunkCodec(config)['ids'].of(plain)
    const packId = randomBytes(16)
    const nativeCodec = new ChunkCodec(config)
    const out = Buffer.alloc(plain.length + SEAL_OVERHEAD)
    const sealed = nativeCodec.seal(plain, out, id, packId, 7)
    const before = process.env.TRESOR_NO_NATIVE_DIGEST
    process.env.TRESOR_NO_NATIVE_DIGEST = '1'
    let fallbackCodec: ChunkCodec
    try {
      fallbackCodec = new ChunkCodec(config)
    } finally {
      if (before === undefined) delete process.env.TRESOR_NO_NATIVE_DIGEST
      else process.env.TRESOR_NO_NATIVE_DIGEST = before
    }
    expect(fallbackCodec['cipher'].native).toBe(false)
    expect(nativeCodec['cipher'].native).toBe(true)
    const opened = fallbackCodec.open(out.subarray(0, sealed.storedLength), id, packId, 7, sealed.flags)
    expect(Buffer.isBuffer(opened) && opened.equals(plain)).toBe(true)
    const out2 = Buffer.alloc(plain.length + SEAL_OVERHEAD)
    const sealed2 = fallbackCodec.seal(plain, out2, id, packId, 8)
    const opened2 = nativeCodec.open(out2.subarray(0, sealed2.storedLength), id, packId, 8, sealed2.flags)
    expect(Buffer.isBuffer(opened2) && opened2.equals(plain)).toBe(true)
    // and the position is bound: the same record does not open as ordinal 9
    expect(nativeCodec.open(out2.subarray(0, sealed2.storedLength), id, packId, 9, sealed2.flags)).toMatch(/failed authentication/)
  })

  it('checks its arguments before writing anything', () => {
    expect(() => addon.aesGcmKey(new Uint8Array(16))).toThrow(RangeError)
    expect(() => (addon.aesGcmKey as (k: unknown) => unknown)([1, 2])).toThrow(TypeError)
    const keyBytes = randomBytes(32)
    const k = addon.aesGcmKey(keyBytes)
    const nonce = randomBytes(NONCE_BYTES)
    const src = randomBytes(100)
    const dst = Buffer.alloc(100)
    const tag = Buffer.alloc(TAG_BYTES)
    const aad = Buffer.alloc(0)
    const call = addon.aesGcm as (...args: unknown[]) => number
    expect(() => call({}, true, nonce, 0, src, 0, 100, dst, 0, aad, tag, 0)).toThrow(TypeError)
    expect(() => call(k, 1, nonce, 0, src, 0, 100, dst, 0, aad, tag, 0)).toThrow(TypeError)
    expect(() => call(k, true, nonce, 1, src, 0, 100, dst, 0, aad, tag, 0)).toThrow(RangeError)
    expect(() => call(k, true, nonce, 0, src, 1, 100, dst, 0, aad, tag, 0)).toThrow(RangeError)
    expect(() => call(k, true, nonce, 0, src, 0, 100, dst, 1, aad, tag, 0)).toThrow(RangeError)
    expect(() => call(k, true, nonce, 0, src, 0, 100, dst, 0, aad, tag, 1)).toThrow(RangeError)
    expect(() => call(k, true, nonce, 0, src, 0, -1, dst, 0, aad, tag, 0)).toThrow(RangeError)
    expect(() => call(k, true, nonce, 0, src, 0, 100, dst, 0, 'aad', tag, 0)).toThrow(TypeError)
    // source and target overlapping without being the same bytes
    const both = Buffer.alloc(200)
    expect(() => call(k, true, nonce, 0, both, 0, 100, both, 50, aad, tag, 0)).toThrow(RangeError)
    expect(dst.every((b) => b === 0) && tag.every((b) => b === 0) && both.every((b) => b === 0)).toBe(true)
    // in place is allowed
    const inPlace = Buffer.from(src)
    expect(call(k, true, nonce, 0, inPlace, 0, 100, inPlace, 0, aad, tag, 0)).toBe(100)
    const expected = nodeRecord(keyBytes, nonce, src, aad)
    expect(inPlace.equals(expected.subarray(NONCE_BYTES, NONCE_BYTES + 100)) && tag.equals(expected.subarray(NONCE_BYTES + 100))).toBe(true)
  })
})
