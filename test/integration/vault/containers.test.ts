/**
 * Format 3: a cut block none of whose parts is stored yet is stored whole, as one container record
 * whose parts are addressed inside it by sub-entries of its pack index (FORMAT.md "Container").
 * Later blocks must deduplicate against those parts as in format 2, every read path must give back
 * the exact bytes (a block read whole from a part's place included), verify must check every part
 * and name the points a damaged container affects, and prune must keep a container while its block
 * or any of its parts is live, moving its sub-entries with it.
 */
import { readFile, writeFile } from 'node:fs/promises'
import { basename } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { backUp, BLOCK, expectedChunks, makeBlock, newVault, packFiles, partsOf, restoreDisk, shiftedText, storedKinds, tempDir, expectReadInto } from './helpers.js'
import type { LocalVault, PointManifest } from '../../../electron/engine/vault/index.js'
import { EngineError } from '../../../electron/engine/errors.js'
import type { VaultContext } from '../../../electron/engine/vault/context.js'
import { FaultFs } from './faultFs.js'
import { FLAG_CONTAINER, isSubEntry, type PackIndexEntry } from '../../../electron/engine/vault/pack.js'
import { isRecipeEntry } from '../../../electron/engine/vault/recipes.js'
import { chunkIdOf, deriveKeys } from '../../../electron/engine/vault/crypto.js'

/** Every index entry of the vault's packs, with the pack file it is in. */
async function allEntries(vault: LocalVault, dir: string): Promise<Array<PackIndexEntry & { file: string }>> {
  const ctx = (vault as unknown as { ctx: VaultContext }).ctx
  const out: Array<PackIndexEntry & { file: string }> = []
  for (const file of await packFiles(dir)) for (const e of await ctx.packEntries(basename(file))) out.push({ ...e, file })
  return out
}

async function idsOf(vault: LocalVault, point: PointManifest): Promise<Buffer[]> {
  const ids: Buffer[] = []
  for await (const e of vault.readBlockMap(point.id, 0)) if (e.kind === 'data') ids.push(e.chunkId)
  return ids
}

describe('blocks stored whole with their parts addressed inside them (format 3)', () => {
  let t: Awaited<ReturnType<typeof tempDir>>
  let vault: LocalVault
  let dir: string
  const fs = new FaultFs() // its read log: which pack bytes a call read
  let key: Buffer
  // text blocks that share no bytes, a random block, a short text tail; the same text shifted
  const { first, second } = shiftedText()
  let pa: PointManifest
  let pb: PointManifest
  let pc: PointManifest
  let shortPart: Buffer

  beforeAll(async () => {
    t = await tempDir()
    ;({ vault, key, dir } = await newVault(t.dir, { workers: 2, fs }, { packTargetBytes: 1 << 20, formatVersion: 3 }))
    pa = await backUp(vault, [{ name: 'a.raw', blocks: first }], 'A')
    pb = await backUp(vault, [{ name: 'b.raw', blocks: second }], 'B')
    // a disk whose short last block holds exactly one part of the first point's third block: it is read whole from inside that block's record
    shortPart = Buffer.from(partsOf(first[2]!, key, vault.id)[1]!)
    pc = await backUp(vault, [{ name: 'c.raw', blocks: [makeBlock(6, 'random'), shortPart] }], 'C')
  })
  afterAll(async () => {
    await vault.close()
    await t.cleanup()
  })

  it('stores a block seen for the first time as one record with a sub-entry per part, and shifted copies of it as recipes of those parts', async () => {
    const entries = await allEntries(vault, dir)
    const containers = entries.filter((e) => e.flags & FLAG_CONTAINER)
    // the first point's four text blocks always; a shifted copy too when the key cut all its parts afresh
    const kinds = storedKinds([...first, ...second], key, vault.id)
    expect(kinds.slice(0, 4)).toEqual(['container', 'container', 'container', 'container'])
    const whole = [...first, ...second].filter((_, k) => kinds[k] === 'container')
    expect(containers.map((e) => e.plainLength)).toEqual(whole.map(() => BLOCK))
    // each container is followed by its parts, which tile its plaintext in order
    for (const c of containers) {
      const at = entries.indexOf(c)
      const subs: Array<PackIndexEntry & { file: string }> = []
      for (let k = at + 1; k < entries.length && isSubEntry(entries[k]!); k++) subs.push(entries[k]!)
      expect(subs.length).toBeGreaterThanOrEqual(2)
      expect(subs.every((s) => s.ordinal === c.ordinal && s.file === entries[at]!.file)).toBe(true)
      expect(subs.map((s) => s.offset)).toEqual([0, ...subs.slice(0, -1).map((s) => s.offset + s.length)])
      expect(subs.at(-1)!.offset + subs.at(-1)!.length).toBe(BLOCK)
    }
    const subIds = new Set(entries.filter(isSubEntry).map((e) => e.chunkId.toString('hex')))
    const cut = whole.flatMap((b) => partsOf(b, key, vault.id))
    expect(subIds).toEqual(new Set(cut.map((p) => chunkIdOf(deriveKeys(key, vault.id).chunkId, p).toString('hex'))))
    // the second point's other blocks are recipes (their parts mostly inside the first point's records) and store little
    const recipes = kinds.slice(first.length).filter((k) => k === 'recipe').length
    expect(recipes).toBeGreaterThan(0)
    expect(entries.filter(isRecipeEntry).length).toBe(recipes)
    expect(pb.stats.bytesStored).toBeLessThan((0.4 * recipes + second.length - recipes) * BLOCK)
    // the short block equal to a part was not stored again
    expect(pc.stats.bytesStored).toBeLessThan(BLOCK + 8 * 1024)
    // every distinct block and part is one chunk, as in format 2; the first point's text took one record per block
    expect((await vault.stats()).chunks).toBe(expectedChunks([...first, ...second, makeBlock(6, 'random'), shortPart], key, vault.id))
  })

  it('reads every block back exactly, through readChunks and readChunksInto, a short block from inside a container included', async () => {
    for (const [point, blocks] of [[pa, first], [pb, second], [pc, [makeBlock(6, 'random'), shortPart]]] as const) {
      const back = await restoreDisk(vault, point.id, 0)
      expect(back.length).toBe(blocks.length)
      back.forEach((b, i) => expect((b as Buffer).equals(blocks[i]!)).toBe(true))
    }
    const ids = [...(await idsOf(vault, pa)), ...(await idsOf(vault, pb)), ...(await idsOf(vault, pc))]
    const want = [...first, ...second, makeBlock(6, 'random'), shortPart]
    ids.push(ids[1]!, ids.at(-1)!) // the same block twice in one call, and the short one again
    want.push(want[1]!, want.at(-1)!)
    await expectReadInto(vault, ids, want, Buffer.from(new SharedArrayBuffer(ids.length * BLOCK)))
  })

  it('reads a part once when the same call reads its container whole: no pack byte read twice', async () => {
    const ids = [...(await idsOf(vault, pa)).slice(0, 4), ...(await idsOf(vault, pb))]
    const want = [...first.slice(0, 4), ...second]
    const kinds = storedKinds([...first, ...second], key, vault.id)
    expect(kinds.slice(first.length).filter((k) => k === 'recipe').length).toBeGreaterThan(0) // the call has parts to read
    // every pack read of the call, through the vault's file system (ordinary and direct handles)
    fs.reads = []
    await expectReadInto(vault, ids, want, Buffer.from(new SharedArrayBuffer(ids.length * BLOCK)))
    const reads = fs.reads.filter((r) => r.path.includes('packs')).map((r) => ({ path: r.path, from: r.position, to: r.position + r.bytes }))
    expect(reads.length).toBeGreaterThan(0)
    // the parts of B's recipes lie inside A's records, which this call reads whole: read apart, they
    // read those records' bytes a second time
    const byPath = new Map<string, Array<{ from: number; to: number }>>()
    for (const r of reads) (byPath.get(r.path) ?? byPath.set(r.path, []).get(r.path)!).push(r)
    for (const [path, list] of byPath) {
      list.sort((x, y) => x.from - y.from)
      for (let k = 1; k < list.length; k++) expect(list[k]!.from, `${basename(path)} read twice at ${list[k]!.from}`).toBeGreaterThanOrEqual(list[k - 1]!.to)
    }
  })

  it('verify --read-data checks every part inside its record; a damaged container names every point that needs its block or one of its parts', async () => {
    const clean = await vault.verify({ readData: true })
    expect(clean.problems).toEqual([])
    const entries = await allEntries(vault, dir)
    expect(clean.checked.chunksRead).toBe(entries.length) // records and parts
    // the third text block's record: its block is A's, one part is C's short block, others B's recipe uses
    const [, , third] = await idsOf(vault, pa)
    const c = entries.find((e) => e.chunkId.equals(third!) && e.flags & FLAG_CONTAINER)!
    const orig = await readFile(c.file)
    const copy = Buffer.from(orig)
    copy[c.offset + 40]! ^= 0x04
    await writeFile(c.file, copy)
    try {
      const report = await vault.verify({ readData: true })
      const bad = report.problems.filter((p) => p.kind === 'chunk-corrupt')
      expect(bad.length).toBeGreaterThan(2) // the block and its parts
      const affected = new Map<string, Set<string>>()
      for (const p of bad) for (const a of p.affectedPoints) for (const d of a.disks) (affected.get(a.pointId) ?? affected.set(a.pointId, new Set()).get(a.pointId)!).add(d)
      // B needs that record unless the key cut B's copy of that text into parts all its own
      const thirds = new Set(partsOf(first[2]!, key, vault.id).map((p) => p.toString('hex')))
      const usedByB = second.some((b) => partsOf(b, key, vault.id).some((p) => thirds.has(p.toString('hex'))))
      expect([...affected.keys()].sort()).toEqual((usedByB ? [pa.id, pb.id, pc.id] : [pa.id, pc.id]).sort())
      for (const point of [pa, pc]) {
        const err = await restoreDisk(vault, point.id, 0).catch((e: unknown) => e)
        expect(err).toBeInstanceOf(EngineError)
        expect((err as EngineError).code).toBe('CHUNK_CORRUPT')
      }
    } finally {
      await writeFile(c.file, orig)
    }
    expect((await vault.verify({ readData: true })).problems).toEqual([])
  })

  it('prune keeps a container while its block or any of its parts is live, and moves it with its sub-entries', async () => {
    // A gone: its containers stay for B's recipes and C's short block; every partly used pack is rewritten
    const r = await vault.prune({ deletePointIds: [pa.id], maxUnused: 0 })
    expect(r.pointsRemoved).toBe(1)
    expect(r.packsRepacked).toBeGreaterThan(0)
    const after = await allEntries(vault, dir)
    expect(after.filter((e) => e.flags & FLAG_CONTAINER).length).toBeGreaterThan(0)
    expect(after.filter(isSubEntry).length).toBeGreaterThan(0)
    expect((await vault.verify({ readData: true })).problems).toEqual([])
    for (const [point, blocks] of [[pb, second], [pc, [makeBlock(6, 'random'), shortPart]]] as const) {
      const back = await restoreDisk(vault, point.id, 0)
      back.forEach((b, i) => expect((b as Buffer).equals(blocks[i]!)).toBe(true))
    }
    // B gone too: only the record holding C's short block is left of the text
    await vault.prune({ deletePointIds: [pb.id], maxUnused: 0 })
    const left = await allEntries(vault, dir)
    expect(left.filter((e) => e.flags & FLAG_CONTAINER).length).toBe(1)
    expect(left.filter(isRecipeEntry).length).toBe(0)
    expect((await vault.verify({ readData: true })).problems).toEqual([])
    const back = await restoreDisk(vault, pc.id, 0)
    expect((back[1] as Buffer).equals(shortPart)).toBe(true)
    // the same text backed up again deduplicates against what is left inside that record
    const again = await backUp(vault, [{ name: 'd.raw', blocks: [first[2]!] }], 'D')
    expect(again.stats.bytesStored).toBeLessThan(8 * 1024) // a block map and a manifest: the block's own entry was moved with its record
    expect(((await restoreDisk(vault, again.id, 0))[0] as Buffer).equals(first[2]!)).toBe(true)
    expect((await vault.verify({ readData: true })).problems).toEqual([])
  })
})
