/* slice_enc.c - quantize and code one slice (see slice.h for the syntax). */
#include <float.h>
#include <math.h>

#include "binarize.h"
#include "predict.h"
#include "quant.h"
#include "slice.h"

unsigned fc_choose_mode(uint64_t significant, uint64_t n)
{
    /* Measured on synthetic unstructured updates (bench codec): the runs
     * mode is the smallest up to ~20 % nonzeros and decodes fastest; dense
     * above.  Grouped is never chosen automatically but stays selectable. */
    if (significant * 5u > n) return FC_MODE_DENSE;
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

typedef struct slice_state {
    unsigned prev_row_flag;
    unsigned m0;
    unsigned N;
    uint64_t run;          /* runs mode: zeros since the last nonzero */
    unsigned gap_class;    /* runs mode: class of the previous gap */
    fc_colstate cols;
    fc_rowstate row;
    const fc_dq_machine *dq; /* trellis slices, else NULL */
    unsigned dq_state;       /* the coder's state machine */
    fc_ref ref;              /* the reference's current row (ref.row NULL: none) */
    unsigned prev_kind;      /* ROWKIND: the previous non-empty row's kind */
} slice_state;

/* Code the level cur[c] (nonzero) and update row and column state. */
static inline void enc_nonzero(fc_rc_enc *e, fc_ctxset *s, slice_state *st, const int32_t *cur,
                               const int32_t *above_row, uint64_t c)
{
    int32_t v = cur[c];
    int32_t left = c ? cur[c - 1] : 0;
    int32_t above = above_row ? above_row[c] : 0;
    unsigned cm = fc_cm(v, st->m0);
    fc_enc_level(e, s, v < 0, cm,
                 fc_neighbourhood(&st->cols, &st->row, left, above, c, st->m0, fc_ref_at(&st->ref, c)),
                 st->N);
    fc_on_nonzero(&st->cols, &st->row, v, c, cm, 1);
}

static void enc_sig_range(fc_rc_enc *e, fc_ctxset *s, fc_ctx *sigset, fc_ctx *dqset,
                          slice_state *st, const int32_t *cur, const int32_t *above_row, uint64_t c0,
                          uint64_t c1)
{
    const fc_dq_machine *dq = st->dq;
    uint64_t c;
    for (c = c0; c < c1; c++) {
        int32_t left = c ? cur[c - 1] : 0;
        int32_t above = above_row ? above_row[c] : 0;
        int32_t v = cur[c];
        fc_ctx *set = (dq && dq->q[st->dq_state]) ? dqset : sigset;
        fc_rc_encode(e, &set[fc_sig_ctx(&st->cols, &st->row, left, above, c, fc_ref_at(&st->ref, c))],
                     v != 0);
        if (v) enc_nonzero(e, s, st, cur, above_row, c);
        if (dq) st->dq_state = dq->next[st->dq_state][(unsigned)v & 1u];
        fc_col_activity(&st->cols, c, v != 0);
    }
}

static void decay_activity(slice_state *st, uint64_t c0, uint64_t c1)
{
    uint64_t c;
    if (st->cols.act)
        for (c = c0; c < c1; c++) fc_col_activity(&st->cols, c, 0);
}

static unsigned any_nonzero(const int32_t *v, uint64_t c0, uint64_t c1)
{
    uint64_t c;
    if (!v) return 0;
    for (c = c0; c < c1; c++)
        if (v[c]) return 1;
    return 0;
}

static void enc_row_dense(fc_rc_enc *e, fc_ctxset *s, const int32_t *cur, const int32_t *above_row,
                          uint64_t cols, slice_state *st)
{
    enc_sig_range(e, s, s->sig, s->dqsig, st, cur, above_row, 0, cols);
}

/* A constant-magnitude row (ROWKIND): significance and sign only. */
static void enc_row_const(fc_rc_enc *e, fc_ctxset *s, const int32_t *cur, const int32_t *above_row,
                          uint64_t cols, slice_state *st)
{
    const fc_dq_machine *dq = st->dq;
    uint64_t c;
    int32_t left = 0;
    for (c = 0; c < cols; c++) {
        int32_t v = cur[c];
        fc_rc_encode(e, &s->csig[fc_csig_ctx(left, above_row ? above_row[c] : 0)], v != 0);
        if (v) fc_rc_encode(e, &s->csign[fc_sign_class(left)], v < 0);
        if (dq) st->dq_state = dq->next[st->dq_state][(unsigned)v & 1u];
        left = v;
    }
}

/* The common magnitude of a row's nonzero levels, or 0 when they differ. */
static unsigned row_const_mag(const int32_t *cur, uint64_t cols)
{
    unsigned m = 0;
    uint64_t c;
    for (c = 0; c < cols; c++) {
        unsigned a = fc_abs32(cur[c]);
        if (!a) continue;
        if (m && a != m) return 0;
        m = a;
    }
    return m;
}

/* ROWKIND slices under RD quantization: a row whose nonzero values all have
 * one magnitude (within 1 %; Adam's first step moves a row by +-lr in every
 * column) keeps its rounded levels: zeroing or shrinking some of them would
 * save little and break the one-magnitude coding.  Returns the row's
 * nonzeros, or UINT64_MAX (cur undefined) for any other row, or one with
 * fewer than 32 nonzeros. */
static uint64_t round_const_row(const float *x, uint64_t cols, double inv_step, int32_t *cur)
{
    uint64_t c, nz = 0;
    float lo = 0.0f, hi = 0.0f;
    int32_t m = 0;
    for (c = 0; c < cols; c++) {
        float ax = fabsf(x[c]);
        int32_t a = (int32_t)((double)ax * inv_step + 0.5);
        if (ax != 0.0f) {
            lo = nz && lo < ax ? lo : ax;
            hi = hi > ax ? hi : ax;
            nz++;
        }
        if (a && m && a != m) return UINT64_MAX;
        if (a) m = a;
        cur[c] = x[c] < 0.0f ? -a : a;
    }
    if (nz < 32 || !m || hi > lo * 1.01f) return UINT64_MAX;
    for (nz = 0, c = 0; c < cols; c++) nz += cur[c] != 0;
    return nz;
}

/* ROWFINE: the fraction f (0 .. 15) of a one-magnitude row of level
 * magnitude a whose value, (a + (f - 8) / 16) * step, is nearest the mean
 * magnitude of the row's values at its nonzero levels: the least-squares
 * single value of the row on the grid, which holds a itself (f = 8), so the
 * row's squared error never grows.  Returns f. */
static unsigned rowfine_fraction(const float *x, const int32_t *cur, uint64_t cols, unsigned a,
                                 float step)
{
    double sum = 0.0, t, best_err = -1.0;
    uint64_t c, n = 0;
    unsigned f, best = 8u;
    for (c = 0; c < cols; c++)
        if (cur[c]) {
            sum += fabs((double)x[c]);
            n++;
        }
    if (!n) return 8u;
    t = sum / (double)n;
    /* the grid's float32 values, compared exactly (a value beyond float32
     * is never chosen: f = 8 is a * step, finite) */
    for (f = 0; f < 16u; f++) {
        double v = (double)fc_rowfine_value(a, f, step), e;
        if (!(v <= (double)FLT_MAX)) continue;
        e = fabs(v - t);
        if (best_err < 0.0 || e < best_err || (e == best_err && f == 8u)) {
            best_err = e;
            best = f;
        }
    }
    return best;
}

/* ROWKIND pays when some rows have one magnitude throughout (rarely seen
 * tokens of an embedding table under Adam move by +-lr in every column)
 * among rows that do not: at least 4 such rows with 32+ nonzeros of a
 * magnitude up to 16 (its code is bypass Exp-Golomb), and 2 % of
 * the non-empty rows (levels under plain rounding). */
static int rowkind_pays(const fc_slice_enc_job *job, double inv_step)
{
    uint64_t r, c, nonempty = 0, constant = 0;
    for (r = 0; r < job->rows; r++) {
        unsigned m = 0, same = 1, nz = 0;
        for (c = 0; c < job->cols; c++) {
            uint64_t i = r * job->cols + c;
            unsigned a = job->values ? (unsigned)floor(fabs((double)job->values[i]) * inv_step + 0.5)
                                     : fc_abs32(job->levels[i]);
            if (!a) continue;
            nz++;
            if (m && a != m) same = 0;
            m = a;
        }
        nonempty += nz != 0;
        constant += same && nz >= 32 && m <= 16;
    }
    return constant >= 4 && constant * 50 >= nonempty;
}

static void enc_row_grouped(fc_rc_enc *e, fc_ctxset *s, const int32_t *cur, const int32_t *above_row,
                            uint64_t cols, slice_state *st)
{
    unsigned left_group = 0;
    uint64_t g, ngroups = (cols + FC_GROUP - 1) / FC_GROUP;
    for (g = 0; g < ngroups; g++) {
        uint64_t c0 = g * FC_GROUP, c1 = c0 + FC_GROUP < cols ? c0 + FC_GROUP : cols;
        unsigned any = any_nonzero(cur, c0, c1);
        unsigned above_group = any_nonzero(above_row, c0, c1);
        fc_rc_encode(e, &s->group[left_group * 2 + above_group], any);
        left_group = any;
        if (any) {
            enc_sig_range(e, s, s->gsig, s->dqgsig, st, cur, above_row, c0, c1);
        } else {
            decay_activity(st, c0, c1);
            if (st->dq) st->dq_state = fc_dq_skip_zeros(st->dq, st->dq_state, c1 - c0);
        }
    }
}

static void enc_row_runs(fc_rc_enc *e, fc_ctxset *s, const int32_t *cur, const int32_t *above_row,
                         uint64_t cols, unsigned k, slice_state *st)
{
    uint64_t c;
    for (c = 0; c < cols; c++) {
        if (!cur[c]) {
            st->run++;
            continue;
        }
        st->gap_class = fc_gap_class(fc_enc_gap(e, s, st->run, k, st->gap_class));
        st->run = 0;
        enc_nonzero(e, s, st, cur, above_row, c);
    }
}

/* Significance bitmap of a row, for choosing reference rows. */
static void sig_bits(const int32_t *row, uint64_t cols, uint64_t *bits)
{
    uint64_t c, words = (cols + 63) / 64;
    memset(bits, 0, sizeof(uint64_t) * (size_t)words);
    for (c = 0; c < cols; c++) bits[c >> 6] |= (uint64_t)(row[c] != 0) << (c & 63);
}

static unsigned popcount64(uint64_t x)
{
    /* SWAR popcount: portable and fast without -mpopcnt. */
    x = x - ((x >> 1) & 0x5555555555555555ull);
    x = (x & 0x3333333333333333ull) + ((x >> 2) & 0x3333333333333333ull);
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0Full;
    return (unsigned)((x * 0x0101010101010101ull) >> 56);
}

/* The previous row (distance 1 .. m) whose significance differs least from
 * row r's; ties go to the nearest.  With `kinds` (ROWKIND slices: the kind
 * of every row in the ring) only rows of row r's kind are candidates, when
 * there is one. */
static unsigned choose_ref(const uint64_t *bitring, unsigned slots, uint64_t words, uint64_t r,
                           unsigned m, const uint8_t *kinds)
{
    const uint64_t *cur = bitring + (size_t)(r % slots) * words;
    unsigned best_d = 1, d;
    uint64_t best = UINT64_MAX;
    if (kinds) {
        for (d = 1; d <= m && kinds[(r - d) % slots] != kinds[r % slots]; d++) continue;
        if (d > m) kinds = NULL;
    }
    for (d = 1; d <= m; d++) {
        const uint64_t *ref = bitring + (size_t)((r - d) % slots) * words;
        uint64_t dist = 0, w;
        if (kinds && kinds[(r - d) % slots] != kinds[r % slots]) continue;
        for (w = 0; w < words && dist < best; w++) dist += popcount64(cur[w] ^ ref[w]);
        if (dist < best) {
            best = dist;
            best_d = d;
        }
    }
    return best_d;
}

/* Elements a mode trial codes (from the start of the slice). */
#define TRIAL_ELEMS 65536u

/* Are the nonzeros of the first `rows` rows concentrated in some columns?
 * With m nonzeros spread at random over c columns about c*exp(-m/c) columns
 * stay empty; many more empty columns mean column structure, which the
 * dense mode's contexts exploit. */
static int has_column_structure(const fc_slice_enc_job *job, uint64_t rows, double inv_step)
{
    const uint64_t cols = job->cols;
    const float half = (float)(0.5 / inv_step) * 0.99999f;
    uint8_t *seen = (uint8_t *)calloc((size_t)cols, 1);
    uint64_t r, c, total = 0, empty = 0;
    double lambda;
    if (!seen) return 0;
    for (r = 0; r < rows; r++) {
        for (c = 0; c < cols; c++) {
            uint64_t i = r * cols + c;
            int nz = job->values ? fabsf(job->values[i]) >= half : job->levels[i] != 0;
            seen[c] |= (uint8_t)nz;
            total += (uint64_t)nz;
        }
    }
    for (c = 0; c < cols; c++) empty += !seen[c];
    free(seen);
    lambda = (double)total / (double)cols;
    return (double)empty > 1.5 * (double)cols * exp(-lambda) + 0.02 * (double)cols;
}

/* Nonzeros (under plain rounding) per non-empty row above 20 % of the row:
 * the rows that have nonzeros are dense (an embedding table, where only the
 * tokens of the client's data move), and the dense mode's row flags code the
 * empty rows in a fraction of a bit each. */
static int nonempty_rows_dense(const fc_slice_enc_job *job, double inv_step, uint64_t significant)
{
    const float half = (float)(0.5 / inv_step) * 0.99999f;
    uint64_t r, c, nonempty = 0;
    for (r = 0; r < job->rows; r++) {
        const uint64_t off = r * job->cols;
        for (c = 0; c < job->cols; c++) {
            if (job->values ? fabsf(job->values[off + c]) >= half : job->levels[off + c] != 0) {
                nonempty++;
                break;
            }
        }
    }
    return significant * 5u > nonempty * job->cols;
}

/* Mode for a slice when the caller left it to the encoder.  Above 20 %
 * nonzeros, overall or in the non-empty rows: dense.  Below, structured updates (whole zero columns, low-rank
 * rows) are much smaller in dense mode with its column and reference-row
 * contexts, while unstructured sparse ones are smaller in runs mode: when
 * the first rows show column structure, code them both ways and keep the
 * smaller. */
static unsigned choose_mode_by_trial(const fc_slice_enc_job *job, uint64_t significant)
{
    const uint64_t n = job->rows * job->cols;
    fc_slice_enc_job trial;
    uint64_t dense_size, rows;
    if (significant * 5u > n) return FC_MODE_DENSE;
    if (significant && job->rows > 1 && nonempty_rows_dense(job, 1.0 / (double)job->step, significant))
        return FC_MODE_DENSE;
    if (job->cols > FC_ROW_CTX_MAX || job->cols < 16 || job->rows < 2 || significant == 0)
        return fc_choose_mode(significant, n);
    rows = (TRIAL_ELEMS + job->cols - 1) / job->cols;
    if (rows < 32) rows = 32;
    if (rows > job->rows) rows = job->rows;
    /* With a reference the dense mode's significance contexts see it (the
     * runs mode's gaps do not): always try both. */
    if (!job->ref && !has_column_structure(job, rows, 1.0 / (double)job->step))
        return fc_choose_mode(significant, n);
    trial = *job;
    memset(&trial.out, 0, sizeof(trial.out));
    memset(&trial.trace, 0, sizeof(trial.trace));
    trial.window_auto = 0;
    trial.rowkind_request = 0;
    trial.predict_request = 0;
    trial.dq_record = NULL;
    trial.rows = rows;
    trial.recon = NULL;
    trial.mode_request = FC_MODE_DENSE;
    fc_slice_encode(&trial);
    dense_size = trial.out.size;
    if (trial.result != FC_OK) dense_size = UINT64_MAX;
    fc_buf_free(&trial.out);
    trial.mode_request = FC_MODE_RUNS;
    fc_slice_encode(&trial);
    if (trial.result != FC_OK) trial.out.size = SIZE_MAX;
    {
        unsigned mode = trial.out.size < dense_size ? FC_MODE_RUNS : FC_MODE_DENSE;
        fc_buf_free(&trial.out);
        return mode;
    }
}

/* ------------------------------------------------------------------ */
/* Window set choice: the cost of the traced bins under every set        */
/* ------------------------------------------------------------------ */

#define NSETS 8u
#define NCTX (sizeof(fc_ctxset) / sizeof(fc_ctx))
/* Every context position fits a trace entry. */
typedef char fc_trace_fits[NCTX < FC_TRACE_BYPASS ? 1 : -1];

/* The estimator of FORMAT.md §5.2 for all window sets at once on the traced
 * bins, in floating point (an estimate: the recode is exact):
 * job->set_bits[w] ~ the code length of the context-coded bins under window
 * set w.  The products of the coding probabilities are taken in blocks and
 * turned into bits once per block, so the inner loop is a few vector
 * operations per bin. */
static void trace_cost(fc_slice_enc_job *job)
{
    typedef struct multi {
        float fast[NSETS], slow[NSETS];
        uint32_t count;
    } multi;
    const uint16_t *t = (const uint16_t *)(const void *)job->trace.data;
    const size_t n = job->trace.size / 2;
    multi *m = (multi *)malloc(sizeof(multi) * NCTX);
    float prod[NSETS];    /* product of the coding probabilities of the block */
    int64_t expo[NSETS];  /* plus the binary exponents taken out of it */
    float ratef[12][NSETS], rates[12][NSETS]; /* by warm-up cap, window set */
    const float pmin = (float)FC_PROB_MIN / 65536.0f, pspan = (float)(FC_PROB_MAX - FC_PROB_MIN) / 65536.0f;
    unsigned w, inblock = 0;
    size_t i;
    if (!m) {
        job->result = FC_ERR_NOMEM;
        return;
    }
    for (w = 0; w < NSETS; w++) {
        unsigned cap;
        for (cap = 0; cap < 12; cap++) {
            unsigned sf = fc_window_sets[w][0], ss = fc_window_sets[w][1];
            ratef[cap][w] = 1.0f / (float)(1u << (sf < cap ? sf : cap));
            rates[cap][w] = 1.0f / (float)(1u << (ss < cap ? ss : cap));
        }
        prod[w] = 1.0f;
        expo[w] = 0;
    }
    for (i = 0; i < NCTX; i++) {
        for (w = 0; w < NSETS; w++) m[i].fast[w] = m[i].slow[w] = 0.5f;
        m[i].count = 0;
    }
    for (i = 0; i < n; i++) {
        uint16_t x;
        unsigned idx, cap = 11;
        float target;
        const float *rf, *rs;
        multi *c;
        memcpy(&x, t + i, 2);
        idx = x >> 1;
        if (idx == FC_TRACE_BYPASS) continue;
        target = (float)(x & 1u);
        c = &m[idx];
        if (c->count < FC_WARMUP_COUNT) {
            cap = 1u + fc_ilog2_32(c->count + 1u);
            c->count++;
        }
        rf = ratef[cap];
        rs = rates[cap];
        /* branch-free lanes; the clamp of the coding probability is
         * approximated by a linear map */
#if defined(__GNUC__) || defined(__clang__)
        {
            typedef float v4 __attribute__((vector_size(16)));
            unsigned h;
            for (h = 0; h < NSETS; h += 4) {
                v4 fa, sl, r1, r2, p, qq, pr;
                memcpy(&pr, prod + h, 16);
                memcpy(&fa, c->fast + h, 16);
                memcpy(&sl, c->slow + h, 16);
                memcpy(&r1, rf + h, 16);
                memcpy(&r2, rs + h, 16);
                p = pmin + (pspan * 0.5f) * (fa + sl);
                qq = (1.0f - p) + target * (2.0f * p - 1.0f);
                fa += (target - fa) * r1;
                sl += (target - sl) * r2;
                memcpy(c->fast + h, &fa, 16);
                memcpy(c->slow + h, &sl, 16);
                pr *= qq;
                memcpy(prod + h, &pr, 16);
            }
        }
#else
        for (w = 0; w < NSETS; w++) {
            float p = pmin + pspan * 0.5f * (c->fast[w] + c->slow[w]);
            prod[w] *= (1.0f - p) + target * (2.0f * p - 1.0f);
            c->fast[w] += (target - c->fast[w]) * rf[w];
            c->slow[w] += (target - c->slow[w]) * rs[w];
        }
#endif
        /* each factor is >= 2^-12, so 8 of them keep a product in [1, 2)
         * far above FLT_MIN: then move its exponent to expo */
        if (++inblock == 8) {
            for (w = 0; w < NSETS; w++) {
                uint32_t u;
                memcpy(&u, prod + w, 4);
                expo[w] += (int64_t)((u >> 23) & 0xFFu) - 127;
                u = (u & 0x807FFFFFu) | 0x3F800000u;
                memcpy(prod + w, &u, 4);
            }
            inblock = 0;
        }
    }
    for (w = 0; w < NSETS; w++) job->set_bits[w] = -((double)expo[w] + log2((double)prod[w]));
    free(m);
}

void fc_slice_recode(fc_slice_enc_job *job, unsigned window_set)
{
    const uint16_t *t = (const uint16_t *)(const void *)job->trace.data;
    const size_t n = job->trace.size / 2;
    fc_ctxset *s = (fc_ctxset *)malloc(sizeof(*s));
    fc_ctx *base = (fc_ctx *)s;
    fc_rc_enc e;
    size_t i;
    if (!s) {
        job->result = FC_ERR_NOMEM;
        fc_buf_free(&job->trace);
        return;
    }
    fc_ctxset_init(s, window_set);
    job->out.size = 0;
    fc_rc_enc_init(&e, &job->out);
    for (i = 0; i < n; i++) {
        uint16_t x;
        memcpy(&x, t + i, 2);
        if ((x >> 1) == FC_TRACE_BYPASS)
            fc_rc_bypass(&e, x & 1u, 1);
        else
            fc_rc_encode(&e, &base[x >> 1], x & 1u);
    }
    fc_rc_finish(&e);
    if (job->out.failed) job->result = FC_ERR_NOMEM;
    job->window_set = window_set;
    free(s);
    fc_buf_free(&job->trace);
}

static void slice_encode_once(fc_slice_enc_job *job);
static void slice_encode_rowkind(fc_slice_enc_job *job);

/* Rank of the row predictor that a PREDICT trial codes with. */
#define PREDICT_TRIAL_RANK 8

/* Row scales pay when the non-empty rows' scales differ (an embedding
 * table: rows of frequent and rare tokens): fewer than 60 % of the
 * non-empty rows share the most common octave of 4 * mean |level| (levels
 * under plain rounding). */
static int rowscale_pays(const fc_slice_enc_job *job, double inv_step)
{
    uint64_t r, c, hist[34] = {0}, nonempty = 0, top = 0;
    for (r = 0; r < job->rows; r++) {
        uint64_t sum = 0;
        for (c = 0; c < job->cols; c++) {
            uint64_t i = r * job->cols + c;
            sum += job->values ? (uint64_t)floor(fabs((double)job->values[i]) * inv_step + 0.5)
                               : fc_abs32(job->levels[i]);
        }
        if (!sum) continue;
        nonempty++;
        hist[fc_min_u(fc_ilog2_64(1u + 4u * sum / job->cols), 33)]++;
    }
    for (c = 0; c < 34; c++) top = hist[c] > top ? hist[c] : top;
    return nonempty >= 16 && top * 10 < nonempty * 6;
}

/* Whether a slice may be a PREDICT slice (FORMAT.md §7.6), and with which
 * predict_request: dense, not ROWKIND, no reference, rows up to
 * FC_ROW_CTX_MAX wide, not dithered.  Trellis slices predict their coded
 * levels k (about half the reconstruction index): the search decides a
 * row's levels before the row is coded, without the prediction, as RDOQ
 * does, so the predictor sees the row's levels before its coefficients. */
static int predict_mode(const fc_slice_enc_job *job)
{
    if (job->mode != FC_MODE_DENSE || fc_slice_rowkind(job->mode, job->k) || job->ref ||
        job->cols > FC_ROW_CTX_MAX || (job->values && job->quant == FC_QUANT_DITHER))
        return 0;
    if (job->predict_request > 0) return job->predict_request;
    if (job->predict_request < 0 && job->rows >= 16 && job->cols >= 16)
        return PREDICT_TRIAL_RANK |
               (rowscale_pays(job, 1.0 / (double)job->step) ? FC_PREDICT_ROWSCALE : 0);
    return 0;
}

/* A trial of job: the same inputs and requests in the mode the job chose,
 * fresh outputs, no reconstruction (a trial that wins is either taken as
 * it is or coded again with the job's outputs). */
static fc_slice_enc_job trial_of(const fc_slice_enc_job *job)
{
    fc_slice_enc_job trial = *job;
    memset(&trial.out, 0, sizeof(trial.out));
    memset(&trial.trace, 0, sizeof(trial.trace));
    trial.recon = NULL;
    trial.mode_request = (int)job->mode;
    return trial;
}

/* The predict_request that codes a PREDICT slice with flags k again. */
static int predict_request_of(unsigned mode, unsigned k)
{
    return ((k & FC_SLICE_RANK8) ? 8 : 4) | ((k & FC_SLICE_ROWSCALE) ? FC_PREDICT_ROWSCALE : 0) |
           ((k & FC_SLICE_CLASSCTX) ? FC_PREDICT_CLASSCTX : 0) |
           (fc_slice_scalectx(mode, k) ? FC_PREDICT_SCALECTX : 0);
}

/* Code the slice once more with PREDICT request `variant` (same levels: the
 * quantizer's rate model does not see the prediction; a trellis slice
 * replays `coded`, its first pass's levels) and keep it if it is smaller. */
static void try_predict(fc_slice_enc_job *job, int variant, const int32_t *coded)
{
    fc_slice_enc_job trial = trial_of(job); /* the same levels */
    if (coded) trial.dq_replay = coded;
    trial.rowkind_request = 0;
    trial.predict_request = variant;
    slice_encode_once(&trial);
    if (trial.result == FC_OK && trial.out.size < job->out.size) {
        fc_buf_free(&job->out);
        fc_buf_free(&job->trace);
        job->out = trial.out;
        job->trace = trial.trace;
        job->k = trial.k;
        memcpy(job->set_bits, trial.set_bits, sizeof(job->set_bits));
    } else {
        fc_buf_free(&trial.out);
        fc_buf_free(&trial.trace);
    }
}

/* Dense slices where the row predictor may pay are coded with and without
 * it, and the smaller is kept; a PREDICT winner is tried once more with
 * the extended class contexts (CLASSCTX: they pay on large slices, dilute
 * small ones). */
static void slice_encode_predict(fc_slice_enc_job *job)
{
    const int request = job->predict_request;
    int pmode, pass;
    int32_t *coded = NULL; /* trellis: the first pass's levels, replayed by the trials */
    if (request > 0) {
        slice_encode_once(job);
        return;
    }
    /* The trials code the same levels: a trellis slice records them instead
     * of searching again (without the memory, each trial searches again and
     * finds the same levels) */
    if (request < 0 && job->values && !job->dq_replay &&
        (job->quant == FC_QUANT_TRELLIS || job->quant == FC_QUANT_TRELLIS8) && !job->ref &&
        job->rows >= 16 && job->cols >= 16 && job->cols <= FC_ROW_CTX_MAX)
        coded = (int32_t *)malloc(sizeof(int32_t) * (size_t)(job->rows * job->cols));
    job->predict_request = 0;
    job->dq_record = coded;
    slice_encode_once(job);
    job->dq_record = NULL;
    job->predict_request = request;
    if (job->result != FC_OK || request == 0) {
        free(coded);
        return;
    }
    pmode = predict_mode(job);
    /* with row scales also rank 4 with them (an embedding table's rows
     * seldom share 8 profiles) and rank 8 without them (they blur the
     * prediction where the rows' scales come from the low-rank part) */
    for (pass = 0; pass < 3 && pmode; pass++) {
        if (pass > 0 && !(pmode & FC_PREDICT_ROWSCALE)) break;
        try_predict(job, pass == 0 ? pmode : (pass == 1 ? 4 | FC_PREDICT_ROWSCALE : pmode & 0xFF), coded);
    }
    if (job->mode == FC_MODE_DENSE && (job->k & FC_SLICE_PREDICT))
        try_predict(job, predict_request_of(job->mode, job->k) | FC_PREDICT_CLASSCTX, coded);
    /* and with row scales, once more with SCALECTX */
    if (job->mode == FC_MODE_DENSE && (job->k & FC_SLICE_PREDICT) && (job->k & FC_SLICE_ROWSCALE))
        try_predict(job, predict_request_of(job->mode, job->k) | FC_PREDICT_SCALECTX, coded);
    free(coded);
}

/* Whether coded slice `a` beats `b` (both of the same slice).  With RD
 * quantization the two may hold different levels (a ROWKIND slice keeps
 * the rounded levels of one-magnitude rows, the quantizer without ROWKIND
 * may zero them), so they are compared by their RD cost
 * J = distortion / step^2 + lambda * bits, the quantizer's own trade-off
 * (lambda' of the trellis); else (the same levels) by size. */
static int slice_better(const fc_slice_enc_job *a, const fc_slice_enc_job *b)
{
    double lambda = fc_choice_lambda(a);
    /* Rounding from floats: the same levels either way, but a ROWKIND
     * coding's ROWFINE rows reconstruct closer (FORMAT.md §8.1); the two
     * trials sum the same errors in the same order otherwise, so with
     * equal distortion J orders them as their sizes do. */
    if (!(lambda > 0.0) && a->values && a->quant == FC_QUANT_UNIFORM) lambda = FC_DQ_DEFAULT_LAMBDA;
    return fc_coding_better(lambda, a->step, a->sq_error, a->out.size, b->sq_error, b->out.size);
}

double fc_choice_lambda(const fc_slice_enc_job *job)
{
    double lambda = job->lambda;
    if (!job->values || job->quant == FC_QUANT_DITHER) return 0.0;
    if (job->quant == FC_QUANT_TRELLIS || job->quant == FC_QUANT_TRELLIS8)
        lambda = FC_DQ_LAMBDA_SCALE * (lambda > 0.0 ? lambda : FC_DQ_DEFAULT_LAMBDA);
    return lambda > 0.0 ? lambda : 0.0;
}

int fc_coding_better(double lambda, float step, double sq_a, uint64_t bytes_a, double sq_b,
                     uint64_t bytes_b)
{
    const double inv = 1.0 / (double)step;
    if (!(lambda > 0.0)) return bytes_a < bytes_b;
    return sq_a * inv * inv + lambda * 8.0 * (double)bytes_a <
           sq_b * inv * inv + lambda * 8.0 * (double)bytes_b;
}

/* Whether at least half of the slice's rows are empty (under plain
 * rounding): an embedding table, whose rows are tokens in no particular
 * order, where reference rows may not pay for their signalling. */
static int rows_mostly_empty(const fc_slice_enc_job *job)
{
    const float half = job->step * 0.5f;
    uint64_t r, c, busy = 0;
    for (r = 0; r < job->rows; r++) {
        const uint64_t off = r * job->cols;
        for (c = 0; c < job->cols; c++)
            if (job->values ? fabsf(job->values[off + c]) >= half : job->levels[off + c] != 0) break;
        busy += c < job->cols;
    }
    return busy * 2 <= job->rows;
}

/* A trial of fc_slice_encode won: code the job again with the trial's
 * choices (mode, ROWKIND, PREDICT, REFROWS, reference CLASSCTX) into the
 * job's own outputs (reconstruction, bin trace), then restore the job's
 * requests. */
static void adopt_trial(fc_slice_enc_job *job, const fc_slice_enc_job *trial)
{
    const int mode_request = job->mode_request, rowkind_request = job->rowkind_request,
              predict_request = job->predict_request, no_refrows = job->no_refrows,
              ref_classctx = job->ref_classctx;
    fc_buf_free(&job->out);
    fc_buf_free(&job->trace);
    job->mode_request = trial->mode_request;
    job->rowkind_request = trial->rowkind_request;
    job->predict_request = trial->predict_request;
    job->no_refrows = trial->no_refrows;
    job->ref_classctx = trial->ref_classctx;
    slice_encode_once(job);
    job->mode_request = mode_request;
    job->rowkind_request = rowkind_request;
    job->predict_request = predict_request;
    job->no_refrows = no_refrows;
    job->ref_classctx = ref_classctx;
}

/* A REFROWS slice of mostly empty rows is coded once more without
 * reference rows, with the same mode, ROWKIND and PREDICT choices, and the
 * better (slice_better) is kept. */
static void refrows_trial(fc_slice_enc_job *job)
{
    fc_slice_enc_job trial;
    if (job->mode == FC_MODE_RUNS || !(job->k & FC_SLICE_REFROWS) || !rows_mostly_empty(job)) return;
    trial = trial_of(job);
    trial.window_auto = 0;
    trial.no_refrows = 1;
    trial.rowkind_request = fc_slice_rowkind(job->mode, job->k) ? 1 : 0;
    trial.predict_request = (job->k & FC_SLICE_PREDICT) ? predict_request_of(job->mode, job->k) : 0;
    slice_encode_once(&trial);
    if (trial.result == FC_OK && slice_better(&trial, job)) adopt_trial(job, &trial);
    fc_buf_free(&trial.out);
}

/* A dense slice with a reference (not trellis) is coded once more with
 * CLASSCTX (§7.7 on the reference's classes), with its mode and ROWKIND
 * and REFROWS choices, and the better (slice_better) is kept. */
static void ref_classctx_trial(fc_slice_enc_job *job)
{
    fc_slice_enc_job trial;
    if (!job->ref || job->mode != FC_MODE_DENSE || (job->values && job->quant != FC_QUANT_UNIFORM &&
                                                   job->quant != FC_QUANT_DITHER))
        return;
    trial = trial_of(job);
    trial.window_auto = 0;
    trial.ref_classctx = 1;
    trial.no_refrows = !(job->k & FC_SLICE_REFROWS);
    trial.rowkind_request = fc_slice_rowkind(job->mode, job->k) ? 1 : 0;
    trial.predict_request = 0; /* (a slice with a reference is never PREDICT: predict_mode) */
    slice_encode_once(&trial);
    if (trial.result == FC_OK && slice_better(&trial, job)) adopt_trial(job, &trial);
    fc_buf_free(&trial.out);
}

/* A slice whose rows look like ROWKIND pays is coded both ways (the way
 * without ROWKIND with its PREDICT trial); the better (slice_better) is
 * kept.  Then the REFROWS trial (refrows_trial) and, with a reference, the
 * CLASSCTX trial (ref_classctx_trial). */
void fc_slice_encode(fc_slice_enc_job *job)
{
    slice_encode_rowkind(job);
    if (job->result == FC_OK) refrows_trial(job);
    if (job->result == FC_OK) ref_classctx_trial(job);
}

static void slice_encode_rowkind(fc_slice_enc_job *job)
{
    fc_slice_enc_job trial;
    const int mode_request = job->mode_request;
    slice_encode_predict(job);
    if (job->result != FC_OK || !fc_slice_rowkind(job->mode, job->k) || job->rowkind_request >= 0) return;
    trial = trial_of(job);
    trial.window_auto = 0;
    trial.rowkind_request = 0;
    slice_encode_predict(&trial); /* without ROWKIND the predictor may pay */
    if (trial.result == FC_OK && slice_better(&trial, job)) {
        fc_buf_free(&job->out);
        fc_buf_free(&job->trace);
        job->rowkind_request = 0;
        job->mode_request = (int)job->mode;
        slice_encode_predict(job);
        job->rowkind_request = -1;
        job->mode_request = mode_request;
    }
    fc_buf_free(&trial.out);
}

static void slice_encode_once(fc_slice_enc_job *job)
{
    const uint64_t rows = job->rows, cols = job->cols, n = rows * cols;
    const int use_above = cols <= FC_ROW_CTX_MAX;
    const uint64_t words = (cols + 63) / 64;
    unsigned window = 1, slots;
    int32_t *ring = NULL;
    uint64_t *bitring = NULL;
    uint8_t *kinds = NULL;  /* ROWKIND: per ring row 0 empty, 1 constant, 2 other */
    unsigned row_mag = 0;
    unsigned row_fine = 8u; /* ROWFINE: the current one-magnitude row's fraction */
    fc_rdoq *q = NULL;
    fc_trellis *tr = NULL;
    fc_ctxset *s = NULL;
    uint8_t *refcls = NULL; /* the current row's reference classes */
    uint8_t *predcls = NULL; /* PREDICT: the current row's prediction classes */
    fc_pred pred;
    unsigned rank = 0;
    int pmode = 0;
    fc_rc_enc e;
    slice_state st;
    uint64_t r, significant;
    double inv_step = 1.0 / (double)job->step;
    const unsigned quant = job->values ? job->quant : FC_QUANT_UNIFORM;
    const int trellis = quant == FC_QUANT_TRELLIS || quant == FC_QUANT_TRELLIS8;
    unsigned rstate = 0; /* state machine of the reconstruction (trellis) */

    job->result = FC_OK;
    job->nonzeros = 0;
    job->sq_error = 0.0;
    memset(&st, 0, sizeof(st));
    if (trellis) st.dq = &fc_dq_machines[quant];

    /* Mode from the density under plain rounding (RD quantization only
     * lowers it). */
    if (quant == FC_QUANT_DITHER) {
        significant = fc_dither_stats(job->values, n, inv_step, job->step, job->dither_key,
                                      job->elem_off, &st.m0);
    } else if (job->values) {
        significant = fc_rounding_stats(job->values, n, inv_step, &st.m0);
        /* Trellis levels are about half the rounded magnitudes: the
         * smallest candidate level of a value that rounds to m is at least
         * (m - 1) / 2. */
        if (trellis) st.m0 = st.m0 > 2u ? (st.m0 - 1u) / 2u : 1u;
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
    job->mode = job->mode_request >= 0 ? (unsigned)job->mode_request
                                        : choose_mode_by_trial(job, significant);
    job->k = job->mode == FC_MODE_RUNS ? fc_choose_gap_order(significant, n) : 0;
    if (job->mode != FC_MODE_RUNS && use_above && cols >= 16 && rows > 1 && !job->no_refrows) {
        job->k = FC_SLICE_REFROWS;
        window = fc_ref_window(cols);
    }
    if (job->mode == FC_MODE_DENSE && quant != FC_QUANT_DITHER &&
        (job->rowkind_request > 0 || (job->rowkind_request < 0 && rowkind_pays(job, inv_step)))) {
        job->k |= FC_SLICE_ROWKIND;
        /* floats of a uniform tensor: one-magnitude rows get their value
         * to 1/16 step (4 bypass bits per such row) */
        if (job->values && quant == FC_QUANT_UNIFORM) job->k |= FC_SLICE_ROWFINE;
    }
    /* a reference's classes with CLASSCTX (never trellis: its rate tables
     * cover the classes of §7.5 only) */
    if (job->ref_classctx && job->ref && job->mode == FC_MODE_DENSE && !trellis) job->k |= FC_SLICE_CLASSCTX;
    slots = window + 1;
    memset(&pred, 0, sizeof(pred));
    if (job->predict_request > 0 && (pmode = predict_mode(job)) != 0) {
        rank = (pmode & 0xFF) >= 8 ? 8u : 4u;
        job->k |= FC_SLICE_PREDICT | (rank == 8 ? FC_SLICE_RANK8 : 0u) |
                  ((pmode & FC_PREDICT_ROWSCALE) ? FC_SLICE_ROWSCALE : 0u) |
                  ((pmode & FC_PREDICT_CLASSCTX) ? FC_SLICE_CLASSCTX : 0u) |
                  ((pmode & FC_PREDICT_SCALECTX) && (pmode & FC_PREDICT_ROWSCALE) ? FC_SLICE_SCALECTX : 0u);
        if (fc_pred_init(&pred, rank, cols, (pmode & FC_PREDICT_ROWSCALE) != 0) ||
            !(predcls = (uint8_t *)malloc((size_t)cols))) {
            job->result = FC_ERR_NOMEM;
            goto out;
        }
    }
    if (fc_slice_rowkind(job->mode, job->k) && !(kinds = (uint8_t *)calloc(slots, 1))) {
        job->result = FC_ERR_NOMEM;
        goto out;
    }

    ring = (int32_t *)calloc((size_t)cols * slots, sizeof(int32_t));
    if (window > 1) bitring = (uint64_t *)calloc((size_t)words * slots, sizeof(uint64_t));
    if (use_above) {
        st.cols.sgn = (int8_t *)calloc((size_t)cols, 1);
        st.cols.mag = (uint16_t *)calloc((size_t)cols, sizeof(uint16_t));
        if (job->mode != FC_MODE_RUNS) {
            st.cols.act = (uint8_t *)malloc((size_t)cols);
            if (st.cols.act) memset(st.cols.act, FC_ACT_INIT, (size_t)cols);
        }
    }
    s = (fc_ctxset *)malloc(sizeof(*s));
    if (job->ref) refcls = (uint8_t *)malloc((size_t)cols);
    st.ref.cls = refcls;
    st.ref.c0 = 0;
    if (job->values && quant == FC_QUANT_UNIFORM) q = (fc_rdoq *)malloc(sizeof(*q));
    if (trellis && !job->dq_replay)
        tr = fc_trellis_new(quant, job->lambda, job->eta_scale, inv_step, job->max_gtx, st.m0,
                            job->window_set);
    if (!ring || (window > 1 && !bitring) || !s || (job->ref && !refcls) || (job->values && quant == FC_QUANT_UNIFORM && !q) ||
        (trellis && !job->dq_replay && !tr) ||
        (use_above && (!st.cols.sgn || !st.cols.mag || (job->mode != FC_MODE_RUNS && !st.cols.act)))) {
        job->result = FC_ERR_NOMEM;
        goto out;
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
    if (job->window_auto) {
        e.trace = &job->trace;
        e.trace_base = (const fc_ctx *)s;
    }
    fc_enc_eg0_bypass(&e, st.m0 - 1u);
    st.N = job->max_gtx;

    for (r = 0; r < rows; r++) {
        int32_t *cur = ring + (size_t)(r % slots) * cols;
        const int32_t *prev_row = (r > 0 && use_above) ? ring + (size_t)((r - 1) % slots) * cols : NULL;
        const int32_t *above_row = prev_row;
        uint64_t nz, off = r * cols, c;
        if (refcls) {
            fc_ref_classes(job->ref + off, cols, inv_step, refcls);
            if (job->k & FC_SLICE_CLASSCTX) fc_classes_mark(refcls, cols);
        }
        if (rank) st.ref.cls = NULL; /* the quantizer does not see the prediction */
        if (job->values && quant != FC_QUANT_UNIFORM) {
            const float *x = job->values + off;
            const float step = job->step;
            double se = 0.0;
            if (trellis) {
                if (job->dq_replay) {
                    memcpy(cur, job->dq_replay + off, sizeof(int32_t) * (size_t)cols);
                    for (nz = 0, c = 0; c < cols; c++) nz += cur[c] != 0;
                } else {
                    nz = fc_trellis_row(tr, &st.cols, x,
                                        job->importance ? job->importance + off : NULL, cols,
                                        prev_row, &st.ref, cur);
                }
                if (job->dq_record)
                    memcpy(job->dq_record + off, cur, sizeof(int32_t) * (size_t)cols);
            } else {
                nz = fc_quantize_row_dither(x, cols, inv_step, step, job->dither_key,
                                            job->elem_off + off, cur);
            }
            for (c = 0; c < cols; c++) {
                float rec;
                double d;
                if (trellis) {
                    rec = (float)fc_dq_index(cur[c], st.dq->q[rstate]) * step;
                    rstate = st.dq->next[rstate][(unsigned)cur[c] & 1u];
                } else {
                    rec = fc_dither_recon(cur[c], step,
                                          fc_dither_value(job->dither_key, job->elem_off + off + c, step));
                }
                d = (double)x[c] - (double)rec;
                se += d * d;
                if (job->recon) job->recon[off + c] = rec;
            }
            job->sq_error += se;
        } else if (job->values) {
            double se = 0.0;
            nz = UINT64_MAX;
            if (fc_slice_rowkind(job->mode, job->k) && job->lambda > 0.0)
                nz = round_const_row(job->values + off, cols, inv_step, cur);
            if (nz == UINT64_MAX)
                nz = fc_quantize_row(q, &st.cols, job->values + off,
                                     job->importance ? job->importance + off : NULL, cols, prev_row,
                                     &st.ref, cur);
            const float *x = job->values + off;
            unsigned fa = 0; /* ROWFINE: a one-magnitude row's magnitude */
            row_fine = 8u;
            if (fc_slice_rowfine(job->mode, job->k) && nz && (fa = row_const_mag(cur, cols)) != 0) {
                const float v = fc_rowfine_value(fa, row_fine = rowfine_fraction(x, cur, cols, fa, job->step),
                                                 job->step);
                for (c = 0; c < cols; c++) {
                    const float rec = cur[c] > 0 ? v : (cur[c] < 0 ? -v : 0.0f);
                    const double d = (double)x[c] - (double)rec;
                    se += d * d;
                    if (job->recon) job->recon[off + c] = rec;
                }
            } else if (job->recon) {
                float *out = job->recon + off;
                for (c = 0; c < cols; c++) {
                    float rec = (float)cur[c] * job->step;
                    double d = (double)x[c] - (double)rec;
                    se += d * d;
                    out[c] = rec;
                }
            } else {
                for (c = 0; c < cols; c++) {
                    if (cur[c] | (x[c] != 0.0f)) {
                        double d = (double)x[c] - (double)((float)cur[c] * job->step);
                        se += d * d;
                    }
                }
            }
            job->sq_error += se;
        } else {
            nz = 0;
            memcpy(cur, job->levels + off, sizeof(int32_t) * (size_t)cols);
            for (c = 0; c < cols; c++) nz += cur[c] != 0;
            if (job->recon)
                for (c = 0; c < cols; c++) job->recon[off + c] = (float)cur[c] * job->step;
        }
        job->nonzeros += nz;
        fc_row_begin(&st.row);
        if (job->mode == FC_MODE_RUNS) {
            enc_row_runs(&e, s, cur, above_row, cols, job->k, &st);
            continue;
        }
        /* Dense and grouped: row flag, reference row, then the row. */
        fc_rc_encode(&e, &s->row[st.prev_row_flag], nz != 0);
        st.prev_row_flag = nz != 0;
        if (bitring) sig_bits(cur, cols, bitring + (size_t)(r % slots) * words);
        if (kinds) {
            row_mag = nz ? row_const_mag(cur, cols) : 0;
            kinds[r % slots] = (uint8_t)(!nz ? 0 : (row_mag ? 1 : 2));
        }
        if (!nz) {
            /* ROWKIND: empty rows are a kind of their own, the column
             * activity follows the other rows */
            if (!kinds) decay_activity(&st, 0, cols);
            if (st.dq) st.dq_state = fc_dq_skip_zeros(st.dq, st.dq_state, cols);
            continue;
        }
        if (bitring && r > 0) {
            unsigned m = r < window ? (unsigned)r : window;
            unsigned d = choose_ref(bitring, slots, words, r, m, kinds);
            if (m >= 2) {
                fc_rc_encode(&e, &s->ref, d == 1);
                if (d > 1) fc_rc_bypass(&e, d - 2u, fc_ref_bits(m));
            }
            above_row = ring + (size_t)((r - d) % slots) * cols;
        }
        if (fc_slice_rowkind(job->mode, job->k)) {
            fc_rc_encode(&e, &s->rowkind[st.prev_kind], row_mag != 0);
            st.prev_kind = row_mag != 0;
            if (row_mag) {
                fc_enc_eg0_bypass(&e, row_mag - st.m0);
                if (fc_slice_rowfine(job->mode, job->k)) fc_rc_bypass(&e, row_fine, FC_ROWFINE_BITS);
                enc_row_const(&e, s, cur, above_row, cols, &st);
                continue;
            }
        }
        if (rank) {
            fc_pred_basis(&pred);
            fc_pred_fit(&pred, cur);
            fc_pred_enc_coefs(&e, s, &pred);
            if (fc_slice_scalectx(job->mode, job->k)) st.row.scale = pred.g + 1u;
            if (fc_pred_classes(&pred, predcls)) {
                if (job->k & FC_SLICE_CLASSCTX) fc_classes_mark(predcls, cols);
                st.ref.cls = predcls;
            }
            enc_row_dense(&e, s, cur, above_row, cols, &st);
            fc_pred_learn(&pred, cur);
        } else if (job->mode == FC_MODE_DENSE)
            enc_row_dense(&e, s, cur, above_row, cols, &st);
        else
            enc_row_grouped(&e, s, cur, above_row, cols, &st);
    }
    if (job->mode == FC_MODE_RUNS) fc_enc_gap(&e, s, st.run, job->k, st.gap_class);
    fc_rc_finish(&e);
    if (job->out.failed || job->trace.failed) job->result = FC_ERR_NOMEM;
    if (job->window_auto && job->result == FC_OK) trace_cost(job);
out:
    free(ring);
    free(bitring);
    free(kinds);
    free(st.cols.act);
    free(st.cols.sgn);
    free(st.cols.mag);
    free(q);
    fc_trellis_free(tr);
    free(s);
    free(refcls);
    free(predcls);
    fc_pred_free(&pred);
}
