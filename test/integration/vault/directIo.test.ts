/**
 * Pack files bypass the page cache (pack.ts, vaultFs.ts): a backup stages records in aligned memory
 * and writes aligned pieces with O_DIRECT, restores and verify read them back the same way. Checked
 * with util-linux `fincore` (a file's cached bytes); the content must come back exactly, with direct
 * I/O on and with it turned off (TRESOR_NO_DIRECT_IO=1: everything through the page cache).
 */
import { afterEach, describe, expect, it } from 'vitest'
import { readdir, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { backUp, BLOCK, makeBlock, newVault, restoreDisk, tempDir } from './helpers.js'
import { run } from '../../helpers/qemu.js'

const cleanups: Array<() => Promise<void>> = []
afterEach(async () => {
  delete process.env.TRESOR_NO_DIRECT_IO
  for (const c of cleanups.splice(0).reverse()) await c()
})

async function packFiles(vaultDir: string): Promise<string[]> {
  const out: string[] = []
  for (const sub of await readdir(join(vaultDir, 'packs'))) {
    for (const f of await readdir(join(vaultDir, 'packs', sub))) out.push(join(vaultDir, 'packs', sub, f))
  }
  return out
}

/** Cached bytes of each file, from `fincore`. */
async function cachedBytes(files: string[]): Promise<number> {
  const r = await run('fincore', ['--bytes', '--noheadings', '--raw', '--output', 'RES', ...files])
  expect(r.code, r.stderr).toBe(0)
  return r.stdout.trim().split('\n').reduce((s, line) => s + Number(line), 0)
}

/** 24 MiB of blocks (a fifth of them text, the rest incompressible), in 8 MiB packs; returns what was stored and the pack sizes. */
async function storeAndCheck(root: string): Promise<{ packBytes: number; cached: number }> {
  const { vault, dir } = await newVault(root, { workers: 2 }, { packTargetBytes: 8 * 1024 * 1024 })
  cleanups.push(() => vault.close())
  const blocks: Buffer[] = []
  for (let i = 0; i < 24 * 16; i++) blocks.push(makeBlock(1000 + i, i % 5 === 0 ? 'text' : 'random'))
  blocks.push(makeBlock(7, 'random', BLOCK - 333)) // a short last block: records of odd lengths
  const point = await backUp(vault, [{ name: 'disk0.raw', blocks }])
  const packs = await packFiles(dir)
  expect(packs.length).toBeGreaterThanOrEqual(3)
  let packBytes = 0
  for (const p of packs) packBytes += (await stat(p)).size
  const cached = await cachedBytes(packs)
  const back = await restoreDisk(vault, point.id, 0)
  expect(back.length).toBe(blocks.length)
  back.forEach((b, i) => expect((b as Buffer).equals(blocks[i]!), `block ${i}`).toBe(true))
  const report = await vault.verify({ readData: true })
  expect(report.ok).toBe(true)
  // reading them with direct I/O left them out of the page cache too (headers, indexes and trailers
  // are read through it: a few pages per pack)
  expect(await cachedBytes(packs)).toBeLessThanOrEqual(cached + packs.length * 8 * 4096)
  return { packBytes, cached }
}

describe('pack files and the page cache', () => {
  it('are written and read with direct I/O: only each pack\'s unaligned tail, index and trailer are cached', async () => {
    const t = await tempDir('tresor-packdirect-')
    cleanups.push(t.cleanup)
    const { packBytes, cached } = await storeAndCheck(t.dir)
    expect(packBytes).toBeGreaterThan(16 * 1024 * 1024)
    // per pack at most the last staged piece (< 4 KiB unaligned rest) plus index and trailer
    expect(cached).toBeLessThan(packBytes * 0.01)
  })

  it('go through the page cache, with the same content, when direct I/O is turned off', async () => {
    process.env.TRESOR_NO_DIRECT_IO = '1'
    const t = await tempDir('tresor-packbuffered-')
    cleanups.push(t.cleanup)
    const { packBytes, cached } = await storeAndCheck(t.dir)
    expect(cached).toBeGreaterThan(packBytes * 0.9)
  })
})
