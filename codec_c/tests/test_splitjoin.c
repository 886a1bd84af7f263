/*
 * test_splitjoin.c - fc_split / fc_join: containers cut into one container
 * per tensor and put back together without re-coding.
 *
 *   - every quantizer (uniform, trellis, trellis8, dither), both
 *     orientations (TRANSPOSED), window set 0 and per-tensor auto, a tensor
 *     coded against a reference (REFERENCE + digest), all-zero, 0-d and
 *     level tensors, many slices, gaps in the indices, repeated steps:
 *     each part inspects like its tensor in the whole, decodes to the same
 *     levels and values, and equals what fc_encode writes for that tensor
 *     alone; joining the parts in order gives the container back byte for
 *     byte, joining any subset gives that subset (as fc_encode would);
 *   - fc_join refuses duplicates, out-of-order parts, different dither
 *     seeds, malformed parts (naming the part), the limits and expected
 *     shapes of the joined container, and small buffers (with the size
 *     needed); fc_split fails exactly as fc_inspect on hostile input;
 *   - non-canonical headers (an explicit index or step that could be
 *     implied, a dither seed without a dithered tensor) are written the
 *     encoder's way;
 *   - the documented capacities (FC_SPLIT_OVERHEAD, FC_JOIN_OVERHEAD) hold
 *     in the worst case.
 * Every container handed to the library lives in a guarded buffer.
 */
#include "test_util.h"

#include "craft.h"

#define NT 6

typedef struct decoded {
    int32_t *levels;
    float *values;
} decoded;

/* Decode tensor `which` of a container of `count` tensors (the others are
 * skipped) into fresh buffers. */
static decoded decode_one(const uint8_t *c, size_t size, size_t count, size_t which, uint64_t numel,
                          const float *reference)
{
    fc_decode_target tg[NT];
    decoded d;
    TU_CHECK(count <= NT && which < count);
    memset(tg, 0, sizeof tg);
    d.levels = (int32_t *)tu_guarded_alloc(sizeof(int32_t) * numel);
    d.values = (float *)tu_guarded_alloc(sizeof(float) * numel);
    tg[which].levels = d.levels;
    tg[which].values = d.values;
    tg[which].reference = reference;
    TU_CHECK_RC(fc_decode(c, size, NULL, tg, count), FC_OK);
    return d;
}

static void free_decoded(decoded *d)
{
    tu_guarded_free(d->levels);
    tu_guarded_free(d->values);
}

static int same_info(const fc_tensor_info *a, const fc_tensor_info *b)
{
    return a->index == b->index && a->ndim == b->ndim &&
           memcmp(a->shape, b->shape, sizeof(uint64_t) * a->ndim) == 0 && a->numel == b->numel &&
           a->step == b->step && a->slices == b->slices && a->max_gtx == b->max_gtx &&
           a->quantizer == b->quantizer && a->dither_seed == b->dither_seed &&
           a->reference == b->reference && a->reference_digest == b->reference_digest;
}

/* The tensors of one case: indices with gaps, equal steps (STEP_REPEAT),
 * shapes of 0..3 dimensions, an all-zero one, a level tensor, one with a
 * reference. */
typedef struct sj_case {
    fc_tensor t[NT];
    uint64_t shapes[NT][3];
    float *mem[NT + 1];
} sj_case;

static void build_case(sj_case *k, uint64_t seed)
{
    static const uint32_t index[NT] = {0, 1, 4, 5, 9, 70000};
    static const uint32_t ndim[NT] = {2, 2, 1, 0, 2, 3};
    static const uint64_t shapes[NT][3] = {{40, 70, 0}, {200, 256, 0}, {300, 0, 0},
                                           {0, 0, 0},   {30, 20, 0}, {4, 5, 6}};
    tu_rng r = tu_seed(seed);
    size_t i;
    uint64_t e;
    memset(k, 0, sizeof(*k));
    for (i = 0; i < NT; i++) {
        uint64_t n;
        memcpy(k->shapes[i], shapes[i], sizeof shapes[i]);
        k->t[i] = tu_tensor(index[i], ndim[i], k->shapes[i]);
        n = tu_numel(&k->t[i]);
        k->mem[i] = (float *)calloc(n, sizeof(float));
        TU_CHECK(k->mem[i] != NULL);
        if (i != 4) tu_fill_laplace(&r, k->mem[i], n, 0.05);
        /* tensor 0: empty rows and columns (a transposition candidate) */
        if (i == 0)
            for (e = 0; e < n; e++)
                if ((e / 70) % 4 != 0 || (e % 70) % 3 == 0) k->mem[i][e] = 0.0f;
        k->t[i].values = k->mem[i];
    }
    /* tensors 1 and 2 share a step: STEP_REPEAT in the whole container */
    k->t[1].step = k->t[2].step = 0.01;
    /* tensor 1 is coded against a correlated reference */
    k->mem[NT] = (float *)malloc(sizeof(float) * 200 * 256);
    TU_CHECK(k->mem[NT] != NULL);
    for (e = 0; e < 200 * 256; e++) k->mem[NT][e] = (float)(0.8 * k->mem[1][e] + tu_laplace(&r, 0.01));
    k->t[1].reference = k->mem[NT];
    /* tensor 5 as integer levels (always coded uniform) */
    {
        int32_t *lv = (int32_t *)k->mem[5];
        for (e = 0; e < 120; e++) lv[e] = (int32_t)tu_below(&r, 7) - 3;
        k->t[5].values = NULL;
        k->t[5].levels = lv;
        k->t[5].step = 0.01;
    }
}

static void free_case(sj_case *k)
{
    size_t i;
    for (i = 0; i <= NT; i++) free(k->mem[i]);
}

static void check_case(unsigned quant, int transpose, unsigned window_set)
{
    sj_case k;
    fc_encode_options o;
    fc_tensor_info info[NT], pinfo[NT];
    uint8_t *c0, *c, **parts, *joined;
    size_t size, n, i, cnt, jsize, bad, sub;
    size_t *sizes;
    build_case(&k, 1000 + quant * 10 + (unsigned)transpose + window_set);
    fc_encode_options_init(&o);
    o.quantizer = (int32_t)quant;
    o.lambda = quant == FC_QUANT_DITHER ? 0.0 : 0.1155;
    o.dither_seed = 0x0123456789ABCDEFull;
    o.transpose = transpose;
    o.window_set = window_set;
    o.slice_elems = 512; /* several slices per tensor */
    o.threads = 1;
    TU_CHECK_RC(tu_encode(k.t, NT, &o, &c0, &size, NULL), FC_OK);
    c = tu_guarded_copy(c0, size);
    free(c0);
    TU_CHECK_RC(fc_inspect(c, size, NULL, info, NT, &cnt), FC_OK);
    TU_CHECK_EQ(cnt, NT);
    TU_CHECK(info[1].reference == 1 && info[1].slices > 1);
    TU_CHECK(info[4].slices == (quant == FC_QUANT_DITHER ? info[4].slices : 0));

    TU_CHECK_RC(tu_split(c, size, NULL, &parts, &sizes, &n), FC_OK);
    TU_CHECK_EQ(n, NT);
    {
        size_t total = 0;
        for (i = 0; i < n; i++) total += sizes[i];
        TU_CHECK(total <= size + FC_SPLIT_OVERHEAD * n);
    }
    for (i = 0; i < NT; i++) {
        decoded whole, part;
        uint8_t *alone;
        size_t asize;
        uint64_t numel = info[i].numel;
        /* the part describes the tensor as the whole does */
        TU_CHECK_RC(fc_inspect(parts[i], sizes[i], NULL, pinfo, NT, &cnt), FC_OK);
        TU_CHECK_EQ(cnt, 1);
        TU_CHECKF(same_info(&pinfo[0], &info[i]), "quant %u transpose %d tensor %zu", quant,
                  transpose, i);
        /* ... decodes to the same levels and values ... */
        whole = decode_one(c, size, NT, i, numel, k.t[i].reference);
        part = decode_one(parts[i], sizes[i], 1, 0, numel, k.t[i].reference);
        TU_CHECK(memcmp(whole.levels, part.levels, sizeof(int32_t) * numel) == 0);
        TU_CHECK(memcmp(whole.values, part.values, sizeof(float) * numel) == 0);
        free_decoded(&whole);
        free_decoded(&part);
        /* ... and is what the encoder writes for that tensor alone */
        TU_CHECK_RC(tu_encode(&k.t[i], 1, &o, &alone, &asize, NULL), FC_OK);
        TU_CHECKF(asize == sizes[i] && memcmp(alone, parts[i], asize) == 0,
                  "quant %u transpose %d tensor %zu: part of %zu B, alone %zu B", quant, transpose,
                  i, sizes[i], asize);
        free(alone);
    }
    /* join(split(c)) == c */
    TU_CHECK_RC(tu_join(parts, sizes, n, NULL, &joined, &jsize, &bad), FC_OK);
    TU_CHECK(jsize == size && memcmp(joined, c, size) == 0);
    tu_guarded_free(joined);
    /* every subset, in order: a valid container of those tensors; for two
     * of them, the bytes the encoder writes for those tensors, and their
     * decoded values */
    for (sub = 1; sub < (1u << NT); sub++) {
        uint8_t *pick[NT], *enc;
        size_t psz[NT], m = 0, j = 0, esize;
        fc_tensor ts[NT];
        for (i = 0; i < NT; i++)
            if (sub & (1u << i)) {
                pick[m] = parts[i];
                psz[m] = sizes[i];
                ts[m++] = k.t[i];
            }
        TU_CHECK_RC(tu_join(pick, psz, m, NULL, &joined, &jsize, &bad), FC_OK);
        TU_CHECK_RC(fc_inspect(joined, jsize, NULL, pinfo, NT, &cnt), FC_OK);
        TU_CHECK_EQ(cnt, m);
        for (i = 0; i < NT; i++)
            if (sub & (1u << i)) TU_CHECK(same_info(&pinfo[j++], &info[i]));
        if (sub == 0x2Au || sub == 0x15u) {
            TU_CHECK_RC(tu_encode(ts, m, &o, &enc, &esize, NULL), FC_OK);
            TU_CHECKF(esize == jsize && memcmp(enc, joined, jsize) == 0,
                      "quant %u transpose %d subset %zx: joined %zu B, encoded %zu B", quant,
                      transpose, sub, jsize, esize);
            free(enc);
            j = 0;
            for (i = 0; i < NT; i++) {
                decoded whole, part;
                if (!(sub & (1u << i))) continue;
                whole = decode_one(c, size, NT, i, info[i].numel, k.t[i].reference);
                part = decode_one(joined, jsize, m, j++, info[i].numel, k.t[i].reference);
                TU_CHECK(memcmp(whole.values, part.values, sizeof(float) * info[i].numel) == 0);
                free_decoded(&whole);
                free_decoded(&part);
            }
        }
        tu_guarded_free(joined);
    }
    tu_free_parts(parts, sizes, n);
    tu_guarded_free(c);
    free_case(&k);
}

static void test_every_quantizer_and_flag(void)
{
    unsigned quant, ws;
    int transpose;
    for (quant = FC_QUANT_UNIFORM; quant <= FC_QUANT_DITHER; quant++)
        for (transpose = 0; transpose <= 1; transpose++)
            for (ws = 0; ws <= FC_WINDOW_AUTO; ws += FC_WINDOW_AUTO) check_case(quant, transpose, ws);
}

/* Two tensors of one shape as a container of their own, with `quant` and
 * `seed`, indices first, first + 1. */
static uint8_t *small(uint32_t first, unsigned quant, uint64_t seed, size_t *size)
{
    static const uint64_t shape[2] = {8, 16};
    float v[128];
    fc_tensor t[2];
    fc_encode_options o;
    uint8_t *c, *g;
    tu_rng r = tu_seed(first * 7u + seed);
    tu_fill_laplace(&r, v, 128, 1.0);
    t[0] = tu_tensor(first, 2, shape);
    t[0].values = v;
    t[1] = t[0];
    t[1].index = first + 1;
    fc_encode_options_init(&o);
    o.quantizer = (int32_t)quant;
    o.dither_seed = seed;
    o.threads = 1;
    TU_CHECK_RC(tu_encode(t, 2, &o, &c, size, NULL), FC_OK);
    g = tu_guarded_copy(c, *size);
    free(c);
    return g;
}

static void expect_join(uint8_t *const *parts, const size_t *sizes, size_t n,
                        const fc_decode_options *o, int want, size_t want_bad, const char *what)
{
    uint8_t *out;
    size_t size, bad = 12345;
    int rc = tu_join(parts, sizes, n, o, &out, &size, &bad);
    TU_CHECKF(rc == want && (rc == FC_OK || bad == want_bad), "%s: %s, bad part %zu", what,
              fc_result_name(rc), bad);
    if (rc == FC_OK) {
        TU_CHECK_EQ(bad, SIZE_MAX);
        tu_guarded_free(out);
    } else {
        TU_CHECK(out == NULL && size == 0);
    }
}

static void test_join_refusals(void)
{
    size_t sa, sb, sc, sd, se, n, i;
    uint8_t *a = small(0, FC_QUANT_UNIFORM, 0, &sa);  /* indices 0, 1 */
    uint8_t *b = small(2, FC_QUANT_DITHER, 7, &sb);   /* 2, 3, seed 7 */
    uint8_t *c = small(4, FC_QUANT_DITHER, 8, &sc);   /* 4, 5, seed 8 */
    uint8_t *d = small(4, FC_QUANT_DITHER, 7, &sd);   /* 4, 5, seed 7 */
    uint8_t *e = small(6, FC_QUANT_TRELLIS, 8, &se);  /* 6, 7, not dithered */
    uint8_t *parts[4];
    size_t sizes[4];
    fc_decode_options o;
    fc_shape want[8];

    parts[0] = a, sizes[0] = sa;
    parts[1] = b, sizes[1] = sb;
    parts[2] = d, sizes[2] = sd;
    parts[3] = e, sizes[3] = se;
    expect_join(parts, sizes, 4, NULL, FC_OK, 0, "a b d e");
    expect_join(parts, sizes, 0, NULL, FC_OK, 0, "no parts");
    /* the same part twice, a part out of order, overlapping containers */
    parts[1] = a, sizes[1] = sa;
    expect_join(parts, sizes, 2, NULL, FC_ERR_INVALID_ARGUMENT, 1, "a a");
    parts[0] = b, sizes[0] = sb;
    expect_join(parts, sizes, 2, NULL, FC_ERR_INVALID_ARGUMENT, 1, "b a");
    parts[0] = a, sizes[0] = sa;
    parts[1] = b, sizes[1] = sb;
    parts[2] = b, sizes[2] = sb;
    expect_join(parts, sizes, 3, NULL, FC_ERR_INVALID_ARGUMENT, 2, "a b b");
    /* one dither seed per container: seed 7 then 8 is refused; a part
     * without dithered tensors does not care */
    parts[2] = c, sizes[2] = sc;
    expect_join(parts, sizes, 3, NULL, FC_ERR_MISMATCH, 2, "a b(7) c(8)");
    parts[1] = c, sizes[1] = sc;
    parts[2] = e, sizes[2] = se;
    expect_join(parts, sizes, 3, NULL, FC_OK, 0, "a c(8) e");
    /* malformed parts are named: checksum, truncation, garbage */
    parts[0] = a, sizes[0] = sa;
    parts[1] = b, sizes[1] = sb;
    b[sb / 2] ^= 0x10;
    expect_join(parts, sizes, 2, NULL, FC_ERR_CHECKSUM, 1, "flipped bit");
    b[sb / 2] ^= 0x10;
    sizes[1] = sb - 1;
    expect_join(parts, sizes, 2, NULL, FC_ERR_CHECKSUM, 1, "truncated");
    sizes[1] = 3;
    expect_join(parts, sizes, 2, NULL, FC_ERR_TRUNCATED, 1, "3 bytes");
    {
        uint8_t junk[16];
        memset(junk, 'x', sizeof junk);
        parts[1] = junk, sizes[1] = sizeof junk;
        expect_join(parts, sizes, 2, NULL, FC_ERR_VERSION, 1, "junk");
    }
    /* the limits hold for the joined container */
    parts[1] = b, sizes[1] = sb;
    parts[2] = d, sizes[2] = sd;
    fc_decode_options_init(&o);
    o.max_tensors = 5;
    expect_join(parts, sizes, 3, &o, FC_ERR_LIMIT, 2, "max_tensors 5");
    o.max_tensors = 6;
    expect_join(parts, sizes, 3, &o, FC_OK, 0, "max_tensors 6");
    o.max_total_elems = 5 * 128;
    expect_join(parts, sizes, 3, &o, FC_ERR_LIMIT, 2, "max_total_elems");
    /* expected shapes describe the joined container */
    fc_decode_options_init(&o);
    memset(want, 0, sizeof want);
    for (i = 0; i < 8; i++) {
        want[i].ndim = 2;
        want[i].shape[0] = 8;
        want[i].shape[1] = 16;
    }
    o.expected = want;
    o.expected_count = 6;
    expect_join(parts, sizes, 3, &o, FC_OK, 0, "expected 6");
    o.expected_count = 7;
    expect_join(parts, sizes, 3, &o, FC_ERR_MISMATCH, SIZE_MAX, "expected 7");
    o.expected_count = 5;
    expect_join(parts, sizes, 3, &o, FC_ERR_MISMATCH, 2, "expected 5");
    o.expected_count = 6;
    want[3].shape[1] = 17;
    expect_join(parts, sizes, 3, &o, FC_ERR_MISMATCH, 1, "expected shape");
    /* capacity: one byte short gives the size needed, nothing written */
    {
        size_t need, got, bad;
        uint8_t *buf = (uint8_t *)tu_guarded_alloc(sa + sb + sd + FC_JOIN_OVERHEAD);
        TU_CHECK_RC(fc_join((const uint8_t *const *)parts, sizes, 3, NULL, buf,
                            sa + sb + sd + FC_JOIN_OVERHEAD, &need, &bad),
                    FC_OK);
        memset(buf, 0xAB, need);
        TU_CHECK_RC(fc_join((const uint8_t *const *)parts, sizes, 3, NULL, buf, need - 1, &got, &bad),
                    FC_ERR_BUFFER_TOO_SMALL);
        TU_CHECK_EQ(got, need);
        TU_CHECK(buf[0] == 0xAB && buf[need - 1] == 0xAB);
        TU_CHECK_RC(fc_join((const uint8_t *const *)parts, sizes, 3, NULL, NULL, 0, &got, &bad),
                    FC_ERR_BUFFER_TOO_SMALL);
        TU_CHECK_EQ(got, need);
        /* argument errors */
        TU_CHECK_RC(fc_join((const uint8_t *const *)parts, sizes, 3, NULL, buf, need, NULL, &bad),
                    FC_ERR_INVALID_ARGUMENT);
        TU_CHECK_RC(fc_join(NULL, sizes, 3, NULL, buf, need, &got, &bad), FC_ERR_INVALID_ARGUMENT);
        TU_CHECK_EQ(bad, SIZE_MAX);
        TU_CHECK_RC(fc_join((const uint8_t *const *)parts, NULL, 3, NULL, buf, need, &got, NULL),
                    FC_ERR_INVALID_ARGUMENT);
        TU_CHECK_RC(fc_join((const uint8_t *const *)parts, sizes, 3, NULL, NULL, 5, &got, NULL),
                    FC_ERR_INVALID_ARGUMENT);
        tu_guarded_free(buf);
    }
    /* a part that is itself split again joins back to it */
    {
        uint8_t **sp, *j;
        size_t *ss, js, bad;
        TU_CHECK_RC(tu_split(d, sd, NULL, &sp, &ss, &n), FC_OK);
        TU_CHECK_EQ(n, 2);
        TU_CHECK_RC(tu_join(sp, ss, n, NULL, &j, &js, &bad), FC_OK);
        TU_CHECK(js == sd && memcmp(j, d, sd) == 0);
        tu_guarded_free(j);
        tu_free_parts(sp, ss, n);
    }
    tu_guarded_free(a);
    tu_guarded_free(b);
    tu_guarded_free(c);
    tu_guarded_free(d);
    tu_guarded_free(e);
}

/* fc_split fails exactly as fc_inspect on hostile input, and sizes. */
static void test_split_hostile(void)
{
    sj_case k;
    fc_encode_options o;
    uint8_t *c0, *c;
    size_t size, len, bit, total, cnt, n;
    build_case(&k, 5);
    k.t[1] = k.t[0]; /* the big tensor 1 out: every bit of the rest is flipped */
    k.t[1].index = 1;
    k.t[0] = tu_tensor(0, 0, NULL);
    k.t[0].values = k.mem[3];
    fc_encode_options_init(&o);
    o.slice_elems = 512;
    o.threads = 1;
    TU_CHECK_RC(tu_encode(k.t, NT, &o, &c0, &size, NULL), FC_OK);
    for (len = 0; len <= size; len++) {
        uint8_t *g = tu_guarded_copy(c0, len);
        int ri = fc_inspect(g, len, NULL, NULL, 0, &n);
        int rs = fc_split(g, len, NULL, NULL, 0, &total, NULL, 0, &cnt);
        TU_CHECKF(ri == FC_OK ? rs == FC_ERR_BUFFER_TOO_SMALL : rs == ri, "length %zu: %s / %s", len,
                  fc_result_name(ri), fc_result_name(rs));
        if (ri != FC_OK) TU_CHECK(total == 0 && cnt == 0);
        tu_guarded_free(g);
    }
    c = tu_guarded_copy(c0, size);
    for (bit = 0; bit < 8 * size; bit++) {
        int ri, rs;
        c[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        cr_reseal(c, size);
        ri = fc_inspect(c, size, NULL, NULL, 0, &n);
        rs = fc_split(c, size, NULL, NULL, 0, &total, NULL, 0, &cnt);
        TU_CHECK(ri == FC_OK ? (rs == FC_ERR_BUFFER_TOO_SMALL || (rs == FC_OK && n == 0)) && cnt == n
                             : rs == ri);
        if (ri == FC_OK) {
            /* a CRC-valid mutation that parses splits and joins back */
            uint8_t **parts, *joined;
            size_t *sizes, np, jsize, bad;
            TU_CHECK_RC(tu_split(c, size, NULL, &parts, &sizes, &np), FC_OK);
            TU_CHECK_RC(tu_join(parts, sizes, np, NULL, &joined, &jsize, &bad), FC_OK);
            TU_CHECK(jsize <= size);
            tu_guarded_free(joined);
            tu_free_parts(parts, sizes, np);
        }
        c[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        cr_reseal(c, size);
    }
    /* capacities: too few part entries or bytes give what is needed */
    {
        size_t sizes[NT], need, got;
        uint8_t *buf = (uint8_t *)tu_guarded_alloc(size + FC_SPLIT_OVERHEAD * NT);
        TU_CHECK_RC(fc_split(c, size, NULL, buf, size + FC_SPLIT_OVERHEAD * NT, &need, sizes, NT, &cnt),
                    FC_OK);
        TU_CHECK_EQ(cnt, NT);
        memset(buf, 0xAB, need);
        TU_CHECK_RC(fc_split(c, size, NULL, buf, need - 1, &got, sizes, NT, &cnt),
                    FC_ERR_BUFFER_TOO_SMALL);
        TU_CHECK(got == need && cnt == NT && buf[0] == 0xAB);
        TU_CHECK_RC(fc_split(c, size, NULL, buf, need, &got, sizes, NT - 1, &cnt),
                    FC_ERR_BUFFER_TOO_SMALL);
        TU_CHECK(got == need && cnt == NT && buf[0] == 0xAB);
        TU_CHECK_RC(fc_split(c, size, NULL, buf, need, NULL, sizes, NT, &cnt), FC_ERR_INVALID_ARGUMENT);
        TU_CHECK_RC(fc_split(c, size, NULL, buf, need, &got, sizes, NT, NULL), FC_ERR_INVALID_ARGUMENT);
        TU_CHECK_RC(fc_split(c, size, NULL, NULL, need, &got, sizes, NT, &cnt), FC_ERR_INVALID_ARGUMENT);
        TU_CHECK_RC(fc_split(c, size, NULL, buf, need, &got, NULL, NT, &cnt), FC_ERR_INVALID_ARGUMENT);
        TU_CHECK_RC(fc_split(NULL, 5, NULL, buf, need, &got, sizes, NT, &cnt), FC_ERR_INVALID_ARGUMENT);
        tu_guarded_free(buf);
    }
    /* the decode options apply: limits and expected shapes */
    {
        fc_decode_options d;
        fc_decode_options_init(&d);
        d.max_tensors = NT - 1;
        TU_CHECK_RC(fc_split(c, size, &d, NULL, 0, &total, NULL, 0, &cnt), FC_ERR_LIMIT);
        fc_decode_options_init(&d);
        d.expected_count = 1;
        TU_CHECK_RC(fc_split(c, size, &d, NULL, 0, &total, NULL, 0, &cnt), FC_ERR_INVALID_ARGUMENT);
    }
    tu_guarded_free(c);
    free(c0);
    free_case(&k);
}

/* Headers the encoder would not write are written its way: an explicit
 * index that could be implied, a repeated step written out, a dither seed
 * without a dithered tensor, overlong varints. */
static void test_noncanonical(void)
{
    static const uint64_t shape[2] = {3, 4};
    cr_buf b = {0};
    uint8_t *g, **parts, *joined, *enc;
    size_t *sizes, n, jsize, esize, bad, i;
    fc_tensor t[3];
    fc_encode_options o;
    int32_t zeros[12] = {0};
    /* 3 all-zero tensors (no slices): indices 0 (explicit), 1 (explicit),
     * 2 (overlong varint 0x82 0x00); steps 0.5, 0.5 (explicit), 0.25; a
     * seed nobody uses */
    cr_bytes(&b, "FCDC", 4);
    cr_u8(&b, 1);
    cr_u8(&b, 1);
    for (i = 0; i < 8; i++) cr_u8(&b, 0x11);
    cr_varint(&b, 3);
    cr_tensor(&b, 0, 0, 2, shape, 0.5f, 4, 0, 0, NULL);
    cr_tensor(&b, 0, 1, 2, shape, 0.5f, 4, 0, 0, NULL);
    cr_u8(&b, (1u << 4) | 2u);
    cr_u8(&b, 0x82);
    cr_u8(&b, 0x00);
    cr_varint(&b, 3);
    cr_varint(&b, 4);
    cr_f32(&b, 0.25f);
    cr_u8(&b, 4);
    cr_varint(&b, 0);
    cr_seal(&b);
    g = tu_guarded_copy(b.d, b.n);
    TU_CHECK_RC(fc_inspect(g, b.n, NULL, NULL, 0, &n), FC_OK);
    TU_CHECK_EQ(n, 3);
    TU_CHECK_RC(tu_split(g, b.n, NULL, &parts, &sizes, &n), FC_OK);
    TU_CHECK_RC(tu_join(parts, sizes, n, NULL, &joined, &jsize, &bad), FC_OK);
    /* what differs: 8 seed bytes, 3 index varints (1 + 1 + 2 bytes), one step */
    TU_CHECK_EQ(jsize, b.n - 8 - 4 - 4);
    memset(t, 0, sizeof t);
    for (i = 0; i < 3; i++) {
        t[i] = tu_tensor((uint32_t)i, 2, shape);
        t[i].levels = zeros;
        t[i].step = i < 2 ? 0.5 : 0.25;
    }
    fc_encode_options_init(&o);
    TU_CHECK_RC(tu_encode(t, 3, &o, &enc, &esize, NULL), FC_OK);
    TU_CHECK(esize == jsize && memcmp(enc, joined, jsize) == 0);
    free(enc);
    tu_guarded_free(joined);
    tu_free_parts(parts, sizes, n);
    tu_guarded_free(g);
    cr_free(&b);
}

/* Worst cases of the documented capacities: every tensor grows by its
 * index (5 bytes), its step (4) and a container (19) when split. */
static void test_capacity_bounds(void)
{
    enum { M = 200 };
    static const uint64_t one[1] = {1};
    fc_tensor t[M];
    int32_t zero = 0;
    fc_encode_options o;
    uint8_t *c, *g, **parts, *joined;
    size_t size, *sizes, n, i, sum = 0, jsize, bad;
    for (i = 0; i < M; i++) {
        t[i] = tu_tensor(0xFFFFFFFFu - (uint32_t)(M - 1 - i), 1, one);
        t[i].levels = &zero;
        t[i].step = 0.5;
    }
    fc_encode_options_init(&o);
    TU_CHECK_RC(tu_encode(t, M, &o, &c, &size, NULL), FC_OK);
    g = tu_guarded_copy(c, size);
    TU_CHECK_RC(tu_split(g, size, NULL, &parts, &sizes, &n), FC_OK);
    TU_CHECK_EQ(n, M);
    for (i = 0; i < n; i++) sum += sizes[i];
    TU_CHECKF(sum <= size + FC_SPLIT_OVERHEAD * M, "%zu B of parts from %zu B", sum, size);
    TU_CHECK(sum - size >= 19 * (M - 1)); /* 20 bytes per part here (no seed) */
    TU_CHECK_RC(tu_join(parts, sizes, n, NULL, &joined, &jsize, &bad), FC_OK);
    TU_CHECK(jsize == size && memcmp(joined, g, size) == 0);
    tu_guarded_free(joined);
    /* one part: the join of a single container can grow only by its count
     * varint and nothing else */
    TU_CHECK_RC(tu_join(parts, sizes, 1, NULL, &joined, &jsize, &bad), FC_OK);
    TU_CHECK(jsize == sizes[0] && memcmp(joined, parts[0], jsize) == 0);
    tu_guarded_free(joined);
    tu_free_parts(parts, sizes, n);
    tu_guarded_free(g);
    free(c);
}

int main(void)
{
    test_every_quantizer_and_flag();
    test_join_refusals();
    test_split_hostile();
    test_noncanonical();
    test_capacity_bounds();
    return tu_finish("test_splitjoin");
}
