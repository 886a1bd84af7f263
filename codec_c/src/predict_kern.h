/*
 * predict_kern.h - the per-row arithmetic of the row predictor (predict.h),
 * written once and compiled once per instruction set: predict.h includes
 * this file with FC_PK(name) naming the variant's functions and FC_PK_ATTR
 * their target attribute (nothing for the generic variant; on x86 a second
 * variant for AVX, chosen at run time).  No include guard, on purpose; it
 * uses the fc_pred type and vector types of predict.h.
 *
 * Every variant computes the same IEEE single-precision operations in the
 * same order lane by lane (8 lanes: the lane sums of FORMAT.md §7.6), so
 * the results are identical bit for bit; the AVX variant does each
 * 8-lane operation as one instruction instead of two.
 */

/* Dot product of two padded vectors: eight lane sums in float32 (lane j
 * takes the elements i with i mod 8 = j, in order), then added in double as
 * ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)). */
static inline FC_PK_ATTR double FC_PK(fc_pk_dot)(const float *a, const float *b, uint64_t n4)
{
    uint64_t i;
    float l[8];
#if FC_PRED_SIMD
    fc_v8 s = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    for (i = 0; i < n4; i += 8) {
        fc_v8 x, y;
        memcpy(&x, a + i, 32);
        memcpy(&y, b + i, 32);
        s += x * y;
    }
    memcpy(l, &s, 32);
#else
    unsigned j;
    for (j = 0; j < 8; j++) l[j] = 0.0f;
    for (i = 0; i < n4; i += 8)
        for (j = 0; j < 8; j++) l[j] += a[i + j] * b[i + j];
#endif
    return fc_pred_lanes(l);
}

/* y[i] = a * x[i] + b * y[i] over a padded vector (products rounded, then
 * the sum: no contraction). */
static inline FC_PK_ATTR void FC_PK(fc_pk_axpby)(float a, const float *x, float b, float *y, uint64_t n4)
{
    uint64_t i;
#if FC_PRED_SIMD
    const fc_v8 va = {a, a, a, a, a, a, a, a}, vb = {b, b, b, b, b, b, b, b};
    for (i = 0; i < n4; i += 8) {
        fc_v8 xv, yv;
        memcpy(&xv, x + i, 32);
        memcpy(&yv, y + i, 32);
        yv = va * xv + vb * yv;
        memcpy(y + i, &yv, 32);
    }
#else
    for (i = 0; i < n4; i++) y[i] = a * x[i] + b * y[i];
#endif
}

/* v[i] = a * u[i] + b * v[i], then u[i] = c * v[i] + 1 * u[i] (with the
 * new v[i]), over padded vectors: axpby(a, u, b, v) followed by axpby(c,
 * v, 1, u), element by element in one pass.  With w non-NULL it also
 * returns dot(u, w) of the new u (the same lane sums as fc_pk_dot after
 * the pass), else 0. */
static inline FC_PK_ATTR double FC_PK(fc_pk_axpby2)(float a, float b, float c, float *u, float *v,
                                                   const float *w, uint64_t n4)
{
    uint64_t i;
    float l[8];
#if FC_PRED_SIMD
    const fc_v8 va = {a, a, a, a, a, a, a, a}, vb = {b, b, b, b, b, b, b, b};
    const fc_v8 vc = {c, c, c, c, c, c, c, c};
    const fc_v8 one = {1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f};
    /* without w the sums are taken against v and dropped (one loop) */
    const float *const wp = w ? w : v;
    fc_v8 s = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    for (i = 0; i < n4; i += 8) {
        fc_v8 uv, vv, wv;
        memcpy(&uv, u + i, 32);
        memcpy(&vv, v + i, 32);
        vv = va * uv + vb * vv;
        uv = vc * vv + one * uv;
        memcpy(v + i, &vv, 32);
        memcpy(u + i, &uv, 32);
        memcpy(&wv, wp + i, 32);
        s += uv * wv;
    }
    memcpy(l, &s, 32);
#else
    unsigned j;
    for (j = 0; j < 8; j++) l[j] = 0.0f;
    for (i = 0; i < n4; i++) {
        v[i] = a * u[i] + b * v[i];
        u[i] = c * v[i] + 1.0f * u[i];
        if (w) l[i & 7u] += u[i] * w[i];
    }
#endif
    if (!w) return 0.0;
    return fc_pred_lanes(l);
}

/* The padded row x (levels) as floats into u (the padding stays 0). */
static inline FC_PK_ATTR void FC_PK(fc_pk_load)(float *u, const int32_t *x, uint64_t n)
{
    uint64_t c = 0;
#if FC_PRED_SIMD
    for (; c + 8 <= n; c += 8) {
        fc_v8i xi;
        fc_v8 xf;
        memcpy(&xi, x + c, 32);
        xf = __builtin_convertvector(xi, fc_v8);
        memcpy(u + c, &xf, 32);
    }
#endif
    for (; c < n; c++) u[c] = (float)x[c];
}

/* y[i] = a * x[i] + 1 * y[i] over padded vectors (as fc_pk_axpby(a, x, 1,
 * y)), returning dot(y, w) of the new y (w = y: its squared norm): the
 * same lane sums as fc_pk_dot after the pass. */
static inline FC_PK_ATTR double FC_PK(fc_pk_axpy_dot)(float a, const float *x, float *y, const float *w,
                                                     uint64_t n4)
{
    uint64_t i;
    float l[8];
#if FC_PRED_SIMD
    const fc_v8 va = {a, a, a, a, a, a, a, a};
    const fc_v8 one = {1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f};
    fc_v8 s = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    for (i = 0; i < n4; i += 8) {
        fc_v8 xv, yv, wv;
        memcpy(&xv, x + i, 32);
        memcpy(&yv, y + i, 32);
        yv = va * xv + one * yv;
        memcpy(y + i, &yv, 32);
        memcpy(&wv, w + i, 32);
        s += yv * wv;
    }
    memcpy(l, &s, 32);
#else
    unsigned j;
    for (j = 0; j < 8; j++) l[j] = 0.0f;
    for (i = 0; i < n4; i++) {
        y[i] = a * x[i] + 1.0f * y[i];
        l[i & 7u] += y[i] * w[i];
    }
#endif
    return fc_pred_lanes(l);
}

/* y = x over padded vectors, returning dot(y, w) (w = y: the squared norm),
 * the lane sums of fc_pk_dot. */
static inline FC_PK_ATTR double FC_PK(fc_pk_copy_dot)(const float *x, float *y, const float *w, uint64_t n4)
{
    uint64_t i;
    float l[8];
#if FC_PRED_SIMD
    fc_v8 s = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    for (i = 0; i < n4; i += 8) {
        fc_v8 yv, wv;
        memcpy(&yv, x + i, 32);
        memcpy(y + i, &yv, 32);
        memcpy(&wv, w + i, 32);
        s += yv * wv;
    }
    memcpy(l, &s, 32);
#else
    unsigned j;
    for (j = 0; j < 8; j++) l[j] = 0.0f;
    for (i = 0; i < n4; i++) {
        y[i] = x[i];
        l[i & 7u] += y[i] * w[i];
    }
#endif
    return fc_pred_lanes(l);
}

/* fc_pred_basis (predict.h): per component, the copy, each projection and
 * the norm in one pass each (every pass also takes the dot product the
 * next step needs: the same values as computing it on its own). */
static FC_PK_ATTR void FC_PK(fc_pk_basis)(fc_pred *p)
{
    const uint64_t n4 = p->n4;
    const double cols = (double)p->cols, scale = sqrt(cols);
    unsigned k, j, m = p->n < p->rank ? (unsigned)p->n : p->rank;
    p->nbasis = 0;
    for (k = 0; k < m; k++) {
        float *w = p->e + (size_t)p->nbasis * n4;
        double d, nw;
        /* w = v_k, and w.b_0 (w.w without basis vectors yet) */
        d = FC_PK(fc_pk_copy_dot)(p->v + (size_t)k * n4, w, p->nbasis ? p->e : w, n4);
        for (j = 0; j < p->nbasis; j++) {
            const float *b = p->e + (size_t)j * n4;
            const float *next = j + 1 < p->nbasis ? p->e + (size_t)(j + 1) * n4 : w;
            /* b has squared norm ~cols; then w.b_{j+1}, or w.w after the last */
            d = FC_PK(fc_pk_axpy_dot)((float)(-d / cols), b, w, next, n4);
        }
        nw = sqrt(d);
        if (!(nw > 0.0)) continue;
        FC_PK(fc_pk_axpby)(0.0f, w, (float)(scale / nw), w, n4);
        p->nbasis++;
    }
}

/* fc_pred_learn (predict.h) */
static FC_PK_ATTR void FC_PK(fc_pk_learn)(fc_pred *p, const int32_t *x)
{
    const uint64_t n4 = p->n4;
    unsigned k;
    double uu, uv = 0.0;
    float *u = p->u;
    p->n++;
    FC_PK(fc_pk_load)(u, x, p->cols);
    uu = FC_PK(fc_pk_dot)(u, u, n4);
    for (k = 0; k < p->rank && k < p->n; k++) {
        float *v = p->v + (size_t)k * n4;
        double w1, w2, vv, uv2, d;
        const float *next;
        if (k + 1 == p->n || !(p->vv[k] > 0.0)) {
            memcpy(v, u, sizeof(float) * (size_t)n4);
            p->vv[k] = uu;
            break;
        }
        /* u.v_k: computed by the previous component's pass (k > 0) */
        if (k == 0) uv = FC_PK(fc_pk_dot)(u, v, n4);
        w1 = (double)(p->n - 1) / (double)p->n;
        w2 = uv / sqrt(p->vv[k]) / (double)p->n;
        vv = w1 * w1 * p->vv[k] + 2.0 * w1 * w2 * uv + w2 * w2 * uu;
        uv2 = w1 * uv + w2 * uu;
        d = vv > 0.0 ? uv2 / vv : 0.0;
        /* v <- w2 u + w1 v, then u <- -d v + 1 u with the new v: one pass
         * (per element the same operations as two axpby calls), which
         * also takes the next component's u.v_{k+1} when that one is
         * updated (not started) next */
        next = (k + 1 < p->rank && k + 2 != p->n && p->vv[k + 1] > 0.0) ? p->v + (size_t)(k + 1) * n4
                                                                          : NULL;
        uv = FC_PK(fc_pk_axpby2)((float)w2, (float)w1, (float)-d, u, v, next, n4);
        p->vv[k] = vv;
        uu = uu - d * uv2;
        if (uu < 0.0) uu = 0.0;
    }
}

/* The classes of fc_pred_classes (predict.h) without ROWSCALE: per element
 * the sum over the m profiles prof[k] with coefficients coef[k] in order,
 * each step the rounded product plus 1 * the sum, then fc_class_of. */
static FC_PK_ATTR void FC_PK(fc_pk_classes)(const float **prof, const float *coef, unsigned m,
                                            uint64_t cols, uint8_t *cls)
{
    uint64_t c;
    unsigned k;
#if FC_PRED_SIMD
    /* fc_class_of on 8 lanes: a comparison gives -1 per lane */
    const fc_v8 half = {0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f};
    const fc_v8 zero = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    const fc_v8 one = {1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f, 1.0f};
    const fc_v8 t1 = one, t2 = t1 + t1, t4 = t2 + t2, t8 = t4 + t4, t16 = t8 + t8, t32 = t16 + t16,
                t64 = t32 + t32;
    const fc_v8i eight = {8, 8, 8, 8, 8, 8, 8, 8}, sixteen = {16, 16, 16, 16, 16, 16, 16, 16};
    const fc_v8i absmask = {0x7FFFFFFF, 0x7FFFFFFF, 0x7FFFFFFF, 0x7FFFFFFF,
                            0x7FFFFFFF, 0x7FFFFFFF, 0x7FFFFFFF, 0x7FFFFFFF};
    for (c = 0; c < cols; c += 8) {
        fc_v8 x = zero, y;
        fc_v8i mm, neg, out;
        int32_t o[8];
        unsigned j;
        for (k = 0; k < m; k++) {
            const float q = coef[k];
            const fc_v8 va = {q, q, q, q, q, q, q, q};
            fc_v8 ev;
            memcpy(&ev, prof[k] + c, 32);
            x = va * ev + one * x;
        }
        memcpy(&mm, &x, 32);
        mm &= absmask; /* |x| */
        memcpy(&y, &mm, 32);
        y += half;
        mm = -((y >= t1) + (y >= t2) + (y >= t4) + (y >= t8) + (y >= t16) + (y >= t32) + (y >= t64));
        neg = x < zero;
        out = (mm | ((neg & eight) | (~neg & sixteen))) & (mm != 0);
        if (c + 8 <= cols) {
            /* the eight class bytes in one store (lane j at cls[c + j] on
             * any byte order) */
            fc_v32b b;
            memcpy(&b, &out, 32);
            b = FC_V32B_LOWBYTES(b);
            memcpy(cls + c, &b, 8);
        } else {
            memcpy(o, &out, 32);
            for (j = 0; c + j < cols; j++) cls[c + j] = (uint8_t)o[j];
        }
    }
#else
    for (c = 0; c < cols; c++) {
        float x = 0.0f;
        for (k = 0; k < m; k++) x = coef[k] * prof[k][c] + 1.0f * x;
        cls[c] = fc_class_of(x);
    }
#endif
}
