/*
 * tresor-digest: keyed BLAKE3-256 and XXH3-128 of many pieces of one buffer in one call.
 *
 * A format-3 backup hashes every block and every content-defined part of its compressible blocks
 * (~8 KiB each): on the bench's 4 GiB disk ~160,000 inputs. The JavaScript bindings take one call
 * per input: BLAKE3's reset, update and digest plus a new Buffer (~2.5 µs, as long as hashing the
 * 8 KiB itself), then XXH3's call and Buffer (~0.45 µs). This addon takes one call per block for
 * all of its pieces and writes the digests straight into the caller's arrays.
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

static napi_value init(napi_env env, napi_value exports) {
  napi_value fn;
  if (napi_create_function(env, "digestPieces", NAPI_AUTO_LENGTH, digest_pieces, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "digestPieces", fn) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
