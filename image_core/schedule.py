"""The noise schedule as an immutable value: ᾱ at the chosen timesteps, nothing else.

Notation (code name -> paper symbol):

=================  =====================================================
``timesteps[k]``   t_k of the N-step chain, descending (t_N ... t_1)
``alphas[k]``      ᾱ_t = alphas_cumprod[t_k]
``alphas_prev[k]`` ᾱ_s of the step's predecessor s (t_{k+1}; after the
                   last timestep the scheduler's final alpha)
=================  =====================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from .errors import InputError


@dataclass(frozen=True)
class Schedule:
    """ᾱ at the N timesteps of a sampling chain, built once from a diffusers scheduler config.

    Attributes:
        timesteps: (N,) int64, descending, exactly those of ``DDIMScheduler.set_timesteps(N)``.
        alphas: (N,) float64, ᾱ at each timestep.
        alphas_prev: (N,) float64, ᾱ at the next timestep of the chain; the last entry is the
            scheduler's final alpha (``alphas_cumprod[0]`` when ``set_alpha_to_one`` is False, else 1).
        num_train_timesteps: T of the training process.
    """

    timesteps: torch.Tensor
    alphas: torch.Tensor
    alphas_prev: torch.Tensor
    num_train_timesteps: int

    @classmethod
    def from_config(cls, config: Mapping[str, Any], num_steps: int) -> Schedule:
        """The schedule of ``num_steps`` steps for a diffusers scheduler config (any scheduler class).

        The timesteps are those of ``DDIMScheduler`` for the same config. The predecessor of a step
        is the next timestep of the chain (identical to DDIM's ``t - T // N`` for "leading"
        spacing, the spacing of the SD and AudioLDM configs).
        """
        from diffusers import DDIMScheduler

        scheduler = DDIMScheduler.from_config(dict(config))
        T = int(scheduler.config.num_train_timesteps)
        most = _max_steps(scheduler.config)
        if not 1 <= num_steps <= most:
            raise InputError(f"steps must be between 1 and {most} for this model, got {num_steps}")
        scheduler.set_timesteps(num_steps)
        timesteps = scheduler.timesteps.to(torch.int64).clone()
        alphas_cumprod = scheduler.alphas_cumprod.to(torch.float64)
        final = torch.tensor([float(scheduler.final_alpha_cumprod)], dtype=torch.float64)
        alphas = alphas_cumprod[timesteps]
        return cls(timesteps, alphas, torch.cat([alphas[1:], final]), T)

    @staticmethod
    def max_steps(config: Mapping[str, Any]) -> int:
        """The most steps whose timesteps stay below T: T - steps_offset for "leading" spacing (the
        SD and AudioLDM configs: 999), T otherwise."""
        from diffusers import DDIMScheduler

        return _max_steps(DDIMScheduler.from_config(dict(config)).config)

    @property
    def num_steps(self) -> int:
        """N, the number of steps of the full chain."""
        return len(self.timesteps)

    def last(self, t_start: int) -> range:
        """Indices of the last ``t_start`` steps: the ones an edit that starts at t_start runs."""
        if not 1 <= t_start <= self.num_steps:
            raise InputError(f"tstart must be between 1 and steps ({self.num_steps}), got {t_start}")
        return range(self.num_steps - t_start, self.num_steps)


def _max_steps(ddim_config: Any) -> int:
    """``Schedule.max_steps`` of a ``DDIMScheduler``'s config (its defaults filled in)."""
    leading = ddim_config.timestep_spacing == "leading"
    return int(ddim_config.num_train_timesteps) - (int(ddim_config.steps_offset) if leading else 0)
