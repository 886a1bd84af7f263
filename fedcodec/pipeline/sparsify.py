"""Sparsification before quantization: top-k, magnitude threshold, whole rows.

All three rank over the whole model (not per tensor), so a fraction is a
fraction of the model's weights or rows.  The values they zero stay in the
error-feedback residual.
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


def sparsify(
    tensors: Sequence[F32Array],
    how: Sparsification,
    importance: Sequence[F32Array | None] | None = None,
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
    masks: list[np.ndarray] = [np.ones(t.shape, dtype=bool) for t in tensors]

    def scores(i: int) -> np.ndarray:
        sq = np.square(tensors[i], dtype=np.float64)
        eta = weights[i]
        return sq if eta is None else sq * np.asarray(eta, dtype=np.float64)

    if how.rows is not None and how.rows < 1.0:
        row_scores = [
            _rows(scores(i)).mean(axis=1) if tensors[i].size else np.zeros(0)
            for i in range(len(tensors))
        ]
        flat = np.concatenate(row_scores) if row_scores else np.zeros(0)
        keep = _keep_largest(flat, math.ceil(how.rows * flat.size))
        start = 0
        for i, rs in enumerate(row_scores):
            kept_rows = keep[start : start + rs.size]
            start += rs.size
            masks[i] &= np.broadcast_to(kept_rows[:, None], _rows(tensors[i]).shape).reshape(
                tensors[i].shape
            )
    if how.topk is not None and how.topk < 1.0:
        flat_scores = (
            np.concatenate(
                [np.where(masks[i], scores(i), -1.0).ravel() for i in range(len(tensors))]
            )
            if tensors
            else np.zeros(0)
        )
        total = sum(t.size for t in tensors)
        keep = _keep_largest(flat_scores, math.ceil(how.topk * total))
        start = 0
        for i, t in enumerate(tensors):
            masks[i] &= keep[start : start + t.size].reshape(t.shape)
            start += t.size
    if how.threshold:
        for i, t in enumerate(tensors):
            masks[i] &= np.abs(t) >= how.threshold
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
