"""The CNN benchmark's Flower plumbing (skips without torch)."""

from __future__ import annotations

import pytest

pytest.importorskip("torch", reason="the CNN benchmark needs torch")
pytest.importorskip("flwr", reason="the CNN benchmark runs through the Flower plugin")

from fedcodec_bench.cnn import Scenario, _Train, cnn_methods, run_one


@pytest.mark.parametrize("name", ["fp32", "top-1%+EF", "fedcodec sens rd-2% S=16"])
def test_a_tiny_run_counts_flower_bytes_both_ways(name: str) -> None:
    """One round of 2 clients: accuracy recorded, bytes counted up and down, coded < fp32."""
    methods = {m.name: m for m in cnn_methods()}
    sc = Scenario("tiny", 2, 2, 1)
    fp32 = run_one(sc, methods["fp32"], 0, _Train(1, 32, 0.05, 0), train_limit=200)
    run = run_one(sc, methods[name], 0, _Train(1, 32, 0.05, 0), train_limit=200)
    assert len(run.accuracy) == 1
    assert 0.0 <= run.accuracy[0] <= 1.0
    assert run.bytes_up > 0
    assert run.bytes_down > 0
    # fp32 sends the 57k-parameter model (228 kB) to and from both clients.
    assert fp32.bytes_up > 2 * 4 * 57_000
    if name != "fp32":
        assert run.bytes_up < fp32.bytes_up / 10
