"""Names shared by the strategy wrapper and the client mod: the wire contract ``fedcodec/v4``.

Every key starts with ``fc`` (short: each key is paid in every message), which keeps
them apart from an application's own configuration and from other wrappers' keys
(Flower's use ``server-round``, ``proximal-mu``, ``clipping_norm``).

Train and evaluate messages (server to client) carry, in their single
``ConfigRecord``, next to the inner strategy's keys:

every message
    :data:`KEY_FORMAT` (marks a message the wrapper prepared; its value is the
    contract's version :data:`FORMAT` followed by how the model arrives — one of the
    ``DOWNLINK_*`` values, e.g. ``"v4d"``; :data:`KEY_DOWNLINK` is the same key), and — unless
    refused, then :data:`KEY_ERROR` — :data:`KEY_BASE_VERSION` and
    :data:`KEY_BASE_DIGEST` (the version the node holds after decoding and the
    first :data:`DIGEST_BYTES` = 16 bytes of its SHA-256
    :func:`~fedcodec.pipeline.model_digest`: 128 bits, against which a wrong model
    passes with probability 2^-128 — the check guards against divergence, not
    forgery: the server sends the value).
train messages
    (``message_type`` ``"train"``: the mod codes the reply) :data:`KEY_ROUND` when the
    inner strategy's config does not carry the round under Flower's own
    :data:`FLOWER_ROUND` (``server-round``, which every Flower strategy sets), and
    :data:`KEY_PARAMS` (the round's coding parameters for
    this node, :meth:`fedcodec.pipeline.RoundParams.to_json_text`, the
    serialization the gRPC proto carries too) only when they differ from the last
    parameters the node acknowledged; the mod keeps them in ``context.state``.
first contact
    (a node the server has no successful reply from: new, failed or rejected)
    the layout: :data:`KEY_KEYS` (the ArrayRecord's key order),
    :data:`KEY_UNCODED_KEYS` (arrays that travel as they are, only when there are
    such), the shared initial model's digest :data:`KEY_INITIAL_DIGEST` (32
    bytes; absent in a keyframe stream) and name :data:`KEY_INITIAL_ID` (when
    set).  The mod keeps the layout in ``context.state``.
deltas from another version than the node holds
    :data:`KEY_FROM_VERSION` (otherwise they start from the node's version).
train messages of a ``temporal_reference=True`` strategy, when the node may hold another reference
    :data:`KEY_REFERENCE`: the 8-byte token
    (:func:`~fedcodec.pipeline.model.reference_token`) of the temporal reference
    the server keeps for this node — its last update as the server decoded it —
    or empty bytes when it keeps none.  Sent at first contact (it also offers
    references: a node keeps its reconstruction only once offered), when the
    server did not decode the node's reply to its last train message, and when
    it holds none (evicted); otherwise the server holds the node's last update,
    which is the node's reference.  The node codes against its reference only
    when the token names it, so the server always holds the reference an update
    needs (19 bytes in the messages that carry it).

The coded model itself is the engine's container bytes as they are
(:data:`KEY_MODEL_ARRAY`): up to 64 KiB, when no array travels uncoded, a ``bytes``
value in the ConfigRecord (a list for a chain of deltas) and the message holds no
ArrayRecord (:data:`KEY_RECORD`, sent at first contact, names the record the app gets
the model in); otherwise ONE ``Array`` (stype :data:`STYPE`, or :data:`STYPE_SEQUENCE`
for several) in the message's ArrayRecord, next to integer buffers that travel as they
are under their own keys.  Flower frames each ``Array`` and record with some 150-300
bytes; inline containers do without.

A reply (client to server) is the app's reply with its ``ArrayRecord`` replaced by
the coded update (:data:`KEY_UPDATE_ARRAY`): a ``ConfigRecord`` with the container
under the same record name when it is small, else ONE coded ``Array`` plus the
integer buffers.  The mod adds no record, and when the update travels inline and the
reply holds nothing else but ONE ``MetricRecord`` right after it, whose keys do not
start with ``fc``, the metrics travel in that ``ConfigRecord`` under their own keys
(every metric value is a ConfigRecord value of the same type), with
:data:`KEY_METRICS` naming the record when it is not ``"metrics"`` or is empty: each
record costs Flower's RecordDict a 64-hex-digit reference twice and its own object
(some 180 bytes).  The server restores the ``MetricRecord`` — name, keys, order, values
and types — before the inner strategy sees the reply.  A reply without error confirms that the
node rebuilt the model the message described (the mod checks the digest and answers
with an error otherwise), so the server knows which version each node holds without
being told.

Recovery (what the server assumes when it learns nothing, or an error):

a message whose reply never comes (Flower's timeout)
    the node holds either the version it last confirmed or the one the message
    carried (it may have applied the package, trained, and lost only the reply).
    When the message changed the node's model, the server treats its holding as
    unknown: the node's next message carries a keyframe (:data:`DOWNLINK_KEYFRAME`,
    which a node applies whatever version it holds; the digest check confirms the
    result) and the parameters (:data:`KEY_PARAMS`) again.  The lost reply's
    contribution is lost, no later round fails.  A message that changed nothing
    (:data:`DOWNLINK_NONE`) leaves the holding certain.
an error reply (the mod could not rebuild the model: a digest mismatch, deltas from
a version it does not hold, no layout or parameters — a node that lost
``context.state`` — ...)
    the server forgets what the node holds: its next message is a first contact
    (the layout, the parameters) with a keyframe.  That round's contribution is
    lost: a Flower round sends each node one message and ``aggregate_train`` gets
    the replies without a grid to resend on, so the server cannot retry within
    the round; the next round succeeds.
an error reply naming :data:`ERROR_NO_INITIAL` (the node does not hold the shared initial
model the stream starts from — a mod built without ``initial_model`` — or holds another)
    the server sends that node the initial model (float32, 4 bytes per weight, under
    :data:`INITIAL_ARRAY`) with a keyframe relative to it in its next message, once,
    when it may (``CompressionStrategy(send_initial=True)``, the default), and logs a
    warning naming the node and the bytes; otherwise (``send_initial=False``) every later
    message to that node is :data:`DOWNLINK_REFUSED` with the reason in :data:`KEY_ERROR`.
    The server cannot know what a node holds before its first reply, so such a node
    loses the round of its first message; a node that holds the initial model never
    gets it.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "DIGEST_BYTES",
    "DOWNLINK_DELTA",
    "DOWNLINK_KEYFRAME",
    "DOWNLINK_KINDS",
    "DOWNLINK_NONE",
    "DOWNLINK_RAW",
    "DOWNLINK_REFUSED",
    "ERROR_NO_INITIAL",
    "FLOWER_ROUND",
    "FORMAT",
    "IMPORTANCE_RECORD",
    "INITIAL_ARRAY",
    "KEY_BASE_DIGEST",
    "KEY_BASE_VERSION",
    "KEY_COMPACT",
    "KEY_DOWNLINK",
    "KEY_ERROR",
    "KEY_FORMAT",
    "KEY_FROM_VERSION",
    "KEY_INITIAL_DIGEST",
    "KEY_INITIAL_ID",
    "KEY_KEYS",
    "KEY_METRICS",
    "KEY_MODEL_ARRAY",
    "KEY_PARAMS",
    "KEY_RECORD",
    "KEY_REFERENCE",
    "KEY_ROUND",
    "KEY_UNCODED_KEYS",
    "KEY_UPDATE_ARRAY",
    "METRICS_RECORD",
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
    "STATE_MODEL",
    "STATE_RECORD",
    "STATE_REFERENCE",
    "STATE_RESIDUAL",
    "STYPE",
    "STYPE_SEQUENCE",
]

#: ``Array.stype`` of a coded model or update: ``data`` is one fedcodec container
#: (all coded tensors; ``shape`` is ``(len(data),)``, ``dtype`` ``"uint8"``).
STYPE: Final = "fedcodec/v3"
#: ``Array.stype`` of several containers applied in order (a chain of deltas):
#: ``data`` is a sequence of (uint32 little-endian length, container) pairs.
STYPE_SEQUENCE: Final = "fedcodec/v3+seq"

#: The wire contract's version, the start of :data:`KEY_FORMAT`'s value (``fedcodec/v4``:
#: a base digest of :data:`DIGEST_BYTES`, the downlink kind in the format value, the
#: round under Flower's key, metrics folded into the reply); a client mod refuses any
#: other, and a ``fedcodec/v3`` mod refuses it.
FORMAT: Final = "v4"
#: Bytes of the base digest (:data:`KEY_BASE_DIGEST`): the first 16 of the SHA-256.
DIGEST_BYTES: Final = 16

# -- message ConfigRecord (server -> client) ---------------------------------
#: Marks a message prepared by the wrapper and says how the model arrives: one of the
#: ``DOWNLINK_*`` values (str: :data:`FORMAT` and a letter).
KEY_FORMAT: Final = "fc"
#: The same key as :data:`KEY_FORMAT` (one key, one value: the version and the kind).
KEY_DOWNLINK: Final = KEY_FORMAT
#: The model version the client holds after decoding, the base of its update (int).
KEY_BASE_VERSION: Final = "fc.v"
#: The first :data:`DIGEST_BYTES` (16) bytes of the SHA-256 digest of that model
#: (:func:`fedcodec.pipeline.model_digest`).
KEY_BASE_DIGEST: Final = "fc.d"
#: The server round (int; train messages whose config lacks :data:`FLOWER_ROUND`, or
#: holds another value there).  The mod seeds its dither with it.
KEY_ROUND: Final = "fc.r"
#: Flower's strategies' config key for the server round: the round of a train message
#: when :data:`KEY_ROUND` is absent.
FLOWER_ROUND: Final = "server-round"
#: The node's coding parameters, RoundParams.to_json_text() (str; train messages,
#: when they changed for the node).
KEY_PARAMS: Final = "fc.p"
#: The version coded deltas start from (int; only when not the version the node holds).
KEY_FROM_VERSION: Final = "fc.f"
#: The temporal reference the server keeps for the node (bytes: 8-byte
#: :func:`~fedcodec.pipeline.model.reference_token`, or empty: none); in train messages
#: of a strategy with ``temporal_reference=True`` when the node may hold another one
#: (first contact, no decoded reply to the last train message, evicted).  A container
#: coded against it says so itself (FORMAT.md §7.5).
KEY_REFERENCE: Final = "fc.t"
#: The server reads compact containers (codec FORMAT.md §2-3: no shapes, all-zero
#: tensors omitted, one-byte steps): ``True`` at first contact from a strategy with
#: ``compact=True``; the node then codes its replies compact.  A mod that predates
#: the key ignores it and codes self-describing containers, which the server reads too.
KEY_COMPACT: Final = "fc.c"
#: The original ArrayRecord's key order (list of str; first contact).
KEY_KEYS: Final = "fc.keys"
#: The name of the model's ArrayRecord in the message (str; first contact): the mod
#: gives the app the decoded model under it when the coded model travels inline.
KEY_RECORD: Final = "fc.a"
#: Keys of arrays that travel as they are (integer buffers such as BatchNorm's
#: ``num_batches_tracked``: the coded model is the floating-point arrays of the first
#: global model); first contact, only when there are such arrays (list of str).
KEY_UNCODED_KEYS: Final = "fc.unc"
#: Digest of the shared initial model the stream is relative to (32 bytes; first
#: contact; absent in a keyframe stream).
KEY_INITIAL_DIGEST: Final = "fc.i"
#: The deployment's name of that initial model (str, informative; first contact, when set).
KEY_INITIAL_ID: Final = "fc.iid"
#: In the reason of the mod's error reply: the node does not hold the shared initial
#: model (or holds another); the server then sends it the initial model once when it may.
ERROR_NO_INITIAL: Final = "fc.noinit"
#: Why the server sends no model (str; with :data:`DOWNLINK_REFUSED`).
KEY_ERROR: Final = "fc.e"
#: Key of the coded model: in the ConfigRecord, the containers inline (``bytes``, or a
#: list of ``bytes`` for a chain) when they are small (up to 64 KiB) and no array
#: travels uncoded — then the message holds no ArrayRecord; otherwise ONE ``Array`` in
#: the message's ArrayRecord.
KEY_MODEL_ARRAY: Final = "fc.m"
#: Key of the initial model (float32, model order) when the server sends it.
INITIAL_ARRAY: Final = "fc.init"
#: Key of the coded update in a reply: a ``ConfigRecord`` holding the container
#: (``bytes``) in place of the app's ArrayRecord, under the same name, when it is small
#: (up to 64 KiB) and no array travels uncoded; otherwise ONE ``Array`` in the ArrayRecord.
KEY_UPDATE_ARRAY: Final = "fc.u"
#: In a reply's update ``ConfigRecord`` that carries the app's metrics under their own
#: keys: the name of the ``MetricRecord`` they came from (str), sent only when it is
#: not ``"metrics"`` or the record is empty (no other key says it was there).
KEY_METRICS: Final = "fc.mr"
#: The name of a folded ``MetricRecord`` when :data:`KEY_METRICS` is absent.
METRICS_RECORD: Final = "metrics"

DOWNLINK_KEYFRAME: Final = FORMAT + "k"
DOWNLINK_DELTA: Final = FORMAT + "d"
DOWNLINK_NONE: Final = FORMAT + "n"
DOWNLINK_RAW: Final = FORMAT + "r"
DOWNLINK_REFUSED: Final = FORMAT + "x"
#: Every value :data:`KEY_FORMAT` may have.
DOWNLINK_KINDS: Final = frozenset(
    {DOWNLINK_KEYFRAME, DOWNLINK_DELTA, DOWNLINK_NONE, DOWNLINK_RAW, DOWNLINK_REFUSED}
)

# -- reply ArrayRecord the app may add (consumed by the mod, never sent) -----
#: Name of an optional ``ArrayRecord`` in the app's train reply: per-weight importance η
#: (e.g. the diagonal Fisher from :class:`fedcodec.torch.FisherAccumulator`) under the
#: model's keys.  The mod codes the update with it and removes it from the reply.
IMPORTANCE_RECORD: Final = "fedcodec.importance"

# -- context.state (client) ---------------------------------------------------
#: ArrayRecord: the client's model receiver (held model, initial model, change).
STATE_MODEL: Final = "fedcodec.receiver"
#: ArrayRecord: the error-feedback residual.
STATE_RESIDUAL: Final = "fedcodec.residual"
#: ArrayRecord: the temporal reference (the last update's reconstruction; only while
#: the server offers references).
STATE_REFERENCE: Final = "fedcodec.reference"
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
