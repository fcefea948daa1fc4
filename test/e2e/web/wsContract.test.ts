/**
 * The web host's guard rails, exercised against the real `tresor serve` process: token, Origin and
 * Host checks on the WebSocket, static-file confinement, and malformed payloads answered with typed
 * errors (the process keeps serving). RELIABILITY.md #31 for the web host.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { request } from 'node:http'
import WebSocket from 'ws'
import { WireErrorSchema } from '../../../electron/shared/schemas.js'
import { removeDir, requirePrerequisites, seedCatalog, startServe, tempDir, type Served } from '../helpers.js'

let home: string
let served: Served

beforeAll(async () => {
  requirePrerequisites()
  home = tempDir('tresor-e2e-ws-')
  seedCatalog(home)
  served = await startServe(home)
})

afterAll(async () => {
  await served?.stop()
  if (home) removeDir(home)
})

function wsUrl(token: string | null): string {
  return `ws://127.0.0.1:${served.port}/ws${token === null ? '' : `?token=${encodeURIComponent(token)}`}`
}

/** Tries to open a socket; resolves with the HTTP status of a refused upgrade, or 101 when accepted. */
function handshake(url: string, headers: Record<string, string>): Promise<number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers })
    ws.once('unexpected-response', (_req, res) => {
      resolve(res.statusCode ?? 0)
      ws.terminate()
    })
    ws.once('open', () => {
      resolve(101)
      ws.close()
    })
    ws.once('error', (err) => {
      if (!/Unexpected server response/.test(String(err))) reject(err)
    })
  })
}

interface Client {
  ws: WebSocket
  frames: unknown[]
  call(method: string, input?: unknown): Promise<{ ok: boolean; value?: unknown; error?: { code: string; message: string } }>
  sendRaw(data: string | Buffer): void
  nextFrame(pred: (f: Record<string, unknown>) => boolean, timeoutMs?: number): Promise<Record<string, unknown>>
  closed: Promise<number>
}

async function connect(): Promise<Client> {
  const ws = new WebSocket(served.url.replace('http://', 'ws://').replace('/?token=', '/ws?token='), { headers: { Origin: served.origin } })
  const frames: Record<string, unknown>[] = []
  const waiters: { pred: (f: Record<string, unknown>) => boolean; resolve: (f: Record<string, unknown>) => void }[] = []
  ws.on('message', (data) => {
    const f = JSON.parse(data.toString()) as Record<string, unknown>
    frames.push(f)
    for (const w of [...waiters]) {
      if (w.pred(f)) {
        waiters.splice(waiters.indexOf(w), 1)
        w.resolve(f)
      }
    }
  })
  const closed = new Promise<number>((r) => ws.once('close', (code) => r(code)))
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve())
    ws.once('error', reject)
  })
  let nextId = 1
  const client: Client = {
    ws,
    frames,
    closed,
    nextFrame(pred, timeoutMs = 10_000) {
      const seen = frames.find(pred)
      if (seen) {
        frames.splice(frames.indexOf(seen), 1)
        return Promise.resolve(seen)
      }
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('no matching frame')), timeoutMs)
        waiters.push({
          pred,
          resolve: (f) => {
            clearTimeout(timer)
            frames.splice(frames.indexOf(f), 1)
            resolve(f)
          },
        })
      })
    },
    async call(method, input) {
      const id = nextId++
      ws.send(JSON.stringify({ t: 'call', id, method, input }))
      const f = await client.nextFrame((fr) => fr.t === 'result' && fr.id === id)
      return f.result as { ok: boolean; value?: unknown; error?: { code: string; message: string } }
    },
    sendRaw(data) {
      ws.send(data)
    },
  }
  await client.nextFrame((f) => f.t === 'hello')
  return client
}

function httpGet(path: string, host: string): Promise<{ status: number; body: string; headers: Record<string, string | string[] | undefined> }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port: served.port, path, method: 'GET', headers: { Host: host } }, (res) => {
      let body = ''
      res.on('data', (d: Buffer) => (body += d.toString()))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }))
    })
    req.on('error', reject)
    req.end()
  })
}

describe('web host access control', () => {
  it('accepts the right token from its own origin', async () => {
    expect(await handshake(wsUrl(served.token), { Origin: served.origin })).toBe(101)
    expect(await handshake(wsUrl(served.token), { Origin: `http://localhost:${served.port}` })).toBe(101)
  })

  it('refuses a wrong, missing or truncated token', async () => {
    expect(await handshake(wsUrl('wrong-token'), { Origin: served.origin })).toBe(401)
    expect(await handshake(wsUrl(null), { Origin: served.origin })).toBe(401)
    expect(await handshake(wsUrl(served.token.slice(0, -1)), { Origin: served.origin })).toBe(401)
    expect(await handshake(wsUrl(served.token + 'A'), { Origin: served.origin })).toBe(401)
  })

  it('refuses a foreign or missing Origin even with the right token', async () => {
    expect(await handshake(wsUrl(served.token), { Origin: 'http://evil.example' })).toBe(403)
    expect(await handshake(wsUrl(served.token), { Origin: `http://127.0.0.1:${served.port + 1}` })).toBe(403)
    expect(await handshake(wsUrl(served.token), { Origin: 'null' })).toBe(403)
    expect(await handshake(wsUrl(served.token), {})).toBe(403)
  })

  it('refuses a foreign Host header (DNS rebinding) on HTTP and WebSocket', async () => {
    expect((await httpGet('/', `evil.example:${served.port}`)).status).toBe(421)
    expect(await handshake(wsUrl(served.token), { Origin: served.origin, Host: `evil.example:${served.port}` })).toBe(403)
  })

  it('tells the page whether its token is valid (GET /session)', async () => {
    expect((await httpGet(`/session?token=${served.token}`, `127.0.0.1:${served.port}`)).status).toBe(204)
    expect((await httpGet('/session?token=nope', `127.0.0.1:${served.port}`)).status).toBe(401)
    expect((await httpGet('/session', `127.0.0.1:${served.port}`)).status).toBe(401)
    expect((await httpGet(`/session?token=${served.token}`, `evil.example:${served.port}`)).status).toBe(421)
  })

  it('serves the renderer with security headers and never a file outside it', async () => {
    const index = await httpGet('/', `127.0.0.1:${served.port}`)
    expect(index.status).toBe(200)
    expect(index.body).toContain('<div id="app">')
    // Not framable, no token in a Referer, no MIME sniffing, scripts only from itself.
    expect(index.headers['x-frame-options']).toBe('DENY')
    expect(index.headers['referrer-policy']).toBe('no-referrer')
    expect(index.headers['x-content-type-options']).toBe('nosniff')
    expect(String(index.headers['content-security-policy'])).toContain("frame-ancestors 'none'")
    expect(String(index.headers['content-security-policy'])).toContain("script-src 'self';")
    for (const path of ['/../package.json', '/..%2fpackage.json', '/%2e%2e/%2e%2e/etc/passwd', '/assets/../../package.json', '/%00']) {
      const res = await httpGet(path, `127.0.0.1:${served.port}`)
      expect(res.status, path).not.toBe(200)
      expect(res.body).not.toContain('"name": "tresor"')
    }
  })

  it('listens on 127.0.0.1 only', async () => {
    const { networkInterfaces } = await import('node:os')
    const external = Object.values(networkInterfaces())
      .flat()
      .find((i) => i && i.family === 'IPv4' && !i.internal)
    if (!external) {
      // No external interface on this machine: the bind address is visible in the printed URL instead.
      expect(new URL(served.url).hostname).toBe('127.0.0.1')
      return
    }
    const status = await new Promise<string>((resolve) => {
      const req = request({ host: external.address, port: served.port, path: '/', timeout: 3000 }, () => resolve('connected'))
      req.on('error', (e) => resolve((e as NodeJS.ErrnoException).code ?? 'error'))
      req.end()
    })
    expect(status).toBe('ECONNREFUSED')
  })
})

describe('web host contract over the WebSocket', () => {
  it('answers a valid call and pushes events to every page', async () => {
    const a = await connect()
    const b = await connect()
    const status = await a.call('getVaultStatus')
    expect(status.ok).toBe(true)
    expect(status.value).toMatchObject({ state: 'locked', vaultId: 'vault-e2e-0001', pointCount: 2 })
    const changed = await a.call('updateSettings', { maxParallelDisks: 3 })
    expect(changed.ok).toBe(true)
    const event = await b.nextFrame((f) => f.t === 'event' && f.event === 'settingsChanged')
    expect((event.payload as { maxParallelDisks: number }).maxParallelDisks).toBe(3)
    a.ws.close()
    b.ws.close()
  })

  const malformed: [string, string, unknown][] = [
    ['extra key', 'listMachines', { extra: 1 }],
    ['wrong type', 'removeMachine', { machineId: 42 }],
    ['missing field', 'removeMachine', {}],
    ['null input', 'removeMachine', null],
    ['array input', 'listJobs', []],
    ['string input', 'getSettings', 'x'],
    ['huge string', 'removeMachine', { machineId: 'x'.repeat(200_000) }],
    ['NUL in a path', 'addMachine', { name: 'vm', diskPaths: ['/vms/a\u0000b.qcow2'], policyId: null }],
    ['relative path', 'addMachine', { name: 'vm', diskPaths: ['vms/a.qcow2'], policyId: null }],
    ['dot-dot path', 'enqueueRestore', { pointId: 'p1', targetDir: '/srv/../etc', disk: null, format: 'raw' }],
    ['dot-dot id', 'cancelJob', { jobId: '../../etc/passwd' }],
    ['control chars in a name', 'savePolicy', { id: null, name: 'a\u0007b', spec: {} }],
    ['bad enum', 'updateSettings', { language: 'fr' }],
    ['out of range', 'updateSettings', { maxParallelDisks: 1e9 }],
    ['NaN-like', 'listJobs', { limit: 'Infinity' }],
    ['NUL in passphrase', 'unlockVault', { passphrase: 'a\u0000', storeInKeychain: false }],
    ['nested extra key', 'savePolicy', { id: null, name: 'p', spec: { schedule: { kind: 'daily', times: [], weekdays: [], staggerMinutes: 0, evil: 1 } } }],
  ]

  it.each(malformed)('rejects %s with INVALID_INPUT (%s)', async (_label, method, input) => {
    const c = await connect()
    const result = await c.call(method, input)
    expect(result.ok).toBe(false)
    expect(WireErrorSchema.safeParse(result.error).success).toBe(true)
    expect(result.error!.code).toBe('INVALID_INPUT')
    expect(result.error!.message.length).toBeLessThan(1000) // never echoes the huge value
    c.ws.close()
  })

  it('rejects __proto__ keys sent as raw JSON and leaves the settings untouched', async () => {
    const c = await connect()
    c.sendRaw('{"t":"call","id":900,"method":"updateSettings","input":{"__proto__":{"schedulesPaused":true}}}')
    const f = await c.nextFrame((fr) => fr.t === 'result' && fr.id === 900)
    expect((f.result as { ok: boolean; error: { code: string } }).error.code).toBe('INVALID_INPUT')
    const settings = await c.call('getSettings')
    expect((settings.value as { schedulesPaused: boolean }).schedulesPaused).toBe(false)
    c.ws.close()
  })

  it('rejects unknown and prototype method names', async () => {
    const c = await connect()
    for (const method of ['nope', 'constructor', '__proto__', 'toString', 'hasOwnProperty', 'dispose']) {
      const r = await c.call(method, {})
      expect(r.ok, method).toBe(false)
      expect(r.error!.code).toBe('INVALID_INPUT')
    }
    c.ws.close()
  })

  it('answers broken frames with a typed error frame', async () => {
    const c = await connect()
    c.sendRaw('this is not json')
    expect(((await c.nextFrame((f) => f.t === 'error')).error as { code: string }).code).toBe('INVALID_INPUT')
    c.sendRaw(JSON.stringify({ t: 'call', method: 'getSettings' })) // no id
    expect(((await c.nextFrame((f) => f.t === 'error')).error as { code: string }).code).toBe('INVALID_INPUT')
    c.sendRaw(JSON.stringify({ t: 'call', id: 77, method: 'getSettings', extra: true }))
    const r = await c.nextFrame((f) => f.t === 'result' && f.id === 77)
    expect((r.result as { error: { code: string } }).error.code).toBe('INVALID_INPUT')
    c.sendRaw(Buffer.from([1, 2, 3]))
    expect(((await c.nextFrame((f) => f.t === 'error')).error as { code: string }).code).toBe('INVALID_INPUT')
    c.ws.close()
  })

  it('closes a socket that sends an oversized frame (1009) and keeps serving others', async () => {
    const c = await connect()
    c.sendRaw(JSON.stringify({ t: 'call', id: 1, method: 'getSettings', input: { pad: 'x'.repeat(2 * 1024 * 1024) } }))
    expect(await c.closed).toBe(1009)
    const d = await connect()
    expect((await d.call('getAppInfo')).ok).toBe(true)
    d.ws.close()
  })

  it('answers host-only features with a typed UNSUPPORTED error', async () => {
    const c = await connect()
    const r = await c.call('chooseFiles', { purpose: 'disks' })
    expect(r.error?.code).toBe('UNSUPPORTED')
    const o = await c.call('openExternal', { url: 'https://example.com' })
    expect(o.error?.code).toBe('UNSUPPORTED')
    c.ws.close()
  })

  it('is still alive after all of the above', async () => {
    expect(served.child.exitCode).toBeNull()
    const c = await connect()
    expect((await c.call('listMachines')).ok).toBe(true)
    c.ws.close()
  })
})

describe('the page with a bad token', () => {
  it('shows that access was refused instead of data', async () => {
    const { launchChromium } = await import('../helpers.js')
    const browser = await launchChromium()
    try {
      const page = await browser.newPage()
      await page.goto(`${served.origin}/?token=not-the-token`)
      await page.getByTestId('connection-state').waitFor()
      await expect.poll(() => page.getByTestId('connection-state').innerText(), { timeout: 10_000 }).toContain('Access refused')
      expect(await page.getByTestId('machines-table').count()).toBe(0)
      expect(await page.getByTestId('stat-machines').innerText()).toContain('0')
    } finally {
      await browser.close()
    }
  })
})
