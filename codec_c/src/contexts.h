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

#include "rangecoder.h"

#define FC_SIG_CTX 6          /* left class (0, -, +) x above significant */
#define FC_SIGN_CTX 9         /* left sign x above sign */
#define FC_GTX_CLASSES 4      /* min(|left| + |above|, 3) */
#define FC_REM_CLASSES 4      /* magnitude class of the neighbourhood */
#define FC_REM_PREFIX_POS 12  /* Exp-Golomb prefix positions with own context */
#define FC_GAP_PREFIX_POS 16
#define FC_MAX_EG_PREFIX 30   /* remainder prefix bins (levels < 2^30) */
#define FC_MAX_GAP_PREFIX 44  /* gap prefix bins (gaps < 2^44) */

typedef struct fc_ctxset {
    fc_ctx row[2];                                  /* row non-empty | previous row's flag */
    fc_ctx group[4];                                /* group non-empty | left, above group */
    fc_ctx sig[FC_SIG_CTX];                         /* dense-mode significance */
    fc_ctx gsig[FC_SIG_CTX];                        /* significance inside a non-empty group */
    fc_ctx sign[FC_SIGN_CTX];
    fc_ctx gtx[FC_MAX_GTX][FC_GTX_CLASSES];         /* |level| > j + 1 */
    fc_ctx rem_prefix[FC_REM_CLASSES][FC_REM_PREFIX_POS];
    fc_ctx rem_suffix[FC_REM_PREFIX_POS];           /* first suffix bin by prefix length */
    fc_ctx gap_prefix[FC_GAP_PREFIX_POS];
    fc_ctx gap_suffix[FC_GAP_PREFIX_POS][2];        /* two leading suffix bins by prefix length */
} fc_ctxset;

static inline void fc_ctxset_init(fc_ctxset *s, unsigned window_set)
{
    fc_ctx *c = (fc_ctx *)s;
    size_t i, n = sizeof(*s) / sizeof(fc_ctx);
    for (i = 0; i < n; i++) fc_ctx_init(&c[i], window_set);
}

static inline unsigned fc_sign_class(int32_t v)
{
    return v == 0 ? 0u : (v < 0 ? 1u : 2u);
}

static inline unsigned fc_abs32(int32_t v)
{
    return v < 0 ? (unsigned)(-(int64_t)v) : (unsigned)v;
}

static inline unsigned fc_sig_ctx(int32_t left, int32_t above)
{
    return fc_sign_class(left) * 2u + (above != 0);
}

static inline unsigned fc_sign_ctx(int32_t left, int32_t above)
{
    return fc_sign_class(left) * 3u + fc_sign_class(above);
}

static inline unsigned fc_gtx_class(int32_t left, int32_t above)
{
    unsigned t = fc_abs32(left) + fc_abs32(above);
    return t > 3u ? 3u : t;
}

static inline unsigned fc_rem_class(int32_t left, int32_t above, unsigned lastmag)
{
    unsigned m = fc_abs32(left), a = fc_abs32(above), e;
    if (a > m) m = a;
    if (lastmag > m) m = lastmag;
    e = fc_ilog2_32(m + 1u); /* 0: m=0, 1: m=1..2, 2: 3..6, 3: 7..14, ... */
    if (e <= 1) return 0;
    if (e <= 3) return 1;
    if (e == 4) return 2;
    return 3;
}

/* Everything a level's binarization needs about its neighbourhood. */
typedef struct fc_nbr {
    unsigned sign_ctx;
    unsigned gtx_class;
    unsigned rem_class;
} fc_nbr;

static inline fc_nbr fc_neighbourhood(int32_t left, int32_t above, unsigned lastmag)
{
    fc_nbr n;
    n.sign_ctx = fc_sign_ctx(left, above);
    n.gtx_class = fc_gtx_class(left, above);
    n.rem_class = fc_rem_class(left, above, lastmag);
    return n;
}

#endif /* FC_CONTEXTS_H */
