/**
 * Commands that seal or open chunks (backup, restore, verify --read-data) start the vault's chunk
 * workers first thing: they load their modules (~0.3 s each) on the other cores while this thread
 * loads the engine, opens the catalog and the vault and fetches the key, and the vault adopts them
 * (pool.ts `prewarmWorkers`). A full backup of the bench disk began sealing ~0.3 s sooner.
 */

/**
 * Runs `body` with the chunk workers already starting; ends those no vault took (an unchanged disk).
 * Loaded when called, so that the commands' registration (--help) loads no engine module.
 */
export async function withChunkWorkers<T>(body: () => Promise<T>): Promise<T> {
  const [{ prewarmChunkWorkers }, { releaseSpareWorkers }] = await Promise.all([import('../engine/vault/chunkWorkers.js'), import('../engine/workers/pool.js')])
  prewarmChunkWorkers()
  try {
    return await body()
  } finally {
    await releaseSpareWorkers()
  }
}
