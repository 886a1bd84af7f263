"""The federated update pipeline over the codec (shared by the server, the edge SDK and the
Flower plugin).

* :mod:`~fedcodec.pipeline.engine` — :class:`RoundEngine` (server) and
  :class:`ClientEngine` (client): THE round logic every front end drives —
  what a client downloads, update validation, aggregation, publishing.
* :mod:`~fedcodec.pipeline.model` — :class:`ModelSpec`, :class:`ModelVersion` (id + SHA-256
  digest), :class:`ModelHistory`.
* :mod:`~fedcodec.pipeline.params` — :class:`RoundParams` (λ, S or Δ, byte budget,
  sparsification, per-client overrides) and schedules.
* :mod:`~fedcodec.pipeline.presets` — :class:`Preset`, :func:`get_preset`: named codings of
  both links as measured (``"near-lossless"``, ``"dense"``, ``"robust"``, ``"balanced"``,
  ``"lean-full"``, ``"lean-partial"``).
* :mod:`~fedcodec.pipeline.ratecontrol` — fixed parameters or a byte budget met within ±5 %.
* :mod:`~fedcodec.pipeline.client` — :class:`UpdateEncoder`: differential updates with error
  feedback, residual state saved without pickle.
* :mod:`~fedcodec.pipeline.server` — :class:`Aggregator`: validated, screened, robust
  FedAvg in O(model) memory.
* :mod:`~fedcodec.pipeline.robust` — :class:`RobustPolicy`: example-count and share caps,
  norm bounds (absolute / relative to the round's median, clip or reject), value checks,
  coordinate-wise trimmed mean / median.
* :mod:`~fedcodec.pipeline.downlink` — :class:`DownlinkEncoder` (server) and
  :class:`ModelReceiver` (client): coded model changes, cumulative deltas,
  keyframes, a shared initial model that never travels, digest checks.

A round, in-process::

    server: params = schedule(r, last)            # RoundParams, JSON to clients
            package = downlink.package_for(cid)   # keyframe or deltas
    client: base = receiver.apply(package)        # digest-checked
            local = train(base)
            update = encoder.encode(local, base, params, round_number=r, num_examples=n)
    server: aggregator.accept_update(update)      # validated, then accumulated
            new = aggregator.finalize(); downlink.publish(new)
"""

from fedcodec.pipeline.client import EncodedUpdate, StatisticsFn, UpdateEncoder
from fedcodec.pipeline.downlink import DownlinkEncoder, DownlinkPackage, ModelReceiver, Release
from fedcodec.pipeline.engine import (
    ClientEngine,
    InitialRef,
    RoundEngine,
    RoundInfo,
    RoundOutcome,
    Submission,
)
from fedcodec.pipeline.errors import (
    BaseDigestMismatchError,
    BudgetTooSmallError,
    DigestMismatchError,
    DuplicateUpdateError,
    EmptyRoundError,
    InitialModelError,
    ModelMismatchError,
    PipelineError,
    RoundClosedError,
    StaleBaseVersionError,
    StateFormatError,
    UnknownBaseVersionError,
    UpdateRejectedError,
)
from fedcodec.pipeline.model import ModelHistory, ModelSpec, ModelVersion, model_digest
from fedcodec.pipeline.optimizer import ServerOptimizer
from fedcodec.pipeline.params import (
    HIGH_RATE_LAMBDA,
    ConstantSchedule,
    CosineSchedule,
    RoundParams,
    Schedule,
    Sensitivity,
    Sparsification,
    StepSchedule,
    as_schedule,
)
from fedcodec.pipeline.presets import PRESET_NAMES, Preset, get_preset
from fedcodec.pipeline.ratecontrol import encode_with_params, min_container_bytes
from fedcodec.pipeline.robust import RobustPolicy, RoundPlan
from fedcodec.pipeline.server import Aggregator, ClientReferences
from fedcodec.pipeline.stats import ClientRoundStats, EncodeStats, RoundStats, TensorEncodeStats

__all__ = [
    "HIGH_RATE_LAMBDA",
    "PRESET_NAMES",
    "Aggregator",
    "BaseDigestMismatchError",
    "BudgetTooSmallError",
    "ClientEngine",
    "ClientReferences",
    "ClientRoundStats",
    "ConstantSchedule",
    "CosineSchedule",
    "DigestMismatchError",
    "DownlinkEncoder",
    "DownlinkPackage",
    "DuplicateUpdateError",
    "EmptyRoundError",
    "EncodeStats",
    "EncodedUpdate",
    "InitialModelError",
    "InitialRef",
    "ModelHistory",
    "ModelMismatchError",
    "ModelReceiver",
    "ModelSpec",
    "ModelVersion",
    "PipelineError",
    "Preset",
    "Release",
    "RobustPolicy",
    "RoundClosedError",
    "RoundEngine",
    "RoundInfo",
    "RoundOutcome",
    "RoundParams",
    "RoundPlan",
    "RoundStats",
    "Schedule",
    "Sensitivity",
    "ServerOptimizer",
    "Sparsification",
    "StaleBaseVersionError",
    "StateFormatError",
    "StatisticsFn",
    "StepSchedule",
    "Submission",
    "TensorEncodeStats",
    "UnknownBaseVersionError",
    "UpdateEncoder",
    "UpdateRejectedError",
    "as_schedule",
    "encode_with_params",
    "get_preset",
    "min_container_bytes",
    "model_digest",
]
