"""Names shared by the strategy wrapper and the client mod: record keys, the ``stype``.

Every key is namespaced with ``fedcodec.`` so it cannot collide with an
application's own configuration or with another wrapper's keys (Flower's DP
wrappers use ``clipping_norm``).

Train and evaluate messages (server to client) carry, in their single
``ConfigRecord``:

* the round's coding parameters (train only; their presence asks the client
  mod to code the reply): :data:`KEY_LAMBDA`, :data:`KEY_S`, and when set
  :data:`KEY_STEP`, :data:`KEY_BUDGET_BYTES`, :data:`KEY_SPARSIFICATION`,
  :data:`KEY_SENSITIVITY`,
  plus :data:`KEY_TOLERANCE`, :data:`KEY_STEP_RULE`, :data:`KEY_ROUND`;
* how the model travels (:data:`KEY_DOWNLINK`: a keyframe, coded deltas from
  :data:`KEY_FROM_VERSION`, nothing because the client is up to date, or raw
  float32 arrays) and what the client holds afterwards:
  :data:`KEY_BASE_VERSION` and :data:`KEY_BASE_DIGEST`.

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
    "FORMAT",
    "IMPORTANCE_RECORD",
    "KEY_BASE_DIGEST",
    "KEY_BASE_VERSION",
    "KEY_BUDGET_BYTES",
    "KEY_DOWNLINK",
    "KEY_FORMAT",
    "KEY_FROM_VERSION",
    "KEY_HELD_DIGEST",
    "KEY_HELD_VERSION",
    "KEY_KEYS",
    "KEY_LAMBDA",
    "KEY_ROUND",
    "KEY_S",
    "KEY_SENSITIVITY",
    "KEY_SPARSIFICATION",
    "KEY_STEP",
    "KEY_STEP_RULE",
    "KEY_TOLERANCE",
    "KEY_UNCODED_KEYS",
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

#: ``Array.stype`` of a coded tensor: ``data`` is one fedcodec container that
#: holds exactly this tensor (``dtype``/``shape`` describe the decoded array).
STYPE: Final = "fedcodec/v1"
#: ``Array.stype`` of several coded changes of one tensor, applied in order:
#: ``data`` is a sequence of (uint32 little-endian length, container) pairs.
#: Only the downlink uses it, for a client that lags more than one version.
STYPE_SEQUENCE: Final = "fedcodec/v1+seq"

#: Value of :data:`KEY_FORMAT`; a client mod refuses any other.
FORMAT: Final = "fedcodec/v1"

# -- message ConfigRecord (server -> client) ---------------------------------
#: Marks a message prepared by the wrapper (value: :data:`FORMAT`).
KEY_FORMAT: Final = "fedcodec.format"
#: λ of the RD quantizer (float, step² per bit).
KEY_LAMBDA: Final = "fedcodec.lambda"
#: Step resolution S (int).
KEY_S: Final = "fedcodec.S"
#: Explicit quantization step Δ (float; overrides S).
KEY_STEP: Final = "fedcodec.step"
#: Byte budget of the coded update (int; rate control meets it within the tolerance).
KEY_BUDGET_BYTES: Final = "fedcodec.budget_bytes"
#: Relative budget tolerance (float).
KEY_TOLERANCE: Final = "fedcodec.tolerance"
#: "model" (one step for the whole model) or "tensor".
KEY_STEP_RULE: Final = "fedcodec.step_rule"
#: Sparsification before quantization, as JSON (str).
KEY_SPARSIFICATION: Final = "fedcodec.sparsification"
#: Sensitivity-aware per-tensor coding, as JSON (str;
#: :class:`fedcodec.pipeline.Sensitivity`).
KEY_SENSITIVITY: Final = "fedcodec.sensitivity"
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

#: The ArrayRecord's key order (list of str), sent only when some arrays are not coded.
KEY_KEYS: Final = "fedcodec.keys"
#: Keys of arrays that travel as they are (integer buffers such as BatchNorm's
#: ``num_batches_tracked``: the coded model is the floating-point arrays of the first
#: global model); sent only when there are such arrays.
KEY_UNCODED_KEYS: Final = "fedcodec.uncoded_keys"

DOWNLINK_KEYFRAME: Final = "keyframe"
DOWNLINK_DELTA: Final = "delta"
DOWNLINK_NONE: Final = "none"
DOWNLINK_RAW: Final = "raw"

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
#: λ the encoder used (rate control may raise it).
KEY_UP_LAMBDA: Final = "fedcodec.up.lambda"
#: Encoder passes (rate control).
KEY_UP_PASSES: Final = "fedcodec.up.passes"
#: Quantization steps per tensor (list of float, model order).
KEY_UP_STEP: Final = "fedcodec.up.steps"
#: Encode wall time in seconds.
KEY_UP_ENCODE_SECONDS: Final = "fedcodec.up.encode_seconds"

# -- context.state (client) ---------------------------------------------------
#: ArrayRecord: the model the client holds (float32, exact).
STATE_MODEL: Final = "fedcodec.model"
#: ArrayRecord: the error-feedback residual.
STATE_RESIDUAL: Final = "fedcodec.residual"
#: ConfigRecord: version, digest, model spec and encoder metadata (JSON).
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
