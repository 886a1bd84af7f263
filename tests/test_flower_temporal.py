"""Temporal references through the Flower plugin: ``CompressionStrategy(temporal_reference=True)``
keeps each node's last decoded update, names it in the node's train message, and the mod
codes against its own copy only when the names agree.

Real ``Message``/``Context`` objects and the real strategy/mod pair, in process
(:class:`~fedcodec.flower.local.LocalGrid`).
"""

from __future__ import annotations

from collections.abc import Iterable

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
    Context,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.serverapp.strategy import FedAvg

from fedcodec import codec
from fedcodec.flower import CompressionStrategy, make_fedcodec_mod
from fedcodec.flower import constants as c
from fedcodec.flower._client_state import ClientState
from fedcodec.flower._records import coded_update, inline_parts
from fedcodec.flower.local import LocalGrid
from fedcodec.pipeline import ModelSpec, RoundParams, Sparsification, model_digest
from fedcodec.pipeline.model import reference_token

SHAPES = {"w": (40, 64), "b": (40,)}
NUMEL = sum(int(np.prod(s)) for s in SHAPES.values())
DENSE = RoundParams(lam=0.5, S=16)


def _client_app(*, temporal_reference: bool = True) -> ClientApp:
    """Each node moves every weight along a direction of its own that persists over
    rounds (as local training on a node's data does), plus noise."""
    mod = make_fedcodec_mod(
        initial_model=initial_arrays(SHAPES), temporal_reference=temporal_reference
    )

    def step(arrays: dict[str, np.ndarray], node: int, server_round: int) -> dict[str, np.ndarray]:
        direction = np.random.default_rng(node)
        noise = np.random.default_rng([node, server_round])
        local = {}
        for k, a in arrays.items():
            shape = a.shape
            d = direction.laplace(0, 2e-3, size=shape)
            local[k] = (a + d + noise.laplace(0, 4e-4, size=shape)).astype(np.float32)
        return local

    return stepping_client_app(mod, step=step)


class _Grid(LocalGrid):
    """Keeps the containers of the replies; ``lose`` drops a node's reply after the node
    ran (it coded an update the server never sees)."""

    def __init__(self, app: ClientApp, nodes: int) -> None:
        super().__init__(app, range(1, nodes + 1))
        self.timeout: set[int] = set()
        self.containers: list[tuple[int, bytes]] = []
        self.configs: list[dict[str, object]] = []
        self.config_nodes: list[int] = []  # the node of each config

    def send_and_receive(
        self, messages: Iterable[Message], timeout: float | None = None
    ) -> Iterable[Message]:
        """Like Flower's Grid: a reply that does not arrive in time is not returned."""
        replies = [(msg.metadata.dst_node_id, self.deliver(msg)) for msg in messages]
        return [reply for node, reply in replies if node not in self.timeout]

    def deliver(self, msg: Message) -> Message:
        config = next(iter(msg.content.config_records.values()))
        self.configs.append(dict(config))
        self.config_nodes.append(msg.metadata.dst_node_id)
        reply = super().deliver(msg)
        node = msg.metadata.dst_node_id
        train = msg.metadata.message_type == MessageType.TRAIN
        if not reply.has_error() and train and node not in self.timeout:
            found = coded_update(dict(reply.content.items()), c.KEY_UPDATE_ARRAY)
            assert found is not None
            self.containers.append((node, found[1]))
        return reply


def _strategy(temporal: bool, **options: object) -> CompressionStrategy:
    return CompressionStrategy(
        FedAvg(fraction_evaluate=0.0),
        schedule=DENSE,
        temporal_reference=temporal,
        **options,  # type: ignore[arg-type]
    )


def _initial() -> ArrayRecord:
    return ArrayRecord({k: Array(v) for k, v in initial_arrays(SHAPES).items()})


def _round(
    strategy: CompressionStrategy, grid: _Grid, server_round: int, arrays: ArrayRecord
) -> ArrayRecord:
    messages = list(strategy.configure_train(server_round, arrays, ConfigRecord(), grid))
    out, _ = strategy.aggregate_train(server_round, grid.send_and_receive(messages))
    assert out is not None
    return out


def _uses_reference(data: bytes) -> bool:
    shapes = list(SHAPES.values()) if codec.is_compact(data) else None
    infos = codec.inspect(data, expected_shapes=shapes)
    return any(info.reference_digest is not None for info in infos)


def _node_reference(grid: _Grid, node: int) -> dict[str, np.ndarray] | None:
    saved = grid.contexts[node].state.get(c.STATE_REFERENCE)
    if saved is None:
        return None
    assert isinstance(saved, ArrayRecord)
    return {k: a.numpy() for k, a in saved.items()}


def test_nodes_code_against_their_previous_update_and_hold_what_the_server_holds() -> None:
    """From round 2 every update is reference-coded, none is refused, the uplink gets
    smaller than the same run without references, and server and nodes hold the same
    model and the same references bit for bit."""
    # Prepare
    runs = {}
    for temporal in (False, True):
        strategy = _strategy(temporal)
        grid = _Grid(_client_app(), 4)
        # Execute
        arrays = _initial()
        for server_round in range(1, 6):
            arrays = _round(strategy, grid, server_round, arrays)
        runs[temporal] = (strategy, grid)
    # Assert
    strategy, grid = runs[True]
    assert strategy.totals.rejected == 0
    assert strategy.totals.updates == 20
    used = [_uses_reference(data) for _, data in grid.containers]
    assert used == [False] * 4 + [True] * 16
    plain_strategy, plain_grid = runs[False]
    assert not any(_uses_reference(data) for _, data in plain_grid.containers)
    assert strategy.totals.bytes_up < 0.97 * plain_strategy.totals.bytes_up
    # The same model on both sides (the mod checks the digest each round; here once more).
    stream = strategy.stream_model()
    assert stream is not None
    engine = strategy._engine
    assert engine is not None
    assert engine.references is not None
    for node in range(1, 5):
        held = grid.contexts[node].state[c.STATE_MODEL]
        assert isinstance(held, ArrayRecord)
        # and the same reference: the server's decoded last update, bit for bit
        ref = _node_reference(grid, node)
        assert ref is not None
        server_ref = engine.references.get(str(node))
        assert server_ref is not None
        for name, array in zip(stream.spec.names, server_ref, strict=True):
            assert ref[name].tobytes() == array.tobytes()
        assert engine.reference_token(str(node)) == reference_token(server_ref)
    # The reference is named at first contact only (empty: none yet): afterwards both ends
    # hold each node's last update, and nothing is added to the messages.
    tokens = [cfg.get(c.KEY_REFERENCE) for cfg in grid.configs]
    assert tokens == [b""] * 4 + [None] * 16
    assert all(c.KEY_REFERENCE not in cfg for cfg in runs[False][1].configs)
    assert all(_node_reference(runs[False][1], n) is None for n in range(1, 5))


def test_the_same_model_on_every_node_with_references_as_the_server_sends() -> None:
    """After every round each node holds the server's stream model bit for bit
    (references change only the entropy coding, never what is decoded)."""
    # Prepare
    strategy = _strategy(True)
    grid = _Grid(_client_app(), 3)
    arrays = _initial()
    for server_round in range(1, 5):
        # Execute
        arrays = _round(strategy, grid, server_round, arrays)
        stream_before = strategy.stream_model()
        assert stream_before is not None
        # Assert: what each node holds (its saved engine) is the model of this round's message
        for node in (1, 2, 3):
            state = ClientState.load(
                grid.contexts[node].state, str(node), threads=1, error_feedback=True
            )
            assert state.engine is not None
            assert state.engine.receiver.digest == stream_before.digest
            assert state.engine.receiver.version == stream_before.version
    assert strategy.totals.rejected == 0


def test_node_restart_server_restart_and_a_lost_reply_cost_the_reference_not_the_update() -> None:
    """A node that lost its state, a reply the server never saw, lost server references:
    the node codes without reference (the token does not name what it holds); no update
    is refused for its reference; the round after, references are back."""
    # Prepare
    strategy = _strategy(True)
    grid = _Grid(_client_app(), 3)
    arrays = _initial()
    for server_round in (1, 2):
        arrays = _round(strategy, grid, server_round, arrays)
    # Execute: node 1 restarts (empty context.state); node 2's reply of round 3 never
    # arrives.  Node 1 answers round 3 with an error (it lacks the layout and its model);
    # node 2's holding is unknown to the server, which sends it a keyframe in round 4.
    grid.contexts[1].state = RecordDict()
    grid.timeout = {2}
    used: list[dict[int, bool]] = []
    named: list[dict[int, object]] = []  # per round, node -> KEY_REFERENCE (None: absent)
    for server_round in (3, 4, 5, 6):
        grid.containers.clear()
        start = len(grid.configs)
        arrays = _round(strategy, grid, server_round, arrays)
        used.append({n: _uses_reference(d) for n, d in grid.containers})
        named.append(
            {
                n: cfg.get(c.KEY_REFERENCE)
                for n, cfg in zip(grid.config_nodes[start:], grid.configs[start:], strict=True)
            }
        )
        grid.timeout = set()
    # Assert
    assert used[0] == {3: True}  # node 1 failed, node 2's reply did not arrive
    # Round 4: node 1 holds no reference; node 2 rebuilds the model from a keyframe, and
    # codes without reference: it coded round 3 against its round-2 update, the server
    # never saw round 3 and names round 2's, which node 2 no longer holds.
    assert used[1] == {1: False, 2: False, 3: True}
    assert used[2] == {1: True, 2: True, 3: True}
    assert used[3] == {1: True, 2: True, 3: True}
    assert strategy.totals.rejected == 0
    # The server names its reference where the node may hold another: node 1 at its first
    # contact again (round 4), node 2 while its round-3 reply is undecoded (round 4).
    assert [sorted(n for n, v in r.items() if v is not None) for r in named] == [
        [],
        [1, 2],
        [],
        [],
    ]
    assert all(len(v) == 8 for r in named for v in r.values() if v is not None)  # type: ignore[arg-type]
    # The server loses its references (a Flower run restarts with fresh node state too,
    # so this is what a restarted server keeping its model stream would see).
    engine = strategy._engine
    assert engine is not None
    for node in (1, 2, 3):
        engine.forget_reference(str(node))
    for server_round, expected in ((7, False), (8, True)):
        grid.containers.clear()
        arrays = _round(strategy, grid, server_round, arrays)
        assert [_uses_reference(d) for _, d in grid.containers] == [expected] * 3
    assert strategy.totals.rejected == 0


def test_memory_is_bounded_by_reference_nodes() -> None:
    """With reference_nodes=2 and 4 nodes the server keeps 2 references (4 bytes per weight
    each); evicted nodes code without reference, none is refused."""
    # Prepare
    strategy = _strategy(True, reference_nodes=2)
    grid = _Grid(_client_app(), 4)
    arrays = _initial()
    # Execute
    for server_round in range(1, 4):
        arrays = _round(strategy, grid, server_round, arrays)
    # Assert
    engine = strategy._engine
    assert engine is not None
    assert engine.references is not None
    assert len(engine.references) == 2
    assert engine.references.memory_bytes == 2 * 4 * NUMEL
    later = [_uses_reference(d) for _, d in grid.containers[4:]]
    assert later.count(True) == 4  # two nodes per round kept their reference
    assert strategy.totals.rejected == 0


def test_a_reference_that_differs_on_the_server_is_a_clear_rejection_then_recovers() -> None:
    """Should the server's copy differ under the same token (it cannot in normal
    operation), the codec's digest refuses the update — never a silent mis-decode — the
    server forgets that reference, and the node's next update goes without."""
    # Prepare
    strategy = _strategy(True)
    grid = _Grid(_client_app(), 2)
    arrays = _initial()
    arrays = _round(strategy, grid, 1, arrays)
    engine = strategy._engine
    assert engine is not None
    assert engine.references is not None
    held = engine.references.get("1")
    assert held is not None
    for array in held:  # the stored arrays themselves, token unchanged
        array *= np.float32(3.0)
    # Execute
    grid.containers.clear()
    messages = list(strategy.configure_train(2, arrays, ConfigRecord(), grid))
    out, metrics = strategy.aggregate_train(2, grid.send_and_receive(messages))
    # Assert
    assert out is not None
    assert metrics is not None
    assert metrics[c.METRIC_REJECTED] == 1
    assert strategy.totals.updates == 3
    grid.containers.clear()
    _round(strategy, grid, 3, out)
    used = {n: _uses_reference(d) for n, d in grid.containers}
    assert used == {1: False, 2: True}
    assert strategy.totals.rejected == 1


def test_a_mod_that_declines_codes_without_and_keeps_no_reference() -> None:
    """make_fedcodec_mod(temporal_reference=False): updates without reference, no state."""
    # Prepare
    strategy = _strategy(True)
    grid = _Grid(_client_app(temporal_reference=False), 2)
    arrays = _initial()
    # Execute
    for server_round in (1, 2, 3):
        arrays = _round(strategy, grid, server_round, arrays)
    # Assert
    assert not any(_uses_reference(d) for _, d in grid.containers)
    assert all(_node_reference(grid, n) is None for n in (1, 2))
    assert strategy.totals.rejected == 0


def test_sparsified_updates_go_without_reference() -> None:
    """Top-k updates are coded without reference (no gain measured), and accepted."""
    # Prepare
    sparse = RoundParams(lam=0.5, S=16, sparsification=Sparsification(topk=0.05))
    strategy = CompressionStrategy(
        FedAvg(fraction_evaluate=0.0), schedule=sparse, temporal_reference=True
    )
    grid = _Grid(_client_app(), 2)
    arrays = _initial()
    # Execute
    for server_round in (1, 2, 3):
        arrays = _round(strategy, grid, server_round, arrays)
    # Assert
    assert not any(_uses_reference(d) for _, d in grid.containers)
    assert strategy.totals.rejected == 0


def test_temporal_reference_needs_the_coded_downlink() -> None:
    with pytest.raises(ValueError, match="compress_downlink"):
        CompressionStrategy(FedAvg(), temporal_reference=True, compress_downlink=False)
    with pytest.raises(ValueError, match="reference_nodes"):
        CompressionStrategy(FedAvg(), temporal_reference=True, reference_nodes=0)


def test_reference_token_names_the_arrays() -> None:
    """Equal arrays give equal tokens; one changed bit or shape gives another."""
    spec = ModelSpec(tuple(SHAPES), tuple(SHAPES.values()))
    arrays = [initial_arrays(SHAPES)[n] for n in spec.names]
    token = reference_token(arrays)
    assert len(token) == 16
    assert reference_token([a.copy() for a in arrays]) == token
    flipped = arrays[0].copy()
    flipped.view(np.uint32)[0, 0] ^= 1
    assert reference_token([flipped, arrays[1]]) != token
    assert reference_token([arrays[0].reshape(-1), arrays[1]]) != token
    assert model_digest(spec, dict(zip(spec.names, arrays, strict=True)))[:16] != token


def test_downlink_reference_through_the_plugin() -> None:
    """CompressionStrategy(downlink_reference=True): nodes whose last package was a chain
    get the next version delta coded against the previous one; a node that missed rounds
    catches up and decodes too; every node rebuilds the server's model (no error reply);
    fewer downlink bytes than without."""
    # Prepare
    results = {}
    for reference in (False, True):
        strategy = _strategy(True, downlink_reference=reference)
        grid = _Grid(_client_app(), 3)
        arrays = _initial()
        used: list[dict[int, bool]] = []
        # Execute: node 3 misses rounds 3 and 4 (Flower's timeout: no reply)
        for server_round in range(1, 9):
            grid.timeout = {3} if server_round in (3, 4) else set()
            start = len(grid.configs)
            arrays = _round(strategy, grid, server_round, arrays)
            row = {}
            for node, cfg in zip(grid.config_nodes[start:], grid.configs[start:], strict=True):
                if c.KEY_MODEL_ARRAY in cfg:
                    parts = inline_parts(cfg[c.KEY_MODEL_ARRAY])
                    row[node] = any(_uses_reference(p) for p in parts)
            used.append(row)
        results[reference] = (strategy, used)
    # Assert
    strategy, used = results[True]
    plain, plain_used = results[False]
    assert not any(v for row in plain_used for v in row.values())
    assert strategy.totals.rejected == 0
    # Both runs alike otherwise: node 3's replies of rounds 3 and 4 are lost (it may hold
    # a newer model than the server knows): keyframes in rounds 4 and 5, no error reply.
    assert strategy.totals.updates == plain.totals.updates == 22
    assert strategy.totals.keyframes == plain.totals.keyframes == 2
    assert strategy.totals.bytes_down < plain.totals.bytes_down
    # Rounds 1-2: nothing to reference yet; then nodes 1-2 get referenced deltas.
    assert all(used[r][n] for r in range(2, 8) for n in (1, 2))
    assert not any(used[r].get(n, False) for r in (0, 1) for n in (1, 2, 3))
    # Node 3: referenced in round 3 (it held round 2's delta), then the keyframes of
    # rounds 4 and 5 and the plain delta after them, referenced again from round 7.
    assert [used[r][3] for r in range(2, 8)] == [True, False, False, False, True, True]


class _LossyGrid(_Grid):
    """``unreached``: the message never reaches the node (it runs nothing); ``timeout``
    (of :class:`_Grid`): the node runs, its reply is lost.  Keeps every reply it delivers."""

    def __init__(self, app: ClientApp, nodes: int) -> None:
        super().__init__(app, nodes)
        self.unreached: set[int] = set()
        self.replies: list[tuple[int, Message]] = []

    def send_and_receive(
        self, messages: Iterable[Message], timeout: float | None = None
    ) -> Iterable[Message]:
        """Messages to ``unreached`` nodes are dropped before delivery."""
        kept = [m for m in messages if m.metadata.dst_node_id not in self.unreached]
        return super().send_and_receive(kept, timeout)

    def deliver(self, msg: Message) -> Message:
        reply = super().deliver(msg)
        self.replies.append((msg.metadata.dst_node_id, reply))
        return reply


@pytest.mark.parametrize("temporal", [False, True])
@pytest.mark.parametrize("reached", [True, False])
def test_a_lost_train_reply_costs_no_later_round(temporal: bool, reached: bool) -> None:
    """A train reply that never arrives (the node applied the model and trained, or the
    message never reached it): the server does not know which version the node holds and
    sends it a keyframe next; the node answers every later round without error."""
    # Prepare
    strategy = _strategy(temporal)
    grid = _LossyGrid(_client_app(), 3)
    arrays = _initial()
    for server_round in (1, 2):
        arrays = _round(strategy, grid, server_round, arrays)
    # Execute: node 2's round-3 reply is lost
    if reached:
        grid.timeout = {2}
    else:
        grid.unreached = {2}
    arrays = _round(strategy, grid, 3, arrays)
    grid.timeout, grid.unreached = set(), set()
    grid.replies.clear()
    start = len(grid.configs)
    updates_before = strategy.totals.updates
    for server_round in (4, 5, 6):
        arrays = _round(strategy, grid, server_round, arrays)
    # Assert
    assert [node for node, reply in grid.replies if reply.has_error()] == []
    assert strategy.totals.updates - updates_before == 9  # every node, every round
    assert strategy.totals.rejected == 0
    kinds = [
        (node, cfg[c.KEY_DOWNLINK])
        for node, cfg in zip(grid.config_nodes[start:], grid.configs[start:], strict=True)
    ]
    assert [k for node, k in kinds if node == 2] == [
        c.DOWNLINK_KEYFRAME,
        c.DOWNLINK_DELTA,
        c.DOWNLINK_DELTA,
    ]
    assert all(k == c.DOWNLINK_DELTA for node, k in kinds if node != 2)
    assert strategy.totals.keyframes == 1  # a shared-initial stream: only node 2's


def test_a_lost_evaluate_reply_costs_no_later_round() -> None:
    """The same for an evaluate message that carried a model change."""
    # Prepare
    strategy = CompressionStrategy(FedAvg(fraction_evaluate=1.0), schedule=DENSE)
    app = _client_app()

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        return Message(RecordDict({"metrics": MetricRecord({"num-examples": 1})}), reply_to=msg)

    grid = _LossyGrid(app, 2)
    arrays = _initial()
    arrays = _round(strategy, grid, 1, arrays)
    # Execute: the evaluate messages carry version 1; node 2 evaluates, its reply is lost
    grid.timeout = {2}
    messages = list(strategy.configure_evaluate(1, arrays, ConfigRecord(), grid))
    strategy.aggregate_evaluate(1, grid.send_and_receive(messages))
    grid.timeout = set()
    grid.replies.clear()
    arrays = _round(strategy, grid, 2, arrays)
    # Assert
    assert [node for node, reply in grid.replies if reply.has_error()] == []
    last = {
        node: cfg[c.KEY_DOWNLINK] for node, cfg in zip(grid.config_nodes, grid.configs, strict=True)
    }
    assert last == {1: c.DOWNLINK_NONE, 2: c.DOWNLINK_KEYFRAME}
    assert strategy.totals.updates == 4


def test_a_node_that_lost_its_state_fails_one_round_only() -> None:
    """A restarted node (empty ``context.state``) lacks the layout, the parameters and the
    model: its error reply names what it lacks, and the next message carries all of them
    (layout, parameters, keyframe).  Flower's Message API offers no same-round retry: the
    round's replies come back to ``aggregate_train``, which has no grid to resend on."""
    # Prepare
    strategy = _strategy(False)
    grid = _LossyGrid(_client_app(), 2)
    arrays = _initial()
    arrays = _round(strategy, grid, 1, arrays)
    grid.contexts[1].state = RecordDict()
    grid.replies.clear()
    start = len(grid.configs)
    # Execute
    for server_round in (2, 3):
        arrays = _round(strategy, grid, server_round, arrays)
    # Assert
    errors = [(node, reply.error.reason) for node, reply in grid.replies if reply.has_error()]
    assert len(errors) == 1
    assert errors[0][0] == 1
    assert c.KEY_KEYS in errors[0][1]
    again = [
        cfg
        for node, cfg in zip(grid.config_nodes[start:], grid.configs[start:], strict=True)
        if node == 1
    ][1]
    assert c.KEY_KEYS in again
    assert c.KEY_PARAMS in again
    assert again[c.KEY_DOWNLINK] == c.DOWNLINK_KEYFRAME
    assert strategy.totals.updates == 2 + 1 + 2
