"""Statistics of encodes and rounds (all JSON-able through ``to_json``)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ClientRoundStats", "EncodeStats", "RoundStats", "TensorEncodeStats", "snr_db"]


def snr_db(signal_sq: float, error_sq: float) -> float:
    """10·log10(signal energy / error energy); ``inf`` for no error, ``nan`` for no signal."""
    if error_sq <= 0.0:
        return math.inf if signal_sq > 0.0 else math.nan
    if signal_sq <= 0.0:
        return -math.inf
    return 10.0 * math.log10(signal_sq / error_sq)


@dataclass(frozen=True)
class TensorEncodeStats:
    """One tensor of an encoded update or downlink message.

    Attributes
    ----------
    name : str
        Tensor name.
    step : float
        Quantization step Δ used.
    bytes : int
        Its bytes in the container.
    density : float
        Fraction of nonzero levels.
    mse : float
        Mean squared error between the coded target (update + residual) and
        its reconstruction, i.e. of the new residual.
    snr_db : float
        Target energy over error energy, in dB.
    """

    name: str
    step: float
    bytes: int
    density: float
    mse: float
    snr_db: float


@dataclass(frozen=True)
class EncodeStats:
    """What one encode (with rate control) did.

    Attributes
    ----------
    bytes : int
        Container size (the bytes on the wire, codec headers included).
    lam : float
        λ used.
    S : int or None
        S used (None when the step was given or chosen by rate control with
        the model step rule).
    step_rule : str
        "model" or "tensor".
    budget_bytes : int or None
        The budget, when rate control ran.
    tolerance : float
        The relative budget tolerance.
    passes : int
        Encoder passes (1 without a budget).
    density : float
        Nonzero levels over all weights.
    mse : float
        Mean squared error over all weights.
    snr_db : float
        Signal-to-noise ratio over the whole model, dB.
    sparsified : float
        Fraction of weights zeroed by sparsification before quantization.
    seconds : float
        Wall time of the encode, rate control included.
    tensors : tuple of TensorEncodeStats
        Per tensor.
    """

    bytes: int
    lam: float
    S: int | None
    step_rule: str
    budget_bytes: int | None
    tolerance: float
    passes: int
    density: float
    mse: float
    snr_db: float
    sparsified: float
    seconds: float
    tensors: tuple[TensorEncodeStats, ...] = field(default=())

    @property
    def steps(self) -> dict[str, float]:
        """Δ per tensor."""
        return {t.name: t.step for t in self.tensors}

    @property
    def within_budget(self) -> bool | None:
        """Whether the size is within the tolerance of (or under) the budget."""
        if self.budget_bytes is None:
            return None
        return self.bytes <= self.budget_bytes * (1.0 + self.tolerance)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (non-finite floats become strings)."""
        out: dict[str, Any] = _jsonable(dataclasses.asdict(self))
        return out


@dataclass(frozen=True)
class ClientRoundStats:
    """One accepted update, as the server saw it.

    Attributes
    ----------
    client_id : str
        Who sent it.
    bytes : int
        Container size.
    num_examples : int
        Its FedAvg weight.
    steps : tuple of float
        Δ per tensor (from the container).
    decode_seconds : float
        Time of the checks and the decode-and-accumulate.
    """

    client_id: str
    bytes: int
    num_examples: int
    steps: tuple[float, ...]
    decode_seconds: float


@dataclass(frozen=True)
class RoundStats:
    """One finished round (what a schedule sees as ``last``).

    Attributes
    ----------
    round_number : int
        The round.
    base_version, new_version : int
        Global versions before and after.
    updates : tuple of ClientRoundStats
        Accepted updates.
    rejected : int
        Updates refused.
    bytes_up : int
        Sum of accepted update sizes.
    bytes_down : int
        Downlink bytes sent in this round (0 when not tracked).
    update_rms : float
        RMS of the aggregated change of the global model.
    """

    round_number: int
    base_version: int
    new_version: int
    updates: tuple[ClientRoundStats, ...]
    rejected: int
    bytes_up: int
    bytes_down: int
    update_rms: float

    @property
    def num_examples(self) -> int:
        """Total FedAvg weight."""
        return sum(u.num_examples for u in self.updates)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict."""
        out: dict[str, Any] = _jsonable(dataclasses.asdict(self))
        return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [_jsonable(v) for v in value]
    return value
