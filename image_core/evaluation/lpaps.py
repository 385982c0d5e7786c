"""LPAPS: a learned-perceptual distance between two recordings on a CLAP audio tower (the audio paper's
fidelity measure, the audio counterpart of LPIPS without LPIPS' learned channel weights).

Definition. Let ``f_l(x)`` be the output of Swin stage ``l = 1..L`` of the CLAP audio tower for one
10 s window of ``x``, a matrix of ``C_l`` channels by ``N_l`` tokens (time-frequency patches). Each
feature vector is scaled to unit length, ``u / max(||u||, 1e-10)``, along one axis, and

    LPAPS(x, y) = sum_l mean_j sum_i ( f^_l(x)[i, j] - f^_l(y)[i, j] )^2,

where ``i`` runs along the normalised axis and ``j`` along the other. Two choices of axis:

- ``"tokens"`` (default): each channel is normalised over the tokens (``i`` = token, ``j`` = channel).
  This is what the audio paper's published evaluation computes: its stage outputs are laid out
  (batch, tokens, channels) and normalised along axis 1. Use it to compare with published numbers.
- ``"channels"``: each token's channel vector is normalised (``i`` = channel, ``j`` = token), the LPIPS
  convention (Zhang et al. 2018) as the paper describes the measure.

Since the normalised vectors have unit length, each inner sum is ``2 - 2 cos``, so every stage adds
between 0 and 4: LPAPS is 0 for identical features, symmetric, and at most ``4 L`` (16 for HTSAT's four
stages). A recording's LPAPS is the mean over its windows (10 s every 9 s, paired by index; the
shorter recording sets how many).
"""

from __future__ import annotations

from typing import Literal

import torch

Normalization = Literal["tokens", "channels"]
NORMALIZATIONS: tuple[str, ...] = ("tokens", "channels")
DEFAULT_NORMALIZATION: Normalization = "tokens"

_EPS = 1e-10


def lpaps_windows(
    stages_x: list[torch.Tensor], stages_y: list[torch.Tensor], normalize: Normalization = DEFAULT_NORMALIZATION
) -> torch.Tensor:
    """LPAPS of paired windows from their stage outputs.

    Args:
        stages_x, stages_y: one tensor per stage shaped ``(windows, channels, tokens)``; the two lists
            have the same shapes except that the window counts may differ (the first ``min`` pair up).
        normalize: the axis along which features are scaled to unit length (see the module doc).

    Returns:
        float64 tensor shaped ``(min(windows_x, windows_y),)``: each window pair's LPAPS.
    """
    if normalize not in NORMALIZATIONS:
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    if len(stages_x) != len(stages_y):
        raise ValueError(f"{len(stages_x)} stages against {len(stages_y)}")
    count = min(stages_x[0].shape[0], stages_y[0].shape[0])
    axis = 2 if normalize == "tokens" else 1  # the axis each vector runs along
    total = torch.zeros(count, dtype=torch.float64)
    for fx, fy in zip(stages_x, stages_y):
        ux = _unit(fx[:count].double(), axis)
        uy = _unit(fy[:count].double(), axis)
        total += ((ux - uy) ** 2).sum(dim=axis).mean(dim=1)
    return total


def _unit(x: torch.Tensor, axis: int) -> torch.Tensor:
    return x / x.norm(dim=axis, keepdim=True).clamp_min(_EPS)
