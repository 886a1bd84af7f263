/* slice_dec.c - decode one slice (see slice.h for the syntax).
 *
 * The decoder works on column chunks of at most FC_ROW_CTX_MAX elements, so
 * its memory does not depend on the shape a container claims.  Rows wider
 * than that are coded without the "above" context (as the encoder does).
 * Every loop is bounded by the slice's element count, so hostile input costs
 * at most a bounded number of bins per element. */
#include "binarize.h"
#include "slice.h"

static void emit_zeros(const fc_sink *k, uint64_t off, uint64_t n)
{
    if (k->levels) memset(k->levels + off, 0, sizeof(int32_t) * (size_t)n);
    if (k->values) memset(k->values + off, 0, sizeof(float) * (size_t)n);
}

static void emit(const fc_sink *k, float step, uint64_t off, const int32_t *lv, uint64_t n)
{
    uint64_t i;
    if (k->levels) memcpy(k->levels + off, lv, sizeof(int32_t) * (size_t)n);
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
    fc_ctxset s;
    unsigned N;
    unsigned k;
    unsigned m0;
    unsigned cm_max;       /* largest coded magnitude that keeps |v| <= FC_MAX_LEVEL */
    unsigned prev_row_flag;
    /* per row */
    unsigned rowmag;
    uint64_t last_nz;      /* column of the row's last nonzero, or UINT64_MAX */
    /* runs mode */
    unsigned gap_class;
    uint64_t pos;          /* slice position after the last nonzero */
    uint64_t next_nz;      /* slice position of the next nonzero, or n */
    uint64_t n;
    int bad;
} dec_state;

/* Decode the level of a significant element; 0 when malformed. */
static inline int32_t dec_nonzero(dec_state *st, int32_t left, int32_t above)
{
    unsigned neg, cm = fc_dec_level(&st->d, &st->s, fc_neighbourhood(left, above, st->m0, st->rowmag),
                                     st->N, st->cm_max, &neg);
    int32_t a;
    if (!cm) {
        st->bad = 1;
        return 0;
    }
    st->rowmag = fc_rowmag_update(st->rowmag, cm);
    a = (int32_t)(cm + st->m0 - 1u);
    return neg ? -a : a;
}

/* Significance-coded columns [g0, g1) of a chunk that starts at c0. */
static int32_t dec_sig_range(dec_state *st, fc_ctx *sigset, int32_t *cur, const int32_t *prev,
                             uint64_t c0, uint64_t g0, uint64_t g1, int32_t left)
{
    uint64_t c;
    for (c = g0; c < g1; c++) {
        int32_t above = prev ? prev[c] : 0;
        uint64_t dist = st->last_nz == UINT64_MAX ? UINT64_MAX : c - st->last_nz;
        int32_t v = 0;
        if (fc_rc_decode(&st->d, &sigset[fc_sig_ctx(left, above, fc_dist_class(dist))])) {
            v = dec_nonzero(st, left, above);
            if (!v) return 0;
            st->last_nz = c;
        }
        cur[c - c0] = v;
        left = v;
    }
    return left;
}

/* Decode one row chunk [c0, c1) into cur[0 .. c1-c0).  `prev` is the whole
 * previous row (or NULL), `left` the level before c0 in this row. */
static void dec_chunk_dense(dec_state *st, int32_t *cur, const int32_t *prev, uint64_t c0,
                            uint64_t c1, int32_t left)
{
    dec_sig_range(st, st->s.sig, cur, prev, c0, c0, c1, left);
}

static void dec_chunk_grouped(dec_state *st, int32_t *cur, const int32_t *prev, uint64_t c0,
                              uint64_t c1, int32_t left, unsigned *left_group,
                              const uint8_t *gprev, uint8_t *gcur)
{
    uint64_t g;
    for (g = c0 / FC_GROUP; g * FC_GROUP < c1 && !st->bad; g++) {
        uint64_t g0 = g * FC_GROUP, g1 = g0 + FC_GROUP < c1 ? g0 + FC_GROUP : c1;
        unsigned above_group = gprev ? gprev[g] : 0;
        unsigned any = fc_rc_decode(&st->d, &st->s.group[*left_group * 2 + above_group]);
        *left_group = any;
        if (gcur) gcur[g] = (uint8_t)any;
        if (!any) {
            memset(cur + (g0 - c0), 0, sizeof(int32_t) * (size_t)(g1 - g0));
            left = 0;
            continue;
        }
        left = dec_sig_range(st, st->s.gsig, cur, prev, c0, g0, g1, left);
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
        int32_t above = prev ? prev[c] : 0;
        int32_t v = dec_nonzero(st, l, above);
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
    const uint64_t ngroups = (width + FC_GROUP - 1) / FC_GROUP;
    int32_t *buf = NULL, *prev, *cur;
    uint8_t *gbuf = NULL, *gprev = NULL, *gcur = NULL;
    dec_state *st = NULL;
    uint64_t r;

    job->result = FC_OK;
    buf = (int32_t *)malloc(sizeof(int32_t) * (size_t)width * 2);
    st = (dec_state *)malloc(sizeof(*st));
    if (job->mode == FC_MODE_GROUPED && use_above) gbuf = (uint8_t *)calloc((size_t)ngroups * 2, 1);
    if (!buf || !st || (job->mode == FC_MODE_GROUPED && use_above && !gbuf)) {
        job->result = FC_ERR_NOMEM;
        goto out;
    }
    prev = buf;
    cur = buf + width;
    if (gbuf) {
        gprev = gbuf;
        gcur = gbuf + ngroups;
    }
    fc_rc_dec_init(&st->d, job->src, job->size);
    fc_ctxset_init(&st->s, job->window_set);
    st->N = job->max_gtx;
    st->k = job->k;
    st->gap_class = 0;
    {
        uint32_t m0m1;
        if (fc_dec_eg0_bypass(&st->d, &m0m1) || m0m1 >= (uint32_t)FC_MAX_LEVEL) {
            job->result = FC_ERR_CORRUPT;
            goto out;
        }
        st->m0 = m0m1 + 1u;
        st->cm_max = (unsigned)FC_MAX_LEVEL - m0m1;
    }
    st->prev_row_flag = 0;
    st->n = rows * cols;
    st->pos = 0;
    st->bad = 0;
    if (job->mode == FC_MODE_RUNS) next_gap(st);

    for (r = 0; r < rows && !st->bad; r++) {
        const int32_t *above_row = (r > 0 && use_above) ? prev : NULL;
        const uint64_t off = r * cols;
        unsigned left_group = 0, flag = 1;
        int32_t left = 0;
        uint64_t c0;
        st->rowmag = 0;
        st->last_nz = UINT64_MAX;
        if (job->mode != FC_MODE_RUNS) {
            flag = fc_rc_decode(&st->d, &st->s.row[st->prev_row_flag]);
            st->prev_row_flag = flag;
            if (!flag) {
                emit_zeros(&job->sink, off, cols);
                if (use_above) memset(cur, 0, sizeof(int32_t) * (size_t)cols);
                if (gcur) memset(gcur, 0, (size_t)ngroups);
            }
        }
        for (c0 = 0; flag && c0 < cols && !st->bad; c0 += width) {
            uint64_t c1 = c0 + width < cols ? c0 + width : cols;
            switch (job->mode) {
            case FC_MODE_DENSE:
                dec_chunk_dense(st, cur, above_row, c0, c1, left);
                break;
            case FC_MODE_GROUPED:
                dec_chunk_grouped(st, cur, above_row, c0, c1, left, &left_group,
                                  r > 0 ? gprev : NULL, gcur);
                break;
            default:
                dec_chunk_runs(st, cur, above_row, off + c0, c0, c1, left);
                break;
            }
            if (st->bad) break;
            emit(&job->sink, job->step, off + c0, cur, c1 - c0);
            left = cur[c1 - c0 - 1];
        }
        {
            int32_t *tmp = prev;
            uint8_t *gtmp = gprev;
            prev = cur;
            cur = tmp;
            gprev = gcur;
            gcur = gtmp;
        }
    }
    if (!st->bad && job->mode == FC_MODE_RUNS && st->next_nz != st->n) st->bad = 1;
    if (st->bad || !fc_rc_dec_ok(&st->d, job->size)) job->result = FC_ERR_CORRUPT;
out:
    free(buf);
    free(gbuf);
    free(st);
}
