"""The model contract, and guidance: objects that own their conditions and parameters.

A model adapter is a ``Denoiser``: ε for a batch of latents, timesteps and conditions, where a
condition holds only what the model reads (text states, masks, class labels). Guidance wraps a
denoiser for the rows of one run, like k-diffusion's CFG wrapper: it holds every row's condition,
unconditional branch and scale (and, for null-text inversion, the unconditional rows of every step),
and the loops call it as ``eps = guidance(x_t, t, j)`` with j the run's step index.

=============  ==========================================================
``scale``      s, the classifier-free guidance scale of a row
``cond``       c, the conditional branch (the prompt's condition)
``uncond``     ∅, the unconditional branch (the negative prompt, "" by default)
=============  ==========================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from functools import cached_property
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


class Guidance(Protocol):
    """ε of the rows of one run at its step j: ``eps = guidance(x_t, t, j)``, x_t (B, ...), t (B,)."""

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, j: int = 0) -> torch.Tensor: ...


@dataclass(frozen=True)
class ClassifierFreeGuidance:
    """ε = ε(x, ∅) + s (ε(x, c) - ε(x, ∅)) per row, both branches in ONE model call.

    Attributes:
        model: the denoiser.
        cond: B rows of the conditional branch.
        uncond: B rows of the unconditional branch, or None for the conditional branch alone (one
            evaluation per sample instead of two: scale 1, or the prompt is the unconditional one).
        scale: (B,) float64 scales, or one float for every row.
        uncond_steps: a null-text inversion's unconditional rows of every step: tensors (B', K, ...),
            B a multiple of B' (row i takes row i mod B'), that replace ``uncond``'s tensors of the
            same name at the run's step j by their column ``first + j``; None otherwise.
        first: the inversion step the run's step 0 is.
    """

    model: Denoiser
    cond: Cond
    uncond: Cond | None = None
    scale: torch.Tensor | float = 1.0
    uncond_steps: Mapping[str, torch.Tensor] | None = None
    first: int = 0

    @property
    def rows(self) -> int:
        """B, the rows this guidance evaluates."""
        return batching.batch_size(self.cond)

    @cached_property
    def _both(self) -> Cond:
        """Both branches' rows in one batch, built once (without per-step unconditional rows)."""
        return batching.cat([self.cond, self.uncond])  # type: ignore[list-item]

    @cached_property
    def _scales(self) -> batching.Placed:
        return batching.Placed(self.scale, per_row=True)

    def scales_like(self, like: torch.Tensor) -> torch.Tensor:
        """The rows' scales, shaped against ``like`` and where it is (moved there once)."""
        return self._scales.like(like)

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, j: int = 0) -> torch.Tensor:
        if self.uncond is None:
            return self.model(x_t, t, self.cond)
        both = self._both if self.uncond_steps is None else batching.cat([self.cond, self.uncond_at(j)])
        eps_c, eps_u = self.model(torch.cat([x_t, x_t]), torch.cat([t, t]), both).chunk(2)
        return eps_u + self.scales_like(eps_c) * (eps_c - eps_u)

    def uncond_at(self, j: int) -> Cond:
        """The unconditional rows of the run's step j."""
        if self.uncond_steps is None:
            return self.uncond  # type: ignore[return-value]
        uncond: dict[str, torch.Tensor] = dict(self.uncond)  # type: ignore[arg-type]
        for key, value in self.uncond_steps.items():
            column = value[:, self.first + j].to(uncond[key].device, uncond[key].dtype)
            uncond[key] = column.repeat(self.rows // column.shape[0], *([1] * (column.dim() - 1)))
        return uncond

    def take(self, index: torch.Tensor) -> ClassifierFreeGuidance:
        """The guidance of rows ``index`` (an int64 tensor; rows may repeat)."""
        scale = self.scale if not isinstance(self.scale, torch.Tensor) or self.scale.numel() == 1 else self.scale[index]
        steps = self.uncond_steps
        if steps is not None:
            shared = next(iter(steps.values())).shape[0]
            steps = {key: value[(index % shared).to(value.device)] for key, value in steps.items()}
        return replace(
            self, cond=batching.take(self.cond, index), uncond=None if self.uncond is None else batching.take(self.uncond, index),
            scale=scale, uncond_steps=steps,
        )  # fmt: skip

    def at_steps(self, steps: torch.Tensor) -> ClassifierFreeGuidance:
        """One row (this guidance's first) at each of the run's steps ``steps`` (K,): K rows whose
        unconditional branch is that of their step (for products along a trajectory)."""
        rows = self.take(torch.zeros(len(steps), dtype=torch.long))
        if rows.uncond_steps is None:
            return rows
        uncond = dict(rows.uncond)  # type: ignore[arg-type]
        for key, value in rows.uncond_steps.items():
            uncond[key] = value[0, self.first + steps.to(value.device)].to(uncond[key].device, uncond[key].dtype)
        return replace(rows, uncond=uncond, uncond_steps=None)
