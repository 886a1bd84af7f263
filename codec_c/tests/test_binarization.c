/*
 * test_binarization.c - binarize.h: the level binarization (sign, |level| >
 * j flags, Exp-Golomb remainder) and the gap binarization (order-k
 * Exp-Golomb) round trip through encode and decode for edge values (coded
 * magnitudes 1..N+1, around every power of two, up to FC_MAX_LEVEL; gaps up
 * to 2^40 for every order k), malformed streams are rejected, the rate
 * model's fc_cost_level matches the real coded size, and the model's
 * fc_update_level leaves the contexts exactly as fc_enc_level does.
 *
 * The row predictor's arithmetic (predict_kern.h) gives the same state and
 * classes bit for bit in every compiled variant (generic and, on x86 CPUs
 * with AVX2, the AVX2 one).
 *
 * The neighbourhood classes (fc_nbr) are enumerated over their documented
 * ranges rather than derived from neighbours, so this test does not depend
 * on the context-selection rules of contexts.h.
 */
#include "test_util.h"

#include "binarize.h"
#include "predict.h"

typedef struct lvl {
    unsigned neg, cm;
    fc_nbr nb;
} lvl;

static fc_nbr some_nbr(tu_rng *r)
{
    fc_nbr nb;
    nb.sign_ctx = (unsigned)tu_below(r, FC_SIGN_CTX_EXT);
    nb.gtx_class = (unsigned)tu_below(r, FC_GTX_CLASSES_EXT);
    /* (CLASSCTX: a negative level's class may differ) */
    nb.gtx_neg = tu_below(r, 2) ? nb.gtx_class : (unsigned)tu_below(r, FC_GTX_CLASSES_EXT);
    nb.rem_class = (unsigned)tu_below(r, FC_REM_CLASSES);
    return nb;
}

/* Encode the levels in one codeword; decode them from a guarded copy; the
 * decoder's contexts must end equal to the encoder's. */
static void roundtrip_levels(const lvl *v, size_t n, unsigned N, unsigned ws)
{
    fc_buf out;
    fc_rc_enc e;
    fc_rc_dec d;
    fc_ctxset *se = (fc_ctxset *)malloc(sizeof(fc_ctxset));
    fc_ctxset *sd = (fc_ctxset *)malloc(sizeof(fc_ctxset));
    uint8_t *g;
    size_t i;
    TU_CHECK(se && sd);
    memset(&out, 0, sizeof(out));
    fc_ctxset_init(se, ws);
    fc_ctxset_init(sd, ws);
    fc_rc_enc_init(&e, &out);
    for (i = 0; i < n; i++) fc_enc_level(&e, se, v[i].neg, v[i].cm, v[i].nb, N);
    fc_rc_finish(&e);
    g = tu_guarded_copy(out.data, out.size);
    fc_rc_dec_init(&d, g, out.size);
    for (i = 0; i < n; i++) {
        unsigned neg = 2, cm = fc_dec_level(&d, sd, v[i].nb, N, (unsigned)FC_MAX_LEVEL, &neg);
        TU_CHECKF(cm == v[i].cm && neg == v[i].neg, "N=%u level %zu: cm %u/%u sign %u/%u", N, i, cm,
                  v[i].cm, neg, v[i].neg);
    }
    TU_CHECK(fc_rc_dec_ok(&d));
    TU_CHECK(memcmp(se, sd, sizeof(fc_ctxset)) == 0);
    tu_guarded_free(g);
    fc_buf_free(&out);
    free(se);
    free(sd);
}

/* Edge magnitudes for every N: 1..N+1, the remainder's power-of-two
 * boundaries x = 2^k - 1, 2^k, 2^k + 1, and FC_MAX_LEVEL. */
static void test_level_edges(void)
{
    unsigned N;
    for (N = 1; N <= FC_MAX_GTX; N++) {
        lvl *v = (lvl *)calloc(4000, sizeof(lvl));
        size_t n = 0;
        unsigned cm, k;
        tu_rng r = tu_seed(N);
        TU_CHECK(v != NULL);
        for (cm = 1; cm <= N + 2; cm++) {
            v[n].cm = cm;
            v[n].neg = cm & 1u;
            v[n].nb = some_nbr(&r);
            n++;
        }
        for (k = 1; k <= 29; k++) {
            uint64_t base = ((uint64_t)1 << k) + N, c;
            for (c = base - 1; c <= base + 1; c++) {
                if (c > (uint64_t)FC_MAX_LEVEL) continue;
                v[n].cm = (unsigned)c;
                v[n].neg = (unsigned)(c >> 1) & 1u;
                v[n].nb = some_nbr(&r);
                n++;
            }
        }
        v[n].cm = (unsigned)FC_MAX_LEVEL;
        v[n].neg = 1;
        v[n].nb = some_nbr(&r);
        n++;
        /* Every edge once more under every neighbourhood class. */
        {
            size_t m = n, i;
            unsigned s, gc, rc;
            for (s = 0; s < FC_SIGN_CTX; s++)
                for (gc = 0; gc < FC_GTX_CLASSES; gc++)
                    for (rc = 0; rc < FC_REM_CLASSES; rc++)
                        for (i = 0; i < m && n < 4000; i += 7) {
                            v[n] = v[i];
                            v[n].nb.sign_ctx = s;
                            v[n].nb.gtx_class = gc;
                            v[n].nb.gtx_neg = gc;
                            v[n].nb.rem_class = rc;
                            n++;
                        }
        }
        roundtrip_levels(v, n, N, N - 1);
        free(v);
    }
}

/* Random magnitudes from a heavy-tailed distribution, all window sets. */
static void test_level_random(void)
{
    unsigned ws;
    for (ws = 0; ws < 8; ws++) {
        const size_t n = 20000;
        lvl *v = (lvl *)calloc(n, sizeof(lvl));
        tu_rng r = tu_seed(100 + ws);
        size_t i;
        TU_CHECK(v != NULL);
        for (i = 0; i < n; i++) {
            unsigned bits = (unsigned)tu_below(&r, 12);
            v[i].cm = 1u + (unsigned)tu_below(&r, (uint64_t)1 << bits);
            v[i].neg = (unsigned)tu_below(&r, 2);
            v[i].nb = some_nbr(&r);
        }
        roundtrip_levels(v, n, 1 + ws % FC_MAX_GTX, ws);
        free(v);
    }
}

/* A level above cm_max is rejected (returns 0), both inside the flags and in
 * the remainder. */
static void test_level_limit(void)
{
    static const unsigned cms[] = {2, 3, 4, 5, 6, 9, 100, 70000};
    size_t i;
    for (i = 0; i < sizeof cms / sizeof cms[0]; i++) {
        fc_buf out;
        fc_rc_enc e;
        fc_rc_dec d;
        fc_ctxset s;
        fc_nbr nb = {0, 0, 0, 0};
        unsigned neg, N = 4;
        memset(&out, 0, sizeof(out));
        fc_ctxset_init(&s, 0);
        fc_rc_enc_init(&e, &out);
        fc_enc_level(&e, &s, 0, cms[i], nb, N);
        fc_rc_finish(&e);
        fc_ctxset_init(&s, 0);
        fc_rc_dec_init(&d, out.data, out.size);
        TU_CHECK_EQ(fc_dec_level(&d, &s, nb, N, cms[i] - 1, &neg), 0);
        fc_ctxset_init(&s, 0);
        fc_rc_dec_init(&d, out.data, out.size);
        TU_CHECK_EQ(fc_dec_level(&d, &s, nb, N, cms[i], &neg), cms[i]);
        fc_buf_free(&out);
    }
    /* An all-zero payload decodes every context bin as 1: the remainder
     * prefix never ends and the level is rejected, not looped over. */
    {
        uint8_t *zeros = (uint8_t *)tu_guarded_alloc(64);
        fc_rc_dec d;
        fc_ctxset s;
        fc_nbr nb = {0, 0, 0, 0};
        unsigned neg;
        memset(zeros, 0, 64);
        fc_ctxset_init(&s, 0);
        fc_rc_dec_init(&d, zeros, 64);
        TU_CHECK_EQ(fc_dec_level(&d, &s, nb, 4, (unsigned)FC_MAX_LEVEL, &neg), 0);
        tu_guarded_free(zeros);
    }
}

/* The slice's m0 - 1 prefix: order-0 Exp-Golomb in bypass bins. */
static void test_eg0_bypass(void)
{
    uint32_t vals[64];
    size_t n = 0, i;
    unsigned k;
    fc_buf out;
    fc_rc_enc e;
    fc_rc_dec d;
    uint8_t *g;
    vals[n++] = 0;
    for (k = 1; k <= 30; k++) {
        vals[n++] = (1u << k) - 2u; /* x = v + 1 = 2^k - 1: k - 1 prefix ones */
        if (k < 30) vals[n++] = (1u << k) - 1u;
    }
    memset(&out, 0, sizeof(out));
    fc_rc_enc_init(&e, &out);
    for (i = 0; i < n; i++) fc_enc_eg0_bypass(&e, vals[i]);
    fc_rc_finish(&e);
    g = tu_guarded_copy(out.data, out.size);
    fc_rc_dec_init(&d, g, out.size);
    for (i = 0; i < n; i++) {
        uint32_t v = 0;
        TU_CHECK_EQ(fc_dec_eg0_bypass(&d, &v), 0);
        TU_CHECK_EQ(v, vals[i]);
    }
    TU_CHECK(fc_rc_dec_ok(&d));
    tu_guarded_free(g);
    fc_buf_free(&out);
    /* A prefix of 31 ones is longer than any m0 - 1 < 2^30 needs: rejected. */
    memset(&out, 0, sizeof(out));
    fc_rc_enc_init(&e, &out);
    fc_rc_bypass(&e, 0x7FFFFFFFu, 31);
    fc_rc_bypass(&e, 0, 40);
    fc_rc_finish(&e);
    g = tu_guarded_copy(out.data, out.size);
    fc_rc_dec_init(&d, g, out.size);
    {
        uint32_t v;
        TU_CHECK_EQ(fc_dec_eg0_bypass(&d, &v), -1);
    }
    tu_guarded_free(g);
    fc_buf_free(&out);
}

/* Gaps of order k, with the prefix-length class chained as in runs mode. */
static void test_gaps(void)
{
    static const unsigned ks[] = {0, 1, 2, 3, 5, 8, 13, 20, 31};
    size_t ki;
    for (ki = 0; ki < sizeof ks / sizeof ks[0]; ki++) {
        const unsigned k = ks[ki];
        uint64_t gaps[400];
        size_t n = 0, i;
        unsigned j, cls;
        tu_rng r = tu_seed(500 + k);
        fc_buf out;
        fc_rc_enc e;
        fc_rc_dec d;
        fc_ctxset *se = (fc_ctxset *)malloc(sizeof(fc_ctxset));
        fc_ctxset *sd = (fc_ctxset *)malloc(sizeof(fc_ctxset));
        uint8_t *g;
        TU_CHECK(se && sd);
        for (i = 0; i < 4; i++) gaps[n++] = i;
        for (j = 1; j <= 40; j++) {
            uint64_t p = (uint64_t)1 << j;
            gaps[n++] = p - 1;
            gaps[n++] = p;
            gaps[n++] = p + 1;
            /* The order-k prefix boundaries ((2^e - 1) << k). */
            if (j + k <= 44) gaps[n++] = ((p - 1) << k) - 1, gaps[n++] = (p - 1) << k;
        }
        while (n < 400) gaps[n++] = tu_next(&r) >> (24 + tu_below(&r, 40));
        memset(&out, 0, sizeof(out));
        fc_ctxset_init(se, (unsigned)ki & 7u);
        fc_ctxset_init(sd, (unsigned)ki & 7u);
        fc_rc_enc_init(&e, &out);
        cls = 0;
        for (i = 0; i < n; i++) cls = fc_gap_class(fc_enc_gap(&e, se, gaps[i], k, cls));
        fc_rc_finish(&e);
        g = tu_guarded_copy(out.data, out.size);
        fc_rc_dec_init(&d, g, out.size);
        cls = 0;
        for (i = 0; i < n; i++) {
            uint64_t got = 0;
            int ep = fc_dec_gap(&d, sd, k, cls, &got);
            TU_CHECKF(ep >= 0 && got == gaps[i], "k=%u gap %zu: got %llu want %llu", k, i,
                      (unsigned long long)got, (unsigned long long)gaps[i]);
            cls = fc_gap_class((unsigned)ep);
        }
        TU_CHECK(fc_rc_dec_ok(&d));
        TU_CHECK(memcmp(se, sd, sizeof(fc_ctxset)) == 0);
        tu_guarded_free(g);
        fc_buf_free(&out);
        free(se);
        free(sd);
    }
    /* All-zero input: every prefix bin is 1; the decoder stops after
     * FC_MAX_GAP_PREFIX bins with an error. */
    {
        uint8_t *zeros = (uint8_t *)tu_guarded_alloc(64);
        fc_rc_dec d;
        fc_ctxset s;
        uint64_t gap;
        memset(zeros, 0, 64);
        fc_ctxset_init(&s, 0);
        fc_rc_dec_init(&d, zeros, 64);
        TU_CHECK_EQ(fc_dec_gap(&d, &s, 0, 0, &gap), -1);
        /* and a prefix + order that would not fit in 62 bits */
        fc_ctxset_init(&s, 0);
        fc_rc_dec_init(&d, zeros, 64);
        TU_CHECK_EQ(fc_dec_gap(&d, &s, 31, 0, &gap), -1);
        tu_guarded_free(zeros);
    }
}

/* The rate model: cost of each level on the live contexts, summed, against
 * the real codeword size; and fc_update_level == what fc_enc_level does to
 * the contexts, level by level. */
static void test_rate_model(void)
{
    unsigned N;
    for (N = 1; N <= FC_MAX_GTX; N += 3) {
        const size_t n = 30000;
        fc_ctxset *sc = (fc_ctxset *)malloc(sizeof(fc_ctxset));
        fc_ctxset *sm = (fc_ctxset *)malloc(sizeof(fc_ctxset));
        fc_buf out;
        fc_rc_enc e;
        tu_rng r = tu_seed(N);
        double model = 0.0, actual;
        size_t i;
        TU_CHECK(sc && sm);
        memset(&out, 0, sizeof(out));
        fc_ctxset_init(sc, N & 7u);
        fc_ctxset_init(sm, N & 7u);
        fc_rc_enc_init(&e, &out);
        for (i = 0; i < n; i++) {
            /* Geometric magnitudes whose mean depends on the class, like real
             * neighbourhoods; occasionally a large one. */
            fc_nbr nb = some_nbr(&r);
            unsigned cm = 1, neg = tu_below(&r, 4) == 0;
            while (tu_below(&r, 8) < 3u + (nb.gtx_class & 3u)) cm++;
            if (tu_below(&r, 50) == 0) cm += (unsigned)tu_below(&r, 5000);
            model += fc_cost_level(sm, cm, neg, nb, N);
            fc_update_level(sm, neg, cm, nb, N);
            fc_enc_level(&e, sc, neg, cm, nb, N);
            if (memcmp(sc, sm, sizeof(fc_ctxset)) != 0)
                TU_CHECKF(0, "N=%u: contexts differ after level %zu (cm %u)", N, i, cm);
        }
        fc_rc_finish(&e);
        actual = 8.0 * (double)out.size;
        printf("  N=%u: model %.0f bits, coded %.0f bits\n", N, model, actual);
        TU_CHECKF(fabs(model - actual) <= 0.005 * actual + 64.0, "N=%u: model %.0f, coded %.0f", N,
                  model, actual);
        fc_buf_free(&out);
        free(sc);
        free(sm);
    }
}

/* The context offsets of a reference class byte, by table in contexts.h,
 * against the formulas of FORMAT.md §7.5; and the value forms of the
 * classes (fc_sign_class, fc_act_class_v) against their definitions. */
static void test_context_tables(void)
{
    unsigned ref, a;
    int32_t v;
    for (ref = 0; ref < 32; ref++) {
        unsigned rm = ref & 7u, rs = (ref >> 3) & 3u;
        TU_CHECK_EQ(fc_ref_sig_off[ref], (rm > 3u ? 3u : rm) * FC_SIG_CTX);
        TU_CHECK_EQ(fc_ref_gtx_off[ref], (rm > 5u ? 5u : rm) * FC_GTX_CLASSES);
        TU_CHECK_EQ(fc_ref_rem_off[ref], (rm <= 3u ? 0u : rm - 3u > 3u ? 3u : rm - 3u) * FC_REM_CLASSES);
        TU_CHECK_EQ(fc_ref_sign_off[ref], rs * FC_SIGN_CTX);
        TU_CHECK_EQ(fc_ref_agree_off[ref][0], 0u);
        TU_CHECK_EQ(fc_ref_agree_off[ref][1], 0u);
    }
    /* CLASSCTX class bytes (bit 5, FORMAT.md §7.7): significance, magnitude
     * and remainder offsets as without; sign by rs and min(max(rm, 1), 4);
     * greater-than + FC_GTX_CLASSES_ALL when the level's sign agrees with
     * rs (1 negative, 2 positive), twice that when not. */
    for (ref = 32; ref < 64; ref++) {
        unsigned rm = ref & 7u, rs = (ref >> 3) & 3u, m4 = rm < 1u ? 1u : rm > 4u ? 4u : rm, neg;
        TU_CHECK_EQ(fc_ref_sig_off[ref], fc_ref_sig_off[ref - 32]);
        TU_CHECK_EQ(fc_ref_gtx_off[ref], fc_ref_gtx_off[ref - 32]);
        TU_CHECK_EQ(fc_ref_rem_off[ref], fc_ref_rem_off[ref - 32]);
        TU_CHECK_EQ(fc_ref_sign_off[ref],
                    rs == 1u || rs == 2u ? FC_SIGN_CTX_ALL + ((rs - 1u) * 4u + m4 - 1u) * FC_SIGN_CTX : 0u);
        TU_CHECK(fc_ref_sign_off[ref] + FC_SIGN_CTX <= FC_SIGN_CTX_EXT);
        for (neg = 0; neg < 2; neg++)
            TU_CHECK_EQ(fc_ref_agree_off[ref][neg],
                        rs == 1u || rs == 2u ? ((rs == 1u) == (neg == 1u) ? 1u : 2u) * FC_GTX_CLASSES_ALL : 0u);
    }
    for (a = 0; a < 256; a++)
        TU_CHECK_EQ(fc_act_class_v(a), a == 0 ? 0u : a < 32 ? 1u : a < 128 ? 2u : 3u);
    /* the decoder settles runs of empty rows with FC_ACT_ZERO_AFTER: every
     * activity value is 0 after that many decays (and 255 needs them all) */
    for (a = 0; a < 256; a++) {
        unsigned x = a, k;
        for (k = 0; k < FC_ACT_ZERO_AFTER; k++) x = fc_act_next(x, 0);
        TU_CHECK_EQ(x, 0u);
    }
    {
        unsigned x = 255, k;
        for (k = 0; k + 1 < FC_ACT_ZERO_AFTER; k++) x = fc_act_next(x, 0);
        TU_CHECK(x != 0u);
    }
    for (v = -3; v <= 3; v++) TU_CHECK_EQ(fc_sign_class(v), v == 0 ? 0u : v < 0 ? 1u : 2u);
    TU_CHECK_EQ(fc_sign_class(INT32_MIN), 1u);
    TU_CHECK_EQ(fc_sign_class(INT32_MAX), 2u);
}

/* The row predictor's generic and AVX2 variants: a slice of low-rank
 * levels through basis, coefficients, classes and learning in both, state
 * and classes compared after every row (without AVX2: the generic variant
 * alone, checked for a stable state). */
static void pred_same(const fc_pred *a, const fc_pred *b)
{
    const size_t vec = sizeof(float) * (size_t)a->n4 * a->rank;
    TU_CHECK_EQ(a->n, b->n);
    TU_CHECK_EQ(a->nbasis, b->nbasis);
    TU_CHECK(memcmp(a->v, b->v, vec) == 0);
    TU_CHECK(memcmp(a->e, b->e, vec) == 0);
    TU_CHECK(memcmp(a->vv, b->vv, sizeof(a->vv)) == 0);
}

static void test_predict_variants(void)
{
    static const uint64_t colss[] = {1, 7, 8, 13, 64, 100, 384};
    static const unsigned ranks[] = {4, 8};
    tu_rng r = tu_seed(1414);
    const int avx = fc_pred_avx();
    size_t ci, ri;
    if (!avx) printf("test_binarization: no AVX2 variant on this CPU/build; generic only\n");
    for (ci = 0; ci < sizeof(colss) / sizeof(colss[0]); ci++)
        for (ri = 0; ri < 2; ri++) {
            const uint64_t cols = colss[ci], rows = 40;
            fc_pred a, b;
            int32_t *x = (int32_t *)malloc(sizeof(int32_t) * (size_t)cols);
            uint8_t *ca = (uint8_t *)malloc((size_t)cols), *cb = (uint8_t *)malloc((size_t)cols);
            float prof[3][384];
            uint64_t row, c;
            unsigned k;
            TU_CHECK(x && ca && cb);
            TU_CHECK(!fc_pred_init(&a, ranks[ri], cols, 0) && !fc_pred_init(&b, ranks[ri], cols, 0));
            for (k = 0; k < 3; k++)
                for (c = 0; c < cols; c++) prof[k][c] = (float)tu_laplace(&r, 4.0);
            for (row = 0; row < rows; row++) {
                const double w0 = tu_laplace(&r, 2.0), w1 = tu_laplace(&r, 1.0), w2 = tu_laplace(&r, 0.5);
                for (c = 0; c < cols; c++)
                    x[c] = (int32_t)lround(w0 * prof[0][c] + w1 * prof[1][c] + w2 * prof[2][c] +
                                           tu_laplace(&r, 1.0));
                if (row == 5) memset(x, 0, sizeof(int32_t) * (size_t)cols); /* a zero row */
                fc_pk_basis_gen(&a);
                fc_pred_fit(&a, x);
                memcpy(b.q, a.q, sizeof(a.q));
#if FC_PRED_AVX
                if (avx) {
                    fc_pk_basis_avx(&b);
                    pred_same(&a, &b);
                    for (k = 0; k < a.nbasis; k++) {
                        const float *pr[FC_PRED_MAX_RANK];
                        float co[FC_PRED_MAX_RANK];
                        unsigned j, m = 0;
                        for (j = 0; j <= k; j++) {
                            pr[m] = a.e + (size_t)j * a.n4;
                            co[m++] = (float)((double)a.q[j] / FC_PRED_QS);
                        }
                        fc_pk_classes_gen(pr, co, m, cols, ca);
                        fc_pk_classes_avx(pr, co, m, cols, cb);
                        TU_CHECK(memcmp(ca, cb, (size_t)cols) == 0);
                    }
                    fc_pk_learn_gen(&a, x);
                    fc_pk_learn_avx(&b, x);
                    pred_same(&a, &b);
                    continue;
                }
#endif
                fc_pk_learn_gen(&a, x);
                fc_pk_basis_gen(&b);
                fc_pk_learn_gen(&b, x);
                pred_same(&a, &b);
            }
            fc_pred_free(&a);
            fc_pred_free(&b);
            free(x);
            free(ca);
            free(cb);
        }
}

int main(void)
{
    test_predict_variants();
    test_context_tables();
    test_level_edges();
    test_level_random();
    test_level_limit();
    test_eg0_bypass();
    test_gaps();
    test_rate_model();
    return tu_finish("test_binarization");
}
