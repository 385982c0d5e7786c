"""Test sounds and the error measure shared by the tests of the stereo models."""

from __future__ import annotations

import numpy as np
import torch

from audio_edit.audio_io import Audio


def noisy_tone(seconds: float, rate: int, channels: int = 2, seed: int = 0) -> Audio:
    """A 440 Hz tone with a little white noise (seeded), ``channels`` x ``seconds`` at ``rate`` Hz."""
    g = np.random.default_rng(seed)
    n = int(seconds * rate)
    tone = 0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / rate)[None] + 0.05 * g.standard_normal((channels, n))
    return Audio(tone.astype(np.float32), rate)


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖a − b‖ / ‖b‖."""
    return ((a - b).norm() / b.norm()).item()
