/*
 * test_estimator.c - the two-rate adaptive probability estimator
 * (rangecoder.h: fc_ctx_init / fc_ctx_p1 / fc_ctx_update) and the rate
 * model's cost table: the documented update rule bit for bit (an
 * independent decoder must reproduce it), warm-up on cold contexts,
 * convergence to the source probability for each of the 8 window sets,
 * the clamp [16, 65520], and no stall of the slow windows at p ~ 0.001
 * (coding cost near the entropy).
 */
#include "test_util.h"

#include "rangecoder.h"

/* The window sets as FORMAT.md documents them. */
static const unsigned expected_sets[8][2] = {
    {4, 7}, {5, 8}, {4, 6}, {5, 10}, {6, 10}, {3, 6}, {4, 9}, {7, 10},
};

/* The update rule written out from FORMAT.md, independently of the
 * library: 31-bit states, effective shift min(shift, 1 + floor(log2(n+1)))
 * for the first 1024 bins, p1 = clamp((fast + slow) >> 16, 16, 65520). */
typedef struct ref_ctx {
    uint32_t fast, slow, n;
    unsigned sf, ss;
} ref_ctx;

static void ref_init(ref_ctx *c, unsigned ws)
{
    c->fast = c->slow = 1u << 30;
    c->n = 0;
    c->sf = expected_sets[ws][0];
    c->ss = expected_sets[ws][1];
}

static unsigned floor_log2(uint32_t x)
{
    unsigned r = 0;
    while (x >>= 1) r++;
    return r;
}

static void ref_update(ref_ctx *c, unsigned bin)
{
    unsigned sf = c->sf, ss = c->ss;
    if (c->n < 1024) {
        unsigned w = 1 + floor_log2(c->n + 1);
        if (w < sf) sf = w;
        if (w < ss) ss = w;
        c->n++;
    }
    if (bin) {
        c->fast += ((1u << 31) - c->fast) >> sf;
        c->slow += ((1u << 31) - c->slow) >> ss;
    } else {
        c->fast -= c->fast >> sf;
        c->slow -= c->slow >> ss;
    }
}

static uint32_t ref_p1(const ref_ctx *c)
{
    uint32_t p = (c->fast + c->slow) >> 16;
    return p < 16 ? 16 : p > 65520 ? 65520 : p;
}

static void test_rule(void)
{
    unsigned ws;
    for (ws = 0; ws < 8; ws++) {
        fc_ctx c;
        ref_ctx r;
        tu_rng g = tu_seed(ws);
        int i;
        TU_CHECK_EQ(fc_window_sets[ws][0], expected_sets[ws][0]);
        TU_CHECK_EQ(fc_window_sets[ws][1], expected_sets[ws][1]);
        fc_ctx_init(&c, ws);
        ref_init(&r, ws);
        TU_CHECK_EQ(fc_ctx_p1(&c), 32768);
        for (i = 0; i < 5000; i++) {
            /* Phases of different skew, so both clamp ends are visited. */
            uint64_t q = (i / 500) % 4 == 0 ? 2 : (i / 500) % 4 == 1 ? 65534 : 32768;
            unsigned bin = tu_below(&g, 65536) < q;
            fc_ctx_update(&c, bin);
            ref_update(&r, bin);
            TU_CHECKF(c.fast == r.fast && c.slow == r.slow && fc_ctx_p1(&c) == ref_p1(&r),
                      "window set %u, bin %d", ws, i);
        }
    }
}

/* Warm-up: a cold context learns like a count-based estimator. */
static void test_warmup(void)
{
    unsigned ws;
    for (ws = 0; ws < 8; ws++) {
        fc_ctx c;
        int i;
        /* The first bin moves the estimate half way (shift 1). */
        fc_ctx_init(&c, ws);
        fc_ctx_update(&c, 1);
        TU_CHECK_EQ(fc_ctx_p1(&c), 49152);
        fc_ctx_init(&c, ws);
        fc_ctx_update(&c, 0);
        TU_CHECK_EQ(fc_ctx_p1(&c), 16384);
        /* Eight 1s: above 0.85 for every set.  Without warm-up a slow
         * window of 2^7 would still be near 0.53. */
        fc_ctx_init(&c, ws);
        for (i = 0; i < 8; i++) fc_ctx_update(&c, 1);
        TU_CHECKF(fc_ctx_p1(&c) > (uint32_t)(0.85 * 65536), "set %u: p1 = %u", ws,
                  (unsigned)fc_ctx_p1(&c));
        /* Alternating bins keep a cold context near 1/2. */
        fc_ctx_init(&c, ws);
        for (i = 0; i < 64; i++) fc_ctx_update(&c, (unsigned)i & 1u);
        TU_CHECK(fc_ctx_p1(&c) > 24000 && fc_ctx_p1(&c) < 41000);
        /* The warm-up ends with the window set's shifts once 1 + ilog2(n + 1)
         * reaches the slow shift (n = 2^(slow - 1) - 1 bins), long before
         * the documented count of 1024 where the rule stops looking. */
        fc_ctx_init(&c, ws);
        for (i = 0; i < (1 << (expected_sets[ws][1] - 1)) - 2; i++) fc_ctx_update(&c, 0);
        TU_CHECK(fc_ctx_warming(&c));
        fc_ctx_update(&c, 0);
        TU_CHECK(!fc_ctx_warming(&c));
        TU_CHECK_EQ(c.left, FC_CTX_STEADY);
        TU_CHECK(c.sf == expected_sets[ws][0] && c.ss == expected_sets[ws][1]);
        for (i = 0; i < 3000; i++) fc_ctx_update(&c, 0);
        TU_CHECK(!fc_ctx_warming(&c));
        TU_CHECK(c.sf == expected_sets[ws][0] && c.ss == expected_sets[ws][1]);
        /* the count of a steady context reaching 0 (after 2^32 - 1 bins)
         * steps the warm-up again: the shifts stay the window set's */
        c.left = 1;
        fc_ctx_update(&c, 1);
        TU_CHECK_EQ(c.left, FC_CTX_STEADY);
        TU_CHECK(c.sf == expected_sets[ws][0] && c.ss == expected_sets[ws][1]);
        TU_CHECK_EQ(FC_WARMUP_COUNT, 1024);
    }
}

/* Each window set converges to the source probability, and follows a
 * change of the source within a few slow windows. */
static void test_convergence(void)
{
    static const double ps[] = {0.02, 0.1, 0.3, 0.5, 0.7, 0.9, 0.98};
    unsigned ws;
    size_t pi;
    for (ws = 0; ws < 8; ws++) {
        for (pi = 0; pi < sizeof ps / sizeof ps[0]; pi++) {
            fc_ctx c;
            tu_rng g = tu_seed(100 * ws + pi);
            const int n = 40000;
            double sum = 0.0, mean;
            int i;
            fc_ctx_init(&c, ws);
            for (i = 0; i < n; i++) {
                if (i >= n / 2) sum += fc_ctx_p1(&c) / 65536.0;
                fc_ctx_update(&c, tu_unit(&g) < ps[pi]);
            }
            mean = sum / (n / 2);
            TU_CHECKF(fabs(mean - ps[pi]) < 0.01, "set %u, p %.2f: mean estimate %.4f", ws, ps[pi],
                      mean);
            /* Switch the source to 1 - p and wait 4 slow windows. */
            for (i = 0; i < 4 << expected_sets[ws][1]; i++) fc_ctx_update(&c, tu_unit(&g) >= ps[pi]);
            sum = 0.0;
            for (i = 0; i < 2000; i++) {
                sum += fc_ctx_p1(&c) / 65536.0;
                fc_ctx_update(&c, tu_unit(&g) >= ps[pi]);
            }
            TU_CHECKF(fabs(sum / 2000 - (1.0 - ps[pi])) < 0.03, "set %u after switch: %.4f", ws,
                      sum / 2000);
        }
    }
}

/* The coding probability never leaves [16, 65520], however long the run. */
static void test_clamp(void)
{
    unsigned ws, bin;
    for (ws = 0; ws < 8; ws++) {
        for (bin = 0; bin < 2; bin++) {
            fc_ctx c;
            int i;
            fc_ctx_init(&c, ws);
            for (i = 0; i < 200000; i++) {
                fc_ctx_update(&c, bin);
                TU_CHECK(c.fast <= (1u << 31) && c.slow <= (1u << 31));
            }
            TU_CHECK_EQ(fc_ctx_p1(&c), bin ? 65520 : 16);
            /* One surprise bin later the estimate moves again. */
            fc_ctx_update(&c, !bin);
            TU_CHECK(bin ? fc_ctx_p1(&c) < 65520 : fc_ctx_p1(&c) > 16);
        }
    }
}

/* A sparse source (p = 0.001) coded through one adaptive context: the
 * 31-bit states keep the slow windows moving, so the cost stays within a
 * few percent of the empirical entropy (a 16-bit state with a 2^10 window
 * would stall at p >= 1/64 and cost about twice the entropy). */
static void test_sparse_cost(void)
{
    unsigned ws;
    const size_t n = 400000;
    for (ws = 0; ws < 8; ws++) {
        fc_ctx c;
        fc_buf out;
        fc_rc_enc e;
        tu_rng g = tu_seed(3);
        size_t i, ones = 0;
        double q, entropy_bytes, mean = 0.0, ratio;
        uint8_t *bins = (uint8_t *)malloc(n);
        TU_CHECK(bins != NULL);
        memset(&out, 0, sizeof(out));
        fc_ctx_init(&c, ws);
        fc_rc_enc_init(&e, &out);
        for (i = 0; i < n; i++) {
            bins[i] = tu_unit(&g) < 0.001;
            ones += bins[i];
            if (i >= n / 2) mean += fc_ctx_p1(&c);
            fc_rc_encode(&e, &c, bins[i]);
        }
        fc_rc_finish(&e);
        q = (double)ones / (double)n;
        entropy_bytes = -(q * log2(q) + (1 - q) * log2(1 - q)) * (double)n / 8.0;
        mean /= (double)(n / 2);
        ratio = (double)out.size / entropy_bytes;
        printf("  window set %u (%u,%u): %zu bytes, entropy %.1f (x%.3f)\n", ws,
               expected_sets[ws][0], expected_sets[ws][1], out.size, entropy_bytes, ratio);
        TU_CHECKF(ratio < (expected_sets[ws][1] >= 9 ? 1.12 : 1.20), "set %u: x%.3f", ws, ratio);
        TU_CHECKF(mean > 0.5 * q * 65536 && mean < 1.5 * q * 65536, "set %u: mean p1 %.1f, q %.1f",
                  ws, mean, q * 65536);
        /* And the codeword decodes. */
        {
            fc_rc_dec d;
            uint8_t *gbuf = tu_guarded_copy(out.data, out.size);
            fc_ctx_init(&c, ws);
            fc_rc_dec_init(&d, gbuf, out.size);
            for (i = 0; i < n; i++)
                if (fc_rc_decode(&d, &c) != bins[i]) TU_CHECKF(0, "set %u: bin %zu", ws, i);
            TU_CHECK(fc_rc_dec_ok(&d));
            tu_guarded_free(gbuf);
        }
        fc_buf_free(&out);
        free(bins);
    }
}

/* The rate model's table: -log2 of the centre of the probability's bucket
 * of 16, so its error is at most log2(1 + 8 / bucket start) bits (0.58 bits
 * at the clamp end p1 = 16, below 0.01 bits from p1 = 1024 on). */
static void test_cost_table(void)
{
    uint32_t p;
    for (p = FC_PROB_MIN; p <= FC_PROB_MAX; p++) {
        uint32_t q = 65536u - p;
        double exact1 = -log2(p / 65536.0), exact0 = -log2(q / 65536.0);
        fc_ctx c;
        fc_ctx_init(&c, 0);
        c.fast = c.slow = p << 15;
        TU_CHECKF(fabs(fc_ctx_cost(&c, 1) - exact1) <= log2(1.0 + 8.0 / (p & ~15u)) + 1e-5,
                  "p1 %u", (unsigned)p);
        TU_CHECKF(fabs(fc_ctx_cost(&c, 0) - exact0) <= log2(1.0 + 8.0 / (q & ~15u)) + 1e-5,
                  "p1 %u", (unsigned)p);
        if (p >= 1024) TU_CHECK(fabs(fc_ctx_cost(&c, 1) - exact1) < 0.012);
    }
}

int main(void)
{
    test_rule();
    test_warmup();
    test_convergence();
    test_clamp();
    test_sparse_cost();
    test_cost_table();
    return tu_finish("test_estimator");
}
