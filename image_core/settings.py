"""Validation of the settings every method shares, in one place for the API, both CLIs and the demo.

Each check raises ``InputError`` with one line that says what is allowed, before any work is done.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

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
    finite, ordered and inside [lowest, highest]; ``allowed`` says what the limits are."""
    start, end = (float(v) for v in pair)
    if not (math.isfinite(start) and math.isfinite(end) and lowest <= start < end <= highest):
        raise InputError(f"the {what} {start:g}:{end:g} does not lie inside {allowed}")
    return start, end
