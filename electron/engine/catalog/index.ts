/**
 * Catalog: the SQLite index of machines, disks, policies, vault registrations, recovery points,
 * jobs and the restore queue. It is an index and control state: the vault alone can rebuild the
 * recovery-point part of it. Opened by main, the CLI and the web host alike through `openCatalog`.
 */
export { openCatalog, migrate, nowIso, CATALOG_FILE } from './db.js'
export type { Db, Migration } from './types.js'
