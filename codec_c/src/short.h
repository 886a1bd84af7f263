/*
 * short.h - the short code (FORMAT.md §6.6): a tensor's slices coded
 * without the range coder, each level as a zero bit, then a sign bit and
 * an Exp-Golomb code of order k of |level| - 1, for tiny tensors (biases,
 * normalization statistics) whose few elements adaptive contexts cannot
 * learn.  The encoder keeps it only where it is smaller.
 */
#ifndef FC_SHORT_H
#define FC_SHORT_H

#include "slice.h"

/* Largest Exp-Golomb order of the short code. */
#define FC_SHORT_MAX_K 29u
/* Tensors of at most this many elements are tried (informative). */
#define FC_SHORT_MAX_ELEMS 4096u

/* Bits of the short code of n levels at order k. */
uint64_t fc_short_bits(const int32_t *levels, uint64_t n, unsigned k);
/* The order 0..FC_SHORT_MAX_K that codes the levels in the fewest bits
 * (*bits receives them). */
unsigned fc_short_best_k(const int32_t *levels, uint64_t n, uint64_t *bits);
/* The short code of n levels at order k, replacing out's contents. */
void fc_short_encode(const int32_t *levels, uint64_t n, unsigned k, fc_buf *out);
/* Decode a slice of a SHORT tensor (job->k is the order; uniform tensors,
 * the given view: the sink is written as in fc_slice_decode). */
void fc_short_decode(fc_slice_dec_job *job);

#endif /* FC_SHORT_H */
