"""Shared set-up of the server tests: a real ``fedcodec serve`` on loopback.

The server test files (``test_server_*.py``, ``test_client_edge.py``) start a
:class:`~fedcodec.server.BackgroundServer` on ``127.0.0.1:0`` with its state in
``tmp_path`` and talk to it with real gRPC.  What every one of them needs is here, once;
each file keeps only the settings its tests are about (round sizes, deadlines, limits).
``conftest.py`` puts this folder on ``sys.path`` so the test files can import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fedcodec.client import Connection, RetryPolicy
from fedcodec.server import BackgroundServer, ServerConfig, load_config

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


def bearer(token: str) -> tuple[tuple[str, str]]:
    """gRPC call metadata carrying ``token`` as a bearer token (for raw stubs)."""
    return (("authorization", f"Bearer {token}"),)
