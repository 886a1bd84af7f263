"""Choosing λ, S and Δ: fixed parameters, or a byte budget met by search.

:func:`encode_with_params` encodes float32 tensors as a
:class:`~fedcodec.pipeline.params.RoundParams` says, always through
:func:`fedcodec.codec.encode` with ``return_recon=True`` (the exact decoder
reconstruction, for error feedback).

Steps.  With the ``"model"`` step rule every tensor gets the same step
``Δ = 2·|w|max / (2·|w|max/σ + S)`` (the codec's rule, with ``|w|max`` and
``σ`` — the RMS of the nonzero values — taken over the whole model).  Since
λ is measured in step² per bit, one λ and one Δ give every tensor the same
slope ``λ·Δ²`` of squared error per bit: bits go where they buy the most
distortion reduction.  The ``"tensor"`` rule uses the codec's per-tensor rule
(same λ, per-tensor Δ).

Budgets.  Container size falls as Δ grows (at fixed λ) and as λ grows (at
fixed Δ).  With the model rule the search runs on ``log Δ`` at the round's λ;
Δ can grow until every level is zero, so every budget above the all-zero
container is reachable.  With the tensor rule it runs on integer S
(log-spaced) and, when even S = 0 is too large, on ``log λ`` at S = 0.  Each
pass is a real encode; the next point comes from a secant on
``log bytes`` (safeguarded by bisection once the budget is bracketed).  The
search stops at the first size within ``±tolerance`` of the budget; after
``max_passes`` it returns the largest size under the budget, and if no pass
came in under it, the all-zero update (the error-feedback residual then keeps
everything for the next round).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, cast

import numpy as np

from fedcodec import codec
from fedcodec.pipeline.errors import BudgetTooSmallError
from fedcodec.pipeline.model import F32Array
from fedcodec.pipeline.params import Quantizer, RoundParams

__all__ = [
    "DEFAULT_MAX_PASSES",
    "STEP_SNAP_POLICIES",
    "CodedTensors",
    "StepSnap",
    "StepSnapPolicy",
    "compact_step",
    "encode_with_params",
    "importance_lam_scales",
    "min_container_bytes",
    "model_rule_step",
    "resolve_step_snap",
    "step_snap_policy",
    "tensor_rule_steps",
]

#: Encoder passes a budget search may use (the all-zero fallback may add one).
DEFAULT_MAX_PASSES = 8
# Levels must stay within ±(2**30 - 1); keep a factor 2 of headroom.
_MAX_LEVEL = float(2**29)
_MAX_S = 2**20
_LAM_CEILING = 1.0e4


@dataclass(frozen=True)
class CodedTensors:
    """An encode chosen by :func:`encode_with_params`.

    Attributes
    ----------
    result : fedcodec.codec.EncodeResult
        Container, codec statistics and ``recon`` (always present).
    lam : float
        λ used.
    S : int or None
        S used, None when steps were explicit.
    passes : int
        Encoder passes.
    all_zero_fallback : bool
        True when no pass met the budget and the all-zero update was sent.
    seconds : float
        Wall time.
    """

    result: codec.EncodeResult
    lam: float
    S: int | None
    passes: int
    all_zero_fallback: bool
    seconds: float

    @property
    def recon(self) -> list[F32Array]:
        """The decoder's reconstruction, per tensor."""
        assert self.result.recon is not None
        return self.result.recon

    @property
    def steps(self) -> list[float]:
        """Δ per tensor."""
        return [s.step for s in self.result.stats]


def _max_abs(tensors: Sequence[F32Array]) -> float:
    return max((float(np.max(np.abs(t))) for t in tensors if t.size), default=0.0)


def _rms_nonzero(tensors: Sequence[F32Array]) -> float:
    total = 0.0
    count = 0
    for t in tensors:
        nz = t[t != 0]
        total += float(np.dot(nz.astype(np.float64), nz.astype(np.float64)))
        count += nz.size
    return math.sqrt(total / count) if count else 0.0


def model_rule_step(tensors: Sequence[F32Array], S: int) -> float:
    """The codec's step rule applied to all tensors together.

    ``Δ = 2·|w|max / (2·|w|max/σ + S)`` with ``σ`` the RMS of the nonzero
    values of all tensors.  1.0 for an all-zero model.
    """
    wmax = _max_abs(tensors)
    sigma = _rms_nonzero(tensors)
    if wmax == 0.0 or sigma == 0.0:
        return 1.0
    return 2.0 * wmax / (2.0 * wmax / sigma + S)


def importance_lam_scales(
    importance: Sequence[F32Array | None], shapes: Sequence[tuple[int, ...]]
) -> list[float]:
    """Per-tensor λ factors that turn the codec's per-tensor η normalization into a global one.

    The codec divides each tensor's importance by its mean ``m_t`` before it
    minimizes ``η/m_t · (w − q)² + λ · R``.  Quantizing tensor ``t`` at
    ``λ · M/m_t``, with ``M`` the mean importance over the whole model, makes
    that cost ``M/m_t`` times ``η/M · (w − q)² + λ · R``: the same minimizer
    as one global normalization, so the relative importance of tensors
    survives and one λ is one slope for the whole model.

    Parameters
    ----------
    importance : sequence of ndarray or None
        η per tensor (None: η = 1).
    shapes : sequence of tuple of int
        The tensors' shapes (for the η = 1 tensors).

    Returns
    -------
    list of float
        ``M / m_t`` per tensor (1.0 for an empty tensor).

    Raises
    ------
    ValueError
        A non-empty tensor's importance sums to zero (the codec refuses it).
    """
    sums: list[float] = []
    counts: list[int] = []
    for eta, shape in zip(importance, shapes, strict=True):
        count = math.prod(shape)
        total = float(count) if eta is None else float(np.sum(eta, dtype=np.float64))
        if count and not total > 0.0:
            raise ValueError("an importance tensor sums to zero; the codec needs a positive sum")
        sums.append(total)
        counts.append(count)
    numel = sum(counts)
    if numel == 0:
        return [1.0] * len(sums)
    model_mean = sum(sums) / numel
    return [model_mean / (t / n) if n else 1.0 for t, n in zip(sums, counts, strict=True)]


def tensor_rule_steps(tensors: Sequence[F32Array], S: int) -> list[float]:
    """The codec's per-tensor step rule (σ = RMS of the tensor's nonzero values)."""
    return [model_rule_step([t], S) for t in tensors]


@functools.lru_cache(maxsize=64)
def _floor_bytes(shapes: tuple[tuple[int, ...], ...]) -> int:
    zeros = [np.zeros(s, dtype=np.float32) for s in shapes]
    return len(codec.encode(zeros, step=1.0, threads=1))


def min_container_bytes(shapes: Sequence[tuple[int, ...]]) -> int:
    """Size of the smallest container of these shapes (every level zero)."""
    return _floor_bytes(tuple(tuple(s) for s in shapes))


#: How steps are snapped to a ``step_grid``: ``"grid"`` — the nearest integer multiple (>= 1)
#: of the grid; ``"pow2"`` — the nearest power-of-two multiple (in log scale), so that steps
#: of different encodes divide each other.
StepSnap = Literal["grid", "pow2"]
_STEP_SNAPS = ("grid", "pow2")
#: A downlink stream's snapping policy: a :data:`StepSnap` for every version, or ``"auto"``
#: — ``"pow2"`` for versions coded with active sparsification and for dense ones while
#: clients lag (partial participation), ``"grid"`` for the others (:func:`resolve_step_snap`).
StepSnapPolicy = Literal["grid", "pow2", "auto"]
STEP_SNAP_POLICIES = ("grid", "pow2", "auto")


def step_snap_policy(name: str) -> StepSnapPolicy:
    """``name`` as a :data:`StepSnapPolicy` (a ``ValueError`` naming the choices otherwise)."""
    if name not in STEP_SNAP_POLICIES:
        raise ValueError(f"step_snap must be one of {STEP_SNAP_POLICIES}, got {name!r}")
    return cast(StepSnapPolicy, name)


def resolve_step_snap(
    policy: StepSnapPolicy, params: RoundParams, *, catching_up: bool = False
) -> StepSnap:
    """The snapping of one encode under ``policy`` with coding ``params``.

    ``"auto"`` snaps to power-of-two steps the versions that catch-ups will sum:
    sparsified encodes always, dense ones while the stream has clients that lag
    (``catching_up``: partial participation).  The steps of such versions divide
    each other, so a returning client's cumulative delta has small levels at a
    coarse step, and the server's error feedback keeps what the octave costs.  A
    dense stream every client follows version by version (full participation)
    keeps the nearest grid multiple: there an octave is up to √2 coarser for no
    saving.  Measured (``docs/catchup.md``): sparse versions −31 % downlink bytes
    with 6 of 30 nodes a round; dense versions (preset ``"near-lossless"`` and the
    default ``RoundParams()``, 6 of 30 nodes a round, two CNNs, 3 seeds) −31 … −36 %
    downlink and −21 … −28 % total bytes at the same accuracy.

    Parameters
    ----------
    policy : {"grid", "pow2", "auto"}
        The stream's policy.
    params : RoundParams
        The encode's parameters.
    catching_up : bool, optional
        Whether clients lag behind the stream (some client holds a version older
        than the latest when the next one is coded).

    Returns
    -------
    {"grid", "pow2"}
    """
    if policy == "auto":
        sparse = params.sparsification is not None and params.sparsification.active
        return "pow2" if sparse or catching_up else "grid"
    return policy


#: The steps a compact container stores in one byte (codec FORMAT.md §3.1):
#: ``(1 + m/8) · 2**e`` for m = 0..7, e = -27..4.
_CODE_MIN_EXP, _CODE_MAX_EXP = -27, 4


def compact_step(step: float, *, fine: bool = False) -> float:
    """``step`` rounded to the nearest step a compact container codes in one byte.

    The steps ``(1 + m/8) · 2**e`` (m = 0..7, e = -27..4; codec FORMAT.md §3.1) are
    within 6.25 % of any step in their range; a step outside it is returned as it is
    (it takes 2 or 4 bytes).  ``fine``: the nearest bfloat16 instead (2 bytes, within
    0.4 %), for a byte-budget search, which the one-byte steps' 9 % stairs would keep
    from landing within its tolerance.

    Parameters
    ----------
    step : float
        A step > 0.
    fine : bool, optional
        Round to a bfloat16 (default False: to a one-byte step).

    Returns
    -------
    float
        The rounded step (exactly a float32).
    """
    if fine:
        bits = int(np.array(step, dtype=np.float32).view(np.uint32))
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000  # round to nearest even
        value = float(np.array(bits, dtype=np.uint32).view(np.float32))
        return value if math.isfinite(value) and value > 0.0 else step
    mantissa, exp = math.frexp(step)  # step = mantissa * 2**exp, mantissa in [0.5, 1)
    eighths = round((2.0 * mantissa - 1.0) * 8.0)  # step ≈ (1 + eighths/8) * 2**(exp - 1)
    value = (1.0 + eighths / 8.0) * 2.0 ** (exp - 1)
    if not 2.0**_CODE_MIN_EXP <= value <= 1.875 * 2.0**_CODE_MAX_EXP:
        return step
    return value


def _snap(
    steps: Sequence[float], grid: Sequence[float] | None, how: StepSnap = "grid"
) -> list[float]:
    """Steps rounded to multiples of a per-tensor grid (see :data:`StepSnap`)."""
    if grid is None:
        return list(steps)
    if how == "pow2":
        return [
            g * 2.0 ** max(0, round(math.log2(s / g))) for s, g in zip(steps, grid, strict=True)
        ]
    return [max(1.0, round(s / g)) * g for s, g in zip(steps, grid, strict=True)]


class _Encoder:
    """Runs encodes with fixed tensors and options, counting passes.

    With ``lam_scales`` tensor ``i`` is quantized at ``λ · lam_scales[i]``:
    the codec takes one λ per call, so each tensor is quantized by its own
    call (a tensor's levels do not depend on the other tensors of a call)
    and the levels are then coded into one container by
    :func:`fedcodec.codec.encode_levels`.
    """

    def __init__(
        self,
        tensors: Sequence[F32Array],
        importance: Sequence[F32Array | None] | None,
        threads: int,
        grid: Sequence[float] | None,
        lam_scales: Sequence[float] | None = None,
        step_snap: StepSnap = "grid",
        step_factors: Sequence[float] | None = None,
        fixed_steps: Sequence[float | None] | None = None,
        quantizer: Quantizer = "uniform",
        dither_seed: int | None = None,
        temporal_reference: Sequence[F32Array | None] | None = None,
        compact: bool = False,
        fine_steps: bool = False,
    ) -> None:
        self.tensors = list(tensors)
        # a compact container (codec FORMAT.md §2-3); off the grid its steps snap to
        # one-byte steps (compact_step), to bfloat16s in a budget search (fine_steps)
        self.compact = compact
        self.fine_steps = fine_steps
        self.shapes = [tuple(t.shape) for t in self.tensors] if compact else None
        self.reference = None if temporal_reference is None else list(temporal_reference)
        self.quantizer: Quantizer = quantizer
        self.dither_seed = dither_seed if quantizer == "dither" else None
        if quantizer != "uniform" and lam_scales is not None:
            raise ValueError(
                f'quantizer="{quantizer}" codes all tensors in one call: it does not combine '
                'with importance_scale="global"'
            )
        self.step_factors = None if step_factors is None else list(step_factors)
        self.fixed_steps = None if fixed_steps is None else list(fixed_steps)
        self.importance = None if importance is None else list(importance)
        self.threads = threads
        self.grid = None if grid is None else list(grid)
        self.step_snap = step_snap
        self.lam_scales = None if lam_scales is None else list(lam_scales)
        self.passes = 0

    def run(
        self, lam: float, *, S: int = 0, steps: Sequence[float] | None = None
    ) -> codec.EncodeResult:
        self.passes += 1
        if self.step_factors is not None or self.fixed_steps is not None:
            steps = self._planned(tensor_rule_steps(self.tensors, S) if steps is None else steps)
        if self.compact and self.grid is None:
            rule = tensor_rule_steps(self.tensors, S) if steps is None else steps
            steps = [compact_step(x, fine=self.fine_steps) for x in rule]
        snapped = None if steps is None else _snap(steps, self.grid, self.step_snap)
        if self.lam_scales is None:
            result = codec.encode(
                self.tensors,
                lam=lam,
                S=S,
                step=snapped,
                importance=self.importance,
                threads=self.threads,
                return_recon=True,
                quantizer=self.quantizer,
                dither_seed=self.dither_seed,
                reference=self.reference,
                compact=self.compact,
            )
            return result if self.grid is None else self._on_levels(result)
        return self._run_per_tensor(lam, S, snapped)

    def _on_levels(self, result: codec.EncodeResult) -> codec.EncodeResult:
        """``result`` with every tensor reconstructing to ``level * step``.

        A grid (the downlink's) needs reconstructions that are integer multiples
        of the step: a uniform tensor whose one-magnitude rows carry ROWFINE
        values (codec FORMAT.md §8.1, 1/16 step) is re-coded from its levels, as
        the per-tensor path joins its parts.  Trellis tensors reconstruct to
        ``q * step`` already; other tensors are returned as they are.
        """
        assert result.recon is not None
        if all(
            st.step == 0
            or np.array_equal(
                np.rint(rec / np.float32(st.step)).astype(np.float32) * np.float32(st.step), rec
            )
            for rec, st in zip(result.recon, result.stats, strict=True)
        ):
            return result
        decoded = codec.decode_levels(
            result.data,
            threads=self.threads,
            reference=self.reference,
            expected_shapes=self.shapes,
        )
        assert isinstance(decoded, list)
        return self._join([lv for lv, _ in decoded], result.stats, result.recon)

    def _run_per_tensor(
        self, lam: float, S: int, steps: Sequence[float] | None
    ) -> codec.EncodeResult:
        assert self.lam_scales is not None
        parts: list[codec.EncodeResult] = []
        levels: list[np.ndarray] = []
        for i, tensor in enumerate(self.tensors):
            part = codec.encode(
                [tensor],
                lam=lam * self.lam_scales[i],
                S=S,
                step=None if steps is None else [steps[i]],
                importance=None if self.importance is None else [self.importance[i]],
                threads=self.threads,
                return_recon=True,
                reference=None if self.reference is None else [self.reference[i]],
            )
            decoded = codec.decode_levels(
                part.data,
                threads=self.threads,
                expected_shapes=[tensor.shape],
                reference=None if self.reference is None else [self.reference[i]],
            )
            assert isinstance(decoded, list)
            parts.append(part)
            levels.append(decoded[0][0])
        recon = []
        for p in parts:
            assert p.recon is not None
            recon.append(p.recon[0])
        return self._join(levels, [p.stats[0] for p in parts], recon)

    def _join(
        self,
        levels: Sequence[np.ndarray],
        stats: Sequence[codec.TensorStats],
        recon: Sequence[F32Array],
    ) -> codec.EncodeResult:
        """The levels (with the steps of ``stats``) coded into one container by
        :func:`fedcodec.codec.encode_levels`, with each tensor's recon and squared error.

        The joined container holds the levels only: a tensor whose one-magnitude rows had
        ROWFINE values (codec FORMAT.md §8.1) in ``recon`` reconstructs to level * step
        there, so its recon and squared error become those of the levels; the others keep
        ``recon`` and the squared error of ``stats``.
        """
        joined = codec.encode_levels(
            levels,
            [st.step for st in stats],
            threads=self.threads,
            reference=self.reference,
            compact=self.compact,
        )
        out_stats = []
        out_recon = []
        for s, st, lv, rec, tensor in zip(
            joined.stats, stats, levels, recon, self.tensors, strict=True
        ):
            plain = lv.astype(np.float32) * np.float32(st.step)
            if np.array_equal(plain, rec):
                out_stats.append(dataclasses.replace(s, sq_error=st.sq_error))
                out_recon.append(rec)
            else:
                err = np.asarray(tensor, np.float64) - plain
                out_stats.append(dataclasses.replace(s, sq_error=float(np.square(err).sum())))
                out_recon.append(plain)
        return codec.EncodeResult(joined.data, out_stats, out_recon)

    def _planned(self, steps: Sequence[float]) -> list[float]:
        """``steps`` with the per-tensor factors and fixed steps applied."""
        out = list(steps)
        if self.step_factors is not None:
            out = [s * f for s, f in zip(out, self.step_factors, strict=True)]
        if self.fixed_steps is not None:
            out = [s if f is None else f for s, f in zip(out, self.fixed_steps, strict=True)]
        return out

    def all_zero(self, lam: float) -> codec.EncodeResult:
        wmax = _max_abs(self.tensors)
        huge = 4.0 * wmax if wmax > 0 else 1.0
        return self.run(lam, steps=[huge] * len(self.tensors))


@dataclass(frozen=True)
class _Outcome:
    """A search's best result: within tolerance (``hit``), else the largest
    under the budget, else None (every pass was over it); ``x`` is its point."""

    result: codec.EncodeResult | None
    x: float | None
    hit: bool
    seen: list[float]


@dataclass
class _Search:
    """Secant / bisection search for a container size, on one real variable.

    ``bytes_of(x)`` must be roughly monotone: increasing in ``x`` when
    ``increasing`` is true.  ``snap`` maps ``x`` to the nearest admissible
    value (e.g. an integer S).
    """

    evaluate: Callable[[float], codec.EncodeResult]
    lo: float
    hi: float
    increasing: bool
    slope0: float
    snap: Callable[[float], float]
    budget: int
    tolerance: float
    unit: float = 0.0

    def run(self, x0: float, passes: int) -> _Outcome:
        """Search from ``x0`` with at most ``passes`` encodes.

        Before the budget is bracketed: secant steps on (x, log bytes) from
        the last two points (the default slope at first), at most a factor 16
        at a time.  Once bracketed: the Illinois variant of regula falsi
        between the bracket ends (an end kept twice has its residual halved),
        with bisection when the secant lands too near an end.
        """
        target = math.log(self.budget)
        low_ok = self.budget * (1.0 - self.tolerance)
        high_ok = self.budget * (1.0 + self.tolerance)
        sign = 1.0 if self.increasing else -1.0
        seen: list[float] = []
        best_under: codec.EncodeResult | None = None
        best_x: float | None = None
        # Bracket ends as [x, log bytes - target]: over the budget, under it.
        over: list[float] | None = None
        under: list[float] | None = None
        last_side = 0
        history: list[tuple[float, float]] = []
        x = self.snap(min(max(x0, self.lo), self.hi))
        for _ in range(passes):
            if x in seen:
                break
            result = self.evaluate(x)
            size = len(result)
            seen.append(x)
            if low_ok <= size <= high_ok:
                return _Outcome(result, x, True, seen)
            if size <= self.budget and (best_under is None or size > len(best_under)):
                best_under, best_x = result, x
            f = math.log(size) - target
            side = 1 if f > 0 else -1
            if side > 0:
                over = [x, f]
                if last_side > 0 and under is not None:
                    under[1] *= 0.5
            else:
                under = [x, f]
                if last_side < 0 and over is not None:
                    over[1] *= 0.5
            last_side = side
            history.append((x, f))
            if over is not None and under is not None:
                (xa, fa), (xb, fb) = over, under
                lo, hi = min(xa, xb), max(xa, xb)
                proposal = xa - fa * (xb - xa) / (fb - fa)
                margin = 0.01 * (hi - lo)
                if not (lo + margin < proposal < hi - margin):
                    proposal = 0.5 * (lo + hi)
            else:
                slope = self.slope0
                if len(history) >= 2:
                    (x1, f1), (x2, f2) = history[-2], history[-1]
                    if x2 != x1 and (f2 - f1) / (x2 - x1) * sign > 1e-3:
                        slope = (f2 - f1) / (x2 - x1)
                move = -f / slope
                limit = math.log(16.0)
                proposal = x + max(-limit, min(limit, move))
            proposal = min(max(proposal, self.lo), self.hi)
            snapped = self.snap(proposal)
            if snapped == x:
                # An integer grid can stall: move one unit toward the budget.
                toward = -sign * side
                snapped = self.snap(x + toward * max(abs(proposal - x) + 1e-6, self.unit))
                if snapped == x:
                    break
            x = snapped
        return _Outcome(best_under, best_x, False, seen)


def encode_with_params(
    tensors: Sequence[F32Array],
    params: RoundParams,
    *,
    importance: Sequence[F32Array | None] | None = None,
    threads: int = 0,
    step_grid: Sequence[float] | None = None,
    warm_start: float | None = None,
    max_passes: int = DEFAULT_MAX_PASSES,
    lam_scales: Sequence[float] | None = None,
    step_snap: StepSnap = "grid",
    step_factors: Sequence[float] | None = None,
    fixed_steps: Sequence[float | None] | None = None,
    dither_seed: int | None = None,
    temporal_reference: Sequence[F32Array | None] | None = None,
    compact: bool = False,
) -> CodedTensors:
    """Encode tensors with fixed parameters or to a byte budget.

    ``params.quantizer`` chooses the quantizer; ``dither_seed`` is the seed of a
    dithered encode (``quantizer="dither"``: required); ``temporal_reference``
    (one tensor or None per tensor) is passed to the codec as ``reference``.
    ``compact``: a compact container (``codec.encode(..., compact=True)``, for a
    decoder that knows the shapes); without ``step_grid`` its steps are rounded to
    one-byte steps (:func:`compact_step`, within 6.25 %), to bfloat16 steps (within 0.4 %)
    when it searches a byte budget.

    Parameters
    ----------
    tensors : sequence of ndarray
        float32, C-contiguous, finite.
    params : RoundParams
        ``step`` (explicit Δ) beats ``budget_bytes`` beats ``S``; ``lam``,
        ``step_rule`` and ``tolerance`` apply throughout.  Sparsification is
        not applied here.
    importance : sequence of ndarray or None, optional
        Per-weight importance η (passed to the codec).
    threads : int, optional
        Codec threads (0 = all CPUs).
    step_grid : sequence of float, optional
        Per-tensor grid: every step becomes an integer multiple (>= 1) of it
        (used by the downlink to keep reconstructions on a fixed grid).
    warm_start : float, optional
        Starting point of a budget search: the step divided by the RMS of the
        tensors (model rule) or S (tensor rule) that met a similar budget
        before.
    max_passes : int, optional
        Cap on search passes.
    lam_scales : sequence of float, optional
        Per-tensor factors > 0 on λ (tensor ``i`` is quantized at
        ``λ · lam_scales[i]``; each tensor then takes its own codec call,
        see :func:`importance_lam_scales`).
    step_snap : {"grid", "pow2"}, optional
        How steps snap to ``step_grid`` (see :data:`StepSnap`); with
        ``"pow2"`` a budget search moves in factors of 2.
    step_factors : sequence of float, optional
        Per-tensor factors > 0 on the step: tensor ``i`` is quantized at
        ``Δ · step_factors[i]`` where ``Δ`` is the step the rule, ``step``
        or the budget search picks (see
        :class:`~fedcodec.pipeline.params.Sensitivity`).
    fixed_steps : sequence of float or None, optional
        Per tensor: a step > 0 that no rule or search changes (None: the
        tensor follows the round's step).  Fixed tensors are left out of the
        model step rule's statistics.

    Returns
    -------
    CodedTensors

    Raises
    ------
    BudgetTooSmallError
        ``budget_bytes`` is below the all-zero container of these shapes.
    """
    start = time.perf_counter()
    if lam_scales is not None:
        if len(lam_scales) != len(tensors):
            raise ValueError(f"{len(lam_scales)} lam_scales for {len(tensors)} tensors")
        if not all(math.isfinite(x) and x > 0 for x in lam_scales):
            raise ValueError(f"lam_scales must be finite and > 0, got {list(lam_scales)!r}")
    if step_snap not in _STEP_SNAPS:
        raise ValueError(f"step_snap must be one of {_STEP_SNAPS}, got {step_snap!r}")
    if step_factors is not None and (
        len(step_factors) != len(tensors)
        or not all(math.isfinite(x) and x > 0 for x in step_factors)
    ):
        raise ValueError(f"need one finite step factor > 0 per tensor, got {step_factors!r}")
    if fixed_steps is not None and (
        len(fixed_steps) != len(tensors)
        or not all(x is None or (math.isfinite(x) and x > 0) for x in fixed_steps)
    ):
        raise ValueError(
            f"need one finite fixed step > 0 (or None) per tensor, got {fixed_steps!r}"
        )
    if params.quantizer == "dither" and dither_seed is None:
        raise ValueError('quantizer="dither" needs a dither_seed (one per update)')
    enc = _Encoder(
        tensors,
        importance,
        threads,
        step_grid,
        lam_scales,
        step_snap,
        step_factors,
        fixed_steps,
        params.quantizer,
        dither_seed,
        temporal_reference,
        compact,
        fine_steps=params.budget_bytes is not None and params.step is None,
    )
    lam = params.lam
    # The tensors that follow the round's step (fixed ones do not shape it).
    free = (
        list(tensors)
        if fixed_steps is None
        else [t for t, f in zip(tensors, fixed_steps, strict=True) if f is None]
    )

    def done(result: codec.EncodeResult, S: int | None, fallback: bool = False) -> CodedTensors:
        return CodedTensors(result, lam, S, enc.passes, fallback, time.perf_counter() - start)

    if params.step is not None:
        return done(enc.run(lam, steps=[params.step] * len(tensors)), None)
    if params.budget_bytes is None:
        if params.step_rule == "model":
            return done(
                enc.run(lam, steps=[model_rule_step(free, params.S)] * len(tensors)), params.S
            )
        if step_grid is not None:
            return done(enc.run(lam, steps=tensor_rule_steps(tensors, params.S)), params.S)
        return done(enc.run(lam, S=params.S), params.S)

    budget = params.budget_bytes
    floor = min_container_bytes([t.shape for t in tensors])
    if budget < floor:
        raise BudgetTooSmallError(
            f"a budget of {budget} bytes is below the smallest container of this model "
            f"({floor} bytes, every level zero)",
            budget_bytes=budget,
            min_bytes=floor,
        )
    wmax = _max_abs(free)
    if wmax == 0.0:
        return done(enc.all_zero(lam), None)
    if params.step_rule == "model":
        result, S_used = _search_model_rule(enc, free, params, lam, warm_start, max_passes)
    else:
        result, S_used, lam = _search_tensor_rule(enc, tensors, params, warm_start, max_passes)
    if result is None:
        return done(enc.all_zero(lam), None, fallback=True)
    return done(result, S_used)


def _search_model_rule(
    enc: _Encoder,
    tensors: Sequence[F32Array],
    params: RoundParams,
    lam: float,
    warm_start: float | None,
    max_passes: int,
) -> tuple[codec.EncodeResult | None, None]:
    assert params.budget_bytes is not None
    wmax = _max_abs(tensors)
    numel = sum(t.size for t in tensors)
    rms = math.sqrt(
        sum(
            float(np.dot(t.ravel().astype(np.float64), t.ravel().astype(np.float64)))
            for t in tensors
        )
        / max(numel, 1)
    )
    rms = rms if rms > 0 else wmax
    if warm_start is not None and warm_start > 0:
        step0 = warm_start * rms
    else:
        # High-rate estimate for a Laplacian source: b ≈ log2(2e·σ/√2) − log2 Δ.
        bits_per_weight = 8.0 * params.budget_bytes / max(numel, 1)
        step0 = rms * 3.84 * 2.0 ** (-min(bits_per_weight, 20.0))
    ladder = enc.grid is not None and enc.step_snap == "pow2"
    ln2 = math.log(2.0)
    search = _Search(
        evaluate=lambda x: enc.run(lam, steps=[math.exp(x)] * len(enc.tensors)),
        # Refined tensors (step factors < 1) must keep their levels in range too.
        lo=math.log(wmax / _MAX_LEVEL / min(enc.step_factors or [1.0])),
        hi=math.log(4.0 * wmax),
        increasing=False,
        slope0=-1.0,
        # On a power-of-two ladder the step moves in whole octaves (the grids are powers of 2).
        snap=(lambda x: ln2 * round(x / ln2)) if ladder else (lambda x: x),
        budget=params.budget_bytes,
        tolerance=params.tolerance,
        unit=ln2 if ladder else 0.0,
    )
    return search.run(math.log(step0), max_passes).result, None


def _search_tensor_rule(
    enc: _Encoder,
    tensors: Sequence[F32Array],
    params: RoundParams,
    warm_start: float | None,
    max_passes: int,
) -> tuple[codec.EncodeResult | None, int | None, float]:
    assert params.budget_bytes is not None
    lam = params.lam

    def s_of(x: float) -> int:
        return max(0, min(_MAX_S, round(math.exp(x) - 1.0)))

    def run_s(x: float) -> codec.EncodeResult:
        S = s_of(x)
        if enc.grid is not None:
            return enc.run(lam, steps=tensor_rule_steps(tensors, S))
        return enc.run(lam, S=S)

    s_search = _Search(
        evaluate=run_s,
        lo=0.0,
        hi=math.log(_MAX_S + 1.0),
        increasing=True,
        slope0=0.5,
        snap=lambda x: math.log(s_of(x) + 1.0),
        budget=params.budget_bytes,
        tolerance=params.tolerance,
    )
    S0 = round(warm_start) if warm_start is not None else params.S
    by_s = s_search.run(math.log(S0 + 1.0), max_passes)
    if by_s.result is not None and by_s.x is not None:
        return by_s.result, s_of(by_s.x), lam
    # Every pass was over the budget.
    if enc.passes >= max_passes:
        return None, None, lam
    if 0.0 not in by_s.seen:
        at_zero = run_s(0.0)
        if len(at_zero) <= params.budget_bytes * (1.0 + params.tolerance):
            return at_zero, 0, lam

    # Even S = 0 is too large: raise λ at S = 0.
    def run_lam(x: float) -> codec.EncodeResult:
        if enc.grid is not None:
            return enc.run(math.exp(x), steps=tensor_rule_steps(tensors, 0))
        return enc.run(math.exp(x), S=0)

    lam_search = _Search(
        evaluate=run_lam,
        lo=math.log(max(lam, 1e-3)),
        hi=math.log(_LAM_CEILING),
        increasing=False,
        slope0=-1.0,
        snap=lambda x: x,
        budget=params.budget_bytes,
        tolerance=params.tolerance,
    )
    by_lam = lam_search.run(math.log(max(2.0 * lam, 0.25)), max_passes - enc.passes)
    if by_lam.result is None or by_lam.x is None:
        return None, None, lam
    return by_lam.result, 0, math.exp(by_lam.x)
