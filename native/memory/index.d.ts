/**
 * Asks the kernel to back the whole pages inside `view` with transparent huge pages
 * (madvise MADV_HUGEPAGE). Returns whether it accepted; always false outside Linux.
 */
export function adviseHugePages(view: Uint8Array): boolean
/**
 * For each (from, to, length) in `triples`, copies source[from, from + length) to
 * target[to, to + length) with memmove (also between views of shared memory). Every triple is
 * checked first: a TypeError or RangeError, and nothing copied, when one is not whole, not
 * non-negative, empty or outside its view. Returns the bytes copied.
 */
export function copyTriples(source: Uint8Array, target: Uint8Array, triples: readonly number[]): number
