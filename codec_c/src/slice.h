/*
 * slice.h - coding of one slice: a range of whole rows of one tensor, coded
 * as an independent codeword with fresh contexts.  Slices are the unit of
 * parallel work for both encoder and decoder.
 *
 * Row coding by mode:
 *   dense    per row: row flag (context: previous row's flag); if set, per
 *            element a sig flag (context: left class x above significant)
 *            and, when significant, the level (binarize.h)
 *   grouped  per row: row flag; if set, per 16-element group a group flag
 *            (context: left group x above group); in a set group per
 *            element a sig flag (own contexts) and the level
 *            (dense and grouped: when the slice flag FC_SLICE_REFROWS is set,
 *            each non-empty row names its reference row, which then plays
 *            the part of "above", see contexts.h)
 *   runs     no row flags; the gaps between nonzero levels in raster order
 *            (Exp-Golomb of order k), each followed by its level; a final gap
 *            that reaches exactly the end of the slice terminates it
 *
 * Trellis (dependent) quantization: a state machine (contexts.h) runs over
 * the slice's levels in raster order from state 0; in dense and grouped
 * mode a state whose quantizer is Q1 selects the dqsig / dqgsig contexts
 * instead of sig / gsig.  Everything else is coded as for uniform slices;
 * the state only matters for the reconstruction.
 */
#ifndef FC_SLICE_H
#define FC_SLICE_H

#include "common.h"

/* Slice flags (in the `k` field of dense and grouped slices). */
#define FC_SLICE_REFROWS 1u
#define FC_SLICE_ROWKIND 2u /* dense slices: a row-kind flag per non-empty row */
#define FC_SLICE_PREDICT 4u /* dense slices: the low-rank row predictor (predict.h) */
#define FC_SLICE_ROWSCALE 8u /* PREDICT slices: a scale class per non-empty row */
#define FC_SLICE_RANK8 16u   /* PREDICT slices: rank 8 (else 4) */
#define FC_SLICE_CLASSCTX 32u /* PREDICT slices: the extended class contexts (contexts.h) */
/* PREDICT + ROWSCALE slices: the ROWKIND bit (never with PREDICT otherwise)
 * is SCALECTX, level magnitudes by the row's scale class (FORMAT.md §7.8) */
#define FC_SLICE_SCALECTX FC_SLICE_ROWKIND
/* ROWKIND slices (no PREDICT) of uniform tensors: the ROWSCALE bit is
 * ROWFINE, each one-magnitude row's value refined to 1/16 step (FORMAT.md
 * §6.2 step 2a, §8.1) */
#define FC_SLICE_ROWFINE FC_SLICE_ROWSCALE
#define FC_ROWFINE_BITS 4u
#define FC_PREDICT_ROWSCALE 0x100 /* predict_request: with row scales */
#define FC_PREDICT_CLASSCTX 0x200 /* predict_request: with the extended class contexts */
#define FC_PREDICT_SCALECTX 0x400 /* predict_request: with SCALECTX (needs ROWSCALE) */

/* Whether a slice (mode, flags k) has ROWKIND rows, or is SCALECTX. */
static inline int fc_slice_rowkind(unsigned mode, unsigned k)
{
    return mode == FC_MODE_DENSE && (k & FC_SLICE_ROWKIND) && !(k & FC_SLICE_PREDICT);
}
static inline int fc_slice_rowfine(unsigned mode, unsigned k)
{
    return fc_slice_rowkind(mode, k) && (k & FC_SLICE_ROWFINE);
}
/* The value magnitude of a ROWFINE row of level magnitude a and fraction f
 * (0 .. 15): (a + (f - 8) / 16) * step, one float32 rounding of an exact
 * double product (a < 2^30). */
static inline float fc_rowfine_value(uint32_t a, uint32_t f, float step)
{
    return (float)((double)((int64_t)a * 16 + (int64_t)f - 8) * (double)step * 0.0625);
}
static inline int fc_slice_scalectx(unsigned mode, unsigned k)
{
    return mode == FC_MODE_DENSE && (k & FC_SLICE_SCALECTX) && (k & FC_SLICE_PREDICT);
}

typedef struct fc_slice_enc_job {
    /* input */
    const float *values;      /* rows x cols, or NULL */
    const int32_t *levels;    /* rows x cols, or NULL */
    const float *importance;  /* rows x cols, or NULL */
    float *recon;             /* rows x cols, or NULL */
    uint64_t rows, cols;
    float step;
    double lambda;
    double eta_scale;
    unsigned max_gtx;
    unsigned window_set;
    unsigned quant;           /* enum fc_quantizer (levels: uniform) */
    uint64_t dither_key;      /* FC_QUANT_DITHER: fc_dither_key() */
    uint64_t elem_off;        /* element index of the slice start in the tensor */
    const float *ref;         /* rows x cols reference values, or NULL */
    int mode_request;         /* enum fc_mode */
    int window_auto;          /* record the bins and cost every window set */
    int rowkind_request;      /* ROWKIND: -1 when it pays (a trial), 0 never, 1 always */
    int predict_request;      /* PREDICT: -1 when it pays (a trial), 0 never, else the
                                 rank (4 or 8) | FC_PREDICT_ROWSCALE */
    int no_refrows;           /* never REFROWS (a trial of fc_slice_encode) */
    int ref_classctx;         /* dense slices with a reference: CLASSCTX (a trial) */
    int32_t *dq_record;       /* trellis: rows x cols out, the coded levels, or NULL */
    const int32_t *dq_replay; /* trellis: rows x cols coded levels to code instead of
                                 searching again (a trial of the same levels), or NULL */
    /* output */
    fc_buf out;
    unsigned mode;
    unsigned k;               /* runs mode: Exp-Golomb order; else slice flags */
    uint64_t nonzeros;
    double sq_error;
    int result;               /* enum fc_result */
    /* window_auto: the coded bins (see fc_rc_enc.trace) and their cost in
     * bits under each window set (bypass bins not counted) */
    fc_buf trace;
    double set_bits[8];
} fc_slice_enc_job;

void fc_slice_encode(fc_slice_enc_job *job);

/* Two codings of the same input (a slice, or a whole tensor: the sums over
 * its slices) may hold different levels under RD quantization (e.g. with
 * and without ROWKIND, or with and without a reference); they are compared
 * by their RD cost J = sq_error / step^2 + lambda * 8 * bytes with the
 * quantizer's own trade-off, fc_choice_lambda(job) of one of the slice jobs
 * (the trellis' lambda'), or by size when that is 0 (integer levels,
 * rounding, the dither: the same levels either way).  fc_coding_better:
 * whether coding a beats coding b (ties: b). */
double fc_choice_lambda(const fc_slice_enc_job *job);
int fc_coding_better(double lambda, float step, double sq_a, uint64_t bytes_a, double sq_b,
                     uint64_t bytes_b);

/* Recode a window_auto job's traced bins with another window set into
 * job->out (same levels, so the same decoded slice); frees the trace. */
void fc_slice_recode(fc_slice_enc_job *job, unsigned window_set);

/* Where decoded rows go (all NULL: decode only, to validate). */
typedef struct fc_sink {
    int32_t *levels;
    float *values;
    void *acc;
    int acc_dtype;
    double weight;
    uint64_t tstride;  /* 0, or transposed: element (r, c) of the slice goes
                          to c * tstride + r (tstride = the coded rows); or
                          swapped (tblock > 0): to (c / tblock) * tstride +
                          r * tblock + c % tblock (tstride = coded rows *
                          tblock) */
    uint64_t tblock;   /* swapped views: the inner block size, else 0 */
} fc_sink;

typedef struct fc_slice_dec_job {
    const uint8_t *src;
    size_t size;
    uint64_t rows, cols;
    float step;
    unsigned max_gtx;
    unsigned window_set;
    unsigned quant;           /* enum fc_quantizer */
    uint64_t dither_key;      /* FC_QUANT_DITHER: fc_dither_key() */
    uint64_t elem_off;        /* element index of the slice start in the tensor */
    const float *ref;         /* rows x cols reference values, or NULL */
    unsigned mode;
    unsigned k;
    fc_sink sink;             /* pointers already offset to the slice start */
    int result;
} fc_slice_dec_job;

void fc_slice_decode(fc_slice_dec_job *job);

/* Whether every reconstruction of a level of magnitude <= k is a finite
 * float32 (enum fc_quantizer `quant`): |(float)q * step| with q = k, or
 * q = 2k for trellis tensors (the largest reconstruction index of level k),
 * plus step/2 for dithered tensors (|u| <= step/2).  float32 rounding is
 * monotone, so checking the largest magnitude covers every smaller one. */
static inline int fc_level_finite(int64_t k, float step, unsigned quant)
{
    const int dq = quant == FC_QUANT_TRELLIS || quant == FC_QUANT_TRELLIS8;
    float r = (float)(dq ? 2 * k : k) * step;
    if (quant == FC_QUANT_DITHER) r = r + step * 0.5f;
    return r <= 3.4028234663852886e38f;
}

/* min(limit, the largest level k for which fc_level_finite() holds), 0 when
 * only level 0 is finite: a container whose levels would reconstruct to an
 * infinity is corrupt, and the encoder refuses to write one.  The estimate
 * in double is within about a hundred integers of the exact bound (float32
 * rounding of k and of the product); the loops, run once per slice, make
 * it exact. */
static inline int32_t fc_max_finite_level(float step, int32_t limit, unsigned quant)
{
    const int dq = quant == FC_QUANT_TRELLIS || quant == FC_QUANT_TRELLIS8;
    double lim = 3.4028234663852886e38 / (double)step;
    int64_t k;
    if (quant == FC_QUANT_DITHER) lim -= 0.5;
    if (dq) lim /= 2.0;
    k = lim < (double)limit ? (lim > 0.0 ? (int64_t)lim : 0) : (int64_t)limit;
    while (k > 0 && !fc_level_finite(k, step, quant)) k--;
    while (k < limit && fc_level_finite(k + 1, step, quant)) k++;
    return (int32_t)k;
}

/* Mode choice from the share of significant elements. */
unsigned fc_choose_mode(uint64_t significant, uint64_t n);
/* Exp-Golomb order for gaps at this density. */
unsigned fc_choose_gap_order(uint64_t significant, uint64_t n);

#endif /* FC_SLICE_H */
