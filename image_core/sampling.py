"""DDPM sampling, edit-friendly DDPM inversion and SDEdit as plain functions over a denoiser.

One reverse step from t to its predecessor s (DDIM form; eta = 1 is DDPM):

    x0_hat = (x_t - sqrt(1 - ᾱ_t) ε) / sqrt(ᾱ_t)
    σ      = eta sqrt((1 - ᾱ_s) / (1 - ᾱ_t)) sqrt(1 - ᾱ_t / ᾱ_s)
    μ      = sqrt(ᾱ_s) x0_hat + sqrt(1 - ᾱ_s - σ²) ε
    x_s    = μ + σ z

Edit-friendly inversion (Huberman-Spiegelglas et al., CVPR 2024) draws every x_t independently
from x_0 and solves the step for z: z_t = (x_s - μ(x_t)) / σ_t. The noise maps z_t then make the
sampler regenerate x_0 exactly; sampling from x_{t_start} with the same z_t and another condition
edits. Where σ is zero (a final alpha of 1) the noise map holds the residual x_s - μ itself
(``noise_scale`` is 1 there), so reconstruction stays exact.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from . import batching
from .batching import Cond
from .guidance import Denoiser
from .schedule import Schedule


def _rows(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) float64 coefficients -> (B, 1, ..., 1) in ``like``'s dtype and device."""
    return values.to(device=like.device, dtype=like.dtype).view(-1, *([1] * (like.dim() - 1)))


def sigma(schedule: Schedule, eta: float) -> torch.Tensor:
    """(N,) float64 σ of each step of the chain."""
    a_t, a_s = schedule.alphas, schedule.alphas_prev
    return eta * ((1 - a_s) / (1 - a_t)).sqrt() * (1 - a_t / a_s).clamp(min=0).sqrt()


def noise_scale(schedule: Schedule, eta: float) -> torch.Tensor:
    """(N,) float64 factor of z in each step: σ, or 1 where σ is zero (z is then the residual)."""
    s = sigma(schedule, eta)
    return torch.where(s > 0, s, torch.ones_like(s))


def posterior_mean(
    schedule: Schedule, k: torch.Tensor, x_t: torch.Tensor, eps: torch.Tensor, eta: float
) -> torch.Tensor:
    """μ of the step from t_k to its predecessor, per row.

    Args:
        k: (B,) int64 step indices into the schedule.
        x_t, eps: (B, ...) latents and their predicted noise.
    """
    a_t, a_s = _rows(schedule.alphas[k], x_t), _rows(schedule.alphas_prev[k], x_t)
    s = _rows(sigma(schedule, eta)[k], x_t)
    x0_hat = (x_t - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    return a_s.sqrt() * x0_hat + (1 - a_s - s**2).clamp(min=0).sqrt() * eps


def _generators(seeds: Sequence[int]) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(int(seed)) for seed in seeds]


def _noised(
    schedule: Schedule, x0: torch.Tensor, steps: range, seeds: Sequence[int]
) -> torch.Tensor:
    """(B, len(steps), ...) independent x_t = sqrt(ᾱ_t) x0 + sqrt(1 - ᾱ_t) n, one generator per row.

    The noise is drawn from the smallest timestep up, so the x_t of a shorter edit are a prefix of
    those of a longer one with the same seed.
    """
    shape = x0.shape[1:]
    noise = torch.empty((len(seeds), len(steps), *shape), dtype=x0.dtype)
    for row, g in enumerate(_generators(seeds)):
        for j in reversed(range(len(steps))):
            noise[row, j] = torch.randn(shape, generator=g)  # float32 draws: a seed means the same in any dtype
    noise = noise.to(x0.device)
    for j, a in enumerate(schedule.alphas[list(steps)].tolist()):  # in place: one full-size tensor
        noise[:, j].mul_((1 - a) ** 0.5).add_(a**0.5 * x0)
    return noise


@torch.no_grad()
def ddpm_invert(
    denoiser: Denoiser,
    schedule: Schedule,
    x0: torch.Tensor,
    cond: Cond,
    t_start: int,
    eta: float = 1.0,
    seeds: Sequence[int] = (0,),
    batch_size: int = 16,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Edit-friendly DDPM inversion of the last ``t_start`` steps of the chain.

    The x_t are independent draws, so the denoiser evaluations of all steps are independent: they
    run in batches of ``batch_size`` (x_t, t) rows, which bounds memory.

    Args:
        x0: (B, ...) clean latents.
        cond: B rows, the condition of the inversion (e.g. from ``guidance.guided``).
        seeds: B seeds, one generator per row, so a row does not depend on the rest of the batch.
    Returns:
        xts: (B, t_start, ...) x_t at the edit's timesteps, xts[:, 0] = x_{t_start}.
        zs: (B, t_start, ...) noise maps with which ``ddpm_sample`` regenerates x0 exactly.
    """
    steps = schedule.last(t_start)
    B, K = x0.shape[0], len(steps)
    if len(seeds) != B:
        raise ValueError(f"need one seed per latent: {B} latents, {len(seeds)} seeds")
    xts = _noised(schedule, x0, steps, seeds)
    flat = xts.flatten(0, 1)  # row b * K + j holds step steps[j] of sample b
    k = torch.tensor(list(steps)).repeat(B)
    b, j = torch.arange(B).repeat_interleave(K), torch.arange(K).repeat(B)
    scale = noise_scale(schedule, eta)
    zs = torch.empty_like(flat)
    for lo in tqdm(range(0, B * K, batch_size), desc="inversion", disable=not progress):
        part = slice(lo, lo + batch_size)
        t = schedule.timesteps[k[part]].to(x0.device)
        eps = denoiser(flat[part], t, batching.take(cond, b[part]))
        # x_s: the next x_t of the same sample, x0 after its last step
        last = (j[part] == K - 1).to(x0.device).view(-1, *([1] * (x0.dim() - 1)))
        x_s = torch.where(last, x0[b[part]], xts[b[part], (j[part] + 1).clamp(max=K - 1)])
        mu = posterior_mean(schedule, k[part], flat[part], eps, eta)
        zs[part] = (x_s - mu) / _rows(scale[k[part]], flat)
    return xts, zs.view_as(xts)


@torch.no_grad()
def ddpm_sample(
    denoiser: Denoiser,
    schedule: Schedule,
    x_t: torch.Tensor,
    zs: torch.Tensor,
    cond: Cond,
    eta: float = 1.0,
    progress: bool = True,
) -> torch.Tensor:
    """Run the last ``zs.shape[1]`` steps of the chain from ``x_t`` with the given noise maps.

    Args:
        x_t: (B, ...) latents at the first of those steps.
        zs: (B', K, ...) noise maps, one per step (from ``ddpm_invert`` or fresh Gaussian noise);
            B a multiple of B': row i of x_t takes the maps of row i mod B' (several targets edit
            one inversion without copies of its maps).
        cond: B rows, the condition of the edit.
    Returns:
        (B, ...) the sample x_0.
    """
    if x_t.shape[0] % zs.shape[0]:
        raise ValueError(f"{x_t.shape[0]} latents cannot share the noise maps of {zs.shape[0]}")
    tiles = x_t.shape[0] // zs.shape[0]
    scale = noise_scale(schedule, eta)
    x = x_t
    for j, k in enumerate(tqdm(schedule.last(zs.shape[1]), desc="editing", disable=not progress)):
        t = schedule.timesteps[k].expand(x.shape[0]).to(x.device)
        eps = denoiser(x, t, cond)
        ks = torch.full((x.shape[0],), k)
        z = zs[:, j].to(x.device).repeat(tiles, *([1] * (x.dim() - 1)))
        x = posterior_mean(schedule, ks, x, eps, eta) + float(scale[k]) * z
    return x


@torch.no_grad()
def sdedit(
    denoiser: Denoiser,
    schedule: Schedule,
    x0: torch.Tensor,
    cond: Cond,
    t_start: int,
    eta: float = 1.0,
    seeds: Sequence[int] = (0,),
    progress: bool = True,
) -> torch.Tensor:
    """SDEdit (Meng et al., 2022): noise x0 to the t_start-th last step, then sample with fresh noise.

    Args:
        x0: (B, ...) clean latents; cond: B rows; seeds: one per row.
    Returns:
        (B, ...) edited latents.
    """
    steps = schedule.last(t_start)
    x_t = _noised(schedule, x0, range(steps.start, steps.start + 1), seeds)[:, 0]
    gens = _generators([seed + 1 for seed in seeds])
    zs = torch.stack([torch.randn((len(steps), *x0.shape[1:]), generator=g) for g in gens]).to(x0.dtype)
    stochastic = (sigma(schedule, eta)[list(steps)] > 0).to(zs.dtype)  # where σ is zero z is a residual: none
    zs *= stochastic.view(1, -1, *([1] * (x0.dim() - 1)))
    return ddpm_sample(denoiser, schedule, x_t, zs.to(x0.device), cond, eta, progress)
