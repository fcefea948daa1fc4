import { mkdtemp, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes, createHash } from 'node:crypto'
import { createVault, openVault, type LocalVault, type OpenVaultOptions, type BlockEntry, type NewPoint } from '../../../electron/engine/vault/index.js'
import { ChunkIdHasher, deriveKeys } from '../../../electron/engine/vault/crypto.js'
import { cutParts, gearTable, looksCompressible } from '../../../electron/engine/vault/parts.js'
import { prng } from '../../helpers/qemu.js'
import { expect } from 'vitest'
import { createBlockHasher } from '../../../electron/engine/backup/checksum.js'

export const BLOCK = 64 * 1024

export async function tempDir(prefix = 'tresor-vault-'): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix))
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) }
}

export async function newVault(
  root: string,
  options: OpenVaultOptions = {},
  init: { packTargetBytes?: number; formatVersion?: number } = {},
): Promise<{ dir: string; key: Buffer; vault: LocalVault; vaultId: string }> {
  const dir = join(root, 'vault')
  const key = randomBytes(32)
  const { vaultId } = await createVault(dir, {
    masterKey: key,
    keySlots: { passphrase: { test: true } },
    blockSize: BLOCK,
    packTargetBytes: init.packTargetBytes ?? 1024 * 1024,
    ...(init.formatVersion ? { formatVersion: init.formatVersion } : {}),
  })
  const vault = await openVault(dir, key, { workers: 1, ...options })
  return { dir, key, vault, vaultId }
}

/** Deterministic block content: kind 'text' compresses, 'random' does not. */
export function makeBlock(seed: number, kind: 'text' | 'random', size = BLOCK): Buffer {
  if (kind === 'random') {
    const out = Buffer.alloc(size)
    let x = (seed * 2654435761 + 1) >>> 0 || 1
    for (let p = 0; p + 4 <= size; p += 4) {
      x ^= x << 13
      x >>>= 0
      x ^= x >>> 17
      x ^= x << 5
      x >>>= 0
      out.writeUInt32LE(x, p)
    }
    return out
  }
  const line = `block ${seed}: the quick brown fox jumps over the lazy dog ${seed * 7919}\n`
  return Buffer.from(line.repeat(Math.ceil(size / line.length)).slice(0, size))
}

export function checksumOf(data: Buffer): Buffer {
  return createHash('md5').update(data).digest() // 16 bytes; stands in for XXH3-128 in tests
}

export interface DiskSpec {
  name: string
  blocks: Array<Buffer | 'zero' | 'unallocated'>
}

/** Backs up disks through the public session API; returns the committed point. */
export async function backUp(vault: LocalVault, disks: DiskSpec[], machine = 'vm1') {
  const session = await vault.beginBackup()
  const window: Promise<unknown>[] = []
  try {
    for (const [index, disk] of disks.entries()) {
      const writer = session.blockMapWriter({ index, blockCount: disk.blocks.length })
      for (const b of disk.blocks) {
        if (b === 'zero' || b === 'unallocated') {
          writer.append({ kind: b })
          continue
        }
        const r = await session.putBlock(b, checksumOf(b))
        writer.append({ kind: 'data', chunkId: r.chunkId, checksum: checksumOf(b) })
      }
      await writer.finish()
    }
    await Promise.all(window)
    const point: NewPoint = {
      machineId: machine,
      machineName: machine,
      createdAt: new Date().toISOString(),
      consistency: 'crash',
      disks: disks.map((d, index) => ({
        index,
        name: d.name,
        virtualSize: d.blocks.length * BLOCK,
        sourceFormat: 'raw',
        sourcePath: `/src/${d.name}`,
        allocatedBytes: d.blocks.filter((b) => b !== 'unallocated').length * BLOCK,
        blockCount: d.blocks.length,
      })),
      stats: { bytesRead: 0, bytesNew: 0, bytesStored: 0, seconds: 0 },
      labels: {},
    }
    return await session.commit(point)
  } catch (err) {
    await session.abort()
    throw err
  }
}

/** Reads a disk back through block map + chunk reader. */
export async function restoreDisk(vault: LocalVault, pointId: string, diskIndex: number): Promise<Array<Buffer | 'zero' | 'unallocated'>> {
  const entries: BlockEntry[] = []
  for await (const e of vault.readBlockMap(pointId, diskIndex)) entries.push(e)
  const reader = vault.chunkReader()
  const ids = entries.filter((e): e is Extract<BlockEntry, { kind: 'data' }> => e.kind === 'data').map((e) => e.chunkId)
  const data = await reader.readChunks(ids)
  await reader.close()
  let k = 0
  return entries.map((e) => (e.kind === 'data' ? data[k++]! : e.kind))
}

/**
 * How a vault with parts (format 2 or 3) stores these blocks, backed up in this order, worked out
 * independently of the session. A block already stored is deduplicated. A full compressible block
 * that cuts into 2 or more parts is, in format 3, a container when none of its parts is stored
 * yet, else (and always in format 2) a recipe of its parts. Any other block is one plain record.
 * `chunks` holds every distinct block and part id. The vault's key decides where blocks are cut,
 * so a shifted copy of earlier text is a container now and then (all its parts cut afresh): tests
 * ask this model rather than assume.
 */
function storedModel(blocks: Buffer[], masterKey: Buffer, vaultId: string): { kinds: Array<'dedup' | 'container' | 'recipe' | 'record'>; chunks: Set<string> } {
  const ids = new ChunkIdHasher(deriveKeys(masterKey, vaultId).chunkId)
  const chunks = new Set<string>()
  const kinds = blocks.map((b) => {
    const id = ids.of(b).toString('hex')
    if (chunks.has(id)) return 'dedup'
    chunks.add(id)
    const parts = partsOf(b, masterKey, vaultId).map((p) => ids.of(p).toString('hex'))
    if (parts.length === 0) return 'record'
    const kind = parts.some((p) => chunks.has(p)) ? 'recipe' : 'container'
    for (const p of parts) chunks.add(p)
    return kind
  })
  return { kinds, chunks }
}

/** The chunks a vault with parts stores for these blocks: each distinct block and part once (storedModel). */
export function expectedChunks(blocks: Buffer[], masterKey: Buffer, vaultId: string): number {
  return storedModel(blocks, masterKey, vaultId).chunks.size
}

/** How a format-3 vault stores each of these blocks, backed up in this order (storedModel). */
export function storedKinds(blocks: Buffer[], masterKey: Buffer, vaultId: string): Array<'dedup' | 'container' | 'recipe' | 'record'> {
  return storedModel(blocks, masterKey, vaultId).kinds
}

/** Every pack file of the vault in `dir`. */
export async function packFiles(dir: string): Promise<string[]> {
  const out: string[] = []
  for (const sub of await readdir(join(dir, 'packs'))) for (const f of await readdir(join(dir, 'packs', sub))) out.push(join(dir, 'packs', sub, f))
  return out
}

/** Log-like text from a seeded generator: compressible, and unlike itself at every offset. */
export function textPool(seed: number, bytes: number): Buffer {
  const next = prng(seed)
  const words = ['disk', 'error', 'backup', 'vault', 'restore', 'guest', 'kernel', 'block', 'sector', 'write', 'read', 'cache', 'flush', 'job']
  let s = ''
  while (s.length < bytes) {
    s += `2026-11-${10 + (next() % 18)} ${next() % 24}:${next() % 60} host${next() % 9} `
    for (let w = 3 + (next() % 8); w > 0; w--) s += `${words[next() % words.length]} `
    s += `${next() % 100000}\n`
  }
  return Buffer.from(s.slice(0, bytes), 'latin1')
}

/** Full blocks cut from `pool` at the given offsets (shifted copies of the same text). */
export function shifted(pool: Buffer, offsets: number[]): Buffer[] {
  return offsets.map((o) => Buffer.from(pool.subarray(o, o + BLOCK)))
}

/** Bit g set when granule g of a block is all zeros or past its end (ChunksInPlace.zeroMaps). */
export function zeroMapOf(block: Buffer, granule: number): Buffer {
  const map = Buffer.alloc(Math.ceil(BLOCK / granule / 8), 0xff)
  for (let g = 0; g * granule < block.length; g++) {
    if (block.subarray(g * granule, (g + 1) * granule).some((x) => x !== 0)) map[g >> 3]! &= ~(1 << (g & 7))
  }
  return map
}


/** The parts format 2 and 3 cut a full compressible block into, under the vault's key (none when it is stored whole). */
export function partsOf(block: Buffer, masterKey: Buffer, vaultId: string): Buffer[] {
  const keys = deriveKeys(masterKey, vaultId)
  const ends: number[] = []
  if (block.length !== BLOCK || !looksCompressible(block) || cutParts(block, gearTable(keys.chunkId), ends) < 2) return []
  return ends.map((end, k) => block.subarray(k ? ends[k - 1]! : 0, end))
}

/**
 * Reads `ids` through `readChunksInto` (the restore path) into `target` (shared memory), one block
 * apart, and checks each against `want`: length, bytes, XXH3-128 checksum and zero map.
 */
export async function expectReadInto(vault: LocalVault, ids: Buffer[], want: Buffer[], target: Buffer): Promise<void> {
  target.fill(0xee)
  const positions = ids.map((_, k) => k * BLOCK)
  const reader = vault.chunkReader()
  const got = await reader.readChunksInto(ids, target, positions, { zeroGranule: 4096 })
  await reader.close()
  const hasher = createBlockHasher()
  want.forEach((w, k) => {
    expect(got.lengths[k]).toBe(w.length)
    expect(target.subarray(positions[k]!, positions[k]! + w.length).equals(w)).toBe(true)
    expect(got.checksums[k]!.equals(hasher.checksum(w))).toBe(true)
    expect(Buffer.from(got.zeroMaps[k]!).equals(zeroMapOf(w, 4096))).toBe(true)
  })
}

/**
 * The text the format-2 and format-3 tests back up: four text blocks that share no bytes, a random
 * block and a short text tail (`first`), and the same text shifted (`second`), whose parts mostly
 * lie in the first's blocks.
 */
export function shiftedText(): { pool: Buffer; first: Buffer[]; second: Buffer[] } {
  const pool = textPool(11, 512 * 1024)
  return {
    pool,
    first: [...shifted(pool, [0, 70_001, 140_003, 210_007]), makeBlock(5, 'random'), Buffer.from(pool.subarray(300_000, 305_000))],
    second: shifted(pool, [1_000, 71_500, 142_111, 213_000]),
  }
}
