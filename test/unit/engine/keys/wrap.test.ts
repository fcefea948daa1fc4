import { describe, expect, it } from 'vitest'
import {
  DEFAULT_SCRYPT,
  generateMasterKey,
  kdfProblem,
  unwrapWithPassphrase,
  wrapWithPassphrase,
  type WrappedKey,
} from '../../../../electron/engine/keys/wrap.js'
import { EngineError } from '../../../../electron/engine/errors.js'

// The cheapest parameters the reader accepts keep these tests fast; production uses DEFAULT_SCRYPT.
const FAST = { N: 2 ** 15, r: 8, p: 1 }

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p
    return 'resolved'
  } catch (err) {
    return err instanceof EngineError ? err.code : `non-engine: ${String(err)}`
  }
}

describe('passphrase wrapping', () => {
  it('round-trips the master key and stores the KDF parameters in the slot', async () => {
    const key = generateMasterKey()
    const slot = await wrapWithPassphrase(key, 'correct horse', FAST)
    expect(slot.kdf).toMatchObject({ name: 'scrypt', ...FAST })
    expect(JSON.stringify(slot)).not.toContain(key.toString('base64'))
    const back = await unwrapWithPassphrase(JSON.parse(JSON.stringify(slot)), 'correct horse')
    expect(back.equals(key)).toBe(true)
  })

  it('uses 2^17 scrypt by default', async () => {
    const slot = await wrapWithPassphrase(generateMasterKey(), 'x')
    expect(slot.kdf).toMatchObject({ name: 'scrypt', N: DEFAULT_SCRYPT.N, r: 8, p: 1 })
  })

  it('refuses a wrong passphrase with WRONG_PASSPHRASE', async () => {
    const slot = await wrapWithPassphrase(generateMasterKey(), 'right', FAST)
    expect(await codeOf(unwrapWithPassphrase(slot, 'wrong'))).toBe('WRONG_PASSPHRASE')
    expect(await codeOf(unwrapWithPassphrase(slot, 'right '))).toBe('WRONG_PASSPHRASE')
    expect(await codeOf(unwrapWithPassphrase(slot, ''))).toBe('WRONG_PASSPHRASE')
  })

  it('refuses an empty or blank passphrase at creation', async () => {
    expect(await codeOf(wrapWithPassphrase(generateMasterKey(), '', FAST))).toBe('INVALID_INPUT')
    expect(await codeOf(wrapWithPassphrase(generateMasterKey(), '  \t', FAST))).toBe('INVALID_INPUT')
  })

  it('normalises Unicode: NFC and NFD spellings unlock the same slot', async () => {
    const key = generateMasterKey()
    const nfd = 'Cre\u0301me bru\u0302le\u0301e'
    const nfc = nfd.normalize('NFC')
    expect(nfc).not.toBe(nfd)
    const slot = await wrapWithPassphrase(key, nfd, FAST)
    expect((await unwrapWithPassphrase(slot, nfc)).equals(key)).toBe(true)
    expect((await unwrapWithPassphrase(slot, nfd)).equals(key)).toBe(true)
  })

  it('accepts a 10,000-character passphrase', async () => {
    const key = generateMasterKey()
    const long = Array.from({ length: 10_000 }, (_, i) => String.fromCharCode(0x41 + (i % 26))).join('')
    const slot = await wrapWithPassphrase(key, long, FAST)
    expect((await unwrapWithPassphrase(slot, long)).equals(key)).toBe(true)
    expect(await codeOf(unwrapWithPassphrase(slot, long.slice(0, -1)))).toBe('WRONG_PASSPHRASE')
  })

  it('refuses absurd or downgraded KDF parameters before deriving anything', async () => {
    const slot = await wrapWithPassphrase(generateMasterKey(), 'pw', FAST)
    const variants: Record<string, unknown>[] = [
      { N: 2 ** 10 }, // downgrade
      { N: 2 ** 30 }, // memory exhaustion
      { N: 2 ** 16 + 1 }, // not a power of two
      { r: 1 },
      { r: 1_000_000 },
      { p: 1000 },
      { N: 'big' },
      { salt: '' },
      { name: 'pbkdf2' },
      { name: 'hkdf-sha256' },
    ]
    for (const change of variants) {
      const tampered = { ...slot, kdf: { ...slot.kdf, ...change } }
      const started = Date.now()
      expect(await codeOf(unwrapWithPassphrase(tampered, 'pw')), JSON.stringify(change)).toBe('VAULT_DAMAGED')
      expect(Date.now() - started).toBeLessThan(1000)
    }
    expect(await codeOf(unwrapWithPassphrase({ ...slot, cipher: 'none' }, 'pw'))).toBe('VAULT_DAMAGED')
    expect(await codeOf(unwrapWithPassphrase({ ...slot, v: 2 }, 'pw'))).toBe('VAULT_DAMAGED')
    expect(await codeOf(unwrapWithPassphrase(null, 'pw'))).toBe('VAULT_DAMAGED')
    expect(await codeOf(unwrapWithPassphrase({ ...slot, kind: 'recovery' }, 'pw'))).toBe('VAULT_DAMAGED')
  })

  it('binds the parameters: a valid but different N fails authentication instead of weakening the slot', async () => {
    const slot = await wrapWithPassphrase(generateMasterKey(), 'pw', { N: 2 ** 16, r: 8, p: 1 })
    const tampered: WrappedKey = { ...slot, kdf: { ...slot.kdf, N: 2 ** 15 } as WrappedKey['kdf'] }
    expect(await codeOf(unwrapWithPassphrase(tampered, 'pw'))).toBe('WRONG_PASSPHRASE')
  })

  it('detects any flipped bit in the slot', async () => {
    const slot = await wrapWithPassphrase(generateMasterKey(), 'pw', FAST)
    for (const field of ['nonce', 'ciphertext', 'tag'] as const) {
      const bytes = Buffer.from(slot[field], 'base64')
      bytes[0]! ^= 0x01
      expect(await codeOf(unwrapWithPassphrase({ ...slot, [field]: bytes.toString('base64') }, 'pw')), field).toBe('WRONG_PASSPHRASE')
    }
  })

  it('refuses parameters out of bounds when wrapping', async () => {
    expect(await codeOf(wrapWithPassphrase(generateMasterKey(), 'pw', { N: 2 ** 12, r: 8, p: 1 }))).toBe('INVALID_INPUT')
    expect(kdfProblem({ name: 'scrypt', ...DEFAULT_SCRYPT, salt: Buffer.alloc(32).toString('base64') })).toBeUndefined()
  })
})
