"""Downlink: coded changes of the global model, keyframes, digest checks.

The server publishes every global version into one *downlink stream*: the
model ``R_v`` that every client following the stream reconstructs.  Version
``v`` is sent as the coded difference ``global_v − R_{v−1}``; since that
difference contains what earlier messages failed to deliver, this is error
feedback on the server side, and ``global_v − R_v`` is the server's residual.

Exactness.  The stream is ``R_v = O + C_v`` (one float32 add), where ``O`` is
the stream's *origin* and ``C_v`` its *accumulated change*.  Every step used
on the stream is an integer multiple of a fixed per-tensor power-of-two grid
``g`` (set at the stream start: ``g ≈ |w|max · 2**-keyframe_bits``), so
``C_v = C_{v−1} + decode(delta_v)`` stays exactly on that grid (integers
times ``g``, with no rounding in the float32 adds while ``|C_v/g| < 2**24``).
Two kinds of stream:

* **Keyframe stream** (the default): ``O = 0``, so ``R_v = C_v`` is on the
  grid.  The stream starts with a keyframe of the first published model,
  rounded to the grid (near-lossless: at most ``g/2`` per weight).
* **Shared-initial stream** (``DownlinkEncoder(initial=...)`` or
  ``publish(model, known_to_all=True)``): ``O`` is an initial model every
  client already holds (generated from a shared seed, or shipped with the
  app: :class:`ModelReceiver` ``(initial=...)``), bit for bit, and
  ``C_0 = 0``.  Version 0 never travels; ``R_0 = O + 0`` is ``O`` itself
  (only a ``-0.0`` weight becomes ``+0.0``).  ``O`` need not lie on any grid.

Because ``C`` is exact, every way of reaching version ``w`` lands on the same
``C_w`` and hence on the same bits of ``R_w``: the chain of per-version
deltas, one *cumulative delta* — the lossless code of ``C_w − C_v`` — or a
*keyframe* — the lossless code of ``C_w`` (the client adds ``O``).  Lossless
codes use the coarsest exact step per tensor, ``g · gcd(levels)``.  A client
and the server run the same float32 adds, and the client checks the SHA-256
digest of the result.  One encode per version serves every client, and a
cumulative delta ``(v, w)`` is coded once for all clients that hold ``v``.

:meth:`DownlinkEncoder.package_for` sends a client that holds a known version
``v`` (in a shared-initial stream: any client the server has not served yet
is assumed to hold the initial version) the smallest of: the chain of
deltas since ``v`` (while ``v`` is among the last ``keep`` versions), the
cumulative delta ``v → latest`` (by default only in a shared-initial
stream), and a keyframe.  A client with an unknown
version or a digest mismatch gets the keyframe.

If the accumulated change grows beyond the grid's headroom, the stream
restarts as a keyframe stream with a new grid: every client then gets a
keyframe.
"""

from __future__ import annotations

import math
import os
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from fedcodec import codec
from fedcodec.errors import FC_ERR_MISMATCH, InvalidParameterError
from fedcodec.pipeline._state import load_npz_state, save_npz_state
from fedcodec.pipeline.client import encode_tensors, recode_with_reference
from fedcodec.pipeline.errors import (
    DigestMismatchError,
    InitialModelError,
    ModelMismatchError,
    StateFormatError,
)
from fedcodec.pipeline.model import (
    F32Array,
    ModelSpec,
    ModelVersion,
    Tensors,
    digest_matches,
    model_digest,
)
from fedcodec.pipeline.params import RoundParams
from fedcodec.pipeline.ratecontrol import StepSnapPolicy, resolve_step_snap, step_snap_policy
from fedcodec.pipeline.stats import EncodeStats

__all__ = [
    "DEFAULT_CUMULATIVE_CACHE_BYTES",
    "DEFAULT_KEYFRAME_BITS",
    "DownlinkEncoder",
    "DownlinkPackage",
    "ModelReceiver",
    "Release",
    "compact_package",
    "initial_from_bytes",
    "initial_to_bytes",
]

#: Grid resolution of the stream: g ≈ |w|max · 2**-bits per tensor (10 bits: a keyframe of a
#: Gaussian tensor has ≈ 63 dB SNR and costs ≈ 11 bits per weight).
DEFAULT_KEYFRAME_BITS = 10
#: Memory for coded cumulative deltas (all of them serve the latest version).
DEFAULT_CUMULATIVE_CACHE_BYTES = 32 * 2**20
# Grid levels stay below 2**24, where float32 holds integers exactly.
_GRID_LIMIT = float(2**24)
_RECEIVER_FORMAT = "fedcodec-model-receiver/1"
_RECEIVER_FORMAT_INITIAL = "fedcodec-model-receiver/2"
_DOWNLINK_FORMAT = "fedcodec-downlink/1"
_DOWNLINK_FORMAT_INITIAL = "fedcodec-downlink/2"


@dataclass(frozen=True)
class DownlinkPackage:
    """What a client receives to reach the latest version.

    Attributes
    ----------
    version : int
        The version the client holds after applying it.
    digest : str
        :func:`~fedcodec.pipeline.model.model_digest` of that model, or a prefix of
        it of at least 32 hex digits (a transport may truncate it:
        :func:`~fedcodec.pipeline.model.digest_matches`).
    keyframe : bytes or None
        The lossless code of the stream's accumulated change (the full model
        in a keyframe stream), or None.
    from_version : int or None
        The version ``deltas`` start from (None with a keyframe).
    deltas : tuple of bytes
        Coded changes, applied in order (empty with a keyframe, or when the
        client is up to date): the per-version deltas, or one cumulative
        delta.
    initial_version : int or None
        In a shared-initial stream, the version of the initial model the
        package is relative to; None in a keyframe stream.
    initial_digest : str or None
        Digest of that initial model (the receiver checks it holds it).
    initial : bytes or None
        The initial model itself (:func:`initial_to_bytes`), only when asked
        for (``package_for(..., send_initial=True)``).
    held_delta_reference : bool
        The first of ``deltas`` is coded against the decoded delta of
        ``from_version``, which the client said it holds
        (``package_for(..., holds_delta=True)``,
        :attr:`ModelReceiver.holds_delta`).  Each later delta of a chain may
        be coded against the one before it, which the receiver decodes first.
    """

    version: int
    digest: str
    keyframe: bytes | None
    from_version: int | None
    deltas: tuple[bytes, ...] = ()
    initial_version: int | None = None
    initial_digest: str | None = None
    initial: bytes | None = None
    held_delta_reference: bool = False

    @property
    def is_keyframe(self) -> bool:
        """Whether this is a keyframe."""
        return self.keyframe is not None

    @property
    def relative_to_initial(self) -> bool:
        """Whether the package belongs to a shared-initial stream."""
        return self.initial_digest is not None

    def __len__(self) -> int:
        """Payload bytes (containers, codec headers and an attached initial model included)."""
        return (
            (len(self.keyframe) if self.keyframe is not None else 0)
            + sum(len(d) for d in self.deltas)
            + (len(self.initial) if self.initial is not None else 0)
        )


@dataclass(frozen=True)
class Release:
    """One published version of the downlink stream.

    Attributes
    ----------
    version : int
        Global version.
    digest : str
        Digest of the stream's model (what clients reconstruct).
    delta : bytes or None
        The coded change from the previous stream version (None at a stream
        start).
    stats : EncodeStats or None
        Encoder statistics of ``delta``.
    residual_rms : float
        RMS of ``global − stream model`` after this version.
    delta_ref : bytes or None
        ``delta``'s levels coded with the previous version's delta as temporal
        reference (:class:`DownlinkEncoder` with ``temporal_reference=True``),
        when that is smaller; decoding it needs that delta.
    """

    version: int
    digest: str
    delta: bytes | None
    stats: EncodeStats | None
    residual_rms: float
    delta_ref: bytes | None = None


def _grid(spec: ModelSpec, model: Tensors, bits: int) -> list[float]:
    """Per-tensor power-of-two grid ≈ |w|max · 2**-bits (model-wide max for all-zero tensors)."""
    maxima = [float(np.max(np.abs(model[n]))) if model[n].size else 0.0 for n in spec.names]
    model_max = max(maxima, default=0.0) or 1.0
    return [2.0 ** math.floor(math.log2((m or model_max) * 2.0**-bits)) for m in maxima]


def _on_grid(values: F32Array, g: float) -> bool:
    levels = np.rint(values.astype(np.float64) / g)
    return bool(np.all(np.abs(levels) < _GRID_LIMIT)) and bool(
        np.array_equal(levels.astype(np.float32) * np.float32(g), values)
    )


def _lossless(spec: ModelSpec, tensors: Tensors, grid: list[float], threads: int) -> bytes:
    """The lossless code of on-grid tensors, each at its coarsest exact step ``g · gcd``.

    ``decode`` returns exactly ``tensors`` (up to the sign of zeros, which
    decode as ``+0.0``): ``float32(level) * float32(g · k)`` is the exact
    product, ``g`` being a power of two and ``|level · k| < 2**24``.
    """
    levels: list[np.ndarray] = []
    steps: list[float] = []
    for name, g in zip(spec.names, grid, strict=True):
        grid_levels = np.rint(tensors[name].astype(np.float64) / g).astype(np.int64)
        nonzero = np.abs(grid_levels[grid_levels != 0])
        k = int(np.gcd.reduce(nonzero)) if nonzero.size else 1
        levels.append((grid_levels // k).astype(np.int32))
        steps.append(g * k)
    return codec.encode_levels(levels, steps, threads=threads).data


def _plus(spec: ModelSpec, a: Mapping[str, F32Array], b: Mapping[str, F32Array]) -> Tensors:
    return {name: np.add(a[name], b[name], dtype=np.float32) for name in spec.names}


def compact_package(package: DownlinkPackage) -> DownlinkPackage:
    """``package`` with its containers rewritten compact (codec FORMAT.md §2-3).

    The coded tensors are copied as they are (:func:`fedcodec.codec.convert`), so a
    receiver that knows the model's shapes decodes exactly the same model from fewer
    bytes (no shapes, no all-zero tensors, short steps).
    """
    keyframe = package.keyframe
    return replace(
        package,
        keyframe=None if keyframe is None else codec.convert(keyframe, compact=True),
        deltas=tuple(codec.convert(d, compact=True) for d in package.deltas),
    )


def initial_to_bytes(model: ModelVersion) -> bytes:
    """A model's float32 weights, little-endian, tensors in model order (what
    :attr:`DownlinkPackage.initial` carries; 4 bytes per weight)."""
    return b"".join(
        np.ascontiguousarray(model.tensors[name], dtype="<f4").tobytes()
        for name in model.spec.names
    )


def initial_from_bytes(
    data: bytes, spec: ModelSpec, *, version: int, digest: str | None = None
) -> ModelVersion:
    """Inverse of :func:`initial_to_bytes`.

    Raises
    ------
    ModelMismatchError
        ``data`` is not ``4 · spec.numel`` bytes.
    DigestMismatchError
        The model does not hash to ``digest``.
    """
    if len(data) != spec.float32_bytes:
        raise ModelMismatchError(
            f"an initial model of this spec has {spec.float32_bytes} bytes, got {len(data)}"
        )
    flat = np.frombuffer(data, dtype="<f4")
    tensors: dict[str, np.ndarray] = {}
    offset = 0
    for name, shape in spec:
        count = math.prod(shape)
        tensors[name] = flat[offset : offset + count].reshape(shape)
        offset += count
    model = ModelVersion.create(version, tensors, spec)
    if digest is not None and model.digest != digest:
        raise DigestMismatchError(
            f"the initial model received hashes to {model.digest[:16]}…, "
            f"the server named {digest[:16]}…"
        )
    return model


class DownlinkEncoder:
    """The server's downlink stream.

    Parameters
    ----------
    spec : ModelSpec
        The model.
    params : RoundParams, optional
        How version changes are coded (λ, S or step, or a byte budget; the
        step rule); may be changed per version in :meth:`publish`.
    keep : int, optional
        Versions a client may lag and still get the chain of per-version
        deltas (or a cumulative delta) instead of a keyframe.
    keyframe_bits : int, optional
        Grid resolution (see the module docs).
    threads : int, optional
        Codec threads.
    initial : ModelVersion, optional
        A model every client already holds (e.g. generated from a shared
        seed): it is published at once as the origin of a shared-initial
        stream (as :meth:`publish` with ``known_to_all=True``) and never
        sent as a keyframe.
    cumulative : bool, optional
        Offer a client that lags by two or more versions one coded delta
        ``latest − held`` when that is smaller than the chain of deltas and
        than the keyframe.  Default (None): on in a shared-initial stream,
        off in a keyframe stream (where packages stay as they were: chains
        or keyframes).
    cache_bytes : int, optional
        Memory budget of the coded cumulative deltas kept for reuse (least
        recently used first out).
    step_snap : {"grid", "pow2", "auto"}, optional
        How the steps of version deltas snap to the grid: to any integer
        multiple (default), or to a power-of-two multiple — steps of
        different versions then divide each other, so the accumulated
        change has small levels at a coarse step and cumulative deltas and
        keyframes cost less (a byte budget is then met in factors of 2 of
        the step) — or ``"auto"``: power-of-two for versions coded with
        active sparsification and, while some client lags behind the
        stream (partial participation: catch-ups to come), for dense ones
        too; the grid for dense versions every client follows one by one
        (:func:`~fedcodec.pipeline.ratecontrol.resolve_step_snap`).
    temporal_reference : bool, optional
        Also code each version delta with the previous version's delta as
        temporal reference (the same levels, kept when smaller:
        :func:`~fedcodec.pipeline.client.recode_with_reference`) and send that
        coding to clients that hold the previous delta: inside a chain always,
        as its first delta when ``package_for(..., holds_delta=True)``
        (:attr:`ModelReceiver.holds_delta`).  Default False.
    """

    def __init__(
        self,
        spec: ModelSpec,
        *,
        params: RoundParams | None = None,
        keep: int = 8,
        keyframe_bits: int = DEFAULT_KEYFRAME_BITS,
        threads: int = 0,
        initial: ModelVersion | None = None,
        cumulative: bool | None = None,
        cache_bytes: int = DEFAULT_CUMULATIVE_CACHE_BYTES,
        step_snap: StepSnapPolicy = "grid",
        temporal_reference: bool = False,
    ) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        if not 2 <= keyframe_bits <= 20:
            raise ValueError(f"keyframe_bits must be in 2..20, got {keyframe_bits}")
        if cache_bytes < 0:
            raise ValueError(f"cache_bytes must be >= 0, got {cache_bytes}")
        self.spec = spec
        self.params = params or RoundParams()
        self.keep = keep
        self.keyframe_bits = keyframe_bits
        self.threads = threads
        step_snap = step_snap_policy(step_snap)
        self.cumulative = cumulative
        self.cache_bytes = cache_bytes
        self.step_snap: StepSnapPolicy = step_snap
        self.temporal_reference = temporal_reference
        self._reset()
        if initial is not None:
            self.publish(initial, known_to_all=True)

    def _reset(self) -> None:
        """Forget the stream (as constructed, nothing published)."""
        self._grid: list[float] | None = None
        self._stream: Tensors | None = None  # R_latest
        self._origin: ModelVersion | None = None  # O of a shared-initial stream
        self._change: Tensors | None = None  # C_latest of a shared-initial stream (R = O + C)
        self._latest: int | None = None
        self._releases: OrderedDict[int, Release] = OrderedDict()
        self._keyframe_cache: tuple[int, bytes] | None = None
        self._cumulative_cache: OrderedDict[tuple[int, int], bytes] = OrderedDict()
        self._warm: float | None = None
        # the latest version's decoded delta (the next version's temporal reference)
        self._last_step: list[F32Array] | None = None
        self.client_versions: dict[str, int] = {}
        self.bytes_sent = 0
        self.keyframes_sent = 0
        self.keyframe_bytes_sent = 0
        self.cumulative_sent = 0
        self.cumulative_bytes_sent = 0

    # -- publishing ---------------------------------------------------------

    @property
    def latest_version(self) -> int | None:
        """The newest published version."""
        return self._latest

    @property
    def grid(self) -> list[float] | None:
        """The stream's per-tensor grid."""
        return None if self._grid is None else list(self._grid)

    @property
    def initial(self) -> ModelVersion | None:
        """The shared initial model of a shared-initial stream (None in a keyframe stream)."""
        return self._origin

    def stream_model(self) -> ModelVersion:
        """The model every up-to-date client holds (the latest stream version)."""
        if self._stream is None or self._latest is None:
            raise LookupError("nothing published yet")
        return ModelVersion.create(self._latest, self._stream, self.spec)

    def digest_of(self, version: int) -> str | None:
        """The stream digest of a kept version (or of the initial version), or None."""
        release = self._releases.get(version)
        if release is None and self._origin is not None and version == self._origin.version:
            return self._origin_digest()
        return None if release is None else release.digest

    def _origin_digest(self) -> str:
        """Digest of ``R_0 = O + 0`` (equal to the initial model's unless it has -0.0s)."""
        assert self._origin is not None
        zero = self.spec.zeros()
        return model_digest(self.spec, _plus(self.spec, self._origin.tensors, zero))

    def _statistics(self, coding: RoundParams) -> dict[str, np.ndarray] | None:
        """The stream model's normalization statistics (``coding.sensitivity``'s kinds),
        the scale of their steps; None without a sensitivity policy or a stream."""
        sens = coding.sensitivity
        if sens is None or self._stream is None:
            return None
        return {
            name: self._stream[name]
            for name, shape in self.spec
            if sens.kind(name, shape) == "stat"
        }

    def _change_of_stream(self) -> Tensors:
        """``C_latest``: the accumulated change (the stream model itself in a keyframe stream)."""
        if self._change is not None:
            return self._change
        assert self._stream is not None
        return self._stream

    def publish(
        self, model: ModelVersion, params: RoundParams | None = None, *, known_to_all: bool = False
    ) -> Release:
        """Add a new global version to the stream.

        The first version (and any after a grid restart) starts the stream:
        clients get it as a keyframe — unless it is ``known_to_all``.  Later
        versions are coded as the change from the previous stream model,
        with ``params`` (default: the encoder's).

        Parameters
        ----------
        model : ModelVersion
            The new global model (its version must be newer than the latest).
        params : RoundParams, optional
            How to code this version's change.
        known_to_all : bool, optional
            Only for the first version: every client already holds ``model``
            bit for bit (a shared seed or a model shipped with the app), so
            it starts a shared-initial stream and never travels (clients
            hold it through :class:`ModelReceiver` ``(initial=...)``).

        Returns
        -------
        Release
            Publishing the initial model of a shared-initial stream again,
            while it is the latest version, returns its release.
        """
        if model.spec != self.spec:
            raise ModelMismatchError("published model does not match the downlink's model")
        origin = self._origin
        if (
            origin is not None
            and model.version == origin.version == self._latest
            and model.digest == origin.digest
        ):
            # The initial model again (e.g. a caller that publishes version 0 itself).
            return self._releases[origin.version]
        if self._latest is not None and model.version <= self._latest:
            raise ValueError(f"version {model.version} is not newer than {self._latest}")
        if known_to_all:
            if self._latest is not None:
                raise ValueError("only the first published version can be known to all clients")
            return self._start_from_initial(model)
        if self._stream is None or self._grid is None:
            return self._restart(model)
        target = {
            name: np.subtract(model.tensors[name], self._stream[name], dtype=np.float32)
            for name in self.spec.names
        }
        coding = params or self.params
        if coding.quantizer == "dither":
            # A dithered reconstruction is off the stream's grid: the stream would not be exact.
            raise ValueError('quantizer: the downlink cannot use "dither" (use uniform or trellis)')
        data, recon, stats, warm = encode_tensors(
            self.spec,
            target,
            coding,
            threads=self.threads,
            step_grid=self._grid,
            warm_start=self._warm,
            step_snap=resolve_step_snap(self.step_snap, coding, catching_up=self._lagging()),
            # Statistics at 2**-stat_bits of the statistic's RMS in the stream model (as on
            # the uplink), not of this round's change (a step that fine snaps to the grid,
            # whatever stat_bits says); the other tensors keep the neutral importance.
            reference=self._statistics(coding),
        )
        if warm is not None:
            self._warm = warm
        step = dict(zip(self.spec.names, recon, strict=True))
        change = _plus(self.spec, self._change_of_stream(), step)
        if not all(
            _on_grid(change[n], g) for n, g in zip(self.spec.names, self._grid, strict=True)
        ):
            # The model outgrew the grid's headroom: start a new stream.
            return self._restart(model)
        if self._origin is not None:
            self._change = change
            self._stream = _plus(self.spec, self._origin.tensors, change)
        else:
            self._stream = change
        delta_ref: bytes | None = None
        if self.temporal_reference and self._last_step is not None:
            coded_ref, _, used = recode_with_reference(data, stats, self._last_step, self.threads)
            delta_ref = coded_ref if used else None
        release = Release(
            version=model.version,
            digest=model_digest(self.spec, self._stream),
            delta=data,
            stats=stats,
            residual_rms=self._residual_rms(model),
            delta_ref=delta_ref,
        )
        self._add(release)
        self._last_step = list(recon)
        return release

    def note_held(self, client_ids: Iterable[str], version: int) -> None:
        """Record that ``client_ids`` hold ``version`` (or a newer one they were sent): e.g.
        the clients whose updates of a round, all based on ``version``, were accepted.

        What a client was sent is recorded when :meth:`package_for` serves it; a server
        that restarts in the middle of a round reloads the versions sent as of the last
        round's end, but the round's accepted updates name their base.  Recording them
        keeps the record — which ``step_snap="auto"`` reads — the same as in a run that
        never stopped."""
        for client_id in client_ids:
            self.client_versions[client_id] = max(
                version, self.client_versions.get(client_id, version)
            )

    def _lagging(self) -> bool:
        """Whether a client this stream served holds a version older than the latest
        (its next catch-up spans several versions).

        Clients at the initial version of a shared-initial stream do not count: every
        client the server has not served holds it, and whether such a client was told
        "up to date" depends on the transport (a Flower node is, an edge client that
        holds the announced version does not ask), so counting them would make the
        transports code different bytes."""
        latest = self._latest
        if latest is None:
            return False
        floor = self._origin.version if self._origin is not None else -1
        return any(floor < v < latest for v in self.client_versions.values())

    def _restart(self, model: ModelVersion) -> Release:
        self._grid = _grid(self.spec, model.tensors, self.keyframe_bits)
        rounded = {
            n: (np.rint(model.tensors[n].astype(np.float64) / g) * g).astype(np.float32)
            for n, g in zip(self.spec.names, self._grid, strict=True)
        }
        data = _lossless(self.spec, rounded, self._grid, self.threads)
        decoded = codec.decode(
            data,
            names=list(self.spec.names),
            threads=self.threads,
            expected_shapes=self.spec.shapes,
        )
        self._stream = {name: decoded[name] for name in self.spec.names}
        self._origin = None
        self._change = None
        release = self._first_release(model)
        self._keyframe_cache = (model.version, data)
        return release

    def _start_from_initial(self, model: ModelVersion) -> Release:
        self._grid = _grid(self.spec, model.tensors, self.keyframe_bits)
        self._origin = model
        self._change = self.spec.zeros()
        self._stream = _plus(self.spec, model.tensors, self._change)
        return self._first_release(model)

    def _first_release(self, model: ModelVersion) -> Release:
        """Release ``model`` as the first version of a new stream (its stream model is
        set): every earlier release and client version is forgotten, no delta leads to it."""
        assert self._stream is not None
        self._releases.clear()
        self.client_versions.clear()
        self._last_step = None
        release = Release(
            version=model.version,
            digest=model_digest(self.spec, self._stream),
            delta=None,
            stats=None,
            residual_rms=self._residual_rms(model),
        )
        self._add(release)
        return release

    def _add(self, release: Release) -> None:
        self._releases[release.version] = release
        self._latest = release.version
        while len(self._releases) > self.keep + 1:
            self._releases.popitem(last=False)
        # Packages always lead to the latest version: older cumulative deltas are dead.
        self._cumulative_cache.clear()

    def _residual_rms(self, model: ModelVersion) -> float:
        assert self._stream is not None
        sq = 0.0
        for name in self.spec.names:
            d = model.tensors[name].astype(np.float64) - self._stream[name]
            sq += float(np.dot(d.ravel(), d.ravel()))
        return math.sqrt(sq / max(self.spec.numel, 1))

    def keyframe(self) -> bytes:
        """The lossless code of the latest accumulated change (cached per version).

        In a keyframe stream that is the stream model itself; in a
        shared-initial stream the client adds it to the initial model.
        """
        if self._stream is None or self._grid is None or self._latest is None:
            raise LookupError("nothing published yet")
        if self._keyframe_cache is None or self._keyframe_cache[0] != self._latest:
            data = _lossless(self.spec, self._change_of_stream(), self._grid, self.threads)
            self._keyframe_cache = (self._latest, data)
        return self._keyframe_cache[1]

    # -- cumulative deltas ---------------------------------------------------

    def _chain(
        self, have: int, *, references: bool = False, holds_delta: bool = False
    ) -> tuple[tuple[bytes, ...], bool] | None:
        """The per-version deltas from ``have`` to the latest version, if all are kept,
        and whether the first is coded against the client's held delta of ``have``.

        ``references``: a delta's reference coding where there is one — after the
        first delta (the client decoded the previous one just before), and for the
        first one when the client ``holds_delta`` (of ``have``)."""
        if have not in self._releases:
            return None
        deltas: list[bytes] = []
        on_held = False
        for version, release in self._releases.items():
            if version <= have:
                continue
            if release.delta is None:
                return None
            previous_held = bool(deltas) or holds_delta
            if references and previous_held and release.delta_ref is not None:
                on_held = on_held or not deltas
                deltas.append(release.delta_ref)
            else:
                deltas.append(release.delta)
        return tuple(deltas), on_held

    def cumulative_delta(self, have: int) -> bytes | None:
        """The lossless code of ``C_latest − C_have`` (one delta from ``have``), or None.

        Available when ``have`` is the initial version of a shared-initial
        stream (the delta is then the keyframe's code) or every delta after
        ``have`` is kept.  Coded once per ``(have, latest)`` and cached
        within ``cache_bytes``.
        """
        if self._latest is None or self._grid is None or have >= self._latest:
            return None
        key = (have, self._latest)
        cached = self._cumulative_cache.get(key)
        if cached is not None:
            self._cumulative_cache.move_to_end(key)
            return cached
        if self._origin is not None and have == self._origin.version:
            data = self.keyframe()
        else:
            found = self._chain(have)
            if found is None:
                return None
            total = self.spec.zeros()
            for delta in found[0]:
                decoded = codec.decode(
                    delta,
                    names=list(self.spec.names),
                    threads=self.threads,
                    expected_shapes=self.spec.shapes,
                )
                total = _plus(self.spec, total, decoded)
            if not all(
                _on_grid(total[n], g) for n, g in zip(self.spec.names, self._grid, strict=True)
            ):
                return None  # beyond the grid's headroom: not exactly representable
            data = _lossless(self.spec, total, self._grid, self.threads)
        if len(data) <= self.cache_bytes:
            self._cumulative_cache[key] = data
            size = sum(len(d) for d in self._cumulative_cache.values())
            while size > self.cache_bytes:
                _, dropped = self._cumulative_cache.popitem(last=False)
                size -= len(dropped)
        return data

    # -- state ---------------------------------------------------------------

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The stream's state as (plain arrays, JSON-able metadata).

        Holds the grid, the stream model (and in a shared-initial stream the
        initial model and the accumulated change), the kept releases (their
        deltas, not their statistics; with ``temporal_reference`` also their
        reference codings and the latest version's decoded delta, the next
        version's reference), the rate-control warm start, the versions sent
        to each client and the byte counters.  A
        :meth:`load_state` of it serves the same packages and codes the next
        version into the same bytes as an encoder that never stopped.
        """
        arrays: dict[str, np.ndarray] = {}
        if self._stream is not None:
            for i, name in enumerate(self.spec.names):
                arrays[f"stream/{i}"] = self._stream[name].copy()
        if self._origin is not None and self._change is not None:
            for i, name in enumerate(self.spec.names):
                arrays[f"initial/{i}"] = self._origin.tensors[name].copy()
                arrays[f"change/{i}"] = self._change[name].copy()
        releases = []
        for release in self._releases.values():
            if release.delta is not None:
                arrays[f"delta/{release.version}"] = np.frombuffer(release.delta, dtype=np.uint8)
            if release.delta_ref is not None:
                arrays[f"deltaref/{release.version}"] = np.frombuffer(
                    release.delta_ref, dtype=np.uint8
                )
            releases.append(
                {
                    "version": release.version,
                    "digest": release.digest,
                    "residual_rms": release.residual_rms,
                    "has_delta": release.delta is not None,
                    "has_delta_ref": release.delta_ref is not None,
                }
            )
        if self._last_step is not None:
            for i, step in enumerate(self._last_step):
                arrays[f"laststep/{i}"] = step.copy()
        meta: dict[str, Any] = {
            "format": _DOWNLINK_FORMAT if self._origin is None else _DOWNLINK_FORMAT_INITIAL,
            "spec": self.spec.to_json(),
            "keyframe_bits": self.keyframe_bits,
            "keep": self.keep,
            "grid": self._grid,
            "latest": self._latest,
            "warm": self._warm,
            "releases": releases,
            "has_last_step": self._last_step is not None,
            "client_versions": dict(self.client_versions),
            "bytes_sent": self.bytes_sent,
            "keyframes_sent": self.keyframes_sent,
            "keyframe_bytes_sent": self.keyframe_bytes_sent,
            "cumulative_sent": self.cumulative_sent,
            "cumulative_bytes_sent": self.cumulative_bytes_sent,
        }
        if self._origin is not None:
            meta["initial"] = {"version": self._origin.version, "digest": self._origin.digest}
        return arrays, meta

    def load_state(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        """Continue the stream saved by :meth:`state` (this encoder's λ/S parameters,
        ``keep``, threads and cumulative-delta settings stay as constructed).

        Raises
        ------
        StateFormatError
            Another format, another model or grid resolution, or missing arrays.
        """
        fmt = meta.get("format")
        if fmt not in (_DOWNLINK_FORMAT, _DOWNLINK_FORMAT_INITIAL):
            raise StateFormatError(f"unknown downlink state format {fmt!r}")
        origin: ModelVersion | None = None
        change: Tensors | None = None
        try:
            if ModelSpec.from_json(meta["spec"]) != self.spec:
                raise StateFormatError("the saved downlink belongs to another model")
            if int(meta["keyframe_bits"]) != self.keyframe_bits:
                raise StateFormatError(
                    f"the saved stream uses keyframe_bits={meta['keyframe_bits']}, "
                    f"this encoder {self.keyframe_bits}"
                )
            latest = meta["latest"]
            if latest is None:
                self._reset()
                return
            grid = [float(g) for g in meta["grid"]]
            if len(grid) != len(self.spec):
                raise StateFormatError("the saved grid does not match the model")
            stream = self._saved_tensors(arrays, "stream")
            if fmt == _DOWNLINK_FORMAT_INITIAL:
                record = meta["initial"]
                origin = ModelVersion.create(
                    int(record["version"]), self._saved_tensors(arrays, "initial"), self.spec
                )
                if origin.digest != record["digest"]:
                    raise StateFormatError("the saved initial model does not match its digest")
                change = self._saved_tensors(arrays, "change")
                recomposed = _plus(self.spec, origin.tensors, change)
                if model_digest(self.spec, recomposed) != model_digest(self.spec, stream):
                    raise StateFormatError("the saved stream is not initial + change")
            releases: OrderedDict[int, Release] = OrderedDict()
            for record in meta["releases"]:
                version = int(record["version"])
                delta = (
                    np.asarray(arrays[f"delta/{version}"], dtype=np.uint8).tobytes()
                    if record["has_delta"]
                    else None
                )
                delta_ref = (
                    np.asarray(arrays[f"deltaref/{version}"], dtype=np.uint8).tobytes()
                    if record.get("has_delta_ref")
                    else None
                )
                releases[version] = Release(
                    version=version,
                    digest=str(record["digest"]),
                    delta=delta,
                    stats=None,
                    residual_rms=float(record["residual_rms"]),
                    delta_ref=delta_ref,
                )
            last_step: list[F32Array] | None = None
            if meta.get("has_last_step"):
                saved_step = self._saved_tensors(arrays, "laststep")
                last_step = [saved_step[name] for name in self.spec.names]
            if model_digest(self.spec, stream) != releases[int(latest)].digest:
                raise StateFormatError("the saved stream model does not match its digest")
        except StateFormatError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise StateFormatError(f"incomplete downlink state: {exc!r}") from exc
        self._grid = grid
        self._stream = stream
        self._origin = origin
        self._change = change
        self._latest = int(latest)
        self._releases = releases
        self._last_step = last_step
        while len(self._releases) > self.keep + 1:
            self._releases.popitem(last=False)
        warm = meta.get("warm")
        self._warm = float(warm) if isinstance(warm, int | float) else None
        self._keyframe_cache = None
        self._cumulative_cache = OrderedDict()
        self.client_versions = {str(k): int(v) for k, v in meta["client_versions"].items()}
        self.bytes_sent = int(meta.get("bytes_sent", 0))
        self.keyframes_sent = int(meta.get("keyframes_sent", 0))
        self.keyframe_bytes_sent = int(meta.get("keyframe_bytes_sent", 0))
        self.cumulative_sent = int(meta.get("cumulative_sent", 0))
        self.cumulative_bytes_sent = int(meta.get("cumulative_bytes_sent", 0))

    def _saved_tensors(self, arrays: Mapping[str, np.ndarray], prefix: str) -> Tensors:
        tensors = {
            name: np.ascontiguousarray(arrays[f"{prefix}/{i}"], dtype=np.float32).copy()
            for i, name in enumerate(self.spec.names)
        }
        try:
            return self.spec.check(tensors, f"saved {prefix} model")
        except ModelMismatchError as exc:
            raise StateFormatError(str(exc)) from exc

    def save_state(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`state` to an ``.npz`` file (atomically, no pickle)."""
        arrays, meta = self.state()
        save_npz_state(path, arrays, meta)

    def load_state_file(self, path: str | os.PathLike[str]) -> None:
        """:meth:`load_state` from a file written by :meth:`save_state`."""
        arrays, meta = load_npz_state(path)
        self.load_state(arrays, meta)

    # -- serving ------------------------------------------------------------

    def _known(self, have: int | None, have_digest: str | None) -> bool:
        """Whether a client holding ``have`` (with ``have_digest``) is on the stream."""
        if have is None:
            return False
        digest = self.digest_of(have)
        return digest is not None and (have_digest is None or have_digest == digest)

    def package_for(
        self,
        client_id: str,
        *,
        have_version: int | None = None,
        have_digest: str | None = None,
        keyframe: bool = False,
        send_initial: bool = False,
        holds_delta: bool = False,
        delta_references: bool = True,
    ) -> DownlinkPackage:
        """What ``client_id`` needs to reach the latest version.

        Parameters
        ----------
        client_id : str
            The client.
        have_version : int, optional
            The version the client says it holds; default: the last version
            sent to it — or, for a client not served yet, none in a keyframe
            stream and the initial version in a shared-initial stream.
        have_digest : str, optional
            The digest the client computed for ``have_version``; a mismatch
            gets a keyframe.
        keyframe : bool, optional
            Force a keyframe (e.g. after the client reported a digest error).
        send_initial : bool, optional
            In a shared-initial stream, attach the initial model (4 bytes
            per weight) for a client that does not hold it; it then gets a
            keyframe relative to it.  Ignored in a keyframe stream.
        holds_delta : bool, optional
            The client holds the decoded delta of ``have_version``
            (:attr:`ModelReceiver.holds_delta`): with ``temporal_reference``
            the first delta of a chain may then be coded against it.
        delta_references : bool, optional
            The client decodes deltas coded against the previous version's
            delta (a :class:`ModelReceiver` of this version).  False, for a
            receiver from before downlink references: only deltas coded
            without reference.  Default True.

        Returns
        -------
        DownlinkPackage
            Empty when the client is up to date; else, for a client on the
            stream, the smallest of the chain of deltas since its version
            (a single delta is always sent as is), the cumulative delta and
            the keyframe; else the keyframe.  The client is then recorded
            as holding the latest version.
        """
        if self._latest is None:
            raise LookupError("nothing published yet")
        latest = self._releases[self._latest]
        have = have_version if have_version is not None else self.client_versions.get(client_id)
        if have is None and have_version is None and self._origin is not None:
            have = self._origin.version  # known to all
        initial = self._origin is not None and send_initial
        deltas: tuple[bytes, ...] | None = None
        cumulative = on_held = False
        if not keyframe and not initial and self._known(have, have_digest):
            assert have is not None
            deltas, cumulative, on_held = self._catch_up(
                have, holds_delta, references=delta_references and self.temporal_reference
            )
        origin = self._origin
        package = DownlinkPackage(
            latest.version,
            latest.digest,
            self.keyframe() if deltas is None else None,
            None if deltas is None else have,
            () if deltas is None else deltas,
            initial_version=None if origin is None else origin.version,
            initial_digest=None if origin is None else origin.digest,
            initial=initial_to_bytes(origin) if initial and origin is not None else None,
            held_delta_reference=on_held,
        )
        if package.is_keyframe:
            self.keyframes_sent += 1
            self.keyframe_bytes_sent += len(package)
        elif cumulative:
            self.cumulative_sent += 1
            self.cumulative_bytes_sent += len(package)
        self.client_versions[client_id] = latest.version
        self.bytes_sent += len(package)
        return package

    def _catch_up(
        self, have: int, holds_delta: bool = False, *, references: bool = False
    ) -> tuple[tuple[bytes, ...] | None, bool, bool]:
        """The cheapest deltas from ``have`` (None: a keyframe is cheaper or the only way),
        whether they are a cumulative delta, and whether the first is coded against the
        client's held delta."""
        assert self._latest is not None
        if have == self._latest:
            return (), False, False
        found = self._chain(have, references=references, holds_delta=holds_delta)
        chain, on_held = (None, False) if found is None else found
        if chain is not None and len(chain) < 2:
            return chain, False, on_held
        best: tuple[bytes, ...] | None = None
        if chain is not None:
            best = chain
        is_cumulative = False
        if self.cumulative or (self.cumulative is None and self._origin is not None):
            data = self.cumulative_delta(have)
            if data is not None and (best is None or len(data) < sum(len(d) for d in best)):
                best, is_cumulative = (data,), True
        if best is None or sum(len(d) for d in best) > len(self.keyframe()):
            return None, False, False
        return best, is_cumulative, on_held and not is_cumulative


class ModelReceiver:
    """The client's copy of the global model, kept in step with the downlink.

    Parameters
    ----------
    spec : ModelSpec
        The model.
    threads : int, optional
        Codec threads.
    initial : ModelVersion, optional
        The shared initial model of a shared-initial stream (see
        :class:`DownlinkEncoder`), held bit for bit by every client — e.g.
        generated from the shared seed.  The receiver starts out holding it.
    """

    def __init__(
        self, spec: ModelSpec, *, threads: int = 0, initial: ModelVersion | None = None
    ) -> None:
        self.spec = spec
        self.threads = threads
        self._model: ModelVersion | None = None
        self._initial: ModelVersion | None = None
        self._change: Tensors | None = None  # C of the held model, in a shared-initial stream
        # the decoded delta that led to the held version (a downlink temporal reference)
        self._last_delta: list[F32Array] | None = None
        if initial is not None:
            self.assume(initial)

    def assume(self, initial: ModelVersion) -> None:
        """Hold the shared initial model ``initial`` (whatever was held before).

        Raises
        ------
        ModelMismatchError
            ``initial`` is of another model.
        """
        if initial.spec != self.spec:
            raise ModelMismatchError("the initial model does not match the receiver's model")
        self._initial = initial
        self._change = self.spec.zeros()
        self._last_delta = None
        self._model = ModelVersion.create(
            initial.version, _plus(self.spec, initial.tensors, self._change), self.spec
        )

    @property
    def version(self) -> int | None:
        """The version held (None before the first keyframe)."""
        return None if self._model is None else self._model.version

    @property
    def digest(self) -> str | None:
        """Digest of the model held."""
        return None if self._model is None else self._model.digest

    @property
    def initial(self) -> ModelVersion | None:
        """The shared initial model held (None without one)."""
        return self._initial

    @property
    def holds_delta(self) -> bool:
        """Whether the held version came by its own version delta (the last delta of
        a chain), which this receiver keeps: a server streaming with
        ``temporal_reference`` may then code the next delta against it
        (``package_for(..., holds_delta=True)``)."""
        return self._last_delta is not None

    @property
    def model(self) -> ModelVersion:
        """The model held (the base for local training and the next update)."""
        if self._model is None:
            raise LookupError("no model received yet")
        return self._model

    def _decode(self, data: bytes, reference: list[F32Array] | None = None) -> Tensors:
        # The container is checked against the model's shapes while its header
        # is parsed: one that claims other (or more) tensors is refused before
        # anything is allocated from it.
        try:
            decoded = codec.decode(
                data,
                threads=self.threads,
                expected_shapes=self.spec.shapes,
                reference=None if reference is None else list(reference),
            )
        except InvalidParameterError as error:
            if error.code != FC_ERR_MISMATCH:
                raise
            raise ModelMismatchError(
                f"a downlink container does not match the model's tensors ({error})"
            ) from None
        return dict(zip(self.spec.names, decoded, strict=True))

    def _initial_for(self, package: DownlinkPackage) -> ModelVersion:
        """The initial model ``package`` is relative to (attached, or the one held)."""
        assert package.initial_digest is not None
        if package.initial is not None:
            return initial_from_bytes(
                package.initial,
                self.spec,
                version=package.initial_version or 0,
                digest=package.initial_digest,
            )
        if self._initial is None or self._initial.digest != package.initial_digest:
            held = "none" if self._initial is None else f"{self._initial.digest[:16]}…"
            raise InitialModelError(
                f"the package is relative to the initial model {package.initial_digest[:16]}…, "
                f"this client holds {held}; request the initial model (send_initial)"
            )
        return self._initial

    def apply(self, package: DownlinkPackage) -> ModelVersion:
        """Apply a package and verify the result's digest.

        Returns
        -------
        ModelVersion
            The new model.

        Raises
        ------
        DigestMismatchError
            The result does not hash to ``package.digest``, or the deltas start
            from a version this receiver does not hold: ask the server for a
            keyframe.  The held model is unchanged.
        InitialModelError
            (a :class:`DigestMismatchError`) The package is relative to a
            shared initial model this receiver does not hold: ask for it.
        ModelMismatchError, fedcodec.errors.CorruptStreamError
            A container of another model, or damaged.
        """
        initial = self._initial_for(package) if package.relative_to_initial else None
        # In a shared-initial stream the codes add up to the change C, the model is O + C;
        # in a keyframe stream they add up to the model itself.
        if package.keyframe is not None:
            base = self._decode(package.keyframe)
        else:
            if self._model is None or package.from_version != self._model.version:
                raise DigestMismatchError(
                    f"deltas start from version {package.from_version}, this client holds "
                    f"{self.version}; request a keyframe"
                )
            if initial is None:
                base = self._model.copy_tensors()
            elif self._change is None:
                raise DigestMismatchError(
                    "the held model is not on a shared-initial stream; request a keyframe"
                )
            else:
                base = {name: array.copy() for name, array in self._change.items()}
        # A delta coded against the previous version's delta (a downlink temporal
        # reference): the one this receiver holds, or the one decoded just before.
        previous = self._last_delta if package.keyframe is None else None
        for delta in package.deltas:
            if previous is None and (
                package.held_delta_reference
                or any(
                    info.reference_digest is not None
                    for info in codec.inspect(
                        delta, expected_shapes=self.spec.shapes if codec.is_compact(delta) else None
                    )
                )
            ):
                raise DigestMismatchError(
                    f"a delta to version {package.version} is coded against the previous "
                    "version's delta, which this client does not hold; request a keyframe"
                )
            step = self._decode(delta, previous)
            previous = [step[name] for name in self.spec.names]
            base = _plus(self.spec, base, step)
        model = base if initial is None else _plus(self.spec, initial.tensors, base)
        result = ModelVersion.create(package.version, model, self.spec)
        if not digest_matches(result.digest, package.digest):
            raise DigestMismatchError(
                f"reconstructed version {package.version} hashes to {result.digest[:16]}…, "
                f"the server sent {package.digest[:16]}…; request a keyframe"
            )
        chain = (
            package.keyframe is None
            and package.from_version is not None
            and len(package.deltas) == package.version - package.from_version
        )
        if package.deltas or package.keyframe is not None:
            # held only when it is the delta of the new version (a chain, not cumulative)
            self._last_delta = previous if chain and package.deltas else None
        self._model = result
        if initial is not None:
            self._initial = initial
            self._change = base
        else:
            self._change = None
        return result

    # -- state ---------------------------------------------------------------

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The held model (and initial model and change) as (plain arrays, JSON-able metadata).

        The in-memory form of :meth:`save_state`.  Without an initial model
        the arrays are keyed by tensor name (the first format); with one,
        ``model/<i>``, ``initial/<i>`` and ``change/<i>``.
        """
        meta: dict[str, Any] = {
            "format": _RECEIVER_FORMAT if self._initial is None else _RECEIVER_FORMAT_INITIAL,
            "spec": self.spec.to_json(),
            "version": self.version,
            "digest": self.digest,
            "saved_at": time.time(),
        }
        last = self._last_delta
        if last is not None:
            meta["has_last_delta"] = True
        if self._initial is None:
            plain: dict[str, np.ndarray] = {} if self._model is None else dict(self._model.tensors)
            if last is not None:
                plain.update({f"lastdelta/{i}": a for i, a in enumerate(last)})
            return plain, meta
        arrays: dict[str, np.ndarray] = {}
        meta["initial"] = {"version": self._initial.version, "digest": self._initial.digest}
        meta["has_change"] = self._change is not None
        for i, name in enumerate(self.spec.names):
            arrays[f"initial/{i}"] = self._initial.tensors[name]
            if self._model is not None:
                arrays[f"model/{i}"] = self._model.tensors[name]
            if self._change is not None:
                arrays[f"change/{i}"] = self._change[name]
            if last is not None:
                arrays[f"lastdelta/{i}"] = last[i]
        return arrays, meta

    def load_state(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        """Restore what :meth:`state` returned (digests re-checked).

        Raises
        ------
        StateFormatError
            Another format or model, or arrays that do not match their digests.
        """
        fmt = meta.get("format")
        if fmt not in (_RECEIVER_FORMAT, _RECEIVER_FORMAT_INITIAL):
            raise StateFormatError(f"unknown receiver state format {fmt!r}")
        try:
            if ModelSpec.from_json(meta.get("spec", {})) != self.spec:
                raise StateFormatError("the saved model has other names or shapes")
            initial: ModelVersion | None = None
            change: Tensors | None = None
            version = meta.get("version")
            last_delta: list[F32Array] | None = None
            if meta.get("has_last_delta"):
                saved = self.spec.check(self._indexed(arrays, "lastdelta"), "saved delta")
                last_delta = [saved[name] for name in self.spec.names]
            if fmt == _RECEIVER_FORMAT:
                model_arrays: Mapping[str, np.ndarray] = {
                    k: v for k, v in arrays.items() if not k.startswith("lastdelta/")
                }
            else:
                record = meta["initial"]
                initial = ModelVersion.create(
                    int(record["version"]), self._indexed(arrays, "initial"), self.spec
                )
                if initial.digest != record["digest"]:
                    raise StateFormatError("the saved initial model does not match its digest")
                if meta.get("has_change"):
                    change = self.spec.check(self._indexed(arrays, "change"), "saved change")
                model_arrays = self._indexed(arrays, "model") if version is not None else {}
            model: ModelVersion | None = None
            if version is not None:
                model = ModelVersion.create(int(version), model_arrays, self.spec)
                if model.digest != meta.get("digest"):
                    raise StateFormatError("the saved model does not match its digest")
                if initial is not None and change is not None:
                    recomposed = model_digest(self.spec, _plus(self.spec, initial.tensors, change))
                    if recomposed != model.digest:
                        raise StateFormatError("the saved model is not initial + change")
        except StateFormatError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            raise StateFormatError(f"incomplete receiver state: {exc!r}") from exc
        self._model = model
        self._initial = initial
        self._change = None if change is None else {k: v.copy() for k, v in change.items()}
        self._last_delta = None if model is None else last_delta

    def _indexed(self, arrays: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
        return {name: arrays[f"{prefix}/{i}"] for i, name in enumerate(self.spec.names)}

    def save_state(self, path: str | os.PathLike[str]) -> None:
        """Save the held model, version and digest — and the initial model and the
        accumulated change, if any (``.npz``, no pickle)."""
        arrays, meta = self.state()
        save_npz_state(path, arrays, meta)

    @classmethod
    def restore(
        cls, path: str | os.PathLike[str], spec: ModelSpec, *, threads: int = 0
    ) -> ModelReceiver:
        """A receiver holding the saved model (its digest is re-checked).

        Raises
        ------
        StateFormatError
            Unreadable, another model, or a model that no longer matches its
            digest.
        """
        arrays, meta = load_npz_state(path)
        receiver = cls(spec, threads=threads)
        receiver.load_state(arrays, meta)
        return receiver
