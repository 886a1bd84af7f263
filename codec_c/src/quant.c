/* quant.c - step derivation and the rate-distortion optimizing quantizer. */
#include <float.h>
#include <math.h>

#include "quant.h"

void fc_scan_tensor(const float *values, const float *importance, uint64_t n, fc_tensor_scan *out)
{
    float amax = 0.0f;
    double ssq = 0.0, isum = 0.0;
    uint64_t nz = 0, i;
    int bad = 0;
    for (i = 0; i < n; i++) {
        float a = fabsf(values[i]);
        bad |= !(a <= 3.40282347e38f); /* NaN or Inf */
        amax = a > amax ? a : amax;
        if (a != 0.0f) {
            nz++;
            ssq += (double)a * (double)a;
        }
    }
    if (importance) {
        for (i = 0; i < n; i++) {
            float e = importance[i];
            bad |= !(e >= 0.0f && e <= 3.40282347e38f);
            isum += (double)e;
        }
    }
    out->abs_max = (double)amax;
    out->sum_sq_nz = ssq;
    out->nonzero = nz;
    out->importance_sum = isum;
    out->nonfinite = bad;
}

double fc_derive_step(const fc_tensor_scan *scan, double sigma_min, uint32_t S)
{
    double step;
    float f;
    if (sigma_min <= 0.0)
        sigma_min = scan->nonzero ? sqrt(scan->sum_sq_nz / (double)scan->nonzero) : 1.0;
    if (scan->abs_max > 0.0)
        step = 2.0 * scan->abs_max / (2.0 * scan->abs_max / sigma_min + (double)S);
    else
        step = sigma_min;
    /* Tensors of tiny values (below ~1e-36) would get a subnormal step: the
     * smallest normal float32 still represents them to within half of it. */
    if (step > 0.0 && step < (double)FLT_MIN) step = (double)FLT_MIN;
    f = (float)step;
    if (!(f > 0.0f) || !isfinite(f) || !isnormal(f)) return -1.0;
    return (double)f;
}

uint64_t fc_count_significant(const float *values, uint64_t n, double inv_step)
{
    /* |w| >= step/2, compared in float to keep the loop vectorizable; the
     * count only steers slicing and mode choice, never the levels. */
    float half = (float)(0.5 / inv_step);
    uint64_t cnt = 0, i;
    for (i = 0; i < n; i++) cnt += fabsf(values[i]) >= half;
    return cnt;
}

static inline int32_t round_level(float x, double inv_step)
{
    return (int32_t)(fabs((double)x) * inv_step + 0.5);
}

uint64_t fc_rounding_stats(const float *values, uint64_t n, double inv_step, unsigned *min_level)
{
    /* Float compares keep the loop cheap; the threshold sits a little below
     * step/2, so every value that rounds to a nonzero level is counted, and
     * the smallest counted magnitude gives a lower bound of the smallest
     * nonzero level (rounding is monotone in |w|). */
    const float half = (float)(0.5 / inv_step) * 0.99999f;
    float lo = 3.40282347e38f;
    uint64_t cnt = 0, i;
    for (i = 0; i < n; i++) {
        float a = fabsf(values[i]);
        if (a >= half) {
            cnt++;
            lo = a < lo ? a : lo;
        }
    }
    if (cnt) {
        int32_t m = round_level(lo, inv_step);
        *min_level = m > 0 ? (unsigned)m : 1u;
    } else {
        *min_level = 1u;
    }
    return cnt;
}

static uint64_t quantize_row_rounding(const fc_rdoq *q, const float *x, uint64_t cols,
                                      int32_t *cur)
{
    uint64_t nz = 0, c;
    for (c = 0; c < cols; c++) {
        int32_t a = x[c] == 0.0f ? 0 : round_level(x[c], q->inv_step);
        cur[c] = x[c] < 0.0f ? -a : a;
        nz += a != 0;
    }
    return nz;
}

uint64_t fc_quantize_row(fc_rdoq *q, const fc_colstate *colstate, const float *x,
                         const float *importance, uint64_t cols, const int32_t *prev,
                         const fc_ref *ref, int32_t *cur)
{
    fc_ctxset *m = &q->model;
    const unsigned m0 = q->m0;
    fc_colstate cs = *colstate; /* read only: fc_on_nonzero(..., 0) below */
    fc_rowstate row;
    uint64_t nz = 0, c;
    if (q->lambda <= 0.0) return quantize_row_rounding(q, x, cols, cur);
    fc_row_begin(&row);
    for (c = 0; c < cols; c++) {
        int32_t left = c ? cur[c - 1] : 0;
        int32_t above = prev ? prev[c] : 0;
        fc_ctx *sig = &m->sig[fc_sig_ctx(&cs, &row, left, above, c, fc_ref_at(ref, c))];
        double t = fabs((double)x[c]) * q->inv_step;
        unsigned best = 0;
        if (t > 0.0) {
            double eta = importance ? (double)importance[c] * q->eta_scale : 1.0;
            unsigned fl = (unsigned)t;
            /* The ceiling only when it is the nearest level: the quantizer
             * never moves a weight farther from zero than rounding does. */
            unsigned ce = (t - (double)fl >= 0.5) ? fl + 1u : fl;
            unsigned neg = x[c] < 0.0f;
            fc_nbr nb = fc_neighbourhood(&cs, &row, left, above, c, m0, fc_ref_at(ref, c));
            double best_j = eta * t * t + q->lambda * (double)fc_ctx_cost(sig, 0);
            double sig1 = (double)fc_ctx_cost(sig, 1);
            unsigned cand[2], i;
            if (ce > (unsigned)FC_MAX_LEVEL) ce = (unsigned)FC_MAX_LEVEL;
            cand[0] = fl;
            cand[1] = ce;
            for (i = 0; i < 2; i++) {
                unsigned k = cand[i];
                double d, j;
                if (k < m0 || (i == 1 && k == fl)) continue;
                d = t - (double)k;
                j = eta * d * d +
                    q->lambda * (sig1 + (double)fc_cost_level(m, k - m0 + 1u, neg, nb, q->N));
                if (j < best_j) {
                    best_j = j;
                    best = k;
                }
            }
            if (best) {
                unsigned cm = best - m0 + 1u;
                int32_t v = neg ? -(int32_t)best : (int32_t)best;
                fc_update_level(m, neg, cm, nb, q->N);
                cur[c] = v;
                fc_on_nonzero(&cs, &row, v, c, cm, 0);
                nz++;
            }
        }
        fc_ctx_update(sig, best != 0);
        if (!best) cur[c] = 0;
    }
    return nz;
}

uint64_t fc_dither_stats(const float *values, uint64_t n, double inv_step, float step, uint64_t key,
                         uint64_t first, unsigned *min_level)
{
    uint64_t cnt = 0, i;
    unsigned lo = (unsigned)FC_MAX_LEVEL;
    for (i = 0; i < n; i++) {
        int32_t k = fc_dither_level(values[i], fc_dither_value(key, first + i, step), inv_step);
        if (k) {
            unsigned a = fc_abs32(k);
            cnt++;
            lo = a < lo ? a : lo;
        }
    }
    *min_level = cnt ? lo : 1u;
    return cnt;
}

uint64_t fc_quantize_row_dither(const float *x, uint64_t cols, double inv_step, float step,
                                uint64_t key, uint64_t first, int32_t *cur)
{
    uint64_t nz = 0, c;
    for (c = 0; c < cols; c++) {
        cur[c] = fc_dither_level(x[c], fc_dither_value(key, first + c, step), inv_step);
        nz += cur[c] != 0;
    }
    return nz;
}
