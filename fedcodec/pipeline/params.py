"""Round parameters (λ, S or Δ, byte budget, sparsification) and their schedules.

The server decides per round — and optionally per client — how updates are
coded: :class:`RoundParams`.  A *schedule* produces them from the round
number and the previous round's statistics: :class:`ConstantSchedule`,
:class:`StepSchedule`, :class:`CosineSchedule`, or any callable
``(round_number, last_stats) -> RoundParams`` (:class:`Schedule`).

Every parameter object converts to and from a JSON-able dict
(:meth:`RoundParams.to_json`), the form in which it travels to clients.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast, runtime_checkable

if TYPE_CHECKING:
    from fedcodec.pipeline.stats import RoundStats

__all__ = [
    "HIGH_RATE_LAMBDA",
    "ConstantSchedule",
    "CosineSchedule",
    "RoundParams",
    "Schedule",
    "Sensitivity",
    "Sparsification",
    "StepRule",
    "StepSchedule",
    "TensorKind",
    "TopkAllocation",
    "as_schedule",
]

#: ln(2)/6: the λ (in step² per bit) that is rate-distortion optimal at high rate.
HIGH_RATE_LAMBDA = 0.1155

#: How S maps to quantization steps: "model" gives every tensor the same step
#: (from the S rule over all weights), so one λ is one slope in squared error per
#: bit for the whole model; "tensor" applies the codec's rule to each tensor.
StepRule = Literal["model", "tensor"]
#: How levels are chosen (:func:`fedcodec.codec.encode`'s ``quantizer``).
Quantizer = Literal["uniform", "trellis", "trellis8", "dither"]
_QUANTIZERS = ("uniform", "trellis", "trellis8", "dither")
_STEP_RULES = ("model", "tensor")

#: Fields a :class:`StepSchedule` / :class:`CosineSchedule` can move; ``"topk"`` is
#: ``sparsification.topk`` (a sparsity warm-up: denser early rounds, sparser later ones).
_SCHEDULABLE = ("lam", "S", "step", "budget_bytes", "topk")


#: How a top-k budget is spread over tensors: ``"model"`` — one global ranking of the
#: (importance-weighted) squared values; ``"rd"`` — equal slope in distortion per *bit*: a
#: value's score is divided by the estimated cost of a nonzero in its tensor (position
#: entropy at the tensor's density plus sign and magnitude), so sparse tensors do not
#: starve and dense ones do not hog the budget.
#: ``"rd-rows"``: as ``"rd"``, with a nonzero's position cost from its row (output unit,
#: conv filter) in tensors of two or more dimensions: a row that already holds nonzeros
#: codes another one in fewer bits, so values cluster in rows and the same bytes carry
#: more of them.
TopkAllocation = Literal["model", "rd", "rd-rows"]
_TOPK_ALLOCATIONS = ("model", "rd", "rd-rows")


def _check_fraction(value: float | None, what: str) -> None:
    if value is not None and not (0.0 < value <= 1.0):
        raise ValueError(f"{what} must be in (0, 1], got {value!r}")


@dataclass(frozen=True)
class Sparsification:
    """Sparsification applied before quantization (all given ones combine).

    The values it zeroes are not lost: error feedback keeps them in the
    residual for later rounds.

    Attributes
    ----------
    topk : float, optional
        Keep this fraction (0, 1] of the weights with the largest magnitude
        (importance-weighted when an importance is given), over the whole
        model.
    threshold : float, optional
        Zero weights with ``|w| < threshold``.
    rows : float, optional
        Structured: keep this fraction (0, 1] of the rows (slices along axis
        0: output units, conv filters) with the largest mean square, over the
        whole model; 1-d tensors count each element as a row.
    allocation : {"model", "rd", "rd-rows"}
        How ``topk`` is spread over tensors (see :data:`TopkAllocation`).
    """

    topk: float | None = None
    threshold: float | None = None
    rows: float | None = None
    allocation: TopkAllocation = "model"

    def __post_init__(self) -> None:
        _check_fraction(self.topk, "topk")
        _check_fraction(self.rows, "rows")
        if self.allocation not in _TOPK_ALLOCATIONS:
            raise ValueError(
                f"allocation must be one of {_TOPK_ALLOCATIONS}, got {self.allocation!r}"
            )
        if self.threshold is not None and not (
            math.isfinite(self.threshold) and self.threshold >= 0
        ):
            raise ValueError(f"threshold must be finite and >= 0, got {self.threshold!r}")

    @property
    def active(self) -> bool:
        """Whether anything is zeroed at all."""
        return (
            (self.topk is not None and self.topk < 1.0)
            or (self.rows is not None and self.rows < 1.0)
            or bool(self.threshold)
        )

    def to_json(self) -> dict[str, float | str]:
        """The set fields as a dict (``allocation`` only when not the default)."""
        out: dict[str, float | str] = {
            k: v for k, v in dataclasses.asdict(self).items() if v is not None and k != "allocation"
        }
        if self.allocation != "model":
            out["allocation"] = self.allocation
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Sparsification:
        """Inverse of :meth:`to_json`."""
        unknown = set(data) - {"topk", "threshold", "rows", "allocation"}
        if unknown:
            raise ValueError(f"unknown sparsification keys {sorted(unknown)!r}")
        kwargs: dict[str, Any] = {k: float(v) for k, v in data.items() if k != "allocation"}
        if "allocation" in data:
            kwargs["allocation"] = str(data["allocation"])
        return cls(**kwargs)


#: What :meth:`Sensitivity.kind` calls a tensor.
TensorKind = Literal["weight", "bias", "norm", "stat"]

#: Default name patterns (regular expressions, searched in the tensor name) of
#: normalization *statistics*: buffers a layer estimates from data, not trained weights.
DEFAULT_STAT_PATTERNS = (
    r"running_mean$",
    r"running_var$",
    r"running_std$",
    r"moving_mean$",
    r"moving_variance$",
)

#: Where a tensor's importance comes from when the client supplies none:
#: ``"magnitude"`` — per tensor ``1 / mean(w²)`` of the base weights (a relative step:
#: tensors with small weights, e.g. biases, get finer steps); ``"none"`` — η = 1.
ImportanceFallback = Literal["magnitude", "none"]
_FALLBACKS = ("magnitude", "none")


@dataclass(frozen=True)
class Sensitivity:
    """Per-tensor handling of a whole model, decided by measurement.

    Every tensor gets a *kind* from its name and shape: ``"stat"`` (a
    normalization statistic such as BatchNorm's ``running_mean`` /
    ``running_var``: a name matching ``stat_patterns``), ``"weight"`` (two or
    more dimensions), ``"norm"`` (a 1-d ``…weight``: a normalization scale) or
    ``"bias"`` (any other 1-d or scalar tensor).

    * Statistics are not gradients: they are coded at their own fine step,
      ``2**-stat_bits`` times the RMS of the statistic itself (the base
      model's values), independent of the round's λ/S or budget, and they
      are never sparsified.
    * Every other tensor ``t`` is quantized at ``Δ_t = Δ · sqrt(M / m_t)``,
      clipped to ``[Δ / max_refine, Δ]``, where ``Δ`` is the model step
      (from S, ``step`` or the budget search), ``m_t`` the tensor's mean
      importance and ``M`` the model's (element-weighted).  With the codec's
      λ in step² per bit this is equal slope in *importance-weighted* squared
      error per bit: bits go where the loss is sensitive.  Importance is the
      client's per-weight η (e.g. a diagonal Fisher: squared gradients summed
      over the local epoch) or, without one, ``fallback``.
    * With ``sparsify_vectors=False`` (default) 1-d tensors (biases,
      normalization weights) are never sparsified: they are small and
      sensitive, their fine step already makes them cheap.

    Attributes
    ----------
    stat_bits : int
        Relative precision of statistics, 0 … 24 bits.
    max_refine : float
        Largest refinement ``Δ / Δ_t`` (>= 1; 1 gives every tensor the
        model step, i.e. no importance-derived steps).
    fallback : {"magnitude", "none"}
        Importance when the client supplies none (see
        :data:`ImportanceFallback`).
    sparsify_vectors : bool
        Whether sparsification may zero values of 1-d tensors.
    stat_patterns : tuple of str
        Regular expressions (``re.search`` on the name) for statistics.
    """

    stat_bits: int = 10
    max_refine: float = 16.0
    fallback: ImportanceFallback = "magnitude"
    sparsify_vectors: bool = False
    stat_patterns: tuple[str, ...] = DEFAULT_STAT_PATTERNS

    def __post_init__(self) -> None:
        if (
            isinstance(self.stat_bits, bool)
            or not isinstance(self.stat_bits, int)
            or not (0 <= self.stat_bits <= 24)
        ):
            raise ValueError(f"stat_bits must be an int in [0, 24], got {self.stat_bits!r}")
        if not (math.isfinite(self.max_refine) and self.max_refine >= 1.0):
            raise ValueError(f"max_refine must be finite and >= 1, got {self.max_refine!r}")
        if self.fallback not in _FALLBACKS:
            raise ValueError(f"fallback must be one of {_FALLBACKS}, got {self.fallback!r}")
        object.__setattr__(self, "stat_patterns", tuple(str(p) for p in self.stat_patterns))
        for pattern in self.stat_patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"bad stat pattern {pattern!r}: {exc}") from exc

    def kind(self, name: str, shape: tuple[int, ...]) -> TensorKind:
        """The kind of tensor ``name`` with ``shape`` (see the class docs)."""
        if any(re.search(p, name) for p in self.stat_patterns):
            return "stat"
        if len(shape) >= 2:
            return "weight"
        if name.endswith("weight"):
            return "norm"
        return "bias"

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict."""
        out: dict[str, Any] = {
            "stat_bits": self.stat_bits,
            "max_refine": self.max_refine,
            "fallback": self.fallback,
            "sparsify_vectors": self.sparsify_vectors,
        }
        if self.stat_patterns != DEFAULT_STAT_PATTERNS:
            out["stat_patterns"] = list(self.stat_patterns)
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Sensitivity:
        """Inverse of :meth:`to_json`."""
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown sensitivity keys {sorted(unknown)!r}")
        kwargs = dict(data)
        if "stat_patterns" in kwargs:
            kwargs["stat_patterns"] = tuple(kwargs["stat_patterns"])
        if "max_refine" in kwargs:
            kwargs["max_refine"] = float(kwargs["max_refine"])
        return cls(**kwargs)


@dataclass(frozen=True)
class RoundParams:
    """How updates of one round are coded.

    Attributes
    ----------
    lam : float
        λ >= 0 of the RD quantizer, in units of step² per bit.
    S : int
        Step resolution S >= 0 (larger: finer step) when no ``step`` and no
        budget is given.
    step : float, optional
        A quantization step Δ > 0 for every tensor (overrides S).
    budget_bytes : int, optional
        Target container size: rate control picks the step (and λ if needed)
        so the update lands within ``tolerance`` of it, or under it.
    tolerance : float
        Relative budget tolerance (default ±5 %).
    step_rule : {"model", "tensor"}
        One step for the whole model (equal slope) or the codec's per-tensor
        rule.
    sparsification : Sparsification, optional
        Applied before quantization.
    sensitivity : Sensitivity, optional
        Per-tensor handling by kind and measured importance (statistics at
        their own fine step, importance-derived per-tensor steps); None codes
        every tensor alike.
    quantizer : {"uniform", "trellis", "trellis8", "dither"}
        How levels are chosen (:func:`fedcodec.codec.encode`): RD-optimizing
        uniform quantization (default), rate-aware trellis-coded quantization
        with 4 or 8 states, or subtractive dithered quantization (``lam`` must
        be 0; the dither seed of an update is
        ``fedcodec.codec.dither_seed(round, client, dither_salt)``, ``client``
        the first 8 bytes of SHA-256 of the client id).
    dither_salt : int
        Salt of the dither seed rule (``quantizer="dither"`` only).
    stale_decay : float
        Error feedback of a client that missed rounds: its residual is
        multiplied by ``stale_decay ** (rounds missed)`` before it is added to
        the new update (``rounds missed`` = this update's round − the round of
        the client's last update − 1).  1.0 (default) keeps the residual as it
        is; 0.0 drops it after any absence.  In full participation no round is
        missed and nothing changes.  The decayed part is never sent (the
        error-feedback sum ``Σ decoded = Σ delta − residual`` loses it).
    per_client : mapping of str to mapping
        Field overrides per client id, e.g. ``{"phone-7": {"budget_bytes":
        2000}}``; see :meth:`for_client`.
    """

    lam: float = HIGH_RATE_LAMBDA
    S: int = 64
    step: float | None = None
    budget_bytes: int | None = None
    tolerance: float = 0.05
    step_rule: StepRule = "model"
    sparsification: Sparsification | None = None
    sensitivity: Sensitivity | None = None
    quantizer: Quantizer = "uniform"
    dither_salt: int = 0
    stale_decay: float = 1.0
    per_client: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lam) and self.lam >= 0):
            raise ValueError(f"lam must be finite and >= 0, got {self.lam!r}")
        if isinstance(self.S, bool) or not isinstance(self.S, int) or self.S < 0:
            raise ValueError(f"S must be an int >= 0, got {self.S!r}")
        if self.step is not None and not (math.isfinite(self.step) and self.step > 0):
            raise ValueError(f"step must be finite and > 0, got {self.step!r}")
        if self.budget_bytes is not None and (
            isinstance(self.budget_bytes, bool)
            or not isinstance(self.budget_bytes, int)
            or self.budget_bytes < 1
        ):
            raise ValueError(f"budget_bytes must be an int >= 1, got {self.budget_bytes!r}")
        if not (0.0 < self.tolerance < 1.0):
            raise ValueError(f"tolerance must be in (0, 1), got {self.tolerance!r}")
        if self.step_rule not in _STEP_RULES:
            raise ValueError(f"step_rule must be one of {_STEP_RULES}, got {self.step_rule!r}")
        if self.quantizer not in _QUANTIZERS:
            raise ValueError(f"quantizer must be one of {_QUANTIZERS}, got {self.quantizer!r}")
        if self.quantizer == "dither" and self.lam != 0:
            raise ValueError(f'lam must be 0 with quantizer="dither", got {self.lam!r}')
        if (
            isinstance(self.dither_salt, bool)
            or not isinstance(self.dither_salt, int)
            or not 0 <= self.dither_salt < 2**64
        ):
            raise ValueError(f"dither_salt must be an int in [0, 2**64), got {self.dither_salt!r}")
        if not (
            isinstance(self.stale_decay, int | float)
            and not isinstance(self.stale_decay, bool)
            and 0.0 <= self.stale_decay <= 1.0
        ):
            raise ValueError(f"stale_decay must be in [0, 1], got {self.stale_decay!r}")
        for client, overrides in self.per_client.items():
            bad = set(overrides) - (_FIELD_NAMES - {"per_client"})
            if bad:
                raise ValueError(f"per_client[{client!r}] has unknown fields {sorted(bad)!r}")

    def replace(self, **changes: Any) -> RoundParams:
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)

    def for_client(self, client_id: str) -> RoundParams:
        """The parameters of one client: its overrides applied, ``per_client`` dropped."""
        overrides = dict(self.per_client.get(client_id, {}))
        if "sparsification" in overrides and isinstance(overrides["sparsification"], Mapping):
            overrides["sparsification"] = Sparsification.from_json(overrides["sparsification"])
        if "sensitivity" in overrides and isinstance(overrides["sensitivity"], Mapping):
            overrides["sensitivity"] = Sensitivity.from_json(overrides["sensitivity"])
        return dataclasses.replace(self, per_client={}, **overrides)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (the form sent to clients)."""
        out: dict[str, Any] = {
            "lam": self.lam,
            "S": self.S,
            "tolerance": self.tolerance,
            "step_rule": self.step_rule,
        }
        if self.step is not None:
            out["step"] = self.step
        if self.budget_bytes is not None:
            out["budget_bytes"] = self.budget_bytes
        if self.sparsification is not None:
            out["sparsification"] = self.sparsification.to_json()
        if self.sensitivity is not None:
            out["sensitivity"] = self.sensitivity.to_json()
        if self.quantizer != "uniform":
            out["quantizer"] = self.quantizer
        if self.dither_salt:
            out["dither_salt"] = self.dither_salt
        if self.stale_decay != 1.0:
            out["stale_decay"] = self.stale_decay
        if self.per_client:
            out["per_client"] = {
                cid: {
                    k: (v.to_json() if isinstance(v, Sparsification | Sensitivity) else v)
                    for k, v in overrides.items()
                }
                for cid, overrides in self.per_client.items()
            }
        return out

    def to_json_text(self) -> str:
        """:meth:`to_json` as compact JSON text (keys sorted): the one serialization the
        proto (``CodingParams.params_json``), the Flower ConfigRecord and files carry."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json_text(cls, text: str) -> RoundParams:
        """Inverse of :meth:`to_json_text`.

        Raises
        ------
        ValueError
            Not a JSON object, an unknown key, or a value out of range (named).
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"round parameters are not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError("round parameters must be a JSON object")
        return cls.from_json(data)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RoundParams:
        """Inverse of :meth:`to_json` (unknown keys are an error)."""
        unknown = set(data) - _FIELD_NAMES
        if unknown:
            raise ValueError(f"unknown round parameter keys {sorted(unknown)!r}")
        kwargs = dict(data)
        if "sparsification" in kwargs and kwargs["sparsification"] is not None:
            kwargs["sparsification"] = Sparsification.from_json(kwargs["sparsification"])
        if "sensitivity" in kwargs and kwargs["sensitivity"] is not None:
            kwargs["sensitivity"] = Sensitivity.from_json(kwargs["sensitivity"])
        if "per_client" in kwargs:
            kwargs["per_client"] = {str(k): dict(v) for k, v in kwargs["per_client"].items()}
        return cls(**kwargs)


_FIELD_NAMES = frozenset(f.name for f in dataclasses.fields(RoundParams))


@runtime_checkable
class Schedule(Protocol):
    """Anything that gives the parameters of a round.

    ``round_number`` counts from 0; ``last`` is the statistics of the
    previous round (None in round 0).  A plain function with this signature
    is a schedule.
    """

    def __call__(self, round_number: int, last: RoundStats | None) -> RoundParams: ...


def _check_field(name: str) -> None:
    if name not in _SCHEDULABLE:
        raise ValueError(f"can schedule one of {_SCHEDULABLE}, not {name!r}")


def _value_of(base: RoundParams, name: str) -> float | None:
    if name == "topk":
        return None if base.sparsification is None else base.sparsification.topk
    value = getattr(base, name)
    return None if value is None else float(value)


def _with_value(base: RoundParams, name: str, value: float) -> RoundParams:
    if name in ("S", "budget_bytes"):
        return base.replace(**{name: max(0 if name == "S" else 1, round(value))})
    if name == "topk":
        sparsification = base.sparsification or Sparsification()
        topk = min(1.0, max(value, 1e-9))
        return base.replace(sparsification=dataclasses.replace(sparsification, topk=topk))
    return base.replace(**{name: value})


@dataclass(frozen=True)
class ConstantSchedule:
    """The same parameters every round."""

    params: RoundParams

    def __call__(self, round_number: int, last: RoundStats | None) -> RoundParams:
        """The parameters (the same every round)."""
        return self.params


@dataclass(frozen=True)
class StepSchedule:
    """Multiply one parameter by ``gamma`` every ``every`` rounds (until ``limit``).

    Attributes
    ----------
    base : RoundParams
        Parameters of round 0.
    name : {"lam", "S", "step", "budget_bytes", "topk"}
        The parameter to change (it must be set in ``base``; ``"topk"`` is
        ``base.sparsification.topk``).
    gamma : float
        Factor per step (> 0).
    every : int
        Rounds per step (>= 1).
    limit : float, optional
        The value stops here: a floor when ``gamma < 1``, a ceiling when
        ``gamma > 1``.  E.g. a sparsity warm-up ``StepSchedule(params, "topk",
        gamma=0.5, every=2, limit=0.005)`` from ``topk=0.08``.
    """

    base: RoundParams
    name: str
    gamma: float
    every: int
    limit: float | None = None

    def __post_init__(self) -> None:
        _check_field(self.name)
        if _value_of(self.base, self.name) is None:
            raise ValueError(f"StepSchedule: base.{self.name} is not set")
        if not (self.gamma > 0 and math.isfinite(self.gamma)) or self.every < 1:
            raise ValueError("StepSchedule needs gamma > 0 and every >= 1")
        if self.limit is not None and not (math.isfinite(self.limit) and self.limit > 0):
            raise ValueError(f"StepSchedule: limit must be finite and > 0, got {self.limit!r}")

    def __call__(self, round_number: int, last: RoundStats | None) -> RoundParams:
        """The parameters of ``round_number``."""
        start = _value_of(self.base, self.name)
        assert start is not None  # checked in __post_init__
        value = start * self.gamma ** (round_number // self.every)
        if self.limit is not None:
            value = max(value, self.limit) if self.gamma < 1 else min(value, self.limit)
        return _with_value(self.base, self.name, value)


@dataclass(frozen=True)
class CosineSchedule:
    """Move one parameter from ``start`` to ``end`` along a half cosine.

    ``value(r) = end + (start - end) * (1 + cos(pi * min(r, rounds) / rounds)) / 2``.

    Attributes
    ----------
    base : RoundParams
        The other parameters.
    name : {"lam", "S", "step", "budget_bytes", "topk"}
        The parameter to change (``"topk"``: ``sparsification.topk``).
    start, end : float
        Values in round 0 and from round ``rounds`` on.
    rounds : int
        Length of the ramp (>= 1).
    """

    base: RoundParams
    name: str
    start: float
    end: float
    rounds: int

    def __post_init__(self) -> None:
        _check_field(self.name)
        if self.rounds < 1:
            raise ValueError("CosineSchedule needs rounds >= 1")

    def __call__(self, round_number: int, last: RoundStats | None) -> RoundParams:
        """The parameters of ``round_number``."""
        t = min(max(round_number, 0), self.rounds) / self.rounds
        value = self.end + (self.start - self.end) * (1.0 + math.cos(math.pi * t)) / 2.0
        return _with_value(self.base, self.name, value)


def as_schedule(
    spec: RoundParams | Schedule | Callable[[int, RoundStats | None], RoundParams],
) -> Schedule:
    """A schedule from parameters (constant) or a schedule/callable (as is)."""
    if isinstance(spec, RoundParams):
        return ConstantSchedule(spec)
    if callable(spec):
        return cast(Schedule, spec)
    raise TypeError(f"not a schedule: {type(spec).__name__}")
