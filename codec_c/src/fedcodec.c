/* fedcodec.c - the public API: argument checks, slicing, the thread pool
 * and container assembly. */
#include <math.h>

#include "container.h"
#include "pool.h"
#include "quant.h"
#include "short.h"
#include "slice.h"

#define DEFAULT_SLICE_ELEMS 1048576u
/* A slice should carry at least this many compressed bytes, so the flush
 * and context re-learning overhead stays small. */
#define MIN_SLICE_BYTES 4096u
#define FC_PER_ELEMENT_BOUND 80u
#define FC_PER_ROW_BOUND 64u

void fc_encode_options_init(fc_encode_options *o)
{
    memset(o, 0, sizeof(*o));
    o->struct_size = sizeof(*o);
    o->lambda = 0.0;
    o->S = 128;
    o->max_gtx = 4;
    o->threads = 0;
    o->slice_elems = DEFAULT_SLICE_ELEMS;
    o->mode = FC_MODE_AUTO;
    o->window_set = 0;
    o->quantizer = FC_QUANT_UNIFORM;
    o->dither_seed = 0;
}

void fc_decode_options_init(fc_decode_options *o)
{
    memset(o, 0, sizeof(*o));
    o->struct_size = sizeof(*o);
    o->threads = 0;
    o->max_tensors = 1u << 20;
    o->max_tensor_elems = (uint64_t)1 << 28;
    o->max_total_elems = (uint64_t)1 << 28;
}

/* Copy a caller's options struct that may be older (smaller) than ours. */
static int copy_options(void *dst, size_t dst_size, const void *src)
{
    size_t n;
    if (!src) return 1;
    memcpy(&n, src, sizeof(size_t));
    if (n < sizeof(size_t)) return 0;
    memcpy(dst, src, n < dst_size ? n : dst_size);
    memcpy(dst, &dst_size, sizeof(size_t));
    return 1;
}

size_t fc_encode_bound(const fc_tensor *tensors, size_t count)
{
    size_t i;
    uint64_t total = 16;
    if (!tensors && count) return 0;
    for (i = 0; i < count; i++) {
        uint64_t numel, rows, cols;
        if (tensors[i].ndim > FC_MAX_DIMS) return 0;
        if (!fc_layout(tensors[i].ndim, tensors[i].shape, &numel, &rows, &cols)) return 0;
        if (numel > (UINT64_MAX - total) / (FC_PER_ELEMENT_BOUND + FC_PER_ROW_BOUND + 1)) return 0;
        total += 32 + 10 * (uint64_t)FC_MAX_DIMS + numel * FC_PER_ELEMENT_BOUND +
                 rows * FC_PER_ROW_BOUND;
    }
    if (total > (uint64_t)SIZE_MAX) return 0;
    return (size_t)total;
}

/* ------------------------------------------------------------------ */
/* Encoding                                                             */
/* ------------------------------------------------------------------ */

typedef struct enc_tensor {
    fc_tensor_desc desc;
    size_t first_job;
    size_t njobs;
    double eta_scale;
    uint64_t significant;  /* nonzeros under rounding (slicing, orientation) */
    uint64_t busy_rows;    /* rows of the given view with a nonzero under rounding, */
    uint64_t busy_cols;    /*   and columns (slicing; numel > slice_elems only) */
    size_t src;            /* position of the tensor in the caller's array */
    int dropped;           /* another candidate of the tensor was better */
    /* transposed candidates: the transposed copies of the inputs; trecon
     * also holds the reconstruction (in the coded view) of a candidate
     * that is not the tensor's first */
    float *tvalues, *timportance, *trecon;
    int32_t *tlevels;
} enc_tensor;

static void run_enc_job(void *ctx, size_t i)
{
    fc_slice_encode(&((fc_slice_enc_job *)ctx)[i]);
}

static void run_recode_job(void *ctx, size_t i)
{
    fc_slice_enc_job *jb = &((fc_slice_enc_job *)ctx)[i];
    if (jb->window_auto && jb->trace.data) fc_slice_recode(jb, jb->window_set);
    fc_buf_free(&jb->trace);
}

/* FC_WINDOW_AUTO: the window set a tensor is first coded with, before the
 * choice below.  The trellis searches under rates from a model running with
 * that set: set 4's slower estimators (shifts 6 and 10) give it steadier
 * rates than set 0's (4 and 7), which follow the last few dozen bins of each
 * context (trellis8, BD-rate against the search with set 0, MiniLM sets of
 * `bench codec`: AdamW layers -0.13 %, SGD embedding -0.33 %; docs/quantizers.md).
 * Uniform tensors keep set 0 (RDOQ's rate model is costed per element, not
 * frozen). */
static unsigned fc_auto_first_window_set(unsigned quant)
{
    return quant == FC_QUANT_TRELLIS || quant == FC_QUANT_TRELLIS8 ? 4u : 0u;
}

/* FC_WINDOW_AUTO: per tensor the window set whose estimators code its
 * slices' bins in the fewest bits (all sets are costed on the bins the
 * slices coded with the first set, fc_auto_first_window_set); slices are
 * recoded from their trace when another set wins. */
static void choose_window_sets(enc_tensor *et, size_t count, fc_slice_enc_job *jobs, size_t njobs,
                               unsigned threads)
{
    size_t i, j;
    unsigned w;
    for (i = 0; i < count; i++) {
        double bits[8] = {0};
        unsigned best = et[i].desc.window_set, first = best;
        if (!et[i].njobs) continue;
        for (j = 0; j < et[i].njobs; j++)
            for (w = 0; w < 8; w++) bits[w] += jobs[et[i].first_job + j].set_bits[w];
        /* Switch only for a gain beyond the estimate's noise (~1 byte). */
        for (w = 0; w < 8; w++)
            if (w != first && bits[w] < bits[best] - 8.0) best = w;
        et[i].desc.window_set = best;
        for (j = 0; j < et[i].njobs; j++) {
            fc_slice_enc_job *jb = &jobs[et[i].first_job + j];
            if (best == jb->window_set) fc_buf_free(&jb->trace);
            jb->window_set = best;
        }
    }
    fc_parallel_for(njobs, threads, run_recode_job, jobs);
}

static enum fc_result check_encode_args(const fc_tensor *tensors, size_t count,
                                        const fc_encode_options *o, size_t *bad)
{
    size_t i;
    if (!(o->lambda >= 0.0) || !isfinite(o->lambda)) return FC_ERR_INVALID_ARGUMENT;
    if (o->max_gtx < 1 || o->max_gtx > FC_MAX_GTX) return FC_ERR_INVALID_ARGUMENT;
    if (o->window_set > 7 && o->window_set != FC_WINDOW_AUTO) return FC_ERR_INVALID_ARGUMENT;
    if (o->mode < FC_MODE_AUTO || o->mode > FC_MODE_RUNS) return FC_ERR_INVALID_ARGUMENT;
    if (o->slice_elems == 0) return FC_ERR_INVALID_ARGUMENT;
    if (o->quantizer < FC_QUANT_UNIFORM || o->quantizer > FC_QUANT_DITHER) return FC_ERR_INVALID_ARGUMENT;
    if (o->reference != FC_REFERENCE_AUTO && o->reference != FC_REFERENCE_ALWAYS) return FC_ERR_INVALID_ARGUMENT;
    if (o->transpose != 0 && o->transpose != 1 && o->transpose != FC_TRANSPOSE_AUTO &&
        o->transpose != FC_TRANSPOSE_SWAP)
        return FC_ERR_INVALID_ARGUMENT;
    /* The dither's error is independent of the input only under rounding. */
    if (o->quantizer == FC_QUANT_DITHER && o->lambda != 0.0) return FC_ERR_INVALID_ARGUMENT;
    if (!tensors && count) return FC_ERR_INVALID_ARGUMENT;
    if (o->compact != 0 && o->compact != 1) return FC_ERR_INVALID_ARGUMENT;
    for (i = 0; i < count; i++) {
        const fc_tensor *t = &tensors[i];
        uint64_t numel, rows, cols;
        *bad = i;
        if (t->ndim > FC_MAX_DIMS) return FC_ERR_INVALID_ARGUMENT;
        if (!fc_layout(t->ndim, t->shape, &numel, &rows, &cols)) return FC_ERR_INVALID_ARGUMENT;
        if ((t->values == NULL) == (t->levels == NULL) && numel > 0) return FC_ERR_INVALID_ARGUMENT;
        if (t->levels && t->importance) return FC_ERR_INVALID_ARGUMENT;
        if (i > 0 && t->index <= tensors[i - 1].index) return FC_ERR_INVALID_ARGUMENT;
        /* compact: the tensors are the caller's shape list, index = position */
        if (o->compact && t->index != i) return FC_ERR_INVALID_ARGUMENT;
        if (!(t->step >= 0.0) || !isfinite(t->step)) return FC_ERR_INVALID_ARGUMENT;
        if (t->step > 0.0 && !isnormal((float)t->step)) return FC_ERR_INVALID_ARGUMENT;
        if (t->levels && !(t->step > 0.0)) return FC_ERR_INVALID_ARGUMENT;
        if (!(t->sigma_min >= 0.0) || !isfinite(t->sigma_min)) return FC_ERR_INVALID_ARGUMENT;
        if (t->reference) {
            uint64_t k;
            for (k = 0; k < numel; k++)
                if (!isfinite(t->reference[k])) return FC_ERR_NONFINITE;
        }
    }
    *bad = SIZE_MAX;
    return FC_OK;
}

static void plan_slices(fc_tensor_desc *d, uint64_t significant, uint64_t busy_rows,
                        const fc_encode_options *o);

/* The rows and columns of t's view (d->rows x d->cols) that hold a nonzero
 * under plain rounding (|w| >= step/2, as fc_count_significant). */
static enum fc_result count_busy(const fc_tensor *t, const fc_tensor_desc *d, uint64_t *rows,
                                 uint64_t *cols)
{
    uint8_t *colnz = (uint8_t *)calloc((size_t)d->cols, 1);
    const float half = d->step * 0.5f;
    uint64_t r, c;
    *rows = *cols = 0;
    if (!colnz) return FC_ERR_NOMEM;
    for (r = 0; r < d->rows; r++) {
        unsigned any = 0;
        if (t->values) {
            const float *x = t->values + r * d->cols;
            for (c = 0; c < d->cols; c++) {
                unsigned nz = fabsf(x[c]) >= half;
                colnz[c] |= (uint8_t)nz;
                any |= nz;
            }
        } else {
            const int32_t *x = t->levels + r * d->cols;
            for (c = 0; c < d->cols; c++) {
                unsigned nz = x[c] != 0;
                colnz[c] |= (uint8_t)nz;
                any |= nz;
            }
        }
        *rows += any;
    }
    for (c = 0; c < d->cols; c++) *cols += colnz[c];
    free(colnz);
    return FC_OK;
}

/* Step, level range and slicing of tensor i. */
static enum fc_result plan_tensor(const fc_tensor *t, const fc_encode_options *o, enc_tensor *et,
                                  uint64_t *significant)
{
    fc_tensor_desc *d = &et->desc;
    uint64_t numel;
    double step = t->step;
    memset(d, 0, sizeof(*d));
    d->index = t->index;
    d->ndim = t->ndim;
    memcpy(d->shape, t->shape, sizeof(uint64_t) * t->ndim);
    fc_layout(t->ndim, t->shape, &d->numel, &d->rows, &d->cols);
    numel = d->numel;
    d->max_gtx = o->max_gtx;
    /* Integer levels are coded as they are. */
    d->quant = t->values ? (unsigned)o->quantizer : FC_QUANT_UNIFORM;
    d->window_set = o->window_set == FC_WINDOW_AUTO ? fc_auto_first_window_set(d->quant) : o->window_set;
    et->eta_scale = 1.0;
    *significant = 0;
    if (t->values && numel) {
        fc_tensor_scan scan;
        fc_scan_tensor(t->values, t->importance, numel, &scan);
        if (scan.nonfinite) return FC_ERR_NONFINITE;
        if (t->importance) {
            if (!(scan.importance_sum > 0.0)) return FC_ERR_INVALID_ARGUMENT;
            et->eta_scale = (double)numel / scan.importance_sum;
        }
        if (step <= 0.0) step = fc_derive_step(&scan, t->sigma_min, o->S);
        if (!(step > 0.0)) return FC_ERR_INVALID_ARGUMENT;
        step = (double)(float)step;
        /* Headroom: a dithered level may be one above |w|/step, a trellis
         * candidate's reconstruction index two (and |index| <= 2^30 - 2). */
        if (scan.abs_max / step + (d->quant == FC_QUANT_DITHER ? 1.0 : d->quant ? 4.0 : 0.0) >=
            (double)FC_MAX_LEVEL)
            return FC_ERR_LEVEL_OVERFLOW;
        {
            /* ... and so are levels whose reconstruction would not be a
             * finite float32 (a huge step): the decoder refuses them. */
            const int dq = d->quant == FC_QUANT_TRELLIS || d->quant == FC_QUANT_TRELLIS8;
            /* the largest |level| (trellis: reconstruction index) the
             * quantizer can pick: rounding, the dither, the trellis' two
             * candidates above */
            double top = floor(scan.abs_max / step * (1.0 + 1e-9) +
                               (dq ? 4.0 : d->quant == FC_QUANT_DITHER ? 1.0 : 0.5));
            if (dq) top = floor((top + 1.0) / 2.0);
            if (top > (double)fc_max_finite_level((float)step, dq ? FC_MAX_DQ_LEVEL : FC_MAX_LEVEL,
                                                  d->quant))
                return FC_ERR_LEVEL_OVERFLOW;
        }
        *significant = fc_count_significant(t->values, numel, 1.0 / step);
    } else if (t->levels && numel) {
        uint64_t i;
        /* Levels whose reconstruction would overflow float32 are refused,
         * as the decoder would refuse them. */
        int32_t lim = fc_max_finite_level((float)step, FC_MAX_LEVEL, FC_QUANT_UNIFORM);
        for (i = 0; i < numel; i++) {
            int32_t v = t->levels[i];
            if (v > lim || v < -lim) return FC_ERR_LEVEL_OVERFLOW;
            *significant += v != 0;
        }
    }
    if (!(step > 0.0)) step = 1.0;
    d->step = (float)step;
    if (t->reference && numel) {
        d->has_ref = 1;
        fc_reference_digest(t->reference, numel, (double)d->step, &d->ref_digest);
    }
    et->significant = *significant;
    et->busy_rows = d->rows;
    et->busy_cols = d->cols;
    if (numel > o->slice_elems && (t->values || t->levels)) {
        enum fc_result rc = count_busy(t, d, &et->busy_rows, &et->busy_cols);
        if (rc != FC_OK) return rc;
    }
    plan_slices(d, *significant, et->busy_rows, o);
    return FC_OK;
}

/* The slicing of the coded view d->rows x d->cols. */
static void plan_slices(fc_tensor_desc *d, uint64_t significant, uint64_t busy_rows,
                        const fc_encode_options *o)
{
    const uint64_t numel = d->numel;
    uint64_t nsl, rows_per;
    if (numel == 0) {
        d->nslices = 0;
        return;
    }
    /* Slices: about slice_elems elements of the rows that hold a nonzero
     * (busy_rows: an embedding table whose untouched tokens leave most rows
     * empty codes its empty rows in a fraction of a bit each, and every
     * slice re-learns its contexts), but not so many that each carries less
     * than MIN_SLICE_BYTES (estimated at ~ log2(1/density) + 6 bits per
     * nonzero).  Depends on the data only, never on the thread count. */
    nsl = (busy_rows * d->cols + o->slice_elems - 1) / o->slice_elems;
    {
        /* Integer log2, so the slicing is the same with every libm. */
        uint64_t inv_dens = significant ? numel / significant : numel;
        double est_bytes = (double)significant * ((double)fc_ilog2_64(inv_dens ? inv_dens : 1) + 6.0) / 8.0;
        uint64_t by_bytes = (uint64_t)(est_bytes / MIN_SLICE_BYTES) + 1u;
        if (by_bytes < nsl) nsl = by_bytes;
    }
    if (nsl > d->rows) nsl = d->rows;
    if (nsl < 1) nsl = 1;
    rows_per = (d->rows + nsl - 1) / nsl;
    d->nslices = (size_t)((d->rows + rows_per - 1) / rows_per);
}

/* ------------------------------------------------------------------ */
/* Orientation                                                          */
/* ------------------------------------------------------------------ */

/* dst (cols x rows) = the transpose of src (rows x cols), in 32 x 32 blocks. */
#define TRANSPOSE_FN(name, type)                                                            \
    static void name(type *dst, const type *src, uint64_t rows, uint64_t cols)              \
    {                                                                                       \
        uint64_t r0, c0, r, c;                                                              \
        for (r0 = 0; r0 < rows; r0 += 32)                                                   \
            for (c0 = 0; c0 < cols; c0 += 32)                                               \
                for (r = r0; r < rows && r < r0 + 32; r++)                                  \
                    for (c = c0; c < cols && c < c0 + 32; c++) dst[c * rows + r] = src[r * cols + c]; \
    }
TRANSPOSE_FN(transpose_f32, float)
TRANSPOSE_FN(transpose_i32, int32_t)

/* 0: code as given, 1: only transposed, 2: try both (never for tensors
 * with a reference, which is in the original layout).  Auto tries both when
 * the view has a larger share of empty columns than of empty rows (input
 * layers whose features are zero for the client's data): row flags code an
 * empty row in one bin, which the transposed view turns those columns into. */
static int orientation(const fc_tensor *t, const fc_tensor_desc *d, const fc_encode_options *o)
{
    uint64_t r, c, zero_rows = 0, zero_cols = 0;
    uint8_t *colnz;
    float half;
    if (t->ndim < 2 || d->quant == FC_QUANT_DITHER || d->has_ref || d->rows < 2 || d->cols < 2) return 0;
    if (o->transpose != FC_TRANSPOSE_AUTO) return o->transpose == 1;
    colnz = (uint8_t *)calloc((size_t)d->cols, 1);
    if (!colnz) return 0;
    half = d->step * 0.5f;
    for (r = 0; r < d->rows; r++) {
        unsigned any = 0;
        for (c = 0; c < d->cols; c++) {
            uint64_t i = r * d->cols + c;
            unsigned nz = t->values ? fabsf(t->values[i]) >= half : t->levels[i] != 0;
            colnz[c] |= (uint8_t)nz;
            any |= nz;
        }
        zero_rows += !any;
    }
    for (c = 0; c < d->cols; c++) zero_cols += !colnz[c];
    free(colnz);
    /* zero_cols / cols > zero_rows / rows + 1/50 */
    return (double)zero_cols * (double)d->rows * 50.0 >
                   ((double)zero_rows * 50.0 + (double)d->rows) * (double)d->cols
               ? 2
               : 0;
}

/* dst = src with its first two axes swapped: src holds d0 x d1 blocks of k
 * elements, dst d1 x d0 (the SWAPPED view and back). */
#define SWAP01_FN(name, type)                                                                \
    static void name(type *dst, const type *src, uint64_t d0, uint64_t d1, uint64_t k)     \
    {                                                                                        \
        uint64_t i, j;                                                                       \
        for (i = 0; i < d0; i++)                                                             \
            for (j = 0; j < d1; j++)                                                         \
                memcpy(dst + (j * d0 + i) * k, src + (i * d1 + j) * k, sizeof(type) * (size_t)k); \
    }
SWAP01_FN(swap01_f32, float)
SWAP01_FN(swap01_i32, int32_t)

/* The SWAPPED view of a tensor: 0 none, 1 also tried (transpose auto: conv
 * filter banks [out, in, kh, kw] coded as rows of input channels are up to 12 %
 * smaller on real CNN updates, docs/codec.md), 2 only (FC_TRANSPOSE_SWAP).
 * Tensors with >= 3 dimensions, never dithered or with a reference. */
static int swap_view(const fc_tensor *t, const fc_tensor_desc *d, const fc_encode_options *o)
{
    if (t->ndim < 3 || d->quant == FC_QUANT_DITHER || d->has_ref || d->numel == 0) return 0;
    if (o->transpose == FC_TRANSPOSE_SWAP) return 2;
    return o->transpose == FC_TRANSPOSE_AUTO && t->shape[0] >= 2 && t->shape[1] >= 2;
}

/* Turn a planned candidate into the view `view` (FC_VIEW_TRANSPOSED or
 * FC_VIEW_SWAPPED) of its tensor (copies of the inputs). */
static enum fc_result make_view(enc_tensor *c, const fc_tensor *t, const fc_encode_options *o, int view)
{
    fc_tensor_desc *d = &c->desc;
    const uint64_t rows = d->rows, cols = d->cols;
    const uint64_t d0 = d->shape[0], d1 = view == FC_VIEW_SWAPPED ? d->shape[1] : 0;
    const uint64_t k = view == FC_VIEW_SWAPPED ? fc_inner_size(d) : 0;
    const size_t n = (size_t)d->numel;
    uint64_t busy = c->busy_cols;
    c->tvalues = c->timportance = c->trecon = NULL;
    c->tlevels = NULL;
    if (t->values && !(c->tvalues = (float *)malloc(sizeof(float) * n))) return FC_ERR_NOMEM;
    if (t->levels && !(c->tlevels = (int32_t *)malloc(sizeof(int32_t) * n))) return FC_ERR_NOMEM;
    if (t->importance && !(c->timportance = (float *)malloc(sizeof(float) * n))) return FC_ERR_NOMEM;
    if (t->recon && !(c->trecon = (float *)malloc(sizeof(float) * n))) return FC_ERR_NOMEM;
    if (view == FC_VIEW_SWAPPED) {
        if (t->values) swap01_f32(c->tvalues, t->values, d0, d1, k);
        if (t->levels) swap01_i32(c->tlevels, t->levels, d0, d1, k);
        if (t->importance) swap01_f32(c->timportance, t->importance, d0, d1, k);
        d->rows = d1;
        d->cols = d0 * k;
        busy = d->rows;
        if (d->numel > o->slice_elems && (t->values || t->levels)) {
            fc_tensor v = *t;
            uint64_t busy_cols;
            enum fc_result rc;
            v.values = c->tvalues;
            v.levels = c->tlevels;
            rc = count_busy(&v, d, &busy, &busy_cols);
            if (rc != FC_OK) return rc;
        }
    } else {
        if (t->values) transpose_f32(c->tvalues, t->values, rows, cols);
        if (t->levels) transpose_i32(c->tlevels, t->levels, rows, cols);
        if (t->importance) transpose_f32(c->timportance, t->importance, rows, cols);
        d->rows = cols;
        d->cols = rows;
    }
    d->transposed = view;
    plan_slices(d, c->significant, busy, o);
    return FC_OK;
}

static void free_candidate(enc_tensor *c)
{
    free(c->tvalues);
    free(c->timportance);
    free(c->trecon);
    free(c->tlevels);
}

/* The bytes of a candidate that depend on how it is coded: its payloads and
 * the header bytes of its flags, digest and slice table. */
static uint64_t candidate_bytes(const enc_tensor *c, const fc_slice_enc_job *jobs)
{
    const fc_tensor_desc *d = &c->desc;
    uint64_t b = fc_varint_size(c->njobs) + (d->has_ref ? 4u : 0u) +
                 (d->quant || d->transposed || d->has_ref ? 1u : 0u);
    size_t j;
    for (j = 0; j < c->njobs; j++) {
        const fc_slice_enc_job *jb = &jobs[c->first_job + j];
        if (j + 1 < c->njobs) b += fc_varint_size(jb->rows);
        b += 1u + fc_varint_size(jb->out.size) + jb->out.size;
    }
    return b;
}

static double candidate_sq_error(const enc_tensor *c, const fc_slice_enc_job *jobs)
{
    double e = 0.0;
    size_t j;
    for (j = 0; j < c->njobs; j++) e += jobs[c->first_job + j].sq_error;
    return e;
}

/* Per tensor keep the best of its candidates (consecutive in cand: as
 * given and/or transposed, each without and with the reference), by
 * fc_coding_better (ties: the earlier one), drop the others' payloads, and
 * copy the chosen candidates, in tensor order, to et (with their
 * reconstruction). */
static void choose_candidates(enc_tensor *cand, size_t ncand, fc_slice_enc_job *jobs,
                              const fc_tensor *tensors, enc_tensor *et)
{
    size_t k, j, first, best;
    for (first = 0; first < ncand; first = k) {
        const double lambda = cand[first].njobs ? fc_choice_lambda(&jobs[cand[first].first_job]) : 0.0;
        best = first;
        for (k = first + 1; k < ncand && cand[k].src == cand[first].src; k++)
            if (fc_coding_better(lambda, cand[k].desc.step, candidate_sq_error(&cand[k], jobs),
                                 candidate_bytes(&cand[k], jobs), candidate_sq_error(&cand[best], jobs),
                                 candidate_bytes(&cand[best], jobs)))
                best = k;
        for (j = first; j < k; j++) {
            size_t s;
            if (j == best) continue;
            cand[j].dropped = 1;
            for (s = 0; s < cand[j].njobs; s++) fc_buf_free(&jobs[cand[j].first_job + s].out);
        }
    }
    for (k = 0; k < ncand; k++) {
        enc_tensor *c = &cand[k];
        const fc_tensor *t = &tensors[c->src];
        if (c->dropped) continue;
        if (t->recon && c->trecon) {
            if (c->desc.transposed == FC_VIEW_SWAPPED)
                swap01_f32(t->recon, c->trecon, c->desc.shape[1], c->desc.shape[0], fc_inner_size(&c->desc));
            else if (c->desc.transposed)
                transpose_f32(t->recon, c->trecon, c->desc.rows, c->desc.cols);
            else
                memcpy(t->recon, c->trecon, sizeof(float) * (size_t)c->desc.numel);
        }
        et[c->src] = *c;
    }
}

static enum fc_result try_short(enc_tensor *et, fc_slice_enc_job *jobs);

enum fc_result fc_encode(const fc_tensor *tensors, size_t count, const fc_encode_options *opts,
                         uint8_t *dst, size_t dst_capacity, size_t *dst_size,
                         fc_tensor_stats *stats, size_t *bad_tensor)
{
    fc_encode_options o;
    enc_tensor *et = NULL, *cand = NULL;
    fc_slice_enc_job *jobs = NULL;
    fc_slice_desc *sdesc = NULL;
    size_t i, j, njobs = 0, ncand = 0, bad = SIZE_MAX, total, ncoded = 0;
    int has_seed = 0, pass;
    uint32_t digest = 0;
    const fc_tensor_desc *prev;
    enum fc_result rc;
    fc_buf head = {0};

    if (dst_size) *dst_size = 0;
    if (bad_tensor) *bad_tensor = SIZE_MAX;
    fc_encode_options_init(&o);
    if (!copy_options(&o, sizeof(o), opts) || !dst_size) return FC_ERR_INVALID_ARGUMENT;
    if (!dst && dst_capacity) return FC_ERR_INVALID_ARGUMENT;
    rc = check_encode_args(tensors, count, &o, &bad);
    if (rc != FC_OK) goto fail;

    et = (enc_tensor *)calloc(count ? count : 1, sizeof(*et));
    cand = (enc_tensor *)calloc(count ? 4 * count : 1, sizeof(*cand));
    if (!et || !cand) {
        rc = FC_ERR_NOMEM;
        goto fail;
    }
    /* Candidates: per tensor as given and/or transposed (orientation()),
     * and/or with its first two axes swapped (swap_view()),
     * without the reference, then as given with the tensor's reference, if
     * it has one (FC_REFERENCE_ALWAYS: only that); choose_candidates keeps
     * the best. */
    for (i = 0; i < count; i++) {
        uint64_t significant;
        enc_tensor planned, *c = &cand[ncand];
        int orient, swap;
        memset(&planned, 0, sizeof(planned));
        rc = plan_tensor(&tensors[i], &o, &planned, &significant);
        if (rc != FC_OK) {
            bad = i;
            goto fail;
        }
        planned.src = i;
        *c = planned;
        if (planned.desc.has_ref && o.reference == FC_REFERENCE_ALWAYS) {
            ncand++;
            continue;
        }
        c->desc.has_ref = 0;
        c->desc.ref_digest = 0;
        orient = orientation(&tensors[i], &c->desc, &o);
        swap = swap_view(&tensors[i], &c->desc, &o);
        if (swap == 1) cand[ncand + 1] = *c;
        if (orient == 2) {
            cand[ncand + 1 + (swap == 1)] = *c;
            c = &cand[++ncand];
        }
        ncand++;
        if (orient) {
            rc = make_view(c, &tensors[i], &o, FC_VIEW_TRANSPOSED);
            if (rc != FC_OK) {
                bad = i;
                goto fail;
            }
        }
        if (swap) {
            rc = make_view(swap == 2 ? c : &cand[ncand++], &tensors[i], &o, FC_VIEW_SWAPPED);
            if (rc != FC_OK) {
                bad = i;
                goto fail;
            }
        }
        if (planned.desc.has_ref) {
            /* with the reference, and a reconstruction of its own */
            c = &cand[ncand++];
            *c = planned;
            if (tensors[i].recon &&
                !(c->trecon = (float *)malloc(sizeof(float) * (size_t)planned.desc.numel))) {
                rc = FC_ERR_NOMEM;
                bad = i;
                goto fail;
            }
        }
    }
    for (i = 0; i < ncand; i++) {
        cand[i].first_job = njobs;
        cand[i].njobs = cand[i].desc.nslices;
        njobs += cand[i].njobs;
    }
    jobs = (fc_slice_enc_job *)calloc(njobs ? njobs : 1, sizeof(*jobs));
    sdesc = (fc_slice_desc *)calloc(njobs ? njobs : 1, sizeof(*sdesc));
    if (!jobs || !sdesc) {
        rc = FC_ERR_NOMEM;
        goto fail;
    }
    for (i = 0; i < ncand; i++) {
        const enc_tensor *c = &cand[i];
        const fc_tensor *t = &tensors[c->src];
        const fc_tensor_desc *d = &c->desc;
        const float *values = d->transposed ? c->tvalues : t->values;
        const int32_t *levels = d->transposed ? c->tlevels : t->levels;
        const float *importance = d->transposed ? c->timportance : t->importance;
        float *recon = d->transposed || c->trecon ? c->trecon : t->recon;
        uint64_t rows_per = d->nslices ? (d->rows + d->nslices - 1) / d->nslices : 0, r0 = 0;
        for (j = 0; j < c->njobs; j++) {
            fc_slice_enc_job *jb = &jobs[c->first_job + j];
            uint64_t rows = d->rows - r0 < rows_per ? d->rows - r0 : rows_per;
            uint64_t off = r0 * d->cols;
            jb->values = values ? values + off : NULL;
            jb->levels = levels ? levels + off : NULL;
            jb->importance = importance ? importance + off : NULL;
            jb->recon = recon ? recon + off : NULL;
            jb->rows = rows;
            jb->cols = d->cols;
            jb->step = d->step;
            jb->lambda = o.lambda;
            jb->eta_scale = c->eta_scale;
            jb->max_gtx = o.max_gtx;
            jb->window_set = d->window_set;
            jb->window_auto = o.window_set == FC_WINDOW_AUTO;
            jb->quant = d->quant;
            jb->dither_key = fc_dither_key(o.dither_seed, d->index);
            jb->elem_off = off;
            jb->ref = d->has_ref ? t->reference + off : NULL;
            jb->mode_request = o.mode;
            jb->rowkind_request = -1;
            jb->predict_request = -1;
            r0 += rows;
        }
        if (recon && d->numel && d->nslices == 0) memset(recon, 0, sizeof(float) * d->numel);
    }
    fc_parallel_for(njobs, o.threads, run_enc_job, jobs);
    for (pass = 0; pass < 2; pass++) {
        for (j = 0; j < njobs; j++) {
            if (jobs[j].result != FC_OK) {
                rc = (enum fc_result)jobs[j].result;
                for (i = 0; i < ncand; i++)
                    if (j >= cand[i].first_job && j < cand[i].first_job + cand[i].njobs) bad = cand[i].src;
                goto fail;
            }
        }
        if (pass == 0 && o.window_set == FC_WINDOW_AUTO) choose_window_sets(cand, ncand, jobs, njobs, o.threads);
    }
    choose_candidates(cand, ncand, jobs, tensors, et);
    /* compact containers: tiny tensors in the short code where it is smaller */
    for (i = 0; o.compact && i < count; i++) {
        rc = try_short(&et[i], jobs);
        if (rc != FC_OK) {
            bad = i;
            goto fail;
        }
    }

    /* Assemble: container header, then per tensor its header and payloads.
     * A compact container omits all-zero tensors (not dithered ones: they
     * never reconstruct to zero). */
    for (i = 0; i < count; i++) {
        uint64_t nz = 0;
        has_seed |= et[i].desc.quant == FC_QUANT_DITHER;
        for (j = 0; j < et[i].njobs; j++) nz += jobs[et[i].first_job + j].nonzeros;
        et[i].desc.coded = !o.compact || nz > 0 || et[i].desc.quant == FC_QUANT_DITHER;
        ncoded += (size_t)et[i].desc.coded;
    }
    if (o.compact) {
        fc_shape *shapes = (fc_shape *)calloc(count ? count : 1, sizeof(*shapes));
        if (!shapes) {
            rc = FC_ERR_NOMEM;
            goto fail;
        }
        for (i = 0; i < count; i++) {
            shapes[i].ndim = tensors[i].ndim;
            memcpy(shapes[i].shape, tensors[i].shape, sizeof(shapes[i].shape));
        }
        digest = fc_shape_digest(shapes, count);
        free(shapes);
    }
    fc_write_container_header(&head, ncoded, has_seed, o.dither_seed, o.compact, digest);
    total = head.size;
    prev = NULL;
    for (i = 0; i < count; i++) {
        fc_tensor_desc *d = &et[i].desc;
        uint64_t nz = 0, payload = 0;
        size_t hstart = head.size;
        for (j = 0; j < et[i].njobs; j++) {
            fc_slice_enc_job *jb = &jobs[et[i].first_job + j];
            fc_slice_desc *sd = &sdesc[et[i].first_job + j];
            nz += jb->nonzeros;
            sd->rows = jb->rows;
            sd->mode = jb->mode;
            sd->k = jb->k;
            sd->size = jb->out.size;
            payload += jb->out.size;
        }
        d->slices = sdesc + et[i].first_job;
        if (nz == 0 && d->quant != FC_QUANT_DITHER) {
            d->nslices = 0; /* an all-zero tensor has no slices */
            payload = 0;
        }
        if (d->coded) {
            fc_write_tensor_header(&head, d, prev, o.compact);
            prev = d;
        }
        if (stats) {
            fc_tensor_stats *st = &stats[i];
            st->step = (double)d->step;
            st->nonzeros = nz;
            st->bytes = (head.size - hstart) + payload;
            st->slices = (uint32_t)d->nslices;
            st->modes = 0;
            st->sq_error = 0.0;
            for (j = 0; j < et[i].njobs; j++) {
                if (d->nslices) st->modes |= 1u << jobs[et[i].first_job + j].mode;
                st->sq_error += jobs[et[i].first_job + j].sq_error;
            }
        }
        total = head.size + (size_t)payload;
        (void)total;
    }
    if (head.failed) {
        rc = FC_ERR_NOMEM;
        goto fail;
    }
    total = head.size + 4;
    for (j = 0; j < njobs; j++) total += jobs[j].out.size;
    /* Payloads of all-zero tensors are not written. */
    for (i = 0; i < count; i++)
        if (et[i].desc.nslices == 0)
            for (j = 0; j < et[i].njobs; j++) total -= jobs[et[i].first_job + j].out.size;
    *dst_size = total;
    if (total > dst_capacity) {
        rc = FC_ERR_BUFFER_TOO_SMALL;
        goto done;
    }
    {
        /* Re-walk headers: write tensor header bytes then payloads. */
        fc_buf tmp = {0};
        size_t pos = 0;
        fc_write_container_header(&tmp, ncoded, has_seed, o.dither_seed, o.compact, digest);
        memcpy(dst, tmp.data, tmp.size);
        pos = tmp.size;
        prev = NULL;
        for (i = 0; i < count; i++) {
            if (!et[i].desc.coded) continue;
            tmp.size = 0;
            fc_write_tensor_header(&tmp, &et[i].desc, prev, o.compact);
            prev = &et[i].desc;
            if (tmp.failed) {
                fc_buf_free(&tmp);
                rc = FC_ERR_NOMEM;
                *dst_size = 0;
                goto fail;
            }
            memcpy(dst + pos, tmp.data, tmp.size);
            pos += tmp.size;
            for (j = 0; j < et[i].desc.nslices; j++) {
                fc_slice_enc_job *jb = &jobs[et[i].first_job + j];
                if (jb->out.size) memcpy(dst + pos, jb->out.data, jb->out.size);
                pos += jb->out.size;
            }
        }
        fc_buf_free(&tmp);
        fc_store_le32(dst + pos, fc_crc32(0, dst, pos));
        pos += 4;
        if (pos != total) {
            rc = FC_ERR_INVALID_ARGUMENT; /* cannot happen */
            *dst_size = 0;
            goto fail;
        }
    }
    rc = FC_OK;
    goto done;
fail:
    if (bad_tensor) *bad_tensor = bad;
    if (dst_size && rc != FC_ERR_BUFFER_TOO_SMALL) *dst_size = 0;
done:
    if (jobs)
        for (j = 0; j < njobs; j++) {
            fc_buf_free(&jobs[j].out);
            fc_buf_free(&jobs[j].trace);
        }
    fc_buf_free(&head);
    free(jobs);
    free(sdesc);
    if (cand)
        for (i = 0; i < ncand; i++) free_candidate(&cand[i]);
    free(cand);
    free(et);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Decoding                                                             */
/* ------------------------------------------------------------------ */

static int get_decode_options(const fc_decode_options *opts, fc_decode_options *o)
{
    size_t i;
    fc_decode_options_init(o);
    if (!copy_options(o, sizeof(*o), opts)) return 0;
    if (!o->expected) return o->expected_count == 0;
    for (i = 0; i < o->expected_count; i++)
        if (o->expected[i].ndim > FC_MAX_DIMS) return 0;
    return 1;
}

enum fc_result fc_inspect(const uint8_t *src, size_t src_size, const fc_decode_options *opts,
                          fc_tensor_info *infos, size_t capacity, size_t *count)
{
    fc_decode_options o;
    fc_parsed p;
    size_t i;
    int rc;
    if (count) *count = 0;
    if (!count || (!infos && capacity) || !get_decode_options(opts, &o))
        return FC_ERR_INVALID_ARGUMENT;
    rc = fc_parse(src, src_size, &o, &p);
    if (rc != FC_OK) return (enum fc_result)rc;
    *count = p.count;
    for (i = 0; i < p.count && i < capacity; i++) {
        const fc_tensor_desc *d = &p.tensors[i];
        fc_tensor_info *inf = &infos[i];
        memset(inf, 0, sizeof(*inf));
        inf->index = d->index;
        inf->ndim = d->ndim;
        memcpy(inf->shape, d->shape, sizeof(uint64_t) * d->ndim);
        inf->numel = d->numel;
        inf->step = (double)d->step;
        inf->slices = (uint32_t)d->nslices;
        inf->max_gtx = d->max_gtx;
        inf->quantizer = d->quant;
        inf->dither_seed = d->quant == FC_QUANT_DITHER ? p.dither_seed : 0;
        inf->reference = (uint32_t)d->has_ref;
        inf->reference_digest = d->ref_digest;
    }
    fc_parsed_free(&p);
    return FC_OK;
}

/* ------------------------------------------------------------------ */
/* Splitting and joining by tensor                                      */
/* ------------------------------------------------------------------ */

/* Bytes of a tensor's slice payloads, which lie back to back from
 * slices[0].payload (FORMAT.md §3). */
static size_t payload_bytes(const fc_tensor_desc *d)
{
    size_t s, n = 0;
    for (s = 0; s < d->nslices; s++) n += d->slices[s].size;
    return n;
}

/* Append one tensor (header relative to `prev`, then its payloads) to
 * dst + *pos, or only count its bytes when dst is NULL.  `head` is scratch. */
static int put_tensor(fc_buf *head, const fc_tensor_desc *d, const fc_tensor_desc *prev,
                      int compact, uint8_t *dst, size_t *pos)
{
    size_t body = payload_bytes(d);
    head->size = 0;
    fc_write_tensor_header(head, d, prev, compact);
    if (head->failed) return FC_ERR_NOMEM;
    if (dst) {
        memcpy(dst + *pos, head->data, head->size);
        if (body) memcpy(dst + *pos + head->size, d->slices[0].payload, body);
    }
    *pos += head->size + body;
    return FC_OK;
}

/* Close a container that starts at dst + start and ends at dst + *pos. */
static void put_crc(uint8_t *dst, size_t start, size_t *pos)
{
    if (dst) fc_store_le32(dst + *pos, fc_crc32(0, dst + start, *pos - start));
    *pos += 4;
}

/* Append the coded tensors of np parsed containers, in order, each header
 * relative to the one before (the way fc_encode writes them), then the CRC of
 * the container that starts at dst (only counted when dst is NULL). */
static int put_parsed(fc_buf *head, const fc_parsed *p, size_t np, int compact, uint8_t *dst,
                      size_t *pos)
{
    const fc_tensor_desc *prev = NULL;
    size_t k, i;
    int rc;
    for (k = 0; k < np; k++) {
        for (i = 0; i < p[k].count; i++) {
            if (!p[k].tensors[i].coded) continue;
            rc = put_tensor(head, &p[k].tensors[i], prev, compact, dst, pos);
            if (rc != FC_OK) return rc;
            prev = &p[k].tensors[i];
        }
    }
    put_crc(dst, 0, pos);
    return FC_OK;
}

/* The sizing pass's verdict: *dst_size = the bytes needed. */
static int sized(size_t pos, size_t capacity, size_t *dst_size)
{
    *dst_size = pos;
    return pos > capacity ? FC_ERR_BUFFER_TOO_SMALL : FC_OK;
}

enum fc_result fc_split(const uint8_t *src, size_t src_size, const fc_decode_options *opts,
                        uint8_t *dst, size_t dst_capacity, size_t *dst_size,
                        size_t *part_sizes, size_t capacity, size_t *count)
{
    fc_decode_options o;
    fc_parsed p;
    fc_buf head;
    size_t i, pos = 0;
    int rc = FC_OK, pass;
    if (dst_size) *dst_size = 0;
    if (count) *count = 0;
    if (!dst_size || !count || (!dst && dst_capacity) || (!part_sizes && capacity) ||
        !get_decode_options(opts, &o))
        return FC_ERR_INVALID_ARGUMENT;
    rc = fc_parse(src, src_size, &o, &p);
    if (rc != FC_OK) return (enum fc_result)rc;
    memset(&head, 0, sizeof(head));
    /* Pass 0 sizes the parts, pass 1 writes them. */
    for (pass = 0; pass < 2; pass++) {
        pos = 0;
        for (i = 0; i < p.count; i++) {
            const fc_tensor_desc *d = &p.tensors[i];
            size_t start = pos;
            uint8_t *out = pass ? dst : NULL;
            head.size = 0;
            /* a tensor a compact container omits: a part without tensors */
            fc_write_container_header(&head, d->coded ? 1 : 0, d->quant == FC_QUANT_DITHER,
                                      p.dither_seed, p.compact, p.shape_digest);
            if (head.failed) {
                rc = FC_ERR_NOMEM;
                goto out;
            }
            if (out) memcpy(out + pos, head.data, head.size);
            pos += head.size;
            if (d->coded) {
                rc = put_tensor(&head, d, NULL, p.compact, out, &pos);
                if (rc != FC_OK) goto out;
            }
            put_crc(out, start, &pos);
            if (pass) part_sizes[i] = pos - start;
        }
        if (pass == 0) {
            *dst_size = pos;
            *count = p.count;
            if (pos > dst_capacity || p.count > capacity) {
                rc = FC_ERR_BUFFER_TOO_SMALL;
                goto out;
            }
        }
    }
    rc = FC_OK;
out:
    if (rc != FC_OK && rc != FC_ERR_BUFFER_TOO_SMALL) *dst_size = *count = 0;
    fc_buf_free(&head);
    fc_parsed_free(&p);
    return (enum fc_result)rc;
}

enum fc_result fc_join(const uint8_t *const *parts, const size_t *part_sizes, size_t count,
                       const fc_decode_options *opts, uint8_t *dst, size_t dst_capacity,
                       size_t *dst_size, size_t *bad_part)
{
    fc_decode_options o, po;
    fc_parsed *p = NULL;
    fc_buf head;
    const fc_tensor_desc *prev = NULL;
    uint64_t tensors = 0, elems = 0, seed = 0;
    size_t k, i, bad = SIZE_MAX, pos = 0;
    int rc = FC_OK, has_seed = 0, pass, compact = 0;
    if (bad_part) *bad_part = SIZE_MAX;
    if (dst_size) *dst_size = 0;
    if (!dst_size || (count && (!parts || !part_sizes)) || (!dst && dst_capacity) ||
        !get_decode_options(opts, &o))
        return FC_ERR_INVALID_ARGUMENT;
    /* The parts are parsed without `expected`: it describes the whole. */
    po = o;
    po.expected = NULL;
    po.expected_count = 0;
    p = (fc_parsed *)calloc(count ? count : 1, sizeof(*p));
    if (!p) return FC_ERR_NOMEM;
    memset(&head, 0, sizeof(head));
    for (k = 0; k < count; k++) {
        /* A compact part is read with the whole's shapes (its digest covers
         * the model); compact and self-describing parts do not mix. */
        int part_compact = parts[k] && part_sizes[k] > 5 && (parts[k][5] & FC_CFLAG_COMPACT);
        bad = k;
        rc = fc_parse(parts[k], part_sizes[k], part_compact ? &o : &po, &p[k]);
        if (rc != FC_OK) goto out;
        if (k == 0) compact = p[k].compact;
        if (p[k].compact != compact) {
            rc = FC_ERR_MISMATCH;
            goto out;
        }
        for (i = 0; i < p[k].count; i++) {
            const fc_tensor_desc *d = &p[k].tensors[i];
            if (!d->coded) continue;
            if (prev && d->index <= prev->index) {
                rc = FC_ERR_INVALID_ARGUMENT;
                goto out;
            }
            if (o.expected && !compact &&
                (tensors >= o.expected_count || o.expected[tensors].ndim != d->ndim ||
                 memcmp(o.expected[tensors].shape, d->shape, sizeof(uint64_t) * d->ndim) != 0)) {
                rc = FC_ERR_MISMATCH;
                goto out;
            }
            if (d->quant == FC_QUANT_DITHER) {
                if (has_seed && seed != p[k].dither_seed) {
                    rc = FC_ERR_MISMATCH;
                    goto out;
                }
                has_seed = 1;
                seed = p[k].dither_seed;
            }
            if (tensors >= o.max_tensors || d->numel > o.max_total_elems - elems) {
                rc = FC_ERR_LIMIT;
                goto out;
            }
            tensors++;
            elems += d->numel;
            prev = d;
        }
    }
    bad = SIZE_MAX;
    if (o.expected && !compact && tensors != o.expected_count) {
        rc = FC_ERR_MISMATCH;
        goto out;
    }
    /* Pass 0 sizes the container, pass 1 writes it. */
    for (pass = 0; pass < 2; pass++) {
        uint8_t *out = pass ? dst : NULL;
        prev = NULL;
        head.size = 0;
        fc_write_container_header(&head, (size_t)tensors, has_seed, seed, compact,
                                  count ? p[0].shape_digest : 0);
        if (head.failed) {
            rc = FC_ERR_NOMEM;
            goto out;
        }
        if (out) memcpy(out, head.data, head.size);
        pos = head.size;
        rc = put_parsed(&head, p, count, compact, out, &pos);
        if (rc == FC_OK && pass == 0) rc = sized(pos, dst_capacity, dst_size);
        if (rc != FC_OK) goto out;
    }
    rc = FC_OK;
out:
    if (rc != FC_OK && rc != FC_ERR_BUFFER_TOO_SMALL) *dst_size = 0;
    if (rc != FC_OK && bad_part) *bad_part = bad;
    for (k = 0; k < count; k++) fc_parsed_free(&p[k]);
    free(p);
    fc_buf_free(&head);
    return (enum fc_result)rc;
}

enum fc_result fc_convert(const uint8_t *src, size_t src_size, const fc_decode_options *opts,
                          int compact, uint8_t *dst, size_t dst_capacity, size_t *dst_size)
{
    fc_decode_options o;
    fc_parsed p;
    fc_buf head;
    fc_shape *shapes = NULL;
    uint32_t digest = 0;
    size_t i, ncoded = 0, pos = 0;
    int rc = FC_OK, pass, has_seed = 0;
    if (dst_size) *dst_size = 0;
    if (!dst_size || (!dst && dst_capacity) || (compact != 0 && compact != 1) ||
        !get_decode_options(opts, &o))
        return FC_ERR_INVALID_ARGUMENT;
    rc = fc_parse(src, src_size, &o, &p);
    if (rc != FC_OK) return (enum fc_result)rc;
    memset(&head, 0, sizeof(head));
    for (i = 0; i < p.count; i++) {
        fc_tensor_desc *d = &p.tensors[i];
        has_seed |= d->quant == FC_QUANT_DITHER;
        if (compact) {
            if (d->index != i) {
                rc = FC_ERR_INVALID_ARGUMENT;
                goto out;
            }
            d->coded = d->nslices > 0 || d->quant == FC_QUANT_DITHER;
        } else {
            d->coded = 1;
        }
        ncoded += (size_t)d->coded;
    }
    if (compact) {
        shapes = (fc_shape *)calloc(p.count ? p.count : 1, sizeof(*shapes));
        if (!shapes) {
            rc = FC_ERR_NOMEM;
            goto out;
        }
        for (i = 0; i < p.count; i++) {
            shapes[i].ndim = p.tensors[i].ndim;
            memcpy(shapes[i].shape, p.tensors[i].shape, sizeof(shapes[i].shape));
        }
        digest = fc_shape_digest(shapes, p.count);
    }
    /* Pass 0 sizes the container, pass 1 writes it. */
    for (pass = 0; pass < 2; pass++) {
        uint8_t *out = pass ? dst : NULL;
        head.size = 0;
        fc_write_container_header(&head, ncoded, has_seed, p.dither_seed, compact, digest);
        if (head.failed) {
            rc = FC_ERR_NOMEM;
            goto out;
        }
        if (out) memcpy(out, head.data, head.size);
        pos = head.size;
        rc = put_parsed(&head, &p, 1, compact, out, &pos);
        if (rc == FC_OK && pass == 0) rc = sized(pos, dst_capacity, dst_size);
        if (rc != FC_OK) goto out;
    }
    rc = FC_OK;
out:
    if (rc != FC_OK && rc != FC_ERR_BUFFER_TOO_SMALL) *dst_size = 0;
    free(shapes);
    fc_buf_free(&head);
    fc_parsed_free(&p);
    return (enum fc_result)rc;
}

/* The decode jobs and which of them are slices in the short code. */
typedef struct dec_jobs {
    fc_slice_dec_job *jobs;
    const unsigned char *is_short;
} dec_jobs;

static void run_dec_job(void *ctx, size_t i)
{
    const dec_jobs *d = (const dec_jobs *)ctx;
    if (d->is_short[i]) fc_short_decode(&d->jobs[i]);
    else fc_slice_decode(&d->jobs[i]);
}

/* SHORT (FORMAT.md §6.6) for the small uniform tensors of a compact
 * container where it is smaller: the levels of each slice (decoded from
 * the job's own payload) coded again in the short code, every slice at its
 * best order.  Slices with ROWFINE rows (values not level * step) keep
 * their coding. */
static enum fc_result try_short(enc_tensor *et, fc_slice_enc_job *jobs)
{
    fc_tensor_desc *d = &et->desc;
    uint64_t before = 0, after = 0, nz = 0;
    unsigned ks[64];
    int32_t *lv;
    size_t j;
    if (d->quant != FC_QUANT_UNIFORM || d->transposed != FC_VIEW_GIVEN || d->has_ref ||
        d->numel == 0 || d->numel > FC_SHORT_MAX_ELEMS || et->njobs == 0 || et->njobs > 64)
        return FC_OK;
    for (j = 0; j < et->njobs; j++) {
        const fc_slice_enc_job *jb = &jobs[et->first_job + j];
        if (jb->mode == FC_MODE_DENSE && (jb->k & 8u) && !(jb->k & 4u)) return FC_OK; /* ROWFINE */
        before += jb->out.size;
        nz += jb->nonzeros;
    }
    if (nz == 0) return FC_OK;
    lv = (int32_t *)malloc(sizeof(int32_t) * (size_t)d->numel);
    if (!lv) return FC_ERR_NOMEM;
    {
        int32_t *p = lv;
        for (j = 0; j < et->njobs; j++) {
            fc_slice_enc_job *jb = &jobs[et->first_job + j];
            fc_slice_dec_job dj;
            uint64_t bits, n = jb->rows * jb->cols;
            memset(&dj, 0, sizeof(dj));
            dj.src = jb->out.data;
            dj.size = jb->out.size;
            dj.rows = jb->rows;
            dj.cols = jb->cols;
            dj.step = d->step;
            dj.max_gtx = jb->max_gtx;
            dj.window_set = d->window_set;
            dj.quant = d->quant;
            dj.elem_off = jb->elem_off;
            dj.mode = jb->mode;
            dj.k = jb->k;
            dj.sink.levels = p;
            fc_slice_decode(&dj);
            if (dj.result != FC_OK) {
                free(lv);
                return FC_OK; /* cannot happen: keep the coding */
            }
            ks[j] = fc_short_best_k(p, n, &bits);
            after += (bits + 7u) / 8u;
            p += n;
        }
    }
    /* the SHORT flag adds the quantizer byte (the tensor had none: uniform,
     * given view, no reference) */
    if (after + 1u >= before) {
        free(lv);
        return FC_OK;
    }
    {
        const int32_t *p = lv;
        for (j = 0; j < et->njobs; j++) {
            fc_slice_enc_job *jb = &jobs[et->first_job + j];
            uint64_t n = jb->rows * jb->cols;
            fc_short_encode(p, n, ks[j], &jb->out);
            if (jb->out.failed) {
                free(lv);
                return FC_ERR_NOMEM;
            }
            jb->mode = FC_MODE_DENSE;
            jb->k = ks[j];
            p += n;
        }
    }
    d->short_code = 1;
    free(lv);
    return FC_OK;
}

enum fc_result fc_decode(const uint8_t *src, size_t src_size, const fc_decode_options *opts,
                         const fc_decode_target *targets, size_t count)
{
    fc_decode_options o;
    fc_parsed p;
    fc_slice_dec_job *jobs = NULL;
    unsigned char *is_short = NULL;
    dec_jobs ctx;
    size_t i, j, n = 0;
    int rc, accumulate = 0, pass;
    if ((!targets && count) || !get_decode_options(opts, &o)) return FC_ERR_INVALID_ARGUMENT;
    for (i = 0; i < count; i++) {
        if (targets[i].acc) {
            if (targets[i].acc_dtype != FC_ACC_F32 && targets[i].acc_dtype != FC_ACC_F64)
                return FC_ERR_INVALID_ARGUMENT;
            if (!isfinite(targets[i].weight)) return FC_ERR_INVALID_ARGUMENT;
            accumulate = 1;
        }
    }
    rc = fc_parse(src, src_size, &o, &p);
    if (rc != FC_OK) return (enum fc_result)rc;
    if (p.count != count) {
        fc_parsed_free(&p);
        return FC_ERR_MISMATCH;
    }
    /* A tensor coded with a reference decodes only with the same one. */
    for (i = 0; i < count; i++) {
        const fc_tensor_desc *d = &p.tensors[i];
        const fc_decode_target *tg = &targets[i];
        uint32_t digest;
        if (!d->has_ref || !(tg->levels || tg->values || tg->acc || tg->reference)) continue;
        if (!tg->reference) {
            fc_parsed_free(&p);
            return FC_ERR_MISMATCH;
        }
        fc_reference_digest(tg->reference, d->numel, (double)d->step, &digest);
        if (digest != d->ref_digest) {
            fc_parsed_free(&p);
            return FC_ERR_MISMATCH;
        }
    }
    /* Tensors without slices are all zero: written here, no job needed. */
    for (i = 0; i < count; i++) {
        const fc_tensor_desc *d = &p.tensors[i];
        if (d->nslices == 0 && d->numel) {
            if (targets[i].levels) memset(targets[i].levels, 0, sizeof(int32_t) * (size_t)d->numel);
            if (targets[i].values) memset(targets[i].values, 0, sizeof(float) * (size_t)d->numel);
        }
    }
    jobs = (fc_slice_dec_job *)calloc(p.nslices ? p.nslices : 1, sizeof(*jobs));
    is_short = (unsigned char *)calloc(p.nslices ? p.nslices : 1, 1);
    if (!jobs || !is_short) {
        free(jobs);
        free(is_short);
        fc_parsed_free(&p);
        return FC_ERR_NOMEM;
    }
    ctx.jobs = jobs;
    ctx.is_short = is_short;
    /* Pass 0 validates every payload when anything accumulates, so a
     * corrupt container never touches an accumulator. */
    for (pass = accumulate ? 0 : 1; pass < 2; pass++) {
        n = 0;
        for (i = 0; i < count; i++) {
            const fc_tensor_desc *d = &p.tensors[i];
            const fc_decode_target *tg = &targets[i];
            uint64_t r0 = 0;
            int wanted = tg->levels || tg->values || tg->acc;
            if (!wanted && pass == 1) continue;
            /* Pass 0 cannot check a payload whose reference it lacks (that
             * tensor is not written either). */
            if (d->has_ref && !tg->reference) continue;
            for (j = 0; j < d->nslices; j++) {
                fc_slice_dec_job *jb = &jobs[n];
                is_short[n++] = (unsigned char)d->short_code;
                const fc_slice_desc *sd = &d->slices[j];
                const uint64_t inner = d->transposed == FC_VIEW_SWAPPED ? fc_inner_size(d) : 0;
                uint64_t off = d->transposed == FC_VIEW_SWAPPED ? r0 * inner
                               : d->transposed                 ? r0
                                                               : r0 * d->cols;
                memset(jb, 0, sizeof(*jb));
                jb->src = sd->payload;
                jb->size = sd->size;
                jb->rows = sd->rows;
                jb->cols = d->cols;
                jb->step = d->step;
                jb->max_gtx = d->max_gtx;
                jb->window_set = d->window_set;
                jb->quant = d->quant;
                jb->dither_key = fc_dither_key(p.dither_seed, d->index);
                jb->elem_off = off;
                jb->ref = d->has_ref ? tg->reference + off : NULL;
                jb->mode = sd->mode;
                jb->k = sd->k;
                if (pass == 1) {
                    jb->sink.levels = tg->levels ? tg->levels + off : NULL;
                    jb->sink.values = tg->values ? tg->values + off : NULL;
                    if (tg->acc)
                        jb->sink.acc = tg->acc_dtype == FC_ACC_F64
                                           ? (void *)((double *)tg->acc + off)
                                           : (void *)((float *)tg->acc + off);
                    jb->sink.acc_dtype = tg->acc_dtype;
                    jb->sink.weight = tg->weight;
                    jb->sink.tstride = d->transposed == FC_VIEW_SWAPPED ? d->rows * inner
                                       : d->transposed                 ? d->rows
                                                                       : 0;
                    jb->sink.tblock = inner;
                }
                r0 += sd->rows;
            }
        }
        fc_parallel_for(n, o.threads, run_dec_job, &ctx);
        for (j = 0; j < n; j++) {
            if (jobs[j].result != FC_OK) {
                rc = jobs[j].result;
                goto out;
            }
        }
    }
    rc = FC_OK;
out:
    free(jobs);
    free(is_short);
    fc_parsed_free(&p);
    return (enum fc_result)rc;
}

enum fc_result fc_dither(uint64_t seed, uint32_t tensor_index, uint64_t first, size_t count,
                         double step, float *out)
{
    uint64_t key = fc_dither_key(seed, tensor_index);
    float f = (float)step;
    size_t i;
    if ((!out && count) || !(step > 0.0) || !isnormal(f) || first > UINT64_MAX - count)
        return FC_ERR_INVALID_ARGUMENT;
    for (i = 0; i < count; i++) out[i] = fc_dither_value(key, first + i, f);
    return FC_OK;
}

enum fc_result fc_reference_digest(const float *reference, uint64_t numel, double step,
                                   uint32_t *digest)
{
    uint8_t buf[4096];
    uint32_t crc = 0;
    uint64_t i = 0;
    double inv;
    if (!digest || (!reference && numel) || !(step > 0.0) || !isnormal((float)step))
        return FC_ERR_INVALID_ARGUMENT;
    inv = 1.0 / (double)(float)step;
    while (i < numel) {
        size_t n = numel - i < sizeof buf ? (size_t)(numel - i) : sizeof buf, k;
        for (k = 0; k < n; k++) buf[k] = fc_ref_class(reference[i + k], inv);
        crc = fc_crc32(crc, buf, n);
        i += n;
    }
    *digest = crc;
    return FC_OK;
}
