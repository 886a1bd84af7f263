/* slice_dec.c - decode one slice (see slice.h for the syntax).
 *
 * The decoder works on column chunks of at most FC_ROW_CTX_MAX elements, so
 * its memory does not depend on the shape a container claims.  Rows wider
 * than that are coded without the "above" context (as the encoder does).
 * Every loop is bounded by the slice's element count, so hostile input costs
 * at most a bounded number of bins per element. */
#include <float.h>

#include "binarize.h"
#include "predict.h"
#include "slice.h"

/* Trellis tensors: the levels of a chunk as reconstruction indices, with
 * the state machine run from *state (updated). */
static const int32_t *dequantize(const fc_dq_machine *dq, unsigned *state, const int32_t *lv,
                                 uint64_t n, int32_t *out)
{
    unsigned s = *state;
    uint64_t i;
    for (i = 0; i < n; i++) {
        int32_t v = lv[i];
        out[i] = fc_dq_index(v, dq->q[s]);
        s = dq->next[s][(unsigned)v & 1u];
    }
    *state = s;
    return out;
}

/* Dithered tensors: every element reconstructs to level * step - u (lv NULL:
 * all levels 0), and accumulators take every element. */
static void emit_dither(const fc_sink *k, float step, uint64_t key, uint64_t first, uint64_t off,
                        const int32_t *lv, uint64_t n)
{
    uint64_t i;
    if (k->levels) {
        if (!lv) memset(k->levels + off, 0, sizeof(int32_t) * (size_t)n);
        else if (lv != k->levels + off) /* (decoded in place: see fc_slice_decode) */
            memcpy(k->levels + off, lv, sizeof(int32_t) * (size_t)n);
    }
    if (!k->values && !k->acc) return;
    for (i = 0; i < n; i++) {
        float v = fc_dither_recon(lv ? lv[i] : 0, step, fc_dither_value(key, first + off + i, step));
        if (k->values) k->values[off + i] = v;
        if (k->acc) {
            if (k->acc_dtype == FC_ACC_F64) {
                ((double *)k->acc)[off + i] += k->weight * (double)v;
            } else {
                float *a = (float *)k->acc + off + i;
                *a = (float)((double)*a + k->weight * (double)v);
            }
        }
    }
}

/* Where decoded levels go, and how they are reconstructed. */
typedef struct dec_out {
    const fc_sink *sink;
    float step;
    unsigned quant;
    const fc_dq_machine *dq;  /* trellis tensors, else NULL */
    unsigned state;           /* state machine at the next emitted element */
    int32_t *scratch;         /* trellis tensors: a chunk of indices */
    uint64_t key, first;      /* dithered tensors */
    int active;               /* any output at all */
    int finerow;              /* a ROWFINE row: its nonzero values are +-fine */
    float fine;
} dec_out;

/* The value of level v: (float)v * step, or +-fine in a ROWFINE row. */
static inline float level_value(const dec_out *o, int32_t v)
{
    if (o->finerow) return v > 0 ? o->fine : (v < 0 ? -o->fine : 0.0f);
    return (float)v * o->step;
}

/* Swapped views: row r, columns [c0, c0 + n) of the slice (lv NULL: zeros,
 * lv already dequantized), runs of whole or partial inner blocks, each
 * contiguous in the original layout. */
static void emit_swapped(const dec_out *o, uint64_t r, uint64_t c0, const int32_t *lv, uint64_t n)
{
    const fc_sink *k = o->sink;
    const uint64_t kb = k->tblock, ts = k->tstride;
    uint64_t q = c0 / kb, m = c0 % kb, done = 0, i;
    while (done < n) {
        const uint64_t run = kb - m < n - done ? kb - m : n - done;
        const uint64_t at = q * ts + r * kb + m;
        const int32_t *v = lv ? lv + done : NULL;
        if (k->levels) {
            if (v) memcpy(k->levels + at, v, sizeof(int32_t) * (size_t)run);
            else memset(k->levels + at, 0, sizeof(int32_t) * (size_t)run);
        }
        if (k->values) {
            float *out = k->values + at;
            if (v)
                for (i = 0; i < run; i++) out[i] = level_value(o, v[i]);
            else
                memset(out, 0, sizeof(float) * (size_t)run);
        }
        if (k->acc && v) {
            for (i = 0; i < run; i++) {
                if (!v[i]) continue;
                if (k->acc_dtype == FC_ACC_F64)
                    ((double *)k->acc)[at + i] += k->weight * (double)level_value(o, v[i]);
                else
                    ((float *)k->acc)[at + i] =
                        (float)((double)((float *)k->acc)[at + i] + k->weight * (double)level_value(o, v[i]));
            }
        }
        done += run;
        q++;
        m = 0;
    }
}

/* Transposed (and swapped) tensors: row r, columns [c0, c0 + n) of the
 * slice (lv NULL: zeros) scattered to the original layout. */
static void emit_transposed(dec_out *o, uint64_t r, uint64_t c0, const int32_t *lv, uint64_t n)
{
    const fc_sink *k = o->sink;
    const uint64_t ts = k->tstride;
    uint64_t i;
    if (lv && o->dq) lv = dequantize(o->dq, &o->state, lv, n, o->scratch);
    if (!lv && o->dq) o->state = fc_dq_skip_zeros(o->dq, o->state, n);
    if (k->tblock) {
        emit_swapped(o, r, c0, lv, n);
        return;
    }
    /* one loop per output (the common case writes levels or values only) */
    if (k->levels) {
        int32_t *out = k->levels + c0 * ts + r;
        if (lv)
            for (i = 0; i < n; i++) out[i * ts] = lv[i];
        else
            for (i = 0; i < n; i++) out[i * ts] = 0;
    }
    if (k->values) {
        float *out = k->values + c0 * ts + r;
        if (lv)
            for (i = 0; i < n; i++) out[i * ts] = level_value(o, lv[i]);
        else
            for (i = 0; i < n; i++) out[i * ts] = 0.0f;
    }
    if (k->acc && lv) {
        for (i = 0; i < n; i++) {
            const uint64_t at = (c0 + i) * ts + r;
            const int32_t v = lv[i];
            if (!v) continue;
            if (k->acc_dtype == FC_ACC_F64)
                ((double *)k->acc)[at] += k->weight * (double)level_value(o, v);
            else
                ((float *)k->acc)[at] = (float)((double)((float *)k->acc)[at] + k->weight * (double)level_value(o, v));
        }
    }
}

static void emit_zeros(dec_out *o, uint64_t off, uint64_t n)
{
    const fc_sink *k = o->sink;
    if (!o->active) return;
    if (o->quant == FC_QUANT_DITHER) {
        emit_dither(k, o->step, o->key, o->first, off, NULL, n);
        return;
    }
    if (o->dq) o->state = fc_dq_skip_zeros(o->dq, o->state, n);
    if (k->levels) memset(k->levels + off, 0, sizeof(int32_t) * (size_t)n);
    if (k->values) memset(k->values + off, 0, sizeof(float) * (size_t)n);
}

static void emit(dec_out *o, uint64_t off, const int32_t *lv, uint64_t n)
{
    const fc_sink *k = o->sink;
    const float step = o->step;
    uint64_t i;
    if (!o->active) return;
    if (o->quant == FC_QUANT_DITHER) {
        emit_dither(k, step, o->key, o->first, off, lv, n);
        return;
    }
    if (o->dq) lv = dequantize(o->dq, &o->state, lv, n, o->scratch);
    if (k->levels && lv != k->levels + off) /* (decoded in place: see fc_slice_decode) */
        memcpy(k->levels + off, lv, sizeof(int32_t) * (size_t)n);
    if (o->finerow) { /* a ROWFINE row (uniform tensors only) */
        for (i = 0; i < n; i++) {
            const float x = level_value(o, lv[i]);
            if (k->values) k->values[off + i] = x;
            if (k->acc && lv[i]) {
                if (k->acc_dtype == FC_ACC_F64)
                    ((double *)k->acc)[off + i] += k->weight * (double)x;
                else
                    ((float *)k->acc)[off + i] =
                        (float)((double)((float *)k->acc)[off + i] + k->weight * (double)x);
            }
        }
        return;
    }
    if (k->values) {
        float *v = k->values + off;
        for (i = 0; i < n; i++) v[i] = (float)lv[i] * step;
    }
    if (k->acc) {
        if (k->acc_dtype == FC_ACC_F64) {
            double *a = (double *)k->acc + off;
            for (i = 0; i < n; i++)
                if (lv[i]) a[i] += k->weight * (double)((float)lv[i] * step);
        } else {
            float *a = (float *)k->acc + off;
            for (i = 0; i < n; i++)
                if (lv[i]) a[i] = (float)((double)a[i] + k->weight * (double)((float)lv[i] * step));
        }
    }
}

typedef struct dec_state {
    fc_rc_dec d;
    unsigned N;
    unsigned k;
    unsigned m0;
    unsigned cm_max;       /* largest coded magnitude that keeps |v| <= FC_MAX_LEVEL */
    unsigned prev_row_flag;
    uint64_t act_pending;  /* all-zero rows whose activity decay is not applied yet */
    fc_colstate cols;
    fc_rowstate row;
    /* runs mode */
    unsigned gap_class;
    uint64_t pos;          /* slice position after the last nonzero */
    uint64_t next_nz;      /* slice position of the next nonzero, or n */
    uint64_t n;
    int bad;
    /* trellis tensors: the state machine (NULL otherwise) and its state at
     * the next element to decode */
    const fc_dq_machine *dq;
    unsigned dq_state;
    fc_ref ref;             /* the reference's current row (ref.row NULL: none) */
    int32_t *zrow;          /* cols zeros (with column state): the above row of row 0 */
    /* last: the allocation zeroes the fields before it only
     * (fc_ctxset_init sets every context) */
    fc_ctxset s;
} dec_state;

/* Decode the level of a significant element at column c; 0 when malformed
 * (runs mode). */
static int32_t dec_nonzero(dec_state *st, int32_t left, int32_t above, uint64_t c)
{
    unsigned neg, cm = fc_dec_level(&st->d, &st->s,
                                    fc_neighbourhood(&st->cols, &st->row, left, above, c, st->m0,
                                                     fc_ref_at(&st->ref, c)),
                                    st->N, st->cm_max, &neg);
    int32_t a, v;
    if (!cm) {
        st->bad = 1;
        return 0;
    }
    a = (int32_t)(cm + st->m0 - 1u);
    v = neg ? -a : a;
    fc_on_nonzero(&st->cols, &st->row, v, c, cm, 1);
    return v;
}

/* Significance-coded columns [g0, g1) of a chunk that starts at c0
 * (`dqset`: the contexts of states in Q1, trellis slices), specialized by
 * the constant flags: has_cols (the slice keeps column state), has_dq
 * (trellis tensor), has_ref (reference classes).  The range decoder, the
 * row state and the slice constants live in locals (registers: context
 * updates cannot alias them); the column state is loaded once per element
 * and handed to the *_v context rules. */
FC_HOT int32_t sig_range_k(dec_state *st, fc_ctx *sigset, fc_ctx *dqset, int32_t *cur,
                           const int32_t *prev, uint64_t c0, uint64_t g0, uint64_t g1, int32_t left,
                           const int has_cols, const int has_dq, const int has_ref)
{
    fc_rc_dec d = st->d;
    fc_rowstate row = st->row;
    fc_ctxset *const s = &st->s;
    uint8_t *const act = st->cols.act;
    int8_t *const sgn = st->cols.sgn;
    uint16_t *const mag = st->cols.mag;
    const fc_dq_machine *const dq = st->dq;
    const uint8_t *const refcls = st->ref.cls;
    const uint64_t ref0 = st->ref.c0;
    const unsigned N = st->N, m0 = st->m0, cm_max = st->cm_max;
    unsigned dqs = st->dq_state;
    uint64_t c;
    /* with column state, a missing above row is the zero row */
    if (has_cols && !prev) prev = st->zrow;
    for (c = g0; c < g1; c++) {
        const int32_t above = has_cols ? prev[c] : (prev ? prev[c] : 0);
        const unsigned ref = has_ref ? refcls[c - ref0] : 0u;
        const unsigned magc = has_cols ? mag[c] : 0u, actc = has_cols ? act[c] : FC_ACT_INIT;
        const unsigned pc = fc_pred_class_v(magc, &row);
        fc_ctx *const set = (has_dq && dq->q[dqs]) ? dqset : sigset;
        int32_t v = 0;
        if (fc_rc_decode(&d, &set[fc_sig_ctx_v(&row, left, above, c, ref, actc, pc)])) {
            const int sgnc = has_cols ? sgn[c] : 0;
            unsigned neg, cm = fc_dec_level(&d, s, fc_neighbourhood_v(&row, left, above, m0, ref, pc, sgnc, magc),
                                            N, cm_max, &neg);
            int32_t a;
            if (!cm) {
                st->bad = 1;
                break;
            }
            a = (int32_t)(cm + m0 - 1u);
            v = neg ? -a : a;
            fc_row_on_nonzero(&row, v, c, cm, sgnc, magc);
            if (has_cols) {
                sgn[c] = (int8_t)(neg ? -1 : 1);
                mag[c] = (uint16_t)(cm > 65535u ? 65535u : cm);
            }
        }
        if (has_dq) dqs = dq->next[dqs][(unsigned)v & 1u];
        if (has_cols) act[c] = (uint8_t)fc_act_next(actc, v != 0);
        cur[c - c0] = v;
        left = v;
    }
    st->d = d;
    st->row = row;
    st->dq_state = dqs;
    return left;
}

static int32_t dec_sig_range(dec_state *st, fc_ctx *sigset, fc_ctx *dqset, int32_t *cur,
                             const int32_t *prev, uint64_t c0, uint64_t g0, uint64_t g1, int32_t left)
{
    const int has_cols = st->cols.mag != NULL, has_dq = st->dq != NULL, has_ref = st->ref.cls != NULL;
    /* The column state exists exactly when cols <= FC_ROW_CTX_MAX, and
     * then act, sgn and mag together (dense and grouped slices). */
    if (has_cols && !has_dq && !has_ref)
        return sig_range_k(st, sigset, dqset, cur, prev, c0, g0, g1, left, 1, 0, 0);
    if (has_cols && has_dq && !has_ref)
        return sig_range_k(st, sigset, dqset, cur, prev, c0, g0, g1, left, 1, 1, 0);
    if (has_cols && !has_dq && has_ref) /* reference or PREDICT slices */
        return sig_range_k(st, sigset, dqset, cur, prev, c0, g0, g1, left, 1, 0, 1);
    if (has_cols && has_ref)
        return sig_range_k(st, sigset, dqset, cur, prev, c0, g0, g1, left, 1, 1, 1);
    return sig_range_k(st, sigset, dqset, cur, prev, c0, g0, g1, left, 0, has_dq, has_ref);
}

/* A constant-magnitude row's columns [c0, c1): significance and sign only,
 * every nonzero level has magnitude `a`; the column state is left alone
 * (it models the other rows). */
static int32_t dec_chunk_const(dec_state *st, int32_t *cur, const int32_t *prev, uint64_t c0,
                               uint64_t c1, int32_t left, int32_t a)
{
    const fc_dq_machine *dq = st->dq;
    uint64_t c;
    for (c = c0; c < c1; c++) {
        int32_t v = 0;
        if (fc_rc_decode(&st->d, &st->s.csig[fc_csig_ctx(left, prev ? prev[c] : 0)]))
            v = fc_rc_decode(&st->d, &st->s.csign[fc_sign_class(left)]) ? -a : a;
        if (dq) st->dq_state = dq->next[st->dq_state][(unsigned)v & 1u];
        cur[c - c0] = v;
        left = v;
    }
    return left;
}

static void decay_activity(dec_state *st, uint64_t c0, uint64_t c1)
{
    uint64_t c;
    if (st->cols.act)
        for (c = c0; c < c1; c++) fc_col_activity(&st->cols, c, 0);
}

/* The activity decay of the all-zero rows since the last non-empty one
 * (FORMAT.md §7.1: every column decays once per such row), applied when a
 * row needs the activity: a table with mostly empty rows decays each
 * column at most FC_ACT_ZERO_AFTER times per non-empty row, not once per
 * empty row. */
static void settle_activity(dec_state *st, uint64_t cols)
{
    uint64_t k = st->act_pending;
    st->act_pending = 0;
    if (!st->cols.act || !k) return;
    if (k >= FC_ACT_ZERO_AFTER) {
        memset(st->cols.act, 0, (size_t)cols);
        return;
    }
    while (k--) decay_activity(st, 0, cols);
}

/* Decode one row chunk [c0, c1) into cur[0 .. c1-c0).  `prev` is the whole
 * previous row (or NULL), `left` the level before c0 in this row. */
static void dec_chunk_dense(dec_state *st, int32_t *cur, const int32_t *prev, uint64_t c0,
                            uint64_t c1, int32_t left)
{
    dec_sig_range(st, st->s.sig, st->s.dqsig, cur, prev, c0, c0, c1, left);
}

static unsigned any_nonzero(const int32_t *v, uint64_t c0, uint64_t c1)
{
    uint64_t c;
    if (!v) return 0;
    for (c = c0; c < c1; c++)
        if (v[c]) return 1;
    return 0;
}

static void dec_chunk_grouped(dec_state *st, int32_t *cur, const int32_t *prev, uint64_t c0,
                              uint64_t c1, int32_t left, unsigned *left_group)
{
    uint64_t g;
    for (g = c0 / FC_GROUP; g * FC_GROUP < c1 && !st->bad; g++) {
        uint64_t g0 = g * FC_GROUP, g1 = g0 + FC_GROUP < c1 ? g0 + FC_GROUP : c1;
        unsigned above_group = any_nonzero(prev, g0, g1);
        unsigned any = fc_rc_decode(&st->d, &st->s.group[*left_group * 2 + above_group]);
        *left_group = any;
        if (!any) {
            memset(cur + (g0 - c0), 0, sizeof(int32_t) * (size_t)(g1 - g0));
            decay_activity(st, g0, g1);
            if (st->dq) st->dq_state = fc_dq_skip_zeros(st->dq, st->dq_state, g1 - g0);
            left = 0;
            continue;
        }
        left = dec_sig_range(st, st->s.gsig, st->s.dqgsig, cur, prev, c0, g0, g1, left);
    }
}

static void next_gap(dec_state *st)
{
    uint64_t g;
    int ep = fc_dec_gap(&st->d, &st->s, st->k, st->gap_class, &g);
    if (ep < 0 || g > st->n - st->pos) {
        st->bad = 1;
        st->next_nz = st->n;
        return;
    }
    st->gap_class = fc_gap_class((unsigned)ep);
    st->next_nz = st->pos + g;
}

/* Runs mode: the chunk starts at slice position `base`. */
static void dec_chunk_runs(dec_state *st, int32_t *cur, const int32_t *prev, uint64_t base,
                           uint64_t c0, uint64_t c1, int32_t left)
{
    uint64_t end = base + (c1 - c0);
    memset(cur, 0, sizeof(int32_t) * (size_t)(c1 - c0));
    while (st->next_nz < end) {
        uint64_t i = st->next_nz - base, c = c0 + i;
        int32_t l = i ? cur[i - 1] : left;
        int32_t v = dec_nonzero(st, l, prev ? prev[c] : 0, c);
        if (!v) return;
        cur[i] = v;
        st->pos = st->next_nz + 1;
        next_gap(st);
        if (st->bad) return;
    }
}

void fc_slice_decode(fc_slice_dec_job *job)
{
    const uint64_t rows = job->rows, cols = job->cols;
    const int use_above = cols <= FC_ROW_CTX_MAX;
    const uint64_t width = use_above ? cols : FC_ROW_CTX_MAX;
    const int refrows = job->mode != FC_MODE_RUNS && (job->k & FC_SLICE_REFROWS);
    const int rowkind = fc_slice_rowkind(job->mode, job->k);
    const int rowfine = fc_slice_rowfine(job->mode, job->k);
    const int scalectx = fc_slice_scalectx(job->mode, job->k);
    const unsigned rank = job->mode == FC_MODE_DENSE && (job->k & FC_SLICE_PREDICT)
                              ? ((job->k & FC_SLICE_RANK8) ? 8u : 4u)
                              : 0u;
    fc_pred pred;
    uint8_t *predcls = NULL; /* PREDICT: the current row's prediction classes */
    unsigned prev_kind = 0;
    const unsigned window = refrows ? fc_ref_window(cols) : 1u, slots = window + 1u;
    const fc_dq_machine *dq = (job->quant == FC_QUANT_TRELLIS || job->quant == FC_QUANT_TRELLIS8)
                                  ? &fc_dq_machines[job->quant]
                                  : NULL;
    /* Largest level whose reconstruction stays a finite float32: a
     * container whose levels would decode to infinity is corrupt. */
    const int32_t max_level =
        fc_max_finite_level(job->step, dq ? FC_MAX_DQ_LEVEL : FC_MAX_LEVEL, job->quant);
    /* The previous rows (the "above" context, any of the last `window` ones
     * in REFROWS slices) are kept in a ring of rows; a levels target that
     * takes the decoded rows as they are (row-major, not a trellis tensor's
     * reconstruction indices) holds them already: the rows then decode in
     * place, without the ring (up to 129 rows) and without copying them. */
    const int direct = use_above && job->sink.levels != NULL && !job->sink.tstride && !dq;
    int32_t *const lv_out = job->sink.levels;
    int32_t *ring = NULL;
    dec_state *st = NULL;
    dec_out o;
    uint8_t *refcls = NULL; /* the current chunk's reference classes */
    const double inv_step = 1.0 / (double)job->step;
    uint64_t r;

    job->result = FC_OK;
    memset(&pred, 0, sizeof(pred));
    /* (the container checks these too) */
    if ((refrows && !use_above) || (rank && (rowkind || job->ref || !use_above)) ||
        (scalectx && !(job->k & FC_SLICE_ROWSCALE)) || (rowfine && job->quant != FC_QUANT_UNIFORM)) {
        job->result = FC_ERR_CORRUPT;
        return;
    }
    memset(&o, 0, sizeof(o));
    o.sink = &job->sink;
    o.step = job->step;
    o.quant = job->quant;
    o.dq = dq;
    o.key = job->dither_key;
    o.first = job->elem_off;
    o.active = job->sink.levels || job->sink.values || job->sink.acc;
    if (!direct) ring = (int32_t *)calloc((size_t)width * slots, sizeof(int32_t));
    if (dq && o.active) o.scratch = (int32_t *)malloc(sizeof(int32_t) * (size_t)width);
    if (job->ref) refcls = (uint8_t *)malloc((size_t)width);
    st = (dec_state *)malloc(sizeof(*st));
    if (st) memset(st, 0, offsetof(dec_state, s));
    if (st && use_above) {
        st->cols.sgn = (int8_t *)calloc((size_t)cols, 1);
        st->cols.mag = (uint16_t *)calloc((size_t)cols, sizeof(uint16_t));
        st->zrow = (int32_t *)calloc((size_t)cols, sizeof(int32_t));
        if (job->mode != FC_MODE_RUNS) {
            st->cols.act = (uint8_t *)malloc((size_t)cols);
            if (st->cols.act) memset(st->cols.act, FC_ACT_INIT, (size_t)cols);
        }
    }
    if (rank && (fc_pred_init(&pred, rank, cols, (job->k & FC_SLICE_ROWSCALE) != 0) ||
                 !(predcls = (uint8_t *)malloc((size_t)cols)))) {
        job->result = FC_ERR_NOMEM;
        goto out;
    }
    if ((!direct && !ring) || !st || (dq && o.active && !o.scratch) || (job->ref && !refcls) ||
        (use_above && (!st->cols.sgn || !st->cols.mag || !st->zrow || (job->mode != FC_MODE_RUNS && !st->cols.act)))) {
        job->result = FC_ERR_NOMEM;
        goto out;
    }
    fc_rc_dec_init(&st->d, job->src, job->size);
    fc_ctxset_init(&st->s, job->window_set);
    st->N = job->max_gtx;
    st->k = job->mode == FC_MODE_RUNS ? job->k : 0;
    {
        uint32_t m0m1;
        if (fc_dec_eg0_bypass(&st->d, &m0m1) || m0m1 >= (uint32_t)max_level) {
            job->result = FC_ERR_CORRUPT;
            goto out;
        }
        st->m0 = m0m1 + 1u;
        st->cm_max = (unsigned)max_level - m0m1;
    }
    st->dq = dq;
    st->n = rows * cols;
    if (job->mode == FC_MODE_RUNS) next_gap(st);

    for (r = 0; r < rows && !st->bad; r++) {
        int32_t *cur = direct ? lv_out + (size_t)r * cols : ring + (size_t)(use_above ? r % slots : 0) * width;
        const int32_t *above_row = (r > 0 && use_above)
                                       ? (direct ? lv_out + (size_t)(r - 1) * cols : ring + (size_t)((r - 1) % slots) * width)
                                       : NULL;
        const uint64_t off = r * cols;
        unsigned left_group = 0, flag = 1;
        int32_t left = 0, const_mag = 0;
        uint64_t c0;
        o.finerow = 0;
        fc_row_begin(&st->row);
        if (job->mode != FC_MODE_RUNS) {
            flag = fc_rc_decode(&st->d, &st->s.row[st->prev_row_flag]);
            st->prev_row_flag = flag;
            if (!flag) {
                if (job->sink.tstride) {
                    if (o.active) emit_transposed(&o, r, 0, NULL, cols);
                } else {
                    emit_zeros(&o, off, cols);
                }
                if (!rowkind) st->act_pending++; /* ROWKIND: empty rows leave it */
                if (dq) st->dq_state = fc_dq_skip_zeros(dq, st->dq_state, cols);
                if (use_above && !direct) memset(cur, 0, sizeof(int32_t) * (size_t)cols);
                continue;
            }
            settle_activity(st, cols);
            if (refrows && r > 0) {
                unsigned m = r < window ? (unsigned)r : window, d = 1;
                if (m >= 2 && !fc_rc_decode(&st->d, &st->s.ref)) {
                    uint64_t x = fc_rc_bypass_dec(&st->d, fc_ref_bits(m));
                    if (x > m - 2u) {
                        st->bad = 1;
                        break;
                    }
                    d = (unsigned)x + 2u;
                }
                above_row = direct ? lv_out + (size_t)(r - d) * cols : ring + (size_t)((r - d) % slots) * width;
            }
            if (rank) {
                fc_pred_basis(&pred);
                if (fc_pred_dec_coefs(&st->d, &st->s, &pred)) {
                    st->bad = 1;
                    break;
                }
                if (scalectx) st->row.scale = pred.g + 1u;
                st->ref.cls = NULL;
                if (fc_pred_classes(&pred, predcls)) {
                    if (job->k & FC_SLICE_CLASSCTX) fc_classes_mark(predcls, cols);
                    st->ref.cls = predcls;
                    st->ref.c0 = 0;
                }
            }
            if (rowkind) {
                prev_kind = fc_rc_decode(&st->d, &st->s.rowkind[prev_kind]);
                if (prev_kind) {
                    uint32_t cm1;
                    if (fc_dec_eg0_bypass(&st->d, &cm1) || cm1 >= st->cm_max) {
                        st->bad = 1;
                        break;
                    }
                    const_mag = (int32_t)(cm1 + st->m0);
                    if (rowfine) {
                        o.fine = fc_rowfine_value((uint32_t)const_mag,
                                                  (uint32_t)fc_rc_bypass_dec(&st->d, FC_ROWFINE_BITS),
                                                  job->step);
                        o.finerow = 1;
                        if (!(o.fine <= FLT_MAX)) { /* (a + 7/16) * step beyond float32 */
                            st->bad = 1;
                            break;
                        }
                    }
                }
            }
        }
        for (c0 = 0; c0 < cols && !st->bad; c0 += width) {
            uint64_t c1 = c0 + width < cols ? c0 + width : cols;
            if (refcls) {
                fc_ref_classes(job->ref + off + c0, c1 - c0, inv_step, refcls);
                if (job->k & FC_SLICE_CLASSCTX) fc_classes_mark(refcls, c1 - c0);
                st->ref.cls = refcls;
                st->ref.c0 = c0;
            }
            switch (job->mode) {
            case FC_MODE_DENSE:
                if (const_mag)
                    dec_chunk_const(st, cur, above_row, c0, c1, left, const_mag);
                else
                    dec_chunk_dense(st, cur, above_row, c0, c1, left);
                break;
            case FC_MODE_GROUPED:
                dec_chunk_grouped(st, cur, above_row, c0, c1, left, &left_group);
                break;
            default:
                dec_chunk_runs(st, cur, above_row, off + c0, c0, c1, left);
                break;
            }
            if (st->bad) break;
            if (job->sink.tstride) {
                if (o.active) emit_transposed(&o, r, c0, cur, c1 - c0);
            } else {
                emit(&o, off + c0, cur, c1 - c0);
            }
            left = cur[c1 - c0 - 1];
        }
        if (rank && !st->bad) fc_pred_learn(&pred, cur);
    }
    if (!st->bad && job->mode == FC_MODE_RUNS && st->next_nz != st->n) st->bad = 1;
    if (st->bad || !fc_rc_dec_ok(&st->d)) job->result = FC_ERR_CORRUPT;
out:
    free(ring);
    free(o.scratch);
    free(refcls);
    free(predcls);
    fc_pred_free(&pred);
    if (st) {
        free(st->cols.act);
        free(st->cols.sgn);
        free(st->cols.mag);
        free(st->zrow);
    }
    free(st);
}
