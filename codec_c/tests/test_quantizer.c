/*
 * test_quantizer.c - the encoder-side quantizer (quant.h) and what the
 * public API makes of it: the step formula (DeepCABAC eq. 2) and its
 * default sigma_min, lambda = 0 is round-half-away-from-zero with error at
 * most step/2, RDOQ lowers distortion + lambda * rate against rounding and
 * zeroes more as lambda grows, per-weight importance protects a weight,
 * level overflow is reported, and the rate model's cost table is the same
 * on every platform (the RDOQ decisions, hence the bytes, depend on it).
 *
 * The RD decisions are checked through fc_encode/fc_decode, not through
 * fc_quantize_row, so the test does not depend on the context modelling
 * that is still being tuned.
 */
#include <float.h>

#include "test_util.h"

#include "quant.h"

/* Encode one 2-D tensor of values; decode its levels.  Returns the
 * container size; stats in *st. */
static size_t code_values(const float *x, const float *imp, uint64_t rows, uint64_t cols,
                          double step, double lambda, uint32_t S, double sigma_min, int32_t *levels,
                          float *recon, fc_tensor_stats *st)
{
    uint64_t shape[2];
    fc_tensor t;
    fc_encode_options o;
    fc_decode_target tg;
    float *dv = (float *)malloc(sizeof(float) * rows * cols);
    uint8_t *buf;
    size_t size;
    uint64_t i;
    shape[0] = rows;
    shape[1] = cols;
    t = tu_tensor(0, 2, shape);
    t.values = x;
    t.importance = imp;
    t.step = step;
    t.sigma_min = sigma_min;
    t.recon = recon;
    fc_encode_options_init(&o);
    o.lambda = lambda;
    o.S = S;
    o.threads = 1;
    TU_CHECK(dv != NULL);
    TU_CHECK_RC(tu_encode(&t, 1, &o, &buf, &size, st), FC_OK);
    memset(&tg, 0, sizeof(tg));
    tg.levels = levels;
    tg.values = dv;
    TU_CHECK_RC(fc_decode(buf, size, NULL, &tg, 1), FC_OK);
    /* The encoder's reconstruction is exactly what the decoder produces. */
    if (recon)
        for (i = 0; i < rows * cols; i++)
            if (memcmp(&recon[i], &dv[i], 4) != 0) TU_CHECKF(0, "recon differs at %llu", (unsigned long long)i);
    free(dv);
    free(buf);
    return size;
}

/* Step formula: step = 2|w|max / (2|w|max / sigma_min + S), rounded to
 * float32; sigma_min defaults to the RMS of the nonzero values. */
static void test_step_formula(void)
{
    static const float x[5] = {3.0f, -4.0f, 0.0f, 0.0f, 0.0f};
    fc_tensor_scan sc;
    double rms = sqrt(25.0 / 2.0);
    fc_scan_tensor(x, NULL, 5, &sc);
    TU_CHECK(sc.abs_max == 4.0 && sc.nonzero == 2 && sc.sum_sq_nz == 25.0 && !sc.nonfinite);
    TU_CHECK(fc_derive_step(&sc, 0.1, 128) == (double)(float)(8.0 / (8.0 / 0.1 + 128.0)));
    TU_CHECK(fc_derive_step(&sc, 0.0, 0) == (double)(float)rms); /* S = 0: step = sigma_min */
    TU_CHECK(fc_derive_step(&sc, 0.0, 10) == (double)(float)(8.0 / (8.0 / rms + 10.0)));
    TU_CHECK(fc_derive_step(&sc, 0.5, 0) == 0.5);
    /* All-zero tensor: step = sigma_min (1 by default). */
    fc_scan_tensor(x + 2, NULL, 3, &sc);
    TU_CHECK(fc_derive_step(&sc, 0.0, 128) == 1.0);
    TU_CHECK(fc_derive_step(&sc, 0.25, 128) == 0.25);
    /* Too large for float32: no step (negative result); too small: the
     * smallest normal float32 (a subnormal step is never written). */
    TU_CHECK(fc_derive_step(&sc, 1e300, 0) < 0.0);
    TU_CHECK(fc_derive_step(&sc, 1e-300, 0) == (double)FLT_MIN);

    /* Non-finite inputs and invalid importance are flagged by the scan. */
    {
        float bad[3] = {1.0f, 0.0f, 2.0f}, imp[3] = {1.0f, 1.0f, 1.0f};
        bad[1] = (float)NAN;
        fc_scan_tensor(bad, NULL, 3, &sc);
        TU_CHECK(sc.nonfinite);
        bad[1] = (float)INFINITY;
        fc_scan_tensor(bad, NULL, 3, &sc);
        TU_CHECK(sc.nonfinite);
        bad[1] = 0.0f;
        imp[2] = -1.0f;
        fc_scan_tensor(bad, imp, 3, &sc);
        TU_CHECK(sc.nonfinite);
        imp[2] = 2.0f;
        fc_scan_tensor(bad, imp, 3, &sc);
        TU_CHECK(!sc.nonfinite && sc.importance_sum == 4.0);
    }

    /* Through the API: the step the encoder reports and the container
     * stores is the formula's, for the tensor's own statistics. */
    {
        const uint64_t n = 4096;
        float *v = (float *)malloc(sizeof(float) * n);
        int32_t *lv = (int32_t *)malloc(sizeof(int32_t) * n);
        tu_rng r = tu_seed(1);
        fc_tensor_stats st;
        double amax = 0.0, ssq = 0.0, want;
        uint64_t i, nz = 0;
        TU_CHECK(v && lv);
        tu_fill_laplace(&r, v, n, 0.01);
        for (i = 0; i < n; i++) {
            double a = fabs((double)v[i]);
            if (a > amax) amax = a;
            if (a > 0) nz++, ssq += a * a;
        }
        code_values(v, NULL, 64, 64, 0.0, 0.0, 64, 0.02, lv, NULL, &st);
        want = (double)(float)(2.0 * amax / (2.0 * amax / 0.02 + 64.0));
        TU_CHECK(st.step == want);
        code_values(v, NULL, 64, 64, 0.0, 0.0, 200, 0.0, lv, NULL, &st);
        want = (double)(float)(2.0 * amax / (2.0 * amax / sqrt(ssq / (double)nz) + 200.0));
        TU_CHECK(st.step == want);
        /* Tiny values (below ~1e-36) still encode: the derived step is
         * clamped to FLT_MIN, which resolves them to within half of it. */
        {
            float tiny[64];
            int32_t tl[64];
            float trec[64];
            for (i = 0; i < 64; i++) tiny[i] = (float)((double)(i % 9) * 1e-38 - 4e-38);
            code_values(tiny, NULL, 8, 8, 0.0, 0.0, 128, 0.0, tl, trec, &st);
            TU_CHECK(st.step == (double)FLT_MIN);
            for (i = 0; i < 64; i++)
                TU_CHECK(fabs((double)tiny[i] - (double)trec[i]) <= 0.5 * (double)FLT_MIN);
        }
        /* A given step is used as is (rounded to float32). */
        code_values(v, NULL, 64, 64, 0.1, 0.0, 64, 0.0, lv, NULL, &st);
        TU_CHECK(st.step == (double)0.1f);
        free(v);
        free(lv);
    }
}

/* lambda = 0: |level| = floor(|w|/step + 1/2), error <= step/2. */
static void test_rounding(void)
{
    /* Exact ties: step 0.25, w = k/8, so |w|/step = k/2. */
    {
        float v[161];
        int32_t lv[161];
        float rec[161];
        fc_tensor_stats st;
        int k;
        for (k = -80; k <= 80; k++) v[k + 80] = (float)k / 8.0f;
        code_values(v, NULL, 1, 161, 0.25, 0.0, 0, 0.0, lv, rec, &st);
        for (k = -80; k <= 80; k++) {
            int a = k < 0 ? -k : k;
            int want = (a + 1) / 2; /* floor(a/2 + 1/2): ties away from zero */
            TU_CHECKF(lv[k + 80] == (k < 0 ? -want : want), "k=%d: level %d", k, (int)lv[k + 80]);
        }
    }
    /* Random data at several steps: the plain rounding rule, error bound. */
    {
        const uint64_t rows = 50, cols = 200, n = rows * cols;
        float *v = (float *)malloc(sizeof(float) * n), *rec = (float *)malloc(sizeof(float) * n);
        int32_t *lv = (int32_t *)malloc(sizeof(int32_t) * n);
        static const double steps[] = {0.001, 0.0037, 0.02, 0.3};
        size_t si;
        TU_CHECK(v && rec && lv);
        for (si = 0; si < sizeof steps / sizeof steps[0]; si++) {
            tu_rng r = tu_seed(10 + si);
            fc_tensor_stats st;
            double se = 0.0;
            float step;
            uint64_t i;
            tu_fill_laplace(&r, v, n, 0.01);
            code_values(v, NULL, rows, cols, steps[si], 0.0, 0, 0.0, lv, rec, &st);
            step = (float)st.step;
            for (i = 0; i < n; i++) {
                double t = fabs((double)v[i]) / (double)step;
                int32_t want = (int32_t)floor(t + 0.5);
                double err = fabs((double)v[i] - (double)rec[i]);
                if (v[i] < 0) want = -want;
                TU_CHECKF(lv[i] == want, "step %g, i %llu: level %d want %d", steps[si],
                          (unsigned long long)i, (int)lv[i], (int)want);
                TU_CHECKF(err <= 0.5 * (double)step * (1.0 + 1e-6) + fabs((double)rec[i]) * 1e-7,
                          "error %g > step/2", err);
                se += err * err;
            }
            TU_CHECK(fabs(se - st.sq_error) <= 1e-9 * (se + 1e-30) + 1e-30);
        }
        free(v);
        free(rec);
        free(lv);
    }
}

/* RDOQ: on Laplacian data, against plain rounding at the same step,
 * distortion + lambda * rate (rate = real container bits) is lower, larger
 * lambda zeroes more, and every level is 0 or a neighbour of w/step. */
static void test_rdoq(void)
{
    const uint64_t rows = 64, cols = 512, n = rows * cols;
    float *v = (float *)malloc(sizeof(float) * n);
    int32_t *lv = (int32_t *)malloc(sizeof(int32_t) * n);
    static const double lambdas[] = {0.0, 0.02, 0.05, 0.1155, 0.25, 0.5, 1.0, 2.0, 5.0};
    int seed;
    TU_CHECK(v && lv);
    for (seed = 0; seed < 3; seed++) {
        tu_rng r = tu_seed(40 + (uint64_t)seed);
        const double step = 0.004 * (1 + seed);
        fc_tensor_stats st0, st;
        size_t bytes0, bytes, li;
        uint64_t prev_nz = UINT64_MAX, i;
        double D0;
        tu_fill_laplace(&r, v, n, 0.01);
        if (seed == 2) tu_topk(v, n, n / 10); /* a top-10 % update */
        bytes0 = code_values(v, NULL, rows, cols, step, 0.0, 0, 0.0, lv, NULL, &st0);
        D0 = st0.sq_error / (step * step);
        for (li = 0; li < sizeof lambdas / sizeof lambdas[0]; li++) {
            const double lam = lambdas[li];
            double J, J0, D;
            bytes = code_values(v, NULL, rows, cols, step, lam, 0, 0.0, lv, NULL, &st);
            D = st.sq_error / (step * step);
            J = D + lam * 8.0 * (double)bytes;
            J0 = D0 + lam * 8.0 * (double)bytes0;
            printf("  seed %d lambda %.4f: %6zu bytes, %6llu nonzeros, D %.0f, J %.0f (rounding "
                   "J %.0f)\n",
                   seed, lam, bytes, (unsigned long long)st.nonzeros, D, J, J0);
            TU_CHECKF(J <= J0 * 1.001 + 1.0, "seed %d lambda %g: J %.1f > rounding %.1f", seed, lam,
                      J, J0);
            if (lam > 0.1) TU_CHECK(J < J0); /* a real gain, not just a tie */
            TU_CHECKF(st.nonzeros <= prev_nz, "seed %d lambda %g: %llu nonzeros > %llu", seed, lam,
                      (unsigned long long)st.nonzeros, (unsigned long long)prev_nz);
            prev_nz = st.nonzeros;
            for (i = 0; i < n; i++) {
                double t = (double)v[i] / step;
                if (lv[i] != 0)
                    TU_CHECKF(fabs((double)lv[i] - t) < 1.0 && (lv[i] > 0) == (t > 0),
                              "level %d for w/step %.3f", (int)lv[i], t);
            }
        }
        TU_CHECK(prev_nz < st0.nonzeros / 2); /* lambda 5 removes most */
    }
    free(v);
    free(lv);
}

/* Importance: a weight RDOQ would drop survives when its eta is large;
 * eta is normalized to mean 1, so scaling all importances changes nothing. */
static void test_importance(void)
{
    const uint64_t rows = 8, cols = 256, n = rows * cols;
    float *v = (float *)malloc(sizeof(float) * n), *imp = (float *)malloc(sizeof(float) * n);
    int32_t *a = (int32_t *)malloc(sizeof(int32_t) * n), *b = (int32_t *)malloc(sizeof(int32_t) * n);
    const double step = 0.01;
    const uint64_t star = 5 * cols + 77;
    fc_tensor_stats st;
    uint64_t i;
    TU_CHECK(v && imp && a && b);
    /* Sparse background, and one weight at 0.7 steps. */
    for (i = 0; i < n; i++) v[i] = (i % 37 == 0) ? 0.031f : 0.0f;
    v[star] = 0.007f;
    for (i = 0; i < n; i++) imp[i] = 1.0f;
    code_values(v, NULL, rows, cols, step, 2.0, 0, 0.0, a, NULL, &st);
    TU_CHECK_EQ(a[star], 0); /* dropped without importance */
    code_values(v, imp, rows, cols, step, 2.0, 0, 0.0, b, NULL, &st);
    TU_CHECK(memcmp(a, b, sizeof(int32_t) * n) == 0); /* eta = 1 everywhere: the same */
    for (i = 0; i < n; i++) imp[i] = 3.5f;
    code_values(v, imp, rows, cols, step, 2.0, 0, 0.0, b, NULL, &st);
    TU_CHECK(memcmp(a, b, sizeof(int32_t) * n) == 0); /* normalized to mean 1 */
    imp[star] = 3.5e5f;
    code_values(v, imp, rows, cols, step, 2.0, 0, 0.0, b, NULL, &st);
    TU_CHECK_EQ(b[star], 1); /* kept */

    /* Invalid importance. */
    {
        uint64_t shape[2];
        fc_tensor t;
        uint8_t out[64];
        size_t size, bad;
        shape[0] = rows;
        shape[1] = cols;
        t = tu_tensor(0, 2, shape);
        t.values = v;
        t.importance = imp;
        for (i = 0; i < n; i++) imp[i] = 0.0f;
        TU_CHECK_RC(fc_encode(&t, 1, NULL, out, sizeof out, &size, NULL, &bad),
                    FC_ERR_INVALID_ARGUMENT); /* all zero: no mean to normalize by */
        TU_CHECK_EQ(bad, 0);
        imp[3] = (float)NAN;
        TU_CHECK_RC(fc_encode(&t, 1, NULL, out, sizeof out, &size, NULL, &bad), FC_ERR_NONFINITE);
        imp[3] = -1.0f;
        {
            int rc = fc_encode(&t, 1, NULL, out, sizeof out, &size, NULL, &bad);
            /* negative importance: rejected (reported as NONFINITE today) */
            TU_CHECK(rc == FC_ERR_NONFINITE || rc == FC_ERR_INVALID_ARGUMENT);
        }
    }
    free(v);
    free(imp);
    free(a);
    free(b);
}

/* Levels beyond FC_MAX_LEVEL are reported, at the largest legal level the
 * tensor still codes. */
static void test_overflow(void)
{
    uint64_t shape[1] = {4};
    float v[4] = {0.5f, -1.0f, 0.0f, 1.0f};
    int32_t lv[4];
    fc_tensor t = tu_tensor(0, 1, shape);
    fc_tensor_stats st;
    fc_encode_options o;
    uint8_t out[256];
    size_t size, bad;
    fc_encode_options_init(&o);
    t.values = v;
    t.step = 1e-10; /* 1e10 steps > 2^30 */
    TU_CHECK_RC(fc_encode(&t, 1, &o, out, sizeof out, &size, NULL, &bad), FC_ERR_LEVEL_OVERFLOW);
    TU_CHECK_EQ(bad, 0);
    TU_CHECK_EQ(size, 0);
    /* A huge S makes the derived step too small for the largest weight. */
    t.step = 0.0;
    o.S = UINT32_MAX;
    TU_CHECK_RC(fc_encode(&t, 1, &o, out, sizeof out, &size, NULL, &bad), FC_ERR_LEVEL_OVERFLOW);
    /* Just inside: 2^30 - 64 steps (a float32 value) codes exactly. */
    fc_encode_options_init(&o);
    v[3] = 1073741760.0f;
    t.step = 1.0;
    code_values(v, NULL, 1, 4, 1.0, 0.0, 0, 0.0, lv, NULL, &st);
    TU_CHECK_EQ(lv[3], 1073741760);
    TU_CHECK_EQ(lv[1], -1);
    TU_CHECK_EQ(lv[0], 1); /* 0.5 rounds away from zero */
    /* 2^30 steps: one above FC_MAX_LEVEL. */
    v[3] = 1073741824.0f;
    TU_CHECK_RC(fc_encode(&t, 1, &o, out, sizeof out, &size, NULL, &bad), FC_ERR_LEVEL_OVERFLOW);
}

/* The cost table drives every RDOQ decision, so it must be the same bits on
 * every platform; it is computed with libm's log2 at run time.  The hash
 * below is that of glibc on x86-64.  After an intentional change
 * of the table, update the constant. */
static void test_cost_table_bits(void)
{
    uint32_t h = 2166136261u;
    unsigned i;
    for (i = 0; i <= FC_COST_SIZE; i++) {
        uint32_t u;
        memcpy(&u, &fc_cost[i], 4);
        h = (h ^ u) * 16777619u;
    }
    TU_CHECKF(h == 0xE16E8F23u,
              "fc_cost table hash 0x%08X: either the table was changed on purpose (update the "
              "constant) or this platform's log2() rounds differently, and RDOQ output would "
              "differ from other platforms (a committed generated table would fix that)",
              (unsigned)h);
}

int main(void)
{
    test_step_formula();
    test_rounding();
    test_rdoq();
    test_importance();
    test_overflow();
    test_cost_table_bits();
    return tu_finish("test_quantizer");
}
