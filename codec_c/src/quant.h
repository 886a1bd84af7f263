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
typedef struct fc_quantizer {
    double inv_step;
    double lambda;
    double eta_scale;      /* 1 / mean importance */
    unsigned N;
    unsigned m0;           /* smallest nonzero magnitude allowed */
    fc_ctxset model;       /* the rate model (used when lambda > 0) */
} fc_quantizer;

/* Quantize one row of `cols` values into `cur`.  `prev` is the previous
 * row's levels (NULL when "above" is not used), `colstate` the coder's
 * column state before this row (read only), `importance` may be NULL.
 * Returns the number of nonzero levels. */
uint64_t fc_quantize_row(fc_quantizer *q, const fc_colstate *colstate, const float *x,
                         const float *importance, uint64_t cols, const int32_t *prev, int32_t *cur);

#endif /* FC_QUANT_H */
