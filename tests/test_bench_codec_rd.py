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
            assert p["nncodec_bytes"] is None
        base = next(d for d in saved["datasets"] if d["name"] == name)
        assert pts[1]["fedcodec_bytes"] == base["fedcodec"]["bytes"]  # j = 0 is the set's step
    text = out.getvalue()
    assert "## Rate-distortion" in text
    assert "real updates:" in text
    real_targets = [t for t in res["targets"] if t["dataset"].startswith("mnist-update")]
    assert len(real_targets) == 6
    assert {t["status"] for t in real_targets if "NNCodec" in t["name"]} == {"n/a"}
