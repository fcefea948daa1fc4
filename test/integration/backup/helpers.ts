/**
 * Helpers of the backup integration tests: a real vault (random master key) and a real catalog in a
 * temp folder, and the guest-view SHA-256 of a recovery point's disk read back through the vault.
 */
import { createHash, randomBytes as cryptoRandomBytes } from 'node:crypto'
import { join } from 'node:path'
import { openCatalog, type Db } from '../../../electron/engine/catalog/index.js'
import { openImage } from '../../../electron/engine/formats/index.js'
import { createVault, openVault, type LocalVault, type Vault } from '../../../electron/engine/vault/index.js'
import { createBlockHasher, type BackupWorld } from '../../../electron/engine/backup/index.js'
import { tempDir } from '../../helpers/qemu.js'

export const KiB = 1024
export const MiB = 1024 * 1024
/** The smallest block size the vault accepts: precise byte counts with small images. */
export const TEST_BLOCK_SIZE = 64 * KiB

export interface TestWorld {
  dir: string
  home: string
  vaultDir: string
  vault: LocalVault
  catalog: Db
  world: BackupWorld
  masterKey: Buffer
  close(): Promise<void>
}

export async function makeWorld(options: { blockSize?: number; formatVersion?: number } = {}): Promise<TestWorld> {
  const { dir, cleanup } = await tempDir('tresor-backup-')
  const home = join(dir, 'home')
  const vaultDir = join(dir, 'vault')
  const masterKey = cryptoRandomBytes(32)
  await createVault(vaultDir, { masterKey, keySlots: { passphrase: { test: true } }, blockSize: options.blockSize ?? TEST_BLOCK_SIZE, ...(options.formatVersion ? { formatVersion: options.formatVersion } : {}) })
  const vault = await openVault(vaultDir, masterKey)
  const catalog = openCatalog(home)
  return {
    dir,
    home,
    vaultDir,
    vault,
    catalog,
    masterKey,
    world: { vault, catalog, openImage: (p) => openImage(p) },
    async close() {
      await vault.close().catch(() => {})
      catalog.close()
      await cleanup()
    },
  }
}

/** SHA-256 of a point's disk as a restore would write it (zeros for ZERO/UNALLOCATED blocks). */
export async function pointDiskSha256(vault: Vault, pointId: string, diskIndex: number): Promise<string> {
  const manifest = await vault.getPoint(pointId)
  const disk = manifest.disks.find((d) => d.index === diskIndex)
  if (!disk) throw new Error(`point ${pointId} has no disk ${diskIndex}`)
  const bs = manifest.blockSize
  const h = createHash('sha256')
  const reader = vault.chunkReader()
  const zeros = Buffer.alloc(bs)
  let i = 0
  let batch: { len: number; id: Buffer | null }[] = []
  const flush = async (): Promise<void> => {
    const ids = batch.filter((b) => b.id).map((b) => b.id!)
    const data = ids.length ? await reader.readChunks(ids) : []
    let k = 0
    for (const b of batch) {
      if (b.id) {
        const chunk = data[k++]!
        if (chunk.length !== b.len) throw new Error(`chunk length ${chunk.length} != block length ${b.len}`)
        h.update(chunk)
      } else {
        h.update(zeros.subarray(0, b.len))
      }
    }
    batch = []
  }
  try {
    for await (const e of vault.readBlockMap(pointId, diskIndex)) {
      const len = Math.min(bs, disk.virtualSize - i * bs)
      batch.push({ len, id: e.kind === 'data' ? e.chunkId : null })
      if (batch.length >= 32) await flush()
      i++
    }
    await flush()
  } finally {
    await reader.close()
  }
  if (i !== disk.blockCount) throw new Error(`block map has ${i} entries, manifest says ${disk.blockCount}`)
  return h.digest('hex')
}

/** Counts entries of each kind in a point's block map. */
export async function mapKinds(vault: Vault, pointId: string, diskIndex: number): Promise<Record<'data' | 'zero' | 'unallocated', number>> {
  const n = { data: 0, zero: 0, unallocated: 0 }
  for await (const e of vault.readBlockMap(pointId, diskIndex)) n[e.kind]++
  return n
}

/** Checks that every DATA entry's recorded XXH3-128 checksum is the checksum of its stored chunk. Returns the entries checked. */
export async function checkRecordedChecksums(vault: Vault, pointId: string, diskIndex: number): Promise<number> {
  const hasher = createBlockHasher()
  const reader = vault.chunkReader()
  let n = 0
  try {
    const batch: { id: Buffer; checksum: Buffer }[] = []
    const flush = async (): Promise<void> => {
      const data = await reader.readChunks(batch.map((b) => b.id))
      batch.forEach((b, i) => {
        if (!hasher.checksum(data[i]!).equals(b.checksum)) throw new Error(`block checksum mismatch in point ${pointId}`)
      })
      n += batch.length
      batch.length = 0
    }
    for await (const e of vault.readBlockMap(pointId, diskIndex)) {
      if (e.kind !== 'data') continue
      batch.push({ id: e.chunkId, checksum: e.checksum })
      if (batch.length >= 32) await flush()
    }
    if (batch.length) await flush()
  } finally {
    await reader.close()
  }
  return n
}
