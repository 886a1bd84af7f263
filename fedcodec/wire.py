"""The round engine's values on the gRPC wire (``fedcodec.v1`` messages), both ways.

The one place where :class:`~fedcodec.pipeline.RoundParams`, model specs, the shared
initial model's reference, a client's :class:`~fedcodec.pipeline.RoundInfo` (the round
config) and downlink packages become protobuf messages and back; the
server's servicer and the edge client's transport both use it.  Coding parameters go
through :meth:`RoundParams.to_json` / :meth:`RoundParams.from_json`, so the checks (and the
error messages naming the field) are those of the pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from fedcodec.pipeline import DownlinkPackage, InitialRef, ModelSpec, RoundInfo, RoundParams
from fedcodec.v1 import aggregation_service_pb2 as pb
from fedcodec.v1 import round_pb2

__all__ = [
    "WireError",
    "initial_from_proto",
    "initial_to_proto",
    "package_from_wire",
    "package_to_wire",
    "params_from_proto",
    "params_to_proto",
    "round_info_from_proto",
    "round_info_to_proto",
    "spec_from_proto",
    "spec_to_proto",
]

_STEP_RULES = {"model": round_pb2.STEP_RULE_MODEL, "tensor": round_pb2.STEP_RULE_TENSOR}
_STEP_RULE_NAMES = {v: k for k, v in _STEP_RULES.items()}
_QUANTIZERS = {
    "uniform": round_pb2.QUANTIZER_UNIFORM,
    "trellis": round_pb2.QUANTIZER_TRELLIS,
    "trellis8": round_pb2.QUANTIZER_TRELLIS8,
    "dither": round_pb2.QUANTIZER_DITHER,
}
_QUANTIZER_NAMES = {v: k for k, v in _QUANTIZERS.items()}
_SPARSE_FIELDS = ("topk", "threshold", "rows")


class WireError(ValueError):
    """A message that does not describe a valid value (the text names the field)."""


def params_to_proto(params: RoundParams) -> round_pb2.CodingParams:
    """A client's :class:`RoundParams` (``per_client`` already applied) as a message."""
    data = params.to_json()
    msg = round_pb2.CodingParams(
        lam=data["lam"],
        s=data["S"],
        tolerance=data["tolerance"],
        step_rule=_STEP_RULES[data["step_rule"]],
    )
    if "step" in data:
        msg.step = data["step"]
    if "budget_bytes" in data:
        msg.budget_bytes = data["budget_bytes"]
    if "sparsification" in data:
        msg.sparsification.SetInParent()
        for name in _SPARSE_FIELDS:
            if name in data["sparsification"]:
                setattr(msg.sparsification, name, data["sparsification"][name])
    if "quantizer" in data:
        msg.quantizer = _QUANTIZERS[data["quantizer"]]
    if "dither_salt" in data:
        msg.dither_salt = data["dither_salt"]
    msg.params_json = params.to_json_text()
    return msg


def params_from_proto(msg: round_pb2.CodingParams) -> RoundParams:
    """Inverse of :func:`params_to_proto`.

    Raises
    ------
    WireError
        An unknown enum value or a parameter out of range (the message names the field).
    """
    if msg.params_json:
        try:
            return RoundParams.from_json_text(msg.params_json)
        except (TypeError, ValueError) as exc:
            raise WireError(f"params.params_json: {exc}") from exc
    if msg.step_rule not in (round_pb2.STEP_RULE_UNSPECIFIED, *_STEP_RULE_NAMES):
        raise WireError(f"params.step_rule: unknown value {msg.step_rule}")
    data: dict[str, Any] = {
        "lam": msg.lam,
        "S": msg.s,
        "tolerance": msg.tolerance,
        "step_rule": _STEP_RULE_NAMES.get(msg.step_rule, "model"),
    }
    if msg.HasField("step"):
        data["step"] = msg.step
    if msg.HasField("budget_bytes"):
        data["budget_bytes"] = msg.budget_bytes
    if msg.HasField("sparsification"):
        s = msg.sparsification
        sparse: dict[str, float] = {}
        if s.HasField("topk"):
            sparse["topk"] = s.topk
        if s.HasField("threshold"):
            sparse["threshold"] = s.threshold
        if s.HasField("rows"):
            sparse["rows"] = s.rows
        data["sparsification"] = sparse
    if msg.quantizer != round_pb2.QUANTIZER_UNSPECIFIED:
        if msg.quantizer not in _QUANTIZER_NAMES:
            raise WireError(f"params.quantizer: unknown value {msg.quantizer}")
        data["quantizer"] = _QUANTIZER_NAMES[msg.quantizer]
    if msg.dither_salt:
        data["dither_salt"] = msg.dither_salt
    try:
        return RoundParams.from_json(data)
    except (TypeError, ValueError) as exc:
        raise WireError(f"params: {exc}") from exc


def spec_to_proto(spec: ModelSpec) -> round_pb2.ModelSpec:
    """A :class:`ModelSpec` as a message."""
    return round_pb2.ModelSpec(
        tensors=[round_pb2.TensorSpec(name=n, shape=list(s)) for n, s in spec]
    )


def spec_from_proto(msg: round_pb2.ModelSpec) -> ModelSpec:
    """Inverse of :func:`spec_to_proto`."""
    return ModelSpec(
        tuple(t.name for t in msg.tensors),
        tuple(tuple(int(d) for d in t.shape) for t in msg.tensors),
    )


def initial_to_proto(ref: InitialRef) -> round_pb2.InitialModel:
    """An :class:`InitialRef` as a message."""
    return round_pb2.InitialModel(model_id=ref.model_id, version=ref.version, digest=ref.digest)


def initial_from_proto(msg: round_pb2.InitialModel) -> InitialRef:
    """Inverse of :func:`initial_to_proto`."""
    return InitialRef(msg.model_id, msg.version, msg.digest)


def round_info_to_proto(info: RoundInfo) -> round_pb2.RoundConfig:
    """A selected client's :class:`RoundInfo` as the ``RoundConfig`` message."""
    deadline = Timestamp()
    deadline.FromNanoseconds(int(info.deadline * 1e9))
    return round_pb2.RoundConfig(
        round_id=info.round_id,
        base_version=info.base_version,
        base_digest=info.base_digest,
        params=params_to_proto(info.params),
        deadline=deadline,
        model_spec=spec_to_proto(info.spec),
        max_update_bytes=info.max_update_bytes,
        max_chunk_bytes=info.max_chunk_bytes,
        initial_model=None if info.initial is None else initial_to_proto(info.initial),
        temporal_reference=info.temporal_reference,
        compact_updates=info.compact_updates,
    )


def round_info_from_proto(config: round_pb2.RoundConfig, max_chunk_bytes: int) -> RoundInfo:
    """A :class:`RoundInfo` from a ``RoundConfig`` message.

    Parameters
    ----------
    config : RoundConfig
        The message.
    max_chunk_bytes : int
        The receiver's own chunk limit: the announced one is capped by it, and it stands
        for an announcement of 0 (a server from before the field).

    Raises
    ------
    WireError
        The coding parameters are invalid.
    """
    return RoundInfo(
        round_id=config.round_id,
        base_version=config.base_version,
        base_digest=config.base_digest,
        params=params_from_proto(config.params),
        deadline=config.deadline.ToNanoseconds() / 1e9,
        spec=spec_from_proto(config.model_spec),
        max_update_bytes=config.max_update_bytes,
        max_chunk_bytes=min(config.max_chunk_bytes or max_chunk_bytes, max_chunk_bytes),
        initial=(
            initial_from_proto(config.initial_model) if config.HasField("initial_model") else None
        ),
        temporal_reference=config.temporal_reference,
        compact_updates=config.compact_updates,
    )


def package_to_wire(
    package: DownlinkPackage, initial: InitialRef | None
) -> tuple[pb.ModelPackageHeader, list[bytes]]:
    """A package as its header and the parts that follow it (in order).

    ``initial`` is the federation's shared initial model (carried in the header when the
    package is relative to it).
    """
    parts: list[bytes] = []
    if package.initial is not None:
        parts.append(package.initial)
    if package.keyframe is not None:
        parts.append(package.keyframe)
    else:
        parts.extend(package.deltas)
    header = pb.ModelPackageHeader(
        version=package.version,
        digest=package.digest,
        kind=(
            pb.PACKAGE_KIND_KEYFRAME
            if package.keyframe is not None
            else pb.PACKAGE_KIND_DELTAS
            if package.deltas
            else pb.PACKAGE_KIND_UP_TO_DATE
        ),
        part_sizes=[len(p) for p in parts],
        total_bytes=sum(len(p) for p in parts),
        initial_attached=package.initial is not None,
        held_delta_reference=package.held_delta_reference,
    )
    if package.from_version is not None:
        header.from_version = package.from_version
    if package.relative_to_initial:
        assert package.initial_digest is not None
        header.initial_model.CopyFrom(
            round_pb2.InitialModel(
                model_id="" if initial is None else initial.model_id,
                version=package.initial_version or 0,
                digest=package.initial_digest,
            )
        )
    return header, parts


def package_from_wire(header: pb.ModelPackageHeader, parts: Sequence[bytes]) -> DownlinkPackage:
    """Inverse of :func:`package_to_wire` (the parts already reassembled and checked).

    Raises
    ------
    WireError
        Parts that do not fit the header's kind.
    """
    rest = list(parts)
    initial: bytes | None = None
    if header.initial_attached:
        if not rest or not header.HasField("initial_model"):
            raise WireError("initial_attached: the package names no initial model or has no part")
        initial = rest.pop(0)
    keyframe = header.kind == pb.PACKAGE_KIND_KEYFRAME
    if keyframe and len(rest) != 1:
        raise WireError("kind: a keyframe package has exactly one container")
    if header.kind == pb.PACKAGE_KIND_UP_TO_DATE and rest:
        raise WireError("kind: an up-to-date package carries no container")
    if header.held_delta_reference and (header.kind != pb.PACKAGE_KIND_DELTAS or not rest):
        raise WireError("held_delta_reference: only a package of deltas has one")
    ref = initial_from_proto(header.initial_model) if header.HasField("initial_model") else None
    return DownlinkPackage(
        version=header.version,
        digest=header.digest,
        keyframe=rest[0] if keyframe else None,
        from_version=header.from_version if header.HasField("from_version") else None,
        deltas=() if keyframe else tuple(rest),
        initial_version=None if ref is None else ref.version,
        initial_digest=None if ref is None else ref.digest,
        initial=initial,
        held_delta_reference=header.held_delta_reference,
    )
