"""``fedcodec bench report`` machinery: FL summaries, the quick suite, Markdown and plots."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedcodec_bench import fl, suite
from fedcodec_bench.fl import MethodResult


def _run(name: str, kind: str, seed: int, acc: list[float], up: list[int]) -> MethodResult:
    return MethodResult(
        name=name,
        accuracy=acc[-1],
        bytes_up=sum(up),
        bytes_down=sum(up),
        keyframes=0,
        seconds=1.0,
        encode_seconds=0.1,
        mean_passes=1.0,
        budget_hits=None,
        updates=len(up),
        accuracy_curve=acc,
        kind=kind,
        final_accuracy=sum(acc[-5:]) / len(acc[-5:]),
        up_curve=up,
        down_curve=up,
        encode_curve=[0.0] * len(up),
        decode_curve=[0.0] * len(up),
        seed=seed,
    )


def test_summary_ratios_targets_and_dominance() -> None:
    acc = [50.0, 80.0, 90.0, 90.0, 90.0, 90.0, 90.0]
    runs = []
    for seed in (0, 1):
        runs.append(_run("fp32", "fp32", seed, acc, [1000] * 7))
        runs.append(_run("base", "baseline", seed, [a - 0.5 for a in acc], [100] * 7))
        runs.append(_run("fc", "fedcodec", seed, [a - 0.2 for a in acc], [10] * 7))
    s = fl.summarize(runs)
    by = {m["name"]: m for m in s["methods"]}
    assert by["fp32"]["ratio"] == 1.0
    assert by["base"]["ratio"] == pytest.approx(10.0)
    assert by["fc"]["ratio"] == pytest.approx(100.0)
    assert by["fc"]["delta_accuracy"] == pytest.approx(-0.2)
    # 95 % of 90 = 85.5: the trailing 5-round mean first reaches it at round 6 (index 5)
    assert by["fp32"]["bytes_to_target"] == 2 * 1000 * 6
    assert s["best_fedcodec"]["name"] == "fc"
    (dom,) = s["dominance"]
    assert dom["baseline"] == "base"
    assert dom["seeds_fedcodec_smaller"] == 2
    assert dom["ratio"] > 1
    text = fl.summary_tables(s, 2)
    assert "| fc " in text
    assert "baseline / fedcodec" in text


def test_bytes_to_reach_is_none_when_never_reached() -> None:
    r = _run("x", "baseline", 0, [10.0, 20.0], [5, 5])
    assert fl.bytes_to_reach(r, 50.0) is None
    assert fl.bytes_to_reach(r, 15.0) == 20


def test_quick_suite_writes_markdown_json_and_plots(tmp_path: Path) -> None:
    pytest.importorskip("mlxtend")
    pytest.importorskip("matplotlib")
    cfg = suite.SuiteConfig(out=str(tmp_path), quick=True, jobs=1)
    fl_res = suite.run_fl_suite(cfg)
    assert len(fl_res["scenarios"]) == len(suite.QUICK_SCENARIOS)
    for rep in fl_res["scenarios"]:
        kinds = {r["kind"] for r in rep["runs"]}
        assert kinds == {"fp32", "baseline", "fedcodec"}
        for r in rep["runs"]:
            assert len(r["up_curve"]) == rep["scenario"]["rounds"]
            assert r["total_bytes"] == sum(r["up_curve"]) + sum(r["down_curve"])
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "fl.json").write_text(json.dumps(fl_res))
    codec = {
        "config": {"quick": True, "rdoq_lambda": 0.1155},
        "datasets": [],
        "nncodec": {"status": "not installed"},
        "rd_curves": {},
        "text_report": "# fedcodec codec benchmark\n\n## Sizes\n",
    }
    (tmp_path / "bench" / "codec.json").write_text(json.dumps(codec))
    suite.run_suite(suite.SuiteConfig(out=str(tmp_path), quick=True, skip_fl=True, skip_codec=True))
    md = (tmp_path / "benchmarks.md").read_text(encoding="utf-8")
    assert "## Targets" in md
    assert "STC 1%" in md
    assert "--quick smoke run" in md
    assert "\n## Sizes" not in md  # the codec report's headings are nested
    pngs = sorted(p.name for p in (tmp_path / "bench").glob("*.png"))
    assert len(pngs) == len(suite.QUICK_SCENARIOS)
