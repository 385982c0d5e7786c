"""Validation of the settings every method shares, in one place for the API, both CLIs and the demo.

Each check raises ``InputError`` with one line that says what is allowed, before any work is done.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

from .errors import InputError

MAX_GUIDANCE = 100.0  # the papers use at most about 30; far beyond, samples leave the data range
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit integer


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_settings(num_steps: int, t_start: int, eta: float, *cfgs: float) -> None:
    """Refuse a chain, strength, sampler noise or guidance scales no edit can run with.

    Args:
        num_steps: N, steps of the full chain (>= 1; the model's own maximum is checked by ``Schedule``).
        t_start: steps the edit runs, in [1, N].
        eta: sampler noise in (0, 1] (DDPM inversion needs σ > 0; 1 is DDPM).
        cfgs: guidance scales, each in [0, ``MAX_GUIDANCE``].
    """
    if not _is_int(num_steps) or num_steps < 1:
        raise InputError(f"steps must be a positive integer, got {num_steps}")
    if not _is_int(t_start) or not 1 <= t_start <= num_steps:
        raise InputError(f"tstart must be between 1 and steps ({num_steps}), got {t_start}")
    if not (isinstance(eta, (int, float)) and 0 < eta <= 1):
        raise InputError(f"eta must be in (0, 1], got {eta}")
    for cfg in cfgs:
        if not (isinstance(cfg, (int, float)) and math.isfinite(cfg) and 0 <= cfg <= MAX_GUIDANCE):
            raise InputError(f"guidance scales must be between 0 and {MAX_GUIDANCE:g}, got {cfg}")


def check_seeds(seeds: Sequence[int]) -> None:
    """Refuse seeds that are not whole numbers in [0, ``MAX_SEED``]."""
    for seed in seeds:
        if not _is_int(seed) or not 0 <= seed <= MAX_SEED:
            raise InputError(f"seeds must be whole numbers from 0 to {MAX_SEED}, got {seed!r}")


def consecutive_seeds(first: int, count: int, what: str = "seed") -> list[int]:
    """The seeds ``first .. first + count - 1`` (the CLIs' --seed / --num-outputs, the demo's variations),
    refused in one line if any falls outside [0, ``MAX_SEED``]."""
    if not _is_int(first) or not 0 <= first <= MAX_SEED - count + 1:
        raise InputError(f"{what} must be between 0 and {MAX_SEED - count + 1}, got {first}")
    return list(range(first, first + count))


def check_interval(pair: Sequence[float], lowest: float, highest: float, what: str, allowed: str) -> tuple[float, float]:
    """(start, end) of a range (a time range, a frequency band, a box side), refused in one line unless
    finite, ordered and inside [lowest, highest]; ``allowed`` says what the limits are. A reversed
    (start after end) or empty range is refused as such, not as lying outside."""
    start, end = (float(v) for v in pair)
    if math.isfinite(start) and math.isfinite(end):
        if start > end:  # the cause is the order, wherever the two ends lie
            swapped = f"here {end:g}:{start:g}" if lowest <= end and start <= highest else "the smaller first"
            raise InputError(
                f"the {what} {start:g}:{end:g} is reversed (start after end), so it does not lie inside {allowed}: "
                f"give start:end, {swapped}"
            )
        if start == end:
            raise InputError(
                f"the {what} {start:g}:{end:g} is empty (start equals end): give start:end with start before end"
            )
    if not (math.isfinite(start) and math.isfinite(end) and lowest <= start < end <= highest):
        raise InputError(f"the {what} {start:g}:{end:g} does not lie inside {allowed}")
    return start, end


def texts(value: str | Sequence[str], what: str) -> list[str]:
    """One text or several as a list, refused in one line if empty or not text."""
    values = [value] if isinstance(value, str) else list(value)
    if not values:
        raise InputError(f"give at least one {what}")
    for text in values:
        if not isinstance(text, str):
            raise InputError(f"{what} must be text, got {type(text).__name__}")
    return values


def targets_and_scales(target_prompt: str | Sequence[str], cfg_tar: float | Sequence[float]) -> tuple[list[str], list[float]]:
    """T target prompts and one guidance scale per target (one scale for all, or one each)."""
    targets = texts(target_prompt, "target prompt")
    cfgs = [float(cfg_tar)] * len(targets) if isinstance(cfg_tar, (int, float)) else [float(c) for c in cfg_tar]
    if len(cfgs) != len(targets):
        raise InputError(f"give one cfg_tar per target: {len(targets)} targets, {len(cfgs)} scales")
    return targets, cfgs


def seed_list(seed: int | Sequence[int]) -> list[int]:
    """One seed or several as a list of ints, checked (``check_seeds``)."""
    seeds = list(seed) if isinstance(seed, Sequence) else [seed]
    check_seeds(seeds)
    return [int(s) for s in seeds]


def check_mask_settings(strength: float, draws: int, threshold: float) -> None:
    """Refuse DiffEdit mask settings outside their ranges."""
    if not (isinstance(strength, (int, float)) and 0 < strength <= 1):
        raise InputError(f"mask strength must be in (0, 1], got {strength}")
    if isinstance(draws, bool) or not isinstance(draws, int) or not 1 <= draws <= 100:
        raise InputError(f"mask draws must be a whole number from 1 to 100, got {draws}")
    if not (isinstance(threshold, (int, float)) and 0 <= threshold < 1):
        raise InputError(f"mask threshold must be in [0, 1), got {threshold}")


def check_mask(mask: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """``mask`` as a float64 tensor broadcastable to latents like ``x0`` (B, C, ...), else InputError."""
    mask = torch.as_tensor(mask).detach().cpu()  # checked and kept on the host (MPS has no float64)
    spatial = tuple(x0.shape[2:]) if x0.dim() > 2 else tuple(x0.shape[1:])
    if mask.dim() != x0.dim() or tuple(mask.shape[-len(spatial):]) != spatial or any(
        n not in (1, x0.shape[i]) for i, n in enumerate(mask.shape[: x0.dim() - len(spatial)])
    ):
        raise InputError(f"a mask of shape {tuple(mask.shape)} does not fit latents of shape {tuple(x0.shape)}")
    if not torch.isfinite(mask).all() or mask.min() < 0 or mask.max() > 1:
        raise InputError("mask values must lie in [0, 1]")
    if not (mask > 0).any():
        raise InputError("the mask is empty, so the edit would change nothing: mark where to edit")
    return mask.to(torch.float64)
