/**
 * Micro-benchmark: CPU of format 3's cut tasks (chunk ids, checksums, cut points and part ids of
 * every block) over a disk image's non-zero 64 KiB blocks, with the tresor-digest addon and with the
 * bindings one piece at a time (`TRESOR_NO_NATIVE_DIGEST=1`), alternating, in this process.
 *   node --import tsx test/bench/cutTasks.ts [image, default: a generated 512 MiB mixed disk] [pairs]
 * Prints the CPU seconds spent in the handler per pass, and checks that both give the same reply.
 */
import { closeSync, openSync, readSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chunkTaskHandler } from '../../electron/engine/vault/chunkHandler.js'
import { deriveKeys } from '../../electron/engine/vault/crypto.js'
import { writeMixedDisk } from './lib.js'

const BLOCK = 64 * 1024
const PER_TASK = 64
const keys = deriveKeys(randomBytes(32), 'ab'.repeat(16))

let image = process.argv[2]
let scratch: string | undefined
if (!image) {
  scratch = await mkdtemp(join(tmpdir(), 'tresor-cut-'))
  image = join(scratch, 'mixed.raw')
  await writeMixedDisk(image, 512 * 1024 * 1024, 42)
}
const pairs = Number(process.argv[3] ?? 3)

interface Pass {
  cpu: number
  blocks: number
  parts: number
  digest: string
}

async function pass(native: boolean): Promise<Pass> {
  if (!native) process.env.TRESOR_NO_NATIVE_DIGEST = '1'
  try {
    const handler = chunkTaskHandler({ dataKey: keys.data, chunkIdKey: keys.chunkId, blockSize: BLOCK, compressionLevel: 3 })
    const fd = openSync(image!, 'r')
    const buf = Buffer.alloc(BLOCK * PER_TASK)
    const zero = Buffer.alloc(BLOCK)
    const out = { cpu: 0, blocks: 0, parts: 0, digest: '' }
    const fold = Buffer.alloc(32)
    try {
      for (let pos = 0; ; ) {
        const n = readSync(fd, buf, 0, buf.length, pos)
        if (n <= 0) break
        pos += n
        const keep: Buffer[] = []
        for (let at = 0; at + BLOCK <= n; at += BLOCK) if (!buf.subarray(at, at + BLOCK).equals(zero)) keep.push(buf.subarray(at, at + BLOCK))
        if (keep.length === 0) continue
        const input = Buffer.concat(keep)
        const t = process.cpuUsage()
        const r = (await handler({ kind: 'cut', input: input.buffer.slice(input.byteOffset, input.byteOffset + input.length), lengths: keep.map((b) => b.length), blockSize: BLOCK })).value
        const d = process.cpuUsage(t)
        out.cpu += (d.user + d.system) / 1e6
        if (r.kind !== 'cut') throw new Error('not a cut reply')
        out.blocks += keep.length
        out.parts += r.ends.length
        // every id and checksum of the pass, folded (XOR) into 32 bytes to compare the two ways
        for (const bytes of [r.ids, r.partIds, r.sums, r.partSums]) for (let i = 0; i < bytes.length; i++) fold[i % 32]! ^= bytes[i]!
      }
    } finally {
      closeSync(fd)
    }
    out.digest = fold.toString('hex')
    return out
  } finally {
    delete process.env.TRESOR_NO_NATIVE_DIGEST
  }
}

const seen = new Set<string>()
for (let i = 0; i < pairs; i++) {
  for (const native of [true, false]) {
    const r = await pass(native)
    seen.add(r.digest)
    console.log(`${native ? 'tresor-digest' : 'bindings     '} ${r.cpu.toFixed(2)} CPU-s  ${r.blocks} blocks, ${r.parts} parts`)
  }
}
if (scratch) await rm(scratch, { recursive: true, force: true })
if (seen.size !== 1) throw new Error('the two ways gave different ids or checksums')
console.log('same ids and checksums both ways')
