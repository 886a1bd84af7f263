/*
 * gen_golden.c - writes the golden bitstreams and the fuzz seed corpus
 * (run by `make golden`; deterministic: fixed seeds, one thread).
 *
 *   gen_golden GOLDEN_DIR CORPUS_DIR
 *
 * GOLDEN_DIR receives
 *   ok_NAME.fcd     a container of golden_cases.h case NAME
 *   ok_NAME.levels  what it must decode to (format: tests/golden/README.md)
 *   bad_NAME.fcd    a malformed container
 *   MANIFEST        one line per .fcd: "FILE EXPECTED_RESULT_NAME"
 * CORPUS_DIR receives every .fcd above plus small seeds of every mode.
 *
 * Every file is checked before it is written: ok files must decode to
 * their inputs (levels) or to the encoder's reconstruction (floats), bad
 * files must fail with exactly the listed code.  The generator exits
 * non-zero otherwise, so `make golden` cannot commit a wrong expectation.
 */
#include "test_util.h"

#include "craft.h"
#include "golden_cases.h"
#include "rangecoder.h" /* bypass-only payloads for one bad file */
#include "slice.h"       /* slice flags of the PREDICT bad files */

static const char *golden_dir, *corpus_dir;
static FILE *manifest;

static void die(const char *what, const char *name)
{
    fprintf(stderr, "gen_golden: %s: %s\n", name, what);
    exit(1);
}

static void put_file(const char *dir, const char *name, const void *data, size_t size)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    if (!tu_write_file(path, data, size)) die("cannot write", path);
}

/* Inspect, then decode into targets sized from inspect: the result code of
 * a full decode (`o`: NULL, or the shapes a compact container needs). */
static int full_decode_with(const uint8_t *c, size_t size, const fc_decode_options *o,
                            gl_tensor *out, size_t cap, size_t *count)
{
    fc_tensor_info info[GC_MAX_TENSORS];
    fc_decode_target tg[GC_MAX_TENSORS];
    int32_t *lv[GC_MAX_TENSORS];
    size_t n = 0, i;
    int rc = fc_inspect(c, size, o, info, GC_MAX_TENSORS, &n);
    if (count) *count = n;
    if (rc != FC_OK) return rc;
    if (n > GC_MAX_TENSORS) return FC_ERR_LIMIT;
    memset(tg, 0, sizeof tg);
    for (i = 0; i < n; i++) {
        lv[i] = (int32_t *)malloc(sizeof(int32_t) * (info[i].numel ? info[i].numel : 1));
        if (!lv[i]) abort();
        tg[i].levels = lv[i];
    }
    rc = fc_decode(c, size, o, tg, n);
    for (i = 0; i < n; i++) {
        if (rc == FC_OK && out && i < cap) {
            float step = (float)info[i].step;
            out[i].index = info[i].index;
            out[i].ndim = info[i].ndim;
            memcpy(out[i].shape, info[i].shape, sizeof(info[i].shape));
            out[i].numel = info[i].numel;
            memcpy(&out[i].step_bits, &step, 4);
            out[i].quantizer = info[i].quantizer;
            out[i].dither_seed = info[i].dither_seed;
            out[i].levels = lv[i];
        } else {
            free(lv[i]);
        }
    }
    return rc;
}

static int full_decode(const uint8_t *c, size_t size, gl_tensor *out, size_t cap, size_t *count)
{
    return full_decode_with(c, size, NULL, out, cap, count);
}

static void add_bad(const char *name, const uint8_t *c, size_t size, int want)
{
    char file[256];
    int rc = full_decode(c, size, NULL, 0, NULL);
    snprintf(file, sizeof file, "bad_%s.fcd", name);
    if (rc != want) {
        fprintf(stderr, "gen_golden: %s: decodes with %s, expected %s\n", file, fc_result_name(rc),
                fc_result_name(want));
        exit(1);
    }
    put_file(golden_dir, file, c, size);
    put_file(corpus_dir, file, c, size);
    fprintf(manifest, "%s %s\n", file, fc_result_name(want));
}

/* The bad files are edits of two small ok files: "params" (one dense
 * tensor) and "multi" (four tensors, one with an explicit index). */

/* Encodes case `which`, checks it, writes ok_NAME.{fcd,levels}; returns the
 * container (caller frees). */
static uint8_t *add_ok(int which, size_t *out_size)
{
    gc_set s;
    fc_tensor_stats st[GC_MAX_TENSORS];
    float *recon[GC_MAX_TENSORS];
    gl_tensor dec[GC_MAX_TENSORS];
    uint8_t *c, *c2;
    size_t size, size2, count, i, k;
    char file[256];
    cr_buf lv = {0};
    if (!gc_build(which, &s)) return NULL;
    for (i = 0; i < s.count; i++) {
        recon[i] = (float *)calloc(tu_numel(&s.t[i]) + 1, sizeof(float));
        if (!recon[i]) abort();
        s.t[i].recon = recon[i];
    }
    if (tu_encode(s.t, s.count, &s.o, &c, &size, st) != FC_OK) die("encode failed", s.name);
    if (strcmp(s.name, "rowscale") == 0) {
        cr_layout L;
        if (!cr_walk(c, size, &L) || !((c[L.slice_modebyte[0]] >> 2) & FC_SLICE_ROWSCALE))
            die("expected a ROWSCALE slice", s.name);
    }
    if (strcmp(s.name, "slices") == 0 && st[0].slices < 2) die("expected several slices", s.name);
    /* deterministic: the same bytes again, and with 3 threads */
    s.o.threads = 3;
    if (tu_encode(s.t, s.count, &s.o, &c2, &size2, NULL) != FC_OK || size2 != size ||
        memcmp(c, c2, size) != 0)
        die("encoder not deterministic", s.name);
    free(c2);
    memset(dec, 0, sizeof dec);
    {
        /* a compact container is read with the case's shapes */
        fc_shape want[GC_MAX_TENSORS];
        fc_decode_options o;
        fc_decode_options_init(&o);
        memset(want, 0, sizeof want);
        for (i = 0; i < s.count; i++) {
            want[i].ndim = s.t[i].ndim;
            memcpy(want[i].shape, s.t[i].shape, sizeof(want[i].shape));
        }
        o.expected = want;
        o.expected_count = s.count;
        if (full_decode_with(c, size, s.o.compact ? &o : NULL, dec, GC_MAX_TENSORS, &count) !=
                FC_OK ||
            count != s.count)
            die("does not decode", s.name);
        if (s.o.compact && full_decode(c, size, NULL, 0, NULL) != FC_ERR_MISMATCH)
            die("a compact container decodes without the shapes", s.name);
    }
    for (i = 0; i < count; i++) {
        const fc_tensor *t = &s.t[i];
        for (k = 0; k < dec[i].numel; k++) {
            if (t->levels && dec[i].levels[k] != t->levels[k]) die("levels differ from the input", s.name);
            if (!gl_value_ok(&dec[i], k, dec[i].levels[k], recon[i][k]))
                die("decode differs from recon", s.name);
        }
    }
    snprintf(file, sizeof file, "ok_%s.fcd", s.name);
    put_file(golden_dir, file, c, size);
    put_file(corpus_dir, file, c, size);
    fprintf(manifest, "%s FC_OK\n", file);
    gl_write(&lv, dec, count);
    snprintf(file, sizeof file, "ok_%s.levels", s.name);
    put_file(golden_dir, file, lv.d, lv.n);
    printf("  ok_%-12s %6zu bytes, %zu tensor(s)\n", s.name, size, count);
    cr_free(&lv);
    for (i = 0; i < count; i++) free(dec[i].levels);
    for (i = 0; i < s.count; i++) free(recon[i]);
    gc_free(&s);
    *out_size = size;
    return c;
}

/* A copy of c with one byte changed and the CRC recomputed. */
static void bad_edit(const char *name, const uint8_t *c, size_t size, size_t at, uint8_t value,
                     int want)
{
    uint8_t *m = (uint8_t *)malloc(size);
    if (!m) abort();
    memcpy(m, c, size);
    m[at] = value;
    cr_reseal(m, size);
    add_bad(name, m, size, want);
    free(m);
}

/* A copy of c whose slice `sl` payload is rep[0..len) (CRC recomputed). */
static void bad_payload(const char *name, const uint8_t *c, size_t size, size_t sl,
                        const uint8_t *rep, size_t len, int want)
{
    cr_layout L;
    cr_buf b = {0};
    size_t after;
    uint64_t v;
    if (!cr_walk(c, size, &L) || sl >= L.nslices) die("cannot walk", name);
    after = L.slice_sizepos[sl];
    cr_get_varint(c, size, &after, &v);
    cr_bytes(&b, c, L.slice_sizepos[sl]);
    cr_varint(&b, len);
    cr_bytes(&b, c + after, L.slice_payload[sl] - after);
    cr_bytes(&b, rep, len);
    after = L.slice_payload[sl] + L.slice_size[sl];
    cr_bytes(&b, c + after, L.crc - after);
    cr_seal(&b);
    add_bad(name, b.d, b.n, want);
    cr_free(&b);
}

static void make_bad(const uint8_t *dense, size_t dsize, const uint8_t *multi, size_t msize)
{
    cr_layout L;
    uint8_t *m;
    cr_buf b = {0};
    if (!cr_walk(dense, dsize, &L) || !cr_walk(multi, msize, &L)) die("cannot walk", "ok files");

    add_bad("truncated_header", dense, 8, FC_ERR_TRUNCATED);
    /* the body cut in the payload, the CRC recomputed */
    cr_walk(dense, dsize, &L);
    cr_bytes(&b, dense, L.slice_payload[0] + 3);
    cr_seal(&b);
    add_bad("truncated_payload", b.d, b.n, FC_ERR_TRUNCATED);
    cr_free(&b);
    /* the body cut, the old CRC: the checksum fails first */
    add_bad("truncated_crc", dense, dsize - 1, FC_ERR_CHECKSUM);
    bad_edit("magic", dense, dsize, 0, 'G', FC_ERR_VERSION);
    bad_edit("version", dense, dsize, 4, FC_FORMAT_VERSION + 1, FC_ERR_VERSION);
    m = (uint8_t *)malloc(dsize);
    if (!m) abort();
    memcpy(m, dense, dsize);
    m[L.slice_payload[0] + 1] ^= 0x10;
    add_bad("crc", m, dsize, FC_ERR_CHECKSUM);
    free(m);
    bad_edit("flags", dense, dsize, 5, 0x04, FC_ERR_CORRUPT);
    /* payload corruption behind a valid CRC */
    {
        uint8_t buf[8192];
        unsigned bits[64];
        size_t n = L.slice_size[0], k;
        fc_buf out;
        fc_rc_enc e;
        if (n + 8 > sizeof buf) die("payload too large", "params");
        memcpy(buf, dense + L.slice_payload[0], n);
        memset(buf + n, 0xA5, 8);
        bad_payload("payload_unread_bytes", dense, dsize, 0, buf, n + 8, FC_ERR_CORRUPT);
        bad_payload("payload_empty", dense, dsize, 0, buf, 0, FC_ERR_CORRUPT);
        /* m0 - 1 = 2^30 - 1 (m0 above FC_MAX_LEVEL) in the bypass prefix */
        for (k = 0; k < 64; k++) bits[k] = k < 30;
        memset(&out, 0, sizeof out);
        fc_rc_enc_init(&e, &out);
        for (k = 0; k < 64; k++) fc_rc_bypass(&e, bits[k], 1);
        fc_rc_finish(&e);
        bad_payload("payload_m0", dense, dsize, 0, out.data, out.size, FC_ERR_CORRUPT);
        fc_buf_free(&out);
    }
    /* header fields (CRC valid) */
    cr_walk(dense, dsize, &L);
    bad_edit("dtype", dense, dsize, L.t[0].start, (uint8_t)((dense[L.t[0].start] & 0xCF) | 0x20),
             FC_ERR_CORRUPT);
    if (L.t[0].step == CR_NONE) die("no explicit step", "params");
    {
        /* the step's exponent bits all ones: a NaN */
        uint8_t *s = (uint8_t *)malloc(dsize);
        if (!s) abort();
        memcpy(s, dense, dsize);
        s[L.t[0].step + 2] = 0xC0;
        s[L.t[0].step + 3] = 0x7F;
        cr_reseal(s, dsize);
        add_bad("step_nan", s, dsize, FC_ERR_CORRUPT);
        free(s);
    }
    bad_edit("params", dense, dsize, L.t[0].params, 0x09, FC_ERR_CORRUPT);
    bad_edit("mode", dense, dsize, L.slice_modebyte[0], 0x03, FC_ERR_CORRUPT);
    /* trailing bytes after the last payload */
    cr_bytes(&b, dense, L.crc);
    cr_u8(&b, 0);
    cr_seal(&b);
    add_bad("trailing", b.d, b.n, FC_ERR_CORRUPT);
    cr_free(&b);
    /* oversized shape and tensor count (limits) */
    {
        uint64_t shape[2] = {(uint64_t)1 << 20, (uint64_t)1 << 20};
        cr_slice sl = {0, 0, 0, 0};
        cr_container(&b, 1);
        cr_tensor(&b, CR_INDEX_IMPLICIT, 0, 2, shape, 1.0f, 4, 0, 1, &sl);
        cr_seal(&b);
        add_bad("shape_oversized", b.d, b.n, FC_ERR_LIMIT);
        cr_free(&b);
        cr_container(&b, (uint64_t)1 << 40);
        cr_seal(&b);
        add_bad("count_oversized", b.d, b.n, FC_ERR_LIMIT);
        cr_free(&b);
    }
    /* a non-increasing index: tensor 3 of "multi" has the explicit index 10 */
    cr_walk(multi, msize, &L);
    if (L.count < 4 || L.t[3].index == CR_NONE) die("expected an explicit index", "multi");
    bad_edit("index_order", multi, msize, L.t[3].index, 2, FC_ERR_CORRUPT);
}

/* PREDICT slices (FORMAT.md §7.6) where the syntax forbids them, from the
 * "predict" container (its first slice must be a PREDICT slice). */
static void make_bad_predict(const uint8_t *c, size_t size)
{
    cr_layout L;
    uint8_t b;
    if (!cr_walk(c, size, &L) || L.nslices < 1) die("cannot walk", "predict");
    b = c[L.slice_modebyte[0]];
    if ((b & 3u) != FC_MODE_DENSE || !((b >> 2) & FC_SLICE_PREDICT)) die("expected a PREDICT slice", "predict");
    /* with ROWKIND (without ROWSCALE: with it the bit is SCALECTX, §7.8) */
    bad_edit("predict_rowkind", c, size, L.slice_modebyte[0],
             (uint8_t)((b | FC_SLICE_ROWKIND << 2) & ~(FC_SLICE_ROWSCALE << 2)), FC_ERR_CORRUPT);
    /* in grouped mode */
    bad_edit("predict_grouped", c, size, L.slice_modebyte[0], (uint8_t)((b & ~3u) | FC_MODE_GROUPED),
             FC_ERR_CORRUPT);
    /* rank bits without PREDICT */
    bad_edit("predict_rank_alone", c, size, L.slice_modebyte[0],
             (uint8_t)((b & ~(FC_SLICE_PREDICT << 2)) | FC_SLICE_RANK8 << 2), FC_ERR_CORRUPT);
    /* CLASSCTX (§7.7; the encoder chose it for this slice, so ok_predict
     * decodes it) without PREDICT, and in a grouped slice */
    if (!((b >> 2) & FC_SLICE_CLASSCTX)) die("expected a CLASSCTX slice", "predict");
    bad_edit("classctx_alone", c, size, L.slice_modebyte[0],
             (uint8_t)(b & ~((FC_SLICE_PREDICT | FC_SLICE_ROWSCALE | FC_SLICE_RANK8) << 2)), FC_ERR_CORRUPT);
    bad_edit("classctx_grouped", c, size, L.slice_modebyte[0],
             (uint8_t)(((b & ~3u) | FC_MODE_GROUPED) & ~((FC_SLICE_PREDICT | FC_SLICE_ROWSCALE | FC_SLICE_RANK8) << 2)),
             FC_ERR_CORRUPT);
}

/* SCALECTX (FORMAT.md §7.8) from the "scalectx" container (its first slice
 * must be one, so ok_scalectx decodes it): without ROWSCALE it is corrupt. */
static void make_bad_scalectx(const uint8_t *c, size_t size)
{
    cr_layout L;
    uint8_t b;
    if (!cr_walk(c, size, &L) || L.nslices < 1) die("cannot walk", "scalectx");
    b = c[L.slice_modebyte[0]];
    if ((b & 3u) != FC_MODE_DENSE || !((b >> 2) & FC_SLICE_PREDICT) || !((b >> 2) & FC_SLICE_SCALECTX) ||
        !((b >> 2) & FC_SLICE_ROWSCALE))
        die("expected a SCALECTX slice", "scalectx");
    bad_edit("scalectx_no_rowscale", c, size, L.slice_modebyte[0], (uint8_t)(b & ~(FC_SLICE_ROWSCALE << 2)),
             FC_ERR_CORRUPT);
}

/* SWAPPED (FORMAT.md §4) from the "swapped" container (its first tensor
 * must be swapped): never together with TRANSPOSED or REFERENCE. */
static void make_bad_swapped(const uint8_t *c, size_t size)
{
    cr_layout L;
    uint8_t q;
    if (!cr_walk(c, size, &L) || L.count < 1 || L.t[0].quant == CR_NONE) die("cannot walk", "swapped");
    q = c[L.t[0].quant];
    if (!(q & 0x10u)) die("expected a SWAPPED tensor", "swapped");
    bad_edit("swapped_transposed", c, size, L.t[0].quant, (uint8_t)(q | 0x04u), FC_ERR_CORRUPT);
    bad_edit("swapped_reference", c, size, L.t[0].quant, (uint8_t)(q | 0x08u), FC_ERR_CORRUPT);
}

/* ROWFINE (FORMAT.md §6.2 step 2a, §8.1) from the "rowkind" container (its
 * first slice must be a dense ROWKIND slice without PREDICT): without
 * ROWKIND the bit is not a flag of a slice without PREDICT. */
static void make_bad_rowfine(const uint8_t *c, size_t size)
{
    cr_layout L;
    uint8_t b;
    if (!cr_walk(c, size, &L) || L.nslices < 1) die("cannot walk", "rowkind");
    b = c[L.slice_modebyte[0]];
    if ((b & 3u) != FC_MODE_DENSE || !((b >> 2) & FC_SLICE_ROWKIND) || ((b >> 2) & FC_SLICE_PREDICT))
        die("expected a ROWKIND slice", "rowkind");
    bad_edit("rowfine_no_rowkind", c, size, L.slice_modebyte[0],
             (uint8_t)((b | (FC_SLICE_ROWFINE << 2)) & ~(FC_SLICE_ROWKIND << 2)), FC_ERR_CORRUPT);
}

/* A container of one 1-D tensor (values or levels, `quant`) encoded with
 * step 1, its step then replaced by `step` (CRC recomputed): a CRC-valid
 * container whose reconstruction would not be a finite float32. */
static void bad_overflow(const char *name, const float *values, const int32_t *levels, size_t n,
                         int quant, float step)
{
    uint64_t shape[1];
    fc_tensor t;
    fc_encode_options o;
    cr_layout L;
    uint8_t *c;
    size_t size;
    shape[0] = n;
    t = tu_tensor(0, 1, shape);
    t.values = values;
    t.levels = levels;
    t.step = 1.0;
    fc_encode_options_init(&o);
    o.threads = 1;
    o.quantizer = quant;
    o.lambda = quant == FC_QUANT_TRELLIS ? 0.1155 : 0.0;
    o.dither_seed = 77;
    if (tu_encode(&t, 1, &o, &c, &size, NULL) != FC_OK) die("encode failed", name);
    if (!cr_walk(c, size, &L) || L.t[0].step == CR_NONE) die("cannot walk", name);
    memcpy(c + L.t[0].step, &step, 4); /* little-endian hosts, as craft.h */
    cr_reseal(c, size);
    add_bad(name, c, size, FC_ERR_CORRUPT);
    free(c);
}

/* Containers whose values would overflow float32 are corrupt, for every
 * quantizer (the decoder bounds the level per slice, exactly). */
static void make_bad_overflow(void)
{
    /* uniform: 78084108 * step is below FLT_MAX in real arithmetic, but
     * float32(78084108) rounds up and the float32 product is infinite */
    const int32_t big[4] = {78084108, -78084108, 0, 1};
    const int32_t large[4] = {1000, -1000, 0, 1};
    float v[16];
    int i;
    bad_overflow("overflow_uniform_rounding", NULL, big, 4, FC_QUANT_UNIFORM,
                 ldexpf(0x1.b808f2p0f, 101));
    /* uniform: a huge step times a large level */
    bad_overflow("overflow_uniform_level", NULL, large, 4, FC_QUANT_UNIFORM, 1e36f);
    for (i = 0; i < 16; i++) v[i] = (float)(i % 3) - 1.0f;
    /* dithered: level +-1 at step FLT_MAX reconstructs beyond FLT_MAX
     * once the dither is subtracted */
    bad_overflow("overflow_dither", v, NULL, 16, FC_QUANT_DITHER, 3.4028234663852886e38f);
    for (i = 0; i < 16; i++) v[i] = (float)(i * 37 % 19) - 9.0f;
    /* trellis: reconstruction indices up to about 9 at step FLT_MAX / 4 */
    bad_overflow("overflow_trellis", v, NULL, 16, FC_QUANT_TRELLIS, 3.4028234663852886e38f / 4.0f);
}

/* Small valid seeds of every mode for the fuzzer. */
static void make_seeds(void)
{
    static const uint64_t shapes[4][2] = {{1, 1}, {1, 17}, {3, 20}, {9, 16}};
    int mode, si, n = 0;
    for (mode = FC_MODE_DENSE; mode <= FC_MODE_RUNS; mode++) {
        for (si = 0; si < 4; si++) {
            int32_t lv[144];
            fc_tensor t = tu_tensor(0, 2, shapes[si]);
            fc_encode_options o;
            tu_rng r = tu_seed(900 + (uint64_t)n);
            uint8_t *c;
            size_t size, k;
            char name[64];
            for (k = 0; k < 144; k++) lv[k] = tu_below(&r, 3) ? 0 : (int32_t)tu_below(&r, 9) - 4;
            lv[0] = 1;
            t.levels = lv;
            t.step = 0.5;
            fc_encode_options_init(&o);
            o.mode = mode;
            o.threads = 1;
            o.max_gtx = 1 + (unsigned)(n % FC_MAX_GTX);
            o.window_set = (unsigned)n % 8;
            if (tu_encode(&t, 1, &o, &c, &size, NULL) != FC_OK) die("encode failed", "seed");
            snprintf(name, sizeof name, "seed_mode%d_%dx%d.fcd", mode, (int)shapes[si][0],
                     (int)shapes[si][1]);
            put_file(corpus_dir, name, c, size);
            free(c);
            n++;
        }
    }
    /* Float seeds of the trellis and dithered quantizers in every mode. */
    for (mode = FC_MODE_DENSE; mode <= FC_MODE_RUNS; mode++) {
        int quant;
        for (quant = FC_QUANT_TRELLIS; quant <= FC_QUANT_DITHER; quant++) {
            float v[144];
            uint64_t shape[2] = {9, 16};
            fc_tensor t = tu_tensor(0, 2, shape);
            fc_encode_options o;
            tu_rng r = tu_seed(950 + (uint64_t)n);
            uint8_t *c;
            size_t size;
            char name[64];
            tu_fill_laplace(&r, v, 144, 1.0);
            if (mode == FC_MODE_RUNS) tu_topk(v, 144, 20);
            t.values = v;
            t.step = 0.5;
            fc_encode_options_init(&o);
            o.mode = mode;
            o.threads = 1;
            o.quantizer = quant;
            o.lambda = quant == FC_QUANT_DITHER ? 0.0 : 0.1155;
            o.dither_seed = 1000 + (uint64_t)n;
            if (tu_encode(&t, 1, &o, &c, &size, NULL) != FC_OK) die("encode failed", "seed");
            snprintf(name, sizeof name, "seed_quant%d_mode%d_9x16.fcd", quant, mode);
            put_file(corpus_dir, name, c, size);
            free(c);
            n++;
        }
    }
}

int main(int argc, char **argv)
{
    uint8_t *dense = NULL, *multi = NULL, *predict = NULL, *scalectx = NULL, *swapped = NULL,
            *constrows = NULL, *c;
    size_t dsize = 0, msize = 0, psize = 0, ssize = 0, wsize = 0, csize = 0, size;
    char path[1024];
    int which;
    if (argc != 3) {
        fprintf(stderr, "usage: gen_golden GOLDEN_DIR CORPUS_DIR\n");
        return 2;
    }
    golden_dir = argv[1];
    corpus_dir = argv[2];
    snprintf(path, sizeof path, "%s/MANIFEST", golden_dir);
    manifest = fopen(path, "w");
    if (!manifest) die("cannot write", path);
    fprintf(manifest, "# Generated by `make golden` (tests/gen_golden.c): FILE EXPECTED_RESULT\n");
    for (which = 0; (c = add_ok(which, &size)) != NULL; which++) {
        if (which == 8) { /* "params": a small dense container */
            dense = c;
            dsize = size;
        } else if (which == 4) {
            multi = c;
            msize = size;
        } else if (which == 17) {
            predict = c;
            psize = size;
        } else if (which == 20) {
            scalectx = c;
            ssize = size;
        } else if (which == 21) {
            swapped = c;
            wsize = size;
        } else if (which == 15) {
            constrows = c;
            csize = size;
        } else if (which == 23) {
            /* a compact container read without the caller's shapes */
            add_bad("compact_no_shapes", c, size, FC_ERR_MISMATCH);
            free(c);
        } else {
            free(c);
        }
    }
    if (!dense || !multi || !predict || !scalectx || !swapped || !constrows)
        die("missing cases", "params/multi/predict/scalectx/swapped/rowkind");
    make_bad(dense, dsize, multi, msize);
    make_bad_predict(predict, psize);
    free(predict);
    make_bad_scalectx(scalectx, ssize);
    free(scalectx);
    make_bad_swapped(swapped, wsize);
    free(swapped);
    make_bad_rowfine(constrows, csize);
    free(constrows);
    make_bad_overflow();
    make_seeds();
    free(dense);
    free(multi);
    if (fclose(manifest) != 0) die("cannot write", "MANIFEST");
    printf("gen_golden: wrote %s and %s\n", golden_dir, corpus_dir);
    return 0;
}
