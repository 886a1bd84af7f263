"""What the client mod keeps in ``context.state`` between rounds: its round engine.

* :data:`~fedcodec.flower.constants.STATE_MODEL` — the
  :class:`~fedcodec.pipeline.ModelReceiver`'s arrays (the model held, and in a
  shared-initial stream the initial model and the accumulated change), so later
  rounds can apply coded deltas;
* :data:`~fedcodec.flower.constants.STATE_RESIDUAL` — the error-feedback
  residual of :class:`~fedcodec.pipeline.UpdateEncoder`;
* :data:`~fedcodec.flower.constants.STATE_REFERENCE` — the uplink's temporal
  reference (the last update's reconstruction), while the server offers
  references (``CompressionStrategy(temporal_reference=True)``);
* :data:`~fedcodec.flower.constants.STATE_RECORD` — the model spec and both
  parts' metadata as JSON, the message layout the server sent at first contact
  (:class:`Layout`) and the last coding parameters it sent (the server sends them
  again only when they change).

``context.state`` survives across rounds for a node in simulation and in
deployment (where every message starts a fresh ClientApp process), so this is
the only place the mod keeps anything.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedcodec.flower._logging import logger as _log
from fedcodec.flower.constants import (
    STATE_MODEL,
    STATE_RECORD,
    STATE_REFERENCE,
    STATE_RESIDUAL,
)
from fedcodec.pipeline import (
    ClientEngine,
    ModelMismatchError,
    ModelSpec,
    ModelVersion,
    StateFormatError,
)

__all__ = ["ClientState", "Layout"]

_SPEC = "spec"
_RECEIVER_META = "receiver"
_ENCODER_META = "encoder"
_LAYOUT = "layout"
_PARAMS = "params"


@dataclass(frozen=True)
class Layout:
    """What a node learns at first contact and keeps: how the server's records are laid out.

    Attributes
    ----------
    keys : tuple of str
        The ArrayRecord's key order.
    uncoded : tuple of str
        Keys of arrays that travel as they are.
    initial_digest : str or None
        Hex digest of the shared initial model the stream is relative to (None: a
        keyframe stream).
    record : str
        The name of the model's ArrayRecord (the app gets the decoded model under it).
    compact : bool
        The server reads compact containers: replies are coded compact.
    """

    keys: tuple[str, ...]
    uncoded: tuple[str, ...] = ()
    initial_digest: str | None = None
    record: str = "arrays"
    compact: bool = False

    def to_json(self) -> dict[str, object]:
        """A JSON-able dict."""
        return {
            "keys": list(self.keys),
            "uncoded": list(self.uncoded),
            "initial_digest": self.initial_digest,
            "record": self.record,
            "compact": self.compact,
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Layout:
        """Inverse of :meth:`to_json` (ValueError when malformed)."""
        keys, uncoded, digest = data.get("keys"), data.get("uncoded"), data.get("initial_digest")
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise ValueError("layout keys must be a list of str")
        if not isinstance(uncoded, list) or not all(isinstance(k, str) for k in uncoded):
            raise ValueError("layout uncoded keys must be a list of str")
        if digest is not None and not isinstance(digest, str):
            raise ValueError("layout initial_digest must be a str or null")
        record = data.get("record", "arrays")
        if not isinstance(record, str):
            raise ValueError("layout record must be a str")
        compact = data.get("compact", False)
        if not isinstance(compact, bool):
            raise ValueError("layout compact must be a bool")
        return cls(tuple(keys), tuple(uncoded), digest, record, compact)


def _record(arrays: dict[str, np.ndarray]) -> ArrayRecord:
    return ArrayRecord({k: Array(np.ascontiguousarray(v)) for k, v in arrays.items()})


@dataclass
class ClientState:
    """One node's client engine (None before the first coded message).

    Attributes
    ----------
    engine : ClientEngine or None
        The held model (receiver) and the uplink encoder.
    layout : Layout or None
        The record layout of the server's messages (from the first contact).
    params : str or None
        The last coding parameters the server sent (JSON text).
    """

    engine: ClientEngine | None = None
    layout: Layout | None = None
    params: str | None = None

    @classmethod
    def load(
        cls, state: RecordDict, client_id: str, *, threads: int, error_feedback: bool
    ) -> ClientState:
        """Restore from ``context.state``; anything unreadable is dropped (with a log line)."""
        config = state.get(STATE_RECORD)
        if not isinstance(config, ConfigRecord):
            return cls()
        layout: Layout | None = None
        params = str(config[_PARAMS]) if _PARAMS in config else None
        if _LAYOUT in config:
            try:
                layout = Layout.from_json(json.loads(str(config[_LAYOUT])))
            except (ValueError, AttributeError) as exc:
                _log.warning("fedcodec: dropping the saved layout (%s)", exc)
        if _SPEC not in config:
            return cls(layout=layout, params=params)
        try:
            spec = ModelSpec.from_json(json.loads(str(config[_SPEC])))
        except (KeyError, ValueError, ModelMismatchError) as exc:
            _log.warning("fedcodec: dropping unreadable client state (%s)", exc)
            return cls(layout=layout, params=params)
        engine = ClientEngine(spec, client_id, threads=threads, error_feedback=error_feedback)
        model = state.get(STATE_MODEL)
        if isinstance(model, ArrayRecord) and _RECEIVER_META in config:
            try:
                engine.receiver.load_state(
                    {k: a.numpy() for k, a in model.items()},
                    json.loads(str(config[_RECEIVER_META])),
                )
            except (StateFormatError, ValueError) as exc:
                _log.warning("fedcodec: dropping the saved model (%s)", exc)
        residual = state.get(STATE_RESIDUAL)
        if isinstance(residual, ArrayRecord) and _ENCODER_META in config:
            meta = json.loads(str(config[_ENCODER_META]))
            meta["client_id"] = client_id
            try:
                engine.encoder.load_state({k: a.numpy() for k, a in residual.items()}, meta)
            except StateFormatError as exc:
                _log.warning("fedcodec: dropping the saved residual (%s)", exc)
            engine.encoder.error_feedback = error_feedback
        reference = state.get(STATE_REFERENCE)
        if isinstance(reference, ArrayRecord):
            try:
                engine.encoder.restore_reference({k: a.numpy() for k, a in reference.items()})
                engine.encoder.temporal_reference = True
            except ModelMismatchError as exc:
                _log.warning("fedcodec: dropping the saved temporal reference (%s)", exc)
        return cls(engine, layout, params)

    def engine_for(
        self,
        spec: ModelSpec,
        client_id: str,
        *,
        initial: ModelVersion | None,
        threads: int,
        error_feedback: bool,
    ) -> ClientEngine:
        """The engine of this model (a fresh one when the model changed); it holds
        ``initial`` (the shared initial model the app gave the mod) if it holds none."""
        engine = self.engine
        if engine is None or engine.spec != spec:
            engine = ClientEngine(
                spec, client_id, initial=initial, threads=threads, error_feedback=error_feedback
            )
            self.engine = engine
        elif initial is not None and engine.receiver.initial is None:
            held = engine.receiver.version
            if held is None:
                engine.receiver.assume(initial)
        return engine

    def forget_model(self) -> None:
        """Drop the held model (the server sends a keyframe next time); keep the initial."""
        engine = self.engine
        if engine is None:
            return
        initial = engine.receiver.initial
        fresh = ClientEngine(
            engine.spec, engine.client_id, initial=initial, threads=engine.receiver.threads
        )
        engine.receiver = fresh.receiver

    def save(self, state: RecordDict) -> None:
        """Write into ``context.state``."""
        for key in (STATE_MODEL, STATE_RESIDUAL, STATE_REFERENCE, STATE_RECORD):
            if key in state:
                del state[key]
        config = ConfigRecord()
        if self.layout is not None:
            config[_LAYOUT] = json.dumps(self.layout.to_json())
        if self.params is not None:
            config[_PARAMS] = self.params
        engine = self.engine
        if engine is None:
            if len(config):
                state[STATE_RECORD] = config
            return
        config[_SPEC] = json.dumps(engine.spec.to_json())
        arrays, meta = engine.receiver.state()
        state[STATE_MODEL] = _record(dict(arrays))
        config[_RECEIVER_META] = json.dumps(meta)
        residual, encoder_meta = engine.encoder.state()
        state[STATE_RESIDUAL] = _record(dict(residual))
        config[_ENCODER_META] = json.dumps(encoder_meta)
        reference = engine.encoder.reference
        if reference is not None:
            state[STATE_REFERENCE] = _record(dict(reference))
        state[STATE_RECORD] = config
