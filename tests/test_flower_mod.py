"""The client mod with real Flower ``Message``/``Context`` objects (no Ray, no SuperLink)."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pytest

pytest.importorskip(
    "flwr", reason="the Flower plugin tests need flwr (pip install 'fedcodec[flower]')"
)

from flower_helpers import task_identity  # noqa: F401  (autouse fixture)
from flwr.app import (
    Array,
    ArrayRecord,
    ConfigRecord,
    Context,
    Message,
    MessageType,
    MetricRecord,
    RecordDict,
)
from flwr.clientapp.mod import arrays_size_mod, fixedclipping_mod, message_size_mod

from fedcodec import codec
from fedcodec.flower import constants as c
from fedcodec.flower import fedcodec_mod, make_fedcodec_mod
from fedcodec.flower._records import coded_array, coded_update
from fedcodec.pipeline import DownlinkEncoder, ModelVersion, RoundParams

SHAPES = {"w": (16, 40), "b": (16,)}
ROUND_PARAMS = RoundParams(lam=0.5, S=0)


def _model(version: int = 0, seed: int = 0) -> ModelVersion:
    rng = np.random.default_rng(seed)
    return ModelVersion.create(
        version, {k: (rng.standard_normal(s) * 0.1).astype(np.float32) for k, s in SHAPES.items()}
    )


def _context(node_id: int = 7) -> Context:
    return Context(run_id=1, node_id=node_id, node_config={}, state=RecordDict(), run_config={})


def _coded_record(model: ModelVersion, containers: list[bytes]) -> ArrayRecord:
    """The package as the wrapper sends it: ONE Array, the containers' bytes as they are."""
    return (
        ArrayRecord({c.KEY_MODEL_ARRAY: coded_array(containers)}) if containers else ArrayRecord()
    )


def _message(
    record: ArrayRecord,
    *,
    kind: str,
    version: int,
    digest: str,
    from_version: int | None = None,
    train: bool = True,
    params: bool = True,
    layout: bool = True,
) -> Message:
    config = ConfigRecord(
        {
            c.KEY_FORMAT: c.FORMAT,
            c.KEY_DOWNLINK: kind,
            c.KEY_BASE_VERSION: version,
            c.KEY_BASE_DIGEST: bytes.fromhex(digest)[: c.DIGEST_BYTES],
        }
    )
    if layout:
        config[c.KEY_KEYS] = list(SHAPES)
    if train:
        config[c.KEY_ROUND] = 1
    if from_version is not None:
        config[c.KEY_FROM_VERSION] = from_version
    if params:
        config[c.KEY_PARAMS] = ROUND_PARAMS.to_json_text()
    message_type = MessageType.TRAIN if train else MessageType.EVALUATE
    return Message(RecordDict({"arrays": record, "config": config}), 7, message_type)


def _keyframe_message(downlink: DownlinkEncoder, model: ModelVersion, **kwargs: object) -> Message:
    package = downlink.package_for("7", keyframe=True)
    assert package.keyframe is not None
    return _message(
        _coded_record(model, [package.keyframe]),
        kind=c.DOWNLINK_KEYFRAME,
        version=package.version,
        digest=package.digest,
        **kwargs,  # type: ignore[arg-type]
    )


def _app(change: float = 1e-3) -> tuple[Callable[[Message, Context], Message], list[Message]]:
    """A ClientApp stand-in: adds a seeded change to every weight and records what it saw."""
    seen: list[Message] = []

    def app(msg: Message, context: Context) -> Message:
        seen.append(msg)
        record = msg.content["arrays"]
        assert isinstance(record, ArrayRecord)
        rng = np.random.default_rng(len(seen))
        if msg.metadata.message_type == MessageType.EVALUATE:
            return Message(RecordDict({"metrics": MetricRecord({"acc": 0.5})}), reply_to=msg)
        out = {
            k: a.numpy() + (rng.laplace(size=a.shape) * change).astype(np.float32)
            for k, a in record.items()
        }
        content = RecordDict(
            {
                "arrays": ArrayRecord({k: Array(v) for k, v in out.items()}),
                "metrics": MetricRecord({"num-examples": 10}),
            }
        )
        return Message(content, reply_to=msg)

    return app, seen


def _update_data(reply: Message) -> bytes:
    """The container of a coded reply (inline or in an Array)."""
    found = coded_update(dict(reply.content.items()), c.KEY_UPDATE_ARRAY)
    assert found is not None
    return found[1]


def _decoded_update(reply: Message) -> dict[str, np.ndarray]:
    return codec.decode(_update_data(reply), names=list(SHAPES))


def _publish_first(model: ModelVersion) -> DownlinkEncoder:
    downlink = DownlinkEncoder(model.spec, params=ROUND_PARAMS, threads=1)
    downlink.publish(model)
    return downlink


def test_message_without_fedcodec_keys_passes_through() -> None:
    """A run without the strategy wrapper: the app sees and returns the message as is."""
    # Prepare
    model = _model()
    msg = Message(
        RecordDict({"arrays": ArrayRecord({k: Array(v) for k, v in model.tensors.items()})}),
        7,
        MessageType.TRAIN,
    )
    app, seen = _app()
    # Execute
    reply = fedcodec_mod(msg, _context(), app)
    # Assert
    assert seen == [msg]
    assert set(reply.content.keys()) == {"arrays", "metrics"}
    assert all(a.stype == "numpy.ndarray" for a in reply.content["arrays"].values())  # type: ignore[union-attr]


def test_keyframe_gives_the_app_plain_arrays_and_codes_the_reply() -> None:
    """A keyframe becomes float32 arrays for the app; the reply is ONE record: the inline
    container with the app's metrics folded in, nothing else."""
    # Prepare
    model = _model()
    downlink = _publish_first(model)
    msg = _keyframe_message(downlink, model)
    app, seen = _app()
    context = _context()
    # Execute
    reply = fedcodec_mod(msg, context, app)
    # Assert
    assert not reply.has_error()
    received = seen[0].content["arrays"]
    assert isinstance(received, ArrayRecord)
    stream = downlink.stream_model()
    for name, array in received.items():
        assert array.stype == "numpy.ndarray"
        np.testing.assert_array_equal(array.numpy(), stream.tensors[name])
    # A small update travels inline: the app's ArrayRecord becomes a ConfigRecord holding
    # the container's bytes under the same name, and the app's metrics under their keys.
    coded = reply.content["arrays"]
    assert isinstance(coded, ConfigRecord)
    assert list(coded.keys()) == [c.KEY_UPDATE_ARRAY, "num-examples"]
    assert coded["num-examples"] == 10
    assert isinstance(coded[c.KEY_UPDATE_ARRAY], bytes)
    assert codec.inspect(coded[c.KEY_UPDATE_ARRAY])[0].shape == SHAPES["w"]
    assert list(reply.content.keys()) == ["arrays"]
    assert {c.STATE_MODEL, c.STATE_RESIDUAL, c.STATE_RECORD} <= set(context.state.keys())


def test_update_plus_residual_equals_the_true_change() -> None:
    """Error feedback: decoded update + kept residual == local − base, exactly (float32)."""
    # Prepare
    model = _model()
    downlink = _publish_first(model)
    app, seen = _app(change=5e-3)
    context = _context()
    # Execute
    reply = fedcodec_mod(_keyframe_message(downlink, model), context, app)
    # Assert
    base = downlink.stream_model()
    decoded = _decoded_update(reply)
    residual = context.state[c.STATE_RESIDUAL]
    assert isinstance(residual, ArrayRecord)
    for name in SHAPES:
        sent = seen[0].content["arrays"][name].numpy()  # type: ignore[union-attr]
        true_change = _app_local(seen[0], name) - base.tensors[name]
        np.testing.assert_allclose(
            decoded[name] + residual[name].numpy(), true_change, rtol=0, atol=1e-7
        )
        np.testing.assert_array_equal(sent, base.tensors[name])


def _app_local(msg: Message, name: str) -> np.ndarray:
    """Recompute what ``_app`` returned for its first call."""
    rng = np.random.default_rng(1)
    record = msg.content["arrays"]
    assert isinstance(record, ArrayRecord)
    out = {
        k: a.numpy() + (rng.laplace(size=a.shape) * 5e-3).astype(np.float32)
        for k, a in record.items()
    }
    return out[name]


def test_residual_survives_in_context_state_and_is_sent_later() -> None:
    """A second round starts from the residual kept in context.state."""
    # Prepare
    model = _model()
    downlink = _publish_first(model)
    context = _context()
    app, _ = _app(change=5e-3)
    fedcodec_mod(_keyframe_message(downlink, model), context, app)
    first = context.state[c.STATE_RESIDUAL]
    assert isinstance(first, ArrayRecord)
    first_norm = sum(float(np.sum(a.numpy() ** 2)) for a in first.values())
    stream = downlink.stream_model()
    # Not the first contact: no layout, no parameters (the mod kept both).
    none = _message(
        ArrayRecord(),
        kind=c.DOWNLINK_NONE,
        version=0,
        digest=stream.digest,
        layout=False,
        params=False,
    )
    identity_app, _ = _app(change=0.0)
    # Execute: the app changes nothing; only the residual is left to send
    reply = fedcodec_mod(none, context, identity_app)
    # Assert
    assert first_norm > 0
    decoded = _decoded_update(reply)
    assert sum(float(np.sum(np.abs(v))) for v in decoded.values()) > 0


def test_coded_deltas_are_applied_to_the_held_model() -> None:
    """Two published versions later, a node gets a sequence of two deltas and rebuilds exactly."""
    # Prepare
    model = _model()
    downlink = _publish_first(model)
    context = _context()
    app, seen = _app()
    fedcodec_mod(_keyframe_message(downlink, model), context, app)
    for version in (1, 2):
        changed = {k: v + np.float32(0.01 * version) for k, v in model.tensors.items()}
        downlink.publish(ModelVersion.create(version, changed))
    package = downlink.package_for("7", have_version=0, have_digest=downlink.digest_of(0))
    record = _coded_record(model, list(package.deltas))
    msg = _message(
        record,
        kind=c.DOWNLINK_DELTA,
        version=package.version,
        digest=package.digest,
        params=False,
        train=False,
        layout=False,
    )
    # Execute
    reply = fedcodec_mod(msg, context, app)
    # Assert
    assert not reply.has_error()
    assert len(package.deltas) == 2
    assert [a.stype for a in record.values()] == [c.STYPE_SEQUENCE]
    received = seen[-1].content["arrays"]
    assert isinstance(received, ArrayRecord)
    stream = downlink.stream_model()
    for name, array in received.items():
        np.testing.assert_array_equal(array.numpy(), stream.tensors[name])
    assert context.state[c.STATE_RECORD]["receiver"]  # type: ignore[index]
    saved = json.loads(str(context.state[c.STATE_RECORD]["receiver"]))  # type: ignore[index]
    assert saved["version"] == 2
    assert list(reply.content.keys()) == ["metrics"]  # evaluate replies: the app's metrics


def test_wrong_digest_returns_an_error_message_and_forgets_the_model() -> None:
    """A model that does not hash to the server's digest is a failed precondition, not a raise."""
    # Prepare
    model = _model()
    downlink = _publish_first(model)
    package = downlink.package_for("7", keyframe=True)
    assert package.keyframe is not None
    msg = _message(
        _coded_record(model, [package.keyframe]),
        kind=c.DOWNLINK_KEYFRAME,
        version=0,
        digest="00" * 32,
    )
    app, seen = _app()
    context = _context()
    # Execute
    reply = fedcodec_mod(msg, context, app)
    # Assert
    assert reply.has_error()
    assert reply.error.code == c.MOD_FAILED_PRECONDITION
    assert "hashes to" in str(reply.error.reason)
    assert seen == []
    saved = context.state[c.STATE_RECORD]
    assert isinstance(saved, ConfigRecord)
    assert json.loads(str(saved["receiver"]))["version"] is None  # the model is forgotten


def test_deltas_from_a_version_the_node_does_not_hold_are_refused() -> None:
    """A node without a model cannot apply deltas: an error reply (then it gets a keyframe)."""
    # Prepare
    model = _model()
    downlink = _publish_first(model)
    changed = {k: v + np.float32(0.01) for k, v in model.tensors.items()}
    downlink.publish(ModelVersion.create(1, changed))
    package = downlink.package_for("7", have_version=0)
    msg = _message(
        _coded_record(model, list(package.deltas)),
        kind=c.DOWNLINK_DELTA,
        version=1,
        digest=package.digest,
        from_version=0,
    )
    app, seen = _app()
    # Execute
    reply = fedcodec_mod(msg, _context(), app)
    # Assert
    assert reply.has_error()
    assert reply.error.code == c.MOD_FAILED_PRECONDITION
    assert seen == []


def test_coded_arrays_without_fedcodec_config_are_refused() -> None:
    """Coded arrays but no wrapper keys: the app would get bytes it cannot read."""
    # Prepare
    model = _model()
    downlink = _publish_first(model)
    package = downlink.package_for("7", keyframe=True)
    assert package.keyframe is not None
    msg = Message(
        RecordDict({"arrays": _coded_record(model, [package.keyframe]), "config": ConfigRecord()}),
        7,
        MessageType.TRAIN,
    )
    app, seen = _app()
    # Execute
    reply = fedcodec_mod(msg, _context(), app)
    # Assert
    assert reply.has_error()
    assert "CompressionStrategy" in str(reply.error.reason)
    assert seen == []


def test_two_array_records_are_a_failed_precondition() -> None:
    """Like fixedclipping_mod, the mod needs exactly one ArrayRecord."""
    # Prepare
    model = _model()
    downlink = _publish_first(model)
    msg = _keyframe_message(downlink, model)
    msg.content["other"] = ArrayRecord({"x": Array(np.zeros(3, np.float32))})
    app, _ = _app()
    # Execute
    reply = fedcodec_mod(msg, _context(), app)
    # Assert
    assert reply.has_error()
    assert "one ArrayRecord" in str(reply.error.reason)


def test_reply_with_other_keys_is_refused() -> None:
    """The reply must hold the model's keys so the server can add the update to the model."""
    # Prepare
    model = _model()
    downlink = _publish_first(model)

    def renaming_app(msg: Message, context: Context) -> Message:
        arrays = ArrayRecord({"renamed": Array(np.zeros(4, np.float32))})
        return Message(RecordDict({"arrays": arrays, "m": MetricRecord({"n": 1})}), reply_to=msg)

    # Execute
    reply = fedcodec_mod(_keyframe_message(downlink, model), _context(), renaming_app)
    # Assert
    assert reply.has_error()
    assert "cannot code the reply" in str(reply.error.reason)


def test_app_errors_pass_through() -> None:
    """An error reply of the app reaches the server unchanged."""
    # Prepare
    model = _model()
    downlink = _publish_first(model)
    from flwr.app import Error

    def failing_app(msg: Message, context: Context) -> Message:
        return Message(Error(code=2, reason="boom"), reply_to=msg)

    # Execute
    reply = fedcodec_mod(_keyframe_message(downlink, model), _context(), failing_app)
    # Assert
    assert reply.has_error()
    assert reply.error.reason == "boom"


def test_budget_too_small_is_an_error_reply_and_keeps_the_residual() -> None:
    """A budget below the smallest container cannot be met: error, residual unchanged."""
    # Prepare
    model = _model()
    downlink = _publish_first(model)
    msg = _keyframe_message(downlink, model)
    msg.content["config"][c.KEY_PARAMS] = RoundParams(budget_bytes=1).to_json_text()  # type: ignore[index]
    app, _ = _app()
    context = _context()
    # Execute
    reply = fedcodec_mod(msg, context, app)
    # Assert
    assert reply.has_error()
    residual = context.state.get(c.STATE_RESIDUAL)
    assert residual is None or not any(np.any(a.numpy()) for a in residual.values())  # type: ignore[union-attr]


def test_without_error_feedback_no_residual_is_kept() -> None:
    """make_fedcodec_mod(error_feedback=False) codes each update alone."""
    # Prepare
    model = _model()
    downlink = _publish_first(model)
    mod = make_fedcodec_mod(error_feedback=False)
    context = _context()
    app, _ = _app(change=5e-3)
    # Execute
    mod(_keyframe_message(downlink, model), context, app)
    # Assert
    residual = context.state[c.STATE_RESIDUAL]
    assert isinstance(residual, ArrayRecord)
    assert all(not np.any(a.numpy()) for a in residual.values())


def test_composes_with_fixedclipping_mod_clipping_the_plain_update() -> None:
    """mods=[fedcodec_mod, fixedclipping_mod]: the clip sees plain arrays; the coded update is
    the clipped one up to the quantization error."""
    # Prepare
    model = _model()
    downlink = _publish_first(model)
    msg = _keyframe_message(downlink, model)
    clip = 0.05
    msg.content["config"]["clipping_norm"] = clip  # type: ignore[index]
    app, _ = _app(change=0.05)

    def clipped_app(m: Message, ctx: Context) -> Message:
        return fixedclipping_mod(m, ctx, app)

    # Execute
    reply = make_fedcodec_mod(error_feedback=False)(msg, _context(), clipped_app)
    # Assert
    assert not reply.has_error()
    decoded = _decoded_update(reply)
    norm = float(np.sqrt(sum(float(np.sum(v.astype(np.float64) ** 2)) for v in decoded.values())))
    steps = [info.step for info in codec.inspect(_update_data(reply))]
    numel = sum(int(np.prod(s)) for s in SHAPES.values())
    assert norm <= clip + 0.5 * max(steps) * np.sqrt(numel)


def test_composes_with_size_mods_which_see_the_coded_message() -> None:
    """message_size_mod and arrays_size_mod outside fedcodec_mod run on the coded message."""
    # Prepare
    model = _model()
    downlink = _publish_first(model)
    app, _ = _app()

    def inner(m: Message, ctx: Context) -> Message:
        return fedcodec_mod(m, ctx, app)

    def middle(m: Message, ctx: Context) -> Message:
        return arrays_size_mod(m, ctx, inner)

    # Execute
    reply = message_size_mod(_keyframe_message(downlink, model), _context(), middle)
    # Assert
    assert not reply.has_error()
    assert len(_update_data(reply)) < 4 * sum(int(np.prod(s)) for s in SHAPES.values()) / 5


def test_mod_failed_precondition_is_flowers_number() -> None:
    """Our copy of ErrorCode.MOD_FAILED_PRECONDITION matches Flower's."""
    from flwr.common.constant import ErrorCode

    assert c.MOD_FAILED_PRECONDITION == ErrorCode.MOD_FAILED_PRECONDITION


def test_threads_must_not_be_negative() -> None:
    """Constructor arguments are validated with ValueError."""
    with pytest.raises(ValueError, match="threads"):
        make_fedcodec_mod(threads=-1)


def test_layout_and_parameters_are_kept_from_the_first_contact() -> None:
    """Later messages carry neither the key order nor the parameters: the mod kept them."""
    # Prepare
    model = _model()
    downlink = _publish_first(model)
    context = _context()
    app, _ = _app(change=5e-3)
    fedcodec_mod(_keyframe_message(downlink, model), context, app)
    stream = downlink.stream_model()
    later = _message(
        ArrayRecord(),
        kind=c.DOWNLINK_NONE,
        version=0,
        digest=stream.digest,
        layout=False,
        params=False,
    )
    # Execute
    reply = fedcodec_mod(later, context, app)
    # Assert
    assert not reply.has_error()
    assert len(_update_data(reply)) > 0
    assert c.KEY_KEYS not in later.content["config"]  # type: ignore[operator]


def test_a_node_without_layout_answers_with_an_error_naming_the_key() -> None:
    """A node that lost its state gets no layout from a steady-state message: an error reply
    naming the key (the server then sends the first-contact message again)."""
    # Prepare
    model = _model()
    downlink = _publish_first(model)
    package = downlink.package_for("7", keyframe=True)
    assert package.keyframe is not None
    msg = _message(
        _coded_record(model, [package.keyframe]),
        kind=c.DOWNLINK_KEYFRAME,
        version=package.version,
        digest=package.digest,
        layout=False,
    )
    app, seen = _app()
    # Execute
    reply = fedcodec_mod(msg, _context(), app)
    # Assert
    assert reply.has_error()
    assert c.KEY_KEYS in str(reply.error.reason)
    assert "fedcodec" in str(reply.error.reason)
    assert seen == []


def test_a_train_message_without_parameters_is_an_error_reply() -> None:
    """No parameters in the message and none kept: the reply cannot be coded."""
    # Prepare
    model = _model()
    downlink = _publish_first(model)
    msg = _keyframe_message(downlink, model, params=False)
    app, _ = _app()
    # Execute
    reply = fedcodec_mod(msg, _context(), app)
    # Assert
    assert reply.has_error()
    assert c.KEY_PARAMS in str(reply.error.reason)


def test_a_text_digest_is_refused_naming_the_key() -> None:
    """The base digest travels as 16 bytes; anything else is an error naming the key."""
    # Prepare
    model = _model()
    downlink = _publish_first(model)
    msg = _keyframe_message(downlink, model)
    msg.content["config"][c.KEY_BASE_DIGEST] = downlink.stream_model().digest  # type: ignore[index]
    app, seen = _app()
    # Execute
    reply = fedcodec_mod(msg, _context(), app)
    # Assert
    assert reply.has_error()
    assert c.KEY_BASE_DIGEST in str(reply.error.reason)
    assert seen == []


@pytest.mark.parametrize(
    ("value", "digest_bytes"),
    [("fedcodec/v3", 16), ("v4", 16), ("v4q", 16), ("v3k", 16), (c.DOWNLINK_KEYFRAME, 32)],
)
def test_another_wire_version_is_refused_before_the_app_runs(value: str, digest_bytes: int) -> None:
    """A message of another contract version (``fedcodec/v3``: 32-byte digest, kind in its own
    key), without a kind or with an unknown one, or a v4 message with a full 32-byte digest, is
    an error reply naming what is wrong; the app never runs."""
    # Prepare
    model = _model()
    downlink = _publish_first(model)
    msg = _keyframe_message(downlink, model)
    config = msg.content["config"]
    assert isinstance(config, ConfigRecord)
    config[c.KEY_FORMAT] = value
    config[c.KEY_BASE_DIGEST] = bytes.fromhex(downlink.stream_model().digest)[:digest_bytes]
    app, seen = _app()
    # Execute
    reply = fedcodec_mod(msg, _context(), app)
    # Assert
    assert reply.has_error()
    reason = str(reply.error.reason)
    assert ("unsupported format" in reason) if digest_bytes == 16 else (c.KEY_BASE_DIGEST in reason)
    assert seen == []
