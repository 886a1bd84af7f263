"""The client side: a ClientApp mod that decodes the model and codes the update.

Pair it with :class:`~fedcodec.flower.CompressionStrategy` in the ServerApp.
For every message the wrapper prepared (its ``ConfigRecord`` carries
:data:`~fedcodec.flower.constants.KEY_FORMAT`) the mod

1. rebuilds the global model from the message — a keyframe, coded deltas
   applied to the model it holds from an earlier round, nothing (it is up to
   date), or raw arrays — checks its digest, and hands the app a message whose
   ``ArrayRecord`` holds plain float32 arrays under the original keys;
2. calls the app;
3. for a train message, codes the reply's ``ArrayRecord`` as the difference to
   that model with error feedback (:class:`fedcodec.pipeline.UpdateEncoder`,
   with the round's λ/S or byte budget from the config): one
   ``Array(dtype, shape, stype="fedcodec/v1", data=container)`` per key;
4. adds a ``ConfigRecord`` :data:`~fedcodec.flower.constants.REPLY_RECORD`
   with the version and digest it holds (the server sends the next model as a
   delta from it) and the encoder's statistics.

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

from collections.abc import Mapping
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Error, Message
from flwr.clientapp.typing import ClientAppCallable, Mod

from fedcodec.errors import FedCodecError
from fedcodec.flower._client_state import ClientState
from fedcodec.flower._config import config_int, has_params, params_from_config
from fedcodec.flower._logging import logger as _log
from fedcodec.flower._records import (
    array_parts,
    coded_array,
    decode_part,
    is_coded,
    merge_records,
    plain_record,
    record_spec,
    record_tensors,
    split_container,
    split_record,
)
from fedcodec.flower.constants import (
    DOWNLINK_DELTA,
    DOWNLINK_KEYFRAME,
    DOWNLINK_NONE,
    DOWNLINK_RAW,
    FORMAT,
    IMPORTANCE_RECORD,
    KEY_BASE_DIGEST,
    KEY_BASE_VERSION,
    KEY_DOWNLINK,
    KEY_FORMAT,
    KEY_FROM_VERSION,
    KEY_HELD_DIGEST,
    KEY_HELD_VERSION,
    KEY_KEYS,
    KEY_ROUND,
    KEY_UNCODED_KEYS,
    KEY_UP_ENCODE_SECONDS,
    KEY_UP_LAMBDA,
    KEY_UP_PASSES,
    KEY_UP_STEP,
    MOD_FAILED_PRECONDITION,
    REPLY_RECORD,
)
from fedcodec.pipeline import DigestMismatchError, ModelSpec, ModelVersion
from fedcodec.pipeline.model import Tensors

__all__ = ["fedcodec_mod", "make_fedcodec_mod"]


_NAME = "fedcodec_mod"
#: FedAvg's default weighting key; used only to fill the update's example count.
_NUM_EXAMPLES = "num-examples"


def make_fedcodec_mod(*, error_feedback: bool = True, threads: int = 1) -> Mod:
    """Build a client mod (see the module docs).

    Parameters
    ----------
    error_feedback : bool, optional
        Keep the coding error of each update and add it to the next one
        (default True).  Without it every round codes ``local − base`` alone.
    threads : int, optional
        Codec threads (default 1: simulations run several ClientApps on few
        cores; 0 uses all CPUs).

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
        return _handle(msg, context, call_next, error_feedback=error_feedback, threads=threads)

    return fedcodec_mod


def _error(msg: Message, reason: str) -> Message:
    _log.error("%s", reason)
    return Message(Error(code=MOD_FAILED_PRECONDITION, reason=reason), reply_to=msg)


def _handle(
    msg: Message,
    context: Context,
    call_next: ClientAppCallable,
    *,
    error_feedback: bool,
    threads: int,
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
    if len(records) != 1 or len(configs) != 1:
        return _error(
            msg,
            f"{_NAME} expects exactly one ArrayRecord and one ConfigRecord, found "
            f"{len(records)} and {len(configs)}",
        )
    config = marked[0]
    if config[KEY_FORMAT] != FORMAT:
        return _error(msg, f"{_NAME}: unsupported format {config[KEY_FORMAT]!r}, not {FORMAT!r}")
    record_key, record = next(iter(records.items()))

    state = ClientState.load(context.state, threads=threads, error_feedback=error_feedback)
    try:
        uncoded, model_part = split_record(record, _str_list(config, KEY_UNCODED_KEYS))
        base = _receive(state, model_part, config, threads=threads)
        order = _str_list(config, KEY_KEYS) or [*base.spec.names, *uncoded.keys()]
        decoded = merge_records(order, plain_record(base.spec, base.tensors), uncoded)
    except (FedCodecError, ValueError, KeyError, TypeError) as exc:
        state.model = None  # the server sends a keyframe next time
        state.save(context.state)
        return _error(msg, f"{_NAME}: cannot rebuild the model: {exc}")
    state.model = base
    state.save(context.state)

    msg.content[record_key] = decoded
    out = call_next(msg, context)
    if out.has_error():
        return out

    reply = ConfigRecord({KEY_HELD_VERSION: base.version, KEY_HELD_DIGEST: base.digest})
    if has_params(config):
        try:
            reply.update(
                _encode_reply(
                    out,
                    state,
                    base,
                    config,
                    client_id=str(context.node_id),
                    error_feedback=error_feedback,
                    threads=threads,
                )
            )
        except (FedCodecError, ValueError, KeyError, TypeError) as exc:
            return _error(msg, f"{_NAME}: cannot code the reply: {exc}")
        state.save(context.state)
    out.content[REPLY_RECORD] = reply
    return out


def _receive(
    state: ClientState, record: ArrayRecord, config: Mapping[str, Any], *, threads: int
) -> ModelVersion:
    """The model the message describes, digest-checked."""
    kind = config.get(KEY_DOWNLINK)
    version = config_int(config, KEY_BASE_VERSION)
    digest = str(config[KEY_BASE_DIGEST])
    held = state.model
    if kind == DOWNLINK_RAW:
        spec = record_spec(record)
        tensors = record_tensors(record, spec, "received model")
    elif kind == DOWNLINK_KEYFRAME:
        spec = record_spec(record)
        tensors = {}
        for name, array in record.items():
            (part,) = array_parts(array)
            tensors[name], _ = decode_part(
                part, tuple(array.shape), what=f"keyframe[{name!r}]", threads=threads
            )
    elif kind in (DOWNLINK_DELTA, DOWNLINK_NONE):
        start = config_int(config, KEY_FROM_VERSION) if kind == DOWNLINK_DELTA else version
        if held is None or held.version != start:
            raise DigestMismatchError(
                f"the server sent {kind!r} from version {start}, this node holds "
                f"{None if held is None else held.version}"
            )
        if kind == DOWNLINK_NONE:
            if held.digest != digest:
                raise DigestMismatchError(f"the held version {held.version} has another digest")
            return held
        spec = held.spec
        if record_spec(record) != spec:
            raise DigestMismatchError("the deltas' keys or shapes differ from the held model")
        tensors = _apply_deltas(held, record, threads=threads)
    else:
        raise ValueError(f"unknown {KEY_DOWNLINK} {kind!r}")
    model = ModelVersion.create(version, tensors, spec)
    if model.digest != digest:
        raise DigestMismatchError(
            f"version {version} rebuilt here hashes to {model.digest[:16]}…, the server sent "
            f"{digest[:16]}…"
        )
    return model


def _apply_deltas(held: ModelVersion, record: ArrayRecord, *, threads: int) -> Tensors:
    tensors = held.copy_tensors()
    for name, array in record.items():
        shape = tuple(array.shape)
        for i, part in enumerate(array_parts(array)):
            change, _ = decode_part(part, shape, what=f"delta {i}[{name!r}]", threads=threads)
            tensors[name] = np.add(tensors[name], change, dtype=np.float32)
    return tensors


def _encode_reply(
    out: Message,
    state: ClientState,
    base: ModelVersion,
    config: Mapping[str, Any],
    *,
    client_id: str,
    error_feedback: bool,
    threads: int,
) -> dict[str, int | float | list[float]]:
    """Replace the reply's ArrayRecord by the coded update; return the reply statistics."""
    importance = _take_importance(out, base.spec)
    records = out.content.array_records
    if len(records) != 1:
        raise ValueError(f"the reply must hold exactly one ArrayRecord, found {len(records)}")
    key, record = next(iter(records.items()))
    model_part, uncoded = split_record(record, base.spec.names)
    local = record_tensors(model_part, base.spec, "reply arrays")
    params = params_from_config(config)
    encoder = state.encoder_for(
        base.spec, client_id, threads=threads, error_feedback=error_feedback
    )
    update = encoder.encode(
        local,
        base,
        params,
        round_number=int(config.get(KEY_ROUND, 0)),
        num_examples=_num_examples(out),
        importance=importance,
    )
    parts = split_container(update.data, threads=threads)
    coded = ArrayRecord(
        {
            name: coded_array(shape, [part])
            for (name, shape), part in zip(base.spec, parts, strict=True)
        }
    )
    out.content[key] = merge_records(list(record.keys()), coded, uncoded)
    return {
        KEY_UP_LAMBDA: float(update.stats.lam),
        KEY_UP_PASSES: int(update.stats.passes),
        KEY_UP_STEP: [float(t.step) for t in update.stats.tensors],
        KEY_UP_ENCODE_SECONDS: float(update.stats.seconds),
    }


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


def _num_examples(out: Message) -> int:
    for metrics in out.content.metric_records.values():
        value = metrics.get(_NUM_EXAMPLES)
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 1:
            return int(value)
    return 1


#: The mod with default settings (error feedback on, one codec thread).
fedcodec_mod: Mod = make_fedcodec_mod()
