"""Why an edge client's call failed (the codec's convention: ours and a builtin).

=================================  =========================================================
exception                          when
=================================  =========================================================
:class:`AuthenticationError`       the server does not know the token (UNAUTHENTICATED), or
                                   the token is another client's (PERMISSION_DENIED)
:class:`UpdateRefusedError`        the server refused the update for good: its round closed,
                                   a stale base, corrupt or too large (``status`` names the
                                   gRPC code); resending the same bytes cannot help
:class:`ServerUnavailableError`    the server could not be reached within the retries
:class:`DeadlineExceededError`     a :class:`ServerUnavailableError`: no answer within the
                                   call deadline (``RetryPolicy.call_deadline_s``)
:class:`ProtocolError`             the server's answer is malformed (size or CRC mismatch)
=================================  =========================================================
"""

from __future__ import annotations

from fedcodec.errors import FC_ERR_CORRUPT, FC_ERR_INVALID_ARGUMENT, FedCodecError

__all__ = [
    "AuthenticationError",
    "ClientError",
    "DeadlineExceededError",
    "ProtocolError",
    "ServerUnavailableError",
    "UpdateRefusedError",
]

_RESULT_NAMES = {
    FC_ERR_INVALID_ARGUMENT: "FC_ERR_INVALID_ARGUMENT",
    FC_ERR_CORRUPT: "FC_ERR_CORRUPT",
}


class ClientError(FedCodecError):
    """Root of the edge client's errors.

    The message names the call and the gRPC status that failed it (``upload: UNAVAILABLE:
    ...``); it starts with the codec's result name only where that code describes the
    failure (:class:`ProtocolError`: ``FC_ERR_CORRUPT``): a connection or credential
    failure is not an invalid argument.

    Attributes
    ----------
    status : str
        The gRPC status name that caused it ("" when none did).
    detail : str
        The server's message.
    """

    code_number: int = FC_ERR_INVALID_ARGUMENT
    #: Whether ``code_number``'s name describes the failure (starts a message without status).
    names_failure: bool = False

    def __init__(self, message: str, *, status: str = "", detail: str = "") -> None:
        code = type(self).code_number
        name = _RESULT_NAMES[code]
        label = name if type(self).names_failure else ""
        super().__init__(message, code=code, result_name=name, label=label)
        self.status = status
        self.detail = detail


class AuthenticationError(ClientError, PermissionError):
    """The server did not accept the client's credentials."""


class UpdateRefusedError(ClientError, RuntimeError):
    """The server refused the request for good (not worth resending)."""


class ServerUnavailableError(ClientError, ConnectionError):
    """No answer from the server within the retry policy."""


class DeadlineExceededError(ServerUnavailableError, TimeoutError):
    """No answer from the server within the call deadline (``RetryPolicy.call_deadline_s``).

    ``status`` and ``detail`` are those of the last try's failure (``DEADLINE_EXCEEDED``
    when the deadline cut it short).
    """


class ProtocolError(ClientError, ValueError):
    """The server's answer does not add up."""

    code_number = FC_ERR_CORRUPT
    names_failure = True
