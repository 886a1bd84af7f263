"""Between the engine's containers and Flower's records.

A coded model, a chain of deltas or an update travels as the engine's container
bytes as they are: nothing is decoded and coded again on the way.  Up to
:data:`INLINE_MAX_BYTES` (and when no array travels uncoded) they are a ``bytes``
value (a list of them for a chain) in a ``ConfigRecord`` — no ``Array``, no
``ArrayRecord``, whose framing would cost some 300-500 bytes per message; larger
ones are ONE ``Array`` (several containers: length-prefixed,
:data:`~fedcodec.flower.constants.STYPE_SEQUENCE`), where that framing is below 1 %.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from flwr.common.serde import recorddict_to_proto

from fedcodec.errors import FC_ERR_CORRUPT, CorruptStreamError
from fedcodec.flower.constants import (
    KEY_METRICS,
    KEY_UPDATE_ARRAY,
    METRICS_RECORD,
    STYPE,
    STYPE_SEQUENCE,
)
from fedcodec.pipeline import ModelMismatchError, ModelSpec
from fedcodec.pipeline.model import F32Array, Tensors

__all__ = [
    "INLINE_MAX_BYTES",
    "array_parts",
    "coded_array",
    "coded_model",
    "coded_update",
    "floating_keys",
    "inline_parts",
    "inline_value",
    "is_coded",
    "merge_records",
    "plain_record",
    "record_spec",
    "record_tensors",
    "reply_records",
    "restore_metrics",
    "split_record",
    "wire_size",
]

_LENGTH_BYTES = 4
_FLOAT32 = "float32"
#: Prefix of the wire contract's keys: app metrics under such keys are not folded.
_RESERVED = "fc"
_Records = Mapping[str, ArrayRecord | ConfigRecord | MetricRecord]

#: Containers up to this many bytes in total travel inline (``bytes`` in a ConfigRecord).
INLINE_MAX_BYTES = 65_536


def _corrupt(message: str) -> CorruptStreamError:
    return CorruptStreamError(message, code=FC_ERR_CORRUPT, result_name="FC_ERR_CORRUPT")


def wire_size(content: RecordDict | Mapping[str, ArrayRecord | ConfigRecord | MetricRecord]) -> int:
    """Bytes of a message's content as Flower transmits it.

    Flower (>= 1.20) sends a message's content as content-addressed objects — the
    RecordDict, each record, each ``Array`` and its chunks — every one deflated with its
    own header (some 200-400 bytes per ``Array``): the sum of those is what travels.
    With an older Flower, the protobuf ``RecordDict``.
    """
    records = content if isinstance(content, RecordDict) else RecordDict(dict(content))
    try:
        from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects
    except ImportError:  # pragma: no cover - Flower before content-addressed messages
        return int(recorddict_to_proto(records).ByteSize())
    return sum(len(obj.deflate()) for obj in get_all_nested_objects(records).values())


def is_coded(array: Array) -> bool:
    """Whether ``array`` carries fedcodec containers rather than numpy data."""
    return array.stype in (STYPE, STYPE_SEQUENCE)


def coded_array(parts: Sequence[bytes]) -> Array:
    """One ``Array`` carrying containers (applied in order) exactly as the engine made them."""
    if not parts:
        raise ValueError("coded_array needs at least one container")
    if len(parts) == 1:
        data = bytes(parts[0])
        stype = STYPE
    else:
        data = b"".join(len(p).to_bytes(_LENGTH_BYTES, "little") + p for p in parts)
        stype = STYPE_SEQUENCE
    return Array(dtype="uint8", shape=(len(data),), stype=stype, data=data)


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


def inline_value(parts: Sequence[bytes]) -> bytes | list[bytes]:
    """The ConfigRecord value of containers that travel inline: one ``bytes``, or a list."""
    if not parts:
        raise ValueError("inline_value needs at least one container")
    return bytes(parts[0]) if len(parts) == 1 else [bytes(p) for p in parts]


def inline_parts(value: object) -> list[bytes]:
    """Inverse of :func:`inline_value`.

    Raises
    ------
    CorruptStreamError
        Neither bytes nor a non-empty list of bytes.
    """
    if isinstance(value, bytes) and value:
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, bytes) and v for v in value):
        return [bytes(v) for v in value]
    raise _corrupt(
        f"an inline fedcodec payload must be bytes or a list of bytes, got {value!r:.60}"
    )


def coded_model(
    content: Mapping[str, ArrayRecord | ConfigRecord | MetricRecord], key: str
) -> list[bytes]:
    """The containers of a coded model in a message's content (inline in a ConfigRecord, or
    ONE ``Array`` under ``key``); [] when it carries none.

    Raises
    ------
    CorruptStreamError
        Broken framing or an inline value of the wrong type.
    """
    for record in content.values():
        if isinstance(record, ArrayRecord) and key in record:
            return array_parts(record[key])
        if isinstance(record, ConfigRecord) and key in record:
            return inline_parts(record[key])
    return []


def coded_update(
    content: Mapping[str, ArrayRecord | ConfigRecord | MetricRecord], key: str
) -> tuple[str, bytes, ArrayRecord] | None:
    """The coded update in a reply's content: (record name, container, the arrays that
    travel uncoded next to it), or None when the reply holds none.

    Raises
    ------
    CorruptStreamError
        An update in another stype or a broken inline value.
    ModelMismatchError
        An inline update next to an ArrayRecord, or two coded updates.
    """
    found: list[tuple[str, bytes, ArrayRecord]] = []
    for name, record in content.items():
        if isinstance(record, ConfigRecord) and key in record:
            parts = inline_parts(record[key])
            if len(parts) != 1:
                raise _corrupt("an update is one container")
            found.append((name, parts[0], ArrayRecord()))
        elif isinstance(record, ArrayRecord) and key in record:
            array = record[key]
            if array.stype != STYPE:
                raise _corrupt(f"the update has stype {array.stype!r}, not {STYPE!r}")
            (data,) = array_parts(array)
            uncoded, _ = split_record(record, [k for k in record if k != key])
            found.append((name, data, uncoded))
    if not found:
        return None
    others = [k for k, r in content.items() if isinstance(r, ArrayRecord) and k != found[0][0]]
    if len(found) > 1 or others:
        raise ModelMismatchError(
            f"a coded reply must hold its update and no other ArrayRecord, found "
            f"{len(found)} updates and the ArrayRecords {others!r}"
        )
    return found[0]


def reply_records(
    content: _Records, key: str, container: bytes, uncoded: ArrayRecord, *, inline: bool
) -> dict[str, ArrayRecord | ConfigRecord | MetricRecord]:
    """A reply's records with its ``ArrayRecord`` (under ``key``) replaced by the coded update.

    Inline: a ``ConfigRecord`` holding the container (:data:`KEY_UPDATE_ARRAY`), into
    which the app's metrics are folded when the reply holds nothing but the update and
    ONE ``MetricRecord`` right after it, whose keys do not start with ``fc`` (the wire
    contract, :mod:`fedcodec.flower.constants`): Flower frames every record with some
    180 bytes.  Otherwise ONE coded ``Array`` next to the ``uncoded`` arrays.
    :func:`restore_metrics` is the inverse on the server.
    """
    if not inline:
        wire = ArrayRecord({KEY_UPDATE_ARRAY: coded_array([container])})
        for name, array in uncoded.items():
            wire[name] = array
        return {k: (wire if k == key else v) for k, v in content.items()}
    names = list(content)
    position = names.index(key)
    metrics = content[names[position + 1]] if position + 1 < len(names) else None
    if (
        len(names) != 2
        or not isinstance(metrics, MetricRecord)
        or any(k.startswith(_RESERVED) for k in metrics)
    ):
        record = ConfigRecord({KEY_UPDATE_ARRAY: container})
        return {k: (record if k == key else v) for k, v in content.items()}
    metrics_name = names[position + 1]
    record = ConfigRecord({KEY_UPDATE_ARRAY: container})
    for name, value in metrics.items():
        record[name] = value
    if metrics_name != METRICS_RECORD or not len(metrics):
        record[KEY_METRICS] = metrics_name
    return {key: record}


def restore_metrics(
    content: _Records, key: str
) -> dict[str, ArrayRecord | ConfigRecord | MetricRecord]:
    """The reply's records with the app's ``MetricRecord`` restored from the inline update
    under ``key`` (:func:`reply_records`): the same name, keys, order, values and types,
    right after the update record, which keeps its ``fc`` keys only.

    Raises
    ------
    CorruptStreamError
        A folded value that is not a metric (str, bytes, bool), an unknown ``fc`` key,
        or a metrics name that is not a str or that another record already has.
    """
    record = content[key]
    out: dict[str, ArrayRecord | ConfigRecord | MetricRecord] = {}
    if not isinstance(record, ConfigRecord):
        return dict(content)
    unknown = [
        k for k in record if k.startswith(_RESERVED) and k not in (KEY_UPDATE_ARRAY, KEY_METRICS)
    ]
    if unknown:
        raise _corrupt(f"the reply's update record holds unknown keys {unknown!r}")
    metrics: dict[str, int | float | list[int] | list[float]] = {}
    for metric, value in record.items():
        if metric.startswith(_RESERVED):
            continue
        items = value if isinstance(value, list) else [value]
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in items):
            raise _corrupt(f"the reply's metric {metric!r} is not a metric value: {value!r:.60}")
        metrics[metric] = value  # type: ignore[assignment]  # checked just above
    if not metrics and KEY_METRICS not in record:
        return dict(content)
    name = record.get(KEY_METRICS, METRICS_RECORD)
    if not isinstance(name, str) or not name or name in content:
        raise _corrupt(f"the reply's {KEY_METRICS!r} must name a new record, got {name!r:.60}")
    try:
        restored = MetricRecord(metrics)
    except (TypeError, ValueError) as exc:
        raise _corrupt(f"the reply's metrics do not form a MetricRecord: {exc}") from exc
    for k, v in content.items():
        if k == key:
            out[k] = ConfigRecord({KEY_UPDATE_ARRAY: record[KEY_UPDATE_ARRAY]})
            out[name] = restored
        else:
            out[k] = v
    return out


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
