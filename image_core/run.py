"""One inversion prepared for editing: checked against the model, moved to its device, with its schedule.

Every edit of an inversion (a text edit, concepts, a mask, a drift along principal components, a
reconstruction) is the same run: from x_{t_start}, tiled over the rows of the edit, down the
inversion's steps with its noise maps (DDPM) or deterministically (DDIM, null-text). ``Run``
prepares that once per edit; the methods differ only in the guidance and the step callback.

Rows: an edit of R = copies x B rows takes, in row r, the inversion's latent r mod B (so several
targets, concept sets or drifts edit every inverted latent in one batch, without copies of its
noise maps).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch

from .guidance import Guidance
from .inversion import Inversion
from .methods.ddpm import ddpm_edit
from .methods.diffedit import keep_outside
from .sampling import Callback, sample
from .schedule import Schedule


@dataclass(frozen=True)
class Run:
    """An inversion ready to edit.

    Attributes:
        schedule: the chain the inversion was made on.
        inversion: fitted to the model (``Inversion.fit``), every tensor on the model's device.
    """

    schedule: Schedule
    inversion: Inversion

    @classmethod
    def prepare(cls, inv: Inversion, fingerprint: str, scheduler_config: Mapping[str, Any], device: torch.device) -> Run:
        """Check ``inv`` against the model (``InversionMismatchError``) and move it to ``device``."""
        schedule = Schedule.from_config(scheduler_config, inv.settings.num_steps)
        return cls(schedule, inv.fit(fingerprint, schedule).to(device))

    @property
    def steps(self) -> range:
        """The schedule's steps the edit runs."""
        return self.schedule.last(self.inversion.settings.t_start)

    @property
    def uncond_steps(self) -> dict[str, torch.Tensor] | None:
        """A null-text inversion's unconditional rows of every step, else None."""
        return self.inversion.uncond

    def start(self, copies: int) -> torch.Tensor:
        """(copies * B, ...) x_{t_start}: the inverted latents, tiled."""
        x_t = self.inversion.xts[:, 0]
        return x_t.repeat(copies, *([1] * (x_t.dim() - 1)))

    def keep_outside(self, mask: torch.Tensor) -> Callback:
        """The callback of a masked edit: outside ``mask`` every step lands on the inverted trajectory."""
        return keep_outside(mask, self.inversion.xts, self.inversion.x0)

    def regenerate(self, guidance: Guidance, copies: int, callback: Callback | None = None, progress: bool = True) -> torch.Tensor:
        """Sample the inversion's steps for ``copies`` * B rows from x_{t_start}: with its noise maps
        (DDPM), or deterministically (DDIM; null-text, whose guidance carries the per-step rows)."""
        inv, x_t = self.inversion, self.start(copies)
        if inv.settings.method == "ddpm":
            return ddpm_edit(guidance, self.schedule, x_t, inv.zs, inv.settings.eta, inv.residual, callback, progress)  # type: ignore[arg-type]
        return sample(guidance, self.schedule, x_t, self.steps, 0.0, None, None, callback, progress, "editing")

    def first_latent(self) -> Run:
        """The run of the inversion's first latent alone."""
        inv = self.inversion
        one = {name: getattr(inv, name)[:1] for name in ("x0", "xts", "zs", "residual") if getattr(inv, name) is not None}
        uncond = None if inv.uncond is None else {key: value[:1] for key, value in inv.uncond.items()}
        return replace(self, inversion=replace(inv, **one, uncond=uncond))
