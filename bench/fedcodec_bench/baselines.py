"""Reference coders and entropy bounds for integer quantization levels.

All functions take the *same* integer levels that fedcodec codes, so that only the entropy coder
differs:

* zstd level 19 (the ``zstandard`` package, optional) and lzma preset 9 (standard library) of
  the levels of all tensors concatenated in container order, stored in the narrowest signed
  integer dtype that holds them;
* the order-0 entropy of all levels together (``N * H0 / 8`` bytes);
* the i.i.d. ideal rate: the sum over tensors of ``numel * H0(levels of that tensor) / 8``, the
  bound for a memoryless coder that knows each tensor's level distribution.
"""

from __future__ import annotations

import lzma
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "BaselineSizes",
    "concat_narrow",
    "entropy_bits",
    "iid_ideal_bytes",
    "lzma_size",
    "measure_baselines",
    "narrowest_int_dtype",
    "order0_bytes",
    "zstd_available",
    "zstd_size",
]

IntArray = npt.NDArray[np.integer]

# A level histogram with a range up to this size is counted with bincount, wider ones with unique.
_BINCOUNT_MAX_RANGE = 1 << 22


def narrowest_int_dtype(levels: Sequence[IntArray] | IntArray) -> np.dtype[np.signedinteger]:
    """Return the narrowest of int8, int16, int32, int64 that holds every level.

    Parameters
    ----------
    levels : numpy.ndarray or sequence of numpy.ndarray
        Integer arrays.

    Returns
    -------
    numpy.dtype
        ``int8`` for empty input or levels in [-128, 127], and so on.
    """
    arrays = [levels] if isinstance(levels, np.ndarray) else list(levels)
    lo, hi = 0, 0
    for a in arrays:
        if a.size:
            lo = min(lo, int(a.min()))
            hi = max(hi, int(a.max()))
    for dt in (np.int8, np.int16, np.int32, np.int64):
        info = np.iinfo(dt)
        if info.min <= lo and hi <= info.max:
            return np.dtype(dt)
    raise ValueError("levels do not fit in int64")


def concat_narrow(levels: Sequence[IntArray]) -> bytes:
    """All levels concatenated in order, as raw bytes of the narrowest signed dtype.

    Parameters
    ----------
    levels : sequence of numpy.ndarray
        Integer arrays (any shapes; flattened in C order).

    Returns
    -------
    bytes
        The native-endian raw bytes.
    """
    dt = narrowest_int_dtype(levels)
    if not levels:
        return b""
    flat = np.concatenate([np.asarray(a).ravel() for a in levels]).astype(dt)
    return flat.tobytes()


def _counts(a: IntArray) -> npt.NDArray[np.int64]:
    flat = np.asarray(a).ravel()
    if flat.size == 0:
        return np.zeros(0, dtype=np.int64)
    lo, hi = int(flat.min()), int(flat.max())
    if hi - lo < _BINCOUNT_MAX_RANGE:
        c = np.bincount((flat.astype(np.int64) - lo), minlength=hi - lo + 1)
        return c[c > 0].astype(np.int64)
    _, c2 = np.unique(flat, return_counts=True)
    return c2.astype(np.int64)


def entropy_bits(a: IntArray) -> float:
    """Order-0 empirical entropy of an integer array, in bits for the whole array.

    That is ``N * H0`` with ``H0 = -sum p log2 p`` over the empirical symbol frequencies ``p``.

    Parameters
    ----------
    a : numpy.ndarray
        Integer array (any shape).

    Returns
    -------
    float
        Total bits; 0 for an empty or constant array.
    """
    c = _counts(a)
    n = int(c.sum())
    if n == 0:
        return 0.0
    cf = c.astype(np.float64)
    return float(-(cf * np.log2(cf / n)).sum())


def order0_bytes(levels: Sequence[IntArray]) -> float:
    """Global order-0 entropy of all levels together, in bytes (``N * H0 / 8``).

    Parameters
    ----------
    levels : sequence of numpy.ndarray
        Integer arrays.

    Returns
    -------
    float
        Bytes (not rounded).
    """
    if not levels:
        return 0.0
    flat = np.concatenate([np.asarray(a).ravel() for a in levels])
    return entropy_bits(flat) / 8.0


def iid_ideal_bytes(levels: Sequence[IntArray]) -> float:
    """Return the i.i.d. ideal rate: ``sum over tensors of numel * H0(tensor) / 8`` bytes.

    Parameters
    ----------
    levels : sequence of numpy.ndarray
        Integer arrays, one per tensor.

    Returns
    -------
    float
        Bytes (not rounded).
    """
    return float(sum(entropy_bits(a) for a in levels)) / 8.0


def zstd_available() -> bool:
    """Whether the optional ``zstandard`` package can be imported.

    Returns
    -------
    bool
        True when zstd baselines can be measured.
    """
    try:
        import zstandard  # noqa: F401
    except ImportError:
        return False
    return True


def zstd_size(raw: bytes, level: int = 19) -> int:
    """Size of ``raw`` compressed by zstd at ``level`` (one frame, python-zstandard).

    Parameters
    ----------
    raw : bytes
        Data to compress.
    level : int, optional
        zstd compression level.

    Returns
    -------
    int
        Compressed bytes.
    """
    import zstandard

    return len(zstandard.ZstdCompressor(level=level).compress(raw))


def lzma_size(raw: bytes, preset: int = 9) -> int:
    """Size of ``raw`` compressed by lzma (xz container) at ``preset``.

    Parameters
    ----------
    raw : bytes
        Data to compress.
    preset : int, optional
        lzma preset.

    Returns
    -------
    int
        Compressed bytes.
    """
    return len(lzma.compress(raw, preset=preset))


@dataclass(frozen=True)
class BaselineSizes:
    """Baseline sizes of one set of levels.

    Attributes
    ----------
    int_dtype : str
        The narrowest signed dtype the levels were stored in for zstd and lzma.
    raw_bytes : int
        Size of the levels in that dtype.
    zstd19_bytes : int or None
        zstd level 19 size, or None when ``zstandard`` is not installed.
    lzma9_bytes : int
        lzma preset 9 size.
    order0_bytes : float
        Global order-0 entropy in bytes.
    iid_bytes : float
        i.i.d. ideal rate (per-tensor order-0 entropy, summed) in bytes.
    zstd19_seconds, lzma9_seconds : float or None
        Wall time of the one zstd and lzma compression (for reference only).
    """

    int_dtype: str
    raw_bytes: int
    zstd19_bytes: int | None
    lzma9_bytes: int
    order0_bytes: float
    iid_bytes: float
    zstd19_seconds: float | None
    lzma9_seconds: float


def measure_baselines(levels: Sequence[IntArray], *, with_zstd: bool = True) -> BaselineSizes:
    """All baselines on one set of levels.

    Parameters
    ----------
    levels : sequence of numpy.ndarray
        Integer arrays, one per tensor, in container order.
    with_zstd : bool, optional
        Measure zstd-19 (needs ``zstandard``); otherwise its fields are None.

    Returns
    -------
    BaselineSizes
        The sizes and the compression times.
    """
    raw = concat_narrow(levels)
    zb: int | None = None
    zt: float | None = None
    if with_zstd:
        t0 = time.perf_counter()
        zb = zstd_size(raw, 19)
        zt = time.perf_counter() - t0
    t0 = time.perf_counter()
    lb = lzma_size(raw, 9)
    lt = time.perf_counter() - t0
    return BaselineSizes(
        int_dtype=str(narrowest_int_dtype(levels)),
        raw_bytes=len(raw),
        zstd19_bytes=zb,
        lzma9_bytes=lb,
        order0_bytes=order0_bytes(levels),
        iid_bytes=iid_ideal_bytes(levels),
        zstd19_seconds=zt,
        lzma9_seconds=lt,
    )


def binary_entropy(p: float) -> float:
    """Binary entropy ``h(p)`` in bits.

    Parameters
    ----------
    p : float
        Probability.

    Returns
    -------
    float
        ``-(p log2 p + (1-p) log2 (1-p))``; 0 at the ends.
    """
    if p <= 0.0 or p >= 1.0:
        return 0.0
    return -(p * math.log2(p) + (1.0 - p) * math.log2(1.0 - p))
