"""Server optimizers that change the update (FedAdam, FedYogi, FedAvgM) behind the wrapper.

Where the optimizer sits: the wrapper decodes every reply into ``global_v + decoded_i``
(the uplink, client-side error feedback), the inner strategy turns their mean into its
own step, and the downlink codes the change the optimizer applied, against the model the
nodes hold, with server-side error feedback.  These tests run real Flower strategies on
real ``Message``/``Context`` objects in process.
"""

from __future__ import annotations

import logging

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
from flwr.app import Array, ArrayRecord, ConfigRecord
from flwr.serverapp.strategy import FedAdam, FedAvg, FedAvgM, FedYogi, Strategy

from fedcodec.flower import CompressionStrategy, make_fedcodec_mod
from fedcodec.flower.local import LocalGrid
from fedcodec.pipeline import RobustPolicy, RoundParams, ServerOptimizer, Sparsification

SHAPES = {"w": (32, 40), "b": (32,)}
#: A sparse uplink, as with top-k: most weights are zero in every update.
UPLINK = RoundParams(lam=0.5, S=16, sparsification=Sparsification(topk=0.05))
DOWNLINK = RoundParams(lam=0.5, S=16)


def _federation(
    inner: Strategy, nodes: int = 4, **options: object
) -> tuple[CompressionStrategy, LocalGrid, list[tuple[int, int, bool]]]:
    """A wrapper around ``inner`` and a grid whose train function checks, on every node
    and round, that the model it trains from is the server's stream model bit for bit.
    Each node pulls toward its own target (a shared drift plus node noise)."""
    options.setdefault("downlink", DOWNLINK)
    strategy = CompressionStrategy(inner, schedule=UPLINK, robust=RobustPolicy.fedavg(), **options)  # type: ignore[arg-type]
    seen: list[tuple[int, int, bool]] = []  # (node, version, bit-identical)

    def step(arrays: dict[str, np.ndarray], node: int, server_round: int) -> dict[str, np.ndarray]:
        held = strategy.stream_model()
        assert held is not None
        same = all(arrays[k].tobytes() == held.tensors[k].tobytes() for k in SHAPES)
        seen.append((node, held.version, same))
        rng = np.random.default_rng([node, server_round])
        drift = np.random.default_rng(99)
        local = {}
        for k, w in arrays.items():
            target = drift.standard_normal(w.shape).astype(np.float32) * 0.2
            move = 0.1 * (target - w) + rng.laplace(size=w.shape).astype(np.float32) * 2e-2
            local[k] = (w + move).astype(np.float32)
        return local

    mod = make_fedcodec_mod(initial_model=initial_arrays(SHAPES))
    app = stepping_client_app(mod, step=step, num_examples=lambda _: 10)
    return strategy, LocalGrid(app, range(1, nodes + 1)), seen


def _initial() -> ArrayRecord:
    return ArrayRecord({k: Array(v) for k, v in initial_arrays(SHAPES).items()})


def _plain(**kw: float) -> dict[str, object]:
    return {
        "fraction_evaluate": 0.0,
        "min_evaluate_nodes": 0,
        "min_available_nodes": 4,
        "min_train_nodes": 4,
        **kw,
    }


OPTIMIZERS = [
    pytest.param(lambda: FedAdam(eta=0.02, eta_l=0.1, tau=1e-3, **_plain()), id="FedAdam"),  # type: ignore[arg-type]
    pytest.param(lambda: FedYogi(eta=0.02, eta_l=0.1, tau=1e-3, **_plain()), id="FedYogi"),  # type: ignore[arg-type]
    pytest.param(lambda: FedAvgM(server_momentum=0.9, **_plain()), id="FedAvgM"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize("make", OPTIMIZERS)
@pytest.mark.parametrize(
    ("second_moment", "aggregation"),
    [(None, "inner"), ("tensor", "inner"), ("tensor", "engine")],
    ids=["flower", "fedcodec", "fedcodec-engine"],
)
def test_nodes_hold_the_servers_stream_model_bit_for_bit(
    make: object, second_moment: str | None, aggregation: str
) -> None:
    """Every node, every round, trains from exactly the model the server's downlink
    stream holds, although the optimizer moved weights no update carried — Flower's
    optimizer as the inner strategy, or fedcodec's ServerOptimizer behind FedAvg."""
    # Prepare
    inner = make()  # type: ignore[operator]
    options: dict[str, object] = {"aggregation": aggregation}
    if second_moment is not None:
        kind = {"FedAdam": "adam", "FedYogi": "yogi", "FedAvgM": "avgm"}[type(inner).__name__]
        eta = 1.0 if kind == "avgm" else 0.02
        options["server_optimizer"] = ServerOptimizer(kind, eta=eta, second_moment="tensor")  # type: ignore[arg-type]
        inner = FedAvg(**_plain())  # type: ignore[arg-type]
    strategy, grid, seen = _federation(inner, **options)
    # Execute
    result = strategy.start(grid=grid, initial_arrays=_initial(), num_rounds=5)
    # Assert
    assert len(seen) == 20
    assert all(same for _, _, same in seen), [s for s in seen if not s[2]]
    assert [v for _, v, _ in seen] == [v for v in range(5) for _ in range(4)]
    totals = strategy.totals
    assert totals.rejected == 0
    assert totals.keyframes == 0
    # The downlink is lossy: the nodes' model lags the exact one by the server's
    # residual, which error feedback keeps small next to what the optimizer moved.
    final = {k: a.numpy() for k, a in result.arrays.items()}
    stream = strategy.stream_model()
    assert stream is not None
    moved = np.sqrt(sum(np.sum((final[k] - initial_arrays(SHAPES)[k]) ** 2) for k in SHAPES))
    lag = np.sqrt(sum(np.sum((final[k] - stream.tensors[k]) ** 2) for k in SHAPES))
    assert 0.0 < lag < 0.5 * moved


def test_the_downlink_codes_what_the_optimizer_applied_not_the_mean_update() -> None:
    """FedAdam is handed global + decoded per reply; what it applies is its own step
    (momentum, per-weight scaling).  The nodes' model follows the applied steps."""
    # Prepare
    strategy, grid, _ = _federation(FedAdam(eta=0.02, eta_l=0.1, tau=1e-3, **_plain()))  # type: ignore[arg-type]
    initial = _initial()
    arrays = initial
    size = sum(int(np.prod(s)) for s in SHAPES.values())
    mean_updates = np.zeros(size)
    # Execute: three rounds by hand, to see the inner strategy's input and output
    for server_round in (1, 2, 3):
        messages = list(strategy.configure_train(server_round, arrays, ConfigRecord(), grid))
        replies = list(grid.send_and_receive(messages))
        out, _ = strategy.aggregate_train(server_round, replies)
        assert out is not None
        for reply in replies:  # what FedAdam was handed: global + decoded update
            record = reply.content["arrays"]
            assert isinstance(record, ArrayRecord)
            mean_updates += np.concatenate(
                [(record[k].numpy() - arrays[k].numpy()).ravel() for k in SHAPES]
            ) / len(replies)
        arrays = out
    strategy.configure_train(4, arrays, ConfigRecord(), grid)  # publishes version 3
    # Assert
    stream = strategy.stream_model()
    assert stream is not None
    assert stream.version == 3

    def moved(tensors: dict[str, np.ndarray]) -> np.ndarray:
        return np.concatenate([(tensors[k] - initial[k].numpy()).ravel() for k in SHAPES])

    applied = moved({k: a.numpy() for k, a in arrays.items()})
    nodes = moved(stream.tensors)
    assert np.linalg.norm(applied - mean_updates) > 0.5 * np.linalg.norm(mean_updates)
    assert np.linalg.norm(nodes - applied) < 0.5 * np.linalg.norm(nodes - mean_updates)


def test_fedavg_baseline_stream_equals_the_aggregate_up_to_the_residual() -> None:
    """The same federation with FedAvg: the control for the optimizer tests above."""
    strategy, grid, seen = _federation(FedAvg(**_plain()))  # type: ignore[arg-type]
    strategy.start(grid=grid, initial_arrays=_initial(), num_rounds=3)
    assert all(same for _, _, same in seen)
    assert strategy.totals.rejected == 0


def test_server_optimizer_wraps_fedavg_and_flowers_adaptive_optimizers_get_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """ServerOptimizer goes behind an averaging strategy; Flower's FedAdam is accepted with
    a warning naming the per-weight second moment."""
    with pytest.raises(ValueError, match="server_optimizer"):
        CompressionStrategy(
            FedAdam(**_plain()),  # type: ignore[arg-type]
            server_optimizer=ServerOptimizer("adam"),
        )
    # On the plugin's own logger, with the capture handler on it: a Flower run earlier in the
    # session may have raised the level of Flower's "flwr" logger, its parent (bench cnn), or
    # turned off its propagation to the root logger (a Flower simulation).
    logger = logging.getLogger("flwr.fedcodec")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING, logger="flwr.fedcodec"):
            CompressionStrategy(FedYogi(**_plain()))  # type: ignore[arg-type]
            assert "FedYogi normalizes every weight" in caplog.text
            caplog.clear()
            CompressionStrategy(FedAvgM(**_plain()))  # type: ignore[arg-type]
            assert "normalizes" not in caplog.text
    finally:
        logger.removeHandler(caplog.handler)
