"""Shared test setup: run against the *installed* fedcodec, Hypothesis profiles.

The tests exercise the installed package (``pip install .``), whose compiled
``fedcodec._fedcodec_cffi`` the source folder lacks.  pytest's importlib mode
(pyproject.toml) keeps the repository root off ``sys.path``; ``python -m
pytest`` would still put it first, so it is removed here before anything
imports fedcodec.  An editable install keeps working: it is found through its
import hook, not through ``sys.path``.

Hypothesis profiles, chosen with ``HYPOTHESIS_PROFILE``:
  ci         (default) a few dozen derandomized examples per property
  expensive  thousands of examples, for a long fuzzing run
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from hypothesis import HealthCheck, settings

_REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or os.curdir).resolve() != _REPO_ROOT]
# Shared test helpers (``loopback.py``: the server tests' set-up) import by name.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import fedcodec  # noqa: E402  (after the sys.path fix above)

settings.register_profile(
    "ci",
    max_examples=40,
    deadline=None,
    # The same examples on every run: a CI result is reproducible, and a
    # failure found by a random (expensive) run becomes a pinned test.
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "expensive",
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_report_header() -> list[str]:
    return [
        f"fedcodec {fedcodec.__version__} (C library {fedcodec.library_version()}) "
        f"from {Path(fedcodec.__file__).parent}",
        f"hypothesis profile: {os.environ.get('HYPOTHESIS_PROFILE', 'ci')}",
    ]
