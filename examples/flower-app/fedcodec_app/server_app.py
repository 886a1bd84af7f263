"""ServerApp: FedAvg, wrapped in fedcodec's CompressionStrategy when ``fedcodec`` is on."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg, Strategy

from fedcodec.flower import CompressionStrategy
from fedcodec.pipeline import RoundParams
from fedcodec_app import task

app = ServerApp()
_log = logging.getLogger("flwr.fedcodec_app")


def coding(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The coding arguments of ``CompressionStrategy`` from the run config.

    ``preset`` (a name of :func:`fedcodec.pipeline.get_preset`, e.g. ``"balanced"``) sets
    both links; empty (the default): ``lambda`` and ``S``, or ``budget-bytes``, on both.
    """
    preset = str(cfg.get("preset", ""))
    if preset:
        return {"preset": preset}
    budget = int(cfg["budget-bytes"])
    params = RoundParams(
        lam=float(cfg["lambda"]), S=int(cfg["S"]), budget_bytes=budget if budget > 0 else None
    )
    return {"schedule": params}


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the federation and report accuracy and traffic."""
    cfg = context.run_config
    seed = int(cfg["seed"])
    inner = FedAvg(
        fraction_train=float(cfg["fraction-train"]),
        fraction_evaluate=float(cfg["fraction-evaluate"]),
    )
    strategy: Strategy = inner
    wrapper: CompressionStrategy | None = None
    if bool(cfg["fedcodec"]):
        wrapper = CompressionStrategy(
            inner,
            **coding(cfg),
            compress_downlink=bool(cfg["compress-downlink"]),
            # the node's previous update as side information of its next one
            temporal_reference=bool(cfg["temporal-reference"]),
            # the previous model change as side information of the next one
            downlink_reference=bool(cfg["downlink-reference"]),
        )
        strategy = wrapper

    x_test, y_test = task.test_set(seed)
    curve: list[float] = []

    def central_eval(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        acc = task.evaluate(task.from_record(arrays), x_test, y_test)
        curve.append(acc)
        return MetricRecord({"accuracy": acc})

    result = strategy.start(
        grid=grid,
        initial_arrays=task.to_record(task.initial_model(seed, int(cfg["hidden"]))),
        num_rounds=int(cfg["num-server-rounds"]),
        evaluate_fn=central_eval,
    )
    report: dict[str, object] = {
        "fedcodec": wrapper is not None,
        "accuracy": curve[-1],
        "accuracy_curve": curve,
        "rounds": int(cfg["num-server-rounds"]),
        "train_metrics": {r: dict(m) for r, m in result.train_metrics_clientapp.items()},
    }
    if wrapper is not None:
        totals = wrapper.totals
        wrapper.summary()
        report["traffic"] = {
            "bytes_up": totals.bytes_up,
            "raw_bytes_up": totals.raw_bytes_up,
            "bytes_down": totals.bytes_down,
            "raw_bytes_down": totals.raw_bytes_down,
            "ratio_up": totals.ratio_up,
            "ratio_down": totals.ratio_down,
            "ratio": totals.ratio,
            "keyframes": totals.keyframes,
            "rejected": totals.rejected,
        }
    _log.info("final accuracy %.2f %% (fedcodec %s)", curve[-1], "on" if wrapper else "off")
    path = str(cfg["results-json"])
    if path:
        Path(path).write_text(json.dumps(report, indent=2) + "\n")
