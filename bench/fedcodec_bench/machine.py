"""What machine and software a benchmark ran on (for its JSON report)."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["cpu_model", "git_commit", "machine_info", "usable_cores"]


def cpu_model() -> str:
    """Return the CPU model name from ``/proc/cpuinfo``, else ``platform.processor()``.

    Returns
    -------
    str
        The model name, or ``"unknown"``.
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def usable_cores() -> int:
    """Count the CPUs this process may run on (affinity mask), at least 1.

    Returns
    -------
    int
        The count.
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def git_commit() -> str | None:
    """Return the git commit of the sources (or of the working directory), if a checkout.

    Returns
    -------
    str or None
        ``HEAD``'s hash with ``-dirty`` appended for uncommitted changes, or None.
    """
    here = Path(__file__).resolve().parent
    for where in (here, Path.cwd()):
        try:
            head = subprocess.run(
                ["git", "-C", str(where), "rev-parse", "HEAD"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
            if head.returncode != 0:
                continue
            dirty = subprocess.run(
                ["git", "-C", str(where), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
            suffix = "-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else ""
            return head.stdout.strip() + suffix
        except (OSError, subprocess.SubprocessError):
            continue
    return None


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def machine_info() -> dict[str, Any]:
    """Machine and software facts for a benchmark report.

    Returns
    -------
    dict
        CPU model, logical and usable cores, OS, Python, numpy, fedcodec and zstandard
        versions, the UTC date and the git commit (or None).
    """
    return {
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "usable_cores": usable_cores(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "numpy": np.__version__,
        "fedcodec": _version("fedcodec"),
        "zstandard": _version("zstandard"),
        "date_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
    }
