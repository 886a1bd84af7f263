"""Robust aggregation: one client cannot take over a round (issue 12, defect 1)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import fedcodec
from fedcodec.pipeline import (
    Aggregator,
    ModelVersion,
    RobustPolicy,
    RoundParams,
    UpdateEncoder,
    UpdateRejectedError,
)
from fedcodec.pipeline.client import EncodedUpdate
from fedcodec.pipeline.robust import (
    UpdateSummary,
    capped_shares,
    combine_coordinatewise,
    plan_round,
    screen_update,
)

SHAPES = {"w": (16, 20), "b": (16,)}


def _base() -> ModelVersion:
    rng = np.random.default_rng(0)
    return ModelVersion.create(
        0, {k: (rng.standard_normal(s) * 0.1).astype(np.float32) for k, s in SHAPES.items()}
    )


def _honest(base: ModelVersion, count: int, n: int = 100) -> list[EncodedUpdate]:
    rng = np.random.default_rng(1)
    out = []
    for i in range(count):
        local = {
            k: base.tensors[k] + (0.01 + rng.standard_normal(v.shape) * 1e-3).astype(np.float32)
            for k, v in base.tensors.items()
        }
        enc = UpdateEncoder(base.spec, f"h{i:02d}", threads=1)
        out.append(
            enc.encode(local, base, RoundParams(lam=0.0, S=64), round_number=0, num_examples=n)
        )
    return out


def _levels_update(value_level: int, step: float) -> bytes:
    return fedcodec.encode_levels(
        [np.full(s, value_level, np.int32) for s in SHAPES.values()], step=step
    ).data


def _change(new: ModelVersion, base: ModelVersion) -> dict[str, np.ndarray]:
    return {k: new.tensors[k].astype(np.float64) - base.tensors[k] for k in SHAPES}


def test_huge_example_count_is_refused_and_share_is_capped() -> None:
    base = _base()
    honest = _honest(base, 27)
    attack = _levels_update(1000, 1e-3)  # +1.0 per weight: far from the honest +0.01
    agg = Aggregator(base, round_number=0, threads=1)
    for u in honest:
        agg.accept_update(u)
    # Today's code accepted 2**62 and the attacker owned the round.
    with pytest.raises(UpdateRejectedError, match="num_examples"):
        agg.accept(attack, client_id="evil", base_version=0, num_examples=2**62)
    agg.accept(attack, client_id="evil", base_version=0, num_examples=10**9)
    new = agg.finalize()
    plan = agg.plan
    assert plan is not None
    assert plan.shares["evil"] == pytest.approx(0.25)
    assert "evil" in plan.capped
    assert math.isclose(sum(plan.shares.values()), 1.0)
    # Its update (norm 100x the honest ones) is also clipped to 10x the median.
    assert plan.scales["evil"] < 0.2
    change = _change(new, base)["w"]
    # Plain FedAvg would move every weight by ~+1.0; the capped, clipped round stays small.
    assert float(np.max(np.abs(change))) < 0.1


def test_huge_values_and_non_finite_updates_are_refused() -> None:
    base = _base()
    agg = Aggregator(base, round_number=0, threads=1)
    agg.accept_update(_honest(base, 1)[0])
    # 1e30 per weight: a valid container (step 1e25, level 1e5) that used to make every
    # weight of the next model 2.5e29.
    with pytest.raises(UpdateRejectedError, match="magnitude"):
        agg.accept(_levels_update(100_000, 1e25), client_id="x", base_version=0, num_examples=1)
    assert agg.num_updates == 1
    with pytest.raises(UpdateRejectedError, match="non-finite"):
        screen_update(
            [np.array([1.0, np.inf], np.float32)], RobustPolicy(), client_id="y", num_examples=1
        )
    assert np.isfinite(agg.finalize().tensors["w"]).all()


def test_norm_bound_clip_and_reject() -> None:
    base = _base()
    honest = _honest(base, 5)
    big = _levels_update(100, 1e-3)  # 0.1 per weight: ~10x the honest norm and more
    summaries = []
    for mode in ("clip", "reject"):
        policy = RobustPolicy(norm_bound_rel=2.0, norm_action=mode, max_share=1.0)
        agg = Aggregator(base, round_number=0, threads=1, policy=policy)
        for u in honest:
            agg.accept_update(u)
        agg.accept(big, client_id="big", base_version=0, num_examples=100)
        new = agg.finalize()
        plan = agg.plan
        assert plan is not None
        summaries.append(plan)
        if mode == "clip":
            assert plan.scales["big"] == pytest.approx(plan.bound / np.sqrt(336 * 0.1**2), 1e-5)
            assert plan.bound == pytest.approx(2.0 * plan.median_norm)
            assert agg.round_stats().rejected == 0
        else:
            assert "big" in plan.rejected
            assert "big" not in plan.shares
            stats = agg.round_stats()
            assert stats.rejected == 1
            assert len(stats.updates) == 5
            clean = Aggregator(base, round_number=0, threads=1, policy=policy)
            for u in honest:
                clean.accept_update(u)
            assert new.digest == clean.finalize().digest
    # An absolute bound with "reject" refuses at intake.
    agg = Aggregator(
        base, round_number=0, threads=1, policy=RobustPolicy(norm_bound=1.0, norm_action="reject")
    )
    with pytest.raises(UpdateRejectedError, match="norm"):
        agg.accept(big, client_id="big", base_version=0, num_examples=1)


def test_plain_policy_streams_and_clips_absolute() -> None:
    base = _base()
    honest = _honest(base, 3)
    policy = RobustPolicy(max_share=1.0, norm_bound_rel=0.0, norm_bound=0.05)
    assert not policy.round_level
    agg = Aggregator(base, round_number=0, threads=1, policy=policy)
    for u in honest:
        agg.accept_update(u)
    agg.accept(_levels_update(100, 1e-3), client_id="big", base_version=0, num_examples=100)
    assert all(a.data is None for a in agg._accepted.values())  # nothing kept: O(model)
    agg.finalize()
    assert agg.plan is not None
    assert agg.plan.scales["big"] == pytest.approx(0.05 / np.sqrt(3.36))


def test_payloads_handed_back_give_the_same_model() -> None:
    base = _base()
    updates = _honest(base, 6)
    kept = Aggregator(base, round_number=0, threads=1)
    lean = Aggregator(base, round_number=0, threads=1, keep_payloads=False)
    for u in updates:
        kept.accept_update(u)
        lean.accept_update(u)
    with pytest.raises(UpdateRejectedError, match="keep_payloads"):
        lean.finalize()
    with pytest.raises(UpdateRejectedError, match="not handed back"):
        lean.finalize(payloads=[(u.client_id, u.data) for u in updates[1:]])
    assert (
        lean.finalize(payloads=[(u.client_id, u.data) for u in reversed(updates)]).digest
        == kept.finalize().digest
    )


@pytest.mark.parametrize("aggregator", ["trimmed_mean", "median"])
def test_coordinatewise_aggregators_match_numpy(aggregator: str) -> None:
    base = _base()
    updates = _honest(base, 9)
    policy = RobustPolicy(aggregator=aggregator, trim_fraction=0.2, norm_bound_rel=0.0)
    agg = Aggregator(base, round_number=0, threads=1, policy=policy)
    for u in updates:
        agg.accept_update(u)
    agg.accept(_levels_update(10_000, 1e-3), client_id="zz", base_version=0, num_examples=1)
    new = agg.finalize()
    stack = np.stack(
        [fedcodec.decode(u.data, names=list(SHAPES))["w"] for u in updates]
        + [np.full(SHAPES["w"], 10.0, np.float32)]
    ).astype(np.float64)
    if aggregator == "median":
        expected = np.median(stack, axis=0)
    else:
        expected = np.sort(stack, axis=0)[2:8].mean(axis=0)
    np.testing.assert_allclose(_change(new, base)["w"], expected, atol=1e-6)
    assert float(np.max(_change(new, base)["w"])) < 0.1  # the outlier did not move it


def test_capped_shares_water_filling() -> None:
    shares, capped = capped_shares({"a": 1, "b": 1, "c": 1, "d": 1, "e": 96}, 0.25)
    assert shares["e"] == pytest.approx(0.25)
    assert capped == {"e"}
    assert shares["a"] == pytest.approx(0.1875)
    shares, capped = capped_shares({"a": 1, "b": 3}, 0.25)  # infeasible: uniform
    assert shares == {"a": 0.5, "b": 0.5}
    shares, _ = capped_shares({"a": 10, "b": 10, "c": 10, "d": 60, "e": 60, "f": 10}, 0.3)
    assert max(shares.values()) <= 0.3 + 1e-12
    assert sum(shares.values()) == pytest.approx(1.0)
    plan = plan_round([UpdateSummary("a", 1, 1.0), UpdateSummary("b", 1, 50.0)], RobustPolicy())
    assert plan.scales == {"a": 1.0, "b": 1.0}  # a median of two norms bounds nothing


def test_policy_validation_and_coordinatewise_helper() -> None:
    for bad in (
        {"max_share": 0.0},
        {"norm_bound_rel": 0.5},
        {"norm_action": "drop"},
        {"aggregator": "krum"},
        {"trim_fraction": 0.5},
        {"max_num_examples": 2**63},
        {"max_abs_value": math.inf},
    ):
        with pytest.raises(ValueError, match="robust policy"):
            RobustPolicy(**bad)  # type: ignore[arg-type]
    stack = np.array([[1.0], [2.0], [100.0]], np.float32)
    assert combine_coordinatewise(stack, "median", 0.0)[0] == 2.0
    assert combine_coordinatewise(stack, "trimmed_mean", 0.34)[0] == 2.0
