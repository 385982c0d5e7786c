"""The methods behind one model adapter, in latent space: shared by the image and audio editors.

A frontend turns its input into latents x0 and a model adapter into a ``LatentModel``; everything
between (schedule, guidance, the methods of ``methods/`` and the one reverse loop) happens here,
once. The entry points run without gradients; the denoisers below them stay differentiable.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import torch

from . import adapters, batching
from .batching import Cond
from .errors import EditError, InputError
from .guidance import ClassifierFreeGuidance, Denoiser, guided
from .inversion import Inversion, InversionSettings
from .methods.ddpm import ddpm_edit, ddpm_invert
from .sampling import Callback
from .schedule import Schedule
from .settings import check_seeds, check_settings


class LatentModel(Protocol):
    """What the editing loops need of a model adapter."""

    scheduler_config: Mapping[str, Any]
    device: torch.device  # where latents and noise maps are sampled

    def encode_prompts(self, prompts: list[str]) -> Cond:
        """One condition row per prompt; "" is the unconditional branch."""
        ...

    def predict_eps(self, x_t: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        """The ``Denoiser`` contract over the model's latents."""
        ...

    def fingerprint(self) -> str:
        """A string that identifies the model's configs and weights."""
        ...


def latent_dtype(device: torch.device) -> torch.dtype:
    """The dtype of latents, noise maps and sampler arithmetic: float64 (float32 on MPS, which has no
    float64), whatever the model's dtype. The sampler then retraces the inverted x_t to ~1e-16, so a
    float16 UNet sees the very same inputs when reconstructing; float32 latents put one float32 ulp
    between them, enough to flip float16 roundings (4e-2 reconstruction error with the tiny audio model)."""
    return torch.float32 if torch.device(device).type == "mps" else torch.float64


def _as_list(value: str | Sequence[str], what: str) -> list[str]:
    values = [value] if isinstance(value, str) else list(value)
    if not values:
        raise InputError(f"give at least one {what}")
    for text in values:
        if not isinstance(text, str):
            raise InputError(f"{what} must be text, got {type(text).__name__}")
    return values


class LatentEditor:
    """Edit-friendly DDPM inversion and editing of latents with one model.

    Args:
        model: the model adapter.
        denoiser: the ε-predictor to sample with; the model's own ``predict_eps`` by default (the
            audio frontend passes a windowed one for long inputs).
        inversion_batch_size: (x_t, t) rows per model call during inversion; bounds its memory.
        progress: show tqdm progress bars.
    """

    def __init__(
        self,
        model: LatentModel,
        denoiser: Denoiser | None = None,
        inversion_batch_size: int = 16,
        progress: bool = True,
    ) -> None:
        self.model = model
        self.guided_denoiser = ClassifierFreeGuidance(denoiser or model.predict_eps)
        self.inversion_batch_size = inversion_batch_size
        self.progress = progress

    def inversion_rows(self, x0: torch.Tensor) -> int:
        """(x_t, t) rows per denoiser call of the inversion of latents like ``x0``."""
        return self.inversion_batch_size

    def fingerprint(self) -> str:
        """What an inversion must have been made with to be edited here: the model's fingerprint
        (frontends add whatever else changes the noise estimates, such as a window overlap)."""
        return self.model.fingerprint()

    def check_inversion_memory(self, latent_shape: Sequence[int], num_seeds: int, t_start: int) -> None:
        """Refuse, before any encoding, an inversion whose x_t and noise maps (float64 latents of
        ``latent_shape`` = (C, ...), ``num_seeds`` of them, ``t_start`` steps) would not fit in free memory."""
        element = torch.finfo(latent_dtype(self.model.device)).bits // 8
        maps = 2 * num_seeds * t_start * math.prod(latent_shape) * element
        adapters.check_memory(
            maps, self.model.device, "the inversion's x_t and noise maps",
            "use a lower tstart, fewer seeds or a shorter input",
        )

    def _condition(self, prompts: list[str], negative: str, cfgs: list[float], repeats: int) -> Cond:
        """Guided condition of len(prompts) * repeats rows (prompt-major), prompts encoded once.

        Evaluates the model once per sample instead of twice when guidance is a no-op for every
        row (scale 1, or the prompt is the unconditional one).
        """
        single = all(cfg == 1 or prompt == negative for prompt, cfg in zip(prompts, cfgs))
        encoded = self.model.encode_prompts(prompts if single else [*prompts, negative])
        rows = torch.arange(len(prompts)).repeat_interleave(repeats)
        cond = batching.take(encoded, rows)
        if single:
            return guided(cond)
        uncond = batching.take(encoded, torch.full_like(rows, len(prompts)))
        return guided(cond, uncond, torch.tensor(cfgs, dtype=torch.float64)[rows])

    @torch.no_grad()
    def invert_latent(
        self,
        x0: torch.Tensor,
        source_prompt: str = "",
        num_steps: int = 100,
        t_start: int = 64,
        cfg_src: float = 3.5,
        eta: float = 1.0,
        seed: int | Sequence[int] = 0,
        meta: Mapping[str, Any] | None = None,
    ) -> Inversion:
        """Invert latents; several seeds give several inversions (different noise maps) of one input.

        Args:
            x0: (1, ...) one latent, or (B, ...) with one seed per latent.
            seed: one seed, or a sequence of seeds.
        Returns:
            An ``Inversion`` of max(B, len(seeds)) latents.
        """
        check_settings(num_steps, t_start, eta, cfg_src)
        seeds = list(seed) if isinstance(seed, Sequence) else [seed]
        check_seeds(seeds)
        seeds = [int(s) for s in seeds]
        x0 = x0.to(self.model.device, latent_dtype(self.model.device))
        if x0.shape[0] == 1 and len(seeds) > 1:
            x0 = x0.expand(len(seeds), *x0.shape[1:])
        schedule = Schedule.from_config(self.model.scheduler_config, num_steps)
        self.check_inversion_memory(x0.shape[1:], len(seeds), t_start)
        cond = self._condition([source_prompt], "", [cfg_src], len(seeds))
        xts, zs, residual = ddpm_invert(
            self.guided_denoiser, schedule, x0, cond, t_start, eta, seeds, self.inversion_rows(x0), self.progress
        )
        settings = InversionSettings(
            self.fingerprint(), num_steps, t_start, float(eta), float(cfg_src), source_prompt, tuple(seeds)
        )
        timesteps = schedule.timesteps[schedule.last(t_start)]
        return Inversion(x0.clone(), xts, zs, timesteps, settings, dict(meta or {}), residual)

    @torch.no_grad()
    def edit_latent(
        self,
        inv: Inversion,
        target_prompt: str | Sequence[str],
        cfg_tar: float | Sequence[float] = 15.0,
        negative_prompt: str = "",
        callback: Callback | None = None,
    ) -> torch.Tensor:
        """Regenerate the inverted latents with other prompts, all targets and seeds in one batch.

        Args:
            target_prompt: T prompts (or one).
            cfg_tar: one guidance scale, or one per target.
            negative_prompt: the prompt of the unconditional branch ("" as the models were trained).
            callback: called after every step of the edit with its ``sampling.Step``; returns x_s.
        Returns:
            (T * B, ...) latents; row i * B + j is target i edited from inversion j.
        """
        targets = _as_list(target_prompt, "target prompt")
        cfgs = [float(cfg_tar)] * len(targets) if isinstance(cfg_tar, (int, float)) else [float(c) for c in cfg_tar]
        if len(cfgs) != len(targets):
            raise InputError(f"give one cfg_tar per target: {len(targets)} targets, {len(cfgs)} scales")
        s = inv.settings
        check_settings(s.num_steps, s.t_start, s.eta, *cfgs)
        schedule = Schedule.from_config(self.model.scheduler_config, s.num_steps)
        inv = inv.fit(self.fingerprint(), schedule)
        B, T = inv.num_latents, len(targets)
        cond = self._condition(targets, negative_prompt, cfgs, B)
        x_t = inv.xts[:, 0].to(self.model.device).repeat(T, *([1] * (inv.x0.dim() - 1)))
        latents = ddpm_edit(
            self.guided_denoiser, schedule, x_t, inv.zs, cond, s.eta, inv.residual, callback, self.progress
        )
        if not torch.isfinite(latents).all():
            raise EditError(f"the edit diverged (NaN or Inf in the result): use a lower guidance scale than {max(cfgs)}")
        return latents

    def reconstruct_latent(self, inv: Inversion) -> torch.Tensor:
        """Sample with the inversion's own prompt and scale: (B, ...) equal to ``inv.x0`` up to rounding."""
        return self.edit_latent(inv, inv.settings.source_prompt, inv.settings.cfg_src)
