"""The CNN benchmark's Flower plumbing (skips without torch)."""

from __future__ import annotations

import pytest

pytest.importorskip("torch", reason="the CNN benchmark needs torch")
pytest.importorskip("flwr", reason="the CNN benchmark runs through the Flower plugin")

from fedcodec_bench.cnn import RunResult, Scenario, _Train, cnn_methods, run_one

_TINY = Scenario("tiny", 2, 2, 1)


def _run(name: str) -> RunResult:
    methods = {m.name: m for m in cnn_methods()}
    return run_one(_TINY, methods[name], 0, _Train(1, 32, 0.05, 0), train_limit=200)


@pytest.fixture(scope="module")
def fp32() -> RunResult:
    """The float32 reference run (once for the module)."""
    return _run("fp32")


@pytest.mark.parametrize("name", ["top-1%+EF", "fedcodec sens rd-2% S=16"])
def test_a_tiny_run_counts_flower_bytes_both_ways(fp32: RunResult, name: str) -> None:
    """One round of 2 clients: accuracy recorded, bytes counted up and down, coded < fp32."""
    run = _run(name)
    assert len(run.accuracy) == 1
    assert 0.0 <= run.accuracy[0] <= 1.0
    assert run.bytes_down > 0
    # fp32 sends the 57k-parameter model (228 kB) to and from both clients.
    assert fp32.bytes_up > 2 * 4 * 57_000
    assert 0 < run.bytes_up < fp32.bytes_up / 10
