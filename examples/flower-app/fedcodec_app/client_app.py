"""ClientApp: local training on the node's partition; fedcodec_mod codes the traffic.

The mod passes messages without fedcodec's config keys through untouched, so
the same ClientApp serves runs with and without the plugin (run config
``fedcodec``).
"""

from __future__ import annotations

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedcodec.flower import make_fedcodec_mod
from fedcodec_app import task


def _initial_model(context: Context) -> task.Params:
    """The ServerApp's initial model, built from the same seed: it never travels."""
    cfg = context.run_config
    return task.initial_model(int(cfg["seed"]), int(cfg["hidden"]))


fedcodec_mod = make_fedcodec_mod(initial_model=_initial_model)

# With Flower's client-side DP clipping, clip the plain update before coding it:
#     ClientApp(mods=[fedcodec_mod, fixedclipping_mod])
# With message_size_mod / arrays_size_mod outside fedcodec_mod, they log the
# coded sizes:  ClientApp(mods=[message_size_mod, fedcodec_mod])
app = ClientApp(mods=[fedcodec_mod])


def _partition(context: Context) -> tuple[int, int]:
    return int(context.node_config["partition-id"]), int(context.node_config["num-partitions"])


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the received model on the local partition."""
    cfg = context.run_config
    seed = int(cfg["seed"])
    partition_id, num_partitions = _partition(context)
    x, y = task.partition(seed, partition_id, num_partitions, float(cfg["dirichlet-alpha"]))
    record = msg.content["arrays"]
    config = msg.content["config"]
    assert isinstance(record, ArrayRecord)
    assert isinstance(config, ConfigRecord)
    local = task.train(
        task.from_record(record),
        x,
        y,
        epochs=int(cfg["local-epochs"]),
        batch=int(cfg["batch-size"]),
        lr=float(cfg["learning-rate"]),
        seed=seed,
        server_round=int(config["server-round"]),  # type: ignore[arg-type]
        partition_id=partition_id,
    )
    content = RecordDict(
        {"arrays": task.to_record(local), "metrics": MetricRecord({"num-examples": len(y)})}
    )
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Accuracy of the received model on the shared test split."""
    record = msg.content["arrays"]
    assert isinstance(record, ArrayRecord)
    x, y = task.test_set(int(context.run_config["seed"]))
    acc = task.evaluate(task.from_record(record), x, y)
    metrics = MetricRecord({"num-examples": len(y), "accuracy": acc})
    return Message(content=RecordDict({"metrics": metrics}), reply_to=msg)
