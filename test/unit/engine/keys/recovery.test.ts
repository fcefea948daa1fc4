import { describe, expect, it } from 'vitest'
import {
  formatRecoveryKey,
  generateRecoveryKey,
  parseRecoveryKey,
  unwrapWithRecoveryKey,
  wrapWithRecoveryKey,
} from '../../../../electron/engine/keys/recovery.js'
import { generateMasterKey } from '../../../../electron/engine/keys/wrap.js'
import { EngineError } from '../../../../electron/engine/errors.js'

function codeOf(fn: () => unknown): string {
  try {
    fn()
    return 'ok'
  } catch (err) {
    return err instanceof EngineError ? err.code : String(err)
  }
}

describe('recovery key', () => {
  it('is 8 groups of 5 base32 characters and parses back to its secret', () => {
    for (let i = 0; i < 50; i++) {
      const key = generateRecoveryKey()
      expect(key.text).toMatch(/^[0-9A-HJKMNP-TV-Z]{5}(-[0-9A-HJKMNP-TV-Z]{5}){7}$/)
      expect(parseRecoveryKey(key.text).equals(key.secret)).toBe(true)
    }
  })

  it('forgives case, spaces, missing dashes and look-alike letters', () => {
    const key = generateRecoveryKey()
    const sloppy = key.text.toLowerCase().replace(/-/g, ' ').replace(/1/g, 'l').replace(/0/g, 'o')
    expect(parseRecoveryKey(sloppy).equals(key.secret)).toBe(true)
    expect(parseRecoveryKey(key.text.replace(/-/g, '')).equals(key.secret)).toBe(true)
  })

  it('catches every single-character typo with the checksum (or the alphabet)', () => {
    for (let round = 0; round < 20; round++) checkTypos()
  })
  function checkTypos(): void {
    const key = generateRecoveryKey()
    const chars = key.text.replace(/-/g, '')
    let caught = 0
    let tried = 0
    for (let pos = 0; pos < chars.length; pos++) {
      const replacement = chars[pos] === 'Z' ? 'Y' : 'Z'
      const typo = chars.slice(0, pos) + replacement + chars.slice(pos + 1)
      tried++
      if (codeOf(() => parseRecoveryKey(typo)) === 'INVALID_INPUT') caught++
    }
    // CRC-16 catches every burst of up to 16 bits, so every single-character typo.
    expect(caught).toBe(tried)
    expect(codeOf(() => parseRecoveryKey(chars.slice(1)))).toBe('INVALID_INPUT')
    expect(codeOf(() => parseRecoveryKey(chars.slice(0, -1) + 'U'))).toBe('INVALID_INPUT')
  }

  it('unwraps the master key; another recovery key is WRONG_PASSPHRASE', async () => {
    const master = generateMasterKey()
    const key = generateRecoveryKey()
    const slot = await wrapWithRecoveryKey(master, key)
    expect((await unwrapWithRecoveryKey(slot, key.text)).equals(master)).toBe(true)
    const other = generateRecoveryKey()
    await expect(unwrapWithRecoveryKey(slot, other.text)).rejects.toMatchObject({ code: 'WRONG_PASSPHRASE' })
    await expect(unwrapWithRecoveryKey(undefined, key.text)).rejects.toMatchObject({ code: 'NOT_FOUND' })
    expect(formatRecoveryKey(key.secret)).toBe(key.text)
  })
})
