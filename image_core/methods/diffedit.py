"""DiffEdit (Couairon et al., ICLR 2023): where to edit, from where two prompts disagree.

The input is noised to a strength (default 0.5) n times (default 10); at each draw the model
predicts the noise under the target and under the source description. Where the edit should
happen the two estimates differ; elsewhere both describe the same content. The mask is

    D    = mean over draws and latent channels of |ε(x_t, target) - ε(x_t, source)|
    M    = clamp(D, 0, r · mean(D)) / (r · mean(D)),   r = 3 (extreme values removed, then in [0, 1])
    mask = M > threshold (0.5)

(the paper's rule: remove outliers, rescale to [0, 1], binarise at 0.5; r = 3 and the defaults above
are those of diffusers' DiffEdit pipeline). The masked edit then keeps, after every step, the
inverted trajectory outside the mask, so the output equals the input there.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .. import batching
from ..batching import Cond
from ..guidance import Denoiser
from ..sampling import Callback, Step, gaussian, generators
from ..schedule import Schedule

STRENGTH = 0.5  # noise level of the mask's draws, as a fraction of the chain (paper: 0.5)
DRAWS = 10  # noise draws averaged (paper: n = 10)
CLAMP_RATIO = 3.0  # differences above this many times their mean are clamped (diffusers' pipeline)
THRESHOLD = 0.5  # binarisation of the rescaled difference (paper)


@torch.no_grad()
def diffedit_mask(
    denoiser: Denoiser,
    schedule: Schedule,
    x0: torch.Tensor,
    target: Cond,
    source: Cond,
    strength: float = STRENGTH,
    draws: int = DRAWS,
    threshold: float = THRESHOLD,
    seed: int = 0,
    channel_axis: int | None = 1,
    batch_size: int = 16,
) -> torch.Tensor:
    """The DiffEdit mask of one latent.

    Args:
        x0: (1, ...) the clean latent.
        denoiser: the model (conditional branches only: with a shared scale and unconditional branch,
            guidance would only scale the difference, which the normalisation removes).
        target, source: one row each, the conditions of the two descriptions.
        strength: in (0, 1]; the step at this fraction of the chain is the one noised to.
        channel_axis: the latents' channel axis, averaged over (None: no channels).
        batch_size: rows per denoiser call; all draws and both prompts go in as few calls as that allows.
    Returns:
        (1, ...) float mask in {0, 1}, shaped like x0 without its channel axis (kept with size 1).
    """
    k = min(schedule.num_steps - 1, max(0, round((1 - strength) * schedule.num_steps)))
    a, v = float(schedule.alphas[k]), float(schedule.variances[k])
    noise = gaussian(generators([seed]), (draws, *x0.shape[1:]))[0].to(x0.device, x0.dtype)
    x_t = a**0.5 * x0 + v**0.5 * noise  # x_t = α x0 + σ n  # (draws, ...)
    rows = torch.cat([x_t, x_t])  # target draws, then source draws
    cond = batching.cat([batching.repeat(target, draws), batching.repeat(source, draws)])
    t = schedule.times_like(x0)[k].expand(len(rows))
    eps = torch.cat([
        denoiser(rows[lo : lo + batch_size], t[lo : lo + batch_size], batching.take(cond, slice(lo, lo + batch_size)))
        for lo in range(0, len(rows), batch_size)
    ])
    difference = (eps[:draws] - eps[draws:]).abs().mean(0, keepdim=True)
    if channel_axis is not None:
        difference = difference.mean(channel_axis, keepdim=True)
    limit = CLAMP_RATIO * difference.mean()
    return (difference.clamp(0, limit) / limit > threshold).to(x0.dtype)


def keep_outside(mask: torch.Tensor, trajectory: Sequence[torch.Tensor] | torch.Tensor, x0: torch.Tensor) -> Callback:
    """A step callback for masked editing: outside ``mask`` each step's result is the inverted
    trajectory's own latent, so the output equals the input there (bitwise with DDPM inversion).

    Args:
        mask: broadcastable to the latents; 1 where the edit may change them.
        trajectory: (B', K, ...) the inversion's x_t (step j lands on trajectory[:, j + 1]).
        x0: (B', ...) where the last step lands.
    """

    binary = bool(((mask == 0) | (mask == 1)).all())  # decided once, before the run
    K = trajectory.shape[1]
    placed = batching.Placed(mask)

    def callback(step: Step) -> torch.Tensor:
        ref = batching.to_like(x0 if step.j == K - 1 else trajectory[:, step.j + 1], step.x_s)
        ref = ref.repeat(step.x_s.shape[0] // ref.shape[0], *([1] * (ref.dim() - 1)))
        m = placed.like(step.x_s)
        return torch.where(m > 0, step.x_s, ref) if binary else m * step.x_s + (1 - m) * ref

    return callback
