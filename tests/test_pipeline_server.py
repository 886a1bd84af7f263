"""Server side: FedAvg by decode-and-accumulate, and rejected updates that change nothing."""

from __future__ import annotations

import numpy as np
import pytest

import fedcodec
from fedcodec.errors import CorruptStreamError, FedCodecError
from fedcodec.pipeline import (
    Aggregator,
    BaseDigestMismatchError,
    DuplicateUpdateError,
    EmptyRoundError,
    ModelHistory,
    ModelMismatchError,
    ModelVersion,
    RobustPolicy,
    RoundClosedError,
    RoundParams,
    StaleBaseVersionError,
    UnknownBaseVersionError,
    UpdateEncoder,
    UpdateRejectedError,
)
from fedcodec.pipeline.client import EncodedUpdate

SHAPES = {"w": (24, 40), "b": (24,), "out": (5, 24)}


def _global(version: int = 0, seed: int = 0) -> ModelVersion:
    rng = np.random.default_rng(seed)
    return ModelVersion.create(
        version, {k: (rng.standard_normal(s) * 0.1).astype(np.float32) for k, s in SHAPES.items()}
    )


def _updates(base: ModelVersion, count: int, seed: int = 1) -> list[EncodedUpdate]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        enc = UpdateEncoder(base.spec, f"c{i}", threads=1)
        local = {
            k: base.tensors[k] + (rng.laplace(size=v.shape) * 1e-2).astype(np.float32)
            for k, v in base.tensors.items()
        }
        params = RoundParams(lam=0.1, S=16 + 8 * i)
        out.append(enc.encode(local, base, params, round_number=0, num_examples=5 + 7 * i))
    return out


def test_aggregation_equals_dense_numpy_fedavg() -> None:
    base = _global()
    updates = _updates(base, 6)
    # Plain FedAvg (the default policy caps a client's share at 1/4; the largest here is 0.3).
    agg = Aggregator(base, round_number=0, threads=1, policy=RobustPolicy.fedavg())
    for u in updates:
        agg.accept_update(u)
    new = agg.finalize()
    total = sum(u.num_examples for u in updates)
    for name in SHAPES:
        dense = sum(
            u.num_examples * fedcodec.decode(u.data, names=list(SHAPES))[name].astype(np.float64)
            for u in updates
        )
        expected = (base.tensors[name].astype(np.float64) + dense / total).astype(np.float32)
        np.testing.assert_allclose(new.tensors[name], expected, rtol=1e-6, atol=1e-8)
    assert new.version == 1
    assert agg.total_examples == total
    assert agg.bytes_up == sum(len(u) for u in updates)
    mean = agg.mean_update()
    assert mean["w"].dtype == np.float32
    stats = agg.round_stats()
    assert stats.num_examples == total
    assert len(stats.updates) == 6
    assert stats.update_rms > 0


def test_memory_is_one_accumulator_per_tensor() -> None:
    base = _global()
    agg = Aggregator(base, round_number=0, threads=1)
    accumulators = list(agg._acc)
    for u in _updates(base, 5):
        agg.accept_update(u)
    assert all(a is b for a, b in zip(accumulators, agg._acc, strict=True))
    assert [a.dtype for a in agg._acc] == [np.float64] * len(SHAPES)


def test_rejected_updates_never_change_the_aggregate() -> None:
    history = ModelHistory()
    old = _global(0, seed=5)
    history.add(old)
    base = _global(1)
    history.add(base)
    good = _updates(base, 4)
    clean = Aggregator(base, round_number=0, history=history, threads=1)
    for u in good:
        clean.accept_update(u)

    agg = Aggregator(base, round_number=0, history=history, threads=1)
    other = ModelVersion.create(1, {"w": np.zeros((24, 40), np.float32)})
    wrong_shape = UpdateEncoder(other.spec, "x", threads=1).encode(
        {"w": np.ones((24, 40), np.float32)}, other, RoundParams(), round_number=0, num_examples=1
    )
    # a compact container (it stores only a digest of the shapes) coded for another model
    compact_other = UpdateEncoder(other.spec, "x", threads=1, compact=True).encode(
        {"w": np.ones((24, 40), np.float32)}, other, RoundParams(), round_number=0, num_examples=1
    )
    with pytest.raises(ModelMismatchError, match="compact container coded for other") as mm:
        agg.accept(compact_other.data, client_id="c1", base_version=1, num_examples=3)
    assert "expected_shapes" not in str(mm.value)  # the refusal reaches remote clients
    corrupt = bytearray(good[1].data)
    corrupt[len(corrupt) // 2] ^= 0x40
    # A valid container (level 1 x 1e38 is finite) whose step is beyond the aggregator's limit.
    huge_step = fedcodec.encode_levels(
        [np.ones(s, np.int32) for s in SHAPES.values()], step=1e38
    ).data
    bad_calls = [
        (UnknownBaseVersionError, {"data": good[1].data, "client_id": "c1", "base_version": 99}),
        (StaleBaseVersionError, {"data": good[1].data, "client_id": "c1", "base_version": 0}),
        (ModelMismatchError, {"data": wrong_shape.data, "client_id": "c1", "base_version": 1}),
        (CorruptStreamError, {"data": bytes(corrupt), "client_id": "c1", "base_version": 1}),
        (CorruptStreamError, {"data": good[1].data[:-9], "client_id": "c1", "base_version": 1}),
        (UpdateRejectedError, {"data": huge_step, "client_id": "c1", "base_version": 1}),
        (
            BaseDigestMismatchError,
            {"data": good[1].data, "client_id": "c1", "base_version": 1, "base_digest": "0" * 64},
        ),
    ]
    agg.accept_update(good[0])
    for error, kwargs in bad_calls:
        with pytest.raises(error):
            agg.accept(num_examples=3, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(UpdateRejectedError, match="num_examples"):
        agg.accept(good[1].data, client_id="c1", base_version=1, num_examples=0)
    for u in good[1:]:
        agg.accept_update(u)
    with pytest.raises(DuplicateUpdateError) as dup:
        agg.accept_update(good[2])
    assert dup.value.same_payload
    with pytest.raises(DuplicateUpdateError) as dup:
        agg.accept(good[3].data, client_id="c2", base_version=1, num_examples=1)
    assert not dup.value.same_payload
    assert agg.rejected == len(bad_calls) + 4
    assert agg.num_updates == 4
    a, b = agg.finalize(), clean.finalize()
    assert a.digest == b.digest  # bit-identical to the round without the bad updates
    with pytest.raises(RoundClosedError):
        agg.accept_update(good[0])
    assert all(issubclass(e, FedCodecError) for e, _ in bad_calls)


def test_wrong_round_and_empty_round() -> None:
    base = _global()
    agg = Aggregator(base, round_number=3, threads=1)
    with pytest.raises(StaleBaseVersionError, match="round"):
        agg.accept_update(_updates(base, 1)[0])  # made for round 0
    with pytest.raises(EmptyRoundError):
        agg.finalize()


def test_base_digests_accept_the_downlink_reconstruction() -> None:
    base = _global()
    u = _updates(base, 1)[0]
    agg = Aggregator(base, round_number=0, base_digests={"a" * 64, base.digest})
    agg.accept(u.data, client_id="c0", base_version=0, num_examples=1, base_digest="a" * 64)
    assert agg.num_updates == 1


def test_server_learning_rate_scales_the_mean() -> None:
    base = _global()
    ups = _updates(base, 3)
    one, half = Aggregator(base, round_number=0), Aggregator(base, round_number=0, server_lr=0.5)
    for u in ups:
        one.accept_update(u)
        half.accept_update(u)
    for k in SHAPES:
        d1 = one.finalize().tensors[k].astype(np.float64) - base.tensors[k]
        d2 = half.finalize().tensors[k].astype(np.float64) - base.tensors[k]
        np.testing.assert_allclose(d2, 0.5 * d1, atol=1e-7)


def test_concurrent_accepts_equal_sequential_aggregation() -> None:
    from concurrent.futures import ThreadPoolExecutor

    base = _global()
    ups = _updates(base, 8)
    sequential = Aggregator(base, round_number=0, threads=1)
    for u in ups:
        sequential.accept_update(u)
    parallel = Aggregator(base, round_number=0, threads=1)
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(parallel.accept_update, ups))
    assert parallel.num_updates == 8
    for k in SHAPES:
        np.testing.assert_allclose(
            parallel.finalize().tensors[k], sequential.finalize().tensors[k], rtol=1e-6, atol=1e-9
        )
