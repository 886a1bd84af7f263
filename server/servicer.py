"""The gRPC face of the round logic: proto ↔ domain, errors → status codes, nothing else.

Authentication happens here (the token is transport metadata); everything the federation
decides is in :class:`~fedcodec.server.rounds.RoundCoordinator`.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import zlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import IO, Any, NoReturn, TypeVar, cast

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import DecodeError
from google.protobuf.message import Message as ProtoMessage

from fedcodec.server.admission import Admission, AdmissionLimits
from fedcodec.server.auth import TokenRegistry
from fedcodec.server.errors import (
    RETRY_MARK,
    BaseVersionError,
    BusyError,
    ConflictingUpdateError,
    InitialModelMismatchError,
    InvalidUpdateError,
    NotSelectedError,
    RoundNotOpenError,
    ServerError,
    ShuttingDownError,
    StorageFullError,
    StorageUnavailableError,
    StreamTimeoutError,
    UpdateTooLargeError,
)
from fedcodec.server.metrics import Metrics
from fedcodec.server.rounds import (
    Assignment,
    RoundCoordinator,
    UploadHeader,
    UploadReceipt,
)
from fedcodec.v1 import aggregation_service_pb2 as pb
from fedcodec.v1 import aggregation_service_pb2_grpc as pb_grpc
from fedcodec.wire import package_to_wire, params_to_proto, round_info_to_proto, spec_to_proto

__all__ = [
    "MIN_CHUNK_BYTES",
    "STATUS_OF",
    "AggregationServicer",
    "add_to_server",
    "coding_params_to_proto",
    "model_spec_to_proto",
]

log = logging.getLogger("fedcodec.server")

_M = TypeVar("_M", bound=ProtoMessage)
_T = TypeVar("_T")

#: The status code of each refusal (the table in aggregation_service.proto).
STATUS_OF: dict[type[ServerError], grpc.StatusCode] = {
    InvalidUpdateError: grpc.StatusCode.INVALID_ARGUMENT,
    UpdateTooLargeError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    RoundNotOpenError: grpc.StatusCode.FAILED_PRECONDITION,
    BaseVersionError: grpc.StatusCode.FAILED_PRECONDITION,
    InitialModelMismatchError: grpc.StatusCode.FAILED_PRECONDITION,
    NotSelectedError: grpc.StatusCode.FAILED_PRECONDITION,
    ConflictingUpdateError: grpc.StatusCode.ALREADY_EXISTS,
    ShuttingDownError: grpc.StatusCode.UNAVAILABLE,
    StorageFullError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    StorageUnavailableError: grpc.StatusCode.UNAVAILABLE,
    BusyError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    StreamTimeoutError: grpc.StatusCode.DEADLINE_EXCEEDED,
}

_ASSIGNMENTS = {
    Assignment.SELECTED: pb.ASSIGNMENT_SELECTED,
    Assignment.NOT_SELECTED: pb.ASSIGNMENT_NOT_SELECTED,
    Assignment.ALREADY_REPORTED: pb.ASSIGNMENT_ALREADY_REPORTED,
    Assignment.FINISHED: pb.ASSIGNMENT_FINISHED,
}
# Uploads up to this size stay in memory while they arrive; larger ones go to a temporary
# file, so many concurrent uploads do not hold many update-sized buffers.
_SPOOL_IN_MEMORY = 1 << 20
#: Every chunk of an upload but the last carries at least this many bytes (or the round's
#: ``max_chunk_bytes`` if smaller); no chunk is empty.  Without a floor one client streaming
#: empty or 1-byte chunks kept the server's event loop busy (0.7 of a core for as long as
#: the stream's rate deadline allows: minutes for a large declared size).
MIN_CHUNK_BYTES = 4096

_Context = grpc.aio.ServicerContext[Any, Any]


#: Kept under their old names: the conversions live in :mod:`fedcodec.wire`.
coding_params_to_proto = params_to_proto
model_spec_to_proto = spec_to_proto


def _shown(claimed: str, limit: int = 64) -> str:
    """A client-supplied string as it may appear in a reply: quoted, at most ``limit``
    characters (an echoed megabyte made the reply's trailer exceed the client's metadata
    limit, so the client saw RESOURCE_EXHAUSTED "Stream removed" instead of the refusal)."""
    if len(claimed) <= limit:
        return repr(claimed)
    return f"{claimed[:limit]!r}… ({len(claimed)} characters)"


def _upload_response(receipt: UploadReceipt) -> pb.UploadUpdateResponse:
    return pb.UploadUpdateResponse(
        status=(
            pb.UPLOAD_STATUS_ALREADY_ACCEPTED
            if receipt.already_accepted
            else pb.UPLOAD_STATUS_ACCEPTED
        ),
        round_id=receipt.round_id,
        bytes_received=receipt.bytes_received,
        accepted_in_round=receipt.accepted_in_round,
    )


class AggregationServicer(pb_grpc.AggregationServiceServicer):
    """``fedcodec.v1.AggregationService`` over a :class:`RoundCoordinator`.

    Parameters
    ----------
    coordinator : RoundCoordinator
        The round logic.
    tokens : TokenRegistry
        Bearer tokens of the clients.
    metrics : Metrics
        Refusals are counted here (by status code).
    """

    def __init__(
        self, coordinator: RoundCoordinator, tokens: TokenRegistry, metrics: Metrics
    ) -> None:
        self._coordinator = coordinator
        self._tokens = tokens
        self._metrics = metrics
        lim = coordinator.config.limits
        self.admission = Admission(
            AdmissionLimits(
                max_uploads=lim.max_upload_streams,
                max_waiting_uploads=lim.max_waiting_uploads,
                wait_s=lim.admission_wait_s,
                large_payloads=lim.max_large_payloads,
                max_downloads=lim.max_download_streams,
                downloads_per_client=lim.downloads_per_client,
            )
        )
        admission = self.admission
        metrics.streams.labels("uploading").set_function(lambda: admission.uploads)
        metrics.streams.labels("waiting").set_function(lambda: admission.waiting)
        metrics.streams.labels("downloading").set_function(lambda: admission.downloads)
        self.idle_timeout_s = lim.stream_idle_timeout_s
        self.min_bytes_per_s = lim.min_stream_bytes_per_s

    async def _client(self, context: _Context, claimed: str, *, upload: bool) -> str:
        authorization = None
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                authorization = (
                    value if isinstance(value, str) else value.decode("utf-8", "replace")
                )
        client = self._tokens.client_for(authorization)
        if client is None:
            await self._abort(
                context,
                grpc.StatusCode.UNAUTHENTICATED,
                "missing or unknown token (send 'authorization: Bearer <token>')",
                upload=upload,
            )
        if claimed and claimed != client:
            await self._abort(
                context,
                grpc.StatusCode.PERMISSION_DENIED,
                f"this token belongs to another client than {_shown(claimed)}",
                upload=upload,
            )
        return client

    async def _abort(
        self,
        context: _Context,
        code: grpc.StatusCode,
        message: str,
        *,
        upload: bool,
    ) -> NoReturn:
        if upload:
            self._metrics.updates_rejected.labels(code.name).inc()
        await context.abort(code, message)

    async def _refuse(self, context: _Context, exc: ServerError, *, upload: bool) -> NoReturn:
        await self._abort(context, STATUS_OF[type(exc)], exc.message, upload=upload)

    async def GetRoundConfig(
        self, request: pb.GetRoundConfigRequest, context: _Context
    ) -> pb.GetRoundConfigResponse:
        """Check in (see the proto)."""
        client = await self._client(context, request.client_id, upload=False)
        try:
            answer = await self._coordinator.check_in(client)
        except ServerError as exc:
            await self._refuse(context, exc, upload=False)
        response = pb.GetRoundConfigResponse(
            assignment=_ASSIGNMENTS[answer.assignment],
            round_id=answer.open_round_id,
            latest_version=answer.latest_version,
            retry_after=Duration(
                seconds=int(answer.retry_after), nanos=int(answer.retry_after % 1 * 1e9)
            ),
        )
        if answer.round is not None:
            response.config.CopyFrom(round_info_to_proto(answer.round))
        return response

    async def DownloadModel(
        self, request: pb.DownloadModelRequest, context: _Context
    ) -> AsyncIterator[pb.DownloadModelResponse]:
        """Stream the package that brings the client to the newest version."""
        client = await self._client(context, "", upload=False)
        try:
            async with self.admission.download(client):
                async for message in self._download(client, request):
                    yield message
        except ServerError as exc:
            await self._refuse(context, exc, upload=False)

    async def _download(
        self, client: str, request: pb.DownloadModelRequest
    ) -> AsyncIterator[pb.DownloadModelResponse]:
        package = await self._coordinator.package_for(
            client,
            have_version=request.have_version if request.HasField("have_version") else None,
            have_digest=request.have_digest,
            force_keyframe=request.force_keyframe,
            initial_digest=request.initial_digest or None,
            want_initial=request.want_initial,
            delta_references=request.delta_references,
            holds_delta=request.holds_delta,
            compact=request.compact,
        )
        header, parts = package_to_wire(package, self._coordinator.initial)
        crc = 0
        for part in parts:
            crc = zlib.crc32(part, crc)
        header.crc32 = crc
        yield pb.DownloadModelResponse(header=header)
        step = self._coordinator.max_chunk_bytes
        for part in parts:
            view = memoryview(part)
            for offset in range(0, len(part), step):
                yield pb.DownloadModelResponse(chunk=bytes(view[offset : offset + step]))

    async def UploadUpdate(
        self,
        request_iterator: AsyncIterator[pb.UploadUpdateRequest],
        context: _Context,
    ) -> pb.UploadUpdateResponse:
        """Receive, check and store one update (nothing is kept unless it all arrives)."""
        client = await self._client(context, "", upload=True)
        async with self.admission.upload(client):
            return await self._upload(client, request_iterator, context)

    async def _next(
        self, messages: AsyncIterator[pb.UploadUpdateRequest], deadline: float
    ) -> pb.UploadUpdateRequest:
        """The next message of an upload, within the idle timeout and the stream's deadline."""
        loop = asyncio.get_running_loop()
        timeout = min(self.idle_timeout_s, deadline - loop.time())
        if timeout <= 0:
            raise StreamTimeoutError(
                f"the upload is slower than {self.min_bytes_per_s} bytes/s; resend it "
                f"({RETRY_MARK})"
            )
        try:
            return await asyncio.wait_for(messages.__anext__(), timeout)
        except TimeoutError:
            idle = timeout >= self.idle_timeout_s
            raise StreamTimeoutError(
                f"the upload stream was idle for {self.idle_timeout_s:g} s; resend it "
                f"({RETRY_MARK})"
                if idle
                else f"the upload is slower than {self.min_bytes_per_s} bytes/s; resend it "
                f"({RETRY_MARK})"
            ) from None

    async def _upload(
        self,
        client: str,
        request_iterator: AsyncIterator[pb.UploadUpdateRequest],
        context: _Context,
    ) -> pb.UploadUpdateResponse:
        loop = asyncio.get_running_loop()
        messages = request_iterator.__aiter__()
        try:
            first = await self._next(messages, loop.time() + self.idle_timeout_s)
        except StopAsyncIteration:
            first = pb.UploadUpdateRequest()
        if first.WhichOneof("payload") != "header":
            await self._abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "an upload starts with its header",
                upload=True,
            )
        h = first.header
        if h.client_id and h.client_id != client:
            await self._abort(
                context,
                grpc.StatusCode.PERMISSION_DENIED,
                f"this token belongs to another client than {_shown(h.client_id)}",
                upload=True,
            )
        header = UploadHeader(
            round_id=h.round_id,
            base_version=h.base_version,
            base_digest=h.base_digest,
            idempotency_key=h.idempotency_key,
            total_bytes=h.total_bytes,
            crc32=h.crc32,
            num_examples=h.num_examples,
        )
        try:
            receipt = await self._coordinator.precheck(client, header)
            if receipt is None:
                deadline = (
                    loop.time() + self.idle_timeout_s + header.total_bytes / self.min_bytes_per_s
                )
                with tempfile.SpooledTemporaryFile(max_size=_SPOOL_IN_MEMORY) as spool:
                    await self._receive(messages, header, spool, deadline)
                    spool.seek(0)
                    if header.total_bytes <= _SPOOL_IN_MEMORY:
                        receipt = await self._coordinator.submit(client, header, spool.read())
                    else:
                        # A large payload comes into memory only with one of a few slots.
                        async with self.admission.large_payload():
                            payload = spool.read()
                            receipt = await self._coordinator.submit(client, header, payload)
        except ServerError as exc:
            await self._refuse(context, exc, upload=True)
        return _upload_response(receipt)

    async def _receive(
        self,
        messages: AsyncIterator[pb.UploadUpdateRequest],
        header: UploadHeader,
        spool: IO[bytes],
        deadline: float,
    ) -> None:
        limit = self._coordinator.max_update_bytes
        chunk_limit = self._coordinator.max_chunk_bytes
        chunk_floor = min(MIN_CHUNK_BYTES, chunk_limit)
        received = 0
        crc = 0
        # A dropped connection cancels this coroutine: the spool goes away, nothing is kept.
        while True:
            try:
                message = await self._next(messages, deadline)
            except StopAsyncIteration:
                break
            if message.WhichOneof("payload") != "chunk":
                raise InvalidUpdateError("only chunks may follow an upload's header")
            chunk = message.chunk
            self._metrics.bytes_up.inc(len(chunk))
            if len(chunk) > chunk_limit:
                raise UpdateTooLargeError(
                    f"a chunk of {len(chunk)} bytes, above the size limit of {chunk_limit} "
                    "per chunk"
                )
            received += len(chunk)
            if received > limit:
                raise UpdateTooLargeError(f"the upload exceeds the size limit of {limit} bytes")
            if received > header.total_bytes:
                raise InvalidUpdateError(
                    f"more than the declared {header.total_bytes} bytes arrived"
                )
            if not chunk:
                raise InvalidUpdateError("an empty chunk: every chunk carries payload bytes")
            if len(chunk) < chunk_floor and received < header.total_bytes:
                raise InvalidUpdateError(
                    f"a chunk of {len(chunk)} bytes before the last one: every chunk but the "
                    f"last carries at least {chunk_floor} bytes"
                )
            crc = zlib.crc32(chunk, crc)
            spool.write(chunk)
        if received != header.total_bytes:
            raise InvalidUpdateError(
                f"{received} bytes arrived, the header declared {header.total_bytes}"
            )
        if crc != header.crc32:
            raise InvalidUpdateError("the payload's CRC-32 differs from the header's")


# -- registration: requests are parsed here, so that a malformed message is INVALID_ARGUMENT ----


def _parse(kind: type[_M], raw: bytes) -> _M:
    try:
        return kind.FromString(raw)
    except (DecodeError, RuntimeWarning) as exc:
        raise InvalidUpdateError(f"malformed {kind.__name__} message: {exc}") from exc


async def _guarded(
    servicer: AggregationServicer,
    context: _Context,
    call: Callable[[], Awaitable[_T]],
    *,
    upload: bool,
) -> _T:
    """Run one call; every failure leaves as a clear status, never UNKNOWN."""
    try:
        return await call()
    except ServerError as exc:
        await servicer._refuse(context, exc, upload=upload)
    except grpc.aio.AbortError:
        raise
    except asyncio.CancelledError:
        # The client went away or the transport dropped the call: nothing was applied.
        servicer._metrics.calls_cancelled.labels("upload" if upload else "other").inc()
        log.info("call cancelled", extra={"event": "call_cancelled", "upload": upload})
        raise
    except Exception:
        log.exception("internal error in a call", extra={"event": "internal_error"})
        await servicer._abort(
            context,
            grpc.StatusCode.INTERNAL,
            f"internal server error: the request was not applied; {RETRY_MARK}",
            upload=upload,
        )


def add_to_server(servicer: AggregationServicer, server: grpc.aio.Server) -> None:
    """Register ``fedcodec.v1.AggregationService`` with requests parsed by the servicer.

    gRPC's generated registration parses requests before the servicer runs and answers a
    malformed message with a status the proto does not promise; here every parse error is
    INVALID_ARGUMENT and any unexpected failure INTERNAL with a plain message.
    """

    async def get_round_config(raw: bytes, context: _Context) -> pb.GetRoundConfigResponse:
        async def call() -> pb.GetRoundConfigResponse:
            request = _parse(pb.GetRoundConfigRequest, raw)
            return await servicer.GetRoundConfig(request, context)

        return await _guarded(servicer, context, call, upload=False)

    async def download_model(raw: bytes, context: _Context) -> None:
        loop = asyncio.get_running_loop()

        async def call() -> None:
            request = _parse(pb.DownloadModelRequest, raw)
            stream = cast(
                AsyncGenerator[pb.DownloadModelResponse, None],
                servicer.DownloadModel(request, context),
            )
            deadline = loop.time() + servicer.idle_timeout_s
            try:
                async for message in stream:
                    if message.HasField("header"):
                        deadline += message.header.total_bytes / servicer.min_bytes_per_s
                    timeout = min(servicer.idle_timeout_s, deadline - loop.time())
                    try:
                        await asyncio.wait_for(context.write(message), max(timeout, 0.001))
                    except TimeoutError:
                        raise StreamTimeoutError(
                            "the download was not read in time (idle "
                            f"{servicer.idle_timeout_s:g} s, or slower than "
                            f"{servicer.min_bytes_per_s} bytes/s); {RETRY_MARK}"
                        ) from None
            finally:
                await stream.aclose()

        await _guarded(servicer, context, call, upload=False)

    async def upload_update(
        raw_messages: AsyncIterator[bytes], context: _Context
    ) -> pb.UploadUpdateResponse:
        async def parsed() -> AsyncIterator[pb.UploadUpdateRequest]:
            async for raw in raw_messages:
                yield _parse(pb.UploadUpdateRequest, raw)

        async def call() -> pb.UploadUpdateResponse:
            return await servicer.UploadUpdate(parsed(), context)

        return await _guarded(servicer, context, call, upload=True)

    handlers = {
        "GetRoundConfig": grpc.unary_unary_rpc_method_handler(
            get_round_config,
            request_deserializer=None,
            response_serializer=pb.GetRoundConfigResponse.SerializeToString,
        ),
        "DownloadModel": grpc.unary_stream_rpc_method_handler(  # handler writes: context.write
            download_model,
            request_deserializer=None,
            response_serializer=pb.DownloadModelResponse.SerializeToString,
        ),
        "UploadUpdate": grpc.stream_unary_rpc_method_handler(
            upload_update,
            request_deserializer=None,
            response_serializer=pb.UploadUpdateResponse.SerializeToString,
        ),
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("fedcodec.v1.AggregationService", handlers),)
    )
