"""The shared initial model over gRPC: built by every participant; sent once (by default) to a
client that lacks it and asks, never to one that holds it; with ``downlink.send_initial =
false`` a client without it gets a clear refusal."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedcodec.client import Connection, EdgeClient, RetryPolicy, TrainResult, UpdateRefusedError
from fedcodec.client.edge import Outcome, RoundInfo
from fedcodec.pipeline import InitialModelError, ModelReceiver, ModelVersion
from fedcodec.server import BackgroundServer
from fedcodec.v1 import aggregation_service_pb2 as pb

import loopback
from loopback import loopback_config

_RNG = np.random.default_rng(5)
MODEL = {
    "w": (_RNG.standard_normal((16, 24)) * 0.1).astype(np.float32),
    "b": np.zeros(16, np.float32),
}
V0 = ModelVersion.create(0, MODEL)
TOKENS = {f"c{i}": f"token-of-client-{i}-0123456789" for i in range(3)}
FAST = RetryPolicy(attempts=2, initial_backoff_s=0.01, max_backoff_s=0.05, call_timeout_s=30)


def server(tmp_path: Path, **overrides: Any) -> BackgroundServer:
    settings = {
        "initial_model": "toy-model",
        "rounds.min_clients": 1,
        "rounds.target_clients": 1,
        "rounds.max_rounds": 2,
        "rounds.retry_after_s": 0.02,
        "params.S": 16,
    }
    config = loopback_config(tmp_path, settings, overrides)
    return BackgroundServer(config, tokens=TOKENS, initial_model=MODEL)


def connect(srv: BackgroundServer, client: str) -> Connection:
    return loopback.connect(srv, TOKENS[client], client, FAST)


def edge(srv: BackgroundServer, client: str, **kwargs: Any) -> EdgeClient:
    """An edge client of the loopback server (FAST retries unless told otherwise)."""
    kwargs.setdefault("retry", FAST)
    return EdgeClient(
        f"127.0.0.1:{srv.port}", client_id=client, token=TOKENS[client], insecure=True, **kwargs
    )


def train(weights: dict[str, np.ndarray], info: RoundInfo) -> TrainResult:
    rng = np.random.default_rng(info.round_id)
    return TrainResult(
        {
            k: v + (0.02 * rng.standard_normal(v.shape)).astype(np.float32)
            for k, v in weights.items()
        },
        num_examples=4,
    )


def test_the_round_config_names_the_initial_model_and_a_client_without_it_is_refused(
    tmp_path: Path,
) -> None:
    # Room for all three; the rounds close at the deadline with whoever reported.  The
    # operator forbids sending the initial model.
    overrides = {
        "rounds.target_clients": 3,
        "rounds.deadline_s": 1.0,
        "downlink.send_initial": False,
    }
    with server(tmp_path, **overrides) as srv:
        conn = connect(srv, "c0")
        answer = conn.check_in()
        assert answer.assignment == pb.ASSIGNMENT_SELECTED
        assert answer.config.initial_model.digest == V0.digest
        assert answer.config.initial_model.model_id == "toy-model"
        with pytest.raises(UpdateRefusedError, match=r"FAILED_PRECONDITION.*initial_digest"):
            conn.download(None, None)
        other = ModelVersion.create(0, {k: v + 1 for k, v in MODEL.items()})
        with pytest.raises(UpdateRefusedError, match=r"FAILED_PRECONDITION.*initial_digest"):
            conn.download(None, None, initial_digest=other.digest, want_initial=True)
        # Holding it, version 0 costs nothing.
        package = conn.download(None, None, initial_digest=V0.digest)
        assert len(package) == 0
        assert ModelReceiver(V0.spec, initial=V0).apply(package).digest == V0.digest
        # Told not to ask, the edge SDK says what is missing before it asks for anything.
        with (
            edge(srv, "c1", request_initial=False) as bare,
            pytest.raises(InitialModelError, match="initial_digest"),
        ):
            bare.run_round(train)
        # By default it asks, and the server refuses, naming what it lacks.
        with (
            edge(srv, "c1") as asking,
            pytest.raises(UpdateRefusedError, match=r"FAILED_PRECONDITION.*initial_digest"),
        ):
            asking.run_round(train)
        # The round carries on with a client that holds the model.
        with edge(srv, "c2", initial_model=MODEL) as good:
            results = good.run(train)
        assert [r.outcome for r in results] == [Outcome.PARTICIPATED] * 2 + [Outcome.FINISHED]
        assert results[0].bytes_down == 0
        assert not any(r.keyframe for r in results)
        assert good.model is not None
        assert good.model.version == 1  # the base of the last round it took part in


def test_by_default_a_client_without_the_initial_model_gets_it_once_and_takes_part(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Out of the box (no initial_model, default server): the client asks, the server sends
    the initial model once with one warning naming the client and the bytes, and the client
    takes part from its first round on; a client that holds it downloads nothing for it."""
    with (
        caplog.at_level(logging.WARNING, logger="fedcodec.server"),
        server(tmp_path, **{"rounds.max_rounds": 3}) as srv,
        edge(srv, "c0") as bare,
        edge(srv, "c1", initial_model=MODEL) as holder,
    ):
        first = holder.run(train, max_rounds=1)  # round 1
        results = bare.run(train)  # rounds 2 and 3
        sent = srv.server.metrics.registry.get_sample_value("fedcodec_initial_models_sent_total")
    assert [r.outcome for r in first] == [Outcome.PARTICIPATED]
    assert first[0].bytes_down == 0  # it holds the initial model: version 0 costs nothing
    assert [r.outcome for r in results] == [Outcome.PARTICIPATED] * 2 + [Outcome.FINISHED]
    assert results[0].bytes_down >= 4 * V0.spec.numel  # the initial model, once
    assert results[1].bytes_down < V0.spec.numel
    assert bare.model is not None
    assert bare.model.version == 2
    assert sent == 1
    warnings = [r.getMessage() for r in caplog.records if "initial model" in r.getMessage()]
    assert len(warnings) == 1
    assert "'c0'" in warnings[0]
    assert f"({4 * V0.spec.numel} bytes" in warnings[0]


def test_clients_see_the_initial_models_file_name_not_the_servers_path(tmp_path: Path) -> None:
    # The path of the server's initial model file went to every client in each round config
    # and in refusals ("starts from the shared initial model '/etc/...'").
    source = tmp_path / "private" / "init.npz"
    source.parent.mkdir()
    np.savez(source, **MODEL)
    with server(tmp_path, initial_model=str(source)) as srv:
        conn = connect(srv, "c0")
        answer = conn.check_in()
        assert answer.config.initial_model.model_id == "init.npz"
        assert answer.config.initial_model.digest == V0.digest
        with pytest.raises(UpdateRefusedError) as info:
            conn.download(None, None)
        assert "'init.npz'" in str(info.value)
        assert str(tmp_path) not in str(info.value)
