/**
 * The parts of the WebAssembly API the engine uses: aligned memory for direct I/O (directIo.ts)
 * and the part cutter's loop (vault/partCutter.ts). The project's type libraries do not declare
 * WebAssembly, and a Node started with `--jitless` has none (then `wasm` is undefined).
 */
export const WASM_PAGE = 64 * 1024

export interface WasmMemory {
  readonly buffer: ArrayBuffer | SharedArrayBuffer
  grow(pages: number): number
}

export interface WasmApi {
  Memory: new (descriptor: { initial: number; maximum?: number; shared?: boolean }) => WasmMemory
  Module: new (bytes: Uint8Array) => object
  Instance: new (module: object, imports: object) => { exports: Record<string, unknown> }
}

export const wasm = (globalThis as unknown as { WebAssembly?: WasmApi }).WebAssembly
