/* slice_enc.c - quantize and code one slice (see slice.h for the syntax). */
#include <math.h>

#include "binarize.h"
#include "quant.h"
#include "slice.h"

unsigned fc_choose_mode(uint64_t significant, uint64_t n)
{
    /* Dense above 5 % nonzero, grouped down to 0.2 %, runs below
     * (reference/entropy_coding.md section 11.3). */
    if (significant * 20u > n) return FC_MODE_DENSE;
    if (significant * 500u > n) return FC_MODE_GROUPED;
    return FC_MODE_RUNS;
}

unsigned fc_choose_gap_order(uint64_t significant, uint64_t n)
{
    /* Mean gap ~ n / significant; order k ~ log2(mean gap) - 1. */
    uint64_t mean = n / (significant + 1u);
    unsigned k = mean > 1 ? fc_ilog2_64(mean) : 0;
    k = k > 0 ? k - 1 : 0;
    return k > 31 ? 31 : k;
}

typedef struct row_state {
    unsigned prev_row_flag;
    uint64_t run;          /* runs mode: zeros since the last nonzero */
} row_state;

static void enc_row_dense(fc_rc_enc *e, fc_ctxset *s, const int32_t *cur, const int32_t *prev,
                          uint64_t cols, uint64_t nz, unsigned N, row_state *st)
{
    unsigned lastmag = 0;
    uint64_t c;
    unsigned flag = nz != 0;
    fc_rc_encode(e, &s->row[st->prev_row_flag], flag);
    st->prev_row_flag = flag;
    if (!flag) return;
    for (c = 0; c < cols; c++) {
        int32_t left = c ? cur[c - 1] : 0;
        int32_t above = prev ? prev[c] : 0;
        int32_t v = cur[c];
        fc_rc_encode(e, &s->sig[fc_sig_ctx(left, above)], v != 0);
        if (v) {
            fc_enc_level(e, s, v, fc_neighbourhood(left, above, lastmag), N);
            lastmag = fc_abs32(v);
        }
    }
}

static void enc_row_grouped(fc_rc_enc *e, fc_ctxset *s, const int32_t *cur, const int32_t *prev,
                            uint64_t cols, uint64_t nz, unsigned N, row_state *st,
                            const uint8_t *gprev, uint8_t *gcur)
{
    unsigned lastmag = 0, left_group = 0;
    uint64_t g, ngroups = (cols + FC_GROUP - 1) / FC_GROUP;
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
        if (!any) continue;
        for (c = c0; c < c1; c++) {
            int32_t left = c ? cur[c - 1] : 0;
            int32_t above = prev ? prev[c] : 0;
            int32_t v = cur[c];
            fc_rc_encode(e, &s->gsig[fc_sig_ctx(left, above)], v != 0);
            if (v) {
                fc_enc_level(e, s, v, fc_neighbourhood(left, above, lastmag), N);
                lastmag = fc_abs32(v);
            }
        }
    }
}

static void enc_row_runs(fc_rc_enc *e, fc_ctxset *s, const int32_t *cur, const int32_t *prev,
                         uint64_t cols, unsigned N, unsigned k, row_state *st)
{
    unsigned lastmag = 0;
    uint64_t c;
    for (c = 0; c < cols; c++) {
        int32_t v = cur[c];
        if (!v) {
            st->run++;
            continue;
        }
        fc_enc_gap(e, s, st->run, k);
        st->run = 0;
        {
            int32_t left = c ? cur[c - 1] : 0;
            int32_t above = prev ? prev[c] : 0;
            fc_enc_level(e, s, v, fc_neighbourhood(left, above, lastmag), N);
        }
        lastmag = fc_abs32(v);
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
        significant = fc_count_significant(job->values, n, inv_step);
    } else {
        uint64_t i;
        significant = 0;
        for (i = 0; i < n; i++) significant += job->levels[i] != 0;
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
        fc_ctxset_init(&q->model, job->window_set);
    }
    fc_rc_enc_init(&e, &job->out);
    st.prev_row_flag = 0;
    st.run = 0;

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
            enc_row_dense(&e, s, cur, above_row, cols, nz, job->max_gtx, &st);
            break;
        case FC_MODE_GROUPED:
            enc_row_grouped(&e, s, cur, above_row, cols, nz, job->max_gtx, &st,
                            r > 0 ? gprev : NULL, gcur);
            break;
        default:
            enc_row_runs(&e, s, cur, above_row, cols, job->max_gtx, job->k, &st);
            break;
        }
        tmp = prev;
        prev = cur;
        cur = tmp;
        gtmp = gprev;
        gprev = gcur;
        gcur = gtmp;
    }
    if (job->mode == FC_MODE_RUNS) fc_enc_gap(&e, s, st.run, job->k);
    fc_rc_finish(&e);
    if (job->out.failed) job->result = FC_ERR_NOMEM;
out:
    free(buf);
    free(gbuf);
    free(q);
    free(s);
}
