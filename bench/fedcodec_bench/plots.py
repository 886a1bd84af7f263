"""PNG plots of the benchmark results (matplotlib, Agg backend, no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["plot_fl_scenario", "plot_rd_curves"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _median_curves(runs: Sequence[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Per round: median over seeds of cumulative bytes (up + down) and of accuracy."""
    cum = np.array([np.cumsum(np.add(r["up_curve"], r["down_curve"])) for r in runs], float)
    acc = np.array([r["accuracy_curve"] for r in runs], float)
    return np.median(cum, axis=0), np.median(acc, axis=0)


def plot_fl_scenario(rep: dict[str, Any], path: str | Path) -> None:
    """Accuracy against cumulative bytes (log scale) for every method of one scenario.

    Parameters
    ----------
    rep : dict
        A scenario record of the FL report (``runs`` and ``summary``).
    path : str or Path
        PNG to write.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8.0, 5.0), dpi=110)
    by_name: dict[str, list[dict[str, Any]]] = {}
    for r in rep["runs"]:
        by_name.setdefault(r["name"], []).append(r)
    fp32_acc = None
    for name, runs in by_name.items():
        x, y = _median_curves(runs)
        kind = runs[0]["kind"]
        style = "-" if kind == "fedcodec" else ("--" if kind == "baseline" else ":")
        lw = 2.0 if kind == "fedcodec" else 1.3
        ax.plot(x, y, style, lw=lw, label=name)
        if kind == "fp32":
            fp32_acc = float(np.median([r["final_accuracy"] for r in runs]))
    if fp32_acc is not None:
        ax.axhline(fp32_acc - 1.0, color="grey", lw=0.8, ls="-.", label="fp32 final − 1 point")
    ax.set_xscale("log")
    ax.set_xlabel("cumulative bytes, up + down (median over seeds)")
    ax.set_ylabel("test accuracy % (median over seeds)")
    ax.set_title(f"{rep['label']} — {rep['model']}", fontsize=9)
    finals = [r["final_accuracy"] for r in rep["runs"]]
    lo = max(0.0, float(np.percentile(finals, 10)) - 15.0)
    ax.set_ylim(lo, max(finals) + 2.0)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def plot_rd_curves(curves: dict[str, list[dict[str, Any]]], path: str | Path) -> None:
    """Bits per weight (x) against SNR in dB (y), one panel per data set.

    Parameters
    ----------
    curves : dict
        ``rd_curves`` of the codec report.
    path : str or Path
        PNG to write.
    """
    plt = _pyplot()
    names = list(curves)
    cols = min(3, max(1, len(names)))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), dpi=110, squeeze=False)
    series = (
        ("fedcodec_bpw", "snr_db", "fedcodec (same levels)", "-o"),
        ("rdoq_bpw", "rdoq_snr_db", "fedcodec RDOQ", "-s"),
        ("trellis8_bpw", "trellis8_snr_db", "fedcodec trellis8", "-D"),
        ("nncodec_bpw", "snr_db", "NNCodec URQ (same levels)", "-^"),
        ("nncodec_dq_bpw", "nncodec_dq_snr_db", "NNCodec DQ", "-v"),
        ("nncodec_dq_rd_bpw", "nncodec_dq_rd_snr_db", "NNCodec DQ lambda_scale 1", "-<"),
        ("zstd19_bpw", "snr_db", "zstd-19", "--x"),
        ("lzma9_bpw", "snr_db", "lzma-9", "--+"),
        ("order0_bpw", "snr_db", "order-0 entropy", ":"),
    )
    for i, name in enumerate(names):
        ax = axes[i // cols][i % cols]
        pts = curves[name]
        for xkey, ykey, label, style in series:
            xy = [(p[xkey], p[ykey]) for p in pts if p.get(xkey) is not None and p.get(ykey)]
            if xy:
                xs, ys = zip(*xy, strict=True)
                ax.plot(xs, ys, style, ms=3.5, lw=1.2, label=label)
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("bits per weight", fontsize=8)
        ax.set_ylabel("SNR dB", fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
        ax.tick_params(labelsize=7)
        if i == 0:
            ax.legend(fontsize=6)
    for j in range(len(names), rows * cols):
        axes[j // cols][j % cols].axis("off")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
