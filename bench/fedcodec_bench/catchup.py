"""Catch-up cost of clients that missed rounds, measured on the product's round engine.

``python -m fedcodec_bench.catchup``: the toy MNIST task (fedcodec.toy), 50 clients with
Dirichlet(0.5) shares, 10 of them per round (a seeded draw), 40 rounds, uplink and downlink
at a byte budget of 1 % of the float32 model; every returning client downloads what the
engine's rule gives it (``RoundEngine.package_for``: chain, cumulative delta or keyframe).
Reported per downlink setting: bytes per download by rounds missed (median, p90, max), the
keyframe size for comparison, the total traffic ratio and the final accuracy.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from typing import Any

import numpy as np

from fedcodec.pipeline import ClientEngine, ModelVersion, RoundEngine, RoundParams
from fedcodec.toy import accuracy, limit_blas_threads, mnist_shares, train_local

SETTINGS: dict[str, dict[str, Any]] = {
    "chain only (no cumulative deltas)": {"step_snap": "grid", "cumulative": False},
    "cumulative deltas, grid steps": {"step_snap": "grid", "cumulative": True},
    "cumulative deltas, pow2 steps": {"step_snap": "pow2", "cumulative": True},
    "cumulative deltas, pow2 steps, keep 32": {"step_snap": "pow2", "cumulative": True, "keep": 32},
    # The server's default coding (RoundParams(): dense, λ for high rate, S=64) both ways,
    # keep 32, with grid steps (the server's default snapping) and with "auto" (power-of-two
    # steps once a client lags, the Flower strategy's default).
    "dense default coding, grid steps": {"step_snap": "grid", "keep": 32, "dense": True},
    "dense default coding, auto steps": {"step_snap": "auto", "keep": 32, "dense": True},
}


def run(
    setting: dict[str, Any], *, clients: int, per_round: int, rounds: int, seed: int
) -> dict[str, Any]:
    """One federation; returns the catch-up sizes by rounds missed and the totals."""
    data = mnist_shares(clients, 0.5, seed)
    from fedcodec.toy import init_mlp

    init = init_mlp(np.random.default_rng(seed + 2), data.x_train.shape[1], 128, 10)
    v0 = ModelVersion.create(0, init)
    budget = max(256, int(0.01 * v0.spec.float32_bytes))
    options = dict(setting)
    params = RoundParams() if options.pop("dense", False) else RoundParams(budget_bytes=budget)
    engine = RoundEngine(v0, schedule=params, threads=1, **options)
    members = [ClientEngine(v0.spec, str(i), initial=v0, threads=1) for i in range(clients)]
    draw = np.random.default_rng([seed, 11])
    by_missed: dict[int, list[int]] = defaultdict(list)
    up = down = 0
    for r in range(1, rounds + 1):
        chosen = sorted(int(i) for i in draw.choice(clients, per_round, replace=False))
        aggregator = engine.aggregator()
        for i in chosen:
            member = members[i]
            held = member.receiver.version or 0
            if not member.holds(engine.version, engine.stream_digest):
                package = engine.package_for(member.client_id, **member.request())
                member.receive(package)
                by_missed[engine.version - held].append(len(package))
                down += len(package)
            idx = data.parts[i]
            local = train_local(
                member.model.copy_tensors(),
                data.x_train[idx],
                data.y_train[idx],
                epochs=2,
                batch=32,
                lr=0.05,
                rng=np.random.default_rng([seed, 7, r, i]),
            )
            update = member.encode(
                local, engine.round_params(), round_number=r, num_examples=len(idx)
            )
            aggregator.accept_update(update)
            up += len(update)
        engine.publish(aggregator)
    raw = 2 * rounds * per_round * v0.spec.float32_bytes
    return {
        "budget_bytes": params.budget_bytes,
        "keyframe_bytes": len(engine.downlink.keyframe()),
        "float32_bytes": v0.spec.float32_bytes,
        "by_missed": {k: sorted(v) for k, v in sorted(by_missed.items())},
        "bytes_up": up,
        "bytes_down": down,
        "ratio": raw / (up + down),
        "accuracy": accuracy(engine.stream_model().tensors, data.x_test, data.y_test),
    }


def _table(name: str, result: dict[str, Any]) -> str:
    lines = [
        f"### {name}",
        "",
        f"keyframe {result['keyframe_bytes']:,} B, float32 model {result['float32_bytes']:,} B, "
        + (f"budget {result['budget_bytes']:,} B" if result["budget_bytes"] else "no budget")
        + f"; total traffic {result['ratio']:.0f}x "
        f"(up {result['bytes_up']:,} B, down {result['bytes_down']:,} B), "
        f"accuracy {result['accuracy']:.1f} %",
        "",
        "| rounds missed | downloads | median B | p90 B | max B | max / keyframe |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for missed, sizes in result["by_missed"].items():
        arr = np.asarray(sizes)
        lines.append(
            f"| {missed} | {arr.size} | {np.median(arr):,.0f} | {np.percentile(arr, 90):,.0f} | "
            f"{arr.max():,} | {arr.max() / result['keyframe_bytes']:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run every setting and print markdown tables (and JSON with --json)."""
    parser = argparse.ArgumentParser(prog="python -m fedcodec_bench.catchup")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--per-round", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default="")
    parser.add_argument("--only", default="", help="run the settings whose name contains this")
    args = parser.parse_args(argv)
    limit_blas_threads(1)
    results = {}
    for name, setting in SETTINGS.items():
        if args.only not in name:
            continue
        start = time.perf_counter()
        results[name] = run(
            setting,
            clients=args.clients,
            per_round=args.per_round,
            rounds=args.rounds,
            seed=args.seed,
        )
        print(_table(name, results[name]) + f"\n\n({time.perf_counter() - start:.0f} s)\n")
        sys.stdout.flush()
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
