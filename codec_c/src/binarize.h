/*
 * binarize.h - DeepCABAC binarization of one level, and of a run length.
 *
 * Every slice payload starts with m0 - 1 as order-0 Exp-Golomb bypass bins:
 * m0 is the smallest nonzero magnitude in the slice (1 if none).  Top-k
 * sparsified updates keep only values above a threshold, so their levels
 * start far from 1; coding the "coded magnitude" cm = |v| - m0 + 1 removes
 * that constant part.
 *
 * A nonzero level (its significance is coded by the caller, by mode):
 *   sign        1 bin, context from the signs of left and above
 *   cm > j+1    for j = 0 .. N-1, unary, stopping at the first 0; context
 *               by j and the neighbourhood's magnitude (contexts.h; in
 *               CLASSCTX slices also by the sign: fc_nbr.gtx_neg)
 *   remainder   when all N flags were 1, x = cm - N as order-0 Exp-Golomb:
 *               e = floor(log2 x) ones and a zero (context by position and
 *               magnitude class), then the e low bits of x: the first
 *               context-coded by e, the rest bypass.
 * A gap g (runs mode) is order-k Exp-Golomb: e = floor(log2(g/2^k + 1)) ones
 * and a zero (context by position and the previous gap's class), then
 * e + k suffix bits: the first two context-coded by e, the rest bypass.
 *
 * Each element has three forms here: code it (encoder), decode it, and the
 * rate model's pair cost/update (quantizer).  Keep them in step.
 */
#ifndef FC_BINARIZE_H
#define FC_BINARIZE_H

#include "contexts.h"

static inline unsigned fc_min_u(unsigned a, unsigned b) { return a < b ? a : b; }

static inline unsigned fc_gap_class(unsigned prev_prefix)
{
    return prev_prefix > 2u ? 2u : prev_prefix;
}

/* ---------------------------------------------------------------- encode */

static inline void fc_enc_eg0_bypass(fc_rc_enc *e, uint32_t v)
{
    uint64_t x = (uint64_t)v + 1u;
    unsigned ep = fc_ilog2_64(x);
    fc_rc_bypass(e, ((uint64_t)1 << ep) - 1u, ep); /* ep ones */
    fc_rc_bypass(e, 0, 1);
    fc_rc_bypass(e, x, ep);
}

FC_HOT void fc_enc_level(fc_rc_enc *e, fc_ctxset *s, unsigned neg, unsigned cm, fc_nbr nb,
                                unsigned N)
{
    unsigned j, x, ep;
    const unsigned g = neg ? nb.gtx_neg : nb.gtx_class;
    fc_rc_encode(e, &s->sign[nb.sign_ctx], neg);
    for (j = 0; j < N; j++) {
        unsigned f = cm > j + 1u;
        fc_rc_encode(e, &s->gtx[j][g], f);
        if (!f) return;
    }
    x = cm - N;
    ep = fc_ilog2_32(x);
    for (j = 0; j < ep; j++)
        fc_rc_encode(e, &s->rem_prefix[nb.rem_class][fc_min_u(j, FC_REM_PREFIX_POS - 1)], 1);
    fc_rc_encode(e, &s->rem_prefix[nb.rem_class][fc_min_u(ep, FC_REM_PREFIX_POS - 1)], 0);
    if (ep > 0) {
        fc_rc_encode(e, &s->rem_suffix[fc_min_u(ep, FC_REM_PREFIX_POS) - 1], (x >> (ep - 1)) & 1u);
        fc_rc_bypass(e, x, ep - 1);
    }
}

/* Returns the prefix length (for the next gap's context). */
static inline unsigned fc_enc_gap(fc_rc_enc *e, fc_ctxset *s, uint64_t g, unsigned k,
                                  unsigned gap_class)
{
    uint64_t q = (g >> k) + 1u, rest;
    unsigned ep = fc_ilog2_64(q), j, nbits, lead;
    fc_ctx *pre = s->gap_prefix[gap_class];
    for (j = 0; j < ep; j++) fc_rc_encode(e, &pre[fc_min_u(j, FC_GAP_PREFIX_POS - 1)], 1);
    fc_rc_encode(e, &pre[fc_min_u(ep, FC_GAP_PREFIX_POS - 1)], 0);
    nbits = ep + k;
    rest = g - ((((uint64_t)1 << ep) - 1u) << k);
    lead = nbits < 2 ? nbits : 2;
    for (j = 0; j < lead; j++) {
        unsigned bit = (unsigned)((rest >> (nbits - 1u - j)) & 1u);
        fc_rc_encode(e, &s->gap_suffix[fc_min_u(ep, FC_GAP_PREFIX_POS - 1)][j], bit);
    }
    fc_rc_bypass(e, rest, nbits - lead);
    return ep;
}

/* ---------------------------------------------------------------- decode */

/* Returns 0 on success, -1 when the value does not fit in 31 bits. */
static inline int fc_dec_eg0_bypass(fc_rc_dec *d, uint32_t *v)
{
    unsigned ep = 0;
    while (fc_rc_bypass_dec(d, 1)) {
        if (++ep > 30) return -1;
    }
    *v = (uint32_t)((((uint64_t)1 << ep) | fc_rc_bypass_dec(d, ep)) - 1u);
    return 0;
}

/* Decodes sign and coded magnitude; returns cm >= 1, or 0 when the stream
 * is malformed (cm would exceed `cm_max`). */
FC_HOT unsigned fc_dec_level(fc_rc_dec *d, fc_ctxset *s, fc_nbr nb, unsigned N,
                                    unsigned cm_max, unsigned *neg)
{
    unsigned cm = 1, j, ep;
    uint32_t x;
    unsigned g;
    *neg = fc_rc_decode_nb(d, &s->sign[nb.sign_ctx]);
    g = *neg ? nb.gtx_neg : nb.gtx_class;
    for (j = 0; j < N; j++) {
        if (!fc_rc_decode(d, &s->gtx[j][g])) return cm <= cm_max ? cm : 0;
        cm++;
    }
    for (ep = 0;; ep++) {
        if (!fc_rc_decode(d, &s->rem_prefix[nb.rem_class][fc_min_u(ep, FC_REM_PREFIX_POS - 1)]))
            break;
        if (ep >= FC_MAX_EG_PREFIX) return 0;
    }
    x = 1;
    if (ep > 0) {
        x = (x << 1) | fc_rc_decode_nb(d, &s->rem_suffix[fc_min_u(ep, FC_REM_PREFIX_POS) - 1]);
        x = (x << (ep - 1)) | (uint32_t)fc_rc_bypass_dec(d, ep - 1);
    }
    if ((uint64_t)x + N > (uint64_t)cm_max) return 0;
    return N + x;
}

/* Returns the prefix length, or -1 when the stream is malformed. */
static inline int fc_dec_gap(fc_rc_dec *d, fc_ctxset *s, unsigned k, unsigned gap_class,
                             uint64_t *g)
{
    unsigned ep, j, nbits, lead;
    uint64_t rest = 0;
    fc_ctx *pre = s->gap_prefix[gap_class];
    for (ep = 0;; ep++) {
        if (!fc_rc_decode(d, &pre[fc_min_u(ep, FC_GAP_PREFIX_POS - 1)])) break;
        if (ep >= FC_MAX_GAP_PREFIX) return -1;
    }
    nbits = ep + k;
    if (nbits > 62) return -1;
    lead = nbits < 2 ? nbits : 2;
    for (j = 0; j < lead; j++)
        rest = (rest << 1) | fc_rc_decode(d, &s->gap_suffix[fc_min_u(ep, FC_GAP_PREFIX_POS - 1)][j]);
    rest = (rest << (nbits - lead)) | fc_rc_bypass_dec(d, nbits - lead);
    *g = rest + ((((uint64_t)1 << ep) - 1u) << k);
    return (int)ep;
}

/* ------------------------------------------------------------ rate model */

/* Bits to code the nonzero coded magnitude cm >= 1 with sign `neg`. */
static inline float fc_cost_level(const fc_ctxset *s, unsigned cm, unsigned neg, fc_nbr nb,
                                  unsigned N)
{
    float bits = fc_ctx_cost(&s->sign[nb.sign_ctx], neg);
    const unsigned g = neg ? nb.gtx_neg : nb.gtx_class;
    unsigned j, x, ep;
    for (j = 0; j < N; j++) {
        unsigned f = cm > j + 1u;
        bits += fc_ctx_cost(&s->gtx[j][g], f);
        if (!f) return bits;
    }
    x = cm - N;
    ep = fc_ilog2_32(x);
    for (j = 0; j < ep; j++)
        bits += fc_ctx_cost(&s->rem_prefix[nb.rem_class][fc_min_u(j, FC_REM_PREFIX_POS - 1)], 1);
    bits += fc_ctx_cost(&s->rem_prefix[nb.rem_class][fc_min_u(ep, FC_REM_PREFIX_POS - 1)], 0);
    if (ep > 0) {
        bits += fc_ctx_cost(&s->rem_suffix[fc_min_u(ep, FC_REM_PREFIX_POS) - 1], (x >> (ep - 1)) & 1u);
        bits += (float)(ep - 1);
    }
    return bits;
}

static inline void fc_update_level(fc_ctxset *s, unsigned neg, unsigned cm, fc_nbr nb, unsigned N)
{
    const unsigned g = neg ? nb.gtx_neg : nb.gtx_class;
    unsigned j, x, ep;
    fc_ctx_update(&s->sign[nb.sign_ctx], neg);
    for (j = 0; j < N; j++) {
        unsigned f = cm > j + 1u;
        fc_ctx_update(&s->gtx[j][g], f);
        if (!f) return;
    }
    x = cm - N;
    ep = fc_ilog2_32(x);
    for (j = 0; j < ep; j++)
        fc_ctx_update(&s->rem_prefix[nb.rem_class][fc_min_u(j, FC_REM_PREFIX_POS - 1)], 1);
    fc_ctx_update(&s->rem_prefix[nb.rem_class][fc_min_u(ep, FC_REM_PREFIX_POS - 1)], 0);
    if (ep > 0) fc_ctx_update(&s->rem_suffix[fc_min_u(ep, FC_REM_PREFIX_POS) - 1], (x >> (ep - 1)) & 1u);
}

#endif /* FC_BINARIZE_H */
