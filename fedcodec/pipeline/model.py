"""Models as ordered sets of named float32 tensors, and their versions.

A :class:`ModelSpec` fixes the tensor names (in order) and shapes; it is the
order in which tensors go into every codec container.  A :class:`ModelVersion`
is one global model: a version id, the tensors, and a content digest —
SHA-256 over the names, shapes and float32 bytes (little-endian) — that a
client compares with the model it reconstructed.
"""

from __future__ import annotations

import hashlib
import math
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from fedcodec.pipeline.errors import ModelMismatchError

__all__ = [
    "F32Array",
    "ModelHistory",
    "ModelSpec",
    "ModelVersion",
    "Tensors",
    "digest_matches",
    "model_digest",
    "reference_token",
]

F32Array = npt.NDArray[np.float32]
#: Named float32 tensors in model order.
Tensors = dict[str, F32Array]

_DIGEST_DOMAIN = b"fedcodec-model-v1\0"
#: Fewest hex digits of a digest a transport may send (128 bits; see :func:`digest_matches`).
MIN_DIGEST_HEX = 32
_REFERENCE_DOMAIN = b"fedcodec-reference-v1\0"


@dataclass(frozen=True)
class ModelSpec:
    """The ordered tensor names and shapes of a model.

    Attributes
    ----------
    names : tuple of str
        Distinct tensor names, in container order.
    shapes : tuple of tuple of int
        One shape per name.
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    def __post_init__(self) -> None:
        if len(self.names) != len(self.shapes):
            raise ModelMismatchError(
                f"ModelSpec: {len(self.names)} names but {len(self.shapes)} shapes"
            )
        if len(set(self.names)) != len(self.names):
            raise ModelMismatchError("ModelSpec: tensor names must be distinct")
        for name, shape in zip(self.names, self.shapes, strict=True):
            if not isinstance(name, str):
                raise ModelMismatchError(f"ModelSpec: names must be str, got {name!r}")
            if any((not isinstance(n, int)) or n < 0 for n in shape):
                raise ModelMismatchError(f"ModelSpec: bad shape {shape!r} of {name!r}")

    @classmethod
    def from_tensors(cls, tensors: Mapping[str, npt.ArrayLike]) -> ModelSpec:
        """The spec of a mapping of arrays (its iteration order is the model order)."""
        names = tuple(tensors.keys())
        shapes = tuple(tuple(int(n) for n in np.shape(tensors[k])) for k in names)
        return cls(names, shapes)

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> ModelSpec:
        """Inverse of :meth:`to_json`."""
        names = data.get("names")
        shapes = data.get("shapes")
        if not isinstance(names, list) or not isinstance(shapes, list):
            raise ModelMismatchError("ModelSpec JSON needs lists 'names' and 'shapes'")
        return cls(
            tuple(str(n) for n in names),
            tuple(tuple(int(d) for d in s) for s in shapes),
        )

    def to_json(self) -> dict[str, object]:
        """A JSON-able description (names and shapes)."""
        return {"names": list(self.names), "shapes": [list(s) for s in self.shapes]}

    @property
    def numel(self) -> int:
        """Total number of weights."""
        return sum(math.prod(s) for s in self.shapes)

    @property
    def float32_bytes(self) -> int:
        """Size of the raw float32 weights (the uncompressed message)."""
        return 4 * self.numel

    def __len__(self) -> int:
        return len(self.names)

    def __iter__(self) -> Iterator[tuple[str, tuple[int, ...]]]:
        return iter(zip(self.names, self.shapes, strict=True))

    def check(self, tensors: Mapping[str, npt.ArrayLike], what: str = "tensors") -> Tensors:
        """Validate tensors against the spec and return them as float32 in model order.

        Parameters
        ----------
        tensors : mapping of str to array_like
            Exactly the spec's names (any order), each with its shape; float32,
            or a real dtype that converts to float32 (float64, float16, ints).
        what : str, optional
            How to call the tensors in error messages.

        Returns
        -------
        dict of str to ndarray
            C-contiguous float32 arrays in model order (no copy when the
            input already is one).

        Raises
        ------
        ModelMismatchError
            Missing or extra names, a wrong shape, a non-real dtype, or
            non-finite values.
        """
        if not isinstance(tensors, Mapping):
            raise ModelMismatchError(
                f"{what} must be a mapping of name to array, got {type(tensors).__name__}"
            )
        missing = [n for n in self.names if n not in tensors]
        extra = [n for n in tensors if n not in self.names]
        if missing or extra:
            raise ModelMismatchError(
                f"{what} do not match the model: missing {missing!r}, unexpected {extra!r}"
            )
        out: Tensors = {}
        for name, shape in self:
            array = np.asarray(tensors[name])
            if array.dtype.kind not in "fiu":
                raise ModelMismatchError(
                    f"{what}[{name!r}] has dtype {array.dtype}, expected float32"
                )
            if array.shape != shape:
                raise ModelMismatchError(
                    f"{what}[{name!r}] has shape {array.shape}, the model has {shape}"
                )
            as32 = np.ascontiguousarray(array, dtype=np.float32)
            if as32.size and not np.isfinite(as32).all():
                raise ModelMismatchError(f"{what}[{name!r}] has NaN or infinite values")
            out[name] = as32
        return out

    def zeros(self) -> Tensors:
        """float32 zero arrays of every tensor, in model order."""
        return {name: np.zeros(shape, dtype=np.float32) for name, shape in self}


def digest_matches(digest: str, sent: str) -> bool:
    """Whether a model whose :func:`model_digest` is ``digest`` is the one a peer named.

    ``sent`` is the full digest or a prefix of at least :data:`MIN_DIGEST_HEX` hex
    digits (128 bits: a transport that pays for every byte may truncate; a wrong
    model then passes with probability 2^-128).  Shorter or non-lowercase-hex
    values never match.
    """
    return (
        MIN_DIGEST_HEX <= len(sent) <= len(digest)
        and all(c in "0123456789abcdef" for c in sent)
        and digest.startswith(sent)
    )


def model_digest(spec: ModelSpec, tensors: Mapping[str, F32Array]) -> str:
    """SHA-256 (hex) over the names, shapes and float32 little-endian bytes.

    Parameters
    ----------
    spec : ModelSpec
        Gives the order; every tensor must be float32 with its shape.
    tensors : mapping of str to ndarray
        The model.

    Returns
    -------
    str
        64 hex digits.  Bit-identical models (including the sign of zeros)
        hash equal; any changed bit changes the digest.
    """
    h = hashlib.sha256(_DIGEST_DOMAIN)
    h.update(len(spec).to_bytes(4, "little"))
    for name, shape in spec:
        array = tensors[name]
        if array.dtype != np.float32 or array.shape != shape:
            raise ModelMismatchError(
                f"model_digest: {name!r} must be float32 with shape {shape}, "
                f"got {array.dtype} {array.shape}"
            )
        encoded = name.encode("utf-8")
        h.update(len(encoded).to_bytes(4, "little"))
        h.update(encoded)
        h.update(len(shape).to_bytes(1, "little"))
        for n in shape:
            h.update(n.to_bytes(8, "little"))
        h.update(np.ascontiguousarray(array, dtype="<f4").tobytes())
    return h.hexdigest()


def reference_token(arrays: Sequence[npt.ArrayLike]) -> str:
    """A short name of a temporal reference: 16 hex digits (8 bytes) of SHA-256
    over the shapes and float32 little-endian bytes of ``arrays`` (model order).

    Both ends of a link compute it over the reference they hold (the client over
    its last update's reconstruction, the server over what it decoded from it);
    equal tokens mean the same reference bit for bit, short of a 2^-64 accident,
    which the codec's own per-tensor reference digest would then catch (a clear
    error, never a silent mis-decode).
    """
    h = hashlib.sha256(_REFERENCE_DOMAIN)
    h.update(len(arrays).to_bytes(4, "little"))
    for value in arrays:
        array = np.ascontiguousarray(np.asarray(value), dtype="<f4")
        h.update(array.ndim.to_bytes(1, "little"))
        for n in array.shape:
            h.update(int(n).to_bytes(8, "little"))
        h.update(array.tobytes())
    return h.hexdigest()[:16]


def _frozen(tensors: Mapping[str, F32Array], spec: ModelSpec) -> Tensors:
    out: Tensors = {}
    for name in spec.names:
        array = np.array(tensors[name], dtype=np.float32, copy=True, order="C")
        array.flags.writeable = False
        out[name] = array
    return out


@dataclass(frozen=True)
class ModelVersion:
    """One immutable global model version.

    Attributes
    ----------
    version : int
        The version id (0 for the initial model, +1 per round).
    spec : ModelSpec
        Names and shapes.
    tensors : dict of str to ndarray
        Read-only float32 copies, in model order.
    digest : str
        :func:`model_digest` of the tensors.
    """

    version: int
    spec: ModelSpec
    tensors: Tensors = field(repr=False)
    digest: str

    @classmethod
    def create(
        cls,
        version: int,
        tensors: Mapping[str, npt.ArrayLike],
        spec: ModelSpec | None = None,
    ) -> ModelVersion:
        """Validate, copy (read-only) and hash a model.

        Parameters
        ----------
        version : int
            Version id, >= 0.
        tensors : mapping of str to array_like
            The weights (converted to float32).
        spec : ModelSpec, optional
            Defaults to the spec of ``tensors``.

        Returns
        -------
        ModelVersion
        """
        if version < 0:
            raise ValueError(f"version must be >= 0, got {version}")
        spec = spec or ModelSpec.from_tensors(tensors)
        frozen = _frozen(spec.check(tensors, "model"), spec)
        return cls(version=version, spec=spec, tensors=frozen, digest=model_digest(spec, frozen))

    def copy_tensors(self) -> Tensors:
        """Writeable float32 copies of the tensors."""
        return {name: array.copy() for name, array in self.tensors.items()}

    def as_list(self) -> list[F32Array]:
        """The tensors in model order."""
        return [self.tensors[name] for name in self.spec.names]


class ModelHistory:
    """The last ``keep`` global model versions, by id.

    Parameters
    ----------
    keep : int
        How many versions to keep (>= 1); older ones are forgotten.
    """

    def __init__(self, keep: int = 8) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.keep = keep
        self._versions: OrderedDict[int, ModelVersion] = OrderedDict()
        self._latest_ever = -1

    def add(self, model: ModelVersion) -> None:
        """Record a new version (ids must increase)."""
        if model.version <= self._latest_ever:
            raise ValueError(
                f"version {model.version} is not newer than the latest {self._latest_ever}"
            )
        if self._versions and model.spec != self.latest.spec:
            raise ModelMismatchError("a new version must keep the model's names and shapes")
        self._versions[model.version] = model
        self._latest_ever = model.version
        while len(self._versions) > self.keep:
            self._versions.popitem(last=False)

    @property
    def latest(self) -> ModelVersion:
        """The newest version."""
        if not self._versions:
            raise LookupError("the history is empty")
        return next(reversed(self._versions.values()))

    def get(self, version: int) -> ModelVersion | None:
        """A kept version, or None."""
        return self._versions.get(version)

    def __contains__(self, version: object) -> bool:
        return version in self._versions

    def versions(self) -> Sequence[int]:
        """The kept version ids, oldest first."""
        return list(self._versions)

    def was_issued(self, version: int) -> bool:
        """Whether ``version`` was ever added (it may have been forgotten)."""
        return 0 <= version <= self._latest_ever
