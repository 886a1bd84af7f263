/*
 * predict.h - the low-rank row predictor of PREDICT slices (FORMAT.md §7.6).
 *
 * The update of a dense layer is close to a sum of a few outer products
 * (a gradient is a sum of outer products, and a few steps add a few of
 * them), so a row is close to a combination of a few "column profiles".
 * The predictor learns up to FC_PRED_MAX_RANK such profiles from the rows
 * already coded in the slice (candid covariance-free incremental PCA), the
 * encoder sends per non-empty row the row's coordinates on them (a few
 * small integers), and the prediction of each element, as a class byte of
 * FORMAT.md §7.5, selects the contexts that a reference tensor would.
 *
 * Encoder and decoder run exactly the same double-precision operations in
 * the same order (+, -, *, / and sqrt only, all correctly rounded in IEEE
 * 754, no contraction: the library is built with -ffp-contract=off), so
 * both compute the same classes.  The work is per row, O(cols * rank^2),
 * outside the per-bin loops.
 */
#ifndef FC_PREDICT_H
#define FC_PREDICT_H

#include <math.h>

#include "binarize.h"

#define FC_PRED_MAX_RANK FC_PRED_RANKS
/* Coefficients are integers in units of 1/FC_PRED_QS level per unit-RMS
 * profile element, |q| < 2^FC_PRED_MAX_PREFIX. */
#define FC_PRED_QS 2.0
#define FC_PRED_MAX_PREFIX 20u

/* Profiles and components are float32 vectors padded to a multiple of 8
 * (the padding stays 0); the loops work on 8 lanes, with GCC's vector
 * extension where available and the same operations lane by lane
 * elsewhere: either way every lane computes the same IEEE single-precision
 * results. */
#if defined(__GNUC__) || defined(__clang__)
typedef float fc_v8 __attribute__((vector_size(32)));
typedef int32_t fc_v8i __attribute__((vector_size(32)));
typedef uint8_t fc_v32b __attribute__((vector_size(32)));
/* The byte of each int32 lane that holds its low 8 bits, in lane order. */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define FC_LOWBYTE 3
#else
#define FC_LOWBYTE 0
#endif
/* FC_V32B_LOWBYTES(b): the low byte of each of b's eight int32 lanes in its
 * first eight bytes (the rest unspecified); GCC and clang spell the byte
 * shuffle differently. */
#if defined(__clang__)
#define FC_V32B_LOWBYTES(b)                                                                       \
    __builtin_shufflevector((b), (b), FC_LOWBYTE, 4 + FC_LOWBYTE, 8 + FC_LOWBYTE, 12 + FC_LOWBYTE, \
                            16 + FC_LOWBYTE, 20 + FC_LOWBYTE, 24 + FC_LOWBYTE, 28 + FC_LOWBYTE, -1, -1, \
                            -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,  \
                            -1, -1, -1, -1)
#else
static const fc_v32b fc_v32b_lowbytes = {FC_LOWBYTE, 4 + FC_LOWBYTE, 8 + FC_LOWBYTE, 12 + FC_LOWBYTE,
                                         16 + FC_LOWBYTE, 20 + FC_LOWBYTE, 24 + FC_LOWBYTE, 28 + FC_LOWBYTE};
#define FC_V32B_LOWBYTES(b) __builtin_shuffle((b), fc_v32b_lowbytes)
#endif
#define FC_PRED_SIMD 1
#else
#define FC_PRED_SIMD 0
#endif
/* x86 with GCC or clang: a second variant of the per-row arithmetic for
 * AVX2 (8 lanes in one register), chosen at run time by the CPU (unless
 * built with -DFC_NO_CPU_DISPATCH, or for a CPU with AVX2 anyway). */
#if FC_PRED_SIMD && (defined(__x86_64__) || defined(__i386__)) && !defined(__AVX2__) && \
    !defined(FC_NO_CPU_DISPATCH)
#define FC_PRED_AVX 1
#else
#define FC_PRED_AVX 0
#endif

typedef struct fc_pred {
    unsigned rank;     /* 1 .. FC_PRED_MAX_RANK */
    unsigned nbasis;   /* profiles of the current row (0: no prediction) */
    uint64_t cols;
    uint64_t n4;       /* cols rounded up to a multiple of 8 */
    uint64_t n;        /* non-empty rows learnt */
    float *v;          /* rank x n4: the learnt components (unnormalized) */
    double vv[FC_PRED_MAX_RANK]; /* their squared norms */
    float *e;          /* rank x n4: the profiles, orthonormalized and
                          scaled to unit RMS per element */
    float *u;          /* n4: scratch */
    int32_t q[FC_PRED_MAX_RANK]; /* the current row's coefficients */
    int rowscale;      /* ROWSCALE: a scale class per non-empty row */
    unsigned g;        /* the current row's scale class 0..15 */
} fc_pred;

/* Returns 0, or -1 when out of memory (then fc_pred_free is still safe). */
static inline int fc_pred_init(fc_pred *p, unsigned rank, uint64_t cols, int rowscale)
{
    memset(p, 0, sizeof(*p));
    p->rank = rank;
    p->rowscale = rowscale;
    p->cols = cols;
    p->n4 = (cols + 7u) & ~(uint64_t)7u;
    p->v = (float *)calloc((size_t)p->n4 * rank, sizeof(float));
    p->e = (float *)calloc((size_t)p->n4 * rank, sizeof(float));
    p->u = (float *)calloc((size_t)p->n4, sizeof(float));
    return p->v && p->e && p->u ? 0 : -1;
}

static inline void fc_pred_free(fc_pred *p)
{
    free(p->v);
    free(p->e);
    free(p->u);
    p->v = p->e = p->u = NULL;
}

/* The eight float32 lane sums of a dot product added in double as
 * ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)) (FORMAT.md §7.6). */
static inline double fc_pred_lanes(const float *l)
{
    return (((double)l[0] + (double)l[1]) + ((double)l[2] + (double)l[3])) +
           (((double)l[4] + (double)l[5]) + ((double)l[6] + (double)l[7]));
}

/* The per-row arithmetic (predict_kern.h): a generic variant, and on x86 an
 * AVX one. */
#define FC_PK(name) name##_gen
#define FC_PK_ATTR
#include "predict_kern.h"
#undef FC_PK
#undef FC_PK_ATTR
#if FC_PRED_AVX
#define FC_PK(name) name##_avx
#define FC_PK_ATTR __attribute__((target("avx2")))
#include "predict_kern.h"
#undef FC_PK
#undef FC_PK_ATTR
/* Whether this CPU (and OS) runs AVX code. */
static inline int fc_pred_avx(void)
{
    return __builtin_cpu_supports("avx2");
}
#else
static inline int fc_pred_avx(void)
{
    return 0;
}
#endif

static inline double fc_pred_dot(const float *a, const float *b, uint64_t n4)
{
    return fc_pk_dot_gen(a, b, n4);
}

static inline void fc_pred_axpby(float a, const float *x, float b, float *y, uint64_t n4)
{
    fc_pk_axpby_gen(a, x, b, y, n4);
}

static inline void fc_pred_load(fc_pred *p, const int32_t *x)
{
    fc_pk_load_gen(p->u, x, p->cols);
}

/* The profiles of the next row: the learnt components, orthonormalized
 * (Gram-Schmidt in order; a component that vanishes is skipped) and scaled
 * by sqrt(cols).  They are renewed before the rows n = 1 .. 16 and then
 * before every 8th (n non-empty rows learnt), and kept in between. */
static inline void fc_pred_basis(fc_pred *p)
{
    if (p->n > 16 && (p->n & 7u)) return;
#if FC_PRED_AVX
    if (fc_pred_avx()) {
        fc_pk_basis_avx(p);
        return;
    }
#endif
    fc_pk_basis_gen(p);
}

/* The prediction y = sum_k (q_k / FC_PRED_QS) * profile_k of the current
 * row into p->u (float32, in profile order, profiles with q_k = 0 left
 * out; the same sums as fc_pred_classes); returns the number of profiles
 * used. */
static inline unsigned fc_pred_predict(fc_pred *p)
{
    const uint64_t n4 = p->n4;
    unsigned k, m = 0;
    memset(p->u, 0, sizeof(float) * (size_t)n4);
    for (k = 0; k < p->nbasis; k++) {
        if (!p->q[k]) continue;
        fc_pred_axpby((float)((double)p->q[k] / FC_PRED_QS), p->e + (size_t)k * n4, 1.0f, p->u, n4);
        m++;
    }
    return m;
}

/* Encoder: the coefficients of row x (levels) on the current profiles,
 * least squares, in units of 1/FC_PRED_QS, rounded half away from zero;
 * with ROWSCALE the row's scale class g, the number of the thresholds
 * 2^(j - 4.5), j = 1 .. 15, that the mean squared residual x - prediction
 * reaches (so 2^((g - 4) / 2) is its RMS to half an octave). */
static inline void fc_pred_fit(fc_pred *p, const int32_t *x)
{
    const double lim = (double)((1u << FC_PRED_MAX_PREFIX) - 1u);
    unsigned k;
    fc_pred_load(p, x);
    for (k = 0; k < p->nbasis; k++) {
        double a = fc_pred_dot(p->u, p->e + (size_t)k * p->n4, p->n4) / (double)p->cols * FC_PRED_QS;
        double r = floor(fabs(a) + 0.5);
        if (r > lim) r = lim;
        p->q[k] = (int32_t)(a < 0.0 ? -r : r);
    }
    if (p->rowscale) {
        double ss = 0.0;
        uint64_t c;
        unsigned j;
        fc_pred_predict(p);
        for (c = 0; c < p->cols; c++) {
            double d = (double)x[c] - (double)p->u[c];
            ss += d * d;
        }
        ss /= (double)p->cols;
        p->g = 0;
        for (j = 1; j <= 15; j++) p->g += ss >= ldexp(0.70710678118654752440, (int)j - 4);
    }
}

/* ROWSCALE rows: the class bytes from the prediction (fc_pred_predict) and
 * the row's scale class: the magnitude class of sqrt(y^2 + 2^(g - 4)) by
 * the thresholds of fc_ref_class (squared), the sign class of y as
 * fc_class_of. */
static inline void fc_pred_scale_classes(fc_pred *p, uint8_t *cls)
{
    const float *y = p->u;
    const float s2 = ldexpf(1.0f, (int)p->g - 4);
    uint64_t c;
    fc_pred_predict(p);
    for (c = 0; c < p->cols; c++) {
        float v = y[c], e2 = v * v + s2, t = fabsf(v) + 0.5f;
        unsigned mm = (unsigned)(e2 >= 0.25f) + (unsigned)(e2 >= 2.25f) + (unsigned)(e2 >= 12.25f) +
                      (unsigned)(e2 >= 56.25f) + (unsigned)(e2 >= 240.25f) + (unsigned)(e2 >= 992.25f) +
                      (unsigned)(e2 >= 4032.25f);
        unsigned rs = t >= 1.0f ? (v < 0.0f ? 1u : 2u) : 0u;
        cls[c] = (uint8_t)(mm | rs << 3);
    }
}

/* The class byte of every column of the current row from its coefficients:
 * prediction y = sum_k (q_k / FC_PRED_QS) * profile_k (float32, in profile
 * order, profiles with q_k = 0 left out), then fc_class_of(y); ROWSCALE
 * rows: fc_pred_scale_classes.  Returns 0 when every class is 0. */
static inline int fc_pred_classes(fc_pred *p, uint8_t *cls)
{
    const uint64_t n4 = p->n4;
    const float *prof[FC_PRED_MAX_RANK];
    float coef[FC_PRED_MAX_RANK];
    unsigned k, m = 0;
    if (p->rowscale) {
        fc_pred_scale_classes(p, cls);
        return 1;
    }
    for (k = 0; k < p->nbasis; k++) {
        if (!p->q[k]) continue;
        prof[m] = p->e + (size_t)k * n4;
        coef[m] = (float)((double)p->q[k] / FC_PRED_QS);
        m++;
    }
    if (!m) return 0;
    /* One pass: per element the sum over the profiles in order, each step
     * the rounded product plus 1 * the sum (as fc_pred_axpby(q, e, 1, acc)
     * from acc = 0 would do, profile after profile), then the class. */
#if FC_PRED_AVX
    if (fc_pred_avx()) {
        fc_pk_classes_avx(prof, coef, m, p->cols, cls);
        return 1;
    }
#endif
    fc_pk_classes_gen(prof, coef, m, p->cols, cls);
    return 1;
}

/* After a non-empty row x: one step of candid covariance-free incremental
 * PCA with deflation (u = x, then for k = 0, 1, ...):
 *   the k-th non-empty row (or a component whose norm is 0) starts
 *   component k as u, and the step ends there;
 *   otherwise v_k <- w1 v_k + w2 u with w1 = (n-1)/n, w2 = (u.v_k) /
 *   sqrt(v_k.v_k) / n, then u <- u - d v_k with d = (u.v_k) / (v_k.v_k) of
 *   the new v_k (v_k.v_k and u.u are carried algebraically in double, not
 *   recomputed). */
static inline void fc_pred_learn(fc_pred *p, const int32_t *x)
{
#if FC_PRED_AVX
    if (fc_pred_avx()) {
        fc_pk_learn_avx(p, x);
        return;
    }
#endif
    fc_pk_learn_gen(p, x);
}

/* The coefficients of a row: per profile k, a zero flag, the sign and
 * |q| - 1 as order-0 Exp-Golomb (prefix context-coded, suffix bypass). */
static inline void fc_pred_enc_coefs(fc_rc_enc *e, fc_ctxset *s, const fc_pred *p)
{
    unsigned k;
    for (k = 0; k < p->nbasis; k++) {
        fc_ctx *cx = s->pcoef[k];
        int32_t q = p->q[k];
        uint32_t x, ep, j;
        fc_rc_encode(e, &cx[0], q != 0);
        if (!q) continue;
        fc_rc_encode(e, &cx[1], q < 0);
        x = fc_abs32(q); /* x - 1 + 1 */
        ep = fc_ilog2_32(x);
        for (j = 0; j < ep; j++) fc_rc_encode(e, &cx[2 + fc_min_u(j, FC_PRED_CTX - 3)], 1);
        fc_rc_encode(e, &cx[2 + fc_min_u(ep, FC_PRED_CTX - 3)], 0);
        fc_rc_bypass(e, x, ep);
    }
    if (p->rowscale) {
        unsigned node = 1, b;
        for (b = 4; b-- > 0;) {
            unsigned bit = (p->g >> b) & 1u;
            fc_rc_encode(e, &s->pscale[node], bit);
            node = 2 * node + bit;
        }
    }
}

/* Returns 0, or -1 when the stream is malformed. */
static inline int fc_pred_dec_coefs(fc_rc_dec *d, fc_ctxset *s, fc_pred *p)
{
    unsigned k;
    for (k = 0; k < p->nbasis; k++) {
        fc_ctx *cx = s->pcoef[k];
        unsigned neg, ep;
        uint32_t x;
        p->q[k] = 0;
        if (!fc_rc_decode(d, &cx[0])) continue;
        neg = fc_rc_decode(d, &cx[1]);
        for (ep = 0; fc_rc_decode(d, &cx[2 + fc_min_u(ep, FC_PRED_CTX - 3)]); ep++)
            if (ep + 1 >= FC_PRED_MAX_PREFIX) return -1;
        x = (uint32_t)(((uint64_t)1 << ep) | fc_rc_bypass_dec(d, ep));
        p->q[k] = neg ? -(int32_t)x : (int32_t)x;
    }
    if (p->rowscale) {
        unsigned node = 1, b;
        for (b = 0; b < 4; b++) node = 2 * node + fc_rc_decode(d, &s->pscale[node]);
        p->g = node - 16u;
    }
    return 0;
}

#endif /* FC_PREDICT_H */
