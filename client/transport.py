"""The edge client's connection: channel, token, retries with backoff, chunked transfers.

:class:`Connection` makes the three calls of ``fedcodec.v1.AggregationService`` and the
gRPC health check.  Every call carries ``authorization: Bearer <token>``; transient
failures (UNAVAILABLE, DEADLINE_EXCEEDED, ABORTED, INTERNAL, UNKNOWN, CANCELLED: a
restarting or overloaded server, a dropped connection; and RESOURCE_EXHAUSTED from a server
at its concurrent-call limit, from its admission control, or with a full disk — every
refusal whose message carries :data:`RETRY_MARK`) are retried with exponential backoff and
jitter.  An upload is safe
to retry: it carries an idempotency key, and the server answers a resend of a stored
update with ``UPLOAD_STATUS_ALREADY_ACCEPTED`` instead of counting it twice.

A call's tries can be bounded as a whole (:attr:`RetryPolicy.call_deadline_s`): each try
goes out with gRPC's own deadline set to what is left of it (the server sees that deadline
too), no backoff wait ends past it (the last one is cut for one last try), and when it runs
out the call raises
:class:`~fedcodec.client.errors.DeadlineExceededError`.  The retries themselves stay ours,
not gRPC's service-config ``retryPolicy``: that one cannot tell a "retry later" refusal
from a final RESOURCE_EXHAUSTED by its message, and replays a client stream only from a
bounded buffer (uploads are larger).
"""

from __future__ import annotations

import logging
import math
import random
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar, cast

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fedcodec.client.errors import (
    AuthenticationError,
    DeadlineExceededError,
    ProtocolError,
    ServerUnavailableError,
    UpdateRefusedError,
)
from fedcodec.pipeline import DownlinkPackage
from fedcodec.v1 import aggregation_service_pb2 as pb
from fedcodec.v1 import aggregation_service_pb2_grpc as pb_grpc
from fedcodec.wire import WireError, package_from_wire

__all__ = ["MAX_CHUNK_BYTES", "RETRY_MARK", "Connection", "RetryPolicy", "iter_upload_requests"]

log = logging.getLogger("fedcodec.client")

#: Upload chunk size: well below the server's 4 MiB message limit.
MAX_CHUNK_BYTES = 1 << 20
#: gRPC's detail when a server is at its concurrent-call limit: the one RESOURCE_EXHAUSTED
#: worth retrying (a too-large update or message is final).
BUSY_MARK = "Concurrent RPC limit"
#: In the message of every server refusal that a resend can cure (the server's
#: ``fedcodec.server.errors.RETRY_MARK``): busy, storage full.
RETRY_MARK = "retry later"

_T = TypeVar("_T")

_RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        # A server that cancels a call (overload, shutdown) did not refuse the update.
        grpc.StatusCode.CANCELLED,
    }
)
_AUTH = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED})


@dataclass(frozen=True)
class RetryPolicy:
    """How transient failures are retried.

    Attributes
    ----------
    attempts : int
        Tries per call (>= 1).
    initial_backoff_s, max_backoff_s : float
        First wait, and the cap; the wait grows by ``multiplier`` per try.
    multiplier : float
        Growth per try.
    jitter : float
        Each wait is scaled by a random factor in ``[1 - jitter, 1 + jitter]`` so clients
        that lost the server together do not come back together.
    call_timeout_s : float
        Deadline of one try (per chunked transfer, the whole stream).
    call_deadline_s : float, optional
        Deadline of a whole call, all its tries and the waits between them (default: none,
        the call ends when its tries run out: up to ``attempts * call_timeout_s`` plus the
        waits, about 16 minutes with the defaults when the server never answers).  Each
        try's gRPC deadline is the smaller of ``call_timeout_s`` and what is left; a wait
        that would end past it is cut to half of what is left, for one last try.  When it
        runs out the call raises :class:`~fedcodec.client.errors.DeadlineExceededError`.
    """

    attempts: int = 8
    initial_backoff_s: float = 0.25
    max_backoff_s: float = 10.0
    multiplier: float = 2.0
    jitter: float = 0.25
    call_timeout_s: float = 120.0
    call_deadline_s: float | None = None

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be >= 1")
        if self.call_deadline_s is not None and not self.call_deadline_s > 0:
            raise ValueError("call_deadline_s must be > 0 (or None: no deadline)")
        if not (0 <= self.jitter < 1) or self.initial_backoff_s < 0 or self.multiplier < 1:
            raise ValueError("need 0 <= jitter < 1, initial_backoff_s >= 0, multiplier >= 1")

    def delays(self, rng: random.Random) -> Iterator[float]:
        """The waits between tries (``attempts - 1`` of them)."""
        wait = self.initial_backoff_s
        for _ in range(self.attempts - 1):
            yield min(wait, self.max_backoff_s) * rng.uniform(1 - self.jitter, 1 + self.jitter)
            wait *= self.multiplier


def iter_upload_requests(
    header: pb.UploadHeader, payload: bytes, chunk_bytes: int = MAX_CHUNK_BYTES
) -> Iterator[pb.UploadUpdateRequest]:
    """The messages of one upload: the header, then the payload in chunks."""
    yield pb.UploadUpdateRequest(header=header)
    view = memoryview(payload)
    for offset in range(0, len(payload), chunk_bytes):
        yield pb.UploadUpdateRequest(chunk=bytes(view[offset : offset + chunk_bytes]))


def _read(path: str | None, what: str) -> bytes | None:
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read {what} {path!r}: {exc}") from exc


def _status_error(exc: grpc.RpcError, what: str) -> Exception:
    # The errors of calls are also grpc.Call objects (the stubs do not say so).
    code_of, details_of = getattr(exc, "code", None), getattr(exc, "details", None)
    code = cast(grpc.StatusCode, code_of()) if callable(code_of) else grpc.StatusCode.UNKNOWN
    raw = details_of() if callable(details_of) else str(exc)
    detail = str(raw) if raw else ""
    message = f"{what}: {code.name}: {detail}"
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and (BUSY_MARK in detail or RETRY_MARK in detail):
        return ServerUnavailableError(message, status=code.name, detail=detail)
    if code in _AUTH:
        return AuthenticationError(message, status=code.name, detail=detail)
    if code in _RETRYABLE:
        return ServerUnavailableError(message, status=code.name, detail=detail)
    return UpdateRefusedError(message, status=code.name, detail=detail)


class Connection:
    """One client's connection to the aggregation server.

    Parameters
    ----------
    target : str
        ``host:port`` of the server.
    token : str
        This client's bearer token.
    client_id : str, optional
        Sent with check-ins; the server checks it against the token.
    tls_ca : str, optional
        PEM file of the CA that signed the server certificate (default: the system's).
    insecure : bool, optional
        Plaintext (only when asked for explicitly: loopback tests and demos).
    server_name : str, optional
        Expected name in the server certificate, when it differs from the target host.
    client_cert, client_key : str, optional
        PEM files for mutual TLS.
    retry : RetryPolicy, optional
        Retries of transient failures.
    max_message_bytes : int, optional
        gRPC message limit (chunks are 1 MiB).
    """

    def __init__(
        self,
        target: str,
        token: str,
        *,
        client_id: str = "",
        tls_ca: str | None = None,
        insecure: bool = False,
        server_name: str | None = None,
        client_cert: str | None = None,
        client_key: str | None = None,
        retry: RetryPolicy | None = None,
        max_message_bytes: int = 4 << 20,
    ) -> None:
        self.target = target
        self.client_id = client_id
        self.retry = retry or RetryPolicy()
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._rng = random.Random()
        options: list[tuple[str, str | int]] = [
            # The server sends one 1 MiB chunk per message; never whole models.
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.keepalive_time_ms", 60_000),
            ("grpc.keepalive_timeout_ms", 20_000),
        ]
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        if insecure:
            self._channel = grpc.insecure_channel(target, options=options)
        else:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=_read(tls_ca, "the CA certificate"),
                private_key=_read(client_key, "the client key"),
                certificate_chain=_read(client_cert, "the client certificate"),
            )
            self._channel = grpc.secure_channel(target, credentials, options=options)
        self._stub = pb_grpc.AggregationServiceStub(self._channel)
        self._health = health_pb2_grpc.HealthStub(self._channel)

    def close(self) -> None:
        """Close the channel."""
        self._channel.close()

    def _call(self, what: str, fn: Callable[[float], _T]) -> _T:
        """``fn(timeout)`` with retries; ``timeout`` is the gRPC deadline of one try."""
        delays = self.retry.delays(self._rng)
        budget = self.retry.call_deadline_s
        deadline = None if budget is None else time.monotonic() + budget
        tries = 0
        last_try = False
        while True:
            timeout = self._try_timeout(deadline)
            tries += 1
            try:
                return fn(timeout)
            except grpc.RpcError as exc:
                error = _status_error(exc, what)
                if not isinstance(error, ServerUnavailableError):
                    raise error from exc
                wait = next(delays, None)
                remaining = math.inf if deadline is None else deadline - time.monotonic()
                if remaining <= 0 or last_try:
                    raise DeadlineExceededError(
                        f"{what}: no answer within the call deadline of {budget:g} s "
                        f"({tries} {'try' if tries == 1 else 'tries'}; last: "
                        f"{error.status}: {error.detail})",
                        status=error.status,
                        detail=error.detail,
                    ) from exc
                if wait is None:
                    raise error from exc
                if wait >= remaining:
                    # One last try, with half of what is left; no wait ends past the deadline.
                    wait, last_try = remaining / 2, True
                log.info(
                    "retrying",
                    extra={
                        "event": "retry",
                        "call": what,
                        "status": error.status,
                        "wait_s": round(wait, 3),
                    },
                )
                time.sleep(wait)

    def _try_timeout(self, deadline: float | None) -> float:
        """The gRPC deadline of the next try: ``call_timeout_s``, or less when the call's
        deadline comes first."""
        if deadline is None:
            return self.retry.call_timeout_s
        return max(0.0, min(self.retry.call_timeout_s, deadline - time.monotonic()))

    def health(self, service: str = "") -> bool:
        """Whether the server's health service reports SERVING (no retries, no token)."""
        return self.health_status(service) == "SERVING"

    def health_status(self, service: str = "") -> str:
        """What the server's health service says (no retries, no token).

        Returns
        -------
        str
            ``"SERVING"``, ``"NOT_SERVING"`` (e.g. shutting down), ``"SERVICE_UNKNOWN"``,
            or, when no answer came, the gRPC status and its details, e.g.
            ``"UNAVAILABLE: failed to connect to all addresses ..."`` (nothing listens there).
        """
        try:
            response = self._health.Check(
                health_pb2.HealthCheckRequest(service=service),
                timeout=min(self.retry.call_timeout_s, self.retry.call_deadline_s or math.inf),
            )
        except grpc.RpcError as exc:
            code = exc.code() if callable(getattr(exc, "code", None)) else None
            details = exc.details() if callable(getattr(exc, "details", None)) else ""
            name = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
            return f"{name}: {details}" if details else name
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))

    def check_in(self) -> pb.GetRoundConfigResponse:
        """``GetRoundConfig``, with retries."""
        request = pb.GetRoundConfigRequest(client_id=self.client_id)
        return self._call(
            "GetRoundConfig",
            lambda timeout: self._stub.GetRoundConfig(
                request, metadata=self._metadata, timeout=timeout
            ),
        )

    def download(
        self,
        have_version: int | None,
        have_digest: str | None,
        *,
        force_keyframe: bool = False,
        initial_digest: str | None = None,
        want_initial: bool = False,
        delta_references: bool = True,
        holds_delta: bool = False,
        compact: bool = False,
    ) -> DownlinkPackage:
        """``DownloadModel``: the package to reach the newest version, reassembled and checked.

        ``delta_references``: this client decodes deltas coded against the previous
        version's delta; ``holds_delta``: it holds the decoded delta of ``have_version``
        (:attr:`fedcodec.pipeline.ModelReceiver.holds_delta`); ``compact``: it reads
        compact containers (it knows the model's shapes).
        """
        request = pb.DownloadModelRequest(
            have_digest=have_digest or "",
            force_keyframe=force_keyframe,
            initial_digest=initial_digest or "",
            want_initial=want_initial,
            delta_references=delta_references,
            holds_delta=holds_delta and have_version is not None,
            compact=compact,
        )
        if have_version is not None:
            request.have_version = have_version

        def attempt(timeout: float) -> DownlinkPackage:
            stream = self._stub.DownloadModel(request, metadata=self._metadata, timeout=timeout)
            header: pb.ModelPackageHeader | None = None
            buffer = bytearray()
            for message in stream:
                if message.WhichOneof("payload") == "header":
                    header = message.header
                elif header is None:
                    raise ProtocolError("a download chunk arrived before the header")
                else:
                    buffer += message.chunk
                    if len(buffer) > header.total_bytes:
                        raise ProtocolError("the download is longer than its header says")
            if header is None:
                raise ProtocolError("the download had no header")
            if len(buffer) != header.total_bytes or sum(header.part_sizes) != len(buffer):
                raise ProtocolError(
                    f"the download has {len(buffer)} bytes, its header says {header.total_bytes}"
                )
            if zlib.crc32(buffer) != header.crc32:
                raise ProtocolError("the download's CRC-32 differs from its header's")
            parts: list[bytes] = []
            offset = 0
            for size in header.part_sizes:
                parts.append(bytes(buffer[offset : offset + size]))
                offset += size
            try:
                return package_from_wire(header, parts)
            except WireError as exc:
                raise ProtocolError(f"the download's header does not fit its parts: {exc}") from exc

        return self._call("DownloadModel", attempt)

    def upload(
        self,
        *,
        round_id: int,
        base_version: int,
        base_digest: str,
        idempotency_key: str,
        num_examples: int,
        payload: bytes,
        chunk_bytes: int = MAX_CHUNK_BYTES,
    ) -> pb.UploadUpdateResponse:
        """``UploadUpdate`` in chunks; resends (same key) after transient failures."""
        header = pb.UploadHeader(
            client_id=self.client_id,
            round_id=round_id,
            base_version=base_version,
            base_digest=base_digest,
            idempotency_key=idempotency_key,
            total_bytes=len(payload),
            crc32=zlib.crc32(payload),
            num_examples=num_examples,
        )
        return self._call(
            "UploadUpdate",
            lambda timeout: self._stub.UploadUpdate(
                iter_upload_requests(header, payload, chunk_bytes),
                metadata=self._metadata,
                timeout=timeout,
            ),
        )
