"""Round parameters, per-client overrides, schedules, model versions."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from fedcodec.pipeline import (
    ConstantSchedule,
    CosineSchedule,
    ModelHistory,
    ModelMismatchError,
    ModelSpec,
    ModelVersion,
    RoundParams,
    RoundStats,
    Sparsification,
    StepSchedule,
    as_schedule,
    model_digest,
)


def test_params_json_round_trip_with_per_client_overrides() -> None:
    params = RoundParams(
        lam=0.2,
        S=48,
        budget_bytes=5000,
        sparsification=Sparsification(topk=0.1, threshold=1e-4),
        per_client={"slow": {"budget_bytes": 1000, "sparsification": {"rows": 0.5}}},
    )
    wire = json.loads(json.dumps(params.to_json()))
    again = RoundParams.from_json(wire)
    assert again == params
    slow = again.for_client("slow")
    assert slow.budget_bytes == 1000
    assert slow.sparsification == Sparsification(rows=0.5)
    assert slow.per_client == {}
    assert slow.lam == 0.2
    assert again.for_client("other").budget_bytes == 5000


def test_stale_decay_travels_only_when_set() -> None:
    assert "stale_decay" not in RoundParams().to_json()  # older clients still read it
    params = RoundParams(stale_decay=0.5, per_client={"far": {"stale_decay": 0.0}})
    again = RoundParams.from_json_text(params.to_json_text())
    assert again == params
    assert again.stale_decay == 0.5
    assert again.for_client("far").stale_decay == 0.0


@pytest.mark.parametrize(
    "bad",
    [
        {"lam": -1.0},
        {"S": -3},
        {"step": 0.0},
        {"budget_bytes": 0},
        {"tolerance": 0.0},
        {"step_rule": "layer"},
        {"stale_decay": -0.1},
        {"stale_decay": 1.5},
        {"stale_decay": float("nan")},
        {"per_client": {"x": {"nope": 1}}},
    ],
)
def test_invalid_params_are_rejected(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        RoundParams(**bad)  # type: ignore[arg-type]


def test_schedules() -> None:
    base = RoundParams(lam=0.1, S=64, budget_bytes=8000)
    assert ConstantSchedule(base)(9, None) is base
    step = StepSchedule(base, "budget_bytes", gamma=0.5, every=10)
    assert [step(r, None).budget_bytes for r in (0, 9, 10, 25)] == [8000, 8000, 4000, 2000]
    cos = CosineSchedule(base, "lam", start=0.05, end=0.5, rounds=10)
    lams = [cos(r, None).lam for r in range(12)]
    assert lams[0] == pytest.approx(0.05)
    assert lams[10] == pytest.approx(0.5) == lams[11]
    assert all(a <= b for a, b in itertools.pairwise(lams))

    def adaptive(round_number: int, last: RoundStats | None) -> RoundParams:
        if last is None:
            return base
        return base.replace(budget_bytes=max(500, last.bytes_up // 10))

    sched = as_schedule(adaptive)
    assert sched(0, None) is base
    last = RoundStats(3, 2, 3, (), 0, bytes_up=20000, bytes_down=0, update_rms=0.0)
    assert sched(4, last).budget_bytes == 2000
    assert as_schedule(base)(5, None) is base
    with pytest.raises(ValueError, match="schedule"):
        StepSchedule(base, "tolerance", gamma=2.0, every=1)


def test_topk_warmup_schedules() -> None:
    sparse = RoundParams(lam=0.5, S=16, sparsification=Sparsification(topk=0.08, allocation="rd"))
    warm = StepSchedule(sparse, "topk", gamma=0.5, every=2, limit=0.01)
    topks = [warm(r, None).sparsification.topk for r in range(10)]  # type: ignore[union-attr]
    assert topks == pytest.approx([0.08, 0.08, 0.04, 0.04, 0.02, 0.02, 0.01, 0.01, 0.01, 0.01])
    assert warm(3, None).sparsification.allocation == "rd"  # type: ignore[union-attr]
    assert warm(3, None).lam == 0.5
    up = StepSchedule(RoundParams(S=4), "S", gamma=2.0, every=1, limit=32)
    assert [up(r, None).S for r in range(6)] == [4, 8, 16, 32, 32, 32]
    cos = CosineSchedule(sparse, "topk", start=0.05, end=0.005, rounds=4)
    assert cos(0, None).sparsification.topk == pytest.approx(0.05)  # type: ignore[union-attr]
    assert cos(9, None).sparsification.topk == pytest.approx(0.005)  # type: ignore[union-attr]
    assert CosineSchedule(RoundParams(), "topk", 1.5, 0.1, 2)(0, None).sparsification == (
        Sparsification(topk=1.0)
    )
    with pytest.raises(ValueError, match="not set"):
        StepSchedule(RoundParams(), "topk", gamma=0.5, every=1)
    with pytest.raises(ValueError, match="limit"):
        StepSchedule(sparse, "topk", gamma=0.5, every=1, limit=0.0)


def test_model_versions_digest_and_history() -> None:
    tensors = {"a": np.ones((2, 3), np.float32), "b": np.zeros(4, np.float32)}
    v0 = ModelVersion.create(0, tensors)
    assert v0.digest == model_digest(v0.spec, dict(v0.tensors))
    assert not v0.tensors["a"].flags.writeable
    flipped = dict(tensors) | {"b": np.array([0, 0, 0, -0.0], np.float32)}
    assert ModelVersion.create(0, flipped).digest != v0.digest  # every bit counts
    reordered = ModelVersion.create(0, {"b": tensors["b"], "a": tensors["a"]})
    assert reordered.digest != v0.digest  # order is part of the model
    assert v0.spec.numel == 10
    assert v0.spec.float32_bytes == 40
    assert ModelSpec.from_json(json.loads(json.dumps(v0.spec.to_json()))) == v0.spec
    history = ModelHistory(keep=2)
    for v in range(4):
        history.add(ModelVersion.create(v, tensors))
    assert history.versions() == [2, 3]
    assert history.latest.version == 3
    assert history.was_issued(0)
    assert 0 not in history
    assert not history.was_issued(4)
    with pytest.raises(ValueError, match="newer"):
        history.add(ModelVersion.create(3, tensors))
    with pytest.raises(ModelMismatchError):
        history.add(ModelVersion.create(5, {"a": np.ones((3, 2), np.float32)}))
