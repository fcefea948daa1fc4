/** Messages between the vault and its chunk workers (chunkWorker.ts). */
export interface SealTask {
  kind: 'seal'
  /** Plaintext in [0, length); returned for reuse. */
  input: ArrayBuffer
  length: number
  /** Receives `nonce | ciphertext | tag`; capacity ≥ blockSize + 28; returned. */
  output: ArrayBuffer
  chunkId: Uint8Array
  packId: Uint8Array
  ordinal: number
}

export interface OpenEntry {
  /** Record position inside `buf`. */
  start: number
  length: number
  ordinal: number
  flags: number
  chunkId: Uint8Array
}

export interface OpenTask {
  kind: 'open'
  buf: ArrayBuffer
  entries: OpenEntry[]
  packId: Uint8Array
  blockSize: number
  /** True: return plaintexts (reads); false: only check them (verify, verify-before-commit). */
  returnPlain: boolean
}

export type ChunkTask = SealTask | OpenTask

export type ChunkTaskResult =
  | {
      kind: 'seal'
      input: ArrayBuffer
      output: ArrayBuffer
      storedLength: number
      flags: number
      /**
       * I9, checked in the worker on the exact sealed bytes: null when the record opened again
       * (decrypt, decompress, keyed BLAKE3 equal to the chunk id), else what failed.
       */
      verifyError: string | null
      /** CRC-32 of the verified record: the caller re-checks it right before writing (no change in between). */
      recordCrc: number
    }
  | {
      kind: 'open'
      buf: ArrayBuffer
      /** Per entry: null when it verified, else what failed. */
      errors: Array<string | null>
      /** Per entry: plaintext length (0 on error). */
      lengths: number[]
      /** Plaintexts back to back (entry i at the sum of earlier lengths), when asked for. */
      plain: ArrayBuffer | undefined
    }
