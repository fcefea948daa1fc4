import { openSync, readSync } from 'node:fs'
import zstd from 'zstd-napi/binding.js'
import { randomBytes } from 'node:crypto'
import { cutParts, gearTable, looksCompressible } from '../../electron/engine/vault/parts.js'
const fd = openSync('/tmp/b4/v-a.raw', 'r')
const B = 65536
const blocks: Buffer[] = []
const buf = Buffer.alloc(B)
for (let pos = 0; blocks.length < 3000 && pos < 4 * 2 ** 30; pos += B * 7) {
  readSync(fd, buf, 0, B, pos)
  if (buf.every((x) => x === 0)) continue
  if (looksCompressible(buf)) blocks.push(Buffer.from(buf))
}
const gear = gearTable(randomBytes(32)); const ends: number[] = []
const parts: Buffer[] = []
for (const b of blocks) { const n = cutParts(b, gear, ends); for (let k = 0, f = 0; k < n; f = ends[k++]!) parts.push(b.subarray(f, ends[k]!)) }
const cctx = new zstd.CCtx(); const out = Buffer.alloc(zstd.compressBound(B))
function run(name: string, items: Buffer[], f: (x: Buffer) => number) {
  for (let rep = 0; rep < 3; rep++) {
    const t = process.hrtime.bigint(); let inB = 0, outB = 0
    for (const x of items) { inB += x.length; outB += f(x) }
    const dt = Number(process.hrtime.bigint() - t) / 1e9
    if (rep) console.log(name, items.length, (inB / dt / 1e6).toFixed(0), 'MB/s', 'ratio', (outB / inB).toFixed(3), (dt / items.length * 1e6).toFixed(1), 'us/item')
  }
}
console.log('blocks', blocks.length, 'parts', parts.length)
for (const lvl of [1, -1, 2]) {
  run(`block L${lvl}`, blocks, (x) => cctx.compress(out, x, lvl))
  run(`part L${lvl}`, parts, (x) => cctx.compress(out, x, lvl))
}
const P = (zstd as any).CParameter ?? { compressionLevel: 0, windowLog: 1, hashLog: 2, chainLog: 3, searchLog: 4, minMatch: 5, targetLength: 6, strategy: 7 }
console.log(Object.keys(zstd))
for (const [name, params] of [['L1', {}], ['mm6', { minMatch: 6 }], ['mm7', { minMatch: 7 }], ['hl12', { hashLog: 12 }], ['hl13mm6', { hashLog: 13, minMatch: 6 }], ['tl2', { targetLength: 2 }], ['wl16', { windowLog: 16 }]] as const) {
  const c = new zstd.CCtx()
  c.setParameter(P.compressionLevel, 1)
  for (const [k, v] of Object.entries(params)) c.setParameter(P[k], v as number)
  run(`part2 ${name}`, parts, (x) => c.compress2(out, x))
}
