/* container.c - container parsing (hostile input) and header writing. */
#include <math.h>

#include "container.h"
#include "short.h"

uint64_t fc_inner_size(const fc_tensor_desc *d)
{
    uint64_t k = 1;
    uint32_t i;
    for (i = 2; i < d->ndim; i++) k *= d->shape[i]; /* a factor of numel: no overflow */
    return k;
}

int fc_layout(uint32_t ndim, const uint64_t *shape, uint64_t *numel, uint64_t *rows, uint64_t *cols)
{
    uint64_t n = 1, c = 1;
    uint32_t i;
    for (i = 0; i < ndim; i++) {
        if (shape[i] != 0 && n > UINT64_MAX / shape[i]) return 0;
        n *= shape[i];
        if (i > 0) c *= shape[i];
    }
    if (n > ((uint64_t)1 << 62)) return 0;
    *numel = n;
    if (ndim == 0) {
        *rows = 1;
        *cols = 1;
    } else if (ndim == 1) {
        *rows = 1;
        *cols = shape[0];
    } else {
        *rows = shape[0];
        *cols = c;
    }
    return 1;
}

void fc_parsed_free(fc_parsed *p)
{
    free(p->tensors);
    free(p->slices);
    p->tensors = NULL;
    p->slices = NULL;
    p->count = p->nslices = 0;
}

#define CHECK(expr)                   \
    do {                              \
        int rc_ = (expr);             \
        if (rc_ != FC_OK) return rc_; \
    } while (0)

/* The shape of a tensor from the caller (compact containers): checked
 * against the limits like a shape read from the container. */
static int known_shape(const fc_decode_options *o, const fc_shape *want, uint32_t index,
                       uint64_t *total, fc_tensor_desc *td)
{
    uint32_t i;
    td->index = index;
    td->ndim = want->ndim;
    for (i = 0; i < td->ndim; i++) {
        td->shape[i] = want->shape[i];
        if (td->shape[i] > o->max_tensor_elems && td->shape[i] > 1) return FC_ERR_LIMIT;
    }
    if (!fc_layout(td->ndim, td->shape, &td->numel, &td->rows, &td->cols)) return FC_ERR_LIMIT;
    if (td->numel > o->max_tensor_elems) return FC_ERR_LIMIT;
    *total += td->numel;
    if (*total > o->max_total_elems) return FC_ERR_LIMIT;
    return FC_OK;
}

/* Parse one tensor.  In compact containers (out->compact) the shape comes
 * from out->tensors[index], filled from o->expected and checked against the
 * limits by fc_parse (`total` is not used then). */
static int parse_tensor(fc_reader *r, const fc_decode_options *o, const fc_shape *want,
                        const fc_tensor_desc *prev, uint64_t *total, fc_tensor_desc *td,
                        fc_parsed *out, size_t *slice_cap)
{
    uint64_t v, s, rows_seen = 0, nsl;
    size_t first;
    uint32_t i;
    uint8_t byte, flags;
    int compact = out->compact;

    memset(td, 0, sizeof(*td));
    CHECK(fc_get_u8(r, &flags));
    if (((flags >> 4) & 3u) != FC_DTYPE_F32) return FC_ERR_CORRUPT;
    if (compact) {
        /* bits 0-1: the step form (not with STEP_REPEAT, not 3); bits 2-3 zero */
        if ((flags & 0x0Cu) || (flags & FC_STEP_FORM_MASK) == 3u ||
            ((flags & FC_HDR_STEP_REPEAT) && (flags & FC_STEP_FORM_MASK)))
            return FC_ERR_CORRUPT;
    } else {
        td->ndim = flags & 0x0Fu;
        if (td->ndim > FC_MAX_DIMS) return FC_ERR_CORRUPT;
        if (want && td->ndim != want->ndim) return FC_ERR_MISMATCH;
    }
    if (flags & FC_HDR_INDEX_IMPLICIT) {
        v = prev ? (uint64_t)prev->index + 1u : 0u;
    } else {
        CHECK(fc_get_varint(r, &v));
    }
    if (v > FC_MAX_INDEX || (prev && v <= prev->index)) return FC_ERR_CORRUPT;
    if (compact) {
        if (v >= o->expected_count) return FC_ERR_CORRUPT;
        *td = out->tensors[v]; /* the known shape, checked by fc_parse */
        td->coded = 1;
    } else {
        td->index = (uint32_t)v;
        for (i = 0; i < td->ndim; i++) {
            CHECK(fc_get_varint(r, &td->shape[i]));
            if (want && td->shape[i] != want->shape[i]) return FC_ERR_MISMATCH;
            if (td->shape[i] > o->max_tensor_elems && td->shape[i] > 1) return FC_ERR_LIMIT;
        }
        if (!fc_layout(td->ndim, td->shape, &td->numel, &td->rows, &td->cols)) return FC_ERR_LIMIT;
        if (td->numel > o->max_tensor_elems) return FC_ERR_LIMIT;
        *total += td->numel;
        if (*total > o->max_total_elems) return FC_ERR_LIMIT;
    }

    if (flags & FC_HDR_STEP_REPEAT) {
        if (!prev) return FC_ERR_CORRUPT;
        td->step = prev->step;
    } else {
        unsigned form = compact ? flags & FC_STEP_FORM_MASK : FC_STEP_F32;
        uint32_t bits;
        if (form == FC_STEP_CODE) {
            CHECK(fc_get_u8(r, &byte));
            bits = ((100u + (byte >> 3)) << 23) | ((uint32_t)(byte & 7u) << 20);
        } else if (form == FC_STEP_BF16) {
            if (r->end - r->p < 2) return FC_ERR_TRUNCATED;
            bits = ((uint32_t)r->p[0] | ((uint32_t)r->p[1] << 8)) << 16;
            r->p += 2;
        } else {
            if (r->end - r->p < 4) return FC_ERR_TRUNCATED;
            bits = fc_load_le32(r->p);
            r->p += 4;
        }
        td->step = fc_bits_f32(bits);
        if (!isnormal(td->step) || !(td->step > 0.0f)) return FC_ERR_CORRUPT;
    }

    CHECK(fc_get_u8(r, &byte));
    td->max_gtx = byte & 0x0Fu;
    td->window_set = (byte >> 4) & 7u;
    if (td->max_gtx < 1 || td->max_gtx > FC_MAX_GTX) return FC_ERR_CORRUPT;
    td->quant = FC_QUANT_UNIFORM;
    td->has_ref = 0;
    td->ref_digest = 0;
    if (byte & FC_PARAMS_EXT) {
        uint8_t ext;
        CHECK(fc_get_u8(r, &ext));
        if (ext & ~(FC_QBYTE_KIND | FC_QBYTE_TRANSPOSED | FC_QBYTE_REFERENCE | FC_QBYTE_SWAPPED |
                    FC_QBYTE_SHORT))
            return FC_ERR_CORRUPT;
        td->quant = ext & FC_QBYTE_KIND;
        /* SHORT: uniform tensors in the given view, without reference */
        if ((ext & FC_QBYTE_SHORT) &&
            ((ext & (FC_QBYTE_KIND | FC_QBYTE_TRANSPOSED | FC_QBYTE_REFERENCE | FC_QBYTE_SWAPPED))))
            return FC_ERR_CORRUPT;
        td->short_code = (ext & FC_QBYTE_SHORT) != 0;
        if (td->quant == FC_QUANT_DITHER && !out->has_seed) return FC_ERR_CORRUPT;
        if (ext & FC_QBYTE_TRANSPOSED) {
            uint64_t t = td->rows;
            /* Only a matrix view of >= 2 dimensions, never dithered, never
             * with a reference (which is in the original layout). */
            if (td->ndim < 2 || td->quant == FC_QUANT_DITHER || (ext & FC_QBYTE_REFERENCE))
                return FC_ERR_CORRUPT;
            td->transposed = FC_VIEW_TRANSPOSED;
            td->rows = td->cols;
            td->cols = t;
        }
        if (ext & FC_QBYTE_SWAPPED) {
            /* Only >= 3 dimensions (for a matrix it is the transposition),
             * never with TRANSPOSED, dithered or with a reference. */
            if (td->ndim < 3 || (ext & (FC_QBYTE_TRANSPOSED | FC_QBYTE_REFERENCE)) ||
                td->quant == FC_QUANT_DITHER)
                return FC_ERR_CORRUPT;
            td->transposed = FC_VIEW_SWAPPED;
            td->rows = td->shape[1];
            td->cols = td->rows ? td->numel / td->rows : 0;
        }
        if (ext & FC_QBYTE_REFERENCE) {
            if (r->end - r->p < 4) return FC_ERR_TRUNCATED;
            td->has_ref = 1;
            td->ref_digest = fc_load_le32(r->p);
            r->p += 4;
        }
    }

    CHECK(fc_get_varint(r, &nsl));
    if (nsl > td->rows || (td->numel == 0 && nsl != 0)) return FC_ERR_CORRUPT;
    /* Every element of a dithered tensor reconstructs to a nonzero value:
     * there is no all-zero shortcut. */
    if (td->quant == FC_QUANT_DITHER && td->numel > 0 && nsl == 0) return FC_ERR_CORRUPT;
    /* Each slice entry takes at least 2 bytes: bounds the allocation. */
    if (nsl > (uint64_t)(r->end - r->p) / 2u) return FC_ERR_TRUNCATED;
    td->nslices = (size_t)nsl;
    first = out->nslices;
    if (out->nslices + td->nslices > *slice_cap) {
        size_t cap = *slice_cap ? *slice_cap : 16;
        fc_slice_desc *p;
        while (cap < out->nslices + td->nslices) cap *= 2;
        p = (fc_slice_desc *)realloc(out->slices, cap * sizeof(*p));
        if (!p) return FC_ERR_NOMEM;
        out->slices = p;
        *slice_cap = cap;
    }
    for (s = 0; s < nsl; s++) {
        fc_slice_desc *sd = &out->slices[first + s];
        uint64_t sz;
        if (s + 1 < nsl) {
            CHECK(fc_get_varint(r, &sd->rows));
            if (sd->rows == 0 || sd->rows >= td->rows - rows_seen) return FC_ERR_CORRUPT;
        } else {
            sd->rows = td->rows - rows_seen; /* the last slice takes the rest */
        }
        CHECK(fc_get_u8(r, &byte));
        CHECK(fc_get_varint(r, &sz));
        sd->mode = byte & 3u;
        sd->k = (byte >> 2) & 63u;
        if (td->short_code) {
            /* short code (§6.6): mode 0, k the order (<= FC_SHORT_MAX_K), bit 7 clear */
            if (sd->mode != 0 || sd->k > FC_SHORT_MAX_K) return FC_ERR_CORRUPT;
        } else if (sd->mode > FC_MODE_RUNS ||
            /* bit 7 (k bit 5): CLASSCTX, dense PREDICT slices only (§7.7) */
            ((byte & 0x80u) && (sd->mode != FC_MODE_DENSE || !((sd->k & 4u) || td->has_ref))) ||
            (sd->mode == FC_MODE_GROUPED && (sd->k & ~3u)) ||
            /* PREDICT (FORMAT.md §7.6): dense slices without ROWKIND, of
             * tensors without a reference, rows up to FC_ROW_CTX_MAX; its
             * ROWSCALE and RANK8 bits only with it */
            (sd->mode == FC_MODE_DENSE && (sd->k & 4u) &&
             (((sd->k & 2u) && !(sd->k & 8u)) || td->has_ref || td->cols > FC_ROW_CTX_MAX)) ||
            /* ROWFINE (bit 3 without PREDICT): ROWKIND slices of uniform tensors */
            (sd->mode == FC_MODE_DENSE && !(sd->k & 4u) &&
             (sd->k & ~(td->has_ref ? 35u : 3u) &
              ~((sd->k & 2u) && td->quant == FC_QUANT_UNIFORM ? 8u : 0u))) ||
            (sd->mode == FC_MODE_GROUPED && (sd->k & 2u)) ||
            ((sd->k & 1u) && sd->mode != FC_MODE_RUNS && td->cols > FC_ROW_CTX_MAX))
            return FC_ERR_CORRUPT;
        rows_seen += sd->rows;
        if (sz > (uint64_t)(r->end - r->p)) return FC_ERR_TRUNCATED;
        sd->size = (size_t)sz;
        sd->payload = NULL;
        out->nslices++;
    }
    for (s = 0; s < nsl; s++) {
        fc_slice_desc *sd = &out->slices[first + s];
        if ((size_t)(r->end - r->p) < sd->size) return FC_ERR_TRUNCATED;
        sd->payload = r->p;
        r->p += sd->size;
    }
    /* Store the offset; pointers are fixed once the table stops moving. */
    td->slices = (fc_slice_desc *)(uintptr_t)first;
    return FC_OK;
}

int fc_parse(const uint8_t *src, size_t size, const fc_decode_options *o, fc_parsed *out)
{
    fc_reader r;
    uint64_t count, t, total = 0;
    size_t slice_cap = 0, i;
    int rc;

    memset(out, 0, sizeof(*out));
    if (!src && size) return FC_ERR_INVALID_ARGUMENT;
    if (size < 4) return FC_ERR_TRUNCATED;
    if (src[0] != FC_MAGIC0 || src[1] != FC_MAGIC1 || src[2] != FC_MAGIC2 || src[3] != FC_MAGIC3)
        return FC_ERR_VERSION;
    if (size < 11) return FC_ERR_TRUNCATED;
    if (src[4] != FC_FORMAT_VERSION) return FC_ERR_VERSION;
    if (fc_crc32(0, src, size - 4) != fc_load_le32(src + size - 4)) return FC_ERR_CHECKSUM;
    if (src[5] & ~(FC_CFLAG_DITHER_SEED | FC_CFLAG_COMPACT)) return FC_ERR_CORRUPT;

    r.p = src + 6;
    r.end = src + size - 4;
    if (src[5] & FC_CFLAG_DITHER_SEED) {
        if (r.end - r.p < 8) return FC_ERR_TRUNCATED;
        out->has_seed = 1;
        out->dither_seed = (uint64_t)fc_load_le32(r.p) | ((uint64_t)fc_load_le32(r.p + 4) << 32);
        r.p += 8;
    }
    if (src[5] & FC_CFLAG_COMPACT) {
        if (r.end - r.p < 4) return FC_ERR_TRUNCATED;
        out->compact = 1;
        out->shape_digest = fc_load_le32(r.p);
        r.p += 4;
        /* The shapes are the caller's: without them, or with others, the
         * container cannot be read. */
        if (!o->expected || fc_shape_digest(o->expected, o->expected_count) != out->shape_digest)
            return FC_ERR_MISMATCH;
    }
    rc = fc_get_varint(&r, &count);
    if (rc != FC_OK) return rc;
    if (out->compact) {
        fc_tensor_desc *coded_prev = NULL;
        if (o->expected_count > o->max_tensors) return FC_ERR_LIMIT;
        if (count > o->expected_count) return FC_ERR_CORRUPT;
        if (count > (uint64_t)(r.end - r.p) / 3u) return FC_ERR_TRUNCATED;
        out->tensors = (fc_tensor_desc *)calloc(o->expected_count ? o->expected_count : 1,
                                                sizeof(fc_tensor_desc));
        if (!out->tensors) return FC_ERR_NOMEM;
        /* Every tensor of the model; those the container omits are all zero. */
        for (i = 0; i < o->expected_count; i++) {
            fc_tensor_desc *td = &out->tensors[i];
            rc = known_shape(o, &o->expected[i], (uint32_t)i, &total, td);
            if (rc == FC_OK && i > FC_MAX_INDEX) rc = FC_ERR_LIMIT;
            if (rc != FC_OK) {
                fc_parsed_free(out);
                return rc;
            }
            td->step = 1.0f;
            td->max_gtx = 4;
            td->quant = FC_QUANT_UNIFORM;
        }
        out->count = o->expected_count;
        for (t = 0; t < count; t++) {
            fc_tensor_desc td;
            rc = parse_tensor(&r, o, NULL, coded_prev, &total, &td, out, &slice_cap);
            if (rc != FC_OK) {
                fc_parsed_free(out);
                return rc;
            }
            out->tensors[td.index] = td;
            coded_prev = &out->tensors[td.index];
        }
    } else {
        if (o->expected && count != o->expected_count) return FC_ERR_MISMATCH;
        if (count > o->max_tensors) return FC_ERR_LIMIT;
        /* Each tensor takes at least 3 bytes: bounds the allocation. */
        if (count > (uint64_t)(r.end - r.p) / 3u) return FC_ERR_TRUNCATED;
        out->tensors = (fc_tensor_desc *)calloc(count ? (size_t)count : 1, sizeof(fc_tensor_desc));
        if (!out->tensors) return FC_ERR_NOMEM;
        for (t = 0; t < count; t++) {
            rc = parse_tensor(&r, o, o->expected ? &o->expected[t] : NULL,
                              t ? &out->tensors[t - 1] : NULL, &total, &out->tensors[t], out,
                              &slice_cap);
            if (rc != FC_OK) {
                fc_parsed_free(out);
                return rc;
            }
            out->tensors[t].coded = 1;
            out->count = (size_t)t + 1;
        }
    }
    if (r.p != r.end) {
        fc_parsed_free(out);
        return FC_ERR_CORRUPT;
    }
    for (i = 0; i < out->count; i++)
        out->tensors[i].slices =
            out->slices ? out->slices + (size_t)(uintptr_t)out->tensors[i].slices : NULL;
    return FC_OK;
}

/* crc updated with the LEB128 varint of v */
static uint32_t crc_varint(uint32_t crc, uint64_t v)
{
    uint8_t b[10];
    size_t n = 0;
    while (v >= 0x80) {
        b[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    b[n++] = (uint8_t)v;
    return fc_crc32(crc, b, n);
}

uint32_t fc_shape_digest(const fc_shape *shapes, size_t count)
{
    uint32_t crc = crc_varint(0, count), i;
    size_t k;
    for (k = 0; k < count; k++) {
        crc = crc_varint(crc, shapes[k].ndim);
        for (i = 0; i < shapes[k].ndim && i < FC_MAX_DIMS; i++) crc = crc_varint(crc, shapes[k].shape[i]);
    }
    return crc;
}

void fc_write_container_header(fc_buf *b, size_t count, int has_seed, uint64_t seed, int compact,
                               uint32_t digest)
{
    uint8_t le[8];
    fc_buf_put(b, FC_MAGIC0);
    fc_buf_put(b, FC_MAGIC1);
    fc_buf_put(b, FC_MAGIC2);
    fc_buf_put(b, FC_MAGIC3);
    fc_buf_put(b, FC_FORMAT_VERSION);
    fc_buf_put(b, (uint8_t)((has_seed ? FC_CFLAG_DITHER_SEED : 0u) | (compact ? FC_CFLAG_COMPACT : 0u)));
    if (has_seed) {
        fc_store_le32(le, (uint32_t)seed);
        fc_store_le32(le + 4, (uint32_t)(seed >> 32));
        fc_buf_write(b, le, 8);
    }
    if (compact) {
        fc_store_le32(le, digest);
        fc_buf_write(b, le, 4);
    }
    fc_put_varint(b, count);
}

/* The shortest exact step form of a compact header (FORMAT.md §3). */
static unsigned step_form(uint32_t bits)
{
    uint32_t e = bits >> 23; /* a positive step: the sign bit is 0 */
    if ((bits & 0xFFFFFu) == 0 && e >= 100u && e <= 131u) return FC_STEP_CODE;
    if ((bits & 0xFFFFu) == 0) return FC_STEP_BF16;
    return FC_STEP_F32;
}

void fc_write_tensor_header(fc_buf *b, const fc_tensor_desc *t, const fc_tensor_desc *prev,
                            int compact)
{
    uint8_t le[4];
    uint32_t i, bits = fc_f32_bits(t->step);
    size_t s;
    int index_implicit = prev ? t->index == prev->index + 1u : t->index == 0;
    int step_repeat = prev && fc_f32_bits(prev->step) == bits;
    unsigned form = compact && !step_repeat ? step_form(bits) : FC_STEP_F32;
    fc_buf_put(b, (uint8_t)((FC_DTYPE_F32 << 4) | (compact ? form : t->ndim) |
                            (index_implicit ? FC_HDR_INDEX_IMPLICIT : 0) |
                            (step_repeat ? FC_HDR_STEP_REPEAT : 0)));
    if (!index_implicit) fc_put_varint(b, t->index);
    if (!compact)
        for (i = 0; i < t->ndim; i++) fc_put_varint(b, t->shape[i]);
    if (!step_repeat) {
        if (form == FC_STEP_CODE) {
            fc_buf_put(b, (uint8_t)((((bits >> 23) - 100u) << 3) | ((bits >> 20) & 7u)));
        } else if (form == FC_STEP_BF16) {
            fc_buf_put(b, (uint8_t)(bits >> 16));
            fc_buf_put(b, (uint8_t)(bits >> 24));
        } else {
            fc_store_le32(le, bits);
            fc_buf_write(b, le, 4);
        }
    }
    {
        unsigned ext = t->quant | (t->transposed == FC_VIEW_TRANSPOSED ? FC_QBYTE_TRANSPOSED : 0u) |
                       (t->transposed == FC_VIEW_SWAPPED ? FC_QBYTE_SWAPPED : 0u) |
                       (t->has_ref ? FC_QBYTE_REFERENCE : 0u) | (t->short_code ? FC_QBYTE_SHORT : 0u);
        fc_buf_put(b, (uint8_t)(t->max_gtx | (t->window_set << 4) | (ext ? FC_PARAMS_EXT : 0)));
        if (ext) fc_buf_put(b, (uint8_t)ext);
    }
    if (t->has_ref) {
        fc_store_le32(le, t->ref_digest);
        fc_buf_write(b, le, 4);
    }
    fc_put_varint(b, t->nslices);
    for (s = 0; s < t->nslices; s++) {
        if (s + 1 < t->nslices) fc_put_varint(b, t->slices[s].rows);
        fc_buf_put(b, (uint8_t)(t->slices[s].mode | (t->slices[s].k << 2)));
        fc_put_varint(b, t->slices[s].size);
    }
}
