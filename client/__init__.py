"""fedcodec.client: the participant side of fedcodec.

The edge client SDK for the aggregation server: :class:`EdgeClient` checks in for rounds,
fetches the global model (coded deltas or a keyframe, digest-checked), trains through a
callback, encodes the update with error feedback, and uploads it in chunks with retries,
backoff and an idempotency key; its model, residual and unacknowledged update survive
restarts (:mod:`fedcodec.client.state`).  Installed as ``fedcodec.client`` from the
repository's ``client/`` folder; it uses the codec only through :mod:`fedcodec.pipeline`.
"""

from fedcodec.client.edge import EdgeClient, Outcome, RoundInfo, RoundResult, TrainFn, TrainResult
from fedcodec.client.errors import (
    AuthenticationError,
    ClientError,
    DeadlineExceededError,
    ProtocolError,
    ServerUnavailableError,
    UpdateRefusedError,
)
from fedcodec.client.transport import Connection, RetryPolicy

__all__ = [
    "AuthenticationError",
    "ClientError",
    "Connection",
    "DeadlineExceededError",
    "EdgeClient",
    "Outcome",
    "ProtocolError",
    "RetryPolicy",
    "RoundInfo",
    "RoundResult",
    "ServerUnavailableError",
    "TrainFn",
    "TrainResult",
    "UpdateRefusedError",
]
