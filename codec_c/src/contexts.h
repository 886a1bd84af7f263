/*
 * contexts.h - the context set of one slice and the rules that select a
 * context from already-coded neighbours.  Encoder, decoder and the
 * quantizer's rate model all select contexts through these functions, so
 * the three can never disagree.
 *
 * Neighbours: `left` is the level just before in the same row (0 at a row
 * start), `above` the level in the same column of the previous row of the
 * same slice (0 in a slice's first row and in rows wider than
 * FC_ROW_CTX_MAX), `lastmag` the magnitude of the previous nonzero level in
 * the current row (0 if none yet).
 */
#ifndef FC_CONTEXTS_H
#define FC_CONTEXTS_H

#include <math.h>

#include "rangecoder.h"

#define FC_SIG_CTX 192        /* left class x above significant x column activity x prediction/distance */
#define FC_SIGN_CTX 9         /* sign prediction x left sign */
#define FC_GTX_CLASSES 4      /* min(|left| + |above|, 3) */
/* Temporal reference (FORMAT.md §7.5): the co-located value of a reference
 * tensor, as a class byte (fc_ref_class), multiplies these context sets; a
 * tensor without reference uses class 0 only, i.e. exactly the sets above. */
#define FC_REF_SIG 4          /* significance: reference magnitude class 0, 1, 2, >= 3 */
#define FC_REF_SIGN 3         /* sign: reference zero, negative, positive */
#define FC_REF_MAG 6          /* greater-than flags: reference magnitude class 0..4, >= 5 */
#define FC_REF_REM 4          /* remainder: reference magnitude class <= 3, 4, 5, >= 6 */
#define FC_SIG_CTX_ALL (FC_SIG_CTX * FC_REF_SIG)
#define FC_SIGN_CTX_ALL (FC_SIGN_CTX * FC_REF_SIGN)
#define FC_GTX_CLASSES_ALL (FC_GTX_CLASSES * FC_REF_MAG)
#define FC_REM_CLASSES_ALL (FC_REM_CLASSES * FC_REF_REM)
#define FC_REM_CLASSES 4      /* magnitude class of the neighbourhood */
/* CLASSCTX tensors (FORMAT.md §7.7): a class byte with bit 5 set also
 * selects sign contexts by its magnitude class (2 signs x 4 classes more
 * sets) and greater-than contexts by whether the level's sign agrees with
 * the class sign (3 x the sets). */
#define FC_CLASS_EXT 32u
#define FC_SIGN_CTX_EXT (FC_SIGN_CTX_ALL + 2 * 4 * FC_SIGN_CTX)
#define FC_GTX_CLASSES_EXT (3 * FC_GTX_CLASSES_ALL)
#define FC_REM_PREFIX_POS 12  /* Exp-Golomb prefix positions with own context */
#define FC_GAP_PREFIX_POS 16
#define FC_MAX_EG_PREFIX 30   /* remainder prefix bins (levels < 2^30) */
#define FC_MAX_GAP_PREFIX 44  /* gap prefix bins (gaps < 2^44) */
#define FC_PRED_RANKS 8       /* PREDICT slices: profiles of the row predictor */
#define FC_PRED_CTX 10        /* contexts per profile coefficient */

typedef struct fc_ctxset {
    fc_ctx row[2];                                  /* row non-empty | previous row's flag */
    fc_ctx ref;                                     /* reference row is the previous row */
    fc_ctx group[4];                                /* group non-empty | left, above group */
    fc_ctx sig[FC_SIG_CTX_ALL];                     /* dense-mode significance */
    fc_ctx gsig[FC_SIG_CTX_ALL];                    /* significance inside a non-empty group */
    fc_ctx sign[FC_SIGN_CTX_EXT];
    fc_ctx gtx[FC_MAX_GTX][FC_GTX_CLASSES_EXT];     /* |level| > j + 1 */
    fc_ctx rem_prefix[FC_REM_CLASSES_ALL][FC_REM_PREFIX_POS];
    fc_ctx rem_suffix[FC_REM_PREFIX_POS];           /* first suffix bin by prefix length */
    fc_ctx gap_prefix[3][FC_GAP_PREFIX_POS];       /* by the previous gap's prefix length */
    fc_ctx gap_suffix[FC_GAP_PREFIX_POS][2];        /* two leading suffix bins by prefix length */
    fc_ctx dqsig[FC_SIG_CTX_ALL];                   /* dependent quantization, state in Q1: sig */
    fc_ctx dqgsig[FC_SIG_CTX_ALL];                  /*   and gsig (Q0 states use sig and gsig) */
    /* ROWKIND slices: the row kind, and inside a constant-magnitude row
     * significance (left class x above significant) and sign (left class) */
    fc_ctx rowkind[2];                              /* by the previous non-empty row's kind */
    fc_ctx csig[6];
    fc_ctx csign[3];
    /* PREDICT slices: a row's predictor coefficients, per profile: zero
     * flag, sign, Exp-Golomb prefix positions (predict.h) */
    fc_ctx pcoef[FC_PRED_RANKS][FC_PRED_CTX];
    fc_ctx pscale[16];                              /* row scale class, 4-bit tree */
} fc_ctxset;

static inline void fc_ctxset_init(fc_ctxset *s, unsigned window_set)
{
    fc_ctx *c = (fc_ctx *)s;
    size_t i, n = sizeof(*s) / sizeof(fc_ctx);
    for (i = 0; i < n; i++) fc_ctx_init(&c[i], window_set);
}

/* ------------------------------------------------------------------ */
/* Dependent quantization (FORMAT.md §8.2)                              */
/* ------------------------------------------------------------------ */

#define FC_DQ_MAX_STATES 8
/* Largest |level| of a trellis tensor: |reconstruction index| <= 2^30 - 2. */
#define FC_MAX_DQ_LEVEL ((int32_t)((1u << 29) - 1))

/* A state machine: the next state by the parity of the coded level, and the
 * quantizer (0: Q0, even multiples of the step; 1: Q1, odd multiples and 0)
 * each state selects.  Every state starts a slice in state 0. */
typedef struct fc_dq_machine {
    unsigned nstates;
    uint8_t next[FC_DQ_MAX_STATES][2];
    uint8_t q[FC_DQ_MAX_STATES];
} fc_dq_machine;

/* By enum fc_quantizer: [0] unused (uniform tensors have no state machine),
 * [1] VVC's 4 states (quantizer = state >> 1), [2] NNR's 8 states
 * (quantizer = state & 1). */
static const fc_dq_machine fc_dq_machines[3] = {
    {1, {{0, 0}}, {0}},
    {4, {{0, 2}, {2, 0}, {1, 3}, {3, 1}}, {0, 0, 1, 1}},
    {8, {{0, 2}, {7, 5}, {1, 3}, {6, 4}, {2, 0}, {5, 7}, {3, 1}, {4, 6}}, {0, 1, 0, 1, 0, 1, 0, 1}},
};

/* Reconstruction index of level k in a state with quantizer qsel. */
static inline int32_t fc_dq_index(int32_t k, unsigned qsel)
{
    return k > 0 ? 2 * k - (int32_t)qsel : (k < 0 ? 2 * k + (int32_t)qsel : 0);
}

/* The state after n zero levels (parity 0): the parity-0 transitions of
 * both machines have periods dividing 4. */
static inline unsigned fc_dq_skip_zeros(const fc_dq_machine *m, unsigned s, uint64_t n)
{
    unsigned j;
    for (j = 0; j < (unsigned)(n & 3u); j++) s = m->next[s][0];
    return s;
}

/* 0 for v = 0, 1 for v < 0, 2 for v > 0 (branch-free: signs are
 * unpredictable) */
static inline unsigned fc_sign_class(int32_t v)
{
    return (unsigned)(v != 0) + (unsigned)(v > 0);
}

static inline unsigned fc_abs32(int32_t v)
{
    return v < 0 ? (unsigned)(-(int64_t)v) : (unsigned)v;
}

/* Coded magnitude of a level: |v| - m0 + 1 for v != 0 (m0 is the slice's
 * smallest nonzero magnitude, see binarize.h), 0 for v == 0. */
static inline unsigned fc_cm(int32_t v, unsigned m0)
{
    return v ? fc_abs32(v) - m0 + 1u : 0u;
}

/* Column state of a slice, kept for rows up to FC_ROW_CTX_MAX wide (NULL
 * arrays otherwise): an activity value per column (a decaying count of its
 * recent nonzeros, dense and grouped modes only) and the sign of the
 * column's last nonzero level.  Updates happen only at the column itself,
 * so a row's quantizer and coder see the same values. */
typedef struct fc_colstate {
    uint8_t *act;
    int8_t *sgn;
    uint16_t *mag;     /* coded magnitude of the column's last nonzero (0: none) */
} fc_colstate;

#define FC_ACT_INIT 40u

/* Row state: reset at every row start. */
typedef struct fc_rowstate {
    unsigned rowmag;   /* running average of the row's coded magnitudes (0: none) */
    uint64_t last_nz;  /* column of the row's last nonzero, UINT64_MAX: none */
    int rowflip;       /* sign of the last nonzero times its column's previous sign */
    uint32_t sum_cm;   /* over the row's nonzeros whose column had a magnitude: */
    uint32_t sum_col;  /*   their coded magnitudes, and the columns' ones */
    unsigned scale;    /* SCALECTX slices: the row's scale class + 1 (0: none) */
} fc_rowstate;

static inline void fc_row_begin(fc_rowstate *r)
{
    r->rowmag = 0;
    r->last_nz = UINT64_MAX;
    r->rowflip = 0;
    r->sum_cm = 0;
    r->sum_col = 0;
    r->scale = 0;
}

/* The context rules below come in two forms: *_v functions take the
 * column state of column c as values (mag[c], act[c], sgn[c]; 0, FC_ACT_INIT
 * and 0 when the slice has no column state), the others read them from a
 * fc_colstate.  The decoder's hot loop calls the *_v forms with values it
 * loads once per element; everyone else the wrappers.  Same rules either
 * way. */

/* Rank-1 magnitude prediction for a column whose last coded magnitude is m
 * (0: none): m * sum_cm / sum_col, as a class: 0 none, 1 below 1/2, 2 below
 * 3/2, 3 below 7/2, 4 above. */
static inline unsigned fc_pred_class_v(unsigned m, const fc_rowstate *r)
{
    const uint64_t den = r->sum_col, den3 = 3u * den, den7 = 7u * den;
    uint64_t num;
    if (!den || !m) return 0;
    num = 2u * (uint64_t)m * r->sum_cm; /* 2 * prediction * sum_col */
    return 1u + (unsigned)(num >= den) + (unsigned)(num >= den3) + (unsigned)(num >= den7);
}

static inline unsigned fc_pred_class(const fc_colstate *cs, const fc_rowstate *r, uint64_t c)
{
    return fc_pred_class_v(cs->mag ? cs->mag[c] : 0u, r);
}

/* Distance class of the row's last nonzero: 0 within 4 columns, 1 within
 * 32, 2 farther, 3 none yet. */
static inline unsigned fc_dist_class(const fc_rowstate *r, uint64_t c)
{
    uint64_t dist;
    if (r->last_nz == UINT64_MAX) return 3;
    dist = c - r->last_nz;
    if (dist <= 4) return 0;
    if (dist <= 32) return 1;
    return 2;
}

/* Activity classes of an activity value a: 0 no nonzero for several rows,
 * 1 below ~12 %, 2 below ~50 %, 3 above. */
#define FC_R4(x) x, x, x, x
#define FC_R16(x) FC_R4(x), FC_R4(x), FC_R4(x), FC_R4(x)
static const uint8_t fc_act_class_tab[256] = {
    0, FC_R4(1), FC_R4(1), FC_R4(1), 1, 1, 1, FC_R16(1), /* 1..31 */
    FC_R16(2), FC_R16(2), FC_R16(2), FC_R16(2), FC_R16(2), FC_R16(2),  /* 32..127 */
    FC_R16(3), FC_R16(3), FC_R16(3), FC_R16(3), FC_R16(3), FC_R16(3), FC_R16(3), FC_R16(3),
};
#undef FC_R16
#undef FC_R4

static inline unsigned fc_act_class_v(unsigned a)
{
    return fc_act_class_tab[a & 255u];
}

static inline unsigned fc_act_class(const fc_colstate *cs, uint64_t c)
{
    return fc_act_class_v(cs->act ? cs->act[c] : FC_ACT_INIT);
}

/* Zero elements take every activity value to 0 within this many decays
 * ((3a) >> 2 from a <= 255; test_binarization checks it). */
#define FC_ACT_ZERO_AFTER 17u

/* The activity after an element (never above 255: (3 * 255) / 4 + 64). */
static inline unsigned fc_act_next(unsigned a, unsigned nonzero)
{
    return ((a * 3u) >> 2) + (nonzero ? 64u : 0u);
}

static inline void fc_col_activity(fc_colstate *cs, uint64_t c, unsigned nonzero)
{
    if (cs->act) cs->act[c] = (uint8_t)fc_act_next(cs->act[c], nonzero);
}

/* The class byte of a reference value ref for a tensor with step 1/inv_step
 * (FORMAT.md §7.5): bits 0-2 the magnitude class m of a = |ref| * inv_step,
 * the number of thresholds 1/2, 3/2, 7/2, 15/2, 31/2, 63/2, 127/2 that a
 * reaches (7 also for NaN), bits 3-4 the sign class (0 when m = 0, else 1
 * negative, 2 positive).  Encoder and decoder compute it alike from the
 * float32 reference and step. */
static inline uint8_t fc_class_abs(double a, int neg)
{
    /* !(a < t): NaN counts as above every threshold */
    unsigned m = (unsigned)!(a < 0.5) + (unsigned)!(a < 1.5) + (unsigned)!(a < 3.5) +
                 (unsigned)!(a < 7.5) + (unsigned)!(a < 15.5) + (unsigned)!(a < 31.5) +
                 (unsigned)!(a < 63.5);
    unsigned s = m == 0 ? 0u : (neg ? 1u : 2u);
    return (uint8_t)(m | (s << 3));
}

static inline uint8_t fc_ref_class(float ref, double inv_step)
{
    return fc_class_abs(fabs((double)ref) * inv_step, ref < 0.0f);
}

/* The class byte of a prediction p in units of the step (PREDICT slices,
 * FORMAT.md §7.6): with y = |p| + 1/2 (float32), the magnitude class is the
 * number of the thresholds 1, 2, 4, 8, 16, 32, 64 that y reaches, the sign
 * class as in fc_ref_class. */
static inline uint8_t fc_class_of(float p)
{
    float y = fabsf(p) + 0.5f;
    unsigned m = (unsigned)(y >= 1.0f) + (unsigned)(y >= 2.0f) + (unsigned)(y >= 4.0f) +
                 (unsigned)(y >= 8.0f) + (unsigned)(y >= 16.0f) + (unsigned)(y >= 32.0f) +
                 (unsigned)(y >= 64.0f);
    return (uint8_t)(m ? m | (p < 0.0f ? 1u : 2u) << 3 : 0u);
}

/* The reference classes of a row (or of the columns [c0, ...) of a row):
 * cls[c - c0] is the class byte of column c; cls NULL: no reference. */
typedef struct fc_ref {
    const uint8_t *cls;
    uint64_t c0;
} fc_ref;

/* The class bytes of n reference values. */
static inline void fc_ref_classes(const float *ref, uint64_t n, double inv_step, uint8_t *out)
{
    uint64_t i;
    for (i = 0; i < n; i++) out[i] = fc_ref_class(ref[i], inv_step);
}

/* CLASSCTX tensors: bit 5 on the nonzero class bytes of a row (without a
 * branch: whether a class is 0 is unpredictable, and the loop vectorizes). */
static inline void fc_classes_mark(uint8_t *cls, uint64_t n)
{
    /* eight bytes at a time: a byte's bit 7 after (b & 0x7F) + 0x7F, or'ed
     * with b, is set exactly for b != 0; shifted to bit 5 */
    const uint64_t lo7 = 0x7F7F7F7F7F7F7F7Full, hi = 0x8080808080808080ull;
    uint64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t x;
        memcpy(&x, cls + i, 8);
        x |= ((((x & lo7) + lo7) | x) & hi) >> 2;
        memcpy(cls + i, &x, 8);
    }
    for (; i < n; i++) {
        const uint8_t m = (uint8_t)(0u - (unsigned)(cls[i] != 0)); /* 0xFF for a nonzero class */
        cls[i] = (uint8_t)(cls[i] | (m & FC_CLASS_EXT));
    }
}

/* The reference class byte of column c (0 without reference). */
static inline unsigned fc_ref_at(const fc_ref *ref, uint64_t c)
{
    return ref && ref->cls ? ref->cls[c - ref->c0] : 0u;
}

/* The context offsets of a reference class byte (FORMAT.md §7.5), by table:
 * significance min(rm, 3) * FC_SIG_CTX, greater-than min(rm, 5) *
 * FC_GTX_CLASSES, remainder (0 for rm <= 3, else min(rm - 3, 3)) *
 * FC_REM_CLASSES, sign rs * FC_SIGN_CTX (rm = bits 0-2, rs = bits 3-4;
 * test_binarization checks the tables against these formulas).
 * Class bytes with FC_CLASS_EXT (bit 5, CLASSCTX tensors, FORMAT.md §7.7)
 * and rs != 0 select the extended sign contexts FC_SIGN_CTX_ALL + ((rs - 1)
 * * 4 + min(max(rm, 1), 4) - 1) * FC_SIGN_CTX, and add to the greater-than
 * class, by the level's sign (fc_ref_agree_off[.][neg]), FC_GTX_CLASSES_ALL
 * when the sign agrees with the class sign (rs = 1 negative) and twice
 * that when it does not. */
static const uint16_t fc_ref_sig_off[64] = {0, 192, 384, 576, 576, 576, 576, 576, 0, 192, 384, 576, 576, 576, 576, 576, 0, 192, 384, 576, 576, 576, 576, 576, 0, 192, 384, 576, 576, 576, 576, 576, 0, 192, 384, 576, 576, 576, 576, 576, 0, 192, 384, 576, 576, 576, 576, 576, 0, 192, 384, 576, 576, 576, 576, 576, 0, 192, 384, 576, 576, 576, 576, 576};
static const uint8_t fc_ref_gtx_off[64] = {0, 4, 8, 12, 16, 20, 20, 20, 0, 4, 8, 12, 16, 20, 20, 20, 0, 4, 8, 12, 16, 20, 20, 20, 0, 4, 8, 12, 16, 20, 20, 20, 0, 4, 8, 12, 16, 20, 20, 20, 0, 4, 8, 12, 16, 20, 20, 20, 0, 4, 8, 12, 16, 20, 20, 20, 0, 4, 8, 12, 16, 20, 20, 20};
static const uint8_t fc_ref_rem_off[64] = {0, 0, 0, 0, 4, 8, 12, 12, 0, 0, 0, 0, 4, 8, 12, 12, 0, 0, 0, 0, 4, 8, 12, 12, 0, 0, 0, 0, 4, 8, 12, 12, 0, 0, 0, 0, 4, 8, 12, 12, 0, 0, 0, 0, 4, 8, 12, 12, 0, 0, 0, 0, 4, 8, 12, 12, 0, 0, 0, 0, 4, 8, 12, 12};
static const uint8_t fc_ref_sign_off[64] = {0, 0, 0, 0, 0, 0, 0, 0, 9, 9, 9, 9, 9, 9, 9, 9, 18, 18, 18, 18, 18, 18, 18, 18, 27, 27, 27, 27, 27, 27, 27, 27, 0, 0, 0, 0, 0, 0, 0, 0, 27, 27, 36, 45, 54, 54, 54, 54, 63, 63, 72, 81, 90, 90, 90, 90, 0, 0, 0, 0, 0, 0, 0, 0};
static const uint8_t fc_ref_agree_off[64][2] = {{0, 0}, {0, 0}, {0, 0}, {0, 0}, {0, 0}, {0, 0}, {0, 0}, {0, 0}, {0, 0}, {0, 0}, {0, 0}, {0, 0}, {0, 0}, {0, 0}, {0, 0}, {0, 0}, {0, 0}, {0, 0}, {0, 0}, {0, 0}, {0, 0}, {0, 0}, {0, 0}, {0, 0}, {0, 0}, {0, 0}, {0, 0}, {0, 0}, {0, 0}, {0, 0}, {0, 0}, {0, 0}, {0, 0}, {0, 0}, {0, 0}, {0, 0}, {0, 0}, {0, 0}, {0, 0}, {0, 0}, {48, 24}, {48, 24}, {48, 24}, {48, 24}, {48, 24}, {48, 24}, {48, 24}, {48, 24}, {24, 48}, {24, 48}, {24, 48}, {24, 48}, {24, 48}, {24, 48}, {24, 48}, {24, 48}, {0, 0}, {0, 0}, {0, 0}, {0, 0}, {0, 0}, {0, 0}, {0, 0}, {0, 0}};

/* Significance: reference class x left class x column activity x
 * (prediction class p when the rank-1 model has one, else distance class);
 * act = the column's activity value. */
static inline unsigned fc_sig_ctx_v(const fc_rowstate *r, int32_t left, int32_t above, uint64_t c,
                                    unsigned ref, unsigned act, unsigned p)
{
    unsigned z = p ? 3u + p : fc_dist_class(r, c);
    return fc_ref_sig_off[ref & 63u] +
           ((fc_sign_class(left) * 2u + (above != 0)) * 4u + fc_act_class_v(act)) * 8u + z;
}

static inline unsigned fc_sig_ctx(const fc_colstate *cs, const fc_rowstate *r, int32_t left,
                                  int32_t above, uint64_t c, unsigned ref)
{
    return fc_sig_ctx_v(r, left, above, c, ref, cs->act ? cs->act[c] : FC_ACT_INIT,
                        fc_pred_class(cs, r, c));
}

/* Constant-magnitude rows (ROWKIND slices): significance context. */
static inline unsigned fc_csig_ctx(int32_t left, int32_t above)
{
    return fc_sign_class(left) * 2u + (above != 0);
}

/* Reference rows (dense and grouped modes, rows up to FC_ROW_CTX_MAX wide):
 * the "above" row of row r may be any of the previous W rows of the slice,
 * chosen by the encoder and signalled per non-empty row.  W keeps the
 * decoder's row window at about 2^22 elements. */
#define FC_REF_MAX_WINDOW 128u
static inline unsigned fc_ref_window(uint64_t cols)
{
    uint64_t w = cols ? ((uint64_t)1 << 22) / cols : FC_REF_MAX_WINDOW;
    if (w > FC_REF_MAX_WINDOW) w = FC_REF_MAX_WINDOW;
    return w < 1 ? 1u : (unsigned)w;
}

/* Bits of the bypass part of a reference distance d in 2 .. m. */
static inline unsigned fc_ref_bits(unsigned m)
{
    return m <= 2 ? 0u : fc_ilog2_32(m - 2u) + 1u;
}

/* Everything a level's binarization needs about its neighbourhood. */
typedef struct fc_nbr {
    unsigned sign_ctx;
    unsigned gtx_class;   /* greater-than class of a positive level, */
    unsigned gtx_neg;     /*   of a negative one (differ only with FC_CLASS_EXT) */
    unsigned rem_class;
} fc_nbr;

/* Sign context: the sign predicted by a rank-1 model (the row's flip times
 * the column's last sign; none when unknown) and the left neighbour's sign.
 * Magnitude classes: cm(left) + cm(above), or the row's running magnitude
 * when both are zero.  pc = the prediction class, sgnc and magc the
 * column's last sign and magnitude (0: none / no column state). */
FC_HOT fc_nbr fc_neighbourhood_v(const fc_rowstate *r, int32_t left, int32_t above, unsigned m0,
                                 unsigned ref, unsigned pc, int sgnc, unsigned magc)
{
    fc_nbr n;
    unsigned l, a, t, m, e, pred = 0;
    const unsigned rg = fc_ref_gtx_off[ref & 63u], rr = fc_ref_rem_off[ref & 63u];
    const unsigned ap = fc_ref_agree_off[ref & 63u][0], an = fc_ref_agree_off[ref & 63u][1];
    {
        /* 1 when the flip predicts positive, 2 negative, 0 unknown (a zero
         * flip or no column sign); branch-free */
        const int p = r->rowflip * sgnc;
        pred = (unsigned)(p != 0) + (unsigned)(p < 0);
    }
    n.sign_ctx = fc_ref_sign_off[ref & 63u] + pred * 3u + fc_sign_class(left);
    if (r->scale) {
        /* SCALECTX (FORMAT.md §7.8): the row's scale class g sets both */
        n.gtx_class = n.gtx_neg = n.rem_class = r->scale - 1u;
        return n;
    }
    if (pc) {
        /* The rank-1 prediction, when there is one, sets the classes. */
        n.gtx_class = rg + pc - 1u + ap;
        n.gtx_neg = rg + pc - 1u + an;
        /* pc 1, 2: 0; pc 3: 1; pc 4: 2, or 3 when the prediction is >= 8
         * (branch-free) */
        n.rem_class = rr + (unsigned)(pc >= 3) + (unsigned)(pc == 4) +
                      ((unsigned)(pc == 4) & (unsigned)(magc * (uint64_t)r->sum_cm >= 16u * (uint64_t)r->sum_col));
        return n;
    }
    l = fc_cm(left, m0);
    a = fc_cm(above, m0);
    t = l + a;
    if (t == 0) t = r->rowmag;
    n.gtx_class = rg + (t > 3u ? 3u : t) + ap;
    n.gtx_neg = rg + (t > 3u ? 3u : t) + an;
    m = l > a ? l : a;
    if (r->rowmag > m) m = r->rowmag;
    e = fc_ilog2_32(m + 1u); /* 0: m = 0, 1: 1..2, 2: 3..6, 3+: 7.. */
    n.rem_class = rr + (e > 3u ? 3u : e);
    return n;
}

static inline fc_nbr fc_neighbourhood(const fc_colstate *cs, const fc_rowstate *r, int32_t left,
                                      int32_t above, uint64_t c, unsigned m0, unsigned ref)
{
    return fc_neighbourhood_v(r, left, above, m0, ref, fc_pred_class(cs, r, c), cs->sgn ? cs->sgn[c] : 0,
                              cs->mag ? cs->mag[c] : 0u);
}

/* The row state after a nonzero level v (coded magnitude cm) at column c
 * whose column had last sign sgnc and magnitude magc (0: none / no column
 * state). */
static inline void fc_row_on_nonzero(fc_rowstate *r, int32_t v, uint64_t c, unsigned cm, int sgnc,
                                     unsigned magc)
{
    if (sgnc) r->rowflip = (v < 0 ? -1 : 1) * sgnc;
    if (magc && r->sum_col < (1u << 30)) {
        r->sum_cm += cm > 65535u ? 65535u : cm;
        r->sum_col += magc;
    }
    r->rowmag = r->rowmag ? (r->rowmag + cm + 1u) >> 1 : cm;
    r->last_nz = c;
}

/* After a nonzero level v (coded magnitude cm) at column c.  The quantizer's
 * rate model passes write_cols = 0: the coder owns the column state. */
static inline void fc_on_nonzero(fc_colstate *cs, fc_rowstate *r, int32_t v, uint64_t c, unsigned cm,
                                 int write_cols)
{
    fc_row_on_nonzero(r, v, c, cm, cs->sgn ? cs->sgn[c] : 0, cs->mag ? cs->mag[c] : 0u);
    if (write_cols) {
        if (cs->sgn) cs->sgn[c] = (int8_t)(v < 0 ? -1 : 1);
        if (cs->mag) cs->mag[c] = (uint16_t)(cm > 65535u ? 65535u : cm);
    }
}

#endif /* FC_CONTEXTS_H */
