/**
 * Opening images: format detection by content, the format-module registry, and backing chains.
 *
 * A format module (raw, qcow2, vhd, vhdx, vmdk) plugs in with the `FormatModule` shape and is
 * registered once by formats/index.ts. Import `openImage` from formats/index.js, which registers
 * every module before anything can open an image.
 */
import { realpath } from 'node:fs/promises'
import { dirname, isAbsolute, resolve } from 'node:path'
import { EngineError, fromFsError } from '../errors.js'
import { detectFormat } from './detect.js'
import { ImageFile } from './io.js'
import type { DiskImage, ImageFormat, OpenOptions } from './types.js'

/** What a format module receives when asked to open a file of its format. */
export interface OpenContext {
  options: Required<OpenOptions>
  /** Position in the chain: 0 for the image the caller asked for, 1 for its parent... */
  depth: number
  /** Real paths of the images opened so far in this chain, the top first (this image included). */
  seen: string[]
  /**
   * Opens a parent of the image being opened. `path` is used as given (a module resolves a relative
   * backing name against its own folder first: see `resolveBackingPath`). `format`, when the image
   * names one, is honoured instead of probing. Throws IMAGE_BACKING_MISSING when the file is not
   * there, IMAGE_BACKING_LOOP when it is already in the chain or the chain is deeper than
   * `options.maxChainDepth`. The caller owns (and closes) the returned image.
   */
  openBacking(path: string, format?: ImageFormat): Promise<DiskImage>
}

/** One disk image format as the opener sees it. */
export interface FormatModule {
  format: ImageFormat
  /** True when the content is of this format (head: first 64 KiB or less; tail: last 512 bytes or less). */
  probe(head: Buffer, fileSize: number, tail: Buffer): boolean
  /** Opens `path` (already probed or named) in the guest view, following backing files through `ctx`. */
  open(path: string, ctx: OpenContext): Promise<DiskImage>
}

const HEAD_BYTES = 64 * 1024
const TAIL_BYTES = 512
/** Probe order: the most specific magic first; raw is the fallback and never probes. */
const PROBE_ORDER: readonly ImageFormat[] = ['qcow2', 'vhdx', 'vmdk', 'vhd']

const registry = new Map<ImageFormat, FormatModule>()

/** Adds (or replaces) the module of a format. Called by formats/index.ts. */
export function registerFormat(module: FormatModule): void {
  registry.set(module.format, module)
}

/** The registered module of `format`, or undefined. */
export function formatModule(format: ImageFormat): FormatModule | undefined {
  return registry.get(format)
}

/** Resolves a backing-file name stored in an image: relative names are relative to the image's folder. */
export function resolveBackingPath(imagePath: string, backingName: string): string {
  return isAbsolute(backingName) ? backingName : resolve(dirname(imagePath), backingName)
}

/**
 * Detects the format of `path` by content (never by extension): qcow2 magic, VHDX signature,
 * VMDK sparse magic or text descriptor, VHD footer (at the end, or its copy at 0), else raw.
 */
export async function probeFormat(path: string): Promise<ImageFormat> {
  const file = await ImageFile.open(path)
  try {
    const head = await file.readUpTo(0, HEAD_BYTES)
    const tail = await file.readUpTo(Math.max(0, file.size - TAIL_BYTES), TAIL_BYTES)
    for (const format of PROBE_ORDER) {
      const mod = registry.get(format)
      if (mod?.probe(head, file.size, tail)) return format
    }
    return detectFormat(head, file.size, tail)
  } finally {
    await file.close()
  }
}

export interface OpenImageOptions extends OpenOptions {
  /** Open as this format instead of probing (e.g. a backing format named by the child image). */
  format?: ImageFormat
}

/**
 * Opens `path` in the guest view, following backing files unless `noBacking`. The caller owns the
 * returned image and must `close()` it (which closes the whole chain).
 */
export async function openImage(path: string, options: OpenImageOptions = {}): Promise<DiskImage> {
  const resolved: Required<OpenOptions> = {
    noBacking: options.noBacking ?? false,
    maxChainDepth: options.maxChainDepth ?? 64,
    blockingReads: options.blockingReads ?? false,
  }
  return openAt(resolve(path), options.format, resolved, 0, [])
}

async function openAt(
  path: string,
  format: ImageFormat | undefined,
  options: Required<OpenOptions>,
  depth: number,
  seenBefore: string[],
): Promise<DiskImage> {
  if (path.includes('\0')) {
    // A NUL can only come from a damaged or hostile header (backing-file names are read from images).
    const owner = seenBefore[seenBefore.length - 1]
    throw new EngineError(
      'IMAGE_MALFORMED',
      owner === undefined
        ? `The path "${path.replaceAll('\0', '\\0')}" contains a NUL byte.`
        : `The image "${owner}" names a backing file containing a NUL byte: its header is damaged.`,
    )
  }
  let real: string
  try {
    real = await realpath(path)
  } catch (err) {
    if (depth > 0 && (err as NodeJS.ErrnoException).code === 'ENOENT') {
      throw new EngineError(
        'IMAGE_BACKING_MISSING',
        `The backing file "${path}" of "${seenBefore[seenBefore.length - 1] ?? path}" does not exist. ` +
          'Put it back in place (or restore it) and try again.',
        { cause: err },
      )
    }
    throw fromFsError(err, path, 'opening') ?? err
  }
  if (seenBefore.includes(real)) {
    throw new EngineError(
      'IMAGE_BACKING_LOOP',
      `The backing chain of "${seenBefore[0] ?? path}" loops: "${real}" is its own ancestor. The image chain is damaged.`,
    )
  }
  if (depth > options.maxChainDepth) {
    throw new EngineError(
      'IMAGE_BACKING_LOOP',
      `The backing chain of "${seenBefore[0] ?? path}" is deeper than ${options.maxChainDepth} images; it is probably damaged.`,
    )
  }
  const fmt = format ?? (await probeFormat(real))
  const mod = registry.get(fmt)
  if (!mod) {
    throw new EngineError('IMAGE_UNSUPPORTED', `"${path}" is a ${fmt} image, which this build of Tresor cannot read yet.`)
  }
  const seen = [...seenBefore, real]
  const ctx: OpenContext = {
    options,
    depth,
    seen,
    openBacking: (backingPath, backingFormat) => openAt(backingPath, backingFormat, options, depth + 1, seen),
  }
  return mod.open(path, ctx)
}
