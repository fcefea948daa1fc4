/*
 * Argument checks shared by the addon's calls (digest.c, aead.c): each returns false after throwing
 * a TypeError or RangeError with `what`, so a call returns before it writes anything.
 */
#ifndef TRESOR_ARGS_H
#define TRESOR_ARGS_H
#include <node_api.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A typed array argument of type `want`. */
static inline bool typed_of(napi_env env, napi_value value, napi_typedarray_type want, const char *what, void **data, size_t *length) {
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

/* A whole non-negative number no larger than `most` (at most 2^53 − 1). */
static inline bool whole_of(napi_env env, napi_value value, double most, const char *what, size_t *out) {
  double v;
  if (napi_get_value_double(env, value, &v) != napi_ok) {
    napi_throw_type_error(env, NULL, what);
    return false;
  }
  if (!(v >= 0 && v <= most && v == (double)(uint64_t)v)) {
    napi_throw_range_error(env, NULL, what);
    return false;
  }
  *out = (size_t)v;
  return true;
}

/* A whole non-negative number below 2^53. */
static inline bool index_of(napi_env env, napi_value value, const char *what, size_t *out) {
  return whole_of(env, value, 9007199254740991.0, what, out);
}

#endif
