/*
 * test_golden.c - the committed golden bitstreams (tests/golden/):
 *
 *   1. every file listed in MANIFEST decodes to its expected result:
 *      ok_*.fcd bit-exactly to ok_*.levels (levels, shapes, indices,
 *      steps; values = level * step), bad_*.fcd to the listed error;
 *   2. every .fcd in the directory is listed (nothing silently skipped);
 *   3. the encoder still produces the committed ok_*.fcd bytes from the
 *      inputs in golden_cases.h (determinism across versions/platforms);
 *   4. every ok_*.fcd splits by tensor into parts that decode to its
 *      tensors' levels and join back to the same bytes (fc_split, fc_join).
 *
 *   test_golden GOLDEN_DIR
 *
 * The bitstream is still being tuned: after an INTENTIONAL change of the
 * format or of the encoder's output, run `make golden` in codec_c/ and
 * commit tests/golden/ and fuzz/corpus/ with the change.
 */
#include "test_util.h"

#include <dirent.h>

#include "craft.h"
#include "golden_cases.h"

static const char *dir;
static unsigned long failures;

#define HINT                                                                          \
    "\n  The golden bitstreams no longer match.  If the bitstream format or the encoder\n" \
    "  changed ON PURPOSE, regenerate them in one step and commit the result:\n"          \
    "      make -C codec_c golden   (then: git add codec_c/tests/golden codec_c/fuzz/corpus)\n" \
    "  Otherwise this is a regression (see the lines above: decode or encoder output).\n"

static void fail(const char *file, const char *fmt, const char *a, const char *b)
{
    fprintf(stderr, "test_golden: %s: ", file);
    fprintf(stderr, fmt, a, b);
    fprintf(stderr, "\n");
    failures++;
}

static uint8_t *load(const char *name, size_t *size)
{
    char path[1024];
    uint8_t *raw, *g;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    raw = tu_read_file(path, size);
    if (!raw) return NULL;
    g = tu_guarded_copy(raw, *size); /* decoder over-reads trap */
    free(raw);
    return g;
}

static int result_number(const char *name)
{
    int i;
    for (i = 0; i < 64; i++)
        if (strcmp(fc_result_name(i), name) == 0) return i;
    return -1;
}

/* ok file, split by tensor (fc_split): every part decodes to its tensor's
 * levels, and joining the parts (fc_join) gives the file back byte for
 * byte. */
static void check_split(const char *file, const uint8_t *c, size_t size, const gl_tensor *want,
                        size_t count)
{
    uint8_t **parts, *joined;
    size_t *sizes, n, i, jsize, bad;
    int rc = tu_split(c, size, NULL, &parts, &sizes, &n);
    tu_checks++;
    if (rc != FC_OK || n != count) {
        fail(file, "fc_split: %s%s", fc_result_name(rc), rc == FC_OK ? " (another count)" : "");
        tu_free_parts(parts, sizes, n);
        return;
    }
    for (i = 0; i < n; i++) {
        fc_tensor_info info;
        fc_decode_target tg;
        size_t one;
        memset(&tg, 0, sizeof tg);
        tu_checks++;
        if (fc_inspect(parts[i], sizes[i], NULL, &info, 1, &one) != FC_OK || one != 1 ||
            info.index != want[i].index || info.numel != want[i].numel ||
            info.quantizer != want[i].quantizer || info.dither_seed != want[i].dither_seed) {
            fail(file, "part %s: header differs from the tensor's%s", "", "");
            continue;
        }
        tg.levels = (int32_t *)tu_guarded_alloc(sizeof(int32_t) * info.numel);
        rc = fc_decode(parts[i], sizes[i], NULL, &tg, 1);
        tu_checks++;
        if (rc != FC_OK || memcmp(tg.levels, want[i].levels, sizeof(int32_t) * info.numel) != 0)
            fail(file, "a part decodes to other levels (%s)%s", fc_result_name(rc), "");
        tu_guarded_free(tg.levels);
    }
    rc = tu_join(parts, sizes, n, NULL, &joined, &jsize, &bad);
    tu_checks++;
    if (rc != FC_OK || jsize != size || memcmp(joined, c, size) != 0)
        fail(file, "fc_join of its parts does not give it back (%s)%s", fc_result_name(rc), "");
    if (rc == FC_OK) tu_guarded_free(joined);
    tu_free_parts(parts, sizes, n);
}

/* A levels target that takes the rows as they are decodes in place (its
 * rows are the decoder's previous rows); without one the decoder keeps
 * its own ring of rows.  Both give the same values, bit for bit. */
static void check_values_only(const char *file, const uint8_t *c, size_t size,
                              const fc_decode_options *o, const fc_tensor_info *info,
                              const fc_decode_target *with_levels, size_t count)
{
    fc_decode_target tg[GC_MAX_TENSORS];
    size_t i;
    int rc;
    memset(tg, 0, sizeof tg);
    for (i = 0; i < count; i++) tg[i].values = (float *)tu_guarded_alloc(sizeof(float) * info[i].numel);
    rc = fc_decode(c, size, o, tg, count);
    tu_checks++;
    if (rc != FC_OK) fail(file, "fc_decode into values only: %s%s", fc_result_name(rc), " (want FC_OK)");
    for (i = 0; i < count && rc == FC_OK; i++) {
        char what[32];
        snprintf(what, sizeof what, "%zu", i);
        tu_checks++;
        if (memcmp(tg[i].values, with_levels[i].values, sizeof(float) * info[i].numel) != 0)
            fail(file, "tensor %s: values decoded without a levels target differ%s", what, "");
    }
    for (i = 0; i < count; i++) tu_guarded_free(tg[i].values);
}

/* ok file: decode and compare with NAME.levels. */
static void check_ok(const char *file)
{
    char lfile[512];
    size_t size, lsize, count = 0, i;
    uint8_t *c = load(file, &size), *lraw;
    gl_tensor *want = NULL;
    long nwant;
    fc_tensor_info info[GC_MAX_TENSORS];
    fc_decode_target tg[GC_MAX_TENSORS];
    fc_shape shapes[GC_MAX_TENSORS];
    fc_decode_options opts, *o = NULL;
    int rc;
    size_t len = strlen(file);
    TU_CHECKF(c != NULL, "cannot read %s", file);
    TU_CHECK(len > 4 && len < sizeof lfile);
    memcpy(lfile, file, len - 4);
    strcpy(lfile + len - 4, ".levels");
    lraw = load(lfile, &lsize);
    TU_CHECKF(lraw != NULL, "cannot read %s", lfile);
    nwant = gl_read(lraw, lsize, &want);
    TU_CHECKF(nwant >= 0 && nwant <= GC_MAX_TENSORS, "%s is malformed", lfile);
    if (size > 5 && (c[5] & 2u)) {
        /* a compact container (FORMAT.md §2): the shapes are the caller's */
        memset(shapes, 0, sizeof shapes);
        for (i = 0; i < (size_t)nwant; i++) {
            shapes[i].ndim = want[i].ndim;
            memcpy(shapes[i].shape, want[i].shape, sizeof(shapes[i].shape));
        }
        fc_decode_options_init(&opts);
        opts.expected = shapes;
        opts.expected_count = (size_t)nwant;
        o = &opts;
    }
    rc = fc_inspect(c, size, o, info, GC_MAX_TENSORS, &count);
    tu_checks++;
    if (rc != FC_OK || count != (size_t)nwant) {
        fail(file, "fc_inspect: %s (want FC_OK and the tensors of %s)", fc_result_name(rc), lfile);
        goto out;
    }
    memset(tg, 0, sizeof tg);
    for (i = 0; i < count; i++) {
        tg[i].levels = (int32_t *)tu_guarded_alloc(sizeof(int32_t) * info[i].numel);
        tg[i].values = (float *)tu_guarded_alloc(sizeof(float) * info[i].numel);
    }
    rc = fc_decode(c, size, o, tg, count);
    tu_checks++;
    if (rc != FC_OK) {
        fail(file, "fc_decode: %s%s", fc_result_name(rc), " (want FC_OK)");
    } else {
        for (i = 0; i < count; i++) {
            float step = (float)info[i].step;
            uint32_t bits;
            uint64_t k;
            char what[64];
            memcpy(&bits, &step, 4);
            snprintf(what, sizeof what, "tensor %zu", i);
            tu_checks++;
            if (info[i].index != want[i].index || info[i].ndim != want[i].ndim ||
                memcmp(info[i].shape, want[i].shape, sizeof(uint64_t) * info[i].ndim) != 0 ||
                info[i].numel != want[i].numel || bits != want[i].step_bits ||
                info[i].quantizer != want[i].quantizer || info[i].dither_seed != want[i].dither_seed) {
                fail(file, "%s: index, shape, step or quantizer differ from %s", what, lfile);
                continue;
            }
            for (k = 0; k < info[i].numel; k++) {
                if (tg[i].levels[k] != want[i].levels[k] ||
                    !gl_value_ok(&want[i], k, tg[i].levels[k], tg[i].values[k]))
                    break;
            }
            tu_checks++;
            if (k < info[i].numel) fail(file, "%s: decoded levels differ from %s", what, lfile);
        }
        if (!o) check_split(file, c, size, want, count); /* compact: test_container */
        check_values_only(file, c, size, o, info, tg, count);
    }
    for (i = 0; i < count; i++) {
        tu_guarded_free(tg[i].levels);
        tu_guarded_free(tg[i].values);
    }
out:
    gl_free(want, (size_t)(nwant > 0 ? nwant : 0));
    tu_guarded_free(c);
    tu_guarded_free(lraw);
}

/* bad file: inspect and decode must both fail with the listed code (decode
 * may only get further than inspect: payload errors). */
static void check_bad(const char *file, int want)
{
    size_t size, count = 0, i;
    uint8_t *c = load(file, &size);
    fc_tensor_info info[GC_MAX_TENSORS];
    fc_decode_target tg[GC_MAX_TENSORS];
    int rc;
    TU_CHECKF(c != NULL, "cannot read %s", file);
    rc = fc_inspect(c, size, NULL, info, GC_MAX_TENSORS, &count);
    if (rc == FC_OK) {
        TU_CHECKF(count <= GC_MAX_TENSORS, "%s: %zu tensors", file, count);
        memset(tg, 0, sizeof tg);
        for (i = 0; i < count; i++)
            tg[i].levels = (int32_t *)tu_guarded_alloc(sizeof(int32_t) * info[i].numel);
        rc = fc_decode(c, size, NULL, tg, count);
        for (i = 0; i < count; i++) tu_guarded_free(tg[i].levels);
    } else {
        int rc2 = fc_decode(c, size, NULL, NULL, 0);
        TU_CHECKF(rc2 == rc, "%s: fc_decode says %s, fc_inspect %s", file, fc_result_name(rc2),
                  fc_result_name(rc));
    }
    tu_checks++;
    if (rc != want) fail(file, "decodes with %s, MANIFEST expects %s", fc_result_name(rc), fc_result_name(want));
    tu_guarded_free(c);
}

/* The encoder reproduces every ok file from its inputs. */
static void check_encoder(void)
{
    int which;
    gc_set s;
    for (which = 0; gc_build(which, &s); which++) {
        char file[256];
        size_t size, csize;
        uint8_t *c, *committed;
        snprintf(file, sizeof file, "ok_%s.fcd", s.name);
        committed = load(file, &csize);
        TU_CHECKF(committed != NULL, "%s is missing: run `make golden`", file);
        TU_CHECK_RC(tu_encode(s.t, s.count, &s.o, &c, &size, NULL), FC_OK);
        tu_checks++;
        if (size != csize || memcmp(c, committed, size) != 0) {
            char sizes[64];
            snprintf(sizes, sizeof sizes, "%zu bytes now, %zu committed", size, csize);
            fail(file, "the encoder's output changed (%s)%s", sizes, "");
        }
        free(c);
        tu_guarded_free(committed);
        gc_free(&s);
    }
}

int main(int argc, char **argv)
{
    char path[1024], line[512];
    FILE *f;
    size_t listed_n = 0, i;
    char listed[256][128];
    DIR *d;
    struct dirent *e;
    if (argc != 2) {
        fprintf(stderr, "usage: test_golden GOLDEN_DIR\n");
        return 2;
    }
    dir = argv[1];
    snprintf(path, sizeof path, "%s/MANIFEST", dir);
    f = fopen(path, "r");
    TU_CHECKF(f != NULL, "cannot open %s: run `make golden`", path);
    while (fgets(line, sizeof line, f)) {
        char name[128], code[64];
        int want;
        if (line[0] == '#' || line[0] == '\n') continue;
        TU_CHECKF(sscanf(line, "%127s %63s", name, code) == 2, "bad MANIFEST line: %s", line);
        want = result_number(code);
        TU_CHECKF(want >= 0, "unknown result %s in MANIFEST", code);
        TU_CHECK(listed_n < 256);
        strcpy(listed[listed_n++], name);
        if (want == FC_OK) check_ok(name);
        else check_bad(name, want);
    }
    fclose(f);
    TU_CHECK(listed_n >= 10);
    /* Every .fcd in the directory is listed. */
    d = opendir(dir);
    TU_CHECK(d != NULL);
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        int found = 0;
        if (len < 4 || strcmp(e->d_name + len - 4, ".fcd") != 0) continue;
        for (i = 0; i < listed_n; i++) found |= strcmp(listed[i], e->d_name) == 0;
        TU_CHECKF(found, "%s is not in MANIFEST (run `make golden`)", e->d_name);
    }
    closedir(d);
    check_encoder();
    if (failures) {
        fprintf(stderr, "test_golden: %lu failure(s)\n" HINT, failures);
        return 1;
    }
    return tu_finish("test_golden");
}
