"""``python -m fedcodec.bench BENCHMARK [options]``: the same as ``fedcodec bench ...``."""

from __future__ import annotations

import sys

from fedcodec.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
