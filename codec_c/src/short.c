/* short.c - the short code of tiny tensors (FORMAT.md §6.6). */
#include "short.h"

/* Bits of one level: the zero bit, and for a nonzero level the sign and
 * the order-k Exp-Golomb code of |v| - 1 (prefix e ones and a zero, then
 * e + k bits). */
static uint64_t level_bits(int32_t v, unsigned k)
{
    uint64_t m, q;
    unsigned e = 0;
    if (v == 0) return 1;
    m = (uint64_t)(v < 0 ? -(int64_t)v : (int64_t)v) - 1u;
    q = (m >> k) + 1u;
    while (q >> (e + 1)) e++;
    return 2u + (uint64_t)e + 1u + (uint64_t)e + k;
}

uint64_t fc_short_bits(const int32_t *levels, uint64_t n, unsigned k)
{
    uint64_t i, bits = 0;
    for (i = 0; i < n; i++) bits += level_bits(levels[i], k);
    return bits;
}

unsigned fc_short_best_k(const int32_t *levels, uint64_t n, uint64_t *bits)
{
    unsigned k, best = 0;
    uint64_t b, least = UINT64_MAX;
    for (k = 0; k <= FC_SHORT_MAX_K; k++) {
        b = fc_short_bits(levels, n, k);
        if (b < least) {
            least = b;
            best = k;
        }
    }
    if (bits) *bits = least;
    return best;
}

typedef struct bit_writer {
    fc_buf *out;
    unsigned acc, used; /* pending bits, MSB first */
} bit_writer;

static void put_bits(bit_writer *w, uint64_t value, unsigned count)
{
    while (count--) {
        w->acc = (w->acc << 1) | (unsigned)((value >> count) & 1u);
        if (++w->used == 8) {
            fc_buf_put(w->out, (uint8_t)w->acc);
            w->acc = w->used = 0;
        }
    }
}

void fc_short_encode(const int32_t *levels, uint64_t n, unsigned k, fc_buf *out)
{
    bit_writer w;
    uint64_t i;
    out->size = 0;
    w.out = out;
    w.acc = w.used = 0;
    for (i = 0; i < n; i++) {
        int32_t v = levels[i];
        uint64_t m, q;
        unsigned e = 0;
        if (v == 0) {
            put_bits(&w, 0, 1);
            continue;
        }
        put_bits(&w, v < 0 ? 3u : 2u, 2); /* nonzero, sign */
        m = (uint64_t)(v < 0 ? -(int64_t)v : (int64_t)v) - 1u;
        q = (m >> k) + 1u;
        while (q >> (e + 1)) e++;
        put_bits(&w, ((uint64_t)1 << (e + 1)) - 2u, e + 1); /* e ones, a zero */
        put_bits(&w, m - ((((uint64_t)1 << e) - 1u) << k), e + k);
    }
    if (w.used) fc_buf_put(out, (uint8_t)(w.acc << (8 - w.used)));
}

typedef struct bit_reader {
    const uint8_t *p;
    uint64_t pos, end; /* in bits */
} bit_reader;

/* Reads `count` bits (<= 62); 0 when they run past the payload. */
static int get_bits(bit_reader *r, unsigned count, uint64_t *value)
{
    uint64_t v = 0;
    if (r->end - r->pos < count) return 0;
    while (count--) {
        v = (v << 1) | ((r->p[r->pos >> 3] >> (7u - (unsigned)(r->pos & 7u))) & 1u);
        r->pos++;
    }
    *value = v;
    return 1;
}

void fc_short_decode(fc_slice_dec_job *job)
{
    const fc_sink *k = &job->sink;
    const uint64_t n = job->rows * job->cols;
    const int32_t max_level = fc_max_finite_level(job->step, FC_MAX_LEVEL, FC_QUANT_UNIFORM);
    bit_reader r;
    uint64_t i, bit, m, rest;
    unsigned e;
    r.p = job->src;
    r.pos = 0;
    r.end = (uint64_t)job->size * 8u;
    job->result = FC_ERR_CORRUPT;
    if (job->k > FC_SHORT_MAX_K) return;
    for (i = 0; i < n; i++) {
        int32_t v = 0;
        if (!get_bits(&r, 1, &bit)) return;
        if (bit) {
            uint64_t neg;
            if (!get_bits(&r, 1, &neg)) return;
            for (e = 0;; e++) {
                if (!get_bits(&r, 1, &bit)) return;
                if (!bit) break;
                if (e == 30) return; /* a 31st one */
            }
            if (!get_bits(&r, e + job->k, &rest)) return;
            m = ((((uint64_t)1 << e) - 1u) << job->k) + rest;
            if (m >= (uint64_t)max_level) return; /* |v| = m + 1 > L */
            v = (int32_t)(m + 1u);
            if (neg) v = -v;
        }
        if (k->levels) k->levels[i] = v;
        if (k->values || (k->acc && v)) {
            float value = (float)v * job->step;
            if (k->values) k->values[i] = value;
            if (k->acc && v) {
                if (k->acc_dtype == FC_ACC_F64) {
                    ((double *)k->acc)[i] += k->weight * (double)value;
                } else {
                    float *a = (float *)k->acc + i;
                    *a = (float)((double)*a + k->weight * (double)value);
                }
            }
        }
    }
    /* the payload ends in the last byte, padded with zero bits */
    if (r.end - r.pos >= 8u) return;
    while (r.pos < r.end) {
        if (!get_bits(&r, 1, &bit) || bit) return;
    }
    job->result = FC_OK;
}
