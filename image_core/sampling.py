"""The reverse process: one step, the noise sources, and the ONE loop every method samples with.

One reverse step from t to its predecessor s on the Gaussian path x_t = α_t x0 + σ_t ε (see
``schedule``; the code keeps the squares a = α², v = σ²):

    x0_hat = (x_t - σ_t ε) / α_t
    c      = eta (σ_s / σ_t) σ_{t|s},   σ²_{t|s} = σ_t² - (α_t / α_s)² σ_s²
    μ      = α_s x0_hat + sqrt(σ_s² - c²) ε
    x_s    = μ + c z

On the VP path (α_t² = ᾱ_t) this is DDIM's step (eta = 1: the DDPM posterior; eta = 0: the
probability-flow ODE), with σ²_{t|s} = 1 - ᾱ_t / ᾱ_s. At eta = 1 it is also the first-order
DPM-Solver++ SDE step on any path: (σ_s / σ_t) e^{-h} x_t + α_s (1 - e^{-2h}) x0_hat +
σ_s sqrt(1 - e^{-2h}) z with h = λ_s - λ_t, λ = log(α / σ), after substituting ε = (x_t - α_t x0_hat) / σ_t.

Second order (DPM-Solver++(2M), midpoint; schedules with ``order`` 2, sampler noise eta > 0): the
same step with the data estimate x0_hat + w_k (x0_hat - x0_hat of the run's step before), ε re-derived
from it and x_t. This equals the scheduler's (σ_s / σ_t) e^{-h} x_t + α_s (1 - e^{-2h}) (D0 + D1 / 2) +
σ_s sqrt(1 - e^{-2h}) z, D1 = (D0 - D_before) / r, w_k = 1 / (2 r) (``schedule._midpoint_weights``).
A run's first step has no step before it and is first-order. Deterministic runs (eta = 0) take
first-order steps: the probability-flow ODE that DDIM inversion integrates backwards.

Methods differ only in what they hand this loop: the guidance (a denoiser with the conditions of the
run's rows, see ``guidance``), where z comes from (``RecordedNoise``: an inversion's maps;
``GaussianNoise``: fresh N(0, I) per row; None: deterministic DDIM), and a per-step ``callback`` that
sees the whole ``Step`` and may replace x_s (masks, drifts of x0_hat).
"""

from __future__ import annotations

import math

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol, Union

import torch
from .progress import Progress

from .batching import append_dims
from .guidance import Guidance
from .schedule import Schedule


def sigma(schedule: Schedule, eta: float) -> torch.Tensor:
    """(N,) float64 noise scale c of each step of the chain (zero where σ_s = 0: the data)."""
    a_t, a_s, v_t, v_s = schedule.alphas, schedule.alphas_prev, schedule.variances, schedule.variances_prev
    if schedule.path == "flow":  # not variance-preserving: σ²_{t|s} = σ_t² - (α_t/α_s)² σ_s²
        transition = v_t - a_t / a_s * v_s
    else:  # α² + σ² = 1: σ²_{t|s} = 1 - α_t²/α_s² (the VP form, with its rounding)
        transition = 1 - a_t / a_s
    return eta * (v_s / v_t).sqrt() * transition.clamp(min=0).sqrt()


def multistep(schedule: Schedule, eta: float) -> list[float]:
    """(N,) the multistep weights w_k the run applies (all zero when eta is 0: deterministic runs
    take first-order steps), as Python numbers."""
    return [0.0] * schedule.num_steps if eta == 0 or schedule.order < 2 else schedule.weights.tolist()


Coefficient = Union[float, torch.Tensor]
"""A step's ᾱ or σ: a Python float (one step for every row: no tensor crosses to the device), or a
(B,) tensor (rows at different steps)."""


def _rows(value: Coefficient, like: torch.Tensor) -> Coefficient:
    return value if isinstance(value, float) else append_dims(value, like)


def _sqrt(value: Coefficient) -> Coefficient:
    return math.sqrt(max(value, 0.0)) if isinstance(value, float) else value.clamp(min=0).sqrt()


def _variance(v: Coefficient | None, a: Coefficient, like: torch.Tensor) -> Coefficient:
    """σ² shaped against ``like``; by default 1 - α² (a variance-preserving path), from ``a`` already
    shaped (so that the arithmetic is that of the latents' dtype)."""
    return 1 - a if v is None else _rows(v, like)


def predicted_x0(a_t: Coefficient, x_t: torch.Tensor, eps: torch.Tensor, v_t: Coefficient | None = None) -> torch.Tensor:
    """x0_hat = (x_t - σ_t ε) / α_t, with a_t = α_t² and v_t = σ_t² (default 1 - α_t²)."""
    a_t = _rows(a_t, x_t)
    v_t = _variance(v_t, a_t, x_t)
    return (x_t - _sqrt(v_t) * eps) / _sqrt(a_t)


def eps_from_x0(a_t: Coefficient, x_t: torch.Tensor, x0_hat: torch.Tensor, v_t: Coefficient | None = None) -> torch.Tensor:
    """The ε for which ``predicted_x0`` gives ``x0_hat``: (x_t - α_t x0_hat) / σ_t."""
    a_t = _rows(a_t, x_t)
    v_t = _variance(v_t, a_t, x_t)
    return (x_t - _sqrt(a_t) * x0_hat) / _sqrt(v_t)


def mean_from_x0(
    a_s: Coefficient, sigma_t: Coefficient, x0_hat: torch.Tensor, eps: torch.Tensor, v_s: Coefficient | None = None
) -> torch.Tensor:
    """μ = α_s x0_hat + sqrt(σ_s² - c²) ε, with a_s = α_s², v_s = σ_s² (default 1 - α_s²), c = ``sigma_t``."""
    a_s, sigma_t = _rows(a_s, x0_hat), _rows(sigma_t, x0_hat)
    v_s = _variance(v_s, a_s, x0_hat)
    return _sqrt(a_s) * x0_hat + _sqrt(v_s - sigma_t**2) * eps


def posterior_mean(
    schedule: Schedule, k: torch.Tensor, x_t: torch.Tensor, eps: torch.Tensor, eta: float
) -> torch.Tensor:
    """μ of the first-order step from t_k to its predecessor, per row (rows may sit at different steps).

    Args:
        k: (B,) int64 step indices into the schedule.
        x_t, eps: (B, ...) latents and their predicted noise.
    """
    x0_hat = predicted_x0(schedule.alphas[k], x_t, eps, schedule.variances[k])
    return mean_from_x0(schedule.alphas_prev[k], sigma(schedule, eta)[k], x0_hat, eps, schedule.variances_prev[k])


def corrected(
    w: Coefficient, a_t: Coefficient, v_t: Coefficient, x_t: torch.Tensor, x0_hat: torch.Tensor, before: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The second-order step's data estimate x0_hat + w (x0_hat - before) and the ε it implies at x_t."""
    x0 = x0_hat + _rows(w, x0_hat) * (x0_hat - before)
    return x0, eps_from_x0(a_t, x_t, x0, v_t)


# ------------------------------------------------------------------------------------ noise sources


class NoiseSource(Protocol):
    """Where the z of each step comes from.

    ``noise(j, like)`` returns z for the j-th step of the run (j = 0 is the first step run), shaped,
    typed and placed like ``like`` (the current (B, ...) latents). It is called only where σ > 0.
    """

    def __call__(self, j: int, like: torch.Tensor) -> torch.Tensor: ...


class RecordedNoise:
    """The noise maps of an inversion: z_j = zs[:, j], moved to the latents' device step by step.

    Args:
        zs: (B', K, ...) maps of K steps; B latents with B a multiple of B' share them, row i
            taking the maps of row i mod B' (several targets edit one inversion without copies).
    """

    def __init__(self, zs: torch.Tensor) -> None:
        self.zs = zs

    def __call__(self, j: int, like: torch.Tensor) -> torch.Tensor:
        z = self.zs[:, j].to(like.device, like.dtype)
        return z.repeat(like.shape[0] // z.shape[0], *([1] * (z.dim() - 1)))


def generators(seeds: Sequence[int]) -> list[torch.Generator]:
    """One CPU generator per seed (one per row of a batch)."""
    return [torch.Generator().manual_seed(int(seed)) for seed in seeds]


def gaussian(gens: Sequence[torch.Generator], shape: Sequence[int]) -> torch.Tensor:
    """(len(gens), *shape) float32 N(0, I) draws, row r from ``gens[r]`` alone (float32 so that a seed
    means the same noise whatever the latents' dtype)."""
    return torch.stack([torch.randn(tuple(shape), generator=g) for g in gens])


class GaussianNoise:
    """Fresh z ~ N(0, I) at every step, each row from its own generator (EDM-style): a row's noise
    does not depend on the rest of the batch. Rows i share the generator of row i mod len(gens)."""

    def __init__(self, gens: Sequence[torch.Generator]) -> None:
        self.gens = list(gens)

    def __call__(self, j: int, like: torch.Tensor) -> torch.Tensor:
        z = gaussian(self.gens, like.shape[1:]).to(like.device, like.dtype)
        return z.repeat(like.shape[0] // z.shape[0], *([1] * (z.dim() - 1)))


# ------------------------------------------------------------------------------------------ the loop


@dataclass(frozen=True)
class Step:
    """One reverse step of a run, as a ``callback`` sees it (all tensors (B, ...)).

    Attributes:
        j: index of the step within the run (0 = the first step run).
        k: index of the step in the schedule.
        t: its timestep (the model's time input).
        x_t, eps, x0_hat: the latents, the ε and the x0_hat the step uses (a second-order step's
            corrected data estimate and the ε it implies).
        a_t, a_s, sigma: α_t², α_s² and the noise scale c of the step (float64 scalars).
        noise: what the step adds to μ: c z (plus an inversion's residual where c is zero), or 0.
        x_s: μ + noise, the step's result.
        v_t, v_s: σ_t² and σ_s²; None: 1 - α² (variance-preserving).
    """

    j: int
    k: int
    t: int | float
    x_t: torch.Tensor
    eps: torch.Tensor
    x0_hat: torch.Tensor
    a_t: float
    a_s: float
    sigma: float
    noise: torch.Tensor | float
    x_s: torch.Tensor
    v_t: float | None = None
    v_s: float | None = None

    def x_s_for(self, x0_hat: torch.Tensor) -> torch.Tensor:
        """The x_s this step gives for another x0_hat, ε re-derived from x_t so that the pair stays
        consistent (how a drift of x0_hat enters a step), with the same noise."""
        eps = eps_from_x0(self.a_t, self.x_t, x0_hat, self.v_t)
        return mean_from_x0(self.a_s, self.sigma, x0_hat, eps, self.v_s) + self.noise


Callback = Callable[[Step], torch.Tensor]


def then(first: Callback | None, second: Callback) -> Callback:
    """A callback running ``first`` (if any), then ``second`` on its result."""
    if first is None:
        return second
    return lambda step: second(replace(step, x_s=first(step)))


def sample(
    guidance: Guidance,
    schedule: Schedule,
    x_t: torch.Tensor,
    steps: range,
    eta: float = 1.0,
    noise: NoiseSource | None = None,
    residual: torch.Tensor | None = None,
    callback: Callback | None = None,
    progress: bool = True,
    desc: str = "sampling",
) -> torch.Tensor:
    """Run the reverse steps ``steps`` of the chain from ``x_t``: x_s = μ(x_t, ε) + σ z at each.

    Args:
        guidance: ε of the B rows, called with the run's step index j (0 = ``steps[0]``).
        x_t: (B, ...) latents at the timestep of ``steps[0]``.
        steps: ascending indices into the schedule (descending timesteps), e.g. ``schedule.last(K)``.
        eta: sampler noise; 0 is deterministic DDIM (``noise`` is then never called).
        noise: where z comes from; None for no noise.
        residual: (B', ...) added where σ is zero after the chain's last step: an inversion's
            ``x0 - μ`` there, so that reconstruction stays exact when the final alpha is one.
        callback: called after every step with the ``Step``; its return value replaces x_s.
    Returns:
        (B, ...) the latents after the last step (x_0 when ``steps`` ends the chain).
    """
    # the schedule as Python numbers and the timesteps on the latents' device, once: the steps read
    # nothing back from the device and send nothing to it but the model's inputs
    alphas, alphas_prev, sigmas = schedule.alphas.tolist(), schedule.alphas_prev.tolist(), sigma(schedule, eta).tolist()
    variances, variances_prev, weights = schedule.variances.tolist(), schedule.variances_prev.tolist(), multistep(schedule, eta)
    timesteps = schedule.times_like(x_t)
    last = schedule.num_steps - 1
    x = x_t
    before: torch.Tensor | None = None  # the model's x0_hat of the run's step before (second order)
    for j, k in enumerate(Progress(steps, desc=desc, disable=not progress)):
        eps = guidance(x, timesteps[k].expand(x.shape[0]), j)
        a_t, a_s, s, v_t, v_s = alphas[k], alphas_prev[k], sigmas[k], variances[k], variances_prev[k]
        x0_hat = predicted_x0(a_t, x, eps, v_t)
        model_x0 = x0_hat
        if weights[k] != 0 and before is not None:
            x0_hat, eps = corrected(weights[k], a_t, v_t, x, x0_hat, before)
        term: torch.Tensor | float = 0.0
        if s > 0 and noise is not None:
            term = s * noise(j, x)
        elif s == 0 and k == last and residual is not None:
            term = RecordedNoise(residual.unsqueeze(1))(0, x)
        x_s = mean_from_x0(a_s, s, x0_hat, eps, v_s) + term
        if callback is not None:
            step = Step(j, k, schedule.timesteps[k].item(), x, eps, x0_hat, a_t, a_s, s, term, x_s, v_t, v_s)
            x_s = callback(step)
        before = model_x0 if schedule.order > 1 else None
        x = x_s
    return x
