/* tables.c - constant tables, result names and CRC-32. */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <pthread.h>

#include "rangecoder.h"

const uint8_t fc_window_sets[8][2] = {
    {4, 7}, {5, 8}, {4, 6}, {5, 10}, {6, 10}, {3, 6}, {4, 9}, {7, 10},
};

float fc_cost[FC_COST_SIZE + 1];

static void cost_table_fill(void)
{
    unsigned i;
    for (i = 0; i <= FC_COST_SIZE; i++) {
        /* Probability at the centre of bucket i (p1 >> 4 == i). */
        double p = ((double)i * 16.0 + 8.0) / 65536.0;
        if (p > 1.0) p = 1.0;
        fc_cost[i] = (float)(-log2(p));
    }
}

void fc_cost_table_init(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, cost_table_fill);
}

const char *fc_result_name(int result)
{
    switch (result) {
    case FC_OK: return "FC_OK";
    case FC_ERR_INVALID_ARGUMENT: return "FC_ERR_INVALID_ARGUMENT";
    case FC_ERR_NONFINITE: return "FC_ERR_NONFINITE";
    case FC_ERR_LEVEL_OVERFLOW: return "FC_ERR_LEVEL_OVERFLOW";
    case FC_ERR_BUFFER_TOO_SMALL: return "FC_ERR_BUFFER_TOO_SMALL";
    case FC_ERR_TRUNCATED: return "FC_ERR_TRUNCATED";
    case FC_ERR_CORRUPT: return "FC_ERR_CORRUPT";
    case FC_ERR_CHECKSUM: return "FC_ERR_CHECKSUM";
    case FC_ERR_VERSION: return "FC_ERR_VERSION";
    case FC_ERR_LIMIT: return "FC_ERR_LIMIT";
    case FC_ERR_MISMATCH: return "FC_ERR_MISMATCH";
    case FC_ERR_NOMEM: return "FC_ERR_NOMEM";
    case FC_ERR_THREAD: return "FC_ERR_THREAD";
    default: return "FC_ERR_UNKNOWN";
    }
}

const char *fc_version_string(void)
{
    return "0.2.0";
}

int fc_buf_grow(fc_buf *b, size_t extra)
{
    size_t cap = b->cap ? b->cap : 256;
    uint8_t *p;
    if (b->failed) return 0;
    while (cap - b->size < extra) {
        if (cap > (SIZE_MAX >> 1)) {
            b->failed = 1;
            return 0;
        }
        cap <<= 1;
    }
    p = (uint8_t *)realloc(b->data, cap);
    if (!p) {
        b->failed = 1;
        return 0;
    }
    b->data = p;
    b->cap = cap;
    return 1;
}

/* Byte-wise table CRC-32; the table is built on first use. */
static uint32_t crc_table[256];

static void crc_table_fill(void)
{
    uint32_t i, j;
    for (i = 0; i < 256; i++) {
        uint32_t c = i;
        for (j = 0; j < 8; j++) c = (c & 1u) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc_table[i] = c;
    }
}

uint32_t fc_crc32(uint32_t crc, const uint8_t *data, size_t size)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    size_t i;
    pthread_once(&once, crc_table_fill);
    crc = ~crc;
    for (i = 0; i < size; i++) crc = crc_table[(crc ^ data[i]) & 0xFFu] ^ (crc >> 8);
    return ~crc;
}
