/**
 * The vault generation (I11): a monotonic counter stored as one small authenticated record per
 * value in `generations/` (created exclusively with a hard link, so two writers never produce the
 * same number and the counter never goes back). Each record also carries the generation of the
 * last prune, which backup sessions compare with the generation they started from.
 */
import { join } from 'node:path'
import { EngineError } from '../errors.js'
import { equalHex, hmacHex, type VaultKeys } from './crypto.js'
import type { VaultLayout } from './layout.js'
import { readdirIfExists, readFileIfExists, tempName, vaultIoError, writeAll, type VaultFs } from './vaultFs.js'
import { canonicalJson } from './config.js'

export type GenerationKind = 'create' | 'commit' | 'prune'

export interface GenerationRecord {
  vaultId: string
  generation: number
  kind: GenerationKind
  /** Generation at which the last prune finished (0: never pruned). */
  lastPrune: number
  mac: string
}

const NAME_RE = /^\d{16}$/

function recordMac(keys: VaultKeys, r: Omit<GenerationRecord, 'mac'>): string {
  return hmacHex(keys.config, `tresor/v1/generation/${canonicalJson(r)}`)
}

/** Creates generation `n` exclusively; false when it already exists (another writer won). */
export async function writeGeneration(
  fs: VaultFs,
  layout: VaultLayout,
  keys: VaultKeys,
  vaultId: string,
  n: number,
  kind: GenerationKind,
  lastPrune: number,
): Promise<boolean> {
  const body = { vaultId, generation: n, kind, lastPrune }
  const record: GenerationRecord = { ...body, mac: recordMac(keys, body) }
  const finalPath = join(layout.generations, String(n).padStart(16, '0'))
  const tmp = join(layout.tmp, tempName(finalPath))
  try {
    const fh = await fs.open(tmp, 'wx')
    try {
      await writeAll(fh, Buffer.from(JSON.stringify(record) + '\n', 'utf8'), 0, tmp)
      await fh.sync()
    } finally {
      await fh.close()
    }
    try {
      await fs.link(tmp, finalPath)
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false
      throw err
    }
    await fs.syncDir(layout.generations)
    return true
  } catch (err) {
    throw vaultIoError(err, finalPath, 'writing the vault generation')
  } finally {
    await fs.unlink(tmp).catch(() => undefined)
  }
}

/** Latest generation record, authenticated. A vault without one is damaged. */
export async function readGeneration(fs: VaultFs, layout: VaultLayout, keys: VaultKeys, vaultId: string): Promise<GenerationRecord> {
  const names = (await readdirIfExists(fs, layout.generations)).filter((n) => NAME_RE.test(n)).sort()
  for (let i = names.length - 1; i >= 0; i--) {
    const path = join(layout.generations, names[i]!)
    const raw = await readFileIfExists(fs, path)
    if (!raw) continue // removed by a concurrent cleanup
    let r: GenerationRecord
    try {
      r = JSON.parse(raw.toString('utf8')) as GenerationRecord
    } catch (err) {
      throw new EngineError('VAULT_DAMAGED', `The vault generation record "${path}" is not readable. Run "tresor verify".`, { cause: err })
    }
    const { mac, ...body } = r
    if (
      typeof mac !== 'string' ||
      r.vaultId !== vaultId ||
      r.generation !== Number(names[i]) ||
      !equalHex(mac, recordMac(keys, { vaultId: body.vaultId, generation: body.generation, kind: body.kind, lastPrune: body.lastPrune }))
    ) {
      throw new EngineError('VAULT_DAMAGED', `The vault generation record "${path}" was altered. Run "tresor verify".`)
    }
    return r
  }
  throw new EngineError('VAULT_DAMAGED', `The vault at "${layout.root}" has no generation record. Run "tresor verify".`)
}

/** Creates the next generation (retrying when another writer took a number). */
export async function bumpGeneration(
  fs: VaultFs,
  layout: VaultLayout,
  keys: VaultKeys,
  vaultId: string,
  kind: GenerationKind,
): Promise<GenerationRecord> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const cur = await readGeneration(fs, layout, keys, vaultId)
    const n = cur.generation + 1
    const lastPrune = kind === 'prune' ? n : cur.lastPrune
    if (await writeGeneration(fs, layout, keys, vaultId, n, kind, lastPrune)) {
      return { vaultId, generation: n, kind, lastPrune, mac: '' }
    }
  }
  throw new EngineError('VAULT_LOCKED', 'Could not advance the vault generation: too many concurrent writers. Try again.')
}

/** Removes all but the newest `keep` generation records (called under the exclusive lock). */
export async function trimGenerations(fs: VaultFs, layout: VaultLayout, keep = 16): Promise<void> {
  const names = (await readdirIfExists(fs, layout.generations)).filter((n) => NAME_RE.test(n)).sort()
  for (const name of names.slice(0, Math.max(0, names.length - keep))) {
    await fs.unlink(join(layout.generations, name)).catch(() => undefined)
  }
  await fs.syncDir(layout.generations).catch(() => undefined)
}
