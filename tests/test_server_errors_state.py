"""Issue 12: every error a clear status, and state problems refused in one line (real gRPC on
loopback, real SQLite, real ``fedcodec serve`` processes).  Each test failed before."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from fedcodec.client import Connection, RetryPolicy
from fedcodec.client.edge import round_info_from_proto
from fedcodec.client.errors import ServerUnavailableError
from fedcodec.pipeline import ModelReceiver, ModelVersion, UpdateEncoder
from fedcodec.server import BackgroundServer, ServerConfig
from fedcodec.server.app import is_loopback
from fedcodec.v1 import aggregation_service_pb2 as pb

import loopback
from loopback import bearer, loopback_config, selected, upload, wait_until

_RNG = np.random.default_rng(0)
MODEL = {
    "w": (_RNG.standard_normal((8, 16)) * 0.1).astype(np.float32),
    "b": np.zeros(8, np.float32),
}
TOKENS = {f"c{i}": f"token-of-client-{i}-0123456789" for i in range(6)}
SERVICE = "/fedcodec.v1.AggregationService/"


def make_config(tmp_path: Path, **overrides: Any) -> ServerConfig:
    settings = {
        "rounds.min_clients": 2,
        "rounds.target_clients": 3,
        "rounds.deadline_s": 300.0,
        "downlink.shared_initial": False,  # raw connections here download a keyframe first
    }
    return loopback_config(tmp_path, settings, overrides)


def connect(server: BackgroundServer, client: str, attempts: int = 1) -> Connection:
    retry = RetryPolicy(attempts=attempts, initial_backoff_s=0.05, call_timeout_s=60)
    return loopback.connect(server, TOKENS[client], client, retry)


def update_for(conn: Connection) -> tuple[pb.RoundConfig, bytes]:
    config = selected(conn)
    info = round_info_from_proto(config)
    base = ModelReceiver(info.spec, threads=1).apply(conn.download(None, None))
    rng = np.random.default_rng(len(conn.client_id))
    local = {
        k: v + (0.01 * rng.standard_normal(v.shape)).astype(np.float32)
        for k, v in base.tensors.items()
    }
    data = (
        UpdateEncoder(info.spec, conn.client_id, threads=1)
        .encode(local, base, info.params, round_number=info.round_id, num_examples=10)
        .data
    )
    return config, data


# -- status codes ---------------------------------------------------------------------------


def test_malformed_protobuf_is_invalid_argument(tmp_path: Path) -> None:
    with BackgroundServer(make_config(tmp_path), tokens=TOKENS, initial_model=MODEL) as server:
        auth = bearer(TOKENS["c0"])
        garbage = b"\x0a\xff\xff\xff\xff\x0f"  # field 1, a length that runs past the end
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            check = channel.unary_unary(SERVICE + "GetRoundConfig")
            download = channel.unary_stream(SERVICE + "DownloadModel")
            for method, call in (
                ("GetRoundConfig", lambda: check(garbage, metadata=auth, timeout=10)),
                ("DownloadModel", lambda: list(download(garbage, metadata=auth, timeout=10))),
            ):
                with pytest.raises(grpc.RpcError) as err:
                    call()
                assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, method
                assert "malformed" in err.value.details()
            upload = channel.stream_unary(SERVICE + "UploadUpdate")
            with pytest.raises(grpc.RpcError) as err:
                upload(iter([garbage]), metadata=auth, timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "UploadUpdateRequest" in err.value.details()
        # The server goes on serving.
        assert connect(server, "c1").check_in().assignment == pb.ASSIGNMENT_SELECTED


def test_full_disk_is_resource_exhausted_and_nothing_is_lost(tmp_path: Path) -> None:
    """SQLite's own 'database or disk is full' (a page limit on the real database file)."""
    big = {"w": (_RNG.standard_normal((64, 256)) * 0.1).astype(np.float32)}
    with BackgroundServer(make_config(tmp_path), tokens=TOKENS, initial_model=big) as server:
        conn = connect(server, "c0")
        config, data = update_for(conn)
        assert len(data) > 8192  # more than the free pages of the database
        coordinator = server.coordinator

        def limit_pages(extra: int) -> Any:
            def job() -> None:
                db = coordinator.store._conn
                pages = db.execute("PRAGMA page_count").fetchone()[0]
                db.execute(f"PRAGMA max_page_count = {pages + extra}")

            return coordinator._in_db(job)

        server.call(lambda: limit_pages(0))
        key = uuid.uuid4().hex
        with pytest.raises(ServerUnavailableError) as refused:  # retryable, not final
            upload(conn, config, data, idempotency_key=key)
        assert refused.value.status == "RESOURCE_EXHAUSTED"
        assert "storage is full" in refused.value.detail
        assert server.call(lambda: coordinator.stored_updates()) == []
        # The SDK keeps resending (same key) until the operator frees space.
        patient = connect(server, "c0", attempts=20)
        result: list[Any] = []
        sender = threading.Thread(
            target=lambda: result.append(upload(patient, config, data, idempotency_key=key))
        )
        sender.start()
        time.sleep(0.5)
        server.call(lambda: limit_pages(100_000))
        sender.join(timeout=60)
        assert result[0].status == pb.UPLOAD_STATUS_ACCEPTED
        assert server.call(lambda: coordinator.stored_updates()) == ["c0"]


def test_retry_marks_agree() -> None:
    from fedcodec.client.transport import RETRY_MARK as CLIENT_MARK
    from fedcodec.server.errors import RETRY_MARK as SERVER_MARK

    assert CLIENT_MARK == SERVER_MARK


def test_is_loopback() -> None:
    assert is_loopback("127.0.0.1:50051")
    assert is_loopback("[::1]:0")
    assert is_loopback("localhost:1")
    assert not is_loopback("[::]:50051")
    assert not is_loopback("0.0.0.0:50051")
    assert not is_loopback("10.1.2.3:50051")


# -- restart --------------------------------------------------------------------------------


def test_a_full_round_aggregates_at_once_after_a_restart(tmp_path: Path) -> None:
    """The restored round already has target_clients updates (the server died before its
    aggregation committed): it aggregates at start, not at the deadline (300 s here)."""
    with BackgroundServer(
        make_config(tmp_path, **{"rounds.target_clients": 5}), tokens=TOKENS, initial_model=MODEL
    ) as server:
        for client in ("c0", "c1", "c2"):
            conn = connect(server, client)
            upload(conn, *update_for(conn))
        assert len(server.call(lambda: server.coordinator.stored_updates())) == 3
    with BackgroundServer(make_config(tmp_path), tokens=TOKENS) as server:
        wait_until(lambda: server.coordinator.global_model().version == 1, timeout=20)
        assert server.coordinator.open_round_id == 2


# -- state files ----------------------------------------------------------------------------


def _serve(root: Path, *extra: str, state: str | None = None) -> subprocess.CompletedProcess[str]:
    """``fedcodec serve`` until it has started (then SIGTERM), or until it exits."""
    (root / "tokens.json").write_text(json.dumps(TOKENS))
    np.savez(root / "init.npz", **MODEL)
    args = [
        sys.executable,
        "-m",
        "fedcodec.cli",
        "serve",
        "--insecure",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "",
        "--state",
        state or str(root / "state.sqlite"),
        "--tokens-file",
        str(root / "tokens.json"),
        "--initial-model",
        str(root / "init.npz"),
        *extra,
    ]
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=root
    )
    deadline = time.monotonic() + 60
    lines: list[str] = []
    assert proc.stderr is not None
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if '"server_started"' in line:
            proc.terminate()
            break
    _, rest = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(args, proc.returncode, "", "".join(lines) + rest)


def _one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr  # one line, no traceback
    assert "Traceback" not in result.stderr
    message = json.loads(lines[0])["msg"]
    assert isinstance(message, str)
    return message


@pytest.mark.slow
def test_unusable_state_files_are_refused_in_one_line(tmp_path: Path) -> None:
    state = tmp_path / "state.sqlite"
    # A real federation first.
    assert _serve(tmp_path).returncode == 0
    good = state.read_bytes()
    assert len(good) > 4096
    # 0 bytes: used to start a new federation silently.
    state.write_bytes(b"")
    assert "empty (0 bytes)" in _one_error_line(_serve(tmp_path))
    assert state.stat().st_size == 0
    # Truncated: the SQLite header survives, the pages do not.
    state.write_bytes(good[: len(good) // 2])
    for suffix in ("-wal", "-shm"):
        Path(str(state) + suffix).unlink(missing_ok=True)
    assert "unusable" in _one_error_line(_serve(tmp_path))
    # Garbage.
    state.write_bytes(b"not a database at all" * 100)
    assert "not an SQLite database" in _one_error_line(_serve(tmp_path))
    # The explicit flag moves it aside and starts a new federation.
    started = _serve(tmp_path, "--new-federation")
    assert started.returncode == 0, started.stderr
    assert "state_moved_aside" in started.stderr
    assert list(tmp_path.glob("state.sqlite.unusable-*"))
    # A directory that cannot be created, a state path that is a directory.
    message = _one_error_line(_serve(tmp_path, state="/proc/version/sub/state.sqlite"))
    assert "cannot create the directory" in message
    (tmp_path / "dir.sqlite").mkdir()
    message = _one_error_line(_serve(tmp_path, state=str(tmp_path / "dir.sqlite")))
    assert "not a regular file" in message


@pytest.mark.slow
def test_sigkill_while_aggregating_then_restart_aggregates_at_once(tmp_path: Path) -> None:
    """``kill -9`` right after the last update of a full round was acknowledged, while the
    server aggregates (a 4 M-weight model: decoding and coding the keyframe take a while).
    The restarted server used to wait for the deadline (300 s here); now it aggregates at
    start."""
    from fedcodec.server.store import Store

    rng = np.random.default_rng(5)
    big = {"w": (rng.standard_normal((2048, 2048)) * 0.1).astype(np.float32)}
    (tmp_path / "tokens.json").write_text(json.dumps(TOKENS))
    np.savez(tmp_path / "init.npz", **big)
    state = tmp_path / "state.sqlite"
    args = [
        sys.executable, "-m", "fedcodec.cli", "serve", "--insecure",
        "--listen", "127.0.0.1:0", "--metrics-listen", "",
        "--state", str(state), "--tokens-file", str(tmp_path / "tokens.json"),
        "--initial-model", str(tmp_path / "init.npz"),
        "--set", "rounds.target_clients=3", "--set", "rounds.min_clients=3",
        "--set", "rounds.deadline_s=300", "--set", "limits.codec_threads=1",
    ]  # fmt: skip

    def start(name: str) -> tuple[subprocess.Popen[bytes], int, Path]:
        log = tmp_path / f"{name}.log"
        with log.open("wb") as err:
            proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=err, cwd=tmp_path)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            for line in log.read_text().splitlines():
                if '"server_started"' in line:
                    return proc, int(json.loads(line)["port"]), log
            assert proc.poll() is None, log.read_text()
            time.sleep(0.05)
        raise AssertionError("the server did not start")

    proc, port, _ = start("first")
    try:
        conns = [
            Connection(f"127.0.0.1:{port}", TOKENS[c], client_id=c, insecure=True)
            for c in ("c0", "c1", "c2")
        ]
        # Every client holds the shared initial model (it never travels): code against it.
        base = ModelVersion.create(0, big)
        work = []
        for i, conn in enumerate(conns):
            config = conn.check_in().config
            info = round_info_from_proto(config)
            noise = np.random.default_rng(i).standard_normal(big["w"].shape) * 0.01
            local = {"w": big["w"] + noise.astype(np.float32)}
            data = (
                UpdateEncoder(info.spec, conn.client_id, threads=1)
                .encode(local, base, info.params, round_number=info.round_id, num_examples=10)
                .data
            )
            work.append((conn, config, data))
        for conn, config, data in work:
            assert upload(conn, config, data).status == pb.UPLOAD_STATUS_ACCEPTED
        proc.kill()  # SIGKILL right after the round became full: aggregation is running
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    store = Store(state)
    try:
        assert store.open_round() is not None  # killed before the aggregation committed
        assert store.open_round().round_id == 1  # type: ignore[union-attr]
        assert len(store.reported(1)) == 3
    finally:
        store.close()
    proc, port, log = start("second")
    try:
        deadline = time.monotonic() + 60
        while '"round_aggregated"' not in log.read_text():
            assert time.monotonic() < deadline, "the full round was not aggregated at start"
            time.sleep(0.1)
        assert '"restored_round_full"' in log.read_text()
    finally:
        proc.terminate()
        proc.wait(timeout=60)


@pytest.mark.slow
def test_a_port_in_use_is_one_line_naming_the_setting(tmp_path: Path) -> None:
    # A second server on one machine: gRPC's bind failure used to end in a Python traceback
    # (exit 1), and the default metrics port 9464 in an "Errno 98" without an address, after
    # the state database was created, plus an "Event loop is closed" traceback from the
    # started gRPC server.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        for key, flag in (
            ("listen", "--listen"),
            ("metrics_listen", "--metrics-listen"),
            ("health_listen", "--health-listen"),
        ):
            state = tmp_path / f"{key}.sqlite"
            result = _serve(tmp_path, flag, address, state=str(state))
            assert result.returncode == 2, result.stderr
            assert "Traceback" not in result.stderr
            assert "Exception ignored" not in result.stderr
            errors = [
                json.loads(line)["msg"]
                for line in result.stderr.splitlines()
                if line.startswith("{") and '"level": "error"' in line
            ]
            assert errors == [
                f"cannot listen on {address!r} ({key}): " + errors[0].split(": ", 1)[1]
            ]
            assert f"set {key} to a free HOST:PORT" in errors[0]
            assert not state.exists()  # nothing created: the start stopped before the state


def test_a_server_that_starts_too_late_stops_once_it_is_up(tmp_path: Path) -> None:
    # BackgroundServer.start(timeout) gave up waiting but its thread went on: the server came
    # up later and served (port, database, CPU) until the process ended.
    big = {"w": np.random.default_rng(7).standard_normal((1024, 1024)).astype(np.float32)}
    config = loopback_config(tmp_path, {"downlink.shared_initial": False})
    background = BackgroundServer(config, tokens=TOKENS, initial_model=big)
    with pytest.raises(TimeoutError, match="did not start"):
        background.start(timeout=0.001)
    background._thread.join(timeout=120)
    assert not background._thread.is_alive()
    # It stopped cleanly: the state is closed and a new server opens it.
    with BackgroundServer(config, tokens=TOKENS) as again:
        assert again.coordinator.global_model().version == 0
