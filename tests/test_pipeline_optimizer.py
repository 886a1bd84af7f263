"""ServerOptimizer: the server step on the decoded aggregate, in the round engine."""

from __future__ import annotations

import numpy as np
import pytest

from fedcodec.pipeline import (
    ClientEngine,
    ModelSpec,
    ModelVersion,
    RoundEngine,
    RoundParams,
    ServerOptimizer,
    Sparsification,
    StateFormatError,
)

SPEC = ModelSpec(("w", "b"), ((64,), (8,)))


def _run(optimizer: ServerOptimizer, deltas: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    x = {n: np.zeros(s, np.float32) for n, s in zip(SPEC.names, SPEC.shapes, strict=True)}
    for d in deltas:
        x = optimizer.step(SPEC, x, {n: x[n] + d[n] for n in SPEC.names})
    return x


def _released(rounds: int, every: int) -> list[dict[str, np.ndarray]]:
    """The same pseudo-gradient g = 1e-3 on every weight; the first half of ``w`` arrives
    every round, the second half only every ``every`` rounds with what accumulated (as
    error feedback releases what top-k left out)."""
    out = []
    for r in range(1, rounds + 1):
        w = np.full(64, 1e-3)
        w[32:] = every * 1e-3 if r % every == 0 else 0.0
        out.append({"w": w, "b": np.full(8, 1e-3)})
    return out


@pytest.mark.parametrize("kind", ["adam", "yogi"])
def test_per_tensor_second_moment_keeps_error_feedbacks_sum(kind: str) -> None:
    """Weights released every 4th round with 4x the value move as far as weights carried
    every round with a per-tensor second moment; with one per weight they do not."""
    deltas = _released(rounds=40, every=4)
    tensor = _run(ServerOptimizer(kind, eta=0.01, second_moment="tensor"), deltas)["w"]  # type: ignore[arg-type]
    weight = _run(ServerOptimizer(kind, eta=0.01, second_moment="weight"), deltas)["w"]  # type: ignore[arg-type]
    # Assert
    ratio_tensor = tensor[32:].mean() / tensor[:32].mean()
    ratio_weight = weight[32:].mean() / weight[:32].mean()
    assert 0.8 < ratio_tensor < 1.0  # behind by the releases' lag only
    assert ratio_weight < 0.75 * ratio_tensor  # a release is worth less than its rounds


def test_avgm_is_heavy_ball_momentum_on_the_pseudo_gradient() -> None:
    opt = ServerOptimizer("avgm", eta=0.5, beta1=0.5)
    d1 = {"w": np.full(64, 2e-3), "b": np.full(8, -1e-3)}
    d2 = {"w": np.full(64, 1e-3), "b": np.zeros(8)}
    x = _run(opt, [d1, d2])
    m1 = d1["w"]
    m2 = 0.5 * m1 + d2["w"]
    np.testing.assert_allclose(x["w"], (0.5 * m1 + 0.5 * m2).astype(np.float32), rtol=1e-6)
    assert x["w"].dtype == np.float32


def test_state_round_trip_continues_bit_for_bit() -> None:
    deltas = _released(rounds=6, every=3)
    whole = ServerOptimizer("adam", eta=0.01)
    expected = _run(whole, deltas)
    first = ServerOptimizer("adam", eta=0.01)
    x = _run(first, deltas[:3])
    arrays, meta = first.state()
    second = ServerOptimizer("adam", eta=0.01)
    second.load_state(arrays, meta)
    for d in deltas[3:]:
        x = second.step(SPEC, x, {n: x[n] + d[n] for n in SPEC.names})
    for n in SPEC.names:
        assert x[n].tobytes() == expected[n].tobytes()
    with pytest.raises(StateFormatError, match="saved optimizer"):
        ServerOptimizer("yogi", eta=0.01).load_state(arrays, meta)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "sgd"}, "kind"),
        ({"kind": "adam", "eta": 0.0}, "eta"),
        ({"kind": "adam", "beta1": 1.0}, "beta1"),
        ({"kind": "adam", "tau": -1.0}, "tau"),
        ({"kind": "adam", "second_moment": "row"}, "second_moment"),
    ],
)
def test_arguments_are_checked_naming_the_field(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ServerOptimizer(**kwargs)  # type: ignore[arg-type]


def test_round_engine_applies_the_optimizer_and_clients_follow_its_steps_bit_for_bit() -> None:
    """The standalone server's engine: FedAdam on the decoded mean; the downlink codes the
    applied change; every client rebuilds the stream model exactly; a checkpoint restores
    the moments with the model."""
    rng = np.random.default_rng(0)
    v0 = ModelVersion.create(
        0,
        {
            "w": (0.1 * rng.standard_normal((24, 40))).astype(np.float32),
            "b": (0.1 * rng.standard_normal(24)).astype(np.float32),
        },
    )
    sparse = RoundParams(lam=0.5, S=16, sparsification=Sparsification(topk=0.05))
    engine = RoundEngine(
        v0,
        schedule=sparse,
        downlink=RoundParams(lam=0.5, S=16),
        server_optimizer=ServerOptimizer("adam", eta=0.01),
        threads=1,
    )
    members = [ClientEngine(v0.spec, f"c{i}", initial=v0, threads=1) for i in range(3)]
    target = {
        k: (0.2 * rng.standard_normal(v.shape)).astype(np.float32) for k, v in v0.tensors.items()
    }
    saved = None
    for r in range(1, 5):
        aggregator = engine.aggregator()
        for i, member in enumerate(members):
            if not member.holds(engine.version, engine.stream_digest):
                member.receive(engine.package_for(member.client_id, **member.request()))
            assert member.model.digest == engine.stream_digest
            held = member.model.tensors
            local = {k: held[k] + 0.1 * (target[k] - held[k]) for k in held}
            update = member.encode(local, sparse, round_number=r, num_examples=10 + i)
            aggregator.accept_update(update)
        mean = aggregator.finalize(engine.version + 1)  # what FedAvg would publish
        if r == 4:
            saved = engine.checkpoint()
        outcome = engine.publish(aggregator)
        assert outcome.model.digest != mean.digest  # the optimizer's step, not the mean
        assert outcome.release.digest == engine.stream_digest
    # Restoring round 4's checkpoint (moments included) and publishing again: the same model
    assert saved is not None
    fourth = engine.global_model.digest
    engine.restore(saved)
    assert engine.server_optimizer is not None
    assert engine.server_optimizer.steps == 3
    assert engine.publish(aggregator).model.digest == fourth
    # A client that follows the stream rebuilds it bit for bit
    late = ClientEngine(v0.spec, "late", initial=v0, threads=1)
    late.receive(engine.package_for("late", **late.request()))
    assert late.model.digest == engine.stream_digest


def test_the_engines_state_carries_the_moments_to_a_resumed_engine() -> None:
    """What the gRPC server persists (``engine.state()``) holds the optimizer's moments: a
    resumed engine publishes the same next model as one that never stopped."""
    rng = np.random.default_rng(1)
    v0 = ModelVersion.create(0, {"w": (0.1 * rng.standard_normal((16, 24))).astype(np.float32)})
    params = RoundParams(lam=0.5, S=16, sparsification=Sparsification(topk=0.1))

    def engine(**kw: object) -> RoundEngine:
        return RoundEngine(
            v0 if "downlink_state" not in kw else kw.pop("model"),  # type: ignore[arg-type]
            schedule=params,
            server_optimizer=ServerOptimizer("yogi", eta=0.01),
            threads=1,
            **kw,  # type: ignore[arg-type]
        )

    def round_of(e: RoundEngine, r: int) -> str:
        member = ClientEngine(v0.spec, "c", initial=v0, threads=1)
        member.receive(e.package_for("c", **member.request()))
        local = {"w": member.model.tensors["w"] + np.float32(0.01 * r)}
        aggregator = e.aggregator()
        aggregator.accept_update(member.encode(local, params, round_number=r, num_examples=5))
        return e.publish(aggregator).model.digest

    whole = engine()
    for r in (1, 2):
        round_of(whole, r)
    arrays, meta = whole.state()
    assert "optimizer" in meta
    resumed = engine(model=whole.global_model, downlink_state=(arrays, meta))
    assert resumed.server_optimizer is not None
    assert resumed.server_optimizer.steps == 2
    assert round_of(resumed, 3) == round_of(whole, 3)
