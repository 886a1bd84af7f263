"""Shared set-up of the Flower plugin tests (``test_flower_*.py``), beside ``loopback.py``.

* :func:`task_identity` — an autouse fixture: instruction messages need a run id, which a
  ServerApp process sets; a test module that imports it gets it for every test.
* :func:`initial_arrays` — the shared initial model of a test federation, from seed 0.
* :func:`stepping_client_app` — a ClientApp whose training is a given function of the arrays.
* :func:`noisy_client_app` — a ClientApp whose training adds seeded noise to the model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import numpy as np
import pytest

if TYPE_CHECKING:
    from flwr.clientapp import ClientApp


@pytest.fixture(autouse=True)
def task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Strategies create instruction messages, which need a run id (a ServerApp sets it)."""
    from flwr.supercore.task_identity import TaskIdentity

    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


def initial_arrays(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """The shared initial model: N(0, 0.1²) float32 weights of ``shapes``, from seed 0."""
    rng = np.random.default_rng(0)
    return {k: (rng.standard_normal(s) * 0.1).astype(np.float32) for k, s in shapes.items()}


#: A test node's local training: ``step(arrays, node_id, server_round)`` -> new arrays.
Step = Callable[[dict[str, np.ndarray], int, int], Mapping[str, np.ndarray]]


def stepping_client_app(
    *mods: object, step: Step, num_examples: Callable[[int], int] = lambda node: 10 * node
) -> ClientApp:
    """A ClientApp whose training is ``step`` on the received arrays (float32 copies by
    name); its reply carries the result and ``num_examples(node_id)``.  ``mods``: the app's
    mods, outermost first (e.g. ``make_fedcodec_mod(initial_model=...)``)."""
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

    app = ClientApp(mods=list(mods))  # type: ignore[arg-type]

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        record = msg.content["arrays"]
        config = msg.content["config"]
        assert isinstance(record, ArrayRecord)
        assert isinstance(config, ConfigRecord)
        arrays = {k: a.numpy() for k, a in record.items()}
        local = step(arrays, context.node_id, int(config["server-round"]))  # type: ignore[arg-type]
        content = RecordDict(
            {
                "arrays": ArrayRecord({k: Array(v) for k, v in local.items()}),
                "metrics": MetricRecord({"num-examples": num_examples(context.node_id)}),
            }
        )
        return Message(content, reply_to=msg)

    return app


def noisy_client_app(*mods: object, change: float = 2e-3) -> ClientApp:
    """A ClientApp whose training adds a seeded Laplace change ``change`` (per node and
    round) to every weight; evaluate returns the model's squared norm.  ``mods``: the
    app's mods, outermost first (e.g. ``make_fedcodec_mod(initial_model=...)``)."""
    from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict

    def step(arrays: dict[str, np.ndarray], node: int, server_round: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([node, server_round])
        return {
            k: a + (rng.laplace(size=a.shape) * change).astype(np.float32)
            for k, a in arrays.items()
        }

    app = stepping_client_app(*mods, step=step)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        record = msg.content["arrays"]
        assert isinstance(record, ArrayRecord)
        norm = float(sum(np.sum(a.numpy() ** 2) for a in record.values()))
        metrics = MetricRecord({"num-examples": 1, "norm": norm})
        return Message(RecordDict({"metrics": metrics}), reply_to=msg)

    return app
