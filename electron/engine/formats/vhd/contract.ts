/**
 * Temporary local copy of the format-module contract published by formats-core in `../open.ts`.
 * Deleted once `../open.ts` exists (then imported from there).
 */
import type { DiskImage, ImageFormat, OpenOptions } from '../types.js'

export interface OpenContext {
  options: Required<OpenOptions>
  depth: number
  seen: string[]
  openBacking(path: string, format?: ImageFormat): Promise<DiskImage>
}

export interface FormatModule {
  format: ImageFormat
  probe(head: Buffer, fileSize: number, tail: Buffer): boolean
  open(path: string, ctx: OpenContext): Promise<DiskImage>
}
