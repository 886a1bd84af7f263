"""The round engine: the one implementation of a federated round, transport-neutral.

Every front end — the gRPC server (:mod:`fedcodec.server`), the edge SDK
(:mod:`fedcodec.client`), the Flower strategy and mod (:mod:`fedcodec.flower`),
the demo and the benchmarks — drives these two classes and adds only
transport, client selection, deadlines and persistence:

* :class:`RoundEngine` (server): the exact global model, the downlink stream
  (:class:`~fedcodec.pipeline.downlink.DownlinkEncoder`, with its server-side
  error feedback), the coding schedules, and

  - :meth:`RoundEngine.package_for` — *the* rule of what a client downloads:
    nothing (up to date), the chain of deltas, one cumulative delta, or a
    keyframe, whichever is smallest for the version it holds; in a
    shared-initial stream (the default) a client never served before holds
    the initial model, so its first download is a delta, never the model;
  - :meth:`RoundEngine.validate_update` — every check an upload must pass
    (base version and digest, sender, example count, duplicate, tensor count
    and shapes, step limits, the full container decoded once) *without* a
    model-sized accumulator: memory is one int32 buffer of the largest
    tensor, whatever the model;
  - :meth:`RoundEngine.aggregator` / :meth:`RoundEngine.aggregate` —
    decode-and-accumulate (FedAvg by example count, and whatever robust
    rules the :class:`~fedcodec.pipeline.server.Aggregator` is configured
    with);
  - :meth:`RoundEngine.publish` — the next global version onto the downlink.

* :class:`ClientEngine` (client): the model it holds
  (:class:`~fedcodec.pipeline.downlink.ModelReceiver`, digest-checked) and
  its uplink encoder with error feedback
  (:class:`~fedcodec.pipeline.client.UpdateEncoder`).

The shared initial model.  Version 0 is built by every participant from the
same seed (or read from a file shipped with the app) and never travels.  The
engine names it by an id and its digest (:class:`InitialRef`); transports
carry both, a client checks it holds that model, and a client that lacks it
gets :class:`~fedcodec.pipeline.errors.InitialModelError` — or, when the
operator allows it (``send_initial=True``), the initial model once.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from fedcodec import codec
from fedcodec.errors import InvalidParameterError
from fedcodec.pipeline.checks import check_base, check_sender, check_tensors, inspect_update
from fedcodec.pipeline.client import EncodedUpdate, UpdateEncoder
from fedcodec.pipeline.downlink import (
    DEFAULT_CUMULATIVE_CACHE_BYTES,
    DEFAULT_KEYFRAME_BITS,
    DownlinkEncoder,
    DownlinkPackage,
    ModelReceiver,
    Release,
    compact_package,
)
from fedcodec.pipeline.errors import (
    DuplicateUpdateError,
    InitialModelError,
    ModelMismatchError,
    UpdateRejectedError,
)
from fedcodec.pipeline.model import ModelSpec, ModelVersion, Tensors
from fedcodec.pipeline.optimizer import ServerOptimizer
from fedcodec.pipeline.params import RoundParams, Schedule, as_schedule
from fedcodec.pipeline.ratecontrol import StepSnapPolicy
from fedcodec.pipeline.robust import RobustPolicy, RobustRejectionError, screen_update
from fedcodec.pipeline.server import (
    DEFAULT_MAX_STEP,
    Aggregator,
    ClientReferences,
    temporal_reference_for,
)
from fedcodec.pipeline.stats import ClientRoundStats, RoundStats

__all__ = [
    "ClientEngine",
    "InitialRef",
    "RoundEngine",
    "RoundInfo",
    "RoundOutcome",
    "Submission",
]

_OPTIMIZER = "optimizer/"  # prefix of the server optimizer's arrays in state()

ScheduleLike = RoundParams | Schedule | Callable[[int, RoundStats | None], RoundParams]


@dataclass(frozen=True)
class InitialRef:
    """How participants name the shared initial model.

    Attributes
    ----------
    model_id : str
        What the deployment calls it (e.g. ``"mnist-mlp/seed=0"`` or a file
        name); informative, the digest decides.
    version : int
        Its version (0).
    digest : str
        :func:`~fedcodec.pipeline.model.model_digest` of its weights.
    """

    model_id: str
    version: int
    digest: str

    @classmethod
    def of(cls, model: ModelVersion, model_id: str = "") -> InitialRef:
        """The reference of ``model``."""
        return cls(model_id, model.version, model.digest)


@dataclass(frozen=True)
class RoundInfo:
    """The round a client was selected for: what a transport's server says and its client
    (and the client's training callback) is told.

    Attributes
    ----------
    round_id : int
        The round (from 1).
    base_version : int
        The global version the client trains from (the update is computed against it).
    base_digest : str
        Its digest, as the downlink delivers it.
    params : RoundParams
        How the update is coded (λ, S or step, byte budget), resolved for this client.
    deadline : float
        Unix time after which the round may be closed.
    spec : ModelSpec
        The model's tensors.
    max_update_bytes : int
        The server's size limit for an update.
    max_chunk_bytes : int
        The largest upload chunk the server takes.
    initial : InitialRef or None
        The shared initial model every package is relative to (None: a keyframe stream).
    temporal_reference : bool
        The server keeps this client's previous decoded update: the update is coded with
        it as temporal reference (fewer bytes on dense updates).
    compact_updates : bool
        The server reads compact update containers (codec FORMAT.md §2-3).
    """

    round_id: int
    base_version: int
    base_digest: str
    params: RoundParams
    deadline: float
    spec: ModelSpec
    max_update_bytes: int
    max_chunk_bytes: int
    initial: InitialRef | None = None
    temporal_reference: bool = False
    compact_updates: bool = False


@dataclass(frozen=True)
class Submission:
    """An update as a transport received it.

    Attributes
    ----------
    data : bytes
        The codec container.
    client_id : str
        Sender.
    base_version : int
        Version the delta was computed against.
    num_examples : int
        FedAvg weight.
    base_digest : str or None
        Digest of the base model the client held (None: not checked).
    """

    data: bytes
    client_id: str
    base_version: int
    num_examples: int
    base_digest: str | None = None

    @classmethod
    def of(cls, update: EncodedUpdate) -> Submission:
        """The submission of an :class:`~fedcodec.pipeline.client.EncodedUpdate`."""
        return cls(
            update.data,
            update.client_id,
            update.base_version,
            update.num_examples,
            update.base_digest,
        )


@dataclass(frozen=True)
class RoundOutcome:
    """A published round.

    Attributes
    ----------
    model : ModelVersion
        The new exact global model.
    release : Release
        Its downlink release (``release.digest``: what clients rebuild).
    stats : RoundStats
        Accepted updates, bytes, RMS of the change.
    """

    model: ModelVersion
    release: Release
    stats: RoundStats


class RoundEngine:
    """The server side of the round engine (see the module docs).

    Parameters
    ----------
    initial : ModelVersion
        Version 0 (or, with ``downlink_state``, the latest exact global
        model).
    initial_id : str, optional
        The deployment's name of the initial model (carried next to its
        digest).
    shared_initial : bool, optional
        Every participant holds ``initial`` bit for bit (built from a shared
        seed or shipped with the app): it never travels and a client's first
        download is a delta.  False: a keyframe stream (the first download is
        a near-lossless keyframe).
    send_initial : bool, optional
        Attach the initial model (4 bytes per weight) once for a client that
        asks because it lacks it; default False: such a client gets
        :class:`~fedcodec.pipeline.errors.InitialModelError`.
    schedule : RoundParams, Schedule or callable, optional
        Uplink coding per round index (``schedule(base_version, last_stats)``).
    downlink : RoundParams, Schedule or callable, optional
        Downlink coding per round index (default: the uplink schedule,
        ``per_client`` dropped).
    keep, keyframe_bits, step_snap, cumulative, cache_bytes
        The downlink stream's settings (:class:`DownlinkEncoder`); ``keep`` = 32
        kept versions make catch-ups from up to 32 versions back cumulative deltas
        (docs/catchup.md: 84x instead of 79x total traffic on the toy task).
    server_lr : float, optional
        Server learning rate on the mean update.
    server_optimizer : ServerOptimizer, optional
        Applied to each round's aggregate (:meth:`publish` of an Aggregator):
        ``x_{v+1} = x_v + step(mean − x_v)`` (FedAvgM, FedAdam, FedYogi,
        FedAdagrad; see :mod:`fedcodec.pipeline.optimizer`).  The downlink then
        codes the change the optimizer applied, with server-side error feedback.
        Its moments are part of :meth:`state` and :meth:`checkpoint`.
    threads : int, optional
        Codec threads.
    max_step : float, optional
        Largest quantization step accepted in an update.
    policy : RobustPolicy, optional
        Robust-aggregation rules (example-count cap, value and norm bounds,
        trimmed mean...): checked per update by :meth:`validate_update` and
        applied by every round's :class:`~fedcodec.pipeline.server.Aggregator`.
    aggregator_options : mapping, optional
        Further keyword arguments of every round's Aggregator.
    downlink_state : tuple of (arrays, meta), optional
        Resume a saved stream (:meth:`state`); ``initial`` is then the
        latest exact global model and nothing is published.
    client_references : int, optional
        Keep the last decoded update of at most this many clients as their
        temporal reference (:class:`~fedcodec.pipeline.server.ClientReferences`,
        least recently stored forgotten first; 0, the default: none).  Memory:
        ``4 × weights`` bytes per client kept (:attr:`references`).  Clients
        with ``ClientEngine(temporal_reference=True)`` (or
        :meth:`ClientEngine.sync_reference`) then code their updates against
        their previous one; :meth:`reference_token` names the reference held.
        A ``"references"`` store in ``aggregator_options`` is used as it is.
    downlink_reference : bool, optional
        Code each version delta also against the previous version's delta
        (:class:`DownlinkEncoder` ``temporal_reference``: the same levels, the
        smaller coding) for clients that hold it: after the first delta of a
        chain, and for the first when :meth:`package_for` is told
        ``holds_delta``.  Default False (measured −1.8 … −4.2 % on MNIST MLP
        version deltas, docs/codec.md); every client must run a receiver that
        decodes such deltas (this version's :class:`ModelReceiver`).
    """

    def __init__(
        self,
        initial: ModelVersion,
        *,
        initial_id: str = "",
        shared_initial: bool = True,
        send_initial: bool = False,
        schedule: ScheduleLike | None = None,
        downlink: ScheduleLike | None = None,
        keep: int = 32,
        keyframe_bits: int = DEFAULT_KEYFRAME_BITS,
        step_snap: StepSnapPolicy = "grid",
        cumulative: bool | None = None,
        cache_bytes: int = DEFAULT_CUMULATIVE_CACHE_BYTES,
        server_lr: float = 1.0,
        server_optimizer: ServerOptimizer | None = None,
        threads: int = 0,
        max_step: float = DEFAULT_MAX_STEP,
        policy: RobustPolicy | None = None,
        aggregator_options: Mapping[str, Any] | None = None,
        downlink_state: tuple[Mapping[str, Any], Mapping[str, Any]] | None = None,
        client_references: int = 0,
        downlink_reference: bool = False,
    ) -> None:
        self.spec: ModelSpec = initial.spec
        self.initial_id = initial_id
        self.send_initial = send_initial
        self.schedule: Schedule = as_schedule(schedule if schedule is not None else RoundParams())
        self.downlink_schedule: Schedule = (
            as_schedule(downlink) if downlink is not None else self.schedule
        )
        self._downlink_from_uplink = downlink is None
        self.server_lr = server_lr
        self.server_optimizer = server_optimizer
        self.threads = threads
        self.max_step = max_step
        self.policy = RobustPolicy() if policy is None else policy
        self.aggregator_options = dict(aggregator_options or {})
        if client_references < 0:
            raise ValueError(f"client_references must be >= 0, got {client_references}")
        given = self.aggregator_options.get("references")
        if given is None and client_references > 0:
            given = ClientReferences(max_clients=client_references)
            self.aggregator_options["references"] = given
        #: The per-client temporal references kept (None: none are kept).
        self.references: ClientReferences | None = given
        self.last_stats: RoundStats | None = None
        if self._downlink_params(0).quantizer == "dither":
            raise ValueError('quantizer: the downlink cannot use "dither" (use uniform or trellis)')
        self.downlink = DownlinkEncoder(
            self.spec,
            params=self._downlink_params(0),
            keep=keep,
            keyframe_bits=keyframe_bits,
            threads=threads,
            cumulative=cumulative,
            cache_bytes=cache_bytes,
            step_snap=step_snap,
            temporal_reference=downlink_reference,
        )
        self._global = initial
        self._digests: tuple[str, frozenset[str]] = ("", frozenset())
        if downlink_state is not None:
            arrays, meta = downlink_state
            self.downlink.load_state(
                {k: v for k, v in arrays.items() if not k.startswith(_OPTIMIZER)},
                {k: v for k, v in meta.items() if k != "optimizer"},
            )
            saved = meta.get("optimizer")
            if server_optimizer is not None and saved is not None:
                server_optimizer.load_state(
                    {
                        k[len(_OPTIMIZER) :]: v
                        for k, v in arrays.items()
                        if k.startswith(_OPTIMIZER)
                    },
                    saved,
                )
            if self.downlink.latest_version != initial.version:
                raise ValueError(
                    f"the saved downlink is at version {self.downlink.latest_version}, "
                    f"the model is version {initial.version}"
                )
        else:
            self.downlink.publish(initial, known_to_all=shared_initial)
        self._refresh_digests()

    def _refresh_digests(self) -> None:
        # One attribute, swapped whole: readers in other threads see old or new, never half.
        digest = self.downlink.digest_of(self._global.version)
        assert digest is not None
        self._digests = (digest, frozenset({self._global.digest, digest}))

    @classmethod
    def resume(
        cls,
        model: ModelVersion,
        downlink_state: tuple[Mapping[str, Any], Mapping[str, Any]],
        **options: Any,
    ) -> RoundEngine:
        """An engine that continues a saved federation (``model``: its latest exact global)."""
        return cls(model, downlink_state=downlink_state, **options)

    # -- state ---------------------------------------------------------------

    @property
    def global_model(self) -> ModelVersion:
        """The latest exact global model."""
        return self._global

    @property
    def version(self) -> int:
        """The latest global version."""
        return self._global.version

    @property
    def stream_digest(self) -> str:
        """Digest of the latest version as clients rebuild it from the downlink."""
        return self._digests[0]

    @property
    def base_digests(self) -> frozenset[str]:
        """Digests an update's base may carry: the exact model's and the stream's."""
        return self._digests[1]

    @property
    def initial(self) -> InitialRef | None:
        """The shared initial model's reference (None in a keyframe stream)."""
        origin = self.downlink.initial
        return None if origin is None else InitialRef.of(origin, self.initial_id)

    def stream_model(self) -> ModelVersion:
        """The latest version as clients rebuild it."""
        return self.downlink.stream_model()

    def state(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The downlink stream's state and the server optimizer's moments (with the global
        model, all that a restart needs)."""
        arrays, meta = self.downlink.state()
        if self.server_optimizer is not None:
            opt_arrays, opt_meta = self.server_optimizer.state()
            arrays = {**arrays, **{_OPTIMIZER + k: v for k, v in opt_arrays.items()}}
            meta = {**meta, "optimizer": opt_meta}
        return arrays, meta

    def checkpoint(self) -> tuple[Any, ...]:
        """Everything :meth:`publish` changes, for :meth:`restore` (e.g. when persisting
        the published round fails): the downlink, the global model, the statistics, the
        server optimizer's moments and the per-client temporal references (a published
        round stores its decoded updates as the next references)."""
        optimizer = None if self.server_optimizer is None else self.server_optimizer.state()
        references = None if self.references is None else self.references.snapshot()
        return (self.downlink.state(), self._global, self.last_stats, optimizer, references)

    def restore(self, checkpoint: tuple[Any, ...]) -> None:
        """Go back to a :meth:`checkpoint`.  The references go back too: the round's
        updates, coded against the references held before it, decode again when the
        round is aggregated once more."""
        downlink_state, model, last, optimizer, references = checkpoint
        self.downlink.load_state(*downlink_state)
        if optimizer is not None and self.server_optimizer is not None:
            self.server_optimizer.load_state(*optimizer)
        if references is not None and self.references is not None:
            self.references.rollback(references)
        self._global, self.last_stats = model, last
        self._refresh_digests()

    # -- parameters ------------------------------------------------------------

    def round_params(self, round_index: int | None = None) -> RoundParams:
        """The uplink parameters of a round (default: the next one), ``per_client`` kept."""
        index = self._global.version if round_index is None else round_index
        return self.schedule(index, self.last_stats)

    def _downlink_params(self, round_index: int) -> RoundParams:
        params = self.downlink_schedule(round_index, self.last_stats)
        if params.per_client:
            params = params.replace(per_client={})
        if params.quantizer == "dither" and self._downlink_from_uplink:
            # A dithered reconstruction is off the stream's grid: the downlink rounds.
            params = params.replace(quantizer="uniform", dither_salt=0)
        return params

    # -- downlink ------------------------------------------------------------

    def package_for(
        self,
        client_id: str,
        *,
        have_version: int | None = None,
        have_digest: str | None = None,
        initial_digest: str | None = None,
        force_keyframe: bool = False,
        want_initial: bool = False,
        holds_delta: bool = False,
        delta_references: bool = True,
        compact: bool = False,
    ) -> DownlinkPackage:
        """What ``client_id`` downloads to reach the latest version — the one rule.

        Parameters
        ----------
        client_id : str
            The client.
        have_version, have_digest : optional
            The version the client holds and the digest it computed (None: it
            holds no stream version — in a shared-initial stream it then
            holds the initial model).
        initial_digest : str, optional
            The digest of the initial model the client holds (shared-initial
            stream); None: it holds none.
        force_keyframe : bool, optional
            The client failed to apply a package: send the keyframe.
        want_initial : bool, optional
            The client lacks the initial model and asks for it.
        holds_delta : bool, optional
            The client holds the decoded delta of ``have_version``
            (:attr:`ModelReceiver.holds_delta`); with ``downlink_reference`` the
            next delta may then be coded against it.
        delta_references : bool, optional
            The client decodes deltas coded against the previous version's delta
            (default); False for a receiver from before downlink references: its
            deltas then go without reference.
        compact : bool, optional
            The client reads compact containers (codec FORMAT.md §2-3): the
            package's containers are rewritten compact (:func:`fedcodec.codec.convert`:
            the same coded tensors, fewer header bytes).  Default False.

        Returns
        -------
        DownlinkPackage
            Nothing when up to date; else the smallest of the chain of
            deltas, a cumulative delta and the keyframe.

        Raises
        ------
        InitialModelError
            Shared-initial stream: the client holds no initial model, or
            another one (field ``initial_digest``), and the initial model may
            not be sent (``send_initial=False``) or was not asked for.
        """
        ref = self.initial
        if ref is not None and initial_digest != ref.digest:
            if want_initial and self.send_initial:
                return self.downlink.package_for(client_id, send_initial=True)
            held = "none" if initial_digest is None else f"{initial_digest[:16]}…"
            how = (
                "ask for it (want_initial)"
                if self.send_initial
                else "build it as the deployment does (the server does not send it)"
            )
            raise InitialModelError(
                f"initial_digest: this federation starts from the shared initial model "
                f"{ref.model_id or '(unnamed)'!r} {ref.digest[:16]}…; client {client_id!r} "
                f"holds {held}: {how}"
            )
        if ref is None and have_version is None:
            force_keyframe = True
        package = self.downlink.package_for(
            client_id,
            have_version=ref.version if ref is not None and have_version is None else have_version,
            have_digest=None if have_version is None else have_digest,
            keyframe=force_keyframe,
            holds_delta=holds_delta and have_version is not None,
            delta_references=delta_references,
        )
        return compact_package(package) if compact else package

    # -- uplink ----------------------------------------------------------------

    def validate_update(
        self,
        data: bytes,
        *,
        client_id: str,
        base_version: int,
        num_examples: int,
        base_digest: str | None = None,
        accepted: Collection[str] = (),
    ) -> ClientRoundStats:
        """Every check an update of the open round must pass, without accumulating it.

        The container is decoded once, tensor by tensor, into one int32
        buffer the size of the largest tensor (no model-sized accumulator).

        Parameters
        ----------
        data : bytes
            The codec container.
        client_id : str
            Sender.
        base_version : int
            The version it names (must be the latest).
        num_examples : int
            FedAvg weight, >= 1.
        base_digest : str, optional
            Digest of the base the client held.
        accepted : collection of str, optional
            Clients already accepted in this round (duplicates are refused).

        Returns
        -------
        ClientRoundStats

        Raises
        ------
        UpdateRejectedError, ModelMismatchError, CorruptStreamError
            As :meth:`Aggregator.accept`; nothing is changed.
        """
        start = time.perf_counter()
        version, digests = self._global.version, self._digests[1]
        check_sender(client_id, num_examples, data)
        if client_id in accepted:
            raise DuplicateUpdateError(
                f"client {client_id!r} already submitted in round {version + 1}",
                same_payload=False,
            )
        check_base(
            client_id=client_id,
            round_number=version + 1,
            base_version=base_version,
            expected_version=version,
            base_digest=base_digest,
            base_digests=digests,
            was_issued=lambda v: 0 <= v < version,
        )
        # The robust per-update rules, on one decoded tensor at a time: values
        # (example count, finite, bounded) per tensor, the norm over all of them.
        policy = self.policy
        values_only = dataclasses.replace(policy, norm_bound=0.0)
        sq = [0.0]

        def screen(_: int, values: npt.NDArray[np.float32]) -> None:
            norm = screen_update(
                [values], values_only, client_id=client_id, num_examples=num_examples
            )
            sq[0] += norm * norm

        screen_update([], values_only, client_id=client_id, num_examples=num_examples)
        infos = inspect_update(data, self.spec, client_id=client_id)
        steps = check_tensors(infos, self.spec, client_id=client_id, max_step=self.max_step)
        ref = temporal_reference_for(data, client_id, self.references, self.spec.shapes)
        try:
            codec.verify(
                data,
                visit=screen,
                threads=self.threads,
                expected_shapes=self.spec.shapes,
                reference=ref,
            )
        except InvalidParameterError as exc:
            if ref is None:
                raise
            raise UpdateRejectedError(
                f"the update of {client_id!r} was coded with another temporal reference than "
                f"the server's (the client's last accepted update): drop the reference and "
                f"resend ({exc})"
            ) from exc
        norm = math.sqrt(sq[0])
        if policy.norm_bound > 0.0 and norm > policy.norm_bound and policy.norm_action == "reject":
            raise RobustRejectionError(
                f"update of {client_id!r} has L2 norm {norm:.4g}, above the bound "
                f"{policy.norm_bound:.4g}",
                action="refused_norm",
            )
        return ClientRoundStats(
            client_id=client_id,
            bytes=len(data),
            num_examples=num_examples,
            steps=steps,
            decode_seconds=time.perf_counter() - start,
        )

    def decode_update(
        self,
        data: bytes,
        *,
        client_id: str,
        base_version: int,
        num_examples: int,
        base_digest: str | None = None,
        accepted: Collection[str] = (),
    ) -> tuple[ClientRoundStats, Tensors]:
        """:meth:`validate_update`, then the decoded change (float32 by tensor name),
        decoded with the client's temporal reference when it was coded with one.

        For transports that hand decoded updates to an aggregation of their own
        (the Flower strategy's inner strategy).  The reference store is not
        changed: :meth:`remember_reference` once the round is done with it.
        """
        stats = self.validate_update(
            data,
            client_id=client_id,
            base_version=base_version,
            num_examples=num_examples,
            base_digest=base_digest,
            accepted=accepted,
        )
        ref = temporal_reference_for(data, client_id, self.references, self.spec.shapes)
        decoded = codec.decode(
            data,
            names=list(self.spec.names),
            threads=self.threads,
            expected_shapes=self.spec.shapes,
            reference=ref,
        )
        return stats, {name: decoded[name] for name in self.spec.names}

    def reference_token(self, client_id: str) -> str | None:
        """The token of the temporal reference kept for ``client_id`` (None: none,
        or references are off): what a transport tells the client before it codes
        (:meth:`ClientEngine.sync_reference`)."""
        return None if self.references is None else self.references.token(client_id)

    def remember_reference(self, client_id: str, decoded: Mapping[str, npt.ArrayLike]) -> None:
        """Keep ``decoded`` (an update of ``client_id`` as decoded from its container:
        what the client holds as its reconstruction) as the client's next temporal
        reference; a no-op when references are off.  The round engine's
        :class:`~fedcodec.pipeline.server.Aggregator` does this itself for the
        updates it accepts."""
        if self.references is not None:
            self.references.put(client_id, [decoded[name] for name in self.spec.names])

    def forget_reference(self, client_id: str) -> None:
        """Forget the temporal reference of ``client_id`` (its next update goes without)."""
        if self.references is not None:
            self.references.discard(client_id)

    def aggregator(self, *, keep_payloads: bool = True) -> Aggregator:
        """A fresh decode-and-accumulate aggregator of the open round.

        ``keep_payloads=False``: a policy with round-level rules then needs the
        updates again in :meth:`publish` (``payloads``), memory stays O(model).
        """
        return Aggregator(
            self._global,
            round_number=self.version + 1,
            base_digests=self.base_digests,
            server_lr=self.server_lr,
            threads=self.threads,
            max_step=self.max_step,
            policy=self.policy,
            keep_payloads=keep_payloads,
            **self.aggregator_options,
        )

    def aggregate(
        self,
        submissions: Iterable[Submission],
        *,
        on_reject: Callable[[Submission, Exception], None] | None = None,
        keep_payloads: bool = True,
    ) -> Aggregator:
        """Accumulate submissions in the order given (refused ones are reported or raised)."""
        aggregator = self.aggregator(keep_payloads=keep_payloads)
        for sub in submissions:
            try:
                aggregator.accept(
                    sub.data,
                    client_id=sub.client_id,
                    base_version=sub.base_version,
                    num_examples=sub.num_examples,
                    base_digest=sub.base_digest,
                )
            except Exception as exc:
                if on_reject is None:
                    raise
                on_reject(sub, exc)
        return aggregator

    # -- publishing ------------------------------------------------------------

    def publish(
        self,
        result: Aggregator | ModelVersion,
        *,
        round_index: int | None = None,
        bytes_down: int = 0,
        payloads: Iterable[tuple[str, bytes]] | None = None,
    ) -> RoundOutcome:
        """Finalize a round (or take a model aggregated elsewhere) and publish it.

        Parameters
        ----------
        result : Aggregator or ModelVersion
            The round's aggregator (its mean goes through ``server_optimizer``
            when there is one), or the next global model as it is (e.g. from a
            Flower strategy); its version must be ``version + 1``.
        round_index : int, optional
            Index for the downlink schedule (default: the base version).
        bytes_down : int, optional
            Downlink bytes of the round (for the statistics).
        payloads : iterable of (client_id, bytes), optional
            The accepted updates again, for an aggregator built with
            ``keep_payloads=False`` under round-level robust rules.

        Raises
        ------
        EmptyRoundError
            An aggregator without updates (nothing changes).
        """
        index = self._global.version if round_index is None else round_index
        if isinstance(result, Aggregator):
            model = result.finalize(self._global.version + 1, payloads=payloads)
            stats = result.round_stats(bytes_down=bytes_down)
            # Every accepted update was based on the latest version: its sender holds it
            # (also after a restart in the middle of the round, which reloads the versions
            # sent as of the last round's end; step_snap="auto" reads them).
            self.downlink.note_held((u.client_id for u in stats.updates), self._global.version)
            if self.server_optimizer is not None:
                tensors = self.server_optimizer.step(self.spec, self._global.tensors, model.tensors)
                model = ModelVersion.create(model.version, tensors, self.spec)
        else:
            model = result
            if model.spec != self.spec:
                raise ModelMismatchError("the published model does not match the engine's")
            stats = RoundStats(
                round_number=index,
                base_version=self._global.version,
                new_version=model.version,
                updates=(),
                rejected=0,
                bytes_up=0,
                bytes_down=bytes_down,
                update_rms=0.0,
            )
        release = self.downlink.publish(model, self._downlink_params(index))
        self._global = model
        self.last_stats = stats
        self._refresh_digests()
        return RoundOutcome(model, release, stats)


class ClientEngine:
    """The client side of the round engine: the held model and the uplink encoder.

    Parameters
    ----------
    spec : ModelSpec
        The model.
    client_id : str
        This client.
    initial : ModelVersion, optional
        The shared initial model, built as the deployment says (seed, file).
    threads : int, optional
        Codec threads.
    error_feedback : bool, optional
        Keep the uplink residual.
    temporal_reference : bool, optional
        Code each update against this client's previous decoded update
        (:class:`UpdateEncoder`; the server needs
        ``aggregator_options={"references": ClientReferences()}``).
    """

    def __init__(
        self,
        spec: ModelSpec,
        client_id: str,
        *,
        initial: ModelVersion | None = None,
        threads: int = 0,
        error_feedback: bool = True,
        temporal_reference: bool = False,
    ) -> None:
        self.spec = spec
        self.client_id = client_id
        self.receiver = ModelReceiver(spec, threads=threads, initial=initial)
        self.encoder = UpdateEncoder(
            spec,
            client_id,
            threads=threads,
            error_feedback=error_feedback,
            temporal_reference=temporal_reference,
        )

    @property
    def initial_digest(self) -> str | None:
        """Digest of the initial model held (None: none)."""
        held = self.receiver.initial
        return None if held is None else held.digest

    @property
    def model(self) -> ModelVersion:
        """The model held."""
        return self.receiver.model

    def request(self) -> dict[str, Any]:
        """What to tell the server when asking for the latest version
        (``have_version``, ``have_digest``, ``initial_digest``, ``holds_delta``:
        keyword arguments of :meth:`RoundEngine.package_for`)."""
        return {
            "have_version": self.receiver.version,
            "have_digest": self.receiver.digest,
            "initial_digest": self.initial_digest,
            "holds_delta": self.receiver.holds_delta,
        }

    def check_initial(self, ref: InitialRef | None) -> None:
        """Check that this client holds the federation's initial model.

        Raises
        ------
        InitialModelError
            The federation names another initial model (field ``initial_digest``)
            than the one held, or this client holds none.
        """
        if ref is None:
            return
        held = self.initial_digest
        if held != ref.digest:
            raise InitialModelError(
                f"initial_digest: the federation starts from {ref.model_id or 'a model'!r} "
                f"{ref.digest[:16]}…, this client holds "
                f"{'no initial model' if held is None else held[:16] + '…'}"
            )

    def check_initial_digest(self, digest: str) -> None:
        """:meth:`check_initial` for a digest alone (raises InitialModelError)."""
        self.check_initial(InitialRef("", 0, digest))

    def holds(self, version: int, digest: str) -> bool:
        """Whether the held model is ``version`` with ``digest``."""
        return self.receiver.version == version and self.receiver.digest == digest

    def sync_reference(self, server_token: str | None, *, offered: bool = True) -> bool:
        """Code the next update against the previous one only if the server holds
        the same reference (:meth:`UpdateEncoder.sync_reference`,
        :meth:`RoundEngine.reference_token`); returns whether it will."""
        return self.encoder.sync_reference(server_token, offered=offered)

    def receive(self, package: DownlinkPackage) -> ModelVersion:
        """Apply a package (digest-checked); see :meth:`ModelReceiver.apply`."""
        return self.receiver.apply(package)

    def encode(
        self,
        local: Mapping[str, npt.ArrayLike],
        params: RoundParams,
        *,
        round_number: int,
        num_examples: int,
        base: ModelVersion | None = None,
        **options: Any,
    ) -> EncodedUpdate:
        """Code ``local − base`` with error feedback (``base``: the held model)."""
        return self.encoder.encode(
            local,
            self.receiver.model if base is None else base,
            params,
            round_number=round_number,
            num_examples=num_examples,
            **options,
        )
