"""Exceptions of the update pipeline.

They follow the codec's convention (:mod:`fedcodec.errors`): every one is a
:class:`~fedcodec.errors.FedCodecError` carrying the ``enum fc_result`` number
closest to its meaning, and also a builtin exception (``ValueError`` or
``RuntimeError``), so ``except ValueError`` keeps working.

=====================================  ==========================================
exception                              raised when
=====================================  ==========================================
:class:`ModelMismatchError`            tensors do not match the model's names,
                                       shapes or dtype (client input or a
                                       received container)
:class:`UnknownBaseVersionError`       an update names a base version the
                                       server does not know
:class:`StaleBaseVersionError`         an update names a known, but not the
                                       round's, base version
:class:`BaseDigestMismatchError`       an update's base digest differs from the
                                       one of its base version
:class:`DuplicateUpdateError`          a client submits twice in one round
:class:`RoundClosedError`              an update arrives after ``finalize``
:class:`EmptyRoundError`               ``finalize`` without any accepted update
:class:`BudgetTooSmallError`           a byte budget below the smallest
                                       possible container
:class:`DigestMismatchError`           a downlinked model does not hash to the
                                       digest the server sent (ask for a
                                       keyframe)
:class:`InitialModelError`             a package is relative to a shared initial
                                       model this client does not hold (ask for
                                       it: ``send_initial=True``)
:class:`StateFormatError`              a saved state file is unreadable or of
                                       another model
=====================================  ==========================================

The rejection errors of :class:`~fedcodec.pipeline.server.Aggregator` share
the base :class:`UpdateRejectedError`; a rejected update never touches the
aggregate.
"""

from __future__ import annotations

from fedcodec.errors import (
    FC_ERR_CORRUPT,
    FC_ERR_INVALID_ARGUMENT,
    FC_ERR_MISMATCH,
    FedCodecError,
)

__all__ = [
    "BaseDigestMismatchError",
    "BudgetTooSmallError",
    "DigestMismatchError",
    "DuplicateUpdateError",
    "EmptyRoundError",
    "InitialModelError",
    "ModelMismatchError",
    "PipelineError",
    "RoundClosedError",
    "StaleBaseVersionError",
    "StateFormatError",
    "UnknownBaseVersionError",
    "UpdateRejectedError",
]

_RESULT_NAMES = {
    FC_ERR_INVALID_ARGUMENT: "FC_ERR_INVALID_ARGUMENT",
    FC_ERR_CORRUPT: "FC_ERR_CORRUPT",
    FC_ERR_MISMATCH: "FC_ERR_MISMATCH",
}


class PipelineError(FedCodecError):
    """Root of the pipeline's errors (a :class:`FedCodecError`)."""

    code_number: int = FC_ERR_INVALID_ARGUMENT

    def __init__(self, message: str) -> None:
        code = type(self).code_number
        super().__init__(message, code=code, result_name=_RESULT_NAMES[code])


class ModelMismatchError(PipelineError, ValueError):
    """Tensors that do not match the model specification."""

    code_number = FC_ERR_MISMATCH


class UpdateRejectedError(PipelineError, ValueError):
    """An update the aggregator refused; the aggregate is unchanged."""


class UnknownBaseVersionError(UpdateRejectedError):
    """The update's base version is not known to the server."""

    code_number = FC_ERR_MISMATCH


class StaleBaseVersionError(UpdateRejectedError):
    """The update's base version is known but is not the round's base."""

    code_number = FC_ERR_MISMATCH


class BaseDigestMismatchError(UpdateRejectedError):
    """The update's base digest is not the digest of its base version."""

    code_number = FC_ERR_MISMATCH


class DuplicateUpdateError(UpdateRejectedError):
    """A second update of one client in one round.

    Attributes
    ----------
    same_payload : bool
        True when the bytes equal the accepted update's (a retry: a transport
        may answer it as a success).
    """

    def __init__(self, message: str, *, same_payload: bool) -> None:
        super().__init__(message)
        self.same_payload = same_payload


class RoundClosedError(UpdateRejectedError):
    """The round was finalized; no more updates are taken."""


class EmptyRoundError(PipelineError, RuntimeError):
    """A round was finalized without any accepted update."""


class BudgetTooSmallError(PipelineError, ValueError):
    """No encoding fits the byte budget.

    Attributes
    ----------
    budget_bytes : int
        The budget asked for.
    min_bytes : int
        The smallest container of this model (all levels zero).
    """

    def __init__(self, message: str, *, budget_bytes: int, min_bytes: int) -> None:
        super().__init__(message)
        self.budget_bytes = budget_bytes
        self.min_bytes = min_bytes


class DigestMismatchError(PipelineError, ValueError):
    """A reconstructed model does not hash to the expected digest."""

    code_number = FC_ERR_MISMATCH


class InitialModelError(DigestMismatchError):
    """A downlink package is relative to a shared initial model this client lacks.

    The package names the initial model by digest; the client holds no
    initial model, or another one.  A keyframe does not help (it is relative
    to the same initial model): ask for the initial model itself
    (``DownlinkEncoder.package_for(..., send_initial=True)``) or obtain it
    as the deployment does (e.g. from the shared seed) and call
    ``ModelReceiver.assume``.
    """


class StateFormatError(PipelineError, ValueError):
    """A saved state is unreadable, of an unknown format, or of another model."""

    code_number = FC_ERR_CORRUPT
