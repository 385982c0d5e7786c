"""The trade-off figure of the audio paper: text adherence against distance to the input, one curve per
method, each point a setting (the mean over its rows; the table holds the intervals)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .table import Line


def plot_tradeoff(lines: Sequence[Line], x: str, y: str, path: Path, title: str = "") -> None:
    """Draw metric ``y`` against metric ``x`` (e.g. "clap" against "lpaps") as a PNG at ``path`` (all or
    nothing). Points of one method join in the table's order and carry their setting as a label."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..files import replacing

    figure, axes = plt.subplots(figsize=(6.4, 4.8), dpi=150)
    methods: dict[str, list[Line]] = {}
    for line in lines:
        methods.setdefault(line.method, []).append(line)
    for method, points in methods.items():
        points = [p for p in points if p.summaries[x].count and p.summaries[y].count]
        if not points:
            continue
        xs = [p.summaries[x].mean for p in points]
        ys = [p.summaries[y].mean for p in points]
        axes.plot(xs, ys, marker="o", markersize=5, linewidth=1.5, label=method)
        for p, px, py in zip(points, xs, ys):
            if p.setting:
                axes.annotate(p.setting, (px, py), textcoords="offset points", xytext=(4, 4), fontsize=7)
    axes.set_xlabel(f"{x.upper()} to the input (lower: closer)")
    axes.set_ylabel(f"{y.upper()} to the target (higher: closer)")
    if title:
        axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    with replacing(path) as (temporary,):
        figure.savefig(temporary, format="png")
    plt.close(figure)
