"""Named coding presets: the settings measured on the CNN family, one name each.

A preset is everything the round engine needs to code a federation both ways: the uplink
schedule, the downlink schedule and the downlink's step-snap policy
(:class:`~fedcodec.pipeline.engine.RoundEngine`'s ``schedule``, ``downlink`` and
``step_snap``; ``CompressionStrategy(inner, preset=...)`` and ``fedcodec serve``'s
``preset = "..."`` take the name).  Each was measured by ``fedcodec-bench cnn`` (which
builds its methods of the same names from these objects) on the benchmark's CNN with
BatchNorm (58,546 parameters; MNIST-5k, Dirichlet(0.3) label skew, one local epoch of SGD):
``docs/bench/cnn.md`` has the tables.  Ratios are against float32 both ways as Flower
serializes every message; Δ is the accuracy of the last three rounds against float32 FedAvg
over the same rounds, paired by seed, median of 3 seeds.

* ``"near-lossless"`` — dense, any participation, any horizon: 32× at −0.03 pt (full
  participation, 50 rounds), 23× at −0.07 pt (6 of 30 nodes a round, 100 rounds);
* ``"dense"`` — ``"near-lossless"`` at S=4, any participation: 42× at −0.13 pt (full
  participation), 32× at −0.10 pt (6 of 30 nodes a round);
* ``"robust"`` — RD top-5 % up, top-2 % down, statistics at 6 bits, with or without Fisher
  importance: 143× at −0.17 pt without it (CNN, full participation, 50 rounds), 81× at
  +1.17 pt on a MobileNet-style CNN with thirteen BatchNorm layers; on a numpy MNIST MLP
  without it 119× at −0.70 pt (15 of 30 nodes a round) and 138× at −0.66 pt (30 of 30);
* ``"balanced"`` — RD top-1 % both ways, full participation, FedAvg or a
  ``ServerOptimizer``: 197× at −0.33 pt (50 rounds);
* ``"lean-full"`` — the 300× coding, full participation, FedAvg, ≥ 50 rounds: 303× at
  −0.67 pt (50 rounds);
* ``"lean-partial"`` — partial participation (a node's turn every ~5 rounds): 111× at
  −0.77 pt (6 of 30 nodes a round, 100 rounds).

Every number above was measured as ``fedcodec preset NAME`` on main at f9f2487
(``docs/bench/cnn.md``, "The presets"; runs in ``docs/bench/cnn-presets.json``), the partial
participation of ``"near-lossless"`` with its ``step_snap="auto"`` in
``docs/bench/cnn-catchup.json``, those of
``"robust"`` on main at 2c5a2e4 (``docs/bench/cnn-robust.json``, 10-bit statistics) and, with
6-bit statistics, on main at 66975eb + the statistics hook (``docs/bench/cnn-bnstats.json``).

Fisher importance.  All presets but ``"near-lossless"``, ``"dense"`` and ``"robust"`` were measured
with the clients' diagonal Fisher importance (:class:`fedcodec.torch.FisherAccumulator`,
sent in the reply's ``IMPORTANCE_RECORD``, which the mod consumes; :attr:`Preset.fisher`).
Without it :class:`~fedcodec.pipeline.params.Sensitivity` falls back to its ``fallback="magnitude"``
rule: every weight of a tensor gets the same importance, ``1 / mean(w²)`` of the tensor's
base weights (tensors with small weights get finer steps; the sparsification ranks
squared values weighted per tensor, not per weight).  That costs accuracy at the same
bytes: RD top-2 % on the same CNN lost 3.2 instead of 1.0 points (full participation, 15
rounds) and 8.1 instead of 2.3 (partial, 30 rounds) without it (``docs/bench/cnn.md``,
"Earlier results").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fedcodec.pipeline.params import (
    RoundParams,
    Schedule,
    Sensitivity,
    Sparsification,
    StepSchedule,
)
from fedcodec.pipeline.ratecontrol import StepSnapPolicy, step_snap_policy

__all__ = [
    "PRESET_NAMES",
    "Preset",
    "balanced",
    "dense",
    "get_preset",
    "lean_full",
    "lean_partial",
    "near_lossless",
    "robust",
]


@dataclass(frozen=True)
class Preset:
    """A named coding of both links, as measured.

    Attributes
    ----------
    name : str
        The preset's name (:data:`PRESET_NAMES`).
    uplink : RoundParams or Schedule
        How clients code their updates, per round.
    downlink : RoundParams or Schedule
        How the server codes each new global model version, per round.
    step_snap : {"auto", "grid", "pow2"}
        The downlink stream's step snapping (``CompressionStrategy(step_snap=...)``,
        ``[downlink] step_snap``).
    fisher : bool
        Measured with the clients' Fisher importance
        (:class:`fedcodec.torch.FisherAccumulator`); without it the coder falls back to a
        per-tensor magnitude importance (see the module docs).
    """

    name: str
    uplink: RoundParams | Schedule
    downlink: RoundParams | Schedule
    step_snap: StepSnapPolicy
    fisher: bool

    def __post_init__(self) -> None:
        step_snap_policy(self.step_snap)


def _lean(topk: float) -> RoundParams:
    """λ=0.5, S=8, RD top-k clustered by row, statistics at 4 bits, 1-d tensors ranked."""
    return RoundParams(
        lam=0.5,
        S=8,
        sparsification=Sparsification(topk=topk, allocation="rd-rows"),
        sensitivity=Sensitivity(stat_bits=4, sparsify_vectors=True),
    )


def _dense(S: int) -> RoundParams:
    """λ=0.5 at resolution ``S``, no sparsification, statistics at 10 bits, per-tensor steps
    from the importance (``"near-lossless"`` at S=16, ``"dense"`` at S=4)."""
    return RoundParams(lam=0.5, S=S, sensitivity=Sensitivity())


def _warm(base: RoundParams, limit: float) -> StepSchedule:
    """Sparsity warm-up: ``base``'s top-k halved every 2 rounds down to ``limit``."""
    return StepSchedule(base, "topk", gamma=0.5, every=2, limit=limit)


def near_lossless() -> Preset:
    """``"near-lossless"``: dense RD quantization at S=16 both ways, no sparsification.

    ``RoundParams(lam=0.5, S=16, sensitivity=Sensitivity())`` on both links (BatchNorm
    statistics at their own 10-bit step, per-tensor steps from the importance),
    ``step_snap="auto"`` (power-of-two downlink steps while a node lags behind the stream,
    grid steps in full participation).  Measured as ``fedcodec preset near-lossless``
    (``fedcodec-bench cnn``, without Fisher importance, compact containers, 3 seeds;
    ``docs/bench/cnn.md``, "The presets"): full participation (10 of 10, 50 rounds) 32×
    (31.8, 32.3, 31.8) at −0.03 pt median (−0.13, 0.00, −0.03), never more than 0.4 pt
    behind from round 15 on (three-round means; measured with ``"grid"``, which codes the
    same bytes there); partial (6 of 30, 100 rounds) 23× (23.7, 23.4, 22.9) at −0.07 pt
    (+0.30, −0.07, −0.10), 0.0-0.1 pt behind over rounds 51-100; with ``"grid"`` it was 17×
    (16.9, 17.1, 16.3) at −0.03 pt, 14 of its 17 MB the catch-up downlink
    (``docs/catchup.md``, "Dense versions in partial participation";
    ``docs/bench/cnn-catchup.json``).  On the MobileNet-style CNN (``--model mobile``): 24×
    at +0.33 pt (full), 20× (19.4, 20.0, 20.2) at −0.27 pt (+0.07, −0.27, −0.43) with 6 of 30
    (15× with ``"grid"``).  On the
    324k-parameter CNN, 6 of 30, 30 rounds (``fedcodec/v3`` wire): 19× at −1.13 pt (1 seed).
    Fisher importance is optional here (not measured with it).
    """
    both = _dense(16)
    return Preset("near-lossless", both, both, "auto", fisher=False)


def dense() -> Preset:
    """``"dense"``: ``"near-lossless"``'s coding at S=4 instead of 16, no sparsification.

    ``RoundParams(lam=0.5, S=4, sensitivity=Sensitivity())`` on both links,
    ``step_snap="auto"``: the coding of :func:`near_lossless` with S=4 instead of 16.
    Measured as ``fedcodec near-lossless S=4`` (``fedcodec-bench cnn``, without Fisher
    importance, 3 seeds; ``docs/bench/cnn.md``, "Dense at coarser steps";
    ``docs/bench/cnn-dense.json``), in every seed within 0.7 point of float32 FedAvg over
    the last three rounds: the small CNN 42× (42, 43, 42) at −0.13 pt (−0.20, −0.13, +0.03)
    in full participation (10 of 10, 50 rounds; ``"near-lossless"`` 32×) and 32× (33, 32,
    31) at −0.10 pt (−0.10, −0.30, +0.03) with 6 of 30 nodes a round (100 rounds; 23×); the
    MobileNet-style CNN 31× (31, 31, 35) at 0.00 pt (0.00, −0.07, +1.87) in full
    participation (24×) and 26× (26, 24, 29) at −0.40 pt (−0.27, −0.67, −0.40) with 6 of 30
    (20×; over rounds 51-100 1.8-2.2 pt behind, ``"near-lossless"`` 0.5-1.3); bench fl's
    numpy MNIST MLP (15 of 30 clients a round, 40 rounds) 51.5× (55.0, 51.5, 50.2) at
    −0.16 pt (−0.16, −0.10, −0.28; ``"near-lossless"`` 34× at −0.12).
    The next step down in bytes for a task no sparse preset was measured on, or when nodes
    take turns (partial participation), where ``"robust"`` lost 1.1 points on the small CNN
    and 5.1 on the MobileNet-style one.  Fisher importance is optional (not measured with it).
    """
    both = _dense(4)
    return Preset("dense", both, both, "auto", fisher=False)


def robust() -> Preset:
    """``"robust"``: RD top-5 % up, top-2 % down at λ=0.5, S=16; no Fisher importance needed.

    ``RoundParams(lam=0.5, S=16, sparsification=Sparsification(topk=0.05,
    allocation="rd"), sensitivity=Sensitivity(stat_bits=6))`` on the uplink, the same at
    ``topk=0.02`` on the downlink, ``step_snap="auto"``.  The sparse preset for tasks the
    others were not tuned on: chosen (seed 0) for staying within a point both with and
    without the clients' Fisher importance, on the CNN and on a numpy MLP.  Measured
    (``fedcodec-bench cnn``, compact containers, 3 seeds, Δ of the last three rounds against
    float32 FedAvg paired by seed, median; ``docs/bench/cnn.md``, "The presets" and
    "Statistics of the coded model"):

    * the benchmark's CNN, full participation (10 of 10, 50 rounds), without Fisher
      importance: 143× (141.5, 143.2, 143.4) at −0.17 pt (−0.17, −0.20, −0.07) (method
      ``fedcodec robust stat6``);
    * the MobileNet-style CNN (``--model mobile``: thirteen BatchNorm layers, 1,984
      statistics), same setting: 81× (79.7, 80.6, 80.7) at +1.17 pt (−1.63, +1.17, +1.47);
      seed 0 misses by 0.6 pt; with 6 of 30 nodes a round (100 rounds) it misses: 62× at
      −5.07 pt (−5.07, −6.20, −1.93);
    * ``fedcodec-bench fl`` (numpy MNIST MLP, no statistics, no Fisher importance, 30
      clients, 40 rounds): 15 a round 119× (122.5, 119.0, 118.0) at −0.70 pt (−0.70, −0.40,
      −0.86); all 30 a round 138× (140.5, 137.4, 137.7) at −0.66 pt (−0.40, −0.66, −0.90).

    Statistics at 6 bits (``2**-6`` of each statistic's RMS) instead of the default 10: on the
    mobile net the statistics are a third of every container, and 6 bits gave 81× where 10
    gave 65× (+1.27 pt median: −1.53, +1.27, +1.37) at the same accuracy; 4 bits lost up to
    10 points there (90×, −3.03 pt median).  On the small CNN (48 statistics) 6 and 10 bits
    are the same (143× / 141×).  Measured with 10-bit statistics (the small CNN's 48
    statistics are under 2 % of its bytes): with Fisher importance 101× at −0.17 pt (full
    participation; its uplink payload is ~1.9× larger); partial participation (6 of 30, 100
    rounds) 88× (90.2, 87.7, 87.7) at −1.17 pt (−2.07, −0.93, −1.17) without Fisher
    importance, a miss, and 70× at −0.57 pt with it — ``"lean-partial"`` (111× at −0.77 pt,
    with Fisher importance) is the measured choice there.  The price of the robustness:
    ``"balanced"`` is 197× at −0.33 pt on the CNN with Fisher importance, but 1.8 pt behind
    on the MLP and 4.1 pt behind on the mobile net (87×).
    """
    return Preset("robust", _rd(0.05), _rd(0.02), "auto", fisher=False)


def _rd(topk: float) -> RoundParams:
    """λ=0.5, S=16, RD top-k over the model, statistics at 6 bits, per-tensor steps from the
    importance."""
    return RoundParams(
        lam=0.5,
        S=16,
        sparsification=Sparsification(topk=topk, allocation="rd"),
        sensitivity=Sensitivity(stat_bits=6),
    )


def balanced() -> Preset:
    """``"balanced"``: RD top-1 % both ways at λ=0.5, S=16, with server-side error feedback.

    ``RoundParams(lam=0.5, S=16, sparsification=Sparsification(topk=0.01,
    allocation="rd"), sensitivity=Sensitivity())`` on both links, ``step_snap="auto"``.
    Measured as ``fedcodec preset balanced`` (Fisher importance, compact containers, full
    participation, 10 of 10, 50 rounds, 3 seeds; ``docs/bench/cnn.md``, "The presets"):
    197× (196.7, 197.0, 196.1) at −0.33 pt median (−0.33, +0.23, −0.53); rounds 41-50
    −0.65, −0.08, −0.45.  Before (method ``fedcodec sens+fisher rd-1% down rd-1%``,
    ``step_snap="grid"``, ``fedcodec/v4`` wire): 186× at −0.40 pt.  Behind fedcodec's
    ``ServerOptimizer("adam")`` (second moment per tensor): 175× at +1.2 pt.  Sparse error
    feedback needs the rounds: 3.4-3.6 pt behind at round 15, 0.7-1.1 at round 30.  Partial
    participation (6 of 30, 100 rounds, 3 seeds): 128× at −1.23 pt (−2.40, −1.23, −0.83);
    over rounds 51-100 −2.4, −1.7, −1.4 (``"lean-partial"``: −3.1, −1.5, −1.4 at 111×).
    """
    rd1 = RoundParams(
        lam=0.5,
        S=16,
        sparsification=Sparsification(topk=0.01, allocation="rd"),
        sensitivity=Sensitivity(),
    )
    return Preset("balanced", rd1, rd1, "auto", fisher=True)


def lean_full() -> Preset:
    """``"lean-full"``: the 300× full-participation coding (``lean4`` RD top-0.5 % both ways).

    ``RoundParams(lam=0.5, S=8, sparsification=Sparsification(topk=0.005,
    allocation="rd-rows"), sensitivity=Sensitivity(stat_bits=4, sparsify_vectors=True))``
    on both links, ``step_snap="grid"`` (as measured).  Measured (method ``fedcodec
    sens+fisher lean4 rd-0.5% down lean4 rd-0.5%``, Fisher importance, compact containers,
    full participation, 10 of 10, 50 rounds, 3 seeds): 303× (302, 303, 303) at −0.67 pt
    median (−1.50, −0.67, −0.60); over rounds 41-50 1.2-1.7 pt behind float32; 4.6-7.2 pt
    behind at round 15.  Re-run as ``fedcodec preset lean-full``: the same accuracies,
    bytes within 30 B.  With FedAvg
    only: behind ``ServerOptimizer("adam")`` it lost 7.2 pt (306×; use ``"balanced"``).
    Needs long runs (sparse error feedback at 0.5 %); on larger models the plain RD top-0.5 %
    both ways already gave 446× at −0.87 pt (324k-parameter CNN, 40 rounds, 3 seeds;
    ``docs/bench/cnn.md``, "toward 300×", "Long runs").
    """
    lean = _lean(0.005)
    return Preset("lean-full", lean, lean, "grid", fisher=True)


def lean_partial() -> Preset:
    """``"lean-partial"``: partial participation at ~110× (warm ``lean4``, 6 % up / 0.5 % down).

    The ``lean4`` parameters (see :func:`lean_full`) with a sparsity warm-up: RD top-k from
    8 %, halved every 2 rounds (``StepSchedule(..., "topk", gamma=0.5, every=2,
    limit=...)``) down to 6 % on the uplink and 0.5 % on the downlink, with
    ``step_snap="auto"`` (power-of-two downlink steps, so a returning node's cumulative
    delta has small levels).  Measured (method ``fedcodec sens+fisher warm lean4 rd-6% down
    warm lean4 rd-0.5% auto``, Fisher importance, compact containers, 6 of 30 nodes a round,
    100 rounds, 3 seeds): 111× (114, 110, 108) at −0.77 pt median (−1.57, −0.57, −0.77);
    over rounds 51-100 1.4-3.1 pt behind float32 (a round swings by 1-3 points).  FedProx
    (mu 0.01): 110× at −1.20 pt (``docs/bench/cnn.md``, "toward 300×", partial table); with
    the statistics measured on the coded model (``CodedStatistics``) 110× at −0.93 pt
    (re-run on main at c320346, ``docs/bench/cnn.md``, "Issue #13's proof").
    Re-run as ``fedcodec preset lean-partial``: the same accuracies, bytes within 200 B.
    ``"balanced"`` there: 128× at −1.23 pt, about as far behind over rounds 51-100.
    """
    return Preset(
        "lean-partial",
        _warm(_lean(0.08), 0.06),
        _warm(_lean(0.08), 0.005),
        "auto",
        fisher=True,
    )


_FACTORIES: dict[str, Callable[[], Preset]] = {
    "near-lossless": near_lossless,
    "dense": dense,
    "robust": robust,
    "balanced": balanced,
    "lean-full": lean_full,
    "lean-partial": lean_partial,
}

#: The valid preset names, from the least to the most compression.
PRESET_NAMES: tuple[str, ...] = tuple(_FACTORIES)


def get_preset(name: str) -> Preset:
    """The preset called ``name``.

    Parameters
    ----------
    name : str
        One of :data:`PRESET_NAMES`.

    Returns
    -------
    Preset
        A new object each call (its parameters are frozen dataclasses).

    Raises
    ------
    ValueError
        ``name`` is not a preset (the message lists the valid names).
    """
    factory = _FACTORIES.get(name) if isinstance(name, str) else None
    if factory is None:
        raise ValueError(f"unknown preset {name!r}; the presets are: {', '.join(PRESET_NAMES)}")
    return factory()
