"""The round logic without gRPC: deadlines and dropouts, restarts, the persistent downlink."""

from __future__ import annotations

import asyncio
import time
import uuid
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedcodec.pipeline import Aggregator, DownlinkEncoder, ModelVersion, RoundParams, UpdateEncoder
from fedcodec.server import load_config
from fedcodec.server.errors import NotSelectedError, RoundNotOpenError
from fedcodec.server.rounds import Assignment, RoundCoordinator, UploadHeader
from fedcodec.server.store import Store

_RNG = np.random.default_rng(11)
MODEL = {
    "w": (_RNG.standard_normal((12, 20)) * 0.1).astype(np.float32),
    "b": np.zeros(12, np.float32),
}


def coordinator(tmp_path: Path, **overrides: Any) -> RoundCoordinator:
    values: dict[str, Any] = {
        "security.insecure": True,
        "state_path": str(tmp_path / "state.sqlite"),
        "rounds.min_clients": 2,
        "rounds.target_clients": 3,
        "rounds.deadline_s": 60.0,
        "limits.codec_threads": 1,
    }
    values.update(overrides)
    return RoundCoordinator(load_config(env={}, overrides=values), initial_model=MODEL)


def update_for(coord: RoundCoordinator, client: str, seed: int) -> tuple[UploadHeader, bytes]:
    base = coord.stream_model()
    rng = np.random.default_rng(seed)
    local = {
        k: v + (0.02 * rng.standard_normal(v.shape)).astype(np.float32)
        for k, v in base.tensors.items()
    }
    data = (
        UpdateEncoder(base.spec, client, threads=1)
        .encode(local, base, RoundParams(S=32), round_number=coord.open_round_id, num_examples=7)
        .data
    )
    header = UploadHeader(
        round_id=coord.open_round_id,
        base_version=base.version,
        base_digest=base.digest,
        idempotency_key=uuid.uuid4().hex,
        total_bytes=len(data),
        crc32=zlib.crc32(data),
        num_examples=7,
    )
    return header, data


async def wait_until(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def test_the_round_logic_and_the_state_have_no_grpc_imports() -> None:
    """Layering: only the servicer and the app speak gRPC."""
    import ast
    import importlib

    for name in ("rounds", "store", "config", "errors", "auth", "metrics"):
        module = importlib.import_module(f"fedcodec.server.{name}")
        tree = ast.parse(Path(str(module.__file__)).read_text())
        imported = {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        } | {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not {m for m in imported if m.split(".")[0] in {"grpc", "grpc_health"}}, name
        assert not {m for m in imported if m.startswith("fedcodec.v1")}, name


def test_a_deadline_with_too_few_updates_extends_the_round_and_keeps_them(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        coord = coordinator(tmp_path, **{"rounds.deadline_s": 0.4})
        await coord.start()
        try:
            for client in ("c0", "c1", "c2"):
                assert (await coord.check_in(client)).assignment is Assignment.SELECTED
            assert (await coord.check_in("c3")).assignment is Assignment.NOT_SELECTED
            await coord.submit("c0", *update_for(coord, "c0", 0))
            # c1 and c2 drop out.  The deadline passes with 1 < min_clients = 2 updates:
            # the round stays open, c0's update is kept, and c3 may take a dropout's place.
            await asyncio.sleep(0.6)
            assert coord.open_round_id == 1
            assert await coord.stored_updates() == ["c0"]
            assert (await coord.check_in("c3")).assignment is Assignment.SELECTED
            await coord.submit("c3", *update_for(coord, "c3", 3))
            await wait_until(lambda: coord.open_round_id == 2)  # next deadline: 2 >= min
            history = await coord.history()
            assert [u["client_id"] for u in history[0]["stats"]["updates"]] == ["c0", "c3"]
        finally:
            await coord.stop()

    asyncio.run(scenario())


def test_uploads_outside_the_open_round_or_selection_are_refused(tmp_path: Path) -> None:
    async def scenario() -> None:
        coord = coordinator(tmp_path)
        await coord.start()
        try:
            header, data = update_for(coord, "c0", 0)
            with pytest.raises(NotSelectedError):
                await coord.submit("c0", header, data)
            await coord.check_in("c0")
            stale = UploadHeader(**{**header.__dict__, "round_id": 5})
            with pytest.raises(RoundNotOpenError):
                await coord.submit("c0", stale, data)
            assert await coord.stored_updates() == []
        finally:
            await coord.stop()

    asyncio.run(scenario())


def test_a_restarted_coordinator_resumes_the_open_round_with_the_same_result(
    tmp_path: Path,
) -> None:
    async def scenario() -> tuple[str, str]:
        first = coordinator(tmp_path / "a", **{"rounds.target_clients": 2})
        await first.start()
        for client in ("c0", "c1"):
            await first.check_in(client)
        updates = {c: update_for(first, c, i) for i, c in enumerate(("c0", "c1"))}
        base = first.global_model()
        await first.submit("c0", *updates["c0"])
        await first.stop()

        second = coordinator(tmp_path / "a", **{"rounds.target_clients": 2})
        await second.start()
        try:
            assert await second.stored_updates() == ["c0"]
            assert (await second.check_in("c0")).assignment is Assignment.ALREADY_REPORTED
            receipt = await second.submit("c0", *updates["c0"])  # a resend
            assert receipt.already_accepted
            await second.submit("c1", *updates["c1"])
            await wait_until(lambda: second.global_model().version == 1)
            expected = Aggregator(base, round_number=1, threads=1)
            for client, (h, data) in updates.items():
                expected.accept(data, client_id=client, base_version=0, num_examples=h.num_examples)
            return second.global_model().digest, expected.finalize().digest
        finally:
            await second.stop()

    got, expected = asyncio.run(scenario())
    assert got == expected


def _versions(n: int) -> list[ModelVersion]:
    rng = np.random.default_rng(4)
    out, model = [], dict(MODEL)
    for v in range(n):
        out.append(ModelVersion.create(v, model))
        model = {
            k: a + (0.01 * rng.standard_normal(a.shape)).astype(np.float32)
            for k, a in model.items()
        }
    return out


def test_the_stored_downlink_serves_and_codes_exactly_what_the_original_would(
    tmp_path: Path,
) -> None:
    versions = _versions(5)
    spec = versions[0].spec
    params = RoundParams(budget_bytes=400)
    original = DownlinkEncoder(spec, params=params, keep=3, threads=1)
    for model in versions[:3]:
        original.publish(model)
    store = Store(tmp_path / "state.sqlite")
    latest = original.latest_version
    assert latest is not None
    digest = original.digest_of(latest)
    assert digest is not None
    store.initialize(versions[2], original.state(), digest, None)
    store.close()
    store = Store(tmp_path / "state.sqlite")
    restored = DownlinkEncoder(spec, params=params, keep=3, threads=1)
    restored.load_state(*store.downlink())
    store.close()
    assert restored.keyframe() == original.keyframe()
    for have in (0, 1, 2, None):
        a = original.package_for("x", have_version=have, have_digest=None, keyframe=have is None)
        b = restored.package_for("x", have_version=have, have_digest=None, keyframe=have is None)
        assert (a.version, a.digest, a.keyframe, a.deltas) == (
            b.version,
            b.digest,
            b.keyframe,
            b.deltas,
        )
    for model in versions[3:]:
        ra, rb = original.publish(model), restored.publish(model)
        assert (ra.delta, ra.digest) == (rb.delta, rb.digest)


def test_each_round_gets_its_coding_parameters_from_the_schedule(tmp_path: Path) -> None:
    async def scenario() -> list[float]:
        coord = coordinator(
            tmp_path,
            **{
                "rounds.min_clients": 1,
                "rounds.target_clients": 1,
                "params.lam": 0.1,
                "schedule.kind": "step",
                "schedule.name": "lam",
                "schedule.gamma": 2.0,
                "schedule.every": 1,
            },
        )
        await coord.start()
        lams = []
        try:
            for round_id in (1, 2, 3):
                answer = await coord.check_in("c0")
                assert answer.round is not None
                assert answer.round.round_id == round_id
                lams.append(answer.round.params.lam)
                await coord.submit("c0", *update_for(coord, "c0", round_id))
                await wait_until(lambda rid=round_id: coord.open_round_id == rid + 1)
        finally:
            await coord.stop()
        return lams

    assert asyncio.run(scenario()) == pytest.approx([0.1, 0.2, 0.4])
