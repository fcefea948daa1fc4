/**
 * Records' AES-256-GCM (chunkCodec.ts `createRecordCipher`, native/digest/src/aead.c): every engine
 * this machine offers (the addon through Intel's ipsec-mb and through OpenSSL, a key schedule per
 * key; @ronomon/crypto-async) writes the very bytes node:crypto writes, opens what the others
 * sealed, keeps working across many calls in both directions with one handle, refuses altered
 * records without leaving plaintext behind, and checks its arguments before writing anything.
 * Where the CPU has what ipsec-mb's VAES code needs, the library must be there (CI installs it).
 */
import { createRequire } from 'node:module'
import { createCipheriv, randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { describe, expect, it } from 'vitest'
import { ChunkCodec, createRecordCipher } from '../../../electron/engine/vault/chunkCodec.js'
import { NONCE_BYTES, SEAL_OVERHEAD, TAG_BYTES } from '../../../electron/engine/vault/crypto.js'
import { cipherEngines, nativeDigestState } from '../../../electron/engine/vault/pieceDigests.js'

type Addon = typeof import('tresor-digest')
const addon = createRequire(import.meta.url)('tresor-digest') as Addon

/** A record of `body` the node:crypto way: nonce, ciphertext, tag. */
function nodeRecord(key: Buffer, nonce: Buffer, body: Buffer, aad: Buffer): Buffer {
  const c = createCipheriv('aes-256-gcm', key, nonce)
  c.setAAD(aad)
  const ct = Buffer.concat([c.update(body), c.final()])
  return Buffer.concat([nonce, ct, c.getAuthTag()])
}

const LENGTHS = [0, 1, 15, 16, 17, 255, 256, 257, 1000, 8192, 65_536 + 5]

/** The CPU flags (Linux's names) ipsec-mb 1.3 wants for its VAES AES-GCM (IMB_CPUFLAGS_AVX512_T2). */
const VAES_FLAGS = ['aes', 'pclmulqdq', 'sse4_2', 'cmov', 'avx', 'avx2', 'bmi2', 'avx512f', 'avx512dq', 'avx512cd', 'avx512bw', 'avx512vl', 'vaes', 'vpclmulqdq', 'gfni', 'avx512ifma', 'sha_ni']

function cpuHasVaesGcm(): boolean {
  if (process.platform !== 'linux' || process.arch !== 'x64') return false
  const flags = new Set(/^flags\s*:(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim().split(/\s+/) ?? [])
  return VAES_FLAGS.every((f) => flags.has(f))
}

const ENGINES = cipherEngines()

describe('record cipher', () => {
  it('offers ipsec-mb wherever the CPU runs its VAES code, fastest first, and TRESOR_NO_IPSEC_MB turns it off', () => {
    expect(ENGINES.at(-1)).toBe('ronomon')
    expect(ENGINES).toContain('openssl')
    expect(addon.aesGcmEngines().at(-1)).toBe('openssl')
    if (cpuHasVaesGcm()) {
      // a missing libipsec-mb1 here is a failure, not a quiet fall back to the slower engine
      expect(ENGINES[0]).toBe('ipsec-mb')
      expect(nativeDigestState().cipher).toBe('native, ipsec-mb (VAES), a schedule per key')
    } else {
      expect(ENGINES[0]).toBe('openssl')
    }
    process.env.TRESOR_NO_IPSEC_MB = '1'
    try {
      expect(cipherEngines()).toEqual(['openssl', 'ronomon'])
      expect(nativeDigestState().cipher).toBe('native, a context per key')
      expect(new ChunkCodec({ dataKey: randomBytes(32), chunkIdKey: randomBytes(32), blockSize: 65_536, compressionLevel: 1 })['cipher'].engine).toBe('openssl')
    } finally {
      delete process.env.TRESOR_NO_IPSEC_MB
    }
  })

  it('seals as node:crypto does through every engine, and each opens what the others sealed', () => {
    const key = randomBytes(32)
    const ciphers = ENGINES.map((e) => createRecordCipher(key, e))
    expect(ciphers.map((c) => c.engine)).toEqual(ENGINES)
    for (const length of LENGTHS) {
      for (const aadLength of [0, 40, 77]) {
        // views into larger buffers: @ronomon/crypto-async asserts on a buffer with no memory at all
        const body = randomBytes(length + 1).subarray(0, length)
        const aad = randomBytes(aadLength + 1).subarray(0, aadLength)
        const nonce = randomBytes(NONCE_BYTES)
        const expected = nodeRecord(key, nonce, body, aad)
        const records = ciphers.map((c) => {
          const out = Buffer.alloc(length + SEAL_OVERHEAD + 9, 0xee)
          nonce.copy(out)
          expect(c.seal(body, out, aad)).toBe(length)
          expect(out.subarray(length + SEAL_OVERHEAD).every((b) => b === 0xee)).toBe(true)
          return out.subarray(0, length + SEAL_OVERHEAD)
        })
        for (const [i, record] of records.entries()) expect(record.equals(expected), `${ENGINES[i]}: ${length} B, ${aadLength} B of aad`).toBe(true)
        for (const c of ciphers) {
          const target = Buffer.alloc(length + 1).subarray(0, length)
          expect(c.open(expected, length, target, aad)).toBe(length)
          expect(target.equals(body)).toBe(true)
        }
      }
    }
  })

  it.each(ENGINES.filter((e) => e !== 'ronomon'))('%s keeps one key schedule for many calls, sealing and opening in turn under fresh nonces', (engine) => {
    const key = randomBytes(32)
    const native = createRecordCipher(key, engine)
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
      for (const engine of ENGINES) {
        const c = createRecordCipher(k, engine)
        const target = Buffer.alloc(body.length, 0x55)
        expect(() => c.open(rec, body.length, target, a), `${engine}: ${label}`).toThrow()
        if (engine !== 'ronomon') expect(target.every((b) => b === 0), `${engine}: ${label}`).toBe(true)
        // in place too: the ciphertext decrypted where it lies is zeroed
        if (engine !== 'ronomon') {
          const copy = Buffer.from(rec)
          expect(() => c.open(copy, body.length, copy.subarray(NONCE_BYTES, NONCE_BYTES + body.length), a)).toThrow(/tag does not match/)
          expect(copy.subarray(NONCE_BYTES, NONCE_BYTES + body.length).every((b) => b === 0), `${engine} in place: ${label}`).toBe(true)
        }
      }
    }
    // each handle still works after a failure
    for (const engine of ENGINES) {
      const c = createRecordCipher(key, engine)
      expect(() => c.open(cases[0]![2], body.length, Buffer.alloc(body.length), aad)).toThrow()
      const target = Buffer.alloc(body.length)
      c.open(record, body.length, target, aad)
      expect(target.equals(body), engine).toBe(true)
    }
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
    expect(fallbackCodec['cipher'].engine).toBe('ronomon')
    expect(nativeCodec['cipher'].engine).toBe(ENGINES[0])
    const opened = fallbackCodec.open(out.subarray(0, sealed.storedLength), id, packId, 7, sealed.flags)
    expect(Buffer.isBuffer(opened) && opened.equals(plain)).toBe(true)
    const out2 = Buffer.alloc(plain.length + SEAL_OVERHEAD)
    const sealed2 = fallbackCodec.seal(plain, out2, id, packId, 8)
    const opened2 = nativeCodec.open(out2.subarray(0, sealed2.storedLength), id, packId, 8, sealed2.flags)
    expect(Buffer.isBuffer(opened2) && opened2.equals(plain)).toBe(true)
    // and the position is bound: the same record does not open as ordinal 9
    expect(nativeCodec.open(out2.subarray(0, sealed2.storedLength), id, packId, 9, sealed2.flags)).toMatch(/failed authentication/)
  })

  it('refuses an engine it does not offer', () => {
    const key = randomBytes(32)
    const makeKey = addon.aesGcmKey as (k: unknown, e?: unknown) => unknown
    expect(() => makeKey(key, 'chacha')).toThrow(RangeError)
    expect(() => makeKey(key, 'ipsec-mb-and-more')).toThrow(RangeError)
    expect(() => makeKey(key, 5)).toThrow(TypeError)
    if (!addon.aesGcmEngines().includes('ipsec-mb')) expect(() => makeKey(key, 'ipsec-mb')).toThrow(RangeError)
    expect(makeKey(key, undefined)).toBeTruthy()
  })

  it('seals and opens arrays with no memory behind them (no bytes, no associated data)', () => {
    const key = randomBytes(32)
    const nonce = randomBytes(NONCE_BYTES)
    const expected = nodeRecord(key, nonce, Buffer.alloc(0), Buffer.alloc(0))
    for (const engine of addon.aesGcmEngines()) {
      const k = addon.aesGcmKey(key, engine)
      const tag = new Uint8Array(TAG_BYTES)
      expect(addon.aesGcm(k, true, nonce, 0, new Uint8Array(0), 0, 0, new Uint8Array(0), 0, new Uint8Array(0), tag, 0)).toBe(0)
      expect(Buffer.from(tag).equals(expected.subarray(NONCE_BYTES)), engine).toBe(true)
      expect(addon.aesGcm(k, false, nonce, 0, new Uint8Array(0), 0, 0, new Uint8Array(0), 0, new Uint8Array(0), tag, 0)).toBe(0)
      tag[0]! ^= 1
      expect(() => addon.aesGcm(k, false, nonce, 0, new Uint8Array(0), 0, 0, new Uint8Array(0), 0, new Uint8Array(0), tag, 0)).toThrow(/tag does not match/)
    }
  })

  it.each(['ipsec-mb', 'openssl'] as const)('%s checks its arguments before writing anything', (engine) => {
    if (!addon.aesGcmEngines().includes(engine)) {
      // only where the CPU lacks VAES (the first test fails where it has it and the library is missing)
      expect(cpuHasVaesGcm()).toBe(false)
      return
    }
    expect(() => addon.aesGcmKey(new Uint8Array(16), engine)).toThrow(RangeError)
    expect(() => (addon.aesGcmKey as (k: unknown, e: unknown) => unknown)([1, 2], engine)).toThrow(TypeError)
    const keyBytes = randomBytes(32)
    const k = addon.aesGcmKey(keyBytes, engine)
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
