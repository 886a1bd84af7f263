"""Between the pipeline's whole-model containers and Flower's per-tensor ``Array``\\ s.

The pipeline codes a model into one container (one step rule and one byte
budget over all tensors).  A Flower ``ArrayRecord`` keeps one ``Array`` per
tensor key, and tools such as ``arrays_size_mod`` read each array's shape, so
the plugin sends one single-tensor container per key.  :func:`split_container`
re-packs the integer levels and steps of a whole-model container into
single-tensor containers with :func:`fedcodec.codec.encode_levels`: the levels
and steps are unchanged, so every reconstruction is bit-identical to the
pipeline's (the error-feedback residual and the downlink digests stay exact);
the cost is one lossless entropy-coding pass and a container header per tensor.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence

import numpy as np
from flwr.app import Array, ArrayRecord

from fedcodec import codec
from fedcodec.errors import FC_ERR_CORRUPT, CorruptStreamError
from fedcodec.flower.constants import STYPE, STYPE_SEQUENCE
from fedcodec.pipeline import ModelMismatchError, ModelSpec, UpdateRejectedError
from fedcodec.pipeline.model import F32Array, Tensors
from fedcodec.pipeline.server import DEFAULT_MAX_STEP

__all__ = [
    "array_parts",
    "coded_array",
    "decode_part",
    "floating_keys",
    "is_coded",
    "merge_records",
    "plain_record",
    "record_spec",
    "record_tensors",
    "split_container",
    "split_record",
]

_LENGTH_BYTES = 4
_FLOAT32 = "float32"


def _corrupt(message: str) -> CorruptStreamError:
    return CorruptStreamError(message, code=FC_ERR_CORRUPT, result_name="FC_ERR_CORRUPT")


def split_container(data: bytes, *, threads: int = 1) -> list[bytes]:
    """One single-tensor container per tensor of ``data``, levels and steps unchanged.

    ``data`` is this process's own encoder output (a model update or downlink
    delta, possibly all zero in a few bytes): decoded up to the decoder's hard
    element limit, not the size-proportional default meant for received data.
    """
    return [
        codec.encode_levels([levels], step=[step], threads=threads).data
        for levels, step in codec.decode_levels(data, threads=threads, max_total_elems=1 << 28)
    ]


def is_coded(array: Array) -> bool:
    """Whether ``array`` carries fedcodec containers rather than numpy data."""
    return array.stype in (STYPE, STYPE_SEQUENCE)


def coded_array(shape: tuple[int, ...], parts: Sequence[bytes]) -> Array:
    """A float32 ``Array`` of ``shape`` carried as one or more containers (applied in order)."""
    if not parts:
        raise ValueError("coded_array needs at least one container")
    if len(parts) == 1:
        return Array(dtype=_FLOAT32, shape=shape, stype=STYPE, data=parts[0])
    framed = b"".join(len(p).to_bytes(_LENGTH_BYTES, "little") + p for p in parts)
    return Array(dtype=_FLOAT32, shape=shape, stype=STYPE_SEQUENCE, data=framed)


def array_parts(array: Array) -> list[bytes]:
    """The containers an ``Array`` of :data:`STYPE` or :data:`STYPE_SEQUENCE` carries.

    Raises
    ------
    CorruptStreamError
        Another stype, or broken framing.
    """
    if array.stype == STYPE:
        return [bytes(array.data)]
    if array.stype != STYPE_SEQUENCE:
        raise _corrupt(f"array has stype {array.stype!r}, not a fedcodec payload")
    data = memoryview(array.data)
    parts: list[bytes] = []
    offset = 0
    while offset < len(data):
        if offset + _LENGTH_BYTES > len(data):
            raise _corrupt("truncated length prefix in a fedcodec sequence")
        length = int.from_bytes(data[offset : offset + _LENGTH_BYTES], "little")
        offset += _LENGTH_BYTES
        if length == 0 or offset + length > len(data):
            raise _corrupt("a fedcodec sequence entry overruns the array data")
        parts.append(bytes(data[offset : offset + length]))
        offset += length
    if not parts:
        raise _corrupt("empty fedcodec sequence")
    return parts


def decode_part(
    data: bytes,
    shape: tuple[int, ...],
    *,
    what: str,
    threads: int = 1,
    max_step: float = DEFAULT_MAX_STEP,
) -> tuple[F32Array, float]:
    """Decode a single-tensor container that must hold a tensor of ``shape``.

    The decoder's limits are set to exactly that tensor, so a hostile
    container cannot make it allocate more.

    Returns
    -------
    values : ndarray
        The decoded float32 tensor.
    step : float
        Its quantization step.

    Raises
    ------
    CorruptStreamError
        Damaged bytes, or more than one tensor.
    ModelMismatchError
        Another shape.
    UpdateRejectedError
        A step above ``max_step`` (decoded values could overflow float32).
    """
    numel = max(math.prod(shape), 1)
    infos = codec.inspect(data, max_tensors=1, max_tensor_elems=numel, max_total_elems=numel)
    if len(infos) != 1:
        raise _corrupt(f"{what}: expected one tensor, the container holds {len(infos)}")
    info = infos[0]
    if info.shape != shape:
        raise ModelMismatchError(f"{what}: container holds shape {info.shape}, expected {shape}")
    if not (math.isfinite(info.step) and 0.0 < info.step <= max_step):
        raise UpdateRejectedError(f"{what}: step {info.step!r} beyond the accepted maximum")
    decoded = codec.decode(
        data, threads=threads, max_tensors=1, max_tensor_elems=numel, max_total_elems=numel
    )
    return decoded[0], info.step


def record_spec(record: ArrayRecord) -> ModelSpec:
    """Names (record order) and shapes of an ``ArrayRecord``."""
    return ModelSpec(
        tuple(record.keys()), tuple(tuple(int(n) for n in a.shape) for a in record.values())
    )


def record_tensors(record: ArrayRecord, spec: ModelSpec, what: str) -> Tensors:
    """The arrays of a plain (numpy) ``ArrayRecord`` that matches ``spec``, as float32.

    Floating-point arrays of other widths are converted (FedAdam and friends
    return float64 models; the codec and the digests work on float32).

    Raises
    ------
    ModelMismatchError
        Other keys or shapes, a coded array, or a non-floating dtype.
    """
    if list(record.keys()) != list(spec.names):
        raise ModelMismatchError(
            f"{what}: keys {list(record.keys())!r} differ from the model's {list(spec.names)!r}"
        )
    out: dict[str, np.ndarray] = {}
    for name, array in record.items():
        if is_coded(array):
            raise ModelMismatchError(f"{what}[{name!r}] is already coded")
        if np.dtype(array.dtype).kind != "f":
            raise ModelMismatchError(
                f"{what}[{name!r}] has dtype {array.dtype}; fedcodec codes floating-point "
                "models (float32 on the wire)"
            )
        out[name] = array.numpy()
    return spec.check(out, what)


def plain_record(spec: ModelSpec, tensors: Mapping[str, F32Array]) -> ArrayRecord:
    """An ``ArrayRecord`` of numpy arrays in model order."""
    return ArrayRecord({name: Array(np.asarray(tensors[name])) for name in spec.names})


def floating_keys(record: ArrayRecord) -> list[str]:
    """Keys of the floating-point arrays: what fedcodec codes (integer buffers travel as is)."""
    return [k for k, a in record.items() if is_coded(a) or np.dtype(a.dtype).kind == "f"]


def split_record(record: ArrayRecord, keys: Collection[str]) -> tuple[ArrayRecord, ArrayRecord]:
    """(the arrays under ``keys``, the others), each in record order."""
    inside = ArrayRecord({k: a for k, a in record.items() if k in keys})
    outside = ArrayRecord({k: a for k, a in record.items() if k not in keys})
    return inside, outside


def merge_records(order: Sequence[str], *parts: ArrayRecord) -> ArrayRecord:
    """One record of the keys of ``order`` found in ``parts`` (the first part that has a key wins).

    Raises
    ------
    ModelMismatchError
        A key of a part that ``order`` does not name.
    """
    known = set(order)
    for part in parts:
        stray = [k for k in part if k not in known]
        if stray:
            raise ModelMismatchError(f"arrays {stray!r} are not in the key order {list(order)!r}")
    out: dict[str, Array] = {}
    for key in order:
        for part in parts:
            if key in part:
                out[key] = part[key]
                break
    return ArrayRecord(out)
