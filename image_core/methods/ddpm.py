"""Edit-friendly DDPM inversion (Huberman-Spiegelglas, Kulikov, Michaeli, CVPR 2024).

Every x_t is drawn independently from x_0 on the schedule's path,

    x_t = α_t x_0 + σ_t n_t,   n_t ~ N(0, I),

and each reverse step is solved for its noise map, z_t = (x_s - μ(x_t)) / c_t, x_s being the next
x_t of the chain (x_0 after the last) and μ, c the sampler's step (``sampling``): the DDPM posterior,
or on a second-order schedule the DPM-Solver++(2M) SDE step, whose data estimate also takes the
model's x0_hat at the step before (at that step's own independent x_t, which sampling from the maps
retraces; a run's first step is first-order). Sampling from x_{t_start} with these z_t regenerates
x_0 exactly; sampling with another condition edits while the maps keep the structure. Because the x_t
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
from ..sampling import Callback, RecordedNoise, corrected, gaussian, generators, mean_from_x0, multistep, predicted_x0, sample, sigma
from ..schedule import Schedule


class DDPMInversion(NamedTuple):
    """What ``ddpm_invert`` returns (K = t_start steps, B latents)."""

    xts: torch.Tensor  # (B, K, ...) x_t at the edit's timesteps, xts[:, 0] = x_{t_start}
    zs: torch.Tensor  # (B, K, ...) noise maps z_t (zero where σ is zero)
    residual: torch.Tensor | None  # (B, ...) x_0 - μ of the last step where σ is zero there, else None


def noised(schedule: Schedule, x0: torch.Tensor, steps: range, seeds: Sequence[int]) -> torch.Tensor:
    """(B, len(steps), ...) independent x_t = α_t x0 + σ_t n_t, one generator per row.

    The noise is drawn from the smallest timestep up, so the x_t of a shorter edit are a prefix of
    those of a longer one with the same seed.
    """
    gens = generators(seeds)
    xts = torch.empty((len(seeds), len(steps), *x0.shape[1:]), dtype=x0.dtype)
    for j in reversed(range(len(steps))):
        xts[:, j] = gaussian(gens, x0.shape[1:])
    xts = xts.to(x0.device)
    chosen = list(steps)
    for j, (a, v) in enumerate(zip(schedule.alphas[chosen].tolist(), schedule.variances[chosen].tolist())):
        xts[:, j].mul_(v**0.5).add_(a**0.5 * x0)  # in place: one full-size tensor
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
    weights = torch.tensor(multistep(schedule, eta), dtype=torch.float64)
    second = bool(weights.any())
    zs = torch.empty_like(flat)
    residual = None
    carry: torch.Tensor | None = None  # the model's x0_hat of the row before the batch (second order)
    for lo in Progress(range(0, B * K, batch_size), desc="inversion", disable=not progress):
        part = slice(lo, lo + batch_size)
        kp, bp, jp = k[part], b[part], j[part]
        x = flat[part]
        eps = guidance.take(bp)(x, schedule.times_like(x0)[kp.to(x0.device)])
        last = append_dims((jp == K - 1).double(), flat) > 0  # x_s: the next x_t of the sample, x0 after its last step
        x_s = torch.where(last, x0[bp], xts[bp, (jp + 1).clamp(max=K - 1)])
        a_t, v_t = schedule.alphas[kp], schedule.variances[kp]
        x0_hat = predicted_x0(a_t, x, eps, v_t)
        if second:  # the data estimate of the SDE solver's second-order steps (the run's first is first-order)
            model_x0 = x0_hat
            before = torch.cat([x0_hat[:1] if carry is None else carry, x0_hat[:-1]])  # row r - 1 (same sample where j > 0)
            w = torch.where(jp > 0, weights[kp], 0.0)
            x0_hat, eps = corrected(w, a_t, v_t, x, x0_hat, before)
            carry = model_x0[-1:]
        step = x_s - mean_from_x0(schedule.alphas_prev[kp], sigmas[kp], x0_hat, eps, schedule.variances_prev[kp])
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
