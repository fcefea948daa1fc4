/**
 * Chunk ids (keyed BLAKE3-256) and block checksums (XXH3-128) of many pieces of one buffer in one
 * call: a block and its content-defined parts (format 3) in the cut task.
 *
 * The JavaScript bindings hash one input per call: BLAKE3's reset, update and digest plus a new
 * Buffer cost ~2.5 µs, as long as hashing an 8 KiB part, and XXH3's call ~0.45 µs more. A full
 * backup of the bench's 4 GiB disk hashes ~160,000 inputs. The `tresor-digest` addon (native/digest,
 * built by `npm ci` from the BLAKE3 team's C code in @c4312/blake3-native and xxHash's in
 * xxhash-addon) hashes all the pieces of a block in one call and writes the digests straight into
 * the caller's arrays. Without it (a failed build, or `TRESOR_NO_NATIVE_DIGEST=1`) the same digests
 * come from the bindings one piece at a time (test/unit/vault/pieceDigests.test.ts checks both
 * against each other). The addon also cuts blocks into their parts (partCutter.ts `createBlockCutter`)
 * and encrypts records with one AES-256-GCM key schedule per key (chunkCodec.ts `createRecordCipher`),
 * through Intel's ipsec-mb where it runs its VAES code, else through OpenSSL.
 */
import { CHECKSUM_BYTES, createBlockHasher } from '../backup/checksum.js'
import { CHUNK_ID_BYTES, ChunkIdHasher } from './crypto.js'
import { EngineError } from '../errors.js'
import { loadOptionalAddon } from '../io/optionalAddon.js'
import { wasm } from '../io/wasm.js'

/** The addon's calls (native/digest/index.d.ts). */
type Addon = typeof import('tresor-digest')
/** `digestPieces`'s arguments after the key, which a digester holds. */
type PieceArgs = Parameters<Addon['digestPieces']> extends [unknown, ...infer Rest] ? Rest : never
/** `digestRanges`'s arguments after the key. */
type RangeArgs = Parameters<Addon['digestRanges']> extends [unknown, ...infer Rest] ? Rest : never

let addon: Addon | null | undefined

/** Whether the addon is here (built by `npm ci` from native/digest) and not turned off. */
export function nativeDigestLoaded(): boolean {
  return nativeDigestState().pieces === 'native, a block per call'
}

/** The addon when it loads and is not turned off (`TRESOR_NO_NATIVE_DIGEST=1`), else null. */
export function digestAddon(): Addon | null {
  return nativeDigestLoaded() ? addon! : null
}

/** Where blocks are cut into parts: the addon, else the WebAssembly cutter, else JavaScript (partCutter.ts). */
export type CutWay = 'native' | 'WebAssembly' | 'JavaScript'

/** What `tresor vault info` tells about the addon, so that its absence is not silent. */
export interface NativeDigestState {
  /** The addon loads. */
  addon: boolean
  /** How chunk ids and checksums of a block's pieces are computed. */
  pieces: 'native, a block per call' | 'one per call: TRESOR_NO_NATIVE_DIGEST=1' | 'one per call: no native addon' | typeof STALE_ADDON
  /** How blocks are cut into parts (the same cuts every way). */
  cuts: CutWay
  /** How records are encrypted and opened (AES-256-GCM, the same bytes every way: chunkCodec.ts `RecordCipher`). */
  cipher: CipherState
}

/**
 * Who does records' AES-256-GCM: the addon through Intel's ipsec-mb (VAES, ~2.8× OpenSSL here) or
 * through OpenSSL, a key schedule per key either way; else @ronomon/crypto-async, a context per call.
 */
export type CipherEngine = 'ipsec-mb' | 'openssl' | 'ronomon'

/** `NativeDigestState.cipher` for each engine (`tresor vault info --json`). */
const CIPHER_STATES = {
  'ipsec-mb': 'native, ipsec-mb (VAES), a schedule per key',
  openssl: 'native, a context per key',
  ronomon: 'a context per call',
} as const satisfies Record<CipherEngine, string>
export type CipherState = (typeof CIPHER_STATES)[CipherEngine]

let addonEngines: ReadonlyArray<'ipsec-mb' | 'openssl'> | undefined

/** The addon's AES-GCM engines (`aesGcmEngines`, asked once), fastest first, without ipsec-mb under `TRESOR_NO_IPSEC_MB=1`. */
function usableAddonEngines(native: Addon): Array<'ipsec-mb' | 'openssl'> {
  addonEngines ??= native.aesGcmEngines()
  return addonEngines.filter((e) => e !== 'ipsec-mb' || process.env.TRESOR_NO_IPSEC_MB !== '1')
}

/**
 * The engines this process can use, the fastest first: the addon's (ipsec-mb only where the library
 * is installed and the CPU has VAES), then @ronomon/crypto-async, always there.
 */
export function cipherEngines(): CipherEngine[] {
  const native = digestAddon()
  return native ? [...usableAddonEngines(native), 'ronomon'] : ['ronomon']
}

/** Every call the engine makes of the addon. */
const ADDON_CALLS = ['digestPieces', 'digestRanges', 'cutParts', 'sampledEntropy', 'scanBlocks', 'aesGcmEngines', 'aesGcmKey', 'aesGcm'] as const satisfies ReadonlyArray<keyof Addon>

/** `NativeDigestState.pieces` for an addon built from older sources than the engine's. */
const STALE_ADDON = 'one per call: the addon is out of date (npm rebuild tresor-digest)'

/**
 * Whether `loaded` has every call the engine makes. An addon built before a call was added (a
 * checkout updated without `npm ci`) is used for none of them, instead of failing on the missing
 * one in the middle of a backup.
 */
export function addonIsComplete(loaded: object): boolean {
  return ADDON_CALLS.every((name) => typeof (loaded as Record<string, unknown>)[name] === 'function')
}

let complete: boolean | undefined

export function nativeDigestState(): NativeDigestState {
  addon ??= loadOptionalAddon<Addon>('tresor-digest')
  const fallback: CutWay = wasm ? 'WebAssembly' : 'JavaScript'
  if (addon === null) return { addon: false, pieces: 'one per call: no native addon', cuts: fallback, cipher: CIPHER_STATES.ronomon }
  complete ??= addonIsComplete(addon)
  if (!complete) return { addon: true, pieces: STALE_ADDON, cuts: fallback, cipher: CIPHER_STATES.ronomon }
  if (process.env.TRESOR_NO_NATIVE_DIGEST === '1') return { addon: true, pieces: 'one per call: TRESOR_NO_NATIVE_DIGEST=1', cuts: fallback, cipher: CIPHER_STATES.ronomon }
  return { addon: true, pieces: 'native, a block per call', cuts: 'native', cipher: CIPHER_STATES[usableAddonEngines(addon)[0]!] }
}

/**
 * Digests consecutive pieces of a buffer. Piece k of a call runs from the end of piece k − 1 (0 for
 * the first) to `ends[endsAt + k]`; its chunk id goes to `ids[idsAt + 32k, + 32)` and, when `sums`
 * is given, its checksum to `sums[sumsAt + 16k, + 16)`.
 */
export interface PieceDigester {
  /** Whether the native addon does the work (else the bindings, one piece at a time). */
  readonly native: boolean
  digest(...args: PieceArgs): void
  /**
   * The same for pieces anywhere in `data`: piece k runs from `starts[at + k]` to `ends[at + k]`.
   * Natively, many short pieces in one call are hashed side by side (the parts of a cut task's
   * blocks: ~1.7× faster than a block's parts per call).
   */
  ranges(...args: RangeArgs): void
}

/**
 * A digester for chunk ids under `key` (the vault's 32-byte chunk id key): native when the addon is
 * here, unless `preferNative` is false (tests compare both).
 */
export function createPieceDigester(key: Uint8Array, preferNative = true): PieceDigester {
  if (key.length !== 32) throw new EngineError('INVALID_INPUT', 'The chunk id key must be 32 bytes.')
  const native = preferNative && nativeDigestLoaded() ? addon! : null
  if (native) {
    const own = Uint8Array.from(key)
    return {
      native: true,
      digest(...args) {
        native.digestPieces(own, ...args)
      },
      ranges(...args) {
        native.digestRanges(own, ...args)
      },
    }
  }
  const idHasher = new ChunkIdHasher(key)
  const sumHasher = createBlockHasher()
  /** Piece k from `startOf(k)` to `ends[at + k]`, every piece checked before any digest is written. */
  const each = (data: Uint8Array, startOf: (k: number) => number, ends: Uint32Array, at: number, count: number, ids: Uint8Array, idsAt: number, sums: Uint8Array | null, sumsAt: number): void => {
    if (ends.length < at + count || ids.length < idsAt + count * CHUNK_ID_BYTES || (sums && sums.length < sumsAt + count * CHECKSUM_BYTES)) {
      throw new RangeError('digest: the pieces do not fit the ends, ids or sums given')
    }
    for (let k = 0; k < count; k++) {
      const from = startOf(k)
      const end = ends[at + k]!
      if (!(from <= end) || end > data.length) throw new RangeError('digest: a piece ends before it starts or past the data')
    }
    for (let k = 0; k < count; k++) {
      const piece = data.subarray(startOf(k), ends[at + k]!)
      ids.set(idHasher.of(piece), idsAt + k * CHUNK_ID_BYTES)
      if (sums) sums.set(sumHasher.checksum(piece), sumsAt + k * CHECKSUM_BYTES)
    }
  }
  return {
    native: false,
    digest(data, ends, endsAt, count, ...out) {
      each(data, (k) => (k > 0 ? ends[endsAt + k - 1]! : 0), ends, endsAt, count, ...out)
    },
    ranges(data, starts, ends, at, count, ...out) {
      if (starts.length < at + count) throw new RangeError('digest: the pieces do not fit the starts given')
      each(data, (k) => starts[at + k]!, ends, at, count, ...out)
    },
  }
}
