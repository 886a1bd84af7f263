/*
 * test_threads.c - threads never change the bytes: the same container for
 * threads = 1, 2, 3, 8 and 0 (all CPUs) and over repeated runs; decoding
 * (levels, values, accumulation) equal for every thread count; and several
 * application threads calling fc_encode / fc_decode at once on different
 * data (the API keeps no global mutable state), each getting what a lone
 * single-threaded call produces.
 */
#include "test_util.h" /* first: it sets the feature macros */

#include <pthread.h>

#define NT 3

typedef struct workload {
    uint64_t shape[NT][2];
    float *values[NT];
    int32_t *levels[NT];
    fc_tensor t[NT];
} workload;

/* Three tensors with many slices each: dense floats (RD quantized), a top-10 %
 * float update, and integer levels. */
static void make_workload(workload *w, uint64_t seed)
{
    tu_rng r = tu_seed(seed);
    static const uint64_t shapes[NT][2] = {{160, 256}, {384, 384}, {256, 128}};
    int i;
    memset(w, 0, sizeof(*w));
    for (i = 0; i < NT; i++) {
        uint64_t n = shapes[i][0] * shapes[i][1], k;
        w->shape[i][0] = shapes[i][0];
        w->shape[i][1] = shapes[i][1];
        w->t[i] = tu_tensor((uint32_t)i * 2u, 2, w->shape[i]);
        if (i < 2) {
            w->values[i] = (float *)malloc(sizeof(float) * n);
            TU_CHECK(w->values[i] != NULL);
            tu_fill_laplace(&r, w->values[i], n, 0.01);
            if (i == 1) tu_topk(w->values[i], n, n / 10);
            w->t[i].values = w->values[i];
        } else {
            w->levels[i] = (int32_t *)malloc(sizeof(int32_t) * n);
            TU_CHECK(w->levels[i] != NULL);
            for (k = 0; k < n; k++) {
                int32_t m = tu_below(&r, 3) ? 0 : 1 + (int32_t)tu_below(&r, 5);
                w->levels[i][k] = tu_below(&r, 2) ? -m : m;
            }
            w->t[i].levels = w->levels[i];
            w->t[i].step = 0.001;
        }
    }
}

static void free_workload(workload *w)
{
    int i;
    for (i = 0; i < NT; i++) {
        free(w->values[i]);
        free(w->levels[i]);
    }
}

static void enc_opts(fc_encode_options *o, unsigned threads, int mode)
{
    fc_encode_options_init(o);
    o->threads = threads;
    o->mode = mode;
    o->lambda = 0.1155;
    o->slice_elems = 8192;
}

static uint8_t *encode(const workload *w, const fc_encode_options *o, size_t *size,
                       fc_tensor_stats *st)
{
    uint8_t *c;
    TU_CHECK_RC(tu_encode(w->t, NT, o, &c, size, st), FC_OK);
    return c;
}

/* Decoded levels, values and an f64 accumulation of every tensor. */
typedef struct decoded {
    int32_t *levels[NT];
    float *values[NT];
    double *acc[NT];
} decoded;

/* No checks inside (it also runs on application threads; the check
 * counter is not atomic): returns fc_decode's result. */
static int decode_rc(const workload *w, const uint8_t *c, size_t size, unsigned threads,
                     decoded *out)
{
    fc_decode_options d;
    fc_decode_target tg[NT];
    int i;
    fc_decode_options_init(&d);
    d.threads = threads;
    memset(tg, 0, sizeof tg);
    memset(out, 0, sizeof(*out));
    for (i = 0; i < NT; i++) {
        uint64_t n = w->shape[i][0] * w->shape[i][1];
        out->levels[i] = (int32_t *)malloc(sizeof(int32_t) * n);
        out->values[i] = (float *)malloc(sizeof(float) * n);
        out->acc[i] = (double *)calloc(n, sizeof(double));
        if (!out->levels[i] || !out->values[i] || !out->acc[i]) return FC_ERR_NOMEM;
        tg[i].levels = out->levels[i];
        tg[i].values = out->values[i];
        tg[i].acc = out->acc[i];
        tg[i].acc_dtype = FC_ACC_F64;
        tg[i].weight = 0.25;
    }
    return fc_decode(c, size, &d, tg, NT);
}

static void decode(const workload *w, const uint8_t *c, size_t size, unsigned threads,
                   decoded *out)
{
    TU_CHECK_RC(decode_rc(w, c, size, threads, out), FC_OK);
}

static int same_decoded(const workload *w, const decoded *a, const decoded *b)
{
    int i;
    for (i = 0; i < NT; i++) {
        uint64_t n = w->shape[i][0] * w->shape[i][1];
        if (memcmp(a->levels[i], b->levels[i], sizeof(int32_t) * n) ||
            memcmp(a->values[i], b->values[i], sizeof(float) * n) ||
            memcmp(a->acc[i], b->acc[i], sizeof(double) * n))
            return 0;
    }
    return 1;
}

static void free_decoded(decoded *d)
{
    int i;
    for (i = 0; i < NT; i++) {
        free(d->levels[i]);
        free(d->values[i]);
        free(d->acc[i]);
    }
}

/* Same bytes for every thread count, every mode; decode equal too. */
static void test_thread_counts(void)
{
    static const unsigned counts[] = {1, 2, 3, 8, 0};
    workload w;
    int mode;
    make_workload(&w, 1);
    for (mode = FC_MODE_AUTO; mode <= FC_MODE_RUNS; mode++) {
        fc_encode_options o;
        fc_tensor_stats st[NT];
        size_t ref_size, i;
        uint8_t *ref;
        decoded dref;
        int run;
        enc_opts(&o, 1, mode);
        ref = encode(&w, &o, &ref_size, st);
        for (i = 0; i < NT; i++) TU_CHECKF(st[i].slices >= 3, "tensor %zu: %u slices", i, st[i].slices);
        for (i = 0; i < sizeof counts / sizeof counts[0]; i++) {
            for (run = 0; run < (counts[i] == 8 ? 3 : 1); run++) {
                size_t size;
                uint8_t *c;
                enc_opts(&o, counts[i], mode);
                c = encode(&w, &o, &size, NULL);
                TU_CHECKF(size == ref_size && memcmp(c, ref, size) == 0,
                          "mode %d, %u threads, run %d: different bytes", mode, counts[i], run);
                free(c);
            }
        }
        decode(&w, ref, ref_size, 1, &dref);
        for (i = 1; i < sizeof counts / sizeof counts[0]; i++) {
            decoded d;
            decode(&w, ref, ref_size, counts[i], &d);
            TU_CHECKF(same_decoded(&w, &dref, &d), "mode %d: decode with %u threads differs", mode,
                      counts[i]);
            free_decoded(&d);
        }
        free_decoded(&dref);
        free(ref);
    }
    free_workload(&w);
}

/* Application threads calling the API concurrently, each with its own data
 * and internal worker threads of its own. */
typedef struct job {
    workload w;
    uint8_t *ref;
    size_t ref_size;
    decoded dref;
    int ok;
} job;

static void *worker(void *arg)
{
    job *j = (job *)arg;
    int it;
    j->ok = 1;
    for (it = 0; it < 3 && j->ok; it++) {
        fc_encode_options o;
        size_t size;
        uint8_t *c;
        decoded d;
        enc_opts(&o, 2, FC_MODE_AUTO);
        if (tu_encode(j->w.t, NT, &o, &c, &size, NULL) != FC_OK) {
            j->ok = 0;
            break;
        }
        if (size != j->ref_size || memcmp(c, j->ref, size) != 0) j->ok = 0;
        if (decode_rc(&j->w, c, size, 2, &d) != FC_OK || !same_decoded(&j->w, &j->dref, &d))
            j->ok = 0;
        free_decoded(&d);
        free(c);
    }
    return NULL;
}

static void test_concurrent_calls(void)
{
    enum { NJ = 4 };
    job jobs[NJ];
    pthread_t tid[NJ];
    int i;
    for (i = 0; i < NJ; i++) {
        fc_encode_options o;
        make_workload(&jobs[i].w, 100 + (uint64_t)i);
        enc_opts(&o, 1, FC_MODE_AUTO);
        jobs[i].ref = encode(&jobs[i].w, &o, &jobs[i].ref_size, NULL);
        decode(&jobs[i].w, jobs[i].ref, jobs[i].ref_size, 1, &jobs[i].dref);
    }
    for (i = 0; i < NJ; i++) TU_CHECK(pthread_create(&tid[i], NULL, worker, &jobs[i]) == 0);
    for (i = 0; i < NJ; i++) TU_CHECK(pthread_join(tid[i], NULL) == 0);
    for (i = 0; i < NJ; i++) {
        TU_CHECKF(jobs[i].ok, "application thread %d got different results", i);
        free(jobs[i].ref);
        free_decoded(&jobs[i].dref);
        free_workload(&jobs[i].w);
    }
}

int main(void)
{
    test_thread_counts();
    test_concurrent_calls();
    return tu_finish("test_threads");
}
