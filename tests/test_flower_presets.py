"""``CompressionStrategy(inner, preset=NAME)``: the measured codings by name, in the plugin.

Real ``Message``/``Context`` objects and the real strategy/mod pair, in process
(:class:`~fedcodec.flower.local.LocalGrid`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip(
    "flwr", reason="the Flower plugin tests need flwr (pip install 'fedcodec[flower]')"
)

from flower_helpers import (  # noqa: F401  (task_identity: autouse fixture)
    initial_arrays,
    noisy_client_app,
    task_identity,
)
from flwr.app import Array, ArrayRecord, ConfigRecord
from flwr.clientapp import ClientApp
from flwr.serverapp.strategy import FedAvg

from fedcodec.flower import CompressionStrategy, make_fedcodec_mod
from fedcodec.flower.local import LocalGrid
from fedcodec.pipeline import PRESET_NAMES, RobustPolicy, RoundParams, as_schedule, get_preset

#: A small CNN-like model: conv and linear weights, a bias, BatchNorm's scale and statistics.
SHAPES = {
    "conv.weight": (8, 1, 3, 3),
    "conv.bias": (8,),
    "bn.weight": (8,),
    "bn.running_mean": (8,),
    "bn.running_var": (8,),
    "fc.weight": (10, 392),
    "fc.bias": (10,),
}
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "flower-app"


def _client_app() -> ClientApp:
    return noisy_client_app(make_fedcodec_mod(initial_model=initial_arrays(SHAPES)))


def _coded_bytes(strategy: CompressionStrategy, rounds: int = 4) -> tuple[int, ArrayRecord]:
    """Run ``rounds`` rounds of 4 nodes; the bytes Flower sent both ways and the model."""
    grid = LocalGrid(_client_app(), range(1, 5))
    arrays = ArrayRecord({k: Array(v) for k, v in initial_arrays(SHAPES).items()})
    for server_round in range(1, rounds + 1):
        messages = list(strategy.configure_train(server_round, arrays, ConfigRecord(), grid))
        out, _ = strategy.aggregate_train(server_round, grid.send_and_receive(messages))
        assert out is not None
        arrays = out
    totals = strategy.totals
    assert totals.rejected == 0
    return totals.bytes_up + totals.bytes_down, arrays


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_a_preset_sets_both_schedules_and_the_step_snapping(name: str) -> None:
    preset = get_preset(name)
    strategy = CompressionStrategy(FedAvg(), preset=name)
    assert strategy.preset == preset
    assert strategy.step_snap == preset.step_snap
    for r in range(8):
        assert strategy.schedule(r, None) == as_schedule(preset.uplink)(r, None)
        assert strategy.downlink_schedule(r, None) == as_schedule(preset.downlink)(r, None)
    # a Preset object works as well as its name
    assert CompressionStrategy(FedAvg(), preset=preset).preset == preset


def test_without_a_preset_the_defaults_are_unchanged() -> None:
    strategy = CompressionStrategy(FedAvg())
    assert strategy.preset is None
    assert strategy.schedule(0, None) == RoundParams()
    assert strategy.downlink_schedule(0, None) == RoundParams()
    assert strategy.step_snap == "auto"


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"schedule": RoundParams()}, "schedule="),
        ({"downlink": RoundParams(S=8)}, "downlink="),
        ({"step_snap": "grid"}, "step_snap="),
        ({"schedule": RoundParams(), "step_snap": "pow2"}, "schedule=, step_snap="),
    ],
)
def test_a_preset_with_explicit_coding_is_refused(extra: dict[str, object], named: str) -> None:
    with pytest.raises(ValueError, match="preset") as info:
        CompressionStrategy(FedAvg(), preset="balanced", **extra)  # type: ignore[arg-type]
    assert named in str(info.value)


def test_an_unknown_preset_is_refused_with_the_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown preset 'fastest'") as info:
        CompressionStrategy(FedAvg(), preset="fastest")
    assert all(name in str(info.value) for name in PRESET_NAMES)


def test_a_preset_codes_smaller_than_the_default_through_flower() -> None:
    """Four rounds of 4 nodes: every preset sends fewer bytes than ``RoundParams()``, and the
    sparse ones far fewer (what a Flower user gets by adding one argument)."""
    default, default_model = _coded_bytes(CompressionStrategy(FedAvg(fraction_evaluate=0.0)))
    sizes = {}
    for name in PRESET_NAMES:
        sizes[name], model = _coded_bytes(
            CompressionStrategy(FedAvg(fraction_evaluate=0.0), preset=name)
        )
        assert list(model.keys()) == list(default_model.keys())
        assert all(np.isfinite(model[k].numpy()).all() for k in model)
    assert all(size < default for size in sizes.values()), (default, sizes)
    assert sizes["balanced"] < sizes["near-lossless"] / 2, sizes
    assert sizes["lean-full"] < sizes["balanced"], sizes


def test_the_example_apps_run_config_takes_a_preset(monkeypatch: pytest.MonkeyPatch) -> None:
    """examples/flower-app: ``preset`` chooses the coding; empty keeps lambda/S/budget."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.delitem(sys.modules, "fedcodec_app.server_app", raising=False)
    from fedcodec_app.server_app import coding

    cfg: dict[str, object] = {"preset": "", "lambda": 0.5, "S": 0, "budget-bytes": 0}
    assert coding(cfg) == {"schedule": RoundParams(lam=0.5, S=0)}
    assert coding({**cfg, "budget-bytes": 900}) == {
        "schedule": RoundParams(lam=0.5, S=0, budget_bytes=900)
    }
    assert coding({**cfg, "preset": "lean-partial"}) == {"preset": "lean-partial"}
    strategy = CompressionStrategy(FedAvg(), **coding({**cfg, "preset": "balanced"}))
    assert strategy.preset == get_preset("balanced")
    # the example's shipped run config keeps the default coding
    text = (EXAMPLE / "pyproject.toml").read_text()
    assert '\npreset = ""\n' in text


def test_the_mods_statistics_hook_sets_what_the_server_averages() -> None:
    """make_fedcodec_mod(statistics=fn): fn gets the coded model and the node's Context; the
    statistics it returns, not the app's, are what FedAvg averages into the global model."""
    from flwr.app import Context

    calls: list[tuple[int, set[str]]] = []

    def measure(arrays: object, context: Context) -> dict[str, np.ndarray]:
        assert isinstance(arrays, dict)
        calls.append((int(context.node_id), set(arrays)))
        return {"bn.running_mean": np.full(8, float(context.node_id), dtype=np.float32)}

    mod = make_fedcodec_mod(initial_model=initial_arrays(SHAPES), statistics=measure)
    grid = LocalGrid(noisy_client_app(mod), range(1, 5))
    strategy = CompressionStrategy(FedAvg(), preset="robust", robust=RobustPolicy.fedavg())
    arrays = ArrayRecord({k: Array(v) for k, v in initial_arrays(SHAPES).items()})
    for server_round in (1, 2):
        messages = list(strategy.configure_train(server_round, arrays, ConfigRecord(), grid))
        out, _ = strategy.aggregate_train(server_round, grid.send_and_receive(messages))
        assert out is not None
        arrays = out
        # FedAvg weights node i by 10·i examples: (1·1 + 2·2 + 3·3 + 4·4) / 10 = 3, within
        # half the statistics' step (2**-6 of their RMS in the base model, at most 3.0)
        np.testing.assert_allclose(arrays["bn.running_mean"].numpy(), 3.0, atol=3.0 * 2**-7)
    assert sorted(node for node, _ in calls) == [1, 1, 2, 2, 3, 3, 4, 4]
    assert all(keys == set(SHAPES) for _, keys in calls)
    # the other statistic is the app's (noisy) one, coded as usual
    assert not np.allclose(arrays["bn.running_var"].numpy(), 3.0, atol=0.5)


def test_a_failing_statistics_function_is_the_nodes_error_reply_and_costs_one_round() -> None:
    """An exception in the app's statistics function: that node answers with an error naming
    it, its coding state is untouched, and its next round goes through."""
    from flwr.app import Context

    fail = {"on": True}

    def measure(arrays: object, context: Context) -> dict[str, np.ndarray]:
        if fail["on"] and int(context.node_id) == 2:
            raise RuntimeError("CUDA out of memory")
        return {}

    mod = make_fedcodec_mod(initial_model=initial_arrays(SHAPES), statistics=measure)
    grid = LocalGrid(noisy_client_app(mod), range(1, 5))
    strategy = CompressionStrategy(FedAvg(), preset="robust", robust=RobustPolicy.fedavg())
    arrays = ArrayRecord({k: Array(v) for k, v in initial_arrays(SHAPES).items()})
    messages = list(strategy.configure_train(1, arrays, ConfigRecord(), grid))
    replies = list(grid.send_and_receive(messages))
    errors = {r.metadata.src_node_id: r.error.reason for r in replies if r.has_error()}
    assert list(errors) == [2]
    assert "statistics function failed: RuntimeError: CUDA out of memory" in errors[2]
    out, _ = strategy.aggregate_train(1, replies)
    assert out is not None
    assert strategy.totals.updates == 3
    fail["on"] = False
    messages = list(strategy.configure_train(2, out, ConfigRecord(), grid))
    replies = list(grid.send_and_receive(messages))
    assert not any(r.has_error() for r in replies)
    strategy.aggregate_train(2, replies)
    assert strategy.totals.updates == 7
