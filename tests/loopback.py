"""Shared set-up of the server tests: a real ``fedcodec serve`` on loopback.

The server test files (``test_server_*.py``, ``test_client_edge.py``) start a
:class:`~fedcodec.server.BackgroundServer` on ``127.0.0.1:0`` with its state in
``tmp_path`` and talk to it with real gRPC.  What every one of them needs is here, once;
each file keeps only the settings its tests are about (round sizes, deadlines, limits).
``conftest.py`` puts this folder on ``sys.path`` so the test files can import it.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from fedcodec.client import (
    Connection,
    EdgeClient,
    Outcome,
    RetryPolicy,
    RoundInfo,
    RoundResult,
    TrainFn,
    TrainResult,
)
from fedcodec.server import BackgroundServer, ServerConfig, load_config
from fedcodec.v1 import aggregation_service_pb2 as pb
from fedcodec.v1 import round_pb2

#: Settings every loopback test server shares: an ephemeral port, no metrics listener,
#: its own SQLite file, plain-text gRPC on loopback, fast retry hints, one codec thread.
LOOPBACK: dict[str, Any] = {
    "listen": "127.0.0.1:0",
    "metrics_listen": "",
    "security.insecure": True,
    "rounds.retry_after_s": 0.05,
    "limits.codec_threads": 1,
}


def loopback_config(tmp_path: Path, *layers: Mapping[str, Any]) -> ServerConfig:
    """Load a server configuration for a loopback test.

    Parameters
    ----------
    tmp_path : Path
        The test's temporary folder; the state file is ``tmp_path / "state.sqlite"``.
    *layers : Mapping[str, Any]
        Dotted settings applied over :data:`LOOPBACK` in order (a file's defaults, then a
        test's overrides).

    Returns
    -------
    ServerConfig
        The configuration, validated by the same loader ``fedcodec serve`` uses
        (no environment variables are read).
    """
    values: dict[str, Any] = {**LOOPBACK, "state_path": str(tmp_path / "state.sqlite")}
    for layer in layers:
        values.update(layer)
    return load_config(env={}, overrides=values)


def connect(
    server: BackgroundServer,
    token: str,
    client_id: str = "",
    retry: RetryPolicy | None = None,
) -> Connection:
    """Open an edge-SDK connection to a loopback server (one attempt per call by default)."""
    return Connection(
        f"127.0.0.1:{server.port}",
        token,
        client_id=client_id,
        insecure=True,
        retry=RetryPolicy(attempts=1, call_timeout_s=60) if retry is None else retry,
    )


def selected(conn: Connection) -> round_pb2.RoundConfig:
    """Check in and return the round's configuration (the client must be selected)."""
    answer = conn.check_in()
    assert answer.assignment == pb.ASSIGNMENT_SELECTED, answer
    return answer.config


def upload(
    conn: Connection, config: round_pb2.RoundConfig, payload: bytes, **fields: Any
) -> pb.UploadUpdateResponse:
    """Upload ``payload`` for ``config``'s round (a fresh idempotency key, 10 examples;
    ``fields`` override any of :meth:`Connection.upload`'s arguments)."""
    args: dict[str, Any] = {
        "round_id": config.round_id,
        "base_version": config.base_version,
        "base_digest": config.base_digest,
        "idempotency_key": uuid.uuid4().hex,
        "num_examples": 10,
        "payload": payload,
    }
    args.update(fields)
    return conn.upload(**args)


def bearer(token: str) -> tuple[tuple[str, str]]:
    """gRPC call metadata carrying ``token`` as a bearer token (for raw stubs)."""
    return (("authorization", f"Bearer {token}"),)


def free_port() -> int:
    """A loopback port free right now (for a server restarted on the same address)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def directional_trainer(model: Mapping[str, np.ndarray], client: int, salt: int) -> TrainFn:
    """A training callback with dense updates that keep a per-client direction across
    rounds (as local training on a client's own data does), plus fresh noise per round."""
    direction = {
        k: np.random.default_rng([client, salt]).standard_normal(v.shape).astype(np.float32)
        for k, v in model.items()
    }

    def train(weights: dict[str, np.ndarray], info: RoundInfo) -> TrainResult:
        rng = np.random.default_rng([client, info.round_id])
        new = {
            k: v + (0.02 * (direction[k] + 0.3 * rng.standard_normal(v.shape))).astype(np.float32)
            for k, v in weights.items()
        }
        return TrainResult(new, num_examples=10 + client)

    return train


def participate(client: EdgeClient, train: TrainFn, timeout: float = 30.0) -> RoundResult:
    """Run rounds until ``client`` took part in one (the next round may not be open yet)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        result = client.run_round(train)
        if result.outcome is Outcome.PARTICIPATED:
            return result
        assert result.outcome in (Outcome.NOT_SELECTED, Outcome.ALREADY_REPORTED), result
        time.sleep(0.02)
    raise AssertionError(f"{client.client_id} was not selected within {timeout} s")


#: Retries of the edge clients in the round tests: many, with short back-offs.
FAST_RETRY = RetryPolicy(attempts=40, initial_backoff_s=0.05, max_backoff_s=0.2, call_timeout_s=30)


def edge_client(
    port: int,
    client_id: str,
    token: str,
    initial_model: Mapping[str, np.ndarray] | None,
    state_dir: Path | None = None,
) -> EdgeClient:
    """An edge client of a loopback server (plain text, :data:`FAST_RETRY`)."""
    return EdgeClient(
        f"127.0.0.1:{port}",
        client_id=client_id,
        token=token,
        insecure=True,
        retry=FAST_RETRY,
        initial_model=initial_model,
        state_dir=state_dir,
    )


def wait_until(condition: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll ``condition`` until it holds (AssertionError after ``timeout`` seconds)."""
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"not reached within {timeout} s")
        time.sleep(0.02)


@contextlib.contextmanager
def silent_server() -> Iterator[int]:
    """A gRPC server on loopback that takes every ``AggregationService`` call and never
    answers (a hung server: the connection is fine, the calls run into their deadlines).

    Yields
    ------
    int
        Its port.
    """
    release = threading.Event()

    def hang(request: Any, context: grpc.ServicerContext) -> Any:
        release.wait()
        context.abort(grpc.StatusCode.UNAVAILABLE, "the silent test server stopped")

    handlers = {
        "GetRoundConfig": grpc.unary_unary_rpc_method_handler(hang),
        "DownloadModel": grpc.unary_stream_rpc_method_handler(hang),
        "UploadUpdate": grpc.stream_unary_rpc_method_handler(hang),
    }
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("fedcodec.v1.AggregationService", handlers),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port
    finally:
        release.set()
        server.stop(grace=None)
