"""The strategy wrapper with real Flower ``Message``/``Context`` objects, in process (no Ray).

A small in-process ``Grid`` hands each message to a ClientApp running
``fedcodec_mod``, so whole federations of a few rounds run inside the test.
"""

from __future__ import annotations

import logging
import random
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip(
    "flwr", reason="the Flower plugin tests need flwr (pip install 'fedcodec[flower]')"
)

from flower_helpers import (  # noqa: F401  (task_identity: autouse fixture)
    initial_arrays,
    noisy_client_app,
    task_identity,
)
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Error,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp import ClientApp
from flwr.clientapp.mod import fixedclipping_mod
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideFixedClipping,
    FedAdam,
    FedAvg,
    FedProx,
    Krum,
    Strategy,
)

from fedcodec import codec
from fedcodec.flower import CompressionStrategy, make_fedcodec_mod
from fedcodec.flower import constants as c
from fedcodec.flower._records import array_parts, coded_update, inline_parts
from fedcodec.flower.local import LocalGrid
from fedcodec.pipeline import RobustPolicy, RoundParams, Sensitivity, Sparsification, StepSchedule

SHAPES = {"w": (24, 50), "b": (24,)}
PARAMS = RoundParams(lam=0.5, S=0)


#: The ClientApp's mod holds the shared initial model (the same seed as the ServerApp's).
fedcodec_mod = make_fedcodec_mod(initial_model=initial_arrays(SHAPES))


def _params(config: object) -> RoundParams:
    assert isinstance(config, dict | ConfigRecord)
    return RoundParams.from_json_text(str(config[c.KEY_PARAMS]))


def _client_app(*mods: object, change: float = 2e-3) -> ClientApp:
    """:func:`noisy_client_app` with ``mods`` (default: the mod holding the initial model)."""
    return noisy_client_app(*(mods or (fedcodec_mod,)), change=change)


@dataclass(frozen=True)
class _Sent:
    """What a message carried when it left the server (the mod rewrites it in place)."""

    node: int
    message_type: str
    config: dict[str, object]
    arrays: dict[str, tuple[str, bytes]]  # key -> (stype, data)


def _update_data(reply: Message) -> bytes:
    """The container of a coded reply (inline or in an Array)."""
    found = coded_update(dict(reply.content.items()), c.KEY_UPDATE_ARRAY)
    assert found is not None
    return found[1]


def _damage(reply: Message, change: Callable[[bytes], bytes]) -> None:
    """Replace a coded reply's container by ``change(container)`` (inline or in an Array)."""
    key, data, _ = coded_update(dict(reply.content.items()), c.KEY_UPDATE_ARRAY) or ("", b"", None)
    record = reply.content[key]
    if isinstance(record, ConfigRecord):
        record[c.KEY_UPDATE_ARRAY] = change(data)
    else:
        assert isinstance(record, ArrayRecord)
        good = record[c.KEY_UPDATE_ARRAY]
        bad = change(data)
        record[c.KEY_UPDATE_ARRAY] = Array(
            dtype=good.dtype, shape=(len(bad),), stype=good.stype, data=bad
        )


def _snapshot(msg: Message) -> _Sent:
    config = msg.content.config_records
    arrays = msg.content.array_records
    return _Sent(
        node=msg.metadata.dst_node_id,
        message_type=msg.metadata.message_type,
        config=dict(next(iter(config.values()))) if config else {},
        arrays={k: (a.stype, bytes(a.data)) for r in arrays.values() for k, a in r.items()},
    )


class _LoopGrid(LocalGrid):
    """Records what each message carried; dropped nodes send an error reply."""

    def __init__(self, app: ClientApp, nodes: int, *, drop: set[int] | None = None) -> None:
        super().__init__(app, range(1, nodes + 1))
        self.drop = drop or set()
        self.sent: list[_Sent] = []

    def deliver(self, msg: Message) -> Message:
        """Run the ClientApp (a dropped node sends an error reply)."""
        self.sent.append(_snapshot(msg))
        if msg.metadata.dst_node_id in self.drop:
            return Message(Error(code=5, reason="node unavailable"), reply_to=msg)
        return super().deliver(msg)


def _initial() -> ArrayRecord:
    return ArrayRecord({k: Array(v) for k, v in initial_arrays(SHAPES).items()})


def _numpy(record: ArrayRecord) -> dict[str, np.ndarray]:
    return {k: a.numpy() for k, a in record.items()}


def test_configure_train_adds_round_parameters_without_touching_the_callers_config() -> None:
    """λ/S of the schedule's round go into each message's config; the input config is copied."""
    # Prepare
    schedule = StepSchedule(RoundParams(lam=0.5, S=4), "S", gamma=2.0, every=1)
    strategy = CompressionStrategy(FedAvg(), schedule=schedule)
    grid = _LoopGrid(_client_app(), 2)
    config = ConfigRecord({"lr": 0.1})
    # Execute
    messages = list(strategy.configure_train(2, _initial(), config, grid))
    # Assert
    assert dict(config) == {"lr": 0.1}
    assert len(messages) == 2
    assert messages[0].content is not messages[1].content
    for msg in messages:
        sent = msg.content["config"]
        assert isinstance(sent, ConfigRecord)
        assert (_params(sent).lam, _params(sent).S, sent["lr"]) == (0.5, 8, 0.1)
        # Every node holds the shared initial model: nothing to download.
        assert sent[c.KEY_DOWNLINK] == c.DOWNLINK_NONE
        assert sent[c.KEY_INITIAL_DIGEST]
        assert "arrays" not in msg.content  # nothing to carry: no ArrayRecord at all
        assert sent[c.KEY_RECORD] == "arrays"  # the mod gives the app the model under it


def test_per_client_overrides_reach_only_their_node() -> None:
    """RoundParams.per_client is applied per destination node id."""
    # Prepare
    params = RoundParams(lam=0.5, S=0, per_client={"2": {"budget_bytes": 900}})
    strategy = CompressionStrategy(FedAvg(), schedule=params)
    grid = _LoopGrid(_client_app(), 2)
    # Execute
    messages = list(strategy.configure_train(1, _initial(), ConfigRecord(), grid))
    # Assert
    budgets = {m.metadata.dst_node_id: _params(m.content["config"]).budget_bytes for m in messages}
    assert budgets == {1: None, 2: 900}


def test_aggregate_train_hands_the_inner_strategy_global_plus_decoded_updates() -> None:
    """FedAvg aggregates plain arrays: the result is the weighted mean of global + decoded."""
    # Prepare (plain FedAvg weights: the default policy caps shares at 1/4, uniform for 3)
    strategy = CompressionStrategy(
        FedAvg(), schedule=PARAMS, compress_downlink=False, robust=RobustPolicy.fedavg()
    )
    grid = _LoopGrid(_client_app(), 3)
    initial = _initial()
    messages = list(strategy.configure_train(1, initial, ConfigRecord(), grid))
    replies = list(grid.send_and_receive(messages))
    from fedcodec import codec

    expected = {k: np.zeros(s, np.float64) for k, s in SHAPES.items()}
    total = 0
    for reply in replies:
        record = reply.content["arrays"]
        # A small update: inline, the container's bytes in place of the ArrayRecord, and
        # the app's metrics folded into the same record.
        assert isinstance(record, ConfigRecord)
        assert list(record) == [c.KEY_UPDATE_ARRAY, "num-examples"]
        assert list(reply.content) == ["arrays"]
        n = record["num-examples"]
        total += n  # type: ignore[operator]
        # the strategy asks for compact replies (KEY_COMPACT): they need the shapes
        assert codec.is_compact(_update_data(reply))
        decoded = codec.decode(
            _update_data(reply), names=list(SHAPES), expected_shapes=list(SHAPES.values())
        )
        for k in SHAPES:
            expected[k] += n * (initial[k].numpy() + decoded[k]).astype(np.float64)  # type: ignore[operator]
    # Execute
    arrays, metrics = strategy.aggregate_train(1, replies)
    # Assert
    assert arrays is not None
    assert metrics is not None
    for k, v in _numpy(arrays).items():
        np.testing.assert_allclose(v, expected[k] / total, rtol=0, atol=1e-6)
    # As Flower transmits the replies (each object's framing, the reply record and the
    # metrics included): 1,224 weights are 4.9 kB, the framing some 600 B.
    assert metrics[c.METRIC_BYTES_UP] < metrics[c.METRIC_RAW_BYTES_UP] / 4  # type: ignore[operator]
    assert metrics[c.METRIC_REJECTED] == 0
    assert set(replies[0].content.keys()) == {"arrays", "metrics"}  # the mod adds no record


@pytest.mark.parametrize(
    "inner",
    [
        FedAvg(),
        FedProx(proximal_mu=0.1),
        FedAdam(eta=0.01),
        Krum(num_malicious_nodes=0),
    ],
    ids=["FedAvg", "FedProx", "FedAdam", "Krum"],
)
def test_inner_strategies_run_unchanged(inner: Strategy) -> None:
    """FedAvg, FedProx, FedAdam and Krum train through the wrapper for three rounds."""
    # Prepare
    strategy = CompressionStrategy(inner, schedule=PARAMS)
    grid = _LoopGrid(_client_app(), 4)
    # Execute
    result = strategy.start(grid=grid, initial_arrays=_initial(), num_rounds=3)
    # Assert
    final = _numpy(result.arrays)
    assert all(np.isfinite(v).all() for v in final.values())
    assert any(not np.array_equal(final[k], _initial()[k].numpy()) for k in SHAPES), (
        "the model did not move"
    )
    totals = strategy.totals
    assert totals.updates == 12
    assert totals.rejected == 0
    assert totals.ratio_up > 4  # Flower-transmitted replies of a 1,224-weight model
    assert totals.ratio_down > 2
    assert set(result.train_metrics_clientapp) == {1, 2, 3}


def test_byte_budget_reaches_the_clients_and_is_met() -> None:
    """RoundParams(budget_bytes=...): every coded update lands near the budget.

    The pipeline meets the budget for the whole-model container within ±5 %; splitting it into
    one container per tensor adds a small header per tensor.
    """
    # Prepare
    budget = 1500  # bytes per reply as Flower transmits it (framing some 600 B)
    strategy = CompressionStrategy(
        FedAvg(fraction_evaluate=0.0), schedule=RoundParams(budget_bytes=budget)
    )
    grid = _LoopGrid(_client_app(change=5e-3), 3)
    # Execute
    result = strategy.start(grid=grid, initial_arrays=_initial(), num_rounds=2)
    # Assert
    # The parameters travel at first contact (round 1), not again while unchanged.
    assert {_params(m.config).budget_bytes for m in grid.sent if c.KEY_PARAMS in m.config} == {
        budget
    }
    assert sum(c.KEY_PARAMS in m.config for m in grid.sent) == 3
    for metrics in result.train_metrics_clientapp.values():
        assert metrics[c.METRIC_BUDGET_BYTES] == budget
        # The budget holds for what Flower transmits per reply: the container gets the
        # budget minus the reply's own framing, the record and the app's metrics.
        per_update = metrics[c.METRIC_BYTES_UP] / 3  # type: ignore[operator]
        assert 0.85 * budget <= per_update <= 1.05 * budget


def test_integer_buffers_travel_as_they_are_in_key_order() -> None:
    """A model with an int64 buffer between float tensors (BatchNorm's counter, say).

    Floating-point arrays are coded; the buffer travels as is; every message keeps the
    model's key order, so ``to_numpy_ndarrays()`` order is unchanged for the app.
    """
    # Prepare
    order = ["w", "count", "b"]
    seen: list[tuple[list[str], str]] = []
    app = ClientApp(mods=[fedcodec_mod])

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        record = msg.content["arrays"]
        assert isinstance(record, ArrayRecord)
        seen.append((list(record.keys()), record["count"].dtype))
        rng = np.random.default_rng(context.node_id)
        local = {
            k: (a.numpy() + 1 if k == "count" else a.numpy() + rng.normal(0, 1e-3, a.shape))
            for k, a in record.items()
        }
        content = RecordDict(
            {
                "arrays": ArrayRecord({k: Array(np.asarray(v)) for k, v in local.items()}),
                "metrics": MetricRecord({"num-examples": 5}),
            }
        )
        return Message(content, reply_to=msg)

    initial = _initial()
    mixed = ArrayRecord(
        {
            "w": initial["w"],
            "count": Array(np.array([7, 7], dtype=np.int64)),
            "b": initial["b"],
        }
    )
    strategy = CompressionStrategy(FedAvg(fraction_evaluate=0.0), schedule=PARAMS)
    grid = _LoopGrid(app, 2)
    # Execute
    result = strategy.start(grid=grid, initial_arrays=mixed, num_rounds=2)
    # Assert
    assert seen[0] == (order, "int64")
    assert all(keys == order for keys, _ in seen)
    assert list(result.arrays.keys()) == order
    np.testing.assert_array_equal(result.arrays["count"].numpy(), [9, 9])
    first = grid.sent[0]
    assert first.config[c.KEY_KEYS] == order
    assert first.config[c.KEY_UNCODED_KEYS] == ["count"]
    # Round 1: every node holds the initial model, so only the buffer travels.
    assert {k: stype for k, (stype, _) in first.arrays.items()} == {"count": "numpy.ndarray"}
    later = [m for m in grid.sent if c.KEY_MODEL_ARRAY in m.arrays]
    assert later
    assert {k: stype for k, (stype, _) in later[0].arrays.items()} == {
        c.KEY_MODEL_ARRAY: c.STYPE,
        "count": "numpy.ndarray",
    }
    assert strategy.totals.updates == 4


def test_nodes_up_to_date_after_evaluate_receive_no_model_bytes() -> None:
    """Round 2's train messages carry nothing: evaluate already brought every node up to date."""
    # Prepare
    strategy = CompressionStrategy(FedAvg(), schedule=PARAMS)
    grid = _LoopGrid(_client_app(), 2)
    # Execute
    strategy.start(grid=grid, initial_arrays=_initial(), num_rounds=2)
    # Assert
    kinds = [(m.message_type, m.config[c.KEY_DOWNLINK]) for m in grid.sent]
    assert kinds == [
        (MessageType.TRAIN, c.DOWNLINK_NONE),
        (MessageType.TRAIN, c.DOWNLINK_NONE),
        (MessageType.EVALUATE, c.DOWNLINK_DELTA),
        (MessageType.EVALUATE, c.DOWNLINK_DELTA),
        (MessageType.TRAIN, c.DOWNLINK_NONE),
        (MessageType.TRAIN, c.DOWNLINK_NONE),
        (MessageType.EVALUATE, c.DOWNLINK_DELTA),
        (MessageType.EVALUATE, c.DOWNLINK_DELTA),
    ]
    assert strategy.history[2].keyframes == 0


def test_a_node_that_missed_rounds_gets_several_deltas() -> None:
    """Partial participation: a node that holds version 0 at version 3 gets three deltas."""
    # Prepare
    strategy = CompressionStrategy(
        FedAvg(fraction_evaluate=0.0, min_train_nodes=1, min_available_nodes=1), schedule=PARAMS
    )
    grid = _LoopGrid(_client_app(), 2)
    initial = _initial()
    # Execute: round 1 both nodes, rounds 2-3 only node 1, round 4 both again
    arrays = initial
    for server_round, nodes in ((1, (1, 2)), (2, (1,)), (3, (1,)), (4, (1, 2))):
        grid.nodes = list(nodes)  # the nodes on offer: the strategy samples only these
        messages = list(strategy.configure_train(server_round, arrays, ConfigRecord(), grid))
        assert sorted(m.metadata.dst_node_id for m in messages) == list(nodes)
        replies = grid.send_and_receive(messages)
        out, _ = strategy.aggregate_train(server_round, replies)
        assert out is not None
        arrays = out
    # Assert
    last = [m for m in grid.sent if m.node == 2][-1]
    # The deltas start from the version the node confirmed (0): not repeated on the wire.
    assert last.config[c.KEY_DOWNLINK] == c.DOWNLINK_DELTA
    assert c.KEY_FROM_VERSION not in last.config
    assert last.config[c.KEY_BASE_VERSION] == 3
    # The whole package inline (small): a chain of 3 deltas or one cumulative delta,
    # whichever the engine found smaller; no Array.
    assert last.arrays == {}
    parts = inline_parts(last.config[c.KEY_MODEL_ARRAY])
    assert len(parts) in (1, 3)
    assert strategy.totals.rejected == 0
    assert strategy.totals.updates == 6


def test_a_failed_node_gets_a_keyframe_next_time() -> None:
    """An error reply goes to the inner strategy; the node's version is forgotten."""
    # Prepare
    strategy = CompressionStrategy(FedAvg(fraction_evaluate=0.0), schedule=PARAMS)
    grid = _LoopGrid(_client_app(), 3)
    messages = list(strategy.configure_train(1, _initial(), ConfigRecord(), grid))
    grid.drop = {3}
    arrays, _ = strategy.aggregate_train(1, grid.send_and_receive(messages))
    assert arrays is not None
    grid.drop = set()
    # Execute
    second = list(strategy.configure_train(2, arrays, ConfigRecord(), grid))
    # Assert
    kinds = {m.metadata.dst_node_id: m.content["config"][c.KEY_DOWNLINK] for m in second}  # type: ignore[index]
    # Node 3 failed: it still holds the initial model, and gets a delta from it.
    assert kinds == {1: c.DOWNLINK_DELTA, 2: c.DOWNLINK_DELTA, 3: c.DOWNLINK_DELTA}


def test_layout_and_parameters_travel_at_first_contact_and_when_they_change() -> None:
    """The key order and the initial digest go to a node once; the parameters again only
    when the schedule changes them; the base digest is 16 bytes."""
    # Prepare: S doubles every 2 rounds
    schedule = StepSchedule(RoundParams(lam=0.5, S=4), "S", gamma=2.0, every=2)
    strategy = CompressionStrategy(FedAvg(fraction_evaluate=0.0), schedule=schedule)
    grid = _LoopGrid(_client_app(), 2)
    # Execute
    strategy.start(grid=grid, initial_arrays=_initial(), num_rounds=4)
    # Assert
    by_round = [grid.sent[i : i + 2] for i in range(0, len(grid.sent), 2)]
    assert [all(c.KEY_KEYS in m.config for m in r) for r in by_round] == [1, 0, 0, 0]
    assert [all(c.KEY_INITIAL_DIGEST in m.config for m in r) for r in by_round] == [1, 0, 0, 0]
    assert [all(c.KEY_PARAMS in m.config for m in r) for r in by_round] == [1, 0, 1, 0]
    assert [_params(r[0].config).S for r in by_round if c.KEY_PARAMS in r[0].config] == [4, 8]
    assert all(len(m.config[c.KEY_BASE_DIGEST]) == 16 for m in grid.sent)  # type: ignore[arg-type]
    assert strategy.totals.updates == 8
    assert strategy.totals.rejected == 0


def test_a_rejected_node_gets_the_layout_and_parameters_again() -> None:
    """A damaged update is left out and the server forgets what that node holds: its next
    message is a first contact again (layout, parameters), the others' are not."""
    # Prepare
    strategy = CompressionStrategy(FedAvg(fraction_evaluate=0.0), schedule=PARAMS)
    grid = _LoopGrid(_client_app(), 3)
    messages = list(strategy.configure_train(1, _initial(), ConfigRecord(), grid))
    replies = list(grid.send_and_receive(messages))
    _damage(replies[0], lambda data: data[:8])
    rejected = replies[0].metadata.src_node_id
    arrays, metrics = strategy.aggregate_train(1, replies)
    assert arrays is not None
    assert metrics is not None
    assert metrics[c.METRIC_REJECTED] == 1
    # Execute
    second = list(strategy.configure_train(2, arrays, ConfigRecord(), grid))
    # Assert
    first_contact = {
        m.metadata.dst_node_id: c.KEY_KEYS in m.content["config"]  # type: ignore[operator]
        and c.KEY_PARAMS in m.content["config"]  # type: ignore[operator]
        for m in second
    }
    assert first_contact == {n: n == rejected for n in (1, 2, 3)}
    replies = list(grid.send_and_receive(second))
    assert not any(r.has_error() for r in replies)
    _, metrics = strategy.aggregate_train(2, replies)
    assert metrics is not None
    assert metrics[c.METRIC_REJECTED] == 0


def test_a_damaged_update_is_left_out() -> None:
    """Flipped bytes in a coded array: rejected, the other updates are aggregated."""
    # Prepare
    strategy = CompressionStrategy(FedAvg(fraction_evaluate=0.0), schedule=PARAMS)
    grid = _LoopGrid(_client_app(), 3)
    messages = list(strategy.configure_train(1, _initial(), ConfigRecord(), grid))
    replies = list(grid.send_and_receive(messages))

    def flip(data: bytes) -> bytes:
        out = bytearray(data)
        out[len(out) // 2] ^= 0xFF
        return bytes(out)

    _damage(replies[1], flip)
    # Execute
    _, metrics = strategy.aggregate_train(1, replies)
    # Assert
    assert metrics is not None
    assert metrics[c.METRIC_REJECTED] == 1


def test_raw_downlink_still_codes_the_uplink() -> None:
    """compress_downlink=False sends float32 models and still receives coded updates."""
    # Prepare
    strategy = CompressionStrategy(FedAvg(), schedule=PARAMS, compress_downlink=False)
    grid = _LoopGrid(_client_app(), 2)
    # Execute
    strategy.start(grid=grid, initial_arrays=_initial(), num_rounds=2)
    # Assert
    assert {m.config[c.KEY_DOWNLINK] for m in grid.sent} == {c.DOWNLINK_RAW}
    totals = strategy.totals
    # Flower-serialized: the same arrays plus fedcodec's few config keys.
    assert totals.raw_bytes_down < totals.bytes_down < 1.1 * totals.raw_bytes_down
    assert totals.ratio_up > 4  # Flower-transmitted replies of a 1,224-weight model


def test_composes_with_client_side_dp_fixed_clipping() -> None:
    """CompressionStrategy(DP client-side clipping(FedAvg)) with fedcodec_mod, fixedclipping_mod.

    Without noise the aggregated change is an average of clipped, coded updates: its norm stays
    near the clipping norm even though every node moves much farther.
    """
    # Prepare
    clip = 0.01
    dp = DifferentialPrivacyClientSideFixedClipping(
        FedAvg(fraction_evaluate=0.0),
        noise_multiplier=0.0,
        clipping_norm=clip,
        num_sampled_clients=3,
    )
    strategy = CompressionStrategy(dp, schedule=RoundParams(lam=0.1155, S=32))
    app = _client_app(fedcodec_mod, fixedclipping_mod, change=0.05)
    grid = _LoopGrid(app, 3)
    initial = _initial()
    # Execute
    result = strategy.start(grid=grid, initial_arrays=initial, num_rounds=1)
    # Assert
    change = np.sqrt(
        sum(
            float(np.sum((a.numpy().astype(np.float64) - initial[k].numpy()) ** 2))
            for k, a in result.arrays.items()
        )
    )
    assert 0 < change <= 1.2 * clip
    assert strategy.totals.updates == 3


def test_summary_logs_settings_and_traffic_then_the_inner_summary(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """summary() reports the bytes so far and delegates."""
    # Prepare
    strategy = CompressionStrategy(FedAvg(), schedule=PARAMS)
    strategy.start(grid=_LoopGrid(_client_app(), 2), initial_arrays=_initial(), num_rounds=1)
    logger = logging.getLogger("flwr.fedcodec")
    logger.addHandler(caplog.handler)
    # Execute
    try:
        with caplog.at_level(logging.INFO, logger="flwr.fedcodec"):
            strategy.summary()
    finally:
        logger.removeHandler(caplog.handler)
    # Assert
    text = caplog.text
    totals = strategy.totals
    assert f"Bytes up: {totals.bytes_up} coded, {totals.raw_bytes_up} as float32" in text
    assert "Bytes down:" in text


def test_constructor_validates_its_arguments() -> None:
    """Bad arguments raise ValueError / TypeError."""
    with pytest.raises(TypeError, match="Strategy"):
        CompressionStrategy(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="keep"):
        CompressionStrategy(FedAvg(), keep=0)
    with pytest.raises(ValueError, match="keyframe_bits"):
        CompressionStrategy(FedAvg(), keyframe_bits=1)
    with pytest.raises(ValueError, match="step_snap"):
        CompressionStrategy(FedAvg(), step_snap="octave")
    assert CompressionStrategy(FedAvg(), step_snap="grid").step_snap == "grid"
    # The default (measured on the benchmark CNN, docs/bench/cnn.md): power-of-two steps for
    # sparsified downlink versions, grid steps for dense ones.
    assert CompressionStrategy(FedAvg()).step_snap == "auto"


def test_importing_fedcodec_does_not_import_flwr(tmp_path: Path) -> None:
    """Only fedcodec.flower imports flwr (run outside the source tree: the installed package)."""
    code = (
        "import sys, fedcodec, fedcodec.pipeline, fedcodec.codec; "
        "print(sorted(m for m in sys.modules if m == 'flwr' or m.startswith('flwr.')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"


def test_documentation_examples_run() -> None:
    """The Examples sections of the wrapper and the mod run as written."""
    import doctest

    from fedcodec.flower import mod, strategy

    for module in (strategy, mod):
        failed, attempted = doctest.testmod(module, raise_on_error=False)
        assert attempted > 0
        assert failed == 0


def _hostile_app(hostile: int, examples: int, scale: float) -> ClientApp:
    """Honest nodes add a small change; node ``hostile`` a huge one and claims ``examples``."""
    app = ClientApp(mods=[fedcodec_mod])

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        record = msg.content["arrays"]
        assert isinstance(record, ArrayRecord)
        rng = np.random.default_rng(context.node_id)
        bad = context.node_id == hostile
        local = {
            k: a.numpy()
            + (rng.laplace(size=a.shape) * 2e-3 * (scale if bad else 1.0)).astype(np.float32)
            for k, a in record.items()
        }
        n = examples if bad else 10
        content = RecordDict(
            {
                "arrays": ArrayRecord({k: Array(v) for k, v in local.items()}),
                "metrics": MetricRecord({"num-examples": n}),
            }
        )
        return Message(content, reply_to=msg)

    return app


def test_robust_policy_bounds_a_hostile_node() -> None:
    """One node with a 300x change and 10**9 examples cannot take over the FedAvg round."""
    initial = _initial()
    results = {}
    for name, policy in (("plain", RobustPolicy.fedavg()), ("robust", RobustPolicy())):
        strategy = CompressionStrategy(
            FedAvg(), schedule=RoundParams(lam=0.0, S=64), compress_downlink=False, robust=policy
        )
        grid = _LoopGrid(_hostile_app(hostile=6, examples=10**9, scale=300.0), 8)
        messages = list(strategy.configure_train(1, initial, ConfigRecord(), grid))
        arrays, metrics = strategy.aggregate_train(1, list(grid.send_and_receive(messages)))
        assert arrays is not None
        assert metrics is not None
        change = _numpy(arrays)["w"] - initial["w"].numpy()
        results[name] = float(np.sqrt(np.mean(change.astype(np.float64) ** 2)))
    # Plain FedAvg: the hostile node's change is the round's (RMS ~ 300 x 2e-3 x sqrt(2)).
    assert results["plain"] > 0.5
    # Robust: a quarter of the round at most, clipped to 10x the median norm.
    assert results["robust"] < 0.05
    # 2**62 examples are refused outright.
    strategy = CompressionStrategy(FedAvg(), schedule=PARAMS, compress_downlink=False)
    grid = _LoopGrid(_hostile_app(hostile=2, examples=2**62, scale=1.0), 4)
    messages = list(strategy.configure_train(1, initial, ConfigRecord(), grid))
    _, metrics = strategy.aggregate_train(1, list(grid.send_and_receive(messages)))
    assert metrics is not None
    assert metrics[c.METRIC_REJECTED] == 1
    with pytest.raises(ValueError, match="FedTrimmedAvg"):
        CompressionStrategy(FedAvg(), robust=RobustPolicy(aggregator="median"))


def test_sensitivity_and_the_apps_importance_reach_the_encoder() -> None:
    """Sensitivity travels in the config; the app's importance steers the steps, never travels."""
    # Prepare
    app = ClientApp(mods=[fedcodec_mod])
    seen_importance: list[bool] = []

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        record = msg.content["arrays"]
        assert isinstance(record, ArrayRecord)
        rng = np.random.default_rng(context.node_id)
        local = {
            k: a.numpy() + (rng.laplace(size=a.shape) * 2e-3).astype(np.float32)
            for k, a in record.items()
        }
        importance = {k: np.ones(a.shape, np.float32) for k, a in record.items()}
        importance["b"] *= 64.0  # the bias is far more sensitive
        content = RecordDict(
            {
                "arrays": ArrayRecord({k: Array(v) for k, v in local.items()}),
                "metrics": MetricRecord({"num-examples": 10}),
                c.IMPORTANCE_RECORD: ArrayRecord({k: Array(v) for k, v in importance.items()}),
            }
        )
        seen_importance.append(True)
        return Message(content, reply_to=msg)

    params = RoundParams(
        lam=0.5,
        S=4,
        sparsification=Sparsification(topk=0.2, allocation="rd"),
        sensitivity=Sensitivity(max_refine=16.0, fallback="none"),
    )
    strategy = CompressionStrategy(FedAvg(), schedule=params)
    grid = _LoopGrid(app, 2)
    # Execute
    messages = list(strategy.configure_train(1, _initial(), ConfigRecord(), grid))
    replies = list(grid.send_and_receive(messages))
    # Assert
    sent = grid.sent[0].config
    assert _params(sent).sensitivity == params.sensitivity
    assert seen_importance == [True, True]
    for reply in replies:
        assert c.IMPORTANCE_RECORD not in reply.content
        steps = [
            info.step
            for info in codec.inspect(_update_data(reply), expected_shapes=list(SHAPES.values()))
        ]
        assert steps[1] < steps[0] / 4
    arrays, metrics = strategy.aggregate_train(1, replies)
    assert arrays is not None
    assert metrics is not None
    assert metrics[c.METRIC_REJECTED] == 0


def test_large_containers_travel_as_one_array_with_the_same_result(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Above the inline limit the containers travel as ONE Array each way: the same bytes,
    the same models as inline (here the limit is lowered to 0 bytes)."""
    import fedcodec.flower.mod as mod_module
    import fedcodec.flower.strategy as strategy_module

    def run() -> tuple[dict[str, np.ndarray], list[_Sent]]:
        random.seed(0)  # Flower samples (and orders) the nodes with the random module
        strategy = CompressionStrategy(FedAvg(fraction_evaluate=0.0), schedule=PARAMS)
        grid = _LoopGrid(_client_app(), 3)
        result = strategy.start(grid=grid, initial_arrays=_initial(), num_rounds=3)
        return _numpy(result.arrays), grid.sent

    inline_model, inline_sent = run()
    monkeypatch.setattr(strategy_module, "INLINE_MAX_BYTES", 0)
    monkeypatch.setattr(mod_module, "INLINE_MAX_BYTES", 0)
    # Execute
    array_model, array_sent = run()
    # Assert
    for name in SHAPES:
        np.testing.assert_array_equal(array_model[name], inline_model[name])
    deltas = [m for m in array_sent if m.config[c.KEY_DOWNLINK] == c.DOWNLINK_DELTA]
    assert deltas
    for sent in deltas:
        assert list(sent.arrays) == [c.KEY_MODEL_ARRAY]
        assert sent.arrays[c.KEY_MODEL_ARRAY][0] in (c.STYPE, c.STYPE_SEQUENCE)
    inline_deltas = [m for m in inline_sent if m.config[c.KEY_DOWNLINK] == c.DOWNLINK_DELTA]
    for inline, array in zip(inline_deltas, deltas, strict=True):
        stype, data = array.arrays[c.KEY_MODEL_ARRAY]
        parts = array_parts(Array(dtype="uint8", shape=(len(data),), stype=stype, data=data))
        assert parts == inline_parts(inline.config[c.KEY_MODEL_ARRAY])


# -- a mod without the shared initial model (the plain fedcodec_mod) -----------------


def _plain_or_holding(*plain: int) -> Callable[..., Message]:
    """A mod that is the plain ``fedcodec_mod`` (no initial model) on the ``plain`` nodes
    and the one holding the initial model on the others."""
    from fedcodec.flower import fedcodec_mod as plain_mod

    def mod(msg: Message, context: Context, call_next: Callable[..., Message]) -> Message:
        chosen = plain_mod if context.node_id in plain else fedcodec_mod
        return chosen(msg, context, call_next)

    return mod


def _sends_of_the_initial(grid: _LoopGrid) -> list[tuple[int, str]]:
    """(node, message type) of every message that carried the raw initial model."""
    return [(m.node, m.message_type) for m in grid.sent if c.INITIAL_ARRAY in m.arrays]


@pytest.mark.parametrize("fraction_evaluate", [0.0, 1.0])
def test_the_plain_mod_trains_with_the_default_strategy_losing_only_its_first_round(
    caplog: pytest.LogCaptureFixture, fraction_evaluate: float
) -> None:
    """ClientApp(mods=[fedcodec_mod]) without an initial model and CompressionStrategy(FedAvg()):
    the first message's reply says the node lacks the initial model, its next message carries
    it (once, 4 bytes per weight, one warning per node): every later round aggregates every
    node's update.  (It never trained: send_initial was False by default; with it, round 2
    failed too, the error's text not being recognised.)"""
    # Prepare
    random.seed(0)
    strategy = CompressionStrategy(FedAvg(fraction_evaluate=fraction_evaluate), schedule=PARAMS)
    grid = _LoopGrid(_client_app(_plain_or_holding(1, 2, 3, 4)), 4)
    # Execute
    with caplog.at_level(logging.WARNING, logger="flwr.fedcodec"):
        strategy.start(grid=grid, initial_arrays=_initial(), num_rounds=4)
    # Assert
    assert [strategy.history[r].updates for r in (1, 2, 3, 4)] == [0, 4, 4, 4]
    assert strategy.totals.rejected == 0
    sends = _sends_of_the_initial(grid)
    # The evaluate message of round 1 carries it when there is one, else round 2's train.
    kind = MessageType.EVALUATE if fraction_evaluate else MessageType.TRAIN
    assert sorted(sends) == [(node, kind) for node in (1, 2, 3, 4)]
    numel = sum(int(np.prod(s)) for s in SHAPES.values())
    warnings = [r.getMessage() for r in caplog.records if "sending it" in r.getMessage()]
    assert len(warnings) == 4
    assert all(f"({4 * numel} bytes" in w and "initial_model=" in w for w in warnings)


def test_with_send_initial_false_a_node_without_the_initial_model_gets_the_clear_error() -> None:
    """An operator who forbids sending the initial model keeps the error naming it, every
    round, and nothing is sent raw."""
    # Prepare
    strategy = CompressionStrategy(
        FedAvg(fraction_evaluate=0.0), schedule=PARAMS, send_initial=False
    )
    grid = LocalGrid(_client_app(_plain_or_holding(1, 2)), [1, 2])
    arrays = _initial()
    for server_round in (1, 2, 3):
        messages = list(strategy.configure_train(server_round, arrays, ConfigRecord(), grid))
        # Execute
        replies = list(grid.send_and_receive(messages))
        # Assert
        assert all(m.has_error() for m in replies)
        reasons = [m.error.reason for m in replies]
        if server_round == 1:  # the node says what it lacks
            assert all(c.ERROR_NO_INITIAL in r for r in reasons)
        else:  # the server refuses to send it
            assert all("initial_digest" in r and "does not send it" in r for r in reasons)
            assert all(m.content["config"][c.KEY_DOWNLINK] == c.DOWNLINK_REFUSED for m in messages)  # type: ignore[index]
        assert strategy.aggregate_train(server_round, replies)[0] is None
    assert strategy.totals.updates == 0


def test_a_mod_holding_the_initial_model_never_receives_it() -> None:
    """Sending the initial model is for nodes that said they lack it: nodes whose mod holds
    it get the same messages whether the strategy may send it or not (the same bytes), and
    in a mixed federation only the plain nodes get it."""

    def run(app: ClientApp, **kwargs: bool) -> tuple[CompressionStrategy, _LoopGrid]:
        random.seed(0)
        strategy = CompressionStrategy(FedAvg(), schedule=PARAMS, **kwargs)  # type: ignore[arg-type]
        grid = _LoopGrid(app, 4)
        strategy.start(grid=grid, initial_arrays=_initial(), num_rounds=3)
        return strategy, grid

    # Execute
    default, default_grid = run(_client_app())
    forbidden, forbidden_grid = run(_client_app(), send_initial=False)
    _, mixed_grid = run(_client_app(_plain_or_holding(2, 4)))
    # Assert
    assert default.totals == forbidden.totals
    assert default_grid.sent == forbidden_grid.sent
    assert _sends_of_the_initial(default_grid) == []
    assert sorted(node for node, _ in _sends_of_the_initial(mixed_grid)) == [2, 4]
