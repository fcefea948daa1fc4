/**
 * Digests of `count` consecutive pieces of `data`: piece k runs from the end of piece k − 1 (0 for
 * the first) to `ends[endsAt + k]`. Writes piece k's keyed BLAKE3-256 (`key`, 32 bytes) to
 * `ids[idsAt + 32k, + 32)` and, when `sums` is given, its XXH3-128 in canonical (big-endian) form
 * to `sums[sumsAt + 16k, + 16)`. Every argument is checked before anything is written: a TypeError
 * or RangeError when one is of the wrong type, not a whole non-negative number, or outside its array,
 * or when the ends go backwards or past `data`. Returns `count`.
 */
export function digestPieces(
  key: Uint8Array,
  data: Uint8Array,
  ends: Uint32Array,
  endsAt: number,
  count: number,
  ids: Uint8Array,
  idsAt: number,
  sums: Uint8Array | null,
  sumsAt: number,
): number
