"""The codec benchmark: fedcodec's entropy coder against generic coders on the same levels.

``fedcodec bench codec`` (or ``python -m fedcodec_bench codec``) builds seeded synthetic model
updates (:mod:`fedcodec_bench.data`), quantizes them by plain rounding at a fixed step, and
codes exactly those integer levels with

* fedcodec (``fc.encode_levels``, lossless) — sizes, and encode / decode / decode-accumulate
  speed on one thread and on all cores;
* zstd-19, lzma-9, and the order-0 entropy and i.i.d. ideal rate of the levels
  (:mod:`fedcodec_bench.baselines`);
* NNCodec, when ``--nncodec-python`` names an interpreter that has it
  (:mod:`fedcodec_bench.nncodec_ref`); otherwise its published figures are shown as reference.

It also runs ``fc.encode`` on the float tensors at the same step with λ = 0 (which must give the
same bytes) and with one RDOQ λ (size and SNR), checks every decode against the input, and
ends with a table of targets marked PASS or MISS.

Everything is measured side by side in one process, interleaved run by run, and reported as
medians, because the machines it runs on are shared and noisy.
"""

from __future__ import annotations

import gc
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, TypeVar, cast

import numpy as np
import numpy.typing as npt

from fedcodec_bench import baselines as bl
from fedcodec_bench.data import (
    FULL_SHAPES,
    QUICK_SHAPES,
    Dataset,
    density_label,
    make_datasets,
    quantize,
)
from fedcodec_bench.machine import machine_info, usable_cores
from fedcodec_bench.nncodec_ref import (
    PUBLISHED,
    PUBLISHED_NUMEL,
    NNCodecFloats,
    NNCodecRun,
    run_nncodec,
)
from fedcodec_bench.report import fmt_int, fmt_pct, fmt_rate, table
from fedcodec_bench.temporal import run_temporal, temporal_lines

if TYPE_CHECKING:
    from fedcodec.codec import Quantizer

__all__ = [
    "DENSE_STEP",
    "FULL_DENSITIES",
    "QUICK_DENSITIES",
    "RDOQ_LAMBDA",
    "RD_QUANTIZERS",
    "SPARSE_STEP",
    "BenchError",
    "CodecBenchConfig",
    "TargetResult",
    "run_codec_bench",
]

#: Step of the sparse sets: NNCodec's qp -46 (6 * 2**-14 ~= 3.66e-4), exact in float32.
SPARSE_STEP = 3.662109375e-4
#: Step of the dense set: twice the sparse step (NNCodec's qp -42), about 3 bits per weight.
DENSE_STEP = 7.32421875e-4
#: The RDOQ setting reported next to plain rounding: ln(2)/6, the high-rate optimum.
RDOQ_LAMBDA = 0.1155
#: fedcodec's dependent quantizers on the RD curves (besides rounding and RDOQ).
RD_QUANTIZERS: tuple[str, ...] = ("trellis", "trellis8")
#: The curves of the BD-rate comparison: fedcodec's (rounding = the same levels NNCodec URQ
#: codes; "encode" = ``fc.encode`` at lam 0, rounding from the floats, where one-magnitude rows
#: get their own value (ROWFINE); RDOQ; the dependent quantizers) and NNCodec's (URQ on the
#: rounding levels; DQ with lambda_scale 0, its default distortion-only trellis, and 1,
#: rate-aware).
FEDCODEC_CURVES: tuple[str, ...] = ("rounding", "encode", "rdoq", *RD_QUANTIZERS)
NNCODEC_CURVES: tuple[str, ...] = ("urq", "dq", "dq_rd")
#: lambda_scale of NNCodec's DQ curves.
NNCODEC_DQ_LAMBDAS = {"dq": 0.0, "dq_rd": 1.0}
#: Densities of the full run and of ``--quick``.
FULL_DENSITIES: tuple[float, ...] = (0.10, 0.05, 0.01, 0.001, 0.0001)
QUICK_DENSITIES: tuple[float, ...] = (0.01, 0.001)

_MODE_NAMES = ("dense", "grouped", "runs")
_T = TypeVar("_T")
I32Array = npt.NDArray[np.int32]
F32Array = npt.NDArray[np.float32]


class BenchError(RuntimeError):
    """A correctness failure found by the benchmark (a decode that differs from its input)."""


@dataclass
class CodecBenchConfig:
    """Settings of one codec benchmark run.

    Attributes
    ----------
    quick : bool
        Quarter-size tensors and fewer densities, for smoke runs.
    repeats : int or None
        Timed runs per measurement (medians are reported); None means 5, or 1 with ``quick``.
    step : float
        Quantization step of the sparse sets (rounded to float32).
    dense_step : float
        Quantization step of the dense set (rounded to float32).
    densities : tuple of float or None
        Sparse densities as fractions; None means the default of the mode.
    dense : bool
        Include the dense set.
    rdoq_lambda : float
        λ of the RDOQ row.
    threads : int
        Thread count of the "all cores" measurements (0 = all online CPUs).
    seed : int
        Seed of the synthetic data.
    nncodec_python : str or None
        Interpreter with NNCodec installed, to measure it on the same levels.
    json_path : str or None
        Where to write the JSON report.
    check : bool
        Make :func:`run_codec_bench`'s caller fail on a missed target or failed check.
    real : bool or None
        Add the real-update data sets (:mod:`fedcodec_bench.realdata`: a numpy MLP's client
        update on MNIST-5k, dense and top-k 10 % / 1 %); None: yes unless ``quick``.
    rd : bool or None
        Measure rate-distortion curves (bits per weight against SNR) over a sweep of steps;
        None: yes unless ``quick``.
    rd_points : int or None
        Steps per curve (powers of two around each set's step); None: 7, or 4 with ``quick``.
    temporal : bool or None
        Measure the temporal-reference gain on real consecutive-round updates
        (:mod:`fedcodec_bench.temporal`; a small federation with ``quick``); None: yes unless
        ``quick``.
    rd_quantizers : tuple of str
        fedcodec's dependent quantizers drawn as RD curves besides rounding and RDOQ
        (``"trellis"``, ``"trellis8"``; each at half the set's steps, where its reconstruction
        error matches rounding's).
    real_dir : str or None
        A folder of ``.npz`` real update sets (:func:`fedcodec_bench.realdata.npz_update_datasets`,
        e.g. MiniLM fine-tuned with AdamW and SGD by ``scripts/transformer_updates.py``); None:
        the ``FEDCODEC_REAL_DIR`` environment variable, if set. Measured in every mode.
    """

    quick: bool = False
    repeats: int | None = None
    step: float = SPARSE_STEP
    dense_step: float = DENSE_STEP
    densities: tuple[float, ...] | None = None
    dense: bool = True
    rdoq_lambda: float = RDOQ_LAMBDA
    threads: int = 0
    seed: int = 0
    nncodec_python: str | None = None
    json_path: str | None = None
    check: bool = False
    real: bool | None = None
    rd: bool | None = None
    rd_points: int | None = None
    temporal: bool | None = None
    real_dir: str | None = None
    rd_quantizers: tuple[str, ...] = RD_QUANTIZERS

    def resolved_real_dir(self) -> str | None:
        """The folder of ``.npz`` real update sets, or None (``real_dir`` or the environment)."""
        from fedcodec_bench.realdata import REAL_DIR_ENV

        return self.real_dir or os.environ.get(REAL_DIR_ENV) or None

    def resolved_real(self) -> bool:
        """Whether the real-update sets are measured (default: yes, except with ``quick``)."""
        return (not self.quick) if self.real is None else self.real

    def resolved_temporal(self) -> bool:
        """Whether the temporal-reference gain is measured (default: yes, except with ``quick``)."""
        return (not self.quick) if self.temporal is None else self.temporal

    def resolved_rd(self) -> bool:
        """Whether RD curves are measured (default: yes, except with ``quick``)."""
        return (not self.quick) if self.rd is None else self.rd

    def resolved_rd_exponents(self) -> tuple[int, ...]:
        """Step multipliers ``2**j`` of the rate-distortion sweep, defaults applied.

        Returns
        -------
        tuple of int
            The exponents ``j`` (the data set's own step is ``j = 0``).
        """
        n = self.rd_points if self.rd_points is not None else (4 if self.quick else 7)
        lo = -(n // 3)
        return tuple(range(lo, lo + max(1, n)))

    def resolved_repeats(self) -> int:
        """Return the number of timed runs per measurement, defaults applied.

        Returns
        -------
        int
            At least 1.
        """
        if self.repeats is not None:
            return max(1, self.repeats)
        return 1 if self.quick else 5

    def resolved_densities(self) -> tuple[float, ...]:
        """Sparse densities after applying the defaults.

        Returns
        -------
        tuple of float
            Fractions in (0, 1].
        """
        if self.densities is not None:
            return self.densities
        return QUICK_DENSITIES if self.quick else FULL_DENSITIES


@dataclass(frozen=True)
class TargetResult:
    """One row of the targets table.

    Attributes
    ----------
    name : str
        What is measured.
    dataset : str
        The data set it is measured on.
    measured : float or None
        The value (None when the data set was not part of the run).
    goal : str
        The target, in words.
    unit : str
        Unit of ``measured``.
    status : str
        ``"PASS"``, ``"MISS"`` or ``"n/a"``.
    """

    name: str
    dataset: str
    measured: float | None
    goal: str
    unit: str
    status: str


@dataclass
class _Timings:
    """Seconds per run of each timed operation."""

    runs: dict[str, list[float]] = field(default_factory=dict)

    def add(self, op: str, seconds: float) -> None:
        self.runs.setdefault(op, []).append(seconds)

    def median(self, op: str) -> float | None:
        r = self.runs.get(op)
        return statistics.median(r) if r else None


def _timed(fn: Callable[[], _T]) -> tuple[_T, float]:
    r, wall, _ = _timed_cpu(fn)
    return r, wall


def _timed_cpu(fn: Callable[[], _T]) -> tuple[_T, float, float]:
    """``fn()``, its wall-clock seconds and the CPU seconds of the calling thread.

    The CPU time of a one-thread call is what a core spent on it, whether or not the shared
    machine preempted the thread meanwhile: the noise-free measure for per-core speed ratios.
    """
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        c0 = time.thread_time()
        t0 = time.perf_counter()
        r = fn()
        t1 = time.perf_counter()
        c1 = time.thread_time()
    finally:
        if gc_was_enabled:
            gc.enable()
    return r, t1 - t0, c1 - c0


def _modes_str(modes: object) -> str:
    """Slice coding modes of a tensor as text: a bit mask (bit m = mode m) or a list of names."""
    if isinstance(modes, (int, np.integer)):
        names = [n for m, n in enumerate(_MODE_NAMES) if int(modes) >> m & 1]
        return "+".join(names) if names else "-"
    if isinstance(modes, str):
        return modes
    if isinstance(modes, (list, tuple)):
        return "+".join(str(m) for m in modes)
    return str(modes)


def _snr_db(signal_sq: float, err_sq: float) -> float | None:
    """SNR in dB, or None when it is unbounded (no error) or undefined (no signal)."""
    if err_sq <= 0.0 or signal_sq <= 0.0:
        return None
    return 10.0 * math.log10(signal_sq / err_sq)


def _fmt_db(x: float | None) -> str:
    return "inf" if x is None else f"{x:.2f}"


def _rel(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return a / b - 1.0


def bd_rate(
    test: Sequence[tuple[float, float]], ref: Sequence[tuple[float, float]]
) -> float | None:
    """Bjøntegaard delta rate of ``test`` against ``ref``: the mean relative rate difference.

    Each curve is a list of ``(bytes, snr_db)`` points. log(rate) is fitted as a polynomial of
    the SNR (cubic with 4+ points, else of degree points - 1) and both fits are integrated over
    the SNR range the curves share.

    Returns
    -------
    float or None
        ``exp(mean(log test - log ref)) - 1`` (−0.1 = 10 % fewer bytes at equal SNR); None when
        the curves share no SNR range or have fewer than 2 usable points each.
    """

    def usable(c: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
        return sorted({(d, r) for r, d in c if r > 0 and d is not None and math.isfinite(d)})

    t, r = usable(test), usable(ref)
    if len(t) < 2 or len(r) < 2:
        return None
    lo = max(t[0][0], r[0][0])
    hi = min(t[-1][0], r[-1][0])
    if not hi > lo:
        return None

    def integral(c: list[tuple[float, float]]) -> float:
        d = np.array([p[0] for p in c])
        lr = np.log(np.array([p[1] for p in c]))
        poly = np.polyint(np.polyfit(d, lr, min(3, len(c) - 1)))
        return float(np.polyval(poly, hi) - np.polyval(poly, lo))

    return math.exp((integral(t) - integral(r)) / (hi - lo)) - 1.0


def _curve(points: Sequence[dict[str, Any]], name: str) -> list[tuple[float, float]]:
    """``(bytes, snr_db)`` of one named curve of a set's RD points (missing points left out)."""
    key = {
        "rounding": "fedcodec",
        "urq": "nncodec",
        "dq": "nncodec_dq",
        "dq_rd": "nncodec_dq_rd",
    }.get(name, name)
    snr = "snr_db" if name in ("rounding", "urq") else f"{key}_snr_db"
    return [
        (p[f"{key}_bytes"], p[snr])
        for p in points
        if p.get(f"{key}_bytes") is not None and p.get(snr) is not None
    ]


def _bd_rates(points: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """BD-rates of one set's RD curves: every fedcodec curve against every NNCodec curve.

    ``vs_nncodec_<c>`` maps each fedcodec curve (:data:`FEDCODEC_CURVES`) to its BD-rate
    against NNCodec's curve ``c`` (:data:`NNCODEC_CURVES`); ``vs_rounding`` gives fedcodec's
    quantizers against its own rounding, ``nncodec_dq_vs_urq`` / ``nncodec_dq_rd_vs_urq``
    NNCodec's DQ curves against its URQ.
    The target value ``best`` is fedcodec's best curve against NNCodec's best: per NNCodec curve
    the lowest fedcodec BD-rate, and of those the highest (the NNCodec curve hardest to beat);
    ``fedcodec_best`` / ``nncodec_best`` name the two curves. None where not measured.
    """
    fed = {q: _curve(points, q) for q in FEDCODEC_CURVES}
    nn = {c: _curve(points, c) for c in NNCODEC_CURVES}
    out: dict[str, Any] = {}
    worst: tuple[float, str, str] | None = None
    for c in NNCODEC_CURVES:
        row = {q: bd_rate(fed[q], nn[c]) for q in FEDCODEC_CURVES}
        out[f"vs_nncodec_{c}"] = row
        got = [(v, q) for q, v in row.items() if v is not None]
        if got:
            v, q = min(got)
            if worst is None or v > worst[0]:
                worst = (v, q, c)
    out["vs_rounding"] = {q: bd_rate(fed[q], fed["rounding"]) for q in FEDCODEC_CURVES[1:]}
    out["nncodec_dq_vs_urq"] = bd_rate(nn["dq"], nn["urq"])
    out["nncodec_dq_rd_vs_urq"] = bd_rate(nn["dq_rd"], nn["urq"])
    out["best"] = None if worst is None else worst[0]
    out["fedcodec_best"] = None if worst is None else worst[1]
    out["nncodec_best"] = None if worst is None else worst[2]
    return out


def _spread(runs: Sequence[float]) -> float | None:
    """(max - min) / median of repeated timings, or None with fewer than 2 runs."""
    if len(runs) < 2:
        return None
    med = statistics.median(runs)
    return (max(runs) - min(runs)) / med if med > 0 else None


def _mws(numel: int, seconds: float | None) -> float | None:
    if seconds is None or seconds <= 0:
        return None
    return numel / seconds / 1e6


def _expect_levels(
    got: Sequence[tuple[I32Array, float]], want: Sequence[I32Array], step: float, what: str
) -> None:
    if len(got) != len(want):
        raise BenchError(f"{what}: decoded {len(got)} tensors, expected {len(want)}")
    for i, ((lv, st), ref) in enumerate(zip(got, want, strict=True)):
        a = np.asarray(lv)
        if a.shape != ref.shape or not np.array_equal(a, ref):
            bad = (
                int(np.count_nonzero(a.reshape(-1) != ref.reshape(-1)))
                if a.size == ref.size
                else -1
            )
            raise BenchError(
                f"{what}: tensor {i} decodes to different levels than were encoded "
                f"(shape {a.shape} vs {ref.shape}, {bad} mismatches)"
            )
        if float(np.float32(st)) != float(np.float32(step)):
            raise BenchError(f"{what}: tensor {i} decodes with step {st!r}, encoded with {step!r}")


def _expect_floats(got: Sequence[F32Array], want: Sequence[F32Array], what: str) -> None:
    if len(got) != len(want):
        raise BenchError(f"{what}: {len(got)} tensors, expected {len(want)}")
    for i, (a, ref) in enumerate(zip(got, want, strict=True)):
        arr = np.asarray(a)
        if arr.shape != ref.shape or not np.array_equal(arr, ref):
            diff = (
                float(np.max(np.abs(arr.astype(np.float64) - ref)))
                if arr.shape == ref.shape
                else float("nan")
            )
            raise BenchError(
                f"{what}: tensor {i} differs from level * step (shape {arr.shape} vs {ref.shape}, "
                f"max |diff| {diff:.3e})"
            )


def _bench_dataset(
    ds: Dataset, cfg: CodecBenchConfig, repeats: int, with_zstd: bool, log: Callable[[str], None]
) -> tuple[dict[str, Any], list[I32Array]]:
    """Measure one data set. Returns its JSON record and its levels."""
    from fedcodec import codec as fc

    step = ds.step
    tensors = ds.tensors
    numel = ds.numel
    levels = quantize(tensors, step)
    s32 = np.float32(step)
    expected = [lv.astype(np.float32) * s32 for lv in levels]
    lvl_nnz = int(sum(np.count_nonzero(lv) for lv in levels))
    thr = cfg.threads
    checks: dict[str, Any] = {"decodes_verified": 0}

    # Reference encodes (untimed): the lossless level stream and its per-tensor stats.
    ref = fc.encode_levels(levels, step, threads=1)
    ref_bytes = bytes(ref.data)
    tensor_stats = [
        {
            "index": int(s.index),
            "shape": list(s.shape),
            "bytes": int(s.bytes),
            "nonzeros": int(s.nonzeros),
            "slices": int(s.slices),
            "modes": _modes_str(s.modes),
        }
        for s in ref.stats
    ]
    # The container's floor: the same shapes with every level zero.
    zero_bytes = len(fc.encode_levels([np.zeros_like(lv) for lv in levels], step, threads=1).data)
    # The compact container (shapes known to the decoder, all-zero tensors omitted): what the
    # round engine sends to peers that read it.
    compact = bytes(fc.encode_levels(levels, step, threads=1, compact=True).data)
    checks["compact_decodes"] = all(
        np.array_equal(np.asarray(a), b)
        for a, b in zip(
            fc.decode(compact, threads=thr, expected_shapes=[lv.shape for lv in levels]),
            expected,
            strict=True,
        )
    )
    # (the orientation choice of encode_levels: lossy encode() keeps the given one by default)
    rd0 = fc.encode(tensors, step=step, lam=0.0, threads=thr, return_recon=True, transpose="auto")
    rdq = fc.encode(tensors, step=step, lam=cfg.rdoq_lambda, threads=thr, return_recon=True)
    rdq_bytes = bytes(rdq.data)

    # fc.encode(step, λ=0) must quantize to the same levels; it gives the same bytes unless
    # one-magnitude rows carry their ROWFINE values (codec_c/FORMAT.md §8.1).
    float_same = bytes(rd0.data) == ref_bytes
    float_mismatch = 0
    if not float_same:
        got = fc.decode_levels(bytes(rd0.data), threads=thr)
        float_mismatch = int(
            sum(
                np.count_nonzero(np.asarray(g[0]).reshape(-1) != w.reshape(-1))
                for g, w in zip(got, levels, strict=True)
            )
        )
    checks["float_encode_equals_levels_bytes"] = float_same
    checks["float_encode_level_mismatches"] = float_mismatch
    checks["float_encode_same_levels"] = float_mismatch == 0

    # The RDOQ encoder's reconstruction must be what a decoder produces.
    rdq_dec = fc.decode(rdq_bytes, threads=thr)
    rdq_recon = rdq.recon if rdq.recon is not None else []
    checks["rdoq_recon_equals_decode"] = len(rdq_recon) == len(rdq_dec) and all(
        np.array_equal(np.asarray(a), np.asarray(b))
        for a, b in zip(rdq_recon, rdq_dec, strict=True)
    )
    _expect_floats(
        fc.decode(bytes(rd0.data), threads=thr),
        list(rd0.recon or []),
        f"{ds.name}: decode of fc.encode(lam=0) vs its recon",
    )
    sig_sq = float(sum(float(np.square(t, dtype=np.float64).sum()) for t in tensors))
    err0 = float(
        sum(
            float(np.square(t.astype(np.float64) - e).sum())
            for t, e in zip(tensors, expected, strict=True)
        )
    )
    err_rdq = float(
        sum(
            float(np.square(t.astype(np.float64) - np.asarray(r, dtype=np.float64)).sum())
            for t, r in zip(tensors, rdq_dec, strict=True)
        )
    )
    rdq_nnz = int(sum(s.nonzeros for s in rdq.stats))

    accs = [np.zeros(t.shape, dtype=np.float32) for t in tensors]
    deterministic = True

    def enc_levels(n: int) -> Callable[[], bytes]:
        return lambda: bytes(fc.encode_levels(levels, step, threads=n).data)

    def enc_float(n: int, lam: float) -> Callable[[], bytes]:
        # The same orientation rule as rd0 above (lossy encode keeps the given layout by default).
        return lambda: bytes(
            fc.encode(
                tensors, step=step, lam=lam, threads=n, transpose="auto" if lam == 0.0 else False
            ).data
        )

    def dec_levels(n: int) -> Callable[[], list[tuple[I32Array, float]]]:
        return lambda: fc.decode_levels(ref_bytes, threads=n)

    def dec_float(n: int) -> Callable[[], list[F32Array]]:
        return lambda: fc.decode(ref_bytes, threads=n)

    def accumulate(n: int) -> Callable[[], None]:
        return lambda: fc.decode_accumulate(ref_bytes, accs, 1.0, threads=n)

    timings = _Timings()
    # One untimed warm-up pass (thread pools, page faults), then `repeats` timed passes with the
    # operations interleaved, so that a slow spell of the machine hits all of them alike.
    for rep in range(repeats + 1):
        for n, tag in ((1, "1t"), (thr, "all")):
            data, sec, cpu = _timed_cpu(enc_levels(n))
            deterministic &= data == ref_bytes
            if rep:
                timings.add(f"enc_levels_{tag}", sec)
                if n == 1:
                    timings.add("enc_levels_1t_cpu", cpu)
            dec, sec, cpu = _timed_cpu(dec_levels(n))
            _expect_levels(dec, levels, step, f"{ds.name}: decode_levels(threads={n})")
            checks["decodes_verified"] += 1
            if rep:
                timings.add(f"dec_levels_{tag}", sec)
                if n == 1:
                    timings.add("dec_levels_1t_cpu", cpu)
            for a in accs:
                a.fill(0.0)
            _, sec = _timed(accumulate(n))
            _expect_floats(accs, expected, f"{ds.name}: decode_accumulate(threads={n})")
            checks["decodes_verified"] += 1
            if rep:
                timings.add(f"acc_{tag}", sec)
            data, sec = _timed(enc_float(n, 0.0))
            deterministic &= data == bytes(rd0.data)
            if rep:
                timings.add(f"enc_float_{tag}", sec)
        fl, sec = _timed(dec_float(thr))
        _expect_floats(fl, expected, f"{ds.name}: decode(threads={thr})")
        checks["decodes_verified"] += 1
        if rep:
            timings.add("dec_float_all", sec)
        data, sec = _timed(enc_float(thr, cfg.rdoq_lambda))
        deterministic &= data == rdq_bytes
        if rep:
            timings.add("enc_rdoq_all", sec)
    checks["deterministic_bytes"] = deterministic

    t0 = time.perf_counter()
    base = bl.measure_baselines(levels, with_zstd=with_zstd)
    log(f"    baselines {time.perf_counter() - t0:.1f} s")

    nbytes = len(ref_bytes)
    speed = {
        op: {
            "median_s": timings.median(op),
            "median_mws": _mws(numel, timings.median(op)),
            "spread": _spread(runs),
            "runs_s": runs,
        }
        for op, runs in timings.runs.items()
    }
    rec: dict[str, Any] = {
        "name": ds.name,
        "density": ds.density,
        "step": step,
        "numel": numel,
        "float_nonzeros": ds.nonzeros,
        "level_nonzeros": lvl_nnz,
        "max_abs_level": int(max((int(np.abs(lv).max()) for lv in levels if lv.size), default=0)),
        "tensors": [
            {"name": n, "shape": list(t.shape)} for n, t in zip(ds.names, tensors, strict=True)
        ],
        "fedcodec": {
            "bytes": nbytes,
            "bits_per_weight": 8.0 * nbytes / numel,
            "bits_per_nonzero": (8.0 * nbytes / lvl_nnz) if lvl_nnz else None,
            "all_zero_bytes": zero_bytes,
            "compact_bytes": len(compact),
            "tensors": tensor_stats,
        },
        "baselines": asdict(base),
        "relative": {
            "vs_zstd19": _rel(nbytes, base.zstd19_bytes),
            "vs_lzma9": _rel(nbytes, base.lzma9_bytes),
            "vs_order0": _rel(nbytes, base.order0_bytes),
            "vs_iid": _rel(nbytes, base.iid_bytes),
        },
        "speed": speed,
        "float_encode": {
            "lam": 0.0,
            "bytes": len(rd0.data),
            "snr_db": _snr_db(sig_sq, err0),
            "sq_error": err0,
            "sq_error_reported": float(sum(s.sq_error for s in rd0.stats)),
        },
        "rdoq": {
            "lam": cfg.rdoq_lambda,
            "bytes": len(rdq_bytes),
            "vs_plain": _rel(len(rdq_bytes), nbytes),
            "snr_db": _snr_db(sig_sq, err_rdq),
            "sq_error": err_rdq,
            "sq_error_reported": float(sum(s.sq_error for s in rdq.stats)),
            "nonzeros": rdq_nnz,
        },
        "checks": checks,
    }
    return rec, levels


def _rd_curves(
    sets: Sequence[Dataset],
    exponents: Sequence[int],
    rdoq_lambda: float,
    with_zstd: bool,
    log: Callable[[str], None],
    quantizers: Sequence[str] = RD_QUANTIZERS,
) -> tuple[
    dict[str, list[dict[str, Any]]],
    list[tuple[str, list[I32Array], float]],
    list[NNCodecFloats],
    dict[str, float],
]:
    """Bits per weight against SNR for every set over steps ``step * 2**j``.

    At each step the float tensors are quantized by plain rounding and the *same* levels are
    coded by fedcodec (``encode_levels``), zstd-19, lzma-9 and measured against the order-0
    entropy; fedcodec's RD quantizer (``fc.encode`` at that step with ``rdoq_lambda``) gives a
    second fedcodec point with its own levels, and each dependent quantizer in ``quantizers``
    (``fc.encode(quantizer=...)`` at the same λ) a point at *half* that step: its two
    interleaved quantizers have twice the step, so its error is near rounding's at the full
    step (NNCodec's DQ needs the same, reference notes §3). Every ``fc.encode`` chooses the
    orientation (``transpose="auto"``) as ``encode_levels`` does. Steps are powers of two times
    the set's step, so they stay on NNCodec's qp grid.

    Returns
    -------
    curves, nncodec_sets, nncodec_floats, signal
        Per set name its points; ``(name@j, levels, step)`` for NNCodec's URQ on the rounding
        levels; the float sets for NNCodec's DQ at half steps (``name@j:dq``, and
        ``name@j:dq_rd`` with ``lambda_scale`` 1); per set
        name the sum of squared values (the SNR's signal).
    """
    from fedcodec import codec as fc

    curves: dict[str, list[dict[str, Any]]] = {}
    nn_sets: list[tuple[str, list[I32Array], float]] = []
    nn_floats: list[NNCodecFloats] = []
    signal: dict[str, float] = {}

    def sq_err(ds: Dataset, recon: Sequence[F32Array] | None) -> float:
        return float(
            sum(
                float(np.square(t.astype(np.float64) - np.asarray(r, np.float64)).sum())
                for t, r in zip(ds.tensors, recon or [], strict=True)
            )
        )

    for ds in sets:
        t0 = time.perf_counter()
        sig_sq = float(sum(float(np.square(t, dtype=np.float64).sum()) for t in ds.tensors))
        signal[ds.name] = sig_sq
        points: list[dict[str, Any]] = []
        n = ds.numel
        for j in exponents:
            step = float(np.float32(ds.step * 2.0**j))
            half = float(np.float32(ds.step * 2.0 ** (j - 1)))
            levels = quantize(ds.tensors, step)
            s32 = np.float32(step)
            err = float(
                sum(
                    float(np.square(t.astype(np.float64) - lv.astype(np.float32) * s32).sum())
                    for t, lv in zip(ds.tensors, levels, strict=True)
                )
            )
            fed_bytes = len(fc.encode_levels(levels, step, threads=1).data)
            base = bl.measure_baselines(levels, with_zstd=with_zstd)
            rdq = fc.encode(
                ds.tensors,
                step=step,
                lam=rdoq_lambda,
                threads=1,
                return_recon=True,
                transpose="auto",
            )
            # the product's encode at lam 0: rounding's levels, ROWFINE values where they apply
            enc0 = fc.encode(
                ds.tensors, step=step, lam=0.0, threads=1, return_recon=True, transpose="auto"
            )
            point: dict[str, Any] = {
                "exponent": j,
                "step": step,
                "nonzeros": int(sum(np.count_nonzero(lv) for lv in levels)),
                "snr_db": _snr_db(sig_sq, err),
                "fedcodec_bytes": fed_bytes,
                "zstd19_bytes": base.zstd19_bytes,
                "lzma9_bytes": base.lzma9_bytes,
                "order0_bytes": base.order0_bytes,
                "fedcodec_bpw": 8.0 * fed_bytes / n,
                "zstd19_bpw": None if base.zstd19_bytes is None else 8.0 * base.zstd19_bytes / n,
                "lzma9_bpw": 8.0 * base.lzma9_bytes / n,
                "order0_bpw": 8.0 * base.order0_bytes / n,
                "rdoq_lambda": rdoq_lambda,
                "rdoq_bytes": len(rdq.data),
                "rdoq_bpw": 8.0 * len(rdq.data) / n,
                "rdoq_snr_db": _snr_db(sig_sq, sq_err(ds, rdq.recon)),
                "encode_bytes": len(enc0.data),
                "encode_bpw": 8.0 * len(enc0.data) / n,
                "encode_snr_db": _snr_db(sig_sq, sq_err(ds, enc0.recon)),
                "nncodec_bytes": None,
                "nncodec_bpw": None,
            }
            for c in NNCODEC_DQ_LAMBDAS:
                point[f"nncodec_{c}_step"] = half
                point[f"nncodec_{c}_bytes"] = None
                point[f"nncodec_{c}_bpw"] = None
                point[f"nncodec_{c}_snr_db"] = None
            for q in quantizers:
                # bytes do not depend on the thread count: use every core for the slow search
                tr = fc.encode(
                    ds.tensors,
                    step=half,
                    lam=rdoq_lambda,
                    threads=0,
                    return_recon=True,
                    quantizer=cast("Quantizer", q),
                    transpose="auto",
                )
                point[f"{q}_step"] = half
                point[f"{q}_bytes"] = len(tr.data)
                point[f"{q}_bpw"] = 8.0 * len(tr.data) / n
                point[f"{q}_snr_db"] = _snr_db(sig_sq, sq_err(ds, tr.recon))
            points.append(point)
            nn_sets.append((f"{ds.name}@{j}", levels, step))
            for c, lam_scale in NNCODEC_DQ_LAMBDAS.items():
                nn_floats.append(
                    NNCodecFloats(f"{ds.name}@{j}:{c}", ds.tensors, half, True, lam_scale)
                )
        curves[ds.name] = points
        log(f"    RD {ds.name}: {len(points)} steps, {time.perf_counter() - t0:.1f} s")
    return curves, nn_sets, nn_floats, signal


#: Targets on the real sets (issue #14): bytes vs NNCodec on every set and in geometric mean,
#: BD-rate vs NNCodec, dense decode speed vs NNCodec on one core (the dense MLP delta).
REAL_BYTES_VS_NNCODEC = 0.95
REAL_GEOMEAN_VS_NNCODEC = 0.85
REAL_BD_RATE = -0.10
DENSE_DECODE_VS_NNCODEC = 3.0
DENSE_SPEED_SET = "mnist-update-dense"


def _nncodec_speed_ratio(r: dict[str, Any], op: str, nn_key: str) -> float | None:
    """fedcodec's 1-thread speed of ``op`` over NNCodec's (same levels), or None.

    By the median CPU time of the calling thread on both sides when both were measured (a
    preempted run on the shared machine inflates wall-clock time, not CPU time), else by the
    wall-clock medians.
    """
    n = r.get("nncodec")
    if not n:
        return None
    fed = r["speed"].get(op + "_cpu", {}).get("median_mws")
    nn_runs = n.get(nn_key.replace("_s", "_cpu_s"))
    if fed is None or not nn_runs:
        fed = r["speed"].get(op, {}).get("median_mws")
        nn_runs = n.get(nn_key)
    if not nn_runs or fed is None:
        return None
    nn = _mws(r["numel"], statistics.median(nn_runs))
    return None if not nn else fed / nn


_NN_LABEL = {"urq": "NNCodec URQ", "dq": "NNCodec DQ", "dq_rd": "NNCodec DQ lambda_scale 1"}
_FED_LABEL = {
    "rounding": "rounding",
    "encode": "encode lam 0",
    "rdoq": "RDOQ",
    "trellis": "trellis",
    "trellis8": "trellis8",
}


def _real_targets(
    records: Sequence[dict[str, Any]], bd: dict[str, dict[str, Any]]
) -> list[TargetResult]:
    """Targets on the real-update sets (bytes, BD-rate and dense decode speed vs NNCodec)."""
    out: list[TargetResult] = []
    ratios: list[float] = []

    def status(v: float | None, ok: bool) -> str:
        return "n/a" if v is None else ("PASS" if ok else "MISS")

    for r in records:
        if not r.get("real"):
            continue
        n = r.get("nncodec")
        nb = None if n is None else n.get("nncodec_bytes")
        v = _rel(r["fedcodec"]["bytes"], nb)
        if v is not None:
            ratios.append(1.0 + v)
        out.append(
            TargetResult(
                "bytes vs NNCodec (same levels)",
                r["name"],
                None if v is None else 100.0 * v,
                f"<= {100 * (REAL_BYTES_VS_NNCODEC - 1):.0f} %",
                "%",
                status(v, v is not None and v <= REAL_BYTES_VS_NNCODEC - 1.0),
            )
        )
        v = r["relative"]["vs_lzma9"]
        out.append(
            TargetResult(
                "bytes vs lzma-9 (same levels)",
                r["name"],
                None if v is None else 100.0 * v,
                "< 0 %",
                "%",
                status(v, v is not None and v < 0.0),
            )
        )
        b = bd.get(r["name"]) or {}
        best = b.get("best")
        which = (
            f" ({_FED_LABEL[b['fedcodec_best']]} vs {_NN_LABEL[b['nncodec_best']]})"
            if b.get("fedcodec_best")
            else ""
        )
        out.append(
            TargetResult(
                "BD-rate, fedcodec's best quantizer vs NNCodec's best" + which,
                r["name"],
                None if best is None else 100.0 * best,
                f"<= {100 * REAL_BD_RATE:.0f} %",
                "%",
                status(best, best is not None and best <= REAL_BD_RATE),
            )
        )
        if r["name"] == DENSE_SPEED_SET:
            x = _nncodec_speed_ratio(r, "dec_levels_1t", "dec_s")
            out.append(
                TargetResult(
                    "dense decode speed vs NNCodec (1 core, CPU time)",
                    r["name"],
                    x,
                    f">= {DENSE_DECODE_VS_NNCODEC:g}x",
                    "x",
                    status(x, x is not None and x >= DENSE_DECODE_VS_NNCODEC),
                )
            )
    if ratios:
        g = math.exp(sum(math.log(x) for x in ratios) / len(ratios))
        out.append(
            TargetResult(
                "bytes vs NNCodec, geometric mean",
                f"{len(ratios)} real sets",
                100.0 * (g - 1.0),
                f"<= {100 * (REAL_GEOMEAN_VS_NNCODEC - 1):.0f} %",
                "%",
                "PASS" if g <= REAL_GEOMEAN_VS_NNCODEC else "MISS",
            )
        )
    return out


def temporal_targets(temporal: Sequence[dict[str, Any]], quick: bool) -> list[TargetResult]:
    """Issue #14: >= 10 % fewer bytes with the client's previous update as the reference (same
    levels), on each real consecutive-round set (not judged on the small ``quick`` one)."""
    out = []
    for t in temporal:
        v = t["gain"]["client_prev"]
        out.append(
            TargetResult(
                "temporal reference: client's previous update (same levels)",
                t["name"],
                None if v is None else 100.0 * v,
                "<= -10 %",
                "%",
                "n/a" if v is None or quick else ("PASS" if v <= -0.10 else "MISS"),
            )
        )
    return out


def _targets(records: Sequence[dict[str, Any]], cores: int) -> list[TargetResult]:
    """Build the targets table; ``cores`` is how many cores the "all cores" runs could use."""
    by_density: dict[float | None, dict[str, Any]] = {r["density"]: r for r in records}

    def find(d: float | None) -> dict[str, Any] | None:
        if d is None:
            return by_density.get(None)
        for k, r in by_density.items():
            if k is not None and math.isclose(k, d, rel_tol=1e-9):
                return r
        return None

    out: list[TargetResult] = []

    def size_target(d: float | None, label: str, key: str, limit: float, goal: str) -> None:
        r = find(d)
        if r is None:
            out.append(TargetResult(label, density_label(d), None, goal, "%", "n/a"))
            return
        v = r["relative"][key]
        ok = v is not None and v <= limit
        out.append(
            TargetResult(
                label,
                r["name"],
                None if v is None else 100.0 * v,
                goal,
                "%",
                "PASS" if ok else "MISS",
            )
        )

    size_target(0.01, "bytes vs order-0 entropy", "vs_order0", -0.15, "<= -15 %")
    size_target(0.001, "bytes vs iid ideal", "vs_iid", 0.10, "<= +10 %")
    size_target(0.0001, "bytes vs iid ideal", "vs_iid", 0.10, "<= +10 %")
    size_target(None, "bytes vs order-0 entropy", "vs_order0", 0.0, "<= 0 %")

    r1 = find(0.01)

    def mws(op: str) -> float | None:
        if r1 is None:
            return None
        v = r1["speed"].get(op, {}).get("median_mws")
        return None if v is None else float(v)

    name1 = r1["name"] if r1 else density_label(0.01)
    for op, label, lim in (
        ("enc_levels_1t", "encode_levels, 1 thread", 100.0),
        ("dec_levels_1t", "decode_levels, 1 thread", 200.0),
    ):
        v = mws(op)
        st = "n/a" if v is None else ("PASS" if v >= lim else "MISS")
        out.append(TargetResult(label, name1, v, f">= {lim:g} Mw/s", "Mw/s", st))
    for kind in ("enc", "dec"):
        one, allc = mws(f"{kind}_levels_1t"), mws(f"{kind}_levels_all")
        word = "encode_levels" if kind == "enc" else "decode_levels"
        label = f"{word}, all cores / 1 thread"
        if one is None or allc is None:
            out.append(TargetResult(label, name1, None, "> 1.00x", "x", "n/a"))
        elif cores < 2:
            out.append(
                TargetResult(label, name1, allc / one, "> 1.00x (needs 2+ cores)", "x", "n/a")
            )
        else:
            out.append(
                TargetResult(
                    label, name1, allc / one, "> 1.00x", "x", "PASS" if allc > one else "MISS"
                )
            )
    return out


def _fmt_measured(t: TargetResult) -> str:
    if t.measured is None:
        return "n/a"
    if t.unit == "%":
        return f"{t.measured:+.1f} %"
    if t.unit == "x":
        return f"{t.measured:.2f}x"
    return f"{fmt_rate(t.measured)} Mw/s"


def _print_published(recs: Sequence[dict[str, Any]], out: TextIO) -> None:
    out.write(
        "Published figures, NOT measured here (reference notes on NNCodec, section 4.1: NNCodec "
        f"2.1.3 URQ, one thread, 2-vCPU Xeon, {PUBLISHED_NUMEL:,} weights, same step). Their data "
        "were scaled to an overall std of 1e-3, about 0.55x the values of this benchmark's recipe "
        "(numpy Laplace scale 1e-3), so their bytes are not comparable with ours; compare the "
        "sizes relative to each data set's own order-0 entropy:\n\n"
    )
    rows = []
    for p in PUBLISHED:
        mine = next(
            (r for r in recs if r["density"] is not None and math.isclose(r["density"], p.density)),
            None,
        )
        rows.append(
            [
                f"sparse-{100 * p.density:g}% (published)",
                fmt_int(p.nncodec_bytes),
                f"{p.bits_per_weight:.3f}",
                f"{p.bits_per_nonzero:.2f}",
                fmt_int(p.order0_bytes),
                fmt_pct(_rel(p.nncodec_bytes, p.order0_bytes)),
                fmt_rate(p.enc_mws),
                fmt_rate(p.dec_mws),
                "n/a" if mine is None else fmt_pct(mine["relative"]["vs_order0"]),
            ]
        )
    out.write(
        table(
            [
                "data",
                "NNCodec B",
                "bits/w",
                "bits/nnz",
                "their order-0",
                "NNCodec vs order-0",
                "enc Mw/s",
                "dec Mw/s",
                "fedcodec vs order-0 (here)",
            ],
            rows,
        )
        + "\n\n"
    )


def _density_cell(r: dict[str, Any]) -> str:
    if r.get("real"):
        return f"{100.0 * r['level_nonzeros'] / r['numel']:.3g} % (real)"
    return "100 %" if r["density"] is None else f"{100 * r['density']:g} %"


def _fmt_bpw(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _print_rd(res: dict[str, Any], out: TextIO) -> None:
    curves: dict[str, list[dict[str, Any]]] = res.get("rd_curves") or {}
    if not curves:
        return
    w = out.write
    quants = [q for q in res["config"].get("rd_quantizers", []) if q in _FED_LABEL]
    lam = res["config"]["rdoq_lambda"]
    w("## Rate-distortion: bits per weight against SNR\n\n")
    w(
        "Steps are the set's step times 2^j. At each step the same plain-rounding levels are "
        "coded by fedcodec, zstd-19, lzma-9 and NNCodec URQ (so they share one SNR); "
        "'encode lam 0' is fc.encode at that step with lam=0 (rounding's levels; rows of one "
        "magnitude get their own value, ROWFINE); "
        f"'RDOQ' is fc.encode at that step with lam={lam:g} (its own levels and SNR); "
        + (
            f"{', '.join(quants)} (fedcodec's dependent quantizers, lam={lam:g}) and "
            if quants
            else ""
        )
        + "'NNCodec DQ' (its 8-state dependent quantization on the floats: lambda_scale 0, its "
        "default, and 1, rate-aware) run at half the step, where their error is near "
        "rounding's. bits/w counts zeros; "
        "'b @ dB' is bits/w at that SNR.\n\n"
    )
    bds: dict[str, dict[str, Any]] = res.get("bd_rates") or {}
    summary = []
    for name, points in curves.items():
        rows = []
        for p in points:

            def at(key: str, p: dict[str, Any] = p) -> str:
                if p.get(f"{key}_bpw") is None:
                    return "n/a"
                return f"{_fmt_bpw(p[f'{key}_bpw'])} @ {_fmt_db(p[f'{key}_snr_db'])}"

            rows.append(
                [
                    f"{p['exponent']:+d}",
                    f"{p['step']:.4g}",
                    _fmt_db(p["snr_db"]),
                    _fmt_bpw(p["fedcodec_bpw"]),
                    _fmt_bpw(p["zstd19_bpw"]),
                    _fmt_bpw(p["lzma9_bpw"]),
                    _fmt_bpw(p["order0_bpw"]),
                    _fmt_bpw(p["nncodec_bpw"]),
                    at("encode"),
                    at("rdoq"),
                    *[at(q) for q in quants],
                    at("nncodec_dq"),
                    at("nncodec_dq_rd"),
                ]
            )
        w(f"### {name}\n\n")
        bd = bds.get(name) or {}
        for c in NNCODEC_CURVES:
            row = bd.get(f"vs_nncodec_{c}") or {}
            if any(v is not None for v in row.values()):
                w(
                    f"BD-rate vs {_NN_LABEL[c]}: "
                    + ", ".join(f"{_FED_LABEL[q]} {fmt_pct(v)}" for q, v in row.items())
                    + "\n\n"
                )
        own = bd.get("vs_rounding") or {}
        if any(v is not None for v in own.values()):
            w(
                "BD-rate vs fedcodec rounding: "
                + ", ".join(f"{_FED_LABEL[q]} {fmt_pct(v)}" for q, v in own.items())
                + (
                    f"; NNCodec DQ vs NNCodec URQ: {fmt_pct(bd['nncodec_dq_vs_urq'])}, "
                    f"with lambda_scale 1: {fmt_pct(bd.get('nncodec_dq_rd_vs_urq'))}"
                    if bd.get("nncodec_dq_vs_urq") is not None
                    else ""
                )
                + "\n\n"
            )
        w(
            table(
                [
                    "j",
                    "step",
                    "SNR dB",
                    "fedcodec",
                    "zstd-19",
                    "lzma-9",
                    "order-0",
                    "NNCodec URQ",
                    "fedcodec encode lam 0",
                    "fedcodec RDOQ",
                    *[f"fedcodec {q} (step/2)" for q in quants],
                    "NNCodec DQ (step/2)",
                    "NNCodec DQ λ=1 (step/2)",
                ],
                rows,
            )
            + "\n\n"
        )

        def best_of(c: str, bd: dict[str, Any] = bd) -> str:
            got = [(v, q) for q, v in (bd.get(f"vs_nncodec_{c}") or {}).items() if v is not None]
            if not got:
                return "n/a"
            v, q = min(got)
            return f"{fmt_pct(v)} ({_FED_LABEL[q]})"

        summary.append(
            [
                name,
                best_of("urq"),
                best_of("dq"),
                best_of("dq_rd"),
                fmt_pct(bd.get("nncodec_dq_vs_urq")),
                fmt_pct(bd.get("nncodec_dq_rd_vs_urq")),
                "n/a"
                if bd.get("best") is None
                else f"{fmt_pct(bd['best'])} ({_FED_LABEL[bd['fedcodec_best']]} vs "
                f"{_NN_LABEL[bd['nncodec_best']]})",
            ]
        )
    w(
        "BD-rates per set: fedcodec's best curve against each NNCodec curve, and the target "
        "value (fedcodec's best against the NNCodec curve that is hardest to beat):\n\n"
    )
    w(
        table(
            [
                "set",
                "vs NNCodec URQ (best fedcodec)",
                "vs NNCodec DQ (best fedcodec)",
                "vs NNCodec DQ λ=1 (best fedcodec)",
                "NNCodec DQ vs URQ",
                "NNCodec DQ λ=1 vs URQ",
                "target value",
            ],
            summary,
        )
        + "\n\n"
    )


def _print_report(res: dict[str, Any], out: TextIO) -> None:
    recs: list[dict[str, Any]] = res["datasets"]
    cfg = res["config"]
    m = res["machine"]
    w = out.write
    shapes = ", ".join("x".join(str(d) for d in s) for s in cfg["shapes"])
    w(f"# fedcodec codec benchmark{' (--quick)' if cfg['quick'] else ''}\n\n")
    w(
        f"data: {cfg['numel']:,} weights in {len(cfg['shapes'])} tensors ({shapes}); Laplacian "
        f"(scale 1e-3) x log-normal row scales (sigma 0.5), global top-k; seed {cfg['seed']}\n"
    )
    if cfg.get("real"):
        w(
            "real updates: one non-IID client's update of the MNIST-5k MLP (784-128-10, "
            "101,770 weights) after local SGD, dense and global top-10 % / top-1 % "
            "(fedcodec_bench.realdata)\n"
        )
    if cfg.get("real_dir"):
        w(
            f"real updates from {cfg['real_dir']}: one set per .npz file (e.g. MiniLM fine-tuned "
            "with AdamW / SGD by scripts/transformer_updates.py), step = the power of two nearest "
            "a quarter of the RMS of the nonzero values\n"
        )
    w(
        f"steps: sparse {cfg['step']:.10g}, dense {cfg['dense_step']:.10g}; levels = "
        f"round-half-away(w / step)\n"
    )
    w(
        f"machine: {m['cpu_model']}; {m['usable_cores']} usable cores; Python {m['python']}, "
        f"numpy {m['numpy']}, fedcodec {m['fedcodec']} (C library "
        f"{m.get('fedcodec_library')}), zstandard {m['zstandard'] or 'missing'}\n"
    )
    w(
        f"timing: median of {cfg['repeats']} interleaved runs after a warm-up; 1t = threads=1, "
        f"all = threads={cfg['threads']} ({m['usable_cores']} cores); Mw/s = million weights "
        f"(zeros included) per second\n\n"
    )
    if not res["zstd_available"]:
        w(
            "note: zstd-19 not measured: the `zstandard` package is not installed "
            "(pip install 'fedcodec[bench]')\n\n"
        )

    w("## Sizes on the same integer levels (fedcodec = fc.encode_levels, lossless)\n\n")
    w("Relative sizes are fedcodec / baseline - 1 (negative = fedcodec smaller).\n\n")
    rows = []
    for r in recs:
        f = r["fedcodec"]
        rel = r["relative"]
        rows.append(
            [
                r["name"],
                _density_cell(r),
                fmt_int(r["level_nonzeros"]),
                fmt_int(f["bytes"]),
                f"{f['bits_per_weight']:.4f}",
                "n/a" if f["bits_per_nonzero"] is None else f"{f['bits_per_nonzero']:.2f}",
                fmt_pct(rel["vs_zstd19"]),
                fmt_pct(rel["vs_lzma9"]),
                fmt_pct(rel["vs_order0"]),
                fmt_pct(rel["vs_iid"]),
            ]
        )
    w(
        table(
            [
                "data",
                "density",
                "nonzeros",
                "fedcodec B",
                "bits/w",
                "bits/nnz",
                "vs zstd-19",
                "vs lzma-9",
                "vs order-0",
                "vs iid ideal",
            ],
            rows,
        )
        + "\n\n"
    )

    rows = []
    for r in recs:
        b = r["baselines"]
        modes = [t["modes"] for t in r["fedcodec"]["tensors"]]
        rows.append(
            [
                r["name"],
                b["int_dtype"],
                str(r["max_abs_level"]),
                fmt_int(b["zstd19_bytes"]),
                fmt_int(b["lzma9_bytes"]),
                fmt_int(b["order0_bytes"]),
                fmt_int(b["iid_bytes"]),
                fmt_int(r["fedcodec"]["all_zero_bytes"]),
                fmt_int(r["fedcodec"]["bytes"]),
                fmt_int(r["fedcodec"]["compact_bytes"]),
                " / ".join(modes),
            ]
        )
    w(
        "Baselines in bytes (zstd/lzma: all levels concatenated in the narrowest signed dtype; "
        "order-0: global N*H0/8; iid ideal: sum over tensors of numel*H0(tensor)/8); fedcodec's "
        "floor (the same shapes, all levels zero), its bytes as a self-describing and as a "
        "compact container (shapes known to the decoder, as the round engine sends them to "
        "peers that read it) and the slice modes it chose per tensor:\n\n"
    )
    w(
        table(
            [
                "data",
                "levels",
                "max|L|",
                "zstd-19",
                "lzma-9",
                "order-0",
                "iid ideal",
                "all-zero B",
                "fedcodec",
                "compact",
                "modes per tensor",
            ],
            rows,
            left=2,
        )
        + "\n\n"
    )

    w(f"## Speed (Mw/s, median of {cfg['repeats']})\n\n")
    w(
        "enc/dec = encode_levels/decode_levels; acc = decode_accumulate into float32; "
        "enc float = fc.encode(step, lam=0) from float32; dec float = fc.decode to float32.\n\n"
    )
    rows = []
    for r in recs:
        s = r["speed"]

        def g(op: str, s: dict[str, Any] = s) -> str:
            return fmt_rate(s.get(op, {}).get("median_mws"))

        rows.append(
            [
                r["name"],
                g("enc_levels_1t"),
                g("enc_levels_all"),
                g("dec_levels_1t"),
                g("dec_levels_all"),
                g("acc_1t"),
                g("acc_all"),
                g("enc_float_1t"),
                g("enc_float_all"),
                g("dec_float_all"),
            ]
        )
    w(
        table(
            [
                "data",
                "enc 1t",
                "enc all",
                "dec 1t",
                "dec all",
                "acc 1t",
                "acc all",
                "enc float 1t",
                "enc float all",
                "dec float all",
            ],
            rows,
        )
        + "\n\n"
    )

    spreads = sorted(
        (v["spread"], r["name"], op)
        for r in recs
        for op, v in r["speed"].items()
        if v.get("spread") is not None
    )
    if spreads:
        typical = statistics.median(x[0] for x in spreads)
        worst = spreads[-1]
        w(
            f"Timing spread (max - min) / median over the {cfg['repeats']} runs: typically "
            f"{100 * typical:.0f} %, worst {100 * worst[0]:.0f} % ({worst[2]}, {worst[1]}). "
            "Large spreads mean other work shared the machine: rerun with more --repeats.\n\n"
        )
    else:
        w("One timed run per measurement: speeds are indicative only.\n\n")

    w(f"## Quantizer: fc.encode at the same step, lam=0 vs RDOQ lam={cfg['rdoq_lambda']:g}\n\n")
    rows = []
    for r in recs:
        fe, rq, ck = r["float_encode"], r["rdoq"], r["checks"]
        same = (
            "yes"
            if ck["float_encode_equals_levels_bytes"]
            else "levels (ROWFINE)"
            if ck.get("float_encode_same_levels", False)
            else (f"NO ({ck['float_encode_level_mismatches']:,} levels differ)")
        )
        rows.append(
            [
                r["name"],
                fmt_int(fe["bytes"]),
                same,
                _fmt_db(fe["snr_db"]),
                fmt_int(rq["bytes"]),
                fmt_pct(rq["vs_plain"]),
                _fmt_db(rq["snr_db"]),
                fmt_int(rq["nonzeros"]),
                fmt_rate(r["speed"]["enc_rdoq_all"]["median_mws"]),
            ]
        )
    w(
        table(
            [
                "data",
                "lam=0 B",
                "= levels B",
                "SNR dB",
                "RDOQ B",
                "vs lam=0",
                "RDOQ SNR dB",
                "RDOQ nnz",
                "RDOQ enc all Mw/s",
            ],
            rows,
        )
        + "\n\n"
    )

    w("## NNCodec\n\n")
    nn = res["nncodec"]
    if nn["status"] == "measured":
        w(
            f"measured here on the same levels: NNCodec {nn['meta'].get('nncodec_version')} "
            f"(URQ, lam=0, row_skipping, param_opt; one thread, it has no threading), "
            f"median of {cfg['repeats']}; Mw/s columns by wall clock, the speed ratios "
            f"(x NNCodec) by the CPU time of the coding thread on both sides (on a shared "
            f"machine a preempted run inflates wall-clock time, not CPU time)\n\n"
        )
        rows = []
        for r in recs:
            n = r.get("nncodec")
            if n is None:
                continue
            if n["nncodec_bytes"] is None:
                rows.append([r["name"], "n/a", *[""] * 8, n.get("error") or ""])
                continue
            nb = n["nncodec_bytes"]
            enc = _mws(r["numel"], statistics.median(n["enc_s"]) if n["enc_s"] else None)
            dec = _mws(r["numel"], statistics.median(n["dec_s"]) if n["dec_s"] else None)
            xe = _nncodec_speed_ratio(r, "enc_levels_1t", "enc_s")
            xd = _nncodec_speed_ratio(r, "dec_levels_1t", "dec_s")
            rows.append(
                [
                    r["name"],
                    fmt_int(nb),
                    f"{8.0 * nb / r['numel']:.4f}",
                    fmt_pct(_rel(nb, r["baselines"]["order0_bytes"])),
                    fmt_pct(_rel(r["fedcodec"]["bytes"], nb)),
                    f"{r['fedcodec']['bytes'] / nb:.3f}x",
                    fmt_rate(enc),
                    fmt_rate(dec),
                    "n/a" if xe is None else f"{xe:.2f}x",
                    "n/a" if xd is None else f"{xd:.2f}x",
                    "ok" if n["decoded_equal"] and n["deterministic"] else "MISMATCH",
                ]
            )
        w(
            table(
                [
                    "data",
                    "NNCodec B",
                    "bits/w",
                    "NNCodec vs order-0",
                    "fedcodec vs NNCodec",
                    "fedcodec / NNCodec B",
                    "enc Mw/s",
                    "dec Mw/s",
                    "fedcodec enc speed / NNCodec (1t)",
                    "fedcodec dec speed / NNCodec (1t)",
                    "decode check",
                ],
                rows,
            )
            + "\n\n"
        )
    else:
        if nn["status"] == "not installed":
            w(
                "NNCodec: not installed (see docs). Measure it on the same levels with "
                "--nncodec-python PATH, the python of a separate venv that has NNCodec.\n\n"
            )
        else:
            w(f"NNCodec: {nn['status']}: {nn.get('error')}\n\n")
        _print_published(recs, out)
    _print_rd(res, out)
    w(temporal_lines(res.get("temporal", [])))
    w("## Targets\n\n")
    rows = [[t.name, t.dataset, _fmt_measured(t), t.goal, t.status] for t in res["targets"]]
    w(table(["target", "data", "measured", "goal", "result"], rows, left=2) + "\n\n")

    w("## Checks\n\n")
    for line in res["check_lines"]:
        w(f"- {line}\n")
    w(f"\n{res['summary']}\n")


def run_codec_bench(
    cfg: CodecBenchConfig, out: TextIO | None = None, log: TextIO | None = None
) -> tuple[dict[str, Any], bool]:
    """Run the codec benchmark, print its report, and optionally write the JSON.

    Parameters
    ----------
    cfg : CodecBenchConfig
        Settings.
    out : file-like, optional
        Where the report goes (default ``sys.stdout``).
    log : file-like, optional
        Where progress lines go (default ``sys.stderr``).

    Returns
    -------
    tuple of (dict, bool)
        The full result (what ``--json`` writes) and whether every target that was measured
        passed and every check held.

    Raises
    ------
    BenchError
        If a decode differs from its input, or another correctness failure is found.
    """
    out = sys.stdout if out is None else out
    logf = sys.stderr if log is None else log

    def say(msg: str) -> None:
        logf.write(msg + "\n")
        logf.flush()

    t_start = time.perf_counter()
    repeats = cfg.resolved_repeats()
    densities = cfg.resolved_densities()
    step = float(np.float32(cfg.step))
    dense_step = float(np.float32(cfg.dense_step))
    shapes = QUICK_SHAPES if cfg.quick else FULL_SHAPES
    with_zstd = bl.zstd_available()
    cores = usable_cores()

    say(f"fedcodec bench codec: generating data (seed {cfg.seed})")
    sets = make_datasets(
        densities,
        shapes=shapes,
        sparse_step=step,
        dense_step=dense_step,
        include_dense=cfg.dense,
        seed=cfg.seed,
    )
    real_names: set[str] = set()
    if cfg.resolved_real():
        from fedcodec_bench.realdata import real_update_datasets

        say("real updates: training the MNIST-5k MLP client update")
        real_sets = real_update_datasets(cfg.seed)
        real_names = {ds.name for ds in real_sets}
        sets = [*sets, *real_sets]
    real_dir = cfg.resolved_real_dir()
    if real_dir:
        from fedcodec_bench.realdata import npz_update_datasets

        npz_sets = npz_update_datasets(real_dir)
        say(f"real updates from {real_dir}: {', '.join(ds.name for ds in npz_sets)}")
        real_names |= {ds.name for ds in npz_sets}
        sets = [*sets, *npz_sets]
    records: list[dict[str, Any]] = []
    all_levels: list[tuple[str, list[I32Array], float]] = []
    for i, ds in enumerate(sets, 1):
        t0 = time.perf_counter()
        say(f"[{i}/{len(sets)}] {ds.name}: {ds.nonzeros:,} nonzeros of {ds.numel:,}")
        rec, levels = _bench_dataset(ds, cfg, repeats, with_zstd, say)
        rec["real"] = ds.name in real_names
        records.append(rec)
        all_levels.append((ds.name, levels, ds.step))
        say(f"    {rec['fedcodec']['bytes']:,} B, {time.perf_counter() - t0:.1f} s")

    nn: dict[str, Any] = {"status": "not installed"}
    if cfg.nncodec_python:
        say(f"NNCodec: coding the same levels with {cfg.nncodec_python}")
        try:
            runs, meta = run_nncodec(cfg.nncodec_python, all_levels, repeats=repeats)
        except (RuntimeError, OSError, ValueError) as e:
            lines = str(e).strip().splitlines() or [repr(e)]
            nn = {"status": "failed", "error": lines[-1], "detail": str(e)}
            say(f"NNCodec failed: {e}")
        else:
            nn = {"status": "measured", "meta": meta}
            for rec in records:
                run: NNCodecRun | None = runs.get(rec["name"])
                if run is not None:
                    rec["nncodec"] = asdict(run)
    else:
        nn["error"] = None

    rd_curves: dict[str, list[dict[str, Any]]] = {}
    if cfg.resolved_rd():
        say("rate-distortion curves")
        # --quick keeps the smoke run short: curves of the (small) real-update sets only.
        curve_sets = [ds for ds in sets if ds.name in real_names] if cfg.quick else sets
        rd_curves, rd_sets, rd_floats, rd_signal = _rd_curves(
            curve_sets or sets,
            cfg.resolved_rd_exponents(),
            cfg.rdoq_lambda,
            with_zstd,
            say,
            cfg.rd_quantizers,
        )
        if nn["status"] == "measured" and cfg.nncodec_python:
            say("NNCodec: rate-distortion points (URQ on the rounding levels, DQ on the floats)")
            try:
                rd_runs, _ = run_nncodec(cfg.nncodec_python, rd_sets, repeats=1, floats=rd_floats)
            except (RuntimeError, OSError, ValueError) as e:
                say(f"NNCodec failed on the RD points: {e}")
            else:
                for name, points in rd_curves.items():
                    n = next(r["numel"] for r in records if r["name"] == name)
                    for pt in points:
                        got = rd_runs.get(f"{name}@{pt['exponent']}")
                        if got is not None and got.nncodec_bytes is not None:
                            pt["nncodec_bytes"] = got.nncodec_bytes
                            pt["nncodec_bpw"] = 8.0 * got.nncodec_bytes / n
                        for c in NNCODEC_DQ_LAMBDAS:
                            dq = rd_runs.get(f"{name}@{pt['exponent']}:{c}")
                            if dq is not None and dq.nncodec_bytes is not None:
                                pt[f"nncodec_{c}_bytes"] = dq.nncodec_bytes
                                pt[f"nncodec_{c}_bpw"] = 8.0 * dq.nncodec_bytes / n
                                pt[f"nncodec_{c}_snr_db"] = (
                                    None
                                    if dq.err_sq is None
                                    else _snr_db(rd_signal[name], dq.err_sq)
                                )

    temporal: list[dict[str, Any]] = []
    if cfg.resolved_temporal():
        say("temporal side information: consecutive-round updates with and without a reference")
        temporal = run_temporal(cfg.quick, cfg.seed)

    # "All cores" can only beat one thread with 2+ usable cores and more than one thread asked.
    parallel_cores = (
        1 if cfg.threads == 1 else (cores if cfg.threads == 0 else min(cores, cfg.threads))
    )
    bd_rates = {name: _bd_rates(points) for name, points in rd_curves.items()}
    targets = _targets([r for r in records if not r.get("real")], parallel_cores)
    targets += _real_targets(records, bd_rates)
    targets += temporal_targets(temporal, cfg.quick)
    check_lines: list[str] = []
    ok_checks = True
    n_dec = sum(r["checks"]["decodes_verified"] for r in records)
    n_dec += sum(t["decodes_verified"] for t in temporal)
    check_lines.append(
        f"every decode equals its input: yes ({n_dec} decodes of levels, floats "
        f"and accumulators checked element by element)"
    )
    for key, text in (
        ("deterministic_bytes", "identical bytes in every run and thread count"),
        (
            "float_encode_same_levels",
            "fc.encode(step, lam=0) codes the levels fc.encode_levels codes (the same bytes but "
            "for ROWFINE rows)",
        ),
        ("rdoq_recon_equals_decode", "RDOQ encoder reconstruction equals the decoder's output"),
    ):
        bad = [r["name"] for r in records if not r["checks"][key]]
        ok_checks &= not bad
        check_lines.append(f"{text}: " + ("yes" if not bad else "NO for " + ", ".join(bad)))
    if nn["status"] == "measured":
        bad = [
            r["name"]
            for r in records
            if "nncodec" in r
            and r["nncodec"]["nncodec_bytes"] is not None
            and not (r["nncodec"]["decoded_equal"] and r["nncodec"]["deterministic"])
        ]
        ok_checks &= not bad
        check_lines.append(
            "NNCodec decoded exactly level * step, same size every run: "
            + ("yes" if not bad else "NO for " + ", ".join(bad))
        )
    misses = [t for t in targets if t.status == "MISS"]
    elapsed = time.perf_counter() - t_start
    passed = sum(t.status == "PASS" for t in targets)
    summary = (
        f"{passed} PASS, {len(misses)} MISS, {sum(t.status == 'n/a' for t in targets)} n/a; "
        f"checks {'ok' if ok_checks else 'FAILED'}; {elapsed:.1f} s"
    )

    from fedcodec import codec as fc

    machine = machine_info()
    machine["fedcodec_library"] = fc.library_version()
    result: dict[str, Any] = {
        "schema": "fedcodec-bench-codec/1",
        "machine": machine,
        "config": {
            "quick": cfg.quick,
            "repeats": repeats,
            "step": step,
            "dense_step": dense_step,
            "densities": list(densities),
            "dense": cfg.dense,
            "rdoq_lambda": cfg.rdoq_lambda,
            "threads": cfg.threads,
            "seed": cfg.seed,
            "shapes": [list(s) for s in shapes],
            "numel": int(sum(r * c for r, c in shapes)),
            "real": cfg.resolved_real(),
            "real_dir": real_dir,
            "rd_exponents": list(cfg.resolved_rd_exponents()) if cfg.resolved_rd() else [],
            "rd_quantizers": list(cfg.rd_quantizers),
        },
        "zstd_available": with_zstd,
        "datasets": records,
        "nncodec": nn,
        "rd_curves": rd_curves,
        "temporal": temporal,
        "bd_rates": bd_rates,
        "nncodec_published": [asdict(p) for p in PUBLISHED],
        "targets": [asdict(t) for t in targets],
        "check_lines": check_lines,
        "checks_ok": ok_checks,
        "all_targets_pass": not misses,
        "summary": summary,
        "elapsed_s": elapsed,
    }
    result["targets"] = [asdict(t) for t in targets]
    _print_report({**result, "targets": targets}, out)
    out.flush()
    if cfg.json_path:
        Path(cfg.json_path).write_text(
            json.dumps(result, indent=1, default=_json_default) + "\n", encoding="utf-8"
        )
        say(f"wrote {cfg.json_path}")
    return result, ok_checks and not misses


def _json_default(o: object) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")
