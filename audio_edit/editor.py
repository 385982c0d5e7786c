"""``AudioEditor``: invert a real recording and edit it with text, with AudioLDM / AudioLDM2.

The editor is the core's ``Editor`` with the audio codec (``codec.AudioCodec``: waveform -> 16 kHz
mono log-mel -> VAE latent and back) and the UNet running on overlapping windows of the training
length along time, so that a clip of any length is edited whole.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import numpy as np
import torch

from image_core import adapters
from image_core.errors import InputError
from image_core.frontend import Editor
from image_core.windows import WindowedDenoiser, spans

from . import defaults
from .codec import MIN_SAMPLES, AudioCodec, AudioInput
from .models import AudioModel

__all__ = ["MIN_SAMPLES", "AudioEditor", "AudioInput", "OutputType"]

OutputType = Literal["np", "latent"]


class AudioEditor(Editor):
    """Text-based editing of real recordings of any length by edit-friendly DDPM inversion.

    Defaults are the audio paper's (Manor & Michaeli, ICML 2024): 200 steps, the edit running the
    last 100, source guidance 3, target guidance 12, eta 1. Inputs: a path or an ``Audio``; outputs
    ("np"): float32 mono waveforms (num_frames,) at the input's sample rate, length and loudness, or
    "latent": the (N, C, T, F) float64 latents. Masks and regions are (1, 1, T, F) over the latent's
    time-frequency grid: ``region_mask(inv, seconds=(a, b), hz=(lo, hi))``.

    Args:
        model: the AudioLDM / AudioLDM2 adapter.
        overlap: latent frames shared by neighbouring windows of a long clip (64 = 2.56 s of the
            256-frame, 10.24 s window of the real models; a quarter of the window in general).
        window_batch: window rows per UNet call; bounds memory per step for any length.
        kwargs: ``LatentEditor`` options (inversion_batch_size, progress).
    """

    model: AudioModel
    codec: AudioCodec

    def __init__(self, model: AudioModel, overlap: int | None = None, window_batch: int = 8, **kwargs: Any) -> None:
        self.overlap = model.latent_window // 4 if overlap is None else overlap
        if not 0 <= self.overlap < model.latent_window:
            raise InputError(f"overlap must be in [0, {model.latent_window}) latent frames, got {self.overlap}")
        denoiser = WindowedDenoiser(model.predict_eps, axis=2, window=model.latent_window, overlap=self.overlap, max_batch=window_batch)
        super().__init__(model, AudioCodec(model, self.overlap), denoiser, **kwargs)
        self.mel_config, self.log_mel = self.codec.mel_config, self.codec.log_mel

    def inversion_rows(self, x0: torch.Tensor) -> int:
        """Fewer timesteps per inversion call for clips of several windows: as many window-rows in all
        as one window's latent takes (``LatentEditor.inversion_rows``), so the buffers of a call stay
        the size of a short clip's at any length (the UNet sees batches of ``window_batch`` windows
        either way)."""
        windows = len(spans(x0.shape[2], self.model.latent_window, self.overlap))
        return max(1, super().inversion_rows(x0[..., : self.model.latent_window, :]) // windows)

    def fingerprint(self) -> str:
        """The model's fingerprint plus the windows: the blend of overlapping windows changes the noise
        estimates of long clips, so an inversion made with another overlap would not reconstruct."""
        return f"{self.model.fingerprint()}-window{self.model.latent_window}-overlap{self.overlap}"

    @classmethod
    def from_pretrained(
        cls, name: str = defaults.MODEL, device: str | torch.device = "auto", dtype: str | torch.dtype = "auto",
        compile: bool = False, **kwargs: Any,
    ) -> AudioEditor:
        """Load a hub id, a local folder (diffusers layout), "tiny" (AudioLDM2) or "tiny-audioldm";
        ``compile``: denoise with ``torch.compile`` of the UNet (the first call of each shape compiles).
        Stable Audio Open (its hub id, "tiny-sao" or a folder of its layout) gives a
        ``StableAudioEditor`` (44.1 kHz stereo; same methods)."""
        from .stable_audio import is_stable_audio

        if is_stable_audio(name):
            from .stable_audio_editor import StableAudioEditor

            return StableAudioEditor.from_pretrained(name, device, dtype, **kwargs)  # type: ignore[return-value]
        from .ace_step_editor import AceStepEditor, is_ace_step
        if is_ace_step(name):  # ACE-Step 1.5 (its hub id, "tiny-acestep" or a folder of its layout): 48 kHz stereo
            return AceStepEditor.from_pretrained(name, device, dtype, **kwargs)  # type: ignore[return-value]
        resolved = adapters.resolve_device(device)
        model = AudioModel.from_pretrained(name, resolved, adapters.resolve_dtype(dtype, resolved))
        if compile:
            model.compile()
        return cls(model, **kwargs)

    def save_pretrained(self, folder: str | os.PathLike[str]) -> None:
        """Save the model in the diffusers layout."""
        self.model.save_pretrained(folder)

    # ------------------------------------------------------------- the codec's waveform <-> latent helpers

    def latent_length(self, num_samples: int) -> int:
        """Latent frames for a clip of ``num_samples`` at 16 kHz (``AudioCodec.latent_length``)."""
        return self.codec.latent_length(num_samples)

    def latent_shape(self, num_samples: int) -> tuple[int, int, int]:
        """(C, T, F) of the latent of a clip of ``num_samples`` at 16 kHz."""
        return self.codec.latent_shape(num_samples)

    def encode(self, wave: np.ndarray) -> torch.Tensor:
        """(n,) 16 kHz mono -> (1, C, T, F) float32 latent (``AudioCodec.encode``)."""
        return self.codec.encode(wave)

    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """(N, C, T, F) latents -> (N, T * f * hop) float32 waveforms at 16 kHz."""
        return self.codec.decode(latents)
