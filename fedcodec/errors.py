"""Exceptions raised by fedcodec.

Every error the codec raises is a :class:`FedCodecError`.  Each subclass is
also a builtin exception, so callers can catch either ours or the builtin
(``except ValueError`` keeps working):

====================================  =======================================
exception                             C result codes (``enum fc_result``)
====================================  =======================================
:class:`InvalidParameterError`        ``FC_ERR_INVALID_ARGUMENT``,
(``ValueError``)                      ``FC_ERR_NONFINITE``,
                                      ``FC_ERR_LEVEL_OVERFLOW``,
                                      ``FC_ERR_MISMATCH``, and the checks done
                                      in Python before a call (dtype, layout,
                                      shapes, parameter ranges)
:class:`CorruptStreamError`           ``FC_ERR_TRUNCATED``, ``FC_ERR_CORRUPT``,
(``ValueError``)                      ``FC_ERR_CHECKSUM``, ``FC_ERR_VERSION``,
                                      ``FC_ERR_LIMIT``
:class:`OutOfMemoryError`             ``FC_ERR_NOMEM``
(``MemoryError``)
:class:`WorkerThreadError`            ``FC_ERR_THREAD``
(``RuntimeError``)
:class:`FedCodecError`                anything else (``FC_ERR_BUFFER_TOO_SMALL``
                                      or an unknown code: a bug, not bad input)
====================================  =======================================

This module does not touch the C library; the numbers below are the fixed
ABI numbers of ``codec_c/include/fedcodec.h``.
"""

from __future__ import annotations

__all__ = [
    "CorruptStreamError",
    "FedCodecError",
    "InvalidParameterError",
    "OutOfMemoryError",
    "WorkerThreadError",
    "error_class_for",
]

# enum fc_result (fedcodec.h); the numbers never change.
FC_OK = 0
FC_ERR_INVALID_ARGUMENT = 1
FC_ERR_NONFINITE = 2
FC_ERR_LEVEL_OVERFLOW = 3
FC_ERR_BUFFER_TOO_SMALL = 4
FC_ERR_TRUNCATED = 5
FC_ERR_CORRUPT = 6
FC_ERR_CHECKSUM = 7
FC_ERR_VERSION = 8
FC_ERR_LIMIT = 9
FC_ERR_MISMATCH = 10
FC_ERR_NOMEM = 11
FC_ERR_THREAD = 12


class FedCodecError(Exception):
    """Root of all fedcodec errors.

    Attributes
    ----------
    code : int
        The ``enum fc_result`` number of the failure.  Errors found by the
        Python layer before calling C carry the code C would have used
        (``FC_ERR_INVALID_ARGUMENT`` or ``FC_ERR_MISMATCH``).
    result_name : str
        The C name of ``code``, e.g. ``"FC_ERR_CORRUPT"``.

    The message starts with ``label`` when one is given (``""``: no prefix), else with
    ``result_name``.
    """

    def __init__(
        self, message: str, *, code: int, result_name: str, label: str | None = None
    ) -> None:
        prefix = result_name if label is None else label
        super().__init__(f"{prefix}: {message}" if prefix else message)
        self.code = code
        self.result_name = result_name


class InvalidParameterError(FedCodecError, ValueError):
    """An argument is unusable: wrong dtype, layout or shape, out of range,
    non-finite input values, or targets that do not match a container."""


class CorruptStreamError(FedCodecError, ValueError):
    """A container is truncated, malformed, fails its checksum, has an unknown
    magic or version, or exceeds a decoder limit."""


class OutOfMemoryError(FedCodecError, MemoryError):
    """The C library could not allocate memory."""


class WorkerThreadError(FedCodecError, RuntimeError):
    """The C library could not start a worker thread."""


_CLASS_BY_CODE: dict[int, type[FedCodecError]] = {
    FC_ERR_INVALID_ARGUMENT: InvalidParameterError,
    FC_ERR_NONFINITE: InvalidParameterError,
    FC_ERR_LEVEL_OVERFLOW: InvalidParameterError,
    FC_ERR_MISMATCH: InvalidParameterError,
    FC_ERR_TRUNCATED: CorruptStreamError,
    FC_ERR_CORRUPT: CorruptStreamError,
    FC_ERR_CHECKSUM: CorruptStreamError,
    FC_ERR_VERSION: CorruptStreamError,
    FC_ERR_LIMIT: CorruptStreamError,
    FC_ERR_NOMEM: OutOfMemoryError,
    FC_ERR_THREAD: WorkerThreadError,
}


def error_class_for(code: int) -> type[FedCodecError]:
    """The exception class raised for the C result ``code``."""
    return _CLASS_BY_CODE.get(code, FedCodecError)
