"""Issue 12: the server survives hostile authenticated clients (real gRPC on loopback,
real SQLite).  Each test here failed on the code before the hardening."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import fedcodec
from fedcodec.client import Connection, UpdateRefusedError
from fedcodec.client.edge import round_info_from_proto
from fedcodec.pipeline import ModelReceiver, ModelVersion, UpdateEncoder
from fedcodec.server import BackgroundServer, ServerConfig
from fedcodec.v1 import aggregation_service_pb2 as pb

import loopback
from loopback import loopback_config, selected, upload, wait_until

_RNG = np.random.default_rng(0)
MODEL = {
    "w": (_RNG.standard_normal((8, 16)) * 0.1).astype(np.float32),
    "b": np.zeros(8, np.float32),
}
TOKENS = {f"c{i:02d}": f"token-of-client-{i:02d}-0123456789" for i in range(40)}


def make_config(tmp_path: Path, **overrides: Any) -> ServerConfig:
    settings = {
        "rounds.min_clients": 2,
        "rounds.target_clients": 30,
        "rounds.deadline_s": 120.0,
        "downlink.shared_initial": False,  # raw connections here download a keyframe first
    }
    return loopback_config(tmp_path, settings, overrides)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[BackgroundServer]:
    with BackgroundServer(make_config(tmp_path), tokens=TOKENS, initial_model=MODEL) as srv:
        yield srv


def connect(server: BackgroundServer, client: str) -> Connection:
    return loopback.connect(server, TOKENS[client], client)


def honest_update(conn: Connection, config: pb.RoundConfig, seed: int) -> bytes:
    info = round_info_from_proto(config)
    base = ModelReceiver(info.spec, threads=1).apply(conn.download(None, None))
    rng = np.random.default_rng(seed)
    local = {
        k: v + (0.01 + 1e-3 * rng.standard_normal(v.shape)).astype(np.float32)
        for k, v in base.tensors.items()
    }
    return (
        UpdateEncoder(info.spec, conn.client_id, threads=1)
        .encode(local, base, info.params, round_number=info.round_id, num_examples=10)
        .data
    )


def levels_update(level: int, step: float) -> bytes:
    return fedcodec.encode_levels(
        [np.full(v.shape, level, np.int32) for v in MODEL.values()], step=step
    ).data


def robust_count(server: BackgroundServer, action: str) -> float:
    value = server.server.metrics.registry.get_sample_value(
        "fedcodec_robust_actions_total", {"action": action}
    )
    return 0.0 if value is None else value


def change(server: BackgroundServer) -> float:
    model: ModelVersion = server.coordinator.global_model()
    return float(np.max(np.abs(model.tensors["w"].astype(np.float64) - MODEL["w"])))


# -- robust aggregation ---------------------------------------------------------------------


def test_one_client_no_longer_controls_the_model(tmp_path: Path) -> None:
    """82-byte upload with num_examples=2**62 took over a round of 28; now it is refused,
    and 10**9 examples get at most a quarter of the round, clipped to 10x the median norm."""
    config = make_config(tmp_path, **{"rounds.target_clients": 28})
    with BackgroundServer(config, tokens=TOKENS, initial_model=MODEL) as server:
        conns = [connect(server, f"c{i:02d}") for i in range(28)]
        configs = [selected(c) for c in conns]
        evil, evil_cfg = conns[27], configs[27]
        attack = levels_update(1000, 1e-3)  # +1.0 on every weight
        with pytest.raises(UpdateRefusedError) as refused:
            upload(evil, evil_cfg, attack, num_examples=2**62)
        assert refused.value.status == "INVALID_ARGUMENT"
        assert "num_examples" in refused.value.detail
        for i, (c, cfg) in enumerate(zip(conns[:27], configs[:27], strict=True)):
            upload(c, cfg, honest_update(c, cfg, seed=i))
        upload(evil, evil_cfg, attack, num_examples=10**9)
        wait_until(lambda: server.coordinator.global_model().version == 1, timeout=60)
        assert robust_count(server, "share_capped") == 1
        assert robust_count(server, "clipped") == 1
        # The honest change is ~0.01 per weight; plain FedAvg would have moved it by ~1.0.
        assert change(server) < 0.05


def test_updates_with_huge_values_are_refused(server: BackgroundServer) -> None:
    """87-byte update of 1e30 per weight: refused, the next model stays finite."""
    a, b, evil = (connect(server, c) for c in ("c00", "c01", "c02"))
    cfg_a, cfg_b, cfg_evil = selected(a), selected(b), selected(evil)
    with pytest.raises(UpdateRefusedError) as refused:
        upload(evil, cfg_evil, levels_update(100_000, 1e25))
    assert refused.value.status == "INVALID_ARGUMENT"
    assert "magnitude" in refused.value.detail
    assert robust_count(server, "refused_values") == 1
    upload(a, cfg_a, honest_update(a, cfg_a, 1))
    upload(b, cfg_b, honest_update(b, cfg_b, 2))
    assert server.call(lambda: server.coordinator.close_round_now())
    assert np.isfinite(server.coordinator.global_model().tensors["w"]).all()
    assert change(server) < 0.05


# -- integer overflow ---------------------------------------------------------------------


def test_num_examples_overflow_does_not_abort_other_clients_commits(
    server: BackgroundServer,
) -> None:
    """num_examples >= 2**63 made SQLite raise OverflowError inside a shared group commit:
    honest uploads in the same transaction were refused with UNKNOWN."""
    conns = [connect(server, f"c{i:02d}") for i in range(24)]
    configs = [selected(c) for c in conns]
    payloads = [
        honest_update(c, cfg, i) for i, (c, cfg) in enumerate(zip(conns, configs, strict=True))
    ]
    results: dict[str, str] = {}
    barrier = threading.Barrier(len(conns))

    def run(i: int) -> None:
        n = 2**63 + i if i % 4 == 0 else 10
        barrier.wait()
        try:
            upload(conns[i], configs[i], payloads[i], num_examples=n)
            results[conns[i].client_id] = "OK"
        except UpdateRefusedError as exc:
            results[conns[i].client_id] = exc.status

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(conns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, c in enumerate(conns):
        assert results[c.client_id] == ("INVALID_ARGUMENT" if i % 4 == 0 else "OK"), results
    stored = server.call(lambda: server.coordinator.stored_updates())
    assert len(stored) == 18
