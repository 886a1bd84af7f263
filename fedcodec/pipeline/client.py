"""Client side: differential updates with error feedback.

:class:`UpdateEncoder` turns locally trained weights into an
:class:`EncodedUpdate` against the base version the client started from::

    target   = (local − base) + residual      # float32
    target'  = sparsify(target)               # optional
    decoded  = codec reconstruction of target' (rate control, λ, Δ)
    residual = target − decoded               # float32, kept for next round

so whatever is not sent this round (quantization error, sparsified values)
is sent later: over rounds, the sum of decoded updates equals the sum of true
deltas minus the current residual.  A client that missed rounds may enter
with a decayed residual (``RoundParams.stale_decay``; off by default), which
drops the decayed part from that sum.  The residual state saves to ``.npz``
without pickle (:meth:`UpdateEncoder.save_state`) and survives a restart.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from fedcodec import codec
from fedcodec.pipeline._state import load_npz_state, save_npz_state
from fedcodec.pipeline.errors import ModelMismatchError, StateFormatError
from fedcodec.pipeline.model import F32Array, ModelSpec, ModelVersion, Tensors, reference_token
from fedcodec.pipeline.params import RoundParams, Sensitivity
from fedcodec.pipeline.ratecontrol import StepSnap, encode_with_params, importance_lam_scales
from fedcodec.pipeline.sparsify import sparsify
from fedcodec.pipeline.stats import EncodeStats, TensorEncodeStats, snr_db

__all__ = [
    "EncodedUpdate",
    "ImportanceScale",
    "SensitivityPlan",
    "StatisticsFn",
    "UpdateEncoder",
    "encode_tensors",
    "recode_with_reference",
    "sensitivity_plan",
]

_STATE_FORMAT = "fedcodec-update-encoder/1"

#: Measures tensors on the *coded* model (``base`` + the update as the server decodes it):
#: given every tensor of that model by name, it returns new values for some of them —
#: typically BatchNorm running statistics measured on local data
#: (:class:`fedcodec.torch.CodedStatistics`).  See :meth:`UpdateEncoder.encode`.
StatisticsFn = Callable[[Mapping[str, F32Array]], Mapping[str, npt.ArrayLike]]

#: How per-weight importance is normalized: ``"tensor"`` — to mean 1 in each tensor (the
#: codec's own rule); ``"global"`` — by one factor over the whole model.
ImportanceScale = Literal["tensor", "global"]
_IMPORTANCE_SCALES = ("tensor", "global")


@dataclass(frozen=True)
class EncodedUpdate:
    """An update ready to send.

    Attributes
    ----------
    data : bytes
        The codec container (tensors in model order).
    client_id : str
        Sender.
    round_number : int
        Round it belongs to.
    base_version : int
        Global version the delta was computed against.
    base_digest : str
        Digest of the base model the client held.
    num_examples : int
        FedAvg weight (local examples).
    stats : EncodeStats
        What the encoder did.
    uses_reference : bool
        Coded with the client's previous update as temporal reference
        (:class:`UpdateEncoder` with ``temporal_reference=True``): the server
        decodes it only with the same previous update
        (:class:`~fedcodec.pipeline.server.ClientReferences`).
    """

    data: bytes
    client_id: str
    round_number: int
    base_version: int
    base_digest: str
    num_examples: int
    stats: EncodeStats
    uses_reference: bool = False

    def __len__(self) -> int:
        return len(self.data)


@dataclass(frozen=True)
class SensitivityPlan:
    """What :class:`~fedcodec.pipeline.params.Sensitivity` decided for each tensor.

    Attributes
    ----------
    kinds : tuple of str
        ``"weight"``, ``"bias"``, ``"norm"`` or ``"stat"`` per tensor.
    step_factors : tuple of float
        Factor on the model step (1.0 for statistics, which use ``fixed_steps``).
    fixed_steps : tuple of float or None
        The step of each statistic (None for the other tensors).
    exempt : tuple of bool
        Tensors that sparsification leaves alone.
    ranking : list of ndarray or None
        Importance used to rank values for sparsification (per weight, on one
        scale for the whole model), None per tensor for η = 1.
    """

    kinds: tuple[str, ...]
    step_factors: tuple[float, ...]
    fixed_steps: tuple[float | None, ...]
    exempt: tuple[bool, ...]
    ranking: list[F32Array | None]


def _rms(array: np.ndarray) -> float:
    if not array.size:
        return 0.0
    flat = array.astype(np.float64).ravel()
    return math.sqrt(float(np.dot(flat, flat)) / flat.size)


def sensitivity_plan(
    spec: ModelSpec,
    target: Tensors,
    sensitivity: Sensitivity,
    importance: list[F32Array | None] | None,
    reference: Mapping[str, np.ndarray] | None,
) -> SensitivityPlan:
    """Per-tensor steps and sparsification rules (see :class:`Sensitivity`).

    Parameters
    ----------
    spec : ModelSpec
        The model.
    target : dict of str to ndarray
        What is about to be coded (the deltas, residual included).
    sensitivity : Sensitivity
        The policy.
    importance : list of ndarray or None
        Per-weight η per tensor (None where not given), or None.
    reference : mapping of str to ndarray, optional
        The weights the deltas apply to (the base model): the magnitude
        fallback and the scale of statistics (tensors it does not name use
        neither: the neutral importance, the statistic's own delta).

    Returns
    -------
    SensitivityPlan
    """
    kinds = [sensitivity.kind(name, shape) for name, shape in spec]
    given = [
        float(np.mean(e, dtype=np.float64))
        for e, k in zip(importance or [None] * len(spec), kinds, strict=True)
        if e is not None and e.size and k != "stat"
    ]
    neutral = sum(given) / len(given) if given else 1.0
    means: list[float] = []
    for i, (name, _shape) in enumerate(spec):
        eta = None if importance is None else importance[i]
        if eta is not None and eta.size:
            means.append(max(float(np.mean(eta, dtype=np.float64)), 1e-30))
        elif sensitivity.fallback == "magnitude" and reference is not None and name in reference:
            means.append(1.0 / max(_rms(np.asarray(reference[name])) ** 2, 1e-30))
        else:
            means.append(neutral)
    sizes = [math.prod(shape) for shape in spec.shapes]
    learned = [i for i, k in enumerate(kinds) if k != "stat"]
    numel = sum(sizes[i] for i in learned)
    model_mean = sum(sizes[i] * means[i] for i in learned) / numel if numel else 1.0
    factors: list[float] = []
    fixed: list[float | None] = []
    ranking: list[F32Array | None] = []
    for i, (name, shape) in enumerate(spec):
        if kinds[i] == "stat":
            scale = _rms(np.asarray(reference[name])) if reference is not None else 0.0
            scale = scale or _rms(target[name]) or 1.0
            factors.append(1.0)
            fixed.append(scale * 2.0**-sensitivity.stat_bits)
            ranking.append(None)
            continue
        factor = math.sqrt(model_mean / means[i])
        factors.append(min(1.0, max(1.0 / sensitivity.max_refine, factor)))
        fixed.append(None)
        eta = None if importance is None else importance[i]
        ranking.append(
            eta / np.float32(model_mean)
            if eta is not None
            else np.full(shape, means[i] / model_mean, dtype=np.float32)
        )
    exempt = tuple(
        k == "stat" or (not sensitivity.sparsify_vectors and len(shape) < 2)
        for k, shape in zip(kinds, spec.shapes, strict=True)
    )
    return SensitivityPlan(tuple(kinds), tuple(factors), tuple(fixed), exempt, ranking)


def encode_tensors(
    spec: ModelSpec,
    target: Tensors,
    params: RoundParams,
    *,
    importance: Mapping[str, npt.ArrayLike] | None = None,
    threads: int = 0,
    step_grid: list[float] | None = None,
    warm_start: float | None = None,
    importance_scale: ImportanceScale = "tensor",
    step_snap: StepSnap = "grid",
    reference: Mapping[str, np.ndarray] | None = None,
    dither_seed: int | None = None,
    temporal_reference: Mapping[str, np.ndarray] | None = None,
    compact: bool = False,
) -> tuple[bytes, list[F32Array], EncodeStats, float | None]:
    """Sparsify and encode ``target`` as ``params`` say (shared by uplink and downlink).

    ``importance_scale`` is as for :meth:`UpdateEncoder.encode`; ``step_grid``,
    ``warm_start`` and ``step_snap`` as for
    :func:`~fedcodec.pipeline.ratecontrol.encode_with_params`.  With
    ``params.sensitivity`` the per-tensor steps and sparsification follow
    :func:`sensitivity_plan` (``reference``: the weights the deltas apply
    to) and ``importance_scale`` is not used: the importance-derived steps
    already keep the relative importance of tensors.  ``temporal_reference``
    (by tensor name, missing names: none) is temporal side information for the
    codec (``codec.encode(..., reference=...)``): a tensor the decoder also
    holds, e.g. the same client's previous decoded update.  ``compact``: a compact
    container (shapes known to the decoder: ``spec.shapes``; one-byte steps off a
    ``step_grid``, see :func:`~fedcodec.pipeline.ratecontrol.encode_with_params`).

    Returns
    -------
    data : bytes
        The container.
    recon : list of ndarray
        The decoder's reconstruction per tensor (bit-exact).
    stats : EncodeStats
        Statistics (distortion against the un-sparsified ``target``).
    warm : float or None
        A warm start for the next budget search (see
        :func:`~fedcodec.pipeline.ratecontrol.encode_with_params`).
    """
    start = time.perf_counter()
    tensors = [target[name] for name in spec.names]
    eta: list[F32Array | None] | None = None
    if importance is not None:
        unknown = set(importance) - set(spec.names)
        if unknown:
            raise ModelMismatchError(f"importance names unknown tensors {sorted(unknown)!r}")
        eta = []
        for name, shape in spec:
            if name not in importance:
                eta.append(None)
                continue
            values = np.ascontiguousarray(importance[name], dtype=np.float32)
            if values.shape != shape:
                raise ModelMismatchError(
                    f"importance[{name!r}] has shape {values.shape}, the model has {shape}"
                )
            eta.append(values)
    if importance_scale not in _IMPORTANCE_SCALES:
        raise ValueError(
            f"importance_scale must be one of {_IMPORTANCE_SCALES}, got {importance_scale!r}"
        )
    plan = (
        None
        if params.sensitivity is None
        else sensitivity_plan(spec, target, params.sensitivity, eta, reference)
    )
    lam_scales = (
        importance_lam_scales(eta, spec.shapes)
        if eta is not None and importance_scale == "global" and plan is None
        else None
    )
    coded_input = tensors
    zeroed = 0
    if params.sparsification is not None and params.sparsification.active:
        if plan is None:
            coded_input, zeroed = sparsify(tensors, params.sparsification, eta)
        else:
            coded_input, zeroed = sparsify(
                tensors, params.sparsification, plan.ranking, exempt=plan.exempt
            )
    coded = encode_with_params(
        coded_input,
        params,
        importance=eta,
        threads=threads,
        step_grid=step_grid,
        warm_start=warm_start,
        lam_scales=lam_scales,
        step_snap=step_snap,
        step_factors=None if plan is None else plan.step_factors,
        fixed_steps=None if plan is None else plan.fixed_steps,
        dither_seed=dither_seed,
        temporal_reference=None
        if temporal_reference is None
        else [temporal_reference.get(name) for name in spec.names],
        compact=compact,
    )
    per_tensor: list[TensorEncodeStats] = []
    total_sig = total_err = 0.0
    numel = nonzeros = 0
    for name, t, rec, cs in zip(spec.names, tensors, coded.recon, coded.result.stats, strict=True):
        t64 = t.astype(np.float64).ravel()
        err = t64 - rec.astype(np.float64).ravel()
        sig_sq = float(np.dot(t64, t64))
        err_sq = float(np.dot(err, err))
        total_sig += sig_sq
        total_err += err_sq
        numel += t.size
        nonzeros += cs.nonzeros
        per_tensor.append(
            TensorEncodeStats(
                name=name,
                step=cs.step,
                bytes=cs.bytes,
                density=cs.density,
                mse=err_sq / t.size if t.size else 0.0,
                snr_db=snr_db(sig_sq, err_sq),
            )
        )
    stats = EncodeStats(
        bytes=len(coded.result.data),
        lam=coded.lam,
        S=coded.S,
        step_rule=params.step_rule,
        budget_bytes=params.budget_bytes if params.step is None else None,
        tolerance=params.tolerance,
        passes=coded.passes,
        density=nonzeros / numel if numel else 0.0,
        mse=total_err / numel if numel else 0.0,
        snr_db=snr_db(total_sig, total_err),
        sparsified=zeroed / numel if numel else 0.0,
        seconds=time.perf_counter() - start,
        tensors=tuple(per_tensor),
    )
    warm: float | None = None
    if params.budget_bytes is not None and params.step is None and not coded.all_zero_fallback:
        if params.step_rule == "model" and plan is not None:
            free = [i for i, f in enumerate(plan.fixed_steps) if f is None]
            sig = sum(_rms(tensors[i]) ** 2 * tensors[i].size for i in free)
            count = sum(tensors[i].size for i in free)
            rms = math.sqrt(sig / count) if count and sig > 0 else 0.0
            warm = (
                coded.steps[free[0]] / plan.step_factors[free[0]] / rms
                if rms > 0 and free
                else None
            )
        elif params.step_rule == "model":
            rms = math.sqrt(total_sig / numel) if numel and total_sig > 0 else 0.0
            warm = coded.steps[0] / rms if rms > 0 and coded.steps else None
        else:
            warm = float(coded.S) if coded.S is not None else None
    return coded.result.data, coded.recon, stats, warm


def update_dither_seed(params: RoundParams, round_number: int, client_id: str) -> int | None:
    """The dither seed rule of an update (None unless ``params.quantizer == "dither"``):
    ``codec.dither_seed(round_number, first 8 bytes of SHA-256(client_id), dither_salt)``."""
    if params.quantizer != "dither":
        return None
    client = int.from_bytes(hashlib.sha256(client_id.encode("utf-8")).digest()[:8], "little")
    return codec.dither_seed(max(round_number, 0), client, params.dither_salt)


def recode_with_reference(
    data: bytes,
    stats: EncodeStats,
    reference: Sequence[npt.ArrayLike | None],
    threads: int = 0,
    shapes: Sequence[tuple[int, ...]] | None = None,
) -> tuple[bytes, EncodeStats, bool]:
    """Code the levels of ``data`` again with a temporal reference, tensor by tensor
    where that is smaller.

    The levels, steps and so the reconstruction stay exactly those of ``data``
    (quantized without reference): the reference only changes the entropy coding,
    and each uniformly quantized tensor keeps whichever of its codings is smaller:
    as quantized, or its levels coded again by ``encode_levels(..., reference=...)``,
    which itself keeps the reference only where it pays (a tensor coded with a
    reference costs 4 more header bytes; small tensors rarely gain).  Quantizing
    *with* the reference in the RD loop moved the operating point instead: on the
    benchmark CNN (dense λ = 0.5, S = 16) 18 % more bytes for 14 % less squared
    error, no accuracy gained.

    Parameters
    ----------
    data : bytes
        A container coded without reference.
    stats : EncodeStats
        Its statistics (``bytes`` and the per-tensor bytes are updated).
    reference : sequence of array_like or None
        One reference per tensor (container order); None: none for that tensor.
    threads : int, optional
        Codec threads.
    shapes : sequence of shapes, optional
        The model's shapes: required when ``data`` is a compact container (the
        result is compact too).

    Returns
    -------
    data : bytes
        The container (``data`` itself when no tensor got smaller).
    stats : EncodeStats
    used : bool
        Whether some tensor is coded with its reference (read from the tensors'
        REFERENCE flags).
    """
    compact = codec.is_compact(data)
    expected = shapes if compact else None
    infos = codec.inspect(data, expected_shapes=expected)
    candidates = [
        i
        for i, info in enumerate(infos)
        if info.quantizer == "uniform" and info.slices > 0 and reference[i] is not None
    ]
    if not candidates:
        return data, stats, False
    levels = codec.decode_levels(data, threads=threads, expected_shapes=expected)
    # a tensor with ROWFINE rows (one-magnitude rows valued to 1/16 step, codec FORMAT.md
    # §8.1) does not decode to level * step: re-coding its levels would change it
    values = codec.decode(data, threads=threads, expected_shapes=expected)
    candidates = [
        i
        for i in candidates
        if np.array_equal(
            np.asarray(values[i]), levels[i][0].astype(np.float32) * np.float32(levels[i][1])
        )
    ]
    if not candidates:
        return data, stats, False
    chosen = set(candidates)
    again = codec.encode_levels(
        [lv for lv, _ in levels],
        [step for _, step in levels],
        threads=threads,
        reference=[reference[i] if i in chosen else None for i in range(len(infos))],
        compact=compact,
    )
    plain_parts = codec.split(data, expected_shapes=expected)
    ref_parts = codec.split(again.data, expected_shapes=expected)
    parts = list(plain_parts)
    saved = [0] * len(parts)
    for i in candidates:
        if len(ref_parts[i]) < len(plain_parts[i]):
            parts[i] = ref_parts[i]
            saved[i] = len(plain_parts[i]) - len(ref_parts[i])
    if not any(saved):
        return data, stats, False
    # the codec keeps each reference only where it pays: a re-coded tensor may have dropped it
    used = any(
        saved[i]
        and codec.inspect(parts[i], expected_shapes=expected)[i if compact else 0].reference_digest
        is not None
        for i in candidates
    )
    out = codec.join(parts, expected_shapes=expected)
    tensors = tuple(
        dataclasses.replace(t, bytes=t.bytes - saved[i]) if i < len(saved) else t
        for i, t in enumerate(stats.tensors)
    )
    return out, dataclasses.replace(stats, bytes=len(out), tensors=tensors), used


class UpdateEncoder:
    """Encodes a client's differential updates with error feedback.

    Parameters
    ----------
    spec : ModelSpec
        The model's names and shapes.
    client_id : str
        This client's id (written into every update).
    threads : int, optional
        Codec threads (0 = all CPUs).
    error_feedback : bool, optional
        Keep the residual (default True).  Without it every round codes
        ``local − base`` alone.
    temporal_reference : bool, optional
        Code each update with this client's previous decoded update as
        temporal side information (default False): the update is quantized
        as without, then each uniformly quantized tensor's levels are coded
        again with the reference where that is smaller
        (:func:`recode_with_reference`: the same levels and model, never more
        bytes).  Measured in ``fedcodec bench fl``'s round loop (MNIST MLP,
        10 clients, dense S = 16): −6.6 % uplink at λ = 0.1155, −2.3 % at
        λ = 0.5; on the benchmark CNN −0.5 % (``docs/codec.md``).  Updates
        with active sparsification are coded without reference (no gain
        measured: +1.1 % on top-2 %).  The server must keep per-client references
        (:class:`~fedcodec.pipeline.server.ClientReferences`); when it refuses
        an update for its reference (it holds another one, or none), call
        :meth:`drop_reference` and encode again.  The reference is not part
        of the saved state: after a restart the first update goes without.
    compact : bool, optional
        Code compact containers (``codec.encode(..., compact=True)``: no shapes,
        all-zero tensors omitted, one-byte steps — the steps are rounded to them,
        within 6.25 %) for a server that reads them (default False: the
        self-describing container every fedcodec version reads).  A transport sets
        it once the server said it reads them; it may change between updates.

    Examples
    --------
    >>> import numpy as np
    >>> from fedcodec.pipeline import ModelVersion, RoundParams, UpdateEncoder
    >>> base = ModelVersion.create(0, {"w": np.zeros((4, 8), np.float32)})
    >>> enc = UpdateEncoder(base.spec, "client-1")
    >>> local = {"w": np.full((4, 8), 0.01, np.float32)}
    >>> update = enc.encode(local, base, RoundParams(S=16), round_number=0, num_examples=10)
    >>> update.base_version, update.num_examples
    (0, 10)
    """

    def __init__(
        self,
        spec: ModelSpec,
        client_id: str,
        *,
        threads: int = 0,
        error_feedback: bool = True,
        temporal_reference: bool = False,
        compact: bool = False,
    ) -> None:
        self.spec = spec
        self.client_id = client_id
        self.threads = threads
        self.error_feedback = error_feedback
        self.temporal_reference = temporal_reference
        self.compact = compact
        self._reference: Tensors | None = None
        self._reference_token: str | None = None  # cache of reference_token
        # the state before the last encode that used a reference (drop_reference)
        self._undo: tuple[Tensors, float | None, int, int | None] | None = None
        self._residual: Tensors = spec.zeros()
        self._warm_start: float | None = None
        self.rounds_encoded = 0
        self.last_round: int | None = None

    @property
    def residual(self) -> Tensors:
        """The error-feedback residual (read-only views)."""
        out: Tensors = {}
        for name, array in self._residual.items():
            view = array.view()
            view.flags.writeable = False
            out[name] = view
        return out

    def residual_norm(self) -> float:
        """L2 norm of the residual over all tensors."""
        return math.sqrt(
            sum(
                float(np.dot(r.ravel().astype(np.float64), r.ravel()))
                for r in self._residual.values()
            )
        )

    def reset(self) -> None:
        """Forget the residual, the rate-control warm start and the temporal reference."""
        self._residual = self.spec.zeros()
        self._warm_start = None
        self._reference = None
        self._reference_token = None

    @property
    def reference(self) -> Tensors | None:
        """The temporal reference of the next update (the last update's
        reconstruction), or None."""
        return dict(self._reference) if self.has_reference and self._reference else None

    @property
    def has_reference(self) -> bool:
        """Whether the next update will be coded with a temporal reference."""
        return self.temporal_reference and self._reference is not None

    @property
    def reference_token(self) -> str | None:
        """:func:`~fedcodec.pipeline.model.reference_token` of the reference held
        (the last update's reconstruction), None without one."""
        ref = self._reference
        if ref is None:
            return None
        if self._reference_token is None:
            self._reference_token = reference_token([ref[name] for name in self.spec.names])
        return self._reference_token

    def sync_reference(self, server_token: str | None, *, offered: bool = True) -> bool:
        """Agree with the server on the next update's temporal reference.

        For transports that tell the client which reference the server holds
        for it (the Flower plugin; the server's
        :meth:`~fedcodec.pipeline.engine.RoundEngine.reference_token`) instead of
        refusing a reference-coded update afterwards: the reference is kept only
        when ``server_token`` names the one held here, so an update is never
        coded against a reference the server lacks (it restarted, evicted this
        client, or never decoded the last update) — no refusal, no lost round.

        Parameters
        ----------
        server_token : str or None
            The token of the reference the server holds for this client (None:
            it holds none).
        offered : bool, optional
            Whether the server keeps references at all; False turns
            :attr:`temporal_reference` off and drops the reference (no memory).

        Returns
        -------
        bool
            Whether the next update will be coded with the reference (unless it
            is sparsified).
        """
        self.temporal_reference = offered
        if not offered or server_token is None or server_token != self.reference_token:
            self._reference = None
            self._reference_token = None
        self._undo = None
        return self.has_reference

    def restore_reference(self, reference: Mapping[str, npt.ArrayLike] | None) -> None:
        """Hold ``reference`` (e.g. from a saved :attr:`reference`) as the next
        update's temporal reference (None: none)."""
        if reference is None:
            self._reference = None
        else:
            checked = self.spec.check(reference, "temporal reference")
            self._reference = {
                name: np.ascontiguousarray(checked[name], dtype=np.float32)
                for name in self.spec.names
            }
        self._reference_token = None

    def drop_reference(self) -> None:
        """Code the next update without temporal reference.

        Call it when the server refused the last update for its reference (it
        holds another previous update, or none): the encoder also goes back to
        the state before that update (residual, warm start), so encoding the
        same local weights again resends exactly what was refused, without
        reference.
        """
        if self._undo is not None:
            self._residual, self._warm_start, self.rounds_encoded, self.last_round = self._undo
            self._undo = None
        self._reference = None
        self._reference_token = None

    def residual_scale(self, params: RoundParams, round_number: int) -> float:
        """The factor on the residual of an update in ``round_number``.

        ``params.stale_decay ** m``, ``m`` the rounds missed since this
        encoder's last update (0 for the first update, or when rounds are
        consecutive or repeated).

        Parameters
        ----------
        params : RoundParams
            The client's round parameters (``stale_decay``).
        round_number : int
            The round of the update about to be encoded.

        Returns
        -------
        float
            1.0 when nothing decays.
        """
        if params.stale_decay == 1.0 or self.last_round is None:
            return 1.0
        missed = round_number - self.last_round - 1
        return float(params.stale_decay**missed) if missed > 0 else 1.0

    def encode(
        self,
        local: Mapping[str, npt.ArrayLike],
        base: ModelVersion,
        params: RoundParams,
        *,
        round_number: int,
        num_examples: int,
        importance: Mapping[str, npt.ArrayLike] | None = None,
        importance_scale: ImportanceScale = "tensor",
        statistics: StatisticsFn | None = None,
    ) -> EncodedUpdate:
        """Encode ``local − base`` (plus the residual) and update the residual.

        Parameters
        ----------
        local : mapping of str to array_like
            Locally trained weights (float32; every tensor of the model).
        base : ModelVersion
            The model the client started from (its version and digest go into
            the update).
        params : RoundParams
            The round's parameters; ``params.for_client(client_id)`` is applied
            here, so the server may send the full round parameters.
        round_number : int
            The round.
        num_examples : int
            Local examples (FedAvg weight), >= 1.
        importance : mapping of str to array_like, optional
            Per-weight importance η >= 0 by tensor name (e.g. accumulated
            squared gradients); missing names mean η = 1.
        importance_scale : {"tensor", "global"}, optional
            ``"tensor"`` (default): the codec normalizes η to mean 1 in each
            tensor, so a tensor that matters more as a whole gets no more
            bits.  ``"global"``: η is normalized by one factor over the whole
            model (the relative importance of tensors is kept, one λ is one
            slope for the whole model).  Implemented exactly, by quantizing
            each tensor at ``λ · M/m_t`` (``M``: model mean of η, ``m_t``:
            the tensor's) — one codec call per tensor and encode pass, then
            one lossless coding of the levels.
        statistics : callable, optional
            Called once with the coded model (``base`` plus the update as the
            server will decode it, every tensor by name, float32); the tensors
            it returns replace those of ``local`` and the update is coded
            again.  For normalization statistics: with sparse or coarse
            updates the server's weights move far less than the client's
            local ones, so statistics measured during local training do not
            fit the model the server builds; measured on the coded model they
            do (docs/bench/cnn.md, "Statistics of the coded model").  Costs a
            second encode pass.

        Returns
        -------
        EncodedUpdate

        Raises
        ------
        ModelMismatchError
            ``local``, ``base`` or ``importance`` do not match the model, or
            ``statistics`` returned a name, shape or value that does not.
        BudgetTooSmallError
            The budget is below the smallest possible container; the residual
            is unchanged.
        """
        if base.spec != self.spec:
            raise ModelMismatchError("the base model's names or shapes differ from the encoder's")
        if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples < 1:
            raise ValueError(f"num_examples must be an int >= 1, got {num_examples!r}")
        checked = self.spec.check(local, "local weights")
        params = params.for_client(self.client_id)
        # Sparsified updates: measured no gain from the reference (bench fl, MNIST, top-2 %:
        # +1.1 % uplink bytes; dense: -13 %), so they go without one.
        sparse = params.sparsification is not None and params.sparsification.active
        use_reference = self.has_reference and not sparse
        residual = self._residual
        scale = self.residual_scale(params, round_number)
        if scale != 1.0:
            residual = {name: r * np.float32(scale) for name, r in residual.items()}
        target: Tensors = {}

        def set_target(name: str, value: F32Array) -> None:
            delta = np.subtract(value, base.tensors[name], dtype=np.float32)
            target[name] = delta + residual[name] if self.error_feedback else delta

        def code() -> tuple[bytes, list[F32Array], EncodeStats, float | None]:
            return encode_tensors(
                self.spec,
                target,
                params,
                importance=importance,
                threads=self.threads,
                warm_start=self._warm_start,
                importance_scale=importance_scale,
                reference=base.tensors,
                dither_seed=update_dither_seed(params, round_number, self.client_id),
                compact=self.compact,
            )

        for name in self.spec.names:
            set_target(name, checked[name])
        data, recon, stats, warm = code()
        if statistics is not None:
            coded = {
                name: np.add(base.tensors[name], r, dtype=np.float32)
                for name, r in zip(self.spec.names, recon, strict=True)
            }
            measured = statistics(coded)
            if not isinstance(measured, Mapping):
                raise ModelMismatchError(
                    "statistics must return a mapping of name to array, "
                    f"got {type(measured).__name__}"
                )
            unknown = [k for k in measured if k not in self.spec.names]
            if unknown:
                raise ModelMismatchError(
                    f"statistics returned names the model lacks: {sorted(map(str, unknown))}"
                )
            if measured:
                replaced = self.spec.check({**coded, **measured}, "measured statistics")
                for name in measured:
                    set_target(name, replaced[name])
                data, recon, stats, warm = code()
        uses_reference = False
        if use_reference:
            assert self._reference is not None
            data, stats, uses_reference = recode_with_reference(
                data,
                stats,
                [self._reference[name] for name in self.spec.names],
                self.threads,
                shapes=self.spec.shapes,
            )
        self._undo = (
            (self._residual, self._warm_start, self.rounds_encoded, self.last_round)
            if uses_reference
            else None
        )
        if self.temporal_reference:
            # what the server decodes from this update: the next update's reference
            self._reference = dict(zip(self.spec.names, recon, strict=True))
            self._reference_token = None
        if self.error_feedback:
            self._residual = {
                name: np.subtract(target[name], r, dtype=np.float32)
                for name, r in zip(self.spec.names, recon, strict=True)
            }
        if warm is not None:
            self._warm_start = warm
        self.rounds_encoded += 1
        self.last_round = round_number
        return EncodedUpdate(
            data=data,
            client_id=self.client_id,
            round_number=round_number,
            base_version=base.version,
            base_digest=base.digest,
            num_examples=num_examples,
            stats=stats,
            uses_reference=uses_reference,
        )

    # -- state --------------------------------------------------------------

    def state(self) -> tuple[dict[str, F32Array], dict[str, Any]]:
        """The state as (residual arrays by tensor name, JSON-able metadata).

        The in-memory form of :meth:`save_state`, e.g. for Flower's
        ``context.state``.
        """
        meta: dict[str, Any] = {
            "format": _STATE_FORMAT,
            "client_id": self.client_id,
            "spec": self.spec.to_json(),
            "error_feedback": self.error_feedback,
            "warm_start": self._warm_start,
            "rounds_encoded": self.rounds_encoded,
            "last_round": self.last_round,
        }
        return {name: self._residual[name].copy() for name in self.spec.names}, meta

    def load_state(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        """Restore what :meth:`state` returned.

        Raises
        ------
        StateFormatError
            Another format, another model, or another client id.
        """
        if meta.get("format") != _STATE_FORMAT:
            raise StateFormatError(f"unknown update-encoder state format {meta.get('format')!r}")
        try:
            spec = ModelSpec.from_json(meta["spec"])
        except (KeyError, ModelMismatchError) as exc:
            raise StateFormatError(f"state has no valid model spec: {exc}") from exc
        if spec != self.spec:
            raise StateFormatError("the saved state belongs to a model with other names or shapes")
        if meta.get("client_id") != self.client_id:
            raise StateFormatError(
                f"the saved state belongs to client {meta.get('client_id')!r}, "
                f"not {self.client_id!r}"
            )
        try:
            residual = self.spec.check(arrays, "saved residual")
        except ModelMismatchError as exc:
            raise StateFormatError(str(exc)) from exc
        if any(np.asarray(arrays[n]).dtype != np.float32 for n in self.spec.names):
            raise StateFormatError("the saved residual must be float32")
        warm = meta.get("warm_start")
        self._residual = {name: residual[name].copy() for name in self.spec.names}
        self._warm_start = float(warm) if isinstance(warm, int | float) else None
        self.rounds_encoded = int(meta.get("rounds_encoded", 0))
        last = meta.get("last_round")
        self.last_round = int(last) if isinstance(last, int) else None
        self.error_feedback = bool(meta.get("error_feedback", True))

    def save_state(self, path: str | os.PathLike[str]) -> None:
        """Write the state to an ``.npz`` file (atomically, no pickle)."""
        arrays, meta = self.state()
        save_npz_state(path, arrays, meta)

    @classmethod
    def restore(
        cls, path: str | os.PathLike[str], spec: ModelSpec, client_id: str, *, threads: int = 0
    ) -> UpdateEncoder:
        """An encoder with the state saved at ``path``.

        Raises
        ------
        StateFormatError
            Unreadable file, or the state of another model or client.
        """
        encoder = cls(spec, client_id, threads=threads)
        arrays, meta = load_npz_state(path)
        encoder.load_state(arrays, meta)
        return encoder
