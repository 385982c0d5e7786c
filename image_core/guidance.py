"""The denoiser contract and classifier-free guidance as a wrapper around a denoiser."""

from __future__ import annotations

from typing import Protocol

import torch

from . import batching
from .batching import Cond


class Denoiser(Protocol):
    """ε-prediction over a batch: ``eps = denoiser(x_t, t, cond)``.

    Args:
        x_t: (B, ...) noisy latents.
        t: (B,) int64 timesteps, one per row (rows may sit at different timesteps).
        cond: a condition whose tensors have B rows (see ``batching``).
    Returns:
        (B, ...) predicted noise ε, same shape and dtype as ``x_t``.
    """

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor: ...


def guided(cond: Cond, uncond: Cond | None = None, scale: torch.Tensor | float = 1.0) -> Cond:
    """The condition of ``ClassifierFreeGuidance``: ε_u + scale (ε_c - ε_u), one scale per row.

    Args:
        cond: B rows of the conditional branch.
        uncond: B rows of the unconditional branch, or None for a plain conditional evaluation
            (one model evaluation per sample instead of two: use it when the scale is 1 or the
            prompt is the unconditional one).
        scale: (B,) guidance scales or one float for all rows.
    """
    if uncond is None:
        return {"cond": cond}
    rows = batching.batch_size(cond)
    scale = torch.as_tensor(scale, dtype=torch.float64).flatten()
    if scale.numel() == 1:
        scale = scale.expand(rows)
    return {"cond": cond, "uncond": uncond, "scale": scale.contiguous()}


class ClassifierFreeGuidance:
    """Wraps a denoiser; reads conditions made by ``guided`` and runs both halves in ONE call."""

    def __init__(self, model: Denoiser) -> None:
        self.model = model

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        if "uncond" not in cond:  # type: ignore[operator]
            return self.model(x_t, t, cond["cond"])  # type: ignore[index]
        both = batching.cat([cond["cond"], cond["uncond"]])  # type: ignore[index]
        eps_c, eps_u = self.model(torch.cat([x_t, x_t]), torch.cat([t, t]), both).chunk(2)
        scale = batching.append_dims(cond["scale"], eps_c)  # type: ignore[index]
        return eps_u + scale * (eps_c - eps_u)
