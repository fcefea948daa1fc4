/**
 * The vault config file: readable without a key (id, version, key slots), authenticated with a key
 * derived from the master key (params, slots). A changed parameter, cipher "none", a swapped key
 * slot or an unknown major version is refused (I6, RELIABILITY #28).
 */
import { EngineError } from '../errors.js'
import { deriveKeys, equalHex, hmacHex, randomId, type VaultKeys } from './crypto.js'
import { DEFAULT_FORMAT_VERSION, FORMAT_MINOR, FORMAT_NAME, READABLE_FORMAT_VERSIONS, RESERVE_BYTES, layoutOf, type VaultLayout } from './layout.js'
import { randomBytes } from 'node:crypto'
import { nodeVaultFs, readFileIfExists, vaultIoError, writeFileAtomic, type VaultFs } from './vaultFs.js'
import { join } from 'node:path'

/** Wrapped copies of the master key, as JSON produced by engine/keys (opaque to the vault). */
export interface KeySlots {
  passphrase: unknown
  recovery?: unknown
}

export const MIN_BLOCK_SIZE = 64 * 1024
export const MAX_BLOCK_SIZE = 4 * 1024 * 1024
/**
 * Block size of new vaults: 64 KiB (128 KiB before; existing vaults keep theirs). Measured on the
 * 4 GiB bench disks (docs/PERFORMANCE.md, seventh round): after 1 % scattered 4 KiB writes it stores
 * 309 MiB against 549 MiB at 128 KiB (restic: ~1,780 MiB) and backs up ~20 % faster, while a full
 * backup costs ~6 % more CPU and block maps take ~0.075 % of allocated bytes. Once chunk ids stopped
 * paying a hasher per call, the per-block costs that made 64 KiB 20 % dearer were mostly gone.
 */
export const DEFAULT_BLOCK_SIZE = 64 * 1024
export const DEFAULT_PACK_TARGET_BYTES = 32 * 1024 * 1024
/**
 * zstd level of new vaults. Level 1 compressed the benchmark's text/binary blocks 2.3× faster than
 * level 3 (270 vs 115 MiB per CPU-second) for 0.4 % more bytes (docs/PERFORMANCE.md); compression of
 * compressible blocks was the largest CPU cost of a full backup.
 */
export const DEFAULT_COMPRESSION_LEVEL = 1
export const MAP_SEGMENT_ENTRIES = 65536

export interface VaultParams {
  blockSize: number
  chunkIdHash: 'blake3-keyed-256'
  cipher: 'aes-256-gcm'
  compression: 'zstd'
  compressionLevel: number
  packTargetBytes: number
  mapSegmentEntries: number
}

export interface VaultConfig {
  format: typeof FORMAT_NAME
  formatVersion: number
  minorVersion: number
  vaultId: string
  createdAt: string
  params: VaultParams
  keySlots: KeySlots
  keyCheck: string
  mac: string
}

/** JSON with sorted keys: the bytes the config MAC covers. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null'
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`
  const obj = value as Record<string, unknown>
  const keys = Object.keys(obj)
    .filter((k) => obj[k] !== undefined)
    .sort()
  return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(obj[k])}`).join(',')}}`
}

function macOf(keys: VaultKeys, config: Omit<VaultConfig, 'mac'>): string {
  return hmacHex(keys.config, canonicalJson({ ...config, mac: undefined }))
}

function checkParams(params: VaultParams, path: string): void {
  const bad = (what: string): EngineError =>
    new EngineError('VAULT_DAMAGED', `The vault config "${path}" has an invalid ${what}. It may have been tampered with; the vault is not opened.`)
  if (typeof params !== 'object' || params === null) throw bad('parameter set')
  if (params.cipher !== 'aes-256-gcm') throw bad(`cipher (${String(params.cipher)})`)
  if (params.chunkIdHash !== 'blake3-keyed-256') throw bad('chunk hash')
  if (params.compression !== 'zstd') throw bad('compression')
  const bs = params.blockSize
  if (!Number.isInteger(bs) || bs < MIN_BLOCK_SIZE || bs > MAX_BLOCK_SIZE || (bs & (bs - 1)) !== 0) throw bad('block size')
  if (!Number.isInteger(params.packTargetBytes) || params.packTargetBytes < 1 << 20 || params.packTargetBytes > 1 << 30) throw bad('pack size')
  if (!Number.isInteger(params.mapSegmentEntries) || params.mapSegmentEntries < 16 || params.mapSegmentEntries > 1 << 20) throw bad('block map segment size')
  if (!Number.isInteger(params.compressionLevel) || params.compressionLevel < -7 || params.compressionLevel > 19) throw bad('compression level')
}

async function parseConfigFile(fs: VaultFs, layout: VaultLayout): Promise<VaultConfig> {
  const raw = await readFileIfExists(fs, layout.config)
  if (!raw) {
    throw new EngineError('VAULT_NOT_FOUND', `No vault found at "${layout.root}" (no config file). Check the path, or create one with "tresor vault init".`)
  }
  let parsed: unknown
  try {
    parsed = JSON.parse(raw.toString('utf8'))
  } catch (err) {
    throw new EngineError('VAULT_DAMAGED', `The vault config "${layout.config}" is not readable JSON. Restore it from a copy of the vault.`, { cause: err })
  }
  const c = parsed as Partial<VaultConfig>
  if (typeof c !== 'object' || c === null || c.format !== FORMAT_NAME) {
    throw new EngineError('VAULT_NOT_FOUND', `"${layout.root}" does not hold a Tresor vault (unknown config format).`)
  }
  if (typeof c.formatVersion !== 'number' || !READABLE_FORMAT_VERSIONS.includes(c.formatVersion)) {
    throw new EngineError(
      'VAULT_VERSION_UNSUPPORTED',
      `The vault at "${layout.root}" uses format version ${String(c.formatVersion)}; this Tresor reads versions ${READABLE_FORMAT_VERSIONS.join(', ')}. Update Tresor to open it.`,
    )
  }
  if (typeof c.vaultId !== 'string' || !/^[0-9a-f]{32}$/.test(c.vaultId) || typeof c.mac !== 'string' || typeof c.keyCheck !== 'string') {
    throw new EngineError('VAULT_DAMAGED', `The vault config "${layout.config}" is incomplete. Restore it from a copy of the vault.`)
  }
  if (raw.toString('utf8') !== JSON.stringify(parsed, null, 2) + '\n') {
    // This version writes the config in exactly one layout: any other byte (even one JSON.parse
    // ignores, like a changed letter case in a hex tag) is damage.
    throw new EngineError('VAULT_DAMAGED', `The vault config "${layout.config}" was modified or is damaged. Restore it from a copy of the vault.`)
  }
  return c as VaultConfig
}

/**
 * Creates a new, empty vault in `dir` (which must be absent or empty). Writes the directory
 * skeleton, the authenticated config and generation 1. Returns the new vault id.
 */
export async function createVault(
  dir: string,
  init: {
    masterKey: Buffer
    keySlots: KeySlots
    blockSize?: number
    packTargetBytes?: number
    compressionLevel?: number
    /** 1 (the default: blocks stored whole) or 2 (compressible blocks as content-defined parts). */
    formatVersion?: number
  },
  options: { fs?: VaultFs } = {},
): Promise<{ vaultId: string }> {
  const fs = options.fs ?? nodeVaultFs
  const layout = layoutOf(dir)
  const formatVersion = init.formatVersion ?? DEFAULT_FORMAT_VERSION
  if (!READABLE_FORMAT_VERSIONS.includes(formatVersion)) {
    throw new EngineError('INVALID_INPUT', `Vault format ${formatVersion} is not one this Tresor writes (${READABLE_FORMAT_VERSIONS.join(', ')}).`)
  }
  try {
    const st = await fs.stat(dir)
    if (st && !st.isDirectory) throw new EngineError('ALREADY_EXISTS', `"${dir}" exists and is not a folder. Choose an empty folder for the vault.`)
    if (st && (await fs.readdir(dir)).length > 0) {
      throw new EngineError('ALREADY_EXISTS', `"${dir}" is not empty. Choose an empty folder for the new vault.`)
    }
    await fs.mkdir(dir)
    for (const d of [layout.tmp, layout.locks, layout.generations, layout.packs, layout.manifests, layout.maps]) await fs.mkdir(d)
    for (let i = 0; i < 256; i++) await fs.mkdir(join(layout.packs, i.toString(16).padStart(2, '0')))
    await fs.syncDir(layout.packs)
    await fs.syncDir(dir)
  } catch (err) {
    throw vaultIoError(err, dir, 'creating the vault in')
  }
  const vaultId = randomId(16)
  const keys = deriveKeys(init.masterKey, vaultId)
  const params: VaultParams = {
    blockSize: init.blockSize ?? DEFAULT_BLOCK_SIZE,
    chunkIdHash: 'blake3-keyed-256',
    cipher: 'aes-256-gcm',
    compression: 'zstd',
    compressionLevel: init.compressionLevel ?? DEFAULT_COMPRESSION_LEVEL,
    packTargetBytes: init.packTargetBytes ?? DEFAULT_PACK_TARGET_BYTES,
    mapSegmentEntries: MAP_SEGMENT_ENTRIES,
  }
  checkParams(params, layout.config)
  const body: Omit<VaultConfig, 'mac'> = {
    format: FORMAT_NAME,
    formatVersion,
    minorVersion: FORMAT_MINOR,
    vaultId,
    createdAt: new Date().toISOString(),
    params,
    keySlots: init.keySlots,
    keyCheck: hmacHex(keys.check, `tresor/v1/key-check/${vaultId}`),
  }
  const config: VaultConfig = { ...body, mac: macOf(keys, body) }
  const { writeGeneration } = await import('./generation.js')
  await writeGeneration(fs, layout, keys, vaultId, 1, 'create', 0)
  // random bytes: a compressing file system must not shrink the reserve to nothing
  await writeFileAtomic(fs, layout.tmp, layout.reserve, randomBytes(RESERVE_BYTES))
  await writeFileAtomic(fs, layout.tmp, layout.config, Buffer.from(JSON.stringify(config, null, 2) + '\n', 'utf8'))
  return { vaultId }
}

/** Reads what can be read without a key: id, version and the wrapped key slots. */
export async function readVaultHeader(
  dir: string,
  options: { fs?: VaultFs } = {},
): Promise<{ vaultId: string; formatVersion: number; keySlots: KeySlots; blockSize: number }> {
  const config = await parseConfigFile(options.fs ?? nodeVaultFs, layoutOf(dir))
  return { vaultId: config.vaultId, formatVersion: config.formatVersion, keySlots: config.keySlots, blockSize: config.params?.blockSize }
}

/**
 * Reads and authenticates the config with the master key. Wrong key → WRONG_PASSPHRASE; any
 * altered field → VAULT_DAMAGED.
 */
export async function loadConfig(fs: VaultFs, layout: VaultLayout, masterKey: Buffer): Promise<{ config: VaultConfig; keys: VaultKeys }> {
  const config = await parseConfigFile(fs, layout)
  const keys = deriveKeys(masterKey, config.vaultId)
  if (!equalHex(config.keyCheck, hmacHex(keys.check, `tresor/v1/key-check/${config.vaultId}`))) {
    throw new EngineError('WRONG_PASSPHRASE', `The key does not open the vault at "${layout.root}". Check the passphrase or recovery key.`)
  }
  if (!equalHex(config.mac, macOf(keys, config))) {
    throw new EngineError(
      'VAULT_DAMAGED',
      `The vault config "${layout.config}" was altered (its authentication code does not match). The vault is not opened; restore the config from a copy.`,
    )
  }
  checkParams(config.params, layout.config)
  return { config, keys }
}

/** Atomically replaces the key slots (passphrase change, recovery key export); re-authenticates the config. */
export async function updateKeySlots(dir: string, masterKey: Buffer, slots: KeySlots, options: { fs?: VaultFs } = {}): Promise<void> {
  const fs = options.fs ?? nodeVaultFs
  const layout = layoutOf(dir)
  const { config, keys } = await loadConfig(fs, layout, masterKey)
  const body: Omit<VaultConfig, 'mac'> = { ...config, keySlots: slots }
  delete (body as Partial<VaultConfig>).mac
  const next: VaultConfig = { ...body, mac: macOf(keys, body) }
  await writeFileAtomic(fs, layout.tmp, layout.config, Buffer.from(JSON.stringify(next, null, 2) + '\n', 'utf8'))
}
