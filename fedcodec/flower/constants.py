"""Names shared by the strategy wrapper and the client mod: record keys, the ``stype``.

Every key is namespaced with ``fedcodec.`` so it cannot collide with an
application's own configuration or with another wrapper's keys (Flower's DP
wrappers use ``clipping_norm``).

Train and evaluate messages (server to client) carry, in their single
``ConfigRecord``:

* the round's coding parameters (train only; their presence asks the client
  mod to code the reply): :data:`KEY_PARAMS`, the parameters as one JSON text
  (:meth:`fedcodec.pipeline.RoundParams.to_json_text`, the serialization the
  gRPC proto also carries), and :data:`KEY_ROUND`;
* how the model travels (:data:`KEY_DOWNLINK`: coded deltas from
  :data:`KEY_FROM_VERSION`, a keyframe, nothing because the client is up to
  date, raw float32 arrays, or a refusal with :data:`KEY_ERROR`), the shared
  initial model it is relative to (:data:`KEY_INITIAL_DIGEST`,
  :data:`KEY_INITIAL_ID`), and what the client holds afterwards:
  :data:`KEY_BASE_VERSION` and :data:`KEY_BASE_DIGEST`.

The coded model itself is ONE ``Array`` (:data:`KEY_MODEL_ARRAY`, stype
:data:`STYPE`: the engine's container bytes as they are, or :data:`STYPE_SEQUENCE`
for several), whatever the number of tensors; integer buffers travel as they are
under their own keys; :data:`KEY_KEYS` gives the original key order.  A coded
reply is one ``Array`` too (:data:`KEY_UPDATE_ARRAY`).

Replies (client to server) carry one extra ``ConfigRecord`` named
:data:`REPLY_RECORD` with the version and digest the client holds and its
encoder statistics; the wrapper removes it before the inner strategy sees the
reply.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "DOWNLINK_DELTA",
    "DOWNLINK_KEYFRAME",
    "DOWNLINK_NONE",
    "DOWNLINK_RAW",
    "DOWNLINK_REFUSED",
    "FORMAT",
    "IMPORTANCE_RECORD",
    "INITIAL_ARRAY",
    "KEY_BASE_DIGEST",
    "KEY_BASE_VERSION",
    "KEY_DOWNLINK",
    "KEY_ERROR",
    "KEY_FORMAT",
    "KEY_FROM_VERSION",
    "KEY_HELD_DIGEST",
    "KEY_HELD_INITIAL",
    "KEY_HELD_VERSION",
    "KEY_INITIAL_DIGEST",
    "KEY_INITIAL_ID",
    "KEY_KEYS",
    "KEY_MODEL_ARRAY",
    "KEY_PARAMS",
    "KEY_ROUND",
    "KEY_UNCODED_KEYS",
    "KEY_UPDATE_ARRAY",
    "KEY_UP_ENCODE_SECONDS",
    "KEY_UP_LAMBDA",
    "KEY_UP_PASSES",
    "KEY_UP_STEP",
    "METRIC_BUDGET_BYTES",
    "METRIC_BYTES_DOWN",
    "METRIC_BYTES_UP",
    "METRIC_KEYFRAMES",
    "METRIC_LAMBDA",
    "METRIC_RATIO_DOWN",
    "METRIC_RATIO_UP",
    "METRIC_RAW_BYTES_DOWN",
    "METRIC_RAW_BYTES_UP",
    "METRIC_REJECTED",
    "METRIC_S",
    "MOD_FAILED_PRECONDITION",
    "REPLY_RECORD",
    "STATE_MODEL",
    "STATE_RECORD",
    "STATE_RESIDUAL",
    "STYPE",
    "STYPE_SEQUENCE",
]

#: ``Array.stype`` of a coded model or update: ``data`` is one fedcodec container
#: (all coded tensors; ``shape`` is ``(len(data),)``, ``dtype`` ``"uint8"``).
STYPE: Final = "fedcodec/v2"
#: ``Array.stype`` of several containers applied in order (a chain of deltas):
#: ``data`` is a sequence of (uint32 little-endian length, container) pairs.
STYPE_SEQUENCE: Final = "fedcodec/v2+seq"

#: Value of :data:`KEY_FORMAT`; a client mod refuses any other.
FORMAT: Final = "fedcodec/v2"

# -- message ConfigRecord (server -> client) ---------------------------------
#: Marks a message prepared by the wrapper (value: :data:`FORMAT`).
KEY_FORMAT: Final = "fedcodec.format"
#: The round's coding parameters for this node: RoundParams.to_json_text() (str).
KEY_PARAMS: Final = "fedcodec.params"
#: The server round the parameters belong to (int).
KEY_ROUND: Final = "fedcodec.round"
#: How the model arrives: one of the ``DOWNLINK_*`` values.
KEY_DOWNLINK: Final = "fedcodec.downlink"
#: The version coded deltas start from (int; with :data:`DOWNLINK_DELTA`).
KEY_FROM_VERSION: Final = "fedcodec.from_version"
#: The model version the client holds after decoding (the base of its update).
KEY_BASE_VERSION: Final = "fedcodec.base_version"
#: SHA-256 digest of that model (:func:`fedcodec.pipeline.model_digest`).
KEY_BASE_DIGEST: Final = "fedcodec.base_digest"

#: The original ArrayRecord's key order (list of str).
KEY_KEYS: Final = "fedcodec.keys"
#: Digest of the shared initial model the package is relative to (str; absent in a
#: keyframe stream).
KEY_INITIAL_DIGEST: Final = "fedcodec.initial_digest"
#: The deployment's name of that initial model (str, informative).
KEY_INITIAL_ID: Final = "fedcodec.initial_id"
#: Why the server sends no model (str; with :data:`DOWNLINK_REFUSED`).
KEY_ERROR: Final = "fedcodec.error"
#: Key of the one coded ``Array`` in a message's ArrayRecord.
KEY_MODEL_ARRAY: Final = "fedcodec.model"
#: Key of the initial model (float32, model order) when the server sends it.
INITIAL_ARRAY: Final = "fedcodec.initial"
#: Key of the one coded ``Array`` in a reply's ArrayRecord.
KEY_UPDATE_ARRAY: Final = "fedcodec.update"
#: Keys of arrays that travel as they are (integer buffers such as BatchNorm's
#: ``num_batches_tracked``: the coded model is the floating-point arrays of the first
#: global model); sent only when there are such arrays.
KEY_UNCODED_KEYS: Final = "fedcodec.uncoded_keys"

DOWNLINK_KEYFRAME: Final = "keyframe"
DOWNLINK_DELTA: Final = "delta"
DOWNLINK_NONE: Final = "none"
DOWNLINK_RAW: Final = "raw"
DOWNLINK_REFUSED: Final = "refused"

# -- reply ArrayRecord the app may add (consumed by the mod, never sent) -----
#: Name of an optional ``ArrayRecord`` in the app's train reply: per-weight importance η
#: (e.g. the diagonal Fisher from :class:`fedcodec.torch.FisherAccumulator`) under the
#: model's keys.  The mod codes the update with it and removes it from the reply.
IMPORTANCE_RECORD: Final = "fedcodec.importance"

# -- reply ConfigRecord (client -> server) -----------------------------------
#: Name of the ConfigRecord the mod adds to a reply.
REPLY_RECORD: Final = "fedcodec"
#: The version the client holds (int).
KEY_HELD_VERSION: Final = "fedcodec.held_version"
#: Its digest (str).
KEY_HELD_DIGEST: Final = "fedcodec.held_digest"
#: Digest of the shared initial model the client holds ("" for none).
KEY_HELD_INITIAL: Final = "fedcodec.held_initial"
#: λ the encoder used (rate control may raise it).
KEY_UP_LAMBDA: Final = "fedcodec.up.lambda"
#: Encoder passes (rate control).
KEY_UP_PASSES: Final = "fedcodec.up.passes"
#: Quantization steps per tensor (list of float, model order).
KEY_UP_STEP: Final = "fedcodec.up.steps"
#: Encode wall time in seconds.
KEY_UP_ENCODE_SECONDS: Final = "fedcodec.up.encode_seconds"

# -- context.state (client) ---------------------------------------------------
#: ArrayRecord: the client's model receiver (held model, initial model, change).
STATE_MODEL: Final = "fedcodec.receiver"
#: ArrayRecord: the error-feedback residual.
STATE_RESIDUAL: Final = "fedcodec.residual"
#: ConfigRecord: the receiver's and the encoder's metadata (JSON).
STATE_RECORD: Final = "fedcodec.state"

# -- metrics the wrapper adds (per round) ------------------------------------
METRIC_BYTES_UP: Final = "fedcodec.bytes_up"
METRIC_RAW_BYTES_UP: Final = "fedcodec.raw_bytes_up"
METRIC_RATIO_UP: Final = "fedcodec.ratio_up"
METRIC_BYTES_DOWN: Final = "fedcodec.bytes_down"
METRIC_RAW_BYTES_DOWN: Final = "fedcodec.raw_bytes_down"
METRIC_RATIO_DOWN: Final = "fedcodec.ratio_down"
METRIC_KEYFRAMES: Final = "fedcodec.keyframes"
METRIC_REJECTED: Final = "fedcodec.rejected"
METRIC_LAMBDA: Final = "fedcodec.lambda"
METRIC_S: Final = "fedcodec.S"
METRIC_BUDGET_BYTES: Final = "fedcodec.budget_bytes"

#: Flower's ``ErrorCode.MOD_FAILED_PRECONDITION`` (``flwr.common.constant`` is
#: not public API; a test checks that the numbers agree).
MOD_FAILED_PRECONDITION: Final = 6
