/*
 * golden_cases.h - the inputs of the golden bitstreams (tests/golden/ok_*),
 * shared by the generator (gen_golden.c, `make golden`) and the checker
 * (test_golden.c), which re-encodes them to see whether the encoder still
 * produces the committed bytes.
 *
 * Every case is built from fixed seeds with the platform-independent
 * generators of test_util.h, so the inputs are the same bits everywhere.
 * Add a case at the end of gc_build(); run `make golden` and commit.
 */
#ifndef FC_GOLDEN_CASES_H
#define FC_GOLDEN_CASES_H

#include "test_util.h"

#include "craft.h"

#define GC_MAX_TENSORS 6

typedef struct gc_set {
    const char *name;
    size_t count;
    fc_tensor t[GC_MAX_TENSORS];
    uint64_t shapes[GC_MAX_TENSORS][FC_MAX_DIMS];
    fc_encode_options o;
    void *mem[2 * GC_MAX_TENSORS]; /* owned arrays */
    size_t nmem;
} gc_set;

static inline void *gc_alloc(gc_set *s, size_t bytes)
{
    void *p = calloc(bytes ? bytes : 1, 1);
    if (!p) abort();
    s->mem[s->nmem++] = p;
    return p;
}

static inline fc_tensor *gc_add(gc_set *s, uint32_t index, uint32_t ndim, uint64_t d0, uint64_t d1,
                                uint64_t d2, uint64_t d3)
{
    fc_tensor *t = &s->t[s->count];
    uint64_t *sh = s->shapes[s->count];
    sh[0] = d0;
    sh[1] = d1;
    sh[2] = d2;
    sh[3] = d3;
    *t = tu_tensor(index, ndim, sh);
    s->count++;
    return t;
}

static inline float *gc_laplace(gc_set *s, fc_tensor *t, uint64_t seed, double b)
{
    tu_rng r = tu_seed(seed);
    uint64_t n = tu_numel(t);
    float *v = (float *)gc_alloc(s, sizeof(float) * n);
    tu_fill_laplace(&r, v, n, b);
    t->values = v;
    return v;
}

/* Integer levels: a fraction `permille` of nonzeros with geometric
 * magnitudes (mean about 1 + 1/(q-1)), a few large ones. */
static inline int32_t *gc_levels(gc_set *s, fc_tensor *t, uint64_t seed, unsigned permille,
                                 unsigned q)
{
    tu_rng r = tu_seed(seed);
    uint64_t n = tu_numel(t), i;
    int32_t *lv = (int32_t *)gc_alloc(s, sizeof(int32_t) * n);
    for (i = 0; i < n; i++) {
        int32_t m = 1;
        if (tu_below(&r, 1000) >= permille) continue;
        while (tu_below(&r, q) == 0 && m < 100000) m++;
        if (tu_below(&r, 100) == 0) m += (int32_t)tu_below(&r, 70000);
        lv[i] = tu_below(&r, 2) ? -m : m;
    }
    t->levels = lv;
    return lv;
}

static inline void gc_free(gc_set *s)
{
    size_t i;
    for (i = 0; i < s->nmem; i++) free(s->mem[i]);
    memset(s, 0, sizeof(*s));
}

/* Build case `which` (0, 1, ...); returns 0 past the last one. */
static inline int gc_build(int which, gc_set *s)
{
    fc_tensor *t;
    memset(s, 0, sizeof(*s));
    fc_encode_options_init(&s->o);
    s->o.threads = 1;
    switch (which) {
    case 0: /* dense float update, plain rounding */
        s->name = "dense";
        s->o.mode = FC_MODE_DENSE;
        s->o.S = 128;
        t = gc_add(s, 0, 2, 48, 64, 0, 0);
        gc_laplace(s, t, 1, 0.01);
        return 1;
    case 1: /* sparse integer levels in grouped mode */
        s->name = "grouped";
        s->o.mode = FC_MODE_GROUPED;
        t = gc_add(s, 0, 2, 40, 96, 0, 0);
        gc_levels(s, t, 2, 30, 2);
        t->step = 0.001;
        return 1;
    case 2: /* top-0.5 % float update in runs mode */
        s->name = "runs";
        s->o.mode = FC_MODE_RUNS;
        t = gc_add(s, 0, 2, 64, 128, 0, 0);
        tu_topk(gc_laplace(s, t, 3, 0.02), 64 * 128, 41);
        return 1;
    case 3: /* RD quantization with importance, automatic modes */
        s->name = "rdoq";
        s->o.lambda = 0.1155;
        s->o.S = 64;
        t = gc_add(s, 0, 2, 32, 80, 0, 0);
        gc_laplace(s, t, 4, 0.01);
        {
            tu_rng r = tu_seed(5);
            uint64_t i, n = 32 * 80;
            float *imp = (float *)gc_alloc(s, sizeof(float) * n);
            for (i = 0; i < n; i++) imp[i] = (float)(0.25 + 2.0 * tu_unit(&r));
            t->importance = imp;
        }
        t = gc_add(s, 1, 1, 500, 0, 0, 0);
        tu_topk(gc_laplace(s, t, 6, 0.01), 500, 50);
        return 1;
    case 4: /* several tensors: implicit and explicit indices, a repeated
             * step, 0-d, 1-d and 4-d shapes */
        s->name = "multi";
        t = gc_add(s, 0, 2, 16, 16, 0, 0);
        gc_levels(s, t, 7, 500, 2);
        t->step = 0.5;
        t = gc_add(s, 1, 1, 33, 0, 0, 0);
        gc_levels(s, t, 8, 900, 3);
        t->step = 0.5;
        t = gc_add(s, 2, 0, 0, 0, 0, 0);
        gc_levels(s, t, 9, 1000, 2);
        t->step = 0.25;
        t = gc_add(s, 10, 4, 2, 3, 4, 5);
        gc_laplace(s, t, 10, 0.1);
        return 1;
    case 5: /* all-zero tensors (no slices) and a zero-size one */
        s->name = "zero";
        t = gc_add(s, 0, 2, 20, 20, 0, 0);
        gc_levels(s, t, 11, 0, 2);
        t->step = 1.0;
        t = gc_add(s, 1, 3, 4, 0, 9, 0);
        t->step = 1.0;
        t = gc_add(s, 2, 1, 100, 0, 0, 0);
        t->values = (const float *)gc_alloc(s, sizeof(float) * 100); /* all 0.0f */
        t = gc_add(s, 3, 1, 10, 0, 0, 0);
        gc_levels(s, t, 12, 300, 2);
        t->step = 1.0;
        return 1;
    case 6: /* rows wider than FC_ROW_CTX_MAX, runs and dense */
        s->name = "wide";
        t = gc_add(s, 0, 2, 2, 70000, 0, 0);
        gc_levels(s, t, 13, 2, 2);
        t->step = 0.01;
        return 1;
    case 7:
        s->name = "wide_dense";
        s->o.mode = FC_MODE_DENSE;
        t = gc_add(s, 0, 2, 2, 70000, 0, 0);
        gc_levels(s, t, 14, 2, 2);
        t->step = 0.01;
        return 1;
    case 8: /* N = 1, window set 7, large magnitudes (long remainders) */
        s->name = "params";
        s->o.max_gtx = 1;
        s->o.window_set = 7;
        s->o.mode = FC_MODE_DENSE;
        t = gc_add(s, 0, 2, 24, 40, 0, 0);
        gc_levels(s, t, 15, 800, 40);
        t->step = 0.001;
        return 1;
    case 9: /* structured update: rank-1 rows over a few columns (reference
             * rows and column contexts) */
        s->name = "structured";
        t = gc_add(s, 0, 2, 96, 64, 0, 0);
        {
            tu_rng r = tu_seed(16);
            uint64_t i, j;
            float *v = (float *)gc_alloc(s, sizeof(float) * 96 * 64);
            float col[64];
            for (j = 0; j < 64; j++) col[j] = tu_below(&r, 4) == 0 ? (float)tu_laplace(&r, 1.0) : 0.0f;
            for (i = 0; i < 96; i++) {
                float u = (float)tu_laplace(&r, 0.01);
                if (i % 5 == 3) continue;
                for (j = 0; j < 64; j++) v[i * 64 + j] = u * col[j];
            }
            t->values = v;
        }
        return 1;
    case 10: /* one tensor in several slices */
        s->name = "slices";
        s->o.slice_elems = 4096;
        t = gc_add(s, 0, 2, 96, 128, 0, 0);
        gc_levels(s, t, 17, 900, 2);
        t->step = 0.002;
        return 1;
    case 11: /* trellis (4 states): a dense tensor and a top-2 % one (runs) */
        s->name = "trellis";
        s->o.quantizer = FC_QUANT_TRELLIS;
        s->o.lambda = 0.1155;
        s->o.S = 64;
        t = gc_add(s, 0, 2, 40, 64, 0, 0);
        gc_laplace(s, t, 18, 0.01);
        t = gc_add(s, 1, 2, 32, 100, 0, 0);
        tu_topk(gc_laplace(s, t, 19, 0.01), 32 * 100, 64);
        return 1;
    case 12: /* trellis (8 states), grouped mode, importance, two slices */
        s->name = "trellis8";
        s->o.quantizer = FC_QUANT_TRELLIS8;
        s->o.mode = FC_MODE_GROUPED;
        s->o.lambda = 0.2;
        s->o.S = 32;
        s->o.slice_elems = 1500;
        t = gc_add(s, 0, 2, 36, 80, 0, 0);
        tu_topk(gc_laplace(s, t, 20, 0.01), 36 * 80, 900);
        {
            tu_rng r = tu_seed(21);
            uint64_t i, n = 36 * 80;
            float *imp = (float *)gc_alloc(s, sizeof(float) * n);
            for (i = 0; i < n; i++) imp[i] = (float)(0.25 + 2.0 * tu_unit(&r));
            t->importance = imp;
        }
        return 1;
    case 13: /* dithered floats, an all-zero dithered tensor (it keeps its
              * slice) and integer levels (uniform) in one container */
        s->name = "dither";
        s->o.quantizer = FC_QUANT_DITHER;
        s->o.dither_seed = 0xF00DCAFE12345678ull;
        s->o.S = 16;
        t = gc_add(s, 0, 2, 24, 50, 0, 0);
        gc_laplace(s, t, 22, 0.01);
        t = gc_add(s, 1, 1, 30, 0, 0, 0);
        t->values = (const float *)gc_alloc(s, sizeof(float) * 30); /* all 0.0f */
        t->step = 0.125;
        t = gc_add(s, 3, 1, 40, 0, 0, 0);
        gc_levels(s, t, 23, 300, 2);
        t->step = 0.5;
        return 1;
    case 14: /* trellis (8 states) on rows whose values all have one magnitude
              * (random signs): the case of the constant-row fix (trellis.c) */
        s->name = "trellis_constrows";
        s->o.quantizer = FC_QUANT_TRELLIS8;
        s->o.lambda = 0.1155;
        t = gc_add(s, 0, 2, 40, 96, 0, 0);
        {
            tu_rng r = tu_seed(24);
            float *v = (float *)gc_alloc(s, sizeof(float) * 40 * 96);
            tu_fill_const_rows(&r, v, 40, 96, 4.0);
            t->values = v;
            t->step = 1.0;
        }
        return 1;
    case 15: /* an embedding table: 85 % empty rows, the others of one
              * magnitude throughout or broad (dense mode, ROWKIND) */
        s->name = "rowkind";
        t = gc_add(s, 0, 2, 160, 64, 0, 0);
        {
            tu_rng r = tu_seed(25);
            int32_t *lv = (int32_t *)gc_alloc(s, sizeof(int32_t) * 160 * 64);
            uint64_t i, j;
            for (i = 0; i < 160; i++) {
                unsigned kind = (unsigned)tu_below(&r, 20);
                int32_t m = 1 + (int32_t)tu_below(&r, 4);
                for (j = 0; j < 64; j++) {
                    int32_t a = kind < 2 ? m : 1 + (int32_t)tu_below(&r, 7);
                    lv[i * 64 + j] = kind >= 3 || tu_below(&r, 30) == 0 ? 0 : (tu_below(&r, 2) ? -a : a);
                }
            }
            t->levels = lv;
            t->step = 0.25;
        }
        return 1;
    case 16: /* an input layer coded transposed (TRANSPOSED): 40 % of its
              * columns empty */
        s->name = "transposed";
        s->o.transpose = 1;
        t = gc_add(s, 0, 2, 24, 80, 0, 0);
        {
            int32_t *lv = gc_levels(s, t, 26, 700, 3);
            uint64_t i;
            for (i = 0; i < 24 * 80; i++)
                if ((i % 80) % 5 < 2) lv[i] = 0;
            t->step = 0.5;
        }
        return 1;
    case 17: /* a dense low-rank update (PREDICT slices: the row predictor),
              * RD-quantized floats and integer levels */
        s->name = "predict";
        s->o.lambda = 0.1155;
        t = gc_add(s, 0, 2, 48, 64, 0, 0);
        {
            tu_rng r = tu_seed(27);
            float *v = (float *)gc_alloc(s, sizeof(float) * 48 * 64);
            tu_fill_lowrank(&r, v, 48, 64, 2, 0.01);
            t->values = v;
            t->step = 0.004;
        }
        t = gc_add(s, 1, 2, 40, 24, 0, 0);
        {
            tu_rng r = tu_seed(28);
            float *v = (float *)gc_alloc(s, sizeof(float) * 40 * 24);
            int32_t *lv = (int32_t *)gc_alloc(s, sizeof(int32_t) * 40 * 24);
            uint64_t i;
            tu_fill_lowrank(&r, v, 40, 24, 3, 1.0);
            for (i = 0; i < 40 * 24; i++) lv[i] = (int32_t)lrint(v[i] * 2.0f);
            t->levels = lv;
            t->step = 0.5;
        }
        return 1;
    case 18: /* an embedding-like table: empty rows, low-rank rows of very
              * different scales (PREDICT with ROWSCALE) */
        s->name = "rowscale";
        t = gc_add(s, 0, 2, 120, 64, 0, 0);
        {
            tu_rng r = tu_seed(29);
            float *v = (float *)gc_alloc(s, sizeof(float) * 120 * 64);
            int32_t *lv = (int32_t *)gc_alloc(s, sizeof(int32_t) * 120 * 64);
            uint64_t i, j;
            tu_fill_lowrank(&r, v, 120, 64, 2, 1.0);
            for (i = 0; i < 120; i++) {
                float b = (float)(1u << tu_below(&r, 7)) * 0.25f;
                if (i % 4 == 0) continue;
                for (j = 0; j < 64; j++) lv[i * 64 + j] = (int32_t)lrint(v[i * 64 + j] * b);
            }
            t->levels = lv;
            t->step = 0.125;
        }
        return 1;
    case 19: /* a dense low-rank update under the trellis (8 states): a
              * PREDICT slice of trellis levels (the predictor sees the
              * coded levels k) */
        s->name = "predict_trellis";
        s->o.quantizer = FC_QUANT_TRELLIS8;
        s->o.lambda = 0.1155;
        t = gc_add(s, 0, 2, 48, 64, 0, 0);
        {
            tu_rng r = tu_seed(30);
            float *v = (float *)gc_alloc(s, sizeof(float) * 48 * 64);
            tu_fill_lowrank(&r, v, 48, 64, 2, 0.01);
            t->values = v;
            t->step = 0.002;
        }
        return 1;
    case 20: /* an embedding-like table whose rows are i.i.d. at very
              * different scales (PREDICT + ROWSCALE with SCALECTX) */
        s->name = "scalectx";
        t = gc_add(s, 0, 2, 240, 160, 0, 0);
        {
            tu_rng r = tu_seed(31);
            int32_t *lv = (int32_t *)gc_alloc(s, sizeof(int32_t) * 240 * 160);
            uint64_t i, j;
            for (i = 0; i < 240; i++) {
                double b = (double)(1u << tu_below(&r, 6)) * 0.35;
                if (tu_below(&r, 4) == 0) continue;
                for (j = 0; j < 160; j++) lv[i * 160 + j] = (int32_t)lrint(tu_laplace(&r, b));
            }
            t->levels = lv;
            t->step = 0.125;
        }
        return 1;
    case 21: /* conv filter banks [out, in, kh, kw] coded with their first two
              * axes swapped (SWAPPED, FC_TRANSPOSE_SWAP): levels whose scale
              * is set by the input channel, and RD-trellis floats [8, 6, 5] */
        s->name = "swapped";
        s->o.transpose = FC_TRANSPOSE_SWAP;
        s->o.quantizer = FC_QUANT_TRELLIS;
        s->o.lambda = 0.1155;
        t = gc_add(s, 0, 4, 12, 10, 3, 3);
        {
            tu_rng r = tu_seed(37);
            int32_t *lv = (int32_t *)gc_alloc(s, sizeof(int32_t) * 12 * 10 * 9);
            double scale[10];
            uint64_t i;
            for (i = 0; i < 10; i++) scale[i] = (double)(1u << tu_below(&r, 5)) * 0.4;
            for (i = 0; i < 12 * 10 * 9; i++) lv[i] = (int32_t)lrint(tu_laplace(&r, scale[(i / 9) % 10]));
            t->levels = lv;
            t->step = 0.25;
        }
        t = gc_add(s, 1, 3, 8, 6, 5, 0);
        gc_laplace(s, t, 38, 0.3);
        t->step = 0.125;
        return 1;
    case 22: /* an AdamW-like embedding table from floats: empty rows, rows
              * of one magnitude from a few values (ROWKIND with ROWFINE, each
              * such row valued to 1/16 step), broad rows */
        s->name = "rowfine";
        t = gc_add(s, 0, 2, 200, 64, 0, 0);
        {
            static const float mags[5] = {0.63f, 1.2f, 1.71f, 2.18f, 3.02f};
            tu_rng r = tu_seed(32);
            float *v = (float *)gc_alloc(s, sizeof(float) * 200 * 64);
            uint64_t i, j;
            for (i = 0; i < 200; i++) {
                unsigned kind = (unsigned)tu_below(&r, 10);
                float m = mags[tu_below(&r, 5)] * 0.25f;
                for (j = 0; j < 64; j++)
                    v[i * 64 + j] = kind < 3   ? (tu_below(&r, 2) ? m : -m)
                                    : kind < 5 ? (float)tu_laplace(&r, 0.4)
                                               : 0.0f;
            }
            t->values = v;
            t->step = 0.25;
        }
        return 1;
    case 23: /* a compact container (FORMAT.md §2-3): no shapes (the
                        * fuzz target's FUZZ_SHAPES), an omitted all-zero
                        * tensor, one-byte steps, SHORT statistics (§6.6) */
        s->name = "compact";
        s->o.compact = 1;
        t = gc_add(s, 0, 4, 8, 4, 3, 3);
        gc_laplace(s, t, 33, 0.01);
        t->step = 0.375 * 0.01;
        t = gc_add(s, 1, 1, 8, 0, 0, 0);
        t->levels = (int32_t *)gc_alloc(s, sizeof(int32_t) * 8); /* all zero: omitted */
        t->step = 0.5;
        t = gc_add(s, 2, 2, 16, 40, 0, 0);
        gc_levels(s, t, 34, 60, 3);
        t->step = 0.0625;
        t = gc_add(s, 3, 1, 16, 0, 0, 0);
        { /* few large levels (statistics at a fine step): the short code */
            int32_t *lv = (int32_t *)gc_alloc(s, sizeof(int32_t) * 16);
            uint64_t i;
            for (i = 0; i < 16; i++) lv[i] = (int32_t)((i * 389u) % 1201u) - 600;
            t->levels = lv;
        }
        t->step = 0x1.02p-20;
        t = gc_add(s, 4, 0, 0, 0, 0, 0);
        gc_levels(s, t, 36, 1000, 2);
        t->step = 0.1;
        return 1;
    default:
        return 0;
    }
}

/* ------------------------------------------------------------------ */
/* Expected levels: ok_NAME.levels (see tests/golden/README.md)          */
/* ------------------------------------------------------------------ */

/* One tensor's expected decode. */
typedef struct gl_tensor {
    uint32_t index, ndim;
    uint64_t shape[FC_MAX_DIMS];
    uint64_t numel;
    uint32_t step_bits;
    uint32_t quantizer;   /* enum fc_quantizer (version 2; 0 in version 1) */
    uint64_t dither_seed; /* FC_QUANT_DITHER only */
    int32_t *levels; /* numel entries (malloc'ed) */
} gl_tensor;

static inline uint64_t gl_zigzag(int32_t v)
{
    return v < 0 ? ((uint64_t)(-(int64_t)v) << 1) - 1u : (uint64_t)v << 1;
}

static inline void gl_write(cr_buf *b, const gl_tensor *t, size_t count)
{
    size_t i, k;
    cr_bytes(b, "FCLV", 4);
    cr_u8(b, 2);
    cr_varint(b, count);
    for (i = 0; i < count; i++) {
        uint64_t nnz = 0, last = 0;
        cr_varint(b, t[i].index);
        cr_varint(b, t[i].ndim);
        for (k = 0; k < t[i].ndim; k++) cr_varint(b, t[i].shape[k]);
        cr_le32(b, t[i].step_bits);
        cr_u8(b, t[i].quantizer);
        if (t[i].quantizer == FC_QUANT_DITHER) {
            cr_le32(b, (uint32_t)t[i].dither_seed);
            cr_le32(b, (uint32_t)(t[i].dither_seed >> 32));
        }
        for (k = 0; k < t[i].numel; k++) nnz += t[i].levels[k] != 0;
        cr_varint(b, nnz);
        for (k = 0; k < t[i].numel; k++) {
            if (!t[i].levels[k]) continue;
            cr_varint(b, k - last); /* zeros skipped since the previous nonzero */
            cr_varint(b, gl_zigzag(t[i].levels[k]));
            last = k + 1;
        }
    }
}

/* Parses a levels file; returns the tensor count (*out malloc'ed, free it
 * with gl_free), or -1 when malformed (*out NULL). */
static inline long gl_read(const uint8_t *p, size_t size, gl_tensor **out)
{
    size_t pos = 5, i;
    uint64_t count, v;
    gl_tensor *t;
    unsigned version;
    *out = NULL;
    if (size < 5 || memcmp(p, "FCLV", 4) != 0 || p[4] < 1 || p[4] > 2) return -1;
    version = p[4];
    if (!cr_get_varint(p, size, &pos, &count) || count > 1000) return -1;
    t = (gl_tensor *)calloc(count ? (size_t)count : 1, sizeof(gl_tensor));
    if (!t) return -1;
    *out = t;
    for (i = 0; i < count; i++) {
        uint64_t nnz, k, at = 0;
        uint32_t d;
        if (!cr_get_varint(p, size, &pos, &v)) goto bad;
        t[i].index = (uint32_t)v;
        if (!cr_get_varint(p, size, &pos, &v) || v > FC_MAX_DIMS) goto bad;
        t[i].ndim = (uint32_t)v;
        t[i].numel = 1;
        for (d = 0; d < t[i].ndim; d++) {
            if (!cr_get_varint(p, size, &pos, &t[i].shape[d]) || t[i].shape[d] > (1u << 24)) goto bad;
            t[i].numel *= t[i].shape[d];
        }
        if (t[i].numel > (1u << 24) || pos + 4 > size) goto bad;
        t[i].step_bits = (uint32_t)p[pos] | ((uint32_t)p[pos + 1] << 8) |
                         ((uint32_t)p[pos + 2] << 16) | ((uint32_t)p[pos + 3] << 24);
        pos += 4;
        if (version >= 2) {
            if (pos >= size || p[pos] > 3) goto bad;
            t[i].quantizer = p[pos++];
            if (t[i].quantizer == FC_QUANT_DITHER) {
                unsigned b8;
                if (pos + 8 > size) goto bad;
                for (b8 = 0; b8 < 8; b8++) t[i].dither_seed |= (uint64_t)p[pos + b8] << (8 * b8);
                pos += 8;
            }
        }
        t[i].levels = (int32_t *)calloc(t[i].numel ? (size_t)t[i].numel : 1, sizeof(int32_t));
        if (!t[i].levels || !cr_get_varint(p, size, &pos, &nnz)) goto bad;
        for (k = 0; k < nnz; k++) {
            uint64_t skip, z;
            if (!cr_get_varint(p, size, &pos, &skip) || !cr_get_varint(p, size, &pos, &z)) goto bad;
            at += skip;
            if (at >= t[i].numel || z == 0 || z > ((uint64_t)FC_MAX_LEVEL << 1)) goto bad;
            t[i].levels[at++] = (z & 1u) ? -(int32_t)((z + 1u) >> 1) : (int32_t)(z >> 1);
        }
    }
    if (pos != size) goto bad;
    return (long)count;
bad:
    for (i = 0; i < count; i++) free(t[i].levels);
    free(t);
    *out = NULL;
    return -1;
}

static inline void gl_free(gl_tensor *t, size_t count)
{
    size_t i;
    if (!t) return;
    for (i = 0; i < count; i++) free(t[i].levels);
    free(t);
}

/* The value a decoder must produce for level `level` of element k of a
 * tensor (FORMAT.md §8). */
static inline float gl_value(const gl_tensor *t, uint64_t k, int32_t level)
{
    float step, v;
    memcpy(&step, &t->step_bits, 4);
    v = (float)level * step;
    if (t->quantizer == FC_QUANT_DITHER) {
        float u;
        if (fc_dither(t->dither_seed, t->index, k, 1, step, &u) != FC_OK) abort();
        v = v - u;
    }
    return v;
}

/* Whether `got` is the value a decoder may produce for level `level` of
 * element k: gl_value, or in a ROWFINE row of a uniform tensor (FORMAT.md
 * §8.1) (|level| + (f - 8) / 16) * step with the level's sign, f in 0..15
 * (the container's bytes, which the encoder reproduces, pin f). */
static inline int gl_value_ok(const gl_tensor *t, uint64_t k, int32_t level, float got)
{
    float v = gl_value(t, k, level), step;
    int64_t a = level < 0 ? -(int64_t)level : (int64_t)level, f;
    if (memcmp(&v, &got, 4) == 0) return 1;
    if (t->quantizer != FC_QUANT_UNIFORM || !level) return 0;
    memcpy(&step, &t->step_bits, 4);
    for (f = 0; f < 16; f++) {
        float m = (float)((double)(a * 16 + f - 8) * (double)step * 0.0625);
        if (level < 0) m = -m;
        if (memcmp(&m, &got, 4) == 0) return 1;
    }
    return 0;
}

#endif /* FC_GOLDEN_CASES_H */
