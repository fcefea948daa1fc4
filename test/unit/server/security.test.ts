import { describe, expect, it } from 'vitest'
import { contentSecurityPolicy, hostAllowed, newToken, originAllowed, tokenMatches } from '../../../electron/server/security.js'

describe('web host request checks', () => {
  it('makes fresh 256-bit tokens', () => {
    const a = newToken()
    expect(a).toMatch(/^[A-Za-z0-9_-]{43}$/)
    expect(newToken()).not.toBe(a)
  })

  it('matches the token exactly', () => {
    const t = newToken()
    expect(tokenMatches(t, t)).toBe(true)
    for (const bad of [null, undefined, '', t.slice(1), t + 'x', t.toUpperCase() === t ? t.toLowerCase() : t.toUpperCase(), 'x'.repeat(10_000)]) {
      expect(tokenMatches(t, bad)).toBe(false)
    }
  })

  it('allows only its own host names and origin', () => {
    expect(hostAllowed('127.0.0.1:8080', 8080)).toBe(true)
    expect(hostAllowed('localhost:8080', 8080)).toBe(true)
    for (const h of [undefined, '127.0.0.1', '127.0.0.1:8081', 'evil.example:8080', '127.0.0.1.evil.example:8080', '[::1]:8080']) expect(hostAllowed(h, 8080)).toBe(false)
    expect(originAllowed('http://127.0.0.1:8080', 8080)).toBe(true)
    for (const o of [undefined, 'null', 'https://127.0.0.1:8080', 'http://127.0.0.1:8081', 'http://evil.example', 'http://127.0.0.1:8080.evil.example', 'file://']) {
      expect(originAllowed(o, 8080)).toBe(false)
    }
  })

  it('sends a CSP without inline or eval scripts and without framing', () => {
    const csp = contentSecurityPolicy(8080)
    expect(csp).toContain("script-src 'self'")
    expect(csp).not.toMatch(/script-src[^;]*unsafe/)
    expect(csp).toContain("frame-ancestors 'none'")
    expect(csp).toContain("object-src 'none'")
  })
})
