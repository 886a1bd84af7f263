"""``fedcodec demo``: the same seed gives the same run, byte for byte, and nobody downloads
the shared initial model."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from fedcodec.demo import DemoConfig, run_demo


def _run(out_dir: Path, seed: int, **options: object) -> list[tuple[list[str], int, int, float]]:
    settings: dict[str, object] = {"clients": 4, "per_round": 2, "rounds": 3, "epochs": 1}
    settings.update(options)
    cfg = DemoConfig(
        seed=seed,
        out_dir=str(out_dir),
        progress=False,
        baseline=False,
        **settings,  # type: ignore[arg-type]
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


def test_the_demos_downlink_reference_saves_bytes_and_keeps_every_model(tmp_path: Path) -> None:
    """``--downlink-reference`` (server setting ``downlink.temporal_reference``): the same
    clients, uplink bytes and accuracies (the same levels), fewer downlink bytes once a
    client holds the previous version's delta (full participation: from round 3)."""
    pytest.importorskip("mlxtend")
    options = {"clients": 2, "per_round": 2, "budget_fraction": 0.05}
    off = _run(tmp_path / "off", seed=1, **options)
    on = _run(tmp_path / "on", seed=1, downlink_reference=True, **options)
    assert [(c, up, acc) for c, up, _, acc in on] == [(c, up, acc) for c, up, _, acc in off]
    assert [down for _, _, down, _ in on[:2]] == [down for _, _, down, _ in off[:2]]
    assert sum(d for _, _, d, _ in on[2:]) < sum(d for _, _, d, _ in off[2:])


def test_the_progress_bar_is_only_drawn_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    # `fedcodec demo > log 2>&1` wrote every redraw of the bar between the table's rows.
    pytest.importorskip("tqdm")
    from fedcodec import demo

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert demo._progress(3, True) is None
    monkeypatch.setattr("sys.stderr", Terminal())
    bar = demo._progress(3, True)
    assert bar is not None
    bar.close()
    assert demo._progress(3, False) is None
