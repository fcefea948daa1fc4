/** LocalVault: the local-folder vault (work in progress: data paths follow). */
import { EngineError } from '../errors.js'
import { loadConfig } from './config.js'
import { readGeneration } from './generation.js'
import { layoutOf } from './layout.js'
import type { LocalVault, OpenVaultOptions } from './types.js'
import { nodeVaultFs } from './vaultFs.js'

/**
 * Opens the vault in `dir` with its master key: authenticates the config (tampered → VAULT_DAMAGED,
 * wrong key → WRONG_PASSPHRASE), reads the generation and refuses an older copy of the vault
 * (generation < lastGeneration → VAULT_ROLLBACK). Takes no lock; sessions and prune do.
 */
export async function openVault(dir: string, masterKey: Buffer, options: OpenVaultOptions = {}): Promise<LocalVault> {
  const fs = options.fs ?? nodeVaultFs
  const layout = layoutOf(dir)
  const { config, keys } = await loadConfig(fs, layout, masterKey)
  const gen = await readGeneration(fs, layout, keys, config.vaultId)
  if (options.lastGeneration !== undefined && gen.generation < options.lastGeneration) {
    throw new EngineError(
      'VAULT_ROLLBACK',
      `The vault at "${dir}" is at generation ${gen.generation}, older than generation ${options.lastGeneration} seen before: an older copy of the vault was put back. Nothing was written; check which copy is current.`,
    )
  }
  throw new EngineError('UNSUPPORTED', 'openVault: data paths are not implemented yet.')
}
