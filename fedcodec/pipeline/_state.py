"""Saving named arrays plus JSON metadata as ``.npz`` (no pickle anywhere)."""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fedcodec.pipeline.errors import StateFormatError

__all__ = ["load_npz_state", "save_npz_state", "write_npz_atomic"]

_META_KEY = "__meta__"
# numpy's stubs read **kwargs as its keyword options; the arrays are plain names here.
_savez: Callable[..., None] = np.savez


def save_npz_state(
    path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray], meta: Mapping[str, Any]
) -> None:
    """Write arrays and a JSON-able dict atomically (temp file + rename).

    Array keys are stored as ``a<i>`` with their names in the metadata, so any
    tensor name (dots, slashes) is fine.
    """
    names = list(arrays)
    payload: dict[str, np.ndarray] = {f"a{i}": np.asarray(arrays[n]) for i, n in enumerate(names)}
    for key, value in payload.items():
        if value.dtype.hasobject:
            raise TypeError(f"array {key} has an object dtype; only plain arrays are saved")
    document = {"meta": dict(meta), "arrays": names}
    payload[_META_KEY] = np.frombuffer(json.dumps(document).encode("utf-8"), dtype=np.uint8)
    write_npz_atomic(path, payload)


def write_npz_atomic(path: str | os.PathLike[str], arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` as an ``.npz`` at ``path`` atomically: a temporary file beside it,
    fsync, rename (a crash leaves the old file or the new one, never a torn one)."""
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=target.name, suffix=".tmp", dir=target.parent or ".")
    try:
        with os.fdopen(fd, "wb") as handle:
            _savez(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_npz_state(path: str | os.PathLike[str]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read what :func:`save_npz_state` wrote (``allow_pickle=False``).

    Raises
    ------
    StateFormatError
        The file is not such a state file.
    """
    try:
        with np.load(path, allow_pickle=False) as data:
            if _META_KEY not in data.files:
                raise StateFormatError(f"{os.fspath(path)!r}: no metadata record")
            document = json.loads(bytes(data[_META_KEY]).decode("utf-8"))
            names = document["arrays"]
            arrays = {name: data[f"a{i}"] for i, name in enumerate(names)}
            meta = document["meta"]
    except StateFormatError:
        raise
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
        raise StateFormatError(f"{os.fspath(path)!r}: not a readable state file: {exc}") from exc
    if not isinstance(meta, dict):
        raise StateFormatError(f"{os.fspath(path)!r}: metadata is not an object")
    return arrays, meta
