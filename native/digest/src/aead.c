/*
 * AES-256-GCM with one cipher context per key, for the chunk codec (electron/engine/vault/chunkCodec.ts).
 *
 * @ronomon/crypto-async, the codec's cipher otherwise, makes a new OpenSSL context for every call,
 * looks the cipher up by its name and schedules the key again: 1.2–2.5 µs a call here, as long as
 * encrypting 4 KiB, and a full backup makes two calls per record (the seal and I9's open). Here the
 * key is scheduled once (`aesGcmKey`) and each call only sets its nonce. The cipher is OpenSSL's EVP,
 * the library node itself links (BoringSSL's EVP under Electron), called as node:crypto calls it:
 * the records are byte for byte those of @ronomon/crypto-async and node:crypto
 * (test/unit/vault/aead.test.ts).
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

#define AEAD_KEY_BYTES 32
#define AEAD_NONCE_BYTES 12
#define AEAD_TAG_BYTES 16

typedef struct {
  EVP_CIPHER_CTX *ctx;
} aead_key;

static void aead_key_free(napi_env env, void *data, void *hint) {
  (void)env, (void)hint;
  aead_key *k = data;
  EVP_CIPHER_CTX_free(k->ctx);
  free(k);
}

/* A Uint8Array argument. */
static bool bytes_of(napi_env env, napi_value value, const char *what, uint8_t **data, size_t *length) {
  return typed_of(env, value, napi_uint8_array, what, (void **)data, length);
}

/* A whole non-negative number that fits an int (OpenSSL's lengths). */
static bool int_of(napi_env env, napi_value value, const char *what, size_t *out) {
  return whole_of(env, value, (double)INT_MAX, what, out);
}

/* aesGcmKey(key): a handle holding the key's cipher context (see index.d.ts). */
napi_value aes_gcm_key(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], result;
  uint8_t *key = NULL;
  size_t key_length = 0;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) return NULL;
  if (argc < 1 || !bytes_of(env, argv[0], "aesGcmKey expects a Uint8Array key", &key, &key_length)) return NULL;
  if (key_length != AEAD_KEY_BYTES) {
    napi_throw_range_error(env, NULL, "aesGcmKey: the key must be 32 bytes");
    return NULL;
  }
  aead_key *k = calloc(1, sizeof *k);
  if (k) k->ctx = EVP_CIPHER_CTX_new();
  if (!k || !k->ctx || EVP_CipherInit_ex(k->ctx, EVP_aes_256_gcm(), NULL, NULL, NULL, 1) != 1 ||
      EVP_CIPHER_CTX_ctrl(k->ctx, EVP_CTRL_GCM_SET_IVLEN, AEAD_NONCE_BYTES, NULL) != 1 ||
      EVP_CipherInit_ex(k->ctx, NULL, NULL, key, NULL, 1) != 1) {
    ERR_clear_error();
    if (k) EVP_CIPHER_CTX_free(k->ctx);
    free(k);
    napi_throw_error(env, NULL, "aesGcmKey: OpenSSL could not set up AES-256-GCM");
    return NULL;
  }
  if (napi_create_external(env, k, aead_key_free, NULL, &result) != napi_ok) {
    aead_key_free(env, k, NULL);
    return NULL;
  }
  return result;
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
      memset(out, 0, length); /* nothing unauthenticated is left behind */
      napi_throw_error(env, "AUTHENTICATION_FAILED", "aesGcm: the tag does not match (altered, truncated or moved)");
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
