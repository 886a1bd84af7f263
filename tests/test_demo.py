"""``fedcodec demo``: the same seed gives the same run, byte for byte, and nobody downloads
the shared initial model."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from fedcodec.demo import DemoConfig, run_demo


def _run(out_dir: Path, seed: int) -> list[tuple[list[str], int, int, float]]:
    cfg = DemoConfig(
        clients=4,
        per_round=2,
        rounds=3,
        epochs=1,
        seed=seed,
        out_dir=str(out_dir),
        progress=False,
        baseline=False,
    )
    rounds = run_demo(cfg, out=io.StringIO())
    assert json.loads((out_dir / "rounds.json").read_text())["rounds"]
    return [(r.clients, r.bytes_up, r.bytes_down, r.accuracy) for r in rounds]


def test_the_demo_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    pytest.importorskip("mlxtend")
    first = _run(tmp_path / "a", seed=3)
    assert first == _run(tmp_path / "b", seed=3)
    assert len(first) == 3
    # Round 1: the participants hold the initial model already (built from the seed).
    assert first[0][2] == 0
    float32_model = 4 * (784 * 128 + 128 + 128 * 10 + 10)
    assert all(down < float32_model / 20 for _, _, down, _ in first)
