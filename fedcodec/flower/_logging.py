"""The plugin's logger.

A child of Flower's ``flwr`` logger, so the plugin's lines appear in Flower's
own log output (``flwr run --stream``, SuperNode logs) with Flower's format;
``logging.getLogger("flwr.fedcodec").setLevel(logging.WARNING)`` quiets it.
"""

from __future__ import annotations

import logging

__all__ = ["logger"]

logger = logging.getLogger("flwr.fedcodec")
