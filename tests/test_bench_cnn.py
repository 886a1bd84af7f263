"""The CNN benchmark's Flower plumbing (skips without torch)."""

from __future__ import annotations

import dataclasses

import pytest

pytest.importorskip("torch", reason="the CNN benchmark needs torch")
pytest.importorskip("flwr", reason="the CNN benchmark runs through the Flower plugin")

from fedcodec_bench.cnn import RunResult, Scenario, _Train, cnn_methods, run_one

_TINY = Scenario("tiny", 2, 2, 1)


def _run(name: str) -> RunResult:
    methods = {m.name: m for m in cnn_methods()}
    return run_one(_TINY, methods[name], 0, _Train(1, 32, 0.05, 0), train_limit=200)


@pytest.fixture(scope="module")
def fp32() -> RunResult:
    """The float32 reference run (once for the module)."""
    return _run("fp32")


@pytest.mark.parametrize("name", ["top-1%+EF", "fedcodec sens rd-2% S=16"])
def test_a_tiny_run_counts_flower_bytes_both_ways(fp32: RunResult, name: str) -> None:
    """One round of 2 clients: accuracy recorded, bytes counted up and down, coded < fp32."""
    run = _run(name)
    assert len(run.accuracy) == 1
    assert 0.0 <= run.accuracy[0] <= 1.0
    assert run.bytes_down > 0
    # fp32 sends the 57k-parameter model (228 kB) to and from both clients.
    assert fp32.bytes_up > 2 * 4 * 57_000
    assert 0 < run.bytes_up < fp32.bytes_up / 10


@pytest.mark.parametrize("server", ["adam/tensor", "fedprox+yogi/weight@0.02"])
def test_server_optimizer_scenarios_run_the_same_optimizer_in_float32_and_coded(
    server: str,
) -> None:
    """ServerOptimizer scenarios (a smoke run): float32 runs it after FedAvg/FedProx,
    fedcodec through CompressionStrategy(server_optimizer=...)."""
    methods = {m.name: m for m in cnn_methods()}
    sc = Scenario("tiny-opt", 2, 2, 2, server=server)
    for name in ("fp32", "fedcodec sens+fisher rd-1% down rd-1%"):
        run = run_one(sc, methods[name], 0, _Train(1, 32, 0.05, 0), train_limit=200)
        assert len(run.accuracy) == 2
        assert all(0.0 <= a <= 1.0 for a in run.accuracy)
        assert run.bytes_up > 0
        assert run.bytes_down > 0


def test_method_names_are_unique() -> None:
    """`--methods =NAME` selects by name: two methods of one name would run twice."""
    names = [m.name for m in cnn_methods()]
    assert len(names) == len(set(names))


def test_warmup_methods_run_their_schedule_through_the_plugin() -> None:
    """A sparsity warm-up (StepSchedule on topk) codes denser early rounds, and every
    method's settings are JSON (the schedule's fields and base parameters)."""
    import json

    methods = {m.name: m for m in cnn_methods()}
    for m in methods.values():
        json.dumps(m.settings())
    warm = methods["fedcodec sens+fisher warm rd-1% down warm rd-1%"]
    settings = warm.settings()["params"]
    assert settings["schedule"] == "StepSchedule"
    assert settings["name"] == "topk"
    assert settings["base"]["sparsification"]["topk"] > settings["limit"] == 0.01
    assert warm.params(0, None).sparsification.topk == 0.08
    assert warm.params(20, None).sparsification.topk == 0.01
    sc = Scenario("tiny-warm", 2, 2, 2)
    run = run_one(sc, warm, 0, _Train(1, 32, 0.05, 0), train_limit=200)
    assert len(run.accuracy) == 2
    assert run.bytes_up > 0


def test_sensitivity_part_methods_change_only_what_their_names_say() -> None:
    """The part-by-part methods of docs/bench/cnn.md ("robust's uplink without
    Sensitivity") are robust with one thing changed: the uplink's Sensitivity (statistics
    only; statistics as biases) or one link's top-k early (16 % halved every 10 rounds to
    robust's 2 % down, 40 % to its 5 % up)."""
    from fedcodec.pipeline import Sensitivity, get_preset

    robust = get_preset("robust")
    methods = {m.name: m for m in cnn_methods()}
    spec = (("bn.running_var", (4,)), ("fc.weight", (4, 4)), ("fc.bias", (4,)))
    only = methods["fedcodec robust up statistics-only Sensitivity, robust down"]
    biases = methods["fedcodec robust up statistics as biases, robust down"]
    for m, max_refine, vectors, stat_kind in (
        (only, 1.0, True, "stat"),
        (biases, 16.0, False, "bias"),
    ):
        assert m.params.replace(sensitivity=Sensitivity(stat_bits=6)) == robust.uplink
        assert (m.params.sensitivity.max_refine, m.params.sensitivity.sparsify_vectors) == (
            max_refine,
            vectors,
        )
        kinds = [m.params.sensitivity.kind(name, shape) for name, shape in spec]
        assert kinds == [stat_kind, "weight", "bias"]
        assert m.down_params == robust.downlink
        assert m.step_snap == robust.step_snap
        assert not m.fisher
    warm = methods["fedcodec robust, downlink warm-up 16% to 2%"]
    assert warm.params == robust.uplink
    topk = [warm.down_params(r, None).sparsification.topk for r in (0, 9, 10, 20, 30, 99)]
    assert topk == [0.16, 0.16, 0.08, 0.04, 0.02, 0.02]
    assert warm.down_params(99, None) == robust.downlink
    warm_up = methods["fedcodec robust, uplink warm-up 40% to 5%"]
    assert warm_up.down_params == robust.downlink
    topk = [warm_up.params(r, None).sparsification.topk for r in (0, 10, 20, 30, 99)]
    assert topk == [0.4, 0.2, 0.1, 0.05, 0.05]
    assert warm_up.params(99, None) == robust.uplink


def test_coarser_near_lossless_methods_differ_only_in_s() -> None:
    """The "near-lossless S=N" methods are the preset with another S on both links."""
    from fedcodec.pipeline import get_preset

    near = get_preset("near-lossless")
    methods = {m.name: m for m in cnn_methods()}
    for S in (8, 4, 2, 0):
        m = methods[f"fedcodec near-lossless S={S}"]
        assert m.params == m.down_params == near.uplink.replace(S=S)
        assert m.params.S == S
        assert m.params.replace(S=16) == near.uplink
        assert (m.step_snap, m.fisher) == (near.step_snap, near.fisher)


def test_filter_scaling_preset_methods_differ_only_in_the_filter_weight() -> None:
    """The "+filter(l1)" methods of issue #13's proof are the lean presets exactly as
    ``preset=NAME`` runs them, with ``FilterScaling(l1)`` in local training."""
    methods = {m.name: m for m in cnn_methods()}
    for name in ("lean-full", "lean-partial"):
        preset = methods[f"fedcodec preset {name}"]
        assert preset.filter_l1 is None
        for text, l1 in (("1e-3", 1e-3), ("1e-2", 1e-2)):
            m = methods[f"fedcodec preset {name} +filter({text})"]
            assert m.filter_l1 == l1
            assert dataclasses.replace(m, name=preset.name, filter_l1=None) == preset


def test_baselines_are_framed_as_fedcodec_so_bytes_compare_codecs() -> None:
    """The baselines' messages carry the coded bytes inline in one ConfigRecord each way
    (the reply with the app's metrics folded in, as fedcodec's wire): what a message costs
    besides its payload is no more than fedcodec's, and the metrics still reach the
    strategy (FedAvg weights by ``num-examples``; a missing key would raise)."""
    sc = Scenario("tiny-framing", 3, 3, 2)
    methods = {m.name: m for m in cnn_methods()}

    def overhead(name: str) -> float:
        run = run_one(sc, methods[name], 0, _Train(1, 32, 0.05, 0), train_limit=200)
        messages = sum(n for n, _ in run.extra["by_kind"].values())
        payload = run.extra["payload_up"] + run.extra["payload_down"]
        assert payload > 0
        return (run.total - payload) / messages

    ours = overhead("fedcodec sens rd-2% S=16")
    for name in ("STC 1%", "top-1%+EF"):
        assert overhead(name) <= ours


def test_mobile_is_a_depthwise_separable_net_with_residuals() -> None:
    """``--model mobile``: depthwise 3×3 filters ([C, 1, 3, 3]), pointwise convs without
    biases, BatchNorm after each, identity residuals, global pooling, one linear head."""
    import torch
    from torch import nn

    from fedcodec_bench.cnn import MODELS, _net

    assert "mobile" in MODELS
    net = _net("mobile")
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    depthwise = [c for c in convs if c.groups > 1]
    assert len(depthwise) == 6
    assert all(c.groups == c.in_channels and c.weight.shape[1:] == (1, 3, 3) for c in depthwise)
    assert all(c.bias is None for c in convs)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == len(convs)
    assert sum(bool(getattr(m, "residual", False)) for m in net.modules()) == 3
    assert [type(m) for m in net if isinstance(m, nn.Linear)] == [nn.Linear]
    assert sum(p.numel() for p in net.parameters()) == 54_922
    stats = sum(v.numel() for k, v in net.state_dict().items() if "running" in k)
    assert stats == 1_984
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ValueError, match="unknown model"):
        _net("resnet")


@pytest.mark.parametrize(
    "name", ["fedcodec sens+fisher lean4 rd-0.5% down lean4 rd-0.5%", "fedcodec default"]
)
def test_mobile_runs_through_the_plugin(name: str) -> None:
    """Two rounds of the mobile net through the plugin: the 300x setting and the defaults a
    new user gets (``CompressionStrategy(FedAvg())``, no schedule) code both ways."""
    methods = {m.name: m for m in cnn_methods()}
    sc = Scenario("tiny-mobile", 2, 2, 2, model="mobile")
    run = run_one(sc, methods[name], 0, _Train(1, 32, 0.05, 0), train_limit=200)
    assert len(run.accuracy) == 2
    assert all(0.0 <= a <= 1.0 for a in run.accuracy)
    assert run.bytes_down > 0
    # float32 both ways would be 4 messages of 37k parameters (+ 1.5k statistics) each way
    assert run.extra["raw_payload"] == 8 * 4 * (54_922 + 1_984)
    assert 0 < run.total < run.extra["raw_payload"] / 4
    assert run.extra["rejected"] == 0


def test_coded_statistics_run_through_the_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    """`+bnstats`: every node's mod calls CodedStatistics on its coded model once per train
    round (the mobile net's 67 coded arrays, the node's Context) and codes what it returns."""
    import fedcodec.torch as ft

    calls: list[tuple[int, int, int]] = []
    measure = ft.CodedStatistics.__call__

    def counted(self: ft.CodedStatistics, arrays: object, context: object = None) -> object:
        out = measure(self, arrays, context)  # type: ignore[arg-type]
        calls.append((int(context.node_id), len(arrays), len(out)))  # type: ignore[attr-defined,arg-type]
        return out

    monkeypatch.setattr(ft.CodedStatistics, "__call__", counted)
    methods = {m.name: m for m in cnn_methods()}
    sc = Scenario("tiny-mobile", 2, 2, 2, model="mobile")
    run = run_one(sc, methods["fedcodec preset robust +bnstats"], 0, _Train(1, 32, 0.05, 0), 200)
    assert len(run.accuracy) == 2
    assert run.extra["rejected"] == 0
    # 2 nodes x 2 rounds; 67 coded arrays (the 13 num_batches_tracked stay local), the 26
    # running means and variances of its 13 BatchNorm layers
    assert sorted(calls) == sorted([(n, 67, 26) for n in (0, 1)] * 2)
