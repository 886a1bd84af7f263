"""Update checks shared by the round engine's intake and the :class:`Aggregator`.

Every check that can refuse an update lives here once: the sender and its
example count, the base version and digest it names, and the container's
tensor table (count, shapes, steps).  The callers add what only they know:
the :class:`~fedcodec.pipeline.server.Aggregator` its duplicate set and its
closed state, :meth:`fedcodec.pipeline.engine.RoundEngine.validate_update`
the open round and a full payload check without an accumulator.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence

from fedcodec import codec
from fedcodec.codec import TensorInfo
from fedcodec.errors import FC_ERR_MISMATCH, InvalidParameterError
from fedcodec.pipeline.errors import (
    BaseDigestMismatchError,
    ModelMismatchError,
    StaleBaseVersionError,
    UnknownBaseVersionError,
    UpdateRejectedError,
)
from fedcodec.pipeline.model import ModelSpec

__all__ = ["check_base", "check_sender", "check_tensors", "inspect_update"]


def check_sender(client_id: object, num_examples: object, data: object) -> None:
    """The sender id, the FedAvg weight and the payload's type.

    Raises
    ------
    UpdateRejectedError
        An empty or non-str client id, ``num_examples`` not an int >= 1, or a
        payload that is not bytes-like.
    """
    if not isinstance(client_id, str) or not client_id:
        raise UpdateRejectedError(f"client_id must be a non-empty str, got {client_id!r}")
    if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples < 1:
        raise UpdateRejectedError(
            f"num_examples must be an int >= 1, got {num_examples!r} (client {client_id!r})"
        )
    if not isinstance(data, bytes | bytearray | memoryview):
        raise UpdateRejectedError(f"update data must be bytes, got {type(data).__name__}")


def check_base(
    *,
    client_id: str,
    round_number: int,
    base_version: int,
    expected_version: int,
    base_digest: str | None,
    base_digests: Collection[str],
    was_issued: Callable[[int], bool] | None = None,
) -> None:
    """The base version and digest an update names.

    Raises
    ------
    StaleBaseVersionError
        A version the server issued (``was_issued``), but not the round's.
    UnknownBaseVersionError
        A version the server never issued.
    BaseDigestMismatchError
        A digest that is not one of ``base_digests`` (None is not checked).
    """
    if base_version != expected_version:
        if was_issued is not None and was_issued(base_version):
            raise StaleBaseVersionError(
                f"update of {client_id!r} is against version {base_version}, "
                f"round {round_number} aggregates against version {expected_version}"
            )
        raise UnknownBaseVersionError(
            f"update of {client_id!r} names base version {base_version}, which this "
            f"server never issued (round {round_number} is against version "
            f"{expected_version})"
        )
    if base_digest is not None and base_digest not in base_digests:
        raise BaseDigestMismatchError(
            f"update of {client_id!r}: base digest {base_digest[:16]}… is not a digest of "
            f"version {expected_version}"
        )


def inspect_update(data: bytes, spec: ModelSpec, *, client_id: str) -> list[TensorInfo]:
    """The tensor table of an update's container, compact or not.

    A compact container (:func:`fedcodec.codec.is_compact`) is read with the model's
    shapes (it stores only their digest).

    Raises
    ------
    ModelMismatchError
        A compact container coded for other shapes.
    CorruptStreamError
        A malformed container.
    """
    if not codec.is_compact(data):
        return list(codec.inspect(data))
    try:
        return list(codec.inspect(data, expected_shapes=spec.shapes))
    except InvalidParameterError as exc:
        if exc.code != FC_ERR_MISMATCH:
            raise ModelMismatchError(f"update of {client_id!r}: {exc}") from exc
        # in the model's terms: the codec's message names its Python argument
        # (expected_shapes), and this one reaches remote clients
        raise ModelMismatchError(
            f"update of {client_id!r}: a compact container coded for other tensor shapes "
            f"than the model's {len(spec.names)} tensors (model shape digest "
            f"0x{codec.shape_digest(spec.shapes):08x})"
        ) from exc


def check_tensors(
    infos: Sequence[TensorInfo], spec: ModelSpec, *, client_id: str, max_step: float
) -> tuple[float, ...]:
    """A container's tensor table against the model; returns the steps.

    Raises
    ------
    ModelMismatchError
        Another tensor count or shape.
    UpdateRejectedError
        A step that is not finite, not positive, or above ``max_step``.
    """
    if len(infos) != len(spec):
        raise ModelMismatchError(
            f"update of {client_id!r} holds {len(infos)} tensors, the model has {len(spec)}"
        )
    for info, (name, shape) in zip(infos, spec, strict=True):
        if info.shape != shape:
            raise ModelMismatchError(
                f"update of {client_id!r}: tensor {info.index} ({name!r}) has shape "
                f"{info.shape}, the model has {shape}"
            )
        # an all-zero tensor (no slices) reconstructs to zero whatever its step
        if info.slices and not (math.isfinite(info.step) and 0.0 < info.step <= max_step):
            raise UpdateRejectedError(
                f"update of {client_id!r}: tensor {name!r} has step {info.step!r}, "
                f"beyond the accepted maximum {max_step:.3g}"
            )
    return tuple(info.step for info in infos)
