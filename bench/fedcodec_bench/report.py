"""Plain-text report helpers: aligned Markdown tables and number formats."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["fmt_int", "fmt_pct", "fmt_rate", "table"]


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, left: int = 1) -> str:
    """Format an aligned Markdown table.

    Parameters
    ----------
    headers : sequence of str
        Column titles.
    rows : sequence of sequence of str
        Cells, already formatted.
    left : int, optional
        How many leading columns are left-aligned; the others are right-aligned.

    Returns
    -------
    str
        The table, lines joined by newlines (no trailing newline).
    """
    widths = [len(h) for h in headers]
    for r in rows:
        for i, c in enumerate(r):
            widths[i] = max(widths[i], len(c))

    def line(cells: Sequence[str]) -> str:
        out = []
        for i, c in enumerate(cells):
            out.append(c.ljust(widths[i]) if i < left else c.rjust(widths[i]))
        return "| " + " | ".join(out) + " |"

    sep = (
        "|"
        + "|".join(
            ("-" * (w + 2)) if i < left else ("-" * (w + 1) + ":") for i, w in enumerate(widths)
        )
        + "|"
    )
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])


def fmt_int(x: float | None) -> str:
    """Format a thousands-separated integer, or ``n/a``.

    Parameters
    ----------
    x : float or None
        Value (rounded to the nearest integer).

    Returns
    -------
    str
        E.g. ``"28,049"``.
    """
    return "n/a" if x is None else f"{round(x):,}"


def fmt_pct(rel: float | None) -> str:
    """Format a relative size ``a / b - 1`` as a signed percentage, or ``n/a``.

    Parameters
    ----------
    rel : float or None
        Relative difference.

    Returns
    -------
    str
        E.g. ``"-17.6 %"`` or ``"+2.0 %"``.
    """
    return "n/a" if rel is None else f"{100.0 * rel:+.1f} %"


def fmt_rate(x: float | None) -> str:
    """Format a speed in M weights/s with three significant figures, or ``n/a``.

    Parameters
    ----------
    x : float or None
        Speed.

    Returns
    -------
    str
        E.g. ``"152"``, ``"45.3"``, ``"3.12"``.
    """
    if x is None:
        return "n/a"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"
