"""Compact containers through the Flower plugin: ``CompressionStrategy(compact=True)`` (the
default) asks nodes for compact replies at first contact (``KEY_COMPACT``); a node that
replies compact gets compact downlinks; a mod that ignores the key keeps the
self-describing form both ways and the round works the same.

Real ``Message``/``Context`` objects and the real strategy/mod pair, in process
(:class:`~fedcodec.flower.local.LocalGrid`).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip(
    "flwr", reason="the Flower plugin tests need flwr (pip install 'fedcodec[flower]')"
)

from flower_helpers import (  # noqa: F401  (task_identity: autouse fixture)
    initial_arrays,
    stepping_client_app,
    task_identity,
)
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Message,
    MessageType,
)
from flwr.clientapp import ClientApp
from flwr.serverapp.strategy import FedAvg

from fedcodec import codec
from fedcodec.flower import CompressionStrategy, make_fedcodec_mod
from fedcodec.flower import constants as c
from fedcodec.flower._records import coded_model, coded_update
from fedcodec.flower.local import LocalGrid
from fedcodec.pipeline import RoundParams, Sensitivity, Sparsification

SHAPES = {"w": (40, 64), "b": (40,), "bn.running_mean": (40,), "zero": (8,)}
PARAMS = RoundParams(
    lam=0.5,
    S=16,
    sparsification=Sparsification(topk=0.05, allocation="rd"),
    sensitivity=Sensitivity(),
)


def _client_app() -> ClientApp:
    def step(arrays: dict[str, np.ndarray], node: int, server_round: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([node, server_round])
        local = {}
        for k, a in arrays.items():
            move = rng.laplace(0, 2e-3, size=a.shape) if k != "zero" else 0.0
            local[k] = (a + move).astype(np.float32)
        return local

    return stepping_client_app(make_fedcodec_mod(initial_model=initial_arrays(SHAPES)), step=step)


class _Grid(LocalGrid):
    """Keeps the coded containers both ways; ``old`` nodes get their messages without
    ``KEY_COMPACT`` (as a mod that predates it ignores the key)."""

    def __init__(self, app: ClientApp, nodes: int, old: set[int] | None = None) -> None:
        super().__init__(app, range(1, nodes + 1))
        self.old = old or set()
        self.down: list[tuple[int, bytes]] = []
        self.down_first: list[bytes] = []  # downlink containers of first-contact messages
        self.replied: set[int] = set()  # nodes that replied (compact or not)
        self.down_after_reply: list[tuple[int, bytes]] = []
        self.up: list[tuple[int, bytes]] = []
        self.offered: set[int] = set()

    def deliver(self, msg: Message) -> Message:
        node = msg.metadata.dst_node_id
        config = next(iter(msg.content.config_records.values()))
        if c.KEY_COMPACT in config:
            self.offered.add(node)
            if node in self.old:
                del config[c.KEY_COMPACT]
        for data in coded_model(dict(msg.content.items()), c.KEY_MODEL_ARRAY):
            self.down.append((node, data))
            if c.KEY_KEYS in config:
                self.down_first.append(data)
            if node in self.replied:
                self.down_after_reply.append((node, data))
        reply = super().deliver(msg)
        if not reply.has_error() and msg.metadata.message_type == MessageType.TRAIN:
            found = coded_update(dict(reply.content.items()), c.KEY_UPDATE_ARRAY)
            assert found is not None
            self.up.append((node, found[1]))
            self.replied.add(node)
        return reply


def _run(compact: bool, rounds: int = 3, old: set[int] | None = None) -> tuple[_Grid, ArrayRecord]:
    strategy = CompressionStrategy(
        FedAvg(fraction_evaluate=0.0), schedule=PARAMS, downlink=PARAMS, compact=compact
    )
    grid = _Grid(_client_app(), 3, old)
    arrays = ArrayRecord({k: Array(v) for k, v in initial_arrays(SHAPES).items()})
    for server_round in range(1, rounds + 1):
        messages = list(strategy.configure_train(server_round, arrays, ConfigRecord(), grid))
        out, _ = strategy.aggregate_train(server_round, grid.send_and_receive(messages))
        assert out is not None
        arrays = out
    return grid, arrays


def test_compact_both_ways_after_first_contact() -> None:
    grid, arrays = _run(compact=True)
    assert grid.offered == {1, 2, 3}  # first contact only carries the offer
    assert grid.up
    assert all(codec.is_compact(data) for _, data in grid.up)
    assert not any(codec.is_compact(data) for data in grid.down_first)
    assert grid.down_after_reply
    assert all(codec.is_compact(data) for _, data in grid.down_after_reply)
    # the all-zero tensor costs nothing in a compact reply
    shapes = list(SHAPES.values())
    for _, data in grid.up:
        assert [info.slices for info in codec.inspect(data, expected_shapes=shapes)][3] == 0
    plain_grid, plain_arrays = _run(compact=False)
    assert not any(codec.is_compact(data) for _, data in plain_grid.up + plain_grid.down)
    up = sum(len(d) for _, d in grid.up)
    plain_up = sum(len(d) for _, d in plain_grid.up)
    down = sum(len(d) for _, d in grid.down)
    plain_down = sum(len(d) for _, d in plain_grid.down)
    assert up < plain_up
    assert down < plain_down
    assert set(arrays.keys()) == set(plain_arrays.keys()) == set(SHAPES)


def test_a_mod_that_ignores_the_offer_stays_self_describing() -> None:
    grid, arrays = _run(compact=True, old={2})
    assert grid.up
    for node, data in grid.up:
        assert codec.is_compact(data) == (node != 2)
    assert grid.down_after_reply
    for node, data in grid.down_after_reply:
        assert codec.is_compact(data) == (node != 2)
    assert not any(codec.is_compact(data) for node, data in grid.down if node == 2)
    assert set(arrays.keys()) == set(SHAPES)
