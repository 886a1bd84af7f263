/*
 * fuzz_roundtrip.c - the encoder's fuzz target (libFuzzer entry point; also
 * driven by replay.c without libFuzzer, `make fuzz-replay`).
 *
 * The input bytes are not a container: they choose encoder options and up
 * to three small tensors (integer levels, or float values for any
 * quantizer), which are encoded, inspected and decoded.  Bytes past the end
 * read as zero, so every input is valid.  Layout (one byte each unless
 * noted):
 *   flags     bits 0-1 quantizer (values), bit 2 values (else levels),
 *             bit 3 two threads, bit 4 importance, bit 5 raw float32 bits,
 *             bits 6-7 tensor count - 1 (at most 3)
 *   coding    mode = (b & 3) - 1, max_gtx = 1 + (b >> 2 & 7), window set b >> 5
 *   slicing   slice_elems = 1 + 4 * b
 *   lambda    b / 64 (0 for the dither), S: the next byte
 *   step      exponent byte, mantissa byte (0 0: derive the step from S for
 *             values; levels always use the given step)
 *   scale     values: 2^(b - 140)
 *   per tensor: ndim = b % 4 (bit 7: with a reference tensor, derived
 *             from the elements; in the first tensor's byte, bit 6:
 *             FC_REFERENCE_ALWAYS, else FC_REFERENCE_AUTO, and bits 4-5
 *             transpose: 0 as given, 1 transposed, 2 auto, 3 axes 0
 *             and 1 swapped), then
 *             each dim b % 11, then its elements
 *             (levels: a class byte, and 4 bytes for a large level;
 *             values: 2 bytes, or 4 raw bytes; importance: 1 byte each)
 *
 * The properties, checked with abort():
 *   - levels: the encoder refuses (FC_ERR_LEVEL_OVERFLOW) exactly when some
 *     level's reconstruction float32(level) * step is not finite; else the
 *     container decodes to exactly these levels;
 *   - values: the encoder returns FC_OK, FC_ERR_NONFINITE exactly when an
 *     input is not finite, or FC_ERR_LEVEL_OVERFLOW only at the edge of the
 *     level or float32 range; on FC_OK the decoded values equal the
 *     encoder's reconstruction bit for bit (the RD quantizer's recon ==
 *     decode), are finite, and equal float32(level) * step (minus the
 *     dither; in ROWFINE rows of uniform tensors a value of that level,
 *     FORMAT.md §8.1);
 *   - the container fits fc_encode_bound(), inspect reports the shapes,
 *     steps, quantizers and references (their digests) encoded (with
 *     FC_REFERENCE_AUTO a tensor given a reference may be coded without;
 *     when the levels do not depend on it, integer levels or rounding, the
 *     container is then no larger than with every reference forced and than
 *     without references), a tensor coded with a reference does not decode
 *     without it, a reference given for a tensor coded without is ignored,
 *     the stats count the nonzero levels, an
 *     f64 accumulator receives weight * value, encoding again with
 *     another thread count gives the same bytes, and the container split by
 *     tensor and joined back (fc_split, fc_join) is the same bytes.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fedcodec.h"
#include "fuzz_rowfine.h"

#define MAX_T 3
#define MAX_DIM 10

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(int line)
{
    fprintf(stderr, "fuzz_roundtrip.c:%d: property violated\n", line);
    abort();
}

#define check(cond) ((cond) ? (void)0 : fail(__LINE__))

typedef struct reader {
    const uint8_t *p;
    size_t n, i;
} reader;

static unsigned rd8(reader *r)
{
    return r->i < r->n ? r->p[r->i++] : 0u;
}

static uint32_t rd32(reader *r)
{
    uint32_t v = rd8(r);
    v |= (uint32_t)rd8(r) << 8;
    v |= (uint32_t)rd8(r) << 16;
    return v | (uint32_t)rd8(r) << 24;
}

typedef struct tensor_in {
    fc_tensor t;
    int32_t *levels;
    float *values, *importance, *recon, *ref;
    int32_t *dec_levels;
    float *dec_values;
    double *acc;
    uint64_t numel;
    int with_ref;
} tensor_in;

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    check(p != NULL);
    return p;
}

/* A level from the input: mostly 0 and small, sometimes any magnitude. */
static int32_t read_level(reader *r)
{
    unsigned c = rd8(r);
    int32_t m;
    switch (c & 3u) {
    case 0:
    case 1:
        return 0;
    case 2:
        m = (int32_t)((c >> 3) & 15u) + 1;
        break;
    default:
        m = (int32_t)((rd32(r) >> ((c >> 3) & 31u)) % (uint32_t)FC_MAX_LEVEL) + 1;
        break;
    }
    return (c & 4u) ? -m : m;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    reader r = {data, size, 0};
    tensor_in in[MAX_T];
    fc_tensor tensors[MAX_T];
    fc_tensor_stats stats[MAX_T];
    fc_tensor_info info[MAX_T];
    fc_decode_target tg[MAX_T];
    fc_encode_options o;
    unsigned flags, coding, quant, e, mant;
    int values_mode, raw, nonfinite[MAX_T] = {0}, overflow[MAX_T] = {0};
    size_t count, i, cap, csize = 0, csize2 = 0, n, bad = SIZE_MAX;
    uint64_t k;
    double step = 0.0, scale, abs_max[MAX_T] = {0};
    uint8_t *buf, *buf2;
    int rc;

    memset(in, 0, sizeof in);
    flags = rd8(&r);
    coding = rd8(&r);
    values_mode = (flags & 4u) != 0;
    raw = values_mode && (flags & 32u);
    quant = values_mode ? (flags & 3u) : FC_QUANT_UNIFORM;
    fc_encode_options_init(&o);
    o.threads = 1;
    o.mode = (int32_t)(coding & 3u) - 1;
    o.max_gtx = 1u + ((coding >> 2) & 7u);
    o.window_set = coding >> 5;
    o.slice_elems = 1u + 4u * rd8(&r);
    o.lambda = rd8(&r) / 64.0;
    o.S = rd8(&r);
    o.quantizer = (int32_t)quant;
    o.dither_seed = ((uint64_t)flags << 32) ^ 0x9E3779B97F4A7C15u;
    if (quant == FC_QUANT_DITHER) o.lambda = 0.0;
    e = rd8(&r);
    mant = rd8(&r);
    if (e || mant || !values_mode) {
        /* a normal float32: 2^-126 .. 2^127 */
        int ex = (int)(e % 254u) - 126;
        step = (double)(float)ldexp(1.0 + mant / 256.0, ex);
    }
    scale = ldexp(1.0, (int)rd8(&r) - 140);
    count = 1u + ((flags >> 6) % MAX_T);

    for (i = 0; i < count; i++) {
        tensor_in *t = &in[i];
        uint32_t d;
        memset(&t->t, 0, sizeof(t->t));
        t->t.index = (uint32_t)(i * 2 + (flags & 1u));
        {
            uint8_t b = rd8(&r);
            t->t.ndim = b % 4u;
            t->with_ref = (b & 0x80u) != 0;
            if (i == 0) {
                o.reference = (b & 0x40u) ? FC_REFERENCE_ALWAYS : FC_REFERENCE_AUTO;
                static const int32_t views[4] = {0, 1, FC_TRANSPOSE_AUTO, FC_TRANSPOSE_SWAP};
                o.transpose = views[b >> 4 & 3u];
            }
        }
        t->numel = 1;
        for (d = 0; d < t->t.ndim; d++) {
            t->t.shape[d] = rd8(&r) % (MAX_DIM + 1u);
            t->numel *= t->t.shape[d];
        }
        n = (size_t)t->numel;
        t->t.step = step;
        t->recon = (float *)xcalloc(n, sizeof(float));
        t->t.recon = t->recon;
        if (values_mode) {
            t->values = (float *)xcalloc(n, sizeof(float));
            for (k = 0; k < t->numel; k++) {
                float v;
                if (raw) {
                    uint32_t bits = rd32(&r);
                    memcpy(&v, &bits, 4);
                } else {
                    v = (float)((double)(int16_t)(rd8(&r) | rd8(&r) << 8) * scale);
                }
                t->values[k] = v;
                if (!isfinite(v)) nonfinite[i] = 1;
                else if (fabs((double)v) > abs_max[i]) abs_max[i] = fabs((double)v);
            }
            t->t.values = t->values;
            if (flags & 16u) {
                t->importance = (float *)xcalloc(n, sizeof(float));
                for (k = 0; k < t->numel; k++) t->importance[k] = (float)(rd8(&r) % 5u);
                if (n) t->importance[0] += 1.0f; /* never all zero */
                t->t.importance = t->importance;
            }
        } else {
            t->levels = (int32_t *)xcalloc(n, sizeof(int32_t));
            for (k = 0; k < t->numel; k++) {
                int32_t l = read_level(&r);
                t->levels[k] = l;
                if (!isfinite((float)l * (float)step)) overflow[i] = 1;
            }
            t->t.levels = t->levels;
        }
        if (t->with_ref) {
            /* correlated with the input: a scaled copy, finite */
            t->ref = (float *)xcalloc(n, sizeof(float));
            for (k = 0; k < t->numel; k++) {
                double v = values_mode ? (double)t->values[k] : (double)t->levels[k] * step;
                t->ref[k] = isfinite(v) && fabs(v) < 1e30 ? (float)(0.75 * v) : 1.0f;
            }
            t->t.reference = t->ref;
        }
        tensors[i] = t->t;
    }

    cap = fc_encode_bound(tensors, count);
    check(cap > 0);
    buf = (uint8_t *)xcalloc(cap, 1);
    rc = fc_encode(tensors, count, &o, buf, cap, &csize, stats, &bad);
    /* The first tensor at fault decides the result (bad names it). */
    for (i = 0; i < count; i++) {
        double a = abs_max[i];
        if (values_mode && !overflow[i])
            /* refused only at the edge of the level range or of float32 (a
             * derived step is at most max |value|, the levels stay small) */
            overflow[i] = (step > 0.0 && a / step + 8.0 >= (double)FC_MAX_LEVEL) ||
                          a + 8.0 * (step > 0.0 ? step : a) >= 3.4e38;
        if (i == bad) break;
        /* levels: the encoder refuses exactly the levels a decoder would
         * refuse (a reconstruction beyond float32) */
        check(!nonfinite[i] && (values_mode || !overflow[i]));
    }
    if (rc == FC_OK) {
        check(bad == SIZE_MAX);
    } else {
        check(bad < count);
        if (nonfinite[bad]) check(rc == FC_ERR_NONFINITE);
        else check(rc == FC_ERR_LEVEL_OVERFLOW && overflow[bad]);
        goto out;
    }
    check(csize <= cap);

    /* the same bytes with another thread count */
    if (flags & 8u) {
        o.threads = 2;
        buf2 = (uint8_t *)xcalloc(cap, 1);
        check(fc_encode(tensors, count, &o, buf2, cap, &csize2, NULL, NULL) == FC_OK);
        check(csize2 == csize && memcmp(buf, buf2, csize) == 0);
        free(buf2);
    }

    /* the same levels with and without references: never more bytes than
     * with every reference forced, or than without references */
    if (o.reference == FC_REFERENCE_AUTO &&
        (!values_mode || (quant == FC_QUANT_UNIFORM && o.lambda == 0.0) || quant == FC_QUANT_DITHER)) {
        fc_tensor plain[MAX_T];
        size_t s_forced = 0, s_plain = 0;
        buf2 = (uint8_t *)xcalloc(cap, 1);
        o.reference = FC_REFERENCE_ALWAYS;
        check(fc_encode(tensors, count, &o, buf2, cap, &s_forced, NULL, NULL) == FC_OK);
        o.reference = FC_REFERENCE_AUTO;
        for (i = 0; i < count; i++) {
            plain[i] = tensors[i];
            plain[i].reference = NULL;
            plain[i].recon = NULL;
        }
        check(fc_encode(plain, count, &o, buf2, cap, &s_plain, NULL, NULL) == FC_OK);
        check(csize <= s_forced && csize <= s_plain);
        free(buf2);
    }

    check(fc_inspect(buf, csize, NULL, info, MAX_T, &n) == FC_OK && n == count);
    /* split by tensor and joined back: the same bytes */
    {
        size_t total = 0, np = 0, sizes[MAX_T], jsize = 0, pos = 0, k;
        const uint8_t *parts[MAX_T];
        uint8_t *all = (uint8_t *)xcalloc(csize + FC_SPLIT_OVERHEAD * MAX_T, 1);
        uint8_t *joined = (uint8_t *)xcalloc(csize + FC_SPLIT_OVERHEAD * MAX_T + FC_JOIN_OVERHEAD, 1);
        check(fc_split(buf, csize, NULL, all, csize + FC_SPLIT_OVERHEAD * MAX_T, &total, sizes, MAX_T,
                       &np) == FC_OK && np == count);
        for (k = 0; k < np; k++) {
            parts[k] = all + pos;
            pos += sizes[k];
        }
        check(fc_join(parts, sizes, np, NULL, joined, total + FC_JOIN_OVERHEAD, &jsize, NULL) == FC_OK);
        check(jsize == csize && memcmp(joined, buf, csize) == 0);
        free(all);
        free(joined);
    }
    memset(tg, 0, sizeof tg);
    for (i = 0; i < count; i++) {
        tensor_in *t = &in[i];
        check(info[i].index == t->t.index && info[i].ndim == t->t.ndim &&
              info[i].numel == t->numel);
        check(memcmp(info[i].shape, t->t.shape, sizeof(uint64_t) * t->t.ndim) == 0);
        check(info[i].step == stats[i].step);
        check(info[i].quantizer == (values_mode ? quant : FC_QUANT_UNIFORM));
        if (o.reference == FC_REFERENCE_ALWAYS)
            check(info[i].reference == (t->with_ref && t->numel > 0));
        else
            check(!info[i].reference || (t->with_ref && t->numel > 0));
        if (info[i].reference) {
            uint32_t digest;
            check(fc_reference_digest(t->ref, t->numel, info[i].step, &digest) == FC_OK);
            check(digest == info[i].reference_digest);
        }
        tg[i].reference = t->ref; /* ignored for a tensor coded without */
        t->dec_levels = (int32_t *)xcalloc((size_t)t->numel, sizeof(int32_t));
        t->dec_values = (float *)xcalloc((size_t)t->numel, sizeof(float));
        t->acc = (double *)xcalloc((size_t)t->numel, sizeof(double));
        tg[i].levels = t->dec_levels;
        tg[i].values = t->dec_values;
        tg[i].acc = t->acc;
        tg[i].acc_dtype = FC_ACC_F64;
        tg[i].weight = -0.5;
    }
    for (i = 0; i < count; i++) {
        /* without its reference a tensor coded with one is refused */
        if (info[i].reference) {
            tg[i].reference = NULL;
            check(fc_decode(buf, csize, NULL, tg, count) == FC_ERR_MISMATCH);
            tg[i].reference = in[i].ref;
        }
    }
    check(fc_decode(buf, csize, NULL, tg, count) == FC_OK);
    for (i = 0; i < count; i++) {
        tensor_in *t = &in[i];
        float s = (float)info[i].step, u = 0.0f;
        uint64_t nz = 0;
        for (k = 0; k < t->numel; k++) {
            int32_t l = t->dec_levels[k];
            float v = (float)l * s;
            if (info[i].quantizer == FC_QUANT_DITHER) {
                check(fc_dither(info[i].dither_seed, info[i].index, k, 1, info[i].step, &u) ==
                      FC_OK);
                v = v - u;
            }
            nz += l != 0;
            if (!values_mode) check(l == t->levels[k]);
            check(isfinite(t->dec_values[k]));
            check(memcmp(&v, &t->dec_values[k], 4) == 0 ||
                  (values_mode && info[i].quantizer == FC_QUANT_UNIFORM &&
                   rowfine_value_ok(l, t->dec_values[k], s)));
            check(memcmp(&t->recon[k], &t->dec_values[k], 4) == 0);
            check(t->acc[k] == (l || info[i].quantizer == FC_QUANT_DITHER
                                    ? -0.5 * (double)t->dec_values[k]
                                    : 0.0));
        }
        check(stats[i].nonzeros == nz);
    }
out:
    free(buf);
    for (i = 0; i < count; i++) {
        free(in[i].levels);
        free(in[i].values);
        free(in[i].importance);
        free(in[i].recon);
        free(in[i].ref);
        free(in[i].dec_levels);
        free(in[i].dec_values);
        free(in[i].acc);
    }
    return 0;
}
