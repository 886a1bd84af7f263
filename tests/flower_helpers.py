"""Shared set-up of the Flower plugin tests (``test_flower_*.py``), beside ``loopback.py``.

* :func:`task_identity` — an autouse fixture: instruction messages need a run id, which a
  ServerApp process sets; a test module that imports it gets it for every test.
* :func:`initial_arrays` — the shared initial model of a test federation, from seed 0.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pytest


@pytest.fixture(autouse=True)
def task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Strategies create instruction messages, which need a run id (a ServerApp sets it)."""
    from flwr.supercore.task_identity import TaskIdentity

    monkeypatch.setattr(TaskIdentity, "_run_id", 1)
    monkeypatch.setattr(TaskIdentity, "_node_id", 0)
    monkeypatch.setattr(TaskIdentity, "_task_id", 1)


def initial_arrays(shapes: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """The shared initial model: N(0, 0.1²) float32 weights of ``shapes``, from seed 0."""
    rng = np.random.default_rng(0)
    return {k: (rng.standard_normal(s) * 0.1).astype(np.float32) for k, s in shapes.items()}
