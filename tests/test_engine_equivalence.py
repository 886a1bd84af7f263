"""One seeded federation, three transports, the same bytes and the same models.

10 clients, 4 per round (a seeded draw), 6 rounds, run through (a) the round engine in
process, (b) the gRPC server with edge clients on loopback, (c) the Flower strategy and mod
on real Flower ``Message`` objects driven in process (no Ray): every round's uplink and
downlink payload bytes per client, and the digest of the model every participant holds
after every round, are identical.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from fedcodec.client import EdgeClient, Outcome, RetryPolicy, RoundInfo, TrainResult
from fedcodec.pipeline import (
    ClientEngine,
    ModelVersion,
    RobustPolicy,
    RoundEngine,
    RoundParams,
    model_digest,
)
from fedcodec.server import BackgroundServer, RoundSummary, load_config

CLIENTS = [str(i) for i in range(1, 11)]
PER_ROUND = 4
ROUNDS = 6
PARAMS = RoundParams(lam=0.1155, S=24)
SHAPES = {"w": (20, 30), "b": (20,)}

# round -> client -> (bytes up, bytes down, digest held after the round)
Trace = dict[int, dict[str, tuple[int, int, str]]]
# round -> client -> (SHA-256 of the update container, of the downloaded containers)
Payloads = dict[int, dict[str, tuple[str, str]]]


def _sha(*parts: bytes) -> str:
    return hashlib.sha256(b"".join(parts)).hexdigest()


def _initial() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(42)
    return {k: (0.1 * rng.standard_normal(s)).astype(np.float32) for k, s in SHAPES.items()}


def _draws() -> list[list[str]]:
    rng = np.random.default_rng(7)
    return [
        sorted(CLIENTS[int(i)] for i in rng.choice(len(CLIENTS), PER_ROUND, replace=False))
        for _ in range(ROUNDS)
    ]


def _train(weights: dict[str, np.ndarray], client: str, round_id: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([int(client), round_id])
    return {
        k: v + (0.01 * rng.standard_normal(v.shape)).astype(np.float32) for k, v in weights.items()
    }


def _examples(client: str) -> int:
    return 5 + int(client)


def run_in_process() -> tuple[Trace, list[str], Payloads]:
    """(a) The engine in process: per-round client bytes and digests, global digests."""
    v0 = ModelVersion.create(0, _initial())
    engine = RoundEngine(
        v0, schedule=PARAMS, threads=1, policy=RobustPolicy.fedavg(), step_snap="auto"
    )
    members = {c: ClientEngine(v0.spec, c, initial=v0, threads=1) for c in CLIENTS}
    trace: Trace = {}
    payloads: Payloads = {}
    globals_: list[str] = []
    for r, chosen in enumerate(_draws(), start=1):
        rows: dict[str, tuple[int, int, str]] = {}
        payloads[r] = {}
        containers = {}
        for c in chosen:
            member = members[c]
            down = 0
            down_sha = _sha()
            if not member.holds(engine.version, engine.stream_digest):
                package = engine.package_for(c, **member.request())
                member.receive(package)
                down = len(package)
                parts = [package.keyframe] if package.keyframe is not None else package.deltas
                down_sha = _sha(*parts)
            update = member.encode(
                _train(member.model.copy_tensors(), c, r),
                engine.round_params().for_client(c),
                round_number=r,
                num_examples=_examples(c),
            )
            engine.validate_update(
                update.data,
                client_id=c,
                base_version=update.base_version,
                num_examples=update.num_examples,
                base_digest=update.base_digest,
            )
            containers[c] = update
            rows[c] = (len(update), down, member.model.digest)
            payloads[r][c] = (_sha(update.data), down_sha)
        aggregator = engine.aggregator()
        for c in sorted(chosen):  # client-id order, like the server's store
            aggregator.accept_update(containers[c])
        outcome = engine.publish(aggregator)
        trace[r] = rows
        globals_.append(outcome.model.digest)
    return trace, globals_, payloads


def run_grpc(tmp_path: Path) -> tuple[Trace, list[str]]:
    """(b) The gRPC server and edge clients on loopback."""
    tokens = {c: f"token-of-client-{c}-0123456789" for c in CLIENTS}
    config = load_config(
        env={},
        overrides={
            "listen": "127.0.0.1:0",
            "metrics_listen": "",
            "state_path": str(tmp_path / "state.sqlite"),
            "security.insecure": True,
            "rounds.max_rounds": ROUNDS,
            "rounds.target_clients": PER_ROUND,
            "rounds.min_clients": PER_ROUND,
            "rounds.deadline_s": 300.0,
            "rounds.selection_probability": 1.0,
            "rounds.retry_after_s": 0.02,
            "params.lam": PARAMS.lam,
            "params.S": PARAMS.S,
            "downlink.params.lam": PARAMS.lam,
            "downlink.params.S": PARAMS.S,
            # the Flower strategy's default: power-of-two steps once a client lags
            "downlink.step_snap": "auto",
            "robust.max_share": 1.0,
            "robust.norm_bound_rel": 0.0,
            "limits.codec_threads": 1,
        },
    )
    globals_: list[str] = []
    server: BackgroundServer | None = None

    def on_round(summary: RoundSummary) -> None:
        assert server is not None
        globals_.append(server.coordinator.global_model().digest)

    def trainer(client: str) -> Any:
        def train(weights: dict[str, np.ndarray], info: RoundInfo) -> TrainResult:
            return TrainResult(_train(weights, client, info.round_id), _examples(client))

        return train

    trace: Trace = {}
    server = BackgroundServer(config, tokens=tokens, initial_model=_initial(), listeners=[on_round])
    with server:
        clients = {
            c: EdgeClient(
                f"127.0.0.1:{server.port}",
                client_id=c,
                token=tokens[c],
                insecure=True,
                initial_model=_initial(),
                retry=RetryPolicy(attempts=2, initial_backoff_s=0.01, call_timeout_s=30),
                compact=False,  # the self-describing containers the in-process engine sends
            )
            for c in CLIENTS
        }
        try:
            for r, chosen in enumerate(_draws(), start=1):
                rows = {}
                for c in chosen:
                    result = clients[c].run_round(trainer(c))
                    assert result.outcome is Outcome.PARTICIPATED, result
                    assert result.round_id == r
                    model = clients[c].model
                    assert model is not None
                    rows[c] = (result.bytes_up, result.bytes_down, model.digest)
                trace[r] = rows
                server.call(_wait_version(server, r))
        finally:
            for client in clients.values():
                client.close()
    return trace, globals_


def _wait_version(server: BackgroundServer, version: int) -> Any:
    async def wait() -> None:
        import asyncio

        while server.coordinator.global_model().version < version:
            await asyncio.sleep(0.01)

    return wait


def run_flower() -> tuple[Trace, list[str], Payloads]:
    """(c) The Flower strategy and mod on real Flower Messages, in process."""
    from flwr.app import (
        Array,
        ArrayRecord,
        ConfigRecord,
        Context,
        Message,
        MetricRecord,
        RecordDict,
    )
    from flwr.clientapp import ClientApp
    from flwr.serverapp.strategy import FedAvg

    from fedcodec.flower import CompressionStrategy, make_fedcodec_mod
    from fedcodec.flower import constants as fc
    from fedcodec.flower._records import coded_model, coded_update
    from fedcodec.flower.local import LocalGrid

    app = ClientApp(mods=[make_fedcodec_mod(initial_model=_initial())])

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        record = msg.content["arrays"]
        assert isinstance(record, ArrayRecord)
        r = int(msg.content["config"][fc.FLOWER_ROUND])  # type: ignore[index,arg-type]
        local = _train({k: a.numpy() for k, a in record.items()}, str(context.node_id), r)
        content = RecordDict(
            {
                "arrays": ArrayRecord({k: Array(v) for k, v in local.items()}),
                "metrics": MetricRecord({"num-examples": _examples(str(context.node_id))}),
            }
        )
        return Message(content, reply_to=msg)

    class Loop(LocalGrid):
        """Records the container bytes each node downloads and uploads."""

        def __init__(self) -> None:
            super().__init__(app, [int(c) for c in CLIENTS])
            self.down: dict[int, int] = {}
            self.up: dict[int, int] = {}
            self.sha: dict[int, tuple[str, str]] = {}

        def deliver(self, msg: Message) -> Message:
            node = msg.metadata.dst_node_id
            parts = coded_model(dict(msg.content.items()), fc.KEY_MODEL_ARRAY)
            self.down[node] = sum(map(len, parts))
            reply = super().deliver(msg)
            assert not reply.has_error(), reply.error
            found = coded_update(dict(reply.content.items()), fc.KEY_UPDATE_ARRAY)
            assert found is not None
            data = found[1]
            self.up[node] = len(data)
            self.sha[node] = (_sha(data), _sha(*parts))
            return reply

    grid = Loop()
    strategy = CompressionStrategy(
        FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=1, min_available_nodes=1),
        schedule=PARAMS,
        threads=1,
        robust=RobustPolicy.fedavg(),
        aggregation="engine",
        compact=False,  # the self-describing containers the other two transports send
    )
    arrays = ArrayRecord({k: Array(v) for k, v in _initial().items()})
    spec_names = list(SHAPES)
    trace: Trace = {}
    payloads: Payloads = {}
    globals_: list[str] = []
    for r, chosen in enumerate(_draws(), start=1):
        grid.nodes = [int(c) for c in chosen]
        messages = list(strategy.configure_train(r, arrays, ConfigRecord(), grid))
        replies = list(grid.send_and_receive(messages))
        out, _ = strategy.aggregate_train(r, replies)
        assert out is not None
        arrays = out
        held = strategy._held  # the (version, digest) each node confirmed
        trace[r] = {c: (grid.up[int(c)], grid.down[int(c)], held[int(c)][1]) for c in chosen}
        payloads[r] = {c: grid.sha[int(c)] for c in chosen}
        tensors = {k: arrays[k].numpy() for k in spec_names}
        globals_.append(model_digest(ModelVersion.create(r, tensors).spec, tensors))
    return trace, globals_, payloads


def test_engine_grpc_and_flower_give_the_same_bytes_and_models(tmp_path: Path) -> None:
    pytest.importorskip("flwr")
    engine_trace, engine_globals, engine_payloads = run_in_process()
    grpc_trace, grpc_globals = run_grpc(tmp_path)
    flower_trace = flower_globals = flower_payloads = None
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = 1, 0, 1
    try:
        flower_trace, flower_globals, flower_payloads = run_flower()
    finally:
        TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved
    # Partial participation did happen, and some client came back after missing rounds.
    assert any(down > 0 for rows in engine_trace.values() for _, down, _ in rows.values())
    assert engine_trace == grpc_trace
    assert engine_trace == flower_trace
    assert engine_globals == grpc_globals == flower_globals
    # The Flower messages carry the engine's containers byte for byte (nothing re-coded).
    assert engine_payloads == flower_payloads
    assert len(set(engine_globals)) == ROUNDS
