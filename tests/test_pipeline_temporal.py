"""Temporal references in the round engine's uplink: UpdateEncoder(temporal_reference=True)
codes each update against the client's previous decoded update; the server's
ClientReferences keeps that update per client."""

from __future__ import annotations

import numpy as np
import pytest

from fedcodec.pipeline import (
    Aggregator,
    ClientReferences,
    ModelVersion,
    RobustPolicy,
    RoundParams,
    UpdateEncoder,
)
from fedcodec.pipeline.errors import UpdateRejectedError

SHAPES = {"w": (48, 64), "b": (64,)}


def _local(base: ModelVersion, client: int, rnd: int) -> dict[str, np.ndarray]:
    """A client's trained weights: a per-client direction that persists over rounds, plus noise."""
    direction = np.random.default_rng(client)
    noise = np.random.default_rng([client, rnd])
    out = {}
    for name, shape in SHAPES.items():
        d = direction.laplace(0, 1e-3, size=shape) * (np.abs(direction.normal(size=shape)) > 0.5)
        out[name] = (base.tensors[name] + d + noise.laplace(0, 2e-4, size=shape)).astype(np.float32)
    return out


def _run(temporal: bool, rounds: int = 4, params: RoundParams | None = None) -> tuple[int, dict]:
    params = params or RoundParams(lam=0.0, step=1e-4)
    base = ModelVersion.create(0, {n: np.zeros(s, np.float32) for n, s in SHAPES.items()})
    encoders = [
        UpdateEncoder(base.spec, f"c{i}", threads=1, temporal_reference=temporal) for i in range(3)
    ]
    store = ClientReferences() if temporal else None
    total = 0
    for rnd in range(rounds):
        agg = Aggregator(
            base, round_number=rnd, threads=1, policy=RobustPolicy.fedavg(), references=store
        )
        for i, enc in enumerate(encoders):
            update = enc.encode(
                _local(base, i, rnd), base, params, round_number=rnd, num_examples=10 + i
            )
            assert update.uses_reference == (temporal and rnd > 0)
            agg.accept_update(update)
            total += len(update)
        base = agg.finalize()
    if store is not None:
        numel = sum(int(np.prod(s)) for s in SHAPES.values())
        assert len(store) == 3
        assert store.memory_bytes == 3 * 4 * numel
    return total, dict(base.tensors)


def test_same_model_fewer_bytes() -> None:
    """With rounding (lam = 0) the levels do not depend on the contexts: the aggregated
    model is bit-identical with and without references, and the references save bytes."""
    plain_bytes, plain = _run(False)
    ref_bytes, with_ref = _run(True)
    for name in SHAPES:
        assert np.array_equal(plain[name], with_ref[name])
    assert ref_bytes < plain_bytes


@pytest.mark.parametrize("robust", [False, True])
def test_rd_quantizer_and_round_level_rules(robust: bool) -> None:
    """RD quantization and a round-level policy (updates decoded again at finalize)."""
    params = RoundParams(S=32)
    base = ModelVersion.create(0, {n: np.zeros(s, np.float32) for n, s in SHAPES.items()})
    enc = UpdateEncoder(base.spec, "c0", threads=1, temporal_reference=True)
    store = ClientReferences()
    policy = RobustPolicy() if robust else RobustPolicy.fedavg()
    for rnd in range(3):
        agg = Aggregator(base, round_number=rnd, threads=1, policy=policy, references=store)
        local = _local(base, 0, rnd)
        before = {n: r.copy() for n, r in enc.residual.items()}
        update = enc.encode(local, base, params, round_number=rnd, num_examples=5)
        assert update.uses_reference == (rnd > 0)
        agg.accept_update(update)
        new = agg.finalize()
        if not robust:
            # one client, plain FedAvg: the server applied exactly the client's reconstruction
            for n in SHAPES:
                recon = (local[n] - base.tensors[n] + before[n]) - enc.residual[n]
                assert np.allclose(new.tensors[n] - base.tensors[n], recon, atol=1e-7)
        base = new
    assert "c0" in store


def test_refused_without_the_servers_reference_then_resent() -> None:
    params = RoundParams(lam=0.0, step=1e-4)
    base = ModelVersion.create(0, {n: np.zeros(s, np.float32) for n, s in SHAPES.items()})
    enc = UpdateEncoder(base.spec, "c0", threads=1, temporal_reference=True)
    store = ClientReferences()
    agg = Aggregator(base, round_number=0, threads=1, references=store)
    agg.accept_update(enc.encode(_local(base, 0, 0), base, params, round_number=0, num_examples=5))
    base = agg.finalize()
    # round 1 is lost on the way: the client's reference moves on, the server's does not
    enc.encode(_local(base, 0, 1), base, params, round_number=1, num_examples=5)
    agg = Aggregator(base, round_number=2, threads=1, references=store)
    held = enc.reference
    assert held is not None
    enc_ref_before = [held[n] for n in base.spec.names]
    update = enc.encode(_local(base, 0, 2), base, params, round_number=2, num_examples=5)
    with pytest.raises(UpdateRejectedError, match="another temporal reference"):
        agg.accept_update(update)
    # a server without references, and a store that forgot the client
    with pytest.raises(UpdateRejectedError, match="keeps no per-client references"):
        Aggregator(base, round_number=2, threads=1).accept_update(update)
    store.discard("c0")
    with pytest.raises(UpdateRejectedError, match="holds none"):
        agg.accept_update(update)
    enc.drop_reference()
    again = enc.encode(_local(base, 0, 2), base, params, round_number=2, num_examples=5)
    assert not again.uses_reference
    # drop_reference() restored the state before the refused update: with rounding the
    # resend carries the same levels as the refused one
    from fedcodec import codec

    refused = codec.decode_levels(update.data, reference=list(enc_ref_before))
    resent = codec.decode_levels(again.data)
    for (a, _), (b, _) in zip(refused, resent, strict=True):
        assert np.array_equal(a, b)
    agg.accept_update(again)
    agg.finalize()
    assert "c0" in store


def test_store_limit() -> None:
    store = ClientReferences(max_clients=2)
    for c in ("a", "b", "c"):
        store.put(c, [np.zeros(3, np.float32)])
    assert "a" not in store
    assert len(store) == 2
    with pytest.raises(ValueError, match="max_clients"):
        ClientReferences(max_clients=0)


def test_round_engine_with_references() -> None:
    """The round engine: ClientEngine(temporal_reference=True) on the client side,
    RoundEngine(aggregator_options={"references": ...}) on the server; validate_update
    checks the reference too."""
    from fedcodec.pipeline import ClientEngine, RoundEngine, Submission

    v0 = ModelVersion.create(0, {n: np.zeros(s, np.float32) for n, s in SHAPES.items()})
    store = ClientReferences()
    engine = RoundEngine(
        v0, schedule=RoundParams(S=32), threads=1, aggregator_options={"references": store}
    )
    members = [
        ClientEngine(v0.spec, f"c{i}", initial=v0, threads=1, temporal_reference=True)
        for i in range(2)
    ]
    for r in range(1, 4):
        aggregator = engine.aggregator()
        for i, member in enumerate(members):
            if not member.holds(engine.version, engine.stream_digest):
                member.receive(engine.package_for(member.client_id, **member.request()))
            update = member.encode(
                _local(member.model, i, r),
                engine.round_params(),
                round_number=r,
                num_examples=10,
            )
            assert update.uses_reference == (r > 1)
            engine.validate_update(
                update.data,
                client_id=update.client_id,
                base_version=update.base_version,
                num_examples=update.num_examples,
                base_digest=update.base_digest,
            )
            if r == 3 and i == 1:
                # the server forgot this client: refused; the client resends without
                store.discard(member.client_id)
                with pytest.raises(UpdateRejectedError, match="holds none"):
                    engine.validate_update(
                        update.data,
                        client_id=update.client_id,
                        base_version=update.base_version,
                        num_examples=update.num_examples,
                    )
                member.encoder.drop_reference()
                update = member.encode(
                    _local(member.model, i, r),
                    engine.round_params(),
                    round_number=r,
                    num_examples=10,
                )
                assert not update.uses_reference
            aggregator.accept(
                Submission.of(update).data,
                client_id=update.client_id,
                base_version=update.base_version,
                num_examples=update.num_examples,
                base_digest=update.base_digest,
            )
        engine.publish(aggregator)
    assert len(store) == 2


def test_sparsified_updates_go_without_reference() -> None:
    from fedcodec.pipeline import Sparsification

    base = ModelVersion.create(0, {n: np.zeros(s, np.float32) for n, s in SHAPES.items()})
    enc = UpdateEncoder(base.spec, "c0", threads=1, temporal_reference=True)
    sparse = RoundParams(S=16, sparsification=Sparsification(topk=0.05))
    dense = RoundParams(S=16)
    first = enc.encode(_local(base, 0, 0), base, dense, round_number=0, num_examples=5)
    assert not first.uses_reference
    second = enc.encode(_local(base, 0, 1), base, sparse, round_number=1, num_examples=5)
    assert enc.has_reference
    assert not second.uses_reference
    third = enc.encode(_local(base, 0, 2), base, dense, round_number=2, num_examples=5)
    assert third.uses_reference


def test_engine_names_its_reference_and_clients_use_only_a_matching_one() -> None:
    """RoundEngine(client_references=N): reference_token names what it keeps; a client
    that syncs to it codes with its reference only when the tokens agree, so no update
    is refused; decode_update decodes with the reference; at most N are kept."""
    from fedcodec.pipeline import ClientEngine, RoundEngine

    v0 = ModelVersion.create(0, {n: np.zeros(s, np.float32) for n, s in SHAPES.items()})
    engine = RoundEngine(v0, schedule=RoundParams(S=32), threads=1, client_references=2)
    assert engine.references is not None
    assert engine.references.max_clients == 2
    members = [ClientEngine(v0.spec, f"c{i}", initial=v0, threads=1) for i in range(3)]
    used: list[list[bool]] = []
    for r, taking_part in ((1, (0, 1, 2)), (2, (0, 1)), (3, (0, 1, 2))):
        row = []
        for i in taking_part:
            member = members[i]
            token = engine.reference_token(member.client_id)
            if r == 3 and i == 1:
                token = "0" * 16  # the server names another reference than the client holds
            will = member.sync_reference(token)
            update = member.encode(
                _local(member.model, i, r), engine.round_params(), round_number=r, num_examples=5
            )
            assert update.uses_reference == will
            row.append(will)
            _, decoded = engine.decode_update(
                update.data,
                client_id=member.client_id,
                base_version=update.base_version,
                num_examples=update.num_examples,
            )
            engine.remember_reference(member.client_id, decoded)
            held = member.encoder.reference
            assert held is not None
            for name in v0.spec.names:  # the server keeps what the client holds, bit for bit
                assert decoded[name].tobytes() == held[name].tobytes()
            assert engine.reference_token(member.client_id) == member.encoder.reference_token
        used.append(row)
    # Two references kept, least recently stored forgotten first: after round 1 those of
    # c1 and c2; c0 then evicts c1, c1 evicts c2; in round 3 c0 has its reference, c1's is
    # named wrongly, c2's was evicted.
    assert used == [[False, False, False], [False, False], [True, False, False]]
    assert len(engine.references) == 2
    numel = sum(int(np.prod(s)) for s in SHAPES.values())
    assert engine.references.memory_bytes == 2 * 4 * numel
    # Offered no longer: the client drops its reference (no memory).
    assert not members[0].sync_reference(None, offered=False)
    assert members[0].encoder.reference is None
    with pytest.raises(ValueError, match="client_references"):
        RoundEngine(v0, client_references=-1)


def _uses_reference(data: bytes) -> bool:
    from fedcodec import codec

    return any(info.reference_digest is not None for info in codec.inspect(data))


def _downlink_run(reference: bool) -> tuple[list[list[tuple[str, int, bool]]], int, list[str]]:
    """Three clients; c2 misses rounds 2-3.  Per round and client: the package kind,
    its bytes and whether a delta uses a reference; the final model digests."""
    from fedcodec.pipeline import ClientEngine, RoundEngine

    v0 = ModelVersion.create(0, {n: np.zeros(s, np.float32) for n, s in SHAPES.items()})
    params = RoundParams(lam=0.0, step=1e-4)
    engine = RoundEngine(
        v0, schedule=params, threads=1, keep=8, downlink_reference=reference, cumulative=False
    )
    members = [ClientEngine(v0.spec, f"c{i}", initial=v0, threads=1) for i in range(3)]
    log: list[list[tuple[str, int, bool]]] = []
    total = 0
    for r in range(1, 7):
        row = []
        aggregator = engine.aggregator()
        for i, member in enumerate(members):
            if i == 2 and r in (2, 3):
                continue
            package = engine.package_for(member.client_id, **member.request())
            member.receive(package)  # digest-checked: the same model as the server's stream
            total += len(package)
            used = any(_uses_reference(d) for d in package.deltas)
            row.append((member.client_id, len(package.deltas), used))
            update = member.encode(
                _local(member.model, i, r), params, round_number=r, num_examples=5
            )
            aggregator.accept_update(update)
        engine.publish(aggregator)
        log.append(row)
    digests = []
    for member in members:
        member.receive(engine.package_for(member.client_id, **member.request()))
        digests.append(member.model.digest)
    return log, total, digests


def test_downlink_reference_for_clients_that_hold_the_previous_delta() -> None:
    """RoundEngine(downlink_reference=True): a version delta is coded against the previous
    one for a client that holds it (it came by a chain, or earlier in the same chain); the
    models are the same as without (same levels), the bytes fewer."""
    log, total, digests = _downlink_run(True)
    plain_log, plain_total, plain_digests = _downlink_run(False)
    assert digests == plain_digests
    assert total < plain_total
    assert not any(used for row in plain_log for _, _, used in row)
    # Round 1: nothing to download (the shared initial model); round 2: the first version
    # delta (no previous one); from round 3 up-to-date clients get the referenced coding.
    assert log[1] == [("c0", 1, False), ("c1", 1, False)]
    assert all(used for row in log[2:] for c, _, used in row if c != "c2")
    # c2 missed rounds 2-3: it catches up by a keyframe (smaller than the chain here), so
    # its next delta goes without reference, the one after with.
    assert [entry for row in log[3:] for entry in row if entry[0] == "c2"] == [
        ("c2", 0, False),
        ("c2", 1, False),
        ("c2", 1, True),
    ]


def test_a_delta_coded_against_a_delta_the_receiver_lacks_is_a_clear_error() -> None:
    """A receiver that got its version by a keyframe (or lost its state) holds no delta:
    a referenced delta is refused before anything changes (the transport asks for a
    keyframe), and the receiver's saved state keeps the delta it holds."""
    from fedcodec.pipeline import ClientEngine, DigestMismatchError, ModelReceiver, RoundEngine

    v0 = ModelVersion.create(0, {n: np.zeros(s, np.float32) for n, s in SHAPES.items()})
    params = RoundParams(lam=0.0, step=1e-4)
    engine = RoundEngine(v0, schedule=params, threads=1, downlink_reference=True)
    member = ClientEngine(v0.spec, "c0", initial=v0, threads=1)
    for r in range(1, 4):
        member.receive(engine.package_for("c0", **member.request()))
        aggregator = engine.aggregator()
        aggregator.accept_update(
            member.encode(_local(member.model, 0, r), params, round_number=r, num_examples=5)
        )
        engine.publish(aggregator)
    # The receiver's state carries its delta: a restored one decodes the referenced delta.
    arrays, meta = member.receiver.state()
    restored = ModelReceiver(v0.spec, threads=1)
    restored.load_state(arrays, meta)
    assert restored.holds_delta
    package = engine.package_for("c0", **member.request())
    assert any(_uses_reference(d) for d in package.deltas)
    assert restored.apply(package).digest == member.receive(package).digest
    # Told it holds the delta while it does not (a state without it): refused, unchanged.
    engine.publish(_next(engine, member, params))  # type: ignore[arg-type]
    bare = ModelReceiver(v0.spec, threads=1)
    bare.load_state(*_without_delta(*member.receiver.state()))
    assert not bare.holds_delta
    forged = engine.package_for("c0", **{**member.request(), "holds_delta": True})
    with pytest.raises(DigestMismatchError, match="previous version's delta"):
        bare.apply(forged)
    assert bare.version == member.receiver.version
    # Told the truth, the same receiver gets the plain coding.
    honest = engine.package_for("c0", **{**member.request(), "holds_delta": False})
    assert not any(_uses_reference(d) for d in honest.deltas)
    assert bare.apply(honest).digest == member.receive(honest).digest
    # A chain: after its first delta (plain for a client without the delta of its version)
    # the deltas use references — the client decoded the previous one just before.
    lagging = ModelReceiver(v0.spec, threads=1)
    lagging.load_state(*_without_delta(arrays, meta))
    found = engine.downlink._chain(lagging.version or 0, references=True)
    assert found is not None
    chain, on_held = found
    assert not on_held
    assert [_uses_reference(d) for d in chain] == [False, True]
    from fedcodec.pipeline import DownlinkPackage

    latest = engine.downlink.latest_version
    assert latest is not None
    package = DownlinkPackage(
        latest,
        engine.stream_digest,
        None,
        lagging.version,
        chain,
        initial_version=0,
        initial_digest=v0.digest,
    )
    assert lagging.apply(package).digest == engine.stream_digest
    assert lagging.holds_delta


def _next(engine: object, member: object, params: RoundParams) -> object:
    from fedcodec.pipeline import ClientEngine, RoundEngine

    assert isinstance(engine, RoundEngine)
    assert isinstance(member, ClientEngine)
    aggregator = engine.aggregator()
    aggregator.accept_update(
        member.encode(
            _local(member.model, 0, 9),
            params,
            round_number=aggregator.round_number,
            num_examples=5,
        )
    )
    return aggregator


def _without_delta(arrays: dict, meta: dict) -> tuple[dict, dict]:
    kept = {k: v for k, v in arrays.items() if not k.startswith("lastdelta/")}
    return kept, {k: v for k, v in meta.items() if k != "has_last_delta"}


def test_an_update_whose_tensors_all_dropped_the_reference_needs_none() -> None:
    """The codec keeps a reference tensor by tensor only where it pays: an update whose
    reference is unrelated to it is coded without any, says so, and is accepted (and, stored,
    survives a restart: ``temporal_reference_for`` reads the per-tensor flags) by a server
    that holds no reference for the client."""
    from fedcodec.pipeline.server import temporal_reference_for

    params = RoundParams(lam=0.0, step=1e-4)
    base = ModelVersion.create(0, {n: np.zeros(s, np.float32) for n, s in SHAPES.items()})
    enc = UpdateEncoder(base.spec, "c0", threads=1, temporal_reference=True)
    enc.encode(_local(base, 0, 0), base, params, round_number=0, num_examples=5)
    assert enc.has_reference
    # round 1: a different direction altogether (client 7's), unrelated to round 0's update
    update = enc.encode(_local(base, 7, 1), base, params, round_number=1, num_examples=5)
    assert not update.uses_reference
    assert temporal_reference_for(update.data, "c0", None) is None
    agg = Aggregator(base, round_number=1, threads=1)  # keeps no references
    agg.accept_update(update)
    agg.finalize()
    # the same client's next, related update does use it
    related = enc.encode(_local(base, 7, 2), base, params, round_number=2, num_examples=5)
    assert related.uses_reference
    with pytest.raises(UpdateRejectedError, match="keeps no per-client references"):
        temporal_reference_for(related.data, "c0", None)


def _referenced_engine(rounds: int = 4) -> tuple[object, object, RoundParams]:
    """A RoundEngine with downlink references and a client that followed every version."""
    from fedcodec.pipeline import ClientEngine, RoundEngine

    v0 = ModelVersion.create(0, {n: np.zeros(s, np.float32) for n, s in SHAPES.items()})
    params = RoundParams(lam=0.0, step=1e-4)
    engine = RoundEngine(v0, schedule=params, threads=1, downlink_reference=True, keep=8)
    member = ClientEngine(v0.spec, "c0", initial=v0, threads=1)
    for r in range(1, rounds + 1):
        member.receive(engine.package_for("c0", **member.request()))
        aggregator = engine.aggregator()
        aggregator.accept_update(
            member.encode(_local(member.model, 0, r), params, round_number=r, num_examples=5)
        )
        engine.publish(aggregator)
    return engine, member, params


def test_downlink_packages_say_when_they_use_the_held_delta_and_old_receivers_get_none() -> None:
    """``DownlinkPackage.held_delta_reference`` says the first delta is coded against the
    client's held delta; ``delta_references=False`` (a receiver from before downlink
    references) gets every delta without reference, in a chain too."""
    from fedcodec.pipeline import ModelReceiver, RoundEngine

    engine, member, _ = _referenced_engine()
    assert isinstance(engine, RoundEngine)
    request = member.request()  # type: ignore[attr-defined]
    assert request["holds_delta"]
    held = engine.package_for("c0", **request)
    assert held.held_delta_reference
    assert _uses_reference(held.deltas[0])
    old = engine.package_for("c0", **request, delta_references=False)
    assert not old.held_delta_reference
    assert not _uses_reference(old.deltas[0])
    plain = engine.package_for("c0", **{**request, "holds_delta": False})
    assert not plain.held_delta_reference
    assert not _uses_reference(plain.deltas[0])
    assert old.deltas == plain.deltas
    # A chain of three from version 1: the old receiver's deltas all go without reference.
    spec = engine.spec
    v0 = ModelVersion.create(0, {n: np.zeros(s, np.float32) for n, s in SHAPES.items()})
    lagging = ModelReceiver(spec, threads=1, initial=v0)
    lagging.apply(engine.downlink.package_for("x", have_version=0, delta_references=False))
    assert lagging.version == engine.downlink.latest_version
    chain_new = engine.downlink._chain(1, references=True)
    chain_old = engine.downlink._chain(1, references=False)
    assert chain_new is not None
    assert chain_old is not None
    assert [_uses_reference(d) for d in chain_new[0]] == [False, True, True]
    assert not any(_uses_reference(d) for d in chain_old[0])


def test_downlink_references_survive_a_state_round_trip() -> None:
    """The engine's downlink state keeps the reference codings and the latest decoded
    delta: a restored stream serves the same packages and codes the next version (and its
    reference coding) into the same bytes as one that never stopped."""
    from fedcodec.pipeline import DownlinkEncoder, RoundEngine

    engine, member, params = _referenced_engine()
    assert isinstance(engine, RoundEngine)
    arrays, meta = engine.downlink.state()
    assert meta["has_last_step"]
    assert any(k.startswith("deltaref/") for k in arrays)
    restored = DownlinkEncoder(
        engine.spec, params=params, threads=1, keep=8, temporal_reference=True
    )
    restored.load_state(arrays, meta)
    request = member.request()  # type: ignore[attr-defined]
    request.pop("initial_digest")
    assert restored.package_for("c1", **request) == engine.downlink.package_for("c1", **request)
    v_next = ModelVersion.create(
        (engine.downlink.latest_version or 0) + 1,
        _local(engine.downlink.stream_model(), 0, 9),
    )
    a = engine.downlink.publish(v_next, params)
    b = restored.publish(v_next, params)
    assert a.delta_ref is not None
    assert (a.delta, a.delta_ref) == (b.delta, b.delta_ref)
    # A state from before downlink references (no reference codings, no latest delta):
    # the next version goes without reference, the one after with.
    old_arrays = {k: v for k, v in arrays.items() if not k.startswith(("deltaref/", "laststep/"))}
    old_meta = {**meta, "has_last_step": False}
    old_meta["releases"] = [
        {k: v for k, v in r.items() if k != "has_delta_ref"} for r in meta["releases"]
    ]
    legacy = DownlinkEncoder(engine.spec, params=params, threads=1, keep=8, temporal_reference=True)
    legacy.load_state(old_arrays, old_meta)
    assert not legacy.package_for("c1", **request).held_delta_reference
    assert legacy.publish(v_next, params).delta_ref is None


def test_restore_rolls_back_the_references_a_published_round_stored() -> None:
    """``RoundEngine.restore`` (a round whose commit failed) puts back the references held
    before the round: its updates, coded against them, decode again when the round is
    aggregated once more — into the same model."""
    from fedcodec.pipeline import ClientEngine, RoundEngine, Submission

    v0 = ModelVersion.create(0, {n: np.zeros(s, np.float32) for n, s in SHAPES.items()})
    params = RoundParams(lam=0.0, step=1e-4)
    engine = RoundEngine(v0, schedule=params, threads=1, client_references=4)
    members = [ClientEngine(v0.spec, f"c{i}", initial=v0, threads=1) for i in range(2)]
    for member in members:
        member.encoder.temporal_reference = True

    def round_updates(r: int) -> list[Submission]:
        subs = []
        for i, member in enumerate(members):
            member.receive(engine.package_for(member.client_id, **member.request()))
            member.sync_reference(engine.reference_token(member.client_id))
            update = member.encode(
                _local(member.model, i, r), params, round_number=r, num_examples=5
            )
            assert update.uses_reference == (r > 1)
            subs.append(Submission(update.data, member.client_id, member.model.version, 5, None))
        return subs

    engine.publish(engine.aggregate(round_updates(1)))
    subs = round_updates(2)
    assert engine.references is not None
    tokens = {m.client_id: engine.references.token(m.client_id) for m in members}
    before = engine.checkpoint()
    first = engine.publish(engine.aggregate(subs)).model
    assert {c: engine.references.token(c) for c in tokens} != tokens
    engine.restore(before)  # the commit failed: back to before the round
    assert {c: engine.references.token(c) for c in tokens} == tokens
    again = engine.publish(engine.aggregate(subs)).model
    assert again.digest == first.digest
