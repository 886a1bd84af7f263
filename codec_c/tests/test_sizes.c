/*
 * test_sizes.c - the compressed-size regression table (zstd's
 * tests/regression/results.csv, for us tests/sizes.tsv).
 *
 *   test_sizes FILE             compare with FILE: fail when a size grew by
 *                               more than 0.5 % (or a row is missing/stale)
 *   test_sizes --update FILE    rewrite FILE (`make sizes-update`)
 *
 * Inputs are deterministic synthetic updates (platform-independent
 * generators): a dense Laplacian update and top-10 % / 1 % / 0.1 % sparse
 * ones, and rows in which every value has the same magnitude (random
 * signs), coded in every mode, with plain rounding and with RD quantization,
 * and in automatic mode with the trellis (4 and 8 states) and dithered
 * quantizers.
 * Shrinking sizes print a note: update the table so the gain is kept.
 */
#include "test_util.h"

#define ROWS 256
#define COLS 512
#define N_ELEMS (ROWS * COLS)
#define MAX_ROWS 96
#define TOLERANCE 0.005

typedef struct row {
    char name[64];
    long bytes;
} row;

static const struct {
    const char *name;
    size_t keep; /* top-k; 0 = dense */
    int const_rows; /* 1: rows of equal magnitudes (tu_fill_const_rows),
                       2: low rank plus noise (tu_fill_lowrank) */
} inputs[] = {
    {"dense", 0, 0},
    {"top10", N_ELEMS / 10, 0},
    {"top1", N_ELEMS / 100, 0},
    {"top0.1", N_ELEMS / 1000, 0},
    {"constrows", 0, 1},
    {"lowrank", 0, 2},
};

static const struct {
    const char *name;
    int mode;
} modes[] = {
    {"auto", FC_MODE_AUTO},
    {"dense", FC_MODE_DENSE},
    {"grouped", FC_MODE_GROUPED},
    {"runs", FC_MODE_RUNS},
};

static size_t measure(row *out)
{
    float *v = (float *)malloc(sizeof(float) * N_ELEMS);
    size_t n = 0, ii, mi;
    int lam;
    TU_CHECK(v != NULL);
    for (ii = 0; ii < sizeof inputs / sizeof inputs[0]; ii++) {
        tu_rng r = tu_seed(2024);
        uint64_t shape[2] = {ROWS, COLS};
        if (inputs[ii].const_rows == 2)
            tu_fill_lowrank(&r, v, ROWS, COLS, 3, 0.01);
        else if (inputs[ii].const_rows)
            tu_fill_const_rows(&r, v, ROWS, COLS, 0.01);
        else
            tu_fill_laplace(&r, v, N_ELEMS, 0.01);
        if (inputs[ii].keep) tu_topk(v, N_ELEMS, inputs[ii].keep);
        for (mi = 0; mi < sizeof modes / sizeof modes[0]; mi++) {
            for (lam = 0; lam < 2; lam++) {
                fc_tensor t = tu_tensor(0, 2, shape);
                fc_encode_options o;
                uint8_t *c;
                size_t size;
                fc_encode_options_init(&o);
                o.mode = modes[mi].mode;
                o.lambda = lam ? 0.1155 : 0.0;
                o.S = 64;
                o.threads = 2;
                t.values = v;
                TU_CHECK_RC(tu_encode(&t, 1, &o, &c, &size, NULL), FC_OK);
                free(c);
                TU_CHECK(n < MAX_ROWS);
                snprintf(out[n].name, sizeof out[n].name, "%s/%s/%s", inputs[ii].name,
                         modes[mi].name, lam ? "rdoq" : "round");
                out[n].bytes = (long)size;
                n++;
            }
        }
        /* The trellis and dithered quantizers (automatic modes). */
        for (mi = 0; mi < 3; mi++) {
            static const char *qname[3] = {"trellis", "trellis8", "dither"};
            fc_tensor t = tu_tensor(0, 2, shape);
            fc_encode_options o;
            uint8_t *c;
            size_t size;
            fc_encode_options_init(&o);
            o.quantizer = (int32_t)mi + FC_QUANT_TRELLIS;
            o.lambda = o.quantizer == FC_QUANT_DITHER ? 0.0 : 0.1155;
            o.dither_seed = 2024;
            o.S = 64;
            o.threads = 2;
            t.values = v;
            TU_CHECK_RC(tu_encode(&t, 1, &o, &c, &size, NULL), FC_OK);
            free(c);
            TU_CHECK(n < MAX_ROWS);
            snprintf(out[n].name, sizeof out[n].name, "%s/auto/%s", inputs[ii].name, qname[mi]);
            out[n].bytes = (long)size;
            n++;
        }
    }
    free(v);
    return n;
}

static size_t load(const char *path, row *rows)
{
    FILE *f = fopen(path, "r");
    char line[256];
    size_t n = 0;
    if (!f) return 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || line[0] == '\n') continue;
        TU_CHECKF(n < MAX_ROWS && sscanf(line, "%63s %ld", rows[n].name, &rows[n].bytes) == 2,
                  "%s: bad line: %s", path, line);
        n++;
    }
    fclose(f);
    return n;
}

static int save(const char *path, const row *rows, size_t n)
{
    FILE *f = fopen(path, "w");
    size_t i;
    if (!f) return 0;
    fprintf(f, "# Compressed sizes in bytes of deterministic synthetic updates (%dx%d float32,\n",
            ROWS, COLS);
    fprintf(f, "# S = 64; round: lambda 0, rdoq and trellis: lambda 0.1155, dither: seed 2024;\n");
    fprintf(f, "# constrows: every row one magnitude, random signs;\n");
    fprintf(f, "# lowrank: 3 outer products plus noise).\n");
    fprintf(f, "# test_sizes fails when a size grows by more than 0.5 %%; after an intended\n");
    fprintf(f, "# change run `make sizes-update`.\n");
    fprintf(f, "# input/mode/quantizer\tbytes\n");
    for (i = 0; i < n; i++) fprintf(f, "%s\t%ld\n", rows[i].name, rows[i].bytes);
    return fclose(f) == 0;
}

int main(int argc, char **argv)
{
    row now[MAX_ROWS], old[MAX_ROWS];
    size_t n, nold, i, j;
    int update = argc == 3 && strcmp(argv[1], "--update") == 0;
    int grew = 0, shrank = 0, missing = 0;
    long total = 0, total_old = 0;
    const char *path = argv[argc - 1];
    if (!(argc == 2 || update)) {
        fprintf(stderr, "usage: test_sizes [--update] FILE\n");
        return 2;
    }
    n = measure(now);
    if (update) {
        TU_CHECKF(save(path, now, n), "cannot write %s", path);
        printf("test_sizes: wrote %zu sizes to %s\n", n, path);
        return 0;
    }
    nold = load(path, old);
    TU_CHECKF(nold > 0, "cannot read %s (run `make sizes-update`)", path);
    printf("  %-24s %9s %9s %8s\n", "input/mode/quantizer", "bytes", "table", "change");
    for (i = 0; i < n; i++) {
        for (j = 0; j < nold && strcmp(old[j].name, now[i].name) != 0; j++) continue;
        total += now[i].bytes;
        if (j == nold) {
            printf("  %-24s %9ld %9s   NEW ROW\n", now[i].name, now[i].bytes, "-");
            missing++;
            continue;
        }
        {
            double change = (double)(now[i].bytes - old[j].bytes) / (double)old[j].bytes;
            const char *mark = "";
            total_old += old[j].bytes;
            if (change > TOLERANCE) mark = "  GREW", grew++;
            else if (change < -TOLERANCE) mark = "  smaller", shrank++;
            printf("  %-24s %9ld %9ld %+7.2f%%%s\n", now[i].name, now[i].bytes, old[j].bytes,
                   100.0 * change, mark);
        }
    }
    for (j = 0; j < nold; j++) {
        for (i = 0; i < n && strcmp(old[j].name, now[i].name) != 0; i++) continue;
        if (i == n) {
            printf("  %-24s %9s %9ld   STALE ROW\n", old[j].name, "-", old[j].bytes);
            missing++;
        }
    }
    printf("  %-24s %9ld %9ld %+7.2f%%\n", "total", total, total_old,
           total_old ? 100.0 * (double)(total - total_old) / (double)total_old : 0.0);
    if (shrank)
        printf("test_sizes: note: %d size(s) shrank by more than 0.5 %%: run `make sizes-update` "
               "and commit tests/sizes.tsv to keep the gain\n",
               shrank);
    TU_CHECKF(missing == 0, "%d row(s) new or stale: run `make sizes-update`", missing);
    TU_CHECKF(grew == 0,
              "%d size(s) grew by more than 0.5 %%; if that is an accepted trade-off, run `make "
              "sizes-update` and commit tests/sizes.tsv",
              grew);
    return tu_finish("test_sizes");
}
