"""Temporal side information in ``fedcodec bench codec``: the same levels coded without and
with a reference tensor, on real consecutive-round client updates.

Both ends of a link already hold earlier decoded tensors that predict the current update: a
client keeps its previous decoded update (error feedback), and every client holds the previous
change of the global model. ``fedcodec.encode(..., reference=...)`` conditions the coder's
contexts on the co-located reference value. This module makes real consecutive-round updates
with the benchmark's own numpy FL loop (FedAvg, every client every round, one local epoch) and
codes each round-r update (r >= 1) three ways, with the same integer levels (per tensor rounding
at ``std / 8``):

* no reference;
* the same client's previous decoded update (its round r - 1 levels times their step);
* the previous global change (the FedAvg aggregate of round r - 1).

The encoder uses a given reference tensor by tensor where it pays (``use_reference="auto"``:
each tensor is also coded without and the smaller coding kept), so a reference never costs
bytes; the bytes with every reference forced (``use_reference="always"``) and how many tensors
kept theirs are recorded too. Every coded update is decoded with its reference and compared
with its levels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

import fedcodec
from fedcodec_bench.fl import Scenario, make_federation, train_client
from fedcodec_bench.report import fmt_int, fmt_pct, table

__all__ = ["TEMPORAL_KINDS", "TemporalSet", "run_temporal", "temporal_lines"]

#: The reference kinds, in report order.
TEMPORAL_KINDS: tuple[str, ...] = ("none", "client_prev", "global_prev")


@dataclass(frozen=True)
class TemporalSet:
    """One federation whose consecutive-round updates are coded.

    Attributes
    ----------
    name : str
        Row label.
    scenario : Scenario
        The FL setting (task, partition, clients, rounds, local work).
    """

    name: str
    scenario: Scenario


def temporal_sets(quick: bool) -> list[TemporalSet]:
    """The federations of the comparison (smaller and fewer with ``quick``)."""
    if quick:
        return [
            TemporalSet(
                "MNIST MLP, 4 clients",
                Scenario(task="mnist", clients=4, per_round=4, rounds=3, epochs=1, max_steps=30),
            )
        ]
    return [
        TemporalSet(
            "MNIST-5k MLP 784-128-10, Dir(0.5), 10 clients",
            Scenario(
                task="mnist",
                partition="dirichlet",
                alpha=0.5,
                clients=10,
                per_round=10,
                rounds=5,
                epochs=1,
            ),
        ),
        TemporalSet(
            "Shakespeare char model, 10 roles",
            Scenario(
                task="shakespeare",
                partition="natural",
                clients=10,
                per_round=10,
                rounds=5,
                epochs=1,
                max_steps=200,
            ),
        ),
    ]


def _levels(update: list[np.ndarray]) -> tuple[list[np.ndarray], list[float]]:
    steps = [float(np.float32(max(float(u.std()), 1e-30) / 8.0)) for u in update]
    return [np.round(u / s).astype(np.int32) for u, s in zip(update, steps, strict=True)], steps


def _measure(ts: TemporalSet, seed: int) -> dict[str, Any]:
    sc = ts.scenario
    fed = make_federation(sc, seed)
    names = list(fed.init)
    glob = {k: v.copy() for k, v in fed.init.items()}
    prev_decoded: dict[int, list[np.ndarray]] = {}
    prev_global: list[np.ndarray] | None = None
    totals = dict.fromkeys(TEMPORAL_KINDS, 0)
    forced = dict.fromkeys(TEMPORAL_KINDS[1:], 0)
    with_ref = dict.fromkeys(TEMPORAL_KINDS[1:], 0)
    tensors = 0
    updates = decodes = 0
    for r in range(sc.rounds):
        deltas: dict[int, list[np.ndarray]] = {}
        for c in fed.schedule[r]:
            local = train_client(fed, glob, r, c)
            update = [np.asarray(local[k] - glob[k], dtype=np.float32) for k in names]
            levels, steps = _levels(update)
            decoded = [
                (lv.astype(np.float32) * np.float32(s)).astype(np.float32)
                for lv, s in zip(levels, steps, strict=True)
            ]
            if r > 0 and c in prev_decoded and prev_global is not None:
                refs = {"none": None, "client_prev": prev_decoded[c], "global_prev": prev_global}
                for kind, ref in refs.items():
                    res = fedcodec.encode_levels(levels, steps, reference=ref)
                    totals[kind] += len(res.data)
                    back = fedcodec.decode_levels(res.data, reference=ref)
                    if not all(
                        np.array_equal(b, lv) for (b, _), lv in zip(back, levels, strict=True)
                    ):
                        raise RuntimeError(f"{ts.name}: a {kind} decode differs from its levels")
                    decodes += 1
                    if ref is not None:
                        with_ref[kind] += sum(
                            info.reference_digest is not None for info in fedcodec.inspect(res.data)
                        )
                        forced[kind] += len(
                            fedcodec.encode_levels(
                                levels, steps, reference=ref, use_reference="always"
                            ).data
                        )
                updates += 1
                tensors += len(levels)
            prev_decoded[c] = decoded
            deltas[c] = update
        n = {c: len(fed.parts[c]) for c in deltas}
        total = sum(n.values())
        change = [
            np.asarray(sum(n[c] / total * deltas[c][i] for c in deltas), dtype=np.float32)
            for i in range(len(names))
        ]
        glob = {k: (glob[k] + change[i]).astype(np.float32) for i, k in enumerate(names)}
        prev_global = change
    return {
        "name": ts.name,
        "updates": updates,
        "rounds": sc.rounds,
        "clients": sc.clients,
        "numel": int(sum(v.size for v in fed.init.values())),
        "bytes": totals,
        "bytes_reference_forced": forced,
        "tensors": tensors,
        "tensors_with_reference": with_ref,
        "decodes_verified": decodes,
        "gain": {
            kind: (totals[kind] / totals["none"] - 1.0) if totals["none"] else None
            for kind in TEMPORAL_KINDS[1:]
        },
    }


def run_temporal(quick: bool, seed: int = 0) -> list[dict[str, Any]]:
    """Measure every set of :func:`temporal_sets` (real data: skipped sets are left out).

    Returns
    -------
    list of dict
        Per set: bytes per reference kind summed over the updates of rounds 1.. (and with
        every reference forced), the relative gains, how many of the coded tensors kept their
        reference, and how many decodes were verified.
    """
    from fedcodec_bench.fldata import DataUnavailableError

    out = []
    for ts in temporal_sets(quick):
        try:
            out.append(_measure(ts, seed))
        except DataUnavailableError:
            continue
    return out


def temporal_lines(results: list[dict[str, Any]]) -> str:
    """The report section (markdown) for :func:`run_temporal`'s results."""
    if not results:
        return ""

    def cell(r: dict[str, Any], kind: str) -> str:
        forced = r["bytes_reference_forced"][kind]
        return (
            f"{fmt_int(r['bytes'][kind])} ({fmt_pct(r['gain'][kind])}; "
            f"{r['tensors_with_reference'][kind]}/{r['tensors']} tensors; forced "
            f"{fmt_int(forced)}, {fmt_pct(forced / r['bytes']['none'] - 1.0)})"
        )

    rows = [
        [
            r["name"],
            f"{r['updates']} updates",
            fmt_int(r["bytes"]["none"]),
            cell(r, "client_prev"),
            cell(r, "global_prev"),
        ]
        for r in results
    ]
    head = (
        "## Temporal side information (same levels, with and without a reference)\n\n"
        "Real consecutive-round client updates (FedAvg, every client every round, one local "
        "epoch; levels: per tensor rounding at std/8), rounds 1.. coded without a reference, "
        "with the same client's previous decoded update, and with the previous global change "
        "(`encode_levels(..., reference=...)`); every update decoded with its reference. "
        "The encoder keeps a reference where it pays, tensor by tensor (how many tensors kept "
        'theirs; "forced": every reference used, `use_reference="always"`).\n\n'
    )
    return (
        head
        + table(
            [
                "updates of",
                "coded",
                "no reference B",
                "client's previous update B",
                "previous global change B",
            ],
            rows,
            left=2,
        )
        + "\n\n"
    )
