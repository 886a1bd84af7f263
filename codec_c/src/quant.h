/*
 * quant.h - the encoder-side quantizer (the decoder never includes this).
 *
 * Step size (DeepCABAC, paper eq. 2):
 *     step = 2|w|max / (2|w|max / sigma_min + S)
 * with sigma_min the caller's value or, by default, the RMS of the tensor's
 * nonzero values.  A caller may give the step directly.  The step is
 * rounded to float32, the precision the container stores.
 *
 * Levels: with lambda = 0 plain rounding, |level| = floor(|w|/step + 1/2).
 * With lambda > 0 the weighted rate-distortion choice
 *     k* = argmin_k  eta_i (|w_i|/step - k)^2 + lambda * R(k)
 * over k in {0, floor(|w|/step), ceil(|w|/step)} (nonzero k below the
 * slice's smallest rounded magnitude m0 are left out, binarize.h), where R(k) are the bits of
 * k under the live contexts of a rate model (the dense-mode contexts), which
 * is updated with every decision exactly as a coder would be.  Distortion is
 * in units of step^2, so lambda is dimensionless; eta is the caller's
 * importance normalized to mean 1 (1 without importance).
 */
#ifndef FC_QUANT_H
#define FC_QUANT_H

#include <math.h>

#include "binarize.h"

/* What one pass over a float tensor tells the quantizer. */
typedef struct fc_tensor_scan {
    double abs_max;       /* max |w| */
    double sum_sq_nz;     /* sum of w^2 over nonzero w */
    uint64_t nonzero;     /* count of w != 0 */
    double importance_sum;
    int nonfinite;        /* some value (or importance) is NaN/Inf/negative */
} fc_tensor_scan;

void fc_scan_tensor(const float *values, const float *importance, uint64_t n, fc_tensor_scan *out);

/* The step for a scanned tensor, or a negative value when no finite
 * positive float32 step results. */
double fc_derive_step(const fc_tensor_scan *scan, double sigma_min, uint32_t S);

/* Count of |w| * inv_step >= 1/2 over n values (nonzero levels under
 * plain rounding). */
uint64_t fc_count_significant(const float *values, uint64_t n, double inv_step);

/* Count and smallest magnitude of the nonzero levels under plain rounding
 * (*min_level = 1 when there are none). */
uint64_t fc_rounding_stats(const float *values, uint64_t n, double inv_step, unsigned *min_level);

/* Quantizer state of one slice. */
typedef struct fc_rdoq {
    double inv_step;
    double lambda;
    double eta_scale;      /* 1 / mean importance */
    unsigned N;
    unsigned m0;           /* smallest nonzero magnitude allowed */
    fc_ctxset model;       /* the rate model (used when lambda > 0) */
} fc_rdoq;

/* Quantize one row of `cols` values into `cur`.  `prev` is the previous
 * row's levels (NULL when "above" is not used), `colstate` the coder's
 * column state before this row (read only), `importance` may be NULL,
 * `ref` the row of the reference tensor (contexts.h) or NULL.
 * Returns the number of nonzero levels. */
uint64_t fc_quantize_row(fc_rdoq *q, const fc_colstate *colstate, const float *x,
                         const float *importance, uint64_t cols, const int32_t *prev,
                         const fc_ref *ref, int32_t *cur);

/* ------------------------------------------------------------------ */
/* Dithered quantization (FC_QUANT_DITHER)                              */
/* ------------------------------------------------------------------ */

/* Level of w with dither u (float32, common.h): k = round((w + u) / step),
 * the sum and the division in double, ties toward zero (so w = 0 always
 * gives 0: |u| < step/2). */
static inline int32_t fc_dither_level(float w, float u, double inv_step)
{
    double y = ((double)w + (double)u) * inv_step;
    double a = ceil(fabs(y) - 0.5);
    int32_t k = (int32_t)a;
    return y < 0.0 ? -k : k;
}

/* Count and smallest magnitude (1 when none) of the nonzero dithered levels
 * of n values that start at element `first` of the tensor. */
uint64_t fc_dither_stats(const float *values, uint64_t n, double inv_step, float step, uint64_t key,
                         uint64_t first, unsigned *min_level);

/* Dithered levels of one row of `cols` values starting at element `first`.
 * Returns the number of nonzero levels. */
uint64_t fc_quantize_row_dither(const float *x, uint64_t cols, double inv_step, float step,
                                uint64_t key, uint64_t first, int32_t *cur);

/* ------------------------------------------------------------------ */
/* Trellis (dependent) quantization (trellis.c)                         */
/* ------------------------------------------------------------------ */

/* lambda' = FC_DQ_LAMBDA_SCALE * lambda: each of the two quantizers has
 * twice the step, so a level costs about the bits of a uniform level at
 * 2 * step (measured: docs/quantizers.md). */
#define FC_DQ_LAMBDA_SCALE 2.8
/* The lambda used when the caller gives 0: the trellis is always
 * rate-aware (a distortion-only trellis loses on sparse data). */
#define FC_DQ_DEFAULT_LAMBDA 0.11552453009332421

typedef struct fc_trellis fc_trellis;

/* A trellis for one slice; NULL when out of memory or quant is not a
 * trellis kind.  m0 as for fc_rdoq (the smallest nonzero |level|). */
fc_trellis *fc_trellis_new(unsigned quant, double lambda, double eta_scale, double inv_step,
                           unsigned N, unsigned m0, unsigned window_set);
void fc_trellis_free(fc_trellis *tr);

/* Quantize one row (levels into cur); the state machine continues from the
 * previous row of the slice.  Arguments as for fc_quantize_row. */
uint64_t fc_trellis_row(fc_trellis *tr, const fc_colstate *colstate, const float *x,
                        const float *importance, uint64_t cols, const int32_t *prev,
                        const fc_ref *ref, int32_t *cur);

/* State machine state before the next row. */
unsigned fc_trellis_state(const fc_trellis *tr);

/* For tests: the search on columns [c0, c1) of a row from one start state
 * (with row state `row` and left neighbour `left` at c0) under the current
 * frozen rates, without committing anything.  Return the cost J of their
 * levels (written to cur[c0..c1)) and the end state.  _viterbi is the
 * trellis search, _greedy the per-element RD choice given the current state
 * (the dependent-quantization counterpart of RDOQ), _cost evaluates J of
 * given levels the same way.  fc_trellis_refresh freezes the live model. */
double fc_trellis_viterbi(fc_trellis *tr, const fc_colstate *cs, const float *x, const float *imp,
                          uint64_t c0, uint64_t c1, const int32_t *prev, int32_t *cur,
                          unsigned start, const fc_rowstate *row, int32_t left, unsigned *end);
double fc_trellis_greedy(fc_trellis *tr, const fc_colstate *cs, const float *x, const float *imp,
                         uint64_t c0, uint64_t c1, const int32_t *prev, int32_t *cur,
                         unsigned start, const fc_rowstate *row, int32_t left, unsigned *end);
double fc_trellis_cost(const fc_trellis *tr, const fc_colstate *cs, const float *x, const float *imp,
                       uint64_t c0, uint64_t c1, const int32_t *prev, const int32_t *levels,
                       unsigned start, const fc_rowstate *row, int32_t left);
void fc_trellis_refresh(fc_trellis *tr);

#endif /* FC_QUANT_H */
