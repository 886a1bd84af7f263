"""The shared initial model over gRPC: built by every participant, never sent unless the
operator allows it and the client asks; a client without it gets a clear refusal."""

from __future__ import annotations

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
    # Room for all three; the rounds close at the deadline with whoever reported.
    overrides = {"rounds.target_clients": 3, "rounds.deadline_s": 1.0}
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
        # The edge SDK says what is missing before it asks for anything.
        with (
            EdgeClient(
                f"127.0.0.1:{srv.port}", client_id="c1", token=TOKENS["c1"], insecure=True
            ) as bare,
            pytest.raises(InitialModelError, match="initial_digest"),
        ):
            bare.run_round(train)
        # The round carries on with a client that holds the model.
        with EdgeClient(
            f"127.0.0.1:{srv.port}",
            client_id="c2",
            token=TOKENS["c2"],
            insecure=True,
            initial_model=MODEL,
            retry=FAST,
        ) as good:
            results = good.run(train)
        assert [r.outcome for r in results] == [Outcome.PARTICIPATED] * 2 + [Outcome.FINISHED]
        assert results[0].bytes_down == 0
        assert not any(r.keyframe for r in results)
        assert good.model is not None
        assert good.model.version == 1  # the base of the last round it took part in


def test_the_operator_may_send_the_initial_model_once_to_a_client_that_asks(
    tmp_path: Path,
) -> None:
    with server(tmp_path, **{"downlink.send_initial": True}) as srv:
        with EdgeClient(
            f"127.0.0.1:{srv.port}",
            client_id="c0",
            token=TOKENS["c0"],
            insecure=True,
            request_initial=True,
            retry=FAST,
        ) as client:
            results = client.run(train)
        assert [r.outcome for r in results] == [Outcome.PARTICIPATED] * 2 + [Outcome.FINISHED]
        assert results[0].bytes_down >= 4 * V0.spec.numel  # the initial model, once
        assert results[1].bytes_down < V0.spec.numel
        assert client.model is not None
        assert client.model.version == 1


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
