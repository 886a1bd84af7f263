"""The client side: a ClientApp mod that decodes the model and codes the update.

Pair it with :class:`~fedcodec.flower.CompressionStrategy` in the ServerApp.
For every message the wrapper prepared (its ``ConfigRecord`` carries
:data:`~fedcodec.flower.constants.KEY_FORMAT`) the mod

1. rebuilds the global model from the message with the round engine's client
   side (:class:`fedcodec.pipeline.ClientEngine`: coded deltas or a keyframe
   applied to what it holds, digest-checked; or raw arrays) and hands the app a
   message whose ``ArrayRecord`` holds plain float32 arrays under the original keys;
2. calls the app;
3. for a train message, codes the reply's ``ArrayRecord`` as the difference to
   that model with error feedback, with the round's parameters
   (:data:`~fedcodec.flower.constants.KEY_PARAMS`, kept in ``context.state``:
   the server sends them when they change): the engine's container goes out
   as it is, inline in a ``ConfigRecord`` under the ArrayRecord's name (with the
   app's ``MetricRecord`` folded into it, which the server restores exactly) or,
   when large, as ONE ``Array(stype="fedcodec/v3", data=container)``.  Nothing
   else is added to the reply: a reply without error tells the server that the
   node holds the model the message described (the digest checked out).

Temporal reference.  When the strategy keeps one per node
(``CompressionStrategy(temporal_reference=True)``), the mod keeps its previous
update's reconstruction in ``context.state`` and codes the next update against it
(same levels, fewer bytes; sparsified updates go without).  A train message that
names the reference the server holds (:data:`~fedcodec.flower.constants.KEY_REFERENCE`:
first contact, or when the server did not decode the node's last reply, or evicted
it) is obeyed — the reference is used only when the token names the one held — so
the server can always decode the update.

The shared initial model.  Give the mod the initial model the ServerApp starts
from (``make_fedcodec_mod(initial_model=...)``: built from the same seed, or read
from the file shipped with the app): it never travels, and a node's first
download is a delta.  A mod without it (the plain :data:`fedcodec_mod`) answers its
first message with an error ``Message`` naming
:data:`~fedcodec.flower.constants.ERROR_NO_INITIAL` — the server cannot know what a
node holds before it answers — and the strategy sends it the initial model once in its
next message (4 bytes per weight; ``CompressionStrategy(send_initial=True)``, the
default), so it loses the round of its first message.  With
``send_initial=False`` such a node gets an error every round.

If the app's reply holds an ``ArrayRecord`` named
:data:`~fedcodec.flower.constants.IMPORTANCE_RECORD` (per-weight importance η, e.g.
``fedcodec.torch.FisherAccumulator.to_record()``), the update is coded with it
(:class:`fedcodec.pipeline.Sensitivity` on the server turns it into per-tensor
steps) and the record is removed: it never travels.
Arrays the server marks as uncoded (:data:`~fedcodec.flower.constants.KEY_UNCODED_KEYS`,
integer buffers) pass through both ways, and records keep the server's key order.
The incoming message's ``ArrayRecord`` is replaced by the decoded one in place.
The held model and the residual live in ``context.state``.  Messages without
the wrapper's keys pass through untouched, so one ClientApp serves runs with
and without the plugin.  A failed precondition (several ``ArrayRecord``\\ s, a
model that does not hash to the server's digest, deltas from a version the
node does not hold, a reply whose keys differ from the model's) returns an
error ``Message`` (``MOD_FAILED_PRECONDITION``) instead of raising; the server
then sends that node a keyframe.

Order with other mods (the first mod in ``mods=[...]`` is the outermost):

* ``mods=[fedcodec_mod, fixedclipping_mod]`` — the clipping mod sees the
  decoded model and clips the plain update, then fedcodec codes the clipped
  update.  The coded update differs from the clipped one by the quantization
  error (at most half a step per weight) and, with error feedback, by the
  carried residual; for a strict sensitivity bound build the mod with
  ``error_feedback=False`` and account for the quantization error, or clip on
  the server (``DifferentialPrivacyServerSideFixedClipping``, which sees the
  decoded updates).
* ``mods=[message_size_mod, arrays_size_mod, fedcodec_mod]`` — the size mods
  outside fedcodec log what travels (coded); inside, they log plain arrays.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt
from flwr.app import ArrayRecord, Context, Error, Message, MessageType, RecordDict
from flwr.clientapp.typing import ClientAppCallable, Mod

from fedcodec import codec
from fedcodec.errors import FedCodecError
from fedcodec.flower._client_state import ClientState, Layout
from fedcodec.flower._config import config_int, params_from_text
from fedcodec.flower._logging import logger as _log
from fedcodec.flower._records import (
    INLINE_MAX_BYTES,
    coded_model,
    is_coded,
    merge_records,
    plain_record,
    record_tensors,
    reply_records,
    split_record,
    wire_size,
)
from fedcodec.flower.constants import (
    DIGEST_BYTES,
    DOWNLINK_DELTA,
    DOWNLINK_KEYFRAME,
    DOWNLINK_KINDS,
    DOWNLINK_NONE,
    DOWNLINK_RAW,
    DOWNLINK_REFUSED,
    ERROR_NO_INITIAL,
    FLOWER_ROUND,
    FORMAT,
    IMPORTANCE_RECORD,
    INITIAL_ARRAY,
    KEY_BASE_DIGEST,
    KEY_BASE_VERSION,
    KEY_COMPACT,
    KEY_DOWNLINK,
    KEY_ERROR,
    KEY_FORMAT,
    KEY_FROM_VERSION,
    KEY_INITIAL_DIGEST,
    KEY_KEYS,
    KEY_MODEL_ARRAY,
    KEY_PARAMS,
    KEY_RECORD,
    KEY_REFERENCE,
    KEY_ROUND,
    KEY_UNCODED_KEYS,
    MOD_FAILED_PRECONDITION,
)
from fedcodec.pipeline import (
    ClientEngine,
    DownlinkPackage,
    InitialModelError,
    ModelMismatchError,
    ModelSpec,
    ModelVersion,
    RoundParams,
    StatisticsFn,
)
from fedcodec.pipeline.model import Tensors, digest_matches

__all__ = ["InitialModelSource", "ModStatisticsFn", "fedcodec_mod", "make_fedcodec_mod"]


_NAME = "fedcodec_mod"
#: FedAvg's default weighting key; used only to fill the update's example count.
_NUM_EXAMPLES = "num-examples"

#: The shared initial model: arrays by name, or a function of the node's Context
#: (e.g. reading the seed from ``context.run_config``).
InitialModelSource = Mapping[str, npt.ArrayLike] | Callable[[Context], Mapping[str, npt.ArrayLike]]

#: Measures tensors (BatchNorm statistics) on the coded model with the node's data:
#: ``statistics(arrays, context)``; see ``make_fedcodec_mod(statistics=...)``.
ModStatisticsFn = Callable[[Mapping[str, np.ndarray], Context], Mapping[str, npt.ArrayLike]]


def make_fedcodec_mod(
    *,
    error_feedback: bool = True,
    threads: int = 1,
    initial_model: InitialModelSource | None = None,
    temporal_reference: bool = True,
    statistics: ModStatisticsFn | None = None,
) -> Mod:
    """Build a client mod (see the module docs).

    Parameters
    ----------
    error_feedback : bool, optional
        Keep the coding error of each update and add it to the next one
        (default True).  Without it every round codes ``local − base`` alone.
    threads : int, optional
        Codec threads (default 1: simulations run several ClientApps on few
        cores; 0 uses all CPUs).
    initial_model : mapping or callable, optional
        The shared initial model the ServerApp starts from (the same arrays,
        bit for bit: the same seed, or the file shipped with the app), or a
        function of the ``Context`` that builds it.
    temporal_reference : bool, optional
        Accept the server's offer of a temporal reference (default True; it
        costs one float32 model in ``context.state``).  False: code every update
        without, and keep no reference.
    statistics : callable, optional
        ``statistics(arrays, context) -> {name: array}``: measures tensors on the
        model the server will build from this node's update (the received model
        plus the update as coded, every coded array by name); what it returns
        replaces the app's values of those arrays and the update is coded again
        (:meth:`fedcodec.pipeline.UpdateEncoder.encode`).  Made for BatchNorm
        running statistics with sparse or coarse updates:
        :class:`fedcodec.torch.CodedStatistics` builds one from the app's model
        class and data.

    Returns
    -------
    Mod
        ``mod(msg, context, call_next) -> Message``.

    Examples
    --------
    >>> from flwr.clientapp import ClientApp
    >>> from fedcodec.flower import make_fedcodec_mod
    >>> app = ClientApp(mods=[make_fedcodec_mod(threads=2)])
    """
    if threads < 0:
        raise ValueError(f"threads must be >= 0, got {threads}")

    def fedcodec_mod(msg: Message, context: Context, call_next: ClientAppCallable) -> Message:
        """Decode the incoming model, call the app, code the outgoing update."""
        return _handle(
            msg,
            context,
            call_next,
            error_feedback=error_feedback,
            threads=threads,
            initial_model=initial_model,
            temporal_reference=temporal_reference,
            statistics=statistics,
        )

    return fedcodec_mod


def _error(msg: Message, reason: str, *, level: int = logging.ERROR) -> Message:
    _log.log(level, "%s", reason)
    return Message(Error(code=MOD_FAILED_PRECONDITION, reason=reason), reply_to=msg)


def _no_initial(msg: Message, exc: InitialModelError) -> Message:
    """The error reply of a node without the shared initial model: it names
    :data:`ERROR_NO_INITIAL`, and the server sends the model once when it may."""
    reason = (
        f"{_NAME}: {ERROR_NO_INITIAL}: this node does not hold the shared initial model "
        f"({exc}); the server sends it once (4 bytes per weight) unless built with "
        "send_initial=False; give the mod initial_model=... to spare that"
    )
    return _error(msg, reason, level=logging.WARNING)


def _initial(
    source: InitialModelSource | None, context: Context, spec: ModelSpec
) -> ModelVersion | None:
    """The shared initial model in model order (None without one)."""
    if source is None:
        return None
    arrays = source(context) if callable(source) else source
    missing = set(spec.names) - set(arrays)
    if missing:  # other arrays (integer buffers) travel as they are: not needed here
        raise ModelMismatchError(f"initial_model: it lacks the model's arrays {sorted(missing)!r}")
    return ModelVersion.create(0, {name: arrays[name] for name in spec.names}, spec)


def _spec(
    engine: ClientEngine | None,
    names: list[str],
    coded: list[bytes],
    source: InitialModelSource | None,
    context: Context,
) -> ModelSpec:
    """The model's names and shapes: from the engine, the initial model or a container."""
    if engine is not None and list(engine.spec.names) == names:
        return engine.spec
    if source is not None:
        arrays = source(context) if callable(source) else source
        if set(names) <= set(arrays):
            return ModelSpec(tuple(names), tuple(tuple(np.shape(arrays[n])) for n in names))
    if coded:
        infos = codec.inspect(coded[0])
        if len(infos) != len(names):
            raise ModelMismatchError(
                f"the container holds {len(infos)} tensors, the message names {len(names)}"
            )
        return ModelSpec(tuple(names), tuple(info.shape for info in infos))
    raise InitialModelError(
        f"{KEY_INITIAL_DIGEST}: the message is relative to a shared initial model this "
        "node does not hold"
    )


def _handle(
    msg: Message,
    context: Context,
    call_next: ClientAppCallable,
    *,
    error_feedback: bool,
    threads: int,
    initial_model: InitialModelSource | None,
    temporal_reference: bool = True,
    statistics: ModStatisticsFn | None = None,
) -> Message:
    if not msg.has_content():
        return call_next(msg, context)
    configs = msg.content.config_records
    records = msg.content.array_records
    marked = [c for c in configs.values() if KEY_FORMAT in c]
    if not marked:
        if any(is_coded(a) for r in records.values() for a in r.values()):
            return _error(
                msg,
                f"{_NAME}: the message holds fedcodec-coded arrays but no '{KEY_FORMAT}' "
                "config key; is CompressionStrategy wrapping the ServerApp's strategy?",
            )
        return call_next(msg, context)
    if len(records) > 1 or len(configs) != 1:
        return _error(
            msg,
            f"{_NAME} expects one ArrayRecord and one ConfigRecord, found "
            f"{len(records)} and {len(configs)}",
        )
    config = marked[0]
    if config[KEY_FORMAT] not in DOWNLINK_KINDS:
        return _error(
            msg,
            f"{_NAME}: unsupported format {config[KEY_FORMAT]!r}, not {FORMAT!r} and a "
            "downlink kind",
        )
    if config.get(KEY_DOWNLINK) == DOWNLINK_REFUSED:
        reason = str(config.get(KEY_ERROR, ""))
        return _error(msg, f"{_NAME}: the server sends no model: {reason}")
    client_id = str(context.node_id)
    state = ClientState.load(
        context.state, client_id, threads=threads, error_feedback=error_feedback
    )
    try:
        layout = _layout(config, state.layout)
        state.layout = layout
        record_key, record = (
            next(iter(records.items())) if records else (layout.record, ArrayRecord())
        )
        if KEY_PARAMS in config:
            state.params = str(config[KEY_PARAMS])
        keys = list(layout.keys)
        uncoded_keys = list(layout.uncoded)
        names = [k for k in keys if k not in uncoded_keys]
        uncoded, _ = split_record(record, uncoded_keys)
        kind = config.get(KEY_DOWNLINK)
        coded = coded_model(dict(msg.content.items()), KEY_MODEL_ARRAY)
        if kind == DOWNLINK_RAW:
            model_part, _ = split_record(record, names)
            spec = ModelSpec(
                tuple(names), tuple(tuple(int(n) for n in model_part[k].shape) for k in names)
            )
        else:
            spec = _spec(state.engine, names, coded, initial_model, context)
        engine = state.engine_for(
            spec,
            client_id,
            initial=_initial(initial_model, context, spec),
            threads=threads,
            error_feedback=error_feedback,
        )
        base = _receive(engine, record, names, coded, config, layout)
        decoded = merge_records(keys, plain_record(base.spec, base.tensors), uncoded)
    except InitialModelError as exc:
        state.save(context.state)
        return _no_initial(msg, exc)
    except (FedCodecError, ValueError, KeyError, TypeError) as exc:
        state.forget_model()  # the server sends a keyframe next time
        state.save(context.state)
        return _error(msg, f"{_NAME}: cannot rebuild the model: {exc}")
    state.save(context.state)

    msg.content[record_key] = decoded
    out = call_next(msg, context)
    if out.has_error():
        return out

    if msg.metadata.message_type.split(".")[0] == MessageType.TRAIN:  # code the reply
        try:
            if state.params is None:
                raise ValueError(
                    f"{KEY_PARAMS}: the server sent this node no coding parameters (they "
                    "are sent once, then when they change)"
                )
            _sync_reference(engine, config, accept=temporal_reference)
            engine.encoder.compact = layout.compact  # the server reads compact containers
            measure = None
            if statistics is not None:
                user_fn = statistics

                def measure(arrays: Mapping[str, np.ndarray]) -> Mapping[str, Any]:
                    try:
                        return user_fn(arrays, context)
                    except Exception as exc:  # the app's code: any failure is its error reply
                        raise ValueError(
                            f"the statistics function failed: {type(exc).__name__}: {exc}"
                        ) from exc

            _encode_reply(
                out, engine, base, config, params_from_text(state.params), statistics=measure
            )
        except (FedCodecError, ValueError, KeyError, TypeError) as exc:
            return _error(msg, f"{_NAME}: cannot code the reply: {exc}")
        state.save(context.state)
    return out


def _sync_reference(engine: ClientEngine, config: Mapping[str, Any], *, accept: bool) -> None:
    """Use the temporal reference only when the server holds the same one.

    :data:`KEY_REFERENCE` names the server's (empty: none); without the key the
    server holds this node's last update, which is what the node holds if it was
    ever offered references (a node never offered one holds none)."""
    if not accept:
        engine.sync_reference(None, offered=False)
        return
    if KEY_REFERENCE not in config:
        return
    value = config[KEY_REFERENCE]
    if not isinstance(value, bytes) or len(value) not in (0, 8):
        raise ValueError(f"{KEY_REFERENCE} must be 0 or 8 bytes, got {value!r:.40}")
    engine.sync_reference(value.hex() or None)


def _digest(value: object, key: str, size: int = 32) -> str:
    """A binary digest (``size`` bytes: a SHA-256 or its first bytes) from the config, as
    the pipeline's hex text."""
    if not isinstance(value, bytes) or len(value) != size:
        raise ValueError(f"{key} must be {size} bytes of a SHA-256 digest, got {value!r:.80}")
    return value.hex()


def _layout(config: Mapping[str, Any], held: Layout | None) -> Layout:
    """The record layout: sent with the message (first contact) or kept from then."""
    if KEY_KEYS not in config:
        if held is None:
            raise ValueError(
                f"{KEY_KEYS}: this node holds no record layout (the server sends it at "
                "first contact)"
            )
        return held
    digest = config.get(KEY_INITIAL_DIGEST)
    record = config.get(KEY_RECORD, "arrays")
    if not isinstance(record, str):
        raise ValueError(f"{KEY_RECORD} must be a str, got {record!r}")
    compact = config.get(KEY_COMPACT, False)
    if not isinstance(compact, bool):
        raise ValueError(f"{KEY_COMPACT} must be a bool, got {compact!r:.40}")
    return Layout(
        tuple(_str_list(config, KEY_KEYS)),
        tuple(_str_list(config, KEY_UNCODED_KEYS)),
        None if digest is None else _digest(digest, KEY_INITIAL_DIGEST),
        record,
        compact,
    )


def _receive(
    engine: ClientEngine,
    record: ArrayRecord,
    names: list[str],
    coded: list[bytes],
    config: Mapping[str, Any],
    layout: Layout,
) -> ModelVersion:
    """The model the message describes, digest-checked (the engine's receiver, once)."""
    kind = config.get(KEY_DOWNLINK)
    version = config_int(config, KEY_BASE_VERSION)
    digest = _digest(config.get(KEY_BASE_DIGEST), KEY_BASE_DIGEST, DIGEST_BYTES)
    if kind == DOWNLINK_RAW:
        model_part, _ = split_record(record, names)
        tensors = record_tensors(model_part, engine.spec, "received model")
        model = ModelVersion.create(version, tensors, engine.spec)
        if not digest_matches(model.digest, digest):
            raise ValueError(f"the raw model hashes to {model.digest[:16]}…, not {digest[:16]}…")
        return model
    if kind not in (DOWNLINK_KEYFRAME, DOWNLINK_DELTA, DOWNLINK_NONE):
        raise ValueError(f"unknown {KEY_DOWNLINK} {kind!r}")
    initial_digest = layout.initial_digest
    initial: bytes | None = None
    if INITIAL_ARRAY in record:
        initial = np.ascontiguousarray(record[INITIAL_ARRAY].numpy(), dtype="<f4").tobytes()
    from_version: int | None = None
    if kind == DOWNLINK_DELTA:
        # Deltas start from the version this node holds unless the server says otherwise.
        from_version = (
            config_int(config, KEY_FROM_VERSION)
            if KEY_FROM_VERSION in config
            else engine.receiver.version
        )
    elif kind == DOWNLINK_NONE:
        from_version = version
    package = DownlinkPackage(
        version=version,
        digest=digest,
        keyframe=coded[0] if kind == DOWNLINK_KEYFRAME else None,
        from_version=from_version,
        deltas=tuple(coded) if kind == DOWNLINK_DELTA else (),
        initial_version=0 if initial_digest else None,
        initial_digest=initial_digest,
        initial=initial,
    )
    if package.relative_to_initial and initial is None and initial_digest is not None:
        engine.check_initial_digest(initial_digest)
    return engine.receive(package)


def _encode_reply(
    out: Message,
    engine: ClientEngine,
    base: ModelVersion,
    config: Mapping[str, Any],
    params: RoundParams,
    *,
    statistics: StatisticsFn | None = None,
) -> None:
    """Replace the reply's ArrayRecord by the coded update (inline when it is small, with
    the app's metrics folded in when they can be: :func:`~fedcodec.flower._records.reply_records`).

    A byte budget holds for what the reply carries as Flower serializes it: the
    container's budget is the round's minus the reply's own framing (the record,
    the integer buffers, the app's metrics).
    """
    importance = _take_importance(out, base.spec)
    records = out.content.array_records
    if len(records) != 1:
        raise ValueError(f"the reply must hold exactly one ArrayRecord, found {len(records)}")
    key, record = next(iter(records.items()))
    model_part, uncoded = split_record(record, base.spec.names)
    local = record_tensors(model_part, base.spec, "reply arrays")
    content = dict(out.content.items())
    if params.budget_bytes is not None and params.step is None:
        inline = not len(uncoded) and params.budget_bytes <= INLINE_MAX_BYTES
        probe = reply_records(content, key, b"", uncoded, inline=inline)
        # Inline, +3: the longer length prefix of a non-empty value; in an Array, +16: the
        # data chunk object and the deflate framing of a non-empty payload.
        overhead = wire_size(probe) + (3 if inline else 16)
        params = params.replace(budget_bytes=max(1, params.budget_bytes - overhead))
    update = engine.encode(
        local,
        params,
        round_number=_round(config),
        num_examples=_num_examples(out),
        base=base,
        importance=importance,
        statistics=statistics,
    )
    inline = not len(uncoded) and len(update.data) <= INLINE_MAX_BYTES
    out.content = RecordDict(reply_records(content, key, update.data, uncoded, inline=inline))
    _log.debug(
        "fedcodec: update of %d bytes (lambda %.4g, %d passes, %.3f s)",
        len(update.data),
        update.stats.lam,
        update.stats.passes,
        update.stats.seconds,
    )


def _take_importance(out: Message, spec: ModelSpec) -> Tensors | None:
    """Remove the app's importance record from the reply (it never travels); its arrays."""
    if IMPORTANCE_RECORD not in out.content:
        return None
    record = out.content[IMPORTANCE_RECORD]
    del out.content[IMPORTANCE_RECORD]
    if not isinstance(record, ArrayRecord):
        raise ValueError(f"the reply's {IMPORTANCE_RECORD!r} must be an ArrayRecord")
    unknown = set(record.keys()) - set(spec.names)
    if unknown:
        raise ValueError(f"{IMPORTANCE_RECORD!r} names arrays the model lacks: {sorted(unknown)}")
    out_arrays: Tensors = {}
    for name, array in record.items():
        values = np.asarray(array.numpy(), dtype=np.float32)
        if not np.all(np.isfinite(values)) or np.any(values < 0):
            raise ValueError(f"{IMPORTANCE_RECORD}[{name!r}] must be finite and >= 0")
        out_arrays[name] = values
    return out_arrays


def _str_list(config: Mapping[str, Any], key: str) -> list[str]:
    """A list-of-str config value ([] when absent)."""
    value = config.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{key} must be a list of str, got {value!r}")
    return list(value)


def _round(config: Mapping[str, Any]) -> int:
    """The server round of a train message (it seeds the dither): :data:`KEY_ROUND`, else
    Flower's ``server-round``, else 0."""
    value = config.get(KEY_ROUND, config.get(FLOWER_ROUND, 0))
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _num_examples(out: Message) -> int:
    for metrics in out.content.metric_records.values():
        value = metrics.get(_NUM_EXAMPLES)
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 1:
            return int(value)
    return 1


#: The mod with default settings (error feedback on, one codec thread, no initial model).
fedcodec_mod: Mod = make_fedcodec_mod()
