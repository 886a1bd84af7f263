"""The plugin's own bytes on Flower's wire (contract ``fedcodec/v4``).

Messages cross a grid that deflates every content-addressed object and inflates the
content again, as Flower's transport does, so values arrive with the types the wire
gives them.  Checks: the app's reply metrics reach the inner strategy exactly (name,
keys, order, values, types) with one Flower record less per reply, Flower's FedAvg,
FedProx and FedAdam aggregate them as without the plugin, and byte bounds per message
kind on what the plugin adds.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pytest

pytest.importorskip(
    "flwr", reason="the Flower plugin tests need flwr (pip install 'fedcodec[flower]')"
)

from flower_helpers import initial_arrays, task_identity  # noqa: F401  (autouse fixture)
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp.strategy import FedAdam, FedAvg, FedProx, Strategy
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects
from flwr.supercore.inflatable.inflatable_utils import inflate_object_from_contents

from fedcodec.errors import CorruptStreamError
from fedcodec.flower import CompressionStrategy, make_fedcodec_mod
from fedcodec.flower import constants as c
from fedcodec.flower._records import coded_update, reply_records, restore_metrics, wire_size
from fedcodec.flower.local import LocalGrid
from fedcodec.pipeline import RobustPolicy, RoundParams
from fedcodec.pipeline.model import digest_matches

SHAPES = {"w": (24, 50), "b": (24,)}
PARAMS = RoundParams(lam=0.5, S=0)


def _initial_arrays() -> dict[str, np.ndarray]:
    return initial_arrays(SHAPES)


def _metrics(node: int, server_round: int) -> dict[str, Any]:
    """Metric values of every type a MetricRecord holds, including edge cases."""
    return {
        "num-examples": 10 * node,
        "train_loss": 0.1 * node + 1e-3 * server_round,
        "neg_zero": -0.0,
        "huge": 2**64 - 1,
        "tiny": 5e-324,
        "steps": [node, server_round, -7],
        "losses": [0.5, 1e300, -0.0],
        "empty": [],
    }


class _App:
    """A ClientApp whose train replies carry ``_metrics`` under ``name``; it keeps them."""

    def __init__(self, name: str = "metrics", *, after: bool = True) -> None:
        self.sent: dict[tuple[int, int], RecordDict] = {}
        self.app = ClientApp(mods=[make_fedcodec_mod(initial_model=_initial_arrays())])
        outer = self

        @self.app.train()
        def train(msg: Message, context: Context) -> Message:
            record = msg.content["arrays"]
            config = msg.content["config"]
            assert isinstance(record, ArrayRecord)
            assert isinstance(config, ConfigRecord)
            server_round = int(config["server-round"])  # type: ignore[arg-type]
            rng = np.random.default_rng([context.node_id, server_round])
            arrays = ArrayRecord(
                {
                    k: Array(a.numpy() + (rng.laplace(size=a.shape) * 2e-3).astype(np.float32))
                    for k, a in record.items()
                }
            )
            metrics = MetricRecord(_metrics(context.node_id, server_round))
            records: dict[str, Any] = {"arrays": arrays, name: metrics}
            if not after:
                records = {name: metrics, "arrays": arrays}
            outer.sent[(context.node_id, server_round)] = RecordDict(records)
            return Message(RecordDict(records), reply_to=msg)


def _over_the_wire(content: RecordDict) -> RecordDict:
    """Deflate every object of ``content`` and inflate them again, as Flower's transport."""
    objects = get_all_nested_objects(content)
    contents = {oid: obj.deflate() for oid, obj in objects.items()}
    out = inflate_object_from_contents(content.object_id, contents)
    assert isinstance(out, RecordDict)
    return out


class _WireGrid(LocalGrid):
    """Every message and reply crosses the wire; keeps (message, reply) pairs."""

    def __init__(self, app: ClientApp, nodes: int) -> None:
        super().__init__(app, range(1, nodes + 1))
        # (message type, the message's content as sent, the reply's as received)
        self.pairs: list[tuple[str, RecordDict, RecordDict]] = []

    def deliver(self, msg: Message) -> Message:
        """Serialize the message, run the app, serialize the reply."""
        msg.content = _over_the_wire(msg.content)
        sent = RecordDict(dict(msg.content.items()))  # the mod rewrites msg.content
        reply = super().deliver(msg)
        reply.content = _over_the_wire(reply.content)
        # the strategy rewrites reply.content
        self.pairs.append(
            (msg.metadata.message_type, sent, RecordDict(dict(reply.content.items())))
        )
        return reply


def _spy(inner: Strategy) -> tuple[Strategy, list[list[RecordDict]]]:
    """``inner``, recording the contents of the replies its aggregate_train sees."""
    seen: list[list[RecordDict]] = []
    aggregate = inner.aggregate_train

    def recording(server_round: int, replies: Iterable[Message]) -> Any:
        replies = list(replies)
        seen.append([m.content for m in replies])
        return aggregate(server_round, replies)

    inner.aggregate_train = recording  # type: ignore[method-assign]
    return inner, seen


def _same(a: object, b: object) -> bool:
    """Equal values of equal types, -0.0 apart from 0.0, lists element by element."""
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is not type(b):
        return False
    if isinstance(a, float) and isinstance(b, float):
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    return a == b


def _initial() -> ArrayRecord:
    return ArrayRecord({k: Array(v) for k, v in _initial_arrays().items()})


@pytest.mark.parametrize(
    "inner",
    [
        FedAvg(fraction_evaluate=0.0),
        FedProx(proximal_mu=0.01, fraction_evaluate=0.0),
        FedAdam(fraction_evaluate=0.0),
    ],
    ids=["FedAvg", "FedProx", "FedAdam"],
)
def test_reply_metrics_reach_the_inner_strategy_exactly(inner: Strategy) -> None:
    """Folded into the inline update on the wire, the app's MetricRecord reaches the inner
    strategy as the app made it (name, order, values, types), and Flower's metric
    aggregation gives what it gives on the app's own replies."""
    # Prepare
    app = _App()
    spied, seen = _spy(inner)
    strategy = CompressionStrategy(spied, schedule=PARAMS, robust=RobustPolicy.fedavg())
    grid = _WireGrid(app.app, 3)
    # Execute
    result = strategy.start(grid=grid, initial_arrays=_initial(), num_rounds=2)
    # Assert: one record per coded reply on the wire
    replies = [r for kind, _, r in grid.pairs if kind == "train"]
    assert len(replies) == 6
    for reply in replies:
        assert list(reply) == ["arrays"]
        folded = reply["arrays"]
        assert isinstance(folded, ConfigRecord)
        assert c.KEY_METRICS not in folded
    # ... and the inner strategy sees the app's records, exactly
    assert [len(r) for r in seen] == [3, 3]
    for server_round, contents in enumerate(seen, start=1):
        for content in contents:
            assert list(content) == ["arrays", "metrics"]
            metrics = content["metrics"]
            assert isinstance(metrics, MetricRecord)
            node = int(metrics["num-examples"]) // 10  # type: ignore[arg-type]
            expected = app.sent[(node, server_round)]["metrics"]
            assert list(metrics) == list(expected)
            for key, value in expected.items():
                assert _same(metrics[key], value), key
    # Flower's aggregation of the app's metrics is what the app's own replies give.
    from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

    order = [int(r["metrics"]["num-examples"]) // 10 for r in seen[1]]  # type: ignore[arg-type,index]
    last = aggregate_metricrecords([app.sent[(n, 2)] for n in order], "num-examples")
    aggregated = result.train_metrics_clientapp[2]
    for key, value in last.items():
        assert _same(aggregated[key], value), key


@pytest.mark.parametrize(("name", "after"), [("train", True), ("metrics", False)])
def test_other_metric_layouts_are_restored_too(name: str, after: bool) -> None:
    """A metric record under another name is folded with its name; one before the arrays
    travels as its own record (the order is the app's): both reach the strategy as sent."""
    # Prepare
    app = _App(name, after=after)
    spied, seen = _spy(FedAvg(fraction_evaluate=0.0, train_metrics_aggr_fn=lambda *_: None))
    strategy = CompressionStrategy(spied, schedule=PARAMS, robust=RobustPolicy.fedavg())
    grid = _WireGrid(app.app, 2)
    # Execute
    strategy.start(grid=grid, initial_arrays=_initial(), num_rounds=1)
    # Assert
    for _, _, reply in grid.pairs:
        if after:
            assert list(reply) == ["arrays"]
            assert reply["arrays"][c.KEY_METRICS] == name  # type: ignore[index]
        else:
            assert list(reply) == [name, "arrays"]
    for content in seen[0]:
        assert list(content) == (["arrays", name] if after else [name, "arrays"])
        metrics = content[name]
        assert isinstance(metrics, MetricRecord)
        node = int(metrics["num-examples"]) // 10  # type: ignore[arg-type]
        expected = app.sent[(node, 1)][name]
        assert list(metrics) == list(expected)
        assert all(_same(metrics[k], v) for k, v in expected.items())


def test_reply_records_fold_only_what_they_can_restore() -> None:
    """Metrics fold only next to an inline update, as the only other record, after it, and
    without ``fc`` keys; an empty record is named so that it comes back."""
    # Prepare
    arrays = ArrayRecord({"w": Array(np.zeros(3, np.float32))})
    metrics = MetricRecord({"n": 1})
    none = ArrayRecord()
    # Execute
    folded = reply_records({"a": arrays, "metrics": metrics}, "a", b"x", none, inline=True)
    empty = reply_records({"a": arrays, "metrics": MetricRecord()}, "a", b"x", none, inline=True)
    reserved = reply_records(
        {"a": arrays, "m": MetricRecord({"fc.x": 1})}, "a", b"x", none, inline=True
    )
    two = reply_records(
        {"a": arrays, "m": metrics, "n": MetricRecord({"k": 2})}, "a", b"x", none, inline=True
    )
    config = reply_records(
        {"a": arrays, "m": ConfigRecord({"s": "t"})}, "a", b"x", none, inline=True
    )
    large = reply_records({"a": arrays, "metrics": metrics}, "a", b"x", none, inline=False)
    # Assert
    assert list(folded) == ["a"]
    assert dict(folded["a"]) == {c.KEY_UPDATE_ARRAY: b"x", "n": 1}
    assert dict(empty["a"]) == {c.KEY_UPDATE_ARRAY: b"x", c.KEY_METRICS: "metrics"}
    assert list(restore_metrics(empty, "a")) == ["a", "metrics"]
    for unfolded in (reserved, two, config, large):
        assert len(unfolded) > 1
        assert restore_metrics(unfolded, "a").keys() == unfolded.keys()


@pytest.mark.parametrize(
    "extra",
    [
        {"acc": "high"},  # a str is no metric
        {"flag": True},  # nor a bool
        {"blob": b"\x00"},
        {"fc.zz": 1},  # an unknown contract key
        {c.KEY_METRICS: "a"},  # names a record that is there
        {c.KEY_METRICS: 3},
    ],
)
def test_restore_metrics_refuses_what_no_app_sent(extra: dict[str, Any]) -> None:
    """A folded record the mod cannot have made is a corrupt reply (left out, not guessed)."""
    record = ConfigRecord({c.KEY_UPDATE_ARRAY: b"x", **extra})
    with pytest.raises(CorruptStreamError):
        restore_metrics({"a": record}, "a")


def _config_items_size(config: ConfigRecord, keys: Iterable[str]) -> int:
    """Bytes the ``keys`` of ``config`` add to its serialized ConfigRecord."""
    without = ConfigRecord({k: v for k, v in config.items() if k not in set(keys)})
    return wire_size({"c": config}) - wire_size({"c": without})


def test_bytes_per_message_kind_stay_within_bounds() -> None:
    """What the plugin adds on the wire: a train message's contract keys (besides the
    container) fit in 55 bytes after first contact (fedcodec/v3: 102), and a coded reply
    is ONE Flower record — its framing beyond the container and the app's metric items
    fits in 195 bytes (fedcodec/v3, a second record: some 370)."""
    # Prepare
    app = _App()
    strategy = CompressionStrategy(
        FedAvg(fraction_evaluate=0.0, train_metrics_aggr_fn=lambda *_: None),
        schedule=PARAMS,
        robust=RobustPolicy.fedavg(),
    )
    grid = _WireGrid(app.app, 2)
    # Execute
    strategy.start(grid=grid, initial_arrays=_initial(), num_rounds=3)
    # Assert
    later = [(m, r) for _, m, r in grid.pairs if c.KEY_KEYS not in m["config"]]  # type: ignore[operator]
    assert len(later) == 4
    for sent, reply in later:
        config = sent["config"]
        assert isinstance(config, ConfigRecord)
        assert config[c.KEY_DOWNLINK] == c.DOWNLINK_DELTA
        ours = [k for k in config if k.startswith("fc") and k != c.KEY_MODEL_ARRAY]
        # the version and the downlink kind in one value, the round under Flower's key
        assert set(ours) == {c.KEY_FORMAT, c.KEY_BASE_VERSION, c.KEY_BASE_DIGEST}
        assert _config_items_size(config, ours) <= 55
        found = coded_update(dict(reply.items()), c.KEY_UPDATE_ARRAY)
        assert found is not None
        record = reply["arrays"]
        assert isinstance(record, ConfigRecord)
        metric_keys = [k for k in record if not k.startswith("fc")]
        framing = wire_size(reply) - len(found[1])
        framing -= _config_items_size(record, metric_keys)
        assert framing <= 195, framing


def test_a_truncated_digest_names_the_model_with_128_bits() -> None:
    """A digest prefix matches from 32 hex digits on; shorter, other case or another
    model's prefix never match."""
    full = "0123456789abcdef" * 4
    assert digest_matches(full, full)
    assert digest_matches(full, full[:32])
    assert not digest_matches(full, full[:31])
    assert not digest_matches(full, full[:32].upper())
    assert not digest_matches(full, "f" + full[1:32])
    assert not digest_matches(full[:32], full)


class _NoRound(FedAvg):
    """FedAvg without Flower's ``server-round`` key in its train messages."""

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Any
    ) -> Iterable[Message]:
        messages = list(super().configure_train(server_round, arrays, config, grid))
        for msg in messages:
            msg.content["config"].pop("server-round", None)  # type: ignore[union-attr]
        return messages


def test_the_round_travels_when_the_inner_strategy_does_not_send_it() -> None:
    """With Flower's ``server-round`` the wrapper sends no round of its own; without it
    the message carries :data:`KEY_ROUND`, and the updates decode either way."""
    # Prepare
    app = ClientApp(mods=[make_fedcodec_mod(initial_model=_initial_arrays())])

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        record = msg.content["arrays"]
        assert isinstance(record, ArrayRecord)
        arrays = ArrayRecord({k: Array(a.numpy() + np.float32(1e-3)) for k, a in record.items()})
        metrics = MetricRecord({"num-examples": 5})
        return Message(RecordDict({"arrays": arrays, "metrics": metrics}), reply_to=msg)

    rounds: dict[str, list[object]] = {}
    for name, inner in (("flower", FedAvg()), ("none", _NoRound())):
        inner.fraction_evaluate = 0.0
        strategy = CompressionStrategy(inner, schedule=PARAMS, robust=RobustPolicy.fedavg())
        grid = _WireGrid(app, 2)
        # Execute
        strategy.start(grid=grid, initial_arrays=_initial(), num_rounds=2)
        # Assert
        assert strategy.totals.updates == 4
        assert strategy.totals.rejected == 0
        rounds[name] = [sent["config"].get(c.KEY_ROUND) for _, sent, _ in grid.pairs]  # type: ignore[union-attr]
    assert rounds == {"flower": [None] * 4, "none": [1, 1, 2, 2]}
