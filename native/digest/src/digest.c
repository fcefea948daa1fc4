/*
 * tresor-digest: keyed BLAKE3-256 and XXH3-128 of many pieces of one buffer in one call.
 *
 * A format-3 backup hashes every block and every content-defined part of its compressible blocks
 * (~8 KiB each): on the bench's 4 GiB disk ~160,000 inputs. The JavaScript bindings take one call
 * per input: BLAKE3's reset, update and digest plus a new Buffer (~2.5 µs, as long as hashing the
 * 8 KiB itself), then XXH3's call and Buffer (~0.45 µs). This addon takes one call per block for
 * all of its pieces (`digestPieces`), or for the parts of all the blocks of a cut task
 * (`digestRanges`, hashed side by side: `keyed_pieces`), and writes the digests straight into the
 * caller's arrays.
 *
 * It also cuts a block into its content-defined parts (`cutParts`, the definition is
 * electron/engine/vault/parts.ts): the same gear-hash search as the WebAssembly cutter, written
 * straight into the caller's array of ends, without copying the block into a module's memory; and
 * it tests a backup run's blocks for zeros and checksums them in one call (`scanBlocks`).
 *
 * The hash functions are not written here: BLAKE3 is the BLAKE3 team's C implementation as shipped
 * in the @c4312/blake3-native package (with its SIMD paths chosen at run time), XXH3 is xxHash as
 * shipped in xxhash-addon (the same code that computes Tresor's checksums in JavaScript).
 */
#include <node_api.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <stdlib.h>
#include "args.h"
#include "blake3.h"
#include "blake3_impl.h"
#include "xxhash.h"
#if defined(TRESOR_XXH_DISPATCH)
#include "xxh_x86dispatch.h"
#define XXH3_128 XXH3_128bits_dispatch
#else
#define XXH3_128 XXH3_128bits
#endif

/*
 * Keyed BLAKE3 of many short pieces at once.
 *
 * BLAKE3 hashes 1 KiB chunks side by side (up to 16 at a time with AVX-512) only within one input,
 * and only in power-of-two runs of whole chunks: a content-defined part of ~8 KiB, of any length,
 * leaves about half its bytes to one-chunk-at-a-time code (a run of 2 or 1 chunks, then its partial
 * last chunk). Its chunks do not depend on each other, nor on the other parts': only a chunk's
 * position in its own piece (the counter) and the key enter it. So chunk j of every piece is hashed
 * in one `blake3_hash_many` call (counter j for all of them), then the parent nodes of all pieces
 * level by level (a BLAKE3 tree pairs neighbours left to right and lifts an odd last node unchanged),
 * the roots in a call of their own (the ROOT flag). Only a piece's partial last chunk is compressed
 * block by block. The digests are BLAKE3's (test/unit/vault/pieceDigests.test.ts compares them with
 * the reference hasher on pieces of every length class); the compression functions are the BLAKE3
 * team's, only their order is chosen here.
 *
 * Pieces of more than BATCH_MOST_CHUNKS chunks (a whole block) go through blake3_hasher, which
 * already hashes their chunks 16 at a time.
 */
#define BATCH_MOST_CHUNKS 16

/* scanBlocks' modes (index.d.ts): in 0, 1 or 2; out 3 for a block of zeros */
enum { SCAN_SKIP = 0, SCAN_TEST = 1, SCAN_SUM = 2, SCAN_ZERO = 3 };

/* One chunk of `length` ≤ 1024 bytes, block by block: its chaining value, or a root's digest. */
static void chunk_serial(const uint32_t key_words[8], const uint8_t *input, size_t length, uint64_t counter, bool root, uint8_t out[BLAKE3_OUT_LEN]) {
  uint32_t cv[8];
  memcpy(cv, key_words, sizeof cv);
  size_t blocks = length == 0 ? 1 : (length + BLAKE3_BLOCK_LEN - 1) / BLAKE3_BLOCK_LEN;
  for (size_t b = 0; b < blocks; b++) {
    size_t block_length = b + 1 < blocks ? BLAKE3_BLOCK_LEN : length - b * BLAKE3_BLOCK_LEN;
    const uint8_t *block = input + b * BLAKE3_BLOCK_LEN;
    uint8_t padded[BLAKE3_BLOCK_LEN];
    if (block_length < BLAKE3_BLOCK_LEN) {
      memset(padded, 0, sizeof padded);
      if (block_length > 0) memcpy(padded, block, block_length);
      block = padded;
    }
    uint8_t flags = KEYED_HASH | (b == 0 ? CHUNK_START : 0) | (b + 1 == blocks ? CHUNK_END | (root ? ROOT : 0) : 0);
    blake3_compress_in_place(cv, block, (uint8_t)block_length, counter, flags);
  }
  store_cv_words(out, cv);
}

static void keyed_one(const uint8_t key[BLAKE3_KEY_LEN], const uint8_t *input, size_t length, uint8_t out[BLAKE3_OUT_LEN]) {
  blake3_hasher hasher;
  blake3_hasher_init_keyed(&hasher, key);
  blake3_hasher_update(&hasher, input, length);
  blake3_hasher_finalize(&hasher, out, BLAKE3_OUT_LEN);
}

/* Where piece k starts: starts[k], or where piece k − 1 ended when the pieces are consecutive. */
static inline size_t start_of(const uint32_t *starts, const uint32_t *ends, size_t k) {
  return starts ? starts[k] : k > 0 ? ends[k - 1] : 0;
}

/*
 * The keyed BLAKE3 of `count` pieces of `data` (piece k from start_of(k) to ends[k]) into
 * ids[32k…]. Fewer than BATCH_LEAST pieces to batch give too few lanes per call (a block's ~8 parts:
 * slower than blake3_hasher's runs of 8 chunks); then each piece is hashed on its own.
 */
#define BATCH_LEAST 16
static void keyed_pieces(const uint8_t key[BLAKE3_KEY_LEN], const uint8_t *data, const uint32_t *starts, const uint32_t *ends, size_t count, uint8_t *ids) {
  if (count == 0) return;
  size_t total = 0, batched = 0;
  for (size_t k = 0; k < count; k++) {
    size_t from = start_of(starts, ends, k);
    size_t length = ends[k] - from;
    size_t chunks = length == 0 ? 1 : (length + BLAKE3_CHUNK_LEN - 1) / BLAKE3_CHUNK_LEN;
    if (chunks <= BATCH_MOST_CHUNKS) {
      total += chunks;
      batched++;
    }
  }
  /* per piece: first node, node count, chunk count, start; nodes twice (a level's input and output) */
  size_t *meta = batched >= BATCH_LEAST ? malloc(count * 4 * sizeof(size_t)) : NULL;
  uint8_t *nodes = meta ? malloc(total * BLAKE3_OUT_LEN * 3) : NULL;
  const uint8_t **inputs = nodes ? malloc(total * sizeof(uint8_t *)) : NULL;
  size_t *dest = inputs ? malloc(total * sizeof(size_t)) : NULL;
  if (!dest) {
    /* too few pieces to batch, or no memory: one piece at a time */
    free(meta), free(nodes), free(inputs);
    for (size_t k = 0; k < count; k++) {
      size_t from = start_of(starts, ends, k);
      keyed_one(key, data + from, ends[k] - from, ids + k * BLAKE3_OUT_LEN);
    }
    return;
  }
  uint8_t *level = nodes, *next = nodes + total * BLAKE3_OUT_LEN, *out = next + total * BLAKE3_OUT_LEN;
  uint32_t key_words[8];
  load_key_words(key, key_words);
  size_t most = 0;
  for (size_t k = 0, first = 0; k < count; k++) {
    size_t from = start_of(starts, ends, k);
    size_t length = ends[k] - from;
    size_t chunks = length == 0 ? 1 : (length + BLAKE3_CHUNK_LEN - 1) / BLAKE3_CHUNK_LEN;
    size_t *m = meta + 4 * k;
    m[3] = from;
    if (chunks > BATCH_MOST_CHUNKS) {
      keyed_one(key, data + from, length, ids + k * BLAKE3_OUT_LEN);
      m[1] = 0; /* done */
      continue;
    }
    m[0] = first, m[1] = chunks, m[2] = chunks;
    first += chunks;
    if (chunks > most) most = chunks;
    /* a partial last chunk, or the only chunk (the root), block by block */
    size_t last = length - (chunks - 1) * BLAKE3_CHUNK_LEN;
    if (chunks == 1) {
      chunk_serial(key_words, data + from, length, 0, true, ids + k * BLAKE3_OUT_LEN);
      m[1] = 0;
    } else if (last < BLAKE3_CHUNK_LEN) {
      chunk_serial(key_words, data + from + (chunks - 1) * BLAKE3_CHUNK_LEN, last, chunks - 1, false, level + (m[0] + chunks - 1) * BLAKE3_OUT_LEN);
    }
  }
  /* whole chunks at position j of every piece of two chunks or more, in one call per position */
  for (size_t j = 0; j < most; j++) {
    size_t n = 0;
    for (size_t k = 0; k < count; k++) {
      size_t *m = meta + 4 * k;
      if (m[1] < 2 || j >= m[2]) continue;
      size_t from = m[3];
      if (j + 1 == m[2] && ends[k] - from < m[2] * BLAKE3_CHUNK_LEN) continue; /* partial: done above */
      inputs[n] = data + from + j * BLAKE3_CHUNK_LEN;
      dest[n++] = m[0] + j;
    }
    if (n == 0) continue;
    blake3_hash_many(inputs, n, BLAKE3_CHUNK_LEN / BLAKE3_BLOCK_LEN, key_words, j, false, KEYED_HASH, CHUNK_START, CHUNK_END, out);
    for (size_t i = 0; i < n; i++) memcpy(level + dest[i] * BLAKE3_OUT_LEN, out + i * BLAKE3_OUT_LEN, BLAKE3_OUT_LEN);
  }
  /* parent nodes, a level at a time: neighbours paired, an odd last node lifted; two nodes left: the root */
  for (;;) {
    size_t n = 0, roots = 0;
    for (size_t k = 0; k < count; k++) {
      size_t *m = meta + 4 * k;
      if (m[1] != 2) continue;
      inputs[n + roots] = level + m[0] * BLAKE3_OUT_LEN;
      dest[n + roots] = k;
      roots++;
    }
    if (roots > 0) {
      blake3_hash_many(inputs, roots, 1, key_words, 0, false, KEYED_HASH | PARENT | ROOT, 0, 0, out);
      for (size_t i = 0; i < roots; i++) {
        memcpy(ids + dest[i] * BLAKE3_OUT_LEN, out + i * BLAKE3_OUT_LEN, BLAKE3_OUT_LEN);
        meta[4 * dest[i] + 1] = 0;
      }
    }
    for (size_t k = 0; k < count; k++) {
      size_t *m = meta + 4 * k;
      if (m[1] < 3) continue;
      size_t pairs = m[1] / 2;
      for (size_t i = 0; i < pairs; i++) {
        inputs[n] = level + (m[0] + 2 * i) * BLAKE3_OUT_LEN;
        dest[n++] = m[0] + i;
      }
      if (m[1] % 2) memcpy(next + (m[0] + pairs) * BLAKE3_OUT_LEN, level + (m[0] + m[1] - 1) * BLAKE3_OUT_LEN, BLAKE3_OUT_LEN);
      m[1] = pairs + m[1] % 2;
    }
    if (n == 0) break;
    blake3_hash_many(inputs, n, 1, key_words, 0, false, KEYED_HASH | PARENT, 0, 0, out);
    for (size_t i = 0; i < n; i++) memcpy(next + dest[i] * BLAKE3_OUT_LEN, out + i * BLAKE3_OUT_LEN, BLAKE3_OUT_LEN);
    uint8_t *swap = level;
    level = next, next = swap;
  }
  free(meta), free(nodes), free(inputs), free(dest);
}

/*
 * digestPieces(key, data, ends, endsAt, count, ids, idsAt, sums | null, sumsAt) and
 * digestRanges(key, data, starts, ends, at, count, ids, idsAt, sums | null, sumsAt): count (see
 * index.d.ts). One body: `ranges` says whether a Uint32Array of starts comes after the data (each
 * piece then starts there) or the pieces follow each other.
 */
static napi_value digest_common(napi_env env, napi_callback_info info, bool ranges) {
  const size_t want = ranges ? 10 : 9, s = ranges ? 1 : 0; /* s: where the arguments after `ends` moved */
  size_t argc = 10;
  napi_value argv[10];
  uint8_t *key = NULL, *data = NULL, *ids = NULL, *sums = NULL;
  uint32_t *ends = NULL, *starts = NULL;
  size_t key_length = 0, data_length = 0, starts_length = 0, ends_length = 0, ids_length = 0, sums_length = 0;
  size_t ends_at = 0, count = 0, ids_at = 0, sums_at = 0;
  napi_valuetype sums_type;
  napi_value result;
/* the message for this call's name, chosen among string literals (nothing is formatted unless thrown) */
#define WHAT(text) (ranges ? "digestRanges" text : "digestPieces" text)
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < want) {
    napi_throw_type_error(env, NULL, ranges ? "digestRanges expects (key, data, starts, ends, at, count, ids, idsAt, sums, sumsAt)"
                                            : "digestPieces expects (key, data, ends, endsAt, count, ids, idsAt, sums, sumsAt)");
    return NULL;
  }
  if (!typed_of(env, argv[0], napi_uint8_array, WHAT(" expects a Uint8Array key"), (void **)&key, &key_length)) return NULL;
  if (!typed_of(env, argv[1], napi_uint8_array, WHAT(" expects Uint8Array data"), (void **)&data, &data_length)) return NULL;
  if (ranges && !typed_of(env, argv[2], napi_uint32_array, WHAT(" expects a Uint32Array of starts"), (void **)&starts, &starts_length)) return NULL;
  if (!typed_of(env, argv[2 + s], napi_uint32_array, WHAT(" expects a Uint32Array of ends"), (void **)&ends, &ends_length)) return NULL;
  if (!index_of(env, argv[3 + s], ranges ? "digestRanges: at is not a whole non-negative number" : "digestPieces: endsAt is not a whole non-negative number", &ends_at)) return NULL;
  if (!index_of(env, argv[4 + s], WHAT(": count is not a whole non-negative number"), &count)) return NULL;
  if (!typed_of(env, argv[5 + s], napi_uint8_array, WHAT(" expects a Uint8Array for ids"), (void **)&ids, &ids_length)) return NULL;
  if (!index_of(env, argv[6 + s], WHAT(": idsAt is not a whole non-negative number"), &ids_at)) return NULL;
  if (napi_typeof(env, argv[7 + s], &sums_type) != napi_ok) return NULL;
  if (sums_type != napi_null &&
      !typed_of(env, argv[7 + s], napi_uint8_array, WHAT(" expects a Uint8Array or null for sums"), (void **)&sums, &sums_length)) return NULL;
  if (!index_of(env, argv[8 + s], WHAT(": sumsAt is not a whole non-negative number"), &sums_at)) return NULL;
  if (key_length != BLAKE3_KEY_LEN) {
    napi_throw_range_error(env, NULL, WHAT(": the key must be 32 bytes"));
    return NULL;
  }
  /* sizes stay far below 2^53, so these sums cannot wrap */
  if (ends_at + count > ends_length || (ranges && ends_at + count > starts_length) || ids_at + count * BLAKE3_OUT_LEN > ids_length ||
      (sums != NULL && sums_at + count * 16 > sums_length)) {
    napi_throw_range_error(env, NULL, ranges ? "digestRanges: the pieces do not fit the starts, ends, ids or sums given"
                                             : "digestPieces: the pieces do not fit the ends, ids or sums given");
    return NULL;
  }
  if (starts) starts += ends_at;
  ends += ends_at;
  /* every piece checked before any digest is written */
  for (size_t k = 0; k < count; k++) {
    size_t from = start_of(starts, ends, k), end = ends[k];
    if (end < from || end > data_length) {
      napi_throw_range_error(env, NULL, ranges ? "digestRanges: a piece ends before it starts or past the data"
                                               : "digestPieces: the ends go backwards or past the data");
      return NULL;
    }
  }
#undef WHAT
  keyed_pieces(key, data, starts, ends, count, ids + ids_at);
  if (sums != NULL) {
    for (size_t k = 0; k < count; k++) {
      size_t from = start_of(starts, ends, k);
      XXH128_canonical_t canonical;
      XXH128_canonicalFromHash(&canonical, XXH3_128(data + from, ends[k] - from));
      memcpy(sums + sums_at + k * 16, canonical.digest, 16);
    }
  }
  if (napi_create_uint32(env, (uint32_t)count, &result) != napi_ok) return NULL;
  return result;
}

static napi_value digest_pieces(napi_env env, napi_callback_info info) {
  return digest_common(env, info, false);
}

static napi_value digest_ranges(napi_env env, napi_callback_info info) {
  return digest_common(env, info, true);
}

/* A whole number below 2^32, or false after throwing (TypeError or RangeError) with `what`. */
static bool u32_of(napi_env env, napi_value value, const char *what, uint32_t *out) {
  size_t v;
  if (!whole_of(env, value, 4294967295.0, what, &v)) return false;
  *out = (uint32_t)v;
  return true;
}

/*
 * The first cut a part's search finds (parts.ts `cutBounds`): hashing from `from` with a fresh
 * hash, the offset just past the first byte where the hash has no bit of `strict` set before
 * `normal`, or none of `loose` from `normal` on; `max` when there is none. `h = 2h + gear[byte]`
 * compiles to one LEA per byte on x86-64.
 */
static size_t search_cut(const uint8_t *data, const uint32_t *gear, size_t from, size_t normal, size_t max, uint32_t strict, uint32_t loose) {
  uint32_t h = 0;
  size_t i = from;
  for (; i < normal; i++) {
    h = (h << 1) + gear[data[i]];
    if ((h & strict) == 0) return i + 1;
  }
  for (; i < max; i++) {
    h = (h << 1) + gear[data[i]];
    if ((h & loose) == 0) return i + 1;
  }
  return max;
}

/* cutParts(gear, data, minBytes, avgBytes, maxBytes, strictMask, looseMask, ends, endsAt): count (see index.d.ts). */
static napi_value cut_parts(napi_env env, napi_callback_info info) {
  size_t argc = 9;
  napi_value argv[9];
  uint32_t *gear = NULL, *ends = NULL;
  uint8_t *data = NULL;
  size_t gear_length = 0, data_length = 0, ends_length = 0, ends_at = 0;
  uint32_t min_bytes, avg_bytes, max_bytes, strict, loose;
  napi_value result;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 9) {
    napi_throw_type_error(env, NULL, "cutParts expects (gear, data, minBytes, avgBytes, maxBytes, strictMask, looseMask, ends, endsAt)");
    return NULL;
  }
  if (!typed_of(env, argv[0], napi_uint32_array, "cutParts expects a Uint32Array gear table", (void **)&gear, &gear_length)) return NULL;
  if (!typed_of(env, argv[1], napi_uint8_array, "cutParts expects Uint8Array data", (void **)&data, &data_length)) return NULL;
  if (!u32_of(env, argv[2], "cutParts: minBytes is not a whole number below 2^32", &min_bytes)) return NULL;
  if (!u32_of(env, argv[3], "cutParts: avgBytes is not a whole number below 2^32", &avg_bytes)) return NULL;
  if (!u32_of(env, argv[4], "cutParts: maxBytes is not a whole number below 2^32", &max_bytes)) return NULL;
  if (!u32_of(env, argv[5], "cutParts: strictMask is not a whole number below 2^32", &strict)) return NULL;
  if (!u32_of(env, argv[6], "cutParts: looseMask is not a whole number below 2^32", &loose)) return NULL;
  if (!typed_of(env, argv[7], napi_uint32_array, "cutParts expects a Uint32Array of ends", (void **)&ends, &ends_length)) return NULL;
  if (!index_of(env, argv[8], "cutParts: endsAt is not a whole non-negative number", &ends_at)) return NULL;
  if (gear_length != 256) {
    napi_throw_range_error(env, NULL, "cutParts: the gear table must hold 256 values");
    return NULL;
  }
  if (min_bytes < 1 || avg_bytes < min_bytes || max_bytes < avg_bytes) {
    napi_throw_range_error(env, NULL, "cutParts: the part sizes must satisfy 1 <= minBytes <= avgBytes <= maxBytes");
    return NULL;
  }
  if (data_length > 0xffffffffu) {
    napi_throw_range_error(env, NULL, "cutParts: the data must be shorter than 4 GiB");
    return NULL;
  }
  /* every part but the last is longer than minBytes: at most data / (min + 1) + 1 ends, none for no data */
  size_t most = data_length == 0 ? 0 : data_length / ((size_t)min_bytes + 1) + 1;
  if (ends_at > ends_length || ends_length - ends_at < most) {
    napi_throw_range_error(env, NULL, "cutParts: the ends do not fit the array given");
    return NULL;
  }
  size_t count = 0, start = 0;
  while (start < data_length) {
    size_t remaining = data_length - start;
    if (remaining <= min_bytes) {
      ends[ends_at + count++] = (uint32_t)data_length;
      break;
    }
    size_t max = start + (remaining < max_bytes ? remaining : max_bytes);
    size_t normal = start + (remaining < avg_bytes ? remaining : avg_bytes);
    start = search_cut(data, gear, start + min_bytes, normal, max, strict, loose);
    ends[ends_at + count++] = (uint32_t)start;
  }
  if (napi_create_uint32(env, (uint32_t)count, &result) != napi_ok) return NULL;
  return result;
}

/*
 * sampledEntropy(table, data, most): the order-0 entropy, in bits per byte, of `most` bytes spread
 * evenly over `data` (all of them when it is shorter), as vault/parts.ts `sampledEntropy` computes
 * it: `table[c]` holds c·log2(c) (JavaScript's values, so the sum is the same double, added in the
 * same order). 1.0–1.6 µs a block in cache, against 1.6–2.6 µs in JavaScript.
 */
static napi_value sampled_entropy(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3], result;
  double *table = NULL;
  uint8_t *data = NULL;
  size_t table_length = 0, data_length = 0, most = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 3) {
    napi_throw_type_error(env, NULL, "sampledEntropy expects (table, data, most)");
    return NULL;
  }
  if (!typed_of(env, argv[0], napi_float64_array, "sampledEntropy expects a Float64Array table", (void **)&table, &table_length)) return NULL;
  if (!typed_of(env, argv[1], napi_uint8_array, "sampledEntropy expects Uint8Array data", (void **)&data, &data_length)) return NULL;
  if (!index_of(env, argv[2], "sampledEntropy: most is not a whole non-negative number", &most)) return NULL;
  if (most < 1 || table_length < most + 1) {
    napi_throw_range_error(env, NULL, "sampledEntropy: most must be at least 1 and the table hold most + 1 values");
    return NULL;
  }
  uint32_t histogram[256] = {0};
  size_t step = data_length / most > 1 ? data_length / most : 1;
  size_t n = 0;
  for (size_t i = 0; i < data_length && n < most; i += step, n++) histogram[data[i]]++;
  double bits = 0;
  if (n > 0) {
    double sum = 0;
    for (int b = 0; b < 256; b++) sum += table[histogram[b]];
    bits = (table[n] - sum) / (double)n;
  }
  if (napi_create_double(env, bits, &result) != napi_ok) return NULL;
  return result;
}

/*
 * Whether `length` bytes at `p` are all zero: the first 16 bytes are zero and every byte equals the
 * one 16 bytes before it (one memcmp of the buffer against itself, glibc's SIMD compare, which stops
 * at the first difference: a block of data is settled within its first bytes).
 */
static bool all_zero(const uint8_t *p, size_t length) {
  static const uint8_t zeros[16] = {0};
  if (length <= 16) return memcmp(p, zeros, length) == 0;
  return memcmp(p, zeros, 16) == 0 && memcmp(p, p + 16, length - 16) == 0;
}

/*
 * scanBlocks(data, blockSize, modes, count, sums): count (see index.d.ts). The backup's block loop
 * asks this once per run of blocks instead of a zero test, a checksum call and a new Buffer per
 * block (pipeline.ts `processRun`).
 */
static napi_value scan_blocks(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5], result;
  uint8_t *data = NULL, *modes = NULL, *sums = NULL;
  size_t data_length = 0, modes_length = 0, sums_length = 0, block_size = 0, count = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 5) {
    napi_throw_type_error(env, NULL, "scanBlocks expects (data, blockSize, modes, count, sums)");
    return NULL;
  }
  if (!typed_of(env, argv[0], napi_uint8_array, "scanBlocks expects Uint8Array data", (void **)&data, &data_length)) return NULL;
  if (!index_of(env, argv[1], "scanBlocks: blockSize is not a whole non-negative number", &block_size)) return NULL;
  if (!typed_of(env, argv[2], napi_uint8_array, "scanBlocks expects a Uint8Array of modes", (void **)&modes, &modes_length)) return NULL;
  if (!index_of(env, argv[3], "scanBlocks: count is not a whole non-negative number", &count)) return NULL;
  if (!typed_of(env, argv[4], napi_uint8_array, "scanBlocks expects a Uint8Array for sums", (void **)&sums, &sums_length)) return NULL;
  if (block_size < 1) {
    napi_throw_range_error(env, NULL, "scanBlocks: blockSize must be at least 1");
    return NULL;
  }
  /* every block named starts inside the data; sizes stay far below 2^53, so nothing wraps */
  if (count > modes_length || count * 16 > sums_length || (count > 0 && (count - 1) * block_size >= data_length)) {
    napi_throw_range_error(env, NULL, "scanBlocks: the blocks do not fit the data, modes or sums given");
    return NULL;
  }
  for (size_t j = 0; j < count; j++) {
    if (modes[j] > SCAN_SUM) {
      napi_throw_range_error(env, NULL, "scanBlocks: a mode is not 0, 1 or 2");
      return NULL;
    }
  }
  for (size_t j = 0; j < count; j++) {
    if (modes[j] == SCAN_SKIP) continue;
    const uint8_t *block = data + j * block_size;
    size_t length = data_length - j * block_size < block_size ? data_length - j * block_size : block_size;
    if (all_zero(block, length)) {
      modes[j] = SCAN_ZERO;
    } else if (modes[j] == SCAN_SUM) {
      XXH128_canonical_t canonical;
      XXH128_canonicalFromHash(&canonical, XXH3_128(block, length));
      memcpy(sums + j * 16, canonical.digest, 16);
    }
  }
  if (napi_create_uint32(env, (uint32_t)count, &result) != napi_ok) return NULL;
  return result;
}

/* aead.c */
napi_value aes_gcm_key(napi_env env, napi_callback_info info);
napi_value aes_gcm(napi_env env, napi_callback_info info);
napi_value aes_gcm_engines(napi_env env, napi_callback_info info);

static napi_value init(napi_env env, napi_value exports) {
  static const struct {
    const char *name;
    napi_callback call;
  } calls[] = {
      {"digestPieces", digest_pieces}, {"digestRanges", digest_ranges}, {"cutParts", cut_parts},
      {"sampledEntropy", sampled_entropy}, {"scanBlocks", scan_blocks}, {"aesGcmEngines", aes_gcm_engines},
      {"aesGcmKey", aes_gcm_key}, {"aesGcm", aes_gcm},
  };
  for (size_t i = 0; i < sizeof calls / sizeof calls[0]; i++) {
    napi_value fn;
    if (napi_create_function(env, calls[i].name, NAPI_AUTO_LENGTH, calls[i].call, NULL, &fn) != napi_ok ||
        napi_set_named_property(env, exports, calls[i].name, fn) != napi_ok) return NULL;
  }
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
