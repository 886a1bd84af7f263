/*
 * fedcodec.h - the one public header of the fedcodec C library.
 *
 * fedcodec compresses float32 tensors (typically the differential weight
 * updates of federated learning) with a rate-distortion optimizing scalar
 * quantizer (DeepCABAC-style) followed by a context-adaptive binary range
 * coder.  A call encodes a whole set of tensors into one self-contained
 * container; the byte layout is documented in codec_c/FORMAT.md.
 *
 * Conventions
 *   - Every function returns an `enum fc_result`; sizes and counts are
 *     returned through out-parameters.  FC_OK is 0, errors are positive and
 *     their numbers never change.  fc_result_name() names them.
 *   - Option structs carry their own size (`struct_size`): initialize them
 *     with the matching *_init() function, then change fields.  A struct from
 *     an older header (smaller struct_size) is accepted; fields it lacks take
 *     their defaults.
 *   - Tensors are row-major and contiguous.  A tensor of shape (d0, d1, ...)
 *     is coded as d0 rows of d1*d2*... columns (a 1-D tensor is one row; a
 *     0-D tensor one element).
 *
 * Thread safety
 *   All functions are reentrant: they keep no global mutable state, so any
 *   number of threads may call them at once on different buffers.  Encoding
 *   and decoding run on up to `threads` worker threads of their own inside
 *   one call; the call returns only after those threads have finished.
 *
 * Determinism
 *   For the same tensors and options the encoder produces the same bytes on
 *   every run, platform and thread count (the slicing of a tensor never
 *   depends on the thread count).  The decoder's reconstruction of a level
 *   k is the float32 product (float)k * step (with the trellis quantizer k is
 *   the reconstruction index, with the dithered quantizer the dither is
 *   subtracted in float32, see enum fc_quantizer), so an encoder-side
 *   reconstruction (fc_tensor.recon) equals what any decoder produces.
 *
 * What not to rely on
 *   The exact bytes produced by the encoder may change between library
 *   versions (better compression); the container version only changes when
 *   old decoders could not read the new output.
 */
#ifndef FEDCODEC_H
#define FEDCODEC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FC_VERSION_MAJOR 0
#define FC_VERSION_MINOR 3
#define FC_VERSION_PATCH 0

/* Container format version written by this library (FORMAT.md). */
#define FC_FORMAT_VERSION 1

/* Largest number of dimensions of a tensor. */
#define FC_MAX_DIMS 8

/* Largest number of `|level| > j` flags (the N of the binarization). */
#define FC_MAX_GTX 8
/* fc_encode_options.window_set: choose the window set per tensor. */
#define FC_WINDOW_AUTO 8u

/* Largest absolute quantization level (levels are int32). */
#define FC_MAX_LEVEL ((int32_t)((1u << 30) - 1))

/* Result codes.  The numbers are part of the ABI and never change. */
enum fc_result {
    FC_OK = 0,
    FC_ERR_INVALID_ARGUMENT = 1,  /* a parameter is out of range or NULL */
    FC_ERR_NONFINITE = 2,         /* an input value is NaN or infinite */
    FC_ERR_LEVEL_OVERFLOW = 3,    /* |value / step| exceeds FC_MAX_LEVEL */
    FC_ERR_BUFFER_TOO_SMALL = 4,  /* output capacity too small */
    FC_ERR_TRUNCATED = 5,         /* the container ends early */
    FC_ERR_CORRUPT = 6,           /* the container is malformed */
    FC_ERR_CHECKSUM = 7,          /* the CRC32 does not match */
    FC_ERR_VERSION = 8,           /* unknown magic or format version */
    FC_ERR_LIMIT = 9,             /* a decoder limit is exceeded */
    FC_ERR_MISMATCH = 10,         /* targets do not match the container */
    FC_ERR_NOMEM = 11,            /* memory allocation failed */
    FC_ERR_THREAD = 12            /* a worker thread could not start */
};

/* A static, NUL-terminated name such as "FC_ERR_CORRUPT"; "FC_ERR_UNKNOWN"
 * for numbers this version does not know. */
const char *fc_result_name(int result);

/* The library version as "major.minor.patch". */
const char *fc_version_string(void);

/* ------------------------------------------------------------------------ */
/* Encoding                                                                  */
/* ------------------------------------------------------------------------ */

/* Significance-coding mode of a slice.  FC_MODE_AUTO lets the encoder pick
 * per slice from the density of nonzero levels. */
enum fc_mode {
    FC_MODE_AUTO = -1,
    FC_MODE_DENSE = 0,   /* a significance flag per element */
    FC_MODE_GROUPED = 1, /* row flags, 16-element group flags, then sig flags */
    FC_MODE_RUNS = 2     /* Exp-Golomb coded gaps between nonzeros */
};

/* How float values become integer levels (fc_encode_options.quantizer).
 * The kind is stored per tensor; tensors given as integer `levels` are always
 * coded as FC_QUANT_UNIFORM.
 *
 * FC_QUANT_UNIFORM  level k, reconstruction (float)k * step.  lambda = 0:
 *                   rounding; lambda > 0: RD quantization (RDOQ).
 * FC_QUANT_TRELLIS  dependent (trellis-coded) quantization, VVC's 4 states:
 *                   two scalar quantizers Q0 = {2j * step} and
 *                   Q1 = {(2j - sgn j) * step}, chosen per weight by a state
 *                   machine driven by the parity of each coded level; the
 *                   encoder picks the levels by a Viterbi search minimizing
 *                   eta * distortion + lambda' * rate (always rate-aware:
 *                   lambda = 0 selects ln(2)/6).  The "max compression"
 *                   mode: slower to encode, decodes at about plain speed.
 *                   Decoded `levels` are reconstruction indices q (the value
 *                   is (float)q * step, as for uniform tensors).
 * FC_QUANT_TRELLIS8 the same with NNR's 8-state machine.
 * FC_QUANT_DITHER   subtractive dithered quantization: level
 *                   k = round((w + u) / step), reconstruction
 *                   (float)k * step - u, where u = fc_dither() is a
 *                   pseudo-random value, uniform in (-step/2, step/2), drawn
 *                   from a 64-bit seed (fc_encode_options.dither_seed,
 *                   stored in the container), the tensor index and the
 *                   element index.  The error is uniform and independent of
 *                   the input: an unbiased quantizer.  Levels are rounded
 *                   (lambda must be 0).  Every element reconstructs to a
 *                   nonzero value (a zero level to -u). */
enum fc_quantizer {
    FC_QUANT_UNIFORM = 0,
    FC_QUANT_TRELLIS = 1,
    FC_QUANT_TRELLIS8 = 2,
    FC_QUANT_DITHER = 3
};

/* One tensor to encode.  Exactly one of `values` and `levels` is non-NULL. */
typedef struct fc_tensor {
    uint32_t index;                /* id written to the container; strictly
                                      increasing across one call */
    uint32_t ndim;                 /* 0 .. FC_MAX_DIMS */
    uint64_t shape[FC_MAX_DIMS];   /* sizes of the first ndim dimensions */
    const float *values;           /* float32 weights to quantize, or NULL */
    const int32_t *levels;         /* integer levels coded losslessly
                                      (|level| <= FC_MAX_LEVEL), or NULL */
    const float *importance;       /* optional per-weight importance eta >= 0
                                      (values only); NULL means eta = 1.  It is
                                      normalized to mean 1 inside. */
    double step;                   /* > 0: use this step (required with
                                      levels); 0: derive it from S (below) */
    double sigma_min;              /* > 0: the sigma_min of the step formula;
                                      0: the RMS of the nonzero values */
    float *recon;                  /* optional out: level * step per weight
                                      (see enum fc_quantizer), exactly what
                                      a decoder reconstructs */
    /* since 0.3 (the struct grew: zero-initialize it) */
    const float *reference;        /* optional temporal side information:
                                      numel float32 values the decoder also
                                      holds (e.g. the previous round's decoded
                                      update), same layout as the tensor; the
                                      co-located value conditions the
                                      contexts.  Used where it pays
                                      (fc_encode_options.reference); a tensor
                                      coded with it records its digest
                                      (fc_reference_digest), and a decoder
                                      must pass the same reference. */
} fc_tensor;

/* Per-tensor results of an encode. */
typedef struct fc_tensor_stats {
    double step;          /* the step used (float32-representable) */
    uint64_t nonzeros;    /* number of nonzero levels */
    uint64_t bytes;       /* bytes of this tensor in the container
                             (its header and payloads) */
    uint32_t slices;      /* number of independent slices */
    uint32_t modes;       /* bit m set when some slice used mode m */
    double sq_error;      /* sum of (value - recon)^2 (0 for levels) */
} fc_tensor_stats;

typedef struct fc_encode_options {
    size_t struct_size;     /* sizeof(fc_encode_options) */
    double lambda;          /* rate-distortion trade-off >= 0, in units of
                               step^2 per bit; 0 means plain rounding.
                               ln(2)/6 ~= 0.1155 is the high-rate optimum. */
    uint32_t S;             /* step resolution S >= 0 of the DeepCABAC rule
                               step = 2|w|max / (2|w|max / sigma_min + S) */
    uint32_t max_gtx;       /* N: number of |level| > j flags, 1..FC_MAX_GTX
                               (default 4) */
    uint32_t threads;       /* worker threads; 0 = all online CPUs */
    uint32_t slice_elems;   /* target elements per slice (default 1048576) */
    int32_t mode;           /* enum fc_mode; default FC_MODE_AUTO */
    uint32_t window_set;    /* probability-estimator window set 0..7
                               (default 0 = shifts 4 and 7), or
                               FC_WINDOW_AUTO: per tensor the set that
                               codes it smallest (encodes take longer) */
    /* since 0.2 */
    int32_t quantizer;      /* enum fc_quantizer for float tensors
                               (default FC_QUANT_UNIFORM) */
    uint64_t dither_seed;   /* FC_QUANT_DITHER: the seed of the dither
                               (written to the container); derive it from
                               round and client ids, never reuse one for two
                               different updates that are summed */
    /* since 0.3 */
    int32_t transpose;      /* orientation of tensors with >= 2 dimensions
                               (not dithered ones): 0 (default) as given,
                               1 code the transposed 2-D view, FC_TRANSPOSE_AUTO
                               code both when the view has more empty
                               columns than empty rows, and tensors with
                               >= 3 dimensions also with their
                               first two axes swapped (conv filters as rows
                               of input channels), and keep the best.
                               FC_TRANSPOSE_SWAP: tensors with
                               >= 3 dimensions with their first two axes
                               swapped, others as given.  Other values are
                               invalid.  Decoders always return the
                               original layout. */
    /* since 0.3 */
    int32_t reference;      /* tensors given a reference (fc_tensor.reference):
                               FC_REFERENCE_AUTO (0, default) code each with
                               and without it and keep the better (by size;
                               under RD quantization by distortion / step^2
                               + lambda * bits), so a reference never costs
                               bytes; the REFERENCE flag (fc_tensor_info) says
                               which.  FC_REFERENCE_ALWAYS (1): always with it
                               (as given, never transposed). */
    /* added in 0.3 after `reference` */
    int32_t compact;        /* 1: a compact container for ends that both know
                               the shapes (FORMAT.md §2): no shapes are
                               stored, only a digest of the list of all
                               `count` shapes; all-zero tensors (not
                               dithered) are omitted; steps take 1, 2 or 4
                               bytes (the shortest exact form); tensors of
                               at most 4096 elements are coded in the
                               short code (FORMAT.md §6.6) where that is
                               smaller (the same levels).  Tensor
                               indices must be 0, 1, ..., count - 1.  Every
                               decoder call then needs these shapes as
                               fc_decode_options.expected.  0 (default):
                               the self-describing container. */
} fc_encode_options;

#define FC_TRANSPOSE_AUTO (-1)
#define FC_TRANSPOSE_SWAP 2
#define FC_REFERENCE_AUTO 0
#define FC_REFERENCE_ALWAYS 1

/* Fill `opts` with the defaults (and struct_size). */
void fc_encode_options_init(fc_encode_options *opts);

/* An upper bound of the container size for these tensors (any options).
 * Returns 0 when the tensor descriptions are invalid. */
size_t fc_encode_bound(const fc_tensor *tensors, size_t count);

/* Encode `count` tensors into `dst` (capacity `dst_capacity`, which
 * fc_encode_bound() always satisfies).  On FC_OK *dst_size holds the
 * container size; `stats` (NULL, or `count` entries) receives per-tensor
 * statistics.  On FC_ERR_BUFFER_TOO_SMALL *dst_size holds the size that is
 * needed.  On other errors *dst_size is 0; `bad_tensor` (may be NULL)
 * receives the position in `tensors` of the tensor at fault, or SIZE_MAX. */
enum fc_result fc_encode(const fc_tensor *tensors, size_t count,
                         const fc_encode_options *opts,
                         uint8_t *dst, size_t dst_capacity, size_t *dst_size,
                         fc_tensor_stats *stats, size_t *bad_tensor);

/* ------------------------------------------------------------------------ */
/* Decoding                                                                  */
/* ------------------------------------------------------------------------ */

/* The shape of one tensor (fc_decode_options.expected). */
typedef struct fc_shape {
    uint32_t ndim;                 /* 0 .. FC_MAX_DIMS */
    uint64_t shape[FC_MAX_DIMS];   /* the first ndim sizes */
} fc_shape;

typedef struct fc_decode_options {
    size_t struct_size;        /* sizeof(fc_decode_options) */
    uint32_t threads;          /* worker threads; 0 = all online CPUs */
    uint32_t max_tensors;      /* default 1 << 20 */
    uint64_t max_tensor_elems; /* default 1 << 28 (1 GiB of float32) */
    uint64_t max_total_elems;  /* default 1 << 28; a container can declare
                                  all-zero tensors in a few bytes, so callers
                                  that allocate from the header should set
                                  this to the model size they expect (or set
                                  `expected`) */
    /* added in 0.2 after the first release (an older, smaller struct_size
     * leaves it NULL) */
    const fc_shape *expected;  /* NULL (default), or the shapes the caller
                                  expects, one per tensor: a container with
                                  another tensor count, or a tensor of
                                  another ndim or size, is refused with
                                  FC_ERR_MISMATCH as soon as the header
                                  field that differs is read (before
                                  anything is allocated from the header).
                                  fc_decode then never writes more than
                                  these shapes hold. */
    size_t expected_count;     /* entries of `expected` */
    /* A compact container (fc_encode_options.compact) stores no shapes:
     * it is read with `expected` = all the shapes it was coded with (their
     * digest is checked, FC_ERR_MISMATCH without them or with others), and
     * every function then sees all expected_count tensors, those it omits
     * as all-zero tensors with step 1 and no slices.  fc_split makes one
     * compact part per tensor (one without tensors for an omitted one),
     * fc_join joins compact parts with the same `expected` into a compact
     * container (not mixed with self-describing parts: FC_ERR_MISMATCH). */
} fc_decode_options;

void fc_decode_options_init(fc_decode_options *opts);

/* What the container says about one tensor. */
typedef struct fc_tensor_info {
    uint32_t index;
    uint32_t ndim;
    uint64_t shape[FC_MAX_DIMS];
    uint64_t numel;
    double step;
    uint32_t slices;
    uint32_t max_gtx;
    /* since 0.2 (the struct grew: code built against 0.1 must be rebuilt) */
    uint32_t quantizer;    /* enum fc_quantizer */
    uint64_t dither_seed;  /* the container's seed (FC_QUANT_DITHER), else 0 */
    /* since 0.3 */
    uint32_t reference;        /* 1: coded with a reference tensor */
    uint32_t reference_digest; /* its fc_reference_digest() (0 without) */
} fc_tensor_info;

/* Parse and check a container without decoding payloads: magic, version,
 * CRC32, every header field and the limits in `opts` (NULL = defaults).
 * *count receives the number of tensors; the first min(count, capacity)
 * entries of `infos` (may be NULL when capacity is 0) are filled. */
enum fc_result fc_inspect(const uint8_t *src, size_t src_size,
                          const fc_decode_options *opts,
                          fc_tensor_info *infos, size_t capacity,
                          size_t *count);

/* ------------------------------------------------------------------------ */
/* Splitting and joining containers by tensor (no re-coding)                 */
/* ------------------------------------------------------------------------ */

/* Extra bytes per tensor that fc_split() may need beyond `src_size`. */
#define FC_SPLIT_OVERHEAD 32u
/* Extra bytes that fc_join() may need beyond the sum of the part sizes. */
#define FC_JOIN_OVERHEAD 32u

/* Split a container into one container per tensor (its "parts") without
 * decoding or re-coding anything.  Part i holds tensor i: its header (every
 * flag: quantizer kind, TRANSPOSED, REFERENCE and its digest, window set,
 * the slices' modes and flags) and its slice payloads byte for byte, under a
 * container header of its own (with the container's dither seed when the
 * tensor is dithered) and a new CRC-32.  The part keeps the tensor's index
 * (a dithered tensor's dither depends on it) and writes its step explicitly,
 * so the tensor decodes from its part exactly as from `src`.
 *
 * `src` is checked as by fc_inspect() with `opts` (NULL = defaults).  The
 * parts are written back to back into `dst`; part i takes part_sizes[i]
 * bytes.  src_size + FC_SPLIT_OVERHEAD * (tensor count) bytes of `dst`
 * always suffice.  When `dst_capacity` or `capacity` (entries of
 * `part_sizes`) is too small the result is FC_ERR_BUFFER_TOO_SMALL and
 * nothing is written but *dst_size and *count, which then hold the bytes and
 * the number of parts needed (so a call with dst = part_sizes = NULL and
 * capacities 0 asks for the sizes).  On other errors both are 0. */
enum fc_result fc_split(const uint8_t *src, size_t src_size, const fc_decode_options *opts,
                        uint8_t *dst, size_t dst_capacity, size_t *dst_size,
                        size_t *part_sizes, size_t capacity, size_t *count);

/* Join `count` containers (e.g. parts from fc_split()) into one without
 * re-coding: the tensors of parts[0], then those of parts[1], and so on.
 * Each part is checked as by fc_inspect() with `opts`; the limits of `opts`
 * (max_tensors, max_total_elems) and its `expected` shapes apply to the
 * joined container.  The tensor headers are rewritten the way fc_encode()
 * writes them (an index implied by the previous one and a repeated step are
 * not stored), so joining, in order, the parts that fc_split() made of a
 * container written by fc_encode() gives back that container byte for byte;
 * a subset of them gives a valid container of that subset.
 *
 * Refused, with *bad_part = the position of the part at fault:
 *   the part's own fc_inspect() error (FC_ERR_TRUNCATED, FC_ERR_CORRUPT,
 *   FC_ERR_CHECKSUM, FC_ERR_VERSION, FC_ERR_LIMIT);
 *   FC_ERR_INVALID_ARGUMENT: the part's first tensor index is not greater
 *   than the previous part's last one (a tensor given twice, or parts out of
 *   container order: indices must increase through a container);
 *   FC_ERR_MISMATCH: a dithered tensor whose dither seed differs from that of
 *   an earlier part's dithered tensor (a container holds one seed), or a
 *   tensor that does not match `opts->expected`;
 *   FC_ERR_LIMIT: the joined container exceeds max_tensors or
 *   max_total_elems.
 * (*bad_part is SIZE_MAX when no single part is at fault: an argument error,
 * fewer tensors than `opts->expected` holds, a small buffer.)
 * The sum of the part sizes + FC_JOIN_OVERHEAD bytes of `dst` always
 * suffice; with less, FC_ERR_BUFFER_TOO_SMALL and *dst_size holds the size
 * needed.  Memory: the parsed tables of all parts, O(total part bytes). */
enum fc_result fc_join(const uint8_t *const *parts, const size_t *part_sizes, size_t count,
                       const fc_decode_options *opts, uint8_t *dst, size_t dst_capacity,
                       size_t *dst_size, size_t *bad_part);

/* Rewrite a container as compact (`compact` = 1) or self-describing (0)
 * without decoding or re-coding anything (fc_encode_options.compact): the
 * same tensors, payloads byte for byte, decoding to the same values.
 * `src` is checked as by fc_inspect() with `opts` (NULL = defaults; a
 * compact `src` needs opts->expected).  To compact: the tensor indices must
 * be 0, 1, ..., count - 1 (FC_ERR_INVALID_ARGUMENT otherwise); all-zero
 * tensors are dropped and steps take their shortest form.  To
 * self-describing: a tensor a compact `src` omits becomes an all-zero
 * tensor with step 1.  src_size + FC_CONVERT_OVERHEAD * (tensor count) + 16
 * bytes of `dst` always suffice; with less, FC_ERR_BUFFER_TOO_SMALL and
 * *dst_size holds the size needed. */
#define FC_CONVERT_OVERHEAD 96u
enum fc_result fc_convert(const uint8_t *src, size_t src_size, const fc_decode_options *opts,
                          int compact, uint8_t *dst, size_t dst_capacity, size_t *dst_size);

/* The dither of FC_QUANT_DITHER: out[i] receives the u that the decoder
 * subtracts from element first + i (row-major element index) of the tensor
 * with index `tensor_index` in a container with seed `seed` and a tensor
 * step `step` (a normal float32 > 0).  u is an exact float32 in
 * (-step/2, step/2); see FORMAT.md for the definition. */
enum fc_result fc_dither(uint64_t seed, uint32_t tensor_index, uint64_t first, size_t count,
                         double step, float *out);

/* The digest a container records for a tensor coded with `reference`
 * (numel float32 values) at step `step` (the tensor's float32 step): the
 * CRC-32 of the reference's class bytes (FORMAT.md §7.5), so two references
 * with the same digest decode alike.  Non-finite values are allowed. */
enum fc_result fc_reference_digest(const float *reference, uint64_t numel, double step,
                                   uint32_t *digest);

/* Accumulator element types for fc_decode_target.acc. */
enum fc_acc_dtype { FC_ACC_NONE = 0, FC_ACC_F32 = 1, FC_ACC_F64 = 2 };

/* Where one tensor's decoded data goes.  Any combination of the pointers may
 * be set (each holds numel elements); all NULL skips the tensor's payload. */
typedef struct fc_decode_target {
    int32_t *levels;       /* out: the integer levels (trellis tensors: the
                              reconstruction indices; dithered tensors: the
                              levels k of w + u) */
    float *values;         /* out: level * step, float32 (dithered tensors:
                              level * step - u) */
    void *acc;             /* in/out: acc[i] += weight * value[i] (for every
                              element whose value is nonzero: dithered
                              tensors add every element) */
    int32_t acc_dtype;     /* enum fc_acc_dtype of acc */
    double weight;         /* accumulation weight */
    /* since 0.3 (the struct grew: zero-initialize it) */
    const float *reference; /* the reference tensor (numel float32) a tensor
                               was coded with (fc_tensor_info.reference);
                               a missing or different one (by digest) gives
                               FC_ERR_MISMATCH; ignored for other tensors */
} fc_decode_target;

/* Decode a container into `targets`, one per tensor in container order
 * (`count` must equal the tensor count).  The container is checked in full
 * (as by fc_inspect) before any target is written.  A payload that turns out
 * malformed while decoding returns FC_ERR_CORRUPT; `levels` and `values`
 * targets may then hold partial data, but accumulators are never touched:
 * when any target accumulates, every payload is first decoded once without
 * output, so a rejected container leaves every accumulator as it was.
 * Hostile input never causes a read outside `src`, a write outside the
 * targets, or work beyond a bounded amount per element. */
enum fc_result fc_decode(const uint8_t *src, size_t src_size,
                         const fc_decode_options *opts,
                         const fc_decode_target *targets, size_t count);

#ifdef __cplusplus
}
#endif

#endif /* FEDCODEC_H */
