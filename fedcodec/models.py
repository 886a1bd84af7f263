"""Where a shared initial model comes from: a file shipped with the app, or a built-in.

The server (``initial_model`` setting) and the edge client (``--initial-model``) read the
same source the same way, so both hold version 0 bit for bit and it never travels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

__all__ = ["BUILTIN_MNIST_MLP", "ModelSourceError", "load_model"]

#: The 784-128-10 MLP of :mod:`fedcodec.toy`, initialized from seed 0.
BUILTIN_MNIST_MLP = "builtin:mnist-mlp"


class ModelSourceError(ValueError):
    """A model source that is unknown or unreadable."""


def load_model(source: str) -> dict[str, npt.NDArray[np.float32]] | None:
    """Read a model: "" (none), ``builtin:mnist-mlp``, or an ``.npz`` of named float32
    arrays (read without pickle; file order is model order).

    Raises
    ------
    ModelSourceError
        An unknown built-in or an unreadable file.
    """
    if not source:
        return None
    if source == BUILTIN_MNIST_MLP:
        from fedcodec.toy import init_mlp

        return init_mlp(np.random.default_rng(0), 784, 128, 10)
    if source.startswith("builtin:"):
        raise ModelSourceError(f"unknown built-in model {source!r} (known: {BUILTIN_MNIST_MLP})")
    try:
        with np.load(Path(source), allow_pickle=False) as data:
            return {name: np.asarray(data[name], dtype=np.float32) for name in data.files}
    except (OSError, ValueError) as exc:
        raise ModelSourceError(f"cannot read the model {source!r}: {exc}") from exc
