/** Paths inside a vault folder (FORMAT.md "Layout"). */
import { join } from 'node:path'

export const CONFIG_FILE = 'config'
export const FORMAT_NAME = 'tresor-vault'
/**
 * The newest format: 2 adds block recipes (content-defined parts, FORMAT.md "Recipe"); 3 stores a
 * cut block none of whose parts is stored yet as one record with its parts addressed inside it
 * (FORMAT.md "Container").
 */
export const FORMAT_VERSION = 3
/**
 * The format of new vaults unless asked for another (`tresor vault init --format 1|2`). Formats 2
 * and 3 store ~19 % less than format 1 for the benchmark's disk (the vault-size target is met only
 * by them). Format 3 stores and restores the same generated disk like format 2, and on 6.2 GB of
 * real files backs up in 27 s against 37 s, stores 8 % less and restores in 15 s against 21 s
 * (docs/PERFORMANCE.md, twenty-third round).
 */
export const DEFAULT_FORMAT_VERSION = 3
/** Versions this Tresor reads and writes: a 1.x vault stays 1.x (its blocks are stored whole). */
export const READABLE_FORMAT_VERSIONS: readonly number[] = [1, 2, 3]
export const FORMAT_MINOR = 0

export interface VaultLayout {
  root: string
  config: string
  tmp: string
  locks: string
  generations: string
  packs: string
  manifests: string
  maps: string
  /** Space kept free for prune on a full drive (deleted to make room, then recreated). */
  reserve: string
}

export function layoutOf(root: string): VaultLayout {
  return {
    root,
    config: join(root, CONFIG_FILE),
    tmp: join(root, 'tmp'),
    locks: join(root, 'locks'),
    generations: join(root, 'generations'),
    packs: join(root, 'packs'),
    manifests: join(root, 'manifests'),
    maps: join(root, 'maps'),
    reserve: join(root, 'reserve'),
  }
}

export function packPath(layout: VaultLayout, packIdHex: string): string {
  return join(layout.packs, packIdHex.slice(0, 2), packIdHex)
}

export function manifestPath(layout: VaultLayout, pointId: string): string {
  return join(layout.manifests, pointId)
}

export function mapDir(layout: VaultLayout, pointId: string): string {
  return join(layout.maps, pointId)
}

export function mapSegmentPath(layout: VaultLayout, pointId: string, diskIndex: number, segment: number): string {
  return join(layout.maps, pointId, `${diskIndex}-${segment}`)
}

export const POINT_ID_RE = /^[0-9a-f]{16}$/
export const PACK_ID_RE = /^[0-9a-f]{32}$/

export const RESERVE_BYTES = 1024 * 1024
