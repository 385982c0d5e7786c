"""SDEdit (Meng et al., ICLR 2022): noise the input to an intermediate timestep, then sample.

x_{t_start} = α x_0 + σ n (on the schedule's path), and the reverse process runs from there with fresh
noise. All of a row's noise (n and every z) comes from that row's one generator, so rows with
consecutive seeds are independent and a row does not depend on the rest of the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..guidance import Guidance
from ..sampling import Callback, GaussianNoise, gaussian, generators, sample
from ..schedule import Schedule


@torch.no_grad()
def sdedit(
    guidance: Guidance,
    schedule: Schedule,
    x0: torch.Tensor,
    t_start: int,
    eta: float = 1.0,
    seeds: Sequence[int] = (0,),
    callback: Callback | None = None,
    progress: bool = True,
) -> torch.Tensor:
    """SDEdit of the last ``t_start`` steps of the chain.

    Args:
        guidance: B rows; x0: (B, ...) clean latents; seeds: one per row.
    Returns:
        (B, ...) edited latents.
    """
    if len(seeds) != x0.shape[0]:
        raise ValueError(f"need one seed per latent: {x0.shape[0]} latents, {len(seeds)} seeds")
    steps = schedule.last(t_start)
    gens = generators(seeds)
    a, v = float(schedule.alphas[steps.start]), float(schedule.variances[steps.start])
    x_t = a**0.5 * x0 + v**0.5 * gaussian(gens, x0.shape[1:]).to(x0.device, x0.dtype)
    return sample(guidance, schedule, x_t, steps, eta, GaussianNoise(gens), None, callback, progress, "sdedit")
