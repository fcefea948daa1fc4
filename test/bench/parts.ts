/**
 * Micro-benchmark: the content-defined part cutter (parts.ts, and its WebAssembly form in
 * partCutter.ts) and the compressibility sample, one thread, as a chunk worker runs them in a
 * full backup (run: `node --import tsx test/bench/parts.ts`).
 * Cuts 256 MiB in 64 KiB and 4 MiB blocks of the backup bench's compressible pool (log-like text
 * and small-integer binary, lib.ts) and of plain text lines; prints MB/s and the average part size.
 */
import { randomBytes } from 'node:crypto'
import { compressiblePool, MiB } from './lib.js'
import { cutParts, gearTable, looksCompressible } from '../../electron/engine/vault/parts.js'
import { PartCutter } from '../../electron/engine/vault/partCutter.js'

const totalBytes = 256 * MiB
const poolBytes = 32 * MiB
const gear = gearTable(randomBytes(32))
const ends: number[] = []

/** Text lines only (no binary runs): the case a log or source tree gives. */
function textPool(bytes: number): Buffer {
  const mixed = compressiblePool(7, bytes * 2)
  const out = Buffer.alloc(bytes)
  let n = 0
  for (let i = 0; i < mixed.length && n < bytes; i++) {
    const b = mixed[i]!
    if (b >= 0x20 || b === 0x0a) out[n++] = b
  }
  return out
}

function mbps(bytes: number, ms: number): string {
  return (bytes / 1e6 / (ms / 1000)).toFixed(0)
}

const pools: Array<[string, Buffer]> = [
  ['mixed pool', compressiblePool(1, poolBytes)],
  ['text only', textPool(poolBytes)],
]
const cutter = new PartCutter(gear)
const cutters: Array<[string, (block: Buffer) => number]> = [
  ['cutParts (JavaScript, the definition)', (block) => cutParts(block, gear, ends)],
  ['PartCutter (WebAssembly, the workers\' cutter)', (block) => cutter.cut(block, ends)],
]
for (const [name, pool] of pools) {
  for (const blockBytes of [64 * 1024, 4 * MiB]) {
    const blocks = Math.floor(pool.length / blockBytes)
    for (const [cutterName, cut] of cutters) {
      // warm-up: let the JIT settle on the loop before timing it
      for (let k = 0; k < Math.min(blocks, 64); k++) cut(pool.subarray(k * blockBytes, (k + 1) * blockBytes))
      let parts = 0
      let bytes = 0
      const t = performance.now()
      while (bytes < totalBytes) {
        for (let k = 0; k < blocks; k++) {
          parts += cut(pool.subarray(k * blockBytes, (k + 1) * blockBytes))
          bytes += blockBytes
        }
      }
      const ms = performance.now() - t
      console.log(`${name}, ${blockBytes / 1024} KiB blocks, ${cutterName}: ${mbps(bytes, ms)} MB/s over ${bytes / MiB} MiB, average part ${(bytes / parts).toFixed(0)} bytes`)
    }
  }
}

const samples: Array<[string, Buffer]> = [
  ['text', pools[0]![1].subarray(0, 64 * 1024)],
  ['random', randomBytes(64 * 1024)],
]
for (const [name, block] of samples) {
  const n = 20_000
  let yes = 0
  for (let k = 0; k < 1000; k++) looksCompressible(block)
  const t = performance.now()
  for (let k = 0; k < n; k++) if (looksCompressible(block)) yes++
  const us = ((performance.now() - t) * 1000) / n
  console.log(`looksCompressible, 64 KiB of ${name}: ${us.toFixed(2)} µs per block (${yes === n ? 'true' : yes === 0 ? 'false' : 'mixed'})`)
}
