"""The server side: a ``Strategy`` wrapper that codes the model traffic of any strategy.

:class:`CompressionStrategy` wraps an inner Message-API strategy (FedAvg,
FedAdam, FedProx, Krum, a DP wrapper, ...) the way Flower's
``DifferentialPrivacyClientSideFixedClipping`` does: it changes what goes out
in ``configure_*`` and what comes back in ``aggregate_*``, and delegates
everything else, so the inner strategy only ever sees plain float32 arrays.

Downlink.  Every distinct global model the wrapper sees becomes a version of a
:class:`~fedcodec.pipeline.DownlinkEncoder` stream.  Each node gets the coded
change from the version it confirmed holding (a reply without error confirms
the model its message described: the mod checks the digest), several changes
when it lags, nothing when it is up to date, and a keyframe when it is new,
failed, fell out of the kept history, or its reply to a message that changed its
model never came (Flower's timeout: it may hold either version, and a keyframe is
what it applies whichever it holds).

Uplink.  ``configure_train`` adds the round's λ/S or byte budget (from a
schedule, per node with ``RoundParams.per_client``) to a node's message when
they differ from what the node last acknowledged (the wire contract:
:mod:`fedcodec.flower.constants`); ``aggregate_train`` checks each coded reply
against the version its message carried, decodes it, adds it to the exact global
model of that version, and hands the inner strategy a plain ``ArrayRecord``
under the original keys.  A reply that fails the checks is left out (and
counted as rejected); error replies go to the inner strategy unchanged.

Temporal reference (``temporal_reference=True``).  The wrapper keeps each node's
last update as it decoded it (at most ``reference_nodes`` nodes, the least
recently updated forgotten first: ``4 × weights`` bytes per node).  When the node
may hold another one — first contact, a train message without a decoded reply, an
evicted reference — its train message names the reference the server holds
(:data:`~fedcodec.flower.constants.KEY_REFERENCE`) and the mod codes against its
own copy only when the names agree; otherwise both hold the node's last update and
nothing is added.  A node restart, an evicted reference or a lost reply costs the
gain of one update, never the update.

What is coded is the floating-point arrays of the first global model (sent as
float32); other arrays, e.g. integer buffers such as BatchNorm's
``num_batches_tracked``, travel as they are, and every record keeps its key order.

Bytes are counted as Flower transmits each message's content (its
content-addressed objects, deflated): coded, and what the same message with the
plain float32 record would have been.  They are added to
the round's metrics (``fedcodec.*`` keys) and summed in :attr:`CompressionStrategy.totals`.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fedcodec import codec
from fedcodec.errors import FedCodecError
from fedcodec.flower._logging import logger as _log
from fedcodec.flower._records import (
    INLINE_MAX_BYTES,
    coded_array,
    coded_update,
    floating_keys,
    inline_value,
    merge_records,
    plain_record,
    record_spec,
    record_tensors,
    restore_metrics,
    split_record,
    wire_size,
)
from fedcodec.flower.constants import (
    DIGEST_BYTES,
    DOWNLINK_DELTA,
    DOWNLINK_KEYFRAME,
    DOWNLINK_NONE,
    DOWNLINK_RAW,
    DOWNLINK_REFUSED,
    ERROR_NO_INITIAL,
    FLOWER_ROUND,
    INITIAL_ARRAY,
    KEY_BASE_DIGEST,
    KEY_BASE_VERSION,
    KEY_COMPACT,
    KEY_DOWNLINK,
    KEY_ERROR,
    KEY_FROM_VERSION,
    KEY_INITIAL_DIGEST,
    KEY_INITIAL_ID,
    KEY_KEYS,
    KEY_MODEL_ARRAY,
    KEY_PARAMS,
    KEY_RECORD,
    KEY_REFERENCE,
    KEY_ROUND,
    KEY_UNCODED_KEYS,
    KEY_UPDATE_ARRAY,
    METRIC_BUDGET_BYTES,
    METRIC_BYTES_DOWN,
    METRIC_BYTES_UP,
    METRIC_KEYFRAMES,
    METRIC_LAMBDA,
    METRIC_RATIO_DOWN,
    METRIC_RATIO_UP,
    METRIC_RAW_BYTES_DOWN,
    METRIC_RAW_BYTES_UP,
    METRIC_REJECTED,
    METRIC_S,
)
from fedcodec.pipeline import (
    ClientRoundStats,
    ConstantSchedule,
    DownlinkPackage,
    InitialModelError,
    ModelMismatchError,
    ModelSpec,
    ModelVersion,
    PipelineError,
    Preset,
    RobustPolicy,
    RoundEngine,
    RoundParams,
    RoundStats,
    Schedule,
    ServerOptimizer,
    as_schedule,
    get_preset,
    model_digest,
)
from fedcodec.pipeline.checks import check_tensors, inspect_update
from fedcodec.pipeline.downlink import DEFAULT_KEYFRAME_BITS
from fedcodec.pipeline.ratecontrol import StepSnapPolicy, step_snap_policy
from fedcodec.pipeline.robust import RobustRejectionError, UpdateSummary, plan_round, screen_update
from fedcodec.pipeline.server import DEFAULT_MAX_STEP

__all__ = ["CompressionStrategy", "Traffic"]

_NUM_EXAMPLES = "num-examples"


@dataclass
class Traffic:
    """Bytes of one round (or of the whole run), as ``ArrayRecord.count_bytes()`` counts them.

    Attributes
    ----------
    bytes_up, raw_bytes_up : int
        Coded update records received, and what they hold as plain float32.
    bytes_down, raw_bytes_down : int
        Model records sent (train and evaluate messages), coded and plain.
    updates : int
        Coded updates accepted.
    rejected : int
        Coded updates left out (wrong base version or digest, damaged).
    keyframes : int
        Keyframes sent.
    messages_down : int
        Messages whose model the wrapper coded.
    """

    bytes_up: int = 0
    raw_bytes_up: int = 0
    bytes_down: int = 0
    raw_bytes_down: int = 0
    updates: int = 0
    rejected: int = 0
    keyframes: int = 0
    messages_down: int = 0

    @property
    def ratio_up(self) -> float:
        """Plain over coded uplink bytes (0.0 before any update)."""
        return self.raw_bytes_up / self.bytes_up if self.bytes_up else 0.0

    @property
    def ratio_down(self) -> float:
        """Plain over coded downlink bytes (0.0 before any message)."""
        return self.raw_bytes_down / self.bytes_down if self.bytes_down else 0.0

    @property
    def ratio(self) -> float:
        """Plain over coded bytes, both directions."""
        coded = self.bytes_up + self.bytes_down
        return (self.raw_bytes_up + self.raw_bytes_down) / coded if coded else 0.0

    def add(self, other: Traffic) -> None:
        """Add another record's counts to this one."""
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class _Base:
    """The model a round's messages were built from."""

    model: ModelVersion  # the exact global model
    digest_sent: str  # what clients rebuild (stream digest, or the exact one when raw)


@dataclass
class _Phase:
    """Per configure/aggregate pair: the base and the traffic so far."""

    base: _Base
    params: RoundParams | None
    keys: list[str] = field(default_factory=list)  # the global record's key order
    # node -> the coding parameters (JSON text) of its message, None in evaluate: the
    # nodes whose message carried the model (a reply without error confirms it)
    sent: dict[int, str | None] = field(default_factory=dict)
    traffic: Traffic = field(default_factory=Traffic)
    updates: list[ClientRoundStats] = field(default_factory=list)
    # id(reply message) -> (node, decoded change per tensor), for the robust rules
    changes: dict[int, tuple[int, dict[str, np.ndarray]]] = field(default_factory=dict)
    # node -> (container, num_examples, held version, held digest, plain reply record)
    containers: dict[int, tuple[bytes, int, int, str, ArrayRecord]] = field(default_factory=dict)
    # node -> whether its package was a chain of deltas (None: no model change)
    chains: dict[int, bool | None] = field(default_factory=dict)
    # node -> its decoded update: its next temporal reference (kept after the round)
    references: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)


class CompressionStrategy(Strategy):
    """Wrap a strategy so that models travel coded by fedcodec both ways.

    Use :func:`~fedcodec.flower.fedcodec_mod` (or
    :func:`~fedcodec.flower.make_fedcodec_mod`) in the ClientApp.

    Parameters
    ----------
    strategy : Strategy
        The inner strategy; it sees plain float32 arrays only.
    schedule : RoundParams, Schedule or callable, optional
        The uplink coding per round: ``schedule(round_index, last_stats)``
        with ``round_index = server_round - 1`` and the previous round's
        :class:`~fedcodec.pipeline.RoundStats`, or fixed parameters.
        Default: ``RoundParams()`` (λ = 0.1155, S = 64).  A byte budget holds
        for the reply as Flower serializes it (the container gets the budget
        minus the reply's framing).  For CNNs with BatchNorm see
        ``docs/torch.md`` (``Sensitivity``, Fisher importance, RD top-k).
    downlink : RoundParams, Schedule or callable, optional
        How changes of the global model are coded (default: the uplink
        schedule; ``per_client`` does not apply: one stream serves all nodes).
    preset : str or Preset, optional
        A named coding of both links as measured on the CNN family
        (:func:`fedcodec.pipeline.get_preset`: ``"near-lossless"``, ``"dense"``,
        ``"robust"``, ``"balanced"``, ``"lean-full"``, ``"lean-partial"``; the table is in
        ``docs/torch.md``): it sets ``schedule``, ``downlink`` and ``step_snap``,
        so none of them may be given with it (a ``ValueError``).  All but
        ``"near-lossless"`` and ``"robust"`` (measured with and without it) were
        measured with the ClientApp sending Fisher importance
        (:class:`fedcodec.torch.FisherAccumulator`).  An unknown name
        is a ``ValueError`` listing the presets.
    compress_downlink : bool, optional
        Code the downlink (default True); False sends raw float32 models and
        codes the uplink only.
    keep : int, optional
        Versions a node may lag and still get deltas instead of a keyframe.
    keyframe_bits : int, optional
        Grid resolution of the downlink stream (see :mod:`fedcodec.pipeline.downlink`).
    threads : int, optional
        Codec threads (default 1; 0 uses all CPUs).
    robust : RobustPolicy, optional
        Bounds on what one coded reply may do (default ``RobustPolicy()``; see
        :mod:`fedcodec.pipeline.robust`), applied to the decoded updates before the
        inner strategy sees them: a reply with too many examples, non-finite or too
        large values, or (``norm_action="reject"``) a norm beyond a bound is left out;
        with ``"clip"`` its change is scaled to the bound; when a reply would hold more
        than ``max_share`` of the round, the ``num-examples`` metrics are rewritten to
        the capped shares (the inner strategy weights by them).  Coordinate-wise
        aggregation is the inner strategy's job (Flower's ``FedTrimmedAvg``,
        ``FedMedian``): ``aggregator`` must be ``"mean"`` here.
        ``RobustPolicy.fedavg()`` keeps only the value checks.
    aggregation : {"inner", "engine"}, optional
        ``"inner"`` (default): the inner strategy aggregates the decoded replies.
        ``"engine"``: the round engine's decode-and-accumulate FedAvg (with
        ``robust``), exactly the gRPC server's arithmetic; the inner strategy
        then only samples and configures.
    shared_initial : bool, optional
        The first global model is a shared initial model every node holds (the
        mod's ``initial_model``): it never travels, a node's first download is a
        delta (default True).  False: a keyframe stream.
    send_initial : bool, optional
        Send the initial model once (4 bytes per weight) to a node that reports
        it lacks it (default True: the plain :data:`~fedcodec.flower.fedcodec_mod`
        works; such a node loses the round of its first message, which tells the
        server, and the server logs a warning per node with the bytes).  A mod
        built with ``make_fedcodec_mod(initial_model=...)`` never gets it.
        False: a node without it gets an error naming ``initial_digest`` every
        round.
    initial_id : str, optional
        A name for the initial model, sent next to its digest.
    step_snap : {"auto", "grid", "pow2"}, optional
        How downlink steps snap to the stream grid (see
        :class:`~fedcodec.pipeline.DownlinkEncoder`).  Default: the preset's, else ``"auto"``:
        power-of-two steps for sparsified versions (a catch-up's cumulative delta
        then has small levels: −31 % downlink bytes with 6 of 30 nodes a round; in
        full participation the same accuracy and 0.1-0.5 % fewer bytes, 3 seeds) and
        for dense ones while a node lags behind the stream (partial participation;
        docs/catchup.md, "Dense versions"), grid steps for dense versions every node
        follows one by one (the same bytes as ``"grid"``).
    server_optimizer : ServerOptimizer, optional
        A server optimizer applied to the round's aggregate (the inner strategy's —
        wrap ``FedAvg`` — or the engine's with ``aggregation="engine"``):
        ``x_{v+1} = x_v + step(aggregate − x_v)`` on the exact
        global model, the downlink codes the change it applied.  Its default
        second moment per tensor keeps error feedback's sum, which Flower's
        ``FedAdam``/``FedYogi``/``FedAdagrad`` (one per weight) do not: a weight
        the coded uplink carries only now and then gets a step of about
        ``eta`` at each release (:mod:`fedcodec.pipeline.optimizer`, docs/torch.md).
    temporal_reference : bool, optional
        Let nodes code each update against their previous one (temporal side
        information for the entropy coder: the same levels, fewer bytes;
        sparsified updates are coded without).  The wrapper keeps each node's
        last decoded update and names it (8 bytes) in a train message when the
        node may hold another one; a node codes against its copy only when the
        names agree.  Needs ``compress_downlink=True`` (the round engine
        decodes).  Measured uplink: −6.6 % on the MNIST MLP at λ = 0.1155,
        −0.5 % on the benchmark CNN at λ = 0.5 (``docs/codec.md``).  Default False.
    reference_nodes : int, optional
        Most nodes whose reference is kept (default 100; least recently updated
        forgotten first, its next update then goes without reference).  Memory:
        ``4 × weights`` bytes per node kept (``100 × 4 × 58,546`` ≈ 23 MB for the
        small benchmark CNN).
    downlink_reference : bool, optional
        Code each version delta also against the previous one (the same levels,
        the smaller coding) for nodes that hold it — the nodes whose last package
        was a chain of deltas (:class:`~fedcodec.pipeline.RoundEngine`
        ``downlink_reference``).  The mod keeps that delta in ``context.state``
        (4 bytes per weight).  Default False.
    compact : bool, optional
        Ask nodes for compact replies (:data:`~fedcodec.flower.constants.KEY_COMPACT`
        at first contact; codec FORMAT.md §2-3): no shapes (both ends know the
        model), all-zero tensors omitted, steps rounded to one-byte steps (within
        6.25 %); a node that replies compact gets its downlink compact too (the
        engine's containers rewritten, :func:`fedcodec.codec.convert`).  Default True:
        the server reads both forms, and a mod that does not know the key keeps coding
        self-describing containers and gets self-describing downlinks.

    Examples
    --------
    >>> from flwr.serverapp.strategy import FedAvg
    >>> from fedcodec.flower import CompressionStrategy
    >>> from fedcodec.pipeline import RoundParams, StepSchedule
    >>> strategy = CompressionStrategy(
    ...     FedAvg(fraction_evaluate=0.5),
    ...     schedule=StepSchedule(RoundParams(lam=0.5, S=8), "S", gamma=2.0, every=5),
    ... )

    With central DP (client-side clipping), wrap the DP wrapper, so that
    replies are decoded before it sees them::

        CompressionStrategy(DifferentialPrivacyClientSideFixedClipping(FedAvg(), ...))
        ClientApp(mods=[fedcodec_mod, fixedclipping_mod])
    """

    def __init__(
        self,
        strategy: Strategy,
        *,
        schedule: RoundParams
        | Schedule
        | Callable[[int, RoundStats | None], RoundParams]
        | None = None,
        downlink: RoundParams
        | Schedule
        | Callable[[int, RoundStats | None], RoundParams]
        | None = None,
        preset: str | Preset | None = None,
        compress_downlink: bool = True,
        keep: int = 32,
        keyframe_bits: int = DEFAULT_KEYFRAME_BITS,
        threads: int = 1,
        robust: RobustPolicy | None = None,
        aggregation: str = "inner",
        shared_initial: bool = True,
        send_initial: bool = True,
        initial_id: str = "",
        step_snap: str | None = None,
        server_optimizer: ServerOptimizer | None = None,
        temporal_reference: bool = False,
        reference_nodes: int = 100,
        downlink_reference: bool = False,
        compact: bool = True,
    ) -> None:
        super().__init__()
        self.compact = compact
        if temporal_reference and not compress_downlink:
            raise ValueError(
                "temporal_reference needs compress_downlink=True (the round engine keeps "
                "and decodes with the references)"
            )
        if reference_nodes < 1:
            raise ValueError(f"reference_nodes must be >= 1, got {reference_nodes}")
        self.temporal_reference = temporal_reference
        self.reference_nodes = reference_nodes
        self.downlink_reference = downlink_reference
        chosen: Preset | None = None
        if preset is not None:
            given = [
                f"{name}="
                for name, value in (
                    ("schedule", schedule),
                    ("downlink", downlink),
                    ("step_snap", step_snap),
                )
                if value is not None
            ]
            if given:
                raise ValueError(
                    f"preset sets the schedule, the downlink and step_snap: pass either "
                    f"preset= or {', '.join(given)}, not both"
                )
            chosen = preset if isinstance(preset, Preset) else get_preset(preset)
            schedule, downlink, step_snap = chosen.uplink, chosen.downlink, chosen.step_snap
        #: The preset the coding comes from (None: explicit or default parameters).
        self.preset = chosen
        policy = step_snap_policy("auto" if step_snap is None else step_snap)
        robust = RobustPolicy() if robust is None else robust
        if robust.aggregator != "mean":
            raise ValueError(
                "robust.aggregator must be 'mean' in the Flower wrapper: use Flower's "
                "FedTrimmedAvg or FedMedian as the inner strategy for coordinate-wise rules"
            )
        self.robust = robust
        if not isinstance(strategy, Strategy):
            raise TypeError(f"strategy must be a flwr Strategy, got {type(strategy).__name__}")
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        if not 2 <= keyframe_bits <= 20:
            raise ValueError(f"keyframe_bits must be in 2..20, got {keyframe_bits}")
        if threads < 0:
            raise ValueError(f"threads must be >= 0, got {threads}")
        adaptive = _adaptive(strategy)
        if server_optimizer is not None and adaptive:
            raise ValueError(
                "server_optimizer: wrap an averaging strategy (FedAvg), not "
                f"{type(strategy).__name__}: it would apply a second optimizer"
            )
        if adaptive:
            _log.warning(
                "fedcodec: %s normalizes every weight by its own second moment: weights "
                "that the coded uplink carries only now and then (top-k, error feedback) "
                "get steps of about eta; prefer CompressionStrategy(FedAvg(...), "
                "server_optimizer=ServerOptimizer(...)) with a second moment per tensor",
                type(strategy).__name__,
            )
        self.server_optimizer = server_optimizer
        self.strategy = strategy
        self.schedule = as_schedule(schedule if schedule is not None else RoundParams())
        self.downlink_schedule = as_schedule(downlink) if downlink is not None else self.schedule
        self.compress_downlink = compress_downlink
        self.keep = keep
        self.keyframe_bits = keyframe_bits
        self.threads = threads
        if aggregation not in ("inner", "engine"):
            raise ValueError(f"aggregation must be 'inner' or 'engine', got {aggregation!r}")
        self.aggregation = aggregation
        self.shared_initial = shared_initial
        self.send_initial = send_initial
        self.initial_id = initial_id
        self.step_snap: StepSnapPolicy = policy
        #: Traffic per server round (train and evaluate messages of that round), as
        #: Flower serializes the messages' content.
        self.history: dict[int, Traffic] = {}
        self._spec: ModelSpec | None = None
        self._engine: RoundEngine | None = None
        self._base: _Base | None = None
        # node -> confirmed (version, digest); a node in it also holds the record layout
        self._held: dict[int, tuple[int, str]] = {}
        # nodes whose last update was left out: they hold the model of its message, but
        # get the layout and parameters again (a first contact from that version)
        self._relayout: set[int] = set()
        # nodes whose reply to their last train message the server decoded: both hold it as
        # the node's temporal reference
        self._reference_synced: set[int] = set()
        # nodes that hold the decoded delta of their version (their last package was a chain)
        self._holds_delta: set[int] = set()
        # nodes whose last coded reply was a compact container: they read compact ones
        self._compact_nodes: set[int] = set()
        self._params_known: dict[int, str] = {}  # node -> the parameters it holds (JSON)
        self._lacks_initial: set[int] = set()  # nodes that said they do not hold it
        self._initial_sent: set[int] = set()  # nodes sent the initial model (warned once)
        self._failed: set[int] = set()  # last package failed, or its reply never came
        self._phases: dict[tuple[str, int], _Phase] = {}
        self._last_stats: RoundStats | None = None

    def __repr__(self) -> str:
        """Name the wrapper and the inner strategy."""
        return f"CompressionStrategy({self.strategy!r})"

    # -- reporting ----------------------------------------------------------

    @property
    def totals(self) -> Traffic:
        """Traffic of all rounds so far."""
        out = Traffic()
        for traffic in self.history.values():
            out.add(traffic)
        return out

    @property
    def model_version(self) -> int | None:
        """The version number of the latest global model (None before round 1)."""
        return None if self._base is None else self._base.model.version

    def stream_model(self) -> ModelVersion | None:
        """The latest version as the nodes rebuild it from the coded downlink.

        With a server optimizer (FedAdam, FedYogi, FedAvgM) the inner strategy's
        model moves every weight every round; the downlink codes that change with
        server-side error feedback, so this model lags the exact global one by the
        residual, and every node holds it bit for bit (the mod checks its digest).
        None before round 1; the exact global model when the downlink is raw.
        """
        if self._base is None:
            return None
        if self._engine is None:
            return self._base.model
        return self._engine.stream_model()

    def summary(self) -> None:
        """Log the settings and the traffic so far, then the inner strategy's summary.

        Byte counts are what Flower transmits for each message's content: its
        content-addressed objects (records, each ``Array``), deflated, with their
        framing — arrays, the fedcodec config and reply records, the app's metrics —
        coded, and the same messages with plain float32 arrays.
        """
        totals = self.totals
        _log.info("\t├──> fedcodec compression (bytes as Flower transmits the messages):")
        if self.preset is not None:
            _log.info(
                "\t│\t├── Preset: %s (step_snap %s%s)",
                self.preset.name,
                self.preset.step_snap,
                ", expects Fisher importance from the ClientApp" if self.preset.fisher else "",
            )
        _log.info("\t│\t├── Uplink: %s", _describe(self.schedule))
        if self.compress_downlink:
            _log.info(
                "\t│\t├── Downlink: coded deltas %s, keep %d versions, keyframe grid %d bits, %s",
                _describe(self.downlink_schedule),
                self.keep,
                self.keyframe_bits,
                "shared initial model" if self.shared_initial else "keyframe stream",
            )
        else:
            _log.info("\t│\t├── Downlink: raw float32")
        if self.server_optimizer is not None:
            _log.info("\t│\t├── Server optimizer: %r", self.server_optimizer)
        if self.temporal_reference:
            _log.info(
                "\t│\t├── Temporal reference: the previous update, kept for up to %d nodes",
                self.reference_nodes,
            )
        _log.info(
            "\t│\t├── Bytes up: %d coded, %d as float32 (%.1fx), %d updates, %d rejected",
            totals.bytes_up,
            totals.raw_bytes_up,
            totals.ratio_up,
            totals.updates,
            totals.rejected,
        )
        _log.info(
            "\t│\t└── Bytes down: %d coded, %d as float32 (%.1fx), %d keyframes",
            totals.bytes_down,
            totals.raw_bytes_down,
            totals.ratio_down,
            totals.keyframes,
        )
        self.strategy.summary()

    # -- train --------------------------------------------------------------

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Add the round's coding parameters, then code each node's model."""
        params = self.schedule(server_round - 1, self._last_stats)
        base = self._publish(arrays, server_round)
        round_config = ConfigRecord(dict(config))
        round_config[KEY_ROUND] = server_round
        messages = list(self.strategy.configure_train(server_round, arrays, round_config, grid))
        phase = _Phase(base, params, keys=list(arrays.keys()))
        self._phases[("train", server_round)] = phase
        return [self._prepare(msg, phase, server_round) for msg in messages]

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Decode the coded replies into plain arrays, then let the inner strategy aggregate."""
        phase = self._phases.pop(("train", server_round), None)
        kept: list[Message] = []
        answered: set[int] = set()
        for msg in replies:
            answered.add(msg.metadata.src_node_id)
            decoded = self._take_reply(msg, phase, decode=True)
            if decoded is not None:
                kept.append(decoded)
        if phase is not None:
            self._unanswered(phase, answered)
        if phase is not None and self.aggregation == "engine" and self._engine is not None:
            arrays, metrics = self._engine_aggregate(phase)
        else:
            if phase is not None:
                kept = self._apply_robust(kept, phase, server_round)
            arrays, metrics = self.strategy.aggregate_train(server_round, kept)
        if phase is None:
            return arrays, metrics
        if self._engine is not None:
            # The decoded updates are what the nodes hold as their reconstruction, whether
            # or not the aggregation kept them: each node's next temporal reference.
            for node, change in phase.references.items():
                self._engine.remember_reference(str(node), change)
                self._reference_synced.add(node)
        if arrays is not None and self.server_optimizer is not None:
            arrays = self._optimizer_step(phase, arrays)
        self._record(server_round, phase.traffic)
        metrics = self._with_metrics(metrics, phase.traffic, phase.params, up=True)
        self._last_stats = self._round_stats(server_round, phase, arrays)
        return arrays, metrics

    # -- evaluate -----------------------------------------------------------

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Code each node's model (the change from the version it holds)."""
        messages = list(self.strategy.configure_evaluate(server_round, arrays, config, grid))
        if not messages:
            return messages
        base = self._publish(arrays, server_round)
        phase = _Phase(base, None, keys=list(arrays.keys()))
        self._phases[("evaluate", server_round)] = phase
        return [self._prepare(msg, phase, server_round) for msg in messages]

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Note the version each node holds, then let the inner strategy aggregate."""
        phase = self._phases.pop(("evaluate", server_round), None)
        kept: list[Message] = []
        answered: set[int] = set()
        for msg in replies:
            answered.add(msg.metadata.src_node_id)
            out = self._take_reply(msg, phase, decode=False)
            if out is not None:
                kept.append(out)
        if phase is not None:
            self._unanswered(phase, answered)
        metrics = self.strategy.aggregate_evaluate(server_round, kept)
        if phase is None:
            return metrics
        self._record(server_round, phase.traffic)
        return self._with_metrics(metrics, phase.traffic, None, up=False)

    # -- downlink -----------------------------------------------------------

    def _publish(self, arrays: ArrayRecord, server_round: int) -> _Base:
        """Make ``arrays`` the latest version of the round engine (a no-op when unchanged).

        The coded model is the floating-point arrays of the first global model;
        any other array (an integer buffer) travels as it is, in every round.
        The first global model is the shared initial model (``shared_initial``).
        """
        if self._spec is None:
            model_part, _ = split_record(arrays, floating_keys(arrays))
            if not len(model_part):
                raise ModelMismatchError("the global model has no floating-point arrays to code")
            self._spec = record_spec(model_part)
        spec = self._spec
        model_part, _ = split_record(arrays, spec.names)
        tensors = record_tensors(model_part, spec, "global model")
        if self._base is not None and model_digest(spec, tensors) == self._base.model.digest:
            return self._base
        version = 0 if self._base is None else self._base.model.version + 1
        model = ModelVersion.create(version, tensors, spec)
        digest_sent = model.digest
        if self.compress_downlink:
            if self._engine is None:
                self._engine = RoundEngine(
                    model,
                    initial_id=self.initial_id,
                    shared_initial=self.shared_initial,
                    send_initial=self.send_initial,
                    schedule=self.schedule,
                    downlink=self.downlink_schedule,
                    keep=self.keep,
                    keyframe_bits=self.keyframe_bits,
                    step_snap=self.step_snap,
                    threads=self.threads,
                    policy=self.robust,
                    client_references=self.reference_nodes if self.temporal_reference else 0,
                    downlink_reference=self.downlink_reference,
                )
            else:
                self._engine.last_stats = self._last_stats
                self._engine.publish(model, round_index=server_round - 1)
            digest_sent = self._engine.stream_digest
        self._base = _Base(model, digest_sent)
        return self._base

    def _prepare(self, msg: Message, phase: _Phase, server_round: int) -> Message:
        """Give ``msg`` its own content: the coded model and the fedcodec config keys."""
        content = msg.content
        records = content.array_records
        configs = content.config_records
        spec = phase.base.model.spec
        if len(records) != 1 or len(configs) != 1:
            _log.warning(
                "fedcodec: round %d: a message with %d ArrayRecords and %d ConfigRecords is "
                "sent uncoded (the wrapper needs exactly one of each)",
                server_round,
                len(records),
                len(configs),
            )
            return msg
        record_key, record = next(iter(records.items()))
        config_key, config = next(iter(configs.items()))
        model_part, uncoded = split_record(record, spec.names)
        if record_spec(model_part) != spec:
            _log.warning(
                "fedcodec: round %d: a message's arrays are not the global model; sent uncoded",
                server_round,
            )
            return msg
        raw_size = wire_size(content)
        node = msg.metadata.dst_node_id
        # First contact (no successful reply yet, or the last one failed): the layout.
        held = self._held.get(node)
        first_contact = held is None or node in self._relayout
        new_config = ConfigRecord(dict(config))
        if new_config.get(FLOWER_ROUND) == server_round and KEY_ROUND in new_config:
            del new_config[KEY_ROUND]  # the inner strategy's config carries the round
        new_config[KEY_BASE_VERSION] = phase.base.model.version
        new_config[KEY_BASE_DIGEST] = bytes.fromhex(phase.base.digest_sent)[:DIGEST_BYTES]
        if first_contact:
            new_config[KEY_RECORD] = record_key
            new_config[KEY_KEYS] = list(record.keys())
            if len(uncoded):
                new_config[KEY_UNCODED_KEYS] = list(uncoded.keys())
            if self.compact:
                new_config[KEY_COMPACT] = True
        params_text: str | None = None
        if phase.params is not None:
            params_text = phase.params.for_client(str(node)).to_json_text()
            if first_contact or self._params_known.get(node) != params_text:
                new_config[KEY_PARAMS] = params_text
        engine = self._engine
        if phase.params is not None and engine is not None and engine.references is not None:
            # Named only when the node may hold another reference than the server's (first
            # contact, no decoded reply to its last train message, evicted): otherwise both
            # hold the node's last update and the message says nothing.
            token = engine.reference_token(str(node))
            if first_contact or token is None or node not in self._reference_synced:
                new_config[KEY_REFERENCE] = b"" if token is None else bytes.fromhex(token)
            self._reference_synced.discard(node)
        inline = False  # the coded model in the ConfigRecord, no ArrayRecord
        if engine is None:
            wire = record
            new_config[KEY_DOWNLINK] = DOWNLINK_RAW
            phase.sent[node] = params_text
        else:
            wire = ArrayRecord()
            try:
                # a node that replies compact reads compact containers (not at first contact)
                package = self._package_for(
                    engine,
                    node,
                    compact=self.compact and not first_contact and node in self._compact_nodes,
                )
            except InitialModelError as exc:
                new_config[KEY_DOWNLINK] = DOWNLINK_REFUSED
                new_config[KEY_ERROR] = str(exc)
                package = None
            if package is not None:
                containers = (
                    [package.keyframe] if package.keyframe is not None else list(package.deltas)
                )
                inline = (
                    not len(uncoded)
                    and package.initial is None
                    and sum(len(c) for c in containers) <= INLINE_MAX_BYTES
                )
                if inline:  # no ArrayRecord at all: its framing would cost more than the data
                    if containers:
                        new_config[KEY_MODEL_ARRAY] = inline_value(containers)
                elif containers:
                    wire[KEY_MODEL_ARRAY] = coded_array(containers)
                if package.initial is not None:
                    flat = np.frombuffer(package.initial, dtype="<f4")
                    wire[INITIAL_ARRAY] = Array(np.array(flat, dtype=np.float32))
                    self._warn_initial_sent(node, server_round, len(package.initial))
                new_config[KEY_DOWNLINK] = _kind(package)
                if (
                    package.from_version is not None
                    and package.deltas
                    and (held is None or package.from_version != held[0])
                ):
                    new_config[KEY_FROM_VERSION] = package.from_version
                if package.initial_digest is not None and first_contact:
                    new_config[KEY_INITIAL_DIGEST] = bytes.fromhex(package.initial_digest)
                    if self.initial_id:
                        new_config[KEY_INITIAL_ID] = self.initial_id
                phase.traffic.keyframes += package.is_keyframe
                phase.sent[node] = params_text
                phase.chains[node] = _is_chain(package)
            for name, array in uncoded.items():
                wire[name] = array
        out: dict[str, ArrayRecord | ConfigRecord | MetricRecord] = {}
        for key, value in content.items():
            if key == record_key:
                if not inline:
                    out[key] = wire
            else:
                out[key] = new_config if key == config_key else value
        msg.content = RecordDict(out)
        phase.traffic.bytes_down += wire_size(msg.content)
        phase.traffic.raw_bytes_down += raw_size
        phase.traffic.messages_down += 1
        return msg

    def _warn_initial_sent(self, node: int, server_round: int, size: int) -> None:
        """One warning per node that gets the raw initial model (its mod holds none)."""
        if node in self._initial_sent:
            return
        self._initial_sent.add(node)
        _log.warning(
            "fedcodec: round %d: node %d does not hold the shared initial model: sending it "
            "(%d bytes, 4 per weight, once); give the ClientApp's mod the initial model "
            "(make_fedcodec_mod(initial_model=...)) to spare that",
            server_round,
            node,
            size,
        )

    def _package_for(
        self, engine: RoundEngine, node: int, *, compact: bool = False
    ) -> DownlinkPackage:
        """The engine's package for ``node`` from what the node confirmed holding."""
        held = self._held.get(node)
        ref = engine.initial
        lacks = node in self._lacks_initial
        return engine.package_for(
            str(node),
            have_version=None if held is None else held[0],
            have_digest=None if held is None else held[1],
            initial_digest=None if ref is None or lacks else ref.digest,
            force_keyframe=node in self._failed,
            want_initial=lacks,
            holds_delta=held is not None and node in self._holds_delta,
            compact=compact,
        )

    # -- replies ------------------------------------------------------------

    def _take_reply(self, msg: Message, phase: _Phase | None, *, decode: bool) -> Message | None:
        """The reply as the inner strategy should see it, or None to leave it out."""
        node = msg.metadata.src_node_id
        if msg.has_error():
            self._forget(node)
            reason = msg.error.reason or ""
            if ERROR_NO_INITIAL in reason:
                self._lacks_initial.add(node)
            elif "fedcodec" in reason:
                self._failed.add(node)
            return msg
        if phase is None or node not in phase.sent:
            return msg  # not a message the wrapper coded: the inner strategy deals with it
        # No error: the mod rebuilt (digest-checked) the model this round's message described.
        held = (phase.base.model.version, phase.base.digest_sent)
        content = dict(msg.content.items())
        msg_content = dict(content)
        confirmed = not decode
        if decode:
            start = time.perf_counter()
            coded_bytes = wire_size(msg.content)
            try:
                content, plain_bytes, steps, change = self._decode_update(
                    content, phase, held, node
                )
            except (FedCodecError, ValueError) as exc:
                _log.warning("fedcodec: update of node %d left out: %s", node, exc)
                phase.traffic.rejected += 1
                self._left_out(node, held)
                self._note_chain(node, phase)
                if self._engine is not None:
                    self._engine.forget_reference(str(node))
                return None
            if steps:  # a coded update: it came through the mod
                confirmed = True
                phase.changes[id(msg)] = (node, change)
                plain = next(v for v in content.values() if isinstance(v, ArrayRecord))
                phase.containers[node] = (
                    data_of(msg_content),
                    _num_examples(content),
                    held[0],
                    held[1],
                    plain,
                )
                phase.traffic.bytes_up += coded_bytes
                phase.traffic.raw_bytes_up += plain_bytes
                phase.traffic.updates += 1
                phase.updates.append(
                    ClientRoundStats(
                        client_id=str(node),
                        bytes=coded_bytes,
                        num_examples=_num_examples(content),
                        steps=steps,
                        decode_seconds=time.perf_counter() - start,
                    )
                )
        if confirmed:
            self._held[node] = held
            self._relayout.discard(node)
            self._note_chain(node, phase)
            self._failed.discard(node)
            self._lacks_initial.discard(node)  # it rebuilt the model: it holds the initial one
            params_text = phase.sent[node]
            if params_text is not None:
                self._params_known[node] = params_text
        msg.content = RecordDict(content)
        return msg

    def _unanswered(self, phase: _Phase, answered: set[int]) -> None:
        """Nodes whose message went out but whose reply never came (Flower's timeout).

        Such a node holds either the version it confirmed or the one its message
        carried (it may have applied the package, trained, and lost only the reply):
        its holding is unknown, so its next package is a keyframe, which it applies
        whatever it holds (a delta from either version would fail on the other).  Its
        parameters travel again too (it may have kept the lost message's).  A message
        that changed nothing leaves the holding certain."""
        for node in phase.sent:
            if node in answered:
                continue
            self._params_known.pop(node, None)
            if phase.chains.get(node) is not None:  # the message carried a model change
                self._failed.add(node)

    def _forget(self, node: int) -> None:
        """Forget what ``node`` holds: its next message carries the layout and parameters."""
        self._held.pop(node, None)
        self._params_known.pop(node, None)
        self._holds_delta.discard(node)
        self._compact_nodes.discard(node)

    def _note_chain(self, node: int, phase: _Phase) -> None:
        """The node applied its package: it holds its version's delta after a chain."""
        chain = phase.chains.get(node)
        if chain is True:
            self._holds_delta.add(node)
        elif chain is False:
            self._holds_delta.discard(node)

    def _left_out(self, node: int, held: tuple[int, str]) -> None:
        """An update left out: its reply (no error) still confirms that the node rebuilt
        the model of its message, so the next package starts from that version (a
        delta, not a failed rebuild); the layout and parameters travel again."""
        self._held[node] = held
        self._params_known.pop(node, None)
        self._relayout.add(node)
        self._failed.discard(node)

    def _decode_update(
        self,
        content: dict[str, ArrayRecord | ConfigRecord | MetricRecord],
        phase: _Phase,
        held: tuple[int, str],
        node: int,
    ) -> tuple[
        dict[str, ArrayRecord | ConfigRecord | MetricRecord],
        int,
        tuple[float, ...],
        dict[str, np.ndarray],
    ]:
        """Replace a coded update by ``global + decoded`` (plain float32 arrays), after
        the engine's checks (version, digest, shapes, steps, values)."""
        found = coded_update(content, KEY_UPDATE_ARRAY)
        if found is None:
            return content, 0, (), {}
        key, data, uncoded = found
        # A node that codes compact replies reads compact containers (KEY_COMPACT): its
        # downlink goes compact from its next non-first-contact message on.
        if codec.is_compact(data):
            self._compact_nodes.add(node)
        else:
            self._compact_nodes.discard(node)
        # The app's MetricRecord, folded into an inline update, back in place.
        content = restore_metrics(content, key)
        base = phase.base
        spec = base.model.spec
        num_examples = _num_examples(content)
        if self._engine is not None:
            stats, changes = self._engine.decode_update(
                data,
                client_id=str(node),
                base_version=held[0],
                num_examples=num_examples,
                base_digest=held[1],
            )
            steps = stats.steps
            if self._engine.references is not None:
                phase.references[node] = changes
        else:
            infos = inspect_update(data, spec, client_id=str(node))
            steps = check_tensors(infos, spec, client_id=str(node), max_step=DEFAULT_MAX_STEP)
            decoded = codec.decode(
                data, names=list(spec.names), threads=self.threads, expected_shapes=spec.shapes
            )
            changes = {name: decoded[name] for name in spec.names}
        full = {
            name: np.add(base.model.tensors[name], changes[name], dtype=np.float32)
            for name in spec.names
        }
        order = [k for k in phase.keys if k in spec.names or k in uncoded] or list(spec.names)
        plain = merge_records(order, plain_record(spec, full), uncoded)
        content = {k: (plain if k == key else v) for k, v in content.items()}
        return content, wire_size(content), tuple(steps), changes

    def _engine_aggregate(self, phase: _Phase) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The round engine's decode-and-accumulate FedAvg (the gRPC server's arithmetic,
        bit for bit), in client-id order; integer buffers from the first reply."""
        engine = self._engine
        assert engine is not None
        if not phase.containers:
            return None, None
        aggregator = engine.aggregator()
        order = sorted(phase.containers, key=str)
        for node in order:
            data, n, version, digest, _ = phase.containers[node]
            try:
                aggregator.accept(
                    data,
                    client_id=str(node),
                    base_version=version,
                    num_examples=n,
                    base_digest=digest,
                )
            except (FedCodecError, ValueError) as exc:
                _log.warning("fedcodec: update of node %d left out: %s", node, exc)
                self._drop(phase, node)
        model = aggregator.finalize(phase.base.model.version + 1)
        spec = model.spec
        _, uncoded = split_record(phase.containers[order[0]][4], spec.names)
        arrays = merge_records(phase.keys, plain_record(spec, model.tensors), uncoded)
        total = sum(phase.containers[node][1] for node in order)
        return arrays, MetricRecord({_NUM_EXAMPLES: total})

    def _optimizer_step(self, phase: _Phase, arrays: ArrayRecord) -> ArrayRecord:
        """``x_v + step(aggregate − x_v)`` on the exact global model of the round."""
        assert self.server_optimizer is not None
        base = phase.base.model
        model_part, uncoded = split_record(arrays, base.spec.names)
        aggregate = record_tensors(model_part, base.spec, "aggregated model")
        new = self.server_optimizer.step(base.spec, base.tensors, aggregate)
        return merge_records(list(arrays.keys()), plain_record(base.spec, new), uncoded)

    def _apply_robust(self, kept: list[Message], phase: _Phase, server_round: int) -> list[Message]:
        """Leave out, clip and re-weight the decoded replies as :attr:`robust` says."""
        policy = self.robust
        screened: list[tuple[Message, int, dict[str, np.ndarray], int]] = []
        out: list[Message] = []
        summaries = []
        for msg in kept:
            entry = phase.changes.pop(id(msg), None)
            if entry is None:
                out.append(msg)  # an error reply or one not from the mod
                continue
            node, change = entry
            content = dict(msg.content.items())
            n = _num_examples(content)
            try:
                norm = screen_update(change, policy, client_id=str(node), num_examples=n)
            except RobustRejectionError as exc:
                _log.warning(
                    "fedcodec: round %d: update of node %d left out: %s", server_round, node, exc
                )
                self._drop(phase, node)
                continue
            screened.append((msg, node, change, n))
            summaries.append(UpdateSummary(str(node), n, norm))
        plan = plan_round(summaries, policy)
        base = phase.base.model
        for msg, node, change, _ in screened:
            client = str(node)
            if client in plan.rejected:
                _log.warning(
                    "fedcodec: round %d: update of node %d left out: %s",
                    server_round,
                    node,
                    plan.rejected[client],
                )
                self._drop(phase, node)
                continue
            scale = plan.scales[client]
            content = dict(msg.content.items())
            if scale < 1.0:
                _log.warning(
                    "fedcodec: round %d: update of node %d clipped to the norm bound %.4g "
                    "(scale %.3g)",
                    server_round,
                    node,
                    plan.bound,
                    scale,
                )
                content = self._scaled(content, base, change, scale)
            if plan.capped:
                # The inner strategy weights by num-examples: give it the capped shares.
                content = _with_num_examples(content, max(1, round(plan.shares[client] * 2**40)))
            msg.content = RecordDict(content)
            out.append(msg)
        for capped in plan.capped:
            _log.warning(
                "fedcodec: round %d: weight of node %s capped to a share of %.3g",
                server_round,
                capped,
                plan.shares[capped],
            )
        return out

    def _drop(self, phase: _Phase, node: int) -> None:
        phase.traffic.rejected += 1
        phase.traffic.updates -= 1
        phase.updates = [u for u in phase.updates if u.client_id != str(node)]
        self._left_out(node, (phase.base.model.version, phase.base.digest_sent))

    def _scaled(
        self,
        content: dict[str, ArrayRecord | ConfigRecord | MetricRecord],
        base: ModelVersion,
        change: dict[str, np.ndarray],
        scale: float,
    ) -> dict[str, ArrayRecord | ConfigRecord | MetricRecord]:
        spec = base.spec
        out: dict[str, ArrayRecord | ConfigRecord | MetricRecord] = {}
        for key, value in content.items():
            if isinstance(value, ArrayRecord):
                _, uncoded = split_record(value, spec.names)
                full = {
                    name: np.add(
                        base.tensors[name], change[name] * np.float32(scale), dtype=np.float32
                    )
                    for name in spec.names
                }
                value = merge_records(list(value.keys()), plain_record(spec, full), uncoded)
            out[key] = value
        return out

    # -- bookkeeping ----------------------------------------------------------

    def _record(self, server_round: int, traffic: Traffic) -> None:
        self.history.setdefault(server_round, Traffic()).add(traffic)

    def _with_metrics(
        self,
        metrics: MetricRecord | None,
        traffic: Traffic,
        params: RoundParams | None,
        *,
        up: bool,
    ) -> MetricRecord:
        out = MetricRecord() if metrics is None else metrics
        # A ratio is reported only when something coded was sent: a node that
        # is up to date receives no model bytes at all.
        if up:
            out[METRIC_BYTES_UP] = traffic.bytes_up
            out[METRIC_RAW_BYTES_UP] = traffic.raw_bytes_up
            if traffic.bytes_up:
                out[METRIC_RATIO_UP] = traffic.ratio_up
            out[METRIC_REJECTED] = traffic.rejected
        out[METRIC_BYTES_DOWN] = traffic.bytes_down
        out[METRIC_RAW_BYTES_DOWN] = traffic.raw_bytes_down
        if traffic.bytes_down:
            out[METRIC_RATIO_DOWN] = traffic.ratio_down
        out[METRIC_KEYFRAMES] = traffic.keyframes
        if params is not None:
            out[METRIC_LAMBDA] = float(params.lam)
            out[METRIC_S] = int(params.S)
            if params.budget_bytes is not None:
                out[METRIC_BUDGET_BYTES] = int(params.budget_bytes)
        return out

    def _round_stats(
        self, server_round: int, phase: _Phase, arrays: ArrayRecord | None
    ) -> RoundStats:
        base = phase.base.model
        rms = 0.0
        if arrays is not None:
            try:
                model_part, _ = split_record(arrays, base.spec.names)
                new = record_tensors(model_part, base.spec, "aggregated model")
            except PipelineError:
                new = None
            if new is not None:
                sq = sum(
                    float(np.sum(np.square(new[n].astype(np.float64) - base.tensors[n])))
                    for n in base.spec.names
                )
                rms = math.sqrt(sq / max(base.spec.numel, 1))
        return RoundStats(
            round_number=server_round - 1,
            base_version=base.version,
            new_version=base.version + 1,
            updates=tuple(phase.updates),
            rejected=phase.traffic.rejected,
            bytes_up=phase.traffic.bytes_up,
            bytes_down=phase.traffic.bytes_down,
            update_rms=rms,
        )


def data_of(content: dict[str, ArrayRecord | ConfigRecord | MetricRecord]) -> bytes:
    """The coded update's container in a reply's content."""
    found = coded_update(content, KEY_UPDATE_ARRAY)
    if found is None:
        raise ModelMismatchError("the reply holds no coded update")
    return found[1]


def _describe(schedule: Schedule) -> str:
    if isinstance(schedule, ConstantSchedule):
        return json.dumps(schedule.params.to_json(), ensure_ascii=False)
    return repr(schedule)


def _adaptive(strategy: Strategy) -> bool:
    """Whether ``strategy`` is one of Flower's per-weight adaptive optimizers (FedOpt)."""
    try:
        from flwr.serverapp.strategy.fedopt import FedOpt
    except ImportError:  # pragma: no cover - every supported flwr has it
        return False
    return isinstance(strategy, FedOpt)


def _is_chain(package: DownlinkPackage) -> bool | None:
    """Whether the receiver holds its new version's delta after ``package`` (None: unchanged)."""
    if package.keyframe is None and not package.deltas:
        return None
    return (
        package.keyframe is None
        and package.from_version is not None
        and len(package.deltas) == package.version - package.from_version
    )


def _kind(package: DownlinkPackage) -> str:
    if package.keyframe is not None:
        return DOWNLINK_KEYFRAME
    return DOWNLINK_DELTA if package.deltas else DOWNLINK_NONE


def _with_num_examples(
    content: dict[str, ArrayRecord | ConfigRecord | MetricRecord], n: int
) -> dict[str, ArrayRecord | ConfigRecord | MetricRecord]:
    out: dict[str, ArrayRecord | ConfigRecord | MetricRecord] = {}
    for key, value in content.items():
        if isinstance(value, MetricRecord) and _NUM_EXAMPLES in value:
            value = MetricRecord({**dict(value.items()), _NUM_EXAMPLES: n})
        out[key] = value
    return out


def _num_examples(content: dict[str, ArrayRecord | ConfigRecord | MetricRecord]) -> int:
    for value in content.values():
        if isinstance(value, MetricRecord):
            n = value.get(_NUM_EXAMPLES)
            if isinstance(n, int | float) and not isinstance(n, bool) and n >= 1:
                return int(n)
    return 1
