/**
 * CRC-32C (Castagnoli, reflected polynomial 0x82F63B78, initial value and final xor 0xFFFFFFFF),
 * the checksum of every VHDX header, region table and log entry. Table-driven, slicing by 8 bytes
 * so the 64 KiB region tables and multi-MiB log entries check quickly.
 */
const POLY = 0x82f63b78
const TABLES: Uint32Array[] = (() => {
  const t0 = new Uint32Array(256)
  for (let i = 0; i < 256; i++) {
    let c = i
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ POLY : c >>> 1
    t0[i] = c >>> 0
  }
  const tables = [t0]
  for (let t = 1; t < 8; t++) {
    const prev = tables[t - 1]!
    const cur = new Uint32Array(256)
    for (let i = 0; i < 256; i++) cur[i] = (prev[i]! >>> 8) ^ t0[prev[i]! & 0xff]!
    tables.push(cur)
  }
  return tables
})()

/** Continues a CRC-32C over `data` (pass the previous return value to chain; start with 0). */
export function crc32c(data: Uint8Array, previous = 0): number {
  const [t0, t1, t2, t3, t4, t5, t6, t7] = TABLES as [Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array, Uint32Array]
  let crc = ~previous >>> 0
  let i = 0
  const n = data.length
  for (; i + 8 <= n; i += 8) {
    const a = (crc ^ (data[i]! | (data[i + 1]! << 8) | (data[i + 2]! << 16) | (data[i + 3]! << 24))) >>> 0
    crc =
      t7[a & 0xff]! ^
      t6[(a >>> 8) & 0xff]! ^
      t5[(a >>> 16) & 0xff]! ^
      t4[a >>> 24]! ^
      t3[data[i + 4]!]! ^
      t2[data[i + 5]!]! ^
      t1[data[i + 6]!]! ^
      t0[data[i + 7]!]!
  }
  for (; i < n; i++) crc = t0[(crc ^ data[i]!) & 0xff]! ^ (crc >>> 8)
  return ~crc >>> 0
}

/** CRC-32C of `buf` computed as if the 4-byte field at `fieldAt` were zero. */
export function crc32cWithZeroField(buf: Uint8Array, fieldAt: number): number {
  let c = crc32c(buf.subarray(0, fieldAt))
  c = crc32c(new Uint8Array(4), c)
  return crc32c(buf.subarray(fieldAt + 4), c)
}
