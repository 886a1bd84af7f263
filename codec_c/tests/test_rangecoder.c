/*
 * test_rangecoder.c - the binary range coder engine (rangecoder.h):
 * round trips at fixed probabilities from the clamp ends to 1/2, bypass
 * bins of 1..48 bits interleaved with context bins, output size against
 * the ideal -log2 cost, the terminating flush (empty codeword, exact short
 * codewords, no trailing zero byte, implicit zero padding), and carry
 * propagation through long runs of pending 0xFF bytes.
 */
#include "test_util.h"

#include "rangecoder.h"

/* A context pinned to probability p1 (units of 2^-16) with warm-up over:
 * re-pinned before every bin, it turns the adaptive coder into a
 * stationary one whose ideal cost is known exactly. */
static void pin(fc_ctx *c, uint32_t p1)
{
    fc_ctx_init(c, 0);
    c->fast = c->slow = p1 << 15;
    c->left = FC_CTX_STEADY; /* warm-up over: the window set's shifts */
    c->sf = c->tf;
    c->ss = c->ts;
}

static double bin_cost(uint32_t p1, unsigned bin)
{
    return -log2((bin ? (double)p1 : 65536.0 - (double)p1) / 65536.0);
}

/* One stream of bins; kind 0 = context bin at probs[i], kind 1 = bypass of
 * width widths[i] with value vals[i]. */
typedef struct stream {
    size_t n;
    uint8_t *kind;
    uint32_t *prob;
    uint64_t *val;
    uint8_t *width;
} stream;

static void stream_alloc(stream *s, size_t n)
{
    s->n = n;
    s->kind = (uint8_t *)calloc(n, 1);
    s->prob = (uint32_t *)calloc(n, sizeof(uint32_t));
    s->val = (uint64_t *)calloc(n, sizeof(uint64_t));
    s->width = (uint8_t *)calloc(n, 1);
    TU_CHECK(s->kind && s->prob && s->val && s->width);
}

static void stream_free(stream *s)
{
    free(s->kind);
    free(s->prob);
    free(s->val);
    free(s->width);
}

/* Encodes the stream; returns the codeword in *out (caller frees) and the
 * ideal cost in bits. */
static double encode_stream(const stream *s, fc_buf *out)
{
    fc_rc_enc e;
    fc_ctx c;
    double ideal = 0.0;
    size_t i;
    memset(out, 0, sizeof(*out));
    fc_rc_enc_init(&e, out);
    for (i = 0; i < s->n; i++) {
        if (s->kind[i]) {
            fc_rc_bypass(&e, s->val[i], s->width[i]);
            ideal += s->width[i];
        } else {
            pin(&c, s->prob[i]);
            fc_rc_encode(&e, &c, (unsigned)s->val[i]);
            ideal += bin_cost(s->prob[i], (unsigned)s->val[i]);
        }
    }
    fc_rc_finish(&e);
    TU_CHECK(!out->failed);
    return ideal;
}

/* Decodes from a guarded copy (over-reads trap) and compares the bins;
 * returns fc_rc_dec_ok() at the end. */
static int decode_stream_ok(const stream *s, const uint8_t *data, size_t size)
{
    uint8_t *g = tu_guarded_copy(data, size);
    fc_rc_dec d;
    fc_ctx c;
    size_t i;
    int ok;
    fc_rc_dec_init(&d, g, size);
    for (i = 0; i < s->n; i++) {
        uint64_t got;
        if (s->kind[i]) {
            got = fc_rc_bypass_dec(&d, s->width[i]);
        } else {
            pin(&c, s->prob[i]);
            got = fc_rc_decode(&d, &c);
        }
        if (got != s->val[i]) {
            TU_CHECKF(got == s->val[i], "bin %zu of %zu: got %llu want %llu", i, s->n,
                      (unsigned long long)got, (unsigned long long)s->val[i]);
        }
    }
    ok = fc_rc_dec_ok(&d);
    tu_guarded_free(g);
    return ok;
}

static void decode_stream(const stream *s, const uint8_t *data, size_t size)
{
    TU_CHECK(decode_stream_ok(s, data, size));
}

/* Stationary Bernoulli source at probability p1 = P(1): round trip and
 * size within 2 % + 8 bytes of the ideal cost. */
static void test_stationary(void)
{
    static const uint32_t probs[] = {16,    17,    24,    100,   1000,  4096, 16384,
                                     32768, 40000, 49152, 61440, 65000, 65519, 65520};
    size_t pi;
    for (pi = 0; pi < sizeof probs / sizeof probs[0]; pi++) {
        const size_t n = 200000;
        tu_rng r = tu_seed(100 + pi);
        stream s;
        fc_buf out;
        double ideal;
        size_t i;
        stream_alloc(&s, n);
        for (i = 0; i < n; i++) {
            s.prob[i] = probs[pi];
            s.val[i] = tu_below(&r, 65536) < probs[pi];
        }
        ideal = encode_stream(&s, &out);
        decode_stream(&s, out.data, out.size);
        TU_CHECKF((double)out.size <= ideal / 8.0 * 1.02 + 8.0,
                  "p1=%u: %zu bytes, ideal %.1f", (unsigned)probs[pi], out.size, ideal / 8.0);
        fc_buf_free(&out);
        stream_free(&s);
    }
}

/* A mixed stream: random probabilities (clamp ends included), bypass runs
 * of 1..48 bits in between. */
static void test_mixed_and_bypass(void)
{
    int seed;
    for (seed = 0; seed < 20; seed++) {
        const size_t n = 20000;
        tu_rng r = tu_seed(1000 + (uint64_t)seed);
        stream s;
        fc_buf out;
        double ideal;
        size_t i;
        stream_alloc(&s, n);
        for (i = 0; i < n; i++) {
            unsigned what = (unsigned)tu_below(&r, 8);
            if (what == 0) {
                unsigned w = 1 + (unsigned)tu_below(&r, 48);
                s.kind[i] = 1;
                s.width[i] = (uint8_t)w;
                s.val[i] = tu_next(&r) & (((uint64_t)1 << w) - 1u);
            } else {
                uint32_t p = what == 1   ? 16u
                             : what == 2 ? 65520u
                                         : 16u + (uint32_t)tu_below(&r, 65520u - 16u + 1u);
                s.prob[i] = p;
                s.val[i] = tu_below(&r, 65536) < p;
            }
        }
        ideal = encode_stream(&s, &out);
        decode_stream(&s, out.data, out.size);
        TU_CHECKF((double)out.size <= ideal / 8.0 * 1.02 + 8.0, "seed %d: %zu bytes, ideal %.1f",
                  seed, out.size, ideal / 8.0);
        fc_buf_free(&out);
        stream_free(&s);
    }
    /* Pure bypass: every width 1..48 with all-ones, all-zeros and random
     * values costs its bits (plus at most the 5-byte flush). */
    {
        unsigned w;
        stream s;
        fc_buf out;
        tu_rng r = tu_seed(7);
        size_t i = 0, bits = 0;
        stream_alloc(&s, 48 * 3);
        for (w = 1; w <= 48; w++) {
            uint64_t mask = ((uint64_t)1 << w) - 1u;
            uint64_t v[3];
            unsigned k;
            v[0] = mask;
            v[1] = 0;
            v[2] = tu_next(&r) & mask;
            for (k = 0; k < 3; k++, i++) {
                s.kind[i] = 1;
                s.width[i] = (uint8_t)w;
                s.val[i] = v[k];
                bits += w;
            }
        }
        encode_stream(&s, &out);
        decode_stream(&s, out.data, out.size);
        TU_CHECKF(out.size <= (bits + 7) / 8 + 5, "%zu bytes for %zu bypass bits", out.size, bits);
        fc_buf_free(&out);
        stream_free(&s);
    }
}

/* Long runs of near-certain bins: a million of the likely value at both
 * clamp ends; the cost must stay near -log2(65520/65536) ~ 3.5e-4 bits per
 * bin (an engine with NNR's 9-bit floor would spend ~27x more). */
static void test_near_certain_runs(void)
{
    static const uint32_t probs[2] = {16, 65520};
    int k;
    for (k = 0; k < 2; k++) {
        const size_t n = 1000000;
        stream s;
        fc_buf out;
        double ideal;
        size_t i;
        tu_rng r = tu_seed(77);
        stream_alloc(&s, n + 4);
        for (i = 0; i < n; i++) {
            s.prob[i] = probs[k];
            s.val[i] = probs[k] > 32768; /* the likely bin */
        }
        /* A random tail, so trimming trailing zeros cannot hide the run. */
        for (; i < n + 4; i++) {
            s.kind[i] = 1;
            s.width[i] = 16;
            s.val[i] = tu_next(&r) & 0xFFFFu;
        }
        ideal = encode_stream(&s, &out);
        decode_stream(&s, out.data, out.size);
        printf("  run of %zu likely bins at p1=%u: %zu bytes (ideal %.1f)\n", n,
               (unsigned)probs[k], out.size, ideal / 8.0);
        if (k == 0) {
            TU_CHECKF((double)out.size <= ideal / 8.0 * 1.02 + 8.0, "p1=%u: %zu bytes, ideal %.1f",
                      (unsigned)probs[k], out.size, ideal / 8.0);
        } else {
            /* The 1 side of the split is (range >> 16) * p1: the truncated
             * range bits are always given to the 0 side, so a certain 1
             * pays ~1.7x its ideal cost here (6e-4 bits/bin). */
            TU_CHECKF((double)out.size <= ideal / 8.0 * 2.0 + 8.0, "p1=%u: %zu bytes, ideal %.1f",
                      (unsigned)probs[k], out.size, ideal / 8.0);
        }
        fc_buf_free(&out);
        stream_free(&s);
    }
}

/* The flush: exact bytes of tiny codewords, the empty codeword, no trailing
 * zero byte, zero padding equivalence, and codewords that share a buffer. */
static void test_flush(void)
{
    fc_buf out;
    fc_rc_enc e;
    fc_ctx c;
    memset(&out, 0, sizeof(out));

    /* Empty codeword: 0 bytes. */
    fc_rc_enc_init(&e, &out);
    fc_rc_finish(&e);
    TU_CHECK_EQ(out.size, 0);

    /* One bypass 0: the lower half contains 0: 0 bytes.  One bypass 1:
     * [1/2, 1): 1/2 = 0x80. */
    fc_rc_enc_init(&e, &out);
    fc_rc_bypass(&e, 0, 1);
    fc_rc_finish(&e);
    TU_CHECK_EQ(out.size, 0);
    fc_rc_enc_init(&e, &out);
    fc_rc_bypass(&e, 1, 1);
    fc_rc_finish(&e);
    TU_CHECK_EQ(out.size, 1);
    TU_CHECK_EQ(out.data[0], 0x80);
    out.size = 0;

    /* Bypass 0b101 (3 bits): [5/8, 6/8) -> 0xA0. */
    fc_rc_enc_init(&e, &out);
    fc_rc_bypass(&e, 5, 3);
    fc_rc_finish(&e);
    TU_CHECK_EQ(out.size, 1);
    TU_CHECK_EQ(out.data[0], 0xA0);
    out.size = 0;

    /* A context 1 at p = 1/2 is the lower half [0, 1/2): 0 bytes. */
    fc_rc_enc_init(&e, &out);
    pin(&c, 32768);
    fc_rc_encode(&e, &c, 1);
    fc_rc_finish(&e);
    TU_CHECK_EQ(out.size, 0);

    /* A codeword appended to earlier bytes never trims into them. */
    fc_buf_put(&out, 0x00);
    fc_buf_put(&out, 0x00);
    fc_rc_enc_init(&e, &out);
    fc_rc_finish(&e);
    TU_CHECK_EQ(out.size, 2);
    fc_rc_enc_init(&e, &out);
    fc_rc_bypass(&e, 1, 1);
    fc_rc_finish(&e);
    TU_CHECK_EQ(out.size, 3);
    TU_CHECK_EQ(out.data[2], 0x80);
    fc_buf_free(&out);

    /* Random streams: the last byte is never 0, the decoder reads the same
     * bins with explicit trailing zeros, and a codeword from which one more
     * byte is dropped is recognized as such or decodes differently. */
    {
        int seed;
        for (seed = 0; seed < 200; seed++) {
            tu_rng r = tu_seed(5000 + (uint64_t)seed);
            size_t n = 1 + (size_t)tu_below(&r, 300), i;
            stream s;
            uint8_t *padded;
            stream_alloc(&s, n);
            for (i = 0; i < n; i++) {
                s.prob[i] = 16u + (uint32_t)tu_below(&r, 65505);
                s.val[i] = tu_below(&r, 65536) < s.prob[i];
            }
            encode_stream(&s, &out);
            if (out.size) TU_CHECK(out.data[out.size - 1] != 0);
            TU_CHECK(out.size <= (size_t)(1 + n / 8 + 6) + n); /* sanity */
            decode_stream(&s, out.data, out.size);
            padded = (uint8_t *)calloc(out.size + 8, 1);
            TU_CHECK(padded != NULL);
            if (out.size) memcpy(padded, out.data, out.size);
            /* Explicit zeros decode to the same bins, but the decoder does
             * not read that far, so fc_rc_dec_ok() rejects the codeword
             * (a payload may not carry bytes its bins never read). */
            TU_CHECK(!decode_stream_ok(&s, padded, out.size + 8));
            free(padded);
            fc_buf_free(&out);
            stream_free(&s);
        }
    }
}

/* Carry propagation.  The driver steers the coder toward the point just
 * below 1/2 (binary 0.0111111...): every output byte after the first 0x7F
 * is then 0xFF and stays pending, as the interval keeps straddling 1/2.
 * Then the interval is moved above 1/2, which must carry through the whole
 * run: 0x7F FF .. FF becomes 0x80 00 .. 00.  A mirror of the split
 * arithmetic tracks the point; the coder's own registers are checked
 * against the mirror at every step. */
static void carry_case(unsigned run_bytes, int do_carry)
{
    fc_buf out;
    fc_rc_enc e;
    fc_ctx c;
    uint64_t low = 0, B = 0x80000000u; /* the target is B - epsilon */
    uint32_t range = 0xFFFFFFFFu;
    tu_rng r = tu_seed(run_bytes * 2u + (unsigned)do_carry);
    stream s;
    size_t ns = 0, i, bytes_out;
    unsigned steps = 0;
    uint64_t max_pending = 0;

    stream_alloc(&s, 100000);
    memset(&out, 0, sizeof(out));
    fc_rc_enc_init(&e, &out);
    while (e.pending < run_bytes) {
        uint32_t p = 1000u + (uint32_t)tu_below(&r, 63000);
        uint32_t bound = (range >> 16) * p;
        unsigned bin = B <= low + bound; /* target below the split: bin 1 */
        if (bin) {
            range = bound;
        } else {
            low += bound;
            range -= bound;
        }
        while (range < (1u << 24)) {
            range <<= 8;
            B = (B - (low & ~(uint64_t)0xFFFFFF)) << 8;
            low = (low & 0xFFFFFFu) << 8;
        }
        pin(&c, p);
        fc_rc_encode(&e, &c, bin);
        TU_CHECK(e.low == low && e.range == range);
        TU_CHECK(B > low && B <= low + range); /* the target stays inside */
        s.prob[ns] = p;
        s.val[ns++] = bin;
        if (e.pending > max_pending) max_pending = e.pending;
        TU_CHECK(++steps < 90000);
    }
    TU_CHECK(max_pending >= run_bytes);
    TU_CHECK_EQ(out.size, 0); /* everything is still cache + pending */
    if (do_carry) {
        /* Bypass 1s move the interval to its top; B < low + range, so it
         * ends above B, i.e. at or above 2^32 in the low register. */
        for (i = 0; i < 64 && e.pending > 0; i++) {
            fc_rc_bypass(&e, 1, 1);
            s.kind[ns] = 1;
            s.width[ns] = 1;
            s.val[ns++] = 1;
        }
    } else {
        /* Bypass 0s keep the interval's bottom, below B. */
        for (i = 0; i < 64; i++) {
            fc_rc_bypass(&e, 0, 1);
            s.kind[ns] = 1;
            s.width[ns] = 1;
            s.val[ns++] = 0;
        }
    }
    /* Random tail so the run is not trimmed as trailing zeros. */
    for (i = 0; i < 200; i++) {
        s.prob[ns] = 32768;
        s.val[ns] = tu_below(&r, 2);
        pin(&c, 32768);
        fc_rc_encode(&e, &c, (unsigned)s.val[ns]);
        ns++;
    }
    fc_rc_finish(&e);
    bytes_out = out.size;
    TU_CHECK(bytes_out > run_bytes + 2);
    TU_CHECK_EQ(out.data[0], do_carry ? 0x80 : 0x7F);
    for (i = 1; i <= run_bytes; i++)
        TU_CHECKF(out.data[i] == (do_carry ? 0x00 : 0xFF), "byte %zu = 0x%02x", i, out.data[i]);
    s.n = ns;
    decode_stream(&s, out.data, out.size);
    fc_buf_free(&out);
    stream_free(&s);
}

static void test_carry(void)
{
    carry_case(1, 1);
    carry_case(3, 1);
    carry_case(16, 1);
    carry_case(300, 1);
    carry_case(16, 0);
    carry_case(300, 0);
}

/* Hostile input: arbitrary bytes decode without reading out of bounds,
 * whatever the bins (the engine itself has no invalid codeword). */
static void test_garbage(void)
{
    int seed;
    for (seed = 0; seed < 50; seed++) {
        tu_rng r = tu_seed(9000 + (uint64_t)seed);
        size_t n = (size_t)tu_below(&r, 40), i;
        uint8_t *g = (uint8_t *)tu_guarded_alloc(n);
        fc_rc_dec d;
        fc_ctx c;
        for (i = 0; i < n; i++) g[i] = (uint8_t)tu_next(&r);
        fc_rc_dec_init(&d, g, n);
        fc_ctx_init(&c, (unsigned)seed & 7u);
        for (i = 0; i < 2000; i++) {
            if (i % 3) (void)fc_rc_decode(&d, &c);
            else (void)fc_rc_bypass_dec(&d, 1 + (unsigned)(i % 48));
        }
        TU_CHECK(d.p == d.end); /* read every byte (n < 40), then zeros */
        tu_guarded_free(g);
    }
}

int main(void)
{
    test_flush();
    test_stationary();
    test_mixed_and_bypass();
    test_near_certain_runs();
    test_carry();
    test_garbage();
    return tu_finish("test_rangecoder");
}
