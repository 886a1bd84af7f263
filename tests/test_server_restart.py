"""``kill -9`` mid-round: no acknowledged update is lost, and the restarted server finishes the
round with exactly the model an uninterrupted server makes from the same updates.

The server runs as a real subprocess (``python -m fedcodec.cli serve``).  It is killed with
SIGKILL while one upload is half sent, after two others were acknowledged.  After the restart
the client whose acknowledgement counts is resent (same idempotency key: not counted twice),
the interrupted upload is sent again, the last client reports, and the round aggregates.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from fedcodec.client import Connection, RetryPolicy
from fedcodec.client.edge import round_info_from_proto
from fedcodec.pipeline import Aggregator, ModelReceiver, ModelVersion, UpdateEncoder
from fedcodec.server.store import Store
from fedcodec.v1 import aggregation_service_pb2 as pb
from fedcodec.v1 import aggregation_service_pb2_grpc as pb_grpc
from fedcodec.v1 import round_pb2
from fedcodec_bench.load import wait_started

from loopback import bearer

pytestmark = pytest.mark.slow

CLIENTS = [f"c{i}" for i in range(4)]
TOKENS = {c: f"restart-token-{c}-0123456789" for c in CLIENTS}


class ServerProcess:
    """``fedcodec serve`` in a subprocess, its JSON log in a file."""

    def __init__(self, root: Path, name: str) -> None:
        self.log = root / f"{name}.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "fedcodec.cli",
                    "serve",
                    "--config",
                    str(root / "server.json"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
                cwd=root,  # not the repository: `-m` would import its source folder
            )
        self.port = int(wait_started(self.proc, self.log, timeout=120)["port"])

    def connect(self, client: str) -> Connection:
        return Connection(
            f"127.0.0.1:{self.port}",
            TOKENS[client],
            client_id=client,
            insecure=True,
            retry=RetryPolicy(attempts=3, call_timeout_s=60),
        )

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)


def _federation(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    np.savez(
        root / "init.npz",
        w=(rng.standard_normal((32, 64)) * 0.1).astype(np.float32),
        b=np.zeros(32, np.float32),
    )
    (root / "tokens.json").write_text(json.dumps(TOKENS))
    config = {
        "listen": "127.0.0.1:0",
        "metrics_listen": "",
        "state_path": str(root / "state.sqlite"),
        "initial_model": str(root / "init.npz"),
        "security": {"insecure": True, "tokens_file": str(root / "tokens.json")},
        "rounds": {"max_rounds": 2, "min_clients": 4, "target_clients": 4, "deadline_s": 300},
        "params": {"lam": 0.1155, "S": 32},
        # 1 KiB chunks: an update of this small model is several chunks, so one can be
        # interrupted after its first (every chunk but the last is a full one).
        "limits": {"codec_threads": 1, "max_chunk_bytes": 1024},
        "downlink": {"shared_initial": False},
    }
    (root / "server.json").write_text(json.dumps(config))


def _updates(server: ServerProcess) -> tuple[round_pb2.RoundConfig, ModelVersion, dict[str, bytes]]:
    """Check every client in and code its (deterministic) update."""
    payloads: dict[str, bytes] = {}
    config = round_pb2.RoundConfig()
    base: ModelVersion | None = None
    for i, client in enumerate(CLIENTS):
        conn = server.connect(client)
        answer = conn.check_in()
        assert answer.assignment == pb.ASSIGNMENT_SELECTED
        config = answer.config
        info = round_info_from_proto(config)
        base = ModelReceiver(info.spec, threads=1).apply(conn.download(None, None))
        rng = np.random.default_rng(10 + i)
        local = {
            k: v + (0.02 * rng.standard_normal(v.shape)).astype(np.float32)
            for k, v in base.tensors.items()
        }
        payloads[client] = (
            UpdateEncoder(info.spec, client, threads=1)
            .encode(local, base, info.params, round_number=info.round_id, num_examples=10 + i)
            .data
        )
    assert base is not None
    return config, base, payloads


def _upload(
    server: ServerProcess, config: round_pb2.RoundConfig, client: str, data: bytes, key: str
) -> pb.UploadUpdateResponse:
    return server.connect(client).upload(
        round_id=config.round_id,
        base_version=config.base_version,
        base_digest=config.base_digest,
        idempotency_key=key,
        num_examples=10 + CLIENTS.index(client),
        payload=data,
        chunk_bytes=config.max_chunk_bytes,
    )


def _half_upload(
    server: ServerProcess, config: round_pb2.RoundConfig, client: str, data: bytes
) -> Any:
    """Start an upload that sends its header and half its payload, then stalls."""
    channel = grpc.insecure_channel(f"127.0.0.1:{server.port}")
    stub = pb_grpc.AggregationServiceStub(channel)
    stalled, release = threading.Event(), threading.Event()

    def requests() -> Iterator[pb.UploadUpdateRequest]:
        header = pb.UploadHeader(
            client_id=client,
            round_id=config.round_id,
            base_version=config.base_version,
            base_digest=config.base_digest,
            idempotency_key="interrupted",
            total_bytes=len(data),
            crc32=zlib.crc32(data),
            num_examples=10 + CLIENTS.index(client),
        )
        yield pb.UploadUpdateRequest(header=header)
        assert len(data) > config.max_chunk_bytes == 1024
        yield pb.UploadUpdateRequest(chunk=data[: config.max_chunk_bytes])
        stalled.set()
        release.wait(60)

    call = stub.UploadUpdate.future(requests(), metadata=bearer(TOKENS[client]), timeout=120)
    assert stalled.wait(30)
    time.sleep(0.3)
    return call, release, channel


def _wait_version(server: ServerProcess, client: str, version: int) -> None:
    deadline = time.monotonic() + 120
    while server.connect(client).check_in().latest_version < version:
        assert time.monotonic() < deadline, "the round did not aggregate"
        time.sleep(0.05)


def _final_model(root: Path) -> ModelVersion:
    store = Store(root / "state.sqlite")
    try:
        return store.model(1)
    finally:
        store.close()


def test_sigkill_mid_round_loses_no_acknowledged_update_and_the_model_is_exact(
    tmp_path: Path,
) -> None:
    crashed, reference = tmp_path / "crashed", tmp_path / "reference"
    _federation(crashed)
    _federation(reference)

    server = ServerProcess(crashed, "run1")
    config, base, payloads = _updates(server)
    keys = {c: uuid.uuid4().hex for c in CLIENTS}
    for client in ("c0", "c1"):
        assert _upload(server, config, client, payloads[client], keys[client]).status == (
            pb.UPLOAD_STATUS_ACCEPTED
        )
    call, release, channel = _half_upload(server, config, "c2", payloads["c2"])
    server.kill()  # SIGKILL: no shutdown code runs
    release.set()
    with pytest.raises(grpc.RpcError):
        call.result(timeout=60)
    channel.close()

    server = ServerProcess(crashed, "run2")
    # c1's acknowledgement "was lost": its resend is recognised, not counted twice.
    again = _upload(server, config, "c1", payloads["c1"], keys["c1"])
    assert again.status == pb.UPLOAD_STATUS_ALREADY_ACCEPTED
    assert again.accepted_in_round == 2
    for client in ("c2", "c3"):
        assert _upload(server, config, client, payloads[client], keys[client]).status == (
            pb.UPLOAD_STATUS_ACCEPTED
        )
    _wait_version(server, "c0", 1)
    assert server.terminate() == 0  # graceful shutdown on SIGTERM

    uninterrupted = ServerProcess(reference, "reference")
    for client in reversed(CLIENTS):  # another arrival order, too
        assert uninterrupted.connect(client).check_in().assignment == pb.ASSIGNMENT_SELECTED
        _upload(uninterrupted, config, client, payloads[client], uuid.uuid4().hex)
    _wait_version(uninterrupted, "c0", 1)
    assert uninterrupted.terminate() == 0

    model = _final_model(crashed)
    assert model.digest == _final_model(reference).digest
    # And it is FedAvg of the four updates on the exact version 0 (clients trained from the
    # downlink's reconstruction of it, whose digest they reported).
    exact = Aggregator(
        _store_model(crashed, 0), round_number=1, base_digests={config.base_digest}, threads=1
    )
    for i, client in enumerate(CLIENTS):
        exact.accept(payloads[client], client_id=client, base_version=0, num_examples=10 + i)
    assert model.digest == exact.finalize().digest
    assert base.digest == config.base_digest


def _store_model(root: Path, version: int) -> ModelVersion:
    store = Store(root / "state.sqlite")
    try:
        return store.model(version)
    finally:
        store.close()
