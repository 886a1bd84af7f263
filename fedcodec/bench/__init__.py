"""Benchmarks of fedcodec, run from the command line.

* ``fedcodec bench codec`` / ``python -m fedcodec.bench codec`` — the entropy coder against
  zstd-19, lzma-9, entropy bounds and NNCodec on the same integer levels, on synthetic sets and
  on a real MLP client update, with rate-distortion curves (:mod:`fedcodec.bench.codec`).
* ``fedcodec bench fl`` — federated learning in one process on MNIST-5k, MNIST-1D and
  Shakespeare: accuracy against real bytes up and down for fedcodec and the baselines
  (:mod:`fedcodec.bench.fl`, :mod:`fedcodec.bench.compressors`).
* ``fedcodec bench report`` — the full sweep of both, written as JSON, PNG plots and
  ``docs/benchmarks.md`` (:mod:`fedcodec.bench.suite`).

Benchmarks are commands, not timed tests: they measure every competitor side by side in one
process and report medians, because the machines they run on are shared and noisy.
"""
