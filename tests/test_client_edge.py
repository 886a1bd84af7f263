"""The edge client SDK against a real server on loopback: rounds, error feedback, state that
survives restarts, resends after lost acknowledgements, refusals, retries."""

from __future__ import annotations

import contextlib
import random
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from fedcodec import codec
from fedcodec.client import (
    Connection,
    DeadlineExceededError,
    EdgeClient,
    Outcome,
    RetryPolicy,
    RoundInfo,
    ServerUnavailableError,
    TrainResult,
)
from fedcodec.client.state import load_pending
from fedcodec.client.transport import iter_upload_requests
from fedcodec.pipeline import ModelVersion
from fedcodec.server import BackgroundServer
from fedcodec.v1 import aggregation_service_pb2 as pb

from loopback import bearer, free_port, loopback_config, silent_server

_RNG = np.random.default_rng(5)
MODEL = {
    "w": (_RNG.standard_normal((16, 24)) * 0.1).astype(np.float32),
    "b": np.zeros(16, np.float32),
}
TOKENS = {f"c{i}": f"edge-client-token-{i}-0123456789" for i in range(4)}
FAST = RetryPolicy(attempts=40, initial_backoff_s=0.05, max_backoff_s=0.2, call_timeout_s=30)


MODEL_V0 = ModelVersion.create(0, MODEL)


def make_server(tmp_path: Path, **overrides: Any) -> BackgroundServer:
    settings = {
        "rounds.min_clients": 2,
        "rounds.target_clients": 2,
        "rounds.max_rounds": 3,
        "rounds.deadline_s": 60.0,
        "rounds.retry_after_s": 0.02,
        "params.lam": 0.1155,
        "params.S": 16,
    }
    config = loopback_config(tmp_path, settings, overrides)
    return BackgroundServer(config, tokens=TOKENS, initial_model=MODEL)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[BackgroundServer]:
    with make_server(tmp_path) as srv:
        yield srv


def trainer(client: int) -> Any:
    def train(weights: dict[str, np.ndarray], info: RoundInfo) -> TrainResult:
        rng = np.random.default_rng([client, info.round_id])
        new = {
            k: v + (0.05 * rng.standard_normal(v.shape)).astype(np.float32)
            for k, v in weights.items()
        }
        return TrainResult(new, num_examples=10 + client, metrics={"loss": 1.0})

    return train


def edge(
    server: BackgroundServer | int,
    client: str = "c0",
    state_dir: Path | None = None,
    **options: Any,
) -> EdgeClient:
    """An edge client of a loopback server (or port): plain text, :data:`FAST` retries
    unless ``options`` say otherwise."""
    port = server if isinstance(server, int) else server.port
    return EdgeClient(
        f"127.0.0.1:{port}",
        client_id=client,
        token=TOKENS[client],
        insecure=True,
        state_dir=state_dir,
        initial_model=MODEL,  # the shared initial model: built, not downloaded
        **{"retry": FAST, **options},
    )


def run_threads(clients: list[EdgeClient], **run_args: Any) -> list[list[Any]]:
    """Run the clients in threads until they finish (at most 240 s).

    A client still running then is closed, so its thread ends: one left behind looped
    against the stopped server for ever, and the test process could not exit.
    """
    results: list[list[Any]] = [[] for _ in clients]

    def work(i: int) -> None:
        results[i] = clients[i].run(trainer(i), **run_args)

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(len(clients))]
    for t in threads:
        t.start()
    end = time.monotonic() + 240
    for t in threads:
        t.join(timeout=max(end - time.monotonic(), 0.0))
    late = [c.client_id for c, t in zip(clients, threads, strict=True) if t.is_alive()]
    for c, t in zip(clients, threads, strict=True):
        if t.is_alive():
            c.close()
            t.join(timeout=60)
    assert not late, f"clients {late} did not finish in 240 s"
    return results


def run_clients(server: BackgroundServer, clients: list[EdgeClient]) -> list[list[Any]]:
    return run_threads(clients)


def test_clients_run_every_round_and_hold_the_servers_model(server: BackgroundServer) -> None:
    clients = [edge(server, "c0"), edge(server, "c1")]
    results = run_clients(server, clients)
    for history in results:
        outcomes = [r.outcome for r in history]
        assert outcomes == [Outcome.PARTICIPATED] * 3 + [Outcome.FINISHED]
        # The shared initial model is built, never downloaded: round 1 costs no bytes down,
        # and nothing is ever a keyframe.
        assert history[0].bytes_down == 0
        assert not any(r.keyframe for r in history[:3])
        assert all(r.bytes_down > 0 for r in history[1:3])
        assert all(r.bytes_up > 0 for r in history[:3])
    assert server.coordinator.finished
    # A finished client that syncs once more holds exactly the server's downlink model.
    conn = clients[0].connection
    model = clients[0].model
    assert model is not None
    package = conn.download(model.version, model.digest, initial_digest=MODEL_V0.digest)
    assert package.digest == server.coordinator.stream_model().digest
    encoder = clients[0].encoder
    assert encoder is not None
    assert encoder.residual_norm() > 0  # error feedback keeps what was not sent


def test_state_dir_keeps_model_and_residual_across_client_restarts(
    server: BackgroundServer, tmp_path: Path
) -> None:
    first = [edge(server, "c0", tmp_path / "c0"), edge(server, "c1", tmp_path / "c1")]
    run_threads(first, max_rounds=1)
    encoder = first[0].encoder
    assert encoder is not None
    residual = {k: v.copy() for k, v in encoder.residual.items()}
    for c in first:
        c.close()
    again = [edge(server, "c0", tmp_path / "c0"), edge(server, "c1", tmp_path / "c1")]
    results = run_clients(server, again)
    assert not results[0][0].keyframe  # the saved model: coded deltas only
    assert results[0][0].round_id == 2
    restored = again[0].encoder
    assert restored is not None
    assert restored.rounds_encoded == 3  # one before the restart, two after
    assert any(not np.array_equal(residual[k], restored.residual[k]) for k in residual)


def test_a_lost_acknowledgement_is_resent_after_a_restart_and_counted_once(
    server: BackgroundServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = tmp_path / "c0"
    client = edge(server, "c0", state)
    real_upload = Connection.upload

    def upload_then_lose_the_answer(self: Connection, **kwargs: Any) -> Any:
        real_upload(self, **kwargs)  # the server stores it ...
        raise ServerUnavailableError(
            "connection dropped", status="UNAVAILABLE"
        )  # ... we never hear

    monkeypatch.setattr(Connection, "upload", upload_then_lose_the_answer)
    with pytest.raises(ServerUnavailableError):
        client.run_round(trainer(0))
    monkeypatch.undo()
    pending = load_pending(state / "pending.npz")
    assert pending is not None
    assert not (state / "encoder.npz").exists()  # not acknowledged: residual not advanced
    client.close()

    restarted = edge(server, "c0", state)
    result = restarted.run_round(trainer(0))
    assert result.outcome is Outcome.PARTICIPATED
    assert result.round_id == pending.round_id
    assert not (state / "pending.npz").exists()
    assert (state / "encoder.npz").exists()
    encoder = restarted.encoder
    assert encoder is not None
    for name, array in pending.residual.items():
        np.testing.assert_array_equal(encoder.residual[name], array)
    stored = server.call(lambda: server.coordinator.stored_updates(pending.round_id))
    assert stored == ["c0"]


def test_an_update_refused_for_good_is_dropped_and_the_residual_restored(
    tmp_path: Path,
) -> None:
    # The round closes (deadline, min_clients = 1) while c0 trains: its upload is refused.
    with make_server(
        tmp_path, **{"rounds.min_clients": 1, "rounds.deadline_s": 0.5, "rounds.max_rounds": 0}
    ) as srv:
        client = edge(srv, "c0", tmp_path / "c0")
        other = edge(srv, "c1")
        gate = threading.Event()

        def slow_train(weights: dict[str, np.ndarray], info: RoundInfo) -> TrainResult:
            if info.round_id == 1:
                other.run_round(trainer(1))  # c1 reports; the deadline then closes round 1
                deadline = time.monotonic() + 30
                while srv.coordinator.open_round_id == 1 and time.monotonic() < deadline:
                    time.sleep(0.02)
                gate.set()
            return trainer(0)(weights, info)

        result = client.run_round(slow_train)
        assert gate.is_set()
        assert result.outcome is Outcome.REFUSED
        assert "FAILED_PRECONDITION" in result.detail
        encoder = client.encoder
        assert encoder is not None
        assert encoder.residual_norm() == 0.0  # back to before the refused update
        assert not (tmp_path / "c0" / "pending.npz").exists()


def test_the_client_retries_until_the_server_comes_up(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conn = Connection(
        f"127.0.0.1:{port}",
        TOKENS["c0"],
        client_id="c0",
        insecure=True,
        retry=RetryPolicy(attempts=40, initial_backoff_s=0.1, max_backoff_s=0.3),
    )
    answers: list[Any] = []
    thread = threading.Thread(target=lambda: answers.append(conn.check_in()))
    thread.start()
    time.sleep(1.0)  # the first attempts fail: nobody listens yet
    with make_server(tmp_path, listen=f"127.0.0.1:{port}"):
        thread.join(timeout=60)
    assert answers
    assert answers[0].assignment == pb.ASSIGNMENT_SELECTED


def test_close_ends_a_run_that_waits_for_an_unavailable_server() -> None:
    # run() waits for a server that is down for ever (an edge device outlives outages);
    # close() from another thread is how a program ends it.  It used to make run() die with
    # "ValueError: Cannot invoke RPC on closed channel!" at its next call.
    client = edge(
        free_port(), retry=RetryPolicy(attempts=2, initial_backoff_s=0.05, max_backoff_s=2.0)
    )
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(client.run(trainer(0))), daemon=True)
    thread.start()
    time.sleep(1.0)  # unavailable: run() logs and waits
    assert thread.is_alive()
    client.close()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert results == [[]]  # it returned, with no rounds


def test_a_call_to_a_server_that_never_answers_ends_at_the_call_deadline() -> None:
    # The default policy (8 tries of 120 s) waits ~16 min for a hung server; a call
    # deadline bounds the call as a whole, and run() gives up with it too.
    with silent_server() as port, edge(port, retry=None, call_deadline_s=0.5) as client:
        assert client.connection.retry.call_timeout_s == 120.0  # one try is not the bound
        for call in (lambda: client.run_round(trainer(0)), lambda: client.run(trainer(0))):
            start = time.monotonic()
            with pytest.raises(DeadlineExceededError, match=r"call deadline of 0\.5 s") as info:
                call()
            assert 0.45 <= time.monotonic() - start < 5.0
            assert isinstance(info.value, ServerUnavailableError | TimeoutError)
            assert info.value.status == "DEADLINE_EXCEEDED"


def test_the_call_deadline_cuts_the_retries_of_an_unreachable_server() -> None:
    # Nothing listens: every try fails at once and the backoff waits fill the deadline; none
    # ends past it.
    conn = Connection(
        f"127.0.0.1:{free_port()}",
        TOKENS["c0"],
        client_id="c0",
        insecure=True,
        retry=RetryPolicy(
            attempts=1000, initial_backoff_s=0.2, max_backoff_s=0.2, call_deadline_s=1.0
        ),
    )
    start = time.monotonic()
    with pytest.raises(DeadlineExceededError, match=r"\(\d+ tries; last: UNAVAILABLE: ") as info:
        conn.check_in()
    # the last wait (0.15-0.25 s) is cut to half of what is left: the last try starts
    # past 0.87 s and the call ends by the deadline
    assert 0.85 <= time.monotonic() - start < 1.2
    assert info.value.status == "UNAVAILABLE"
    # the message names the call and its status, not a codec result it has nothing to do with
    assert str(info.value).startswith("GetRoundConfig: no answer"), str(info.value)
    assert "FC_ERR" not in str(info.value)
    conn.close()
    # Tries that run out before the deadline end as they did, not as a deadline.
    conn = Connection(
        f"127.0.0.1:{free_port()}",
        TOKENS["c0"],
        insecure=True,
        retry=RetryPolicy(attempts=2, initial_backoff_s=0.05, call_deadline_s=30.0),
    )
    with pytest.raises(ServerUnavailableError) as unavailable:
        conn.check_in()
    assert not isinstance(unavailable.value, DeadlineExceededError)
    conn.close()
    with pytest.raises(ValueError, match="call_deadline_s"):
        RetryPolicy(call_deadline_s=0)


def test_retry_delays_grow_are_capped_and_jittered() -> None:
    policy = RetryPolicy(attempts=6, initial_backoff_s=1.0, max_backoff_s=4.0, jitter=0.25)
    delays = list(policy.delays(random.Random(1)))
    assert len(delays) == 5
    bases = [1.0, 2.0, 4.0, 4.0, 4.0]
    for delay, base in zip(delays, bases, strict=True):
        assert 0.75 * base <= delay <= 1.25 * base


def test_uploads_go_as_a_header_then_chunks_of_at_most_the_chunk_size() -> None:
    header = pb.UploadHeader(total_bytes=10)
    messages = list(iter_upload_requests(header, bytes(range(10)), chunk_bytes=4))
    assert messages[0].WhichOneof("payload") == "header"
    assert [len(m.chunk) for m in messages[1:]] == [4, 4, 2]
    assert b"".join(m.chunk for m in messages[1:]) == bytes(range(10))


def test_a_server_at_its_call_limit_is_retried_not_taken_as_a_refusal(tmp_path: Path) -> None:
    overrides = {"limits.max_concurrent_rpcs": 1, "rounds.target_clients": 3}
    with make_server(tmp_path, **overrides) as srv:
        release = threading.Event()

        def hold(client: str) -> None:
            """Take the only call slot with an upload that waits for its payload."""
            conn = Connection(
                f"127.0.0.1:{srv.port}", TOKENS[client], client_id=client, insecure=True, retry=FAST
            )
            config = conn.check_in().config
            time.sleep(0.3)
            header = pb.UploadHeader(
                round_id=config.round_id,
                base_version=config.base_version,
                idempotency_key="k",
                total_bytes=10,
                num_examples=1,
            )

            def stalled() -> Iterator[pb.UploadUpdateRequest]:
                yield pb.UploadUpdateRequest(header=header)
                release.wait(30)

            with contextlib.suppress(grpc.RpcError):  # one of the two holders is turned away
                conn._stub.UploadUpdate(stalled(), metadata=bearer(TOKENS[client]), timeout=30)

        holders = [threading.Thread(target=hold, args=(c,)) for c in ("c1", "c2")]
        for t in holders:
            t.start()
        time.sleep(1.0)
        conn = Connection(
            f"127.0.0.1:{srv.port}",
            TOKENS["c0"],
            client_id="c0",
            insecure=True,
            retry=RetryPolicy(attempts=40, initial_backoff_s=0.1, max_backoff_s=0.2),
        )
        threading.Timer(1.0, release.set).start()
        started = time.monotonic()
        assert conn.check_in().assignment == pb.ASSIGNMENT_SELECTED
        assert time.monotonic() - started > 0.7  # it waited for the slot instead of giving up
        for t in holders:
            t.join(timeout=30)


def test_compact_containers_both_ways_and_a_client_that_does_not_use_them(
    tmp_path: Path,
) -> None:
    """The server offers compact updates (RoundConfig.compact_updates) and sends compact
    packages to a client that asks (DownloadModelRequest.compact); a client with
    ``compact=False`` (as one from before them) gets and sends self-describing ones, in
    the same rounds, and both hold the server's model."""
    with make_server(tmp_path) as srv:
        new = EdgeClient(
            f"127.0.0.1:{srv.port}",
            client_id="c0",
            token=TOKENS["c0"],
            insecure=True,
            retry=FAST,
            initial_model=MODEL,
        )
        old = EdgeClient(
            f"127.0.0.1:{srv.port}",
            client_id="c1",
            token=TOKENS["c1"],
            insecure=True,
            retry=FAST,
            initial_model=MODEL,
            compact=False,
        )
        uploads: dict[str, list[bytes]] = {"c0": [], "c1": []}
        for client in (new, old):
            original = client.connection.upload

            def spy(_orig: Any = original, _id: str = client.client_id, **kw: Any) -> Any:
                uploads[_id].append(bytes(kw["payload"]))
                return _orig(**kw)

            client.connection.upload = spy  # type: ignore[method-assign]
        results = run_clients(srv, [new, old])
        for history in results:
            assert [r.outcome for r in history][:3] == [Outcome.PARTICIPATED] * 3
        assert uploads["c0"]
        assert uploads["c1"]
        assert all(codec.is_compact(d) for d in uploads["c0"])
        assert not any(codec.is_compact(d) for d in uploads["c1"])
        # downloads: compact for the client that asks, self-describing for the other
        stream = srv.coordinator.stream_model()
        for client, compact in ((new, True), (old, False)):
            model = client.model
            assert model is not None
            package = client.connection.download(
                model.version, model.digest, initial_digest=MODEL_V0.digest, compact=compact
            )
            assert package.digest == stream.digest
            engine = client._engine
            assert engine is not None
            engine.receiver.apply(package)  # decodes (compact: with the model's shapes)
            assert engine.receiver.digest == stream.digest
            containers = [package.keyframe] if package.keyframe else list(package.deltas)
            assert containers
            assert all(codec.is_compact(c) == compact for c in containers)


def test_a_statistics_callback_sets_what_the_server_aggregates(server: BackgroundServer) -> None:
    """TrainResult(statistics=fn): fn gets base + the coded update; its values replace the
    trained ones, so the server's model holds what fn measured (the bias here: 0.5)."""
    seen: list[set[str]] = []

    def measure(coded: Any) -> dict[str, np.ndarray]:
        seen.append(set(coded))
        return {"b": np.full(16, 0.5, np.float32)}

    def train(weights: dict[str, np.ndarray], info: RoundInfo) -> TrainResult:
        base = trainer(0)(weights, info)
        return TrainResult(base.weights, num_examples=10, statistics=measure)

    clients = [edge(server, "c0"), edge(server, "c1")]
    results: list[list[Any]] = [[], []]
    threads = [
        threading.Thread(target=lambda i=i: results.__setitem__(i, clients[i].run(train)))
        for i in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    assert all(r and r[-1].outcome == Outcome.FINISHED for r in results)
    assert seen
    assert all(keys == set(MODEL) for keys in seen)
    bias = server.coordinator.global_model().tensors["b"]
    np.testing.assert_allclose(bias, 0.5, atol=0.05)
