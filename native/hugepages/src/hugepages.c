/*
 * tresor-hugepages: asks the kernel to back a buffer with transparent huge pages.
 *
 * Why: Tresor writes restored images and vault packs with O_DIRECT from its own buffers. The block
 * layer builds one request from at most max_segments physically contiguous pieces (254 on a virtio
 * disk), so a 4 MiB transfer from 4 KiB pages leaves as four or more requests, and a device that pays
 * per request (virtual disks do) spends its time on them. A buffer in 2 MiB pages goes out as one.
 * Most Linux systems back memory with huge pages only where a program asks (madvise mode), and
 * Node offers no way to ask: hence this one call. Elsewhere it does nothing.
 */
#include <node_api.h>
#include <stdint.h>
#include <stdbool.h>
#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

/* adviseHugePages(view: Uint8Array): boolean — madvise(MADV_HUGEPAGE) over the whole pages inside the view. */
static napi_value advise_huge_pages(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  napi_value result;
  bool done = false;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  bool is_typed = false;
  if (argc < 1 || napi_is_typedarray(env, argv[0], &is_typed) != napi_ok || !is_typed) {
    napi_throw_type_error(env, NULL, "adviseHugePages expects a Uint8Array");
    return NULL;
  }
  napi_typedarray_type type;
  size_t length = 0;
  void *data = NULL;
  if (napi_get_typedarray_info(env, argv[0], &type, &length, &data, NULL, NULL) != napi_ok) return NULL;
  if (type != napi_uint8_array) {
    napi_throw_type_error(env, NULL, "adviseHugePages expects a Uint8Array");
    return NULL;
  }
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

static napi_value init(napi_env env, napi_value exports) {
  napi_value fn;
  if (napi_create_function(env, "adviseHugePages", NAPI_AUTO_LENGTH, advise_huge_pages, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "adviseHugePages", fn) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
