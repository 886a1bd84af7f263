/* slice_enc.c - quantize and code one slice (see slice.h for the syntax). */
#include <math.h>

#include "binarize.h"
#include "quant.h"
#include "slice.h"

unsigned fc_choose_mode(uint64_t significant, uint64_t n)
{
    /* Measured on synthetic top-k updates (bench codec): the runs mode is
     * smaller than the dense and grouped modes up to ~5 % nonzeros and
     * decodes fastest; dense wins above.  Grouped is never chosen
     * automatically but stays selectable. */
    if (significant * 100u > n * 6u) return FC_MODE_DENSE;
    return FC_MODE_RUNS;
}

unsigned fc_choose_gap_order(uint64_t significant, uint64_t n)
{
    /* Mean gap ~ n / significant; order k = floor(log2(mean gap)) - 2, so
     * the prefix (context-coded) carries the first few bits of every gap,
     * where the density adapts, and the bypass suffix only the low bits. */
    uint64_t mean = n / (significant + 1u);
    unsigned k = mean > 1 ? fc_ilog2_64(mean) : 0;
    k = k > 2 ? k - 2 : 0;
    return k > 31 ? 31 : k;
}

typedef struct row_state {
    unsigned prev_row_flag;
    unsigned m0;
    unsigned N;
    uint64_t run;          /* runs mode: zeros since the last nonzero */
    unsigned gap_class;    /* runs mode: class of the previous gap */
} row_state;

/* Code the level cur[c] (nonzero) and update the row's magnitude memory. */
static inline void enc_nonzero(fc_rc_enc *e, fc_ctxset *s, const row_state *st, const int32_t *cur,
                               const int32_t *prev, uint64_t c, unsigned *rowmag)
{
    int32_t v = cur[c];
    int32_t left = c ? cur[c - 1] : 0;
    int32_t above = prev ? prev[c] : 0;
    unsigned cm = fc_cm(v, st->m0);
    fc_enc_level(e, s, v < 0, cm, fc_neighbourhood(left, above, st->m0, *rowmag), st->N);
    *rowmag = fc_rowmag_update(*rowmag, cm);
}

static void enc_sig_range(fc_rc_enc *e, fc_ctxset *s, fc_ctx *sigset, const row_state *st,
                          const int32_t *cur, const int32_t *prev, uint64_t c0, uint64_t c1,
                          uint64_t *last_nz, unsigned *rowmag)
{
    uint64_t c;
    for (c = c0; c < c1; c++) {
        int32_t left = c ? cur[c - 1] : 0;
        int32_t above = prev ? prev[c] : 0;
        uint64_t dist = *last_nz == UINT64_MAX ? UINT64_MAX : c - *last_nz;
        int32_t v = cur[c];
        fc_rc_encode(e, &sigset[fc_sig_ctx(left, above, fc_dist_class(dist))], v != 0);
        if (v) {
            enc_nonzero(e, s, st, cur, prev, c, rowmag);
            *last_nz = c;
        }
    }
}

static void enc_row_dense(fc_rc_enc *e, fc_ctxset *s, const int32_t *cur, const int32_t *prev,
                          uint64_t cols, uint64_t nz, row_state *st)
{
    unsigned rowmag = 0;
    uint64_t last_nz = UINT64_MAX;
    unsigned flag = nz != 0;
    fc_rc_encode(e, &s->row[st->prev_row_flag], flag);
    st->prev_row_flag = flag;
    if (flag) enc_sig_range(e, s, s->sig, st, cur, prev, 0, cols, &last_nz, &rowmag);
}

static void enc_row_grouped(fc_rc_enc *e, fc_ctxset *s, const int32_t *cur, const int32_t *prev,
                            uint64_t cols, uint64_t nz, row_state *st, const uint8_t *gprev,
                            uint8_t *gcur)
{
    unsigned rowmag = 0, left_group = 0;
    uint64_t g, ngroups = (cols + FC_GROUP - 1) / FC_GROUP, last_nz = UINT64_MAX;
    unsigned flag = nz != 0;
    fc_rc_encode(e, &s->row[st->prev_row_flag], flag);
    st->prev_row_flag = flag;
    if (!flag) {
        if (gcur) memset(gcur, 0, (size_t)ngroups);
        return;
    }
    for (g = 0; g < ngroups; g++) {
        uint64_t c0 = g * FC_GROUP, c1 = c0 + FC_GROUP < cols ? c0 + FC_GROUP : cols, c;
        unsigned any = 0, above_group = gprev ? gprev[g] : 0;
        for (c = c0; c < c1; c++) any |= cur[c] != 0;
        fc_rc_encode(e, &s->group[left_group * 2 + above_group], any);
        left_group = any;
        if (gcur) gcur[g] = (uint8_t)any;
        if (any) enc_sig_range(e, s, s->gsig, st, cur, prev, c0, c1, &last_nz, &rowmag);
    }
}

static void enc_row_runs(fc_rc_enc *e, fc_ctxset *s, const int32_t *cur, const int32_t *prev,
                         uint64_t cols, unsigned k, row_state *st)
{
    unsigned rowmag = 0;
    uint64_t c;
    for (c = 0; c < cols; c++) {
        if (!cur[c]) {
            st->run++;
            continue;
        }
        st->gap_class = fc_gap_class(fc_enc_gap(e, s, st->run, k, st->gap_class));
        st->run = 0;
        enc_nonzero(e, s, st, cur, prev, c, &rowmag);
    }
}

void fc_slice_encode(fc_slice_enc_job *job)
{
    const uint64_t rows = job->rows, cols = job->cols, n = rows * cols;
    const int use_above = cols <= FC_ROW_CTX_MAX;
    const uint64_t ngroups = (cols + FC_GROUP - 1) / FC_GROUP;
    int32_t *buf = NULL, *prev, *cur;
    uint8_t *gbuf = NULL, *gprev = NULL, *gcur = NULL;
    fc_quantizer *q = NULL;
    fc_ctxset *s = NULL;
    fc_rc_enc e;
    row_state st;
    uint64_t r, significant;
    double inv_step = 1.0 / (double)job->step;

    job->result = FC_OK;
    job->nonzeros = 0;
    job->sq_error = 0.0;

    /* Mode from the density under plain rounding (RD quantization only
     * lowers it). */
    if (job->values) {
        significant = fc_rounding_stats(job->values, n, inv_step, &st.m0);
    } else {
        uint64_t i;
        unsigned lo = (unsigned)FC_MAX_LEVEL;
        significant = 0;
        for (i = 0; i < n; i++) {
            unsigned a = fc_abs32(job->levels[i]);
            if (a) {
                significant++;
                if (a < lo) lo = a;
            }
        }
        st.m0 = significant ? lo : 1u;
    }
    job->mode = job->mode_request >= 0 ? (unsigned)job->mode_request : fc_choose_mode(significant, n);
    job->k = job->mode == FC_MODE_RUNS ? fc_choose_gap_order(significant, n) : 0;

    buf = (int32_t *)malloc(sizeof(int32_t) * (size_t)cols * 2);
    s = (fc_ctxset *)malloc(sizeof(*s));
    if (job->values) q = (fc_quantizer *)malloc(sizeof(*q));
    if (job->mode == FC_MODE_GROUPED && use_above) gbuf = (uint8_t *)calloc((size_t)ngroups * 2, 1);
    if (!buf || !s || (job->values && !q) || (job->mode == FC_MODE_GROUPED && use_above && !gbuf)) {
        job->result = FC_ERR_NOMEM;
        goto out;
    }
    prev = buf;
    cur = buf + cols;
    if (gbuf) {
        gprev = gbuf;
        gcur = gbuf + ngroups;
    }
    fc_ctxset_init(s, job->window_set);
    if (q) {
        q->inv_step = inv_step;
        q->lambda = job->lambda;
        q->eta_scale = job->eta_scale;
        q->N = job->max_gtx;
        q->m0 = st.m0;
        fc_ctxset_init(&q->model, job->window_set);
    }
    fc_rc_enc_init(&e, &job->out);
    fc_enc_eg0_bypass(&e, st.m0 - 1u);
    st.prev_row_flag = 0;
    st.run = 0;
    st.gap_class = 0;
    st.N = job->max_gtx;

    for (r = 0; r < rows; r++) {
        const int32_t *above_row = (r > 0 && use_above) ? prev : NULL;
        uint64_t nz, off = r * cols, c;
        int32_t *tmp;
        uint8_t *gtmp;
        if (job->values) {
            nz = fc_quantize_row(q, job->values + off, job->importance ? job->importance + off : NULL,
                                 cols, above_row, cur);
            {
                double se = 0.0;
                for (c = 0; c < cols; c++) {
                    float rec = (float)cur[c] * job->step;
                    double d = (double)job->values[off + c] - (double)rec;
                    se += d * d;
                    if (job->recon) job->recon[off + c] = rec;
                }
                job->sq_error += se;
            }
        } else {
            nz = 0;
            memcpy(cur, job->levels + off, sizeof(int32_t) * (size_t)cols);
            for (c = 0; c < cols; c++) nz += cur[c] != 0;
            if (job->recon)
                for (c = 0; c < cols; c++) job->recon[off + c] = (float)cur[c] * job->step;
        }
        job->nonzeros += nz;
        switch (job->mode) {
        case FC_MODE_DENSE:
            enc_row_dense(&e, s, cur, above_row, cols, nz, &st);
            break;
        case FC_MODE_GROUPED:
            enc_row_grouped(&e, s, cur, above_row, cols, nz, &st, r > 0 ? gprev : NULL, gcur);
            break;
        default:
            enc_row_runs(&e, s, cur, above_row, cols, job->k, &st);
            break;
        }
        tmp = prev;
        prev = cur;
        cur = tmp;
        gtmp = gprev;
        gprev = gcur;
        gcur = gtmp;
    }
    if (job->mode == FC_MODE_RUNS) fc_enc_gap(&e, s, st.run, job->k, st.gap_class);
    fc_rc_finish(&e);
    if (job->out.failed) job->result = FC_ERR_NOMEM;
out:
    free(buf);
    free(gbuf);
    free(q);
    free(s);
}
