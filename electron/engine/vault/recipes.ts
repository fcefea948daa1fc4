/**
 * The recipes of one pack (format 2: a block stored as content-defined parts, parts.ts), opened in
 * the workers and decoded: what verify needs to see that every part of a referenced block is
 * there, and what prune needs to keep the parts of every live block.
 */
import type { PackInfo } from './chunkTable.js'
import type { VaultContext } from './context.js'
import { packPath } from './layout.js'
import { FLAG_RECIPE, type PackIndexEntry } from './pack.js'
import { decodeRecipe, type RecipePart } from './parts.js'
import { openPackRecords } from './recordReader.js'

export function isRecipeEntry(e: Pick<PackIndexEntry, 'flags'>): boolean {
  return (e.flags & FLAG_RECIPE) !== 0
}

/**
 * Opens the recipe records among `entries` (records of `pack`) and calls `onRecipe` with each
 * one's parts, or with a string naming why it cannot be used (it does not open, or does not decode).
 * I/O failures and a missing pack throw, as in `openPackRecords`.
 */
export async function readPackRecipes(
  ctx: VaultContext,
  pack: Pick<PackInfo, 'id' | 'hex'>,
  entries: ReadonlyArray<PackIndexEntry>,
  onRecipe: (entry: PackIndexEntry, parts: RecipePart[] | string) => void,
): Promise<void> {
  const items = entries.filter(isRecipeEntry)
  if (items.length === 0) return
  await openPackRecords(ctx.pool(), ctx.fs, packPath(ctx.layout, pack.hex), pack.id, items, { returnPlain: true, blockSize: ctx.blockSize }, (k, plain, error) => {
    onRecipe(items[k]!, error ?? (plain ? decodeRecipe(plain, ctx.blockSize) : 'could not be read'))
  })
}
