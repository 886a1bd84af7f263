"""The edge client: take part in rounds of a fedcodec aggregation server.

::

    from fedcodec.client import EdgeClient, TrainResult

    def train(weights, info):                  # dict of float32 arrays, RoundInfo
        new = my_sgd(weights, epochs=1)
        return TrainResult(new, num_examples=len(my_data))

    with EdgeClient("fl.example.org:443", client_id="phone-17", token=token,
                    state_dir="~/.fedcodec") as client:
        client.run(train)                      # until the federation finishes

One round (:meth:`EdgeClient.run_round`): check in; if selected, bring the local model to
the round's base version (coded deltas, or a keyframe; every result is checked against the
server's digest); train through the callback; encode ``local - base`` plus the
error-feedback residual with the round's λ/S or byte budget; upload in chunks with an
idempotency key, retrying transient failures.  With a ``state_dir`` the model, the residual
and any unacknowledged update survive a restart (:mod:`fedcodec.client.state`).
"""

from __future__ import annotations

import enum
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt

from fedcodec import wire
from fedcodec.client.errors import (
    DeadlineExceededError,
    ServerUnavailableError,
    UpdateRefusedError,
)
from fedcodec.client.state import PendingUpload, load_pending, save_pending
from fedcodec.client.transport import MAX_CHUNK_BYTES, Connection, RetryPolicy
from fedcodec.errors import CorruptStreamError
from fedcodec.pipeline import (
    ClientEngine,
    DigestMismatchError,
    ModelMismatchError,
    ModelReceiver,
    ModelSpec,
    ModelVersion,
    RoundInfo,
    StateFormatError,
    StatisticsFn,
    UpdateEncoder,
)
from fedcodec.v1 import aggregation_service_pb2 as pb
from fedcodec.v1 import round_pb2

__all__ = ["EdgeClient", "Outcome", "RoundInfo", "RoundResult", "TrainFn", "TrainResult"]

log = logging.getLogger("fedcodec.client")


@dataclass(frozen=True)
class TrainResult:
    """What the training callback returns.

    Attributes
    ----------
    weights : mapping of str to array_like
        The locally trained model (every tensor, float32 or convertible).
    num_examples : int
        Local training examples (the FedAvg weight), >= 1.
    metrics : mapping of str to float
        Anything to log (loss, accuracy).
    statistics : callable, optional
        Measures tensors on the model the server will build from this update
        (the base plus the update as coded; e.g. BatchNorm running statistics on
        the local data, :class:`fedcodec.torch.CodedStatistics`); what it returns
        replaces those tensors of ``weights`` (see
        :meth:`fedcodec.pipeline.UpdateEncoder.encode`).
    """

    weights: Mapping[str, npt.ArrayLike]
    num_examples: int
    metrics: Mapping[str, float] = field(default_factory=dict)
    statistics: StatisticsFn | None = None


#: The training callback: global weights (writeable float32 copies) and the round.
TrainFn = Callable[[dict[str, npt.NDArray[np.float32]], RoundInfo], TrainResult]


class Outcome(enum.Enum):
    """How a call of :meth:`EdgeClient.run_round` ended."""

    #: The update was accepted (or found already accepted after a resend).
    PARTICIPATED = "participated"
    #: Not selected this time: check in again after ``retry_after``.
    NOT_SELECTED = "not_selected"
    #: This client already reported in the open round.
    ALREADY_REPORTED = "already_reported"
    #: The server refused the update for good (e.g. the round closed); it was dropped.
    REFUSED = "refused"
    #: The round moved on while the model was downloaded; check in again.
    STALE = "stale"
    #: The federation has finished.
    FINISHED = "finished"


@dataclass(frozen=True)
class RoundResult:
    """One call of :meth:`EdgeClient.run_round`.

    Attributes
    ----------
    outcome : Outcome
        What happened.
    round_id : int
        The round concerned (0 if none).
    retry_after : float
        Seconds the server asked to wait before the next check-in.
    bytes_up, bytes_down : int
        Payload bytes sent and received.
    keyframe : bool
        Whether the model came as a keyframe.
    train_metrics : mapping
        From the training callback.
    detail : str
        The server's reason when refused.
    """

    outcome: Outcome
    round_id: int = 0
    retry_after: float = 0.0
    bytes_up: int = 0
    bytes_down: int = 0
    keyframe: bool = False
    train_metrics: Mapping[str, float] = field(default_factory=dict)
    detail: str = ""


def round_info_from_proto(config: round_pb2.RoundConfig) -> RoundInfo:
    """A :class:`RoundInfo` from a ``RoundConfig`` message (chunks of at most
    :data:`~fedcodec.client.transport.MAX_CHUNK_BYTES`)."""
    return wire.round_info_from_proto(config, MAX_CHUNK_BYTES)


class EdgeClient:
    """A participant of a fedcodec federation.

    Parameters
    ----------
    target : str
        ``host:port`` of the aggregation server.
    client_id : str
        This client's id (the one its token belongs to).
    token : str
        Its bearer token.
    state_dir : path-like, optional
        Where the model, the residual and unacknowledged updates are kept between runs
        (default: memory only).
    tls_ca, insecure, server_name, client_cert, client_key
        Transport security (:class:`~fedcodec.client.transport.Connection`); plaintext only
        with ``insecure=True``.
    retry : RetryPolicy, optional
        Retries of transient failures.
    call_deadline_s : float, optional
        The most seconds one call to the server may take, all its tries and the waits
        between them (sets ``retry.call_deadline_s``).  A call that gets no answer within
        it raises :class:`~fedcodec.client.errors.DeadlineExceededError`, and so does
        :meth:`run`.  Default: no deadline (with the default retry policy a call to a
        server that never answers gives up after about 16 minutes).
    codec_threads : int, optional
        Threads of the encoder (0: all CPUs).
    initial_model : mapping of str to array_like, optional
        The federation's shared initial model, built as the deployment says (from its
        seed, or read from the file shipped with the app).  A federation that starts
        from a shared initial model sends a client without it the model once (4 bytes
        per weight; ``request_initial``), unless the server forbids it.
    request_initial : bool, optional
        Ask the server for the initial model when this client does not hold it, or holds
        another (4 bytes per weight, once; default True: the round goes on).  False: such
        a client raises :class:`~fedcodec.pipeline.InitialModelError` before downloading.
    compact : bool, optional
        Use compact containers (codec FORMAT.md §2-3: no shapes, all-zero tensors
        omitted, one-byte steps; both ends know the model) where the server offers them:
        downloads always ask for them (a server from before them ignores the request),
        updates are coded compact when the round config says the server reads them
        (default True).
    """

    def __init__(
        self,
        target: str,
        *,
        client_id: str,
        token: str,
        state_dir: str | Path | None = None,
        tls_ca: str | None = None,
        insecure: bool = False,
        server_name: str | None = None,
        client_cert: str | None = None,
        client_key: str | None = None,
        retry: RetryPolicy | None = None,
        call_deadline_s: float | None = None,
        codec_threads: int = 1,
        initial_model: Mapping[str, npt.ArrayLike] | None = None,
        request_initial: bool = True,
        compact: bool = True,
    ) -> None:
        if not client_id:
            raise ValueError("client_id must be set")
        self.client_id = client_id
        self.compact = compact
        self.codec_threads = codec_threads
        self.initial_model = (
            None if initial_model is None else ModelVersion.create(0, initial_model)
        )
        self.request_initial = request_initial
        if call_deadline_s is not None:
            retry = replace(retry or RetryPolicy(), call_deadline_s=call_deadline_s)
        self.connection = Connection(
            target,
            token,
            client_id=client_id,
            tls_ca=tls_ca,
            insecure=insecure,
            server_name=server_name,
            client_cert=client_cert,
            client_key=client_key,
            retry=retry,
        )
        self.state_dir = None if state_dir is None else Path(state_dir).expanduser()
        if self.state_dir is not None:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        self._spec: ModelSpec | None = None
        self._engine: ClientEngine | None = None
        self._pending: PendingUpload | None = None
        # Re-encodes the pending update without temporal reference (set while a
        # reference-coded update of this process is pending; the server may hold no
        # reference for this client, e.g. after its restart).
        self._reencode: Callable[[], PendingUpload] | None = None
        self._chunk_bytes = MAX_CHUNK_BYTES  # the server's limit, from its round config
        # The encoder state as of the last acknowledged update (restored when the server
        # refuses an update for good).
        self._acknowledged: tuple[dict[str, np.ndarray], dict[str, Any]] | None = None
        # Set by close(): a run() in another thread returns instead of waiting for an
        # unavailable server for ever.
        self._closed = threading.Event()
        self._resume_pending()

    # -- lifecycle ----------------------------------------------------------

    def close(self) -> None:
        """Close the connection; a :meth:`run` in another thread returns (with its results)."""
        self._closed.set()
        self.connection.close()

    def __enter__(self) -> EdgeClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _resume_pending(self) -> None:
        """Load the state at once when an unacknowledged update waits on disk.

        Its round may be reported already (our acknowledgement was lost), and then the
        server does not select this client again: the resend must not wait for a selection.
        """
        path = self._path("pending.npz")
        if path is None or not path.exists():
            return
        try:
            pending = load_pending(path)
            spec = None if pending is None else ModelSpec.from_json(pending.encoder_meta["spec"])
        except (StateFormatError, ModelMismatchError, KeyError, TypeError):
            return  # _setup drops an unreadable file when the first round names the model
        if spec is not None:
            self._setup(spec)

    def _path(self, name: str) -> Path | None:
        return None if self.state_dir is None else self.state_dir / name

    @property
    def model(self) -> ModelVersion | None:
        """The global model held (None before the first download)."""
        if self._engine is None or self._engine.receiver.version is None:
            return None
        return self._engine.model

    @property
    def encoder(self) -> UpdateEncoder | None:
        """The error-feedback encoder (after the first round)."""
        return None if self._engine is None else self._engine.encoder

    @property
    def _encoder(self) -> UpdateEncoder | None:
        return None if self._engine is None else self._engine.encoder

    @property
    def _receiver(self) -> ModelReceiver | None:
        return None if self._engine is None else self._engine.receiver

    def _initial_for(self, spec: ModelSpec) -> ModelVersion | None:
        initial = self.initial_model
        if initial is None:
            return None
        if initial.spec != spec:
            raise ModelMismatchError(
                "initial_model: the initial model given to this client has other tensors "
                "than the federation's model"
            )
        return initial

    def _setup(self, spec: ModelSpec) -> None:
        """Create (or restore) the encoder and the model receiver for ``spec``."""
        if self._spec == spec:
            return
        encoder_path, model_path = self._path("encoder.npz"), self._path("model.npz")
        engine = ClientEngine(
            spec, self.client_id, initial=self._initial_for(spec), threads=self.codec_threads
        )
        encoder, receiver = engine.encoder, engine.receiver
        if encoder_path is not None and encoder_path.exists():
            try:
                encoder = UpdateEncoder.restore(
                    encoder_path, spec, self.client_id, threads=self.codec_threads
                )
            except StateFormatError as exc:
                log.warning(
                    "saved residual not usable; starting afresh",
                    extra={"event": "state_discarded", "file": "encoder.npz", "reason": str(exc)},
                )
        if model_path is not None and model_path.exists():
            try:
                receiver = ModelReceiver.restore(model_path, spec, threads=self.codec_threads)
            except StateFormatError as exc:
                log.warning(
                    "saved model not usable; a keyframe will be fetched",
                    extra={"event": "state_discarded", "file": "model.npz", "reason": str(exc)},
                )
        pending_path = self._path("pending.npz")
        pending = None
        if pending_path is not None:
            try:
                pending = load_pending(pending_path)
            except StateFormatError as exc:
                log.warning(
                    "unreadable pending upload dropped",
                    extra={"event": "state_discarded", "file": "pending.npz", "reason": str(exc)},
                )
                pending_path.unlink(missing_ok=True)
        if pending is not None and set(pending.residual) != set(spec.names):
            pending = None
        if receiver.initial is None and self.initial_model is not None:
            receiver.assume(self._initial_for(spec) or self.initial_model)
        engine.encoder, engine.receiver = encoder, receiver
        self._spec, self._engine, self._pending = spec, engine, pending
        self._acknowledged = encoder.state()

    # -- one round ----------------------------------------------------------

    def run_round(self, train: TrainFn) -> RoundResult:
        """Check in and, if selected, train, encode and upload once.

        Returns
        -------
        RoundResult

        Raises
        ------
        AuthenticationError
            The server does not accept this client's token.
        ServerUnavailableError
            The server could not be reached within the retries (an encoded update stays
            pending and is resent by the next call).
        DeadlineExceededError
            A :class:`ServerUnavailableError`: no answer within the call deadline.
        """
        answer = self.connection.check_in()
        retry_after = answer.retry_after.ToNanoseconds() / 1e9
        if answer.assignment == pb.ASSIGNMENT_FINISHED:
            return RoundResult(Outcome.FINISHED, answer.round_id, retry_after)
        if answer.assignment == pb.ASSIGNMENT_ALREADY_REPORTED:
            if self._pending is not None and self._pending.round_id == answer.round_id:
                # The server has it (our acknowledgement was lost): resend to confirm.
                return self._deliver(self._pending, retry_after)
            return RoundResult(Outcome.ALREADY_REPORTED, answer.round_id, retry_after)
        if answer.assignment != pb.ASSIGNMENT_SELECTED or not answer.HasField("config"):
            return RoundResult(Outcome.NOT_SELECTED, answer.round_id, retry_after)
        info = round_info_from_proto(answer.config)
        self._chunk_bytes = info.max_chunk_bytes
        self._setup(info.spec)
        if self._pending is not None:
            # An update from an earlier run that was never acknowledged.
            result = self._deliver(self._pending, retry_after)
            if result.round_id == info.round_id and result.outcome is Outcome.PARTICIPATED:
                return result
        base, bytes_down, keyframe = self._sync_model(info)
        if base is None:
            return RoundResult(Outcome.STALE, info.round_id, 0.0, 0, bytes_down, keyframe)
        start = time.perf_counter()
        trained = train(base.copy_tensors(), info)
        train_seconds = time.perf_counter() - start
        encoder = self._encoder
        assert encoder is not None
        # Coded against the previous update when the server keeps references (the
        # encoder holds one only after an update of this process was accepted).
        encoder.temporal_reference = info.temporal_reference
        encoder.compact = self.compact and info.compact_updates

        def encode() -> PendingUpload:
            assert encoder is not None
            assert base is not None
            update = encoder.encode(
                trained.weights,
                base,
                info.params,
                round_number=info.round_id,
                num_examples=trained.num_examples,
                statistics=trained.statistics,
            )
            residual, meta = encoder.state()
            pending = PendingUpload(
                idempotency_key=uuid.uuid4().hex,
                round_id=info.round_id,
                base_version=base.version,
                base_digest=base.digest,
                num_examples=trained.num_examples,
                payload=update.data,
                residual=residual,
                encoder_meta=meta,
            )
            self._set_pending(pending, encode if update.uses_reference else None)
            log.info(
                "update encoded",
                extra={
                    "event": "update_encoded",
                    "client_id": self.client_id,
                    "round_id": info.round_id,
                    "bytes": len(update.data),
                    "passes": update.stats.passes,
                    "density": round(update.stats.density, 6),
                    "temporal_reference": update.uses_reference,
                    "train_s": round(train_seconds, 3),
                    "encode_s": round(update.stats.seconds, 3),
                },
            )
            return pending

        pending = encode()
        result = self._deliver(pending, retry_after)
        return RoundResult(
            result.outcome,
            result.round_id,
            result.retry_after,
            result.bytes_up,
            bytes_down,
            keyframe,
            dict(trained.metrics),
            result.detail,
        )

    def _set_pending(
        self, pending: PendingUpload | None, reencode: Callable[[], PendingUpload] | None = None
    ) -> None:
        self._pending = pending
        self._reencode = reencode
        path = self._path("pending.npz")
        if path is None:
            return
        if pending is None:
            path.unlink(missing_ok=True)
        else:
            save_pending(path, pending)

    def _commit_encoder(self, arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]) -> None:
        encoder = self._encoder
        assert encoder is not None
        encoder.load_state(arrays, meta)
        self._acknowledged = encoder.state()
        path = self._path("encoder.npz")
        if path is not None:
            encoder.save_state(path)

    def _deliver(self, pending: PendingUpload, retry_after: float) -> RoundResult:
        """Upload (or resend) ``pending``; adopt or drop its residual by the answer."""
        try:
            response = self.connection.upload(
                round_id=pending.round_id,
                base_version=pending.base_version,
                base_digest=pending.base_digest,
                idempotency_key=pending.idempotency_key,
                num_examples=pending.num_examples,
                payload=pending.payload,
                chunk_bytes=self._chunk_bytes,
            )
        except UpdateRefusedError as exc:
            # Refused for good: drop the update; the residual goes back to the last
            # acknowledged one (on disk, or the pre-encode state in memory).  The
            # temporal reference (this update's reconstruction) is not the server's.
            reencode = self._reencode
            encoder = self._encoder
            assert encoder is not None
            encoder.drop_reference()
            self._restore_acknowledged_residual()
            self._set_pending(None)
            if reencode is not None and exc.status == "INVALID_ARGUMENT":
                # Coded against a reference the server does not hold (it restarted, or
                # forgot this client): the same update once more, without reference.
                log.info(
                    "update refused for its temporal reference; resending without",
                    extra={
                        "event": "temporal_reference_dropped",
                        "client_id": self.client_id,
                        "round_id": pending.round_id,
                        "detail": exc.detail,
                    },
                )
                return self._deliver(reencode(), retry_after)
            log.warning(
                "update refused",
                extra={
                    "event": "update_refused",
                    "client_id": self.client_id,
                    "round_id": pending.round_id,
                    "status": exc.status,
                    "detail": exc.detail,
                },
            )
            return RoundResult(
                Outcome.REFUSED, pending.round_id, retry_after, detail=f"{exc.status}: {exc.detail}"
            )
        except ServerUnavailableError:
            # Keep it pending: the next run_round resends the same bytes and key.
            raise
        self._commit_encoder(pending.residual, pending.encoder_meta)
        self._set_pending(None)
        already = response.status == pb.UPLOAD_STATUS_ALREADY_ACCEPTED
        log.info(
            "update delivered",
            extra={
                "event": "update_delivered",
                "client_id": self.client_id,
                "round_id": response.round_id,
                "already_accepted": already,
                "bytes": len(pending.payload),
            },
        )
        return RoundResult(
            Outcome.PARTICIPATED, response.round_id, retry_after, bytes_up=len(pending.payload)
        )

    def _restore_acknowledged_residual(self) -> None:
        encoder = self._encoder
        assert encoder is not None
        assert self._acknowledged is not None
        encoder.load_state(*self._acknowledged)

    def _sync_model(self, info: RoundInfo) -> tuple[ModelVersion | None, int, bool]:
        """Bring the local model to the round's base: (model or None if stale, bytes, keyframe).

        Raises
        ------
        InitialModelError
            The federation starts from a shared initial model this client does not hold
            and may not ask for (``request_initial``).
        """
        engine = self._engine
        assert engine is not None
        receiver = engine.receiver
        if engine.holds(info.base_version, info.base_digest):
            path = self._path("model.npz")
            if path is not None and not path.exists():
                receiver.save_state(path)  # e.g. the shared initial model, never downloaded
            return receiver.model, 0, False
        want_initial = False
        if info.initial is not None and engine.initial_digest != info.initial.digest:
            if not self.request_initial:
                engine.check_initial(info.initial)  # raises, naming the model it lacks
            want_initial = True
            log.info(
                "this client does not hold the shared initial model %s: asking the server "
                "for it (4 bytes per weight, once; initial_model=... spares that)",
                info.initial.digest[:16],
            )
        bytes_down = 0
        keyframe = False
        # First as held (with the decoded delta this client keeps, if any).  A package
        # coded against that delta that does not check out (it was lost, or differs: its
        # digest is not the container's) is asked for again without it; anything else
        # that fails, as a keyframe.
        attempts = ["held", "keyframe"]
        while attempts:
            attempt = attempts.pop(0)
            force = attempt == "keyframe"
            package = self.connection.download(
                None if force else receiver.version,
                None if force else receiver.digest,
                force_keyframe=force,
                initial_digest=engine.initial_digest,
                want_initial=want_initial,
                holds_delta=attempt == "held" and receiver.holds_delta,
                compact=self.compact,
            )
            bytes_down += len(package)
            keyframe = keyframe or package.is_keyframe
            try:
                receiver.apply(package)
            except (DigestMismatchError, ModelMismatchError, CorruptStreamError) as exc:
                on_held = package.held_delta_reference
                if on_held:
                    attempts.insert(0, "plain")
                log.warning(
                    "downloaded model did not check out; asking again without the held delta"
                    if on_held
                    else "downloaded model did not check out; asking for a keyframe",
                    extra={
                        "event": "model_rejected",
                        "client_id": self.client_id,
                        "reason": str(exc),
                        "held_delta_reference": on_held,
                    },
                )
                continue
            if receiver.version != info.base_version or receiver.digest == info.base_digest:
                break
        path = self._path("model.npz")
        if path is not None:
            receiver.save_state(path)
        if receiver.version != info.base_version or receiver.digest != info.base_digest:
            return None, bytes_down, keyframe
        return receiver.model, bytes_down, keyframe

    # -- many rounds --------------------------------------------------------

    def run(
        self,
        train: TrainFn,
        *,
        max_rounds: int | None = None,
        stop: threading.Event | None = None,
        on_round: Callable[[RoundResult], None] | None = None,
    ) -> list[RoundResult]:
        """Take part in rounds until the federation finishes.

        Parameters
        ----------
        train : callable
            The training callback.
        max_rounds : int, optional
            Stop after taking part this many times.
        stop : threading.Event, optional
            Set it to stop (checked between rounds and while waiting).
        on_round : callable, optional
            Called with every :class:`RoundResult`.

        Returns
        -------
        list of RoundResult
            The rounds this client took part in (and the final outcome).

        Raises
        ------
        AuthenticationError
            The server does not accept this client's token.
        DeadlineExceededError
            With a call deadline: a call got no answer within it.  Without one, an
            unavailable server is waited for (and tried again) for ever.
        """
        # Without a stop event of the caller's, close() interrupts the waits, too.
        stop = stop or self._closed
        results: list[RoundResult] = []
        participated = 0
        while not (stop.is_set() or self._closed.is_set()):
            try:
                result = self.run_round(train)
            except ServerUnavailableError as exc:
                if self._closed.is_set():
                    break
                if isinstance(exc, DeadlineExceededError):
                    raise  # the caller's bound: not waited out
                log.warning(
                    "server unavailable; waiting",
                    extra={
                        "event": "server_unavailable",
                        "client_id": self.client_id,
                        "detail": str(exc),
                    },
                )
                stop.wait(self.connection.retry.max_backoff_s)
                continue
            except Exception:
                if self._closed.is_set():  # closed under a running call
                    break
                raise
            if on_round is not None:
                on_round(result)
            if result.outcome in (Outcome.PARTICIPATED, Outcome.REFUSED, Outcome.FINISHED):
                results.append(result)
            if result.outcome is Outcome.FINISHED:
                break
            if result.outcome is Outcome.PARTICIPATED:
                participated += 1
                if max_rounds is not None and participated >= max_rounds:
                    break
            if result.outcome is not Outcome.STALE:
                stop.wait(result.retry_after)
        return results
