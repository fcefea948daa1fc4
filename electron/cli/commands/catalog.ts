import { existsSync, renameSync } from 'node:fs'
import { join } from 'node:path'
import type { Command } from 'commander'
import type { CliContext } from '../context.js'
import { EngineError } from '../../engine/errors.js'
import type * as CatalogModule from '../../engine/catalog/index.js'

/** `tresor catalog rebuild [--vault <dir>]`: the vault alone recreates the catalog's points (I4). */
export function registerCatalogCommands(program: Command, ctx: CliContext): void {
  const catalog = program.command('catalog').description('the local index of machines, points and jobs')

  catalog
    .command('rebuild')
    .description('recreate the recovery points and vault registration from the vault (global --vault <dir>, else the current vault)')
    .option('--accept-rollback', 'accept a vault older than the one last seen (an older copy restored on purpose)')
    .action(async (opts: { acceptRollback?: boolean }) => {
      const home = ctx.home()
      const override = ctx.vaultOverride()
      const [catalogModule, { replacePoints }, { openCurrentVault }, { jobLockOptions, withReadLock }] = await Promise.all([
        import('../../engine/catalog/index.js'),
        import('../../engine/catalog/vaults.js'),
        import('../../engine/keys/index.js'),
        import('../../engine/vault/locks.js'),
      ])
      const db = openOrReplaceCatalog(catalogModule, home, override !== undefined)
      try {
        const session = await openCurrentVault(home, {
          catalog: db,
          makeCurrent: true,
          acceptRollback: opts.acceptRollback === true,
          ...(override !== undefined ? { vaultOverride: override } : {}),
        })
        try {
          // listing alone copes with manifests deleted meanwhile; the shared lock makes the rebuild wait
          // for a running prune, so the rows it writes are not those of points that prune then removes
          const manifests = await withReadLock(session.vault, 'catalog rebuild', jobLockOptions(ctx.warn), () => session.vault.listPoints())
          const points = replacePoints(db, session.vaultId, manifests)
          ctx.print({ vaultId: session.vaultId, points }, `Catalog rebuilt from vault ${session.vaultId} (${session.path}): ${points} recovery point(s).`)
        } finally {
          await session.close()
        }
      } finally {
        db.close()
      }
    })
}

/**
 * Opens the catalog; when it is unreadable and the vault is named (so nothing else is needed to
 * rebuild), moves the damaged file aside and starts a fresh one.
 */
function openOrReplaceCatalog(
  { openCatalog, CATALOG_FILE }: typeof CatalogModule,
  home: string,
  vaultNamed: boolean,
): CatalogModule.Db {
  try {
    return openCatalog(home)
  } catch (err) {
    if (!(err instanceof EngineError && err.code === 'CATALOG_ERROR') || !vaultNamed) throw err
    const path = join(home, CATALOG_FILE)
    const aside = `${path}.damaged-${new Date().toISOString().replace(/[:.]/g, '-')}`
    for (const suffix of ['', '-wal', '-shm']) if (existsSync(path + suffix)) renameSync(path + suffix, aside + suffix)
    process.stderr.write(`tresor: the catalog was unreadable; it was moved to "${aside}" and a new one is built.\n`)
    return openCatalog(home)
  }
}
