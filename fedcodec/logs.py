"""The one logging setup of fedcodec's processes (``fedcodec serve``, ``client``, ``demo``).

Libraries only log (``logging.getLogger("fedcodec.server")``, ``"fedcodec.client"``), with
the facts of an event as ``extra`` fields::

    log.info("update accepted", extra={"event": "update_accepted", "round_id": 3, ...})

The command line calls :func:`setup_logging` once; in the ``json`` format every record is one
JSON object per line (``ts``, ``level``, ``logger``, ``msg``, the extra fields, ``exc`` for a
traceback), ready for a log collector; ``text`` is for people.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

__all__ = ["JsonFormatter", "setup_logging"]

# The attributes every LogRecord has; anything else was passed as ``extra``.
_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime"}
)


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as a JSON line."""
        payload: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        payload.update(_extras(record))
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str, ensure_ascii=False)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = _extras(record)
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        return line


def setup_logging(level: str = "info", fmt: str = "json", stream: TextIO | None = None) -> None:
    """Configure the root logger once: one handler, the chosen format and level.

    Parameters
    ----------
    level : str
        debug, info, warning or error.
    fmt : {"json", "text"}
        Output format.
    stream : text stream, optional
        Where to write (default stderr).
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
