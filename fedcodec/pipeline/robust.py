"""Robust aggregation: what one client can do to a round's aggregate is bounded.

Every client is potentially hostile.  :class:`RobustPolicy` says how far one
update may move the global model, and :class:`~fedcodec.pipeline.Aggregator`
(hence the standalone server, the benchmarks and, for the bounds that apply to
decoded replies, the Flower wrapper) enforces it:

* **Example counts.**  ``num_examples`` above ``max_num_examples`` is refused
  (an out-of-range value, not a weight).
* **Weight share.**  FedAvg weights ``p_i = n_i / Σ n`` are capped at
  ``max_share``; the excess goes to the other updates in proportion to their
  counts (water filling), so no client holds more than ``max_share`` of a
  round however many examples it claims.  When the cap cannot hold
  (``k · max_share < 1`` for ``k`` updates) every update gets ``1/k``.
* **Values.**  A decoded update with a non-finite value, or a value whose
  magnitude exceeds ``max_abs_value``, is refused.
* **Norm.**  The L2 norm of a decoded update (over the whole model) is bounded
  by ``norm_bound`` (absolute; 0: off) and by ``norm_bound_rel`` × the median
  norm of the round's updates (relative; 0: off; applied only with at least
  ``min_updates_rel`` updates, since a median of one or two norms bounds
  nothing).  ``norm_action="clip"`` scales a longer update down to the bound
  (it keeps its direction and counts with its weight); ``"reject"`` leaves it
  out.  The absolute bound is checked as an update arrives (a rejected update
  is refused to its sender); the relative bound needs the whole round, so it
  is applied when the round is aggregated (a rejected update was already
  acknowledged: it is logged and counted, not aggregated).
* **Aggregator.**  ``"mean"`` (weighted FedAvg, memory O(model)),
  ``"trimmed_mean"`` (coordinate-wise: per weight the ``⌊trim_fraction·k⌋``
  largest and smallest values are dropped and the rest averaged, unweighted)
  or ``"median"`` (coordinate-wise median, unweighted).  The coordinate-wise
  aggregators hold every decoded update of the round at once: memory
  ``4 · k · numel`` bytes for ``k`` updates of ``numel`` weights (e.g. 1,000
  updates of a 100 k-weight model: 400 MB), plus one float64 copy of a tensor
  column block while sorting.

The defaults bound the attacks of issue 12 (an 82-byte update with
``num_examples = 2**62`` took over the round; an 87-byte update of 1e30 per
weight made every weight 2.5e29): counts above 10**9 are refused, one client
holds at most a quarter of a round, values beyond 1e6 are refused and an
update longer than 10× the round's median is clipped to it.
:meth:`RobustPolicy.fedavg` switches the round-level rules off (plain FedAvg
with the value checks kept).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from fedcodec.pipeline.errors import UpdateRejectedError

__all__ = [
    "AGGREGATORS",
    "NORM_ACTIONS",
    "RobustPolicy",
    "RobustRejectionError",
    "RoundPlan",
    "UpdateSummary",
    "capped_shares",
    "combine_coordinatewise",
    "plan_round",
    "screen_update",
]

#: Accepted values of :attr:`RobustPolicy.aggregator`.
AGGREGATORS = ("mean", "trimmed_mean", "median")
#: Accepted values of :attr:`RobustPolicy.norm_action`.
NORM_ACTIONS = ("clip", "reject")


class RobustRejectionError(UpdateRejectedError):
    """An update refused by a :class:`RobustPolicy` rule.

    Attributes
    ----------
    action : {"refused_examples", "refused_values", "refused_norm"}
        Which rule (for metrics).
    """

    def __init__(self, message: str, *, action: str) -> None:
        super().__init__(message)
        self.action = action


@dataclass(frozen=True)
class RobustPolicy:
    """How far one update may move a round's aggregate (see the module docstring).

    Attributes
    ----------
    max_num_examples : int
        Largest accepted example count (larger: refused).
    max_share : float
        Largest normalized weight of one update in a round, in (0, 1]; 1: no cap.
    norm_bound : float
        Absolute bound on an update's L2 norm (0: none).
    norm_bound_rel : float
        Bound on an update's L2 norm relative to the round's median norm (0: none;
        otherwise >= 1).
    min_updates_rel : int
        Updates a round needs before the relative bound applies (>= 3).
    norm_action : {"clip", "reject"}
        What happens to an update beyond a norm bound.
    max_abs_value : float
        Largest accepted magnitude of a decoded value (non-finite values are always
        refused).
    aggregator : {"mean", "trimmed_mean", "median"}
        How the (clipped) updates are combined.
    trim_fraction : float
        For ``trimmed_mean``: the fraction cut at each end, in [0, 0.5).
    """

    max_num_examples: int = 10**9
    max_share: float = 0.25
    norm_bound: float = 0.0
    norm_bound_rel: float = 10.0
    min_updates_rel: int = 3
    norm_action: str = "clip"
    max_abs_value: float = 1e6
    aggregator: str = "mean"
    trim_fraction: float = 0.1

    def __post_init__(self) -> None:
        problems = []
        if isinstance(self.max_num_examples, bool) or not 1 <= self.max_num_examples < 2**63:
            problems.append("max_num_examples must be in 1..2**63-1")
        if not (math.isfinite(self.max_share) and 0.0 < self.max_share <= 1.0):
            problems.append("max_share must be in (0, 1]")
        if not (math.isfinite(self.norm_bound) and self.norm_bound >= 0.0):
            problems.append("norm_bound must be >= 0 (0: none)")
        if not (
            math.isfinite(self.norm_bound_rel)
            and (self.norm_bound_rel == 0.0 or self.norm_bound_rel >= 1.0)
        ):
            problems.append("norm_bound_rel must be 0 (none) or >= 1")
        if self.min_updates_rel < 3:
            problems.append("min_updates_rel must be >= 3")
        if self.norm_action not in NORM_ACTIONS:
            problems.append(f"norm_action must be one of {', '.join(NORM_ACTIONS)}")
        if not (math.isfinite(self.max_abs_value) and self.max_abs_value > 0.0):
            problems.append("max_abs_value must be finite and > 0")
        if self.aggregator not in AGGREGATORS:
            problems.append(f"aggregator must be one of {', '.join(AGGREGATORS)}")
        if not (math.isfinite(self.trim_fraction) and 0.0 <= self.trim_fraction < 0.5):
            problems.append("trim_fraction must be in [0, 0.5)")
        if problems:
            raise ValueError("robust policy: " + "; ".join(problems))

    @classmethod
    def fedavg(cls) -> RobustPolicy:
        """Plain FedAvg: no share cap, no norm bounds (values are still checked)."""
        return cls(max_share=1.0, norm_bound=0.0, norm_bound_rel=0.0)

    @property
    def round_level(self) -> bool:
        """Whether the policy needs the whole round before it can weight an update."""
        return self.max_share < 1.0 or self.norm_bound_rel > 0.0 or self.aggregator != "mean"

    def to_json(self) -> dict[str, object]:
        """The settings as a JSON-able dict."""
        return {
            "max_num_examples": self.max_num_examples,
            "max_share": self.max_share,
            "norm_bound": self.norm_bound,
            "norm_bound_rel": self.norm_bound_rel,
            "min_updates_rel": self.min_updates_rel,
            "norm_action": self.norm_action,
            "max_abs_value": self.max_abs_value,
            "aggregator": self.aggregator,
            "trim_fraction": self.trim_fraction,
        }


@dataclass(frozen=True)
class UpdateSummary:
    """What the round-level rules need of one accepted update.

    Attributes
    ----------
    client_id : str
        Sender.
    num_examples : int
        Its claimed example count.
    norm : float
        L2 norm of the decoded update.
    """

    client_id: str
    num_examples: int
    norm: float


@dataclass(frozen=True)
class RoundPlan:
    """How each update of a round counts.

    Attributes
    ----------
    shares : dict of str to float
        Normalized weight of each aggregated update (sums to 1).
    scales : dict of str to float
        Factor applied to each aggregated update (< 1: clipped to the norm bound).
    rejected : dict of str to str
        Updates left out, with the reason.
    bound : float
        The norm bound in force (``inf``: none).
    median_norm : float
        Median norm of the round's updates.
    capped : tuple of str
        Clients whose share was lowered by the cap.
    """

    shares: dict[str, float]
    scales: dict[str, float]
    rejected: dict[str, str] = field(default_factory=dict)
    bound: float = math.inf
    median_norm: float = 0.0
    capped: tuple[str, ...] = ()

    @property
    def clipped(self) -> tuple[str, ...]:
        """Clients whose update was scaled down."""
        return tuple(c for c, s in self.scales.items() if s < 1.0)

    def weight(self, client_id: str) -> float:
        """Share × scale: what multiplies the client's decoded update in the mean."""
        return self.shares[client_id] * self.scales[client_id]


def screen_update(
    decoded: Sequence[npt.NDArray[np.floating]] | Mapping[str, npt.NDArray[np.floating]],
    policy: RobustPolicy,
    *,
    client_id: str,
    num_examples: int,
) -> float:
    """Check one decoded update against the per-update rules; return its L2 norm.

    Parameters
    ----------
    decoded : sequence or mapping of ndarray
        The update's tensors.
    policy : RobustPolicy
        The rules.
    client_id : str
        Sender (for the messages).
    num_examples : int
        Its example count.

    Returns
    -------
    float
        The L2 norm over all tensors.

    Raises
    ------
    RobustRejectionError
        Example count out of range, a non-finite or too large value, or (with
        ``norm_action="reject"``) a norm above ``norm_bound``.
    """
    if num_examples > policy.max_num_examples:
        raise RobustRejectionError(
            f"update of {client_id!r}: num_examples {num_examples} is above the accepted "
            f"maximum {policy.max_num_examples}",
            action="refused_examples",
        )
    arrays = list(decoded.values()) if isinstance(decoded, Mapping) else list(decoded)
    sq = 0.0
    for array in arrays:
        flat = np.asarray(array).ravel()
        if flat.size == 0:
            continue
        # Reductions without temporaries or BLAS (a shared machine's BLAS threads made a
        # dot product of 262 k values take 30 ms); max/min propagate NaN and inf.
        hi, lo = float(flat.max()), float(flat.min())
        if not (math.isfinite(hi) and math.isfinite(lo)):
            raise RobustRejectionError(
                f"update of {client_id!r} has non-finite values", action="refused_values"
            )
        peak = max(abs(hi), abs(lo))
        if peak > policy.max_abs_value:
            raise RobustRejectionError(
                f"update of {client_id!r} has a value of magnitude {peak:.3g}, above the "
                f"accepted maximum {policy.max_abs_value:.3g}",
                action="refused_values",
            )
        sq += float(np.square(flat, dtype=np.float64).sum())
    norm = math.sqrt(sq)
    if policy.norm_bound > 0.0 and norm > policy.norm_bound and policy.norm_action == "reject":
        raise RobustRejectionError(
            f"update of {client_id!r} has L2 norm {norm:.4g}, above the bound "
            f"{policy.norm_bound:.4g}",
            action="refused_norm",
        )
    return norm


def capped_shares(counts: Mapping[str, int], max_share: float) -> tuple[dict[str, float], set[str]]:
    """Normalized weights ``n_i / Σ n`` with no share above ``max_share`` (water filling).

    Parameters
    ----------
    counts : mapping of str to int
        Example count per client (>= 1 each, at least one client).
    max_share : float
        The cap, in (0, 1].

    Returns
    -------
    shares : dict of str to float
        Sum to 1; each <= ``max_share`` unless ``len(counts) · max_share < 1``,
        when every share is ``1 / len(counts)``.
    capped : set of str
        Clients whose share the cap lowered.
    """
    k = len(counts)
    if k == 0:
        return {}, set()
    total = float(sum(counts.values()))
    plain = {c: n / total for c, n in counts.items()}
    if max_share >= 1.0 or max(plain.values()) <= max_share:
        return plain, set()
    if k * max_share < 1.0:
        return dict.fromkeys(counts, 1.0 / k), {c for c, p in plain.items() if p > 1.0 / k}
    fixed: set[str] = set()
    shares = dict(plain)
    while True:
        free = [c for c in counts if c not in fixed]
        left = 1.0 - max_share * len(fixed)
        free_total = float(sum(counts[c] for c in free))
        shares = dict.fromkeys(fixed, max_share)
        shares.update({c: left * counts[c] / free_total for c in free})
        over = {c for c in free if shares[c] > max_share}
        if not over:
            return shares, fixed
        fixed |= over


def plan_round(updates: Sequence[UpdateSummary], policy: RobustPolicy) -> RoundPlan:
    """Decide each update's share and scale (norm bounds, then the share cap).

    Parameters
    ----------
    updates : sequence of UpdateSummary
        The round's accepted updates (distinct clients).
    policy : RobustPolicy
        The rules.

    Returns
    -------
    RoundPlan
    """
    norms = [u.norm for u in updates]
    median = float(np.median(norms)) if norms else 0.0
    bound = policy.norm_bound if policy.norm_bound > 0.0 else math.inf
    if policy.norm_bound_rel > 0.0 and len(updates) >= policy.min_updates_rel:
        bound = min(bound, policy.norm_bound_rel * median)
    scales: dict[str, float] = {}
    rejected: dict[str, str] = {}
    for u in updates:
        if u.norm > bound:
            if policy.norm_action == "reject":
                rejected[u.client_id] = (
                    f"L2 norm {u.norm:.4g} above the bound {bound:.4g} (round median {median:.4g})"
                )
                continue
            scales[u.client_id] = bound / u.norm
        else:
            scales[u.client_id] = 1.0
    counts = {u.client_id: u.num_examples for u in updates if u.client_id not in rejected}
    if policy.aggregator == "mean":
        shares, capped = capped_shares(counts, policy.max_share)
    else:
        # Coordinate-wise aggregators are unweighted.
        shares, capped = {c: 1.0 / len(counts) for c in counts} if counts else {}, set()
    return RoundPlan(
        shares=shares,
        scales=scales,
        rejected=rejected,
        bound=bound,
        median_norm=median,
        capped=tuple(sorted(capped)),
    )


def combine_coordinatewise(
    stack: npt.NDArray[np.float32], aggregator: str, trim_fraction: float
) -> npt.NDArray[np.float64]:
    """Coordinate-wise trimmed mean or median over axis 0 of ``stack`` (k updates).

    Parameters
    ----------
    stack : ndarray, shape (k, ...)
        One (clipped) decoded tensor per update.
    aggregator : {"trimmed_mean", "median"}
        The rule.
    trim_fraction : float
        Fraction cut at each end (trimmed mean).

    Returns
    -------
    ndarray of float64
        Shape ``stack.shape[1:]``.
    """
    k = stack.shape[0]
    if aggregator == "median":
        middle: npt.NDArray[np.float64] = np.median(stack.astype(np.float64), axis=0)
        return middle
    if aggregator != "trimmed_mean":
        raise ValueError(f"unknown coordinate-wise aggregator {aggregator!r}")
    cut = math.floor(trim_fraction * k)
    if cut == 0:
        plain: npt.NDArray[np.float64] = np.mean(stack.astype(np.float64), axis=0)
        return plain
    ordered = np.sort(stack, axis=0)
    kept: npt.NDArray[np.float64] = np.mean(ordered[cut : k - cut].astype(np.float64), axis=0)
    return kept
