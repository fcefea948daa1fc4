import { createRequire } from 'node:module'

/**
 * Loads one of Tresor's own native addons (native/memory, native/digest), which `npm ci` builds and
 * Tresor can do without (each caller has a fallback): the module, or null when it is not there or
 * does not load (no compiler at install, another platform). Callers load it once and keep it.
 */
export function loadOptionalAddon<T>(name: 'tresor-memory' | 'tresor-digest'): T | null {
  try {
    return createRequire(import.meta.url)(name) as T
  } catch {
    return null
  }
}
