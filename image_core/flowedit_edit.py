"""FlowEdit of latents with an editor's model: prompts, guidance and schedule around ``methods.flowedit``.

The editors' FlowEdit entry point: like SDEdit it needs no inversion, only the input's latent and a
description of it (the source prompt) beside the targets.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .editing import LatentEditor, latent_dtype
from .errors import EditError, InputError
from .methods.flowedit import CFG_SRC, CFG_TAR, N_AVG, N_MAX, N_MIN, NUM_STEPS, check_flowedit_settings, flowedit
from .schedule import Schedule
from .settings import check_settings, seed_list, targets_and_scales


@torch.no_grad()
def flowedit_latents(
    editor: LatentEditor,
    x0: torch.Tensor,
    source_prompt: str,
    target_prompt: str | Sequence[str],
    num_steps: int = NUM_STEPS,
    n_max: int = N_MAX,
    n_min: int = N_MIN,
    n_avg: int = N_AVG,
    cfg_src: float = CFG_SRC,
    cfg_tar: float | Sequence[float] = CFG_TAR,
    seed: int | Sequence[int] = 0,
    negative_prompt: str = "",
) -> torch.Tensor:
    """FlowEdit of one latent from ``source_prompt`` to each target, with each seed.

    Defaults: the paper's Stable Diffusion 3 settings (50 steps, n_max 33, n_min 0, n_avg 1,
    guidance 3.5 / 13.5).

    Args:
        x0: (1, ...) one latent.
        source_prompt: a description of the input.
        target_prompt: one target or several; cfg_tar: one scale for all or one per target.
        num_steps: N, steps of the chain; n_max, n_min, n_avg: see ``methods.flowedit``.
        seed: one seed or several (the noise of each output).
    Returns:
        (T * S, ...) latents; row i * S + j is target i with seed j (the targets of a seed share its
        noise and its source rows). Each FlowEdit step is one denoiser call for all rows (S source
        and T * S target rows, each with its unconditional branch where its scale is not 1, times
        ``n_avg``); each sampling step (the last ``n_min``) one call of the target rows.
    """
    if not isinstance(source_prompt, str):
        raise InputError(f"the source prompt must be text, got {type(source_prompt).__name__}")
    targets, cfgs = targets_and_scales(target_prompt, cfg_tar)
    seeds = seed_list(seed)
    check_settings(num_steps, 1, 1.0, float(cfg_src), *cfgs)
    schedule = Schedule.from_config(editor.model.scheduler_config, num_steps)
    check_flowedit_settings(schedule, n_max, n_min, n_avg)
    S, T = len(seeds), len(targets)
    x0 = x0.to(editor.model.device, latent_dtype(editor.model.device)).expand(S, *x0.shape[1:])
    source = editor.prompts.guidance([source_prompt], negative_prompt, [float(cfg_src)], S)  # one row per seed,
    target = editor.prompts.guidance(targets, negative_prompt, cfgs, S)  # shared by the T targets
    latents = flowedit(source, target, schedule, x0, n_max, n_min, n_avg, seeds, editor.progress)
    if not torch.isfinite(latents).all():
        raise EditError(f"the edit diverged (NaN or Inf in the result): use a lower guidance scale than {max([cfg_src, *cfgs])}")
    return latents
