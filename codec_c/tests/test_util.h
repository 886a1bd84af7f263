/*
 * test_util.h - the tiny shared harness of the C tests (header-only).
 *
 *   TU_CHECK(cond)            fails with file:line and the expression
 *   TU_CHECK_EQ(a, b)         integers, prints both values
 *   TU_CHECK_RC(expr, want)   an fc_result, prints both names
 *   TU_KNOWN_BUG(cond, text)  a reported, not yet fixed library bug: prints
 *                             "KNOWN BUG" while cond is false; fails once
 *                             cond holds (remove the marker then)
 *   tu_finish(name)           prints the summary; the return value of main
 *
 * Guarded buffers: tu_guarded_alloc(n) returns n bytes that end exactly at a
 * PROT_NONE page, so reading or writing one byte past the end traps with
 * SIGSEGV (also under ASan, which does not track mmap'ed memory).  Every
 * container the tests hand to the decoder lives in such a buffer.
 *
 * Random data: a splitmix64 generator and a Laplace sampler built only from
 * + - * / and frexp/ldexp (no libm transcendental), so the inputs of the
 * golden and size tests are the same bits on every platform.
 *
 * Include this header first: it sets the feature-test macro for mmap.
 *
 * A test fails at the first failed check (exit status 1): the first failure
 * is the informative one, and later checks often depend on earlier ones.
 */
#ifndef FC_TEST_UTIL_H
#define FC_TEST_UTIL_H

#define _DEFAULT_SOURCE 1
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fedcodec.h"

/* ------------------------------------------------------------------ */
/* Checks                                                               */
/* ------------------------------------------------------------------ */

static unsigned long tu_checks;
static unsigned long tu_known_bugs;

static inline void tu_fail(const char *file, int line, const char *what, const char *detail)
{
    fprintf(stderr, "%s:%d: check failed: %s%s%s\n", file, line, what, detail[0] ? "  -- " : "",
            detail);
    fflush(stderr);
    exit(1);
}

#define TU_CHECK(cond)                                          \
    do {                                                        \
        tu_checks++;                                            \
        if (!(cond)) tu_fail(__FILE__, __LINE__, #cond, "");    \
    } while (0)

/* cond with a printf-style explanation. */
#define TU_CHECKF(cond, ...)                                    \
    do {                                                        \
        tu_checks++;                                            \
        if (!(cond)) {                                          \
            char tu_msg_[4096];                                 \
            snprintf(tu_msg_, sizeof tu_msg_, __VA_ARGS__);     \
            tu_fail(__FILE__, __LINE__, #cond, tu_msg_);        \
        }                                                       \
    } while (0)

#define TU_CHECK_EQ(a, b)                                                              \
    do {                                                                               \
        long long tu_a_ = (long long)(a), tu_b_ = (long long)(b);                      \
        tu_checks++;                                                                   \
        if (tu_a_ != tu_b_) {                                                          \
            char tu_msg_[128];                                                         \
            snprintf(tu_msg_, sizeof tu_msg_, "%lld != %lld", tu_a_, tu_b_);           \
            tu_fail(__FILE__, __LINE__, #a " == " #b, tu_msg_);                        \
        }                                                                              \
    } while (0)

#define TU_CHECK_RC(expr, want)                                                        \
    do {                                                                               \
        int tu_got_ = (int)(expr), tu_want_ = (int)(want);                             \
        tu_checks++;                                                                   \
        if (tu_got_ != tu_want_) {                                                     \
            char tu_msg_[160];                                                         \
            snprintf(tu_msg_, sizeof tu_msg_, "got %s, want %s", fc_result_name(tu_got_), \
                     fc_result_name(tu_want_));                                        \
            tu_fail(__FILE__, __LINE__, #expr, tu_msg_);                               \
        }                                                                              \
    } while (0)

#define TU_KNOWN_BUG(cond, text)                                                        \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            tu_known_bugs++;                                                            \
            fprintf(stderr, "%s:%d: KNOWN BUG (reported, not fixed yet): %s\n", __FILE__, \
                    __LINE__, text);                                                    \
        } else {                                                                        \
            tu_fail(__FILE__, __LINE__, #cond,                                          \
                    "a known bug no longer reproduces: turn TU_KNOWN_BUG into TU_CHECK"); \
        }                                                                               \
    } while (0)

static inline int tu_finish(const char *name)
{
    printf("%s: %lu checks passed", name, tu_checks);
    if (tu_known_bugs) printf(", %lu KNOWN BUG(S) reported above", tu_known_bugs);
    printf("\n");
    return 0;
}

/* ------------------------------------------------------------------ */
/* Guarded buffers                                                      */
/* ------------------------------------------------------------------ */

typedef struct tu_guard_hdr {
    void *base;
    size_t map_size;
} tu_guard_hdr;

static inline size_t tu_page(void)
{
    long p = sysconf(_SC_PAGESIZE);
    return p > 0 ? (size_t)p : 4096u;
}

/* n bytes ending at an inaccessible page.  The bytes before the buffer
 * hold its bookkeeping (tu_guarded_free finds it there). */
static inline void *tu_guarded_alloc(size_t n)
{
    size_t page = tu_page();
    size_t data = (n + sizeof(tu_guard_hdr) + page - 1) / page * page;
    size_t total = data + page;
    uint8_t *base, *p;
    tu_guard_hdr h;
    base = (uint8_t *)mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == (uint8_t *)MAP_FAILED) {
        perror("mmap");
        exit(2);
    }
    if (mprotect(base + data, page, PROT_NONE) != 0) {
        perror("mprotect");
        exit(2);
    }
    p = base + data - n;
    h.base = base;
    h.map_size = total;
    memcpy(p - sizeof(h), &h, sizeof(h));
    return p;
}

static inline void tu_guarded_free(void *ptr)
{
    tu_guard_hdr h;
    if (!ptr) return;
    memcpy(&h, (uint8_t *)ptr - sizeof(h), sizeof(h));
    munmap(h.base, h.map_size);
}

static inline uint8_t *tu_guarded_copy(const void *src, size_t n)
{
    uint8_t *p = (uint8_t *)tu_guarded_alloc(n);
    if (n) memcpy(p, src, n);
    return p;
}

/* ------------------------------------------------------------------ */
/* Deterministic random data                                            */
/* ------------------------------------------------------------------ */

typedef struct tu_rng {
    uint64_t s;
} tu_rng;

static inline uint64_t tu_next(tu_rng *r)
{
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline tu_rng tu_seed(uint64_t seed)
{
    tu_rng r;
    r.s = seed * 0x2545F4914F6CDD1Dull + 1u;
    return r;
}

/* Uniform in [0, n). */
static inline uint64_t tu_below(tu_rng *r, uint64_t n)
{
    return n ? tu_next(r) % n : 0;
}

/* Uniform in (0, 1): 53 random bits, never 0. */
static inline double tu_unit(tu_rng *r)
{
    return ((double)(tu_next(r) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

/* ln(x) for x > 0 with only IEEE basic operations: x = m 2^e with m in
 * [sqrt(1/2), sqrt(2)), ln m = 2 atanh(s), s = (m-1)/(m+1), |s| < 0.172.
 * Accurate to a few ulp; what matters is that it is the same everywhere. */
static inline double tu_log(double x)
{
    int e;
    double m = frexp(x, &e), s, s2, term, sum;
    int k;
    if (m < 0.70710678118654752) {
        m *= 2.0;
        e--;
    }
    s = (m - 1.0) / (m + 1.0);
    s2 = s * s;
    term = s;
    sum = 0.0;
    for (k = 1; k < 40; k += 2) {
        sum += term / (double)k;
        term *= s2;
    }
    return 2.0 * sum + (double)e * 0.69314718055994531;
}

/* Laplace(0, b) sample. */
static inline double tu_laplace(tu_rng *r, double b)
{
    double u = tu_unit(r) - 0.5;
    double a = u < 0 ? -u : u;
    double mag = -b * tu_log(1.0 - 2.0 * a + 1e-300);
    return u < 0 ? -mag : mag;
}

/* n Laplace(0, b) float32 values. */
static inline void tu_fill_laplace(tu_rng *r, float *x, size_t n, double b)
{
    size_t i;
    for (i = 0; i < n; i++) x[i] = (float)tu_laplace(r, b);
}

/* Rows in which every value has the same magnitude (random signs): the row
 * magnitude is b * (1/4 + |Laplace(0, 1)|), e.g. an embedding table's rows
 * of rarely seen tokens under AdamW (the update is about lr * sign). */
static inline void tu_fill_const_rows(tu_rng *r, float *x, size_t rows, size_t cols, double b)
{
    size_t i, j;
    for (i = 0; i < rows; i++) {
        double l = tu_laplace(r, 1.0);
        float m = (float)(b * (0.25 + (l < 0 ? -l : l)));
        for (j = 0; j < cols; j++) x[i * cols + j] = tu_below(r, 2) ? m : -m;
    }
}

/* A low-rank update with noise: x = sum of `rank` outer products of
 * Laplacian vectors (scale b) plus i.i.d. Laplacian noise of scale b / 2:
 * what a few gradient steps of a dense layer look like. */
static inline void tu_fill_lowrank(tu_rng *r, float *x, size_t rows, size_t cols, size_t rank, double b)
{
    size_t i, j, k;
    double *u = (double *)malloc(sizeof(double) * rows * rank);
    double *v = (double *)malloc(sizeof(double) * cols * rank);
    if (!u || !v) abort();
    for (i = 0; i < rows * rank; i++) u[i] = tu_laplace(r, 1.0);
    for (j = 0; j < cols * rank; j++) v[j] = tu_laplace(r, 1.0);
    for (i = 0; i < rows; i++) {
        for (j = 0; j < cols; j++) {
            double y = tu_laplace(r, 0.5);
            for (k = 0; k < rank; k++) y += u[i * rank + k] * v[j * rank + k];
            x[i * cols + j] = (float)(b * y);
        }
    }
    free(u);
    free(v);
}

/* Keep the (at most) `keep` largest magnitudes of x and zero the rest: a
 * top-k sparsified update. */
static inline void tu_topk(float *x, size_t n, size_t keep)
{
    size_t i, lo_count;
    float lo = 0.0f, hi = 0.0f, thr;
    int it;
    if (keep >= n) return;
    for (i = 0; i < n; i++)
        if (fabsf(x[i]) > hi) hi = fabsf(x[i]);
    /* Bisection on the threshold: count(|x| > thr) <= keep. */
    for (it = 0; it < 60; it++) {
        float mid = lo + (hi - lo) * 0.5f;
        if (mid == lo || mid == hi) break;
        lo_count = 0;
        for (i = 0; i < n; i++) lo_count += fabsf(x[i]) > mid;
        if (lo_count > keep) lo = mid;
        else hi = mid;
    }
    thr = hi;
    for (i = 0; i < n; i++)
        if (!(fabsf(x[i]) > thr)) x[i] = 0.0f;
}

/* ------------------------------------------------------------------ */
/* Small helpers around the public API                                  */
/* ------------------------------------------------------------------ */

static inline fc_tensor tu_tensor(uint32_t index, uint32_t ndim, const uint64_t *shape)
{
    fc_tensor t;
    memset(&t, 0, sizeof(t));
    t.index = index;
    t.ndim = ndim;
    if (ndim) memcpy(t.shape, shape, sizeof(uint64_t) * ndim);
    return t;
}

static inline uint64_t tu_numel(const fc_tensor *t)
{
    uint64_t n = 1;
    uint32_t i;
    for (i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

/* Encode into a malloc'ed buffer (sized with fc_encode_bound); returns the
 * result code, *out / *size on success. */
static inline int tu_encode(const fc_tensor *t, size_t count, const fc_encode_options *o, uint8_t **out,
                     size_t *size, fc_tensor_stats *stats)
{
    size_t cap = fc_encode_bound(t, count);
    uint8_t *buf = (uint8_t *)malloc(cap ? cap : 1);
    int rc;
    *out = NULL;
    *size = 0;
    if (!buf) return FC_ERR_NOMEM;
    rc = fc_encode(t, count, o, buf, cap, size, stats, NULL);
    if (rc != FC_OK) {
        free(buf);
        return rc;
    }
    *out = buf;
    return rc;
}

/* Split a container into guarded copies of its parts (fc_split, asking for
 * the sizes first).  Returns the result code; on FC_OK *parts (n guarded
 * buffers, free with tu_free_parts) and *sizes (malloc'ed) are set. */
static inline int tu_split(const uint8_t *c, size_t size, const fc_decode_options *o,
                           uint8_t ***parts, size_t **sizes, size_t *n)
{
    size_t total = 0, count = 0, i, pos = 0;
    uint8_t *all;
    int rc;
    *parts = NULL;
    *sizes = NULL;
    *n = 0;
    rc = fc_split(c, size, o, NULL, 0, &total, NULL, 0, &count);
    if (rc != FC_ERR_BUFFER_TOO_SMALL) return rc; /* FC_OK: no tensors, no parts */
    all = (uint8_t *)malloc(total ? total : 1);
    *sizes = (size_t *)malloc(sizeof(size_t) * (count ? count : 1));
    *parts = (uint8_t **)calloc(count ? count : 1, sizeof(uint8_t *));
    if (!all || !*sizes || !*parts) abort();
    rc = fc_split(c, size, o, all, total, &total, *sizes, count, n);
    if (rc == FC_OK) {
        for (i = 0; i < *n; i++) {
            (*parts)[i] = tu_guarded_copy(all + pos, (*sizes)[i]);
            pos += (*sizes)[i];
        }
        if (pos != total) rc = FC_ERR_INVALID_ARGUMENT;
    }
    free(all);
    return rc;
}

static inline void tu_free_parts(uint8_t **parts, size_t *sizes, size_t n)
{
    size_t i;
    if (parts)
        for (i = 0; i < n; i++) tu_guarded_free(parts[i]);
    free(parts);
    free(sizes);
}

/* Join parts into a guarded buffer of exactly the joined size (fc_join with
 * the documented capacity).  Returns the result code; *bad the part at
 * fault. */
static inline int tu_join(uint8_t *const *parts, const size_t *sizes, size_t n,
                          const fc_decode_options *o, uint8_t **out, size_t *out_size, size_t *bad)
{
    size_t cap = FC_JOIN_OVERHEAD, i;
    uint8_t *buf;
    int rc;
    *out = NULL;
    *out_size = 0;
    for (i = 0; i < n; i++) cap += sizes[i];
    buf = (uint8_t *)malloc(cap);
    if (!buf) abort();
    rc = fc_join((const uint8_t *const *)parts, sizes, n, o, buf, cap, out_size, bad);
    if (rc == FC_OK) *out = tu_guarded_copy(buf, *out_size);
    free(buf);
    return rc;
}

/* Read a whole file; NULL if it cannot be read. */
static inline uint8_t *tu_read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    size_t cap = 0, n = 0;
    if (!f) return NULL;
    for (;;) {
        size_t got;
        if (n == cap) {
            uint8_t *p;
            cap = cap ? cap * 2 : 4096;
            p = (uint8_t *)realloc(buf, cap);
            if (!p) {
                free(buf);
                fclose(f);
                return NULL;
            }
            buf = p;
        }
        got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    fclose(f);
    *size = n;
    return buf;
}

static inline int tu_write_file(const char *path, const void *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    int ok;
    if (!f) return 0;
    ok = fwrite(data, 1, size, f) == size;
    ok = (fclose(f) == 0) && ok;
    return ok;
}

#endif /* FC_TEST_UTIL_H */
