import { describe, expect, it } from 'vitest'
import { readFileSync } from 'node:fs'
import {
  APP_CONTENT_SECURITY_POLICY,
  SECURE_WEB_PREFERENCES,
  isAllowedExternalUrl,
  isSameAppPage,
  isTrustedSender,
} from '../../../electron/main/security.js'

describe('Electron window hardening (RELIABILITY #30)', () => {
  it('uses isolated, sandboxed webPreferences without Node or <webview>', () => {
    expect(SECURE_WEB_PREFERENCES).toMatchObject({
      contextIsolation: true,
      sandbox: true,
      nodeIntegration: false,
      nodeIntegrationInWorker: false,
      nodeIntegrationInSubFrames: false,
      webviewTag: false,
      webSecurity: true,
      allowRunningInsecureContent: false,
      experimentalFeatures: false,
    })
  })

  it('creates every window with those preferences and with the hardening handlers', () => {
    const src = readFileSync(new URL('../../../electron/main/window.ts', import.meta.url), 'utf8')
    expect(src).toContain('webPreferences: { ...SECURE_WEB_PREFERENCES, preload: options.preload }')
    for (const hook of ['setWindowOpenHandler', "'will-navigate'", "'will-attach-webview'", 'setPermissionRequestHandler', 'setPermissionCheckHandler']) {
      expect(src).toContain(hook)
    }
    expect(src).not.toMatch(/nodeIntegration:\s*true|contextIsolation:\s*false|sandbox:\s*false|webviewTag:\s*true/)
  })

  it('serves a strict CSP with the page (header) and in index.html (meta)', () => {
    expect(APP_CONTENT_SECURITY_POLICY).toContain("script-src 'self'")
    expect(APP_CONTENT_SECURITY_POLICY).not.toMatch(/script-src[^;]*unsafe/)
    const html = readFileSync(new URL('../../../renderer/index.html', import.meta.url), 'utf8')
    const meta = /http-equiv="Content-Security-Policy"\s+content="([^"]+)"/.exec(html)?.[1] ?? ''
    expect(meta).toContain("script-src 'self'")
    expect(meta).not.toMatch(/script-src[^;]*unsafe/)
    expect(meta).toContain("object-src 'none'")
  })
})

describe('shell.openExternal allow-list (RELIABILITY #32)', () => {
  it('opens only https URLs on allow-listed hosts', () => {
    expect(isAllowedExternalUrl('https://github.com/tresor/tresor/issues')).toBe(true)
    expect(isAllowedExternalUrl('https://GITHUB.com/x')).toBe(true)
  })

  it.each([
    'file:///etc/passwd',
    'smb://attacker/share',
    'javascript:alert(1)',
    'data:text/html,<script>1</script>',
    'vbscript:msgbox',
    'ms-msdt:/id PCWDiagnostic',
    'tresor://open',
    'http://github.com/',
    'https://github.com.evil.example/',
    'https://evil.example/#github.com',
    'https://evil.example/?u=https://github.com',
    'https://github.com@evil.example/',
    'https://user:pw@github.com/',
    'https://github.com:8443/',
    'https://xn--gthub-n4a.com/',
    'https://gíthub.com/',
    'https://140.82.121.4/',
    ' https://github.com/',
    'https://github.com/\nfoo',
    'https:\\\\github.com\\',
    '//github.com/',
    '',
    'x'.repeat(5000),
  ])('refuses %s', (url) => {
    expect(isAllowedExternalUrl(url)).toBe(false)
  })

  it('refuses non-strings', () => {
    for (const v of [null, undefined, 42, {}, ['https://github.com/']]) expect(isAllowedExternalUrl(v)).toBe(false)
  })
})

describe('IPC sender check (RELIABILITY #31)', () => {
  it('trusts only the top frame of our own page', () => {
    expect(isTrustedSender({ url: 'app://tresor/index.html#/jobs', isMainFrame: true })).toBe(true)
    expect(isTrustedSender({ url: 'app://tresor/index.html', isMainFrame: false })).toBe(false)
    for (const url of ['about:blank', 'https://evil.example/', 'file:///index.html', 'app://evil/index.html', 'http://127.0.0.1:5173/', 'data:text/html,x', 'not a url']) {
      expect(isTrustedSender({ url, isMainFrame: true }), url).toBe(false)
    }
    expect(isTrustedSender(null)).toBe(false)
    expect(isTrustedSender({ url: 'http://127.0.0.1:5173/', isMainFrame: true }, 'http://127.0.0.1:5173')).toBe(true)
  })

  it('lets the page change hash routes but not navigate elsewhere', () => {
    expect(isSameAppPage('app://tresor/index.html#/machines')).toBe(true)
    for (const url of ['https://example.com/', 'app://tresor/other.html', 'file:///etc/passwd', 'app://evil/index.html']) expect(isSameAppPage(url)).toBe(false)
  })
})
