/**
 * Micro-benchmark: keyed BLAKE3-256 bindings for chunk ids (run: `node --import tsx test/bench/vaultHash.ts`).
 * Compares @napi-rs/blake-hash (Blake3Hasher.newKeyed) with hash-wasm (createBLAKE3(256, key)) on
 * 1 MiB blocks, single thread, and checks that both give the same digest (keyed mode is standard).
 */
import { randomBytes } from 'node:crypto'
import { Blake3Hasher } from '@napi-rs/blake-hash'
import { createBLAKE3 } from 'hash-wasm'

const key = randomBytes(32)
const blockSizes = [64 * 1024, 1024 * 1024, 4 * 1024 * 1024]
const totalBytes = 512 * 1024 * 1024

function mbps(bytes: number, ms: number): string {
  return ((bytes / 1e6) / (ms / 1000)).toFixed(0)
}

const wasm = await createBLAKE3(256, key)
for (const blockSize of blockSizes) {
  const block = randomBytes(blockSize)
  const n = Math.max(1, Math.floor(totalBytes / blockSize))
  // agreement
  const a = Blake3Hasher.newKeyed(key).update(block).digestBuffer()
  wasm.init()
  wasm.update(block)
  const b = Buffer.from(wasm.digest('binary'))
  if (!a.equals(b)) throw new Error('bindings disagree on keyed BLAKE3')
  let t = performance.now()
  for (let i = 0; i < n; i++) Blake3Hasher.newKeyed(key).update(block).digestBuffer()
  const napiMs = performance.now() - t
  t = performance.now()
  for (let i = 0; i < n; i++) {
    wasm.init()
    wasm.update(block)
    wasm.digest('binary')
  }
  const wasmMs = performance.now() - t
  console.log(`block ${blockSize / 1024} KiB: napi ${mbps(n * blockSize, napiMs)} MB/s, wasm ${mbps(n * blockSize, wasmMs)} MB/s, napi/wasm ${(wasmMs / napiMs).toFixed(2)}x`)
}
