/*
 * common.h - small helpers shared by every layer of the library:
 * growable byte buffers, varints, integer log2, little-endian helpers.
 *
 * Layering (a file only includes layers to its left):
 *   common  <-  rangecoder  <-  contexts  <-  slice_enc (+ quant) / slice_dec
 *           <-  container  <-  api (fedcodec.c) + pool
 * The decoder side never includes the quantizer.
 */
#ifndef FC_COMMON_H
#define FC_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fedcodec.h"

#if defined(__GNUC__) || defined(__clang__)
#define FC_HOT static inline __attribute__((always_inline))
#define FC_LIKELY(x) __builtin_expect(!!(x), 1)
#define FC_UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define FC_HOT static inline
#define FC_LIKELY(x) (x)
#define FC_UNLIKELY(x) (x)
#endif

/* Width of the column chunks the decoder works in.  Rows up to this width
 * use the "above" neighbour as context; wider rows do not, so the decoder's
 * memory stays O(FC_ROW_CTX_MAX) whatever shape a container claims. */
#define FC_ROW_CTX_MAX 65536u

/* Elements per significance group (grouped mode). */
#define FC_GROUP 16u

/* floor(log2(x)) for x >= 1. */
static inline unsigned fc_ilog2_64(uint64_t x)
{
#if defined(__GNUC__) || defined(__clang__)
    return 63u - (unsigned)__builtin_clzll(x);
#else
    unsigned r = 0;
    while (x >>= 1) r++;
    return r;
#endif
}

static inline unsigned fc_ilog2_32(uint32_t x)
{
#if defined(__GNUC__) || defined(__clang__)
    return 31u - (unsigned)__builtin_clz(x);
#else
    return fc_ilog2_64(x);
#endif
}

/* A growable byte buffer.  `failed` is sticky: once an allocation failed
 * every later write is dropped and the owner reports FC_ERR_NOMEM. */
typedef struct fc_buf {
    uint8_t *data;
    size_t size;
    size_t cap;
    int failed;
} fc_buf;

int fc_buf_grow(fc_buf *b, size_t extra);

static inline void fc_buf_put(fc_buf *b, uint8_t byte)
{
    if (FC_UNLIKELY(b->size == b->cap) && !fc_buf_grow(b, 1)) return;
    b->data[b->size++] = byte;
}

static inline void fc_buf_write(fc_buf *b, const void *src, size_t n)
{
    if (n == 0) return;
    if (b->cap - b->size < n && !fc_buf_grow(b, n)) return;
    memcpy(b->data + b->size, src, n);
    b->size += n;
}

static inline void fc_buf_free(fc_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->size = b->cap = 0;
}

/* LEB128 unsigned varint (at most 10 bytes). */
static inline void fc_put_varint(fc_buf *b, uint64_t v)
{
    while (v >= 0x80) {
        fc_buf_put(b, (uint8_t)(v | 0x80));
        v >>= 7;
    }
    fc_buf_put(b, (uint8_t)v);
}

static inline size_t fc_varint_size(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

/* A bounds-checked reader over untrusted bytes. */
typedef struct fc_reader {
    const uint8_t *p;
    const uint8_t *end;
} fc_reader;

/* Returns FC_OK, FC_ERR_TRUNCATED or FC_ERR_CORRUPT (overlong varint). */
static inline int fc_get_varint(fc_reader *r, uint64_t *out)
{
    uint64_t v = 0;
    unsigned shift = 0;
    for (;;) {
        uint8_t byte;
        if (r->p >= r->end) return FC_ERR_TRUNCATED;
        byte = *r->p++;
        if (shift == 63 && byte > 1) return FC_ERR_CORRUPT;
        v |= (uint64_t)(byte & 0x7f) << shift;
        if (!(byte & 0x80)) break;
        shift += 7;
        if (shift > 63) return FC_ERR_CORRUPT;
    }
    *out = v;
    return FC_OK;
}

static inline int fc_get_u8(fc_reader *r, uint8_t *out)
{
    if (r->p >= r->end) return FC_ERR_TRUNCATED;
    *out = *r->p++;
    return FC_OK;
}

static inline void fc_store_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static inline uint32_t fc_load_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
           ((uint32_t)p[3] << 24);
}

static inline uint32_t fc_f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline float fc_bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* ------------------------------------------------------------------ */
/* Dither (FC_QUANT_DITHER, FORMAT.md §8.3)                             */
/* ------------------------------------------------------------------ */

#define FC_GOLDEN_GAMMA 0x9E3779B97F4A7C15ull

/* splitmix64's finalizer: a bijective 64-bit mix. */
static inline uint64_t fc_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* The dither key of the tensor with index `index` in a container with
 * dither seed `seed`. */
static inline uint64_t fc_dither_key(uint64_t seed, uint32_t index)
{
    return fc_mix64(seed + FC_GOLDEN_GAMMA * ((uint64_t)index + 1u));
}

/* Dither of element i in units of the step: (2m + 1 - 2^24) / 2^25 with m
 * the top 24 bits of a counter-based hash, an odd multiple of 2^-25 in
 * (-1/2, 1/2).  Every step is exact in float32 (|2m + 1 - 2^24| < 2^24). */
static inline float fc_dither_unit(uint64_t key, uint64_t i)
{
    uint64_t h = fc_mix64(key + FC_GOLDEN_GAMMA * (i + 1u));
    int32_t m = (int32_t)(h >> 40);
    return (float)(2 * m + 1 - (1 << 24)) * (1.0f / 33554432.0f);
}

/* The dither u of element i: the float32 product unit * step. */
static inline float fc_dither_value(uint64_t key, uint64_t i, float step)
{
    return fc_dither_unit(key, i) * step;
}

/* The float32 reconstruction of a dithered level k: (float)k * step - u. */
static inline float fc_dither_recon(int32_t k, float step, float u)
{
    float r = (float)k * step;
    return r - u;
}

/* CRC-32 (IEEE 802.3, reflected, as zlib's crc32()). */
uint32_t fc_crc32(uint32_t crc, const uint8_t *data, size_t size);

#endif /* FC_COMMON_H */
