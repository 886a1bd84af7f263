/*
 * test_quant_modes.c - the trellis (dependent) and dithered quantizers.
 *
 *   1. round trips: every mode, slicing and thread count; the decoder's
 *      values equal the encoder's recon bit for bit; trellis levels decode
 *      to reconstruction indices (value = index * step), dithered levels to
 *      value = level * step - fc_dither(); accumulators see every element
 *      of a dithered tensor;
 *   2. the trellis never turns an exact zero into a nonzero;
 *   3. the RD property of the search (see rd_property below for exactly
 *      what is compared);
 *   4. the dither: exact odd multiples of 2^-25 of the step in (-1/2, 1/2),
 *      independent of the thread count and the slicing, an error within
 *      half a step and without bias;
 *   5. the format: the quantizer byte and the container seed, and what a
 *      decoder rejects;
 *   6. options: dither with lambda > 0 or an unknown quantizer is refused,
 *      integer levels stay uniform, an options struct from an older header
 *      (no quantizer fields) encodes uniformly.
 */
#include "test_util.h"

#include "craft.h"
#include "quant.h"
#include "slice.h"

#define ROWS 48
#define COLS 96
#define N (ROWS * COLS)

static void fill(float *v, size_t n, uint64_t seed, size_t keep)
{
    tu_rng r = tu_seed(seed);
    tu_fill_laplace(&r, v, n, 0.01);
    if (keep) tu_topk(v, n, keep);
}

/* Encode one tensor with `o`; decode into levels, values and two
 * accumulators; check everything that must hold. */
static void roundtrip(const float *v, uint64_t rows, uint64_t cols, const fc_encode_options *o)
{
    uint64_t shape[2] = {rows, cols}, n = rows * cols, i;
    fc_tensor t = tu_tensor(5, 2, shape);
    fc_tensor_stats st;
    fc_tensor_info info;
    fc_decode_target tg[1];
    float *recon = (float *)malloc(sizeof(float) * n), *val = (float *)malloc(sizeof(float) * n);
    float *dith = (float *)malloc(sizeof(float) * n), *accf = (float *)malloc(sizeof(float) * n);
    double *accd = (double *)malloc(sizeof(double) * n), se = 0.0;
    int32_t *lv = (int32_t *)malloc(sizeof(int32_t) * n);
    uint8_t *c, *c3, *g;
    size_t size, size3, count;
    fc_encode_options o3 = *o;
    TU_CHECK(recon && val && dith && accf && accd && lv);
    t.values = v;
    t.recon = recon;
    TU_CHECK_RC(tu_encode(&t, 1, o, &c, &size, &st), FC_OK);
    /* the thread count never changes the bytes */
    o3.threads = o->threads == 1 ? 3 : 1;
    TU_CHECK_RC(tu_encode(&t, 1, &o3, &c3, &size3, NULL), FC_OK);
    TU_CHECK(size3 == size && memcmp(c, c3, size) == 0);
    free(c3);
    g = tu_guarded_copy(c, size);
    TU_CHECK_RC(fc_inspect(g, size, NULL, &info, 1, &count), FC_OK);
    TU_CHECK_EQ(count, 1);
    TU_CHECK_EQ(info.quantizer, (uint32_t)o->quantizer);
    TU_CHECK(info.dither_seed == (o->quantizer == FC_QUANT_DITHER ? o->dither_seed : 0u));
    if (o->quantizer == FC_QUANT_DITHER)
        TU_CHECK_RC(fc_dither(o->dither_seed, t.index, 0, (size_t)n, info.step, dith), FC_OK);
    for (i = 0; i < n; i++) {
        accf[i] = (float)i * 0.5f;
        accd[i] = (double)i * 0.25;
    }
    memset(tg, 0, sizeof tg);
    tg[0].levels = lv;
    tg[0].values = val;
    tg[0].acc = accd;
    tg[0].acc_dtype = FC_ACC_F64;
    tg[0].weight = 0.75;
    TU_CHECK_RC(fc_decode(g, size, NULL, tg, 1), FC_OK);
    tg[0].levels = NULL;
    tg[0].values = NULL;
    tg[0].acc = accf;
    tg[0].acc_dtype = FC_ACC_F32;
    TU_CHECK_RC(fc_decode(g, size, NULL, tg, 1), FC_OK);
    for (i = 0; i < n; i++) {
        float want;
        double d = (double)v[i] - (double)val[i];
        se += d * d;
        TU_CHECKF(memcmp(&val[i], &recon[i], 4) == 0, "element %llu: decoded %.9g, recon %.9g",
                  (unsigned long long)i, val[i], recon[i]);
        if (o->quantizer == FC_QUANT_DITHER) {
            float r = (float)lv[i] * (float)info.step;
            want = r - dith[i];
            TU_CHECK(memcmp(&want, &val[i], 4) == 0);
            TU_CHECK(accd[i] == (double)i * 0.25 + 0.75 * (double)val[i]);
            TU_CHECK(accf[i] == (float)((double)((float)i * 0.5f) + 0.75 * (double)val[i]));
            /* error within half a step (and float rounding) */
            TU_CHECK(fabs(d) <= 0.5000001 * info.step);
        } else {
            want = (float)lv[i] * (float)info.step;
            TU_CHECK(memcmp(&want, &val[i], 4) == 0);
            TU_CHECK(lv[i] >= -FC_MAX_LEVEL && lv[i] <= FC_MAX_LEVEL);
            TU_CHECK(accd[i] == (lv[i] ? (double)i * 0.25 + 0.75 * (double)val[i] : (double)i * 0.25));
            if (o->quantizer != FC_QUANT_UNIFORM) TU_CHECKF(v[i] != 0.0f || lv[i] == 0, "a zero became %d", lv[i]);
        }
    }
    TU_CHECK(fabs(se - st.sq_error) <= 1e-9 * (se + 1e-30));
    tu_guarded_free(g);
    free(c);
    free(recon);
    free(val);
    free(dith);
    free(accf);
    free(accd);
    free(lv);
}

static void test_roundtrips(void)
{
    static float v[N];
    static const size_t keeps[] = {0, N / 10, N / 100, 3};
    static const int modes[] = {FC_MODE_AUTO, FC_MODE_DENSE, FC_MODE_GROUPED, FC_MODE_RUNS};
    static const int quants[] = {FC_QUANT_TRELLIS, FC_QUANT_TRELLIS8, FC_QUANT_DITHER};
    size_t ki, mi, qi;
    for (ki = 0; ki < sizeof keeps / sizeof keeps[0]; ki++) {
        fill(v, N, 11 + ki, keeps[ki]);
        for (qi = 0; qi < 3; qi++) {
            for (mi = 0; mi < 4; mi++) {
                fc_encode_options o;
                fc_encode_options_init(&o);
                o.quantizer = quants[qi];
                o.mode = modes[mi];
                o.S = 32;
                o.lambda = quants[qi] == FC_QUANT_DITHER ? 0.0 : 0.1155;
                o.dither_seed = 0x0123456789ABCDEFull + ki;
                o.threads = 1;
                roundtrip(v, ROWS, COLS, &o);
                /* several slices, another lambda, max_gtx 1 */
                o.slice_elems = 700;
                o.max_gtx = 1;
                o.lambda = quants[qi] == FC_QUANT_DITHER ? 0.0 : 0.4;
                roundtrip(v, ROWS, COLS, &o);
            }
        }
    }
    /* shapes: one row longer than a trellis segment, a column, wide rows */
    {
        static float w[70001];
        fc_encode_options o;
        fill(w, 70001, 3, 0);
        fc_encode_options_init(&o);
        for (qi = 0; qi < 3; qi++) {
            o.quantizer = quants[qi];
            o.S = 64;
            roundtrip(w, 1, 10000, &o);
            roundtrip(w, 10000, 1, &o);
            roundtrip(w, 1, 70001, &o);
        }
    }
}

/* An all-zero dithered tensor still has a slice: its elements decode to -u. */
static void test_dither_zero_tensor(void)
{
    static float z[300];
    uint64_t shape[1] = {300};
    fc_tensor t = tu_tensor(0, 1, shape);
    fc_encode_options o;
    fc_tensor_stats st;
    uint8_t *c;
    size_t size;
    fc_encode_options_init(&o);
    o.quantizer = FC_QUANT_DITHER;
    o.dither_seed = 99;
    t.values = z;
    TU_CHECK_RC(tu_encode(&t, 1, &o, &c, &size, &st), FC_OK);
    TU_CHECK_EQ(st.nonzeros, 0);
    TU_CHECK_EQ(st.slices, 1);
    free(c);
    roundtrip(z, 1, 300, &o);
}

/* ------------------------------------------------------------------ */
/* The RD property                                                      */
/* ------------------------------------------------------------------ */

/*
 * What is compared.  On one segment (a row from a given start state, row
 * state and left neighbour, the coder's column state and the row above
 * fixed), with the rates frozen (one snapshot of a rate model trained on
 * earlier rows), the cost of a level sequence is
 *     J = sum_i eta_i (|w_i|/step - |q_i|)^2 + lambda' * R_i
 * with q_i the reconstruction index that level k_i gets in the state the
 * sequence reaches, and R_i the bits of k_i from the frozen rates under the
 * contexts the sequence itself selects (left neighbour, row state, the Q1
 * significance set).  "Plain RD quantization" of the same data is the
 * sequential RD choice made by RDOQ, transposed to the state machine (there
 * is no other way to reconstruct uniform levels): at each element the
 * cheapest candidate of the current state's quantizer given the decisions so
 * far.  The property: J(trellis) <= J(greedy) within 1 %, and the J the
 * search reports equals the J of its levels evaluated independently (the
 * traceback).  The margin: the search keeps one path per state, and a path's
 * row state (rank-1 prediction, distance, running magnitude) selects its
 * contexts, so the Viterbi pass is not exact when two paths meet in a state
 * with different row states; measured, the trellis's J is above the greedy
 * one in 1 of 240 cases here, by 0.42 %.
 */
static void rd_property(unsigned quant, size_t keep, int with_importance, uint64_t seed)
{
    const uint64_t cols = 700, rows = 12;
    float *x = (float *)malloc(sizeof(float) * cols * rows), *imp = NULL;
    int32_t *prev = (int32_t *)calloc(cols, sizeof(int32_t));
    int32_t *a = (int32_t *)calloc(cols, sizeof(int32_t)), *b = (int32_t *)calloc(cols, sizeof(int32_t));
    fc_colstate cs;
    fc_trellis *tr;
    double step = 0.004, inv = 1.0 / step;
    uint64_t r, c;
    tu_rng rng = tu_seed(seed);
    TU_CHECK(x && prev && a && b);
    fill(x, cols * rows, seed, keep);
    if (with_importance) {
        imp = (float *)malloc(sizeof(float) * cols * rows);
        TU_CHECK(imp != NULL);
        for (c = 0; c < cols * rows; c++) imp[c] = (float)(0.2 + 2.0 * tu_unit(&rng));
    }
    cs.act = (uint8_t *)malloc(cols);
    cs.sgn = (int8_t *)calloc(cols, 1);
    cs.mag = (uint16_t *)calloc(cols, sizeof(uint16_t));
    TU_CHECK(cs.act && cs.sgn && cs.mag);
    for (c = 0; c < cols; c++) {
        cs.act[c] = (uint8_t)tu_below(&rng, 256);
        cs.sgn[c] = (int8_t)((int)tu_below(&rng, 3) - 1);
        cs.mag[c] = (uint16_t)tu_below(&rng, 5);
    }
    tr = fc_trellis_new(quant, 0.1155, 1.0, inv, 4, 1, 0);
    TU_CHECK(tr != NULL);
    /* train the rate model on the first rows */
    for (r = 0; r + 1 < rows; r++) {
        fc_trellis_row(tr, &cs, x + r * cols, imp ? imp + r * cols : NULL, cols, r ? prev : NULL, NULL,
                       a);
        memcpy(prev, a, sizeof(int32_t) * cols);
    }
    fc_trellis_refresh(tr);
    {
        const float *xr = x + (rows - 1) * cols;
        const float *ir = imp ? imp + (rows - 1) * cols : NULL;
        unsigned s0, ea, eb;
        for (s0 = 0; s0 < (quant == FC_QUANT_TRELLIS8 ? 8u : 4u); s0++) {
            fc_rowstate row;
            double ja, jb, ca, cb;
            fc_row_begin(&row);
            ja = fc_trellis_viterbi(tr, &cs, xr, ir, 0, cols, prev, a, s0, &row, 0, &ea);
            jb = fc_trellis_greedy(tr, &cs, xr, ir, 0, cols, prev, b, s0, &row, 0, &eb);
            ca = fc_trellis_cost(tr, &cs, xr, ir, 0, cols, prev, a, s0, &row, 0);
            cb = fc_trellis_cost(tr, &cs, xr, ir, 0, cols, prev, b, s0, &row, 0);
            TU_CHECKF(fabs(ca - ja) <= 1e-9 * ja, "trellis J %.12g, evaluated %.12g", ja, ca);
            TU_CHECKF(fabs(cb - jb) <= 1e-9 * jb, "greedy J %.12g, evaluated %.12g", jb, cb);
            TU_CHECKF(ja <= jb * 1.01, "trellis J %.9g > greedy J %.9g (quant %u, keep %zu, "
                      "start %u)", ja, jb, quant, keep, s0);
            for (c = 0; c < cols; c++) TU_CHECK(xr[c] != 0.0f || a[c] == 0);
        }
    }
    fc_trellis_free(tr);
    free(cs.act);
    free(cs.sgn);
    free(cs.mag);
    free(x);
    free(imp);
    free(prev);
    free(a);
    free(b);
}

/* Rows in which every value has the same magnitude: the trellis used to
 * reconstruct them up to two steps away (frozen rates, trellis.c segment()).
 * At the same step and lambda its distortion now exceeds plain RDOQ's by at
 * most 0.2 step^2 (dependent quantization's lattice alone costs about
 * 0.1 step^2 on constant values at high rate: ~0.19 against rounding's
 * 1/12; RDOQ keeps the rounded levels of such rows in ROWKIND slices,
 * MSE 0.079..0.082, since the encoder compares its ROWKIND trial by
 * D + lambda R; measured: trellis 0.178..0.262, at most +0.182; against the
 * RDOQ that zeroed part of such rows (MSE 0.28 at 2 steps) at most +0.095,
 * before the trellis fix +0.08..+0.33), and at most 0.5 % of the elements
 * are off by more than 1.5 steps (measured: at most 0.11 %; before the fix
 * 0.25..4.8 %), for row magnitudes around 2, 4, 8 and 16 steps. */
static void test_constant_rows(void)
{
    const uint64_t rows = 160, cols = 384, n = rows * cols;
    static const double centers[4] = {2.0, 4.0, 8.0, 16.0};
    float *x = (float *)malloc(sizeof(float) * n), *rec = (float *)malloc(sizeof(float) * n);
    size_t ci;
    unsigned quant;
    TU_CHECK(x && rec);
    for (ci = 0; ci < 4; ci++) {
        tu_rng rng = tu_seed(77 + ci);
        double mse_rdoq = 0.0;
        uint64_t shape[2] = {rows, cols}, i;
        tu_fill_const_rows(&rng, x, rows, cols, centers[ci]);
        for (quant = FC_QUANT_UNIFORM; quant <= FC_QUANT_TRELLIS8; quant++) {
            fc_tensor t = tu_tensor(0, 2, shape);
            fc_encode_options o;
            uint8_t *c;
            size_t size;
            double mse = 0.0;
            uint64_t far = 0;
            fc_encode_options_init(&o);
            o.quantizer = (int32_t)quant;
            o.lambda = 0.1155;
            o.threads = 1;
            t.values = x;
            t.step = 1.0;
            t.recon = rec;
            TU_CHECK_RC(tu_encode(&t, 1, &o, &c, &size, NULL), FC_OK);
            free(c);
            if (quant == FC_QUANT_UNIFORM) {
                /* RDOQ's levels (step 1) without the ROWFINE values of its
                 * one-magnitude rows: the lattice the trellis is held to */
                for (i = 0; i < n; i++) {
                    double d = (double)x[i] - rint((double)rec[i]);
                    mse_rdoq += d * d;
                }
                mse_rdoq /= (double)n;
                continue;
            }
            for (i = 0; i < n; i++) {
                double d = (double)x[i] - (double)rec[i];
                mse += d * d;
                far += fabs(d) > 1.5;
            }
            mse /= (double)n;
            TU_CHECKF(mse <= mse_rdoq + 0.2, "quant %u, rows around %.0f steps: MSE %.4f step^2, "
                      "RDOQ %.4f", quant, centers[ci], mse, mse_rdoq);
            TU_CHECKF(far * 200u <= n, "quant %u, rows around %.0f steps: %.2f %% of the elements "
                      "off by more than 1.5 steps", quant, centers[ci], 100.0 * (double)far / (double)n);
        }
    }
    free(x);
    free(rec);
}

static void test_rd_property(void)
{
    uint64_t seed;
    for (seed = 1; seed <= 12; seed++) {
        rd_property(FC_QUANT_TRELLIS, 0, 0, seed);
        rd_property(FC_QUANT_TRELLIS, 840, 0, seed);
        rd_property(FC_QUANT_TRELLIS, 84, 1, seed);
        rd_property(FC_QUANT_TRELLIS8, 0, 1, seed);
        rd_property(FC_QUANT_TRELLIS8, 840, 0, seed);
    }
}

/* ------------------------------------------------------------------ */
/* The dither                                                           */
/* ------------------------------------------------------------------ */

static void test_dither_values(void)
{
    static float u[100000];
    double sum = 0.0, sumsq = 0.0;
    size_t i;
    float head[10];
    TU_CHECK_RC(fc_dither(42, 3, 0, 100000, 1.0, u), FC_OK);
    for (i = 0; i < 100000; i++) {
        double m = (double)u[i] * 33554432.0; /* an odd integer */
        TU_CHECK(m == floor(m) && fmod(fabs(m), 2.0) == 1.0 && fabs(u[i]) < 0.5f);
        sum += u[i];
        sumsq += (double)u[i] * u[i];
    }
    /* uniform on (-1/2, 1/2): mean 0 (sd 0.0009), variance 1/12 */
    TU_CHECK(fabs(sum / 100000.0) < 0.005);
    TU_CHECK(fabs(sumsq / 100000.0 - 1.0 / 12.0) < 0.002);
    /* counter-based: any window gives the same values */
    TU_CHECK_RC(fc_dither(42, 3, 777, 10, 1.0, head), FC_OK);
    TU_CHECK(memcmp(head, u + 777, sizeof head) == 0);
    /* another tensor index or seed: other values */
    TU_CHECK_RC(fc_dither(42, 4, 777, 10, 1.0, head), FC_OK);
    TU_CHECK(memcmp(head, u + 777, sizeof head) != 0);
    TU_CHECK_RC(fc_dither(43, 3, 777, 10, 1.0, head), FC_OK);
    TU_CHECK(memcmp(head, u + 777, sizeof head) != 0);
    /* the value for a step is the float product */
    TU_CHECK_RC(fc_dither(42, 3, 777, 10, 0.3, head), FC_OK);
    for (i = 0; i < 10; i++) TU_CHECK(head[i] == u[777 + i] * 0.3f);
    /* a pinned value (the definition in FORMAT.md): seed 0, tensor 0, element 0 */
    TU_CHECK_RC(fc_dither(0, 0, 0, 1, 1.0, head), FC_OK);
    {
        uint64_t key = fc_mix64(0 + 0x9E3779B97F4A7C15ull);
        uint64_t h = fc_mix64(key + 0x9E3779B97F4A7C15ull);
        int32_t m = (int32_t)(h >> 40);
        TU_CHECK(head[0] == (float)(2 * m + 1 - (1 << 24)) / 33554432.0f);
    }
    TU_CHECK_RC(fc_dither(0, 0, 0, 1, 0.0, head), FC_ERR_INVALID_ARGUMENT);
    TU_CHECK_RC(fc_dither(0, 0, 0, 1, 1e-40, head), FC_ERR_INVALID_ARGUMENT);
    TU_CHECK_RC(fc_dither(0, 0, UINT64_MAX, 2, 1.0, head), FC_ERR_INVALID_ARGUMENT);
    TU_CHECK_RC(fc_dither(0, 0, 0, 0, 1.0, NULL), FC_OK);
}

/* Dithered quantization is unbiased: for a constant input between two
 * levels the mean reconstruction is the input; rounding's is a level. */
static void test_dither_unbiased(void)
{
    static float v[20000], rec[20000];
    uint64_t shape[1] = {20000};
    fc_tensor t = tu_tensor(0, 1, shape);
    fc_encode_options o;
    uint8_t *c;
    size_t size, i;
    double mean = 0.0;
    for (i = 0; i < 20000; i++) v[i] = 0.3f;
    fc_encode_options_init(&o);
    o.quantizer = FC_QUANT_DITHER;
    o.dither_seed = 7;
    t.values = v;
    t.recon = rec;
    t.step = 1.0;
    TU_CHECK_RC(tu_encode(&t, 1, &o, &c, &size, NULL), FC_OK);
    free(c);
    for (i = 0; i < 20000; i++) mean += rec[i];
    mean /= 20000.0;
    TU_CHECKF(fabs(mean - 0.3) < 0.01, "mean reconstruction %.4f of 0.3", mean);
    o.quantizer = FC_QUANT_UNIFORM;
    TU_CHECK_RC(tu_encode(&t, 1, &o, &c, &size, NULL), FC_OK);
    free(c);
    TU_CHECK(rec[0] == 0.0f && rec[19999] == 0.0f);
}

/* ------------------------------------------------------------------ */
/* Format and options                                                   */
/* ------------------------------------------------------------------ */

static int decode_rc(const uint8_t *c, size_t size)
{
    fc_tensor_info info[4];
    fc_decode_target tg[4];
    int32_t *lv[4];
    size_t count = 0, i;
    uint8_t *g = tu_guarded_copy(c, size);
    int rc = fc_inspect(g, size, NULL, info, 4, &count);
    if (rc == FC_OK) {
        TU_CHECK(count <= 4);
        memset(tg, 0, sizeof tg);
        for (i = 0; i < count; i++) {
            lv[i] = (int32_t *)malloc(sizeof(int32_t) * (info[i].numel + 1));
            tg[i].levels = lv[i];
        }
        rc = fc_decode(g, size, NULL, tg, count);
        for (i = 0; i < count; i++) free(lv[i]);
    }
    tu_guarded_free(g);
    return rc;
}

static void test_format(void)
{
    static float v[N];
    uint64_t shape[2] = {ROWS, COLS};
    fc_tensor t[2];
    fc_encode_options o;
    uint8_t *c;
    size_t size;
    cr_layout L;
    int32_t lv[10] = {0, 1, -2, 0, 0, 3, 0, 0, 0, 1};
    uint64_t shape1[1] = {10};
    fill(v, N, 5, N / 10);
    t[0] = tu_tensor(0, 2, shape);
    t[0].values = v;
    t[1] = tu_tensor(1, 1, shape1);
    t[1].levels = lv;
    t[1].step = 0.5;
    fc_encode_options_init(&o);

    /* uniform: no seed, no quantizer byte (the format of 0.1) */
    TU_CHECK_RC(tu_encode(t, 2, &o, &c, &size, NULL), FC_OK);
    TU_CHECK(cr_walk(c, size, &L));
    TU_CHECK(c[5] == 0 && L.seed == CR_NONE && L.t[0].quant == CR_NONE && L.t[1].quant == CR_NONE);
    free(c);

    /* trellis: a quantizer byte for the float tensor only */
    o.quantizer = FC_QUANT_TRELLIS;
    TU_CHECK_RC(tu_encode(t, 2, &o, &c, &size, NULL), FC_OK);
    TU_CHECK(cr_walk(c, size, &L));
    TU_CHECK(c[5] == 0 && L.seed == CR_NONE);
    TU_CHECK(L.t[0].quant != CR_NONE && c[L.t[0].quant] == 1 && (c[L.t[0].params] & 0x80));
    TU_CHECK(L.t[1].quant == CR_NONE);
    TU_CHECK_EQ(decode_rc(c, size), FC_OK);
    /* reserved bits of the quantizer byte (bit 2 is TRANSPOSED, allowed on
     * this 2-d tensor) */
    c[L.t[0].quant] = 0x09;
    cr_reseal(c, size);
    TU_CHECK_EQ(decode_rc(c, size), FC_ERR_CORRUPT);
    c[L.t[0].quant] = 0x05;
    cr_reseal(c, size);
    TU_CHECK(decode_rc(c, size) != FC_ERR_CHECKSUM);
    /* kind 3 without a container seed */
    c[L.t[0].quant] = 0x03;
    cr_reseal(c, size);
    TU_CHECK_EQ(decode_rc(c, size), FC_ERR_CORRUPT);
    /* kind 0 in a quantizer byte is allowed (uniform) */
    c[L.t[0].quant] = 0x00;
    cr_reseal(c, size);
    TU_CHECK(decode_rc(c, size) != FC_ERR_CHECKSUM);
    free(c);

    /* dither: the seed in the container, little-endian after the flags */
    o.quantizer = FC_QUANT_DITHER;
    o.lambda = 0.0;
    o.dither_seed = 0x1122334455667788ull;
    TU_CHECK_RC(tu_encode(t, 2, &o, &c, &size, NULL), FC_OK);
    TU_CHECK(cr_walk(c, size, &L));
    TU_CHECK(c[5] == 1 && L.seed == 6 && c[6] == 0x88 && c[13] == 0x11);
    TU_CHECK(L.t[0].quant != CR_NONE && c[L.t[0].quant] == 3 && L.t[1].quant == CR_NONE);
    TU_CHECK_EQ(decode_rc(c, size), FC_OK);
    {
        /* the seed cut short */
        cr_buf b = {0};
        cr_bytes(&b, c, 10);
        cr_seal(&b);
        TU_CHECK_EQ(decode_rc(b.d, b.n), FC_ERR_TRUNCATED);
        cr_free(&b);
    }
    {
        /* a dithered tensor without slices */
        cr_buf b = {0};
        uint64_t v1 = 0;
        size_t after = L.t[0].nslices_pos;
        TU_CHECK(cr_get_varint(c, size, &after, &v1));
        cr_bytes(&b, c, L.t[0].nslices_pos);
        cr_varint(&b, 0);
        cr_bytes(&b, c + L.slice_payload[L.t[0].first_slice + L.t[0].nslices - 1] +
                         L.slice_size[L.t[0].first_slice + L.t[0].nslices - 1],
                 L.crc - (L.slice_payload[L.t[0].first_slice + L.t[0].nslices - 1] +
                          L.slice_size[L.t[0].first_slice + L.t[0].nslices - 1]));
        cr_seal(&b);
        TU_CHECK_EQ(decode_rc(b.d, b.n), FC_ERR_CORRUPT);
        cr_free(&b);
    }
    /* flag bits other than bit 0 */
    c[5] = 0x05;
    cr_reseal(c, size);
    TU_CHECK_EQ(decode_rc(c, size), FC_ERR_CORRUPT);
    free(c);
}

static void test_options(void)
{
    static float v[N];
    uint64_t shape[2] = {ROWS, COLS};
    fc_tensor t = tu_tensor(0, 2, shape);
    fc_encode_options o;
    uint8_t *c, *c0;
    size_t size, size0;
    fill(v, N, 8, 0);
    t.values = v;
    fc_encode_options_init(&o);
    TU_CHECK_EQ(o.quantizer, FC_QUANT_UNIFORM);
    TU_CHECK(o.dither_seed == 0);
    o.quantizer = FC_QUANT_DITHER;
    o.lambda = 0.1;
    TU_CHECK_RC(tu_encode(&t, 1, &o, &c, &size, NULL), FC_ERR_INVALID_ARGUMENT);
    o.quantizer = 4;
    o.lambda = 0.0;
    TU_CHECK_RC(tu_encode(&t, 1, &o, &c, &size, NULL), FC_ERR_INVALID_ARGUMENT);
    o.quantizer = -1;
    TU_CHECK_RC(tu_encode(&t, 1, &o, &c, &size, NULL), FC_ERR_INVALID_ARGUMENT);
    /* an options struct of 0.1 (without the quantizer fields): uniform,
     * whatever lies behind it */
    o.quantizer = FC_QUANT_TRELLIS;
    o.lambda = 0.1155;
    TU_CHECK_RC(tu_encode(&t, 1, &o, &c, &size, NULL), FC_OK);
    o.struct_size = offsetof(fc_encode_options, quantizer);
    TU_CHECK_RC(tu_encode(&t, 1, &o, &c0, &size0, NULL), FC_OK);
    o.struct_size = sizeof(o);
    o.quantizer = FC_QUANT_UNIFORM;
    {
        uint8_t *cu;
        size_t su;
        TU_CHECK_RC(tu_encode(&t, 1, &o, &cu, &su, NULL), FC_OK);
        TU_CHECK(su == size0 && memcmp(cu, c0, su) == 0);
        TU_CHECK(size != size0);
        free(cu);
    }
    free(c);
    free(c0);
    /* extreme magnitudes: |w| / step = 2^30 - 64 (the largest float below
     * FC_MAX_LEVEL) round-trips through the trellis (indices near 2^30),
     * 2^30 overflows */
    {
        float big[2] = {1073741760.0f, -1.0f}, rb[2];
        uint64_t shape1[1] = {2};
        fc_tensor tb = tu_tensor(0, 1, shape1);
        tb.values = big;
        tb.recon = rb;
        tb.step = 1.0;
        o.quantizer = FC_QUANT_TRELLIS;
        o.lambda = 0.0;
        TU_CHECK_RC(tu_encode(&tb, 1, &o, &c, &size, NULL), FC_OK);
        TU_CHECKF(fabs((double)rb[0] - (double)big[0]) <= 2.0, "recon %.1f", rb[0]);
        TU_CHECK_EQ(decode_rc(c, size), FC_OK);
        free(c);
        roundtrip(big, 1, 2, &o);
        big[0] = 1073741824.0f;
        TU_CHECK_RC(tu_encode(&tb, 1, &o, &c, &size, NULL), FC_ERR_LEVEL_OVERFLOW);
    }
    /* trellis with lambda 0 is rate-aware (the default lambda) */
    o.quantizer = FC_QUANT_TRELLIS;
    o.lambda = 0.0;
    TU_CHECK_RC(tu_encode(&t, 1, &o, &c, &size, NULL), FC_OK);
    o.lambda = FC_DQ_DEFAULT_LAMBDA;
    TU_CHECK_RC(tu_encode(&t, 1, &o, &c0, &size0, NULL), FC_OK);
    TU_CHECK(size == size0 && memcmp(c, c0, size) == 0);
    free(c);
    free(c0);
}

/* fc_max_finite_level() is exact: the bound's reconstruction is finite and
 * the next level's is not, for steps over the whole float32 range and every
 * quantizer; the encoder refuses input whose levels would pass it. */
static void test_finite_bound(void)
{
    static const unsigned quants[4] = {FC_QUANT_UNIFORM, FC_QUANT_TRELLIS, FC_QUANT_TRELLIS8,
                                       FC_QUANT_DITHER};
    tu_rng r = tu_seed(4242);
    int i, q;
    for (i = 0; i < 20000; i++) {
        /* exponents 2^0 .. 2^127 (smaller steps hit the level limit), any mantissa */
        uint32_t bits = ((uint32_t)(127 + tu_below(&r, 128)) << 23) | (uint32_t)tu_below(&r, 1u << 23);
        float step;
        memcpy(&step, &bits, 4);
        if (i < 4) step = 3.4028234663852886e38f / (float)(1 << i);
        for (q = 0; q < 4; q++) {
            const int dq = quants[q] == FC_QUANT_TRELLIS || quants[q] == FC_QUANT_TRELLIS8;
            const int32_t limit = dq ? FC_MAX_DQ_LEVEL : FC_MAX_LEVEL;
            int32_t k = fc_max_finite_level(step, limit, quants[q]);
            float rec, u = step * 0.5f;
            TU_CHECKF(k >= 0 && k <= limit, "step %a quant %u: %d", (double)step, quants[q], k);
            TU_CHECK(fc_level_finite(k, step, quants[q]));
            TU_CHECKF(k == limit || !fc_level_finite((int64_t)k + 1, step, quants[q]),
                      "step %a quant %u: %d is not the largest", (double)step, quants[q], k);
            /* the reconstructions the decoder computes (worst-case dither) */
            rec = (float)(dq ? 2 * k : k) * step;
            TU_CHECK(isfinite(rec) && isfinite(-rec));
            if (quants[q] == FC_QUANT_DITHER) {
                TU_CHECK(isfinite(fc_dither_recon(k, step, -u)) && isfinite(fc_dither_recon(-k, step, u)));
            }
        }
    }
    /* the rounding case of bad_overflow_uniform_rounding.fcd */
    TU_CHECK(fc_max_finite_level(ldexpf(0x1.b808f2p0f, 101), FC_MAX_LEVEL, FC_QUANT_UNIFORM) < 78084108);
    /* the dither at step FLT_MAX: only level 0 is finite */
    TU_CHECK_EQ(fc_max_finite_level(3.4028234663852886e38f, FC_MAX_LEVEL, FC_QUANT_DITHER), 0);
    TU_CHECK_EQ(fc_max_finite_level(3.4028234663852886e38f, FC_MAX_LEVEL, FC_QUANT_UNIFORM), 1);
    /* the encoder refuses what the decoder would refuse */
    {
        float v[4] = {1.0f, -1.0f, 0.0f, 0.5f}, big[2] = {3.0e38f, -3.0e38f};
        uint64_t shape[1] = {4};
        fc_tensor t = tu_tensor(0, 1, shape);
        fc_encode_options o;
        uint8_t *c;
        size_t size;
        fc_encode_options_init(&o);
        o.threads = 1;
        o.quantizer = FC_QUANT_DITHER;
        o.dither_seed = 5;
        t.values = v;
        t.step = 3.4028234663852886e38;
        TU_CHECK_RC(tu_encode(&t, 1, &o, &c, &size, NULL), FC_ERR_LEVEL_OVERFLOW);
        o.quantizer = FC_QUANT_TRELLIS;
        t.step = 2.0e38;
        TU_CHECK_RC(tu_encode(&t, 1, &o, &c, &size, NULL), FC_ERR_LEVEL_OVERFLOW);
        o.quantizer = FC_QUANT_UNIFORM;
        shape[0] = 2;
        t = tu_tensor(0, 1, shape);
        t.values = big;
        t.step = 2.0e38;
        TU_CHECK_RC(tu_encode(&t, 1, &o, &c, &size, NULL), FC_ERR_LEVEL_OVERFLOW);
        t.step = 1.0e37;
        TU_CHECK_RC(tu_encode(&t, 1, &o, &c, &size, NULL), FC_OK);
        TU_CHECK_EQ(decode_rc(c, size), FC_OK);
        free(c);
    }
}

int main(void)
{
    test_finite_bound();
    test_dither_values();
    test_dither_unbiased();
    test_dither_zero_tensor();
    test_format();
    test_options();
    test_rd_property();
    test_constant_rows();
    test_roundtrips();
    return tu_finish("test_quant_modes");
}
