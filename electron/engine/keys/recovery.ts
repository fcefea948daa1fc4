import { randomBytes } from 'node:crypto'
import { EngineError } from '../errors.js'
import { unwrapWithSecret, wrapWithSecret, type WrappedKey } from './wrap.js'

/**
 * The one-time recovery key: 23 random bytes (184 bits) plus a 2-byte checksum, written as 40
 * Crockford base32 characters in 8 groups of 5 (`7KQ2M-...`). Reading is forgiving: case, spaces,
 * dashes, and the look-alikes I/L (→ 1) and O (→ 0) are accepted; a typo is caught by the checksum
 * before any unlocking is tried. It has enough entropy to be used directly through HKDF.
 */
const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ'
const SECRET_BYTES = 23
const CHECK_BYTES = 2
const GROUP = 5

export interface RecoveryKey {
  /** What the user writes down. */
  text: string
  /** The secret bytes (no checksum). */
  secret: Buffer
}

export function generateRecoveryKey(): RecoveryKey {
  const secret = randomBytes(SECRET_BYTES)
  return { text: formatRecoveryKey(secret), secret }
}

export function formatRecoveryKey(secret: Buffer): string {
  const chars = base32Encode(Buffer.concat([secret, checksum(secret)]))
  const groups: string[] = []
  for (let i = 0; i < chars.length; i += GROUP) groups.push(chars.slice(i, i + GROUP))
  return groups.join('-')
}

/** Parses what the user typed. A wrong length, character or checksum → INVALID_INPUT. */
export function parseRecoveryKey(text: string): Buffer {
  const cleaned = text
    .toUpperCase()
    .replace(/[\s-]/g, '')
    .replace(/[IL]/g, '1')
    .replace(/O/g, '0')
  const mistyped = (why: string) =>
    new EngineError('INVALID_INPUT', `This is not a valid Tresor recovery key (${why}). Check it character by character: it has 8 groups of 5.`)
  const expectedChars = ((SECRET_BYTES + CHECK_BYTES) * 8) / 5
  if (cleaned.length !== expectedChars) throw mistyped(`${cleaned.length} characters instead of ${expectedChars}`)
  const bytes = base32Decode(cleaned)
  if (!bytes) throw mistyped('unknown character')
  const secret = bytes.subarray(0, SECRET_BYTES)
  if (!checksum(secret).equals(bytes.subarray(SECRET_BYTES))) throw mistyped('checksum mismatch: a character is wrong')
  return Buffer.from(secret)
}

/** Wraps the master key under the recovery key (the vault's second key slot). */
export function wrapWithRecoveryKey(masterKey: Buffer, key: RecoveryKey | string): Promise<WrappedKey> {
  const secret = typeof key === 'string' ? parseRecoveryKey(key) : key.secret
  return wrapWithSecret(masterKey, secret)
}

/** Opens the recovery slot. Mistyped → INVALID_INPUT; not this vault's key → WRONG_PASSPHRASE. */
export async function unwrapWithRecoveryKey(wrapped: unknown, text: string): Promise<Buffer> {
  const secret = parseRecoveryKey(text)
  if (wrapped === undefined || wrapped === null) {
    throw new EngineError('NOT_FOUND', 'This vault has no recovery key. Open it with its passphrase.')
  }
  const key = await unwrapWithSecret(wrapped, secret)
  if (!key) throw new EngineError('WRONG_PASSPHRASE', 'This recovery key does not unlock this vault (it belongs to another vault or was replaced).')
  return key
}

/**
 * CRC-16/CCITT (polynomial 0x1021) of the secret: unlike a truncated hash it detects every error
 * burst of up to 16 bits, so any single mistyped character (5 bits) is always caught.
 */
function checksum(secret: Buffer): Buffer {
  let crc = 0xffff
  for (const byte of secret) {
    crc ^= byte << 8
    for (let bit = 0; bit < 8; bit++) crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff
  }
  const out = Buffer.alloc(CHECK_BYTES)
  out.writeUInt16BE(crc)
  return out
}

function base32Encode(bytes: Buffer): string {
  let out = ''
  let acc = 0
  let bits = 0
  for (const byte of bytes) {
    acc = (acc << 8) | byte
    bits += 8
    while (bits >= 5) {
      bits -= 5
      out += ALPHABET[(acc >>> bits) & 31]
    }
    acc &= (1 << bits) - 1
  }
  if (bits > 0) out += ALPHABET[(acc << (5 - bits)) & 31]
  return out
}

function base32Decode(text: string): Buffer | undefined {
  const out: number[] = []
  let acc = 0
  let bits = 0
  for (const ch of text) {
    const value = ALPHABET.indexOf(ch)
    if (value < 0) return undefined
    acc = (acc << 5) | value
    bits += 5
    if (bits >= 8) {
      bits -= 8
      out.push((acc >>> bits) & 0xff)
    }
    acc &= (1 << bits) - 1
  }
  return Buffer.from(out)
}
