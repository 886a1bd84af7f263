/*
 * container.h - the container (codec_c/FORMAT.md): parsing untrusted bytes
 * into a checked table of tensors and slices, and writing it.
 */
#ifndef FC_CONTAINER_H
#define FC_CONTAINER_H

#include "common.h"

#define FC_MAGIC0 'F'
#define FC_MAGIC1 'C'
#define FC_MAGIC2 'D'
#define FC_MAGIC3 'C'
#define FC_DTYPE_F32 1u
#define FC_MAX_INDEX 0xFFFFFFFFu
/* Tensor header flag bits in the dtype/ndim byte. */
#define FC_HDR_INDEX_IMPLICIT 0x40u /* index = previous index + 1 (0 first) */
#define FC_HDR_STEP_REPEAT 0x80u    /* step = previous tensor's step */
/* Container flag bits (byte 5). */
#define FC_CFLAG_DITHER_SEED 0x01u  /* a u64 dither seed follows the flags */
#define FC_CFLAG_COMPACT 0x02u      /* shapes known to both ends: a u32 shape
                                       digest follows (after the seed); tensor
                                       headers carry no ndim/shape, omitted
                                       tensors are all zero, short steps */
/* Compact tensor headers: bits 0-1 of the desc byte are the step form. */
#define FC_STEP_F32 0u  /* 4-byte float32 */
#define FC_STEP_CODE 1u /* 1 byte c: float32 bits ((100 + (c >> 3)) << 23) | ((c & 7) << 20) */
#define FC_STEP_BF16 2u /* 2 bytes: the upper half of the float32's bits */
#define FC_STEP_FORM_MASK 0x03u
/* Tensor params byte: bit 7 = a quantizer byte follows. */
#define FC_PARAMS_EXT 0x80u
/* Quantizer byte: bits 0-1 the kind; bit 2 = the 2-D view is coded
 * transposed; bit 3 = coded with a reference tensor, whose digest (u32)
 * follows the quantizer byte; bit 4 = the view of the tensor with its first
 * two axes swapped is coded (ndim >= 3: a conv filter bank [out, in, kh, kw]
 * coded as rows of input channels, [in, out * kh * kw]). */
#define FC_QBYTE_KIND 0x03u
#define FC_QBYTE_TRANSPOSED 0x04u
#define FC_QBYTE_REFERENCE 0x08u
#define FC_QBYTE_SWAPPED 0x10u
/* Quantizer byte bit 5: the tensor's slices use the short code (short.h,
 * FORMAT.md §6.6): uniform tensors in the given view without reference. */
#define FC_QBYTE_SHORT 0x20u
/* fc_tensor_desc.transposed: which view of the tensor is coded. */
#define FC_VIEW_GIVEN 0
#define FC_VIEW_TRANSPOSED 1 /* the 2-D view transposed: cols x rows */
#define FC_VIEW_SWAPPED 2    /* axes 0 and 1 swapped: d1 x (d0 * inner) */

typedef struct fc_slice_desc {
    uint64_t rows;
    unsigned mode;
    unsigned k;
    const uint8_t *payload;
    size_t size;
} fc_slice_desc;

typedef struct fc_tensor_desc {
    uint32_t index;
    uint32_t ndim;
    uint64_t shape[FC_MAX_DIMS];
    uint64_t numel, rows, cols; /* rows, cols: the coded view (FC_VIEW_*) */
    int transposed;             /* FC_VIEW_GIVEN, FC_VIEW_TRANSPOSED or FC_VIEW_SWAPPED */
    float step;
    unsigned max_gtx;
    unsigned window_set;
    unsigned quant;        /* enum fc_quantizer */
    int has_ref;           /* coded with a reference tensor */
    uint32_t ref_digest;   /* fc_reference_digest() of that reference */
    int coded;             /* in a compact container: 0 = omitted (all zero) */
    int short_code;        /* FC_QBYTE_SHORT: slices in the short code */
    size_t nslices;
    fc_slice_desc *slices; /* points into fc_parsed.slices */
} fc_tensor_desc;

typedef struct fc_parsed {
    int has_seed;
    int compact;           /* FC_CFLAG_COMPACT: `count` is the caller's shape count */
    uint32_t shape_digest; /* with compact */
    uint64_t dither_seed;
    size_t count;
    fc_tensor_desc *tensors;
    size_t nslices;
    fc_slice_desc *slices;
} fc_parsed;

/* Rows and columns of the coded 2-D view; returns 0 on overflow. */
int fc_layout(uint32_t ndim, const uint64_t *shape, uint64_t *numel, uint64_t *rows, uint64_t *cols);

/* Elements per (axis 0, axis 1) pair: the product of shape[2 ..] (1 for
 * ndim < 3); the block a SWAPPED view moves as one. */
uint64_t fc_inner_size(const fc_tensor_desc *d);

/* Parse and check everything but the payload contents. */
int fc_parse(const uint8_t *src, size_t size, const fc_decode_options *opts, fc_parsed *out);
void fc_parsed_free(fc_parsed *p);

/* The digest a compact container records of its tensors' shapes
 * (FORMAT.md §2): CRC-32 of varint(count), then per tensor varint(ndim) and
 * varint(shape[i]) for each dimension. */
uint32_t fc_shape_digest(const fc_shape *shapes, size_t count);

/* Header writing.  `compact`: a compact container (FC_CFLAG_COMPACT) with
 * shape digest `digest`; `count` is then the number of coded tensors. */
void fc_write_container_header(fc_buf *b, size_t count, int has_seed, uint64_t seed, int compact,
                               uint32_t digest);
/* `prev` is the previous (coded) tensor of the container, or NULL for the
 * first; `compact`: the compact header form (no ndim/shape, short steps). */
void fc_write_tensor_header(fc_buf *b, const fc_tensor_desc *t, const fc_tensor_desc *prev,
                            int compact);

#endif
