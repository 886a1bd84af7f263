"""Downlink temporal references end to end over real gRPC on loopback: the server setting
``downlink.temporal_reference`` codes each version delta also against the previous one; edge
clients that hold that delta (``DownloadModelRequest.holds_delta``) get the referenced
coding — fewer downlink bytes, the same models.  A client from before the fields gets deltas
without reference; a client whose held delta was lost or differs gets a reference-free
download in the same round; a restarted server or client keeps serving references."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from fedcodec import codec
from fedcodec.client import EdgeClient, Outcome, RoundResult, TrainFn
from fedcodec.pipeline import ModelReceiver, ModelVersion
from fedcodec.pipeline._state import load_npz_state, save_npz_state
from fedcodec.server import BackgroundServer, load_config

from loopback import (
    connect,
    directional_trainer,
    edge_client,
    free_port,
    loopback_config,
    wait_until,
)
from loopback import participate as run_rounds_until_in

_RNG = np.random.default_rng(5)
MODEL = {
    "w": (_RNG.standard_normal((64, 128)) * 0.1).astype(np.float32),
    "b": np.zeros(64, np.float32),
}
CLIENTS = ["c0", "c1"]
TOKENS = {c: f"downref-wire-token-{c}-0123456789" for c in CLIENTS}
ROUNDS = 5


def make_server(
    tmp_path: Path, reference: bool, port: int = 0, shared_initial: bool = True
) -> BackgroundServer:
    settings = {
        "listen": f"127.0.0.1:{port}",
        "rounds.min_clients": 2,
        "rounds.target_clients": 2,
        "rounds.max_rounds": ROUNDS,
        "rounds.deadline_s": 60.0,
        "rounds.retry_after_s": 0.02,
        "params.lam": 0.0,
        "params.S": 16,
        # λ = 0: plain rounding, so the reference changes the coding, never the levels.
        "downlink.params.lam": 0.0,
        "downlink.params.S": 16,
        "downlink.temporal_reference": reference,
        "downlink.shared_initial": shared_initial,
    }
    return BackgroundServer(loopback_config(tmp_path, settings), tokens=TOKENS, initial_model=MODEL)


def trainer(client: int) -> TrainFn:
    return directional_trainer(MODEL, client, 7)


def edge(port: int, client: str, state_dir: Path | None = None, initial: bool = True) -> EdgeClient:
    return edge_client(port, client, TOKENS[client], MODEL if initial else None, state_dir)


def participate(client: EdgeClient, index: int) -> RoundResult:
    return run_rounds_until_in(client, trainer(index))


def wait_round(server: BackgroundServer, round_id: int) -> None:
    wait_until(lambda: server.coordinator.open_round_id == round_id)


def wait_finished(server: BackgroundServer) -> None:
    wait_until(lambda: server.coordinator.finished)


def uses_reference(data: bytes) -> bool:
    return any(info.reference_digest is not None for info in codec.inspect(data))


def run_federation(
    tmp_path: Path, reference: bool, restart_at: int = 0
) -> tuple[list[int], str, list[str]]:
    """Bytes down per round (both clients), the final global model's digest and the
    clients' model digests.  ``restart_at``: after that many participations (rounds times
    clients), restart the server and the clients (from their state folders)."""
    port = free_port()
    dirs = [tmp_path / f"client-{c}" for c in CLIENTS]
    down = [0] * ROUNDS
    steps = [(r, i) for r in range(ROUNDS) for i in range(len(CLIENTS))]
    parts = [steps[:restart_at], steps[restart_at:]] if restart_at else [steps]
    for part in parts:
        clients = [edge(port, c, d) for c, d in zip(CLIENTS, dirs, strict=True)]
        with make_server(tmp_path, reference, port) as server:
            for r, i in part:
                result = participate(clients[i], i)
                assert result.round_id == r + 1
                down[r] += result.bytes_down
            if part[-1] != steps[-1]:
                for c in clients:
                    c.close()
                continue
            wait_finished(server)
            digest = server.coordinator.global_model().digest
            held_refs = server.server.metrics.registry.get_sample_value(
                "fedcodec_held_delta_references_total"
            )
            # Rounds 3.. (both clients) when on and nothing restarted in between.
            if not restart_at:
                assert held_refs == (2 * (ROUNDS - 2) if reference else 0)
            # Each client brings its model to the last version (what the stream delivers).
            for i, c in enumerate(clients):
                assert c.run_round(trainer(i)).outcome is Outcome.FINISHED
    held = []
    for c in clients:
        model = c.model
        assert model is not None
        held.append(model.digest)
        c.close()
    return down, digest, held


def test_downlink_references_save_bytes_and_give_the_same_models(tmp_path: Path) -> None:
    off, model_off, held_off = run_federation(tmp_path / "off", False)
    on, model_on, held_on = run_federation(tmp_path / "on", True)
    # Round 1: the shared initial model (nothing to download); round 2: the first version
    # delta (no previous one).  From round 3 on, each delta is coded against the one before.
    assert on[:2] == off[:2]
    saved = 1.0 - sum(on[2:]) / sum(off[2:])
    print(f"downlink bytes rounds 3..{ROUNDS}: off {off[2:]} on {on[2:]} ({saved:.1%} fewer)")
    assert saved > 0.02
    # Same levels: the same stream, the same updates and aggregates, bit for bit.
    assert model_on == model_off
    assert held_on == held_off


@pytest.mark.parametrize("restart_at", [6, 7])
def test_a_restart_of_server_and_clients_keeps_the_downlink_references(
    tmp_path: Path, restart_at: int
) -> None:
    """The server's downlink state (SQLite) keeps the reference codings and the latest
    delta, the clients' state folders keep their held delta: restarting both after round 3
    (6), or in round 4 after one client reported (7), gives the same bytes and models as a
    run that never stopped."""
    straight = run_federation(tmp_path / "straight", True)
    restarted = run_federation(tmp_path / "restarted", True, restart_at=restart_at)
    assert restarted == straight


def test_a_client_without_the_fields_gets_deltas_without_reference(tmp_path: Path) -> None:
    """An edge client from before downlink references (no ``delta_references``) decodes
    every delta it gets — a chain of several too — without a reference.  (A keyframe
    stream: no cumulative deltas, so a client two versions behind gets a chain.)"""
    port = free_port()
    dirs = [tmp_path / f"client-{c}" for c in CLIENTS]
    clients = [edge(port, c, d, initial=False) for c, d in zip(CLIENTS, dirs, strict=True)]
    v0 = ModelVersion.create(0, MODEL)
    with make_server(tmp_path, True, port, shared_initial=False) as server:
        for r in range(3):
            for i, c in enumerate(clients):
                participate(c, i)
            if r == 1:  # c0 holds version 1 (round 2's base): keep that state
                saved = (dirs[0] / "model.npz").read_bytes()
        wait_round(server, 4)
        (tmp_path / "v1.npz").write_bytes(saved)
        v1 = ModelReceiver.restore(tmp_path / "v1.npz", v0.spec, threads=1)
        assert v1.version == 1
        assert v1.digest is not None
        conn = connect(server, TOKENS["c0"])
        try:  # from version 1: a chain of the deltas of versions 2 and 3
            old = conn.download(1, v1.digest, delta_references=False)
            new = conn.download(1, v1.digest)
        finally:
            conn.close()
        assert old.from_version == new.from_version == 1
        assert len(old.deltas) == len(new.deltas) == 2
        assert not any(uses_reference(d) for d in old.deltas)
        assert [uses_reference(d) for d in new.deltas] == [False, True]
        assert not old.held_delta_reference
        assert not new.held_delta_reference
        for package in (old, new):
            receiver = ModelReceiver.restore(tmp_path / "v1.npz", v0.spec, threads=1)
            assert receiver.apply(package).digest == server.coordinator.stream_model().digest
            assert receiver.holds_delta  # a chain: it keeps the last version's delta
    for c in clients:
        c.close()


def _edit_held_delta(state_dir: Path, how: str) -> None:
    """Make a client's saved delta ``lost`` (a state from before it was kept) or ``other``
    (not the one the server coded against)."""
    path = state_dir / "model.npz"
    arrays, meta = load_npz_state(path)
    assert meta.get("has_last_delta")
    if how == "lost":
        arrays = {k: v for k, v in arrays.items() if not k.startswith("lastdelta/")}
        meta = {k: v for k, v in meta.items() if k != "has_last_delta"}
    else:
        arrays = dict(arrays)
        arrays["lastdelta/0"] = arrays["lastdelta/0"] * np.float32(2.0)
    save_npz_state(path, arrays, meta)


@pytest.mark.parametrize("how", ["lost", "other"])
def test_a_client_whose_held_delta_is_lost_or_differs_gets_a_reference_free_download(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, how: str
) -> None:
    port = free_port()
    dirs = [tmp_path / f"client-{c}" for c in CLIENTS]
    clients = [edge(port, c, d) for c, d in zip(CLIENTS, dirs, strict=True)]
    with make_server(tmp_path, True, port) as server:
        for _ in range(3):
            for i, c in enumerate(clients):
                participate(c, i)
        wait_round(server, 4)
        clients[0].close()
        _edit_held_delta(dirs[0], how)
        clients[0] = edge(port, CLIENTS[0], dirs[0])
        with caplog.at_level(logging.WARNING, logger="fedcodec.client"):
            fourth = [participate(c, i) for i, c in enumerate(clients)]
        rejected = [r for r in caplog.records if r.getMessage().startswith("downloaded model")]
        if how == "lost":  # it says it holds none: a plain delta at once
            assert rejected == []
        else:  # coded against its delta, refused by the digest, asked again without
            assert [r.getMessage() for r in rejected] == [
                "downloaded model did not check out; asking again without the held delta"
            ]
        assert all(r.outcome is Outcome.PARTICIPATED and r.round_id == 4 for r in fourth)
        assert not any(r.keyframe for r in fourth)  # never a keyframe, the round not lost
        # It holds this version's delta again: the next download uses it.
        assert clients[0]._receiver is not None
        assert clients[0]._receiver.holds_delta
        participate(clients[0], 0)
        participate(clients[1], 1)
        wait_finished(server)
    for c in clients:
        c.close()


def test_downlink_temporal_reference_is_a_setting(tmp_path: Path) -> None:
    path = tmp_path / "server.toml"
    path.write_text("[security]\ninsecure = true\n[downlink]\ntemporal_reference = true\n")
    config = load_config(path, env={})
    assert config.downlink.temporal_reference
    assert load_config(env={}, overrides=config.to_json()) == config
    assert not load_config(
        env={}, overrides={"security.insecure": True}
    ).downlink.temporal_reference
