"""Baseline update compressors for ``fedcodec bench fl``, each with a real bitstream.

Every compressor turns a model's float32 tensors (in model order; names and shapes are known
to both sides, as in any FL round) into bytes and back. The bytes are the whole message:
every scale, count and parameter the decoder needs is inside them.

* :class:`Float32` — the raw float32 values (4 bytes per weight), nothing else.
* :class:`Float16` — the values cast to IEEE half (2 bytes per weight), as NVFlare/DDP do.
* :class:`Uniform8` — per tensor: min and max (float32), then one uint8 per weight,
  ``round((x - min) / (max - min) * 255)`` (TFF/FederatedScope-style 8-bit).
* :class:`TopKZstd` — top-k by magnitude over the whole model; per tensor the count, the
  index gaps as LEB128 varints and the float32 values, the whole message compressed by zstd
  (level 19 by default). Used with error feedback (the DGC recipe).
* :class:`STC` — Sparse Ternary Compression (Sattler et al., 2019): per tensor top-k
  (fraction ``p``), the kept values replaced by ``±μ`` (μ = mean kept magnitude, float32),
  index gaps Golomb-Rice coded with the parameter that minimises their bits (the paper's
  Golomb position coding), one sign bit per kept value. Used with error feedback.
* :class:`QSGD` — Alistarh et al. (2017): per bucket of ``bucket`` weights the L2 norm
  (float32) and stochastic levels ``l ∈ {0..s}`` with ``E[l/s · norm] = |x|``; the nonzero
  positions as Elias-gamma coded gaps, one sign bit, the level Elias-gamma coded. Unbiased, no error
  feedback (as in the paper).

Counts are Elias-gamma coded (``count + 1``) inside the bitstream; see :mod:`.bitcodes` for the
bit layout.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from fedcodec_bench.bitcodes import (
    BitReader,
    BitWriter,
    best_rice_parameter,
    read_uvarint,
    read_uvarint_array,
    uvarint,
    uvarint_array,
)

__all__ = [
    "QSGD",
    "STC",
    "Float16",
    "Float32",
    "TopKZstd",
    "Uniform8",
    "UpdateCompressor",
]

F32 = npt.NDArray[np.float32]
Shape = tuple[int, ...]


def _numel(shape: Shape) -> int:
    return int(math.prod(shape))


def _f32_bits(values: npt.ArrayLike) -> npt.NDArray[np.uint64]:
    return np.asarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)


def _bits_f32(raw: npt.NDArray[np.uint64]) -> F32:
    return raw.astype(np.uint32).view(np.float32)


def _split(flat: F32, shapes: Sequence[Shape]) -> list[F32]:
    out: list[F32] = []
    pos = 0
    for s in shapes:
        n = _numel(s)
        out.append(np.ascontiguousarray(flat[pos : pos + n].reshape(s), dtype=np.float32))
        pos += n
    if pos != flat.size:
        raise ValueError(f"message holds {flat.size} values, the model has {pos}")
    return out


def _topk_mask(values: F32, k: int) -> npt.NDArray[np.bool_]:
    mask = np.zeros(values.size, dtype=bool)
    if k >= values.size:
        mask[:] = True
    elif k > 0:
        mag = np.abs(values.ravel())
        mask[np.argpartition(mag, values.size - k)[values.size - k :]] = True
    return mask


class UpdateCompressor(ABC):
    """A lossy (or lossless) coder of a list of float32 tensors.

    Attributes
    ----------
    name : str
        Label in reports.
    error_feedback : bool
        Whether the sender keeps the coding error as a residual for the next message.
    """

    name: str = ""
    error_feedback: bool = False

    @abstractmethod
    def encode(self, tensors: Sequence[F32], rng: np.random.Generator) -> bytes:
        """Code ``tensors``; ``rng`` drives stochastic rounding where the method has it."""

    @abstractmethod
    def decode(self, data: bytes, shapes: Sequence[Shape]) -> list[F32]:
        """Reconstruct the tensors of the given shapes from ``data``."""

    def settings(self) -> dict[str, Any]:
        """The method's parameters, for the JSON report."""
        return {"error_feedback": self.error_feedback}


class Float32(UpdateCompressor):
    """Raw float32, 4 bytes per weight, no header."""

    name = "fp32"

    def encode(self, tensors: Sequence[F32], rng: np.random.Generator) -> bytes:
        return b"".join(np.ascontiguousarray(t, dtype="<f4").tobytes() for t in tensors)

    def decode(self, data: bytes, shapes: Sequence[Shape]) -> list[F32]:
        return _split(np.frombuffer(data, dtype="<f4").astype(np.float32), shapes)


class Float16(UpdateCompressor):
    """IEEE half precision, 2 bytes per weight, no header (values clipped to ±65504)."""

    name = "fp16"

    def encode(self, tensors: Sequence[F32], rng: np.random.Generator) -> bytes:
        return b"".join(
            np.clip(np.asarray(t, dtype=np.float32), -65504.0, 65504.0).astype("<f2").tobytes()
            for t in tensors
        )

    def decode(self, data: bytes, shapes: Sequence[Shape]) -> list[F32]:
        return _split(np.frombuffer(data, dtype="<f2").astype(np.float32), shapes)


class Uniform8(UpdateCompressor):
    """8-bit uniform quantization per tensor: min, max (float32) + uint8 codes."""

    name = "int8"

    def encode(self, tensors: Sequence[F32], rng: np.random.Generator) -> bytes:
        parts: list[bytes] = []
        for t in tensors:
            x = np.asarray(t, dtype=np.float32).ravel()
            lo = np.float32(x.min()) if x.size else np.float32(0.0)
            hi = np.float32(x.max()) if x.size else np.float32(0.0)
            parts.append(np.array([lo, hi], dtype="<f4").tobytes())
            span = float(hi) - float(lo)
            if span > 0:
                q = np.rint((x.astype(np.float64) - float(lo)) / span * 255.0)
            else:
                q = np.zeros(x.size)
            parts.append(np.clip(q, 0, 255).astype(np.uint8).tobytes())
        return b"".join(parts)

    def decode(self, data: bytes, shapes: Sequence[Shape]) -> list[F32]:
        out: list[F32] = []
        pos = 0
        for s in shapes:
            n = _numel(s)
            lo, hi = np.frombuffer(data, dtype="<f4", count=2, offset=pos).astype(np.float64)
            pos += 8
            q = np.frombuffer(data, dtype=np.uint8, count=n, offset=pos)
            pos += n
            x = lo + q.astype(np.float64) * ((hi - lo) / 255.0)
            out.append(x.astype(np.float32).reshape(s))
        if pos != len(data):
            raise ValueError("int8 message has trailing bytes")
        return out


class TopKZstd(UpdateCompressor):
    """Global top-k (float32 values, varint index gaps) compressed with zstd.

    Parameters
    ----------
    fraction : float
        Share of the model's weights sent, in (0, 1].
    level : int
        zstd level.
    error_feedback : bool
        Keep the unsent part as a residual (default True).
    """

    def __init__(self, fraction: float, *, level: int = 19, error_feedback: bool = True) -> None:
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        self.fraction = fraction
        self.level = level
        self.error_feedback = error_feedback
        self.name = f"top-k {100 * fraction:g}% + EF + zstd-{level}"

    def settings(self) -> dict[str, Any]:
        return {"fraction": self.fraction, "zstd_level": self.level, **super().settings()}

    def encode(self, tensors: Sequence[F32], rng: np.random.Generator) -> bytes:
        import zstandard

        flat = np.concatenate([np.asarray(t, dtype=np.float32).ravel() for t in tensors])
        mask = _topk_mask(flat, math.ceil(self.fraction * flat.size))
        raw = bytearray()
        pos = 0
        for t in tensors:
            m = mask[pos : pos + t.size]
            v = flat[pos : pos + t.size]
            pos += t.size
            idx = np.flatnonzero(m & (v != 0))
            raw += uvarint(idx.size)
            raw += uvarint_array(np.diff(idx, prepend=-1) - 1)
            raw += v[idx].astype("<f4").tobytes()
        return zstandard.ZstdCompressor(level=self.level).compress(bytes(raw))

    def decode(self, data: bytes, shapes: Sequence[Shape]) -> list[F32]:
        import zstandard

        raw = zstandard.ZstdDecompressor().decompress(data)
        out: list[F32] = []
        pos = 0
        for s in shapes:
            n = _numel(s)
            count, pos = read_uvarint(raw, pos)
            gaps, pos = read_uvarint_array(raw, pos, count)
            idx = np.cumsum(gaps.astype(np.int64) + 1) - 1
            vals = np.frombuffer(raw, dtype="<f4", count=count, offset=pos)
            pos += 4 * count
            x = np.zeros(n, dtype=np.float32)
            if count:
                if int(idx[-1]) >= n:
                    raise ValueError("top-k index out of range")
                x[idx] = vals
            out.append(x.reshape(s))
        if pos != len(raw):
            raise ValueError("top-k message has trailing bytes")
        return out


class STC(UpdateCompressor):
    """Sparse Ternary Compression with Golomb-Rice position coding (Sattler et al., 2019).

    Parameters
    ----------
    fraction : float
        Share ``p`` of each tensor's weights kept (at least one per tensor).
    error_feedback : bool
        Keep the unsent part as a residual (default True, as in the paper).
    """

    def __init__(self, fraction: float, *, error_feedback: bool = True) -> None:
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        self.fraction = fraction
        self.error_feedback = error_feedback
        self.name = f"STC {100 * fraction:g}%"

    def settings(self) -> dict[str, Any]:
        return {"fraction": self.fraction, "position_code": "golomb-rice", **super().settings()}

    def encode(self, tensors: Sequence[F32], rng: np.random.Generator) -> bytes:
        w = BitWriter()
        for t in tensors:
            x = np.asarray(t, dtype=np.float32).ravel()
            k = max(1, math.ceil(self.fraction * x.size)) if x.size else 0
            mask = _topk_mask(x, k) & (x != 0)
            idx = np.flatnonzero(mask)
            mu = float(np.mean(np.abs(x[idx].astype(np.float64)))) if idx.size else 0.0
            gaps = np.diff(idx, prepend=-1) - 1
            kr = best_rice_parameter(gaps)
            w.gamma([idx.size + 1])
            if not idx.size:
                continue
            w.uint(_f32_bits([mu]), 32)
            w.uint([kr], 5)
            w.rice(gaps, kr)
            w.bits((x[idx] < 0).astype(np.uint8))
        return w.getvalue()

    def decode(self, data: bytes, shapes: Sequence[Shape]) -> list[F32]:
        r = BitReader(data)
        out: list[F32] = []
        for s in shapes:
            n = _numel(s)
            count = int(r.gamma(1)[0]) - 1
            x = np.zeros(n, dtype=np.float32)
            if count:
                mu = _bits_f32(r.uint(1, 32))[0]
                kr = int(r.uint(1, 5)[0])
                idx = np.cumsum(r.rice(count, kr) + 1) - 1
                neg = r.bits(count).astype(bool)
                if int(idx[-1]) >= n:
                    raise ValueError("STC index out of range")
                x[idx] = np.where(neg, -mu, mu)
            out.append(x.reshape(s))
        return out


class QSGD(UpdateCompressor):
    """QSGD with ``s`` levels per bucket and Elias-gamma coding (Alistarh et al., 2017).

    Parameters
    ----------
    levels : int
        ``s >= 1``: quantization levels of ``|x| / norm``.
    bucket : int
        Weights per bucket (one float32 norm each).
    """

    error_feedback = False

    def __init__(self, levels: int, *, bucket: int = 512) -> None:
        if levels < 1 or bucket < 1:
            raise ValueError("QSGD needs levels >= 1 and bucket >= 1")
        self.levels = levels
        self.bucket = bucket
        self.name = f"QSGD s={levels} d={bucket}"

    def settings(self) -> dict[str, Any]:
        return {"levels": self.levels, "bucket": self.bucket, **super().settings()}

    def encode(self, tensors: Sequence[F32], rng: np.random.Generator) -> bytes:
        w = BitWriter()
        s = self.levels
        for t in tensors:
            x = np.asarray(t, dtype=np.float32).ravel()
            nb = -(-x.size // self.bucket)
            pad = np.zeros(nb * self.bucket, dtype=np.float64)
            pad[: x.size] = x
            blocks = pad.reshape(nb, self.bucket)
            norms = np.sqrt(np.einsum("ij,ij->i", blocks, blocks)).astype(np.float32)
            scale = np.where(norms > 0, s / np.maximum(norms.astype(np.float64), 1e-45), 0.0)
            r = (np.abs(blocks) * scale[:, None]).ravel()[: x.size]
            low = np.floor(r)
            level = (low + (rng.random(x.size) < (r - low))).astype(np.int64)
            level = np.minimum(level, s)
            idx = np.flatnonzero(level)
            w.gamma([idx.size + 1])
            w.uint(_f32_bits(norms), 32)
            if not idx.size:
                continue
            w.gamma(np.diff(idx, prepend=-1))  # gaps + 1 >= 1
            w.bits((x[idx] < 0).astype(np.uint8))
            w.gamma(level[idx])
        return w.getvalue()

    def decode(self, data: bytes, shapes: Sequence[Shape]) -> list[F32]:
        r = BitReader(data)
        out: list[F32] = []
        for shape in shapes:
            n = _numel(shape)
            nb = -(-n // self.bucket)
            count = int(r.gamma(1)[0]) - 1
            norms = _bits_f32(r.uint(nb, 32)).astype(np.float64)
            x = np.zeros(n, dtype=np.float32)
            if count:
                idx = np.cumsum(r.gamma(count)) - 1
                neg = r.bits(count).astype(bool)
                level = r.gamma(count)
                if int(idx[-1]) >= n or int(level.max()) > self.levels:
                    raise ValueError("QSGD index or level out of range")
                mag = norms[idx // self.bucket] * level / self.levels
                x[idx] = np.where(neg, -mag, mag).astype(np.float32)
            out.append(x.reshape(shape))
        return out
