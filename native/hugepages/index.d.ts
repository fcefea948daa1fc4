/**
 * Asks the kernel to back the whole pages inside `view` with transparent huge pages
 * (madvise MADV_HUGEPAGE). Returns whether it accepted; always false outside Linux.
 */
export function adviseHugePages(view: Uint8Array): boolean
