/*
 * roundtrip.c - using fedcodec from C: encode two tensors of a model
 * update, look inside the container, decode one into float32 values and
 * accumulate both into a server-side sum (acc += weight * decoded).
 *
 * Build (from codec_c/):  make lib
 *   cc -std=c99 -Iinclude examples/roundtrip.c build/libfedcodec.a -lm -pthread
 * `make test` builds and runs it.  It exits non-zero if anything fails.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fedcodec.h"

#define ROWS 64
#define COLS 128

static int fail(const char *what, int rc)
{
    fprintf(stderr, "roundtrip: %s: %s\n", what, fc_result_name(rc));
    return 1;
}

int main(void)
{
    static float weight[ROWS * COLS], bias[COLS], recon[ROWS * COLS];
    static float decoded[ROWS * COLS];
    static double acc_weight[ROWS * COLS], acc_bias[COLS];
    fc_tensor tensors[2];
    fc_tensor_stats stats[2];
    fc_encode_options eopt;
    fc_tensor_info info[2];
    fc_decode_target targets[2];
    uint8_t *buf;
    size_t cap, size, count, i;
    int rc;

    /* A made-up update: smooth values, a few exact zeros. */
    for (i = 0; i < ROWS * COLS; i++) weight[i] = 0.01f * (float)sin(0.37 * (double)i);
    for (i = 0; i < COLS; i++) bias[i] = (i % 3) ? 0.002f * (float)i : 0.0f;

    memset(tensors, 0, sizeof(tensors));
    tensors[0].index = 0; /* indices: strictly increasing */
    tensors[0].ndim = 2;
    tensors[0].shape[0] = ROWS;
    tensors[0].shape[1] = COLS;
    tensors[0].values = weight;
    tensors[0].recon = recon; /* what the server will decode: for error feedback */
    tensors[1].index = 1;
    tensors[1].ndim = 1;
    tensors[1].shape[0] = COLS;
    tensors[1].values = bias;

    fc_encode_options_init(&eopt);
    eopt.lambda = 0.1155; /* ln(2)/6: RD quantization */
    eopt.S = 64;          /* step = 2|w|max / (2|w|max / sigma_min + S) */

    cap = fc_encode_bound(tensors, 2);
    buf = (uint8_t *)malloc(cap);
    if (!buf) return 1;
    rc = fc_encode(tensors, 2, &eopt, buf, cap, &size, stats, NULL);
    if (rc != FC_OK) return fail("fc_encode", rc);
    printf("encoded %d floats into %zu bytes (%.3f bits/weight)\n", ROWS * COLS + COLS, size,
           8.0 * (double)size / (ROWS * COLS + COLS));
    for (i = 0; i < 2; i++)
        printf("  tensor %zu: step %.6g, %llu nonzeros, %llu bytes, %u slice(s)\n", i, stats[i].step,
               (unsigned long long)stats[i].nonzeros, (unsigned long long)stats[i].bytes,
               stats[i].slices);

    /* The receiving side: check the container, then decode. */
    rc = fc_inspect(buf, size, NULL, info, 2, &count);
    if (rc != FC_OK) return fail("fc_inspect", rc);
    if (count != 2 || info[0].numel != ROWS * COLS || info[1].numel != COLS) return 1;

    memset(targets, 0, sizeof(targets));
    targets[0].values = decoded;
    targets[0].acc = acc_weight; /* acc += weight * decoded */
    targets[0].acc_dtype = FC_ACC_F64;
    targets[0].weight = 0.5;
    targets[1].acc = acc_bias;
    targets[1].acc_dtype = FC_ACC_F64;
    targets[1].weight = 0.5;
    rc = fc_decode(buf, size, NULL, targets, 2);
    if (rc != FC_OK) return fail("fc_decode", rc);

    /* The encoder's reconstruction is bit-identical to the decoded values. */
    if (memcmp(decoded, recon, sizeof(recon)) != 0) {
        fprintf(stderr, "roundtrip: recon differs from the decoded values\n");
        return 1;
    }
    for (i = 0; i < ROWS * COLS; i++) {
        /* RD quantization stays within a few steps of the input. */
        if (acc_weight[i] != 0.5 * (double)decoded[i] ||
            fabs(decoded[i] - weight[i]) > 2.5 * stats[0].step) {
            fprintf(stderr, "roundtrip: element %zu is off\n", i);
            return 1;
        }
    }
    printf("decoded and accumulated: OK\n");
    free(buf);
    return 0;
}
