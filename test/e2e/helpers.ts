/**
 * Shared pieces of the e2e suites: a temporary TRESOR_HOME seeded through the real catalog module,
 * `tresor serve` as a child process, Debian's Chromium driven by playwright-core.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createInterface } from 'node:readline'
import { chromium, type Browser } from 'playwright-core'
import { openCatalog } from '../../electron/engine/catalog/index.js'
import { DEFAULT_POLICY_SPEC } from '../../electron/shared/models.js'

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
export const SCREENSHOT_DIR = join(ROOT, 'test-results', 'screenshots')
export const CHROMIUM = process.env.TRESOR_CHROMIUM ?? '/usr/bin/chromium'
export const CHROMIUM_FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
]

export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), prefix))
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true })
}

/** Fails (never skips) when a prerequisite is missing. */
export function requirePrerequisites(): void {
  if (!existsSync(CHROMIUM)) throw new Error(`Chromium not found at ${CHROMIUM}: install it (apt-get install chromium) or set TRESOR_CHROMIUM.`)
  const index = join(ROOT, 'dist', 'renderer', 'index.html')
  if (!existsSync(index)) throw new Error(`${index} is missing: build the renderer first (npm run build, or npx vite build -c vite.renderer.config.ts).`)
}

export async function launchChromium(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_FLAGS })
}

export interface Seed {
  vaultId: string
  vaultDir: string
  machineId: string
  machineName: string
  policyId: string
  policyName: string
  pointId: string
  jobIds: string[]
  queueItemId: string
}

/** Writes a small, realistic catalog: one vault, a machine with two disks, a policy, points, jobs, a queued restore. */
export function seedCatalog(home: string): Seed {
  const vaultDir = join(home, 'vault')
  mkdirSync(vaultDir, { recursive: true })
  const db = openCatalog(home)
  const now = Date.now()
  const iso = (minutesAgo: number) => new Date(now - minutesAgo * 60_000).toISOString()
  const seed: Seed = {
    vaultId: 'vault-e2e-0001',
    vaultDir,
    machineId: 'machine-e2e-web01',
    machineName: 'web01',
    policyId: 'policy-e2e-nightly',
    policyName: 'Nightly',
    pointId: 'point-e2e-0002',
    jobIds: ['job-e2e-1', 'job-e2e-2', 'job-e2e-3'],
    queueItemId: 'rq-e2e-1',
  }
  db.transaction(() => {
    db.prepare(`INSERT INTO vaults (id, path, backend, is_current, last_generation, added_at) VALUES (?, ?, 'local', 1, 7, ?)`).run(seed.vaultId, vaultDir, iso(600))
    db.prepare(`INSERT INTO policies (id, name, spec, created_at) VALUES (?, ?, ?, ?)`).run(seed.policyId, seed.policyName, JSON.stringify(DEFAULT_POLICY_SPEC), iso(600))
    db.prepare(`INSERT INTO machines (id, name, policy_id, source, source_path, created_at) VALUES (?, ?, ?, 'files', NULL, ?)`).run(seed.machineId, seed.machineName, seed.policyId, iso(590))
    db.prepare(`INSERT INTO machines (id, name, policy_id, source, source_path, created_at) VALUES ('machine-e2e-db02', 'db02', NULL, 'libvirt', '/etc/libvirt/qemu/db02.xml', ?)`).run(iso(580))
    db.prepare(`UPDATE machines SET protected_bytes = ? WHERE id = ?`).run(6 * 2 ** 30, seed.machineId)
    const disk = db.prepare(`INSERT INTO disks (id, machine_id, name, path, position, is_system, is_excluded, added_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`)
    disk.run('disk-e2e-1', seed.machineId, 'system.qcow2', '/var/lib/vms/web01/system.qcow2', 0, 1, 0, iso(590))
    disk.run('disk-e2e-2', seed.machineId, 'scratch.raw', '/var/lib/vms/web01/scratch.raw', 1, 0, 1, iso(590))
    disk.run('disk-e2e-3', 'machine-e2e-db02', 'db02.vhdx', '/var/lib/vms/db02/db02.vhdx', 0, 1, 0, iso(580))
    const point = db.prepare(
      `INSERT INTO points (id, vault_id, machine_id, machine_name, created_at, consistency, bytes_read, bytes_new, bytes_stored, summary) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    )
    const summary = JSON.stringify({ protectedBytes: 6 * 2 ** 30, disks: [{ name: 'system.qcow2', virtualSize: 20 * 2 ** 30 }] })
    point.run('point-e2e-0001', seed.vaultId, seed.machineId, seed.machineName, iso(1500), 'crash', 6 * 2 ** 30, 6 * 2 ** 30, 3 * 2 ** 30, summary)
    point.run(seed.pointId, seed.vaultId, seed.machineId, seed.machineName, iso(60), 'application', 2 ** 30, 200 * 2 ** 20, 90 * 2 ** 20, summary)
    const job = db.prepare(
      `INSERT INTO jobs (id, kind, state, machine_id, point_id, created_at, started_at, finished_at, bytes_done, bytes_total, error_code, error_message, log) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    )
    job.run(seed.jobIds[0], 'backup', 'succeeded', seed.machineId, 'point-e2e-0001', iso(1501), iso(1501), iso(1500), 6 * 2 ** 30, 6 * 2 ** 30, null, null, 'ok')
    job.run(seed.jobIds[1], 'backup', 'failed', 'machine-e2e-db02', null, iso(120), iso(120), iso(119), 0, 2 ** 30, 'SOURCE_LOCKED', '"db02.vhdx" is in use by a running virtual machine. Shut it down, then start the backup again.', '')
    job.run(seed.jobIds[2], 'backup', 'succeeded', seed.machineId, seed.pointId, iso(61), iso(61), iso(60), 2 ** 30, 2 ** 30, null, null, '')
    db.prepare(`INSERT INTO restore_queue (id, job_id, point_id, spec, position, state, created_at) VALUES (?, NULL, ?, ?, 0, 'queued', ?)`).run(
      seed.queueItemId,
      seed.pointId,
      JSON.stringify({ pointId: seed.pointId, mode: 'folder', targetPath: '/srv/restore/web01', disks: [], format: 'qcow2', overwrite: false }),
      iso(5),
    )
  })()
  db.close()
  return seed
}

export interface Served {
  url: string
  port: number
  token: string
  origin: string
  child: ChildProcess
  stderr(): string
  stop(): Promise<void>
}

/**
 * Starts `tresor serve --home <home>` (the real command) and resolves with the URL from its first
 * stdout line. By default the keychain is off (TRESOR_KEYCHAIN=none: tests never touch the developer's
 * real keychain); `withKeyring` runs it inside scripts/with-keyring.sh, a private gnome-keyring.
 */
export async function startServe(home: string, extraArgs: string[] = [], options: { withKeyring?: boolean } = {}): Promise<Served> {
  const tresor = [join(ROOT, 'bin', 'tresor.js'), 'serve', '--home', home, ...extraArgs]
  const [cmd, args] = options.withKeyring ? ['bash', [join(ROOT, 'scripts', 'with-keyring.sh'), process.execPath, ...tresor]] : [process.execPath, tresor]
  const env: NodeJS.ProcessEnv = { ...process.env, TRESOR_HOME: home }
  if (!options.withKeyring) env.TRESOR_KEYCHAIN = 'none'
  const child = spawn(cmd, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'], detached: true })
  let stderr = ''
  child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()))
  const firstLine = await new Promise<string>((resolve, reject) => {
    const rl = createInterface({ input: child.stdout! })
    const timer = setTimeout(() => reject(new Error(`tresor serve printed no URL within 60 s. stderr:\n${stderr}`)), 60_000)
    rl.once('line', (line) => {
      clearTimeout(timer)
      resolve(line)
    })
    child.once('exit', (code) => {
      clearTimeout(timer)
      reject(new Error(`tresor serve exited (${code}) before printing its URL. stderr:\n${stderr}`))
    })
  })
  const url = new URL(firstLine)
  return {
    url: firstLine,
    port: Number(url.port),
    token: url.searchParams.get('token') ?? '',
    origin: url.origin,
    child,
    stderr: () => stderr,
    async stop() {
      if (child.exitCode !== null) return
      const exited = new Promise<void>((r) => child.once('exit', () => r()))
      // The whole process group: with-keyring.sh's session bus and keyring daemon end with it.
      const signal = (s: NodeJS.Signals) => {
        try {
          process.kill(-child.pid!, s)
        } catch {
          child.kill(s)
        }
      }
      signal('SIGTERM')
      const timer = setTimeout(() => signal('SIGKILL'), 10_000)
      await exited
      clearTimeout(timer)
    },
  }
}
