import { describe, expect, it } from 'vitest'
import { en } from '../../../renderer/src/i18n/en.js'
import { de } from '../../../renderer/src/i18n/de.js'
import { resolveLocale } from '../../../renderer/src/i18n/index.js'
import { formatBytes, formatTime, percent } from '../../../renderer/src/utils/format.js'

function keys(obj: unknown, prefix = ''): string[] {
  if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) return [prefix]
  return Object.entries(obj).flatMap(([k, v]) => keys(v, prefix ? `${prefix}.${k}` : k))
}

describe('i18n', () => {
  it('German has exactly the English keys, none empty', () => {
    expect(keys(de).sort()).toEqual(keys(en).sort())
    const values = (o: unknown): string[] => (typeof o === 'string' ? [o] : Object.values(o as object).flatMap(values))
    expect(values(de).filter((v) => v.trim() === '')).toEqual([])
  })

  it('resolves the system language', () => {
    expect(resolveLocale('system', 'de-AT')).toBe('de')
    expect(resolveLocale('system', 'fr-FR')).toBe('en')
    expect(resolveLocale('en', 'de-DE')).toBe('en')
    expect(resolveLocale('de', undefined)).toBe('de')
  })
})

describe('formatting', () => {
  it('formats bytes in binary units', () => {
    expect(formatBytes(0)).toBe('0 B')
    expect(formatBytes(1536)).toBe('1.5 KiB')
    expect(formatBytes(6 * 2 ** 30)).toBe('6 GiB')
    expect(formatBytes(-1)).toBe('—')
    expect(formatBytes(1536, 'de')).toBe('1,5 KiB')
  })

  it('formats times and percentages defensively', () => {
    expect(formatTime(null)).toBe('—')
    expect(formatTime('not a date', 'en', 'never')).toBe('never')
    expect(formatTime('2025-01-02T03:04:05.000Z')).toMatch(/2025/)
    expect(percent(5, 10)).toBe(50)
    expect(percent(5, 0)).toBe(0)
    expect(percent(20, 10)).toBe(100)
  })
})
