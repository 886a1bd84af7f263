"""Bit-level integer codes for the FL baselines: Elias-gamma, Elias-delta and Golomb-Rice.

The baselines of ``fedcodec bench fl`` send real bitstreams, so their position and level codes
are implemented here, vectorized with numpy.

Layout.  A code word of these codes is a *prefix* (unary: how long the rest is, or the
quotient) and a *suffix* (fixed-length bits). A stream of ``n`` code words is written as the
``n`` prefixes first, then the ``n`` suffixes, in the same order. This is the same set of bits
as writing the words one after another — exactly as many bits — but lets the decoder find all
word boundaries at once (the prefixes end at the ``n``-th terminating bit). The decoder must
know ``n``; the callers write it in their headers.

* Elias-gamma of ``x >= 1``: ``N = floor(log2 x)`` zeros, a one, then the ``N`` low bits of ``x``
  (most significant first): ``2N + 1`` bits. ``gamma_word(5) == "00101"``.
* Elias-delta of ``x >= 1``: Elias-gamma of ``N + 1``, then the ``N`` low bits of ``x``.
* Golomb-Rice with parameter ``k >= 0`` of ``x >= 0``: ``q = x >> k`` ones, a zero, then the
  ``k`` low bits of ``x``: ``q + 1 + k`` bits. The Golomb code with divisor ``M = 2**k``.

Bits are packed most significant bit first (:func:`numpy.packbits` order).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = [
    "BitReader",
    "BitWriter",
    "best_rice_parameter",
    "delta_bits",
    "delta_word",
    "gamma_bits",
    "gamma_word",
    "read_uvarint",
    "read_uvarint_array",
    "rice_bits",
    "rice_word",
    "uvarint",
    "uvarint_array",
]

U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]
Bits = npt.NDArray[np.uint8]


def _floor_log2(x: npt.NDArray[np.integer]) -> I64:
    """``floor(log2 x)`` for integers ``x >= 1`` (exact, no float rounding)."""
    v = np.asarray(x, dtype=np.uint64).copy()
    out = np.zeros(v.shape, dtype=np.int64)
    for shift in (32, 16, 8, 4, 2, 1):
        big = v >= (np.uint64(1) << np.uint64(shift))
        out[big] += shift
        v[big] >>= np.uint64(shift)
    return out


def _low_bits(x: npt.NDArray[np.integer], widths: I64) -> Bits:
    """The ``widths[i]`` low bits of each ``x[i]``, most significant first, concatenated."""
    total = int(widths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.uint8)
    owner = np.repeat(np.arange(widths.size), widths)
    starts = np.cumsum(widths) - widths
    pos = np.arange(total) - starts[owner]
    shift = (widths[owner] - 1 - pos).astype(np.uint64)
    vals = np.asarray(x, dtype=np.uint64)[owner]
    return ((vals >> shift) & np.uint64(1)).astype(np.uint8)


def _read_low_bits(bits: Bits, widths: I64) -> U64:
    """Inverse of :func:`_low_bits`: one unsigned value per width."""
    n = widths.size
    total = int(widths.sum())
    if total == 0:
        return np.zeros(n, dtype=np.uint64)
    owner = np.repeat(np.arange(n), widths)
    starts = np.cumsum(widths) - widths
    pos = np.arange(total) - starts[owner]
    shift = (widths[owner] - 1 - pos).astype(np.uint64)
    contrib = bits[:total].astype(np.uint64) << shift
    out = np.zeros(n, dtype=np.uint64)
    np.add.at(out, owner, contrib)
    return out


def _unary(counts: I64, ones: bool) -> Bits:
    """``counts[i]`` repeated bits followed by the opposite terminating bit, concatenated."""
    lengths = counts + 1
    total = int(lengths.sum())
    fill, stop = (1, 0) if ones else (0, 1)
    out = np.full(total, fill, dtype=np.uint8)
    if total:
        out[np.cumsum(lengths) - 1] = stop
    return out


def _read_unary(bits: Bits, start: int, n: int, ones: bool) -> tuple[I64, int]:
    """Read ``n`` unary prefixes from ``bits[start:]``: (counts, position after them)."""
    if n == 0:
        return np.zeros(0, dtype=np.int64), start
    stop = 0 if ones else 1
    ends = np.flatnonzero(bits[start:] == stop)[:n]
    if ends.size < n:
        raise ValueError("truncated bitstream: fewer unary code words than announced")
    counts = np.diff(ends, prepend=-1) - 1
    return counts.astype(np.int64), start + int(ends[-1]) + 1


# ---------------------------------------------------------------------------
# Single code words (reference form, as strings of 0/1: for tests and docs)
# ---------------------------------------------------------------------------


def gamma_word(x: int) -> str:
    """Elias-gamma code word of ``x >= 1`` as a string of ``0``/``1``."""
    if x < 1:
        raise ValueError(f"Elias-gamma codes integers >= 1, got {x}")
    n = x.bit_length() - 1
    return "0" * n + format(x, "b")


def delta_word(x: int) -> str:
    """Elias-delta code word of ``x >= 1`` as a string of ``0``/``1``."""
    if x < 1:
        raise ValueError(f"Elias-delta codes integers >= 1, got {x}")
    n = x.bit_length() - 1
    return gamma_word(n + 1) + (format(x, "b")[1:] if n else "")


def rice_word(x: int, k: int) -> str:
    """Golomb-Rice code word of ``x >= 0`` with parameter ``k`` as a string of ``0``/``1``."""
    if x < 0 or k < 0:
        raise ValueError("Golomb-Rice codes x >= 0 with k >= 0")
    return "1" * (x >> k) + "0" + (format(x & ((1 << k) - 1), f"0{k}b") if k else "")


# ---------------------------------------------------------------------------
# Code lengths
# ---------------------------------------------------------------------------


def gamma_bits(x: npt.ArrayLike) -> int:
    """Total bits of the Elias-gamma code words of all ``x >= 1``."""
    a = np.asarray(x, dtype=np.int64).ravel()
    return int((2 * _floor_log2(a) + 1).sum()) if a.size else 0


def delta_bits(x: npt.ArrayLike) -> int:
    """Total bits of the Elias-delta code words of all ``x >= 1``."""
    a = np.asarray(x, dtype=np.int64).ravel()
    if not a.size:
        return 0
    n = _floor_log2(a)
    return int((2 * _floor_log2(n + 1) + 1 + n).sum())


def rice_bits(x: npt.ArrayLike, k: int) -> int:
    """Total bits of the Golomb-Rice code words of all ``x >= 0`` with parameter ``k``."""
    a = np.asarray(x, dtype=np.int64).ravel()
    return int(((a >> k) + 1 + k).sum()) if a.size else 0


def best_rice_parameter(x: npt.ArrayLike, max_k: int = 30) -> int:
    """The ``k`` in ``0..max_k`` that codes all ``x >= 0`` in the fewest bits.

    The cost ``sum(x >> k) + n(1 + k)`` is convex in ``k``, so the search stops at the first
    increase.
    """
    a = np.asarray(x, dtype=np.int64).ravel()
    if not a.size:
        return 0
    best_k, best = 0, rice_bits(a, 0)
    for k in range(1, max_k + 1):
        b = rice_bits(a, k)
        if b >= best:
            break
        best_k, best = k, b
    return best_k


# ---------------------------------------------------------------------------
# Streams
# ---------------------------------------------------------------------------


def uvarint(value: int) -> bytes:
    """LEB128 unsigned varint of ``value >= 0``."""
    if value < 0:
        raise ValueError("uvarint codes integers >= 0")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


class BitWriter:
    """Collects bit arrays and fixed-width fields; :meth:`getvalue` packs them MSB first."""

    def __init__(self) -> None:
        self._parts: list[Bits] = []

    def bits(self, bits: npt.ArrayLike) -> None:
        """Append raw bits (values 0/1)."""
        self._parts.append(np.asarray(bits, dtype=np.uint8).ravel())

    def uint(self, values: npt.ArrayLike, width: int) -> None:
        """Append each value in ``width`` bits (most significant first)."""
        v = np.asarray(values, dtype=np.uint64).ravel()
        if width == 0 or not v.size:
            return
        self._parts.append(_low_bits(v, np.full(v.size, width, dtype=np.int64)))

    def gamma(self, values: npt.ArrayLike) -> None:
        """Append Elias-gamma code words of ``values >= 1`` (prefixes, then suffixes)."""
        v = np.asarray(values, dtype=np.int64).ravel()
        if v.size and int(v.min()) < 1:
            raise ValueError("Elias-gamma codes integers >= 1")
        n = _floor_log2(v)
        self._parts.append(_unary(n, ones=False))
        self._parts.append(_low_bits(v, n))

    def delta(self, values: npt.ArrayLike) -> None:
        """Append Elias-delta code words of ``values >= 1`` (gamma prefixes, then the low bits)."""
        v = np.asarray(values, dtype=np.int64).ravel()
        if v.size and int(v.min()) < 1:
            raise ValueError("Elias-delta codes integers >= 1")
        n = _floor_log2(v)
        self.gamma(n + 1)
        self._parts.append(_low_bits(v, n))

    def rice(self, values: npt.ArrayLike, k: int) -> None:
        """Append Golomb-Rice code words of ``values >= 0`` with parameter ``k``."""
        v = np.asarray(values, dtype=np.int64).ravel()
        if v.size and int(v.min()) < 0:
            raise ValueError("Golomb-Rice codes integers >= 0")
        self._parts.append(_unary(v >> k, ones=True))
        self._parts.append(_low_bits(v, np.full(v.size, k, dtype=np.int64)))

    @property
    def nbits(self) -> int:
        """Bits written so far."""
        return int(sum(p.size for p in self._parts))

    def getvalue(self) -> bytes:
        """The bits packed into bytes (the last byte zero-padded)."""
        if not self._parts:
            return b""
        return np.packbits(np.concatenate(self._parts)).tobytes()


class BitReader:
    """Reads what :class:`BitWriter` wrote, given the counts."""

    def __init__(self, data: bytes | memoryview) -> None:
        self._bits: Bits = np.unpackbits(np.frombuffer(bytes(data), dtype=np.uint8))
        self.pos = 0

    def _take(self, count: int) -> Bits:
        if self.pos + count > self._bits.size:
            raise ValueError("truncated bitstream")
        out = self._bits[self.pos : self.pos + count]
        self.pos += count
        return out

    def bits(self, count: int) -> Bits:
        """``count`` raw bits."""
        return self._take(count)

    def uint(self, count: int, width: int) -> U64:
        """``count`` values of ``width`` bits."""
        if width == 0 or count == 0:
            return np.zeros(count, dtype=np.uint64)
        return _read_low_bits(self._take(count * width), np.full(count, width, dtype=np.int64))

    def gamma(self, count: int) -> I64:
        """``count`` Elias-gamma values."""
        n, self.pos = _read_unary(self._bits, self.pos, count, ones=False)
        low = _read_low_bits(self._take(int(n.sum())), n)
        return ((np.uint64(1) << n.astype(np.uint64)) | low).astype(np.int64)

    def delta(self, count: int) -> I64:
        """``count`` Elias-delta values."""
        n = self.gamma(count) - 1
        low = _read_low_bits(self._take(int(n.sum())), n)
        return ((np.uint64(1) << n.astype(np.uint64)) | low).astype(np.int64)

    def rice(self, count: int, k: int) -> I64:
        """``count`` Golomb-Rice values with parameter ``k``."""
        q, self.pos = _read_unary(self._bits, self.pos, count, ones=True)
        low = _read_low_bits(self._take(count * k), np.full(count, k, dtype=np.int64))
        return (q << k) | low.astype(np.int64)


def read_uvarint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    """Decode a LEB128 varint at ``pos``: (value, position after it)."""
    value = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def uvarint_array(values: npt.ArrayLike) -> bytes:
    """LEB128 varints of all ``values >= 0`` (< 2**63), concatenated."""
    v = np.asarray(values, dtype=np.uint64).ravel()
    if not v.size:
        return b""
    lengths = np.ones(v.size, dtype=np.int64)
    for shift in range(7, 64, 7):
        lengths += (v >> np.uint64(shift)) > 0
    owner = np.repeat(np.arange(v.size), lengths)
    starts = np.cumsum(lengths) - lengths
    j = (np.arange(int(lengths.sum())) - starts[owner]).astype(np.uint64)
    out = ((v[owner] >> (np.uint64(7) * j)) & np.uint64(0x7F)).astype(np.uint8)
    more = j < (lengths[owner] - 1).astype(np.uint64)
    out[more] |= 0x80
    return out.tobytes()


def read_uvarint_array(data: bytes | memoryview, pos: int, count: int) -> tuple[U64, int]:
    """Decode ``count`` LEB128 varints at ``pos``: (values, position after them)."""
    if count == 0:
        return np.zeros(0, dtype=np.uint64), pos
    buf = np.frombuffer(bytes(data), dtype=np.uint8)[pos:]
    ends = np.flatnonzero(buf < 0x80)[:count]
    if ends.size < count:
        raise ValueError("truncated varints")
    lengths = np.diff(ends, prepend=-1)
    total = int(ends[-1]) + 1
    owner = np.repeat(np.arange(count), lengths)
    starts = np.cumsum(lengths) - lengths
    j = (np.arange(total) - starts[owner]).astype(np.uint64)
    contrib = (buf[:total] & 0x7F).astype(np.uint64) << (np.uint64(7) * j)
    out = np.zeros(count, dtype=np.uint64)
    np.add.at(out, owner, contrib)
    return out, pos + total
