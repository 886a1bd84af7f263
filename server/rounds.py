"""The federation's round logic: selection, deadlines, durable intake, aggregation.

No gRPC here: :class:`RoundCoordinator` takes and returns plain values, and raises the
refusals of :mod:`fedcodec.server.errors`; the servicer translates.

A round, seen from the coordinator::

    open      round r (base version r-1, coding parameters from the schedule, deadline)
    check-in  a client asks; while fewer than `target_clients` are selected or reported it
              is selected (with probability `selection_probability`) and gets the config
    upload    prechecked (round, selection, base, size) before the payload is read; then
              validated by a full decode (O(model) scratch, `max_parallel_decodes` at once),
              then stored in one SQLite transaction — only then acknowledged
    close     when `target_clients` have reported, or at the deadline with at least
              `min_clients` (with fewer, the deadline moves on and selection reopens, so
              dropouts are replaced and accepted updates are kept)
    aggregate the stored updates are decoded and accumulated one at a time in client-id
              order (FedAvg by example count), the new version is coded for the downlink,
              and everything is committed in one transaction, with the next round

Because the aggregate is rebuilt from the stored updates in a canonical order, a server
killed at any moment and restarted produces bit for bit the model an uninterrupted run
would have, and memory stays O(model) however many clients report.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import errno
import functools
import hashlib
import logging
import random
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, TypeVar

import numpy.typing as npt

from fedcodec.errors import FedCodecError
from fedcodec.pipeline import (
    Aggregator,
    BaseDigestMismatchError,
    ClientReferences,
    ClientRoundStats,
    DownlinkPackage,
    InitialModelError,
    InitialRef,
    ModelSpec,
    ModelVersion,
    RoundEngine,
    RoundInfo,
    RoundStats,
    Schedule,
    StaleBaseVersionError,
    Submission,
    UnknownBaseVersionError,
    UpdateRejectedError,
)
from fedcodec.pipeline.robust import RobustRejectionError
from fedcodec.pipeline.server import temporal_reference_for
from fedcodec.server.config import ServerConfig
from fedcodec.server.errors import (
    RETRY_MARK,
    BaseVersionError,
    ConflictingUpdateError,
    InitialModelMismatchError,
    InvalidUpdateError,
    NotSelectedError,
    RoundNotOpenError,
    ServerError,
    ShuttingDownError,
    StorageFullError,
    StorageUnavailableError,
    UpdateTooLargeError,
)
from fedcodec.server.metrics import Metrics
from fedcodec.server.store import RoundRecord, Store, StoreError, UpdateRecord

__all__ = [
    "Assignment",
    "CheckIn",
    "RoundCoordinator",
    "RoundInfo",
    "RoundSummary",
    "UploadHeader",
    "UploadReceipt",
]

log = logging.getLogger("fedcodec.server")

_T = TypeVar("_T")


class Assignment(enum.Enum):
    """What a checking-in client is told."""

    SELECTED = "selected"
    NOT_SELECTED = "not_selected"
    ALREADY_REPORTED = "already_reported"
    FINISHED = "finished"


@dataclass(frozen=True)
class CheckIn:
    """The answer to a check-in.

    Attributes
    ----------
    assignment : Assignment
        Selected, not selected, already reported, or finished.
    round : RoundInfo or None
        Set when selected.
    retry_after : float
        Seconds to wait before checking in again (when not selected).
    open_round_id : int
        The open round (0: none).
    latest_version : int
        The newest global version.
    """

    assignment: Assignment
    round: RoundInfo | None
    retry_after: float
    open_round_id: int
    latest_version: int


@dataclass(frozen=True)
class UploadHeader:
    """What a client says about its update before sending it.

    Attributes
    ----------
    round_id, base_version : int
        The round and the base version of the delta.
    base_digest : str
        Digest of the base model the client held ("" if unknown).
    idempotency_key : str
        The same for every resend of this update.
    total_bytes, crc32 : int
        Size and CRC-32 (zlib) of the payload.
    num_examples : int
        FedAvg weight.
    """

    round_id: int
    base_version: int
    base_digest: str
    idempotency_key: str
    total_bytes: int
    crc32: int
    num_examples: int


@dataclass(frozen=True)
class UploadReceipt:
    """An accepted upload.

    Attributes
    ----------
    already_accepted : bool
        True for a resend of an update that was stored before.
    round_id : int
        Its round.
    bytes_received : int
        Payload size.
    accepted_in_round : int
        Updates stored in the round so far.
    """

    already_accepted: bool
    round_id: int
    bytes_received: int
    accepted_in_round: int


@dataclass(frozen=True)
class RoundSummary:
    """A round that was aggregated (given to listeners).

    Attributes
    ----------
    round_id : int
        The round.
    stats : RoundStats
        Accepted updates, bytes up, bytes down (downloads served while it was open).
    new_version : int
        The version it produced.
    stream_digest : str
        Digest of that version as clients receive it.
    seconds : float
        From opening to the end of aggregation.
    finalize_seconds : float
        Aggregation and downlink coding.
    reason : str
        Why it closed ("target reached" or "deadline").
    finished : bool
        True when this was the last round.
    """

    round_id: int
    stats: RoundStats
    new_version: int
    stream_digest: str
    seconds: float
    finalize_seconds: float
    reason: str
    finished: bool


@dataclass
class _Round:
    record: RoundRecord
    selected: dict[str, int]
    # client -> (idempotency key, size, crc32) of its accepted update
    reported: dict[str, tuple[str, int, int]]
    closing: bool = False
    bytes_down: int = 0
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    # group commits of accepted updates not yet durable
    pending: set[asyncio.Future[None]] = field(default_factory=set)
    # clients whose update is durable (a resend may be acknowledged from memory)
    committed: set[str] = field(default_factory=set)

    @property
    def round_id(self) -> int:
        return self.record.round_id


def _public_model_id(source: str) -> str:
    """The initial model's name as clients see it (RoundConfig, refusals): a file's name
    without its folder — the server's paths are nobody's business (the digest decides)."""
    if not source or source.startswith("builtin:"):
        return source
    return PurePath(source).name


def _receipt_matches(stored: tuple[str, int, int], h: UploadHeader) -> bool:
    return stored == (h.idempotency_key, h.total_bytes, h.crc32)


def _storage_refusal(exc: sqlite3.Error | OSError) -> ServerError:
    """A database failure as a refusal a client understands (logged for the operator)."""
    full = getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or (
        isinstance(exc, OSError) and exc.errno == errno.ENOSPC
    )
    log.error(
        "the state database failed",
        extra={"event": "storage_full" if full else "storage_failed", "error": str(exc)},
    )
    if full:
        return StorageFullError(
            f"the server's storage is full: nothing was stored; {RETRY_MARK} "
            "(the operator must free disk space)"
        )
    return StorageUnavailableError(
        f"the server's database failed ({exc}): nothing was stored; {RETRY_MARK}"
    )


class RoundCoordinator:
    """Runs the rounds of one federation over a durable store.

    Parameters
    ----------
    config : ServerConfig
        Rounds, coding parameters, limits, the database path.
    initial_model : mapping of str to array_like, optional
        Version 0, needed only when the database is new.
    metrics : Metrics, optional
        Where to count.
    clock : callable, optional
        Wall clock (Unix seconds) for deadlines.

    Notes
    -----
    Call the coroutines from one event loop.  The database is used from one worker
    thread; decoding runs in worker threads so the loop stays responsive.
    """

    def __init__(
        self,
        config: ServerConfig,
        *,
        initial_model: Mapping[str, npt.ArrayLike] | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self._initial_model = initial_model
        self._clock = clock
        self._schedule: Schedule = config.build_schedule()
        self._rng = random.Random(config.rounds.seed)
        self._db_executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="fedcodec-db"
        )
        self._store: Store | None = None
        self._engine: RoundEngine | None = None
        # Per-client temporal references: one float32 model per kept client in memory, and
        # in the database (deflated), so a restart keeps them.
        self.references: ClientReferences | None = (
            ClientReferences(max_clients=config.rounds.client_references)
            if config.rounds.client_references > 0
            else None
        )
        self._downlink_lock = threading.Lock()
        self._initial_sent: set[str] = set()  # clients sent the raw initial model (warned)
        self._base: ModelVersion | None = None
        self._stream_digest = ""
        self._round: _Round | None = None
        self._finished = False
        self._finished_event = asyncio.Event()
        self._changed = asyncio.Event()
        self._decode_slots = asyncio.Semaphore(config.limits.max_parallel_decodes)
        self._tasks: set[asyncio.Task[None]] = set()
        self._deadline_task: asyncio.Task[None] | None = None
        self._listeners: list[Callable[[RoundSummary], None]] = []
        self._commit_queue: list[tuple[UpdateRecord, bytes, asyncio.Future[None]]] = []
        self._committer: asyncio.Task[None] | None = None
        self._registered = 0
        self._running = False
        self._stopping = False

    # -- lifecycle ----------------------------------------------------------

    async def _in_db(self, fn: Callable[..., _T], *args: Any) -> _T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._db_executor, functools.partial(fn, *args))
        except sqlite3.IntegrityError:
            raise
        except (sqlite3.Error, OSError) as exc:
            raise _storage_refusal(exc) from exc

    @property
    def store(self) -> Store:
        """The database (use only through :meth:`_in_db`)."""
        if self._store is None:
            raise RuntimeError("the coordinator is not started")
        return self._store

    @property
    def spec(self) -> ModelSpec:
        """The model's tensors."""
        return self._need_base().spec

    @property
    def max_update_bytes(self) -> int:
        """Largest accepted update."""
        return self.config.limits.update_limit(self.spec.float32_bytes)

    @property
    def max_chunk_bytes(self) -> int:
        """Largest upload chunk, and the download chunk size."""
        return self.config.limits.max_chunk_bytes

    @property
    def finished(self) -> bool:
        """Whether every round has run."""
        return self._finished

    @property
    def open_round_id(self) -> int:
        """The open round (0: none)."""
        return 0 if self._round is None else self._round.round_id

    def add_listener(self, callback: Callable[[RoundSummary], None]) -> None:
        """Call ``callback(summary)`` (on the event loop) after each aggregated round."""
        self._listeners.append(callback)

    def _need_base(self) -> ModelVersion:
        if self._base is None:
            raise RuntimeError("the coordinator is not started")
        return self._base

    def _need_engine(self) -> RoundEngine:
        if self._engine is None:
            raise RuntimeError("the coordinator is not started")
        return self._engine

    def _new_engine(
        self, model: ModelVersion, downlink_state: tuple[Any, Any] | None = None
    ) -> RoundEngine:
        d = self.config.downlink
        return RoundEngine(
            model,
            initial_id=_public_model_id(self.config.initial_model),
            shared_initial=d.shared_initial,
            send_initial=d.send_initial,
            schedule=self._schedule,
            downlink=self.config.build_downlink(),
            keep=d.keep_versions,
            keyframe_bits=d.keyframe_bits,
            step_snap=self.config.step_snap(),
            server_lr=self.config.rounds.server_lr,
            server_optimizer=self.config.rounds.server_optimizer(),
            threads=self.config.limits.codec_threads,
            policy=self.config.robust,
            downlink_state=downlink_state,
            downlink_reference=d.temporal_reference,
            aggregator_options=({} if self.references is None else {"references": self.references}),
        )

    def _open_record(
        self, round_id: int, base_version: int, last: RoundStats | None
    ) -> RoundRecord:
        now = self._clock()
        return RoundRecord(
            round_id=round_id,
            base_version=base_version,
            params=self._schedule(round_id - 1, last),
            state="open",
            opened_at=now,
            deadline=now + self.config.rounds.deadline_s,
            window=0,
        )

    def _more_rounds(self, last_round_id: int) -> bool:
        limit = self.config.rounds.max_rounds
        return limit == 0 or last_round_id < limit

    def _load(self) -> tuple[ModelVersion, RoundEngine, RoundRecord | None, bool]:
        """Open or create the federation (runs in the database thread)."""
        store = Store(self.config.state_path, replace_unusable=self.config.new_federation)
        self._store = store
        if store.moved_aside is not None:
            log.warning(
                "the unusable state database was moved aside; a new federation starts",
                extra={
                    "event": "state_moved_aside",
                    "state_path": self.config.state_path,
                    "moved_to": store.moved_aside,
                },
            )
        if store.spec is None:
            if self._initial_model is None:
                raise StoreError(
                    f"{self.config.state_path!r} is a new database: an initial model is "
                    "needed (initial_model in the configuration)"
                )
            model = ModelVersion.create(0, self._initial_model)
            engine = self._new_engine(model)
            first = self._open_record(1, 0, None) if self._more_rounds(0) else None
            store.initialize(model, engine.state(), engine.stream_digest, first, now=self._clock())
            log.info(
                "federation created",
                extra={
                    "event": "federation_created",
                    "state_path": self.config.state_path,
                    "tensors": len(model.spec),
                    "weights": model.spec.numel,
                    "digest": model.digest,
                },
            )
            return model, engine, first, first is None
        model = store.model()
        self._load_references(store, model.spec)
        try:
            engine = self._new_engine(model, store.downlink())
        except ValueError as exc:
            raise StoreError(f"the stored downlink does not fit the newest model: {exc}") from exc
        record = store.open_round()
        if record is None and self._more_rounds(store.last_round_id()):
            record = self._open_record(store.last_round_id() + 1, model.version, store.last_stats())
            store.add_round(record)
        log.info(
            "federation resumed",
            extra={
                "event": "federation_resumed",
                "state_path": self.config.state_path,
                "version": model.version,
                "round_id": 0 if record is None else record.round_id,
            },
        )
        return model, engine, record, record is None

    def _load_references(self, store: Store, spec: ModelSpec) -> None:
        """The temporal references saved with the federation (database thread)."""
        references = self.references
        if references is None or references.max_clients is None:
            return
        for client_id, blob in store.client_references(references.max_clients):
            try:
                references.put_bytes(client_id, blob, spec.shapes)
            except (ValueError, zlib.error) as exc:
                log.warning(
                    "a stored temporal reference does not fit the model; dropped",
                    extra={
                        "event": "reference_dropped",
                        "client_id": client_id,
                        "detail": str(exc),
                    },
                )
        if len(references):
            log.info(
                "temporal references restored",
                extra={"event": "references_restored", "clients": len(references)},
            )

    async def start(self) -> None:
        """Open (or create) the database, restore the open round, start the deadline clock."""
        model, engine, record, finished = await self._in_db(self._load)
        self._base, self._engine = model, engine
        self._stream_digest = engine.stream_digest
        if record is not None:
            self._round = await self._restore_round(record)
        self._finished = finished
        if finished:
            self._finished_event.set()
        self._registered = await self._in_db(self.store.registered_clients)
        self._running = True
        self._refresh_gauges()
        self._deadline_task = asyncio.create_task(self._deadline_loop(), name="fedcodec-deadlines")
        rnd = self._round
        if rnd is not None and len(rnd.reported) >= self.config.rounds.target_clients:
            # Full before the restart (e.g. killed while aggregating): aggregate now, not at
            # the deadline.
            log.info(
                "the restored round is full; aggregating",
                extra={"event": "restored_round_full", "round_id": rnd.round_id},
            )
            self._spawn(self._close(rnd, "target reached"))

    def _undecodable_updates(self, round_id: int) -> list[str]:
        """Clients whose stored update needs a temporal reference the server does not hold
        (runs in the database thread)."""
        lost = []
        for update, payload in self.store.iter_updates(round_id):
            try:
                temporal_reference_for(payload, update.client_id, self.references, self.spec.shapes)
            except UpdateRejectedError:
                lost.append(update.client_id)
            except (FedCodecError, ValueError):
                continue  # validated when it arrived; the aggregation reports it
        return lost

    async def _restore_round(self, record: RoundRecord) -> _Round:
        # References are saved with each round; an update of the open round coded against
        # one the database lacks (forgotten, or saved before references were) cannot be
        # decoded after a restart.  Dropped (logged), so the round does not wait for it and
        # its client, still selected, takes part again.
        lost = await self._in_db(self._undecodable_updates, record.round_id)
        if lost:
            await self._in_db(self.store.drop_updates, record.round_id, lost)
            for client_id in lost:
                log.warning(
                    "a stored update coded against a temporal reference lost in the restart "
                    "was dropped; the client may send again",
                    extra={
                        "event": "reference_update_dropped",
                        "round_id": record.round_id,
                        "client_id": client_id,
                    },
                )
        selected = await self._in_db(self.store.selections, record.round_id)
        reported: dict[str, tuple[str, int, int]] = {}
        for client_id in await self._in_db(self.store.reported, record.round_id):
            reported[client_id] = ("", -1, -1)  # resends are recognised through the database
        return _Round(record=record, selected=selected, reported=reported, committed=set(reported))

    async def stop(self) -> None:
        """Stop taking work, let a running aggregation commit, close the database."""
        self._stopping = True
        if self._deadline_task is not None:
            self._deadline_task.cancel()
            await asyncio.gather(self._deadline_task, return_exceptions=True)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._store is not None:
            await self._in_db(self._store.close)
            self._store = None
        self._db_executor.shutdown(wait=True)
        self._running = False

    async def wait_finished(self) -> None:
        """Return when the last round has been aggregated."""
        await self._finished_event.wait()

    def _check_running(self) -> None:
        if self._stopping or not self._running:
            raise ShuttingDownError("the server is shutting down")

    def _refresh_gauges(self) -> None:
        m = self.metrics
        m.round.set(self.open_round_id)
        m.model_version.set(self._need_base().version)
        rnd = self._round
        m.clients.labels("selected").set(0 if rnd is None else len(rnd.selected))
        m.clients.labels("reported").set(0 if rnd is None else len(rnd.reported))
        m.clients.labels("registered").set(self._registered)

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- models -------------------------------------------------------------

    def global_model(self) -> ModelVersion:
        """The newest exact global model."""
        return self._need_base()

    @property
    def initial(self) -> InitialRef | None:
        """The shared initial model of the federation (None: a keyframe stream)."""
        return self._need_engine().initial

    def stream_model(self) -> ModelVersion:
        """The newest model as clients reconstruct it from the downlink."""
        with self._downlink_lock:
            return self._need_engine().stream_model()

    async def package_for(
        self,
        client_id: str,
        *,
        have_version: int | None,
        have_digest: str | None,
        force_keyframe: bool = False,
        initial_digest: str | None = None,
        want_initial: bool = False,
        delta_references: bool = False,
        holds_delta: bool = False,
        compact: bool = False,
    ) -> DownlinkPackage:
        """What ``client_id`` needs to reach the newest version (the engine's rule).

        ``delta_references``: the client decodes deltas coded against the previous
        version's delta (``downlink.temporal_reference``); ``holds_delta``: it holds the
        decoded delta of ``have_version``, so the first delta may be coded against it.
        ``compact``: the client reads compact containers (the package's are rewritten).

        Raises
        ------
        InitialModelMismatchError
            The federation starts from a shared initial model the client does not hold
            (and may not, or did not ask to, receive).
        """
        self._check_running()

        def job() -> DownlinkPackage:
            with self._downlink_lock:
                return self._need_engine().package_for(
                    client_id,
                    have_version=have_version,
                    have_digest=have_digest or None,
                    initial_digest=initial_digest or None,
                    force_keyframe=force_keyframe,
                    want_initial=want_initial,
                    holds_delta=holds_delta,
                    delta_references=delta_references,
                    compact=compact,
                )

        try:
            package = await asyncio.to_thread(job)
        except InitialModelError as exc:
            raise InitialModelMismatchError(str(exc)) from exc
        size = len(package)
        self.metrics.bytes_down.inc(size)
        if package.is_keyframe:
            self.metrics.keyframes.inc()
        if package.held_delta_reference:
            self.metrics.held_delta_references.inc()
        if package.initial is not None:
            self.metrics.initial_models_sent.inc()
            if client_id not in self._initial_sent:
                self._initial_sent.add(client_id)
                log.warning(
                    "client %r does not hold the shared initial model: sending it (%d bytes, "
                    "4 per weight, once); give the client the initial model "
                    "(EdgeClient(initial_model=...), fedcodec client --initial-model) to "
                    "spare that, or set downlink.send_initial = false to refuse it",
                    client_id,
                    len(package.initial),
                )
        if self._round is not None:
            self._round.bytes_down += size
        return package

    async def stored_updates(self, round_id: int | None = None) -> list[str]:
        """Clients whose update for ``round_id`` (default: the open round) is stored."""
        rid = self.open_round_id if round_id is None else round_id
        return await self._in_db(self.store.reported, rid)

    async def history(self) -> list[dict[str, Any]]:
        """Every aggregated round (ids, versions, times, statistics)."""
        return await self._in_db(self.store.round_history)

    # -- check-in -----------------------------------------------------------

    def _has_room(self, rnd: _Round) -> bool:
        window = rnd.record.window
        pending = sum(1 for c, w in rnd.selected.items() if w == window and c not in rnd.reported)
        return len(rnd.reported) + pending < self.config.rounds.target_clients

    def _round_info(self, rnd: _Round, client_id: str) -> RoundInfo:
        return RoundInfo(
            round_id=rnd.round_id,
            base_version=rnd.record.base_version,
            base_digest=self._stream_digest,
            params=rnd.record.params.for_client(client_id),
            deadline=rnd.record.deadline,
            spec=self.spec,
            max_update_bytes=self.max_update_bytes,
            max_chunk_bytes=self.max_chunk_bytes,
            initial=self._need_engine().initial,
            temporal_reference=self.references is not None,
            # the round engine reads compact update containers (codec FORMAT.md §2-3)
            compact_updates=True,
        )

    async def check_in(self, client_id: str) -> CheckIn:
        """Select ``client_id`` for the open round if there is room, else say when to return."""
        self._check_running()
        latest = self._need_base().version
        rnd = self._round
        retry = self.config.rounds.retry_after_s
        if rnd is None:
            kind = Assignment.FINISHED if self._finished else Assignment.NOT_SELECTED
            return CheckIn(kind, None, retry, 0, latest)
        if client_id in rnd.reported:
            return CheckIn(Assignment.ALREADY_REPORTED, None, retry, rnd.round_id, latest)
        if rnd.closing:
            return CheckIn(Assignment.NOT_SELECTED, None, retry, rnd.round_id, latest)
        if client_id not in rnd.selected:
            if (
                not self._has_room(rnd)
                or self._rng.random() >= self.config.rounds.selection_probability
            ):
                return CheckIn(Assignment.NOT_SELECTED, None, retry, rnd.round_id, latest)
            # Reserved before the write: concurrent check-ins see the room taken.
            rnd.selected[client_id] = rnd.record.window
            try:
                new_client = await self._in_db(
                    self.store.add_selection,
                    rnd.round_id,
                    client_id,
                    rnd.record.window,
                    self._clock(),
                )
            except BaseException:
                rnd.selected.pop(client_id, None)
                raise
            self._registered += new_client
            self._refresh_gauges()
            log.info(
                "client selected",
                extra={
                    "event": "client_selected",
                    "round_id": rnd.round_id,
                    "client_id": client_id,
                },
            )
        return CheckIn(
            Assignment.SELECTED, self._round_info(rnd, client_id), retry, rnd.round_id, latest
        )

    # -- uploads ------------------------------------------------------------

    def _check_round(self, client_id: str, h: UploadHeader) -> _Round:
        rnd = self._round
        if rnd is None:
            raise RoundNotOpenError(f"round {h.round_id} is not open: no round is")
        if h.round_id != rnd.round_id:
            state = "closed" if h.round_id < rnd.round_id else "not open yet"
            raise RoundNotOpenError(f"round {h.round_id} is {state} (round {rnd.round_id} is open)")
        if rnd.closing:
            raise RoundNotOpenError(f"round {h.round_id} is closing; it takes no more updates")
        if client_id not in rnd.selected:
            raise NotSelectedError(f"{client_id!r} was not selected for round {rnd.round_id}")
        if client_id in rnd.reported:
            raise ConflictingUpdateError(
                f"{client_id!r} already delivered an update in round {rnd.round_id} "
                "(with another idempotency key)"
            )
        if h.base_version != rnd.record.base_version:
            issued = h.base_version < rnd.record.base_version
            raise BaseVersionError(
                f"round {rnd.round_id} aggregates updates against version "
                f"{rnd.record.base_version}; version {h.base_version} is "
                + ("stale" if issued else "unknown")
            )
        if not 1 <= h.num_examples <= self.config.robust.max_num_examples:
            raise InvalidUpdateError(
                f"num_examples must be in 1..{self.config.robust.max_num_examples}, "
                f"got {h.num_examples}"
            )
        return rnd

    async def precheck(self, client_id: str, h: UploadHeader) -> UploadReceipt | None:
        """Check an upload's header before its payload is read.

        Returns
        -------
        UploadReceipt or None
            A receipt when this is a resend of a stored update (no need to read the
            payload), else None: go on and :meth:`submit`.

        Raises
        ------
        ServerError
            The upload would be refused.
        """
        self._check_running()
        if h.total_bytes > self.max_update_bytes:
            raise UpdateTooLargeError(
                f"the update has {h.total_bytes} bytes, above the size limit of "
                f"{self.max_update_bytes}"
            )
        if h.total_bytes < 1:
            raise InvalidUpdateError("an update has at least one byte")
        if not h.idempotency_key or len(h.idempotency_key) > 128:
            raise InvalidUpdateError("an upload needs an idempotency key of 1..128 characters")
        rnd = self._round
        if rnd is not None and h.round_id == rnd.round_id:
            stored = rnd.reported.get(client_id)
            if stored is None:
                # A first upload to the open round: memory knows every update stored in it
                # (rebuilt from the database at start), so no lookup is needed.
                self._check_round(client_id, h)
                return None
            if _receipt_matches(stored, h):
                if client_id not in rnd.committed:
                    return None  # its original is still committing: submit waits for it
                self.metrics.updates_accepted.labels("already_accepted").inc()
                return UploadReceipt(True, rnd.round_id, h.total_bytes, len(rnd.reported))
        prior = await self._in_db(self.store.update_by_key, client_id, h.idempotency_key)
        if prior is not None:
            if (prior.size, prior.crc32) != (h.total_bytes, h.crc32):
                raise ConflictingUpdateError(
                    f"idempotency key {h.idempotency_key!r} was used for another update"
                )
            self.metrics.updates_accepted.labels("already_accepted").inc()
            rnd = self._round
            count = (
                len(rnd.reported)
                if rnd is not None and rnd.round_id == prior.round_id
                else len(await self._in_db(self.store.reported, prior.round_id))
            )
            return UploadReceipt(True, prior.round_id, prior.size, count)
        self._check_round(client_id, h)
        return None

    def _client_lock(self, client_id: str) -> asyncio.Lock:
        rnd = self._round
        if rnd is None:
            return asyncio.Lock()
        lock = rnd.locks.get(client_id)
        if lock is None:
            lock = rnd.locks[client_id] = asyncio.Lock()
        return lock

    def _validate(self, client_id: str, h: UploadHeader, payload: bytes) -> ClientRoundStats:
        # The engine's checks (robust per-update rules included), with no model-sized
        # accumulator; duplicates and the round are the coordinator's own bookkeeping.
        return self._need_engine().validate_update(
            payload,
            client_id=client_id,
            base_version=h.base_version,
            num_examples=h.num_examples,
            base_digest=h.base_digest or None,
        )

    async def submit(self, client_id: str, h: UploadHeader, payload: bytes) -> UploadReceipt:
        """Validate and durably store an update; return once it is committed.

        Raises
        ------
        ServerError
            The update was refused; nothing was stored.
        """
        # One upload per client at a time: a resend racing its original waits for it.
        async with self._client_lock(client_id):
            receipt = await self.precheck(client_id, h)
            if receipt is not None:
                return receipt
            if len(payload) != h.total_bytes or zlib.crc32(payload) != h.crc32:
                raise InvalidUpdateError("the payload does not match its declared size and CRC")
            rnd = self._check_round(client_id, h)
            async with self._decode_slots:
                try:
                    stats = await asyncio.to_thread(self._validate, client_id, h, payload)
                except (UnknownBaseVersionError, StaleBaseVersionError) as exc:
                    raise BaseVersionError(str(exc)) from exc
                except RobustRejectionError as exc:
                    self.metrics.robust_actions.labels(exc.action).inc()
                    log.warning(
                        "update refused by the robust-aggregation policy",
                        extra={
                            "event": "update_refused_robust",
                            "round_id": rnd.round_id,
                            "client_id": client_id,
                            "action": exc.action,
                            "reason": str(exc),
                        },
                    )
                    raise InvalidUpdateError(f"update of {client_id!r} refused: {exc}") from exc
                except BaseDigestMismatchError as exc:
                    raise BaseVersionError(
                        f"base digest {h.base_digest[:16]}… is not a digest of version "
                        f"{h.base_version}"
                    ) from exc
                except (FedCodecError, ValueError) as exc:
                    raise InvalidUpdateError(f"update of {client_id!r} refused: {exc}") from exc
            self.metrics.decode_seconds.observe(stats.decode_seconds)
            if self._round is not rnd:
                raise RoundNotOpenError(f"round {rnd.round_id} closed while the update was checked")
            self._check_round(client_id, h)
            rnd.reported[client_id] = (h.idempotency_key, h.total_bytes, h.crc32)
            record = UpdateRecord(
                round_id=rnd.round_id,
                client_id=client_id,
                idempotency_key=h.idempotency_key,
                base_version=h.base_version,
                base_digest=h.base_digest,
                num_examples=h.num_examples,
                size=len(payload),
                crc32=h.crc32,
                sha256=hashlib.sha256(payload).digest(),
                received_at=self._clock(),
            )
            commit = self._commit(record, payload)
            rnd.pending.add(commit)

            def settle(done: asyncio.Future[None], client: str = client_id) -> None:
                rnd.pending.discard(done)
                if done.cancelled() or done.exception() is not None:
                    rnd.reported.pop(client, None)
                else:
                    rnd.committed.add(client)

            commit.add_done_callback(settle)
            try:
                # Shielded: a client that disconnects now does not stop the commit; its
                # resend (same idempotency key) then finds the update stored.
                await asyncio.shield(commit)
            except sqlite3.IntegrityError as exc:
                raise ConflictingUpdateError(
                    f"{client_id!r} already delivered an update in round {rnd.round_id}"
                ) from exc
            except StoreError as exc:
                raise RoundNotOpenError(f"round {rnd.round_id} is not open") from exc
            except OverflowError as exc:
                raise InvalidUpdateError(f"a header field is out of range: {exc}") from exc
        self.metrics.updates_accepted.labels("accepted").inc()
        self._refresh_gauges()
        log.info(
            "update accepted",
            extra={
                "event": "update_accepted",
                "round_id": rnd.round_id,
                "client_id": client_id,
                "bytes": len(payload),
                "num_examples": h.num_examples,
                "decode_ms": round(1000 * stats.decode_seconds, 3),
                "accepted_in_round": len(rnd.reported),
            },
        )
        if len(rnd.reported) >= self.config.rounds.target_clients and not rnd.closing:
            self._spawn(self._close(rnd, "target reached"))
        return UploadReceipt(False, rnd.round_id, len(payload), len(rnd.reported))

    def _commit(self, record: UpdateRecord, payload: bytes) -> asyncio.Future[None]:
        """Queue an update for the next group commit; the future resolves once it is durable."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._commit_queue.append((record, payload, future))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_batches())
        return future

    async def _commit_batches(self) -> None:
        # Whatever queued up while the previous transaction ran goes into the next one:
        # one fsync for many uploads when they arrive together.
        while self._commit_queue:
            batch, self._commit_queue = self._commit_queue, []
            try:
                results = await self._in_db(
                    self.store.insert_updates, [(record, payload) for record, payload, _ in batch]
                )
            except Exception as exc:
                for *_, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (*_, future), error in zip(batch, results, strict=True):
                if future.done():
                    continue
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(error)

    # -- closing rounds -------------------------------------------------------

    async def _deadline_loop(self) -> None:
        while not self._stopping:
            rnd = self._round
            timeout: float | None = None
            if rnd is not None and not rnd.closing:
                timeout = rnd.record.deadline - self._clock()
                if timeout <= 0:
                    try:
                        await self._on_deadline(rnd)
                    except Exception:
                        log.exception(
                            "deadline handling failed; retrying",
                            extra={"event": "deadline_failed", "round_id": rnd.round_id},
                        )
                        await asyncio.sleep(1.0)
                    continue
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=timeout)

    async def _on_deadline(self, rnd: _Round) -> None:
        if len(rnd.reported) >= self.config.rounds.min_clients:
            await self._close(rnd, "deadline")
            return
        # Too few updates: keep them, give the round more time, and let new clients replace
        # the selected ones that did not report (dropouts, stragglers).
        now = self._clock()
        window = rnd.record.window + 1
        deadline = now + self.config.rounds.deadline_s
        await self._in_db(self.store.extend_round, rnd.round_id, deadline, window)
        rnd.record = RoundRecord(
            round_id=rnd.record.round_id,
            base_version=rnd.record.base_version,
            params=rnd.record.params,
            state="open",
            opened_at=rnd.record.opened_at,
            deadline=deadline,
            window=window,
        )
        log.warning(
            "round extended",
            extra={
                "event": "round_extended",
                "round_id": rnd.round_id,
                "reported": len(rnd.reported),
                "min_clients": self.config.rounds.min_clients,
                "deadline": deadline,
            },
        )

    async def _close(self, rnd: _Round, reason: str) -> None:
        if rnd.closing or self._round is not rnd:
            return
        rnd.closing = True
        # Updates reserved before the round started closing are part of it: wait until
        # their commits are durable (or failed) before the database is read.
        if rnd.pending:
            await asyncio.gather(*rnd.pending, return_exceptions=True)
        started = time.perf_counter()
        try:
            model, stats, next_record = await self._in_db(self._aggregate, rnd)
        except Exception:
            log.exception(
                "aggregation failed; the round stays open",
                extra={"event": "aggregation_failed", "round_id": rnd.round_id},
            )
            rnd.closing = False
            self._changed.set()
            return
        finalize_seconds = time.perf_counter() - started
        self._base = model
        self._stream_digest = self._need_engine().stream_digest
        self._round = None if next_record is None else _Round(next_record, {}, {})
        self._finished = next_record is None
        summary = RoundSummary(
            round_id=rnd.round_id,
            stats=stats,
            new_version=model.version,
            stream_digest=self._stream_digest,
            seconds=self._clock() - rnd.record.opened_at,
            finalize_seconds=finalize_seconds,
            reason=reason,
            finished=self._finished,
        )
        m = self.metrics
        m.rounds.inc()
        m.round_seconds.observe(summary.seconds)
        m.finalize_seconds.observe(finalize_seconds)
        self._refresh_gauges()
        log.info(
            "round aggregated",
            extra={
                "event": "round_aggregated",
                "round_id": rnd.round_id,
                "reason": reason,
                "updates": len(stats.updates),
                "examples": stats.num_examples,
                "bytes_up": stats.bytes_up,
                "bytes_down": stats.bytes_down,
                "version": model.version,
                "finalize_ms": round(1000 * finalize_seconds, 1),
                "next_round_id": 0 if next_record is None else next_record.round_id,
            },
        )
        for listener in self._listeners:
            try:
                listener(summary)
            except Exception:
                log.exception("a round listener failed", extra={"event": "listener_failed"})
        if self._finished:
            self._finished_event.set()
        self._changed.set()

    def _aggregate(self, rnd: _Round) -> tuple[ModelVersion, RoundStats, RoundRecord | None]:
        """Aggregate the stored updates and commit the round (runs in the database thread)."""
        store = self.store
        engine = self._need_engine()

        def skipped(sub: Submission, exc: Exception) -> None:
            if not isinstance(exc, FedCodecError | ValueError):
                raise exc
            # Validated when it arrived; a failure now is a bug or a damaged database.
            log.error(
                "a stored update no longer decodes; left out",
                exc_info=exc,
                extra={
                    "event": "stored_update_skipped",
                    "round_id": rnd.round_id,
                    "client_id": sub.client_id,
                },
            )

        def stored() -> Iterator[Submission]:
            for record, payload in store.iter_updates(rnd.round_id):
                yield Submission(
                    payload,
                    record.client_id,
                    record.base_version,
                    record.num_examples,
                    record.base_digest or None,
                )

        # Pass 1 screens every stored update (norms for the round-level rules); pass 2
        # (in publish) reads them again and combines them: memory stays O(model).
        aggregator = engine.aggregate(stored(), on_reject=skipped, keep_payloads=False)
        now = self._clock()
        with self._downlink_lock:
            before = engine.checkpoint()
            try:
                outcome = engine.publish(
                    aggregator,
                    round_index=rnd.round_id - 1,
                    bytes_down=rnd.bytes_down,
                    payloads=((sub.client_id, sub.data) for sub in stored()),
                )
                engine.downlink.keyframe()  # coded once now, not by the first client needing it
                next_record = (
                    self._open_record(rnd.round_id + 1, outcome.model.version, outcome.stats)
                    if self._more_rounds(rnd.round_id)
                    else None
                )
                store.finish_round(
                    rnd.round_id,
                    outcome.model,
                    engine.state(),
                    engine.stream_digest,
                    outcome.stats,
                    next_record,
                    keep_model_blobs=self.config.limits.keep_model_blobs,
                    now=now,
                    references=self._round_references(outcome.stats),
                    keep_references=self.config.rounds.client_references,
                )
            except BaseException:
                # Nothing was committed: go back to the engine as it was.
                engine.restore(before)
                raise
        self._report_plan(rnd.round_id, aggregator)
        return outcome.model, outcome.stats, next_record

    def _round_references(self, stats: RoundStats) -> list[tuple[str, bytes]]:
        """The temporal references a round stored, to persist with it."""
        references = self.references
        if references is None:
            return []
        out = []
        for update in stats.updates:
            blob = references.to_bytes(update.client_id)
            if blob is not None:
                out.append((update.client_id, blob))
        return out

    def _report_plan(self, round_id: int, aggregator: Aggregator) -> None:
        """Count and log what the robust-aggregation rules did in a round."""
        plan = aggregator.plan
        if plan is None:
            return
        actions = self.metrics.robust_actions
        for client_id, reason in sorted(plan.rejected.items()):
            actions.labels("rejected_norm").inc()
            log.warning(
                "update left out of the aggregate",
                extra={
                    "event": "update_rejected_robust",
                    "round_id": round_id,
                    "client_id": client_id,
                    "reason": reason,
                },
            )
        for client_id in plan.clipped:
            actions.labels("clipped").inc()
            log.warning(
                "update clipped to the norm bound",
                extra={
                    "event": "update_clipped",
                    "round_id": round_id,
                    "client_id": client_id,
                    "scale": plan.scales[client_id],
                    "bound": plan.bound,
                    "median_norm": plan.median_norm,
                },
            )
        for client_id in plan.capped:
            actions.labels("share_capped").inc()
            log.warning(
                "update's weight capped",
                extra={
                    "event": "update_share_capped",
                    "round_id": round_id,
                    "client_id": client_id,
                    "share": plan.shares[client_id],
                    "max_share": aggregator.policy.max_share,
                },
            )

    async def close_round_now(self, reason: str = "operator") -> bool:
        """Aggregate the open round now if it has ``min_clients`` updates (admin, tests).

        Returns
        -------
        bool
            Whether a round was aggregated.
        """
        rnd = self._round
        if rnd is None or len(rnd.reported) < self.config.rounds.min_clients:
            return False
        await self._close(rnd, reason)
        return self._round is not rnd
