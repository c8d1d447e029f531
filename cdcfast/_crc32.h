/* CRC-32 (the zlib / java.util.zip polynomial, reflected 0xEDB88320) for many short buffers.
 *
 * Commit log entries are short (a few hundred bytes) and each needs two CRCs, so per-call cost
 * matters more than peak speed: zlib spends more time setting up than hashing at these sizes.
 * Large runs fold 64 bytes at a time with carry-less multiplication (Intel, "Fast CRC Computation
 * for Generic Polynomials Using PCLMULQDQ Instruction", 2009, with the bit-reflected constants
 * of its appendix); the rest goes through a 256-entry table. The CPU is checked once at run time.
 *
 * All functions work on the raw running state: start from 0xFFFFFFFF, finish with ~state.
 */
#ifndef CDCFAST_CRC32_H
#define CDCFAST_CRC32_H

#include <stddef.h>
#include <stdint.h>

static uint32_t cdcfast_crc_table[256];
static int cdcfast_crc_clmul = -1; /* -1: not checked yet */

static void cdcfast_crc_init(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        cdcfast_crc_table[n] = c;
    }
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    cdcfast_crc_clmul = __builtin_cpu_supports("pclmul") && __builtin_cpu_supports("sse4.1");
#else
    cdcfast_crc_clmul = 0;
#endif
}

static inline uint32_t cdcfast_crc_bytes(uint32_t state, const uint8_t *p, size_t n) {
    while (n--) state = cdcfast_crc_table[(state ^ *p++) & 0xFF] ^ (state >> 8);
    return state;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>

/* Folds n bytes (n >= 64, a multiple of 16) into the state. */
__attribute__((target("pclmul,sse4.1")))
static uint32_t cdcfast_crc_fold(uint32_t state, const uint8_t *p, size_t n) {
    const __m128i k1k2 = _mm_set_epi64x(0x01c6e41596LL, 0x0154442bd4LL);
    const __m128i k3k4 = _mm_set_epi64x(0x00ccaa009eLL, 0x01751997d0LL);
    const __m128i k5 = _mm_set_epi64x(0, 0x0163cd6124LL);
    const __m128i poly = _mm_set_epi64x(0x01f7011641LL, 0x01db710641LL);
    const __m128i low32 = _mm_setr_epi32(~0, 0, ~0, 0);
    __m128i a = _mm_loadu_si128((const __m128i *)(p + 0));
    __m128i b = _mm_loadu_si128((const __m128i *)(p + 16));
    __m128i c = _mm_loadu_si128((const __m128i *)(p + 32));
    __m128i d = _mm_loadu_si128((const __m128i *)(p + 48));
    __m128i t, u;
    a = _mm_xor_si128(a, _mm_cvtsi32_si128((int)state));
    p += 64;
    n -= 64;
    while (n >= 64) { /* four independent lanes */
        t = _mm_clmulepi64_si128(a, k1k2, 0x00); a = _mm_clmulepi64_si128(a, k1k2, 0x11);
        a = _mm_xor_si128(_mm_xor_si128(a, t), _mm_loadu_si128((const __m128i *)(p + 0)));
        t = _mm_clmulepi64_si128(b, k1k2, 0x00); b = _mm_clmulepi64_si128(b, k1k2, 0x11);
        b = _mm_xor_si128(_mm_xor_si128(b, t), _mm_loadu_si128((const __m128i *)(p + 16)));
        t = _mm_clmulepi64_si128(c, k1k2, 0x00); c = _mm_clmulepi64_si128(c, k1k2, 0x11);
        c = _mm_xor_si128(_mm_xor_si128(c, t), _mm_loadu_si128((const __m128i *)(p + 32)));
        t = _mm_clmulepi64_si128(d, k1k2, 0x00); d = _mm_clmulepi64_si128(d, k1k2, 0x11);
        d = _mm_xor_si128(_mm_xor_si128(d, t), _mm_loadu_si128((const __m128i *)(p + 48)));
        p += 64;
        n -= 64;
    }
    /* four lanes into one */
    t = _mm_clmulepi64_si128(a, k3k4, 0x00); a = _mm_clmulepi64_si128(a, k3k4, 0x11);
    a = _mm_xor_si128(_mm_xor_si128(a, t), b);
    t = _mm_clmulepi64_si128(a, k3k4, 0x00); a = _mm_clmulepi64_si128(a, k3k4, 0x11);
    a = _mm_xor_si128(_mm_xor_si128(a, t), c);
    t = _mm_clmulepi64_si128(a, k3k4, 0x00); a = _mm_clmulepi64_si128(a, k3k4, 0x11);
    a = _mm_xor_si128(_mm_xor_si128(a, t), d);
    while (n >= 16) {
        t = _mm_clmulepi64_si128(a, k3k4, 0x00); a = _mm_clmulepi64_si128(a, k3k4, 0x11);
        a = _mm_xor_si128(_mm_xor_si128(a, t), _mm_loadu_si128((const __m128i *)p));
        p += 16;
        n -= 16;
    }
    /* 128 -> 64 bits */
    t = _mm_clmulepi64_si128(a, k3k4, 0x10);
    a = _mm_xor_si128(_mm_srli_si128(a, 8), t);
    t = _mm_srli_si128(a, 4);
    a = _mm_xor_si128(_mm_clmulepi64_si128(_mm_and_si128(a, low32), k5, 0x00), t);
    /* Barrett reduction to 32 bits */
    u = _mm_clmulepi64_si128(_mm_and_si128(a, low32), poly, 0x10);
    u = _mm_clmulepi64_si128(_mm_and_si128(u, low32), poly, 0x00);
    a = _mm_xor_si128(a, u);
    return (uint32_t)_mm_extract_epi32(a, 1);
}
#endif

/* Continue the raw state over n bytes. */
static inline uint32_t cdcfast_crc_update(uint32_t state, const uint8_t *p, size_t n) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    if (n >= 64 && cdcfast_crc_clmul > 0) {
        size_t bulk = n & ~(size_t)15;
        state = cdcfast_crc_fold(state, p, bulk);
        p += bulk;
        n -= bulk;
    }
#endif
    return cdcfast_crc_bytes(state, p, n);
}

#endif
