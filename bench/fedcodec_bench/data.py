"""Synthetic, deterministic model updates for the codec benchmark.

The recipe follows the synthetic sparse updates used to measure NNCodec (see the project's
reference notes): every tensor holds Laplacian deltas (numpy's ``laplace`` with scale ``b``)
multiplied by a log-normal scale per row (``exp(N(0, row_sigma))``), as trained updates have
rows (output units) of quite different magnitude. A *global* top-k over all tensors together then
keeps exactly ``round(density * N)`` entries and sets every other entry to an exact zero, as
top-k sparsification with error feedback does in federated learning.

Everything is seeded: the same arguments always give bit-identical arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "FULL_SHAPES",
    "QUICK_SHAPES",
    "Dataset",
    "dense_update",
    "density_label",
    "global_topk",
    "make_datasets",
    "quantize",
]

F32Array = npt.NDArray[np.float32]
I32Array = npt.NDArray[np.int32]

#: Shapes of the four tensors of the full benchmark (1,998,848 weights in all).
FULL_SHAPES: tuple[tuple[int, int], ...] = ((1024, 1024), (512, 1024), (768, 384), (256, 512))

#: Shapes for ``--quick``: both sides halved, a quarter of the weights (499,712).
QUICK_SHAPES: tuple[tuple[int, int], ...] = tuple((r // 2, c // 2) for r, c in FULL_SHAPES)


@dataclass(frozen=True)
class Dataset:
    """One benchmark data set: named float32 tensors plus their quantization step.

    Attributes
    ----------
    name : str
        Short label, e.g. ``"sparse-1%"`` or ``"dense"``.
    density : float or None
        Requested fraction of nonzeros of the global top-k, or None for the dense set.
    tensors : list of numpy.ndarray
        The float32 tensors, in container order.
    names : list of str
        One name per tensor.
    step : float
        The quantization step used for this data set.
    """

    name: str
    density: float | None
    tensors: list[F32Array]
    names: list[str]
    step: float

    @property
    def numel(self) -> int:
        """Total number of weights over all tensors."""
        return int(sum(t.size for t in self.tensors))

    @property
    def nonzeros(self) -> int:
        """Total number of nonzero float values over all tensors."""
        return int(sum(np.count_nonzero(t) for t in self.tensors))


def dense_update(
    shapes: Sequence[tuple[int, int]],
    *,
    scale: float = 1e-3,
    row_sigma: float = 0.5,
    seed: int = 0,
) -> list[F32Array]:
    """Dense synthetic update: Laplacian values times a log-normal scale per row.

    Parameters
    ----------
    shapes : sequence of (int, int)
        ``(rows, cols)`` of each tensor.
    scale : float, optional
        numpy's Laplace scale ``b`` (the standard deviation is ``b * sqrt(2)``).
    row_sigma : float, optional
        Sigma of the log-normal per-row scale.
    seed : int, optional
        Seed of the one ``numpy.random.Generator`` that draws all tensors in order.

    Returns
    -------
    list of numpy.ndarray
        One C-contiguous float32 array per shape.
    """
    rng = np.random.default_rng(seed)
    out: list[F32Array] = []
    for rows, cols in shapes:
        row = rng.lognormal(0.0, row_sigma, size=(rows, 1))
        x = rng.laplace(0.0, scale, size=(rows, cols)) * row
        out.append(np.ascontiguousarray(x, dtype=np.float32))
    return out


def global_topk(tensors: Sequence[F32Array], density: float) -> list[F32Array]:
    """Keep the ``round(density * N)`` largest magnitudes over all tensors together.

    Parameters
    ----------
    tensors : sequence of numpy.ndarray
        float32 tensors; N is their total size.
    density : float
        Fraction of entries to keep, in ``[0, 1]``.

    Returns
    -------
    list of numpy.ndarray
        New float32 arrays of the same shapes; the dropped entries are exact zeros.

    Raises
    ------
    ValueError
        If ``density`` is outside ``[0, 1]``.
    """
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"density must be in [0, 1], got {density!r}")
    flat = np.concatenate([np.asarray(t, dtype=np.float32).ravel() for t in tensors])
    n = flat.size
    k = round(density * n)
    kept = np.zeros_like(flat)
    if k > 0:
        idx = np.argpartition(np.abs(flat), n - k)[n - k :]
        kept[idx] = flat[idx]
    out: list[F32Array] = []
    pos = 0
    for t in tensors:
        out.append(np.ascontiguousarray(kept[pos : pos + t.size].reshape(t.shape)))
        pos += t.size
    return out


def quantize(tensors: Sequence[F32Array], step: float) -> list[I32Array]:
    """Plain uniform quantization: ``round_half_away_from_zero(w / step)`` as int32.

    The division is done in float64 on the float32 inputs, i.e. it is the correctly rounded
    level of each float32 value.

    Parameters
    ----------
    tensors : sequence of numpy.ndarray
        float32 tensors.
    step : float
        Quantization step, > 0.

    Returns
    -------
    list of numpy.ndarray
        int32 level arrays of the same shapes.

    Raises
    ------
    ValueError
        If ``step`` is not positive and finite, or a level does not fit in int32.
    """
    if not (np.isfinite(step) and step > 0):
        raise ValueError(f"step must be positive and finite, got {step!r}")
    out: list[I32Array] = []
    lim = float(np.iinfo(np.int32).max)
    for t in tensors:
        y = np.asarray(t, dtype=np.float64) / step
        q = np.sign(y) * np.floor(np.abs(y) + 0.5)
        if q.size and float(np.abs(q).max()) > lim:
            raise ValueError("a quantization level does not fit in int32; use a larger step")
        out.append(np.ascontiguousarray(q.astype(np.int32)))
    return out


def density_label(density: float | None) -> str:
    """Short data set label for a density, e.g. ``0.001 -> "sparse-0.1%"``.

    Parameters
    ----------
    density : float or None
        Fraction of nonzeros, or None for the dense set.

    Returns
    -------
    str
        The label.
    """
    if density is None:
        return "dense"
    return f"sparse-{100.0 * density:g}%"


def make_datasets(
    densities: Sequence[float],
    *,
    shapes: Sequence[tuple[int, int]] = FULL_SHAPES,
    sparse_step: float,
    dense_step: float,
    include_dense: bool = True,
    seed: int = 0,
) -> list[Dataset]:
    """Build the benchmark's data sets from one seeded dense update.

    Every sparse set is a global top-k of the same dense update, so the sets differ only in
    how much of it they keep.

    Parameters
    ----------
    densities : sequence of float
        Densities of the sparse sets, in the order wanted.
    shapes : sequence of (int, int), optional
        Tensor shapes (default: the four full-size tensors).
    sparse_step, dense_step : float
        Quantization steps of the sparse sets and of the dense set.
    include_dense : bool, optional
        Whether to add the dense set (last).
    seed : int, optional
        Seed of the generator.

    Returns
    -------
    list of Dataset
        The data sets.
    """
    base = dense_update(shapes, seed=seed)
    names = [f"layer{i}.weight" for i in range(len(base))]
    sets = [
        Dataset(density_label(d), float(d), global_topk(base, d), list(names), sparse_step)
        for d in densities
    ]
    if include_dense:
        sets.append(Dataset("dense", None, base, list(names), dense_step))
    return sets
