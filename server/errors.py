"""Why the aggregation server refuses a request (no gRPC here).

The round logic raises these; the gRPC servicer maps each class to one status code (the
table in ``proto/fedcodec/v1/aggregation_service.proto``).  They follow the codec's
convention (:mod:`fedcodec.errors`): every one is a :class:`~fedcodec.errors.FedCodecError`
carrying the ``enum fc_result`` number closest to its meaning, and also a builtin exception.

=================================  ======================  ===============================
exception                          gRPC status             raised when
=================================  ======================  ===============================
:class:`InvalidUpdateError`        INVALID_ARGUMENT        a malformed upload (size or CRC
                                                           mismatch), a corrupt bitstream,
                                                           tensors of the wrong shapes
:class:`UpdateTooLargeError`       RESOURCE_EXHAUSTED      an update above the size limit
:class:`RoundNotOpenError`         FAILED_PRECONDITION     the update's round is closed or
                                                           unknown
:class:`BaseVersionError`          FAILED_PRECONDITION     an unknown or stale base version,
                                                           or a wrong base digest
:class:`InitialModelMismatchError` FAILED_PRECONDITION    the client does not hold the
                                                           federation's shared initial model
:class:`NotSelectedError`          FAILED_PRECONDITION     the client was not selected for
                                                           the round
:class:`ConflictingUpdateError`    ALREADY_EXISTS          a second, different update of a
                                                           client in one round
:class:`ShuttingDownError`         UNAVAILABLE             the server is stopping
:class:`StorageFullError`          RESOURCE_EXHAUSTED      the disk (or the database's size
                                                           limit) is full: nothing stored
:class:`StorageUnavailableError`   UNAVAILABLE             the database failed otherwise
:class:`BusyError`                 RESOURCE_EXHAUSTED      admission control: too many
                                                           streams (of this client, or in
                                                           all); retry with backoff
:class:`StreamTimeoutError`        DEADLINE_EXCEEDED       an upload stream idle or too
                                                           slow; resend
=================================  ======================  ===============================

Every refusal that a resend can cure carries :data:`RETRY_MARK` in its message (the edge
SDK retries those with the same idempotency key).
"""

from __future__ import annotations

from fedcodec.errors import (
    FC_ERR_CORRUPT,
    FC_ERR_INVALID_ARGUMENT,
    FC_ERR_LIMIT,
    FC_ERR_MISMATCH,
    FedCodecError,
)

__all__ = [
    "RETRY_MARK",
    "BaseVersionError",
    "BusyError",
    "ConflictingUpdateError",
    "InitialModelMismatchError",
    "InvalidUpdateError",
    "NotSelectedError",
    "RoundNotOpenError",
    "ServerError",
    "ShuttingDownError",
    "StorageFullError",
    "StorageUnavailableError",
    "StreamTimeoutError",
    "UpdateTooLargeError",
]

#: In the message of every refusal worth resending (the edge SDK looks for it).
RETRY_MARK = "retry later"

_RESULT_NAMES = {
    FC_ERR_INVALID_ARGUMENT: "FC_ERR_INVALID_ARGUMENT",
    FC_ERR_CORRUPT: "FC_ERR_CORRUPT",
    FC_ERR_LIMIT: "FC_ERR_LIMIT",
    FC_ERR_MISMATCH: "FC_ERR_MISMATCH",
}


class ServerError(FedCodecError):
    """Root of the server's refusals (a :class:`~fedcodec.errors.FedCodecError`)."""

    code_number: int = FC_ERR_INVALID_ARGUMENT

    def __init__(self, message: str) -> None:
        code = type(self).code_number
        super().__init__(message, code=code, result_name=_RESULT_NAMES[code])
        self.message = message


class InvalidUpdateError(ServerError, ValueError):
    """The upload is malformed or its bitstream does not decode to the model."""

    code_number = FC_ERR_CORRUPT


class UpdateTooLargeError(ServerError, ValueError):
    """The update (or one chunk of it) is larger than the server accepts."""

    code_number = FC_ERR_LIMIT


class RoundNotOpenError(ServerError, RuntimeError):
    """The update names a round that is closed, closing, or not known."""


class BaseVersionError(ServerError, ValueError):
    """The update's base version is unknown or not the round's, or its digest differs."""

    code_number = FC_ERR_MISMATCH


class InitialModelMismatchError(ServerError, ValueError):
    """The client holds another shared initial model than the federation's, or none."""

    code_number = FC_ERR_MISMATCH


class NotSelectedError(ServerError, RuntimeError):
    """The client uploads for a round it was not selected for."""


class ConflictingUpdateError(ServerError, ValueError):
    """The client already delivered a different update in this round."""


class ShuttingDownError(ServerError, RuntimeError):
    """The server is stopping and takes no new work."""


class StorageFullError(ServerError, RuntimeError):
    """The server's disk (or the database's size limit) is full; nothing was stored."""

    code_number = FC_ERR_LIMIT


class StorageUnavailableError(ServerError, RuntimeError):
    """The server's database failed (I/O error, locked); nothing was stored."""


class BusyError(ServerError, RuntimeError):
    """Admission control: too many concurrent streams (of this client or in all)."""

    code_number = FC_ERR_LIMIT


class StreamTimeoutError(ServerError, RuntimeError):
    """An upload stream was idle, or slower than the minimum rate, for too long."""
