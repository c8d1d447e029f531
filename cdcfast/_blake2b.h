/* BLAKE2b (RFC 7693), unkeyed, for the 16-byte content ids of change events (cdcfast/_events.pyx).
 *
 * hashlib.blake2b(data, digest_size=16) gives the same digest; calling it costs two Python objects
 * and most of a microsecond per event, this a few hundred nanoseconds for a typical identity
 * (100-300 bytes). Written from the RFC's description; tests/events/test_compiled_events.py checks
 * it against hashlib. */
#ifndef CDCFAST_BLAKE2B_H
#define CDCFAST_BLAKE2B_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

static const uint64_t cdcfast_b2b_iv[8] = {
    0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL, 0x3c6ef372fe94f82bULL, 0xa54ff53a5f1d36f1ULL,
    0x510e527fade682d1ULL, 0x9b05688c2b3e6c1fULL, 0x1f83d9abfb41bd6bULL, 0x5be0cd19137e2179ULL,
};

/* The message schedule: which words each round feeds to its eight mixings. */
static const uint8_t cdcfast_b2b_sigma[12][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
    {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
    {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
    {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
    {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
};

static inline uint64_t cdcfast_b2b_rotr(uint64_t x, int n) { return (x >> n) | (x << (64 - n)); }

static inline uint64_t cdcfast_b2b_load64(const uint8_t *p) {
    uint64_t x;
    memcpy(&x, p, 8); /* little-endian machines only (x86-64, aarch64): checked by the tests */
    return x;
}

#define CDCFAST_B2B_G(a, b, c, d, x, y)            \
    do {                                            \
        v[a] = v[a] + v[b] + (x);                   \
        v[d] = cdcfast_b2b_rotr(v[d] ^ v[a], 32);   \
        v[c] = v[c] + v[d];                         \
        v[b] = cdcfast_b2b_rotr(v[b] ^ v[c], 24);   \
        v[a] = v[a] + v[b] + (y);                   \
        v[d] = cdcfast_b2b_rotr(v[d] ^ v[a], 16);   \
        v[c] = v[c] + v[d];                         \
        v[b] = cdcfast_b2b_rotr(v[b] ^ v[c], 63);   \
    } while (0)

static inline void cdcfast_b2b_compress(uint64_t h[8], const uint8_t block[128], uint64_t counter, int last) {
    uint64_t v[16], m[16];
    int i;
    for (i = 0; i < 16; i++) m[i] = cdcfast_b2b_load64(block + 8 * i);
    for (i = 0; i < 8; i++) {
        v[i] = h[i];
        v[i + 8] = cdcfast_b2b_iv[i];
    }
    v[12] ^= counter; /* the byte counter's high word stays 0: inputs are far below 2^64 bytes */
    if (last) v[14] = ~v[14];
    for (i = 0; i < 12; i++) {
        const uint8_t *s = cdcfast_b2b_sigma[i];
        CDCFAST_B2B_G(0, 4, 8, 12, m[s[0]], m[s[1]]);
        CDCFAST_B2B_G(1, 5, 9, 13, m[s[2]], m[s[3]]);
        CDCFAST_B2B_G(2, 6, 10, 14, m[s[4]], m[s[5]]);
        CDCFAST_B2B_G(3, 7, 11, 15, m[s[6]], m[s[7]]);
        CDCFAST_B2B_G(0, 5, 10, 15, m[s[8]], m[s[9]]);
        CDCFAST_B2B_G(1, 6, 11, 12, m[s[10]], m[s[11]]);
        CDCFAST_B2B_G(2, 7, 8, 13, m[s[12]], m[s[13]]);
        CDCFAST_B2B_G(3, 4, 9, 14, m[s[14]], m[s[15]]);
    }
    for (i = 0; i < 8; i++) h[i] ^= v[i] ^ v[i + 8];
}

/* out: the first 16 bytes of BLAKE2b-128(data[0:n]) (no key). */
static void cdcfast_blake2b_16(const uint8_t *data, size_t n, uint8_t out[16]) {
    uint64_t h[8];
    uint8_t last[128];
    size_t done = 0;
    int i;
    for (i = 0; i < 8; i++) h[i] = cdcfast_b2b_iv[i];
    h[0] ^= 0x01010000ULL ^ 16; /* depth 1, fanout 1, no key, 16-byte digest */
    while (n - done > 128) { /* every full block but the final one */
        cdcfast_b2b_compress(h, data + done, (uint64_t)(done + 128), 0);
        done += 128;
    }
    memset(last, 0, sizeof last);
    if (n > done) memcpy(last, data + done, n - done);
    cdcfast_b2b_compress(h, last, (uint64_t)n, 1);
    memcpy(out, h, 16);
}

#endif
