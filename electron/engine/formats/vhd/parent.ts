/**
 * Finding and opening the parent of a VHD or VHDX differencing disk: try each locator candidate,
 * check the parent's identity (its unique id must be the one the child recorded), refuse loops,
 * then open it through the chain opener.
 */
import { realpath, stat } from 'node:fs/promises'
import { EngineError } from '../../errors.js'
import type { DiskImage } from '../types.js'
import type { OpenContext } from '../open.js'
import { candidatePaths, type LocatorHint } from './locators.js'

export interface ParentSearch {
  childPath: string
  format: 'vhd' | 'vhdx'
  hints: LocatorHint[]
  /** Identities the child accepts for its parent, in canonical text form (lower-case hex / GUID). */
  expectedIds: string[]
  /** Reads the identity of a candidate file; undefined when it is not an image of `format`. */
  identityOf(path: string): Promise<string | undefined>
  ctx: OpenContext
}

async function exists(p: string): Promise<boolean> {
  try {
    return (await stat(p)).isFile()
  } catch {
    return false
  }
}

async function canonical(p: string): Promise<string> {
  try {
    return await realpath(p)
  } catch {
    return p
  }
}

/** Opens the matching parent, or throws IMAGE_BACKING_MISSING / _MISMATCH / _LOOP. */
export async function openParent(search: ParentSearch): Promise<DiskImage> {
  const { childPath, format, ctx } = search
  const candidates = candidatePaths(search.hints, childPath)
  const self = await canonical(childPath)
  const seen = new Set<string>([self])
  for (const s of ctx.seen) seen.add(await canonical(s))
  const mismatched: string[] = []
  for (const candidate of candidates) {
    if (!(await exists(candidate))) continue
    const real = await canonical(candidate)
    if (seen.has(real)) {
      throw new EngineError(
        'IMAGE_BACKING_LOOP',
        `"${childPath}" names "${candidate}" as its parent, which is already part of its own chain. The image chain is damaged.`,
      )
    }
    const id = await search.identityOf(candidate)
    if (id === undefined || !search.expectedIds.includes(id)) {
      mismatched.push(`${candidate} (${id ? `id ${id}` : `not a ${format.toUpperCase()} image`})`)
      continue
    }
    if (ctx.depth + 1 > ctx.options.maxChainDepth) {
      throw new EngineError(
        'IMAGE_BACKING_LOOP',
        `The backing chain of "${childPath}" is deeper than ${ctx.options.maxChainDepth} images; it probably loops.`,
      )
    }
    return ctx.openBacking(candidate, format)
  }
  if (mismatched.length > 0) {
    throw new EngineError(
      'IMAGE_BACKING_MISMATCH',
      `The parent of "${childPath}" was found but is a different disk (expected id ${search.expectedIds.join(' or ')}): ${mismatched.join('; ')}. ` +
        'Put the original parent disk back next to it.',
    )
  }
  const tried = candidates.length > 0 ? candidates.join(', ') : 'no usable path is recorded'
  throw new EngineError(
    'IMAGE_BACKING_MISSING',
    `The parent disk of the differencing image "${childPath}" cannot be found (tried: ${tried}). Put the parent disk back where it was.`,
  )
}
