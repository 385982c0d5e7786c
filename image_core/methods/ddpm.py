"""Edit-friendly DDPM inversion (Huberman-Spiegelglas, Kulikov, Michaeli, CVPR 2024).

Every x_t is drawn independently from x_0,

    x_t = sqrt(ᾱ_t) x_0 + sqrt(1 - ᾱ_t) n_t,   n_t ~ N(0, I),

and each reverse step is solved for its noise map, z_t = (x_s - μ(x_t)) / σ_t, x_s being the next
x_t of the chain (x_0 after the last). Sampling from x_{t_start} with these z_t regenerates x_0
exactly; sampling with another condition edits while the maps keep the structure. Because the x_t
are independent, the denoiser calls of all steps are independent and run as large batches.

Where σ is zero (after the chain's last step when the scheduler's final alpha is one) there is no
z to solve for: the step's residual x_0 - μ is returned as its own term and added back there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from ..progress import Progress

from ..batching import append_dims
from ..guidance import ClassifierFreeGuidance, Guidance
from ..sampling import Callback, RecordedNoise, gaussian, generators, posterior_mean, sample, sigma
from ..schedule import Schedule


class DDPMInversion(NamedTuple):
    """What ``ddpm_invert`` returns (K = t_start steps, B latents)."""

    xts: torch.Tensor  # (B, K, ...) x_t at the edit's timesteps, xts[:, 0] = x_{t_start}
    zs: torch.Tensor  # (B, K, ...) noise maps z_t (zero where σ is zero)
    residual: torch.Tensor | None  # (B, ...) x_0 - μ of the last step where σ is zero there, else None


def noised(schedule: Schedule, x0: torch.Tensor, steps: range, seeds: Sequence[int]) -> torch.Tensor:
    """(B, len(steps), ...) independent x_t = sqrt(ᾱ_t) x0 + sqrt(1 - ᾱ_t) n_t, one generator per row.

    The noise is drawn from the smallest timestep up, so the x_t of a shorter edit are a prefix of
    those of a longer one with the same seed.
    """
    gens = generators(seeds)
    xts = torch.empty((len(seeds), len(steps), *x0.shape[1:]), dtype=x0.dtype)
    for j in reversed(range(len(steps))):
        xts[:, j] = gaussian(gens, x0.shape[1:])
    xts = xts.to(x0.device)
    for j, a in enumerate(schedule.alphas[list(steps)].tolist()):  # in place: one full-size tensor
        xts[:, j].mul_((1 - a) ** 0.5).add_(a**0.5 * x0)
    return xts


@torch.no_grad()
def ddpm_invert(
    guidance: ClassifierFreeGuidance,
    schedule: Schedule,
    x0: torch.Tensor,
    t_start: int,
    eta: float = 1.0,
    seeds: Sequence[int] = (0,),
    batch_size: int = 16,
    progress: bool = True,
) -> DDPMInversion:
    """Edit-friendly DDPM inversion of the last ``t_start`` steps of the chain.

    Args:
        guidance: B rows, the source prompt's guidance (its rows are taken per batch of steps).
        x0: (B, ...) clean latents.
        eta: sampler noise in (0, 1]; the edit must use the same.
        seeds: B seeds, one generator per row, so a row does not depend on the rest of the batch.
        batch_size: (x_t, t) rows per denoiser call; bounds memory (1 gives calls shaped like an
            edit's, hence bitwise reconstruction with any kernel).
    Returns:
        ``DDPMInversion(xts, zs, residual)``; ``ddpm_edit`` with them regenerates x0.
    """
    steps = schedule.last(t_start)
    B, K = x0.shape[0], len(steps)
    if len(seeds) != B:
        raise ValueError(f"need one seed per latent: {B} latents, {len(seeds)} seeds")
    xts = noised(schedule, x0, steps, seeds)
    flat = xts.flatten(0, 1)  # row b * K + j holds step steps[j] of sample b
    k = torch.tensor(list(steps)).repeat(B)
    b, j = torch.arange(B).repeat_interleave(K), torch.arange(K).repeat(B)
    sigmas = sigma(schedule, eta)
    zs = torch.empty_like(flat)
    residual = None
    for lo in Progress(range(0, B * K, batch_size), desc="inversion", disable=not progress):
        part = slice(lo, lo + batch_size)
        kp, bp, jp = k[part], b[part], j[part]
        eps = guidance.take(bp)(flat[part], schedule.timesteps[kp].to(x0.device))
        last = append_dims((jp == K - 1).double(), flat) > 0  # x_s: the next x_t of the sample, x0 after its last step
        x_s = torch.where(last, x0[bp], xts[bp, (jp + 1).clamp(max=K - 1)])
        step = x_s - posterior_mean(schedule, kp, flat[part], eps, eta)
        s = sigmas[kp]
        zs[part] = step / append_dims(torch.where(s > 0, s, 1.0), step) * append_dims((s > 0).double(), step)
        if (s == 0).any():  # only the chain's last step can have σ = 0
            if residual is None:
                residual = torch.zeros_like(x0)
            residual[bp[s == 0]] = step[s == 0]
    return DDPMInversion(xts, zs.view_as(xts), residual)


def ddpm_edit(
    guidance: Guidance,
    schedule: Schedule,
    x_t: torch.Tensor,
    zs: torch.Tensor,
    eta: float = 1.0,
    residual: torch.Tensor | None = None,
    callback: Callback | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """Regenerate from x_{t_start} with an inversion's noise maps: the last ``zs.shape[1]`` steps.

    Args:
        x_t: (B, ...) latents at the first of those steps (an inversion's ``xts[:, 0]``, tiled).
        zs: (B', K, ...) noise maps; B a multiple of B' (row i takes the maps of row i mod B').
        guidance: the edit's, B rows (the inversion's own guidance reconstructs).
        residual: (B', ...) the inversion's residual where σ is zero, else None.
    Returns:
        (B, ...) the edited x_0.
    """
    if x_t.shape[0] % zs.shape[0]:
        raise ValueError(f"{x_t.shape[0]} latents cannot share the noise maps of {zs.shape[0]}")
    steps = schedule.last(zs.shape[1])
    return sample(guidance, schedule, x_t, steps, eta, RecordedNoise(zs), residual, callback, progress, "editing")
