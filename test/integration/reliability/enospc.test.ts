import { execFileSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, statfsSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { checkPointData, newTestVault, open } from './fixtures/data.js'
import { killAllChildren, startChild } from './fixtures/child.js'
import { mountLoopFs, type LoopMount } from '../../helpers/loopFs.js'

// RELIABILITY #8: the vault lives on a 16 MiB tmpfs; a backup that does not fit fails with a clear
// DISK_FULL error, earlier points stay intact, verify stays clean, and space can be reclaimed.
const base = mkdtempSync(join(tmpdir(), 'tresor-enospc-'))
const mountPoint = join(base, 'small')
let mounted = false

beforeAll(() => {
  if (process.getuid?.() !== 0) throw new Error('The ENOSPC test mounts a tmpfs and must run as root (CI runs as root).')
  mkdirSync(mountPoint)
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=16m', 'none', mountPoint])
  mounted = true
})
afterAll(() => {
  killAllChildren()
  if (mounted) execFileSync('umount', ['-l', mountPoint])
  rmSync(base, { recursive: true, force: true })
})

function freeBytes(path = mountPoint): number {
  const s = statfsSync(path)
  return s.bavail * s.bsize
}

async function backUpInChild(target: { dir: string; keyB64: string }, seed: number, blocks: number) {
  const child = await startChild(target)
  child.send({ kind: 'backup', spec: { seed, blocks, incompressible: true } })
  return child.outcome
}

describe('ENOSPC: vault on a 16 MiB file system', () => {
  it('fails the backup with DISK_FULL, keeps earlier points, verifies clean, and recovers space', async () => {
    const { dir, key } = await newTestVault(join(mountPoint, 'vault'))
    const target = { dir, keyB64: key.toString('base64') }
    const configBefore = readFileSync(join(dir, 'config'))

    const first = await backUpInChild(target, 1, 48) // 3 MiB, incompressible
    expect(first).toMatchObject({ kind: 'done' })
    const firstId = (first as { result: { pointId: string } }).result.pointId

    const tooBig = await backUpInChild(target, 2, 320) // 20 MiB: cannot fit
    expect(tooBig).toMatchObject({ kind: 'failed', code: 'DISK_FULL' })
    const message = (tooBig as { message: string }).message
    expect(message).toMatch(/full/i)
    expect(message).toContain(mountPoint)
    console.log(`ENOSPC message: ${message}`)

    const leftInTmp = readdirSync(join(dir, 'tmp'))
    const vault = await open(dir, key)
    try {
      const report = await vault.verify({ readData: true })
      expect(report.problems).toEqual([])
      expect(report.ok).toBe(true)
      const points = await vault.listPoints()
      expect(points.map((p) => p.id)).toEqual([firstId])
      await checkPointData(vault, points[0]!)
    } finally {
      await vault.close()
    }
    expect(readFileSync(join(dir, 'config')).equals(configBefore)).toBe(true)
    console.log(`after DISK_FULL: ${leftInTmp.length} temp file(s) left in tmp/, ${freeBytes()} bytes free`)

    // Prune reclaims what the failed backup left (if anything) while space is short.
    const pruneChild = await startChild(target)
    pruneChild.send({ kind: 'prune', deletePointIds: [] })
    expect(await pruneChild.outcome).toMatchObject({ kind: 'done' })

    // The next backup that fits succeeds, and everything verifies.
    const next = await backUpInChild(target, 3, 32)
    expect(next).toMatchObject({ kind: 'done' })
    const after = await open(dir, key)
    try {
      const report = await after.verify({ readData: true })
      expect(report.ok).toBe(true)
      const points = await after.listPoints()
      expect(points).toHaveLength(2)
      for (const p of points) await checkPointData(after, p)
    } finally {
      await after.close()
    }
    expect(readdirSync(join(dir, 'tmp'))).toEqual([])
  })

  it('prune still works when the file system is completely full (RELIABILITY #8, borg #9573)', async () => {
    const { dir, key } = await newTestVault(join(mountPoint, 'vault-full'))
    const target = { dir, keyB64: key.toString('base64') }
    const first = await backUpInChild(target, 11, 32)
    expect(first).toMatchObject({ kind: 'done' })
    const second = await backUpInChild(target, 12, 32)
    expect(second).toMatchObject({ kind: 'done' })
    const filler = join(mountPoint, 'filler')
    try {
      writeFileSync(filler, Buffer.alloc(freeBytes()))
    } catch {
      // ENOSPC while filling is expected: the file system is now full.
    }
    try {
      const pruneChild = await startChild(target)
      const firstId = (first as { result: { pointId: string } }).result.pointId
      const freeBefore = freeBytes()
      pruneChild.send({ kind: 'prune', deletePointIds: [firstId] })
      const pruned = await pruneChild.outcome
      console.log(`prune with ${freeBefore} bytes free: ${JSON.stringify(pruned)}`)
      expect(pruned).toMatchObject({ kind: 'done', result: { pointsRemoved: 1 } })
    } finally {
      rmSync(filler, { force: true })
    }
    const vault = await open(dir, key)
    try {
      expect((await vault.verify({ readData: true })).ok).toBe(true)
      const points = await vault.listPoints()
      expect(points).toHaveLength(1)
      await checkPointData(vault, points[0]!)
    } finally {
      await vault.close()
    }
  })
})

// The same on a real file system, where packs are written with O_DIRECT (tmpfs has none): a loop
// mounted 64 MiB ext4 with no blocks reserved for root. A repack that ran out of space there left
// its pack's two handles open (closed by the garbage collector, with node's warning) and its temp
// file in tmp/ until the next prune.
describe('ENOSPC in a prune: vault on a 64 MiB ext4 (direct I/O)', () => {
  let ext: LoopMount | undefined
  beforeAll(async () => {
    ext = await mountLoopFs('tresor-enospc-ext4-', 'The ENOSPC tests', { size: '64M', mkfs: ['mkfs.ext4', '-q', '-m', '0'] })
  })
  afterAll(async () => {
    killAllChildren()
    await ext?.unmount()
  })

  it('a prune whose repack runs out of space fails with DISK_FULL, keeps no pack open or half written, and the next prune with room finishes it', async () => {
    const { dir, key } = await newTestVault(join(ext!.mnt, 'vault'))
    const target = { dir, keyB64: key.toString('base64') }
    // every 4th block is shared by both points: deleting the first leaves its packs partly live
    const ids: string[] = []
    for (const seed of [31, 32]) {
      const child = await startChild(target)
      child.send({ kind: 'backup', spec: { seed, blocks: 512 } })
      const outcome = await child.outcome
      expect(outcome).toMatchObject({ kind: 'done' })
      ids.push((outcome as { result: { pointId: string } }).result.pointId)
    }
    // the reserve already spent (an earlier prune on a full disk used it): nothing to fall back on
    rmSync(join(dir, 'reserve'), { force: true })
    // room for the prune's own small files, not for the ~4 MB of live records it must move: the first
    // repacked pack fails while the next is being filled (the case that left that one open)
    const filler = join(ext!.mnt, 'filler')
    writeFileSync(filler, Buffer.alloc(Math.max(0, freeBytes(ext!.mnt) - 256 * 1024)))
    /** This process's descriptors open on files of the vault. */
    const openInVault = (): string[] =>
      readdirSync('/proc/self/fd').flatMap((fd) => {
        try {
          const target = readlinkSync(join('/proc/self/fd', fd))
          return target.startsWith(dir) ? [target] : []
        } catch {
          return [] // closed meanwhile
        }
      })
    try {
      const vault = await open(dir, key)
      const phases = new Set<string>()
      try {
        const failure = await vault.prune({ deletePointIds: [ids[0]!], onProgress: (p) => phases.add(p.phase) }).then(
          () => undefined,
          (err: unknown) => err,
        )
        expect(failure).toMatchObject({ code: 'DISK_FULL' })
        expect(phases.has('repack')).toBe(true) // it failed while moving the live records
        // the repack's packs were closed and their temp files removed when it failed
        expect(openInVault().filter((t) => t.includes('.pack'))).toEqual([])
        expect(readdirSync(join(dir, 'tmp')).filter((n) => n.endsWith('.pack.tmp'))).toEqual([])
      } finally {
        await vault.close()
      }
    } finally {
      rmSync(filler, { force: true })
    }
    const again = await startChild(target)
    again.send({ kind: 'prune', deletePointIds: [] })
    expect(await again.outcome).toMatchObject({ kind: 'done' })
    const vault = await open(dir, key)
    try {
      expect((await vault.verify({ readData: true })).ok).toBe(true)
      const points = await vault.listPoints()
      expect(points.map((p) => p.labels.seed)).toEqual(['32'])
      await checkPointData(vault, points[0]!)
    } finally {
      await vault.close()
    }
  })
})
