"""DDIM inversion (Song et al., ICLR 2021; the "encode-decode" baseline of editing papers).

The deterministic sampler (η = 0) run backwards: from x_s, one step up the chain to x_t is

    ε      = ε(x_s, t)                       (the noise estimate at the step's own timestep)
    x0_hat = (x_s - σ_s ε) / α_s
    x_t    = α_t x0_hat + σ_t ε

starting from x_0 (at the scheduler's final level): the probability-flow ODE of the schedule's path,
integrated backwards with first-order steps (on the VP path, DDIM). Sampling down from x_{t_start} with η = 0 and
the same condition retraces the path only approximately: ε is evaluated at x_s instead of x_t, an
error that shrinks as the steps get finer and grows with classifier-free guidance, unlike
edit-friendly DDPM inversion, which is exact at any guidance.
"""

from __future__ import annotations

import math

import torch
from ..progress import Progress

from ..guidance import Guidance
from ..sampling import predicted_x0
from ..schedule import Schedule


@torch.no_grad()
def ddim_invert(
    guidance: Guidance,
    schedule: Schedule,
    x0: torch.Tensor,
    t_start: int,
    progress: bool = True,
) -> torch.Tensor:
    """The deterministic trajectory up to the ``t_start``-th last step of the chain.

    Args:
        guidance: B rows (the source prompt, with or without classifier-free guidance).
        x0: (B, ...) clean latents.
    Returns:
        xts: (B, t_start, ...) the x_t of the edit's timesteps, descending like the sampler's steps
            (xts[:, 0] = x_{t_start}, xts[:, -1] = x_{t_1}).
    """
    steps = schedule.last(t_start)
    xts = torch.empty((x0.shape[0], len(steps), *x0.shape[1:]), dtype=x0.dtype, device=x0.device)
    alphas, alphas_prev = schedule.alphas.tolist(), schedule.alphas_prev.tolist()  # host numbers, once
    variances, variances_prev = schedule.variances.tolist(), schedule.variances_prev.tolist()
    timesteps = schedule.times_like(x0)
    x = x0
    for j, k in zip(reversed(range(len(steps))), Progress(reversed(steps), total=len(steps), desc="DDIM inversion", disable=not progress)):
        eps = guidance(x, timesteps[k].expand(x.shape[0]), j)
        x0_hat = predicted_x0(alphas_prev[k], x, eps, variances_prev[k])
        x = math.sqrt(alphas[k]) * x0_hat + math.sqrt(variances[k]) * eps
        xts[:, j] = x
    return xts
