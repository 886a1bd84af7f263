"""The aggregation server over real gRPC on loopback: the happy path, bad input and faults.

Every refusal is checked for its status code *and* for its effect: nothing stored, the
aggregate untouched, the round going on with the other clients.
"""

from __future__ import annotations

import threading
import time
import urllib.request
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fedcodec.client import Connection, RetryPolicy, UpdateRefusedError
from fedcodec.client.edge import round_info_from_proto
from fedcodec.client.errors import AuthenticationError
from fedcodec.pipeline import (
    Aggregator,
    ModelReceiver,
    ModelSpec,
    ModelVersion,
    RoundParams,
    UpdateEncoder,
)
from fedcodec.server import BackgroundServer, ServerConfig
from fedcodec.v1 import aggregation_service_pb2 as pb
from fedcodec.v1 import aggregation_service_pb2_grpc as pb_grpc

import loopback
from loopback import bearer, loopback_config, selected, upload, wait_until

_RNG = np.random.default_rng(0)
MODEL = {
    "w": (_RNG.standard_normal((8, 16)) * 0.1).astype(np.float32),
    "b": np.zeros(8, np.float32),
}
TOKENS = {f"c{i}": f"token-of-client-{i}-0123456789" for i in range(6)}


def make_config(tmp_path: Path, **overrides: Any) -> ServerConfig:
    settings = {
        "rounds.min_clients": 2,
        "rounds.target_clients": 3,
        "rounds.deadline_s": 60.0,
        # These tests exercise the transport on a keyframe stream (a client's first
        # download is a keyframe); the shared-initial default: test_server_initial.py.
        "downlink.shared_initial": False,
    }
    return loopback_config(tmp_path, settings, overrides)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[BackgroundServer]:
    with BackgroundServer(make_config(tmp_path), tokens=TOKENS, initial_model=MODEL) as srv:
        yield srv


def connect(server: BackgroundServer, client: str, token: str | None = None) -> Connection:
    return loopback.connect(server, TOKENS[client] if token is None else token, client)


def base_model(conn: Connection, config: pb.RoundConfig) -> ModelVersion:
    receiver = ModelReceiver(round_info_from_proto(config).spec, threads=1)
    return receiver.apply(conn.download(None, None))


def coded_update(
    conn: Connection, config: pb.RoundConfig, *, seed: int, num_examples: int = 10
) -> bytes:
    info = round_info_from_proto(config)
    base = base_model(conn, config)
    rng = np.random.default_rng(seed)
    local = {
        k: v + (0.01 * rng.standard_normal(v.shape)).astype(np.float32)
        for k, v in base.tensors.items()
    }
    update = UpdateEncoder(info.spec, conn.client_id, threads=1).encode(
        local, base, info.params, round_number=info.round_id, num_examples=num_examples
    )
    return update.data


def stored(server: BackgroundServer, round_id: int | None = None) -> list[str]:
    return server.call(lambda: server.coordinator.stored_updates(round_id))


def raw_stub(server: BackgroundServer) -> tuple[grpc.Channel, Any]:
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    return channel, pb_grpc.AggregationServiceStub(channel)


def auth(client: str) -> tuple[tuple[str, str]]:
    return bearer(TOKENS[client])


# -- the happy path ------------------------------------------------------------------------


def test_health_service_reports_serving(server: BackgroundServer) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "fedcodec.v1.AggregationService"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_selection_stops_at_the_target_and_a_round_aggregates_fedavg(
    server: BackgroundServer,
) -> None:
    conns = [connect(server, f"c{i}") for i in range(4)]
    configs = [selected(c) for c in conns[:3]]
    assert conns[3].check_in().assignment == pb.ASSIGNMENT_NOT_SELECTED
    assert configs[0].round_id == 1
    assert configs[0].base_version == 0
    payloads = [
        coded_update(c, cfg, seed=i, num_examples=5 + i)
        for i, (c, cfg) in enumerate(zip(conns[:3], configs, strict=True))
    ]
    base = server.coordinator.global_model()
    for i, (c, cfg, data) in enumerate(zip(conns[:3], configs, payloads, strict=True)):
        reply = upload(c, cfg, data, num_examples=5 + i)
        assert reply.status == pb.UPLOAD_STATUS_ACCEPTED
    assert conns[0].check_in().assignment in (
        pb.ASSIGNMENT_ALREADY_REPORTED,
        pb.ASSIGNMENT_SELECTED,  # round 2 may already be open
    )
    wait_until(lambda: server.coordinator.global_model().version == 1)
    expected = Aggregator(base, round_number=1, threads=1)
    for i, data in enumerate(payloads):
        expected.accept(data, client_id=f"c{i}", base_version=0, num_examples=5 + i)
    assert server.coordinator.global_model().digest == expected.finalize().digest


def test_download_is_a_keyframe_first_then_coded_deltas(server: BackgroundServer) -> None:
    conns = [connect(server, f"c{i}") for i in range(3)]
    configs = [selected(c) for c in conns]
    receiver = ModelReceiver(ModelSpec.from_tensors(MODEL), threads=1)
    first = conns[0].download(None, None)
    assert first.is_keyframe
    receiver.apply(first)
    for i, (c, cfg) in enumerate(zip(conns, configs, strict=True)):
        upload(c, cfg, coded_update(c, cfg, seed=i))
    wait_until(lambda: server.coordinator.global_model().version == 1)
    second = conns[0].download(receiver.version, receiver.digest)
    assert not second.is_keyframe
    assert second.from_version == 0
    assert receiver.apply(second).digest == server.coordinator.stream_model().digest


def test_models_and_updates_larger_than_a_grpc_message_move_in_chunks(tmp_path: Path) -> None:
    # A 256 KiB message limit stands in for "hundreds of MB": nothing is ever sent whole.
    limits = {"limits.max_chunk_bytes": 256 << 10, "limits.max_message_bytes": 320 << 10}
    big = {"w": (np.random.default_rng(1).standard_normal((600, 512)) * 0.1).astype(np.float32)}
    with BackgroundServer(make_config(tmp_path, **limits), tokens=TOKENS, initial_model=big) as srv:
        conn = connect(srv, "c0")
        cfg = selected(conn)
        assert cfg.max_chunk_bytes == 256 << 10
        package = conn.download(None, None)
        assert package.keyframe is not None
        assert len(package.keyframe) > 320 << 10  # more than one message could carry
        base = ModelReceiver(round_info_from_proto(cfg).spec, threads=1).apply(package)
        noise = np.random.default_rng(2).standard_normal(base.tensors["w"].shape)
        local = {"w": base.tensors["w"] + (0.05 * noise).astype(np.float32)}
        data = (
            UpdateEncoder(base.spec, "c0", threads=1)
            .encode(local, base, RoundParams(lam=0.0, S=4096), round_number=1, num_examples=1)
            .data
        )
        assert len(data) > 320 << 10
        with pytest.raises(UpdateRefusedError) as info:
            upload(conn, cfg, data)  # 1 MiB chunks: above this server's chunk limit
        assert info.value.status == "RESOURCE_EXHAUSTED"
        reply = upload(conn, cfg, data, chunk_bytes=cfg.max_chunk_bytes)
        assert reply.bytes_received == len(data)


def test_metrics_endpoint_counts_bytes_and_rejections(tmp_path: Path) -> None:
    config = make_config(tmp_path, metrics_listen="127.0.0.1:0")
    with BackgroundServer(config, tokens=TOKENS, initial_model=MODEL) as srv:
        conn = connect(srv, "c0")
        cfg = selected(conn)
        upload(conn, cfg, coded_update(conn, cfg, seed=0))
        with pytest.raises(UpdateRefusedError):
            upload(conn, cfg, b"not a container")
        port = srv.server.metrics_port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
            text = r.read().decode()
    assert 'fedcodec_updates_accepted_total{result="accepted"} 1.0' in text
    assert "fedcodec_updates_rejected_total" in text
    assert "fedcodec_bytes_down_total" in text
    assert "fedcodec_decode_seconds_count 1.0" in text


# -- authentication ---------------------------------------------------------------------


def test_no_token_or_a_wrong_token_is_unauthenticated_and_stores_nothing(
    server: BackgroundServer,
) -> None:
    good = connect(server, "c0")
    cfg = selected(good)
    payload = coded_update(good, cfg, seed=0)
    for token in ("", "not-a-token-of-anybody-0000"):
        bad = connect(server, "c0", token=token)
        with pytest.raises(AuthenticationError) as info:
            bad.check_in()
        assert info.value.status == "UNAUTHENTICATED"
        with pytest.raises(AuthenticationError) as info:
            upload(bad, cfg, payload)
        assert info.value.status == "UNAUTHENTICATED"
        with pytest.raises(AuthenticationError):
            bad.download(None, None)
    assert stored(server) == []


def test_a_token_used_for_another_client_id_is_permission_denied(
    server: BackgroundServer,
) -> None:
    impostor = Connection(
        f"127.0.0.1:{server.port}",
        TOKENS["c1"],
        client_id="c0",
        insecure=True,
        retry=RetryPolicy(attempts=1),
    )
    with pytest.raises(AuthenticationError) as info:
        impostor.check_in()
    assert info.value.status == "PERMISSION_DENIED"


def test_a_long_claimed_client_id_is_permission_denied_not_a_transport_error(
    server: BackgroundServer,
) -> None:
    # The claimed id was echoed whole: from 10 kB on, the reply's trailer exceeded the
    # client's metadata limit and it saw RESOURCE_EXHAUSTED "Stream removed" instead.
    channel, stub = raw_stub(server)
    claimed = "x" * 1_000_000
    header = pb.UploadHeader(client_id=claimed, total_bytes=5, idempotency_key="k")
    calls = (
        lambda: stub.GetRoundConfig(
            pb.GetRoundConfigRequest(client_id=claimed), metadata=auth("c0"), timeout=30
        ),
        lambda: stub.UploadUpdate(
            iter([pb.UploadUpdateRequest(header=header)]), metadata=auth("c0"), timeout=30
        ),
    )
    with channel:
        for call in calls:
            with pytest.raises(grpc.RpcError) as info:
                call()
            assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
            details = info.value.details() or ""
            assert "another client than 'xxxx" in details
            assert "(1000000 characters)" in details
            assert len(details) < 200


# -- sizes ------------------------------------------------------------------------------


def test_an_update_declared_too_large_is_resource_exhausted_before_any_payload(
    server: BackgroundServer,
) -> None:
    conn = connect(server, "c0")
    cfg = selected(conn)
    channel, stub = raw_stub(server)
    sent = []

    def requests() -> Iterator[pb.UploadUpdateRequest]:
        header = pb.UploadHeader(
            round_id=cfg.round_id,
            base_version=cfg.base_version,
            idempotency_key="k",
            total_bytes=cfg.max_update_bytes + 1,
            num_examples=1,
        )
        yield pb.UploadUpdateRequest(header=header)
        for _ in range(1000):  # the server must not wait for these
            sent.append(1)
            yield pb.UploadUpdateRequest(chunk=b"\0" * 1024)
            time.sleep(0.01)

    with channel, pytest.raises(grpc.RpcError) as info:
        stub.UploadUpdate(requests(), metadata=auth("c0"), timeout=30)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert len(sent) < 1000
    assert stored(server) == []


def test_a_stream_that_exceeds_the_limit_is_resource_exhausted(
    server: BackgroundServer,
) -> None:
    conn = connect(server, "c0")
    cfg = selected(conn)
    limit = cfg.max_update_bytes
    channel, stub = raw_stub(server)

    def requests() -> Iterator[pb.UploadUpdateRequest]:
        header = pb.UploadHeader(
            round_id=cfg.round_id,
            base_version=cfg.base_version,
            idempotency_key="k",
            total_bytes=limit,  # honest-looking header, then more bytes than allowed
            num_examples=1,
        )
        yield pb.UploadUpdateRequest(header=header)
        chunk = b"\1" * (256 << 10)
        for _ in range(limit // len(chunk) + 2):
            yield pb.UploadUpdateRequest(chunk=chunk)

    with channel, pytest.raises(grpc.RpcError) as info:
        stub.UploadUpdate(requests(), metadata=auth("c0"), timeout=30)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert stored(server) == []


def test_a_chunk_above_the_chunk_limit_is_resource_exhausted(server: BackgroundServer) -> None:
    conn = connect(server, "c0")
    cfg = selected(conn)
    channel, stub = raw_stub(server)
    chunk = b"\2" * ((1 << 20) + 1)
    header = pb.UploadHeader(
        round_id=cfg.round_id,
        base_version=cfg.base_version,
        idempotency_key="k",
        total_bytes=len(chunk),
        num_examples=1,
    )
    messages = [pb.UploadUpdateRequest(header=header), pb.UploadUpdateRequest(chunk=chunk)]
    with channel, pytest.raises(grpc.RpcError) as info:
        stub.UploadUpdate(iter(messages), metadata=auth("c0"), timeout=30)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.parametrize("size", [0, 1])
def test_a_flood_of_tiny_chunks_is_refused_at_the_first(
    server: BackgroundServer, size: int
) -> None:
    # One client streaming empty or 1-byte chunks under a large declared size kept the
    # server's event loop busy (~0.7 of a core) until the rate deadline, minutes later.
    conn = connect(server, "c0")
    cfg = selected(conn)
    channel, stub = raw_stub(server)
    sent = 0

    def requests() -> Iterator[pb.UploadUpdateRequest]:
        nonlocal sent
        header = pb.UploadHeader(
            round_id=cfg.round_id,
            base_version=cfg.base_version,
            idempotency_key="k",
            total_bytes=1 << 20,
            num_examples=1,
        )
        yield pb.UploadUpdateRequest(header=header)
        tiny = pb.UploadUpdateRequest(chunk=b"\1" * size)
        for _ in range(20_000):
            sent += 1
            yield tiny

    started = time.monotonic()
    with channel, pytest.raises(grpc.RpcError) as info:
        stub.UploadUpdate(requests(), metadata=auth("c0"), timeout=60)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert ("empty chunk" if size == 0 else "at least 4096 bytes") in (info.value.details() or "")
    assert sent < 2_000  # what gRPC had in flight when the refusal came
    assert time.monotonic() - started < 10
    assert stored(server) == []


# -- malformed and corrupt updates ------------------------------------------------------


def test_a_stream_without_a_header_or_with_a_wrong_crc_is_invalid_argument(
    server: BackgroundServer,
) -> None:
    conn = connect(server, "c0")
    cfg = selected(conn)
    payload = coded_update(conn, cfg, seed=0)
    channel, stub = raw_stub(server)
    with channel:
        with pytest.raises(grpc.RpcError) as info:
            stub.UploadUpdate(
                iter([pb.UploadUpdateRequest(chunk=payload)]), metadata=auth("c0"), timeout=30
            )
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        header = pb.UploadHeader(
            round_id=cfg.round_id,
            base_version=cfg.base_version,
            idempotency_key="k",
            total_bytes=len(payload),
            crc32=zlib.crc32(payload) ^ 1,
            num_examples=1,
        )
        messages = [pb.UploadUpdateRequest(header=header), pb.UploadUpdateRequest(chunk=payload)]
        with pytest.raises(grpc.RpcError) as info:
            stub.UploadUpdate(iter(messages), metadata=auth("c0"), timeout=30)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert stored(server) == []


def test_a_corrupt_bitstream_is_invalid_argument_and_the_round_carries_on(
    tmp_path: Path,
) -> None:
    config = make_config(tmp_path, **{"rounds.deadline_s": 3.0})
    with BackgroundServer(config, tokens=TOKENS, initial_model=MODEL) as srv:
        conns = [connect(srv, f"c{i}") for i in range(3)]
        configs = [selected(c) for c in conns]
        payloads = [
            coded_update(c, cfg, seed=i)
            for i, (c, cfg) in enumerate(zip(conns, configs, strict=True))
        ]
        base = srv.coordinator.global_model()
        corrupt = bytearray(payloads[0])
        corrupt[len(corrupt) // 2] ^= 0xFF
        with pytest.raises(UpdateRefusedError) as info:
            upload(conns[0], configs[0], bytes(corrupt))
        assert info.value.status == "INVALID_ARGUMENT"
        for c, cfg, data in zip(conns[1:], configs[1:], payloads[1:], strict=True):
            upload(c, cfg, data)
        assert stored(srv) == ["c1", "c2"]
        # min_clients = 2: the deadline closes the round with the two good updates.
        wait_until(lambda: srv.coordinator.global_model().version == 1, timeout=60)
        expected = Aggregator(base, round_number=1, threads=1)
        for i in (1, 2):
            expected.accept(payloads[i], client_id=f"c{i}", base_version=0, num_examples=10)
        assert srv.coordinator.global_model().digest == expected.finalize().digest


def test_tensors_of_the_wrong_shapes_are_invalid_argument(server: BackgroundServer) -> None:
    conn = connect(server, "c0")
    cfg = selected(conn)
    other = ModelVersion.create(
        0, {"w": np.zeros((16, 8), np.float32), "b": np.zeros(8, np.float32)}
    )
    local = {k: v + np.float32(0.01) for k, v in other.tensors.items()}
    data = (
        UpdateEncoder(other.spec, "c0", threads=1)
        .encode(local, other, RoundParams(S=16), round_number=1, num_examples=1)
        .data
    )
    with pytest.raises(UpdateRefusedError) as info:
        upload(conn, cfg, data, base_digest="")
    assert info.value.status == "INVALID_ARGUMENT"
    assert stored(server) == []


# -- rounds and versions ----------------------------------------------------------------


def test_closed_rounds_unknown_base_versions_and_unselected_clients_are_failed_precondition(
    server: BackgroundServer,
) -> None:
    conns = [connect(server, f"c{i}") for i in range(4)]
    configs = [selected(c) for c in conns[:3]]
    payload = coded_update(conns[0], configs[0], seed=0)
    with pytest.raises(UpdateRefusedError) as info:
        upload(conns[0], configs[0], payload, base_version=7)
    assert info.value.status == "FAILED_PRECONDITION"
    assert "unknown" in info.value.detail
    with pytest.raises(UpdateRefusedError) as info:
        upload(conns[0], configs[0], payload, round_id=99)
    assert info.value.status == "FAILED_PRECONDITION"
    with pytest.raises(UpdateRefusedError) as info:
        upload(conns[3], configs[0], payload)  # c3 was not selected
    assert info.value.status == "FAILED_PRECONDITION"
    for i, (c, cfg) in enumerate(zip(conns[:3], configs, strict=True)):
        upload(c, cfg, coded_update(c, cfg, seed=i))
    wait_until(lambda: server.coordinator.open_round_id == 2)
    late = conns[3]
    with pytest.raises(UpdateRefusedError) as info:
        upload(late, configs[0], payload)  # round 1 is closed
    assert info.value.status == "FAILED_PRECONDITION"
    assert "closed" in info.value.detail
    assert stored(server, 1) == ["c0", "c1", "c2"]


def test_a_resend_with_the_same_key_is_not_counted_twice(server: BackgroundServer) -> None:
    conn = connect(server, "c0")
    cfg = selected(conn)
    payload = coded_update(conn, cfg, seed=0)
    first = upload(conn, cfg, payload, idempotency_key="update-1")
    again = upload(conn, cfg, payload, idempotency_key="update-1")
    assert first.status == pb.UPLOAD_STATUS_ACCEPTED
    assert again.status == pb.UPLOAD_STATUS_ALREADY_ACCEPTED
    assert again.accepted_in_round == 1
    other = coded_update(conn, cfg, seed=1)
    with pytest.raises(UpdateRefusedError) as info:
        upload(conn, cfg, other, idempotency_key="update-2")
    assert info.value.status == "ALREADY_EXISTS"
    with pytest.raises(UpdateRefusedError) as info:
        upload(conn, cfg, other, idempotency_key="update-1")  # same key, other bytes
    assert info.value.status == "ALREADY_EXISTS"
    assert stored(server) == ["c0"]


def test_a_client_that_disconnects_mid_upload_leaves_no_partial_state(tmp_path: Path) -> None:
    config = make_config(tmp_path, **{"limits.max_update_bytes": 8 << 20})
    with BackgroundServer(config, tokens=TOKENS, initial_model=MODEL) as srv:
        conn = connect(srv, "c0")
        cfg = selected(conn)
        channel, stub = raw_stub(srv)
        half_sent, release = threading.Event(), threading.Event()

        def requests() -> Iterator[pb.UploadUpdateRequest]:
            header = pb.UploadHeader(
                round_id=cfg.round_id,
                base_version=cfg.base_version,
                idempotency_key="dropped",
                total_bytes=3 << 20,
                crc32=0,
                num_examples=1,
            )
            yield pb.UploadUpdateRequest(header=header)
            yield pb.UploadUpdateRequest(chunk=b"\3" * (1 << 20))
            half_sent.set()
            release.wait(30)

        call = stub.UploadUpdate.future(requests(), metadata=auth("c0"), timeout=60)
        assert half_sent.wait(30)
        time.sleep(0.3)  # let the server take the first chunk
        call.cancel()
        release.set()
        channel.close()
        assert stored(srv) == []
        # The same client can then deliver its real update, which counts once.
        payload = coded_update(conn, cfg, seed=0)
        assert upload(conn, cfg, payload).status == pb.UPLOAD_STATUS_ACCEPTED
        assert stored(srv) == ["c0"]


def test_check_in_says_finished_after_the_last_round(tmp_path: Path) -> None:
    config = make_config(
        tmp_path, **{"rounds.max_rounds": 1, "rounds.min_clients": 1, "rounds.target_clients": 1}
    )
    with BackgroundServer(config, tokens=TOKENS, initial_model=MODEL) as srv:
        conn = connect(srv, "c0")
        cfg = selected(conn)
        upload(conn, cfg, coded_update(conn, cfg, seed=0))
        wait_until(lambda: srv.coordinator.finished)
        assert conn.check_in().assignment == pb.ASSIGNMENT_FINISHED
