"""Benchmarks of fedcodec: a separate distribution (``fedcodec-bench``), not part of the product.

Installed from the repository with ``pip install ./bench``; run as ``fedcodec-bench BENCHMARK``,
``python -m fedcodec_bench BENCHMARK`` or ``fedcodec bench BENCHMARK``. The benchmarks import
fedcodec (and its toy MNIST task, :mod:`fedcodec.toy`); fedcodec never imports them.

* ``codec`` — the entropy coder against zstd-19, lzma-9, entropy bounds and NNCodec on the same
  integer levels, on synthetic sets and on a real MLP client update, with rate-distortion
  curves (:mod:`fedcodec_bench.codec`).
* ``fl`` — federated learning in one process on MNIST-5k, MNIST-1D and Shakespeare: accuracy
  against real bytes up and down for fedcodec and the baselines (:mod:`fedcodec_bench.fl`,
  :mod:`fedcodec_bench.compressors`).
* ``report`` — the full sweep of both, written as JSON, PNG plots and ``docs/benchmarks.md``
  (:mod:`fedcodec_bench.suite`).
* ``quant`` — trellis and dithered quantization against plain RD quantization
  (:mod:`fedcodec_bench.quant`).
* ``load`` — many concurrent clients against a real ``fedcodec serve`` on loopback
  (:mod:`fedcodec_bench.load`).

Benchmarks are commands, not timed tests: they measure every competitor side by side in one
process and report medians, because the machines they run on are shared and noisy.
"""

__version__ = "0.1.0"
