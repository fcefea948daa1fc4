/**
 * The whole product through the browser: in the web host (under a private gnome-keyring, so the vault
 * key is remembered as in a desktop session), create a vault, protect a machine whose disk is a
 * generated sparse raw image, back it up, restore the recovery point through the restore queue and
 * compare the restored image byte for byte (SHA-256) with the source. Screenshots of each step.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createHash, randomBytes } from 'node:crypto'
import { execFileSync } from 'node:child_process'
import { closeSync, mkdirSync, openSync, readdirSync, readFileSync, writeSync, ftruncateSync } from 'node:fs'
import { join } from 'node:path'
import type { Browser, Page } from 'playwright-core'
import { launchChromium, removeDir, requirePrerequisites, SCREENSHOT_DIR, startServe, tempDir, type Served } from '../helpers.js'

const MiB = 1024 * 1024
let work: string
let served: Served
let browser: Browser
let page: Page
let diskPath: string
let sourceSha: string

function sha256(file: string): string {
  return createHash('sha256').update(readFileSync(file)).digest('hex')
}

function requireKeyringTools(): void {
  for (const tool of ['dbus-run-session', 'gnome-keyring-daemon']) {
    try {
      execFileSync('sh', ['-c', `command -v ${tool}`], { stdio: 'ignore' })
    } catch {
      throw new Error(`${tool} is not installed: apt-get install dbus-x11 gnome-keyring (scripts/prereqs.sh does it).`)
    }
  }
}

beforeAll(async () => {
  requirePrerequisites()
  requireKeyringTools()
  mkdirSync(SCREENSHOT_DIR, { recursive: true })
  work = tempDir('tresor-e2e-roundtrip-')
  // 8 MiB sparse raw disk: data at 0 and at 5 MiB, a hole in between and at the end.
  diskPath = join(work, 'vms', 'e2e-vm.raw')
  mkdirSync(join(work, 'vms'))
  const fd = openSync(diskPath, 'w')
  ftruncateSync(fd, 8 * MiB)
  writeSync(fd, randomBytes(MiB), 0, MiB, 0)
  writeSync(fd, randomBytes(MiB / 2), 0, MiB / 2, 5 * MiB)
  closeSync(fd)
  sourceSha = sha256(diskPath)
  served = await startServe(join(work, 'home'), [], { withKeyring: true })
  browser = await launchChromium()
  page = await browser.newPage({ viewport: { width: 1360, height: 860 }, locale: 'en-US' })
  await page.goto(served.url)
  await page.getByTestId('view-dashboard').waitFor()
}, 120_000)

afterAll(async () => {
  await browser?.close()
  await served?.stop()
  if (work) removeDir(work)
})

async function openView(name: string): Promise<void> {
  await page.getByTestId(`nav-${name}`).click()
  await page.getByTestId(`view-${name}`).waitFor()
}

async function noticeText(): Promise<string> {
  const n = page.getByTestId('notice')
  return (await n.count()) ? (await n.allInnerTexts()).join(' | ') : ''
}

describe('back up and restore through the web UI', () => {
  it('creates a vault and remembers its key in the keychain', async () => {
    expect(await page.getByTestId('vault-status').innerText()).toBe('No vault')
    await openView('vault')
    await page.getByTestId('vault-folder').locator('input').fill(join(work, 'vault'))
    await page.getByTestId('vault-passphrase').locator('input').fill('correct horse battery staple')
    await page.getByTestId('vault-passphrase-repeat').locator('input').fill('correct horse battery staple')
    await page.getByTestId('vault-create').click()
    await expect.poll(async () => (await page.getByTestId('vault-status').innerText()) + (await noticeText()), { timeout: 60_000 }).toBe('Open')
    await page.screenshot({ path: join(SCREENSHOT_DIR, '20-roundtrip-vault.png'), fullPage: true })
  })

  it('protects a machine', async () => {
    await openView('machines')
    await page.getByTestId('add-machine').click()
    await page.getByTestId('machine-name').locator('input').fill('e2e-vm')
    await page.getByTestId('machine-disks').locator('textarea').fill(diskPath)
    await page.getByTestId('machine-submit').click()
    await expect.poll(async () => (await page.getByTestId('machines-table').innerText()) + (await noticeText())).toContain('e2e-vm')
    expect(await noticeText()).toBe('')
  })

  it('backs it up (a job process does the work, progress and outcome reach the page)', async () => {
    await page.getByTestId('backup-e2e-vm').click()
    await openView('jobs')
    const table = page.getByTestId('jobs-table')
    await expect.poll(async () => (await table.innerText()) + (await noticeText()), { timeout: 180_000, interval: 1000 }).toMatch(/Succeeded|Failed/)
    const text = await table.innerText()
    await page.screenshot({ path: join(SCREENSHOT_DIR, '21-roundtrip-backup-job.png'), fullPage: true })
    expect(text, text).toContain('Succeeded')
  })

  it('lists the recovery point and restores it through the queue', async () => {
    await openView('points')
    await expect.poll(() => page.getByTestId('points-table').innerText(), { timeout: 30_000 }).toContain('e2e-vm')
    await page.getByRole('button', { name: 'Restore…' }).first().click()
    await page.getByTestId('restore-target').locator('input').fill(join(work, 'restored'))
    await page.getByTestId('restore-submit').click()
    await openView('restoreQueue')
    const table = page.getByTestId('restore-queue-table')
    await expect.poll(async () => (await table.innerText()) + (await noticeText()), { timeout: 180_000, interval: 1000 }).toMatch(/Succeeded|Failed/)
    await page.screenshot({ path: join(SCREENSHOT_DIR, '22-roundtrip-restore-queue.png'), fullPage: true })
    const text = (await table.innerText()) + (await noticeText())
    expect(text, text).toContain('Succeeded')
  })

  it('verifies the vault with all data read, then applies retention and frees space, as jobs from the vault view', async () => {
    const rows = async (kind: string, state: string): Promise<number> => {
      // row by row (the state tag renders on a line of its own inside its cell)
      const texts = await page.getByTestId('jobs-table').locator('tbody tr').allInnerTexts()
      return texts.map((r) => ` ${r.replace(/\s+/g, ' ')} `).filter((r) => r.startsWith(` ${kind} `) && r.includes(` ${state} `)).length
    }
    await openView('jobs')
    // retention runs by itself after the backup: let that prune finish before counting
    await expect.poll(async () => (await rows('Prune', 'Queued')) + (await rows('Prune', 'Running')), { timeout: 120_000, interval: 500 }).toBe(0)
    const prunesBefore = await rows('Prune', 'Succeeded')
    await openView('vault')
    await page.getByTestId('vault-read-data').click()
    await page.getByTestId('vault-verify').click()
    await expect.poll(() => page.getByTestId('vault-maintenance').innerText()).toContain('Job started')
    await page.getByTestId('vault-prune').click()
    await openView('jobs')
    await expect.poll(async () => (await rows('Verify', 'Succeeded')) + (await rows('Verify', 'Failed')), { timeout: 180_000, interval: 1000 }).toBe(1)
    await expect.poll(async () => (await rows('Prune', 'Succeeded')) + (await rows('Prune', 'Failed')), { timeout: 180_000, interval: 1000 }).toBeGreaterThan(prunesBefore)
    await page.screenshot({ path: join(SCREENSHOT_DIR, '23-roundtrip-maintenance-jobs.png'), fullPage: true })
    const text = await page.getByTestId('jobs-table').innerText()
    expect(await rows('Verify', 'Succeeded'), text).toBe(1)
    expect(await rows('Prune', 'Failed'), text).toBe(0)
    expect(await rows('Prune', 'Succeeded'), text).toBe(prunesBefore + 1)
  })

  it('restored the image byte for byte', () => {
    const files = readdirSync(join(work, 'restored'))
    expect(files.filter((f) => f.endsWith('.partial'))).toEqual([])
    expect(files).toHaveLength(1)
    expect(sha256(join(work, 'restored', files[0]!))).toBe(sourceSha)
  })
})
