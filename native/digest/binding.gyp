{
  # BLAKE3's C implementation comes from the @c4312/blake3-native package and xxHash from
  # xxhash-addon (both dependencies of this package); neither is copied into Tresor.
  "variables": {
    "blake3": "<!(node -p \"const p = require('path'); p.relative('.', p.join(p.dirname(require.resolve('@c4312/blake3-native/package.json')), 'c')).split(p.sep).join('/')\")",
    # Intel's ipsec-mb (Debian's libipsec-mb-dev): AES-GCM in VAES where the CPU has it (src/aead.c)
    "ipsec_mb": "<!(node -p \"require('fs').existsSync('/usr/include/intel-ipsec-mb.h') ? 1 : 0\")",
    "xxhash": "<!(node -p \"const p = require('path'); p.relative('.', p.join(p.dirname(require.resolve('xxhash-addon/package.json')), 'xxHash')).split(p.sep).join('/')\")"
  },
  "targets": [
    {
      "target_name": "digest",
      "sources": [
        "src/digest.c",
        "src/aead.c",
        "<(blake3)/blake3.c",
        "<(blake3)/blake3_dispatch.c",
        "<(blake3)/blake3_portable.c",
        "<(xxhash)/xxhash.c"
      ],
      "include_dirs": ["<(blake3)", "<(xxhash)"],
      "cflags": ["-Wall"],
      "conditions": [
        # x86-64: every SIMD path, chosen at run time (BLAKE3: SSE2 … AVX-512; xxHash: SSE2 … AVX-512)
        ["target_arch=='x64' and OS!='win'", {
          "sources": [
            "<(blake3)/blake3_sse2_x86-64_unix.S",
            "<(blake3)/blake3_sse41_x86-64_unix.S",
            "<(blake3)/blake3_avx2_x86-64_unix.S",
            "<(blake3)/blake3_avx512_x86-64_unix.S",
            "<(xxhash)/xxh_x86dispatch.c"
          ],
          "defines": ["TRESOR_XXH_DISPATCH=1"]
        }],
        # MSVC compiles the intrinsics without per-file flags
        ["target_arch=='x64' and OS=='win'", {
          "sources": [
            "<(blake3)/blake3_sse2.c",
            "<(blake3)/blake3_sse41.c",
            "<(blake3)/blake3_avx2.c",
            "<(blake3)/blake3_avx512.c",
            "<(xxhash)/xxh_x86dispatch.c"
          ],
          "defines": ["TRESOR_XXH_DISPATCH=1"]
        }],
        # the library is opened with dlopen at run time: the addon loads without it
        ["target_arch=='x64' and OS=='linux' and ipsec_mb==1", {
          "defines": ["TRESOR_IPSEC_MB=1"],
          "libraries": ["-ldl", "-lpthread"]
        }],
        ["target_arch=='arm64'", { "sources": ["<(blake3)/blake3_neon.c"] }],
        ["target_arch!='x64' and target_arch!='arm64'", {
          "defines": ["BLAKE3_NO_SSE2", "BLAKE3_NO_SSE41", "BLAKE3_NO_AVX2", "BLAKE3_NO_AVX512"]
        }]
      ]
    }
  ]
}
