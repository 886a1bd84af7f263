/*
 * craft.h - an independent writer and walker of the container format
 * (codec_c/FORMAT.md), for building malformed containers in tests, the
 * golden generator and the fuzz corpus.  It shares no code with the
 * library (own varints, own CRC-32), so it also checks FORMAT.md.
 *
 *   cr_buf            a growable byte string; cr_u8 / cr_varint / cr_le32 /
 *                     cr_f32 / cr_bytes append to it
 *   cr_container()    magic, version, flags, tensor count
 *   cr_tensor()       one tensor header with its slice table
 *   cr_seal()         appends the CRC-32 of everything before it
 *   cr_reseal()       recomputes the CRC of a finished container in place
 *   cr_walk()         finds the byte offsets of every field of a valid
 *                     container (to corrupt one field on purpose)
 */
#ifndef FC_TEST_CRAFT_H
#define FC_TEST_CRAFT_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct cr_buf {
    uint8_t *d;
    size_t n, cap;
} cr_buf;

static inline void cr_bytes(cr_buf *b, const void *src, size_t n)
{
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->n + n) cap *= 2;
        b->d = (uint8_t *)realloc(b->d, cap);
        if (!b->d) abort();
        b->cap = cap;
    }
    if (n) memcpy(b->d + b->n, src, n);
    b->n += n;
}

static inline void cr_u8(cr_buf *b, unsigned v)
{
    uint8_t c = (uint8_t)v;
    cr_bytes(b, &c, 1);
}

static inline void cr_varint(cr_buf *b, uint64_t v)
{
    while (v >= 0x80) {
        cr_u8(b, (unsigned)(v & 0x7F) | 0x80u);
        v >>= 7;
    }
    cr_u8(b, (unsigned)v);
}

static inline void cr_le32(cr_buf *b, uint32_t v)
{
    cr_u8(b, v & 0xFF);
    cr_u8(b, (v >> 8) & 0xFF);
    cr_u8(b, (v >> 16) & 0xFF);
    cr_u8(b, v >> 24);
}

static inline uint32_t cr_f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static inline void cr_f32(cr_buf *b, float f)
{
    cr_le32(b, cr_f32_bits(f));
}

static inline void cr_free(cr_buf *b)
{
    free(b->d);
    b->d = NULL;
    b->n = b->cap = 0;
}

/* Bitwise CRC-32 (IEEE, reflected, zlib's crc32 of the whole string). */
static inline uint32_t cr_crc32(const uint8_t *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    size_t i;
    int k;
    for (i = 0; i < n; i++) {
        c ^= p[i];
        for (k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return ~c;
}

static inline void cr_container(cr_buf *b, uint64_t count)
{
    cr_bytes(b, "FCDC", 4);
    cr_u8(b, 1); /* format version */
    cr_u8(b, 0); /* flags */
    cr_varint(b, count);
}

typedef struct cr_slice {
    uint64_t rows; /* not written for the last slice (it takes the rest) */
    unsigned mode, k;
    uint64_t size;
} cr_slice;

/* Bits of the tensor header's first byte besides ndim (bits 0-3) and the
 * dtype (bits 4-5, 1 = float32). */
#define CR_INDEX_IMPLICIT 0x40u /* index = previous + 1 (0 for the first) */
#define CR_STEP_REPEAT 0x80u    /* step = previous tensor's step */

/* One tensor header: flags/dtype/ndim byte, index (unless implicit), shape,
 * step (unless repeated), params (N | window set << 4), slice count and
 * table.  Payloads are appended by the caller. */
static inline void cr_tensor(cr_buf *b, unsigned flags, uint64_t index, unsigned ndim,
                             const uint64_t *shape, float step, unsigned N, unsigned window_set,
                             size_t nslices, const cr_slice *sl)
{
    size_t i;
    cr_u8(b, flags | (1u << 4) | ndim);
    if (!(flags & CR_INDEX_IMPLICIT)) cr_varint(b, index);
    for (i = 0; i < ndim; i++) cr_varint(b, shape[i]);
    if (!(flags & CR_STEP_REPEAT)) cr_f32(b, step);
    cr_u8(b, N | (window_set << 4));
    cr_varint(b, nslices);
    for (i = 0; i < nslices; i++) {
        if (i + 1 < nslices) cr_varint(b, sl[i].rows);
        cr_u8(b, sl[i].mode | (sl[i].k << 2));
        cr_varint(b, sl[i].size);
    }
}

static inline void cr_seal(cr_buf *b)
{
    cr_le32(b, cr_crc32(b->d, b->n));
}

/* Recompute the trailing CRC of a container of `size` bytes in place. */
static inline void cr_reseal(uint8_t *p, size_t size)
{
    uint32_t c;
    if (size < 4) return;
    c = cr_crc32(p, size - 4);
    p[size - 4] = (uint8_t)c;
    p[size - 3] = (uint8_t)(c >> 8);
    p[size - 2] = (uint8_t)(c >> 16);
    p[size - 1] = (uint8_t)(c >> 24);
}

/* ------------------------------------------------------------ walking */

#define CR_MAX_TENSORS 64
#define CR_MAX_SLICES 256

#define CR_NONE ((size_t)-1)

typedef struct cr_tensor_pos {
    size_t start;        /* the flags/dtype/ndim byte */
    size_t index;        /* index varint, CR_NONE when implicit */
    size_t shape;        /* first shape varint */
    size_t step;         /* float32 step, CR_NONE when repeated */
    size_t params;       /* N | window set byte */
    size_t quant;        /* quantizer byte, CR_NONE when absent */
    size_t nslices_pos;  /* slice count varint */
    size_t nslices;
    size_t first_slice;  /* into cr_layout.slice_* */
} cr_tensor_pos;

typedef struct cr_layout {
    size_t seed;                         /* dither seed, CR_NONE when absent */
    size_t count;
    cr_tensor_pos t[CR_MAX_TENSORS];
    size_t nslices;
    size_t slice_rows[CR_MAX_SLICES];    /* rows varint, CR_NONE for a last slice */
    size_t slice_modebyte[CR_MAX_SLICES];
    size_t slice_sizepos[CR_MAX_SLICES]; /* size varint */
    size_t slice_payload[CR_MAX_SLICES]; /* first payload byte */
    size_t slice_size[CR_MAX_SLICES];
    size_t crc;                          /* offset of the CRC */
} cr_layout;

static inline int cr_get_varint(const uint8_t *p, size_t size, size_t *pos, uint64_t *v)
{
    unsigned shift = 0;
    *v = 0;
    for (;;) {
        if (*pos >= size || shift > 63) return 0;
        *v |= (uint64_t)(p[*pos] & 0x7F) << shift;
        if (!(p[(*pos)++] & 0x80)) return 1;
        shift += 7;
    }
}

/* Walk a well-formed container; returns 0 if it is not one this walker
 * understands. */
static inline int cr_walk(const uint8_t *p, size_t size, cr_layout *L)
{
    size_t pos = 6, i, s;
    uint64_t count, v;
    memset(L, 0, sizeof(*L));
    if (size < 11 || memcmp(p, "FCDC", 4) != 0) return 0;
    L->seed = CR_NONE;
    if (p[5] & 1u) { /* container flag: a u64 dither seed follows */
        L->seed = pos;
        pos += 8;
    }
    if (!cr_get_varint(p, size, &pos, &count) || count > CR_MAX_TENSORS) return 0;
    L->count = (size_t)count;
    for (i = 0; i < count; i++) {
        cr_tensor_pos *t = &L->t[i];
        unsigned ndim, d, flags;
        size_t first = L->nslices;
        t->start = pos;
        if (pos >= size) return 0;
        flags = p[pos++];
        ndim = flags & 0x0F;
        t->index = CR_NONE;
        if (!(flags & CR_INDEX_IMPLICIT)) {
            t->index = pos;
            if (!cr_get_varint(p, size, &pos, &v)) return 0;
        }
        t->shape = pos;
        for (d = 0; d < ndim; d++)
            if (!cr_get_varint(p, size, &pos, &v)) return 0;
        t->step = CR_NONE;
        if (!(flags & CR_STEP_REPEAT)) {
            t->step = pos;
            pos += 4;
        }
        t->params = pos++;
        t->quant = CR_NONE;
        if (pos <= size && (p[t->params] & 0x80u)) t->quant = pos++;
        if (t->quant != CR_NONE && t->quant < size && (p[t->quant] & 0x08u)) pos += 4; /* REFERENCE digest */
        t->nslices_pos = pos;
        if (!cr_get_varint(p, size, &pos, &v) || L->nslices + v > CR_MAX_SLICES) return 0;
        t->nslices = (size_t)v;
        t->first_slice = first;
        for (s = 0; s < t->nslices; s++) {
            L->slice_rows[first + s] = CR_NONE;
            if (s + 1 < t->nslices) {
                L->slice_rows[first + s] = pos;
                if (!cr_get_varint(p, size, &pos, &v)) return 0;
            }
            L->slice_modebyte[first + s] = pos++;
            L->slice_sizepos[first + s] = pos;
            if (!cr_get_varint(p, size, &pos, &v)) return 0;
            L->slice_size[first + s] = (size_t)v;
        }
        for (s = 0; s < t->nslices; s++) {
            L->slice_payload[first + s] = pos;
            pos += L->slice_size[first + s];
        }
        L->nslices += t->nslices;
        if (pos > size) return 0;
    }
    if (pos + 4 != size) return 0;
    L->crc = pos;
    return 1;
}

#endif /* FC_TEST_CRAFT_H */
