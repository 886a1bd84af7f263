"""cffi builder of ``fedcodec._fedcodec_cffi`` (API mode, out of line).

The cdef below is written by hand and mirrors ``codec_c/include/fedcodec.h``
declaration by declaration.  Because the extension is compiled in API mode
against the real header, drift is caught, never silent memory corruption:

* a function prototype that drifts is a build error (the generated wrapper
  calls the real function; ``-Werror`` turns the type warnings into errors);
* a struct field that drifts fails ``import fedcodec`` (cffi compares each
  struct's layout with the compiler's, and ``_binding`` touches every struct);
* enum and macro values are taken from the compiler, not from the cdef; the
  Python-side copies of the result numbers (``errors.py``) are checked
  against ``fc_result_name()`` by the tests.

setuptools runs this file through ``cffi_modules`` (see ``setup.py``) with the
project root as the working directory.  To build the module by hand for a
quick experiment: ``python fedcodec/_ffi_build.py`` (writes the extension into
the current directory).
"""

from __future__ import annotations

import os
from pathlib import Path

from cffi import FFI

CDEF = r"""
/* ---- mirrors codec_c/include/fedcodec.h; keep the declaration order ---- */

#define FC_VERSION_MAJOR ...
#define FC_VERSION_MINOR ...
#define FC_VERSION_PATCH ...
#define FC_FORMAT_VERSION ...
#define FC_MAX_DIMS ...
#define FC_MAX_GTX ...
#define FC_WINDOW_AUTO ...
#define FC_TRANSPOSE_AUTO ...
#define FC_REFERENCE_AUTO ...
#define FC_REFERENCE_ALWAYS ...
#define FC_MAX_LEVEL ...

enum fc_result {
    FC_OK = 0,
    FC_ERR_INVALID_ARGUMENT = 1,
    FC_ERR_NONFINITE = 2,
    FC_ERR_LEVEL_OVERFLOW = 3,
    FC_ERR_BUFFER_TOO_SMALL = 4,
    FC_ERR_TRUNCATED = 5,
    FC_ERR_CORRUPT = 6,
    FC_ERR_CHECKSUM = 7,
    FC_ERR_VERSION = 8,
    FC_ERR_LIMIT = 9,
    FC_ERR_MISMATCH = 10,
    FC_ERR_NOMEM = 11,
    FC_ERR_THREAD = 12
};

const char *fc_result_name(int result);
const char *fc_version_string(void);

/* ---- encoding ---- */

enum fc_mode {
    FC_MODE_AUTO = -1,
    FC_MODE_DENSE = 0,
    FC_MODE_GROUPED = 1,
    FC_MODE_RUNS = 2
};

enum fc_quantizer {
    FC_QUANT_UNIFORM = 0,
    FC_QUANT_TRELLIS = 1,
    FC_QUANT_TRELLIS8 = 2,
    FC_QUANT_DITHER = 3
};

typedef struct fc_tensor {
    uint32_t index;
    uint32_t ndim;
    uint64_t shape[8];              /* FC_MAX_DIMS */
    const float *values;
    const int32_t *levels;
    const float *importance;
    double step;
    double sigma_min;
    float *recon;
    const float *reference;
} fc_tensor;

typedef struct fc_tensor_stats {
    double step;
    uint64_t nonzeros;
    uint64_t bytes;
    uint32_t slices;
    uint32_t modes;
    double sq_error;
} fc_tensor_stats;

typedef struct fc_encode_options {
    size_t struct_size;
    double lambda;
    uint32_t S;
    uint32_t max_gtx;
    uint32_t threads;
    uint32_t slice_elems;
    int32_t mode;
    uint32_t window_set;
    int32_t quantizer;
    uint64_t dither_seed;
    int32_t transpose;
    int32_t reference;
    int32_t compact;
} fc_encode_options;

void fc_encode_options_init(fc_encode_options *opts);

size_t fc_encode_bound(const fc_tensor *tensors, size_t count);

enum fc_result fc_encode(const fc_tensor *tensors, size_t count,
                         const fc_encode_options *opts,
                         uint8_t *dst, size_t dst_capacity, size_t *dst_size,
                         fc_tensor_stats *stats, size_t *bad_tensor);

/* ---- decoding ---- */

typedef struct fc_shape {
    uint32_t ndim;
    uint64_t shape[8];              /* FC_MAX_DIMS */
} fc_shape;

typedef struct fc_decode_options {
    size_t struct_size;
    uint32_t threads;
    uint32_t max_tensors;
    uint64_t max_tensor_elems;
    uint64_t max_total_elems;
    const fc_shape *expected;
    size_t expected_count;
} fc_decode_options;

void fc_decode_options_init(fc_decode_options *opts);

typedef struct fc_tensor_info {
    uint32_t index;
    uint32_t ndim;
    uint64_t shape[8];              /* FC_MAX_DIMS */
    uint64_t numel;
    double step;
    uint32_t slices;
    uint32_t max_gtx;
    uint32_t quantizer;
    uint64_t dither_seed;
    uint32_t reference;
    uint32_t reference_digest;
} fc_tensor_info;

enum fc_result fc_inspect(const uint8_t *src, size_t src_size,
                          const fc_decode_options *opts,
                          fc_tensor_info *infos, size_t capacity,
                          size_t *count);

#define FC_SPLIT_OVERHEAD ...
#define FC_JOIN_OVERHEAD ...
#define FC_CONVERT_OVERHEAD ...
enum fc_result fc_split(const uint8_t *src, size_t src_size, const fc_decode_options *opts,
                        uint8_t *dst, size_t dst_capacity, size_t *dst_size,
                        size_t *part_sizes, size_t capacity, size_t *count);
enum fc_result fc_join(const uint8_t *const *parts, const size_t *part_sizes, size_t count,
                       const fc_decode_options *opts, uint8_t *dst, size_t dst_capacity,
                       size_t *dst_size, size_t *bad_part);
enum fc_result fc_convert(const uint8_t *src, size_t src_size, const fc_decode_options *opts,
                          int compact, uint8_t *dst, size_t dst_capacity, size_t *dst_size);

enum fc_result fc_reference_digest(const float *reference, uint64_t numel, double step,
                                   uint32_t *digest);
enum fc_result fc_dither(uint64_t seed, uint32_t tensor_index, uint64_t first, size_t count,
                         double step, float *out);

enum fc_acc_dtype { FC_ACC_NONE = 0, FC_ACC_F32 = 1, FC_ACC_F64 = 2 };

typedef struct fc_decode_target {
    int32_t *levels;
    float *values;
    void *acc;
    int32_t acc_dtype;
    double weight;
    const float *reference;
} fc_decode_target;

enum fc_result fc_decode(const uint8_t *src, size_t src_size,
                         const fc_decode_options *opts,
                         const fc_decode_target *targets, size_t count);
"""

# The header's array bound, checked at compile time against the cdef's
# literal 8 (the cdef cannot name a macro in an array size).
CSOURCE = r"""
#include "fedcodec.h"

typedef char fc_cdef_max_dims_is_8[(FC_MAX_DIMS == 8) ? 1 : -1];
"""

# Paths are relative to the project root: setuptools runs cffi_modules from
# there and wants relative source paths (they end up in the sdist as is).
_ROOT = Path(__file__).resolve().parent.parent
_CODEC = _ROOT / "codec_c"


def _relative(path: Path) -> str:
    return os.path.relpath(path, Path.cwd())


def c_sources() -> list[str]:
    """Every ``codec_c/src/*.c`` file, sorted (globbed at build time)."""
    sources = sorted(_relative(p) for p in (_CODEC / "src").glob("*.c"))
    if not sources:
        raise RuntimeError(f"no C sources found in {_CODEC / 'src'}")
    return sources


def c_headers() -> list[str]:
    """Every header of the C library (public and internal), sorted.

    Passed as the extension's ``depends``: an incremental build (an in-tree ``build/``
    folder) recompiles when only a header changed instead of linking stale objects.
    """
    return sorted(_relative(p) for d in ("include", "src") for p in (_CODEC / d).rglob("*.h"))


# -ffp-contract=off: no fused multiply-add, so level * step and the
# quantizer's arithmetic give the same float bits on every platform.
# -Werror (CI and development: FEDCODEC_WERROR=1): a cdef that drifts from
# fedcodec.h shows up as a compiler warning in the generated wrapper; make it
# a build failure.  Not by default, so a user's newer compiler with new
# warnings cannot break `pip install`.
COMPILE_ARGS = [
    "-std=c99",
    "-O2",
    "-Wall",
    "-Wextra",
    "-pthread",
    "-ffp-contract=off",
]
if os.environ.get("FEDCODEC_WERROR") == "1":
    COMPILE_ARGS.append("-Werror")

ffi = FFI()
ffi.cdef(CDEF)
ffi.set_source(
    "fedcodec._fedcodec_cffi",
    CSOURCE,
    sources=c_sources(),
    depends=c_headers(),
    include_dirs=[_relative(_CODEC / "include"), _relative(_CODEC / "src")],
    extra_compile_args=COMPILE_ARGS,
    extra_link_args=["-pthread"],
    libraries=["pthread"],
)

if __name__ == "__main__":
    ffi.compile(verbose=True)
