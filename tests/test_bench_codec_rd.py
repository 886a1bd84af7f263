"""``fedcodec bench codec --real --rd``: real-update sets and rate-distortion curves."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from fedcodec_bench.codec import CodecBenchConfig, run_codec_bench


def test_real_sets_and_rd_curves(tmp_path: Path) -> None:
    pytest.importorskip("mlxtend")
    path = tmp_path / "c.json"
    cfg = CodecBenchConfig(
        quick=True,
        densities=(0.01,),
        dense=False,
        real=True,
        rd=True,
        rd_points=3,
        json_path=str(path),
    )
    out = io.StringIO()
    res, _ = run_codec_bench(cfg, out=out, log=io.StringIO())
    saved = json.loads(path.read_text(encoding="utf-8"))
    names = [d["name"] for d in saved["datasets"]]
    assert names == ["sparse-1%", "mnist-update-dense", "mnist-update-10%", "mnist-update-1%"]
    assert [d["real"] for d in saved["datasets"]] == [False, True, True, True]
    # --quick draws curves of the real-update sets only, 3 steps each, powers of two apart
    assert list(res["rd_curves"]) == names[1:]
    for name, pts in res["rd_curves"].items():
        assert [p["exponent"] for p in pts] == [-1, 0, 1]
        steps = [p["step"] for p in pts]
        assert steps[1] == 2 * steps[0]
        assert steps[2] == 2 * steps[1]
        snr = [p["snr_db"] for p in pts]
        assert snr[0] > snr[1] > snr[2]  # coarser steps, more distortion
        fed = [p["fedcodec_bytes"] for p in pts]
        assert fed[0] > fed[1] > fed[2]
        for p in pts:
            assert p["lzma9_bytes"] > 0
            assert p["rdoq_bytes"] > 0
            # fc.encode at lam 0 codes rounding's levels: its error is at most rounding's
            assert p["encode_bytes"] > 0
            assert p["encode_snr_db"] >= p["snr_db"] - 1e-9
            assert p["nncodec_bytes"] is None
            assert p["nncodec_dq_bytes"] is None
            assert p["nncodec_dq_rd_bytes"] is None
            # the dependent quantizers run at half the step, with their own levels and SNR
            for q in ("trellis", "trellis8"):
                assert p[f"{q}_step"] == p["step"] / 2
                assert p[f"{q}_bytes"] > 0
                assert p[f"{q}_snr_db"] > p["snr_db"] - 3.0
        bd = res["bd_rates"][name]
        # without NNCodec only fedcodec's own comparisons exist (vs its rounding)
        assert bd["best"] is None
        assert bd["nncodec_best"] is None
        assert all(v is None for v in bd["vs_nncodec_urq"].values())
        assert set(bd["vs_rounding"]) == {"encode", "rdoq", "trellis", "trellis8"}
        assert all(isinstance(v, float) for v in bd["vs_rounding"].values())
        base = next(d for d in saved["datasets"] if d["name"] == name)
        assert pts[1]["fedcodec_bytes"] == base["fedcodec"]["bytes"]  # j = 0 is the set's step
    text = out.getvalue()
    assert "## Rate-distortion" in text
    assert "real updates:" in text
    real_targets = [t for t in res["targets"] if t["dataset"].startswith("mnist-update")]
    # per set: bytes vs NNCodec, vs lzma-9, BD-rate; plus the dense decode speed
    assert len(real_targets) == 10
    assert {t["status"] for t in real_targets if "NNCodec" in t["name"]} == {"n/a"}


def test_bd_rates_pick_the_best_fedcodec_curve_against_the_hardest_nncodec_curve() -> None:
    from fedcodec_bench.codec import _bd_rates

    snr = (20.0, 26.0, 32.0)
    urq = (1000.0, 2000.0, 4000.0)

    def pt(j: int) -> dict[str, float]:
        r = urq[j]
        return {
            "exponent": j - 1,
            "snr_db": snr[j],
            "fedcodec_bytes": 0.95 * r,
            "nncodec_bytes": r,
            "rdoq_bytes": 0.96 * r,
            "rdoq_snr_db": snr[j],
            "encode_bytes": 0.95 * r,
            "encode_snr_db": snr[j],
            "trellis_bytes": 0.93 * r,
            "trellis_snr_db": snr[j],
            "trellis8_bytes": 0.92 * r,
            "trellis8_snr_db": snr[j],
            "nncodec_dq_bytes": 0.97 * r,
            "nncodec_dq_snr_db": snr[j],
            "nncodec_dq_rd_bytes": 0.96 * r,
            "nncodec_dq_rd_snr_db": snr[j],
        }

    bd = _bd_rates([pt(0), pt(1), pt(2)])
    assert bd["vs_nncodec_urq"]["trellis8"] == pytest.approx(-0.08)
    assert bd["vs_nncodec_dq"]["rounding"] == pytest.approx(0.95 / 0.97 - 1)
    assert bd["nncodec_dq_vs_urq"] == pytest.approx(-0.03)
    assert bd["nncodec_dq_rd_vs_urq"] == pytest.approx(-0.04)
    assert bd["vs_rounding"]["trellis8"] == pytest.approx(0.92 / 0.95 - 1)
    # NNCodec's rate-aware DQ is its best here: the target is trellis8 against it
    assert (bd["fedcodec_best"], bd["nncodec_best"]) == ("trellis8", "dq_rd")
    assert bd["best"] == pytest.approx(0.92 / 0.96 - 1)


def test_bd_rate_is_the_mean_rate_ratio_at_equal_quality() -> None:
    from fedcodec_bench.codec import bd_rate

    ref = [(1000.0, 10.0), (2000.0, 16.0), (4000.0, 22.0), (8000.0, 28.0)]
    assert bd_rate([(0.9 * r, d) for r, d in ref], ref) == pytest.approx(-0.1, abs=1e-9)
    # the same rates at 3 dB more SNR: fewer bytes at equal quality
    better = bd_rate([(r, d + 3.0) for r, d in ref], ref)
    assert better is not None
    assert -0.35 < better < -0.25
    assert bd_rate([(1.0, 1.0), (2.0, 2.0)], [(1.0, 5.0), (2.0, 6.0)]) is None  # no overlap
    assert bd_rate([(1.0, 1.0)], ref) is None


def test_real_dir_npz_sets_are_measured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np

    rng = np.random.default_rng(3)
    emb = np.zeros((300, 32), np.float32)
    emb[rng.random(300) < 0.1] = rng.standard_normal((1, 32)).astype(np.float32)
    layer = rng.laplace(0.0, 1e-3, (48, 64)).astype(np.float32)
    folder = tmp_path / "real"
    folder.mkdir()
    np.savez(folder / "toy-embed.npz", emb=emb)
    np.savez(folder / "toy-layers.npz", w=layer, b=layer[0].copy())
    monkeypatch.setenv("FEDCODEC_REAL_DIR", str(folder))
    cfg = CodecBenchConfig(quick=True, densities=(0.01,), dense=False, real=False, rd=True)
    out = io.StringIO()
    res, _ = run_codec_bench(cfg, out=out, log=io.StringIO())
    names = [d["name"] for d in res["datasets"]]
    assert names == ["sparse-1%", "toy-embed", "toy-layers"]
    assert [d["real"] for d in res["datasets"]] == [False, True, True]
    assert res["config"]["real_dir"] == str(folder)
    assert set(res["rd_curves"]) == {"toy-embed", "toy-layers"}
    # without NNCodec the BD-rates vs NNCodec and the NNCodec targets are n/a, not invented
    for b in res["bd_rates"].values():
        assert b["best"] is None
        assert b["nncodec_dq_vs_urq"] is None
        assert all(v is None for c in ("urq", "dq", "dq_rd") for v in b[f"vs_nncodec_{c}"].values())
    nn_targets = [t for t in res["targets"] if "NNCodec" in t["name"]]
    assert nn_targets
    assert all(t["status"] == "n/a" for t in nn_targets)
    assert "toy-embed" in out.getvalue()
    # the step: a power of two near a quarter of the RMS of the nonzero values
    step = next(d["step"] for d in res["datasets"] if d["name"] == "toy-layers")
    assert np.log2(step) == round(np.log2(step))
