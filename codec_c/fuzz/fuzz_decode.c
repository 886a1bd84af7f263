/*
 * fuzz_decode.c - the decoder's fuzz target (libFuzzer entry point; also
 * driven by replay.c without libFuzzer).
 *
 * Every input is tried twice: as it is, and with its last 4 bytes replaced
 * by the CRC-32 of the rest, so mutations get past the checksum and reach
 * the header parser and the payload decoders.
 *
 * For each: fc_inspect with small limits; if the header is accepted,
 * fc_decode into exactly-sized heap targets (levels, values and an
 * accumulator: f32 and f64 alternate by tensor).  The properties, checked
 * with abort() so the fuzzer reports them like a crash:
 *   - inspect and decode agree on a rejected header; expecting the
 *     inspected shapes passes, expecting another count or size is
 *     FC_ERR_MISMATCH;
 *   - on success: every value is finite (a container whose values would
 *     overflow float32 is corrupt), value = (float)level * step bit for bit
 *     (or a ROWFINE row's value of that level, FORMAT.md §8.1)
 *     (dithered tensors: minus fc_dither(), FC_QUANT_DITHER; trellis
 *     tensors: the levels are reconstruction indices), the accumulator equals
 *     its start + weight * value (for value != 0; dithered tensors: every
 *     element), every level is within FC_MAX_LEVEL, and re-encoding the
 *     levels gives a container that decodes to the same levels;
 *   - split by tensor and joined back (fc_split, fc_join): each part holds
 *     its tensor as the whole describes it and decodes to the same levels;
 *     the join is no larger than the input and splits into the same parts;
 *   - compact containers (FORMAT.md §2-3): an accepted container whose
 *     indices are positions converts (fc_convert) to a compact one that
 *     decodes to the same levels with the inspected shapes, and back;
 *     an input with the COMPACT flag is read with the fixed shape list
 *     FUZZ_SHAPES (the seeds fuzz/corpus/decode/compact_* use it);
 *   - on failure: every accumulator is unchanged.
 * Memory errors are the sanitizers' job (build with ASan + UBSan).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fedcodec.h"
#include "fuzz_rowfine.h"

#define MAX_T 16

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok)
{
    if (!ok) abort();
}

/* Re-encode decoded levels and decode them again. */
static void reencode(const fc_tensor_info *info, int32_t *const *levels, size_t count)
{
    fc_tensor t[MAX_T];
    fc_decode_target tg[MAX_T];
    int32_t *again[MAX_T];
    fc_encode_options o;
    size_t i, cap, size;
    uint8_t *buf;
    memset(t, 0, sizeof t);
    memset(tg, 0, sizeof tg);
    for (i = 0; i < count; i++) {
        t[i].index = info[i].index;
        t[i].ndim = info[i].ndim;
        memcpy(t[i].shape, info[i].shape, sizeof(t[i].shape));
        t[i].levels = levels[i];
        t[i].step = info[i].step;
        again[i] = (int32_t *)malloc(sizeof(int32_t) * (info[i].numel ? info[i].numel : 1));
        check(again[i] != NULL);
        tg[i].levels = again[i];
    }
    fc_encode_options_init(&o);
    o.threads = 1;
    o.max_gtx = info[0].max_gtx;
    cap = fc_encode_bound(t, count);
    check(cap > 0);
    buf = (uint8_t *)malloc(cap);
    check(buf != NULL);
    check(fc_encode(t, count, &o, buf, cap, &size, NULL, NULL) == FC_OK);
    check(fc_decode(buf, size, NULL, tg, count) == FC_OK);
    for (i = 0; i < count; i++) {
        check(memcmp(again[i], levels[i], sizeof(int32_t) * info[i].numel) == 0);
        free(again[i]);
    }
    free(buf);
}

/* Split by tensor and join back (fc_split, fc_join) an accepted container:
 * every part holds one tensor described as in the whole and (when the whole
 * decoded) decoding to the same levels; the join is no larger than the
 * input (headers are written the encoder's way, which never grows them) and
 * splits again into the same parts. */
static void split_join(const uint8_t *data, size_t size, const fc_decode_options *o,
                       const fc_tensor_info *info, int32_t *const *levels, size_t count,
                       int decoded)
{
    size_t total = 0, n = 0, i, pos, jsize = 0, bad = 0, total2 = 0, n2 = 0;
    size_t sizes[MAX_T], sizes2[MAX_T];
    const uint8_t *parts[MAX_T];
    uint8_t *all, *joined, *again;
    check(fc_split(data, size, o, NULL, 0, &total, NULL, 0, &n) ==
          (count ? FC_ERR_BUFFER_TOO_SMALL : FC_OK));
    check(n == count && total <= size + FC_SPLIT_OVERHEAD * count);
    all = (uint8_t *)malloc(total ? total : 1);
    check(all != NULL);
    check(fc_split(data, size, o, all, total, &total, sizes, MAX_T, &n) == FC_OK && n == count);
    for (i = 0, pos = 0; i < n; i++) {
        fc_tensor_info one;
        size_t c1 = 0;
        parts[i] = all + pos;
        pos += sizes[i];
        check(fc_inspect(parts[i], sizes[i], o, &one, 1, &c1) == FC_OK && c1 == 1);
        check(one.index == info[i].index && one.numel == info[i].numel &&
              one.step == info[i].step && one.slices == info[i].slices &&
              one.quantizer == info[i].quantizer && one.dither_seed == info[i].dither_seed &&
              one.reference == info[i].reference &&
              one.reference_digest == info[i].reference_digest);
        if (decoded) {
            fc_decode_target tg;
            memset(&tg, 0, sizeof tg);
            tg.levels = (int32_t *)malloc(sizeof(int32_t) * (one.numel ? one.numel : 1));
            check(tg.levels != NULL);
            check(fc_decode(parts[i], sizes[i], o, &tg, 1) == FC_OK);
            check(memcmp(tg.levels, levels[i], sizeof(int32_t) * one.numel) == 0);
            free(tg.levels);
        }
    }
    check(pos == total);
    joined = (uint8_t *)malloc(total + FC_JOIN_OVERHEAD);
    check(joined != NULL);
    check(fc_join(parts, sizes, n, o, joined, total + FC_JOIN_OVERHEAD, &jsize, &bad) == FC_OK);
    check(jsize <= size);
    again = (uint8_t *)malloc(total ? total : 1);
    check(again != NULL);
    check(fc_split(joined, jsize, o, again, total, &total2, sizes2, MAX_T, &n2) == FC_OK);
    check(n2 == n && total2 == total && memcmp(again, all, total) == 0);
    free(again);
    free(joined);
    free(all);
}

/* The shapes compact inputs are read with (the compact seeds' model). */
static const fc_shape FUZZ_SHAPES[] = {
    {4, {8, 4, 3, 3}}, {1, {8}}, {2, {16, 40}}, {1, {16}}, {0, {0}}};
#define FUZZ_NSHAPES (sizeof FUZZ_SHAPES / sizeof FUZZ_SHAPES[0])

/* An accepted container as a compact one and back (fc_convert): the same
 * levels; a compact container converts back to self-describing. */
static void compact_roundtrip(const uint8_t *data, size_t size, const fc_decode_options *o,
                              const fc_tensor_info *info, int32_t *const *levels, size_t count)
{
    fc_shape want[MAX_T];
    fc_decode_options e = *o;
    fc_decode_target tg[MAX_T];
    int32_t *again[MAX_T];
    size_t cap = size + FC_CONVERT_OVERHEAD * MAX_T + 16, n = 0, n2 = 0, i;
    uint8_t *c = (uint8_t *)malloc(cap), *back = (uint8_t *)malloc(cap);
    int positions = 1;
    check(c && back);
    memset(want, 0, sizeof want);
    memset(tg, 0, sizeof tg);
    for (i = 0; i < count; i++) {
        positions &= info[i].index == i;
        want[i].ndim = info[i].ndim;
        memcpy(want[i].shape, info[i].shape, sizeof(want[i].shape));
    }
    e.expected = want;
    e.expected_count = count;
    if (!positions) {
        check(fc_convert(data, size, &e, 1, c, cap, &n) == FC_ERR_INVALID_ARGUMENT);
        free(c);
        free(back);
        return;
    }
    check(fc_convert(data, size, &e, 1, c, cap, &n) == FC_OK && n <= cap);
    check(fc_convert(c, n, &e, 0, back, cap, &n2) == FC_OK && n2 <= cap);
    for (i = 0; i < count; i++) {
        again[i] = (int32_t *)malloc(sizeof(int32_t) * (info[i].numel ? info[i].numel : 1));
        check(again[i] != NULL);
        tg[i].levels = again[i];
    }
    check(fc_decode(c, n, &e, tg, count) == FC_OK);
    for (i = 0; i < count; i++)
        check(memcmp(again[i], levels[i], sizeof(int32_t) * info[i].numel) == 0);
    check(fc_decode(back, n2, &e, tg, count) == FC_OK);
    for (i = 0; i < count; i++) {
        check(memcmp(again[i], levels[i], sizeof(int32_t) * info[i].numel) == 0);
        free(again[i]);
    }
    free(c);
    free(back);
}

static void one(const uint8_t *data, size_t size)
{
    fc_decode_options o;
    fc_tensor_info info[MAX_T];
    fc_decode_target tg[MAX_T];
    int32_t *levels[MAX_T];
    size_t count = 0, i;
    int rc;

    fc_decode_options_init(&o);
    o.threads = 1 + (size & 1); /* both the inline and the threaded path */
    o.max_tensors = MAX_T;
    /* Limits in proportion to the input: a few mutated bytes cannot make
     * every run decode 2^18 elements of garbage payload, which kept
     * campaigns at a few hundred runs per second (the golden files within
     * them decode in full; test_golden decodes every one). */
    o.max_total_elems = (uint64_t)1024 + 64 * (uint64_t)size;
    if (o.max_total_elems > (1u << 16)) o.max_total_elems = 1u << 16;
    o.max_tensor_elems = o.max_total_elems;
    if (size > 5 && (data[5] & 2u)) {
        o.expected = FUZZ_SHAPES;
        o.expected_count = FUZZ_NSHAPES;
    }
    rc = fc_inspect(data, size, &o, info, MAX_T, &count);
    if (rc != FC_OK) {
        check((int)fc_decode(data, size, &o, NULL, 0) == rc);
        return;
    }
    check(count <= MAX_T);
    /* expected shapes: the inspected ones pass, one size more is refused */
    if (!o.expected) {
        fc_shape want[MAX_T];
        fc_decode_options e = o;
        size_t n = 0;
        memset(want, 0, sizeof want);
        for (i = 0; i < count; i++) {
            want[i].ndim = info[i].ndim;
            memcpy(want[i].shape, info[i].shape, sizeof(want[i].shape));
        }
        e.expected = want;
        e.expected_count = count;
        check(fc_inspect(data, size, &e, NULL, 0, &n) == FC_OK && n == count);
        if (count > 0) {
            fc_shape *w = &want[size % count];
            if (w->ndim > 0) w->shape[w->ndim - 1]++;
            else w->ndim = 1;
            check(fc_inspect(data, size, &e, NULL, 0, &n) == FC_ERR_MISMATCH);
        }
        e.expected_count = count + 1;
        check(fc_inspect(data, size, &e, NULL, 0, &n) == FC_ERR_MISMATCH);
    }
    memset(tg, 0, sizeof tg);
    for (i = 0; i < count; i++) {
        uint64_t n = info[i].numel, k;
        check(n <= o.max_tensor_elems);
        levels[i] = (int32_t *)malloc(sizeof(int32_t) * (n ? n : 1));
        tg[i].levels = levels[i];
        tg[i].values = (float *)malloc(sizeof(float) * (n ? n : 1));
        tg[i].acc_dtype = (i & 1) ? FC_ACC_F32 : FC_ACC_F64;
        tg[i].acc = malloc((i & 1 ? sizeof(float) : sizeof(double)) * (n ? n : 1));
        tg[i].weight = 0.75;
        check(levels[i] && tg[i].values && tg[i].acc);
        for (k = 0; k < n; k++) {
            if (i & 1) ((float *)tg[i].acc)[k] = (float)k;
            else ((double *)tg[i].acc)[k] = (double)k;
        }
    }
    rc = fc_decode(data, size, &o, tg, count);
    /* A tensor coded against a reference (temporal side information) cannot
     * decode without it: FC_ERR_MISMATCH, never values. */
    {
        int any_ref = 0;
        for (i = 0; i < count; i++) any_ref |= info[i].reference != 0;
        check(rc == FC_OK || rc == FC_ERR_CORRUPT || (any_ref && rc == FC_ERR_MISMATCH));
        check(!any_ref || rc != FC_OK);
    }
    for (i = 0; i < count; i++) {
        uint64_t n = info[i].numel, k;
        float step = (float)info[i].step, u = 0.0f;
        int dither = info[i].quantizer == FC_QUANT_DITHER;
        check(info[i].quantizer <= FC_QUANT_DITHER);
        for (k = 0; k < n; k++) {
            if (rc == FC_OK) {
                int32_t l = levels[i][k];
                float v = (float)l * step;
                if (dither) {
                    check(fc_dither(info[i].dither_seed, info[i].index, k, 1, step, &u) == FC_OK);
                    v = v - u;
                }
                check(l >= -FC_MAX_LEVEL && l <= FC_MAX_LEVEL);
                check(isfinite(tg[i].values[k]));
                if (memcmp(&v, &tg[i].values[k], 4) != 0) {
                    check(info[i].quantizer == FC_QUANT_UNIFORM &&
                          rowfine_value_ok(l, tg[i].values[k], step));
                    v = tg[i].values[k];
                }
                if (i & 1)
                    check(((float *)tg[i].acc)[k] ==
                          (l || dither ? (float)((double)k + 0.75 * (double)v) : (float)k));
                else
                    check(((double *)tg[i].acc)[k] ==
                          (l || dither ? (double)k + 0.75 * (double)v : (double)k));
            } else {
                if (i & 1) check(((float *)tg[i].acc)[k] == (float)k);
                else check(((double *)tg[i].acc)[k] == (double)k);
            }
        }
    }
    if (rc == FC_OK && count > 0) reencode(info, levels, count);
    if (!o.expected) split_join(data, size, &o, info, levels, count, rc == FC_OK);
    if (rc == FC_OK) compact_roundtrip(data, size, &o, info, levels, count);
    for (i = 0; i < count; i++) {
        free(levels[i]);
        free(tg[i].values);
        free(tg[i].acc);
    }
}

/* zlib's crc32 of p[0..n), bitwise (independent of the library's). */
static uint32_t crc32_of(const uint8_t *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    size_t i;
    int k;
    for (i = 0; i < n; i++) {
        c ^= p[i];
        for (k = 0; k < 8; k++) c = (c >> 1) ^ (0xEDB88320u & (0u - (c & 1u)));
    }
    return ~c;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *fixed;
    uint32_t c;
    one(data, size);
    if (size < 11) return 0;
    fixed = (uint8_t *)malloc(size); /* exactly `size`: over-reads trap */
    check(fixed != NULL);
    memcpy(fixed, data, size);
    c = crc32_of(fixed, size - 4);
    fixed[size - 4] = (uint8_t)c;
    fixed[size - 3] = (uint8_t)(c >> 8);
    fixed[size - 2] = (uint8_t)(c >> 16);
    fixed[size - 1] = (uint8_t)(c >> 24);
    one(fixed, size);
    free(fixed);
    return 0;
}
