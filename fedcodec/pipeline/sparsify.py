"""Sparsification before quantization: top-k, magnitude threshold, whole rows.

All three rank over the whole model (not per tensor), so a fraction is a
fraction of the model's weights or rows.  Top-k ranks either by the
(importance-weighted) squared value alone (``allocation="model"``) or by that
value per estimated bit of its tensor (``allocation="rd"``: equal slope, see
:func:`_rd_topk`).  Tensors marked ``exempt`` are never zeroed and do not count
toward the fraction.  The values they zero stay in the error-feedback residual.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from fedcodec.pipeline.model import F32Array
from fedcodec.pipeline.params import Sparsification

__all__ = ["sparsify"]


def _rows(array: F32Array) -> F32Array:
    """The tensor as (rows, row_length): axis 0 is the row; 1-d: one element per row."""
    if array.ndim == 0:
        return array.reshape(1, 1)
    if array.ndim == 1:
        return array.reshape(-1, 1)
    return array.reshape(array.shape[0], -1)


def _keep_largest(scores: np.ndarray, count: int) -> np.ndarray:
    """Boolean mask of exactly ``count`` largest scores (ties broken by position)."""
    mask = np.zeros(scores.shape, dtype=bool)
    if count >= scores.size:
        mask[:] = True
    elif count > 0:
        mask[np.argpartition(scores, scores.size - count)[scores.size - count :]] = True
    return mask


def _binary_entropy(p: np.ndarray) -> np.ndarray:
    q = np.clip(p, 1e-12, 1.0 - 1e-12)
    return np.asarray(-(q * np.log2(q) + (1.0 - q) * np.log2(1.0 - q)))


#: Bits a nonzero costs besides its position (sign and a small magnitude), for
#: :func:`_rd_topk`'s cost model.
_NONZERO_BITS = 3.0


def _rd_topk(scores: list[np.ndarray], count: int, iterations: int = 4) -> list[np.ndarray]:
    """Keep ``count`` values at equal slope in distortion per estimated bit.

    A value kept in tensor ``t`` costs about ``b_t = h(d_t)/d_t + c`` bits,
    where ``d_t`` is the tensor's density after sparsification (its position
    entropy spread over its nonzeros) and ``c`` covers sign and magnitude.
    Zeroing it costs its score (``η·w²``) in distortion, so values are ranked
    by ``score / b_t``; the densities and the ranking are refined together a
    few times (starting from the global ranking).
    """
    sizes = np.array([s.size for s in scores], dtype=np.float64)
    flat = np.concatenate([s.ravel() for s in scores]) if scores else np.zeros(0)
    keep = _keep_largest(flat, count)
    for _ in range(iterations):
        kept = np.array(
            [
                int(np.count_nonzero(part))
                for part in np.split(keep, np.cumsum(sizes)[:-1].astype(int))
            ]
        )
        density = np.where(sizes > 0, np.maximum(kept, 1) / np.maximum(sizes, 1), 1.0)
        bits = _binary_entropy(density) / density + _NONZERO_BITS
        ranked = (
            np.concatenate([s.ravel() / b for s, b in zip(scores, bits, strict=True)])
            if scores
            else np.zeros(0)
        )
        new_keep = _keep_largest(ranked, count)
        if np.array_equal(new_keep, keep):
            break
        keep = new_keep
    out: list[np.ndarray] = []
    start = 0
    for s in scores:
        out.append(keep[start : start + s.size].reshape(s.shape))
        start += s.size
    return out


def _row_bits(keep: np.ndarray, rows: int) -> np.ndarray:
    """Estimated position bits of a nonzero in each row of a (rows, cols) tensor.

    The coder flags every all-zero row and codes a row's significance with contexts that
    follow the row's own activity (the distance to its last nonzero, its magnitudes), so
    a row that holds ``k`` of the tensor's ``K`` nonzeros costs about
    ``log2(rows·cols / K) + log2(K / (rows·k))`` bits per nonzero: the tensor's uniform
    position entropy (as :func:`_rd_topk`) plus a term that is negative for rows denser
    than the average and positive for sparser ones (``k`` smoothed by 1/2, so an empty
    row pays for being opened).
    """
    size = keep.size
    cols = size // rows
    kept = keep.reshape(rows, cols)
    total = float(np.count_nonzero(kept))
    per_row = kept.sum(axis=1, dtype=np.float64) + 0.5
    uniform = float(_binary_entropy(np.array(max(total, 1.0) / size))) * size / max(total, 1.0)
    bits = uniform + np.log2((total + 0.5 * rows) / rows / per_row)
    return np.asarray(np.maximum(bits, 1.0))


def _rd_rows_topk(scores: list[np.ndarray], count: int, iterations: int = 6) -> list[np.ndarray]:
    """As :func:`_rd_topk`, with a nonzero's position bits from its row (:func:`_row_bits`)
    in tensors of two or more dimensions (rows: output units, conv filters).

    The same bytes carry more nonzeros when they share rows; a value in a row that holds
    others ranks higher than one of the same score alone in its row.  Starts from
    :func:`_rd_topk`'s choice and refines rows' costs and the ranking together.
    """
    sizes = [s.size for s in scores]
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
    if not scores:
        return []
    keep = np.concatenate([k.ravel() for k in _rd_topk(scores, count)])
    for _ in range(iterations):
        ranked = []
        for s, a, b in zip(scores, starts[:-1], starts[1:], strict=True):
            part = keep[a:b]
            kept = max(int(np.count_nonzero(part)), 1)
            if s.ndim >= 2 and s.size:
                rows = s.shape[0]
                bits = np.repeat(_row_bits(part, rows), s.size // rows)
            else:
                density = kept / max(s.size, 1)
                bits = np.full(s.size, float(_binary_entropy(np.array(density))) / density)
            ranked.append(s.ravel() / (bits + _NONZERO_BITS))
        new_keep = _keep_largest(np.concatenate(ranked), count)
        if np.array_equal(new_keep, keep):
            break
        keep = new_keep
    return [
        keep[a:b].reshape(s.shape) for s, a, b in zip(scores, starts[:-1], starts[1:], strict=True)
    ]


def sparsify(
    tensors: Sequence[F32Array],
    how: Sparsification,
    importance: Sequence[F32Array | None] | None = None,
    exempt: Sequence[bool] | None = None,
) -> tuple[list[F32Array], int]:
    """Zero weights as ``how`` says.

    Parameters
    ----------
    tensors : sequence of ndarray
        float32 tensors (not modified).
    how : Sparsification
        What to zero; rows first, then top-k among the kept weights, then the
        threshold.
    importance : sequence of ndarray or None, optional
        Per-weight importance η >= 0; top-k then ranks by ``η·w²``, rows by
        the mean of ``η·w²``.
    exempt : sequence of bool, optional
        Per tensor: True leaves it untouched (it is not counted in the
        fractions either).

    Returns
    -------
    tensors : list of ndarray
        float32 tensors with the zeroed weights (copies where changed).
    zeroed : int
        Number of nonzero weights that were set to zero.
    """
    weights = [
        None if importance is None or importance[i] is None else importance[i]
        for i in range(len(tensors))
    ]
    free = [not (exempt is not None and exempt[i]) for i in range(len(tensors))]
    masks: list[np.ndarray] = [np.ones(t.shape, dtype=bool) for t in tensors]
    active = [i for i in range(len(tensors)) if free[i]]

    def scores(i: int) -> np.ndarray:
        sq = np.square(tensors[i], dtype=np.float64)
        eta = weights[i]
        return sq if eta is None else sq * np.asarray(eta, dtype=np.float64)

    if how.rows is not None and how.rows < 1.0:
        row_scores = [
            _rows(scores(i)).mean(axis=1) if tensors[i].size else np.zeros(0) for i in active
        ]
        flat = np.concatenate(row_scores) if row_scores else np.zeros(0)
        keep = _keep_largest(flat, math.ceil(how.rows * flat.size))
        start = 0
        for i, rs in zip(active, row_scores, strict=True):
            kept_rows = keep[start : start + rs.size]
            start += rs.size
            masks[i] &= np.broadcast_to(kept_rows[:, None], _rows(tensors[i]).shape).reshape(
                tensors[i].shape
            )
    if how.topk is not None and how.topk < 1.0:
        total = sum(tensors[i].size for i in active)
        count = math.ceil(how.topk * total)
        masked = [np.where(masks[i], scores(i), -1.0) for i in active]
        if how.allocation in ("rd", "rd-rows"):
            select = _rd_topk if how.allocation == "rd" else _rd_rows_topk
            kept = select(
                [np.maximum(m, 0.0) * masks[i] for m, i in zip(masked, active, strict=True)], count
            )
            for i, k in zip(active, kept, strict=True):
                masks[i] &= k
        else:
            flat_scores = np.concatenate([m.ravel() for m in masked]) if masked else np.zeros(0)
            keep = _keep_largest(flat_scores, count)
            start = 0
            for i in active:
                size = tensors[i].size
                masks[i] &= keep[start : start + size].reshape(tensors[i].shape)
                start += size
    if how.threshold:
        for i in active:
            masks[i] &= np.abs(tensors[i]) >= how.threshold
    out: list[F32Array] = []
    zeroed = 0
    for t, mask in zip(tensors, masks, strict=True):
        if mask.all():
            out.append(t)
            continue
        dropped = np.count_nonzero(t[~mask])
        zeroed += int(dropped)
        out.append(np.where(mask, t, np.float32(0.0)).astype(np.float32, copy=False))
    return out, zeroed
