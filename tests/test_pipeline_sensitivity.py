"""Sensitivity-aware coding of a whole model: statistics, importance-derived steps, RD top-k."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedcodec.pipeline import (
    ModelVersion,
    RoundParams,
    Sensitivity,
    Sparsification,
    UpdateEncoder,
)
from fedcodec.pipeline.client import encode_tensors, sensitivity_plan
from fedcodec.pipeline.sparsify import sparsify


def _cnn_like(rng: np.random.Generator, scale: float = 1.0) -> dict[str, np.ndarray]:
    """Names and shapes of a conv+BN block and a classifier (as a state_dict has them)."""
    return {
        "conv.weight": (scale * rng.normal(0, 0.2, (8, 1, 3, 3))).astype(np.float32),
        "conv.bias": (scale * rng.normal(0, 0.01, 8)).astype(np.float32),
        "bn.weight": (1.0 + scale * rng.normal(0, 0.05, 8)).astype(np.float32),
        "bn.bias": (scale * rng.normal(0, 0.01, 8)).astype(np.float32),
        "bn.running_mean": (scale * rng.normal(0, 0.5, 8)).astype(np.float32),
        "bn.running_var": (1.0 + scale * rng.uniform(0, 2, 8)).astype(np.float32),
        "fc.weight": (scale * rng.normal(0, 0.05, (10, 200))).astype(np.float32),
        "fc.bias": (scale * rng.normal(0, 0.01, 10)).astype(np.float32),
    }


def _deltas(rng: np.random.Generator, model: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Small changes of every tensor, 1 % of its RMS (at least 1e-3)."""
    return {
        k: (max(float(np.sqrt(np.mean(v**2))), 0.1) * 0.01 * rng.standard_normal(v.shape)).astype(
            np.float32
        )
        for k, v in model.items()
    }


def test_kinds_from_names_and_shapes() -> None:
    """Statistics by name, weights by rank, 1-d weights are normalization scales."""
    s = Sensitivity()
    assert s.kind("bn.running_mean", (8,)) == "stat"
    assert s.kind("bn.running_var", (8,)) == "stat"
    assert s.kind("conv.weight", (8, 1, 3, 3)) == "weight"
    assert s.kind("bn.weight", (8,)) == "norm"
    assert s.kind("fc.bias", (10,)) == "bias"
    assert Sensitivity(stat_patterns=(r"\.stats$",)).kind("bn.running_mean", (8,)) == "bias"


def test_statistics_are_coded_at_their_own_fine_step_whatever_the_round_asks() -> None:
    """A coarse round step or a tight budget does not touch BN statistics' precision."""
    rng = np.random.default_rng(0)
    base = ModelVersion.create(0, _cnn_like(rng))
    local = {k: v + _cnn_like(rng, 0.05)[k] for k, v in base.tensors.items()}
    bits = 10
    for params in (RoundParams(lam=2.0, S=0), RoundParams(budget_bytes=300)):
        params = params.replace(sensitivity=Sensitivity(stat_bits=bits))
        enc = UpdateEncoder(base.spec, "c", error_feedback=False)
        update = enc.encode(local, base, params, round_number=0, num_examples=1)
        steps = {t.name: t.step for t in update.stats.tensors}
        for name in ("bn.running_mean", "bn.running_var"):
            ref = base.tensors[name].astype(np.float64)
            expected = math.sqrt(float(np.mean(ref**2))) * 2.0**-bits
            assert steps[name] == pytest.approx(expected, rel=1e-6)


def test_statistics_do_not_shape_the_model_step() -> None:
    """Large BN-variance changes leave the weights' step where the weights put it."""
    rng = np.random.default_rng(1)
    tensors = _cnn_like(rng, 0.01)
    base = ModelVersion.create(0, _cnn_like(rng))
    spec = base.spec
    without = RoundParams(S=8)
    calm = dict(tensors)
    calm["bn.running_var"] = np.zeros(8, np.float32)
    wild = dict(tensors)
    wild["bn.running_var"] = np.full(8, 50.0, np.float32)
    with_sens = without.replace(sensitivity=Sensitivity(max_refine=1.0))
    _, _, a, _ = encode_tensors(spec, calm, with_sens, reference=base.tensors)
    _, _, b, _ = encode_tensors(spec, wild, with_sens, reference=base.tensors)
    assert a.tensors[-2].step == b.tensors[-2].step  # fc.weight
    _, _, c, _ = encode_tensors(spec, wild, without)
    assert c.tensors[-2].step > 10 * a.tensors[-2].step


def test_importance_refines_the_step_of_sensitive_tensors() -> None:
    """Δ_t = Δ·sqrt(M/m_t), clipped to [Δ/max_refine, Δ]."""
    rng = np.random.default_rng(2)
    base = ModelVersion.create(0, _cnn_like(rng))
    target = _deltas(rng, base.tensors)
    importance = {name: np.ones(shape, np.float32) for name, shape in base.spec}
    importance["conv.weight"] *= 100.0  # 100x more sensitive than the rest
    eta = [importance[n] for n in base.spec.names]
    plan = sensitivity_plan(base.spec, target, Sensitivity(max_refine=64.0), eta, base.tensors)
    factors = dict(zip(base.spec.names, plan.step_factors, strict=True))
    sizes = {n: math.prod(s) for n, s in base.spec}
    learned = [n for n in base.spec.names if "running" not in n]
    mean = sum(sizes[n] * float(importance[n].mean()) for n in learned) / sum(
        sizes[n] for n in learned
    )
    assert factors["conv.weight"] == pytest.approx(math.sqrt(mean / 100.0), rel=1e-6)
    assert factors["fc.weight"] == 1.0  # never coarser than the model step
    clipped = sensitivity_plan(base.spec, target, Sensitivity(max_refine=2.0), eta, base.tensors)
    assert min(clipped.step_factors) == 0.5
    _, _, stats, _ = encode_tensors(
        base.spec,
        target,
        RoundParams(S=4, sensitivity=Sensitivity(max_refine=64.0)),
        importance=importance,
        reference=base.tensors,
    )
    steps = {t.name: t.step for t in stats.tensors}
    assert steps["conv.weight"] / steps["fc.weight"] == pytest.approx(
        factors["conv.weight"], rel=1e-5
    )


def test_magnitude_fallback_gives_small_weights_finer_steps() -> None:
    """Without importance, biases (small weights) get finer steps than large weights."""
    rng = np.random.default_rng(3)
    base = ModelVersion.create(0, _cnn_like(rng))
    plan = sensitivity_plan(
        base.spec, _deltas(rng, base.tensors), Sensitivity(), None, base.tensors
    )
    factors = dict(zip(base.spec.names, plan.step_factors, strict=True))
    assert factors["conv.bias"] < factors["fc.weight"]
    assert factors["fc.bias"] < 1.0
    none = sensitivity_plan(
        base.spec, _deltas(rng, base.tensors), Sensitivity(fallback="none"), None, base.tensors
    )
    assert none.step_factors == (1.0,) * len(base.spec)


def test_vectors_and_statistics_are_never_sparsified() -> None:
    """Top-k spends its fraction on weight tensors; 1-d tensors travel whole."""
    rng = np.random.default_rng(4)
    base = ModelVersion.create(0, _cnn_like(rng))
    target = _deltas(rng, base.tensors)
    params = RoundParams(
        S=64,
        lam=0.0,
        sparsification=Sparsification(topk=0.05),
        sensitivity=Sensitivity(),
    )
    _, recon, _, _ = encode_tensors(base.spec, target, params, reference=base.tensors)
    dense = params.replace(sparsification=None)
    _, recon_dense, _, _ = encode_tensors(base.spec, target, dense, reference=base.tensors)
    out = dict(zip(base.spec.names, recon, strict=True))
    out_dense = dict(zip(base.spec.names, recon_dense, strict=True))
    for name in ("conv.bias", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"):
        assert np.count_nonzero(out_dense[name]) > 0, name
        assert np.count_nonzero(out[name]) == np.count_nonzero(out_dense[name]), name
    weights = out["conv.weight"].size + out["fc.weight"].size
    kept = np.count_nonzero(out["conv.weight"]) + np.count_nonzero(out["fc.weight"])
    assert kept <= math.ceil(0.05 * weights)


def test_rd_topk_keeps_the_count_and_spends_more_on_dense_tensors() -> None:
    """Equal slope per bit: same count as global top-k, shifted toward the denser tensor."""
    rng = np.random.default_rng(5)
    big = rng.laplace(0, 1.0, 20000).astype(np.float32)
    small = rng.laplace(0, 1.0, 200).astype(np.float32) * 3.0  # its values win a global ranking
    how_model = Sparsification(topk=0.02)
    how_rd = Sparsification(topk=0.02, allocation="rd")
    (bm, sm), _ = sparsify([big, small], how_model)
    (br, sr), _ = sparsify([big, small], how_rd)
    count = math.ceil(0.02 * (big.size + small.size))
    assert np.count_nonzero(bm) + np.count_nonzero(sm) == count
    assert np.count_nonzero(br) + np.count_nonzero(sr) == count
    # The global ranking makes the small tensor much denser than the big one; per bit, a
    # nonzero in a dense tensor is cheap, so RD keeps more there and its kept share follows.
    assert np.count_nonzero(sm) / small.size > np.count_nonzero(bm) / big.size
    assert np.count_nonzero(sr) >= np.count_nonzero(sm)
    kept = np.abs(sr[sr != 0])
    dropped = np.abs(small[sr == 0])
    assert kept.min() >= dropped.max()  # within a tensor, still the largest values


def test_budget_search_with_sensitivity_meets_the_budget() -> None:
    """Rate control still lands within ±5 % with per-tensor steps and fixed statistics."""
    rng = np.random.default_rng(6)
    spec_tensors = _cnn_like(rng)
    spec_tensors["fc.weight"] = rng.normal(0, 0.05, (64, 500)).astype(np.float32)
    base = ModelVersion.create(0, spec_tensors)
    local = {
        k: v + 0.01 * rng.standard_normal(v.shape).astype(np.float32)
        for k, v in base.tensors.items()
    }
    enc = UpdateEncoder(base.spec, "c")
    params = RoundParams(budget_bytes=2000, sensitivity=Sensitivity())
    sizes = [len(enc.encode(local, base, params, round_number=r, num_examples=1)) for r in range(3)]
    assert all(abs(s - 2000) <= 100 or s < 2000 for s in sizes), sizes


def test_round_params_json_round_trip() -> None:
    """Sensitivity and the top-k allocation travel in the round parameters."""
    params = RoundParams(
        lam=0.3,
        sparsification=Sparsification(topk=0.01, allocation="rd"),
        sensitivity=Sensitivity(stat_bits=12, max_refine=8.0, fallback="none"),
        per_client={"a": {"sensitivity": {"stat_bits": 6}}},
    )
    again = RoundParams.from_json(params.to_json())
    assert again == params
    assert again.for_client("a").sensitivity == Sensitivity(stat_bits=6)
    assert RoundParams.from_json(RoundParams().to_json()).sensitivity is None
    with pytest.raises(ValueError, match="stat_bits"):
        Sensitivity(stat_bits=40)
    with pytest.raises(ValueError, match="max_refine"):
        Sensitivity(max_refine=0.5)
    with pytest.raises(ValueError, match="allocation"):
        Sparsification(topk=0.1, allocation="layer")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown sensitivity"):
        Sensitivity.from_json({"bits": 3})


def test_rd_rows_clusters_nonzeros_in_rows_and_codes_them_in_fewer_bytes() -> None:
    """``allocation="rd-rows"``: a nonzero in a row that holds others costs fewer position
    bits, so the same count lands in fewer rows, the container is smaller at the same step,
    and within a row the kept values are still its largest."""
    from fedcodec import codec

    rng = np.random.default_rng(11)
    # Rows (output units) of different activity, as a linear layer's update has them.
    scale = rng.uniform(0.5, 1.5, (72, 1)).astype(np.float32)
    fc = (rng.normal(0, 1.0, (72, 784)) * scale).astype(np.float32)
    small = rng.laplace(0, 1.0, (10, 72)).astype(np.float32)
    count = math.ceil(0.01 * (fc.size + small.size))
    out = {}
    for allocation in ("rd", "rd-rows"):
        how = Sparsification(topk=0.01, allocation=allocation)  # type: ignore[arg-type]
        (f, s), _ = sparsify([fc, small], how)
        assert np.count_nonzero(f) + np.count_nonzero(s) == count
        out[allocation] = (f, s)
    rows_rd = np.count_nonzero(np.any(out["rd"][0] != 0, axis=1))
    rows_clustered = np.count_nonzero(np.any(out["rd-rows"][0] != 0, axis=1))
    assert rows_clustered < rows_rd
    sizes = {a: len(codec.encode(list(t), step=[0.5, 0.5], lam=0.0, S=16)) for a, t in out.items()}
    assert sizes["rd-rows"] < sizes["rd"]
    f = out["rd-rows"][0]
    for r in range(f.shape[0]):
        kept = np.abs(fc[r][f[r] != 0])
        if kept.size:
            assert kept.min() >= np.abs(fc[r][f[r] == 0]).max()
    params = RoundParams(sparsification=Sparsification(topk=0.01, allocation="rd-rows"))
    assert RoundParams.from_json(params.to_json()) == params


def test_downlink_statistics_follow_stat_bits_of_the_statistic() -> None:
    """The downlink codes statistics at 2**-stat_bits of the statistic's RMS in the stream
    model (as the uplink does), so a coarser ``stat_bits`` saves bytes there too (before,
    the step followed the round's change and snapped to the stream grid whatever
    ``stat_bits`` said); the stream stays exact for the receiver."""
    from fedcodec.pipeline import DownlinkEncoder, ModelReceiver

    rng = np.random.default_rng(21)
    base = _cnn_like(rng)
    base["bn.running_var"] = (20.0 + rng.uniform(0, 10, 8)).astype(np.float32)
    v0 = ModelVersion.create(0, base)
    stat_bytes = {}
    for bits in (10, 4):
        params = RoundParams(lam=0.5, S=16, sensitivity=Sensitivity(stat_bits=bits))
        down = DownlinkEncoder(v0.spec, params=params, threads=1, initial=v0)
        down.publish(v0, known_to_all=True)
        gen = np.random.default_rng(3)
        model = dict(base)
        total = 0
        for version in range(1, 4):
            step = _deltas(gen, model)
            model = {k: v + step[k] for k, v in model.items()}
            release = down.publish(ModelVersion.create(version, model))
            assert release.stats is not None
            total += sum(t.bytes for t in release.stats.tensors if "running" in t.name)
        rx = ModelReceiver(v0.spec, threads=1, initial=v0)
        rx.apply(down.package_for("c"))
        assert rx.digest == down.digest_of(3)
        stat_bytes[bits] = total
    assert stat_bytes[4] < stat_bytes[10]


def test_statistics_hook_measures_the_coded_model_and_its_values_are_sent() -> None:
    """encode(statistics=fn): fn sees base + the decoded update; what it returns is what the
    server decodes for those tensors (within their step); the rest is coded as without it."""
    from fedcodec import codec
    from fedcodec.pipeline import ModelMismatchError

    rng = np.random.default_rng(3)
    base = ModelVersion.create(0, _cnn_like(rng))
    local = {k: v + _cnn_like(rng, 0.05)[k] for k, v in base.tensors.items()}
    params = RoundParams(
        lam=0.5,
        S=16,
        sparsification=Sparsification(topk=0.05, allocation="rd"),
        sensitivity=Sensitivity(),
    )
    seen: list[dict[str, np.ndarray]] = []

    def measure(coded: object) -> dict[str, np.ndarray]:
        assert isinstance(coded, dict)
        seen.append({k: np.array(v) for k, v in coded.items()})
        # a statistic that depends on the coded weights, as BatchNorm's does
        return {"bn.running_mean": coded["conv.weight"].sum(axis=(1, 2, 3)) + 0.25}

    plain = UpdateEncoder(base.spec, "c").encode(
        local, base, params, round_number=0, num_examples=1
    )
    enc = UpdateEncoder(base.spec, "c")
    update = enc.encode(local, base, params, round_number=0, num_examples=1, statistics=measure)
    assert len(seen) == 1
    names = list(base.spec.names)
    decoded = codec.decode(update.data, names=names, expected_shapes=base.spec.shapes)
    first = codec.decode(plain.data, names=names, expected_shapes=base.spec.shapes)
    # the hook saw exactly base + what the server decodes (for the tensors it did not change)
    for name in names:
        if name != "bn.running_mean":
            np.testing.assert_allclose(seen[0][name], base.tensors[name] + decoded[name], atol=1e-6)
            np.testing.assert_array_equal(decoded[name], first[name])
    # the statistic the server rebuilds is the measured one, not the locally trained one
    steps = {t.name: t.step for t in update.stats.tensors}
    rebuilt = base.tensors["bn.running_mean"] + decoded["bn.running_mean"]
    expected = seen[0]["conv.weight"].sum(axis=(1, 2, 3)) + 0.25
    assert np.max(np.abs(rebuilt - expected)) <= steps["bn.running_mean"] / 2 + 1e-6
    assert np.max(np.abs(local["bn.running_mean"] - expected)) > 10 * steps["bn.running_mean"]
    # error feedback keeps the measured statistic's own coding error, not the local one's
    residual = enc.residual["bn.running_mean"]
    np.testing.assert_allclose(residual, expected - rebuilt, atol=1e-6)

    for bad, match in (
        ({"bn.nope": np.zeros(8)}, "lacks"),
        ({"bn.running_mean": np.zeros(7)}, "shape"),
        ({"bn.running_mean": np.full(8, np.nan)}, "finite|non-finite"),
    ):
        fresh = UpdateEncoder(base.spec, "c")
        with pytest.raises(ModelMismatchError, match=match):
            fresh.encode(
                local, base, params, round_number=0, num_examples=1, statistics=lambda _, b=bad: b
            )
        assert fresh.rounds_encoded == 0
        assert fresh.residual_norm() == 0.0
