"""Downlink: coded changes of the global model, keyframes, digest checks.

The server publishes every global version into one *downlink stream*: the
model ``R_v`` that every client following the stream reconstructs.  Version
``v`` is sent as the coded difference ``global_v − R_{v−1}``; since that
difference contains what earlier messages failed to deliver, this is error
feedback on the server side, and ``global_v − R_v`` is the server's residual.

Exactness.  A client computes ``R_v = R_{v−1} + decode(message)`` in float32
and checks ``model_digest(R_v)`` against the digest the server sent.  The
server computes ``R_v`` the same way from the encoder's bit-exact
reconstruction (``return_recon``), so both agree bit for bit.  In addition,
every step used on the stream is an integer multiple of a fixed per-tensor
power-of-two grid ``g`` (set at the first version: ``g ≈ |w|max · 2**-keyframe_bits``),
which keeps ``R_v`` exactly on that grid (integers times ``g``, with no
rounding in the float32 adds while ``|R_v/g| < 2**24``).  A keyframe is then
the *lossless* code of ``R_v / g`` (:func:`fedcodec.codec.encode_levels`): a
client that joins late, fell more than ``keep`` versions behind, or reports
a digest mismatch receives exactly the model the other clients hold, and
follows the same stream afterwards — one encode per version serves everyone.
Relative to the exact global model a keyframe is near-lossless (error of the
stream's residual, at most ``g/2`` per weight for the first version).

If the model grows beyond the grid's headroom, the stream restarts with a new
grid: every client then gets a keyframe.
"""

from __future__ import annotations

import math
import os
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedcodec import codec
from fedcodec.pipeline._state import load_npz_state, save_npz_state
from fedcodec.pipeline.client import encode_tensors
from fedcodec.pipeline.errors import DigestMismatchError, ModelMismatchError, StateFormatError
from fedcodec.pipeline.model import F32Array, ModelSpec, ModelVersion, Tensors, model_digest
from fedcodec.pipeline.params import RoundParams
from fedcodec.pipeline.stats import EncodeStats

__all__ = [
    "DEFAULT_KEYFRAME_BITS",
    "DownlinkEncoder",
    "DownlinkPackage",
    "ModelReceiver",
    "Release",
]

#: Grid resolution of the stream: g ≈ |w|max · 2**-bits per tensor (10 bits: a keyframe of a
#: Gaussian tensor has ≈ 63 dB SNR and costs ≈ 11 bits per weight).
DEFAULT_KEYFRAME_BITS = 10
# Grid levels stay below 2**24, where float32 holds integers exactly.
_GRID_LIMIT = float(2**24)
_RECEIVER_FORMAT = "fedcodec-model-receiver/1"
_DOWNLINK_FORMAT = "fedcodec-downlink/1"


@dataclass(frozen=True)
class DownlinkPackage:
    """What a client receives to reach the latest version.

    Attributes
    ----------
    version : int
        The version the client holds after applying it.
    digest : str
        :func:`~fedcodec.pipeline.model.model_digest` of that model.
    keyframe : bytes or None
        The full model (lossless code of the stream's model), or None.
    from_version : int or None
        The version ``deltas`` start from (None with a keyframe).
    deltas : tuple of bytes
        Coded changes, applied in order (empty with a keyframe, or when the
        client is up to date).
    """

    version: int
    digest: str
    keyframe: bytes | None
    from_version: int | None
    deltas: tuple[bytes, ...] = ()

    @property
    def is_keyframe(self) -> bool:
        """Whether this is a keyframe."""
        return self.keyframe is not None

    def __len__(self) -> int:
        """Payload bytes (containers, codec headers included)."""
        return (len(self.keyframe) if self.keyframe is not None else 0) + sum(
            len(d) for d in self.deltas
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
    """

    version: int
    digest: str
    delta: bytes | None
    stats: EncodeStats | None
    residual_rms: float


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
        Versions a client may lag and still get deltas instead of a keyframe.
    keyframe_bits : int, optional
        Grid resolution (see the module docs).
    threads : int, optional
        Codec threads.
    """

    def __init__(
        self,
        spec: ModelSpec,
        *,
        params: RoundParams | None = None,
        keep: int = 8,
        keyframe_bits: int = DEFAULT_KEYFRAME_BITS,
        threads: int = 0,
    ) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        if not 2 <= keyframe_bits <= 20:
            raise ValueError(f"keyframe_bits must be in 2..20, got {keyframe_bits}")
        self.spec = spec
        self.params = params or RoundParams()
        self.keep = keep
        self.keyframe_bits = keyframe_bits
        self.threads = threads
        self._reset()

    def _reset(self) -> None:
        """Forget the stream (as constructed, nothing published)."""
        self._grid: list[float] | None = None
        self._stream: Tensors | None = None  # R_latest
        self._latest: int | None = None
        self._releases: OrderedDict[int, Release] = OrderedDict()
        self._keyframe_cache: tuple[int, bytes] | None = None
        self._warm: float | None = None
        self.client_versions: dict[str, int] = {}
        self.bytes_sent = 0
        self.keyframes_sent = 0
        self.keyframe_bytes_sent = 0

    # -- publishing ---------------------------------------------------------

    @property
    def latest_version(self) -> int | None:
        """The newest published version."""
        return self._latest

    @property
    def grid(self) -> list[float] | None:
        """The stream's per-tensor grid."""
        return None if self._grid is None else list(self._grid)

    def stream_model(self) -> ModelVersion:
        """The model every up-to-date client holds (the latest stream version)."""
        if self._stream is None or self._latest is None:
            raise LookupError("nothing published yet")
        return ModelVersion.create(self._latest, self._stream, self.spec)

    def digest_of(self, version: int) -> str | None:
        """The stream digest of a kept version, or None."""
        release = self._releases.get(version)
        return None if release is None else release.digest

    def publish(self, model: ModelVersion, params: RoundParams | None = None) -> Release:
        """Add a new global version to the stream.

        The first version (and any after a grid restart) starts the stream:
        clients get it as a keyframe.  Later versions are coded as the change
        from the previous stream model, with ``params`` (default: the
        encoder's).

        Returns
        -------
        Release
        """
        if model.spec != self.spec:
            raise ModelMismatchError("published model does not match the downlink's model")
        if self._latest is not None and model.version <= self._latest:
            raise ValueError(f"version {model.version} is not newer than {self._latest}")
        if self._stream is None or self._grid is None:
            return self._restart(model)
        target = {
            name: np.subtract(model.tensors[name], self._stream[name], dtype=np.float32)
            for name in self.spec.names
        }
        data, recon, stats, warm = encode_tensors(
            self.spec,
            target,
            params or self.params,
            threads=self.threads,
            step_grid=self._grid,
            warm_start=self._warm,
        )
        if warm is not None:
            self._warm = warm
        stream = {
            name: np.add(self._stream[name], r, dtype=np.float32)
            for name, r in zip(self.spec.names, recon, strict=True)
        }
        if not all(
            _on_grid(stream[n], g) for n, g in zip(self.spec.names, self._grid, strict=True)
        ):
            # The model outgrew the grid's headroom: start a new stream.
            return self._restart(model)
        self._stream = stream
        release = Release(
            version=model.version,
            digest=model_digest(self.spec, stream),
            delta=data,
            stats=stats,
            residual_rms=self._residual_rms(model),
        )
        self._add(release)
        return release

    def _restart(self, model: ModelVersion) -> Release:
        self._grid = _grid(self.spec, model.tensors, self.keyframe_bits)
        levels = [
            np.rint(model.tensors[n].astype(np.float64) / g).astype(np.int32)
            for n, g in zip(self.spec.names, self._grid, strict=True)
        ]
        data = codec.encode_levels(levels, self._grid, threads=self.threads).data
        decoded = codec.decode(data, names=list(self.spec.names), threads=self.threads)
        self._stream = {name: decoded[name] for name in self.spec.names}
        self._releases.clear()
        self.client_versions.clear()
        release = Release(
            version=model.version,
            digest=model_digest(self.spec, self._stream),
            delta=None,
            stats=None,
            residual_rms=self._residual_rms(model),
        )
        self._keyframe_cache = (model.version, data)
        self._add(release)
        return release

    def _add(self, release: Release) -> None:
        self._releases[release.version] = release
        self._latest = release.version
        while len(self._releases) > self.keep + 1:
            self._releases.popitem(last=False)

    def _residual_rms(self, model: ModelVersion) -> float:
        assert self._stream is not None
        sq = 0.0
        for name in self.spec.names:
            d = model.tensors[name].astype(np.float64) - self._stream[name]
            sq += float(np.dot(d.ravel(), d.ravel()))
        return math.sqrt(sq / max(self.spec.numel, 1))

    def keyframe(self) -> bytes:
        """The lossless code of the latest stream model (cached per version)."""
        if self._stream is None or self._grid is None or self._latest is None:
            raise LookupError("nothing published yet")
        if self._keyframe_cache is None or self._keyframe_cache[0] != self._latest:
            levels = [
                np.rint(self._stream[n].astype(np.float64) / g).astype(np.int32)
                for n, g in zip(self.spec.names, self._grid, strict=True)
            ]
            data = codec.encode_levels(levels, self._grid, threads=self.threads).data
            self._keyframe_cache = (self._latest, data)
        return self._keyframe_cache[1]

    # -- state ---------------------------------------------------------------

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """The stream's state as (plain arrays, JSON-able metadata).

        Holds the grid, the stream model, the kept releases (their deltas, not
        their statistics), the rate-control warm start, the versions sent to
        each client and the byte counters.  A :meth:`load_state` of it serves
        the same packages and codes the next version into the same bytes as
        an encoder that never stopped.
        """
        arrays: dict[str, np.ndarray] = {}
        if self._stream is not None:
            for i, name in enumerate(self.spec.names):
                arrays[f"stream/{i}"] = self._stream[name].copy()
        releases = []
        for release in self._releases.values():
            if release.delta is not None:
                arrays[f"delta/{release.version}"] = np.frombuffer(release.delta, dtype=np.uint8)
            releases.append(
                {
                    "version": release.version,
                    "digest": release.digest,
                    "residual_rms": release.residual_rms,
                    "has_delta": release.delta is not None,
                }
            )
        meta: dict[str, Any] = {
            "format": _DOWNLINK_FORMAT,
            "spec": self.spec.to_json(),
            "keyframe_bits": self.keyframe_bits,
            "keep": self.keep,
            "grid": self._grid,
            "latest": self._latest,
            "warm": self._warm,
            "releases": releases,
            "client_versions": dict(self.client_versions),
            "bytes_sent": self.bytes_sent,
            "keyframes_sent": self.keyframes_sent,
            "keyframe_bytes_sent": self.keyframe_bytes_sent,
        }
        return arrays, meta

    def load_state(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        """Continue the stream saved by :meth:`state` (this encoder's λ/S parameters,
        ``keep`` and threads stay as constructed).

        Raises
        ------
        StateFormatError
            Another format, another model or grid resolution, or missing arrays.
        """
        if meta.get("format") != _DOWNLINK_FORMAT:
            raise StateFormatError(f"unknown downlink state format {meta.get('format')!r}")
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
            stream = {
                name: np.ascontiguousarray(arrays[f"stream/{i}"], dtype=np.float32).copy()
                for i, name in enumerate(self.spec.names)
            }
            self.spec.check(stream, "saved stream model")
            releases: OrderedDict[int, Release] = OrderedDict()
            for record in meta["releases"]:
                version = int(record["version"])
                delta = (
                    np.asarray(arrays[f"delta/{version}"], dtype=np.uint8).tobytes()
                    if record["has_delta"]
                    else None
                )
                releases[version] = Release(
                    version=version,
                    digest=str(record["digest"]),
                    delta=delta,
                    stats=None,
                    residual_rms=float(record["residual_rms"]),
                )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, StateFormatError):
                raise
            raise StateFormatError(f"incomplete downlink state: {exc!r}") from exc
        if model_digest(self.spec, stream) != releases[int(latest)].digest:
            raise StateFormatError("the saved stream model does not match its digest")
        self._grid = grid
        self._stream = stream
        self._latest = int(latest)
        self._releases = releases
        while len(self._releases) > self.keep + 1:
            self._releases.popitem(last=False)
        warm = meta.get("warm")
        self._warm = float(warm) if isinstance(warm, int | float) else None
        self._keyframe_cache = None
        self.client_versions = {str(k): int(v) for k, v in meta["client_versions"].items()}
        self.bytes_sent = int(meta.get("bytes_sent", 0))
        self.keyframes_sent = int(meta.get("keyframes_sent", 0))
        self.keyframe_bytes_sent = int(meta.get("keyframe_bytes_sent", 0))

    def save_state(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`state` to an ``.npz`` file (atomically, no pickle)."""
        arrays, meta = self.state()
        save_npz_state(path, arrays, meta)

    def load_state_file(self, path: str | os.PathLike[str]) -> None:
        """:meth:`load_state` from a file written by :meth:`save_state`."""
        arrays, meta = load_npz_state(path)
        self.load_state(arrays, meta)

    # -- serving ------------------------------------------------------------

    def package_for(
        self,
        client_id: str,
        *,
        have_version: int | None = None,
        have_digest: str | None = None,
        keyframe: bool = False,
    ) -> DownlinkPackage:
        """What ``client_id`` needs to reach the latest version.

        Parameters
        ----------
        client_id : str
            The client.
        have_version : int, optional
            The version the client says it holds; default: the last version
            sent to it (none for a new client).
        have_digest : str, optional
            The digest the client computed for ``have_version``; a mismatch
            gets a keyframe.
        keyframe : bool, optional
            Force a keyframe (e.g. after the client reported a digest error).

        Returns
        -------
        DownlinkPackage
            The deltas since the client's version when it is one of the last
            ``keep`` and they are not larger than a keyframe, else a keyframe;
            empty when the client is up to date.  The client is then
            recorded as holding the latest version.
        """
        if self._latest is None:
            raise LookupError("nothing published yet")
        latest = self._releases[self._latest]
        have = have_version if have_version is not None else self.client_versions.get(client_id)
        usable = (
            not keyframe
            and have is not None
            and have in self._releases
            and (have_digest is None or have_digest == self._releases[have].digest)
            and all(self._releases[v].delta is not None for v in self._releases if v > have)
        )
        package: DownlinkPackage | None = None
        if usable:
            assert have is not None
            deltas = tuple(
                r.delta for v, r in self._releases.items() if v > have and r.delta is not None
            )
            # A long chain can cost more than the keyframe (both give the same model).
            if len(deltas) < 2 or sum(len(d) for d in deltas) <= len(self.keyframe()):
                package = DownlinkPackage(latest.version, latest.digest, None, have, deltas)
        if package is None:
            package = DownlinkPackage(latest.version, latest.digest, self.keyframe(), None)
            self.keyframes_sent += 1
            self.keyframe_bytes_sent += len(package)
        self.client_versions[client_id] = latest.version
        self.bytes_sent += len(package)
        return package


class ModelReceiver:
    """The client's copy of the global model, kept in step with the downlink.

    Parameters
    ----------
    spec : ModelSpec
        The model.
    threads : int, optional
        Codec threads.
    """

    def __init__(self, spec: ModelSpec, *, threads: int = 0) -> None:
        self.spec = spec
        self.threads = threads
        self._model: ModelVersion | None = None

    @property
    def version(self) -> int | None:
        """The version held (None before the first keyframe)."""
        return None if self._model is None else self._model.version

    @property
    def digest(self) -> str | None:
        """Digest of the model held."""
        return None if self._model is None else self._model.digest

    @property
    def model(self) -> ModelVersion:
        """The model held (the base for local training and the next update)."""
        if self._model is None:
            raise LookupError("no model received yet")
        return self._model

    def _decode(self, data: bytes) -> Tensors:
        decoded = codec.decode(data, threads=self.threads)
        if len(decoded) != len(self.spec) or any(
            d.shape != s for d, s in zip(decoded, self.spec.shapes, strict=False)
        ):
            raise ModelMismatchError("a downlink container does not match the model's tensors")
        return dict(zip(self.spec.names, decoded, strict=True))

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
        ModelMismatchError, fedcodec.errors.CorruptStreamError
            A container of another model, or damaged.
        """
        if package.keyframe is not None:
            model = self._decode(package.keyframe)
        else:
            if self._model is None or package.from_version != self._model.version:
                raise DigestMismatchError(
                    f"deltas start from version {package.from_version}, this client holds "
                    f"{self.version}; request a keyframe"
                )
            model = self._model.copy_tensors()
        for delta in package.deltas:
            decoded = self._decode(delta)
            model = {
                name: np.add(model[name], decoded[name], dtype=np.float32)
                for name in self.spec.names
            }
        result = ModelVersion.create(package.version, model, self.spec)
        if result.digest != package.digest:
            raise DigestMismatchError(
                f"reconstructed version {package.version} hashes to {result.digest[:16]}…, "
                f"the server sent {package.digest[:16]}…; request a keyframe"
            )
        self._model = result
        return result

    def save_state(self, path: str | os.PathLike[str]) -> None:
        """Save the held model, version and digest (``.npz``, no pickle)."""
        meta: dict[str, Any] = {
            "format": _RECEIVER_FORMAT,
            "spec": self.spec.to_json(),
            "version": self.version,
            "digest": self.digest,
            "saved_at": time.time(),
        }
        arrays: Mapping[str, np.ndarray] = {} if self._model is None else self._model.tensors
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
        if meta.get("format") != _RECEIVER_FORMAT:
            raise StateFormatError(f"unknown receiver state format {meta.get('format')!r}")
        if ModelSpec.from_json(meta.get("spec", {})) != spec:
            raise StateFormatError("the saved model has other names or shapes")
        receiver = cls(spec, threads=threads)
        version = meta.get("version")
        if version is None:
            return receiver
        try:
            model = ModelVersion.create(int(version), arrays, spec)
        except ModelMismatchError as exc:
            raise StateFormatError(str(exc)) from exc
        if model.digest != meta.get("digest"):
            raise StateFormatError("the saved model does not match its digest")
        receiver._model = model
        return receiver
