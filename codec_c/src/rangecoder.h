/*
 * rangecoder.h - the binary arithmetic coding engine and the adaptive
 * probability estimator.
 *
 * Engine: a binary range coder with a 32-bit range and a 64-bit low
 * register.  A bin with probability p1 = P(bin = 1) in units of 2^-16 splits
 * the range at bound = (range >> 16) * p1: a 1 takes [0, bound), a 0 takes
 * [bound, range).  Renormalization is byte-wise (while range < 2^24).  Carries
 * are resolved LZMA-style with a cached byte plus a count of pending 0xFF
 * bytes, so output is strictly byte-wise.  p1 is clamped to [16, 65520], so
 * a near-certain bin costs about 3.5e-4 bits (there is no 0.0094-bit floor
 * as in NNR's engine).
 *
 * The encoder never writes LZMA's always-zero lead byte, and its flush
 * picks the value with the most trailing zero bits inside the final interval
 * and drops trailing zero bytes: the decoder reads zeros past the end of a
 * payload, so an all-zero slice costs 0 bytes.
 *
 * Estimator: per context two exponential-decay estimators of P(1) with 31-bit
 * state (a fast and a slow window); the coding probability is their average.
 * During warm-up the effective shift is min(shift, 1 + floor(log2(n + 1))),
 * which behaves like a count-based estimator on cold contexts.
 */
#ifndef FC_RANGECODER_H
#define FC_RANGECODER_H

#include "common.h"

#define FC_PROB_BITS 16
#define FC_PROB_MIN 16u
#define FC_PROB_MAX 65520u
#define FC_HALF31 (1u << 30)
#define FC_ONE31 (1u << 31)
#define FC_WARMUP_COUNT 1024u

/* ------------------------------------------------------------------ */
/* Probability estimator                                                */
/* ------------------------------------------------------------------ */

typedef struct fc_ctx {
    uint32_t fast;   /* P(1) in units of 2^-31 */
    /* Warm-up (FORMAT.md §5.2: the shifts are min(shift, 1 + ilog2(n + 1))
     * after n bins) kept incrementally: the effective shifts now, the
     * window set's, and how many bins remain before the effective ones
     * grow; FC_CTX_STEADY once they reached the window set's.  The count
     * runs down on every bin without a test (a step at 0 on a context past
     * its warm-up, after 2^32 - 1 more bins, changes nothing: see
     * fc_ctx_warm). */
    uint8_t sf, ss;  /* effective shifts now (fast, slow) */
    uint8_t tf, ts;  /* the window set's shifts */
    uint32_t slow;   /* P(1) in units of 2^-31 (not next to fast: the two
                        updates stay scalar) */
    uint32_t left;   /* (no padding bytes: whole context sets compare with memcmp) */
} fc_ctx;

#define FC_CTX_STEADY 0xFFFFFFFFu

/* The eight window sets (fast shift, slow shift) a tensor may select.
 * Every set has 1 < fast <= slow <= 10 (the warm-up below relies on it). */
extern const uint8_t fc_window_sets[8][2];

static inline void fc_ctx_init(fc_ctx *c, unsigned window_set)
{
    c->fast = FC_HALF31;
    c->slow = FC_HALF31;
    c->left = 1;                 /* n = 0: both shifts 1 for one bin */
    c->sf = c->ss = 1;
    c->tf = fc_window_sets[window_set & 7][0];
    c->ts = fc_window_sets[window_set & 7][1];
}

/* The clamp rarely applies: one predictable test in the common case. */
FC_HOT uint32_t fc_ctx_p1(const fc_ctx *c)
{
    uint32_t p = (c->fast + c->slow) >> 16;
    if (FC_UNLIKELY(p - FC_PROB_MIN > FC_PROB_MAX - FC_PROB_MIN)) p = p < FC_PROB_MIN ? FC_PROB_MIN : FC_PROB_MAX;
    return p;
}

/* The warm-up step after the last bin of a window w = 1 + ilog2(n + 1):
 * the next w lasts 2^(w - 1) bins.  During the warm-up the slow shift is w
 * itself (every set's slow shift is its larger one).  Past the warm-up
 * (ss = ts) a step keeps the window set's shifts. */
static inline void fc_ctx_warm(fc_ctx *c)
{
    unsigned w = c->ss + 1u;
    c->sf = (uint8_t)(w < c->tf ? w : c->tf);
    c->ss = (uint8_t)(w < c->ts ? w : c->ts);
    c->left = w >= c->ts ? FC_CTX_STEADY : 1u << (w - 1u);
}

/* Whether a context is still in its warm-up. */
static inline int fc_ctx_warming(const fc_ctx *c)
{
    return c->ss < c->ts;
}

/* One bin of warm-up bookkeeping: the count down runs without a test
 * (whether a context is still warming up is unpredictable); only the last
 * bin of a window, a few times per context, branches. */
FC_HOT void fc_ctx_tick(fc_ctx *c)
{
    const uint32_t l = c->left - 1u;
    c->left = l;
    if (FC_UNLIKELY(l == 0)) fc_ctx_warm(c);
}

/* The estimator's update after a 1 (fc_ctx_up1) or a 0 (fc_ctx_up0). */
FC_HOT void fc_ctx_up1(fc_ctx *c)
{
    c->fast += (FC_ONE31 - c->fast) >> c->sf;
    c->slow += (FC_ONE31 - c->slow) >> c->ss;
    fc_ctx_tick(c);
}

FC_HOT void fc_ctx_up0(fc_ctx *c)
{
    c->fast -= c->fast >> c->sf;
    c->slow -= c->slow >> c->ss;
    fc_ctx_tick(c);
}

FC_HOT void fc_ctx_update(fc_ctx *c, unsigned bin)
{
    if (bin)
        fc_ctx_up1(c);
    else
        fc_ctx_up0(c);
}

/* Cost table for rate estimation: fc_cost[p1 >> 4] is -log2(p1 / 65536) in
 * bits, i.e. the cost of a 1; the cost of a 0 is fc_cost[(65536-p1) >> 4]. */
#define FC_COST_SIZE 4096
extern const float fc_cost[FC_COST_SIZE + 1];

static inline float fc_ctx_cost(const fc_ctx *c, unsigned bin)
{
    uint32_t p1 = fc_ctx_p1(c);
    return fc_cost[(bin ? p1 : 65536u - p1) >> 4];
}

/* ------------------------------------------------------------------ */
/* Encoder                                                               */
/* ------------------------------------------------------------------ */

typedef struct fc_rc_enc {
    uint64_t low;
    uint32_t range;
    uint8_t cache;
    int cache_is_lead; /* the cache holds the implicit zero lead byte */
    uint64_t pending;  /* 0xFF bytes waiting for a possible carry */
    fc_buf *out;
    size_t start;      /* out->size when this codeword began */
    /* Optional bin trace (NULL: none): every coded bin as a uint16, the
     * context's position from trace_base << 1 | bin, or FC_TRACE_BYPASS << 1
     * | bin for a bypass bin.  The encoder replays it to recode the same
     * bins with another window set (fc_trace_cost / replay). */
    fc_buf *trace;
    const fc_ctx *trace_base;
} fc_rc_enc;

#define FC_TRACE_BYPASS 0x7FFFu

static inline void fc_trace_put(fc_buf *t, unsigned entry)
{
    uint16_t x = (uint16_t)entry;
    if (FC_UNLIKELY(t->cap - t->size < 2) && !fc_buf_grow(t, 2)) return;
    memcpy(t->data + t->size, &x, 2);
    t->size += 2;
}

static inline void fc_rc_enc_init(fc_rc_enc *e, fc_buf *out)
{
    e->low = 0;
    e->range = 0xFFFFFFFFu;
    e->cache = 0;
    e->cache_is_lead = 1;
    e->pending = 0;
    e->out = out;
    e->start = out->size;
    e->trace = NULL;
    e->trace_base = NULL;
}

FC_HOT void fc_rc_shift_low(fc_rc_enc *e)
{
    if ((uint32_t)e->low < 0xFF000000u || (e->low >> 32) != 0) {
        uint8_t carry = (uint8_t)(e->low >> 32);
        if (!e->cache_is_lead) fc_buf_put(e->out, (uint8_t)(e->cache + carry));
        e->cache_is_lead = 0;
        for (; e->pending; e->pending--) fc_buf_put(e->out, (uint8_t)(0xFF + carry));
        e->cache = (uint8_t)(e->low >> 24);
    } else {
        e->pending++;
    }
    e->low = (e->low & 0x00FFFFFFu) << 8;
}

FC_HOT void fc_rc_encode(fc_rc_enc *e, fc_ctx *c, unsigned bin)
{
    uint32_t bound = (e->range >> 16) * fc_ctx_p1(c);
    if (FC_UNLIKELY(e->trace != NULL)) fc_trace_put(e->trace, (unsigned)(c - e->trace_base) << 1 | bin);
    if (bin) {
        e->range = bound;
    } else {
        e->low += bound;
        e->range -= bound;
    }
    fc_ctx_update(c, bin);
    while (e->range < (1u << 24)) {
        e->range <<= 8;
        fc_rc_shift_low(e);
    }
}

/* Equiprobable bins, most significant of the `nbits` low bits of v first. */
static inline void fc_rc_bypass(fc_rc_enc *e, uint64_t v, unsigned nbits)
{
    while (nbits--) {
        e->range >>= 1;
        if (FC_UNLIKELY(e->trace != NULL)) fc_trace_put(e->trace, FC_TRACE_BYPASS << 1 | ((v >> nbits) & 1u));
        if ((v >> nbits) & 1u) e->low += e->range;
        if (e->range < (1u << 24)) {
            e->range <<= 8;
            fc_rc_shift_low(e);
        }
    }
}

/* Terminate the codeword (see the file comment). */
static inline void fc_rc_finish(fc_rc_enc *e)
{
    uint64_t lo = e->low, hi = e->low + e->range - 1u;
    unsigned k;
    for (k = 40; k > 0; k--) {
        uint64_t mask = ((uint64_t)1 << k) - 1u;
        uint64_t v = (lo + mask) & ~mask;
        if (v >= lo && v <= hi) {
            e->low = v;
            break;
        }
    }
    for (k = 0; k < 5; k++) fc_rc_shift_low(e);
    while (e->out->size > e->start && e->out->data[e->out->size - 1] == 0) e->out->size--;
}

/* ------------------------------------------------------------------ */
/* Decoder                                                               */
/* ------------------------------------------------------------------ */

typedef struct fc_rc_dec {
    const uint8_t *p;
    const uint8_t *end;
    uint32_t range;
    uint32_t code;
} fc_rc_dec;

FC_HOT uint8_t fc_rc_next_byte(fc_rc_dec *d)
{
    return d->p < d->end ? *d->p++ : 0;
}

static inline void fc_rc_dec_init(fc_rc_dec *d, const uint8_t *src, size_t size)
{
    unsigned i;
    d->p = src;
    d->end = src + size;
    d->range = 0xFFFFFFFFu;
    d->code = 0;
    for (i = 0; i < 4; i++) d->code = (d->code << 8) | fc_rc_next_byte(d);
}

/* Renormalization after a context-coded bin: p1 >= 16 leaves range >=
 * 2^12, so at most two bytes. */
static inline void fc_rc_renorm(fc_rc_dec *d)
{
    d->range <<= 8;
    d->code = (d->code << 8) | fc_rc_next_byte(d);
    if (d->range < (1u << 24)) {
        d->range <<= 8;
        d->code = (d->code << 8) | fc_rc_next_byte(d);
    }
}

FC_HOT unsigned fc_rc_decode(fc_rc_dec *d, fc_ctx *c)
{
    uint32_t bound = (d->range >> 16) * fc_ctx_p1(c);
    unsigned bin;
    if (d->code < bound) {
        d->range = bound;
        fc_ctx_up1(c);
        bin = 1;
    } else {
        d->code -= bound;
        d->range -= bound;
        fc_ctx_up0(c);
        bin = 0;
    }
    if (FC_UNLIKELY(d->range < (1u << 24))) fc_rc_renorm(d);
    return bin;
}

/* The same decision as fc_rc_decode, computed without a branch on the bin:
 * for bins that select data rather than control flow (signs, suffix
 * bits), whose unpredictable branch would cost more than the masks. */
FC_HOT unsigned fc_rc_decode_nb(fc_rc_dec *d, fc_ctx *c)
{
    const uint32_t bound = (d->range >> 16) * fc_ctx_p1(c);
    const unsigned bin = d->code < bound;
    const uint32_t m = 0u - (uint32_t)bin; /* all ones for a 1 */
    const uint32_t fu = (FC_ONE31 - c->fast) >> c->sf, fd = c->fast >> c->sf;
    const uint32_t su = (FC_ONE31 - c->slow) >> c->ss, sd = c->slow >> c->ss;
    d->range = (bound & m) | ((d->range - bound) & ~m);
    d->code -= bound & ~m;
    c->fast += (fu & m) - (fd & ~m);
    c->slow += (su & m) - (sd & ~m);
    fc_ctx_tick(c);
    if (FC_UNLIKELY(d->range < (1u << 24))) fc_rc_renorm(d);
    return bin;
}

static inline uint64_t fc_rc_bypass_dec(fc_rc_dec *d, unsigned nbits)
{
    uint64_t v = 0;
    while (nbits--) {
        unsigned b;
        d->range >>= 1;
        b = d->code >= d->range; /* branch-free: bypass bits are coin flips */
        d->code -= d->range & (0u - (uint32_t)b);
        v = (v << 1) | b;
        if (d->range < (1u << 24)) {
            d->range <<= 8;
            d->code = (d->code << 8) | fc_rc_next_byte(d);
        }
    }
    return v;
}

/* A well-formed codeword leaves code < range and has been read to its last
 * stored byte (the encoder trims only trailing zeros): p reached end (bytes
 * are read in order, the implicit zeros only after the last stored one). */
static inline int fc_rc_dec_ok(const fc_rc_dec *d)
{
    return d->code < d->range && d->p == d->end;
}

#endif /* FC_RANGECODER_H */
