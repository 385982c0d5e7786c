"""The results table: one line per (method, setting) with each metric's mean and 95 % interval."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .stats import CONFIDENCE, Summary, summarize

Group = tuple[str, str]
"""(method, setting)."""


@dataclass
class Line:
    """One (method, setting) of the table.

    Attributes:
        method, setting: the group.
        scored: rows scored; failed: rows the run recorded as failed.
        summaries: metric -> mean and interval over the rows that have it.
        fad: Fréchet distance of the group's embeddings to the reference set (None: not computed).
    """

    method: str
    setting: str
    scored: int
    failed: int
    summaries: dict[str, Summary] = field(default_factory=dict)
    fad: float | None = None


def make_table(
    scores: Sequence[tuple[Group, dict[str, float]]], metrics: Sequence[str], failed: dict[Group, int] | None = None
) -> list[Line]:
    """Lines in the order groups first appear in ``scores`` (then groups with only failed rows)."""
    failed = failed or {}
    groups: dict[Group, list[dict[str, float]]] = {}
    for group, values in scores:
        groups.setdefault(group, []).append(values)
    for group in failed:
        groups.setdefault(group, [])
    return [
        Line(method, setting, len(rows), failed.get((method, setting), 0),
             {m: summarize(r[m] for r in rows if m in r) for m in metrics})  # fmt: skip
        for (method, setting), rows in groups.items()
    ]


def csv_text(lines: Sequence[Line], metrics: Sequence[str]) -> str:
    """The table as CSV: method, setting, scored, failed, then ``<metric>_n``, ``<metric>_mean``,
    ``<metric>_low``, ``<metric>_high`` per metric, and ``fad`` when any line has one (empty cells: not
    defined)."""
    with_fad = any(line.fad is not None for line in lines)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["method", "setting", "scored", "failed", *[f"{m}_{s}" for m in metrics for s in ("n", "mean", "low", "high")],
                     *(["fad"] if with_fad else [])])  # fmt: skip
    for line in lines:
        cells: list[object] = [line.method, line.setting, line.scored, line.failed]
        for m in metrics:
            s = line.summaries[m]
            cells += [s.count, _number(s.mean), _number(s.low), _number(s.high)]
        writer.writerow(cells + ([_number(line.fad)] if with_fad else []))
    return out.getvalue()


def text_table(lines: Sequence[Line], metrics: Sequence[str]) -> str:
    """The table for a terminal: each metric as ``mean ± half-width`` of its 95 % t-interval."""
    with_fad = any(line.fad is not None for line in lines)
    header = ["method", "setting", "n", *metrics, *(["fad"] if with_fad else [])]
    body = []
    for line in lines:
        cells = [line.method, line.setting or "-", f"{line.scored}" + (f" (+{line.failed} failed)" if line.failed else "")]
        cells += [_pm(line.summaries[m]) for m in metrics]
        body.append(cells + ([_number(line.fad) or "-"] if with_fad else []))
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    text = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header, *body]]
    note = f"mean ± half-width of the {CONFIDENCE:.0%} Student-t interval over the rows"
    return "\n".join([*text, note]) + "\n"


def write_csv(lines: Sequence[Line], metrics: Sequence[str], path: Path) -> None:
    """Write the CSV table to ``path`` (all or nothing)."""
    from ..files import replacing

    with replacing(path) as (temporary,):
        temporary.write_text(csv_text(lines, metrics), encoding="utf-8")


def _pm(s: Summary) -> str:
    if s.count == 0:
        return "-"
    if math.isnan(s.half_width):
        return f"{s.mean:.4g}"
    return f"{s.mean:.4g} ± {s.half_width:.2g}"


def _number(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else f"{value:.6g}"
