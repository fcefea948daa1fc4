import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto'
import { describe, expect, it, vi } from 'vitest'
import zstd from 'zstd-napi/binding.js'
import { ChunkCodec, FLAG_ZSTD, looksIncompressible } from '../../../electron/engine/vault/chunkCodec.js'
import { canonicalJson } from '../../../electron/engine/vault/config.js'
import { createBLAKE3 } from 'hash-wasm'
import { chunkAad, ChunkIdHasher, chunkIdOf, deriveKeys, NONCE_BYTES, TAG_BYTES } from '../../../electron/engine/vault/crypto.js'

const BS = 64 * 1024
const keys = deriveKeys(randomBytes(32), 'ab'.repeat(16))
const codec = new ChunkCodec({ dataKey: keys.data, chunkIdKey: keys.chunkId, blockSize: BS, compressionLevel: 3 })
const pack = randomBytes(16)

function seal(plain: Buffer, ordinal = 0) {
  const out = Buffer.alloc(BS + 28)
  const id = chunkIdOf(keys.chunkId, plain)
  const r = codec.seal(plain, out, id, pack, ordinal)
  return { rec: Buffer.from(out.subarray(0, r.storedLength)), id, flags: r.flags }
}

describe('chunk codec', () => {
  it('compresses text, stores random data raw, and opens both', () => {
    const text = Buffer.from('hello vault '.repeat(BS / 12 + 1)).subarray(0, BS)
    const rnd = randomBytes(BS)
    const a = seal(text)
    const b = seal(rnd)
    expect(a.flags).toBe(FLAG_ZSTD)
    expect(a.rec.length).toBeLessThan(BS / 10)
    expect(b.flags).toBe(0)
    expect(b.rec.length).toBe(BS + 28)
    expect(Buffer.from(codec.open(a.rec, a.id, pack, 0, a.flags) as Buffer)).toEqual(text)
    expect(Buffer.from(codec.open(b.rec, b.id, pack, 0, b.flags) as Buffer)).toEqual(rnd)
  })

  it('does not try zstd on a block that samples as random, and still compresses one that is only mostly random', () => {
    const compress = vi.spyOn(zstd.CCtx.prototype, 'compress2')
    try {
      const rnd = randomBytes(BS)
      expect(looksIncompressible(rnd)).toBe(true)
      const raw = seal(rnd)
      expect(compress).not.toHaveBeenCalled()
      expect(raw.flags).toBe(0)
      expect(Buffer.from(codec.open(raw.rec, raw.id, pack, 0, raw.flags) as Buffer)).toEqual(rnd)
      // a tenth of the block zeros: zstd is tried and saves about that tenth
      const mostly = Buffer.concat([Buffer.alloc(BS / 10), randomBytes(BS - BS / 10)])
      expect(looksIncompressible(mostly)).toBe(false)
      const packed = seal(mostly)
      expect(compress).toHaveBeenCalledTimes(1)
      expect(packed.flags).toBe(FLAG_ZSTD)
      expect(packed.rec.length).toBeLessThan(BS * 0.92)
      expect(Buffer.from(codec.open(packed.rec, packed.id, pack, 0, packed.flags) as Buffer)).toEqual(mostly)
      // small plaintexts (parts) are not sampled: zstd decides
      expect(looksIncompressible(randomBytes(8 * 1024))).toBe(false)
    } finally {
      compress.mockRestore()
    }
  })

  it("takes the caller's sampling verdict when it has one, and samples only without it", () => {
    const compress = vi.spyOn(zstd.CCtx.prototype, 'compress2')
    try {
      const text = Buffer.from('sampled once '.repeat(BS / 13 + 1)).subarray(0, BS)
      const out = Buffer.alloc(BS + 28)
      const id = chunkIdOf(keys.chunkId, text)
      // told it samples as random: stored as it is, zstd not tried
      const told = codec.seal(text, out, id, pack, 1, false, false, true)
      expect(told.flags).toBe(0)
      expect(compress).not.toHaveBeenCalled()
      expect(Buffer.from(codec.open(Buffer.from(out.subarray(0, told.storedLength)), id, pack, 1, told.flags) as Buffer)).toEqual(text)
      // told it does not, and not told: compressed alike
      const no = codec.seal(text, out, id, pack, 2, false, false, false)
      const asked = codec.seal(text, out, id, pack, 3, false, false, undefined)
      expect([no.flags, asked.flags]).toEqual([FLAG_ZSTD, FLAG_ZSTD])
      expect(no.storedLength).toBe(asked.storedLength)
      expect(compress).toHaveBeenCalledTimes(2)
    } finally {
      compress.mockRestore()
    }
  })

  it('reseal moves a record to a new pack and ordinal without recompressing: same length and flags, new nonce, opens only there', () => {
    const text = Buffer.from('moved chunk '.repeat(BS / 12 + 1)).subarray(0, BS - 100)
    const rnd = randomBytes(BS)
    const newPack = randomBytes(16)
    for (const plain of [text, rnd]) {
      const s = seal(plain, 3)
      const out = Buffer.alloc(s.rec.length)
      const r = codec.reseal(s.rec, s.id, pack, { ordinal: 3, flags: s.flags }, out, newPack, 9)
      if (typeof r === 'string') throw new Error(r)
      expect(r).toEqual({ storedLength: s.rec.length, flags: s.flags })
      expect(out.subarray(0, NONCE_BYTES).equals(s.rec.subarray(0, NONCE_BYTES))).toBe(false)
      expect(Buffer.from(codec.open(out, s.id, newPack, 9, s.flags) as Buffer)).toEqual(plain)
      expect(typeof codec.open(out, s.id, pack, 3, s.flags)).toBe('string')
      expect(typeof codec.open(out, s.id, newPack, 3, s.flags)).toBe('string')
    }
    // a record that does not open where it is said to be is refused, and nothing is sealed
    const s = seal(text, 3)
    const out = Buffer.alloc(s.rec.length)
    expect(codec.reseal(s.rec, s.id, pack, { ordinal: 4, flags: s.flags }, out, randomBytes(16), 0)).toMatch(/authentication/)
    const flipped = Buffer.from(s.rec)
    flipped[flipped.length >> 1]! ^= 1
    expect(codec.reseal(flipped, s.id, pack, { ordinal: 3, flags: s.flags }, out, randomBytes(16), 0)).toMatch(/authentication/)
    expect(codec.reseal(s.rec, randomBytes(32), pack, { ordinal: 3, flags: s.flags }, out, randomBytes(16), 0)).toEqual(expect.any(String))
  })

  it('checkResealed (I9 for moved records) accepts the record reseal wrote, and only at its new place with its bytes', () => {
    const text = Buffer.from('checked move '.repeat(BS / 13 + 1)).subarray(0, BS - 300)
    const newPack = randomBytes(16)
    for (const plain of [text, randomBytes(BS)]) {
      const s = seal(plain, 2)
      const out = Buffer.alloc(s.rec.length)
      const reseal = () => {
        const r = codec.reseal(s.rec, s.id, pack, { ordinal: 2, flags: s.flags }, out, newPack, 5)
        if (typeof r === 'string') throw new Error(r)
        return r
      }
      const r = reseal()
      expect(codec.checkResealed(out, s.id, newPack, 5, r.flags)).toBeUndefined()
      // each check consumes the reseal it checks
      expect(codec.checkResealed(out, s.id, newPack, 5, r.flags)).toMatch(/not resealed/)
      reseal()
      expect(codec.checkResealed(out, s.id, newPack, 6, r.flags)).toMatch(/authentication/)
      reseal()
      expect(codec.checkResealed(out, s.id, pack, 5, r.flags)).toMatch(/authentication/)
      reseal()
      expect(codec.checkResealed(out, randomBytes(32), newPack, 5, r.flags)).toMatch(/authentication/)
      reseal()
      const flipped = Buffer.from(out)
      flipped[NONCE_BYTES + 7]! ^= 0x20
      expect(codec.checkResealed(flipped, s.id, newPack, 5, r.flags)).toMatch(/authentication/)
      reseal()
      expect(codec.checkResealed(out.subarray(0, out.length - 1), s.id, newPack, 5, r.flags)).toMatch(/does not hold its body/)
      // an authentic record of other bytes at the same place: decrypts, but to another body
      const other = Buffer.from(plain)
      other[100]! ^= 1
      const o = Buffer.alloc(BS + 28)
      const ro = codec.seal(other, o, s.id, newPack, 5)
      reseal()
      expect(codec.checkResealed(o.subarray(0, ro.storedLength), s.id, newPack, 5, ro.flags)).toEqual(expect.any(String))
    }
  })

  it('binds chunk id, pack, ordinal and flags (I10), and detects every single flipped bit it is given', () => {
    const plain = Buffer.from('x'.repeat(5000))
    const s = seal(plain, 7)
    expect(typeof codec.open(s.rec, s.id, pack, 8, s.flags)).toBe('string')
    expect(typeof codec.open(s.rec, s.id, randomBytes(16), 7, s.flags)).toBe('string')
    expect(typeof codec.open(s.rec, randomBytes(32), pack, 7, s.flags)).toBe('string')
    expect(typeof codec.open(s.rec, s.id, pack, 7, s.flags ^ 1)).toBe('string')
    for (let bit = 0; bit < s.rec.length * 8; bit += 7) {
      const r = Buffer.from(s.rec)
      r[bit >> 3]! ^= 1 << (bit & 7)
      expect(typeof codec.open(r, s.id, pack, 7, s.flags)).toBe('string')
    }
  })

  it('writes records node:crypto reads, and reads records node:crypto writes (the FORMAT.md layout, not a library\'s)', () => {
    // stored raw (random data), so the ciphertext is the plaintext's encryption
    const rnd = randomBytes(BS)
    const s = seal(rnd, 3)
    expect(s.flags).toBe(0)
    const nonce = s.rec.subarray(0, NONCE_BYTES)
    const d = createDecipheriv('aes-256-gcm', keys.data, nonce)
    d.setAAD(chunkAad(pack, 3, 0, s.id))
    d.setAuthTag(s.rec.subarray(s.rec.length - TAG_BYTES))
    expect(Buffer.concat([d.update(s.rec.subarray(NONCE_BYTES, s.rec.length - TAG_BYTES)), d.final()])).toEqual(rnd)

    const other = randomBytes(BS)
    const id = chunkIdOf(keys.chunkId, other)
    const iv = randomBytes(NONCE_BYTES)
    const c = createCipheriv('aes-256-gcm', keys.data, iv)
    c.setAAD(chunkAad(pack, 9, 0, id))
    const rec = Buffer.concat([iv, c.update(other), c.final(), c.getAuthTag()])
    expect(Buffer.from(codec.open(rec, id, pack, 9, 0) as Buffer)).toEqual(other)
    rec[NONCE_BYTES + 5]! ^= 0x01
    expect(codec.open(rec, id, pack, 9, 0)).toMatch(/authentication/)
  })

  it("a whole block's frame is zstd's own for the vault's level (1 and 3), and at level 1 a part is compressed with the whole block's minimum match (6), not the small-input 5", () => {
    // text-like bytes: words of a small vocabulary with numbers, from a fixed seed
    const words = ['vault', 'block', 'record', 'pack', 'disk', 'point', 'index', 'table', 'part', 'seal']
    let seed = 12345
    const next = (): number => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 1)
    let text = ''
    while (text.length < BS) text += `${words[next() % words.length]} ${next() % 1000} `
    const block = Buffer.from(text).subarray(0, BS)
    const part = block.subarray(0, 8 * 1024)
    /** The zstd frame `codec` stores for `plain`, taken out of its record with node:crypto. */
    const bodyOf = (c: ChunkCodec, plain: Buffer, ordinal: number): Buffer => {
      const out = Buffer.alloc(BS + 28)
      const id = chunkIdOf(keys.chunkId, plain)
      const r = c.seal(plain, out, id, pack, ordinal)
      expect(r.flags).toBe(FLAG_ZSTD)
      const d = createDecipheriv('aes-256-gcm', keys.data, out.subarray(0, NONCE_BYTES))
      d.setAAD(chunkAad(pack, ordinal, r.flags, id))
      d.setAuthTag(out.subarray(r.storedLength - TAG_BYTES, r.storedLength))
      const body = Buffer.concat([d.update(out.subarray(NONCE_BYTES, r.storedLength - TAG_BYTES)), d.final()])
      expect(Buffer.from(c.open(Buffer.from(out.subarray(0, r.storedLength)), id, pack, ordinal, r.flags) as Buffer)).toEqual(plain)
      return body
    }
    /** zstd's frame at `level`, with its own parameters or with `minMatch` set. */
    const frame = (plain: Buffer, level: number, minMatch?: number): Buffer => {
      const c = new zstd.CCtx()
      const out = Buffer.alloc(zstd.compressBound(plain.length))
      if (minMatch === undefined) return Buffer.from(out.subarray(0, c.compress(out, plain, level)))
      c.setParameter(zstd.CParameter.compressionLevel, level)
      c.setParameter(zstd.CParameter.minMatch, minMatch)
      return Buffer.from(out.subarray(0, c.compress2(out, plain)))
    }
    const level1 = new ChunkCodec({ dataKey: keys.data, chunkIdKey: keys.chunkId, blockSize: BS, compressionLevel: 1 })
    expect(bodyOf(level1, block, 0)).toEqual(frame(block, 1))
    const partBody = bodyOf(level1, part, 1)
    expect(partBody).toEqual(frame(part, 1, 6))
    expect(partBody).not.toEqual(frame(part, 1))
    // level 3 (vaults made before 1.0): zstd's own parameters at every size
    expect(bodyOf(codec, block, 2)).toEqual(frame(block, 3))
    expect(bodyOf(codec, part, 3)).toEqual(frame(part, 3))
  })

  it('never repeats a nonce (10k seals)', () => {
    const seen = new Set<string>()
    const plain = randomBytes(100)
    for (let i = 0; i < 10_000; i++) seen.add(seal(plain, i).rec.subarray(0, NONCE_BYTES).toString('hex'))
    expect(seen.size).toBe(10_000)
  })

  it('a corrupting compressor is caught when the record is opened', () => {
    const bad = new ChunkCodec({ dataKey: keys.data, chunkIdKey: keys.chunkId, blockSize: BS, compressionLevel: 3, corruptCompressor: true })
    const plain = Buffer.from('compress me '.repeat(3000)).subarray(0, BS)
    const out = Buffer.alloc(BS + 28)
    const id = chunkIdOf(keys.chunkId, plain)
    const r = bad.seal(plain, out, id, pack, 0)
    expect(typeof codec.open(out.subarray(0, r.storedLength), id, pack, 0, r.flags)).toBe('string')
  })

  it('a reused chunk id hasher gives the keyed BLAKE3 of each input alone (checked against hash-wasm)', async () => {
    const other = deriveKeys(randomBytes(32), 'cd'.repeat(16))
    const a = new ChunkIdHasher(keys.chunkId)
    const b = new ChunkIdHasher(other.chunkId)
    const reference = async (key: Buffer, data: Uint8Array): Promise<string> => {
      const h = await createBLAKE3(256, key)
      h.init()
      h.update(data)
      return h.digest('hex')
    }
    const big = randomBytes(300_000)
    const inputs: Uint8Array[] = [Buffer.alloc(0), randomBytes(1), randomBytes(1024), randomBytes(1025), big.subarray(7, 7 + 131_072), new Uint8Array(big.buffer, big.byteOffset + 3, 65_537), randomBytes(BS)]
    for (const data of inputs) {
      const expected = await reference(keys.chunkId, data)
      expect(a.of(data).toString('hex')).toBe(expected)
      expect(chunkIdOf(keys.chunkId, data).toString('hex')).toBe(expected)
      expect(b.of(data).toString('hex')).toBe(await reference(other.chunkId, data))
      expect(chunkIdOf(other.chunkId, data).toString('hex')).not.toBe(expected)
    }
    expect(() => new ChunkIdHasher(randomBytes(16))).toThrow(/32 bytes/)
  })

  it('canonical JSON sorts keys at every level and drops undefined', () => {
    expect(canonicalJson({ b: 1, a: { d: [1, { z: 1, y: 2 }], c: undefined } })).toBe('{"a":{"d":[1,{"y":2,"z":1}]},"b":1}')
  })
})
