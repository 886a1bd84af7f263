/*
 * test_container.c - the container through the public API (fedcodec.h):
 *
 *   - round trips of many shapes (0-d, 1-d, 4-d, 8-d, zero-size dimensions,
 *     rows wider than 65536 columns, single row / column), every mode, every
 *     window set, N = 1..8, several tensors, all-zero tensors (no slices);
 *   - fc_inspect, fc_encode_bound (also for worst-case data),
 *     FC_ERR_BUFFER_TOO_SMALL with the needed size, option structs of an
 *     older (smaller) size;
 *   - every error code for bad arguments;
 *   - hostile containers: every truncation, every single-bit flip, garbage,
 *     crafted headers and payloads with a recomputed valid CRC, random
 *     CRC-fixed mutations: never a crash or a read outside the buffer (all
 *     inputs live in guarded buffers), always the expected error;
 *   - the decoder limits of fc_decode_options;
 *   - decode-and-accumulate (f32, f64), and a corrupt payload leaves every
 *     accumulator untouched.
 */
#include "test_util.h"

#include "craft.h"
#include "rangecoder.h" /* to craft bypass-only payloads */
#include "quant.h"      /* FC_DQ_LAMBDA_SCALE */
#include "slice.h"      /* slice flags */

/* ------------------------------------------------------------ helpers */

enum { D_ZERO, D_DENSE, D_SPARSE, D_VSPARSE, D_ROWS, D_KINDS };

/* Levels of a given kind: dense (~70 % nonzero, geometric magnitudes, a few
 * large), sparse (1 %), very sparse (0.1 %), row-structured (whole rows
 * empty, the rest dense). */
static void gen_levels(int32_t *lv, uint64_t rows, uint64_t cols, int kind, tu_rng *r)
{
    uint64_t i, n = rows * cols;
    for (i = 0; i < n; i++) {
        int nz;
        int32_t m = 1;
        switch (kind) {
        case D_DENSE: nz = tu_below(r, 10) < 7; break;
        case D_SPARSE: nz = tu_below(r, 100) == 0; break;
        case D_VSPARSE: nz = tu_below(r, 1000) == 0; break;
        case D_ROWS: nz = ((i / cols) % 3 != 1) && tu_below(r, 2); break;
        default: nz = 0; break;
        }
        if (!nz) {
            lv[i] = 0;
            continue;
        }
        while (tu_below(r, 3) == 0 && m < 1000) m++;
        if (tu_below(r, 200) == 0) m += (int32_t)tu_below(r, 1u << 20);
        lv[i] = tu_below(r, 2) ? -m : m;
    }
}

static void layout(const fc_tensor *t, uint64_t *rows, uint64_t *cols)
{
    uint32_t i;
    if (t->ndim == 0) {
        *rows = *cols = 1;
    } else if (t->ndim == 1) {
        *rows = 1;
        *cols = t->shape[0];
    } else {
        *rows = t->shape[0];
        *cols = 1;
        for (i = 1; i < t->ndim; i++) *cols *= t->shape[i];
    }
}

/* Encode with opts, check size <= bound and the stats, inspect, decode
 * levels and values into guarded targets and compare; returns the
 * container (caller frees) and its size. */
static uint8_t *roundtrip(const fc_tensor *t, size_t count, const fc_encode_options *o,
                          size_t *out_size)
{
    fc_tensor_stats *st = (fc_tensor_stats *)calloc(count + 1, sizeof(*st));
    fc_tensor_info *info = (fc_tensor_info *)calloc(count + 1, sizeof(*info));
    fc_decode_target *tg = (fc_decode_target *)calloc(count + 1, sizeof(*tg));
    size_t bound = fc_encode_bound(t, count), size = 0, n, i;
    uint8_t *buf, *g;
    uint64_t total_bytes = 0;
    TU_CHECK(st && info && tg && bound > 0);
    buf = (uint8_t *)malloc(bound);
    TU_CHECK(buf != NULL);
    TU_CHECK_RC(fc_encode(t, count, o, buf, bound, &size, st, NULL), FC_OK);
    TU_CHECK(size <= bound && size >= 11);
    g = tu_guarded_copy(buf, size);
    TU_CHECK_RC(fc_inspect(g, size, NULL, info, count, &n), FC_OK);
    TU_CHECK_EQ(n, count);
    for (i = 0; i < count; i++) {
        uint64_t numel = tu_numel(&t[i]), k, nz = 0;
        TU_CHECK_EQ(info[i].index, t[i].index);
        TU_CHECK_EQ(info[i].ndim, t[i].ndim);
        TU_CHECK(memcmp(info[i].shape, t[i].shape, sizeof(uint64_t) * t[i].ndim) == 0);
        TU_CHECK_EQ(info[i].numel, numel);
        TU_CHECK(info[i].step == st[i].step);
        TU_CHECK_EQ(info[i].slices, st[i].slices);
        TU_CHECK_EQ(info[i].max_gtx, o ? o->max_gtx : 4);
        total_bytes += st[i].bytes;
        if (t[i].levels) {
            for (k = 0; k < numel; k++) nz += t[i].levels[k] != 0;
            TU_CHECK_EQ(st[i].nonzeros, nz);
        }
        if (st[i].nonzeros == 0) TU_CHECK_EQ(st[i].slices, 0);
        else TU_CHECK(st[i].slices >= 1);
        if (o && o->mode >= 0 && st[i].nonzeros) TU_CHECK_EQ(st[i].modes, 1u << o->mode);
        tg[i].levels = (int32_t *)tu_guarded_alloc(sizeof(int32_t) * numel);
        tg[i].values = (float *)tu_guarded_alloc(sizeof(float) * numel);
        /* garbage first: the decoder must write every element */
        memset(tg[i].levels, 0x5A, sizeof(int32_t) * numel);
        memset(tg[i].values, 0x5A, sizeof(float) * numel);
    }
    /* magic, version, flags, count varint; the tensors; the CRC */
    TU_CHECK_EQ(size, 6 + (count < 128 ? 1 : 2) + total_bytes + 4);
    TU_CHECK_RC(fc_decode(g, size, NULL, tg, count), FC_OK);
    for (i = 0; i < count; i++) {
        uint64_t numel = tu_numel(&t[i]), k;
        float step = (float)info[i].step;
        if (t[i].levels) {
            for (k = 0; k < numel; k++)
                if (tg[i].levels[k] != t[i].levels[k])
                    TU_CHECKF(0, "tensor %zu element %llu: %d != %d", i, (unsigned long long)k,
                              (int)tg[i].levels[k], (int)t[i].levels[k]);
        }
        for (k = 0; k < numel; k++) {
            float want = (float)tg[i].levels[k] * step, got = tg[i].values[k];
            /* level * step, or in a ROWFINE row of a float tensor (one
             * magnitude per row, FORMAT.md §8.1) a value of the level's sign
             * within half a step of it */
            if (memcmp(&want, &got, 4) != 0 &&
                !(t[i].values && info[i].quantizer == FC_QUANT_UNIFORM && tg[i].levels[k] &&
                  (got > 0.0f) == (tg[i].levels[k] > 0) &&
                  fabs((double)got - (double)want) <= 0.5 * (double)step))
                TU_CHECKF(0, "tensor %zu value %llu", i, (unsigned long long)k);
            if (t[i].recon && memcmp(&got, &t[i].recon[k], 4) != 0)
                TU_CHECKF(0, "tensor %zu recon %llu", i, (unsigned long long)k);
        }
        tu_guarded_free(tg[i].levels);
        tu_guarded_free(tg[i].values);
    }
    tu_guarded_free(g);
    free(st);
    free(info);
    free(tg);
    *out_size = size;
    return buf;
}

static void opts(fc_encode_options *o, int mode, unsigned N, unsigned ws)
{
    fc_encode_options_init(o);
    o->mode = mode;
    o->max_gtx = N;
    o->window_set = ws;
    o->threads = 1;
}

/* ------------------------------------------------------------ round trips */

typedef struct shape_case {
    uint32_t ndim;
    uint64_t shape[FC_MAX_DIMS];
} shape_case;

static void test_shapes(void)
{
    static const shape_case shapes[] = {
        {0, {0}},
        {1, {1}},
        {1, {1000}},
        {1, {0}},
        {2, {1, 700}},
        {2, {700, 1}},
        {2, {37, 53}},
        {2, {0, 7}},
        {2, {7, 0}},
        {3, {3, 0, 5}},
        {4, {3, 4, 5, 6}},
        {8, {2, 1, 2, 1, 2, 1, 3, 2}},
        {2, {3, 70000}}, /* rows wider than FC_ROW_CTX_MAX */
        {2, {2, 65536}}, /* exactly the limit */
        {3, {2, 2, 65537}},
    };
    static const int modes[] = {FC_MODE_AUTO, FC_MODE_DENSE, FC_MODE_GROUPED, FC_MODE_RUNS};
    size_t si, mi;
    int kind;
    for (si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        fc_tensor t = tu_tensor(7, shapes[si].ndim, shapes[si].shape);
        uint64_t n = tu_numel(&t), rows, cols;
        int32_t *lv = (int32_t *)malloc(sizeof(int32_t) * (n ? n : 1));
        layout(&t, &rows, &cols);
        TU_CHECK(lv != NULL);
        for (kind = 0; kind < D_KINDS; kind++) {
            tu_rng r = tu_seed(si * 10 + (uint64_t)kind);
            if (n > 100000 && kind == D_DENSE) continue; /* keep the wide cases quick */
            gen_levels(lv, rows, cols, kind, &r);
            t.levels = lv;
            t.step = 0.01;
            for (mi = 0; mi < sizeof modes / sizeof modes[0]; mi++) {
                fc_encode_options o;
                size_t size;
                uint8_t *c;
                opts(&o, modes[mi], 4, 0);
                c = roundtrip(&t, 1, &o, &size);
                free(c);
            }
        }
        free(lv);
    }
}

/* Float input through the quantizer, every mode, lambda 0 and > 0, with and
 * without importance; recon must equal the decoded values. */
static void test_values(void)
{
    static const int modes[] = {FC_MODE_AUTO, FC_MODE_DENSE, FC_MODE_GROUPED, FC_MODE_RUNS};
    uint64_t shape[2] = {40, 300};
    const uint64_t n = 40 * 300;
    float *v = (float *)malloc(sizeof(float) * n), *rec = (float *)malloc(sizeof(float) * n);
    float *imp = (float *)malloc(sizeof(float) * n);
    tu_rng r = tu_seed(3);
    size_t mi;
    int sparse, li;
    uint64_t i;
    TU_CHECK(v && rec && imp);
    for (i = 0; i < n; i++) imp[i] = (float)(0.1 + tu_unit(&r));
    for (sparse = 0; sparse < 2; sparse++) {
        tu_fill_laplace(&r, v, n, 0.02);
        if (sparse) tu_topk(v, n, n / 100);
        for (mi = 0; mi < sizeof modes / sizeof modes[0]; mi++) {
            for (li = 0; li < 3; li++) {
                fc_tensor t = tu_tensor(0, 2, shape);
                fc_encode_options o;
                size_t size;
                opts(&o, modes[mi], 4, 0);
                o.lambda = li == 0 ? 0.0 : 0.1155;
                t.values = v;
                t.recon = rec;
                t.importance = li == 2 ? imp : NULL;
                free(roundtrip(&t, 1, &o, &size));
            }
        }
    }
    free(v);
    free(rec);
    free(imp);
}

/* Every window set and every N, in every mode. */
static void test_params(void)
{
    uint64_t shape[2] = {30, 200};
    const uint64_t n = 30 * 200;
    int32_t *lv = (int32_t *)malloc(sizeof(int32_t) * n);
    unsigned ws, N;
    int mode;
    TU_CHECK(lv != NULL);
    for (ws = 0; ws < 8; ws++) {
        for (N = 1; N <= FC_MAX_GTX; N++) {
            tu_rng r = tu_seed(ws * 16 + N);
            gen_levels(lv, 30, 200, (int)((ws + N) % 2 ? D_DENSE : D_SPARSE), &r);
            for (mode = FC_MODE_AUTO; mode <= FC_MODE_RUNS; mode++) {
                fc_tensor t = tu_tensor(0, 2, shape);
                fc_encode_options o;
                fc_tensor_info info;
                size_t size, cnt;
                uint8_t *c;
                t.levels = lv;
                t.step = 1.0;
                opts(&o, mode, N, ws);
                c = roundtrip(&t, 1, &o, &size);
                TU_CHECK_RC(fc_inspect(c, size, NULL, &info, 1, &cnt), FC_OK);
                TU_CHECK_EQ(info.max_gtx, N);
                free(c);
            }
        }
    }
    free(lv);
}

/* FC_WINDOW_AUTO: for integer levels the container is byte for byte the
 * one of a fixed window set, and within 0.2 % + 4 bytes of the smallest;
 * several slices, thread counts, modes and RD-quantized floats round trip. */
static void test_window_auto(void)
{
    uint64_t shape[2] = {96, 300};
    const uint64_t n = 96 * 300;
    int32_t *lv = (int32_t *)malloc(sizeof(int32_t) * n);
    float *x = (float *)malloc(sizeof(float) * n);
    float *rec = (float *)malloc(sizeof(float) * n);
    int kind, mode;
    uint64_t i;
    TU_CHECK(lv && x && rec);
    for (kind = D_DENSE; kind < D_KINDS; kind++) {
        for (mode = FC_MODE_AUTO; mode <= FC_MODE_RUNS; mode++) {
            tu_rng r = tu_seed(900 + (unsigned)kind * 4 + (unsigned)mode);
            fc_tensor t = tu_tensor(0, 2, shape);
            fc_encode_options o;
            uint8_t *fixed[8], *aut;
            size_t fsize[8], asize, best = SIZE_MAX;
            unsigned ws, same = 0;
            gen_levels(lv, 96, 300, kind, &r);
            t.levels = lv;
            t.step = 0.5;
            for (ws = 0; ws < 8; ws++) {
                opts(&o, mode, 4, ws);
                o.slice_elems = 9000;
                fixed[ws] = roundtrip(&t, 1, &o, &fsize[ws]);
                if (fsize[ws] < best) best = fsize[ws];
            }
            opts(&o, mode, 4, FC_WINDOW_AUTO);
            o.slice_elems = 9000;
            o.threads = (unsigned)kind % 3;
            aut = roundtrip(&t, 1, &o, &asize);
            for (ws = 0; ws < 8; ws++) same |= fsize[ws] == asize && memcmp(fixed[ws], aut, asize) == 0;
            TU_CHECKF(same, "kind %d mode %d: auto is no fixed set's container", kind, mode);
            TU_CHECKF((double)asize <= 1.002 * (double)best + 4.0, "kind %d mode %d: auto %zu, best %zu", kind,
                      mode, asize, best);
            for (ws = 0; ws < 8; ws++) free(fixed[ws]);
            free(aut);
        }
    }
    /* Floats: RD quantization and the trellis choose levels under set 0's
     * rates; the recoded container still reconstructs to recon. */
    {
        tu_rng r = tu_seed(77);
        int q;
        for (i = 0; i < n; i++) x[i] = (float)(tu_below(&r, 2001) - 1000) * 1e-3f * (float)(1 + i / 3000);
        for (q = FC_QUANT_UNIFORM; q <= FC_QUANT_TRELLIS8; q++) {
            fc_tensor t = tu_tensor(0, 2, shape);
            fc_encode_options o;
            size_t size;
            uint8_t *c;
            t.values = x;
            t.recon = rec;
            opts(&o, FC_MODE_AUTO, 4, FC_WINDOW_AUTO);
            o.lambda = 0.1155;
            o.S = 16;
            o.quantizer = q;
            o.slice_elems = 9000;
            c = roundtrip(&t, 1, &o, &size);
            free(c);
        }
    }
    {
        fc_encode_options o;
        fc_tensor t = tu_tensor(0, 2, shape);
        uint8_t buf[64];
        size_t size;
        t.levels = lv;
        t.step = 1.0;
        opts(&o, FC_MODE_AUTO, 4, FC_WINDOW_AUTO + 1);
        TU_CHECK_RC(fc_encode(&t, 1, &o, buf, sizeof(buf), &size, NULL, NULL), FC_ERR_INVALID_ARGUMENT);
    }
    free(lv);
    free(x);
    free(rec);
}

/* Tensors coded in another view (o.transpose = transpose) decode to the
 * original layout: levels of every kind in every mode over several slices
 * (slice_levels elements), floats with every quantizer but the dither
 * (slice_values; decode == recon, accumulators in the original layout);
 * with a nonzero `flag` every levels container's quantizer byte is flag. */
static void check_views(const uint64_t (*shapes)[5], size_t count, int32_t transpose, unsigned seed,
                        uint64_t slice_levels, uint64_t slice_values, int flag)
{
    size_t si;
    for (si = 0; si < count; si++) {
        fc_tensor t = tu_tensor(0, (uint32_t)shapes[si][0], shapes[si] + 1);
        uint64_t n = tu_numel(&t), rows, cols, i;
        int32_t *lv = (int32_t *)malloc(sizeof(int32_t) * n);
        float *x = (float *)malloc(sizeof(float) * n), *rec = (float *)malloc(sizeof(float) * n);
        int kind, mode, q;
        TU_CHECK(lv && x && rec);
        layout(&t, &rows, &cols);
        for (kind = D_DENSE; kind < D_KINDS; kind++) {
            tu_rng r = tu_seed(seed + (unsigned)si * 8 + (unsigned)kind);
            gen_levels(lv, rows, cols, kind, &r);
            for (mode = FC_MODE_AUTO; mode <= FC_MODE_RUNS; mode++) {
                fc_encode_options o;
                size_t size;
                uint8_t *c;
                opts(&o, mode, 4, kind == D_SPARSE ? FC_WINDOW_AUTO : 0);
                o.transpose = transpose;
                o.slice_elems = slice_levels;
                t.values = NULL;
                t.recon = NULL;
                t.levels = lv;
                t.step = 0.25;
                c = roundtrip(&t, 1, &o, &size);
                if (flag) {
                    cr_layout L;
                    TU_CHECK(cr_walk(c, size, &L));
                    TU_CHECK(L.t[0].quant != CR_NONE && c[L.t[0].quant] == flag);
                }
                free(c);
            }
        }
        for (i = 0; i < n; i++) x[i] = (float)((int)(i * 7919 % 201) - 100) * 0.01f * (float)(i % 5 != 0);
        for (q = FC_QUANT_UNIFORM; q <= FC_QUANT_TRELLIS8; q++) {
            fc_encode_options o;
            size_t size;
            uint8_t *c;
            opts(&o, FC_MODE_AUTO, 4, 0);
            o.transpose = transpose;
            o.lambda = 0.1;
            o.quantizer = q;
            o.slice_elems = slice_values;
            t.levels = NULL;
            t.values = x;
            t.recon = rec;
            t.step = 0.0;
            c = roundtrip(&t, 1, &o, &size);
            {
                /* accumulators in the original layout */
                float *acc = (float *)calloc((size_t)n, sizeof(float));
                float *val = (float *)malloc(sizeof(float) * n);
                fc_decode_target tg;
                TU_CHECK(acc && val);
                memset(&tg, 0, sizeof(tg));
                tg.values = val;
                tg.acc = acc;
                tg.acc_dtype = FC_ACC_F32;
                tg.weight = 1.0;
                TU_CHECK_RC(fc_decode(c, size, NULL, &tg, 1), FC_OK);
                for (i = 0; i < n; i++) TU_CHECK(acc[i] == val[i] && val[i] == rec[i]);
                free(acc);
                free(val);
            }
            free(c);
        }
        free(lv);
        free(x);
        free(rec);
    }
}

/* SWAPPED views (axes 0 and 1 swapped, ndim >= 3): forced with
 * FC_TRANSPOSE_SWAP they decode to the original layout (levels, values,
 * accumulators, every mode, several slices, every quantizer but the
 * dither); auto keeps the smaller of as given and swapped (the flag is
 * there exactly when swapped won); matrices, vectors and dithered tensors
 * are never swapped; other transpose values are invalid. */
static void test_swap(void)
{
    static const uint64_t shapes[][5] = {{3, 7, 5, 11}, {4, 12, 10, 3, 3}, {5, 3, 4, 2, 2}, {4, 2, 2, 1, 1}};
    check_views(shapes, sizeof shapes / sizeof shapes[0], FC_TRANSPOSE_SWAP, 1700, 60, 50, 0x10);
    {
        /* a conv filter bank whose scale is set by the input channel: auto
         * tries both and keeps the smaller */
        uint64_t shape[4] = {24, 16, 3, 3}, n = 24 * 16 * 9, i;
        int32_t *lv = (int32_t *)malloc(sizeof(int32_t) * n);
        float *x = (float *)malloc(sizeof(float) * n), *rec = (float *)malloc(sizeof(float) * n);
        double scale[16];
        tu_rng r = tu_seed(4343);
        fc_tensor t = tu_tensor(0, 4, shape);
        fc_encode_options o;
        size_t s_auto, s_plain, s_w;
        uint8_t *c;
        cr_layout L;
        TU_CHECK(lv && x && rec);
        for (i = 0; i < 16; i++) scale[i] = (double)(1u << tu_below(&r, 6)) * 0.3;
        for (i = 0; i < n; i++) lv[i] = (int32_t)lrint(tu_laplace(&r, scale[(i / 9) % 16]));
        t.levels = lv;
        t.step = 1.0;
        opts(&o, FC_MODE_AUTO, 4, 0);
        free(roundtrip(&t, 1, &o, &s_plain));
        o.transpose = FC_TRANSPOSE_SWAP;
        free(roundtrip(&t, 1, &o, &s_w));
        o.transpose = FC_TRANSPOSE_AUTO;
        c = roundtrip(&t, 1, &o, &s_auto);
        TU_CHECK(s_auto == (s_w < s_plain ? s_w : s_plain));
        TU_CHECK(cr_walk(c, s_auto, &L));
        TU_CHECK((s_w < s_plain) == (L.t[0].quant != CR_NONE && c[L.t[0].quant] == 0x10));
        TU_CHECK(s_w < s_plain); /* the structure this view is for */
        free(c);
        /* lossy auto: the reconstruction is the kept coding's */
        for (i = 0; i < n; i++) x[i] = (float)lv[i] * 0.37f;
        t.levels = NULL;
        t.values = x;
        t.recon = rec;
        t.step = 0.0;
        o.lambda = 0.1155;
        o.quantizer = FC_QUANT_TRELLIS;
        free(roundtrip(&t, 1, &o, &s_auto));
        /* a matrix, a vector and a dithered tensor stay as given */
        {
            uint64_t m[2] = {40, 36}, v[1] = {1440};
            fc_tensor u = tu_tensor(0, 2, m);
            u.levels = lv;
            u.step = 1.0;
            opts(&o, FC_MODE_AUTO, 4, 0);
            o.transpose = FC_TRANSPOSE_SWAP;
            c = roundtrip(&u, 1, &o, &s_w);
            TU_CHECK(cr_walk(c, s_w, &L));
            TU_CHECK(L.t[0].quant == CR_NONE);
            free(c);
            u = tu_tensor(0, 1, v);
            u.levels = lv;
            u.step = 1.0;
            c = roundtrip(&u, 1, &o, &s_w);
            TU_CHECK(cr_walk(c, s_w, &L));
            TU_CHECK(L.t[0].quant == CR_NONE);
            free(c);
            t.recon = NULL;
            o.quantizer = FC_QUANT_DITHER;
            o.lambda = 0.0;
            o.dither_seed = 5;
            c = (uint8_t *)malloc(fc_encode_bound(&t, 1));
            TU_CHECK(c != NULL);
            TU_CHECK_RC(fc_encode(&t, 1, &o, c, fc_encode_bound(&t, 1), &s_w, NULL, NULL), FC_OK);
            TU_CHECK(cr_walk(c, s_w, &L));
            TU_CHECK(L.t[0].quant != CR_NONE && c[L.t[0].quant] == FC_QUANT_DITHER);
            free(c);
        }
        {
            /* other transpose values are invalid */
            uint8_t buf[64];
            size_t size;
            opts(&o, FC_MODE_AUTO, 4, 0);
            t.values = NULL;
            t.levels = lv;
            t.step = 1.0;
            o.transpose = 3;
            TU_CHECK_RC(fc_encode(&t, 1, &o, buf, sizeof buf, &size, NULL, NULL), FC_ERR_INVALID_ARGUMENT);
            o.transpose = -2;
            TU_CHECK_RC(fc_encode(&t, 1, &o, buf, sizeof buf, &size, NULL, NULL), FC_ERR_INVALID_ARGUMENT);
        }
        free(lv);
        free(x);
        free(rec);
    }
}

/* Orientation: transposed tensors decode to the original layout (levels,
 * values, accumulators, every mode, several slices, 3-d and 4-d shapes,
 * trellis), auto picks the transposed view for an input layer with empty
 * columns and never codes a tensor larger than as given. */
static void test_transpose(void)
{
    static const uint64_t shapes[][5] = {{2, 37, 50}, {3, 20, 6, 7}, {2, 64, 300}, {4, 5, 3, 2, 2}};
    check_views(shapes, sizeof shapes / sizeof shapes[0], 1, 1300, 700, 500, 0);
    {
        /* an input layer: 40 % of its columns empty (auto tries both) */
        uint64_t shape[2] = {128, 200}, n = 128 * 200, i;
        int32_t *lv = (int32_t *)malloc(sizeof(int32_t) * n);
        tu_rng r = tu_seed(4242);
        fc_tensor t = tu_tensor(0, 2, shape);
        fc_encode_options o;
        size_t s_auto, s_plain, s_t;
        uint8_t *c;
        cr_layout L;
        TU_CHECK(lv != NULL);
        gen_levels(lv, 128, 200, D_DENSE, &r);
        for (i = 0; i < n; i++)
            if ((i % 200) % 5 < 2) lv[i] = 0;
        t.levels = lv;
        t.step = 1.0;
        opts(&o, FC_MODE_AUTO, 4, 0);
        free(roundtrip(&t, 1, &o, &s_plain));
        o.transpose = 1;
        free(roundtrip(&t, 1, &o, &s_t));
        o.transpose = FC_TRANSPOSE_AUTO;
        c = roundtrip(&t, 1, &o, &s_auto);
        TU_CHECK(s_auto == (s_t < s_plain ? s_t : s_plain));
        TU_CHECK(cr_walk(c, s_auto, &L));
        /* the trial ran: the flag is there exactly when transposed won */
        TU_CHECK((s_t < s_plain) == (L.t[0].quant != CR_NONE && c[L.t[0].quant] == 0x04));
        free(c);
        /* a 1-d tensor and a dense one without empty lines stay as given */
        gen_levels(lv, 128, 200, D_DENSE, &r);
        c = roundtrip(&t, 1, &o, &s_auto);
        TU_CHECK(cr_walk(c, s_auto, &L));
        TU_CHECK(L.t[0].quant == CR_NONE);
        free(c);
        free(lv);
    }
}

static void expect_edit(const uint8_t *c, size_t size, size_t at, uint8_t value, int want,
                        const char *what);

/* An embedding table: most rows empty, the others either of one magnitude
 * throughout (ROWKIND rows) or broad.  The encoder picks the dense mode (the
 * non-empty rows are dense) with ROWKIND; levels, floats (RDOQ, trellis) and
 * several slices round trip; ROWKIND outside dense slices is corrupt. */
static void test_rowkind(void)
{
    uint64_t shape[2] = {600, 96}, n = 600 * 96, i, r, c;
    int32_t *lv = (int32_t *)calloc((size_t)n, sizeof(int32_t));
    float *x = (float *)malloc(sizeof(float) * n), *rec = (float *)malloc(sizeof(float) * n);
    tu_rng g = tu_seed(555);
    fc_tensor t = tu_tensor(0, 2, shape);
    fc_encode_options o;
    size_t size, s;
    uint8_t *cont;
    cr_layout L;
    int q;
    TU_CHECK(lv && x && rec);
    for (r = 0; r < 600; r++) {
        unsigned kind = tu_below(&g, 10);
        int32_t m = 1 + (int32_t)tu_below(&g, 5);
        if (kind >= 2) continue; /* 80 % empty rows */
        for (c = 0; c < 96; c++) {
            int32_t a = kind == 0 ? m : 1 + (int32_t)tu_below(&g, 9);
            if (tu_below(&g, 40) == 0) continue;
            lv[r * 96 + c] = tu_below(&g, 2) ? -a : a;
        }
    }
    t.levels = lv;
    t.step = 0.5;
    opts(&o, FC_MODE_AUTO, 4, 0);
    cont = roundtrip(&t, 1, &o, &size);
    TU_CHECK(cr_walk(cont, size, &L));
    TU_CHECK_EQ(L.t[0].nslices, 1);
    {
        uint8_t mb = cont[L.slice_modebyte[L.t[0].first_slice]];
        TU_CHECK_EQ(mb & 3u, FC_MODE_DENSE);
        TU_CHECK(((mb >> 2) & 2u) != 0); /* ROWKIND */
        /* the same slice as grouped: corrupt */
        expect_edit(cont, size, L.slice_modebyte[L.t[0].first_slice], (uint8_t)((mb & ~3u) | FC_MODE_GROUPED),
                    FC_ERR_CORRUPT, "ROWKIND in a grouped slice");
    }
    free(cont);
    opts(&o, FC_MODE_AUTO, 4, FC_WINDOW_AUTO);
    o.slice_elems = 9000;
    free(roundtrip(&t, 1, &o, &s));
    for (i = 0; i < n; i++) x[i] = (float)lv[i] * 0.5f + (float)((int)(i % 7) - 3) * 0.01f * (lv[i] != 0);
    for (q = FC_QUANT_UNIFORM; q <= FC_QUANT_TRELLIS8; q++) {
        t.levels = NULL;
        t.values = x;
        t.recon = rec;
        t.step = 0.5;
        opts(&o, FC_MODE_AUTO, 4, 0);
        o.lambda = 0.05;
        o.quantizer = q;
        o.slice_elems = 20000;
        free(roundtrip(&t, 1, &o, &s));
    }
    free(lv);
    free(x);
    free(rec);
}

/* Several tensors in one container: sparse indices, mixed shapes, modes and
 * steps, all-zero tensors (no slices) among them, a tensor of many slices. */
static void test_multi(void)
{
    static const uint32_t idx[6] = {0, 1, 5, 6, 1000, 0xFFFFFFFFu};
    static const uint64_t shapes[6][2] = {{10, 10}, {100, 1}, {1, 1}, {64, 64}, {500, 300}, {3, 3}};
    fc_tensor t[6];
    int32_t *lv[6];
    float *val = (float *)malloc(sizeof(float) * 64 * 64);
    float *rec = (float *)malloc(sizeof(float) * 64 * 64);
    tu_rng r = tu_seed(99);
    fc_encode_options o;
    fc_tensor_info info[6];
    size_t size, cnt, i;
    uint8_t *c;
    TU_CHECK(val && rec);
    for (i = 0; i < 6; i++) {
        t[i] = tu_tensor(idx[i], 2, shapes[i]);
        lv[i] = (int32_t *)malloc(sizeof(int32_t) * shapes[i][0] * shapes[i][1]);
        TU_CHECK(lv[i] != NULL);
        gen_levels(lv[i], shapes[i][0], shapes[i][1], i == 1 || i == 5 ? D_ZERO : D_DENSE, &r);
        t[i].levels = lv[i];
        t[i].step = i < 2 ? 0.5 : 0.25;
    }
    /* one float tensor (derived step) among them */
    tu_fill_laplace(&r, val, 64 * 64, 0.1);
    t[3].levels = NULL;
    t[3].values = val;
    t[3].recon = rec;
    t[3].step = 0.0;
    opts(&o, FC_MODE_AUTO, 4, 0);
    o.slice_elems = 4096; /* many slices in the big tensor */
    c = roundtrip(t, 6, &o, &size);
    TU_CHECK_RC(fc_inspect(c, size, NULL, info, 6, &cnt), FC_OK);
    TU_CHECK_EQ(info[1].slices, 0);
    TU_CHECK_EQ(info[5].slices, 0);
    TU_CHECK(info[4].slices > 1);
    TU_CHECK(info[0].step == 0.5 && info[1].step == 0.5 && info[2].step == 0.25);
    /* capacity below the count: only `capacity` entries are written */
    {
        fc_tensor_info *two = (fc_tensor_info *)tu_guarded_alloc(2 * sizeof(fc_tensor_info));
        TU_CHECK_RC(fc_inspect(c, size, NULL, two, 2, &cnt), FC_OK);
        TU_CHECK_EQ(cnt, 6);
        TU_CHECK_EQ(two[1].index, 1);
        tu_guarded_free(two);
        TU_CHECK_RC(fc_inspect(c, size, NULL, NULL, 0, &cnt), FC_OK);
        TU_CHECK_EQ(cnt, 6);
    }
    free(c);
    /* An empty container: no tensors. */
    {
        uint8_t buf[32];
        TU_CHECK_RC(fc_encode(NULL, 0, NULL, buf, sizeof buf, &size, NULL, NULL), FC_OK);
        TU_CHECK_EQ(size, 11);
        TU_CHECK_RC(fc_inspect(buf, size, NULL, NULL, 0, &cnt), FC_OK);
        TU_CHECK_EQ(cnt, 0);
        TU_CHECK_RC(fc_decode(buf, size, NULL, NULL, 0), FC_OK);
    }
    for (i = 0; i < 6; i++) free(lv[i]);
    free(val);
    free(rec);
}

/* ------------------------------------------------------------ sizes */

static void test_bound_and_capacity(void)
{
    /* Worst-case data: uniformly random levels over the whole range, in
     * every mode, for thin and wide shapes. */
    static const uint64_t shapes[4][2] = {{2000, 1}, {1, 2000}, {45, 45}, {5, 70000}};
    size_t si;
    int mode;
    for (si = 0; si < 4; si++) {
        uint64_t n = shapes[si][0] * shapes[si][1], i;
        int32_t *lv = (int32_t *)malloc(sizeof(int32_t) * n);
        tu_rng r = tu_seed(si);
        TU_CHECK(lv != NULL);
        for (i = 0; i < n; i++) {
            int32_t m = (int32_t)(tu_next(&r) % (uint64_t)FC_MAX_LEVEL) + 1;
            lv[i] = tu_below(&r, 2) ? -m : m;
        }
        for (mode = FC_MODE_DENSE; mode <= FC_MODE_RUNS; mode++) {
            fc_tensor t = tu_tensor(0, 2, shapes[si]);
            fc_encode_options o;
            size_t size, bound;
            uint8_t *c;
            t.levels = lv;
            t.step = 1.0;
            opts(&o, mode, 1, 5);
            bound = fc_encode_bound(&t, 1);
            c = roundtrip(&t, 1, &o, &size);
            TU_CHECKF(size <= bound, "size %zu > bound %zu", size, bound);
            free(c);
        }
        free(lv);
    }
    /* Invalid descriptions have no bound. */
    {
        uint64_t shape[2] = {UINT64_MAX / 2, 4};
        fc_tensor t = tu_tensor(0, 2, shape);
        TU_CHECK_EQ(fc_encode_bound(&t, 1), 0);
        t.ndim = FC_MAX_DIMS + 1;
        TU_CHECK_EQ(fc_encode_bound(&t, 1), 0);
        TU_CHECK_EQ(fc_encode_bound(NULL, 1), 0);
        TU_CHECK(fc_encode_bound(NULL, 0) >= 11);
    }
    /* FC_ERR_BUFFER_TOO_SMALL reports the size needed; exactly that size
     * works (into a guarded buffer: no byte written past it). */
    {
        uint64_t shape[2] = {50, 50};
        int32_t lv[2500];
        fc_tensor t = tu_tensor(3, 2, shape);
        tu_rng r = tu_seed(4);
        size_t need = 0, size = 0, bad = 0;
        uint8_t *ref, *g;
        size_t ref_size;
        gen_levels(lv, 50, 50, D_DENSE, &r);
        t.levels = lv;
        t.step = 0.1;
        TU_CHECK_RC(tu_encode(&t, 1, NULL, &ref, &ref_size, NULL), FC_OK);
        TU_CHECK_RC(fc_encode(&t, 1, NULL, NULL, 0, &need, NULL, &bad), FC_ERR_BUFFER_TOO_SMALL);
        TU_CHECK_EQ(need, ref_size);
        TU_CHECK_EQ(bad, SIZE_MAX);
        g = (uint8_t *)tu_guarded_alloc(need - 1);
        TU_CHECK_RC(fc_encode(&t, 1, NULL, g, need - 1, &size, NULL, NULL), FC_ERR_BUFFER_TOO_SMALL);
        TU_CHECK_EQ(size, need);
        tu_guarded_free(g);
        g = (uint8_t *)tu_guarded_alloc(need);
        TU_CHECK_RC(fc_encode(&t, 1, NULL, g, need, &size, NULL, NULL), FC_OK);
        TU_CHECK_EQ(size, need);
        TU_CHECK(memcmp(g, ref, need) == 0);
        tu_guarded_free(g);
        free(ref);
    }
}

/* ------------------------------------------------------------ arguments */

static void test_names(void)
{
    static const char *names[] = {
        "FC_OK", "FC_ERR_INVALID_ARGUMENT", "FC_ERR_NONFINITE", "FC_ERR_LEVEL_OVERFLOW",
        "FC_ERR_BUFFER_TOO_SMALL", "FC_ERR_TRUNCATED", "FC_ERR_CORRUPT", "FC_ERR_CHECKSUM",
        "FC_ERR_VERSION", "FC_ERR_LIMIT", "FC_ERR_MISMATCH", "FC_ERR_NOMEM", "FC_ERR_THREAD"};
    char v[32];
    int i;
    /* the numbers are ABI */
    TU_CHECK(FC_OK == 0 && FC_ERR_INVALID_ARGUMENT == 1 && FC_ERR_NONFINITE == 2 &&
             FC_ERR_LEVEL_OVERFLOW == 3 && FC_ERR_BUFFER_TOO_SMALL == 4 && FC_ERR_TRUNCATED == 5 &&
             FC_ERR_CORRUPT == 6 && FC_ERR_CHECKSUM == 7 && FC_ERR_VERSION == 8 &&
             FC_ERR_LIMIT == 9 && FC_ERR_MISMATCH == 10 && FC_ERR_NOMEM == 11 &&
             FC_ERR_THREAD == 12);
    for (i = 0; i <= 12; i++) TU_CHECK(strcmp(fc_result_name(i), names[i]) == 0);
    TU_CHECK(strcmp(fc_result_name(13), "FC_ERR_UNKNOWN") == 0);
    TU_CHECK(strcmp(fc_result_name(-1), "FC_ERR_UNKNOWN") == 0);
    snprintf(v, sizeof v, "%d.%d.%d", FC_VERSION_MAJOR, FC_VERSION_MINOR, FC_VERSION_PATCH);
    TU_CHECK(strcmp(fc_version_string(), v) == 0);
}

static void test_encode_errors(void)
{
    uint64_t shape[2] = {4, 5};
    float v[20];
    int32_t lv[20];
    float imp[20];
    fc_tensor t[2];
    fc_encode_options o;
    uint8_t out[1024];
    size_t size, bad;
    int i;
    for (i = 0; i < 20; i++) {
        v[i] = (float)(i - 10) * 0.1f;
        lv[i] = i - 10;
        imp[i] = 1.0f;
    }
#define BASE()                                  \
    do {                                        \
        t[0] = tu_tensor(0, 2, shape);          \
        t[0].values = v;                        \
        t[1] = tu_tensor(1, 2, shape);          \
        t[1].levels = lv;                       \
        t[1].step = 0.5;                        \
        fc_encode_options_init(&o);             \
    } while (0)
#define EXPECT(rc, which)                                                                 \
    do {                                                                                  \
        size = 12345;                                                                     \
        bad = 777;                                                                        \
        TU_CHECK_RC(fc_encode(t, 2, &o, out, sizeof out, &size, NULL, &bad), rc);         \
        TU_CHECK_EQ(size, 0);                                                             \
        TU_CHECK_EQ(bad, which);                                                          \
    } while (0)

    BASE();
    TU_CHECK_RC(fc_encode(t, 2, &o, out, sizeof out, &size, NULL, &bad), FC_OK);
    TU_CHECK_EQ(bad, SIZE_MAX);
    /* NULLs */
    TU_CHECK_RC(fc_encode(t, 2, &o, out, sizeof out, NULL, NULL, NULL), FC_ERR_INVALID_ARGUMENT);
    TU_CHECK_RC(fc_encode(t, 2, &o, NULL, 10, &size, NULL, NULL), FC_ERR_INVALID_ARGUMENT);
    TU_CHECK_RC(fc_encode(NULL, 2, &o, out, sizeof out, &size, NULL, NULL), FC_ERR_INVALID_ARGUMENT);
    TU_CHECK_RC(fc_encode(t, 2, NULL, out, sizeof out, &size, NULL, NULL), FC_OK);
    /* bad options */
    BASE(); o.lambda = -0.1; EXPECT(FC_ERR_INVALID_ARGUMENT, SIZE_MAX);
    BASE(); o.lambda = NAN; EXPECT(FC_ERR_INVALID_ARGUMENT, SIZE_MAX);
    BASE(); o.lambda = INFINITY; EXPECT(FC_ERR_INVALID_ARGUMENT, SIZE_MAX);
    BASE(); o.max_gtx = 0; EXPECT(FC_ERR_INVALID_ARGUMENT, SIZE_MAX);
    BASE(); o.max_gtx = FC_MAX_GTX + 1; EXPECT(FC_ERR_INVALID_ARGUMENT, SIZE_MAX);
    BASE(); o.window_set = 9; EXPECT(FC_ERR_INVALID_ARGUMENT, SIZE_MAX);
    BASE(); o.mode = 3; EXPECT(FC_ERR_INVALID_ARGUMENT, SIZE_MAX);
    BASE(); o.mode = -2; EXPECT(FC_ERR_INVALID_ARGUMENT, SIZE_MAX);
    BASE(); o.slice_elems = 0; EXPECT(FC_ERR_INVALID_ARGUMENT, SIZE_MAX);
    BASE(); o.struct_size = 0; EXPECT(FC_ERR_INVALID_ARGUMENT, SIZE_MAX);
    /* bad tensors: the position of the culprit is reported */
    BASE(); t[1].ndim = FC_MAX_DIMS + 1; EXPECT(FC_ERR_INVALID_ARGUMENT, 1);
    BASE(); t[0].levels = lv; EXPECT(FC_ERR_INVALID_ARGUMENT, 0);       /* both */
    BASE(); t[1].levels = NULL; EXPECT(FC_ERR_INVALID_ARGUMENT, 1);     /* neither */
    BASE(); t[1].importance = imp; EXPECT(FC_ERR_INVALID_ARGUMENT, 1);  /* levels + importance */
    BASE(); t[1].index = 0; EXPECT(FC_ERR_INVALID_ARGUMENT, 1);         /* equal index */
    BASE(); t[0].index = 5; EXPECT(FC_ERR_INVALID_ARGUMENT, 1);         /* decreasing */
    BASE(); t[0].step = -1.0; EXPECT(FC_ERR_INVALID_ARGUMENT, 0);
    BASE(); t[0].step = NAN; EXPECT(FC_ERR_INVALID_ARGUMENT, 0);
    BASE(); t[0].step = INFINITY; EXPECT(FC_ERR_INVALID_ARGUMENT, 0);
    BASE(); t[0].step = 1e-40; EXPECT(FC_ERR_INVALID_ARGUMENT, 0);      /* float32 subnormal */
    BASE(); t[0].step = 1e39; EXPECT(FC_ERR_INVALID_ARGUMENT, 0);       /* float32 overflow */
    BASE(); t[1].step = 0.0; EXPECT(FC_ERR_INVALID_ARGUMENT, 1);        /* levels need a step */
    BASE(); t[0].sigma_min = -1.0; EXPECT(FC_ERR_INVALID_ARGUMENT, 0);
    BASE(); t[0].sigma_min = NAN; EXPECT(FC_ERR_INVALID_ARGUMENT, 0);
    BASE(); t[0].shape[0] = UINT64_MAX / 4; EXPECT(FC_ERR_INVALID_ARGUMENT, 0);
    /* bad values */
    BASE(); v[7] = NAN; EXPECT(FC_ERR_NONFINITE, 0); v[7] = 0.3f;
    BASE(); v[7] = -INFINITY; EXPECT(FC_ERR_NONFINITE, 0); v[7] = 0.3f;
    BASE(); lv[3] = FC_MAX_LEVEL + 1; EXPECT(FC_ERR_LEVEL_OVERFLOW, 1);
    BASE(); lv[3] = -FC_MAX_LEVEL - 1; EXPECT(FC_ERR_LEVEL_OVERFLOW, 1);
    BASE(); lv[3] = INT32_MIN; EXPECT(FC_ERR_LEVEL_OVERFLOW, 1);
    BASE(); lv[3] = FC_MAX_LEVEL; lv[4] = -FC_MAX_LEVEL;
    TU_CHECK_RC(fc_encode(t, 2, &o, out, sizeof out, &size, NULL, &bad), FC_OK);
    lv[3] = -7;
    lv[4] = -6;
    /* zero-size tensors need no data pointer */
    BASE();
    t[0].shape[1] = 0;
    t[1].shape[0] = 0;
    t[0].values = NULL;
    t[1].levels = NULL;
    TU_CHECK_RC(fc_encode(t, 2, &o, out, sizeof out, &size, NULL, &bad), FC_OK);
#undef BASE
#undef EXPECT

    /* An options struct from an older header: fields past struct_size are
     * ignored (garbage there), missing ones take their defaults. */
    {
        struct {
            fc_encode_options o;
            char pad[64];
        } big;
        uint8_t ref[1024];
        size_t ref_size;
        fc_encode_options d;
        memset(&big, 0xFF, sizeof big);
        big.o.struct_size = offsetof(fc_encode_options, max_gtx);
        big.o.lambda = 0.0;
        big.o.S = 128;
        t[0] = tu_tensor(0, 2, shape);
        t[0].values = v;
        TU_CHECK_RC(fc_encode(t, 1, &big.o, out, sizeof out, &size, NULL, NULL), FC_OK);
        fc_encode_options_init(&d);
        TU_CHECK_RC(fc_encode(t, 1, &d, ref, sizeof ref, &ref_size, NULL, NULL), FC_OK);
        TU_CHECK(size == ref_size && memcmp(out, ref, size) == 0);
        /* a newer, larger struct is fine too */
        big.o = d;
        big.o.struct_size = sizeof big;
        memset(big.pad, 0, sizeof big.pad);
        TU_CHECK_RC(fc_encode(t, 1, &big.o, out, sizeof out, &size, NULL, NULL), FC_OK);
        TU_CHECK(size == ref_size && memcmp(out, ref, size) == 0);
    }
}

/* ------------------------------------------------------------ hostile input */

/* A small valid container per mode, plus a multi-tensor one. */
static uint8_t *small_container(int which, size_t *size)
{
    uint64_t shape[2] = {6, 40};
    uint64_t shape1[1] = {33};
    int32_t lv[240], lv1[33];
    fc_tensor t[2];
    fc_encode_options o;
    tu_rng r = tu_seed(700 + (uint64_t)which);
    uint8_t *c;
    size_t n = 1;
    gen_levels(lv, 6, 40, which == 2 ? D_SPARSE : D_DENSE, &r);
    if (which == 2) lv[17] = 3, lv[200] = -1; /* at least two nonzeros */
    t[0] = tu_tensor(0, 2, shape);
    t[0].levels = lv;
    t[0].step = 0.125;
    opts(&o, which < 3 ? which : FC_MODE_AUTO, 3, (unsigned)which);
    if (which == 3) {
        gen_levels(lv1, 1, 33, D_DENSE, &r);
        t[1] = tu_tensor(9, 1, shape1);
        t[1].levels = lv1;
        t[1].step = 2.0;
        n = 2;
    }
    TU_CHECK_RC(tu_encode(t, n, &o, &c, size, NULL), FC_OK);
    return c;
}

/* Decode a hostile container: inspect, then decode into guarded targets of
 * the sizes inspect reports (levels, values and an accumulator, which must
 * stay untouched on failure).  Returns fc_decode's result (or inspect's). */
static int decode_hostile(const uint8_t *src, size_t size)
{
    uint8_t *g = tu_guarded_copy(src, size);
    fc_decode_options dopt;
    fc_tensor_info info[8];
    fc_decode_target tg[8];
    double *acc_copy[8];
    size_t count = 0, i;
    int rc, rc2;
    fc_decode_options_init(&dopt);
    dopt.max_tensor_elems = 1u << 20;
    dopt.max_total_elems = 1u << 21;
    rc = fc_inspect(g, size, &dopt, info, 8, &count);
    if (rc != FC_OK || count > 8) {
        /* decode agrees with inspect on a rejected header */
        rc2 = fc_decode(g, size, &dopt, NULL, 0);
        if (rc != FC_OK) TU_CHECK(rc2 == rc || (rc2 == FC_ERR_MISMATCH && rc == FC_OK));
        tu_guarded_free(g);
        return rc != FC_OK ? rc : FC_ERR_LIMIT;
    }
    memset(tg, 0, sizeof tg);
    for (i = 0; i < count; i++) {
        uint64_t n = info[i].numel, k;
        tg[i].levels = (int32_t *)tu_guarded_alloc(sizeof(int32_t) * n);
        tg[i].values = (float *)tu_guarded_alloc(sizeof(float) * n);
        tg[i].acc = tu_guarded_alloc(sizeof(double) * n);
        tg[i].acc_dtype = FC_ACC_F64;
        tg[i].weight = 0.5;
        acc_copy[i] = (double *)malloc(sizeof(double) * (n ? n : 1));
        for (k = 0; k < n; k++) ((double *)tg[i].acc)[k] = acc_copy[i][k] = (double)k;
    }
    rc = fc_decode(g, size, &dopt, tg, count);
    TU_CHECK(rc == FC_OK || rc == FC_ERR_CORRUPT || rc == FC_ERR_TRUNCATED ||
             rc == FC_ERR_LIMIT);
    for (i = 0; i < count; i++) {
        uint64_t n = info[i].numel, k;
        if (rc != FC_OK) {
            TU_CHECK(n == 0 || memcmp(tg[i].acc, acc_copy[i], sizeof(double) * n) == 0);
        } else {
            for (k = 0; k < n; k++) {
                float want = (float)tg[i].levels[k] * (float)info[i].step;
                TU_CHECK(memcmp(&want, &tg[i].values[k], 4) == 0);
                TU_CHECK(((double *)tg[i].acc)[k] == (double)k + 0.5 * (double)want);
            }
        }
        tu_guarded_free(tg[i].levels);
        tu_guarded_free(tg[i].values);
        tu_guarded_free(tg[i].acc);
        free(acc_copy[i]);
    }
    tu_guarded_free(g);
    return rc;
}

/* Every prefix fails; with a recomputed CRC it fails as truncated/corrupt. */
static void test_truncation(void)
{
    int which;
    for (which = 0; which < 4; which++) {
        size_t size, len;
        uint8_t *c = small_container(which, &size);
        for (len = 0; len < size; len++) {
            int rc = decode_hostile(c, len);
            if (len < 4) TU_CHECK_RC(rc, FC_ERR_TRUNCATED);
            else TU_CHECK(rc == FC_ERR_CHECKSUM || rc == FC_ERR_TRUNCATED);
        }
        /* body prefixes with a valid CRC */
        for (len = 6; len + 4 < size; len++) {
            cr_buf b = {0};
            int rc;
            cr_bytes(&b, c, len);
            cr_seal(&b);
            rc = decode_hostile(b.d, b.n);
            TU_CHECKF(rc == FC_ERR_TRUNCATED || rc == FC_ERR_CORRUPT, "mode %d, body %zu/%zu: %s",
                      which, len, size - 4, fc_result_name(rc));
            cr_free(&b);
        }
        free(c);
    }
}

/* Every single-bit flip is caught: by the magic/version check or the CRC. */
static void test_bit_flips(void)
{
    int which;
    for (which = 0; which < 4; which++) {
        size_t size, bit;
        uint8_t *c = small_container(which, &size);
        for (bit = 0; bit < size * 8; bit++) {
            int rc;
            c[bit / 8] ^= (uint8_t)(1u << (bit % 8));
            rc = decode_hostile(c, size);
            if (bit / 8 < 5) TU_CHECK_RC(rc, FC_ERR_VERSION);
            else TU_CHECK_RC(rc, FC_ERR_CHECKSUM);
            c[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        }
        TU_CHECK_RC(decode_hostile(c, size), FC_OK);
        free(c);
    }
}

/* Random garbage, and random garbage behind a valid magic with a valid CRC. */
static void test_garbage(void)
{
    tu_rng r = tu_seed(12345);
    int i;
    for (i = 0; i < 3000; i++) {
        size_t n = (size_t)tu_below(&r, 200), k;
        uint8_t *b = (uint8_t *)malloc(n + 16);
        int rc;
        TU_CHECK(b != NULL);
        for (k = 0; k < n + 16; k++) b[k] = (uint8_t)tu_next(&r);
        if (i % 2) {
            /* a plausible start: magic, version, flags, a small count */
            n += 16;
            memcpy(b, "FCDC\x01\x00", 6);
            b[6] = (uint8_t)tu_below(&r, 4);
            cr_reseal(b, n);
        }
        rc = decode_hostile(b, n);
        if (i % 2 == 0) TU_CHECK(rc != FC_OK);
        free(b);
    }
}

/* Random mutations of valid containers with the CRC recomputed: any result,
 * but no crash, no out-of-bounds access, accumulators untouched on error. */
static void test_mutations(void)
{
    int which, i;
    unsigned counts[16] = {0};
    for (which = 0; which < 4; which++) {
        size_t size;
        uint8_t *c = small_container(which, &size);
        uint8_t *m = (uint8_t *)malloc(size);
        tu_rng r = tu_seed(4242 + (uint64_t)which);
        TU_CHECK(m != NULL);
        for (i = 0; i < 1500; i++) {
            int edits = 1 + (int)tu_below(&r, 3), e, rc;
            memcpy(m, c, size);
            for (e = 0; e < edits; e++) {
                size_t at = 6 + (size_t)tu_below(&r, size - 10);
                switch (tu_below(&r, 3)) {
                case 0: m[at] ^= (uint8_t)(1u << tu_below(&r, 8)); break;
                case 1: m[at] = (uint8_t)tu_next(&r); break;
                default: m[at] = tu_below(&r, 2) ? 0x00 : 0xFF; break;
                }
            }
            cr_reseal(m, size);
            rc = decode_hostile(m, size);
            counts[rc & 15]++;
        }
        free(m);
        free(c);
    }
    printf("  CRC-fixed mutations: %u ok, %u corrupt, %u truncated, %u limit\n", counts[FC_OK],
           counts[FC_ERR_CORRUPT], counts[FC_ERR_TRUNCATED], counts[FC_ERR_LIMIT]);
    TU_CHECK(counts[FC_ERR_CORRUPT] > 100); /* the decoder does reject many */
}

/* One header field changed on purpose (CRC recomputed): the exact error. */
static void expect_edit(const uint8_t *c, size_t size, size_t at, uint8_t value, int want,
                        const char *what)
{
    uint8_t *m = (uint8_t *)malloc(size);
    int rc;
    TU_CHECK(m != NULL && at < size);
    memcpy(m, c, size);
    m[at] = value;
    cr_reseal(m, size);
    rc = decode_hostile(m, size);
    TU_CHECKF(rc == want, "%s: got %s, want %s", what, fc_result_name(rc), fc_result_name(want));
    free(m);
}

/* Replace bytes [at, at + old_len) by `rep` (CRC recomputed). */
static void expect_splice(const uint8_t *c, size_t size, size_t at, size_t old_len,
                          const uint8_t *rep, size_t rep_len, int want, const char *what)
{
    cr_buf b = {0};
    int rc;
    cr_bytes(&b, c, at);
    cr_bytes(&b, rep, rep_len);
    cr_bytes(&b, c + at + old_len, size - 4 - at - old_len);
    cr_seal(&b);
    rc = decode_hostile(b.d, b.n);
    TU_CHECKF(rc == want, "%s: got %s, want %s", what, fc_result_name(rc), fc_result_name(want));
    cr_free(&b);
}

static void test_crafted_headers(void)
{
    size_t size;
    uint8_t *c = small_container(3, &size); /* two tensors */
    cr_layout L;
    uint8_t flags0;
    TU_CHECK(cr_walk(c, size, &L));
    TU_CHECK_EQ(L.count, 2);
    TU_CHECK(L.t[1].index != CR_NONE); /* index 9 is explicit */
    flags0 = c[L.t[0].start];

    expect_edit(c, size, 0, 'X', FC_ERR_VERSION, "magic");
    expect_edit(c, size, 4, 2, FC_ERR_VERSION, "format version 2");
    expect_edit(c, size, 4, 0, FC_ERR_VERSION, "format version 0");
    expect_edit(c, size, 5, 4, FC_ERR_CORRUPT, "container flags (reserved bit 2)");
    expect_edit(c, size, 6, 3, FC_ERR_TRUNCATED, "tensor count 3");
    expect_edit(c, size, 6, 1, FC_ERR_CORRUPT, "tensor count 1 (bytes left over)");
    expect_edit(c, size, 6, 0x7F, FC_ERR_TRUNCATED, "tensor count 127");
    /* dtype/ndim/flags byte */
    expect_edit(c, size, L.t[0].start, (uint8_t)((flags0 & 0xCF) | 0x20), FC_ERR_CORRUPT, "dtype 2");
    expect_edit(c, size, L.t[0].start, (uint8_t)(flags0 & 0xCF), FC_ERR_CORRUPT, "dtype 0");
    expect_edit(c, size, L.t[0].start, (uint8_t)((flags0 & 0xF0) | 9), FC_ERR_CORRUPT, "ndim 9");
    expect_edit(c, size, L.t[0].start, (uint8_t)(flags0 | CR_STEP_REPEAT), FC_ERR_CORRUPT,
                "step repeat in the first tensor");
    /* index: equal to / below the previous one */
    expect_edit(c, size, L.t[1].index, 0, FC_ERR_CORRUPT, "index not increasing");
    /* step: NaN, infinite, zero, negative, subnormal */
    {
        static const uint32_t bad_steps[] = {0x7FC00000u, 0x7F800000u, 0x00000000u, 0xBF800000u,
                                             0x00000001u, 0x80000000u};
        size_t k;
        TU_CHECK(L.t[0].step != CR_NONE);
        for (k = 0; k < sizeof bad_steps / sizeof bad_steps[0]; k++) {
            uint8_t le[4];
            le[0] = (uint8_t)bad_steps[k];
            le[1] = (uint8_t)(bad_steps[k] >> 8);
            le[2] = (uint8_t)(bad_steps[k] >> 16);
            le[3] = (uint8_t)(bad_steps[k] >> 24);
            expect_splice(c, size, L.t[0].step, 4, le, 4, FC_ERR_CORRUPT, "bad step");
        }
    }
    /* params: N = 0, N = 9, bit 7 */
    expect_edit(c, size, L.t[0].params, (uint8_t)(c[L.t[0].params] & 0xF0), FC_ERR_CORRUPT, "N=0");
    expect_edit(c, size, L.t[0].params, (uint8_t)((c[L.t[0].params] & 0xF0) | 9), FC_ERR_CORRUPT,
                "N=9");
    {
        /* bit 7: a quantizer byte follows; its reserved bits must be 0 */
        uint8_t ext[2];
        ext[0] = (uint8_t)(c[L.t[0].params] | 0x80);
        ext[1] = 0x08;
        expect_splice(c, size, L.t[0].params, 1, ext, 2, FC_ERR_CORRUPT, "quantizer byte 0x08");
        /* TRANSPOSED: only for tensors of >= 2 dimensions */
        ext[0] = (uint8_t)(c[L.t[1].params] | 0x80);
        ext[1] = 0x04;
        expect_splice(c, size, L.t[1].params, 1, ext, 2, FC_ERR_CORRUPT, "transposed 1-d tensor");
        /* SWAPPED: only for tensors of >= 3 dimensions (a 2-d view: TRANSPOSED) */
        ext[1] = 0x10;
        expect_splice(c, size, L.t[1].params, 1, ext, 2, FC_ERR_CORRUPT, "swapped 1-d tensor");
        ext[0] = (uint8_t)(c[L.t[0].params] | 0x80);
        expect_splice(c, size, L.t[0].params, 1, ext, 2, FC_ERR_CORRUPT, "swapped 2-d tensor");
    }
    /* slice table */
    {
        size_t s0 = L.t[0].first_slice;
        uint8_t mb = c[L.slice_modebyte[s0]];
        TU_CHECK_EQ(L.t[0].nslices, 1);
        expect_edit(c, size, L.slice_modebyte[s0], (uint8_t)((mb & ~3u) | 3u), FC_ERR_CORRUPT,
                    "mode 3");
        expect_edit(c, size, L.slice_modebyte[s0], (uint8_t)(mb | 0x80), FC_ERR_CORRUPT,
                    "mode byte bit 7");
        if ((mb & 3u) != FC_MODE_RUNS)
            expect_edit(c, size, L.slice_modebyte[s0], (uint8_t)(mb | (2u << 2)), FC_ERR_CORRUPT,
                        "k bits in a dense slice");
        /* slice count larger than the rows, and 0 with nonzero data */
        expect_edit(c, size, L.t[0].nslices_pos, 7, FC_ERR_CORRUPT, "7 slices for 6 rows");
        /* a payload size past the end */
        {
            cr_buf v = {0};
            size_t after = L.slice_sizepos[s0];
            uint64_t old;
            TU_CHECK(cr_get_varint(c, size, &after, &old));
            cr_varint(&v, (uint64_t)1 << 20);
            expect_splice(c, size, L.slice_sizepos[s0], after - L.slice_sizepos[s0], v.d, v.n,
                          FC_ERR_TRUNCATED, "payload size 2^20");
            cr_free(&v);
        }
    }
    /* trailing bytes after the last payload */
    {
        uint8_t extra[3] = {1, 2, 3};
        expect_splice(c, size, L.crc, 0, extra, 3, FC_ERR_CORRUPT, "trailing bytes");
    }
    /* overlong varints: 11 bytes, and a 10th byte above 1 */
    {
        uint8_t v11[11] = {0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00};
        uint8_t v10[10] = {0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02};
        expect_splice(c, size, 6, 1, v11, 11, FC_ERR_CORRUPT, "11-byte count varint");
        expect_splice(c, size, 6, 1, v10, 10, FC_ERR_CORRUPT, "count varint beyond 64 bits");
    }
    free(c);
}

/* Shapes and counts that a decoder must refuse before allocating anything. */
static void test_crafted_limits(void)
{
    static const struct {
        uint32_t ndim;
        uint64_t shape[3];
        int want;
    } cases[] = {
        {1, {(uint64_t)1 << 40}, FC_ERR_LIMIT},
        {2, {(uint64_t)1 << 32, (uint64_t)1 << 32}, FC_ERR_LIMIT},
        {3, {0, (uint64_t)1 << 60, 3}, FC_ERR_LIMIT},
        {2, {(uint64_t)1 << 31, 3}, FC_ERR_LIMIT},
        {2, {UINT64_MAX, UINT64_MAX}, FC_ERR_LIMIT},
    };
    size_t k, cnt;
    for (k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        cr_buf b = {0};
        cr_slice sl = {0, 0, 0, 0};
        cr_container(&b, 1);
        cr_tensor(&b, 0, 0, cases[k].ndim, cases[k].shape, 1.0f, 4, 0, 1, &sl);
        cr_seal(&b);
        TU_CHECK_RC(decode_hostile(b.d, b.n), cases[k].want);
        TU_CHECK_RC(fc_inspect(b.d, b.n, NULL, NULL, 0, &cnt), cases[k].want);
        cr_free(&b);
    }
    /* a tensor count far beyond what the bytes can hold */
    {
        cr_buf b = {0};
        cr_container(&b, (uint64_t)1 << 40);
        cr_seal(&b);
        TU_CHECK_RC(fc_inspect(b.d, b.n, NULL, NULL, 0, &cnt), FC_ERR_LIMIT);
        cr_free(&b);
        cr_container(&b, 1000);
        cr_seal(&b);
        TU_CHECK_RC(fc_inspect(b.d, b.n, NULL, NULL, 0, &cnt), FC_ERR_TRUNCATED);
        cr_free(&b);
    }
    /* a slice count far beyond what the bytes can hold */
    {
        cr_buf b = {0};
        uint64_t shape[2] = {1000000, 1};
        cr_container(&b, 1);
        cr_tensor(&b, 0, 0, 2, shape, 1.0f, 4, 0, 0, NULL);
        b.n--; /* replace the slice count 0 */
        cr_varint(&b, 900000);
        cr_seal(&b);
        TU_CHECK_RC(fc_inspect(b.d, b.n, NULL, NULL, 0, &cnt), FC_ERR_TRUNCATED);
        cr_free(&b);
    }
}

/* The container c with the payload of slice `sl` replaced by rep[0..len)
 * (its size field rewritten, the CRC recomputed). */
static void with_payload(const uint8_t *c, size_t size, size_t sl, const uint8_t *rep, size_t len,
                         cr_buf *out)
{
    cr_layout L;
    size_t after;
    uint64_t v;
    TU_CHECK(cr_walk(c, size, &L) && sl < L.nslices);
    memset(out, 0, sizeof(*out));
    after = L.slice_sizepos[sl];
    TU_CHECK(cr_get_varint(c, size, &after, &v));
    cr_bytes(out, c, L.slice_sizepos[sl]);
    cr_varint(out, len);
    cr_bytes(out, c + after, L.slice_payload[sl] - after);
    cr_bytes(out, rep, len);
    after = L.slice_payload[sl] + L.slice_size[sl];
    cr_bytes(out, c + after, L.crc - after);
    cr_seal(out);
}

static void expect_payload(const uint8_t *c, size_t size, size_t sl, const uint8_t *rep,
                           size_t len, int want, const char *what)
{
    cr_buf b;
    int rc;
    with_payload(c, size, sl, rep, len, &b);
    rc = decode_hostile(b.d, b.n);
    TU_CHECKF(rc == want, "%s: got %s, want %s", what, fc_result_name(rc), fc_result_name(want));
    cr_free(&b);
}

/* A codeword of bypass bins (the engine only; no context is involved). */
static size_t bypass_codeword(uint8_t *dst, size_t cap, const unsigned *bits, size_t n)
{
    fc_buf out;
    fc_rc_enc e;
    size_t i, size;
    memset(&out, 0, sizeof(out));
    fc_rc_enc_init(&e, &out);
    for (i = 0; i < n; i++) fc_rc_bypass(&e, bits[i], 1);
    fc_rc_finish(&e);
    size = out.size;
    TU_CHECK(size <= cap);
    memcpy(dst, out.data, size);
    fc_buf_free(&out);
    return size;
}

/* Payloads that are malformed while the header is fine. */
static void test_crafted_payloads(void)
{
    int which;
    for (which = 0; which < 3; which++) {
        size_t size, n;
        uint8_t *c = small_container(which, &size);
        cr_layout L;
        uint8_t buf[512];
        unsigned bits[64];
        size_t k;
        TU_CHECK(cr_walk(c, size, &L));
        n = L.slice_size[0];
        /* Empty payload: the decoder reads zeros, so every context-coded bin
         * is a 1, and the first level's (or gap's) prefix never ends. */
        expect_payload(c, size, 0, buf, 0, FC_ERR_CORRUPT, "empty payload");
        /* Bytes the decoder never reads behind a valid codeword. */
        TU_CHECK(n + 8 <= sizeof buf);
        memcpy(buf, c + L.slice_payload[0], n);
        memset(buf + n, 0xA5, 8);
        expect_payload(c, size, 0, buf, n + 8, FC_ERR_CORRUPT, "unread trailing bytes");
        /* The valid payload itself, re-spliced: still fine. */
        expect_payload(c, size, 0, buf, n, FC_OK, "re-spliced payload");
        /* m0 - 1 (order-0 Exp-Golomb, bypass) = 2^30 - 1: m0 = 2^30 >
         * FC_MAX_LEVEL.  And a prefix of 31 ones. */
        for (k = 0; k < 64; k++) bits[k] = k < 30;
        expect_payload(c, size, 0, buf, bypass_codeword(buf, sizeof buf, bits, 64), FC_ERR_CORRUPT,
                       "m0 = 2^30");
        for (k = 0; k < 64; k++) bits[k] = k < 31;
        expect_payload(c, size, 0, buf, bypass_codeword(buf, sizeof buf, bits, 64), FC_ERR_CORRUPT,
                       "m0 prefix of 31 ones");
        free(c);
    }
    /* Runs mode: the same payload under a shape with fewer rows, so the
     * gaps run past the end of the slice. */
    {
        size_t rsize;
        uint8_t *runs = small_container(FC_MODE_RUNS, &rsize);
        cr_layout L;
        TU_CHECK(cr_walk(runs, rsize, &L));
        TU_CHECK_EQ(runs[L.t[0].shape], 6);
        expect_edit(runs, rsize, L.t[0].shape, 3, FC_ERR_CORRUPT, "runs: gaps beyond the slice");
        free(runs);
    }
}

/* ------------------------------------------------------------ limits */

static void test_limits(void)
{
    uint64_t s60[1] = {60}, s100[2] = {10, 10};
    int32_t lv[100];
    fc_tensor t[3];
    uint8_t *c;
    size_t size, cnt, i;
    fc_decode_options d;
    fc_decode_target tg[4]; /* one spare: count 4 must be a readable array */
    int32_t out[3][100];
    for (i = 0; i < 100; i++) lv[i] = (int32_t)(i % 7) - 3;
    t[0] = tu_tensor(0, 1, s60);
    t[1] = tu_tensor(1, 2, s100);
    t[2] = tu_tensor(2, 1, s60);
    for (i = 0; i < 3; i++) {
        t[i].levels = lv;
        t[i].step = 1.0;
    }
    TU_CHECK_RC(tu_encode(t, 3, NULL, &c, &size, NULL), FC_OK);
    memset(tg, 0, sizeof tg);
    for (i = 0; i < 3; i++) tg[i].levels = out[i];

#define LIMIT_CASE(field, value, want)                                              \
    do {                                                                            \
        fc_decode_options_init(&d);                                                 \
        d.field = value;                                                            \
        TU_CHECK_RC(fc_inspect(c, size, &d, NULL, 0, &cnt), want);                  \
        TU_CHECK_RC(fc_decode(c, size, &d, tg, 3), want);                           \
    } while (0)
    LIMIT_CASE(max_tensors, 2, FC_ERR_LIMIT);
    LIMIT_CASE(max_tensors, 3, FC_OK);
    LIMIT_CASE(max_tensor_elems, 99, FC_ERR_LIMIT);
    LIMIT_CASE(max_tensor_elems, 100, FC_OK);
    LIMIT_CASE(max_total_elems, 219, FC_ERR_LIMIT);
    LIMIT_CASE(max_total_elems, 220, FC_OK);
#undef LIMIT_CASE
    /* decode options: NULL means defaults, a bad struct_size is refused */
    TU_CHECK_RC(fc_decode(c, size, NULL, tg, 3), FC_OK);
    fc_decode_options_init(&d);
    d.struct_size = 0;
    TU_CHECK_RC(fc_decode(c, size, &d, tg, 3), FC_ERR_INVALID_ARGUMENT);
    TU_CHECK_RC(fc_inspect(c, size, &d, NULL, 0, &cnt), FC_ERR_INVALID_ARGUMENT);
    /* other argument errors of the decoder */
    TU_CHECK_RC(fc_inspect(c, size, NULL, NULL, 0, NULL), FC_ERR_INVALID_ARGUMENT);
    TU_CHECK_RC(fc_inspect(c, size, NULL, NULL, 1, &cnt), FC_ERR_INVALID_ARGUMENT);
    TU_CHECK_RC(fc_inspect(NULL, 10, NULL, NULL, 0, &cnt), FC_ERR_INVALID_ARGUMENT);
    TU_CHECK_RC(fc_inspect(NULL, 0, NULL, NULL, 0, &cnt), FC_ERR_TRUNCATED);
    TU_CHECK_RC(fc_decode(c, size, NULL, NULL, 3), FC_ERR_INVALID_ARGUMENT);
    TU_CHECK_RC(fc_decode(c, size, NULL, tg, 2), FC_ERR_MISMATCH);
    TU_CHECK_RC(fc_decode(c, size, NULL, tg, 4), FC_ERR_MISMATCH);
    {
        double acc[100];
        memset(acc, 0, sizeof acc);
        tg[1].acc = acc;
        tg[1].acc_dtype = 3;
        tg[1].weight = 1.0;
        TU_CHECK_RC(fc_decode(c, size, NULL, tg, 3), FC_ERR_INVALID_ARGUMENT);
        tg[1].acc_dtype = FC_ACC_NONE;
        TU_CHECK_RC(fc_decode(c, size, NULL, tg, 3), FC_ERR_INVALID_ARGUMENT);
        tg[1].acc_dtype = FC_ACC_F64;
        tg[1].weight = NAN;
        TU_CHECK_RC(fc_decode(c, size, NULL, tg, 3), FC_ERR_INVALID_ARGUMENT);
        tg[1].weight = INFINITY;
        TU_CHECK_RC(fc_decode(c, size, NULL, tg, 3), FC_ERR_INVALID_ARGUMENT);
        for (i = 0; i < 100; i++) TU_CHECK(acc[i] == 0.0);
        tg[1].acc = NULL;
    }
    free(c);
}

/* fc_decode_options.expected: the container must hold exactly these shapes;
 * a container that claims more is refused while its header is parsed,
 * before the decoder (or a caller sizing buffers from fc_inspect) allocates
 * anything from it. */
static void test_expected_shapes(void)
{
    uint64_t s60[1] = {60}, s100[2] = {10, 10};
    int32_t lv[100], out[2][100];
    fc_tensor t[2];
    fc_shape want[3];
    fc_decode_options d;
    fc_decode_target tg[2];
    uint8_t *c;
    size_t size, cnt, i;
    cr_buf b = {0};
    for (i = 0; i < 100; i++) lv[i] = (int32_t)(i % 5) - 2;
    t[0] = tu_tensor(0, 1, s60);
    t[1] = tu_tensor(1, 2, s100);
    for (i = 0; i < 2; i++) {
        t[i].levels = lv;
        t[i].step = 0.5;
    }
    TU_CHECK_RC(tu_encode(t, 2, NULL, &c, &size, NULL), FC_OK);
    memset(want, 0, sizeof want);
    want[0].ndim = 1;
    want[0].shape[0] = 60;
    want[1].ndim = 2;
    want[1].shape[0] = 10;
    want[1].shape[1] = 10;
    memset(tg, 0, sizeof tg);
    tg[0].levels = out[0];
    tg[1].levels = out[1];
    fc_decode_options_init(&d);
    TU_CHECK(d.expected == NULL && d.expected_count == 0);
    d.expected = want;
    d.expected_count = 2;
    TU_CHECK_RC(fc_inspect(c, size, &d, NULL, 0, &cnt), FC_OK);
    TU_CHECK_RC(fc_decode(c, size, &d, tg, 2), FC_OK);
    TU_CHECK(memcmp(out[1], lv, sizeof(int32_t) * 100) == 0);
    /* another count, ndim or size */
    d.expected_count = 1;
    TU_CHECK_RC(fc_inspect(c, size, &d, NULL, 0, &cnt), FC_ERR_MISMATCH);
    TU_CHECK_RC(fc_decode(c, size, &d, tg, 2), FC_ERR_MISMATCH);
    d.expected_count = 3;
    TU_CHECK_RC(fc_inspect(c, size, &d, NULL, 0, &cnt), FC_ERR_MISMATCH);
    d.expected_count = 2;
    want[1].shape[1] = 9;
    TU_CHECK_RC(fc_inspect(c, size, &d, NULL, 0, &cnt), FC_ERR_MISMATCH);
    TU_CHECK_RC(fc_decode(c, size, &d, tg, 2), FC_ERR_MISMATCH);
    want[1].shape[1] = 10;
    want[0].ndim = 2;
    want[0].shape[1] = 1;
    TU_CHECK_RC(fc_inspect(c, size, &d, NULL, 0, &cnt), FC_ERR_MISMATCH);
    want[0].ndim = 1;
    /* a bad description is an argument error */
    want[0].ndim = FC_MAX_DIMS + 1;
    TU_CHECK_RC(fc_inspect(c, size, &d, NULL, 0, &cnt), FC_ERR_INVALID_ARGUMENT);
    want[0].ndim = 1;
    d.expected = NULL;
    TU_CHECK_RC(fc_inspect(c, size, &d, NULL, 0, &cnt), FC_ERR_INVALID_ARGUMENT);
    /* an older caller's struct (without the field) gets no check */
    fc_decode_options_init(&d);
    d.struct_size = offsetof(fc_decode_options, expected);
    TU_CHECK_RC(fc_inspect(c, size, &d, NULL, 0, &cnt), FC_OK);
    free(c);
    /* 22 bytes claiming 2^30 zeros: refused as a mismatch before the limit */
    {
        uint64_t huge[2] = {(uint64_t)1 << 15, (uint64_t)1 << 15};
        cr_slice sl = {0, 0, 0, 0};
        cr_container(&b, 1);
        cr_tensor(&b, CR_INDEX_IMPLICIT, 0, 2, huge, 1.0f, 4, 0, 0, &sl);
        cr_seal(&b);
        fc_decode_options_init(&d);
        d.max_total_elems = (uint64_t)1 << 31;
        d.max_tensor_elems = (uint64_t)1 << 31;
        TU_CHECK_RC(fc_inspect(b.d, b.n, &d, NULL, 0, &cnt), FC_OK);
        TU_CHECK_EQ(cnt, 1);
        d.expected = want + 1;
        d.expected_count = 1;
        TU_CHECK_RC(fc_inspect(b.d, b.n, &d, NULL, 0, &cnt), FC_ERR_MISMATCH);
        TU_CHECK_RC(fc_decode(b.d, b.n, &d, tg, 1), FC_ERR_MISMATCH);
        cr_free(&b);
    }
}

/* ------------------------------------------------------------ accumulate */

static void test_accumulate(void)
{
    uint64_t shape[2] = {20, 50};
    const uint64_t n = 1000;
    int32_t *lv = (int32_t *)malloc(sizeof(int32_t) * n), *lv2 = (int32_t *)malloc(sizeof(int32_t) * n);
    float *acc32 = (float *)malloc(sizeof(float) * n), *acc32_0 = (float *)malloc(sizeof(float) * n);
    double *acc64 = (double *)malloc(sizeof(double) * n), *acc64_0 = (double *)malloc(sizeof(double) * n);
    tu_rng r = tu_seed(5);
    fc_tensor t[2];
    fc_decode_target tg[2];
    uint8_t *c;
    size_t size;
    const double w = -0.37;
    const float step = 0.0625f;
    uint64_t i;
    TU_CHECK(lv && lv2 && acc32 && acc32_0 && acc64 && acc64_0);
    gen_levels(lv, 20, 50, D_DENSE, &r);
    gen_levels(lv2, 20, 50, D_SPARSE, &r);
    for (i = 0; i < n; i++) {
        acc32[i] = acc32_0[i] = (float)tu_laplace(&r, 1.0);
        acc64[i] = acc64_0[i] = tu_laplace(&r, 1.0);
    }
    t[0] = tu_tensor(0, 2, shape);
    t[0].levels = lv;
    t[0].step = step;
    t[1] = tu_tensor(1, 2, shape);
    t[1].levels = lv2;
    t[1].step = step;
    TU_CHECK_RC(tu_encode(t, 2, NULL, &c, &size, NULL), FC_OK);
    memset(tg, 0, sizeof tg);
    tg[0].acc = acc32;
    tg[0].acc_dtype = FC_ACC_F32;
    tg[0].weight = w;
    tg[1].acc = acc64;
    tg[1].acc_dtype = FC_ACC_F64;
    tg[1].weight = w;
    TU_CHECK_RC(fc_decode(c, size, NULL, tg, 2), FC_OK);
    for (i = 0; i < n; i++) {
        /* acc += weight * (level * step): float32 product, accumulated in
         * double, rounded back for a float32 accumulator */
        double d0 = (double)((float)lv[i] * step), d1 = (double)((float)lv2[i] * step);
        float want32 = lv[i] ? (float)((double)acc32_0[i] + w * d0) : acc32_0[i];
        double want64 = lv2[i] ? acc64_0[i] + w * d1 : acc64_0[i];
        TU_CHECK(memcmp(&acc32[i], &want32, 4) == 0);
        TU_CHECK(acc64[i] == want64);
    }
    /* Twice: the sum of two. */
    TU_CHECK_RC(fc_decode(c, size, NULL, tg, 2), FC_OK);
    for (i = 0; i < n; i++) {
        double d1 = (double)((float)lv2[i] * step);
        double want64 = lv2[i] ? (acc64_0[i] + w * d1) + w * d1 : acc64_0[i];
        TU_CHECK(acc64[i] == want64);
    }

    /* A corrupt payload in the second tensor (empty payload, valid CRC):
     * the first tensor's accumulator must not move either. */
    {
        cr_layout L;
        cr_buf b = {0};
        size_t s1, p1, n1, after;
        uint64_t v;
        float keep32[1000];
        double keep64[1000];
        int32_t lvl_out[1000];
        TU_CHECK(cr_walk(c, size, &L));
        s1 = L.t[1].first_slice;
        p1 = L.slice_payload[s1];
        n1 = L.slice_size[s1];
        cr_bytes(&b, c, L.slice_sizepos[s1]);
        cr_u8(&b, 0);
        after = L.slice_sizepos[s1];
        TU_CHECK(cr_get_varint(c, size, &after, &v));
        cr_bytes(&b, c + after, p1 - after);
        cr_bytes(&b, c + p1 + n1, L.crc - p1 - n1);
        cr_seal(&b);
        memcpy(keep32, acc32, sizeof keep32);
        memcpy(keep64, acc64, sizeof keep64);
        TU_CHECK_RC(fc_decode(b.d, b.n, NULL, tg, 2), FC_ERR_CORRUPT);
        TU_CHECK(memcmp(keep32, acc32, sizeof keep32) == 0);
        TU_CHECK(memcmp(keep64, acc64, sizeof keep64) == 0);
        /* Without accumulators, a tensor whose targets are all NULL is
         * skipped (its payload is not decoded): the first one decodes. */
        memset(tg, 0, sizeof tg);
        tg[0].levels = lvl_out;
        TU_CHECK_RC(fc_decode(b.d, b.n, NULL, tg, 2), FC_OK);
        TU_CHECK(memcmp(lvl_out, lv, sizeof lvl_out) == 0);
        /* ...but any accumulator makes every payload be checked first. */
        tg[0].acc = acc32;
        tg[0].acc_dtype = FC_ACC_F32;
        tg[0].weight = 1.0;
        TU_CHECK_RC(fc_decode(b.d, b.n, NULL, tg, 2), FC_ERR_CORRUPT);
        TU_CHECK(memcmp(keep32, acc32, sizeof keep32) == 0);
        cr_free(&b);
    }
    free(c);
    free(lv);
    free(lv2);
    free(acc32);
    free(acc32_0);
    free(acc64);
    free(acc64_0);
}

/* Temporal side information: tensors coded with a reference tensor
 * (FORMAT.md §7.5) round-trip only with the same reference (by digest),
 * a correlated reference saves bytes, tensors without one are unchanged. */
static void test_reference(void)
{
    const uint64_t rows = 48, cols = 96, n = rows * cols;
    float *x = (float *)malloc(sizeof(float) * n), *ref = (float *)malloc(sizeof(float) * n);
    float *other = (float *)malloc(sizeof(float) * n), *same = (float *)malloc(sizeof(float) * n);
    float *recon = (float *)malloc(sizeof(float) * n), *vals = (float *)malloc(sizeof(float) * n);
    int32_t *lv = (int32_t *)malloc(sizeof(int32_t) * n), *dec = (int32_t *)malloc(sizeof(int32_t) * n);
    uint64_t shape[2] = {rows, cols}, k;
    unsigned quant, classctx_seen = 0;
    int mode;
    tu_rng r = tu_seed(31);
    TU_CHECK(x && ref && other && same && recon && vals && lv && dec);
    /* the previous round: sparse-ish Laplacian; this round correlated with it */
    for (k = 0; k < n; k++) {
        double prev = tu_laplace(&r, 1.0);
        ref[k] = (float)(fabs(prev) < 0.7 ? 0.0 : prev);
        x[k] = (float)(0.9 * ref[k] + 0.3 * tu_laplace(&r, 1.0));
        other[k] = -ref[k];
        /* the same classes (FORMAT.md §7.5) at step 0.5: a nudge well inside a class */
        same[k] = ref[k] * 1.0001f;
    }
    for (quant = FC_QUANT_UNIFORM; quant <= FC_QUANT_DITHER; quant++) {
        for (mode = FC_MODE_AUTO; mode <= FC_MODE_RUNS; mode++) {
            fc_tensor t[2];
            fc_encode_options o;
            fc_tensor_info info[2];
            fc_decode_target tg[2];
            size_t size, size0, cnt;
            uint8_t *c, *c0;
            uint32_t digest;
            fc_encode_options_init(&o);
            o.quantizer = (int32_t)quant;
            o.mode = mode;
            o.lambda = quant == FC_QUANT_DITHER ? 0.0 : 0.1155;
            o.dither_seed = 7;
            memset(t, 0, sizeof t);
            t[0] = tu_tensor(0, 2, shape);
            t[0].values = x;
            t[0].step = 0.5;
            t[0].recon = recon;
            t[1] = t[0]; /* the same data without reference */
            t[1].index = 1;
            t[1].recon = NULL;
            TU_CHECK_RC(tu_encode(&t[1], 1, &o, &c0, &size0, NULL), FC_OK);
            t[0].reference = ref;
            TU_CHECK_RC(tu_encode(t, 2, &o, &c, &size, NULL), FC_OK);
            /* inspect: the reference bit and its digest, tensor 1 without */
            TU_CHECK_RC(fc_inspect(c, size, NULL, info, 2, &cnt), FC_OK);
            TU_CHECK_EQ(cnt, 2);
            TU_CHECK_RC(fc_reference_digest(ref, n, info[0].step, &digest), FC_OK);
            TU_CHECK_EQ(info[0].reference, 1);
            TU_CHECK_EQ(info[0].reference_digest, digest);
            TU_CHECK_EQ(info[1].reference, 0);
            TU_CHECK_EQ(info[1].reference_digest, 0);
            /* CLASSCTX on the reference's classes (§7.7): dense slices of
             * uniform or dithered tensors only */
            {
                cr_layout L;
                size_t sl;
                TU_CHECK(cr_walk(c, size, &L));
                for (sl = L.t[0].first_slice; sl < L.t[1].first_slice; sl++) {
                    const uint8_t b = c[L.slice_modebyte[sl]];
                    if (!(b & 0x80u)) continue;
                    classctx_seen++;
                    TU_CHECK((b & 3u) == FC_MODE_DENSE);
                    TU_CHECK(quant == FC_QUANT_UNIFORM || quant == FC_QUANT_DITHER);
                }
            }
            /* a correlated reference saves bytes (tensor 1 alone costs size0 - 11) */
            TU_CHECKF(size - (size0 - 11) < size0 - 11 - 11, "quant %u mode %d: %zu B with, "
                      "%zu B without", quant, mode, size - (size0 - 11) - 11, size0 - 11);
            memset(tg, 0, sizeof tg);
            tg[0].levels = dec;
            tg[0].values = vals;
            tg[1].levels = lv;
            /* missing, different: refused before anything is written */
            TU_CHECK_RC(fc_decode(c, size, NULL, tg, 2), FC_ERR_MISMATCH);
            tg[0].reference = other;
            TU_CHECK_RC(fc_decode(c, size, NULL, tg, 2), FC_ERR_MISMATCH);
            /* the same classes decode alike; values equal the encoder's recon */
            tg[0].reference = same;
            TU_CHECK_RC(fc_decode(c, size, NULL, tg, 2), FC_OK);
            for (k = 0; k < n; k++) TU_CHECK(memcmp(&recon[k], &vals[k], 4) == 0);
            tg[0].reference = ref;
            TU_CHECK_RC(fc_decode(c, size, NULL, tg, 2), FC_OK);
            for (k = 0; k < n; k++) TU_CHECK(memcmp(&recon[k], &vals[k], 4) == 0);
            /* tensor 1: as without reference (a reference is ignored there) */
            tg[1].reference = ref;
            {
                fc_decode_target t1 = {0};
                TU_CHECK_RC(fc_decode(c, size, NULL, tg, 2), FC_OK);
                t1.levels = dec;
                TU_CHECK_RC(fc_decode(c0, size0, NULL, &t1, 1), FC_OK);
                TU_CHECK(memcmp(dec, lv, sizeof(int32_t) * n) == 0);
            }
            /* a skipped tensor needs no reference */
            tg[0].levels = NULL;
            tg[0].values = NULL;
            tg[0].reference = NULL;
            TU_CHECK_RC(fc_decode(c, size, NULL, tg, 2), FC_OK);
            /* every truncation of the digest field and after it is caught */
            {
                size_t len;
                for (len = 0; len < size; len++) {
                    int rc = decode_hostile(c, len);
                    TU_CHECK(rc == FC_ERR_TRUNCATED || rc == FC_ERR_CHECKSUM || rc == FC_ERR_VERSION ||
                             rc == FC_ERR_MISMATCH);
                }
            }
            free(c);
            free(c0);
        }
    }
    (void)classctx_seen; /* (small: the extended contexts seldom pay here; test_reference_classctx) */
    free(x);
    free(ref);
    free(other);
    free(same);
    free(recon);
    free(vals);
    free(lv);
    free(dec);
}

/* The reference is used where it pays (fc_encode_options.reference): a
 * tensor given a reference is also coded without it (in every orientation)
 * and the better coding is kept, by size when the levels are the same
 * (integer levels, rounding), else by distortion / step^2 + lambda * bits.
 * The container of one tensor is then byte for byte either the one coded
 * with FC_REFERENCE_ALWAYS or the one coded without reference, whichever is
 * better; a correlated reference is kept, an unrelated one on low-rank
 * data (where the PREDICT slices pay) and on a matrix with empty columns
 * (transposed) is dropped; the reconstruction is that of the kept coding;
 * a reference passed to the decoder for a tensor coded without is ignored. */
static void test_reference_choice(void)
{
    const uint64_t rows = 64, cols = 80, n = rows * cols;
    uint64_t shape[2] = {rows, cols}, k;
    float *x = (float *)malloc(sizeof(float) * n), *ref = (float *)malloc(sizeof(float) * n);
    float *recon = (float *)malloc(sizeof(float) * n), *vals = (float *)malloc(sizeof(float) * n);
    int32_t *lv = (int32_t *)malloc(sizeof(int32_t) * n), *dec = (int32_t *)malloc(sizeof(int32_t) * n);
    int data, quant, used[2][2] = {{0, 0}, {0, 0}};
    TU_CHECK(x && ref && recon && vals && lv && dec);
    for (data = 0; data < 3; data++) {
        tu_rng r = tu_seed(70 + (unsigned)data);
        /* 0: correlated with its reference; 1: low rank, unrelated reference;
         * 2: every other column empty, unrelated reference */
        if (data == 0) {
            for (k = 0; k < n; k++) {
                double prev = tu_laplace(&r, 1.0);
                ref[k] = (float)(fabs(prev) < 0.7 ? 0.0 : prev);
                x[k] = (float)(0.9 * ref[k] + 0.3 * tu_laplace(&r, 1.0));
            }
        } else {
            tu_fill_lowrank(&r, x, (size_t)rows, (size_t)cols, 2, 1.0);
            for (k = 0; k < n; k++) {
                ref[k] = (float)tu_laplace(&r, 1.0);
                if (data == 2 && (k % cols) % 2) x[k] = 0.0f;
            }
        }
        for (k = 0; k < n; k++) lv[k] = (int32_t)lrint(x[k] * 2.0f);
        for (quant = -1; quant <= FC_QUANT_TRELLIS8; quant++) {
            fc_tensor t = tu_tensor(0, 2, shape);
            fc_encode_options o;
            fc_tensor_stats st_auto, st_with, st_none;
            fc_tensor_info info;
            fc_decode_target tg;
            uint8_t *c_auto, *c_with, *c_none;
            size_t s_auto, s_with, s_none, cnt;
            double lambda, j_with, j_none;
            int want_ref;
            opts(&o, FC_MODE_AUTO, 4, 0);
            o.transpose = FC_TRANSPOSE_AUTO;
            if (quant < 0) { /* integer levels */
                t.levels = lv;
                t.step = 0.5;
            } else {
                t.values = x;
                t.step = 0.5;
                t.recon = recon;
                o.quantizer = quant;
                o.lambda = quant == FC_QUANT_UNIFORM && data == 1 ? 0.0 : 0.1155;
            }
            TU_CHECK_RC(tu_encode(&t, 1, &o, &c_none, &s_none, &st_none), FC_OK);
            t.reference = ref;
            o.reference = FC_REFERENCE_ALWAYS;
            TU_CHECK_RC(tu_encode(&t, 1, &o, &c_with, &s_with, &st_with), FC_OK);
            TU_CHECK_RC(fc_inspect(c_with, s_with, NULL, &info, 1, &cnt), FC_OK);
            TU_CHECK_EQ(info.reference, 1);
            o.reference = FC_REFERENCE_AUTO;
            TU_CHECK_RC(tu_encode(&t, 1, &o, &c_auto, &s_auto, &st_auto), FC_OK);
            /* the choice: by size, or by J with the quantizer's lambda */
            lambda = quant < 0 || o.lambda == 0.0 ? 0.0
                     : quant >= FC_QUANT_TRELLIS ? FC_DQ_LAMBDA_SCALE * o.lambda : o.lambda;
            j_with = st_with.sq_error / 0.25 + lambda * 8.0 * (double)s_with;
            j_none = st_none.sq_error / 0.25 + lambda * 8.0 * (double)s_none;
            want_ref = lambda > 0.0 ? j_with < j_none : s_with < s_none;
            TU_CHECKF(want_ref ? s_auto == s_with && memcmp(c_auto, c_with, s_auto) == 0
                               : s_auto == s_none && memcmp(c_auto, c_none, s_auto) == 0,
                      "data %d quant %d: auto %zu B, with %zu B (J %.1f), without %zu B (J %.1f)",
                      data, quant, s_auto, s_with, j_with, s_none, j_none);
            TU_CHECK_RC(fc_inspect(c_auto, s_auto, NULL, &info, 1, &cnt), FC_OK);
            TU_CHECK_EQ(info.reference, (uint32_t)want_ref);
            TU_CHECK(st_auto.bytes == (want_ref ? st_with.bytes : st_none.bytes));
            /* the expected outcome per data set */
            TU_CHECKF(want_ref == (data == 0), "data %d quant %d: reference %d", data, quant, want_ref);
            used[data == 0][want_ref] = 1;
            /* decode: with the reference always; without only when unused;
             * the values are the kept coding's reconstruction */
            memset(&tg, 0, sizeof tg);
            tg.levels = dec;
            tg.values = vals;
            tg.reference = ref;
            TU_CHECK_RC(fc_decode(c_auto, s_auto, NULL, &tg, 1), FC_OK);
            if (t.recon)
                for (k = 0; k < n; k++) TU_CHECK(memcmp(&recon[k], &vals[k], 4) == 0);
            else
                TU_CHECK(memcmp(dec, lv, sizeof(int32_t) * n) == 0);
            tg.reference = NULL;
            TU_CHECK_RC(fc_decode(c_auto, s_auto, NULL, &tg, 1), want_ref ? FC_ERR_MISMATCH : FC_OK);
            free(c_auto);
            free(c_with);
            free(c_none);
        }
    }
    TU_CHECK(used[1][1] && used[0][0]);
    {
        /* an unknown choice is refused */
        fc_tensor t = tu_tensor(0, 2, shape);
        fc_encode_options o;
        uint8_t *c;
        size_t s;
        opts(&o, FC_MODE_AUTO, 4, 0);
        t.values = x;
        t.reference = ref;
        o.reference = 2;
        TU_CHECK_RC(tu_encode(&t, 1, &o, &c, &s, NULL), FC_ERR_INVALID_ARGUMENT);
    }
    free(x);
    free(ref);
    free(recon);
    free(vals);
    free(lv);
    free(dec);
}

/* PREDICT slices (FORMAT.md §7.6): low-rank levels, RD-quantized floats and
 * trellis floats (4 and 8 states: the predictor sees the coded levels)
 * round trip (decode = levels = recon) for widths that are and are not
 * multiples of the predictor's lanes, the encoder picks the predictor on
 * them, and the bytes do not depend on the thread count. */
static void test_predict(void)
{
    static const uint64_t shapes[4][2] = {{64, 80}, {19, 37}, {16, 16}, {40, 203}};
    size_t si;
    for (si = 0; si < 4; si++) {
        const uint64_t rows = shapes[si][0], cols = shapes[si][1], n = rows * cols;
        float *v = (float *)malloc(sizeof(float) * n), *recon = (float *)malloc(sizeof(float) * n);
        int32_t *lv = (int32_t *)malloc(sizeof(int32_t) * n);
        tu_rng r = tu_seed(40 + si);
        fc_tensor t;
        fc_encode_options o;
        cr_layout L;
        uint8_t *c, *c3;
        size_t size, size3;
        uint64_t k;
        int pass;
        TU_CHECK(v && recon && lv);
        tu_fill_lowrank(&r, v, (size_t)rows, (size_t)cols, 1 + si % 3, 1.0);
        for (k = 0; k < n; k++) lv[k] = (int32_t)lrint(v[k] * 1.5f);
        for (pass = 0; pass < 4; pass++) {
            t = tu_tensor(0, 2, shapes[si]);
            opts(&o, FC_MODE_AUTO, 4, 0);
            if (pass == 0) {
                t.levels = lv;
                t.step = 0.25;
            } else {
                t.values = v;
                t.recon = recon;
                o.lambda = 0.1155;
                o.S = 16;
                o.quantizer = pass == 1 ? FC_QUANT_UNIFORM
                                        : (pass == 2 ? FC_QUANT_TRELLIS : FC_QUANT_TRELLIS8);
            }
            c = roundtrip(&t, 1, &o, &size);
            TU_CHECK(cr_walk(c, size, &L));
            /* dense low-rank slices: the predictor pays (not always on the
             * smallest shape it is tried on, 16 x 16) */
            TU_CHECKF(n < 512 || ((c[L.slice_modebyte[L.t[0].first_slice]] >> 2) & FC_SLICE_PREDICT),
                      "shape %zu pass %d: no PREDICT slice", si, pass);
            free(c);
            /* several slices: the same bytes with 1 and 3 threads */
            o.slice_elems = 1024;
            c = roundtrip(&t, 1, &o, &size);
            o.threads = 3;
            c3 = roundtrip(&t, 1, &o, &size3);
            TU_CHECK(size == size3 && memcmp(c, c3, size) == 0);
            free(c3);
            free(c);
        }
        free(v);
        free(recon);
        free(lv);
    }
}

/* REFROWS trial (FORMAT.md §10): a dense slice of mostly empty rows is
 * also coded without reference rows.  Tokens of an embedding table in no
 * order (i.i.d. rows) lose the reference rows; rows that repeat sparse
 * patterns of rows far above keep them.  Both round trip, for levels and
 * RDOQ floats. */
static void test_refrows_trial(void)
{
    static const uint64_t shape[2] = {600, 96};
    const uint64_t n = 600 * 96;
    int32_t *lv = (int32_t *)calloc((size_t)n, sizeof(int32_t));
    float *v = (float *)calloc((size_t)n, sizeof(float));
    int kind;
    TU_CHECK(lv && v);
    for (kind = 0; kind < 2; kind++) {
        tu_rng r = tu_seed(70 + (unsigned)kind);
        uint64_t i, c;
        fc_tensor t;
        fc_encode_options o;
        cr_layout L;
        uint8_t *cont;
        size_t size;
        unsigned k;
        int pass;
        memset(lv, 0, sizeof(int32_t) * (size_t)n);
        for (i = 0; i < 600; i++) {
            if (tu_below(&r, 5) != 0) continue; /* ~80 % empty rows */
            for (c = 0; c < 96; c++) {
                /* kind 1: one of 3 sparse column patterns (a row like one
                 * 5..40 rows above); kind 0: i.i.d. */
                int on = kind ? (c * 7 + (i % 3) * 11) % 13 < 3 : tu_below(&r, 2) == 0;
                if (on) lv[i * 96 + c] = (int32_t)(tu_below(&r, 2) ? 1 : -1) * (int32_t)(1 + tu_below(&r, 4));
            }
        }
        for (i = 0; i < n; i++) v[i] = lv[i] ? (float)lv[i] * 0.5f + (float)tu_laplace(&r, 0.05) : 0.0f;
        for (pass = 0; pass < 2; pass++) {
            t = tu_tensor(0, 2, shape);
            opts(&o, FC_MODE_AUTO, 4, 0);
            if (pass == 0) {
                t.levels = lv;
                t.step = 0.5;
            } else {
                t.values = v;
                t.step = 0.5;
                o.lambda = 0.1155;
            }
            cont = roundtrip(&t, 1, &o, &size);
            TU_CHECK(cr_walk(cont, size, &L));
            k = cont[L.slice_modebyte[L.t[0].first_slice]] >> 2;
            TU_CHECKF((cont[L.slice_modebyte[L.t[0].first_slice]] & 3u) == FC_MODE_DENSE, "kind %d pass %d: mode byte 0x%02x, %zu slices", kind, pass, cont[L.slice_modebyte[L.t[0].first_slice]], (size_t)L.nslices);
            TU_CHECKF(((k & FC_SLICE_REFROWS) != 0) == (kind == 1), "kind %d pass %d: k = %u", kind,
                      pass, k);
            free(cont);
        }
    }
    free(lv);
    free(v);
}

/* A larger update with a correlated reference: the CLASSCTX trial (§7.7 on
 * the reference's classes) pays, for levels and RDOQ floats, and the
 * container decodes to the encoder's reconstruction. */
static void test_reference_classctx(void)
{
    const uint64_t rows = 256, cols = 128, n = rows * cols;
    uint64_t shape[2] = {rows, cols}, k;
    float *x = (float *)malloc(sizeof(float) * n), *ref = (float *)malloc(sizeof(float) * n);
    float *recon = (float *)malloc(sizeof(float) * n), *vals = (float *)malloc(sizeof(float) * n);
    int32_t *lv = (int32_t *)malloc(sizeof(int32_t) * n), *dec = (int32_t *)malloc(sizeof(int32_t) * n);
    tu_rng r = tu_seed(77);
    int pass;
    TU_CHECK(x && ref && recon && vals && lv && dec);
    for (k = 0; k < n; k++) {
        double prev = tu_laplace(&r, 2.0);
        ref[k] = (float)prev;
        x[k] = (float)(0.8 * prev + 0.6 * tu_laplace(&r, 1.0));
        lv[k] = (int32_t)lrint(x[k] * 2.0f);
    }
    for (pass = 0; pass < 2; pass++) {
        fc_tensor t = tu_tensor(0, 2, shape);
        fc_encode_options o;
        fc_decode_target tg;
        cr_layout L;
        uint8_t *c;
        size_t size, sl, seen = 0;
        opts(&o, FC_MODE_AUTO, 4, 0);
        t.step = 0.5;
        t.reference = ref;
        if (pass == 0) {
            t.levels = lv;
        } else {
            t.values = x;
            t.recon = recon;
            o.lambda = 0.1155;
        }
        TU_CHECK_RC(tu_encode(&t, 1, &o, &c, &size, NULL), FC_OK);
        TU_CHECK(cr_walk(c, size, &L));
        for (sl = 0; sl < L.t[0].nslices; sl++) seen += (c[L.slice_modebyte[sl]] & 0x80u) != 0;
        TU_CHECKF(seen > 0, "pass %d: no CLASSCTX slice", pass);
        memset(&tg, 0, sizeof tg);
        tg.levels = dec;
        tg.values = vals;
        tg.reference = ref;
        TU_CHECK_RC(fc_decode(c, size, NULL, &tg, 1), FC_OK);
        if (pass == 0)
            TU_CHECK(memcmp(dec, lv, sizeof(int32_t) * n) == 0);
        else
            for (k = 0; k < n; k++) TU_CHECK(memcmp(&recon[k], &vals[k], 4) == 0);
        free(c);
    }
    free(x);
    free(ref);
    free(recon);
    free(vals);
    free(lv);
    free(dec);
}

/* Compact containers (fc_encode_options.compact, FORMAT.md §2-3): shapes
 * from the caller with a digest, omitted all-zero tensors, short steps. */
static uint32_t compact_digest(const fc_shape *w, size_t n)
{
    /* independently of the library: CRC-32 of varint(n), then per shape
     * varint(ndim) and its sizes */
    cr_buf b = {0};
    size_t i, k;
    uint32_t crc;
    cr_varint(&b, n);
    for (i = 0; i < n; i++) {
        cr_varint(&b, w[i].ndim);
        for (k = 0; k < w[i].ndim; k++) cr_varint(&b, w[i].shape[k]);
    }
    crc = cr_crc32(b.d, b.n);
    cr_free(&b);
    return crc;
}

static void test_compact(void)
{
    uint64_t s0[2] = {6, 5}, s1[1] = {7}, s2[3] = {2, 3, 4}, s3[1] = {9};
    const uint64_t *shapes[4] = {s0, s1, s2, s3};
    const uint32_t ndims[4] = {2, 1, 3, 1};
    /* steps: a 1-byte code, float32 (an omitted tensor's), bfloat16, a 1-byte code */
    const double steps[4] = {0.375, 0.1, 0x1.02p-30, 0x1.8p-27};
    int32_t lv[4][30], out[4][30];
    float vals[4][30];
    fc_tensor t[4];
    fc_shape want[4];
    fc_encode_options eo;
    fc_decode_options d;
    fc_decode_target tg[4];
    fc_tensor_info info[4];
    fc_tensor_stats st[4];
    uint8_t *c, *plain, *g, *joined, **parts;
    size_t size, plain_size, cnt, i, k, *psizes, nparts, jsize, bad;
    tu_rng r = tu_seed(77);
    memset(t, 0, sizeof t);
    memset(want, 0, sizeof want);
    memset(lv, 0, sizeof lv);
    for (i = 0; i < 4; i++) {
        uint64_t n = 1;
        t[i] = tu_tensor((uint32_t)i, ndims[i], shapes[i]);
        want[i].ndim = ndims[i];
        for (k = 0; k < ndims[i]; k++) {
            want[i].shape[k] = shapes[i][k];
            n *= shapes[i][k];
        }
        for (k = 0; k < n; k++) lv[i][k] = i == 1 ? 0 : (int32_t)tu_below(&r, 7) - 3;
        t[i].levels = lv[i];
        t[i].step = steps[i];
    }
    fc_encode_options_init(&eo);
    TU_CHECK_EQ(eo.compact, 0);
    TU_CHECK_RC(tu_encode(t, 4, &eo, &plain, &plain_size, NULL), FC_OK);
    eo.compact = 1;
    TU_CHECK_RC(tu_encode(t, 4, &eo, &c, &size, st), FC_OK);
    /* header: flags bit 1, the digest, 3 coded tensors (tensor 1 is zero) */
    TU_CHECK_EQ(c[5], 2);
    TU_CHECK_EQ((uint32_t)c[6] | (uint32_t)c[7] << 8 | (uint32_t)c[8] << 16 | (uint32_t)c[9] << 24,
                compact_digest(want, 4));
    TU_CHECK_EQ(c[10], 3);
    TU_CHECK_EQ(st[1].bytes, 0);
    /* shapes (6 B), tensor 1's header (8 B) and steps (3 + 2 + 3 B) saved, a
     * digest (4 B) and tensor 2's explicit index (1 B) added */
    TU_CHECK_EQ(size + 6 + 8 + 3 + 2 + 3 - 4 - 1, plain_size);
    /* the step forms: tensor 0 a code, tensor 2 (index explicit) bfloat16, tensor 3 a code */
    TU_CHECK_EQ(c[11], 0x40u | 0x10u | 1u);
    TU_CHECK_EQ(c[12], ((125u - 100u) << 3) | 4u); /* 0.375 = 1.5 * 2^-2 */
    g = tu_guarded_copy(c, size);
    fc_decode_options_init(&d);
    /* without the shapes, with others, with another count: a mismatch */
    TU_CHECK_RC(fc_inspect(g, size, &d, NULL, 0, &cnt), FC_ERR_MISMATCH);
    d.expected = want;
    d.expected_count = 3;
    TU_CHECK_RC(fc_inspect(g, size, &d, NULL, 0, &cnt), FC_ERR_MISMATCH);
    d.expected_count = 4;
    want[2].shape[2] = 5;
    TU_CHECK_RC(fc_inspect(g, size, &d, NULL, 0, &cnt), FC_ERR_MISMATCH);
    want[2].shape[2] = 4;
    TU_CHECK_RC(fc_inspect(g, size, &d, info, 4, &cnt), FC_OK);
    TU_CHECK_EQ(cnt, 4);
    for (i = 0; i < 4; i++) {
        TU_CHECK_EQ(info[i].index, i);
        TU_CHECK_EQ(info[i].ndim, ndims[i]);
        TU_CHECK(info[i].step == (i == 1 ? 1.0 : (double)(float)steps[i]));
        TU_CHECK_EQ(info[i].slices, i == 1 ? 0u : st[i].slices);
    }
    memset(tg, 0, sizeof tg);
    memset(out, 0x55, sizeof out);
    for (i = 0; i < 4; i++) {
        tg[i].levels = out[i];
        tg[i].values = vals[i];
    }
    TU_CHECK_RC(fc_decode(g, size, &d, tg, 3), FC_ERR_MISMATCH);
    TU_CHECK_RC(fc_decode(g, size, &d, tg, 4), FC_OK);
    for (i = 0; i < 4; i++) {
        TU_CHECK(memcmp(out[i], lv[i], sizeof(int32_t) * (size_t)info[i].numel) == 0);
        for (k = 0; k < info[i].numel; k++) TU_CHECK(vals[i][k] == (float)lv[i][k] * (float)steps[i]);
    }
    /* split: one part per tensor (none coded in tensor 1's), joined back byte for byte */
    TU_CHECK_RC(tu_split(g, size, &d, &parts, &psizes, &nparts), FC_OK);
    TU_CHECK_EQ(nparts, 4);
    TU_CHECK_EQ(psizes[1], 15);
    TU_CHECK_RC(tu_join(parts, psizes, nparts, &d, &joined, &jsize, &bad), FC_OK);
    TU_CHECK(jsize == size && memcmp(joined, c, size) == 0);
    tu_guarded_free(joined);
    /* compact parts need the shapes; they do not mix with self-describing ones */
    {
        fc_decode_options none;
        uint8_t *mixed[2];
        size_t msizes[2];
        fc_decode_options_init(&none);
        TU_CHECK_RC(tu_join(parts, psizes, nparts, &none, &joined, &jsize, &bad), FC_ERR_MISMATCH);
        TU_CHECK_EQ(bad, 0);
        mixed[0] = parts[0];
        msizes[0] = psizes[0];
        mixed[1] = tu_guarded_copy(plain, plain_size);
        msizes[1] = plain_size;
        TU_CHECK_RC(tu_join(mixed, msizes, 2, &d, &joined, &jsize, &bad), FC_ERR_MISMATCH);
        TU_CHECK_EQ(bad, 1);
        tu_guarded_free(mixed[1]);
    }
    tu_free_parts(parts, psizes, nparts);
    /* fc_convert: self-describing -> compact is what the encoder writes; back decodes alike */
    {
        size_t need = 0, n2 = 0, cap = size + FC_CONVERT_OVERHEAD * 4 + 16;
        uint8_t *conv = (uint8_t *)malloc(cap), *back = (uint8_t *)malloc(cap);
        fc_decode_options none;
        int32_t out2[4][30];
        fc_decode_target tg2[4];
        fc_decode_options_init(&none);
        TU_CHECK(conv && back);
        TU_CHECK_RC(fc_convert(plain, plain_size, &none, 1, conv, 4, &need), FC_ERR_BUFFER_TOO_SMALL);
        TU_CHECK_EQ(need, size);
        TU_CHECK_RC(fc_convert(plain, plain_size, &none, 1, conv, cap, &need), FC_OK);
        TU_CHECK(need == size && memcmp(conv, c, size) == 0);
        TU_CHECK_RC(fc_convert(g, size, &none, 0, back, cap, &n2), FC_ERR_MISMATCH);
        TU_CHECK_RC(fc_convert(g, size, &d, 2, back, cap, &n2), FC_ERR_INVALID_ARGUMENT);
        TU_CHECK_RC(fc_convert(g, size, &d, 0, back, cap, &n2), FC_OK);
        memset(tg2, 0, sizeof tg2);
        for (i = 0; i < 4; i++) tg2[i].levels = out2[i];
        TU_CHECK_RC(fc_decode(back, n2, &none, tg2, 4), FC_OK);
        for (i = 0; i < 4; i++)
            TU_CHECK(memcmp(out2[i], lv[i], sizeof(int32_t) * (size_t)info[i].numel) == 0);
        /* compact -> compact is the same container */
        TU_CHECK_RC(fc_convert(g, size, &d, 1, conv, cap, &need), FC_OK);
        TU_CHECK(need == size && memcmp(conv, c, size) == 0);
        free(conv);
        free(back);
    }
    tu_guarded_free(g);
    /* an all-zero update: header, digest, count 0, CRC */
    for (i = 0; i < 4; i++) t[i].levels = lv[1];
    free(c);
    TU_CHECK_RC(tu_encode(t, 4, &eo, &c, &size, NULL), FC_OK);
    TU_CHECK_EQ(size, 15);
    g = tu_guarded_copy(c, size);
    TU_CHECK_RC(fc_decode(g, size, &d, tg, 4), FC_OK);
    for (i = 0; i < 4; i++)
        for (k = 0; k < info[i].numel; k++) TU_CHECK(out[i][k] == 0 && vals[i][k] == 0.0f);
    tu_guarded_free(g);
    free(c);
    /* compact needs index = position */
    t[2].index = 3;
    t[3].index = 4;
    TU_CHECK_RC(tu_encode(t, 4, &eo, &c, &size, NULL), FC_ERR_INVALID_ARGUMENT);
    t[2].index = 2;
    t[3].index = 3;
    eo.compact = 2;
    TU_CHECK_RC(tu_encode(t, 4, &eo, &c, &size, NULL), FC_ERR_INVALID_ARGUMENT);
    /* crafted compact headers (valid CRC) */
    {
        static const struct {
            unsigned desc;
            unsigned index;
            int extra; /* bytes of the step */
            int want;
        } cases[] = {
            {0x10u | 0x40u | 3u, 0, 0, FC_ERR_CORRUPT},          /* step form 3 */
            {0x10u | 0x40u | 4u, 0, 4, FC_ERR_CORRUPT},          /* bit 2 */
            {0x10u | 0x40u | 0x80u | 1u, 0, 0, FC_ERR_CORRUPT}, /* repeat with a form */
            {0x10u, 4, 4, FC_ERR_CORRUPT},                       /* index >= count */
            {0x10u | 0x40u | 1u, 0, 1, FC_OK},                   /* a 1-byte step */
            {0x10u | 0x40u | 2u, 0, 2, FC_OK},                   /* bfloat16 */
            {0x10u | 0x40u | 2u, 0, -2, FC_ERR_CORRUPT},         /* bfloat16 zero step */
        };
        uint32_t dg = compact_digest(want, 4);
        for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            cr_buf b = {0};
            cr_bytes(&b, "FCDC", 4);
            cr_u8(&b, 1);
            cr_u8(&b, 2);
            cr_le32(&b, dg);
            cr_varint(&b, 1);
            cr_u8(&b, cases[i].desc);
            if (!(cases[i].desc & 0x40u)) cr_varint(&b, cases[i].index);
            if (cases[i].extra == 1) cr_u8(&b, 0x77);
            if (cases[i].extra == 2) cr_le32(&b, 0x3F80u), b.n -= 2;
            if (cases[i].extra == -2) cr_u8(&b, 0), cr_u8(&b, 0);
            if (cases[i].extra == 4) cr_f32(&b, 0.5f);
            cr_u8(&b, 4);  /* N = 4 */
            cr_varint(&b, 0);
            cr_seal(&b);
            g = tu_guarded_copy(b.d, b.n);
            TU_CHECK_RC(fc_inspect(g, b.n, &d, info, 4, &cnt), cases[i].want);
            if (cases[i].want == FC_OK && cases[i].extra == 1)
                TU_CHECK(info[0].step == ldexp(1.0 + 7.0 / 8.0, (0x77 >> 3) - 27));
            if (cases[i].want == FC_OK && cases[i].extra == 2) TU_CHECK(info[0].step == 1.0);
            tu_guarded_free(g);
            cr_free(&b);
        }
    }
    free(c);
    free(plain);
}

/* The short code of tiny tensors (FORMAT.md §6.6): compact containers only,
 * where smaller; the same levels, values and accumulation; malformed short
 * tensors are corrupt. */
static int decode_short(const uint8_t *c, size_t size, int32_t *lv, float *vals, double *acc)
{
    uint8_t *g = tu_guarded_copy(c, size);
    uint64_t s8[1] = {8};
    fc_shape want;
    fc_decode_options d;
    fc_decode_target tg;
    int rc;
    memset(&want, 0, sizeof want);
    want.ndim = 1;
    want.shape[0] = s8[0];
    fc_decode_options_init(&d);
    d.expected = &want;
    d.expected_count = 1;
    memset(&tg, 0, sizeof tg);
    tg.levels = lv;
    tg.values = vals;
    tg.acc = acc;
    tg.acc_dtype = acc ? FC_ACC_F64 : FC_ACC_NONE;
    tg.weight = 0.5;
    rc = fc_decode(g, size, &d, &tg, 1);
    tu_guarded_free(g);
    return rc;
}

static void test_short_code(void)
{
    int32_t lv[8] = {300, -250, 0, -380, 290, 310, -305, 270}, out[8];
    uint64_t s8[1] = {8};
    float vals[8];
    double acc[8];
    fc_tensor t = tu_tensor(0, 1, s8);
    fc_encode_options eo;
    uint8_t *c, *plain, *m;
    size_t size, plain_size, i;
    t.levels = lv;
    t.step = 0.375;
    fc_encode_options_init(&eo);
    TU_CHECK_RC(tu_encode(&t, 1, &eo, &plain, &plain_size, NULL), FC_OK);
    eo.compact = 1;
    TU_CHECK_RC(tu_encode(&t, 1, &eo, &c, &size, NULL), FC_OK);
    /* magic, version, flags, digest, count; desc (step code), step, params with
     * the quantizer byte, SHORT, one slice: mode byte (k), size, payload */
    TU_CHECK_EQ(c[11], 0x40u | 0x10u | 1u);
    TU_CHECK_EQ(c[13] & 0x80u, 0x80u);
    TU_CHECK_EQ(c[14], 0x20u);
    TU_CHECK_EQ(c[15], 1);
    TU_CHECK_EQ(c[16] & 3u, 0);
    /* zero bit, sign, Exp-Golomb of |v| - 1 at order k: 7 nonzero, 1 zero level */
    TU_CHECK_EQ(c[17], size - 18 - 4);
    TU_CHECK(size < plain_size + 4 - 1); /* smaller than the digest alone would make it */
    memset(acc, 0, sizeof acc);
    TU_CHECK_RC(decode_short(c, size, out, vals, acc), FC_OK);
    for (i = 0; i < 8; i++) {
        TU_CHECK_EQ(out[i], lv[i]);
        TU_CHECK(vals[i] == (float)lv[i] * 0.375f);
        TU_CHECK(acc[i] == 0.5 * (double)vals[i]);
    }
    /* split, join and convert keep it */
    {
        fc_shape want;
        fc_decode_options d;
        uint8_t buf[256];
        size_t n = 0;
        memset(&want, 0, sizeof want);
        want.ndim = 1;
        want.shape[0] = 8;
        fc_decode_options_init(&d);
        d.expected = &want;
        d.expected_count = 1;
        TU_CHECK_RC(fc_convert(c, size, &d, 0, buf, sizeof buf, &n), FC_OK);
        TU_CHECK(n == size - 4 + 1 + 3); /* no digest; the shape; a 4-byte step */
        TU_CHECK_RC(fc_decode(buf, n, NULL, NULL, 0), FC_ERR_MISMATCH);
    }
    /* malformed: each edit with a valid CRC */
    m = (uint8_t *)malloc(size + 1);
    TU_CHECK(m != NULL);
    {
        static const struct {
            size_t at;
            unsigned value;
        } edits[] = {
            {14, 0x21u}, /* SHORT with the trellis */
            {14, 0x24u}, /* SHORT transposed (a 1-d tensor: corrupt anyway) */
            {14, 0x28u}, /* SHORT with a reference */
            {16, 0x01u}, /* mode 1 */
            {16, 30u << 2}, /* order 30 */
            {16, 0x80u}, /* bit 7 */
        };
        for (i = 0; i < sizeof edits / sizeof edits[0]; i++) {
            memcpy(m, c, size);
            m[edits[i].at] = (uint8_t)edits[i].value;
            cr_reseal(m, size);
            TU_CHECKF(decode_short(m, size, out, vals, NULL) == FC_ERR_CORRUPT, "edit %zu", i);
        }
        /* a padding bit set in the last byte, when there is padding */
        memcpy(m, c, size);
        if (m[size - 5] & 1u) {
            m[size - 5] = (uint8_t)(m[size - 5] & ~1u); /* changes a coded bit: still a check */
        } else {
            m[size - 5] |= 1u;
        }
        cr_reseal(m, size);
        TU_CHECK(decode_short(m, size, out, vals, NULL) != FC_OK ||
                 memcmp(out, lv, sizeof lv) != 0);
        /* one payload byte less (the table says so), one more */
        memcpy(m, c, size - 4);
        m[17] = (uint8_t)(m[17] - 1);
        {
            size_t n = size - 1;
            uint8_t *t2 = (uint8_t *)malloc(n);
            memcpy(t2, m, n - 4);
            cr_reseal(t2, n);
            TU_CHECK_EQ(decode_short(t2, n, out, vals, NULL), FC_ERR_CORRUPT);
            free(t2);
        }
        {
            size_t n = size + 1;
            uint8_t *t2 = (uint8_t *)malloc(n);
            memcpy(t2, c, size - 4);
            t2[17] = (uint8_t)(c[17] + 1);
            t2[size - 4] = 0;
            cr_reseal(t2, n);
            TU_CHECK_EQ(decode_short(t2, n, out, vals, NULL), FC_ERR_CORRUPT);
            free(t2);
        }
    }
    free(m);
    free(c);
    free(plain);
}

int main(void)
{
    test_names();
    test_shapes();
    test_values();
    test_params();
    test_window_auto();
    test_transpose();
    test_swap();
    test_rowkind();
    test_multi();
    test_bound_and_capacity();
    test_encode_errors();
    test_truncation();
    test_bit_flips();
    test_garbage();
    test_mutations();
    test_crafted_headers();
    test_crafted_limits();
    test_crafted_payloads();
    test_limits();
    test_expected_shapes();
    test_compact();
    test_short_code();
    test_accumulate();
    test_reference();
    test_reference_classctx();
    test_reference_choice();
    test_predict();
    test_refrows_trial();
    return tu_finish("test_container");
}
