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
from pathlib import Path

import numpy as np

from fedcodec_bench.data import Dataset, global_topk
from fedcodec_bench.fldata import dirichlet_partition, load_mnist
from fedcodec_bench.models import MLP

__all__ = [
    "REAL_DENSITIES",
    "REAL_DIR_ENV",
    "mnist_update",
    "npz_update_datasets",
    "real_update_datasets",
]

#: Environment variable naming a folder of ``.npz`` update sets (``--real-dir``).
REAL_DIR_ENV = "FEDCODEC_REAL_DIR"

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


def npz_update_datasets(folder: str | Path) -> list[Dataset]:
    """Real update sets saved as ``.npz`` files of named float32 tensors, one set per file.

    ``scripts/transformer_updates.py`` makes such files (MiniLM fine-tuned with AdamW and SGD in
    a side environment: attention/FFN matrices, and the word-embedding table with mostly zero
    rows), and so does ``scripts/cnn_updates.py`` (CNNs with BatchNorm: 4-D conv filters, BN
    weights, biases and running statistics, dense and top-k). Each set's step is the power of
    two nearest a quarter of the RMS of its nonzero values (a power of two lies on NNCodec's qp
    grid), about 2 bits per nonzero weight.

    Parameters
    ----------
    folder : str or Path
        The folder; its ``*.npz`` files (not subfolders) are read in name order.

    Returns
    -------
    list of Dataset
        Named after the file stems; ``density`` None.

    Raises
    ------
    ValueError
        If the folder has no ``.npz`` file or a file holds a tensor that is not floating point.
    """
    files = sorted(Path(folder).glob("*.npz"))
    if not files:
        raise ValueError(f"{folder}: no .npz update sets in this folder")
    sets = []
    for path in files:
        with np.load(path) as z:
            names = list(z.files)
            tensors = []
            for k in names:
                a = z[k]
                if not np.issubdtype(a.dtype, np.floating):
                    raise ValueError(f"{path}: tensor {k!r} is {a.dtype}, not floating point")
                tensors.append(np.ascontiguousarray(a, dtype=np.float32))
        nz = np.concatenate([t[t != 0].astype(np.float64) for t in tensors])
        rms = math.sqrt(float(np.mean(nz * nz))) if nz.size else 1.0
        step = float(2.0 ** round(math.log2(rms / 4.0)))
        sets.append(Dataset(path.stem, None, tensors, names, step))
    return sets
