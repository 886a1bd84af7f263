"""``python -m fedcodec_bench BENCHMARK [options]``: the same as ``fedcodec-bench ...``."""

from __future__ import annotations

import sys

from fedcodec_bench.cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m fedcodec_bench"))
