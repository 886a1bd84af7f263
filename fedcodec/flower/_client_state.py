"""What the client mod keeps in ``context.state`` between rounds.

* :data:`~fedcodec.flower.constants.STATE_MODEL` — the model the client holds
  (the downlink's reconstruction, float32, exact), so later rounds can apply
  coded deltas to it;
* :data:`~fedcodec.flower.constants.STATE_RESIDUAL` — the error-feedback
  residual of :class:`~fedcodec.pipeline.UpdateEncoder`;
* :data:`~fedcodec.flower.constants.STATE_RECORD` — version, digest, model
  spec and the encoder's metadata as JSON.

``context.state`` survives across rounds for a node in simulation and in
deployment (where every message starts a fresh ClientApp process), so this is
the only place the mod keeps anything.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from flwr.app import ArrayRecord, ConfigRecord, RecordDict

from fedcodec.flower._config import config_int
from fedcodec.flower._logging import logger as _log
from fedcodec.flower._records import plain_record, record_tensors
from fedcodec.flower.constants import STATE_MODEL, STATE_RECORD, STATE_RESIDUAL
from fedcodec.pipeline import (
    ModelMismatchError,
    ModelSpec,
    ModelVersion,
    StateFormatError,
    UpdateEncoder,
)

__all__ = ["ClientState"]


_VERSION = "version"
_DIGEST = "digest"
_SPEC = "spec"
_ENCODER_META = "encoder"


@dataclass
class ClientState:
    """The held model and the encoder's residual of one node.

    Attributes
    ----------
    model : ModelVersion or None
        The model held (None before the first keyframe, or after a failure).
    encoder : UpdateEncoder or None
        The uplink encoder with its residual (None before the first update).
    """

    model: ModelVersion | None = None
    encoder: UpdateEncoder | None = None

    @classmethod
    def load(cls, state: RecordDict, *, threads: int, error_feedback: bool) -> ClientState:
        """Restore from ``context.state``; anything unreadable is dropped (with a log line)."""
        config = state.get(STATE_RECORD)
        if not isinstance(config, ConfigRecord):
            return cls()
        try:
            spec = ModelSpec.from_json(json.loads(str(config[_SPEC])))
        except (KeyError, ValueError, ModelMismatchError) as exc:
            _log.warning("fedcodec: dropping unreadable client state (%s)", exc)
            return cls()
        out = cls()
        model_record = state.get(STATE_MODEL)
        if isinstance(model_record, ArrayRecord) and _VERSION in config:
            try:
                model = ModelVersion.create(
                    config_int(config, _VERSION),
                    record_tensors(model_record, spec, "saved model"),
                    spec,
                )
            except (ValueError, TypeError) as exc:
                _log.warning("fedcodec: dropping the saved model (%s)", exc)
            else:
                if model.digest == config.get(_DIGEST):
                    out.model = model
                else:
                    _log.warning("fedcodec: the saved model does not match its digest; dropped")
        residual = state.get(STATE_RESIDUAL)
        if isinstance(residual, ArrayRecord) and _ENCODER_META in config:
            meta = json.loads(str(config[_ENCODER_META]))
            encoder = UpdateEncoder(
                spec, str(meta.get("client_id", "")), threads=threads, error_feedback=error_feedback
            )
            try:
                encoder.load_state({k: a.numpy() for k, a in residual.items()}, meta)
            except StateFormatError as exc:
                _log.warning("fedcodec: dropping the saved residual (%s)", exc)
            else:
                encoder.error_feedback = error_feedback
                out.encoder = encoder
        return out

    def encoder_for(
        self, spec: ModelSpec, client_id: str, *, threads: int, error_feedback: bool
    ) -> UpdateEncoder:
        """The encoder of this model and client (a fresh one when the model changed)."""
        if self.encoder is None or self.encoder.spec != spec or self.encoder.client_id != client_id:
            self.encoder = UpdateEncoder(
                spec, client_id, threads=threads, error_feedback=error_feedback
            )
        return self.encoder

    def save(self, state: RecordDict) -> None:
        """Write into ``context.state`` (entries of a missing part are removed)."""
        spec = (
            self.model.spec
            if self.model is not None
            else (self.encoder.spec if self.encoder is not None else None)
        )
        for key in (STATE_MODEL, STATE_RESIDUAL, STATE_RECORD):
            if key in state:
                del state[key]
        if spec is None:
            return
        config = ConfigRecord({_SPEC: json.dumps(spec.to_json())})
        if self.model is not None:
            state[STATE_MODEL] = plain_record(spec, self.model.tensors)
            config[_VERSION] = self.model.version
            config[_DIGEST] = self.model.digest
        if self.encoder is not None and self.encoder.spec == spec:
            residual, meta = self.encoder.state()
            state[STATE_RESIDUAL] = plain_record(spec, residual)
            config[_ENCODER_META] = json.dumps(meta)
        state[STATE_RECORD] = config
