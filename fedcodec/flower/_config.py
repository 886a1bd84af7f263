"""Round parameters in a ``ConfigRecord``: one key, the one JSON serialization."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedcodec.flower.constants import KEY_PARAMS
from fedcodec.pipeline import RoundParams

__all__ = ["config_int", "has_params", "params_from_config", "params_from_text", "params_to_config"]


def params_to_config(params: RoundParams) -> dict[str, str]:
    """The config entry of one client's parameters (``per_client`` already applied):
    :meth:`RoundParams.to_json_text`, the serialization the gRPC proto carries too."""
    return {KEY_PARAMS: params.to_json_text()}


def has_params(config: Mapping[str, Any]) -> bool:
    """Whether a config asks for a coded reply."""
    return KEY_PARAMS in config


def params_from_config(config: Mapping[str, Any]) -> RoundParams:
    """Inverse of :func:`params_to_config`.

    Raises
    ------
    ValueError
        A missing key, or a parameter that is unknown or out of range (named).
    """
    if KEY_PARAMS not in config:
        raise ValueError(f"the config has no {KEY_PARAMS!r}")
    return params_from_text(str(config[KEY_PARAMS]))


def params_from_text(text: str) -> RoundParams:
    """The parameters of a :data:`~fedcodec.flower.constants.KEY_PARAMS` value.

    Raises
    ------
    ValueError
        A parameter that is unknown or out of range (named).
    """
    try:
        return RoundParams.from_json_text(text)
    except ValueError as exc:
        raise ValueError(f"{KEY_PARAMS}: {exc}") from exc


def config_int(config: Mapping[str, Any], key: str) -> int:
    """``config[key]`` as an int.

    Raises
    ------
    KeyError
        The key is missing.
    ValueError
        The value is not an int.
    """
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key} must be an int, got {value!r}")
    return value
