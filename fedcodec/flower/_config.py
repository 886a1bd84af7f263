"""Round parameters to and from the namespaced keys of a ``ConfigRecord``."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from fedcodec.flower.constants import (
    KEY_BUDGET_BYTES,
    KEY_LAMBDA,
    KEY_S,
    KEY_SENSITIVITY,
    KEY_SPARSIFICATION,
    KEY_STEP,
    KEY_STEP_RULE,
    KEY_TOLERANCE,
)
from fedcodec.pipeline import RoundParams, Sensitivity, Sparsification

__all__ = ["config_int", "has_params", "params_from_config", "params_to_config"]


def params_to_config(params: RoundParams) -> dict[str, int | float | str]:
    """The config entries of one client's parameters (``per_client`` already applied)."""
    out: dict[str, int | float | str] = {
        KEY_LAMBDA: float(params.lam),
        KEY_S: int(params.S),
        KEY_TOLERANCE: float(params.tolerance),
        KEY_STEP_RULE: params.step_rule,
    }
    if params.step is not None:
        out[KEY_STEP] = float(params.step)
    if params.budget_bytes is not None:
        out[KEY_BUDGET_BYTES] = int(params.budget_bytes)
    if params.sparsification is not None:
        out[KEY_SPARSIFICATION] = json.dumps(params.sparsification.to_json(), sort_keys=True)
    if params.sensitivity is not None:
        out[KEY_SENSITIVITY] = json.dumps(params.sensitivity.to_json(), sort_keys=True)
    return out


def has_params(config: Mapping[str, Any]) -> bool:
    """Whether a config asks for a coded reply."""
    return KEY_LAMBDA in config


def params_from_config(config: Mapping[str, Any]) -> RoundParams:
    """Inverse of :func:`params_to_config`.

    Raises
    ------
    ValueError
        A missing λ, or a value of the wrong type or out of range.
    """
    if KEY_LAMBDA not in config:
        raise ValueError(f"the config has no {KEY_LAMBDA!r}")
    kwargs: dict[str, Any] = {"lam": float(config[KEY_LAMBDA])}
    if KEY_S in config:
        kwargs["S"] = _as_int(config[KEY_S], KEY_S)
    if KEY_STEP in config:
        kwargs["step"] = float(config[KEY_STEP])
    if KEY_BUDGET_BYTES in config:
        kwargs["budget_bytes"] = _as_int(config[KEY_BUDGET_BYTES], KEY_BUDGET_BYTES)
    if KEY_TOLERANCE in config:
        kwargs["tolerance"] = float(config[KEY_TOLERANCE])
    if KEY_STEP_RULE in config:
        kwargs["step_rule"] = str(config[KEY_STEP_RULE])
    if KEY_SPARSIFICATION in config:
        kwargs["sparsification"] = Sparsification.from_json(
            json.loads(str(config[KEY_SPARSIFICATION]))
        )
    if KEY_SENSITIVITY in config:
        kwargs["sensitivity"] = Sensitivity.from_json(json.loads(str(config[KEY_SENSITIVITY])))
    return RoundParams(**kwargs)


def config_int(config: Mapping[str, Any], key: str) -> int:
    """``config[key]`` as an int.

    Raises
    ------
    KeyError
        The key is missing.
    ValueError
        The value is not an int.
    """
    return _as_int(config[key], key)


def _as_int(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key} must be an int, got {value!r}")
    return value
