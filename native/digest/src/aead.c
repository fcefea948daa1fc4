/*
 * AES-256-GCM with one key schedule per key, for the chunk codec (electron/engine/vault/chunkCodec.ts).
 *
 * @ronomon/crypto-async, the codec's cipher otherwise, makes a new OpenSSL context for every call,
 * looks the cipher up by its name and schedules the key again: 1.2–2.5 µs a call here, as long as
 * encrypting 4 KiB, and a full backup makes two calls per record (the seal and I9's open). Here the
 * key is scheduled once (`aesGcmKey`) and each call only sets its nonce.
 *
 * Two engines, the same bytes (test/unit/vault/aead.test.ts compares both with node:crypto):
 * - "openssl": OpenSSL's EVP, the library node itself links (BoringSSL's EVP under Electron), called
 *   as node:crypto calls it. Node's OpenSSL 3.0 has no VAES code: ~3.6 GB/s on 64 KiB here.
 * - "ipsec-mb": Intel's Multi-Buffer Crypto for IPsec library (Debian's libipsec-mb1), opened with
 *   dlopen when the addon was built with its header (binding.gyp) and used only where it runs its
 *   VAES and VPCLMULQDQ code (IMB_CPUFLAGS_AVX512_T2): ~10 GB/s on 64 KiB here, 2.8× OpenSSL.
 *   Without the library, or on a CPU without those instructions, only "openssl" is offered.
 */
#include <node_api.h>
#include "args.h"
#include <openssl/err.h>
#include <openssl/evp.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#ifdef TRESOR_IPSEC_MB
#include <dlfcn.h>
#include <intel-ipsec-mb.h>
#include <pthread.h>
#endif

#define AEAD_KEY_BYTES 32
#define AEAD_NONCE_BYTES 12
#define AEAD_TAG_BYTES 16

#ifdef TRESOR_IPSEC_MB
/*
 * The library's manager, set up once per process and only read after (its GCM calls are plain
 * functions it points to; they keep their state in the key and context they are given). NULL when
 * the library is absent, of another major version or older than the header built against, or when
 * the CPU lacks what its fast GCM needs.
 */
static IMB_MGR *imb;
static pthread_once_t imb_once = PTHREAD_ONCE_INIT;

static void imb_open(void) {
  void *lib = dlopen("libIPSec_MB.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!lib) return;
  unsigned (*version)(void) = (unsigned (*)(void))dlsym(lib, "imb_get_version");
  IMB_MGR *(*alloc)(uint64_t) = (IMB_MGR * (*)(uint64_t)) dlsym(lib, "alloc_mb_mgr");
  void (*init)(IMB_MGR *, IMB_ARCH *) = (void (*)(IMB_MGR *, IMB_ARCH *))dlsym(lib, "init_mb_mgr_auto");
  void (*release)(IMB_MGR *) = (void (*)(IMB_MGR *))dlsym(lib, "free_mb_mgr");
  if (!version || !alloc || !init || !release || version() >> 16 != IMB_VERSION_NUM >> 16 || version() < IMB_VERSION_NUM) {
    dlclose(lib);
    return;
  }
  IMB_MGR *m = alloc(0);
  if (!m) {
    dlclose(lib);
    return;
  }
  IMB_ARCH arch = IMB_ARCH_NONE;
  init(m, &arch);
  if (arch != IMB_ARCH_AVX512 || (m->features & IMB_CPUFLAGS_AVX512_T2) != IMB_CPUFLAGS_AVX512_T2 || !m->gcm256_pre ||
      !m->gcm256_enc || !m->gcm256_dec) {
    release(m);
    dlclose(lib);
    return;
  }
  imb = m; /* the library stays loaded for the process's life */
}

static IMB_MGR *imb_manager(void) {
  pthread_once(&imb_once, imb_open);
  return imb;
}
#endif

typedef struct {
  EVP_CIPHER_CTX *ctx; /* "openssl" */
#ifdef TRESOR_IPSEC_MB
  struct gcm_key_data *imb_key; /* "ipsec-mb": the round keys and GHASH powers, 64-byte aligned */
#endif
} aead_key;

static void aead_key_free(napi_env env, void *data, void *hint) {
  (void)env, (void)hint;
  aead_key *k = data;
  EVP_CIPHER_CTX_free(k->ctx);
#ifdef TRESOR_IPSEC_MB
  if (k->imb_key) {
    explicit_bzero(k->imb_key, sizeof *k->imb_key); /* as EVP_CIPHER_CTX_free cleanses its copy */
    free(k->imb_key);
  }
#endif
  free(k);
}

/* aesGcmEngines(): the engines this process can use, the fastest first (see index.d.ts). */
napi_value aes_gcm_engines(napi_env env, napi_callback_info info) {
  (void)info;
  napi_value result, name;
  uint32_t n = 0;
  if (napi_create_array(env, &result) != napi_ok) return NULL;
#ifdef TRESOR_IPSEC_MB
  if (imb_manager()) {
    if (napi_create_string_utf8(env, "ipsec-mb", NAPI_AUTO_LENGTH, &name) != napi_ok || napi_set_element(env, result, n++, name) != napi_ok) return NULL;
  }
#endif
  if (napi_create_string_utf8(env, "openssl", NAPI_AUTO_LENGTH, &name) != napi_ok || napi_set_element(env, result, n++, name) != napi_ok) return NULL;
  return result;
}

/* A Uint8Array argument. */
static bool bytes_of(napi_env env, napi_value value, const char *what, uint8_t **data, size_t *length) {
  return typed_of(env, value, napi_uint8_array, what, (void **)data, length);
}

/* A whole non-negative number that fits an int (OpenSSL's lengths). */
static bool int_of(napi_env env, napi_value value, const char *what, size_t *out) {
  return whole_of(env, value, (double)INT_MAX, what, out);
}

/* aesGcmKey(key, engine?): a handle holding the key's schedule for one engine (see index.d.ts). */
napi_value aes_gcm_key(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], result;
  uint8_t *key = NULL;
  size_t key_length = 0;
  char engine[16] = "";
  napi_valuetype type = napi_undefined;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 1 || !bytes_of(env, argv[0], "aesGcmKey expects a Uint8Array key", &key, &key_length)) return NULL;
  if (key_length != AEAD_KEY_BYTES) {
    napi_throw_range_error(env, NULL, "aesGcmKey: the key must be 32 bytes");
    return NULL;
  }
  if (argc >= 2 && napi_typeof(env, argv[1], &type) != napi_ok) return NULL;
  if (type != napi_undefined) {
    size_t copied = 0;
    if (type != napi_string || napi_get_value_string_utf8(env, argv[1], engine, sizeof engine, &copied) != napi_ok) {
      napi_throw_type_error(env, NULL, "aesGcmKey: the engine is not a string");
      return NULL;
    }
  }
  bool use_imb = false;
#ifdef TRESOR_IPSEC_MB
  use_imb = imb_manager() != NULL && (engine[0] == 0 || strcmp(engine, "ipsec-mb") == 0);
#endif
  if (!use_imb && engine[0] != 0 && strcmp(engine, "openssl") != 0) {
    napi_throw_range_error(env, NULL, "aesGcmKey: the engine is not one aesGcmEngines() offers");
    return NULL;
  }
  aead_key *k = calloc(1, sizeof *k);
  if (!k) {
    napi_throw_error(env, NULL, "aesGcmKey: out of memory");
    return NULL;
  }
#ifdef TRESOR_IPSEC_MB
  if (use_imb) {
    /* sizeof rounded up to the alignment, as aligned_alloc wants */
    k->imb_key = aligned_alloc(64, (sizeof(struct gcm_key_data) + 63) / 64 * 64);
    if (!k->imb_key) {
      free(k);
      napi_throw_error(env, NULL, "aesGcmKey: out of memory");
      return NULL;
    }
    IMB_AES256_GCM_PRE(imb, key, k->imb_key);
  }
#endif
  if (!use_imb) {
    k->ctx = EVP_CIPHER_CTX_new();
    if (!k->ctx || EVP_CipherInit_ex(k->ctx, EVP_aes_256_gcm(), NULL, NULL, NULL, 1) != 1 ||
        EVP_CIPHER_CTX_ctrl(k->ctx, EVP_CTRL_GCM_SET_IVLEN, AEAD_NONCE_BYTES, NULL) != 1 ||
        EVP_CipherInit_ex(k->ctx, NULL, NULL, key, NULL, 1) != 1) {
      ERR_clear_error();
      aead_key_free(env, k, NULL);
      napi_throw_error(env, NULL, "aesGcmKey: OpenSSL could not set up AES-256-GCM");
      return NULL;
    }
  }
  if (napi_create_external(env, k, aead_key_free, NULL, &result) != napi_ok) {
    aead_key_free(env, k, NULL);
    return NULL;
  }
  return result;
}

static void throw_authentication(napi_env env, uint8_t *out, size_t length) {
  if (length) memset(out, 0, length); /* nothing unauthenticated is left behind */
  napi_throw_error(env, "AUTHENTICATION_FAILED", "aesGcm: the tag does not match (altered, truncated or moved)");
}

/*
 * aesGcm(key, encrypt, nonce, nonceAt, source, sourceAt, length, target, targetAt, aad, tag, tagAt):
 * length (see index.d.ts). Every argument is checked before a byte is written.
 */
napi_value aes_gcm(napi_env env, napi_callback_info info) {
  size_t argc = 12;
  napi_value argv[12], result;
  aead_key *k = NULL;
  bool encrypt = false;
  uint8_t *nonce = NULL, *source = NULL, *target = NULL, *aad = NULL, *tag = NULL;
  size_t nonce_length = 0, source_length = 0, target_length = 0, aad_length = 0, tag_length = 0;
  size_t nonce_at = 0, source_at = 0, length = 0, target_at = 0, tag_at = 0;
  napi_valuetype type;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 12) {
    napi_throw_type_error(env, NULL, "aesGcm expects (key, encrypt, nonce, nonceAt, source, sourceAt, length, target, targetAt, aad, tag, tagAt)");
    return NULL;
  }
  if (napi_typeof(env, argv[0], &type) != napi_ok || type != napi_external || napi_get_value_external(env, argv[0], (void **)&k) != napi_ok || !k) {
    napi_throw_type_error(env, NULL, "aesGcm expects a key made by aesGcmKey");
    return NULL;
  }
  if (napi_get_value_bool(env, argv[1], &encrypt) != napi_ok) {
    napi_throw_type_error(env, NULL, "aesGcm: encrypt is not a boolean");
    return NULL;
  }
  if (!bytes_of(env, argv[2], "aesGcm expects a Uint8Array nonce", &nonce, &nonce_length)) return NULL;
  if (!int_of(env, argv[3], "aesGcm: nonceAt is not a whole non-negative number", &nonce_at)) return NULL;
  if (!bytes_of(env, argv[4], "aesGcm expects a Uint8Array source", &source, &source_length)) return NULL;
  if (!int_of(env, argv[5], "aesGcm: sourceAt is not a whole non-negative number", &source_at)) return NULL;
  if (!int_of(env, argv[6], "aesGcm: length is not a whole non-negative number", &length)) return NULL;
  if (!bytes_of(env, argv[7], "aesGcm expects a Uint8Array target", &target, &target_length)) return NULL;
  if (!int_of(env, argv[8], "aesGcm: targetAt is not a whole non-negative number", &target_at)) return NULL;
  if (!bytes_of(env, argv[9], "aesGcm expects Uint8Array associated data", &aad, &aad_length)) return NULL;
  if (!bytes_of(env, argv[10], "aesGcm expects a Uint8Array for the tag", &tag, &tag_length)) return NULL;
  if (!int_of(env, argv[11], "aesGcm: tagAt is not a whole non-negative number", &tag_at)) return NULL;
  if (nonce_at + AEAD_NONCE_BYTES > nonce_length || source_at + length > source_length || target_at + length > target_length ||
      tag_at + AEAD_TAG_BYTES > tag_length || aad_length > INT_MAX) {
    napi_throw_range_error(env, NULL, "aesGcm: the nonce, source, target or tag do not fit their arrays");
    return NULL;
  }
  const uint8_t *in = source + source_at;
  uint8_t *out = target + target_at;
  /* the same bytes, or bytes apart: OpenSSL's GCM reads ahead of what it writes */
  if (length > 0 && in != out && in < out + length && out < in + length) {
    napi_throw_range_error(env, NULL, "aesGcm: the source and target overlap");
    return NULL;
  }
#ifdef TRESOR_IPSEC_MB
  if (k->imb_key) {
    /* the library's checks refuse NULL pointers even for no bytes: an empty array may have none */
    static uint8_t none[1];
    const uint8_t *src = length ? in : none, *ad = aad_length ? aad : none;
    uint8_t *dst = length ? out : none;
    struct gcm_context_data ctx __attribute__((aligned(64)));
    if (encrypt) {
      IMB_AES256_GCM_ENC(imb, k->imb_key, &ctx, dst, src, length, nonce + nonce_at, ad, aad_length, tag + tag_at, AEAD_TAG_BYTES);
    } else {
      uint8_t computed[AEAD_TAG_BYTES];
      IMB_AES256_GCM_DEC(imb, k->imb_key, &ctx, dst, src, length, nonce + nonce_at, ad, aad_length, computed, AEAD_TAG_BYTES);
      uint8_t differ = 0; /* in constant time */
      for (int i = 0; i < AEAD_TAG_BYTES; i++) differ |= (uint8_t)(computed[i] ^ tag[tag_at + i]);
      if (differ) {
        explicit_bzero(&ctx, sizeof ctx);
        throw_authentication(env, out, length);
        return NULL;
      }
    }
    explicit_bzero(&ctx, sizeof ctx); /* its last counter block and partial keystream */
    if (napi_create_uint32(env, (uint32_t)length, &result) != napi_ok) return NULL;
    return result;
  }
#endif
  int n = 0, last = 0, aad_taken = 0;
  bool ok = EVP_CipherInit_ex(k->ctx, NULL, NULL, NULL, nonce + nonce_at, encrypt ? 1 : 0) == 1 &&
            (aad_length == 0 || EVP_CipherUpdate(k->ctx, NULL, &aad_taken, aad, (int)aad_length) == 1) &&
            (encrypt || EVP_CIPHER_CTX_ctrl(k->ctx, EVP_CTRL_GCM_SET_TAG, AEAD_TAG_BYTES, tag + tag_at) == 1) &&
            (length == 0 || EVP_CipherUpdate(k->ctx, out, &n, in, (int)length) == 1);
  if (!ok) {
    ERR_clear_error();
    napi_throw_error(env, NULL, "aesGcm: OpenSSL failed");
    return NULL;
  }
  if (EVP_CipherFinal_ex(k->ctx, out + n, &last) != 1) {
    ERR_clear_error();
    if (!encrypt) {
      throw_authentication(env, out, length);
    } else {
      napi_throw_error(env, NULL, "aesGcm: OpenSSL failed");
    }
    return NULL;
  }
  if (encrypt && EVP_CIPHER_CTX_ctrl(k->ctx, EVP_CTRL_GCM_GET_TAG, AEAD_TAG_BYTES, tag + tag_at) != 1) {
    ERR_clear_error();
    napi_throw_error(env, NULL, "aesGcm: OpenSSL failed");
    return NULL;
  }
  if (napi_create_uint32(env, (uint32_t)(n + last), &result) != napi_ok) return NULL;
  return result;
}
