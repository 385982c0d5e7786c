"""Pieces shared by the benchmarks: counting model calls, timing, and printing a table."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class CallCount:
    """Forward calls of a module and the samples (rows of the batch) they evaluated."""

    calls: int = 0
    rows: int = 0


def _batch_rows(args: tuple[Any, ...], kwargs: Mapping[str, Any], arg: str) -> int:
    value = args[0] if args else kwargs.get(arg)
    if value is None:  # no positional input and no such keyword: first tensor keyword
        value = next(v for v in kwargs.values() if isinstance(v, torch.Tensor))
    return int(value.shape[0])


@contextmanager
def count_unet_calls(module: torch.nn.Module, arg: str = "sample") -> Iterator[CallCount]:
    """Count the forward calls of ``module`` (any ``nn.Module``) inside the ``with`` block.

    The batch size of a call is read from its first positional input, else from the keyword
    ``arg`` ("sample" for diffusers UNets).

    Usage::

        with count_unet_calls(model.unet) as count:
            run()
        print(count.calls, count.rows)
    """
    count = CallCount()

    def hook(_module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        count.calls += 1
        count.rows += _batch_rows(args, kwargs, arg)

    handle = module.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield count
    finally:
        handle.remove()


def synchronize(device: str | torch.device | None = None) -> None:
    """Wait for queued GPU work, so that wall time covers it (no-op on the CPU)."""
    if device is not None and torch.device(device).type != "cuda":
        return
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def timed(fn: Callable[[], Any], repeats: int = 1) -> tuple[float, Any]:
    """(best wall time in seconds over ``repeats`` runs, result of the last run)."""
    best, result = float("inf"), None
    for _ in range(max(1, repeats)):
        synchronize()
        start = time.perf_counter()
        result = fn()
        synchronize()
        best = min(best, time.perf_counter() - start)
    return best, result


def relative_error(x: torch.Tensor, reference: torch.Tensor) -> float:
    """||x - reference|| / ||reference|| over all elements, computed in float64."""
    x, reference = x.detach().double().cpu(), reference.detach().double().cpu()
    return float((x - reference).norm() / reference.norm().clamp(min=1e-30))


def format_cell(value: Any) -> str:
    """Floats with 3 significant digits (scientific below 1e-3), everything else with ``str``."""
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        if value == 0 or 1e-3 <= abs(value) < 1e5:
            return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
        return f"{value:.2e}"
    return "-" if value is None else str(value)


def print_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str | tuple[str, str]]) -> str:
    """Print (and return) a markdown table; a column is a key, or (key, header).

    Text columns are left-aligned, numbers right-aligned; missing values print as "-".
    """
    keys = [c if isinstance(c, str) else c[0] for c in columns]
    headers = [c if isinstance(c, str) else c[1] for c in columns]
    cells = [[format_cell(row.get(key)) for key in keys] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    numeric = [all(isinstance(row.get(k), (int, float)) or row.get(k) is None for row in rows) for k in keys]

    def line(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)]
        return "| " + " | ".join(parts) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2)) for w, num in zip(widths, numeric)) + "|"
    text = "\n".join([line(headers), rule, *(line(r) for r in cells)])
    print(text, flush=True)
    return text
