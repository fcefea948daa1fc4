/*
 * tresor-memory: the two memory operations Node does not offer Tresor.
 *
 * adviseHugePages: Tresor writes restored images and vault packs with O_DIRECT from its own
 * buffers. The block layer builds one request from at most max_segments physically contiguous
 * pieces (254 on a virtio disk), so a 4 MiB transfer from 4 KiB pages leaves as four or more
 * requests, and a device that pays per request (virtual disks do) spends its time on them. A buffer
 * in 2 MiB pages goes out as one. Most Linux systems back memory with huge pages only where a
 * program asks (madvise mode), and Node has no way to ask. Elsewhere it does nothing.
 *
 * copyTriples: V8 copies between views of shared memory (SharedArrayBuffer, shared WebAssembly
 * memory) with relaxed atomic word stores, ~2.2 GB/s for scattered 8 KiB pieces here against
 * ~5.9 GB/s between ordinary buffers. A restore copies every part of a block stored as parts that
 * way (part cache ↔ the block's place). Races are the caller's to exclude, as for any copy.
 */
#include <node_api.h>
#include <stdint.h>
#include <stdbool.h>
#include <string.h>
#include <stdlib.h>
#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

/* The bytes of a Uint8Array argument, or false after throwing a TypeError naming `what`. */
static bool bytes_of(napi_env env, napi_value value, const char *what, uint8_t **data, size_t *length) {
  bool is_typed = false;
  napi_typedarray_type type;
  void *ptr = NULL;
  if (napi_is_typedarray(env, value, &is_typed) != napi_ok || !is_typed ||
      napi_get_typedarray_info(env, value, &type, length, &ptr, NULL, NULL) != napi_ok || type != napi_uint8_array) {
    napi_throw_type_error(env, NULL, what);
    return false;
  }
  *data = (uint8_t *)ptr;
  return true;
}

/* adviseHugePages(view: Uint8Array): boolean — madvise(MADV_HUGEPAGE) over the whole pages inside the view. */
static napi_value advise_huge_pages(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_value result;
  bool done = false;
  uint8_t *data = NULL;
  size_t length = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 1 || !bytes_of(env, argv[0], "adviseHugePages expects a Uint8Array", &data, &length)) return NULL;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
  uintptr_t start = ((uintptr_t)data + page - 1) & ~(page - 1);
  uintptr_t end = ((uintptr_t)data + length) & ~(page - 1);
  if (data != NULL && end > start) done = madvise((void *)start, end - start, MADV_HUGEPAGE) == 0;
#else
  (void)data;
  (void)length;
#endif
  if (napi_get_boolean(env, done, &result) != napi_ok) return NULL;
  return result;
}

/*
 * copyTriples(source: Uint8Array, target: Uint8Array, triples: number[]):
 * for each (from, to, length), copies source[from, from + length) to target[to, to + length).
 * Checks every triple against both views before copying anything; returns the bytes copied.
 */
static napi_value copy_triples(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  napi_value result;
  uint8_t *source = NULL, *target = NULL;
  size_t source_length = 0, target_length = 0;
  uint32_t count = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 3) {
    napi_throw_type_error(env, NULL, "copyTriples expects (source, target, triples)");
    return NULL;
  }
  if (!bytes_of(env, argv[0], "copyTriples expects a Uint8Array source", &source, &source_length)) return NULL;
  if (!bytes_of(env, argv[1], "copyTriples expects a Uint8Array target", &target, &target_length)) return NULL;
  bool is_array = false;
  if (napi_is_array(env, argv[2], &is_array) != napi_ok || !is_array || napi_get_array_length(env, argv[2], &count) != napi_ok || count % 3 != 0) {
    napi_throw_type_error(env, NULL, "copyTriples expects an array of (from, to, length) triples");
    return NULL;
  }
  if (count == 0) {
    if (napi_create_double(env, 0, &result) != napi_ok) return NULL;
    return result;
  }
  double *v = malloc(sizeof(double) * count);
  if (v == NULL) {
    napi_throw_error(env, NULL, "copyTriples: out of memory");
    return NULL;
  }
  /* every triple read and checked (whole, non-negative, inside both views) before any byte moves */
  for (uint32_t k = 0; k < count; k++) {
    napi_value e;
    if (napi_get_element(env, argv[2], k, &e) != napi_ok || napi_get_value_double(env, e, &v[k]) != napi_ok) {
      free(v);
      napi_throw_type_error(env, NULL, "copyTriples expects numbers in its triples");
      return NULL;
    }
    if (!(v[k] >= 0 && v[k] <= 9007199254740991.0 && v[k] == (double)(uint64_t)v[k])) {
      free(v);
      napi_throw_range_error(env, NULL, "copyTriples: a triple holds a negative or fractional number");
      return NULL;
    }
  }
  for (uint32_t k = 0; k < count; k += 3) {
    if (v[k + 2] == 0 || v[k] + v[k + 2] > (double)source_length || v[k + 1] + v[k + 2] > (double)target_length) {
      free(v);
      napi_throw_range_error(env, NULL, "copyTriples: a triple is empty or lies outside its buffers");
      return NULL;
    }
  }
  double copied = 0;
  for (uint32_t k = 0; k < count; k += 3) {
    memmove(target + (size_t)v[k + 1], source + (size_t)v[k], (size_t)v[k + 2]);
    copied += v[k + 2];
  }
  free(v);
  if (napi_create_double(env, copied, &result) != napi_ok) return NULL;
  return result;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_value fn;
  if (napi_create_function(env, "adviseHugePages", NAPI_AUTO_LENGTH, advise_huge_pages, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "adviseHugePages", fn) != napi_ok) return NULL;
  if (napi_create_function(env, "copyTriples", NAPI_AUTO_LENGTH, copy_triples, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "copyTriples", fn) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
