/*
 * tresor-digest: keyed BLAKE3-256 and XXH3-128 of many pieces of one buffer in one call.
 *
 * A format-3 backup hashes every block and every content-defined part of its compressible blocks
 * (~8 KiB each): on the bench's 4 GiB disk ~160,000 inputs. The JavaScript bindings take one call
 * per input: BLAKE3's reset, update and digest plus a new Buffer (~2.5 µs, as long as hashing the
 * 8 KiB itself), then XXH3's call and Buffer (~0.45 µs). This addon takes one call per block for
 * all of its pieces and writes the digests straight into the caller's arrays.
 *
 * It also cuts a block into its content-defined parts (`cutParts`, the definition is
 * electron/engine/vault/parts.ts): the same gear-hash search as the WebAssembly cutter, written
 * straight into the caller's array of ends, without copying the block into a module's memory.
 *
 * The hash functions are not written here: BLAKE3 is the BLAKE3 team's C implementation as shipped
 * in the @c4312/blake3-native package (with its SIMD paths chosen at run time), XXH3 is xxHash as
 * shipped in xxhash-addon (the same code that computes Tresor's checksums in JavaScript).
 */
#include <node_api.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include "blake3.h"
#include "xxhash.h"
#if defined(TRESOR_XXH_DISPATCH)
#include "xxh_x86dispatch.h"
#define XXH3_128 XXH3_128bits_dispatch
#else
#define XXH3_128 XXH3_128bits
#endif

/* A typed array argument of type `want`, or false after throwing a TypeError with `what`. */
static bool typed_of(napi_env env, napi_value value, napi_typedarray_type want, const char *what, void **data, size_t *length) {
  bool is_typed = false;
  napi_typedarray_type type;
  void *ptr = NULL;
  if (napi_is_typedarray(env, value, &is_typed) != napi_ok || !is_typed ||
      napi_get_typedarray_info(env, value, &type, length, &ptr, NULL, NULL) != napi_ok || type != want) {
    napi_throw_type_error(env, NULL, what);
    return false;
  }
  *data = ptr;
  return true;
}

/* A whole non-negative number below 2^53, or false after throwing (TypeError or RangeError) with `what`. */
static bool index_of(napi_env env, napi_value value, const char *what, size_t *out) {
  double v;
  if (napi_get_value_double(env, value, &v) != napi_ok) {
    napi_throw_type_error(env, NULL, what);
    return false;
  }
  if (!(v >= 0 && v <= 9007199254740991.0 && v == (double)(uint64_t)v)) {
    napi_throw_range_error(env, NULL, what);
    return false;
  }
  *out = (size_t)v;
  return true;
}

/* digestPieces(key, data, ends, endsAt, count, ids, idsAt, sums | null, sumsAt): count (see index.d.ts). */
static napi_value digest_pieces(napi_env env, napi_callback_info info) {
  size_t argc = 9;
  napi_value argv[9];
  uint8_t *key = NULL, *data = NULL, *ids = NULL, *sums = NULL;
  uint32_t *ends = NULL;
  size_t key_length = 0, data_length = 0, ends_length = 0, ids_length = 0, sums_length = 0;
  size_t ends_at = 0, count = 0, ids_at = 0, sums_at = 0;
  napi_valuetype sums_type;
  napi_value result;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 9) {
    napi_throw_type_error(env, NULL, "digestPieces expects (key, data, ends, endsAt, count, ids, idsAt, sums, sumsAt)");
    return NULL;
  }
  if (!typed_of(env, argv[0], napi_uint8_array, "digestPieces expects a Uint8Array key", (void **)&key, &key_length)) return NULL;
  if (!typed_of(env, argv[1], napi_uint8_array, "digestPieces expects Uint8Array data", (void **)&data, &data_length)) return NULL;
  if (!typed_of(env, argv[2], napi_uint32_array, "digestPieces expects a Uint32Array of ends", (void **)&ends, &ends_length)) return NULL;
  if (!index_of(env, argv[3], "digestPieces: endsAt is not a whole non-negative number", &ends_at)) return NULL;
  if (!index_of(env, argv[4], "digestPieces: count is not a whole non-negative number", &count)) return NULL;
  if (!typed_of(env, argv[5], napi_uint8_array, "digestPieces expects a Uint8Array for ids", (void **)&ids, &ids_length)) return NULL;
  if (!index_of(env, argv[6], "digestPieces: idsAt is not a whole non-negative number", &ids_at)) return NULL;
  if (napi_typeof(env, argv[7], &sums_type) != napi_ok) return NULL;
  if (sums_type != napi_null &&
      !typed_of(env, argv[7], napi_uint8_array, "digestPieces expects a Uint8Array or null for sums", (void **)&sums, &sums_length)) return NULL;
  if (!index_of(env, argv[8], "digestPieces: sumsAt is not a whole non-negative number", &sums_at)) return NULL;
  if (key_length != BLAKE3_KEY_LEN) {
    napi_throw_range_error(env, NULL, "digestPieces: the key must be 32 bytes");
    return NULL;
  }
  /* sizes stay far below 2^53, so these sums cannot wrap */
  if (ends_at + count > ends_length || ids_at + count * BLAKE3_OUT_LEN > ids_length ||
      (sums != NULL && sums_at + count * 16 > sums_length)) {
    napi_throw_range_error(env, NULL, "digestPieces: the pieces do not fit the ends, ids or sums given");
    return NULL;
  }
  /* every end checked before any digest is written */
  size_t from = 0;
  for (size_t k = 0; k < count; k++) {
    size_t end = ends[ends_at + k];
    if (end < from || end > data_length) {
      napi_throw_range_error(env, NULL, "digestPieces: the ends go backwards or past the data");
      return NULL;
    }
    from = end;
  }
  blake3_hasher hasher;
  from = 0;
  for (size_t k = 0; k < count; k++) {
    size_t end = ends[ends_at + k];
    blake3_hasher_init_keyed(&hasher, key);
    blake3_hasher_update(&hasher, data + from, end - from);
    blake3_hasher_finalize(&hasher, ids + ids_at + k * BLAKE3_OUT_LEN, BLAKE3_OUT_LEN);
    if (sums != NULL) {
      XXH128_canonical_t canonical;
      XXH128_canonicalFromHash(&canonical, XXH3_128(data + from, end - from));
      memcpy(sums + sums_at + k * 16, canonical.digest, 16);
    }
    from = end;
  }
  if (napi_create_uint32(env, (uint32_t)count, &result) != napi_ok) return NULL;
  return result;
}

/* A whole number below 2^32, or false after throwing (TypeError or RangeError) with `what`. */
static bool u32_of(napi_env env, napi_value value, const char *what, uint32_t *out) {
  size_t v;
  if (!index_of(env, value, what, &v)) return false;
  if (v > 0xffffffffu) {
    napi_throw_range_error(env, NULL, what);
    return false;
  }
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

static napi_value init(napi_env env, napi_value exports) {
  napi_value fn;
  if (napi_create_function(env, "digestPieces", NAPI_AUTO_LENGTH, digest_pieces, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "digestPieces", fn) != napi_ok) return NULL;
  if (napi_create_function(env, "cutParts", NAPI_AUTO_LENGTH, cut_parts, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "cutParts", fn) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
