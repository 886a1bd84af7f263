"""The round engine: the download rule, update validation without an accumulator,
the shared initial model, publishing, and a seeded federation run in process."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from fedcodec.codec import inspect as codec_inspect
from fedcodec.errors import CorruptStreamError
from fedcodec.pipeline import (
    BaseDigestMismatchError,
    ClientEngine,
    DuplicateUpdateError,
    InitialModelError,
    ModelMismatchError,
    ModelVersion,
    RoundEngine,
    RoundParams,
    StaleBaseVersionError,
    Submission,
    UnknownBaseVersionError,
)


def model(seed: int = 0, tensors: int = 3, shape: tuple[int, int] = (32, 48)) -> ModelVersion:
    rng = np.random.default_rng(seed)
    return ModelVersion.create(
        0,
        {f"t{i}": (0.1 * rng.standard_normal(shape)).astype(np.float32) for i in range(tensors)},
    )


def local(base: ModelVersion, seed: int, scale: float = 0.01) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        k: v + (scale * rng.standard_normal(v.shape)).astype(np.float32)
        for k, v in base.tensors.items()
    }


def federation(
    seed: int, rounds: int = 6, clients: int = 10, per_round: int = 4
) -> list[tuple[int, int, str]]:
    """(bytes up, bytes down, stream digest) per round of a seeded in-process federation."""
    v0 = model(seed)
    engine = RoundEngine(v0, schedule=RoundParams(budget_bytes=600), threads=1)
    members = [ClientEngine(v0.spec, f"c{i}", initial=v0, threads=1) for i in range(clients)]
    rng = np.random.default_rng(seed)
    out = []
    for r in range(1, rounds + 1):
        chosen = sorted(rng.choice(clients, per_round, replace=False).tolist())
        aggregator = engine.aggregator()
        up = down = 0
        for i in chosen:
            member = members[i]
            if not member.holds(engine.version, engine.stream_digest):
                package = engine.package_for(member.client_id, **member.request())
                member.receive(package)
                down += len(package)
            update = member.encode(
                local(member.model, seed=1000 * r + i),
                engine.round_params().for_client(member.client_id),
                round_number=r,
                num_examples=10 + i,
            )
            aggregator.accept_update(update)
            up += len(update)
        outcome = engine.publish(aggregator)
        out.append((up, down, outcome.release.digest))
    return out


def test_a_seeded_federation_is_deterministic_and_first_contact_costs_a_delta() -> None:
    first, again = federation(3), federation(3)
    assert first == again
    assert first != federation(4)


def test_first_contact_in_a_shared_initial_stream_is_a_delta_not_a_keyframe() -> None:
    v0 = model()
    engine = RoundEngine(v0, schedule=RoundParams(S=16), threads=1)
    keyframe_engine = RoundEngine(v0, schedule=RoundParams(S=16), shared_initial=False, threads=1)
    assert engine.initial is not None
    assert engine.initial.digest == v0.digest
    assert keyframe_engine.initial is None
    member = ClientEngine(v0.spec, "a", initial=v0, threads=1)
    # Up to date at version 0: nothing to download at all.
    assert len(engine.package_for("a", **member.request())) == 0
    for e in (engine, keyframe_engine):
        agg = e.aggregator()
        for i in range(2):
            sender = ClientEngine(v0.spec, f"s{i}", initial=v0, threads=1)
            agg.accept_update(
                sender.encode(local(v0, i), RoundParams(S=16), round_number=1, num_examples=5)
            )
        e.publish(agg)
    package = engine.package_for("a", **member.request())
    assert not package.is_keyframe
    assert package.deltas
    assert member.receive(package).digest == engine.stream_digest
    first_keyframe = keyframe_engine.package_for("b")
    assert first_keyframe.is_keyframe
    assert len(package) < len(first_keyframe) / 2


def test_a_client_without_the_initial_model_gets_a_clear_error_or_the_model_once() -> None:
    v0 = model()
    other = model(seed=9)
    engine = RoundEngine(v0, initial_id="toy/seed=0", threads=1)
    with pytest.raises(InitialModelError, match=r"initial_digest.*toy/seed=0"):
        engine.package_for("x")
    with pytest.raises(InitialModelError, match="initial_digest"):
        engine.package_for("x", initial_digest=other.digest, want_initial=True)
    lenient = RoundEngine(v0, send_initial=True, threads=1)
    package = lenient.package_for("x", want_initial=True)
    assert package.initial is not None
    assert len(package.initial) == 4 * v0.spec.numel
    member = ClientEngine(v0.spec, "x", threads=1)
    assert member.receive(package).digest == lenient.stream_digest
    assert member.initial_digest == v0.digest
    with pytest.raises(InitialModelError, match="initial_digest"):
        ClientEngine(v0.spec, "y", initial=other).check_initial(engine.initial)


def test_validate_update_refuses_bad_updates_naming_the_problem_and_changes_nothing() -> None:
    v0 = model()
    engine = RoundEngine(v0, schedule=RoundParams(S=16), threads=1)
    member = ClientEngine(v0.spec, "a", initial=v0, threads=1)
    update = member.encode(local(v0, 1), RoundParams(S=16), round_number=1, num_examples=7)
    good = Submission.of(update)
    stats = engine.validate_update(
        good.data,
        client_id="a",
        base_version=0,
        num_examples=7,
        base_digest=good.base_digest,
    )
    assert stats.bytes == len(update)
    assert len(stats.steps) == 3

    def check(**changes: object) -> None:
        fields = {
            "client_id": "a",
            "base_version": 0,
            "num_examples": 7,
            "base_digest": good.base_digest,
        }
        fields.update(changes)
        data = fields.pop("data", good.data)
        engine.validate_update(data, **fields)  # type: ignore[arg-type]

    with pytest.raises(UnknownBaseVersionError, match="base version 5"):
        check(base_version=5)
    with pytest.raises(BaseDigestMismatchError, match="base digest"):
        check(base_digest="0" * 64)
    with pytest.raises(DuplicateUpdateError):
        check(accepted={"a"})
    with pytest.raises(ValueError, match="num_examples"):
        check(num_examples=0)
    wrong_shape = ClientEngine(model(tensors=2).spec, "a", threads=1).encode(
        local(model(tensors=2), 1),
        RoundParams(S=16),
        round_number=1,
        num_examples=7,
        base=model(tensors=2),
    )
    with pytest.raises(ModelMismatchError, match="holds 2 tensors"):
        check(data=wrong_shape.data)
    broken = bytearray(good.data)
    broken[len(broken) // 2] ^= 0xFF
    with pytest.raises(CorruptStreamError):
        check(data=bytes(broken))
    # After a round, version 0 is stale, not unknown.
    agg = engine.aggregator()
    agg.accept_update(update)
    engine.publish(agg)
    with pytest.raises(StaleBaseVersionError, match="against version 0"):
        check()
    assert engine.version == 1


def test_validate_update_allocates_no_model_sized_accumulator() -> None:
    v0 = model(tensors=8, shape=(128, 256))  # 8 tensors of 32 Ki weights
    engine = RoundEngine(v0, schedule=RoundParams(lam=0.0, S=256), threads=1)
    member = ClientEngine(v0.spec, "a", initial=v0, threads=1)
    update = member.encode(
        local(v0, 1, 0.05), RoundParams(lam=0.0, S=256), round_number=1, num_examples=1
    )
    tracemalloc.start()
    try:
        engine.validate_update(update.data, client_id="a", base_version=0, num_examples=1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    tensor_bytes = 4 * 128 * 256  # one tensor as float32
    # One tensor's float32 scratch and its float64 norm pass: per tensor, not per model
    # (the model as float64 is 16 tensor_bytes), and one copy of the upload (verify splits
    # it by tensor, so each tensor's decode reads its own part, not the whole upload again).
    assert peak < 4 * tensor_bytes + len(update.data)
    tracemalloc.start()
    try:
        engine.aggregator().accept_update(update)
        _, accumulate_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert accumulate_peak > 8 * v0.spec.numel  # the aggregator's float64 accumulator


def test_a_stale_client_pays_at_most_one_keyframe() -> None:
    v0 = model(tensors=2, shape=(64, 64))
    params = RoundParams(budget_bytes=800)
    engine = RoundEngine(v0, schedule=params, threads=1)
    stale = ClientEngine(v0.spec, "stale", initial=v0, threads=1)
    worker = ClientEngine(v0.spec, "worker", initial=v0, threads=1)
    for r in range(1, 23):
        if not worker.holds(engine.version, engine.stream_digest):
            worker.receive(engine.package_for("worker", **worker.request()))
        agg = engine.aggregator()
        agg.accept_update(
            worker.encode(local(worker.model, r, 0.02), params, round_number=r, num_examples=3)
        )
        engine.publish(agg)
        if r == 2:
            stale.receive(engine.package_for("stale", **stale.request()))
    package = engine.package_for("stale", **stale.request())
    assert stale.receive(package).digest == engine.stream_digest
    assert len(package) <= len(engine.downlink.keyframe())


@pytest.mark.parametrize(
    "params",
    [
        RoundParams(S=16, quantizer="trellis"),
        RoundParams(S=16, quantizer="trellis8"),
        RoundParams(lam=0.0, S=16, quantizer="dither", dither_salt=7),
        RoundParams(budget_bytes=700, quantizer="trellis"),
    ],
)
def test_every_quantizer_runs_through_the_engine(params: RoundParams) -> None:
    v0 = model()
    engine = RoundEngine(v0, schedule=params, threads=1)
    aggregator = engine.aggregator()
    for i in range(3):
        member = ClientEngine(v0.spec, f"c{i}", initial=v0, threads=1)
        update = member.encode(
            local(v0, i), engine.round_params(), round_number=1, num_examples=4 + i
        )
        infos = codec_inspect(update.data)
        assert {info.quantizer for info in infos} == {params.quantizer}
        engine.validate_update(update.data, client_id=f"c{i}", base_version=0, num_examples=4 + i)
        aggregator.accept_update(update)
    outcome = engine.publish(aggregator)
    assert outcome.model.version == 1
    if params.quantizer == "dither":
        seeds = {info.dither_seed for info in infos}
        assert None not in seeds


def test_quantizer_parameters_are_checked_naming_the_field() -> None:
    with pytest.raises(ValueError, match="quantizer must be one of"):
        RoundParams(quantizer="lloyd")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lam must be 0"):
        RoundParams(quantizer="dither")
    with pytest.raises(ValueError, match="downlink cannot use"):
        RoundEngine(model(), downlink=RoundParams(lam=0.0, quantizer="dither"), threads=1)
