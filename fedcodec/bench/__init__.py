"""Benchmarks of fedcodec, run from the command line.

* ``fedcodec bench codec`` / ``python -m fedcodec.bench codec`` — the entropy coder against
  zstd-19, lzma-9, entropy bounds and NNCodec on the same integer levels
  (:mod:`fedcodec.bench.codec`).

Benchmarks are commands, not timed tests: they measure every competitor side by side in one
process and report medians, because the machines they run on are shared and noisy.
"""
