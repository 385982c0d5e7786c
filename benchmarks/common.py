"""Pieces shared by the benchmarks: counting model calls, timing, printing a table, and the
comparison of this package's editors with a reference-style loop."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from image_core.editing import LatentEditor
from image_core.inversion import Inversion


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


# ------------------------------------------------------------------------- reference-style loop

EpsFn = Callable[[torch.Tensor, torch.Tensor, str], torch.Tensor]
"""One model call of batch 1: (x_t (1, ...), t (0-dim), prompt) -> float32 ε (1, ...); "" is the
unconditional branch."""


class ReferenceLoop:
    """Edit-friendly DDPM inversion and editing written as in the official DDPM_inversion code.

    One model call per branch and step (the unconditional one, then the conditional one, each
    through ``eps``), the timesteps and ᾱ read from a diffusers ``DDIMScheduler``, the predecessor
    of t at t - T / N. The x_t are drawn from a generator seeded like ours, from the smallest
    timestep up, so that both compute the same edit.
    """

    def __init__(self, scheduler_config: Mapping[str, Any], num_steps: int, eps: EpsFn) -> None:
        from diffusers import DDIMScheduler

        self.scheduler = DDIMScheduler.from_config(dict(scheduler_config))
        self.scheduler.set_timesteps(num_steps)
        self.num_steps = num_steps
        self.eps = eps

    def alpha_bar(self, t: int) -> float:
        return float(self.scheduler.alphas_cumprod[t]) if t >= 0 else float(self.scheduler.final_alpha_cumprod)

    @torch.no_grad()
    def noise_pred(self, x: torch.Tensor, t: torch.Tensor, prompt: str, cfg: float) -> torch.Tensor:
        uncond = self.eps(x, t, "")
        if prompt == "":
            return uncond
        cond = self.eps(x, t, prompt)
        return uncond + cfg * (cond - uncond)

    def step_terms(self, x: torch.Tensor, t: int, eps: torch.Tensor, eta: float) -> tuple[torch.Tensor, float]:
        """(μ, σ) of the step from t to t - T / N."""
        prev = t - self.scheduler.config.num_train_timesteps // self.num_steps
        a_t, a_prev = self.alpha_bar(t), self.alpha_bar(prev)
        variance = (1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev)
        x0_pred = (x - (1 - a_t) ** 0.5 * eps) / a_t**0.5
        mu = a_prev**0.5 * x0_pred + (1 - a_prev - eta * variance) ** 0.5 * eps
        return mu, eta * variance**0.5

    @torch.no_grad()
    def invert(
        self, x0: torch.Tensor, prompt: str, cfg: float, eta: float, seed: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Inversion of all N steps: (xts, zs), both (N, ...) in timestep order (largest t first)."""
        timesteps = self.scheduler.timesteps
        generator = torch.Generator().manual_seed(seed)
        noise = [torch.randn(x0.shape, generator=generator, dtype=x0.dtype) for _ in timesteps]
        a = [self.alpha_bar(int(t)) for t in timesteps]
        xts = torch.cat([a_t**0.5 * x0 + (1 - a_t) ** 0.5 * n.to(x0.device) for a_t, n in zip(a, reversed(noise))])
        x_prev = torch.cat([xts[1:], x0])
        zs = torch.empty_like(xts)
        for i, t in enumerate(timesteps.to(x0.device)):
            x = xts[i : i + 1]
            eps = self.noise_pred(x, t, prompt, cfg)
            mu, sigma = self.step_terms(x, int(t), eps, eta)
            zs[i] = (x_prev[i] - mu[0]) / sigma
        return xts, zs

    @torch.no_grad()
    def edit(
        self, xts: torch.Tensor, zs: torch.Tensor, t_start: int, prompt: str, cfg: float, eta: float
    ) -> torch.Tensor:
        """Sample the last ``t_start`` steps from x_{t_start} with the inversion's noise maps."""
        first = self.num_steps - t_start
        x = xts[first : first + 1]
        for i, t in enumerate(self.scheduler.timesteps[first:].to(x.device), start=first):
            eps = self.noise_pred(x, t, prompt, cfg)
            mu, sigma = self.step_terms(x, int(t), eps, eta)
            x = mu + sigma * zs[i : i + 1]
        return x


# ----------------------------------------------------------------------------------- comparison

def measure(unet: torch.nn.Module, invert: Callable[[], Any], edit: Callable[[Any], Any], repeats: int) -> dict[str, Any]:
    """Time and count an inversion and the edit that follows it; ``edit`` takes invert's result."""
    with count_unet_calls(unet) as inv_count:
        inv_time, state = timed(invert, repeats)
    with count_unet_calls(unet) as edit_count:
        edit_time, edited = timed(lambda: edit(state), repeats)
    n = max(1, repeats)
    calls = (inv_count.calls // n, edit_count.calls // n)
    rows = (inv_count.rows // n, edit_count.rows // n)
    return {
        "calls": f"{calls[0]} + {calls[1]} = {sum(calls)}",
        "rows": f"{rows[0]} + {rows[1]} = {sum(rows)}",
        "inv_s": inv_time,
        "edit_s": edit_time,
        "total_s": inv_time + edit_time,
        "ms_per_eval": 1000 * (inv_time + edit_time) / max(1, sum(rows)),
        "state": state,
        "edited": edited,
    }


def compare_with_reference(
    editor: LatentEditor,
    unet: torch.nn.Module,
    x0: torch.Tensor,
    make_eps: Callable[[], EpsFn],
    args: argparse.Namespace,
    label: str,
) -> list[dict[str, Any]]:
    """Table rows (``COMPARISON_COLUMNS``) of one edit of ``x0`` by a ``ReferenceLoop`` and by ``editor``.

    ``make_eps`` gives the reference's model call (a fresh one per run, so that any prompt cache is
    part of the timed run). The settings are read from ``args``: source_prompt, target_prompt, steps,
    t_start, cfg_src, cfg_tar, eta, seed, repeats, warmup_steps and inversion_batch_size. Each method
    first runs once at warmup_steps (kernels, allocator, lazy imports) unless that is 0; ``unet``'s
    calls are counted.
    """
    src, tar = args.source_prompt, args.target_prompt

    def ours(steps: int, t_start: int) -> tuple[Callable[[], Inversion], Callable[[Inversion], torch.Tensor]]:
        return (
            lambda: editor.invert_latent(x0, src, steps, t_start, args.cfg_src, args.eta, args.seed),
            lambda inv: editor.edit_latent(inv, tar, args.cfg_tar),
        )

    def reference(steps: int, t_start: int) -> tuple[Callable[[], Any], Callable[[Any], torch.Tensor]]:
        loop = ReferenceLoop(editor.model.scheduler_config, steps, make_eps())
        return (
            lambda: loop.invert(x0, src, args.cfg_src, args.eta, args.seed),
            lambda state: loop.edit(*state, t_start, tar, args.cfg_tar, args.eta),
        )

    if args.warmup_steps > 0:
        steps = min(args.warmup_steps, args.steps)
        for method in (ours, reference):
            invert, edit = method(steps, min(args.t_start, steps, args.inversion_batch_size))
            edit(invert())
    results = {
        "reference": measure(unet, *reference(args.steps, args.t_start), args.repeats),
        "ours": measure(unet, *ours(args.steps, args.t_start), args.repeats),
    }
    inv = results["ours"]["state"]
    return comparison_rows(label, results, relative_error(editor.reconstruct_latent(inv), inv.x0))


def comparison_rows(label: str, results: Mapping[str, Mapping[str, Any]], recon: float) -> list[dict[str, Any]]:
    """Table rows (``COMPARISON_COLUMNS``) of ``compare``'s results; ``recon`` is ours' reconstruction error."""
    ours, reference = results["ours"], results["reference"]
    agreement = relative_error(ours["edited"], reference["edited"])
    rows = []
    for name, result in results.items():
        row = {k: v for k, v in result.items() if k not in ("state", "edited")}
        row.update(model=label, method=name)
        if name == "ours":
            row.update(speedup=reference["total_s"] / result["total_s"], recon=recon, agree=agreement)
        rows.append(row)
    return rows


COMPARISON_COLUMNS = [
    ("model", "model"),
    ("method", "method"),
    ("calls", "UNet calls (inv + edit)"),
    ("rows", "sample-evals (inv + edit)"),
    ("inv_s", "inversion s"),
    ("edit_s", "edit s"),
    ("total_s", "total s"),
    ("ms_per_eval", "ms / sample-eval"),
    ("speedup", "speedup"),
    ("recon", "recon. rel. err"),
    ("agree", "edit rel. diff vs reference"),
]

COMPARISON_NOTES = (
    "sample-evals: UNet rows evaluated (a batch of B rows counts B). speedup: reference total / ours total."
    "\nrecon. rel. err: ||x0' - x0|| / ||x0|| of ours' reconstruction with the source prompt."
    "\nedit rel. diff: ||edit_ours - edit_reference|| / ||edit_reference|| (same x_t draws: ~float rounding)."
)


def edit_parser(
    description: str, *, steps: int, t_start: int, cfg_src: float, cfg_tar: float, source: str, target: str, warmup: int
) -> argparse.ArgumentParser:
    """The options every benchmark takes, with the defaults of its paper."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"], help="UNet dtype")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch.set_num_threads; 1 gives steady timings on a shared machine, use the free cores on an idle one",
    )
    p.add_argument("--repeats", type=int, default=1, help="timed runs per measurement (the best is kept)")
    p.add_argument("--warmup-steps", type=int, default=warmup, help="steps of the warm-up run (0: none)")
    p.add_argument("--steps", type=int, default=steps)
    p.add_argument("--t-start", type=int, default=t_start)
    p.add_argument("--cfg-src", type=float, default=cfg_src)
    p.add_argument("--cfg-tar", type=float, default=cfg_tar)
    p.add_argument("--eta", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--source-prompt", default=source)
    p.add_argument("--target-prompt", default=target)
    p.add_argument("--inversion-batch-size", type=int, default=16, help="(x_t, t) rows per inversion call of ours")
    return p
