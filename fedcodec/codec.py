"""The public codec API: encode float32 tensors into one container and back.

A *container* holds a list of tensors; their positions ``0 .. n-1`` are the
tensor indices written to it.  Names are not stored: pass a mapping to
:func:`encode` for convenience (its iteration order is the container order)
and ``names=`` to :func:`decode` to get a dict back.  :func:`split` cuts a
container into one container per tensor and :func:`join` puts such parts
together, both without re-coding (the bytes of each tensor stay as coded).

Inputs are taken as they are: float32 (native byte order), C-contiguous,
at most 8 dimensions.  Anything else raises
:class:`~fedcodec.errors.InvalidParameterError` naming the tensor; nothing is
cast or copied behind your back.

Thread safety: every function may be called from any number of threads at
once.  The C library releases the GIL and runs its own worker threads
(``threads=0`` uses all online CPUs).  Do not modify an input array, or use an
output array, while a call that reads or writes it is running.

Determinism: the same tensors and options give the same bytes on every run,
platform and thread count, and the reconstruction of a level ``k`` is the
float32 product ``float32(k) * step`` (minus the dither for
``quantizer="dither"``; in a uniform tensor coded from floats, a row whose
nonzero levels share one magnitude may carry that row's value to 1/16 step,
``codec_c/FORMAT.md`` §8.1 ROWFINE), so the ``recon`` returned by
:func:`encode` equals what :func:`decode` returns, bit for bit.

Quantizers (``encode(..., quantizer=...)``):

* ``"uniform"`` (default): rounding (``lam=0``) or DeepCABAC's RD quantization
  (``lam > 0``).
* ``"trellis"`` / ``"trellis8"``: rate-aware trellis-coded (dependent)
  quantization with 4 (VVC) or 8 (NNR) states — the "max compression" mode:
  fewer bytes at the same SNR on dense updates, slower to encode, decodes at
  about the same speed.  Always rate-aware (``lam=0`` selects ``ln(2)/6``).
* ``"dither"``: subtractive dithered quantization — ``k = round((w + u) /
  step)``, reconstruction ``k * step - u`` with ``u`` uniform in
  ``(-step/2, step/2)`` drawn from ``dither_seed`` (stored in the container),
  the tensor index and the element index: an unbiased quantizer whose error is
  independent of the update.  Needs a ``dither_seed`` (see
  :func:`dither_seed`); every element decodes to a nonzero value.

Examples
--------
>>> import numpy as np
>>> import fedcodec
>>> update = {"w": np.linspace(-1, 1, 1000, dtype=np.float32).reshape(10, 100)}
>>> result = fedcodec.encode(update, lam=0.1, S=64, return_recon=True)
>>> decoded = fedcodec.decode(result.data, names=["w"])
>>> bool(np.array_equal(decoded["w"], result.recon[0]))
True
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, overload

import numpy as np
import numpy.typing as npt

from fedcodec import _binding
from fedcodec.errors import (
    FC_ERR_LIMIT,
    FC_ERR_MISMATCH,
    CorruptStreamError,
    FedCodecError,
    InvalidParameterError,
)

__all__ = [
    "EncodeResult",
    "Mode",
    "Quantizer",
    "TensorInfo",
    "TensorStats",
    "convert",
    "decode",
    "decode_accumulate",
    "decode_levels",
    "dither_seed",
    "dither_values",
    "encode",
    "encode_levels",
    "inspect",
    "is_compact",
    "join",
    "library_version",
    "reference_digest",
    "shape_digest",
    "split",
    "verify",
]

Mode = Literal["auto", "dense", "grouped", "runs"]
Quantizer = Literal["uniform", "trellis", "trellis8", "dither"]

_MODE_NUMBERS: dict[str, int] = {
    "auto": _binding.MODE_AUTO,
    "dense": _binding.MODE_DENSE,
    "grouped": _binding.MODE_GROUPED,
    "runs": _binding.MODE_RUNS,
}
_QUANT_NUMBERS: dict[str, int] = {
    "uniform": _binding.QUANT_UNIFORM,
    "trellis": _binding.QUANT_TRELLIS,
    "trellis8": _binding.QUANT_TRELLIS8,
    "dither": _binding.QUANT_DITHER,
}
_QUANT_NAMES: dict[int, str] = {number: name for name, number in _QUANT_NUMBERS.items()}
# Bit m of fc_tensor_stats.modes is set when some slice used mode m.
_MODE_BITS: tuple[tuple[int, str], ...] = (
    (_binding.MODE_DENSE, "dense"),
    (_binding.MODE_GROUPED, "grouped"),
    (_binding.MODE_RUNS, "runs"),
)

_DEFAULT_MAX_ELEMS = 1 << 28
_DEFAULT_MAX_TENSORS = 1 << 20
# decode() / decode_levels() without a caller's limit or expected shapes: at
# most this many elements per container byte (4 * 65536 bytes of output per
# input byte; an all-zero ResNet-50 update is ~19,000 elements per byte), at
# least _AUTO_MIN_ELEMS, at most _DEFAULT_MAX_ELEMS.
_AUTO_ELEMS_PER_BYTE = 1 << 16
_AUTO_MIN_ELEMS = 1 << 20

Shapes = Sequence[Sequence[int]]

Float32Array = npt.NDArray[np.float32]
Int32Array = npt.NDArray[np.int32]
_T = TypeVar("_T")


# ---------------------------------------------------------------------------
# Result types
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TensorStats:
    """What the encoder did with one tensor.

    Attributes
    ----------
    index : int
        The tensor's index: its position in the container :func:`encode`
        wrote it to.  A part made by :func:`split` keeps it (the dither of
        a dithered tensor depends on it), and indices increase through a
        container.
    name : str or None
        Its key when :func:`encode` got a mapping, else None.
    shape : tuple of int
        The tensor's shape.
    step : float
        The quantization step used (a float32 value).
    nonzeros : int
        Number of nonzero levels.
    numel : int
        Number of elements.
    bytes : int
        Bytes of this tensor in the container (its header and payloads).
    slices : int
        Number of independently coded slices.
    modes : tuple of str
        Significance-coding modes used by its slices ("dense", "grouped",
        "runs").
    sq_error : float
        Sum of squared reconstruction errors (0 for integer levels).
    """

    index: int
    name: str | None
    shape: tuple[int, ...]
    step: float
    nonzeros: int
    numel: int
    bytes: int
    slices: int
    modes: tuple[str, ...]
    sq_error: float

    @property
    def density(self) -> float:
        """Fraction of nonzero levels (0.0 for an empty tensor)."""
        return self.nonzeros / self.numel if self.numel else 0.0

    @property
    def bits_per_weight(self) -> float:
        """Container bits spent per element (``nan`` for an empty tensor)."""
        return 8.0 * self.bytes / self.numel if self.numel else math.nan

    @property
    def mse(self) -> float:
        """Mean squared reconstruction error (0.0 for an empty tensor)."""
        return self.sq_error / self.numel if self.numel else 0.0


@dataclass(frozen=True)
class EncodeResult:
    """The output of :func:`encode` / :func:`encode_levels`.

    Attributes
    ----------
    data : bytes
        The container.
    stats : list of TensorStats
        One entry per tensor, in container order.
    recon : list of ndarray or None
        With ``return_recon=True``: per tensor, the float32 reconstruction
        a decoder will produce (bit-exact), with the input's shape.
    """

    data: bytes
    stats: list[TensorStats]
    recon: list[Float32Array] | None = None

    def __len__(self) -> int:
        """Size of the container in bytes."""
        return len(self.data)

    @property
    def total_nonzeros(self) -> int:
        """Nonzero levels over all tensors."""
        return sum(s.nonzeros for s in self.stats)


@dataclass(frozen=True)
class TensorInfo:
    """What a container says about one tensor (see :func:`inspect`).

    Attributes
    ----------
    index : int
        The tensor's index: its position in the container :func:`encode`
        wrote it to.  A part made by :func:`split` keeps it (the dither of
        a dithered tensor depends on it), and indices increase through a
        container.
    shape : tuple of int
        The stored shape.
    numel : int
        Number of elements.
    step : float
        The quantization step (a float32 value).
    slices : int
        Number of independently coded slices.
    max_gtx : int
        The number of ``|level| > j`` flags of its binarization.
    quantizer : {"uniform", "trellis", "trellis8", "dither"}
        How its levels reconstruct (see the module documentation).
    dither_seed : int or None
        The container's dither seed for a dithered tensor, else None.
    reference_digest : int or None
        For a tensor coded with a reference tensor (temporal side
        information), the digest of that reference (see
        :func:`reference_digest`); decoding it needs the same reference.
        None otherwise.
    """

    index: int
    shape: tuple[int, ...]
    numel: int
    step: float
    slices: int
    max_gtx: int
    quantizer: str = "uniform"
    dither_seed: int | None = None
    reference_digest: int | None = None


# ---------------------------------------------------------------------------
# Argument normalization
# ---------------------------------------------------------------------------


def _label(position: int, name: str | None) -> str:
    return f"tensor {name!r} (position {position})" if name is not None else f"tensor {position}"


def _split_collection(collection: object, what: str) -> tuple[list[str] | None, list[Any]]:
    """(names or None, items) of a sequence or a str-keyed mapping."""
    if isinstance(collection, Mapping):
        names = list(collection.keys())
        for key in names:
            if not isinstance(key, str):
                _binding.invalid(f"{what}: mapping keys must be str, got {key!r}")
        return names, list(collection.values())
    if isinstance(collection, np.ndarray):
        _binding.invalid(
            f"{what} must be a sequence or mapping of arrays, not one array; "
            "wrap a single tensor in a list: [x]"
        )
    if isinstance(collection, str | bytes) or not isinstance(collection, Sequence):
        _binding.invalid(
            f"{what} must be a sequence or mapping of arrays, got {type(collection).__name__}"
        )
    return None, list(collection)


def _per_tensor(
    option: object, what: str, names: list[str] | None, count: int, *, arrays: bool = False
) -> list[Any]:
    """Expand a per-tensor option to a list with one entry per tensor.

    Scalar options (``arrays=False``) may be one value for all tensors, a
    sequence (or 1-d array) with one entry per tensor, or a mapping by name.
    Array options must be a sequence or a mapping.
    """
    if option is None:
        return [None] * count
    if isinstance(option, Mapping):
        if names is None:
            _binding.invalid(f"{what} is a mapping, but the tensors are a sequence")
        unknown = [key for key in option if key not in names]
        if unknown:
            _binding.invalid(f"{what} names unknown tensors: {unknown!r}")
        return [option.get(name) for name in names]
    entries: list[Any]
    if isinstance(option, str | bytes):
        _binding.invalid(f"{what} must not be a string")
    if arrays:
        if isinstance(option, np.ndarray) or not isinstance(option, Sequence):
            _binding.invalid(
                f"{what} must be a sequence or mapping with one array (or None) per tensor, "
                f"got {type(option).__name__}"
            )
        entries = list(option)
    elif isinstance(option, np.ndarray) and option.ndim == 1:
        entries = option.tolist()
    elif isinstance(option, Sequence):
        entries = list(option)
    else:
        return [option] * count
    if len(entries) != count:
        _binding.invalid(f"{what} has {len(entries)} entries for {count} tensors")
    return entries


def _optional_positive(value: object, what: str) -> float:
    """None -> 0.0 ("derive it" in C); else a finite float > 0."""
    if value is None:
        return 0.0
    return _binding.check_float(value, what, positive=True)


def _as_input_array(value: object, label: str) -> np.ndarray[Any, Any]:
    """The tensor as an ndarray, without conversion (0-d scalars allowed)."""
    array = value if isinstance(value, np.ndarray) else np.asarray(value)
    if array.ndim > _binding.MAX_DIMS:
        _binding.invalid(
            f"{label}: has {array.ndim} dimensions, at most {_binding.MAX_DIMS} are supported"
        )
    return array


def _weighting(
    label: str,
    shape: tuple[int, ...],
    importance: object,
    sigma: object,
    sigma_min: float,
) -> tuple[Float32Array | None, float]:
    """Per-weight eta (float32, C order) and sigma_min from importance or sigma."""
    if importance is not None and sigma is not None:
        _binding.invalid(f"{label}: give importance or sigma, not both")
    if importance is None and sigma is None:
        return None, sigma_min
    role = "importance" if importance is not None else "sigma"
    given = np.asarray(importance if importance is not None else sigma)
    if given.dtype.kind not in "fiu":
        _binding.invalid(f"{label}: {role} must be real numbers, got dtype {given.dtype}")
    if given.shape != shape:
        _binding.invalid(
            f"{label}: {role} has shape {given.shape}, the tensor has shape {shape}",
            FC_ERR_MISMATCH,
        )
    if importance is not None:
        eta = np.ascontiguousarray(given, dtype=np.float32)
        if eta.size and not (np.isfinite(eta).all() and float(eta.min()) >= 0.0):
            _binding.invalid(f"{label}: importance must be finite and >= 0")
        return eta, sigma_min
    sig = np.asarray(given, dtype=np.float64)
    if sig.size and not (np.isfinite(sig).all() and float(sig.min()) > 0.0):
        _binding.invalid(f"{label}: sigma must be finite and > 0")
    if sig.size == 0:
        return np.zeros(shape, dtype=np.float32), sigma_min
    inverse_var = 1.0 / np.square(sig)
    # The C library normalizes eta to mean 1; doing it here in float64 keeps
    # tiny sigmas from overflowing float32.
    inverse_var /= inverse_var.mean()
    eta = np.ascontiguousarray(inverse_var, dtype=np.float32)
    if sigma_min == 0.0:
        sigma_min = float(sig.min())
    return eta, sigma_min


def _reference_array(value: object, label: str, shape: tuple[int, ...]) -> Float32Array | None:
    """A reference tensor as float32 C order with the tensor's shape (None: none)."""
    if value is None:
        return None
    given = np.asarray(value)
    if given.dtype.kind not in "fiu":
        _binding.invalid(f"{label}: reference must be real numbers, got dtype {given.dtype}")
    if given.shape != shape:
        _binding.invalid(
            f"{label}: reference has shape {given.shape}, the tensor has shape {shape}",
            FC_ERR_MISMATCH,
        )
    ref = np.ascontiguousarray(given, dtype=np.float32)
    if ref.size and not np.isfinite(ref).all():
        _binding.invalid(f"{label}: reference must be finite")
    return ref


def _decode_references(
    reference: object,
    names: list[str] | None,
    infos: list[_binding.TensorInfoRaw],
) -> list[Float32Array | None]:
    """Per container tensor the reference to decode it with, checked against the
    container: present where it was coded with one, with the same shape and digest."""
    refs = _per_tensor(reference, "reference", names, len(infos), arrays=True)
    out: list[Float32Array | None] = []
    for position, (info, given) in enumerate(zip(infos, refs, strict=True)):
        label = _label(position, names[position] if names else None)
        if not info.reference:
            out.append(None)
            continue
        if given is None:
            _binding.invalid(
                f"{label} was coded with a reference tensor (temporal side information, "
                f"digest {info.reference_digest:#010x}): pass the same reference= to decode it",
                FC_ERR_MISMATCH,
            )
        ref = _reference_array(given, label, info.shape)
        assert ref is not None
        out.append(ref)
    return out


def _decode_with_references(
    data: bytes | bytearray | memoryview,
    options: _binding.DecodeOptions,
    targets: list[_binding.DecodeTarget],
    infos: list[_binding.TensorInfoRaw],
    names: list[str] | None,
    *,
    first: int = 0,
) -> None:
    """``_binding.decode``; when the C library refuses a reference (its digest
    differs from the container's), say which tensor (the digests are only
    recomputed on that error path).  ``first`` is the position of the first
    target's tensor when ``data`` is a part of a container."""
    try:
        _binding.decode(data, options, targets)
    except InvalidParameterError as exc:
        if exc.code != FC_ERR_MISMATCH:
            raise
        for position, (info, target) in enumerate(zip(infos, targets, strict=True)):
            if not info.reference or target.reference is None:
                continue
            digest = _binding.reference_digest(target.reference, info.step)
            if digest != info.reference_digest:
                label = _label(first + position, names[position] if names else None)
                _binding.invalid(
                    f"{label}: the reference differs from the one it was coded with (digest "
                    f"{digest:#010x}, the container records {info.reference_digest:#010x}); "
                    "decoding with it would give wrong values",
                    FC_ERR_MISMATCH,
                )
        raise


def reference_digest(reference: npt.ArrayLike, step: float) -> int:
    """The digest a container records for a tensor coded with ``reference``.

    Two references with the same digest decode a tensor alike: it is the
    CRC-32 of the reference's per-element classes at the tensor's step
    (``codec_c/FORMAT.md`` §7.5), compared with
    :attr:`TensorInfo.reference_digest`.

    Parameters
    ----------
    reference : array_like
        The reference tensor (converted to float32).
    step : float
        The tensor's step (:attr:`TensorInfo.step`).

    Returns
    -------
    int
        A 32-bit digest.
    """
    ref = np.ascontiguousarray(np.asarray(reference), dtype=np.float32)
    return _binding.reference_digest(ref, _binding.check_float(step, "step", positive=True))


def _quantizer_number(quantizer: object, dither_seed: object, lam: float) -> tuple[int, int]:
    if not isinstance(quantizer, str) or quantizer not in _QUANT_NUMBERS:
        _binding.invalid(f"quantizer must be one of {sorted(_QUANT_NUMBERS)}, got {quantizer!r}")
    number = _QUANT_NUMBERS[quantizer]
    if number != _binding.QUANT_DITHER:
        if dither_seed is not None:
            _binding.invalid(f'dither_seed applies to quantizer="dither" only, not {quantizer!r}')
        return number, 0
    if dither_seed is None:
        _binding.invalid(
            'quantizer="dither" needs a dither_seed: one per update that is never reused '
            "for another update summed with it; derive it with "
            "fedcodec.dither_seed(round_id, client_id)"
        )
    if lam != 0.0:
        _binding.invalid(
            'quantizer="dither" rounds (its error is independent of the update only then): '
            f"lam must be 0, got {lam}"
        )
    return number, _binding.check_uint(dither_seed, "dither_seed", 0, 2**64 - 1)


def _mode_number(mode: object) -> int:
    if not isinstance(mode, str) or mode not in _MODE_NUMBERS:
        _binding.invalid(f"mode must be one of {sorted(_MODE_NUMBERS)}, got {mode!r}")
    return _MODE_NUMBERS[mode]


def _window_number(window_set: object) -> int:
    if window_set == "auto":
        return _binding.WINDOW_AUTO
    if isinstance(window_set, bool) or not isinstance(window_set, int) or not 0 <= window_set <= 7:
        _binding.invalid(f"window_set must be 0..7 or 'auto', got {window_set!r}")
    return window_set


def _use_reference_number(use_reference: object) -> int:
    if use_reference == "auto":
        return _binding.REFERENCE_AUTO
    if use_reference != "always":
        _binding.invalid(f"use_reference must be 'auto' or 'always', got {use_reference!r}")
    return _binding.REFERENCE_ALWAYS


def _transpose_number(transpose: object) -> int:
    if transpose == "auto":
        return _binding.TRANSPOSE_AUTO
    if not isinstance(transpose, bool):
        _binding.invalid(f"transpose must be True, False or 'auto', got {transpose!r}")
    return int(transpose)


def _stats(
    raw: list[_binding.TensorStatsRaw],
    names: list[str] | None,
    shapes: list[tuple[int, ...]],
) -> list[TensorStats]:
    return [
        TensorStats(
            index=position,
            name=names[position] if names is not None else None,
            shape=shapes[position],
            step=s.step,
            nonzeros=s.nonzeros,
            numel=math.prod(shapes[position]),
            bytes=s.bytes,
            slices=s.slices,
            modes=tuple(name for bit, name in _MODE_BITS if s.modes >> bit & 1),
            sq_error=s.sq_error,
        )
        for position, s in enumerate(raw)
    ]


# ---------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------


def encode(
    tensors: Sequence[npt.ArrayLike] | Mapping[str, npt.ArrayLike],
    *,
    lam: float = 0.0,
    S: int = 128,
    step: float | Sequence[float | None] | Mapping[str, float] | None = None,
    sigma_min: float | Sequence[float | None] | Mapping[str, float] | None = None,
    importance: Sequence[npt.ArrayLike | None] | Mapping[str, npt.ArrayLike] | None = None,
    sigma: Sequence[npt.ArrayLike | None] | Mapping[str, npt.ArrayLike] | None = None,
    max_gtx: int = 4,
    threads: int = 0,
    mode: Mode = "auto",
    window_set: int | Literal["auto"] = "auto",
    slice_elems: int = 1048576,
    return_recon: bool = False,
    quantizer: Quantizer = "uniform",
    dither_seed: int | None = None,
    reference: Sequence[npt.ArrayLike | None] | Mapping[str, npt.ArrayLike] | None = None,
    transpose: bool | Literal["auto"] = False,
    use_reference: Literal["auto", "always"] = "auto",
    compact: bool = False,
) -> EncodeResult:
    """Quantize and entropy-code float32 tensors into one container.

    Each tensor is quantized to levels ``k`` (reconstructed as
    ``float32(k) * step``) by DeepCABAC's rate-distortion optimizing quantizer
    and coded with a context-adaptive binary range coder.

    Parameters
    ----------
    tensors : sequence or mapping of array_like
        float32 arrays (native byte order, C-contiguous, 0 to 8 dimensions,
        finite).  Positions (mapping order for a mapping) are the tensor
        indices in the container.  Other dtypes are rejected, not cast.
    lam : float, optional
        Rate-distortion trade-off λ >= 0 in units of step² per bit.  0 means
        plain rounding (error at most step/2 per weight); larger values spend
        fewer bits for more distortion (``ln(2)/6 ≈ 0.1155`` is the high-rate
        optimum).
    S : int, optional
        Step resolution S >= 0 of DeepCABAC's rule
        ``step = 2|w|max / (2|w|max / sigma_min + S)``: larger S, finer step.
    step : float, sequence or mapping, optional
        A step > 0 to use instead of the rule above: one for all tensors, or
        per tensor (None entries, or names missing from a mapping, use S).
    sigma_min : float, sequence or mapping, optional
        The ``sigma_min`` of the step rule, > 0.  Default: the RMS of the
        tensor's nonzero values, or the smallest ``sigma`` when ``sigma`` is
        given.
    importance : sequence or mapping of array_like, optional
        Per-weight importance η >= 0 (same shape as the tensor; any real
        dtype, converted to float32) weighting the squared error; normalized
        to mean 1.  None entries mean η = 1.
    sigma : sequence or mapping of array_like, optional
        Alternative to ``importance``: per-weight standard deviations σ > 0,
        giving η = 1/σ².
    max_gtx : int, optional
        Number N of ``|level| > j`` flags of the binarization, 1..8.
    threads : int, optional
        Worker threads; 0 uses all online CPUs.  The output does not depend
        on it.
    mode : {"auto", "dense", "grouped", "runs"}, optional
        Significance coding: per element, grouped with row and 16-element
        group flags, or run lengths for very sparse tensors.  "auto" picks per
        slice.
    window_set : int or "auto", optional
        Probability-estimator window set 0..7 (0: shifts 4 and 7), or "auto"
        (default): per tensor the set that codes it in the fewest bytes (the
        encoder costs all eight on the coded bins and recodes when another set
        wins; about 1.5x the encode time).
    transpose : bool or "auto", optional
        Code the 2-D view of tensors with two or more dimensions transposed
        (never for the dithered quantizer).  "auto" codes both orientations
        of a view that has a larger share of empty columns than of empty rows
        (an input layer whose features are zero for the client's data), and
        tensors with three or more dimensions also with their first two axes
        swapped (a conv filter bank ``[out, in, kh, kw]`` as rows of input
        channels, ``[in, out·kh·kw]``: up to 12 % smaller on real CNN updates), and
        keeps the better.  Default False here: the orientations quantize
        differently, and keeping the smaller container at a fixed λ favours
        the one that zeroes more (measured: the Flower example app at λ=0.5,
        S=0 lost 2.7 accuracy points with "auto", 0 without).  Lossless coding
        (:func:`encode_levels`, same levels either way) defaults to "auto".
        A tensor coded with its reference is not transposed (it may be
        coded transposed without it, ``use_reference``).  Decoders always
        return the original layout.
    slice_elems : int, optional
        Target elements per independently coded slice (the unit of
        parallelism).
    return_recon : bool, optional
        Also return the reconstruction a decoder will produce.
    quantizer : {"uniform", "trellis", "trellis8", "dither"}, optional
        How values become levels (module documentation): ``"uniform"``
        rounding / RD quantization, ``"trellis"`` (4 states) or
        ``"trellis8"`` (8 states) rate-aware dependent quantization (the
        "max compression" mode; ``lam`` is its λ, 0 selects ``ln(2)/6``), or
        ``"dither"`` subtractive dithered rounding (``lam`` must be 0).
    dither_seed : int, optional
        Required with ``quantizer="dither"`` and refused otherwise: a 64-bit
        seed, stored in the container, from which the dither of every element
        is derived.  Use a different seed for every update that is summed
        with others (e.g. :func:`dither_seed` of round and client id); with
        the same seed two clients' errors would be correlated.
    reference : sequence or mapping of array_like, optional
        Temporal side information: per tensor a reference tensor of the same
        shape that the decoder also holds (e.g. the previous round's decoded
        update of the same client, or the previous global change); the
        co-located reference value conditions the significance, sign and
        magnitude contexts, so a correlated reference saves bytes.  None
        entries (or names missing from a mapping) code without one.  A
        tensor coded with its reference records a digest of it
        (:attr:`TensorInfo.reference_digest`); decoding it needs the same
        reference (converted to float32).  See ``use_reference``.
    use_reference : {"auto", "always"}, optional
        ``"auto"`` (default): a tensor given a reference is also coded
        without it (in every orientation ``transpose`` allows) and the better
        coding is kept — the smaller when both hold the same levels
        (rounding, :func:`encode_levels`), else the lower
        ``distortion / step² + λ · bits`` (RD quantization, trellis) — so a
        reference never costs bytes and unrelated references are dropped
        tensor by tensor.  ``"always"``: every given reference is used (as
        given, never transposed).
    compact : bool, optional
        Write a compact container for a decoder that knows the shapes (e.g.
        both ends of a federation agree on the model): no shapes are stored,
        only a 4-byte digest of the list of all the tensors' shapes; all-zero
        tensors (not dithered ones) cost nothing; a step takes 1 byte when
        it is ``(1 + m/8) · 2**e`` (m = 0..7, e = -27..4), 2 bytes when it is
        a bfloat16, else 4 (codec FORMAT.md §2-3); tiny tensors (biases,
        normalization statistics: at most 4096 elements) are coded without
        adaptive contexts (a zero bit, sign and Exp-Golomb code per level,
        FORMAT.md §6.6) where that is smaller, with the same levels.  Every decoding function
        then needs ``expected_shapes`` (the same shapes, in order); a
        container coded for other shapes is refused (``FC_ERR_MISMATCH``).
        Old decoders refuse compact containers: use it only with peers that
        read it.  Default False: the self-describing container.

    Returns
    -------
    EncodeResult
        The container bytes, per-tensor statistics and optionally ``recon``.

    Raises
    ------
    InvalidParameterError
        Wrong dtype, layout or dimensionality; NaN or infinite values; a
        parameter out of range; a level beyond ``2**30 - 1`` (step too small).
    """
    names, items = _split_collection(tensors, "tensors")
    count = len(items)
    steps = _per_tensor(step, "step", names, count)
    sigma_mins = _per_tensor(sigma_min, "sigma_min", names, count)
    importances = _per_tensor(importance, "importance", names, count, arrays=True)
    sigmas = _per_tensor(sigma, "sigma", names, count, arrays=True)
    references = _per_tensor(reference, "reference", names, count, arrays=True)
    lam = _binding.check_float(lam, "lam")
    quantizer_number, seed = _quantizer_number(quantizer, dither_seed, lam)
    options = _binding.EncodeOptions(
        lam=lam,
        S=S,
        max_gtx=max_gtx,
        threads=threads,
        slice_elems=slice_elems,
        mode=_mode_number(mode),
        window_set=_window_number(window_set),
        quantizer=quantizer_number,
        dither_seed=seed,
        transpose=_transpose_number(transpose),
        reference=_use_reference_number(use_reference),
        compact=_flag(compact, "compact"),
    )
    specs: list[_binding.EncodeTensor] = []
    shapes: list[tuple[int, ...]] = []
    recon: list[Float32Array] | None = [] if return_recon else None
    for position, item in enumerate(items):
        name = names[position] if names is not None else None
        label = _label(position, name)
        values = _as_input_array(item, label)
        shape = tuple(int(n) for n in values.shape)
        eta, tensor_sigma_min = _weighting(
            label,
            shape,
            importances[position],
            sigmas[position],
            _optional_positive(sigma_mins[position], f"{label}: sigma_min"),
        )
        out = None
        if recon is not None:
            out = np.empty(shape, dtype=np.float32)
            recon.append(out)
        specs.append(
            _binding.EncodeTensor(
                label=label,
                index=position,
                shape=shape,
                values=values,
                importance=eta,
                step=_optional_positive(steps[position], f"{label}: step"),
                sigma_min=tensor_sigma_min,
                recon=out,
                reference=_reference_array(references[position], label, shape),
            )
        )
        shapes.append(shape)
    data, raw = _binding.encode(specs, options)
    return EncodeResult(data=data, stats=_stats(raw, names, shapes), recon=recon)


def _as_levels(value: object, label: str) -> Int32Array:
    """Integer levels as int32 (other integer dtypes checked, then converted)."""
    array = _as_input_array(value, label)
    if array.dtype.kind not in "iu":
        _binding.invalid(f"{label}: levels must have an integer dtype, got {array.dtype}")
    if not array.flags.c_contiguous:
        _binding.invalid(
            f"{label}: levels must be C-contiguous (row-major, no strides); "
            "pass np.ascontiguousarray(x)"
        )
    if array.dtype == np.dtype(np.int32):
        levels: Int32Array = array
        return levels
    if array.size:
        low, high = int(array.min()), int(array.max())
        if low < -_binding.MAX_LEVEL or high > _binding.MAX_LEVEL:
            _binding.invalid(
                f"{label}: levels range over [{low}, {high}], beyond "
                f"±{_binding.MAX_LEVEL} (2**30 - 1)"
            )
    return np.ascontiguousarray(array, dtype=np.int32)


def encode_levels(
    levels: Sequence[npt.ArrayLike] | Mapping[str, npt.ArrayLike],
    step: float | Sequence[float] | Mapping[str, float],
    *,
    max_gtx: int = 4,
    threads: int = 0,
    mode: Mode = "auto",
    window_set: int | Literal["auto"] = "auto",
    slice_elems: int = 1048576,
    reference: Sequence[npt.ArrayLike | None] | Mapping[str, npt.ArrayLike] | None = None,
    transpose: bool | Literal["auto"] = "auto",
    use_reference: Literal["auto", "always"] = "auto",
    compact: bool = False,
) -> EncodeResult:
    """Code integer quantization levels losslessly.

    For callers that quantize themselves (or re-code levels they decoded).
    :func:`decode_levels` returns exactly these levels, and :func:`decode`
    returns ``float32(level) * float32(step)``.

    Parameters
    ----------
    levels : sequence or mapping of array_like
        Integer arrays (C-contiguous, 0 to 8 dimensions) with
        ``|level| <= 2**30 - 1``.  int32 is used as is; other integer dtypes
        are range-checked and converted.
    step : float, sequence or mapping
        The step > 0 of each tensor (stored as float32), one for all or one
        per tensor.
    max_gtx, threads, mode, window_set, slice_elems, reference, transpose, use_reference, compact
        As for :func:`encode` (the same levels either way: with ``use_reference="auto"``
        each tensor given a reference keeps the smaller of its codings with and without).

    Returns
    -------
    EncodeResult
        ``recon`` is None; ``stats[i].sq_error`` is 0.

    Raises
    ------
    InvalidParameterError
        Non-integer dtype, non-contiguous input, a level out of range, a
        missing or non-positive step, a parameter out of range.
    """
    names, items = _split_collection(levels, "levels")
    count = len(items)
    steps = _per_tensor(step, "step", names, count)
    references = _per_tensor(reference, "reference", names, count, arrays=True)
    options = _binding.EncodeOptions(
        lam=0.0,
        max_gtx=max_gtx,
        threads=threads,
        slice_elems=slice_elems,
        mode=_mode_number(mode),
        window_set=_window_number(window_set),
        transpose=_transpose_number(transpose),
        reference=_use_reference_number(use_reference),
        compact=_flag(compact, "compact"),
    )
    specs: list[_binding.EncodeTensor] = []
    shapes: list[tuple[int, ...]] = []
    for position, item in enumerate(items):
        name = names[position] if names is not None else None
        label = _label(position, name)
        array = _as_levels(item, label)
        if steps[position] is None:
            _binding.invalid(f"{label}: integer levels need a step")
        shape = tuple(int(n) for n in array.shape)
        specs.append(
            _binding.EncodeTensor(
                label=label,
                index=position,
                shape=shape,
                levels=array,
                step=_binding.check_float(steps[position], f"{label}: step", positive=True),
                reference=_reference_array(references[position], label, shape),
            )
        )
        shapes.append(shape)
    data, raw = _binding.encode(specs, options)
    return EncodeResult(data=data, stats=_stats(raw, names, shapes))


# ---------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------


def _flag(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        _binding.invalid(f"{what} must be a bool, got {type(value).__name__}")
    return value


#: Container flag bit 1 (codec FORMAT.md §2): a compact container.
_COMPACT_FLAG = 0x02


def is_compact(data: bytes | bytearray | memoryview) -> bool:
    """Whether ``data`` is a compact container (``encode(..., compact=True)``).

    Only the container's flags byte is read (nothing is checked): a compact
    container needs ``expected_shapes`` in every decoding function.

    Parameters
    ----------
    data : bytes-like
        A container.

    Returns
    -------
    bool
    """
    view = _binding.as_bytes_view(data)
    return len(view) > 5 and bytes(view[:4]) == b"FCDC" and bool(view[5] & _COMPACT_FLAG)


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def shape_digest(shapes: Shapes) -> int:
    """The digest a compact container records of its tensors' shapes.

    CRC-32 of ``varint(len(shapes))`` followed by ``varint(ndim)`` and the
    varint sizes of each shape (codec FORMAT.md §2).

    Parameters
    ----------
    shapes : sequence of shapes
        All the tensors' shapes, in container order.

    Returns
    -------
    int
        The unsigned 32-bit digest.
    """
    expected = _expected_shapes(shapes) or ()
    crc = zlib.crc32(_varint(len(expected)))
    for shape in expected:
        crc = zlib.crc32(_varint(len(shape)) + b"".join(_varint(n) for n in shape), crc)
    return crc


def _recorded_digest(view: memoryview) -> int | None:
    """The shape digest a compact container's header records (None if too short)."""
    at = 6 + (8 if len(view) > 5 and view[5] & 0x01 else 0)
    if len(view) < at + 4:
        return None
    return int.from_bytes(bytes(view[at : at + 4]), "little")


def _compact_problem(
    data: bytes | bytearray | memoryview, expected: tuple[tuple[int, ...], ...] | None
) -> str | None:
    """Why a compact container is refused for these ``expected`` shapes (None: it is
    not compact, or its shapes are these)."""
    view = _binding.as_bytes_view(data)
    if not is_compact(view):
        return None
    if expected is None:
        return (
            "container rejected: it is a compact container, which stores no shapes: pass "
            "expected_shapes= (all the shapes it was coded with, in order)"
        )
    recorded, digest = _recorded_digest(view), shape_digest(expected)
    if recorded is not None and recorded != digest:
        return (
            "container rejected: it is a compact container coded for other shapes than "
            f"expected_shapes ({len(expected)} tensors): it records shape digest "
            f"0x{recorded:08x}, expected_shapes give 0x{digest:08x}"
        )
    return None


def convert(
    data: bytes | bytearray | memoryview,
    *,
    compact: bool,
    expected_shapes: Shapes | None = None,
    max_tensors: int = _DEFAULT_MAX_TENSORS,
    max_tensor_elems: int = _DEFAULT_MAX_ELEMS,
    max_total_elems: int = _DEFAULT_MAX_ELEMS,
) -> bytes:
    """The container rewritten as a compact or a self-describing one, without re-coding.

    The tensors' coded bytes are copied as they are, so the result decodes to exactly
    the same values; only the headers change (codec FORMAT.md §2-3).  A transport uses
    it to send one coded update to peers that read compact containers and to peers
    that do not.

    Parameters
    ----------
    data : bytes-like
        A container (compact or not).
    compact : bool
        True: write a compact container (the tensor indices must be 0, 1, …; all-zero
        tensors are dropped, steps take their shortest exact form).  False: a
        self-describing one (a tensor a compact ``data`` omits becomes an all-zero
        tensor with step 1).
    expected_shapes : sequence of shapes, optional
        As for :func:`inspect`; required when ``data`` is compact.
    max_tensors, max_tensor_elems, max_total_elems
        As for :func:`inspect`.

    Returns
    -------
    bytes
        The rewritten container (``data``'s bytes when it already has that form).

    Raises
    ------
    CorruptStreamError, InvalidParameterError
        As for :func:`inspect`; tensor indices that are not positions (to compact).

    Examples
    --------
    >>> import numpy as np
    >>> import fedcodec
    >>> from fedcodec import codec
    >>> update = [np.ones((4, 8), np.float32), np.zeros(8, np.float32)]
    >>> data = fedcodec.encode(update, S=64).data
    >>> small = codec.convert(data, compact=True)  # the all-zero tensor is dropped
    >>> again = codec.convert(small, compact=False, expected_shapes=[(4, 8), (8,)])
    >>> len(small) < len(data)
    True
    >>> [np.array_equal(a, b) for a, b in zip(fedcodec.decode(data), fedcodec.decode(again))]
    [True, True]
    """
    flag = _flag(compact, "compact")
    expected = _expected_shapes(expected_shapes)
    if is_compact(data) == flag:
        inspect(
            data,
            max_tensors=max_tensors,
            max_tensor_elems=max_tensor_elems,
            max_total_elems=max_total_elems,
            expected_shapes=expected,
        )
        return bytes(data)
    options = _decode_options(0, max_tensors, max_tensor_elems, max_total_elems, expected)
    try:
        return _binding.convert(data, options, flag)
    except FedCodecError as error:
        _name_mismatch(data, expected, error)
        raise


def _name_mismatch(
    data: bytes | bytearray | memoryview,
    expected: tuple[tuple[int, ...], ...] | None,
    error: FedCodecError,
) -> None:
    """A refusal for other shapes (``FC_ERR_MISMATCH``) raised again naming them; other
    errors return (the caller re-raises them)."""
    if error.code != FC_ERR_MISMATCH:
        return
    problem = _compact_problem(data, expected)
    if problem is not None:
        _binding.invalid(problem, FC_ERR_MISMATCH)
    if expected is not None:
        _binding.invalid(_mismatch(data, expected), FC_ERR_MISMATCH)


def _decode_options(
    threads: int,
    max_tensors: int,
    max_tensor_elems: int,
    max_total_elems: int,
    expected: tuple[tuple[int, ...], ...] | None = None,
) -> _binding.DecodeOptions:
    return _binding.DecodeOptions(
        threads=threads,
        max_tensors=max_tensors,
        max_tensor_elems=max_tensor_elems,
        max_total_elems=max_total_elems,
        expected_shapes=expected,
    )


def _expected_shapes(expected_shapes: object) -> tuple[tuple[int, ...], ...] | None:
    """``expected_shapes`` as a tuple of int tuples (None stays None)."""
    if expected_shapes is None:
        return None
    if isinstance(expected_shapes, str | bytes) or not isinstance(expected_shapes, Sequence):
        _binding.invalid(
            f"expected_shapes must be a sequence of shapes, got {type(expected_shapes).__name__}"
        )
    shapes = []
    for position, shape in enumerate(expected_shapes):
        if isinstance(shape, str | bytes) or not isinstance(shape, Sequence):
            _binding.invalid(
                f"expected_shapes[{position}] must be a sequence of int, got {type(shape).__name__}"
            )
        shapes.append(
            tuple(
                _binding.check_uint(size, f"expected_shapes[{position}]", 0, (1 << 64) - 1)
                for size in shape
            )
        )
    return tuple(shapes)


def _element_limit(
    data: object, expected: tuple[tuple[int, ...], ...] | None, max_total_elems: int | None
) -> int:
    """The element limit of a decode that allocates its outputs: the caller's,
    else what ``expected`` holds, else in proportion to the container's size."""
    if max_total_elems is not None:
        return max_total_elems
    if expected is not None:
        return sum(math.prod(shape) for shape in expected)
    size = len(_binding.as_bytes_view(data))
    return min(_DEFAULT_MAX_ELEMS, max(_AUTO_MIN_ELEMS, _AUTO_ELEMS_PER_BYTE * size))


def _inspect_for_decode(
    data: bytes | bytearray | memoryview,
    options: _binding.DecodeOptions,
    explicit_limit: bool,
) -> list[_binding.TensorInfoRaw]:
    """``_binding.inspect`` whose refusals say which limit or expected shape
    the container exceeds."""
    try:
        return _binding.inspect(data, options)
    except FedCodecError as error:
        expected = options.expected_shapes
        _name_mismatch(data, expected, error)
        if error.code == FC_ERR_LIMIT and expected is None and not explicit_limit:
            _binding.invalid(
                f"container rejected: its {len(_binding.as_bytes_view(data))} bytes declare "
                f"more than {options.max_total_elems} elements, the default limit for a "
                "container of this size; pass expected_shapes= or max_total_elems= to "
                "decode larger (all-zero) tensors",
                FC_ERR_LIMIT,
            )
        raise


def _mismatch(data: bytes | bytearray | memoryview, expected: tuple[tuple[int, ...], ...]) -> str:
    """Why a container does not match ``expected`` (a header parse bounded
    by the expected sizes: nothing is allocated from the container)."""
    total = sum(math.prod(shape) for shape in expected)
    head = f"container rejected: it does not match expected_shapes ({len(expected)} tensors"
    try:
        infos = _binding.inspect(
            data,
            _binding.DecodeOptions(
                threads=1,
                max_tensors=len(expected),
                max_tensor_elems=max((math.prod(shape) for shape in expected), default=0),
                max_total_elems=total,
            ),
        )
    except FedCodecError:
        return f"{head}, {total} elements): it declares more tensors or elements"
    if len(infos) != len(expected):
        return f"{head}): it holds {len(infos)}"
    for position, (info, shape) in enumerate(zip(infos, expected, strict=True)):
        if info.shape != shape:
            return f"{head}): tensor {position} has shape {info.shape}, expected {shape}"
    return f"{head})"  # pragma: no cover - the C parser and this walk agree


def _check_names(names: Sequence[str] | None, count: int) -> list[str] | None:
    if names is None:
        return None
    if isinstance(names, str) or not isinstance(names, Sequence):
        _binding.invalid(f"names must be a sequence of str, got {type(names).__name__}")
    names = list(names)
    if len(names) != count:
        _binding.invalid(
            f"names has {len(names)} entries, the container holds {count} tensors",
            FC_ERR_MISMATCH,
        )
    if len(set(names)) != count:
        _binding.invalid("names must be distinct")
    return names


def _named(items: list[_T], names: list[str] | None) -> list[_T] | dict[str, _T]:
    return dict(zip(names, items, strict=True)) if names is not None else items


def inspect(
    data: bytes | bytearray | memoryview,
    *,
    max_tensors: int = _DEFAULT_MAX_TENSORS,
    max_tensor_elems: int = _DEFAULT_MAX_ELEMS,
    max_total_elems: int = _DEFAULT_MAX_ELEMS,
    expected_shapes: Shapes | None = None,
) -> list[TensorInfo]:
    """Check a container (magic, version, CRC32, every header field, limits)
    without decoding payloads, and describe its tensors.

    Parameters
    ----------
    data : bytes-like
        The container.
    max_tensors, max_tensor_elems, max_total_elems : int, optional
        Decoder limits; a container beyond them is rejected.
    expected_shapes : sequence of shapes, optional
        The shapes the container must hold, one per tensor (e.g. a model's
        ``spec.shapes``): another tensor count or shape is refused as soon as
        the header field that differs is read.  Required for a compact
        container (:func:`is_compact`), which then holds all these tensors
        (those it omits are all zero, step 1, no slices).

    Returns
    -------
    list of TensorInfo
        One entry per tensor, in container order.

    Raises
    ------
    CorruptStreamError
        The container is truncated, malformed, fails its checksum, has an
        unknown magic or version, or exceeds a limit.
    InvalidParameterError
        The container does not hold ``expected_shapes`` (code
        ``FC_ERR_MISMATCH``).
    """
    expected = _expected_shapes(expected_shapes)
    options = _decode_options(0, max_tensors, max_tensor_elems, max_total_elems, expected)
    return [
        TensorInfo(
            index=info.index,
            shape=info.shape,
            numel=info.numel,
            step=info.step,
            slices=info.slices,
            max_gtx=info.max_gtx,
            quantizer=_QUANT_NAMES.get(info.quantizer, str(info.quantizer)),
            dither_seed=info.dither_seed if info.quantizer == _binding.QUANT_DITHER else None,
            reference_digest=info.reference_digest if info.reference else None,
        )
        for info in _inspect_for_decode(data, options, explicit_limit=True)
    ]


@overload
def split(
    data: bytes | bytearray | memoryview,
    *,
    names: None = None,
    max_tensors: int = ...,
    max_tensor_elems: int = ...,
    max_total_elems: int = ...,
    expected_shapes: Shapes | None = ...,
) -> list[bytes]: ...


@overload
def split(
    data: bytes | bytearray | memoryview,
    *,
    names: Sequence[str],
    max_tensors: int = ...,
    max_tensor_elems: int = ...,
    max_total_elems: int = ...,
    expected_shapes: Shapes | None = ...,
) -> dict[str, bytes]: ...


def split(
    data: bytes | bytearray | memoryview,
    *,
    names: Sequence[str] | None = None,
    max_tensors: int = _DEFAULT_MAX_TENSORS,
    max_tensor_elems: int = _DEFAULT_MAX_ELEMS,
    max_total_elems: int = _DEFAULT_MAX_ELEMS,
    expected_shapes: Shapes | None = None,
) -> list[bytes] | dict[str, bytes]:
    """Split a container into one container per tensor ("parts"), without
    decoding or re-coding anything.

    Each part holds its tensor's header and coded payloads byte for byte (every
    flag: quantizer, dither seed, orientation, reference digest, window set,
    slice modes) under a container header of its own and a new checksum; it
    keeps the tensor's :attr:`TensorInfo.index`.  A part decodes exactly as the
    tensor does in the whole container, and is the same bytes :func:`encode`
    writes for that tensor alone.  :func:`join` puts parts back together.

    Parameters
    ----------
    data : bytes-like
        The container.
    names : sequence of str, optional
        One name per tensor: return a dict ``{name: part}`` (else a list).
    max_tensors, max_tensor_elems, max_total_elems, expected_shapes
        As for :func:`inspect`.  Splitting allocates nothing per element
        (memory: about twice the container).

    Returns
    -------
    list of bytes, or dict of str to bytes
        The parts, in container order.

    Raises
    ------
    CorruptStreamError, InvalidParameterError
        As for :func:`inspect`; ``names`` of another length or not distinct.

    Examples
    --------
    >>> import numpy as np
    >>> import fedcodec
    >>> update = {"w": np.ones((4, 8), np.float32), "b": np.arange(8, dtype=np.float32)}
    >>> data = fedcodec.encode(update, S=64).data
    >>> parts = fedcodec.split(data, names=list(update))
    >>> sorted(fedcodec.decode(parts["b"], names=["b"]))
    ['b']
    >>> fedcodec.join(parts) == data
    True
    """
    expected = _expected_shapes(expected_shapes)
    options = _decode_options(0, max_tensors, max_tensor_elems, max_total_elems, expected)
    try:
        parts = [bytes(part) for part in _binding.split(data, options)]
    except FedCodecError as error:
        _name_mismatch(data, expected, error)
        raise
    return _named(parts, _check_names(names, len(parts)))


def join(
    parts: Sequence[bytes | bytearray | memoryview] | Mapping[str, bytes | bytearray | memoryview],
    *,
    max_tensors: int = _DEFAULT_MAX_TENSORS,
    max_tensor_elems: int = _DEFAULT_MAX_ELEMS,
    max_total_elems: int = _DEFAULT_MAX_ELEMS,
    expected_shapes: Shapes | None = None,
) -> bytes:
    """Join containers (e.g. the parts from :func:`split`) into one, without
    decoding or re-coding anything: the tensors of the first part, then
    those of the second, and so on.

    Joining, in order, the parts :func:`split` made of a container that
    :func:`encode` or :func:`encode_levels` wrote gives back that container
    byte for byte; a subset of them gives the container :func:`encode` writes
    for that subset.  (Headers are written the encoder's way: a container
    from another writer whose headers store what could be implied comes back
    with the shorter encoding, and a dither seed no dithered tensor uses is
    dropped.  The tensors' codes never change.)

    Parameters
    ----------
    parts : sequence of bytes-like, or mapping of str to bytes-like
        The containers, in the order their tensors take in the result.
        With a mapping (e.g. from ``split(..., names=...)``) the names label
        the parts in error messages; they are not stored (pass
        ``names=list(parts)`` to :func:`decode`).
    max_tensors, max_total_elems, expected_shapes
        Limits and shapes of the joined container, as for :func:`inspect`.
        Compact parts (:func:`is_compact`, e.g. from :func:`split` of a compact
        container) need ``expected_shapes`` (the model's shapes) and join into a
        compact container; they do not mix with self-describing parts.
    max_tensor_elems
        The limit of each tensor.

    Returns
    -------
    bytes
        The joined container.

    Raises
    ------
    CorruptStreamError
        A part is truncated, malformed, fails its checksum, has an unknown
        magic or version, or exceeds a limit (the message names the part);
        the joined container exceeds ``max_tensors`` or ``max_total_elems``.
    InvalidParameterError
        A tensor is given twice or the parts are out of order (tensor
        indices must increase through a container); two parts hold dithered
        tensors with different dither seeds (a container has one); the
        joined tensors do not match ``expected_shapes`` (code
        ``FC_ERR_MISMATCH``).  The message names the part and the tensor.
    """
    labels: list[str]
    items: list[object]
    if isinstance(parts, Mapping):
        labels = [f"part {name!r} (position {i})" for i, name in enumerate(parts)]
        items = list(parts.values())
    elif isinstance(parts, str | bytes | bytearray | memoryview) or not isinstance(parts, Sequence):
        _binding.invalid(
            f"parts must be a sequence or a str-keyed mapping of containers, got "
            f"{type(parts).__name__}"
        )
    else:
        items = list(parts)
        labels = [f"part {i}" for i in range(len(items))]
    expected = _expected_shapes(expected_shapes)
    options = _decode_options(0, max_tensors, max_tensor_elems, max_total_elems, expected)
    compact = [is_compact(item) for item in items]  # type: ignore[arg-type]
    if any(compact):
        # compact parts are read with the whole's shapes and do not mix with others
        for position, item in enumerate(items):
            if not compact[position]:
                _binding.invalid(
                    f"{labels[position]}: a self-describing container cannot join compact "
                    f"ones ({labels[compact.index(True)]} is compact)",
                    FC_ERR_MISMATCH,
                )
            problem = _compact_problem(item, expected)  # type: ignore[arg-type]
            if problem is not None:
                _binding.invalid(f"{labels[position]}: {problem}", FC_ERR_MISMATCH)
    return _binding.join(items, labels, options)


@overload
def decode(
    data: bytes | bytearray | memoryview,
    *,
    names: None = None,
    threads: int = 0,
    reference: Sequence[npt.ArrayLike | None] | Mapping[str, npt.ArrayLike] | None = None,
    max_tensors: int = _DEFAULT_MAX_TENSORS,
    max_tensor_elems: int = _DEFAULT_MAX_ELEMS,
    max_total_elems: int | None = None,
    expected_shapes: Shapes | None = None,
) -> list[Float32Array]: ...


@overload
def decode(
    data: bytes | bytearray | memoryview,
    *,
    names: Sequence[str],
    threads: int = 0,
    reference: Sequence[npt.ArrayLike | None] | Mapping[str, npt.ArrayLike] | None = None,
    max_tensors: int = _DEFAULT_MAX_TENSORS,
    max_tensor_elems: int = _DEFAULT_MAX_ELEMS,
    max_total_elems: int | None = None,
    expected_shapes: Shapes | None = None,
) -> dict[str, Float32Array]: ...


def decode(
    data: bytes | bytearray | memoryview,
    *,
    names: Sequence[str] | None = None,
    threads: int = 0,
    reference: Sequence[npt.ArrayLike | None] | Mapping[str, npt.ArrayLike] | None = None,
    max_tensors: int = _DEFAULT_MAX_TENSORS,
    max_tensor_elems: int = _DEFAULT_MAX_ELEMS,
    max_total_elems: int | None = None,
    expected_shapes: Shapes | None = None,
) -> list[Float32Array] | dict[str, Float32Array]:
    """Decode a container into float32 arrays with the stored shapes.

    Parameters
    ----------
    data : bytes-like
        The container.
    names : sequence of str, optional
        One distinct name per tensor: return a dict in container order
        instead of a list.
    threads : int, optional
        Worker threads; 0 uses all online CPUs.
    reference : sequence or mapping of array_like, optional
        The reference tensors the container's tensors were coded with
        (``encode(..., reference=...)``), per tensor in container order or
        by name (a mapping needs ``names``); needed exactly for the tensors
        coded with one, ignored for the others.
    max_tensors, max_tensor_elems : int, optional
        Decoder limits.
    max_total_elems : int, optional
        The most elements the container may declare: hostile input cannot
        make the decoder allocate more than ``4 * max_total_elems`` bytes of
        output.  By default the elements of ``expected_shapes``, else
        ``65536 * len(data)`` clamped to ``[2**20, 2**28]`` (a container can
        declare all-zero tensors in a few bytes: a 22-byte container cannot
        make this call allocate 1 GiB).
    expected_shapes : sequence of shapes, optional
        The shapes the container must hold, one per tensor (e.g. a model's
        ``spec.shapes``): another tensor count or shape is refused while the
        header is parsed, before anything is allocated.  Required for a
        compact container (``encode(..., compact=True)``): the shapes it was
        coded with, checked by their digest.

    Returns
    -------
    list or dict of ndarray
        float32 arrays, each ``float32(level) * step``.

    Raises
    ------
    CorruptStreamError
        The container is truncated, malformed, fails its checksum, has an
        unknown magic or version, or exceeds a limit.
    InvalidParameterError
        ``names`` or ``expected_shapes`` (code ``FC_ERR_MISMATCH``) does not
        match the container, a parameter is out of range, or a tensor coded
        with a reference tensor gets none, one of another shape, or one that
        differs from the encoder's (by digest).
    """
    limits = (max_tensors, max_tensor_elems, max_total_elems)
    outputs, _, checked_names = _decode_new_arrays(
        data, False, names, threads, reference, limits, expected_shapes
    )
    return _named(outputs, checked_names)


def _decode_new_arrays(
    data: bytes | bytearray | memoryview,
    levels: bool,
    names: Sequence[str] | None,
    threads: int,
    reference: Sequence[npt.ArrayLike | None] | Mapping[str, npt.ArrayLike] | None,
    limits: tuple[int, int, int | None],
    expected_shapes: Shapes | None,
) -> tuple[list[npt.NDArray[Any]], list[_binding.TensorInfoRaw], list[str] | None]:
    """Decode every tensor into a new array: int32 levels (``levels``) or float32
    values (the body of :func:`decode_levels` and :func:`decode`).

    The container is inspected before the outputs are allocated; the options of
    the decode call then expect exactly the inspected shapes, so the decoder never
    writes past the outputs even if the buffer changed in between.

    ``limits`` holds ``max_tensors``, ``max_tensor_elems`` and ``max_total_elems``.

    Returns
    -------
    outputs, infos, names
        The arrays, the inspected tensors, and the checked names (None: none given).
    """
    max_tensors, max_tensor_elems, max_total_elems = limits
    expected = _expected_shapes(expected_shapes)
    limit = _element_limit(data, expected, max_total_elems)
    options = _decode_options(threads, max_tensors, max_tensor_elems, limit, expected)
    infos = _inspect_for_decode(data, options, explicit_limit=max_total_elems is not None)
    inspected = tuple(info.shape for info in infos)
    options = _decode_options(threads, max_tensors, max_tensor_elems, limit, inspected)
    checked_names = _check_names(names, len(infos))
    refs = _decode_references(reference, checked_names, infos)
    outputs: list[npt.NDArray[Any]] = []
    targets: list[_binding.DecodeTarget] = []
    for i, info in enumerate(infos):
        out: npt.NDArray[Any] = np.empty(info.shape, dtype=np.int32 if levels else np.float32)
        outputs.append(out)
        targets.append(
            _binding.DecodeTarget(
                label=_label(i, None),
                numel=info.numel,
                levels=out if levels else None,
                values=None if levels else out,
                reference=refs[i],
            )
        )
    _decode_with_references(data, options, targets, infos, checked_names)
    return outputs, infos, checked_names


@overload
def decode_levels(
    data: bytes | bytearray | memoryview,
    *,
    names: None = None,
    threads: int = 0,
    reference: Sequence[npt.ArrayLike | None] | Mapping[str, npt.ArrayLike] | None = None,
    max_tensors: int = _DEFAULT_MAX_TENSORS,
    max_tensor_elems: int = _DEFAULT_MAX_ELEMS,
    max_total_elems: int | None = None,
    expected_shapes: Shapes | None = None,
) -> list[tuple[Int32Array, float]]: ...


@overload
def decode_levels(
    data: bytes | bytearray | memoryview,
    *,
    names: Sequence[str],
    threads: int = 0,
    reference: Sequence[npt.ArrayLike | None] | Mapping[str, npt.ArrayLike] | None = None,
    max_tensors: int = _DEFAULT_MAX_TENSORS,
    max_tensor_elems: int = _DEFAULT_MAX_ELEMS,
    max_total_elems: int | None = None,
    expected_shapes: Shapes | None = None,
) -> dict[str, tuple[Int32Array, float]]: ...


def decode_levels(
    data: bytes | bytearray | memoryview,
    *,
    names: Sequence[str] | None = None,
    threads: int = 0,
    reference: Sequence[npt.ArrayLike | None] | Mapping[str, npt.ArrayLike] | None = None,
    max_tensors: int = _DEFAULT_MAX_TENSORS,
    max_tensor_elems: int = _DEFAULT_MAX_ELEMS,
    max_total_elems: int | None = None,
    expected_shapes: Shapes | None = None,
) -> list[tuple[Int32Array, float]] | dict[str, tuple[Int32Array, float]]:
    """Decode a container into its integer levels and steps.

    Parameters
    ----------
    data : bytes-like
        The container.
    names, threads, reference, max_tensors, max_tensor_elems, max_total_elems, expected_shapes
        As for :func:`decode`.

    Returns
    -------
    list or dict of (ndarray, float)
        Per tensor: int32 levels with the stored shape, and the step (a
        float32 value); the reconstruction is ``float32(level) * step``.  For
        a trellis tensor the levels are reconstruction indices (the same
        rule holds); for a dithered tensor the reconstruction is
        ``float32(level) * step - dither_values(...)`` (see :func:`inspect`
        for the seed).  In a uniform tensor coded from floats, the rows of
        one level magnitude may decode to their own value within half a step
        of ``level * step`` (``codec_c/FORMAT.md`` §8.1 ROWFINE): the levels
        here are those rows' rounded levels.

    Raises
    ------
    CorruptStreamError, InvalidParameterError
        As for :func:`decode`.
    """
    limits = (max_tensors, max_tensor_elems, max_total_elems)
    outputs, infos, checked_names = _decode_new_arrays(
        data, True, names, threads, reference, limits, expected_shapes
    )
    pairs = [(out, info.step) for out, info in zip(outputs, infos, strict=True)]
    return _named(pairs, checked_names)


def decode_accumulate(
    data: bytes | bytearray | memoryview,
    accumulators: Sequence[npt.NDArray[np.float32] | npt.NDArray[np.float64]]
    | Mapping[str, npt.NDArray[np.float32] | npt.NDArray[np.float64]],
    weight: float = 1.0,
    *,
    threads: int = 0,
    reference: Sequence[npt.ArrayLike | None] | Mapping[str, npt.ArrayLike] | None = None,
    max_tensors: int = _DEFAULT_MAX_TENSORS,
    max_tensor_elems: int = _DEFAULT_MAX_ELEMS,
    max_total_elems: int = _DEFAULT_MAX_ELEMS,
) -> None:
    """Add ``weight * decoded`` to accumulators in place, without
    materializing the decoded tensors (the server side of FedAvg).

    ``acc[i] += weight * (float32(level) * step)``, computed in the
    accumulator's precision.  The container is checked in full before any
    accumulator is written: on any error every accumulator is left as it was.

    Parameters
    ----------
    data : bytes-like
        The container.
    accumulators : sequence or mapping of ndarray
        One per tensor, in container order (mapping order for a mapping):
        float32 or float64, C-contiguous, writeable, with exactly the stored
        shape.  A compact container (:func:`is_compact`) is read with the
        accumulators' shapes as its expected shapes.
    weight : float, optional
        Finite accumulation weight (e.g. a client's share of the examples).
    threads, max_tensors, max_tensor_elems, max_total_elems
        As for :func:`decode`.
    reference : sequence or mapping of array_like, optional
        As for :func:`decode` (a mapping by the accumulators' names).

    Raises
    ------
    InvalidParameterError
        An accumulator count, shape, dtype or layout that does not fit, a
        read-only accumulator, a non-finite weight.
    CorruptStreamError
        As for :func:`decode`.
    """
    names, accs = _split_collection(accumulators, "accumulators")
    # a compact container stores no shapes: the accumulators' are the expected ones
    shapes = (
        tuple(tuple(int(n) for n in np.shape(acc)) for acc in accs) if is_compact(data) else None
    )
    options = _decode_options(threads, max_tensors, max_tensor_elems, max_total_elems, shapes)
    weight = _binding.check_real(weight, "weight")
    try:
        infos = _binding.inspect(data, options)
    except FedCodecError as error:
        problem = _compact_problem(data, shapes) if error.code == FC_ERR_MISMATCH else None
        if problem is not None:
            _binding.invalid(
                problem.replace("expected_shapes", "the accumulators' shapes"), FC_ERR_MISMATCH
            )
        raise
    if len(accs) != len(infos):
        _binding.invalid(
            f"got {len(accs)} accumulators, the container holds {len(infos)} tensors",
            FC_ERR_MISMATCH,
        )
    refs = _decode_references(reference, names, infos)
    targets: list[_binding.DecodeTarget] = []
    for position, (acc, info) in enumerate(zip(accs, infos, strict=True)):
        label = _label(position, names[position] if names else None)
        if not isinstance(acc, np.ndarray):
            _binding.invalid(
                f"{label}: accumulator must be a numpy array, got {type(acc).__name__}"
            )
        if acc.shape != info.shape:
            _binding.invalid(
                f"{label}: accumulator has shape {acc.shape}, the container stores {info.shape}",
                FC_ERR_MISMATCH,
            )
        targets.append(
            _binding.DecodeTarget(
                label=label, numel=info.numel, acc=acc, weight=weight, reference=refs[position]
            )
        )
    inspected = tuple(info.shape for info in infos)
    options = _decode_options(threads, max_tensors, max_tensor_elems, max_total_elems, inspected)
    _decode_with_references(data, options, targets, infos, names)


def verify(
    data: bytes | bytearray | memoryview,
    *,
    visit: Callable[[int, npt.NDArray[np.float32]], None] | None = None,
    threads: int = 0,
    reference: Sequence[npt.ArrayLike | None] | None = None,
    max_tensors: int = _DEFAULT_MAX_TENSORS,
    max_tensor_elems: int = _DEFAULT_MAX_ELEMS,
    max_total_elems: int = _DEFAULT_MAX_ELEMS,
    expected_shapes: Shapes | None = None,
) -> list[TensorInfo]:
    """Check a container in full — headers, checksum *and* every payload — without
    keeping the decoded data.

    The container is split by tensor (:func:`split`, no re-coding) and the
    payloads are decoded one part at a time into one reused float32 buffer
    as large as the largest tensor, so the memory is bounded by that tensor
    and a copy of the container, not by the model (a server validating
    uploads needs no model-sized scratch per update), and the container is
    read a fixed number of times whatever its tensor count.  A malformed
    payload is reported with the position of its tensor.

    Parameters
    ----------
    data : bytes-like
        The container.
    visit : callable, optional
        Called as ``visit(index, values)`` with each tensor's decoded values
        (flat float32, valid only during the call), e.g. to check their range.
    threads, max_tensors, max_tensor_elems, max_total_elems, expected_shapes
        As for :func:`decode` (the scratch buffer is as large as the largest
        tensor the container declares: pass ``expected_shapes`` for
        untrusted input).
    reference : sequence of array_like, optional
        As for :func:`decode` (one entry per tensor, container order).

    Returns
    -------
    list of TensorInfo
        As :func:`inspect`.

    Raises
    ------
    CorruptStreamError, InvalidParameterError
        As for :func:`decode`.
    """
    infos = inspect(
        data,
        max_tensors=max_tensors,
        max_tensor_elems=max_tensor_elems,
        max_total_elems=max_total_elems,
        expected_shapes=expected_shapes,
    )
    inspected = tuple(info.shape for info in infos)
    options = _decode_options(threads, max_tensors, max_tensor_elems, max_total_elems, inspected)
    if is_compact(data):
        # parts of a compact container hold every tensor: verify its self-describing form
        data = _binding.convert(data, options, False)
    # One part per tensor (fc_split, no re-coding): each tensor's decode then
    # checks its own part instead of the whole container again, so verifying
    # reads the container a fixed number of times, not once per tensor.
    parts = _binding.split(data, options)
    raw_infos = _binding.inspect(data, options)
    refs = _decode_references(reference, None, raw_infos)
    scratch = np.empty(max((info.numel for info in infos), default=0), dtype=np.float32)
    for position, (info, part) in enumerate(zip(infos, parts, strict=True)):
        if info.numel == 0:
            continue
        values = scratch[: info.numel]
        target = _binding.DecodeTarget(
            label=_label(position, None), numel=info.numel, values=values, reference=refs[position]
        )
        part_options = _decode_options(threads, 1, info.numel, info.numel, (info.shape,))
        try:
            _decode_with_references(
                part, part_options, [target], [raw_infos[position]], None, first=position
            )
        except CorruptStreamError as error:
            raise CorruptStreamError(
                f"{_label(position, None)}: {str(error).removeprefix(error.result_name + ': ')}",
                code=error.code,
                result_name=error.result_name,
            ) from None
        if visit is not None:
            visit(position, values)
    return infos


_GOLDEN = 0x9E3779B97F4A7C15
_MASK64 = (1 << 64) - 1


def _mix64(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def dither_seed(round_id: int, client_id: int, salt: int = 0) -> int:
    """A 64-bit dither seed for one client's update in one round.

    Distinct ``(round_id, client_id, salt)`` give unrelated seeds (a
    splitmix64 hash of the three), so the dithers of updates that are summed
    are independent.  ``salt`` separates several encodes of the same client
    and round (e.g. uplink and downlink).

    Parameters
    ----------
    round_id, client_id, salt : int
        Integers in ``[0, 2**64)``.

    Returns
    -------
    int
        The seed for ``encode(..., quantizer="dither", dither_seed=...)``.
    """
    z = 0
    for name, value in (("round_id", round_id), ("client_id", client_id), ("salt", salt)):
        z = _mix64((z + _binding.check_uint(value, name, 0, _MASK64) + _GOLDEN) & _MASK64)
    return z


def dither_values(seed: int, tensor_index: int, shape: Sequence[int], step: float) -> Float32Array:
    """The dither ``u`` of every element of a dithered tensor.

    A decoder reconstructs element ``i`` of a dithered tensor as
    ``float32(level[i]) * step - u[i]``; ``u`` is uniform in
    ``(-step/2, step/2)`` and depends only on the container's seed, the
    tensor's index (its position in the container) and the element's index
    (FORMAT.md §8.3).

    Parameters
    ----------
    seed : int
        The container's dither seed (:attr:`TensorInfo.dither_seed`).
    tensor_index : int
        The tensor's index in the container.
    shape : sequence of int
        The tensor's shape.
    step : float
        Its step (:attr:`TensorInfo.step`).

    Returns
    -------
    ndarray
        float32 array of ``shape``.
    """
    dims = tuple(_binding.check_uint(n, "shape", 0, 2**63) for n in shape)
    values = _binding.dither(seed, tensor_index, 0, math.prod(dims), step)
    return values.reshape(dims)


def library_version() -> str:
    """Version of the compiled C library, "major.minor.patch"."""
    return _binding.version_string()
