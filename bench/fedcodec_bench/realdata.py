"""Real model updates for the codec benchmark: a numpy MLP's client update on MNIST-5k.

Synthetic i.i.d. updates (:mod:`fedcodec_bench.data`) favour no coder in particular; real
updates do not look like them. A client update of a small MLP after a few local SGD steps on a
non-IID client is close to low rank (``Δw1 ≈ Σ_t g_t x_tᵀ`` over few minibatches) and has
exactly zero columns (MNIST's border pixels are zero in every image, so their input weights
never move). This module makes such updates, deterministically:

1. the MNIST-5k MLP of ``fedcodec bench fl`` (784-128-10, 101,770 weights) is initialised
   from the seed and trained one epoch on all training images with plain SGD (so the update
   comes from a partly trained model, not from the random start);
2. a Dirichlet(0.1) partition over 50 clients gives non-IID clients; the client with the most
   examples trains ``epochs`` local epochs (minibatch 20, learning rate 0.05);
3. the update is ``local − global`` (float32), sent dense or after a global top-k
   (10 % and 1 %).

All three sets share one quantization step, a power of two (so it lies on NNCodec's qp grid)
near a quarter of the dense update's RMS.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from fedcodec_bench.data import Dataset, global_topk
from fedcodec_bench.fldata import dirichlet_partition, load_mnist
from fedcodec_bench.models import MLP

__all__ = ["REAL_DENSITIES", "mnist_update", "real_update_datasets"]

#: Densities of the sparsified real sets (plus the dense one).
REAL_DENSITIES: tuple[float, ...] = (0.10, 0.01)


@lru_cache(maxsize=2)
def mnist_update(seed: int = 0, epochs: int = 1) -> tuple[list[np.ndarray], list[str]]:
    """One non-IID client's MLP update on MNIST-5k (see the module docs).

    Returns
    -------
    tensors, names
        float32 ``w1 (128, 784), b1 (128,), w2 (10, 128), b2 (10,)`` and their names.
    """
    x, y, _, _ = load_mnist(seed)
    mlp = MLP((784, 128, 10))
    rng = np.random.default_rng(seed + 100)
    params = mlp.init(rng)
    params = mlp.train(params, x, y, epochs=1, batch=20, lr=0.05, rng=rng)
    parts = dirichlet_partition(y, 50, 0.1, np.random.default_rng(seed + 101))
    client = max(range(len(parts)), key=lambda c: (len(parts[c]), -c))
    idx = parts[client]
    local = mlp.train(params, x[idx], y[idx], epochs=epochs, batch=20, lr=0.05, rng=rng)
    names = list(params)
    tensors = [
        np.ascontiguousarray(np.subtract(local[k], params[k], dtype=np.float32)) for k in names
    ]
    return tensors, names


def real_update_datasets(seed: int = 0) -> list[Dataset]:
    """The real-update data sets: dense, top-10 % and top-1 % of one client update.

    Returns
    -------
    list of Dataset
        Named ``mnist-update-dense``, ``mnist-update-10%``, ``mnist-update-1%``; their
        ``density`` is None for all three (they are not the synthetic recipe).
    """
    tensors, names = mnist_update(seed)
    flat = np.concatenate([t.ravel() for t in tensors]).astype(np.float64)
    rms = math.sqrt(float(np.mean(flat * flat)))
    step = float(2.0 ** round(math.log2(rms / 4.0)))
    sets = [Dataset("mnist-update-dense", None, list(tensors), list(names), step)]
    for d in REAL_DENSITIES:
        sets.append(
            Dataset(f"mnist-update-{100 * d:g}%", None, global_topk(tensors, d), list(names), step)
        )
    return sets
