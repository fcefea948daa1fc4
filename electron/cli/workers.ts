/**
 * Commands that seal or open chunks (backup, restore, verify --read-data) start the vault's chunk
 * workers first thing: they load their modules (~0.3 s each) on the other cores while this thread
 * loads the engine, opens the catalog and the vault and fetches the key, and the vault adopts them
 * (pool.ts `prewarmWorkers`). A full backup of the bench disk began sealing ~0.3 s sooner.
 */

/**
 * Runs `body`, the command of that job kind, with the chunk workers already starting when it needs
 * them (chunkWorkers.ts `needsChunkWorkers`, the rule job processes follow too); ends those no
 * vault took (an unchanged disk). Loaded when called, so that the commands' registration (--help)
 * loads no engine module.
 */
export async function withChunkWorkers<T>(kind: 'backup' | 'restore' | 'verify', input: unknown, body: () => Promise<T>): Promise<T> {
  const [{ needsChunkWorkers, prewarmChunkWorkers }, { releaseSpareWorkers }] = await Promise.all([import('../engine/vault/chunkWorkers.js'), import('../engine/workers/pool.js')])
  if (!needsChunkWorkers(kind, input)) return body()
  prewarmChunkWorkers()
  try {
    return await body()
  } finally {
    await releaseSpareWorkers()
  }
}
