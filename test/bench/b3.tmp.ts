import { ChunkIdHasher } from '../../electron/engine/vault/crypto.js'
import { randomBytes } from 'node:crypto'
const h = new ChunkIdHasher(randomBytes(32))
const data = randomBytes(64 << 20)
for (const size of [4096, 8192, 16384, 65536, 1 << 20]) {
  for (let rep = 0; rep < 2; rep++) {
    const t = process.hrtime.bigint()
    let n = 0
    for (let off = 0; off + size <= data.length; off += size) { h.of(data.subarray(off, off + size)); n++ }
    const dt = Number(process.hrtime.bigint() - t) / 1e9
    if (rep) console.log(size, (data.length / dt / 2 ** 30).toFixed(2), 'GiB/s', (dt / n * 1e6).toFixed(2), 'us/call')
  }
}
