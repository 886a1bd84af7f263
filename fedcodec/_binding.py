"""The one door to the C library: a thin layer 1:1 with ``fedcodec.h``.

Only this module imports ``fedcodec._fedcodec_cffi``.  Each function here
checks its inputs (dtype, layout, sizes, integer ranges), makes one C call
and turns a non-zero ``enum fc_result`` into a :class:`~fedcodec.errors.FedCodecError`
subclass whose message names the C result and the problem (which tensor,
what is wrong).  The public API in :mod:`fedcodec.codec` is built only on it.

Buffers go to C without copies (``ffi.from_buffer``); the cdata objects keep
the numpy arrays alive until the call returns.  cffi releases the GIL around
every C call, so encoding or decoding on several Python threads at once runs
in parallel (the C library is reentrant; each call must have its own output
arrays, and the caller must not modify the inputs while a call runs).
"""

from __future__ import annotations

import dataclasses
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np
import numpy.typing as npt

from fedcodec._fedcodec_cffi import ffi, lib
from fedcodec.errors import (
    FC_ERR_BUFFER_TOO_SMALL,
    FC_ERR_INVALID_ARGUMENT,
    FC_ERR_LEVEL_OVERFLOW,
    FC_ERR_MISMATCH,
    FC_ERR_NONFINITE,
    FC_OK,
    error_class_for,
)

# cffi compares a struct's cdef layout with the compiler's on first use; use
# them all now, so a cdef that drifted from fedcodec.h fails at import.
for _struct in (
    "fc_tensor",
    "fc_tensor_stats",
    "fc_encode_options",
    "fc_decode_options",
    "fc_tensor_info",
    "fc_decode_target",
):
    ffi.sizeof(_struct)

# Constants are read from the compiled library, never restated.
MAX_DIMS: int = int(lib.FC_MAX_DIMS)
MAX_GTX: int = int(lib.FC_MAX_GTX)
MAX_LEVEL: int = int(lib.FC_MAX_LEVEL)
FORMAT_VERSION: int = int(lib.FC_FORMAT_VERSION)

MODE_AUTO: int = int(lib.FC_MODE_AUTO)
MODE_DENSE: int = int(lib.FC_MODE_DENSE)
MODE_GROUPED: int = int(lib.FC_MODE_GROUPED)
MODE_RUNS: int = int(lib.FC_MODE_RUNS)
MODES: tuple[int, ...] = (MODE_AUTO, MODE_DENSE, MODE_GROUPED, MODE_RUNS)

QUANT_UNIFORM: int = int(lib.FC_QUANT_UNIFORM)
QUANT_TRELLIS: int = int(lib.FC_QUANT_TRELLIS)
QUANT_TRELLIS8: int = int(lib.FC_QUANT_TRELLIS8)
QUANT_DITHER: int = int(lib.FC_QUANT_DITHER)
QUANTIZERS: tuple[int, ...] = (QUANT_UNIFORM, QUANT_TRELLIS, QUANT_TRELLIS8, QUANT_DITHER)

_ACC_DTYPE: dict[np.dtype[Any], int] = {
    np.dtype(np.float32): int(lib.FC_ACC_F32),
    np.dtype(np.float64): int(lib.FC_ACC_F64),
}

_UINT32_MAX = 2**32 - 1
_UINT64_MAX = 2**64 - 1
_WINDOW_SETS = 8  # fc_encode_options.window_set is 0..7 (fedcodec.h) ...
WINDOW_AUTO: int = int(lib.FC_WINDOW_AUTO)  # ... or this: chosen per tensor
TRANSPOSE_AUTO: int = int(lib.FC_TRANSPOSE_AUTO)
REFERENCE_AUTO: int = int(lib.FC_REFERENCE_AUTO)  # a tensor's reference where it pays
REFERENCE_ALWAYS: int = int(lib.FC_REFERENCE_ALWAYS)

_F32 = np.dtype(np.float32)
_F32_NORMAL_MIN = float(np.finfo(np.float32).tiny)
_F32_MAX = float(np.finfo(np.float32).max)
_I32 = np.dtype(np.int32)

# What each result means, in words for an exception message.
_MEANING = {
    1: "a parameter is out of range",
    2: "an input value is NaN or infinite",
    3: f"|value / step| exceeds the largest level {2**30 - 1}; use a larger step",
    4: "output buffer too small (a bug: the buffer was sized by fc_encode_bound)",
    5: "the container ends early (truncated)",
    6: "the container is malformed",
    7: "the CRC32 does not match (corrupted data)",
    8: "unknown magic or format version (not a fedcodec container, or a newer format)",
    9: "a decoder limit is exceeded (max_tensors, max_tensor_elems or max_total_elems)",
    10: "the targets do not match the container",
    11: "the C library could not allocate memory",
    12: "a worker thread could not be started",
}


def result_name(code: int) -> str:
    """``fc_result_name(code)``: the C name of a result code."""
    name: bytes = ffi.string(lib.fc_result_name(code))
    return name.decode("ascii")


def version_string() -> str:
    """``fc_version_string()``: the C library version, "major.minor.patch"."""
    version: bytes = ffi.string(lib.fc_version_string())
    return version.decode("ascii")


def _fail(code: int, problem: str) -> NoReturn:
    """Raise the exception for C result ``code`` with ``problem`` in words."""
    raise error_class_for(code)(problem, code=code, result_name=result_name(code))


def invalid(problem: str, code: int = FC_ERR_INVALID_ARGUMENT) -> NoReturn:
    """Raise :class:`InvalidParameterError` for a check done in Python."""
    _fail(code, problem)


def _check_result(code: int, what: str) -> None:
    if code != FC_OK:
        _fail(code, f"{what}: {_MEANING.get(code, 'unknown error')}")


# ---------------------------------------------------------------------------
# Argument checks shared by encode and decode
# ---------------------------------------------------------------------------


def check_uint(value: object, name: str, low: int, high: int) -> int:
    """``value`` as an int in ``[low, high]``, else InvalidParameterError."""
    if isinstance(value, bool | np.bool_):
        invalid(f"{name} must be an integer, got {value!r}")
    try:
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        invalid(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if not low <= number <= high:
        invalid(f"{name} must be in [{low}, {high}], got {number}")
    return number


def check_real(value: object, name: str) -> float:
    """``value`` as a finite float, else InvalidParameterError."""
    if isinstance(value, bool | np.bool_ | str | bytes):
        invalid(f"{name} must be a number, got {value!r}")
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        invalid(f"{name} must be a number, got {type(value).__name__} {value!r}")
    if not math.isfinite(number):
        invalid(f"{name} must be finite, got {number}")
    return number


def check_float(value: object, name: str, *, positive: bool = False) -> float:
    """``value`` as a finite float >= 0 (> 0 when ``positive``)."""
    number = check_real(value, name)
    if positive and number <= 0.0:
        invalid(f"{name} must be > 0, got {number}")
    if number < 0.0:
        invalid(f"{name} must be >= 0, got {number}")
    return number


def _check_array(
    array: np.ndarray[Any, Any],
    label: str,
    role: str,
    dtypes: Sequence[np.dtype[Any]],
    numel: int | None,
    *,
    writeable: bool = False,
) -> None:
    """Check what C needs of a buffer: dtype, C order, alignment, size."""
    if not isinstance(array, np.ndarray):
        invalid(f"{label}: {role} must be a numpy array, got {type(array).__name__}")
    if array.dtype not in dtypes:
        wanted = " or ".join(str(d) for d in dtypes)
        invalid(
            f"{label}: {role} must have dtype {wanted} (native byte order), got "
            f"{array.dtype.str} ({array.dtype}); convert it explicitly, "
            f"e.g. with .astype(np.{dtypes[0]})"
        )
    if not array.flags.c_contiguous:
        invalid(
            f"{label}: {role} must be C-contiguous (row-major, no strides); "
            "pass np.ascontiguousarray(x)"
        )
    if not array.flags.aligned:
        invalid(f"{label}: {role} is not aligned to its dtype; pass a copy")
    if writeable and not array.flags.writeable:
        invalid(f"{label}: {role} must be writeable")
    if numel is not None and array.size != numel:
        invalid(
            f"{label}: {role} has {array.size} elements, expected {numel}",
            FC_ERR_MISMATCH,
        )


def _pointer(ctype: str, array: np.ndarray[Any, Any] | None, keep: list[Any]) -> Any:
    """A C pointer into ``array`` (no copy), or NULL; ``keep`` holds it alive."""
    if array is None:
        return ffi.NULL
    cdata = ffi.from_buffer(ctype, array, require_writable=array.flags.writeable)
    keep.append(cdata)
    return cdata


def _as_bytes_view(data: object) -> memoryview:
    """A contiguous byte view of a bytes-like container."""
    try:
        view = memoryview(data)  # type: ignore[arg-type]
    except TypeError:
        invalid(f"data must be bytes-like, got {type(data).__name__}")
    if not view.c_contiguous:
        invalid("data must be a contiguous buffer")
    return view.cast("B") if view.format != "B" or view.ndim != 1 else view


as_bytes_view = _as_bytes_view


# ---------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------


@dataclass
class EncodeTensor:
    """One ``fc_tensor`` with its buffers as numpy arrays.

    ``label`` names the tensor in error messages.  Exactly one of ``values``
    (float32) and ``levels`` (int32) is set; ``importance`` (float32) and
    ``recon`` (float32, writeable) are optional; all have ``numel`` elements.
    ``step`` and ``sigma_min`` are 0 for "derive it" (see fedcodec.h).
    """

    label: str
    index: int
    shape: tuple[int, ...]
    values: np.ndarray[Any, np.dtype[np.float32]] | None = None
    levels: np.ndarray[Any, np.dtype[np.int32]] | None = None
    importance: np.ndarray[Any, np.dtype[np.float32]] | None = None
    step: float = 0.0
    sigma_min: float = 0.0
    recon: np.ndarray[Any, np.dtype[np.float32]] | None = None
    reference: np.ndarray[Any, np.dtype[np.float32]] | None = None


@dataclass(frozen=True)
class EncodeOptions:
    """``fc_encode_options`` (``lam`` is the C field ``lambda``)."""

    lam: float = 0.0
    S: int = 128
    max_gtx: int = 4
    threads: int = 0
    slice_elems: int = 1048576
    mode: int = MODE_AUTO
    window_set: int = 0
    quantizer: int = QUANT_UNIFORM
    dither_seed: int = 0
    transpose: int = 0  # 0 as given, 1 transposed, TRANSPOSE_AUTO
    reference: int = 0  # REFERENCE_AUTO (where it pays) or REFERENCE_ALWAYS
    compact: bool = False  # a compact container (shapes known to the decoder)


@dataclass(frozen=True)
class TensorStatsRaw:
    """``fc_tensor_stats`` of one tensor."""

    step: float
    nonzeros: int
    bytes: int
    slices: int
    modes: int
    sq_error: float


def _numel(shape: tuple[int, ...]) -> int:
    return math.prod(shape)


def _fill_tensor(c_tensor: Any, tensor: EncodeTensor, keep: list[Any]) -> None:
    label = tensor.label
    if len(tensor.shape) > MAX_DIMS:
        invalid(f"{label}: has {len(tensor.shape)} dimensions, at most {MAX_DIMS} are supported")
    for size in tensor.shape:
        check_uint(size, f"{label}: shape {tensor.shape}", 0, _UINT64_MAX)
    numel = _numel(tensor.shape)
    if (tensor.values is None) == (tensor.levels is None):
        invalid(f"{label}: exactly one of values and levels must be given")
    if tensor.values is not None:
        _check_array(tensor.values, label, "values", [_F32], numel)
    if tensor.levels is not None:
        _check_array(tensor.levels, label, "levels", [_I32], numel)
        if tensor.importance is not None:
            invalid(f"{label}: importance applies to float values, not to integer levels")
        if not tensor.step > 0.0:
            invalid(f"{label}: integer levels need a step > 0")
    if tensor.importance is not None:
        _check_array(tensor.importance, label, "importance", [_F32], numel)
    if tensor.recon is not None:
        _check_array(tensor.recon, label, "recon", [_F32], numel, writeable=True)
    if tensor.reference is not None:
        _check_array(tensor.reference, label, "reference", [_F32], numel)
    c_tensor.index = check_uint(tensor.index, f"{label}: index", 0, _UINT32_MAX)
    c_tensor.ndim = len(tensor.shape)
    for axis, size in enumerate(tensor.shape):
        c_tensor.shape[axis] = size
    c_tensor.values = _pointer("float[]", tensor.values, keep)
    c_tensor.levels = _pointer("int32_t[]", tensor.levels, keep)
    c_tensor.importance = _pointer("float[]", tensor.importance, keep)
    c_tensor.recon = _pointer("float[]", tensor.recon, keep)
    c_tensor.reference = _pointer("float[]", tensor.reference, keep)
    c_tensor.step = check_float(tensor.step, f"{label}: step")
    with np.errstate(over="ignore"):
        step32 = float(np.float32(tensor.step))
    if tensor.step and not _F32_NORMAL_MIN <= step32 <= _F32_MAX:
        invalid(
            f"{label}: step {tensor.step:g} is not a normal float32 number "
            f"(steps are stored as float32: {_F32_NORMAL_MIN:g} .. {_F32_MAX:g})"
        )
    c_tensor.sigma_min = check_float(tensor.sigma_min, f"{label}: sigma_min")


def _encode_options(options: EncodeOptions) -> Any:
    c_opts = ffi.new("fc_encode_options *")
    lib.fc_encode_options_init(c_opts)
    setattr(c_opts, "lambda", check_float(options.lam, "lam"))  # a Python keyword
    c_opts.S = check_uint(options.S, "S", 0, _UINT32_MAX)
    c_opts.max_gtx = check_uint(options.max_gtx, "max_gtx", 1, MAX_GTX)
    c_opts.threads = check_uint(options.threads, "threads", 0, _UINT32_MAX)
    c_opts.slice_elems = check_uint(options.slice_elems, "slice_elems", 1, _UINT32_MAX)
    if options.mode not in MODES:
        invalid(f"mode must be one of {MODES}, got {options.mode!r}")
    c_opts.mode = options.mode
    if options.window_set != WINDOW_AUTO:
        check_uint(options.window_set, "window_set", 0, _WINDOW_SETS - 1)
    c_opts.window_set = options.window_set
    if options.quantizer not in QUANTIZERS:
        invalid(f"quantizer must be one of {QUANTIZERS}, got {options.quantizer!r}")
    if options.quantizer == QUANT_DITHER and options.lam != 0.0:
        invalid(
            f"the dithered quantizer rounds (its error is independent of the input only "
            f"then): lam must be 0, got {options.lam}"
        )
    c_opts.quantizer = options.quantizer
    c_opts.dither_seed = check_uint(options.dither_seed, "dither_seed", 0, _UINT64_MAX)
    if options.transpose not in (0, 1, TRANSPOSE_AUTO):
        invalid(f"transpose must be 0, 1 or TRANSPOSE_AUTO, got {options.transpose!r}")
    c_opts.transpose = options.transpose
    if options.reference not in (REFERENCE_AUTO, REFERENCE_ALWAYS):
        invalid(f"reference must be REFERENCE_AUTO or REFERENCE_ALWAYS, got {options.reference!r}")
    c_opts.reference = options.reference
    c_opts.compact = 1 if options.compact else 0
    return c_opts


def _explain_tensor_error(code: int, tensor: EncodeTensor, step: float) -> str:
    """Words for an fc_encode error blamed on ``tensor`` (error path only)."""
    if code == FC_ERR_NONFINITE:
        for role, array in (
            ("values", tensor.values),
            ("importance", tensor.importance),
            ("reference", tensor.reference),
        ):
            if array is not None:
                bad = np.flatnonzero(~np.isfinite(array.reshape(-1)))
                if bad.size:
                    where = np.unravel_index(int(bad[0]), tensor.shape) if tensor.shape else ()
                    return (
                        f"{tensor.label}: {role} contain {bad.size} NaN or infinite "
                        f"value(s), the first at {tuple(int(i) for i in where)}"
                    )
    if code == FC_ERR_LEVEL_OVERFLOW:
        if tensor.levels is not None and tensor.levels.size:
            peak = int(np.abs(tensor.levels.astype(np.int64)).max())
            return f"{tensor.label}: a level of magnitude {peak} exceeds {MAX_LEVEL}"
        if tensor.values is not None and tensor.values.size and step > 0.0:
            peak_f = float(np.abs(tensor.values).max())
            return (
                f"{tensor.label}: max |value| {peak_f:g} / step {step:g} exceeds "
                f"the largest level {MAX_LEVEL}; use a larger step"
            )
    importance = tensor.importance
    if code == FC_ERR_INVALID_ARGUMENT and importance is not None and importance.size:
        if float(importance.min()) < 0.0:
            return f"{tensor.label}: importance must be >= 0"
        if float(importance.sum(dtype=np.float64)) <= 0.0:
            return f"{tensor.label}: importance is 0 everywhere; some weight must count"
    if code == FC_ERR_INVALID_ARGUMENT and tensor.values is not None and tensor.step == 0.0:
        peak_abs = float(np.abs(tensor.values).max()) if tensor.values.size else 0.0
        return (
            f"{tensor.label}: the step derived from the values (max |value| {peak_abs:g}) "
            "is not a normal float32 number; pass step= explicitly"
        )
    return f"{tensor.label}: {_MEANING.get(code, 'unknown error')}"


def encode(
    tensors: Sequence[EncodeTensor], options: EncodeOptions
) -> tuple[bytes, list[TensorStatsRaw]]:
    """``fc_encode_bound`` + ``fc_encode``: the container and per-tensor stats."""
    count = len(tensors)
    keep: list[Any] = []
    c_tensors = ffi.new("fc_tensor[]", max(count, 1))
    previous = -1
    for position, tensor in enumerate(tensors):
        _fill_tensor(c_tensors[position], tensor, keep)
        if tensor.index <= previous:
            invalid(f"{tensor.label}: tensor indices must be strictly increasing")
        previous = tensor.index
    c_opts = _encode_options(options)

    bound = int(lib.fc_encode_bound(c_tensors, count))
    # bound == 0 means fc_encode_bound rejected a description: let fc_encode
    # say which one (it checks before it writes anything).
    dst = np.empty(max(bound, 1), dtype=np.uint8)
    c_dst = ffi.from_buffer("uint8_t[]", dst, require_writable=True)
    dst_size = ffi.new("size_t *")
    bad_tensor = ffi.new("size_t *")
    c_stats = ffi.new("fc_tensor_stats[]", max(count, 1))
    code = lib.fc_encode(c_tensors, count, c_opts, c_dst, bound, dst_size, c_stats, bad_tensor)
    del keep  # the input buffers are free again
    if code != FC_OK:
        bad = int(bad_tensor[0])
        if code != FC_ERR_BUFFER_TOO_SMALL and 0 <= bad < count:
            step = float(c_stats[bad].step) or tensors[bad].step
            _fail(code, _explain_tensor_error(code, tensors[bad], step))
        if bound == 0:
            invalid("fc_encode_bound rejected the tensor descriptions")
        _check_result(code, "encoding failed")
    size = int(dst_size[0])
    stats = [
        TensorStatsRaw(
            step=float(s.step),
            nonzeros=int(s.nonzeros),
            bytes=int(s.bytes),
            slices=int(s.slices),
            modes=int(s.modes),
            sq_error=float(s.sq_error),
        )
        for s in (c_stats[i] for i in range(count))
    ]
    return dst[:size].tobytes(), stats


def reference_digest(reference: np.ndarray[Any, np.dtype[np.float32]], step: float) -> int:
    """``fc_reference_digest``: the digest a container records for ``reference``."""
    _check_array(reference, "reference", "reference", [_F32], None)
    digest = ffi.new("uint32_t *")
    c_ref = ffi.from_buffer("float[]", reference) if reference.size else ffi.NULL
    code = lib.fc_reference_digest(c_ref, reference.size, check_float(step, "step"), digest)
    _check_result(code, "reference digest")
    return int(digest[0])


def dither(
    seed: int, tensor_index: int, first: int, count: int, step: float
) -> np.ndarray[Any, np.dtype[np.float32]]:
    """``fc_dither``: the dither u of ``count`` elements from element ``first``."""
    seed = check_uint(seed, "seed", 0, _UINT64_MAX)
    tensor_index = check_uint(tensor_index, "tensor_index", 0, _UINT32_MAX)
    first = check_uint(first, "first", 0, _UINT64_MAX)
    count = check_uint(count, "count", 0, _UINT64_MAX - first)
    step = check_float(step, "step", positive=True)
    out = np.empty(count, dtype=np.float32)
    c_out = ffi.from_buffer("float[]", out, require_writable=True) if count else ffi.NULL
    code = lib.fc_dither(seed, tensor_index, first, count, step, c_out)
    _check_result(code, "dither")
    return out


# ---------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DecodeOptions:
    """``fc_decode_options``."""

    threads: int = 0
    max_tensors: int = 1 << 20
    max_tensor_elems: int = 1 << 32
    max_total_elems: int = 1 << 32
    # ``expected``: a container of other shapes fails with FC_ERR_MISMATCH
    # while its header is parsed (None: no check).
    expected_shapes: tuple[tuple[int, ...], ...] | None = None


@dataclass(frozen=True)
class TensorInfoRaw:
    """``fc_tensor_info`` of one tensor."""

    index: int
    shape: tuple[int, ...]
    numel: int
    step: float
    slices: int
    max_gtx: int
    quantizer: int = QUANT_UNIFORM
    dither_seed: int = 0
    reference: bool = False
    reference_digest: int = 0


@dataclass
class DecodeTarget:
    """One ``fc_decode_target``: any of levels (int32), values (float32) and
    acc (float32 or float64, ``acc += weight * level * step``); all None skips
    the tensor.  ``label`` names the tensor in error messages."""

    label: str
    numel: int
    levels: np.ndarray[Any, np.dtype[np.int32]] | None = None
    values: np.ndarray[Any, np.dtype[np.float32]] | None = None
    acc: npt.NDArray[np.float32] | npt.NDArray[np.float64] | None = None
    weight: float = 1.0
    reference: np.ndarray[Any, np.dtype[np.float32]] | None = None


def _decode_options(options: DecodeOptions) -> tuple[Any, Any]:
    """The ``fc_decode_options`` and the array its ``expected`` points to
    (keep both alive for the call)."""
    c_opts = ffi.new("fc_decode_options *")
    lib.fc_decode_options_init(c_opts)
    c_opts.threads = check_uint(options.threads, "threads", 0, _UINT32_MAX)
    c_opts.max_tensors = check_uint(options.max_tensors, "max_tensors", 0, _UINT32_MAX)
    c_opts.max_tensor_elems = check_uint(
        options.max_tensor_elems, "max_tensor_elems", 0, _UINT64_MAX
    )
    c_opts.max_total_elems = check_uint(options.max_total_elems, "max_total_elems", 0, _UINT64_MAX)
    expected = None
    if options.expected_shapes is not None:
        shapes = options.expected_shapes
        expected = ffi.new("fc_shape[]", max(len(shapes), 1))
        for position, shape in enumerate(shapes):
            if len(shape) > MAX_DIMS:
                invalid(
                    f"expected shape {position} has {len(shape)} dimensions, at most {MAX_DIMS}"
                )
            expected[position].ndim = len(shape)
            for axis, size in enumerate(shape):
                expected[position].shape[axis] = check_uint(
                    size, f"expected shape {position}", 0, _UINT64_MAX
                )
        c_opts.expected = expected
        c_opts.expected_count = len(shapes)
    return c_opts, expected


_INSPECT_FIRST_CAPACITY = 64


def inspect(data: object, options: DecodeOptions) -> list[TensorInfoRaw]:
    """``fc_inspect``: check a container and describe its tensors."""
    view = _as_bytes_view(data)
    c_opts, _expected = _decode_options(options)
    count = ffi.new("size_t *")
    capacity = _INSPECT_FIRST_CAPACITY
    # The buffer export is released before anything is raised: a traceback
    # (which keeps this frame) that ends up in a reference cycle must not
    # hold a memoryview with an export, or the garbage collector crashes
    # CPython when it clears the cycle.
    with ffi.from_buffer("uint8_t[]", view) as c_src:
        while True:
            infos = ffi.new("fc_tensor_info[]", capacity)
            code = lib.fc_inspect(c_src, len(view), c_opts, infos, capacity, count)
            if code != FC_OK or int(count[0]) <= capacity:
                break
            capacity = int(count[0])  # rare: more tensors than the first guess
    _check_result(code, "container rejected")
    return [
        TensorInfoRaw(
            index=int(info.index),
            shape=tuple(int(info.shape[axis]) for axis in range(int(info.ndim))),
            numel=int(info.numel),
            step=float(info.step),
            slices=int(info.slices),
            max_gtx=int(info.max_gtx),
            quantizer=int(info.quantizer),
            dither_seed=int(info.dither_seed),
            reference=bool(info.reference),
            reference_digest=int(info.reference_digest),
        )
        for info in (infos[i] for i in range(int(count[0])))
    ]


SPLIT_OVERHEAD: int = int(lib.FC_SPLIT_OVERHEAD)
JOIN_OVERHEAD: int = int(lib.FC_JOIN_OVERHEAD)


def convert(data: object, options: DecodeOptions, compact: bool) -> bytes:
    """``fc_convert``: the container rewritten compact or self-describing (no re-coding)."""
    view = _as_bytes_view(data)
    c_opts, _expected = _decode_options(options)
    size = ffi.new("size_t *")
    count = len(options.expected_shapes or ())
    capacity = len(view) + 16 + int(lib.FC_CONVERT_OVERHEAD) * count
    with ffi.from_buffer("uint8_t[]", view) as c_src:  # released before raising (inspect)
        while True:
            out = bytearray(capacity)
            with ffi.from_buffer("uint8_t[]", out) as dst:
                code = lib.fc_convert(c_src, len(view), c_opts, int(compact), dst, capacity, size)
            if code != FC_ERR_BUFFER_TOO_SMALL:
                break
            capacity = int(size[0])  # exactly what is needed
    _check_result(code, "container rejected")
    return bytes(out[: int(size[0])])


def split(data: object, options: DecodeOptions) -> list[memoryview]:
    """``fc_split``: one container per tensor, in container order, without
    re-coding; read-only views into one buffer (no copy per part)."""
    view = _as_bytes_view(data)
    c_opts, _expected = _decode_options(options)
    total = ffi.new("size_t *")
    count = ffi.new("size_t *")
    capacity = _INSPECT_FIRST_CAPACITY
    dst_capacity = len(view) + SPLIT_OVERHEAD * capacity
    with ffi.from_buffer("uint8_t[]", view) as c_src:  # released before raising (inspect)
        while True:
            out = bytearray(dst_capacity)
            sizes = ffi.new("size_t[]", max(capacity, 1))
            with ffi.from_buffer("uint8_t[]", out) as dst:
                code = lib.fc_split(
                    c_src, len(view), c_opts, dst, dst_capacity, total, sizes, capacity, count
                )
            if code != FC_ERR_BUFFER_TOO_SMALL:
                break
            # more tensors than the first guess: exactly what is needed
            capacity, dst_capacity = int(count[0]), int(total[0])
    _check_result(code, "container rejected")
    del out[int(total[0]) :]
    whole = memoryview(out).toreadonly()
    parts = []
    position = 0
    for i in range(int(count[0])):
        size = int(sizes[i])
        parts.append(whole[position : position + size])
        position += size
    return parts


def join(parts: Sequence[object], labels: Sequence[str], options: DecodeOptions) -> bytes:
    """``fc_join``: one container of the tensors of ``parts`` (in order),
    without re-coding.  ``labels`` name the parts in error messages."""
    views = [_as_bytes_view(part) for part in parts]
    c_opts, _expected = _decode_options(options)
    count = len(views)
    c_parts = ffi.new("const uint8_t *[]", max(count, 1))
    c_sizes = ffi.new("size_t[]", max(count, 1))
    capacity = sum(len(view) for view in views) + JOIN_OVERHEAD
    dst = ffi.new("uint8_t[]", capacity)
    size = ffi.new("size_t *")
    bad = ffi.new("size_t *")
    keep = [ffi.from_buffer("uint8_t[]", view) for view in views]
    for position, (view, c_view) in enumerate(zip(views, keep, strict=True)):
        c_parts[position] = c_view
        c_sizes[position] = len(view)
    try:
        code = lib.fc_join(c_parts, c_sizes, count, c_opts, dst, capacity, size, bad)
    finally:
        for c_view in keep:  # released before raising (inspect)
            ffi.release(c_view)
        del keep
    if code != FC_OK:
        bad_part = int(bad[0])
        _fail(code, _join_problem(views, labels, options, code, bad_part))
    joined: bytes = ffi.buffer(dst, int(size[0]))[:]
    return joined


def _join_problem(
    views: Sequence[memoryview],
    labels: Sequence[str],
    options: DecodeOptions,
    code: int,
    bad: int,
) -> str:
    """Why ``fc_join`` refused, in words (its refusals of parts that parse
    are explained from their headers)."""
    if bad >= len(views):
        if code == FC_ERR_MISMATCH and options.expected_shapes is not None:
            return (
                f"the parts hold another number of tensors than expected_shapes "
                f"({len(options.expected_shapes)})"
            )
        return f"parts rejected: {_MEANING.get(code, 'unknown error')}"
    label = labels[bad]
    if code not in (FC_ERR_INVALID_ARGUMENT, FC_ERR_MISMATCH):
        return f"{label}: container rejected: {_MEANING.get(code, 'unknown error')}"
    # The parts up to the bad one passed these checks in C (each part is
    # checked without the expected shapes, which describe the whole).
    each = dataclasses.replace(options, threads=1, expected_shapes=None)
    infos = [inspect(view, each) for view in views[: bad + 1]]
    earlier = [(labels[k], info) for k in range(bad) for info in infos[k]]
    if code == FC_ERR_INVALID_ARGUMENT:
        first = infos[bad][0].index
        where, last = earlier[-1]
        return (
            f"{label} starts with tensor index {first}, which does not come after index "
            f"{last.index} (the last tensor of {where}): a tensor is given twice, or the parts "
            "are not in container order (tensor indices increase through a container)"
        )
    seeds = [(where, info.dither_seed) for where, info in earlier if info.quantizer == QUANT_DITHER]
    for info in infos[bad]:
        if info.quantizer == QUANT_DITHER and seeds and seeds[-1][1] != info.dither_seed:
            return (
                f"{label}: tensor index {info.index} is dithered with seed {info.dither_seed}, "
                f"{seeds[-1][0]} with seed {seeds[-1][1]}: a container holds one dither seed"
            )
    expected = options.expected_shapes or ()
    for position, info in enumerate(infos[bad], start=len(earlier)):
        want = expected[position] if position < len(expected) else None
        if info.shape != want:
            return (
                f"{label}: tensor index {info.index} of shape {info.shape} would be tensor "
                f"{position} of the joined container, expected_shapes has "
                + (f"{want}" if want is not None else f"only {len(expected)} tensors")
            )
    return f"{label}: {_MEANING[code]}"  # pragma: no cover - the C checks and this walk agree


def decode(data: object, options: DecodeOptions, targets: Sequence[DecodeTarget]) -> None:
    """``fc_decode``: decode a container into ``targets`` (container order)."""
    view = _as_bytes_view(data)
    c_opts, expected = _decode_options(options)
    keep: list[Any] = [expected]
    count = len(targets)
    c_targets = ffi.new("fc_decode_target[]", max(count, 1))
    for position, target in enumerate(targets):
        c_target = c_targets[position]
        if target.levels is not None:
            _check_array(
                target.levels, target.label, "levels", [_I32], target.numel, writeable=True
            )
        if target.values is not None:
            _check_array(
                target.values, target.label, "values", [_F32], target.numel, writeable=True
            )
        c_target.levels = _pointer("int32_t[]", target.levels, keep)
        c_target.values = _pointer("float[]", target.values, keep)
        if target.acc is None:
            c_target.acc = ffi.NULL
            c_target.acc_dtype = lib.FC_ACC_NONE
        else:
            acc = target.acc
            _check_array(
                acc, target.label, "accumulator", list(_ACC_DTYPE), target.numel, writeable=True
            )
            c_target.acc = _pointer("char[]", acc, keep)
            c_target.acc_dtype = _ACC_DTYPE[acc.dtype]
        c_target.weight = check_real(target.weight, "weight")
        if target.reference is not None:
            _check_array(target.reference, target.label, "reference", [_F32], target.numel)
        c_target.reference = _pointer("float[]", target.reference, keep)
    with ffi.from_buffer("uint8_t[]", view) as c_src:  # released before raising (inspect)
        code = lib.fc_decode(c_src, len(view), c_opts, c_targets, count)
    for cdata in keep:
        if cdata is not None:
            ffi.release(cdata)
    del keep
    _check_result(code, "container rejected")
