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

#define FC_SIG_CTX 24         /* left class x above significant x distance class */
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
    fc_ctx gap_prefix[3][FC_GAP_PREFIX_POS];       /* by the previous gap's prefix length */
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

/* Coded magnitude of a level: |v| - m0 + 1 for v != 0 (m0 is the slice's
 * smallest nonzero magnitude, see binarize.h), 0 for v == 0. */
static inline unsigned fc_cm(int32_t v, unsigned m0)
{
    return v ? fc_abs32(v) - m0 + 1u : 0u;
}

/* Distance class of the last nonzero in the row: 0 within 4 columns, 1
 * within 32, 2 farther, 3 none yet. */
static inline unsigned fc_dist_class(uint64_t dist)
{
    if (dist <= 4) return 0;
    if (dist <= 32) return 1;
    if (dist == UINT64_MAX) return 3;
    return 2;
}

static inline unsigned fc_sig_ctx(int32_t left, int32_t above, unsigned dist_class)
{
    return (fc_sign_class(left) * 2u + (above != 0)) * 4u + dist_class;
}

/* Everything a level's binarization needs about its neighbourhood. */
typedef struct fc_nbr {
    unsigned sign_ctx;
    unsigned gtx_class;
    unsigned rem_class;
} fc_nbr;

/* `rowmag` is a running average of the coded magnitudes of the row's
 * nonzero levels so far (0: none). */
static inline fc_nbr fc_neighbourhood(int32_t left, int32_t above, unsigned m0, unsigned rowmag)
{
    fc_nbr n;
    unsigned l = fc_cm(left, m0), a = fc_cm(above, m0), t = l + a, m, e;
    n.sign_ctx = fc_sign_class(left) * 3u + fc_sign_class(above);
    if (t == 0) t = rowmag;
    n.gtx_class = t > 3u ? 3u : t;
    m = l > a ? l : a;
    if (rowmag > m) m = rowmag;
    e = fc_ilog2_32(m + 1u); /* 0: m = 0, 1: 1..2, 2: 3..6, 3+: 7.. */
    n.rem_class = e > 3u ? 3u : e;
    return n;
}

static inline unsigned fc_rowmag_update(unsigned rowmag, unsigned cm)
{
    return rowmag ? (rowmag + cm + 1u) >> 1 : cm;
}

#endif /* FC_CONTEXTS_H */
