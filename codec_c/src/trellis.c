/*
 * trellis.c - the rate-aware trellis (dependent) quantizer, encoder side.
 *
 * Reconstruction (contexts.h, FORMAT.md §8.2): a state machine with 4
 * (VVC) or 8 (NNR) states runs over a slice's levels in raster order; the
 * state selects quantizer Q0 (level k -> index 2k) or Q1 (k -> 2k - sgn k)
 * and the parity of each level drives the transition.
 *
 * Search: a Viterbi pass per segment (a row, or 256..4096 elements of a
 * longer row) minimizing
 *     J = sum_i eta_i (|w_i|/step - |q_i|)^2 + lambda' * R_i
 * where R_i are the bits of level k_i under a *frozen* copy of one adaptive
 * rate model (the dense-mode contexts plus the Q1 significance set).  Per
 * state the search keeps its accumulated cost, its last level (the `left`
 * context) and its row state (contexts.h); the column state and the row
 * above are the coder's, read only, as for RDOQ.  Candidates per weight and
 * predecessor state: 0 and the two levels of the state's quantizer nearest
 * to |w| (one of each parity); nonzero levels below the slice's m0 and any
 * nonzero level for an input that is exactly 0 are never considered.
 * Decisions take 2 bits per state and element (1 byte per element with 4
 * states, 2 with 8), for one segment at a time; the traceback recomputes
 * the levels from them.
 *
 * After a segment the rate model is updated with the chosen levels (as the
 * coder will be) and the search continues from the best end state (a
 * greedy choice at segment ends only).  The frozen copy is refreshed from
 * the model after 256, 512, 1024, 2048 and then every 4096 committed
 * elements: the rates follow the trellis's own level statistics, which
 * differ from those of uniform levels (magnitudes about half as large), so
 * no separate first pass is needed.  Each segment's levels are checked
 * against the distortion-only path under the adaptive rates (segment()), so
 * misleading frozen rates cannot pull reconstructions away from the input.
 */
#include <math.h>

#include "quant.h"

#define TR_SEG_MAX 4096u
#define TR_SEG_MIN 256u
#define TR_CMTAB 24u
#define TR_INF 1e300

/* Rates of the search: a frozen copy of a rate model and its cost tables. */
typedef struct tr_rates {
    fc_ctxset snap;
    float sigc[2][FC_SIG_CTX_ALL][2];  /* sig (Q0) / dqsig (Q1) */
    float signc[FC_SIGN_CTX_ALL][2];
    float magc[FC_GTX_CLASSES_ALL][FC_REM_CLASSES_ALL][TR_CMTAB + 1];
} tr_rates;

struct fc_trellis {
    const fc_dq_machine *m;
    unsigned ns;
    uint8_t pred[FC_DQ_MAX_STATES][2]; /* predecessor of a state by parity */
    double lambda;                     /* lambda' in step^2 per bit */
    double eta_scale, inv_step;
    unsigned N, m0;
    unsigned state;                    /* state before the next element */
    const fc_ref *ref;                 /* reference of the row being searched, or NULL */
    int ref_seen;                      /* the tensor has a reference: full rate tables */
    uint64_t committed, since_refresh;
    fc_ctxset model;                   /* live: updated with committed levels */
    tr_rates rates;                    /* frozen from model: the rates of the search */
    tr_rates alt_rates;                /* frozen from model + a segment's nearest path */
    fc_ctxset scratch[2];              /* the model after one of a segment's level choices */
    int32_t alt[2][TR_SEG_MAX];        /* levels of one segment: nearest path, second search */
    uint8_t dec[TR_SEG_MAX * 2];       /* decisions of one segment */
};

fc_trellis *fc_trellis_new(unsigned quant, double lambda, double eta_scale, double inv_step,
                           unsigned N, unsigned m0, unsigned window_set)
{
    fc_trellis *tr;
    unsigned s, p;
    if (quant != FC_QUANT_TRELLIS && quant != FC_QUANT_TRELLIS8) return NULL;
    tr = (fc_trellis *)calloc(1, sizeof(*tr));
    if (!tr) return NULL;
    tr->m = &fc_dq_machines[quant];
    tr->ns = tr->m->nstates;
    for (s = 0; s < tr->ns; s++)
        for (p = 0; p < 2; p++) tr->pred[tr->m->next[s][p]][p] = (uint8_t)s;
    tr->lambda = FC_DQ_LAMBDA_SCALE * (lambda > 0.0 ? lambda : FC_DQ_DEFAULT_LAMBDA);
    tr->eta_scale = eta_scale;
    tr->inv_step = inv_step;
    tr->N = N;
    tr->m0 = m0 ? m0 : 1u;
    fc_ctxset_init(&tr->model, window_set);
    fc_trellis_refresh(tr);
    return tr;
}

void fc_trellis_free(fc_trellis *tr)
{
    free(tr);
}

unsigned fc_trellis_state(const fc_trellis *tr)
{
    return tr->state;
}

/* The rates of `model`; the magnitude table covers the reference classes
 * only when `all` (a tensor coded with a reference). */
static void rates_from(tr_rates *rt, const fc_ctxset *model, unsigned N, int all)
{
    const fc_ctxset *s;
    unsigned i, b, g, r, cm;
    rt->snap = *model;
    s = &rt->snap;
    for (i = 0; i < FC_SIG_CTX_ALL; i++) {
        for (b = 0; b < 2; b++) {
            rt->sigc[0][i][b] = fc_ctx_cost(&s->sig[i], b);
            rt->sigc[1][i][b] = fc_ctx_cost(&s->dqsig[i], b);
        }
    }
    for (i = 0; i < FC_SIGN_CTX_ALL; i++)
        for (b = 0; b < 2; b++) rt->signc[i][b] = fc_ctx_cost(&s->sign[i], b);
    for (g = 0; g < (all ? FC_GTX_CLASSES_ALL : FC_GTX_CLASSES); g++) {
        for (r = 0; r < (all ? FC_REM_CLASSES_ALL : FC_REM_CLASSES); r++) {
            fc_nbr nb;
            nb.sign_ctx = 0;
            nb.gtx_class = g;
            nb.gtx_neg = g; /* (trellis tensors have no CLASSCTX classes) */
            nb.rem_class = r;
            rt->magc[g][r][0] = 0.0f;
            for (cm = 1; cm <= TR_CMTAB; cm++)
                rt->magc[g][r][cm] = fc_cost_level(s, cm, 0, nb, N) - rt->signc[0][0];
        }
    }
}

void fc_trellis_refresh(fc_trellis *tr)
{
    rates_from(&tr->rates, &tr->model, tr->N, tr->ref_seen);
    tr->since_refresh = 0;
}

/* Bits of a nonzero coded magnitude cm with sign neg under frozen rates. */
static inline float level_bits(const tr_rates *rt, unsigned N, fc_nbr nb, unsigned cm, unsigned neg)
{
    if (cm <= TR_CMTAB) return rt->signc[nb.sign_ctx][neg] + rt->magc[nb.gtx_class][nb.rem_class][cm];
    return fc_cost_level(&rt->snap, cm, neg, nb, N);
}

/* One element: |w|/step, eta, sign, and per quantizer and parity the
 * nonzero candidate magnitude (0: none) with its distortion. */
typedef struct tr_elem {
    double t, eta;
    unsigned neg;
    unsigned k[2][2];
    double d[2][2];
} tr_elem;

static inline void tr_candidates(const fc_trellis *tr, float x, const float *importance, uint64_t c,
                                 tr_elem *e)
{
    double t = fabs((double)x) * tr->inv_step;
    unsigned qz, j;
    e->t = t;
    e->neg = x < 0.0f;
    e->eta = importance ? (double)importance[c] * tr->eta_scale : 1.0;
    e->k[0][0] = e->k[0][1] = e->k[1][0] = e->k[1][1] = 0;
    e->d[0][0] = e->d[0][1] = e->d[1][0] = e->d[1][1] = 0.0;
    if (!(t > 0.0)) return; /* an exact zero stays zero */
    for (qz = 0; qz < 2; qz++) {
        /* The two nonzero levels of quantizer qz nearest to t (Q0: index
         * 2k, Q1: index 2k - 1): consecutive k, so one of each parity. */
        double h = qz ? (t + 1.0) * 0.5 : t * 0.5;
        double lo = h < 2147483648.0 ? (double)(uint32_t)h : floor(h); /* floor, h >= 0 */
        for (j = 0; j < 2; j++) {
            double kd = lo + (double)j, q, d;
            unsigned k;
            if (kd < (double)tr->m0 || kd < 1.0 || kd > (double)FC_MAX_DQ_LEVEL) continue;
            k = (unsigned)kd;
            q = 2.0 * kd - (double)qz;
            d = t - q;
            e->k[qz][k & 1u] = k;
            e->d[qz][k & 1u] = d * d;
        }
    }
}

/* A path's state at one element: accumulated cost, last level, row state. */
typedef struct tr_node {
    double J;
    int32_t left;
    fc_rowstate row;
} tr_node;

/* Incremental costs at element c from a node in a state with quantizer qz,
 * under rates rt and multiplier lambda: inc[0] the zero level, inc[1] the
 * parity-0 nonzero candidate, inc[2] the parity-1 one (TR_INF when absent). */
static inline void tr_incs(const fc_trellis *tr, const tr_rates *rt, double lambda,
                           const fc_colstate *cs, const tr_node *n, int32_t above, uint64_t c,
                           const tr_elem *e, unsigned qz, double inc[3])
{
    unsigned sig = fc_sig_ctx(cs, &n->row, n->left, above, c, fc_ref_at(tr->ref, c)), p;
    inc[0] = e->eta * e->t * e->t + lambda * (double)rt->sigc[qz][sig][0];
    inc[1] = inc[2] = TR_INF;
    if (e->k[qz][0] | e->k[qz][1]) {
        fc_nbr nb = fc_neighbourhood(cs, &n->row, n->left, above, c, tr->m0, fc_ref_at(tr->ref, c));
        for (p = 0; p < 2; p++) {
            unsigned k = e->k[qz][p];
            if (!k) continue;
            inc[1 + p] = e->eta * e->d[qz][p] +
                         lambda * ((double)rt->sigc[qz][sig][1] +
                                   (double)level_bits(rt, tr->N, nb, k - tr->m0 + 1u, e->neg));
        }
    }
}

/* The node after choosing level v (signed) at column c from node `from`. */
static inline void tr_advance(const fc_trellis *tr, fc_colstate *cs, const tr_node *from,
                              double J, int32_t v, uint64_t c, tr_node *to)
{
    to->J = J;
    to->row = from->row;
    to->left = v;
    if (v) fc_on_nonzero(cs, &to->row, v, c, fc_cm(v, tr->m0), 0);
}

static inline void put_decision(uint8_t *dec, unsigned ns, uint64_t i, unsigned s, unsigned d)
{
    size_t at = (size_t)i * (ns >> 2) + (s >> 2);
    dec[at] = (uint8_t)((dec[at] & ~(3u << (2u * (s & 3u)))) | (d << (2u * (s & 3u))));
}

static inline unsigned get_decision(const uint8_t *dec, unsigned ns, uint64_t i, unsigned s)
{
    return (dec[(size_t)i * (ns >> 2) + (s >> 2)] >> (2u * (s & 3u))) & 3u;
}

/* The levels of the path that ends in state `end` after column c1 - 1,
 * from the decisions in tr->dec, to out[0 .. c1 - c0). */
static void traceback(const fc_trellis *tr, const float *x, const float *imp, uint64_t c0,
                      uint64_t c1, int32_t *out, unsigned end)
{
    unsigned s = end;
    uint64_t c;
    for (c = c1; c-- > c0;) {
        unsigned d = get_decision(tr->dec, tr->ns, c - c0, s), p = d == 2 ? 1u : 0u, k = 0;
        tr_elem e;
        s = tr->pred[s][p];
        if (d) {
            tr_candidates(tr, x[c], imp, c, &e);
            k = e.k[tr->m->q[s]][p];
        }
        out[c - c0] = (x[c] < 0.0f) ? -(int32_t)k : (int32_t)k;
    }
}

/* The search on columns [c0, c1) under rates rt and multiplier lambda;
 * levels to out[0 .. c1 - c0). */
static double viterbi(fc_trellis *tr, const tr_rates *rt, double lambda, const fc_colstate *cs,
                      const float *x, const float *imp, uint64_t c0, uint64_t c1,
                      const int32_t *prev, int32_t *out, unsigned start, const fc_rowstate *row,
                      int32_t left, unsigned *end)
{
    fc_colstate csw = *cs; /* read only: fc_on_nonzero(..., 0) */
    const unsigned ns = tr->ns;
    const fc_dq_machine *m = tr->m;
    tr_node nodes[2][FC_DQ_MAX_STATES];
    tr_node *A = nodes[0], *B = nodes[1];
    unsigned s, best;
    uint64_t c;
    for (s = 0; s < ns; s++) A[s].J = TR_INF;
    A[start].J = 0.0;
    A[start].left = left;
    A[start].row = *row;
    for (c = c0; c < c1; c++) {
        tr_elem e;
        double P0[FC_DQ_MAX_STATES], P1[FC_DQ_MAX_STATES];
        unsigned D0[FC_DQ_MAX_STATES];
        int32_t above = prev ? prev[c] : 0;
        tr_node *tmp;
        tr_candidates(tr, x[c], imp, c, &e);
        for (s = 0; s < ns; s++) {
            double inc[3];
            P0[s] = P1[s] = TR_INF;
            D0[s] = 0;
            if (A[s].J >= TR_INF) continue;
            tr_incs(tr, rt, lambda, cs, &A[s], above, c, &e, m->q[s], inc);
            P0[s] = A[s].J + inc[0];
            if (inc[1] < TR_INF && A[s].J + inc[1] < P0[s]) {
                P0[s] = A[s].J + inc[1];
                D0[s] = 1;
            }
            if (inc[2] < TR_INF) P1[s] = A[s].J + inc[2];
        }
        for (s = 0; s < ns; s++) {
            unsigned a = tr->pred[s][0], b = tr->pred[s][1], d;
            if (P0[a] >= TR_INF && P1[b] >= TR_INF) {
                B[s].J = TR_INF;
                d = 3;
            } else if (P0[a] <= P1[b]) {
                d = D0[a];
                tr_advance(tr, &csw, &A[a], P0[a],
                           d ? (e.neg ? -(int32_t)e.k[m->q[a]][0] : (int32_t)e.k[m->q[a]][0]) : 0, c,
                           &B[s]);
            } else {
                int32_t k = (int32_t)e.k[m->q[b]][1];
                d = 2;
                tr_advance(tr, &csw, &A[b], P1[b], e.neg ? -k : k, c, &B[s]);
            }
            put_decision(tr->dec, ns, c - c0, s, d);
        }
        tmp = A;
        A = B;
        B = tmp;
    }
    best = 0;
    for (s = 1; s < ns; s++)
        if (A[s].J < A[best].J) best = s;
    *end = best;
    traceback(tr, x, imp, c0, c1, out, best);
    return A[best].J;
}

/* The distortion-only search ("nearest path") on columns [c0, c1): the
 * reconstruction closest to the input that the state machine allows, with
 * the same candidates as the search (so never a nonzero for an exact 0).
 * No rates, so no contexts: a fraction of the cost of viterbi(). */
static void nearest(fc_trellis *tr, const float *x, const float *imp, uint64_t c0, uint64_t c1,
                    int32_t *out, unsigned start)
{
    const unsigned ns = tr->ns;
    const fc_dq_machine *m = tr->m;
    double A[FC_DQ_MAX_STATES], B[FC_DQ_MAX_STATES];
    unsigned s, best;
    uint64_t c;
    for (s = 0; s < ns; s++) A[s] = TR_INF;
    A[start] = 0.0;
    for (c = c0; c < c1; c++) {
        tr_elem e;
        double P0[FC_DQ_MAX_STATES], P1[FC_DQ_MAX_STATES];
        unsigned D0[FC_DQ_MAX_STATES];
        tr_candidates(tr, x[c], imp, c, &e);
        for (s = 0; s < ns; s++) {
            unsigned qz = m->q[s];
            P0[s] = A[s] + e.eta * e.t * e.t;
            P1[s] = TR_INF;
            D0[s] = 0;
            if (A[s] >= TR_INF) continue;
            if (e.k[qz][0] && A[s] + e.eta * e.d[qz][0] < P0[s]) {
                P0[s] = A[s] + e.eta * e.d[qz][0];
                D0[s] = 1;
            }
            if (e.k[qz][1]) P1[s] = A[s] + e.eta * e.d[qz][1];
        }
        for (s = 0; s < ns; s++) {
            unsigned a = tr->pred[s][0], b = tr->pred[s][1], d;
            if (P0[a] >= TR_INF && P1[b] >= TR_INF) {
                B[s] = TR_INF;
                d = 3;
            } else if (P0[a] <= P1[b]) {
                B[s] = P0[a];
                d = D0[a];
            } else {
                B[s] = P1[b];
                d = 2;
            }
            put_decision(tr->dec, ns, c - c0, s, d);
        }
        for (s = 0; s < ns; s++) A[s] = B[s];
    }
    best = 0;
    for (s = 1; s < ns; s++)
        if (A[s] < A[best]) best = s;
    traceback(tr, x, imp, c0, c1, out, best);
}

double fc_trellis_viterbi(fc_trellis *tr, const fc_colstate *cs, const float *x, const float *imp,
                          uint64_t c0, uint64_t c1, const int32_t *prev, int32_t *cur,
                          unsigned start, const fc_rowstate *row, int32_t left, unsigned *end)
{
    return viterbi(tr, &tr->rates, tr->lambda, cs, x, imp, c0, c1, prev, cur + c0, start, row, left,
                   end);
}

double fc_trellis_greedy(fc_trellis *tr, const fc_colstate *cs, const float *x, const float *imp,
                         uint64_t c0, uint64_t c1, const int32_t *prev, int32_t *cur,
                         unsigned start, const fc_rowstate *row, int32_t left, unsigned *end)
{
    fc_colstate csw = *cs; /* read only: fc_on_nonzero(..., 0) */
    const fc_dq_machine *m = tr->m;
    tr_node n, next;
    unsigned s = start;
    uint64_t c;
    n.J = 0.0;
    n.left = left;
    n.row = *row;
    for (c = c0; c < c1; c++) {
        tr_elem e;
        double inc[3];
        unsigned qz = m->q[s], pick = 0, k = 0;
        tr_candidates(tr, x[c], imp, c, &e);
        tr_incs(tr, &tr->rates, tr->lambda, cs, &n, prev ? prev[c] : 0, c, &e, qz, inc);
        if (inc[1] < inc[pick]) pick = 1;
        if (inc[2] < inc[pick]) pick = 2;
        if (pick) k = e.k[qz][pick - 1];
        cur[c] = e.neg ? -(int32_t)k : (int32_t)k;
        tr_advance(tr, &csw, &n, n.J + inc[pick], cur[c], c, &next);
        n = next;
        s = m->next[s][k & 1u];
    }
    *end = s;
    return n.J;
}

double fc_trellis_cost(const fc_trellis *tr, const fc_colstate *cs, const float *x, const float *imp,
                       uint64_t c0, uint64_t c1, const int32_t *prev, const int32_t *levels,
                       unsigned start, const fc_rowstate *row, int32_t left)
{
    fc_colstate csw = *cs; /* read only: fc_on_nonzero(..., 0) */
    const fc_dq_machine *m = tr->m;
    const tr_rates *rt = &tr->rates;
    tr_node n, next;
    unsigned s = start;
    uint64_t c;
    n.J = 0.0;
    n.left = left;
    n.row = *row;
    for (c = c0; c < c1; c++) {
        tr_elem e;
        int32_t v = levels[c], above = prev ? prev[c] : 0;
        unsigned qz = m->q[s], k = fc_abs32(v);
        double inc;
        tr_candidates(tr, x[c], imp, c, &e);
        if (k == 0) {
            double i3[3];
            tr_incs(tr, rt, tr->lambda, cs, &n, above, c, &e, qz, i3);
            inc = i3[0];
        } else if (k == e.k[qz][k & 1u] && (v < 0) == (int)e.neg) {
            double i3[3];
            tr_incs(tr, rt, tr->lambda, cs, &n, above, c, &e, qz, i3);
            inc = i3[1 + (k & 1u)];
        } else {
            /* Not a candidate: the same formula, evaluated directly. */
            unsigned sig = fc_sig_ctx(cs, &n.row, n.left, above, c, fc_ref_at(tr->ref, c));
            fc_nbr nb = fc_neighbourhood(cs, &n.row, n.left, above, c, tr->m0, fc_ref_at(tr->ref, c));
            double q = 2.0 * (double)k - (double)qz, d = e.t - ((v < 0) == (int)e.neg ? q : -q);
            if (k < tr->m0) return TR_INF;
            inc = e.eta * d * d +
                  tr->lambda * ((double)rt->sigc[qz][sig][1] +
                                (double)level_bits(rt, tr->N, nb, k - tr->m0 + 1u, v < 0));
        }
        tr_advance(tr, &csw, &n, n.J + inc, v, c, &next);
        n = next;
        s = m->next[s][k & 1u];
    }
    return n.J;
}

static int same_levels(const int32_t *a, const int32_t *b, uint64_t n)
{
    return memcmp(a, b, (size_t)n * sizeof(int32_t)) == 0;
}

/* The model, row state, left neighbour and machine state after a
 * segment's levels. */
typedef struct tr_after {
    fc_ctxset *model;
    fc_rowstate row;
    int32_t left;
    unsigned state;
} tr_after;

/* Run levels lv[0 .. c1 - c0) of columns [c0, c1) through a copy of the
 * live model exactly in coding order (as the coder will), from row state
 * `row`, left neighbour `left` and the current machine state; what follows
 * them goes to *a.  Returns their J under the adaptive rates (each bin's
 * cost before its update): what the coder really spends, unlike the frozen
 * rates of the search. */
static double replay(const fc_trellis *tr, const fc_colstate *colstate, const float *x,
                     const float *imp, const int32_t *prev, const int32_t *lv, uint64_t c0,
                     uint64_t c1, const fc_rowstate *row, int32_t left, tr_after *a)
{
    const fc_dq_machine *m = tr->m;
    fc_colstate cs = *colstate; /* read only: fc_on_nonzero(..., 0) */
    fc_ctxset *model = a->model;
    fc_rowstate *r = &a->row;
    unsigned s = tr->state;
    int32_t l = left;
    double J = 0.0, bits = 0.0;
    uint64_t c;
    *model = tr->model;
    *r = *row;
    for (c = c0; c < c1; c++) {
        int32_t v = lv[c - c0], above = prev ? prev[c] : 0;
        fc_ctx *set = m->q[s] ? model->dqsig : model->sig;
        fc_ctx *sig = &set[fc_sig_ctx(&cs, r, l, above, c, fc_ref_at(tr->ref, c))];
        double t = fabs((double)x[c]) * tr->inv_step;
        double d = t - (double)fc_abs32(fc_dq_index(v, m->q[s]));
        J += (imp ? (double)imp[c] * tr->eta_scale : 1.0) * d * d;
        bits += (double)fc_ctx_cost(sig, v != 0);
        if (v) {
            unsigned cm = fc_cm(v, tr->m0);
            fc_nbr nb = fc_neighbourhood(&cs, r, l, above, c, tr->m0, fc_ref_at(tr->ref, c));
            bits += (double)fc_cost_level(model, cm, v < 0, nb, tr->N);
            fc_update_level(model, v < 0, cm, nb, tr->N);
            fc_on_nonzero(&cs, r, v, c, cm, 0);
        }
        fc_ctx_update(sig, v != 0);
        s = m->next[s][(unsigned)v & 1u];
        l = v;
    }
    a->state = s;
    a->left = l;
    return J + tr->lambda * bits;
}

/* The levels of one segment [c0, c1) into cur[c0 .. c1); the live model,
 * *row, *left and the machine state move past them.
 *
 * The search's rates are frozen and can disagree badly with the adaptive
 * coder on data unlike the recent past: on a row whose values all have the
 * same magnitude, the coder learns the row's level within a few elements,
 * but frozen rates trained on other rows charge every element as if it were
 * a surprise, so the search picks the magnitude the snapshot expects, up to
 * two steps away, and the model, trained on that choice, keeps expecting it
 * (13.6 % of the elements off by more than one step on such rows).  So the
 * search's levels are checked against the nearest path (the distortion-only
 * search) by their J under the adaptive rates, i.e. what the coder will
 * really spend.  Only when the nearest path is cheaper were the frozen rates
 * misleading: then the search runs again with rates frozen after the model
 * has seen the nearest path, and the cheaper of that and the nearest path
 * is kept. */
static void segment(fc_trellis *tr, const fc_colstate *cs, const float *x, const float *imp,
                    uint64_t c0, uint64_t c1, const int32_t *prev, int32_t *cur, fc_rowstate *row,
                    int32_t *left)
{
    const uint64_t len = c1 - c0;
    int32_t *seg = cur + c0, *near = tr->alt[0], *second = tr->alt[1];
    tr_after a, b, *win;
    unsigned end;
    double j_search, j_near, j_second;
    a.model = &tr->scratch[0];
    b.model = &tr->scratch[1];
    viterbi(tr, &tr->rates, tr->lambda, cs, x, imp, c0, c1, prev, seg, tr->state, row, *left, &end);
    nearest(tr, x, imp, c0, c1, near, tr->state);
    j_search = replay(tr, cs, x, imp, prev, seg, c0, c1, row, *left, &a);
    win = &a;
    if (!same_levels(near, seg, len)) {
        j_near = replay(tr, cs, x, imp, prev, near, c0, c1, row, *left, &b);
        if (j_near < j_search) {
            rates_from(&tr->alt_rates, b.model, tr->N, tr->ref_seen);
            viterbi(tr, &tr->alt_rates, tr->lambda, cs, x, imp, c0, c1, prev, second, tr->state,
                    row, *left, &end);
            j_second = replay(tr, cs, x, imp, prev, second, c0, c1, row, *left, &a);
            if (j_second < j_near) {
                memcpy(seg, second, (size_t)len * sizeof(int32_t));
            } else {
                memcpy(seg, near, (size_t)len * sizeof(int32_t));
                win = &b;
            }
        }
    }
    tr->model = *win->model;
    *row = win->row;
    *left = win->left;
    tr->state = win->state;
}

uint64_t fc_trellis_row(fc_trellis *tr, const fc_colstate *colstate, const float *x,
                        const float *importance, uint64_t cols, const int32_t *prev,
                        const fc_ref *ref, int32_t *cur)
{
    fc_colstate cs = *colstate; /* read only: fc_on_nonzero(..., 0) */
    fc_rowstate row;
    int32_t left = 0;
    uint64_t pos = 0, nz = 0, c;
    fc_row_begin(&row);
    tr->ref = ref;
    if (ref && ref->cls && !tr->ref_seen) {
        tr->ref_seen = 1;
        fc_trellis_refresh(tr);
    }
    while (pos < cols) {
        uint64_t len = cols - pos, want;
        want = tr->committed < TR_SEG_MIN ? TR_SEG_MIN : tr->committed;
        if (want > TR_SEG_MAX) want = TR_SEG_MAX;
        if (len > TR_SEG_MAX) len = want;
        if (tr->since_refresh >= want) fc_trellis_refresh(tr);
        segment(tr, &cs, x, importance, pos, pos + len, prev, cur, &row, &left);
        tr->committed += len;
        tr->since_refresh += len;
        pos += len;
    }
    tr->ref = NULL;
    for (c = 0; c < cols; c++) nz += cur[c] != 0;
    return nz;
}
