"""``StableAudioEditor``: the core's ``Editor`` with Stable Audio Open's 44.1 kHz stereo codec.

waveform (any rate, channel count, length up to the model's 47 s window) -> 44.1 kHz stereo (mono
duplicated, stereo kept, more channels folded to two, see ``to_stereo``) -> Oobleck latent
(C, frames); and back: the VAE decoder -> 44.1 kHz stereo trimmed to the input's length.

Defaults: the audio paper's code (AudioEditingCode) with Stable Audio Open: its 200-step chain with
the edit running the last 100, target guidance 12, and source guidance 1, which its README
recommends for this model.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from image_core import adapters
from image_core.errors import InputError
from image_core.frontend import Defaults, Editor, Source
from image_core.inversion import Inversion

from .audio_io import Audio, check_audio, load_audio
from .resample import resample_sinc
from .stable_audio import StableAudioModel

DEFAULTS = Defaults(200, 100, 1.0, 12.0, "np")


def to_stereo(samples: np.ndarray) -> np.ndarray:
    """(channels, n) -> (2, n): mono duplicated, stereo kept, more channels folded (even channels
    to the left, odd to the right, each side the mean of its channels)."""
    if samples.shape[0] == 1:
        return np.repeat(samples, 2, axis=0)
    if samples.shape[0] == 2:
        return samples
    return np.stack([samples[0::2].mean(0), samples[1::2].mean(0)])


class StableAudioCodec:
    """Recordings in, stereo waveforms out, for one Stable Audio Open model.

    Outputs: "np": float32 (2, n) stereo at the input's sample rate and length (resampled from the
    model's 44.1 kHz where the input has another rate, so a writer keeps the input's rate);
    "native": float32 (2, n) at the model's 44.1 kHz, n the input's length there.
    """

    defaults = DEFAULTS
    output_types = ("np", "native")

    def __init__(self, model: StableAudioModel) -> None:
        self.model = model

    def read(self, item: str | os.PathLike[str] | Audio) -> Source:
        clip = item if isinstance(item, Audio) else load_audio(item)
        check_audio(clip)
        rate = self.model.sample_rate
        wave = to_stereo(clip.samples.astype(np.float32))
        if clip.sample_rate != rate:
            wave = resample_sinc(wave, clip.sample_rate, rate)
        frames = -(-wave.shape[1] // self.model.hop_length)
        if frames > self.model.max_frames:
            most = self.model.max_frames * self.model.hop_length / rate
            raise InputError(f"the clip is {clip.duration:.1f} s long; this model edits at most {most:.2f} s: cut it shorter")
        meta = {
            "sample_rate": rate, "num_samples": int(wave.shape[1]), "input_rate": clip.sample_rate,
            "input_samples": clip.num_frames, "input_channels": clip.channels,
        }  # fmt: skip
        return Source(np.ascontiguousarray(wave, dtype=np.float32), meta)

    def latent_shape(self, source: Source) -> tuple[int, int]:
        return (self.model.latent_channels, -(-source.data.shape[1] // self.model.hop_length))

    def encode(self, source: Source) -> torch.Tensor:
        return self.model.encode_audio(torch.from_numpy(source.data).unsqueeze(0))

    def write(self, latents: torch.Tensor, meta: dict[str, Any], output_type: str) -> list[np.ndarray]:
        n = int(meta["num_samples"])
        waves = [self.model.decode_latent(row.unsqueeze(0))[0, :, :n].cpu().numpy() for row in latents]
        if output_type == "np" and int(meta["input_rate"]) != int(meta["sample_rate"]):
            length = int(meta["input_samples"])
            waves = [resample_sinc(w, int(meta["sample_rate"]), int(meta["input_rate"]))[:, :length] for w in waves]
        return [np.clip(w, -1.0, 1.0).astype(np.float32) for w in waves]

    def region_mask(self, inv: Inversion, seconds: tuple[float, float] | None = None, hz: Any = None) -> torch.Tensor:
        """(1, 1, frames) 1 inside the time range ``seconds`` (the latent has no frequency axis)."""
        if hz is not None:
            raise InputError("Stable Audio Open's latent has no frequency axis: give a time range only")
        frames = inv.x0.shape[-1]
        mask = torch.zeros(1, 1, frames, dtype=inv.x0.dtype)
        if seconds is None:
            return mask + 1
        rate = self.model.sample_rate / self.model.hop_length  # latent frames per second
        start, end = seconds
        if not 0 <= start < end:
            raise InputError(f"the time range must have 0 <= start < end, got {seconds}")
        mask[..., int(start * rate) : max(int(start * rate) + 1, int(np.ceil(end * rate)))] = 1
        return mask

    def save_mask(self, mask: torch.Tensor, path: str | os.PathLike[str], inv: Inversion) -> None:
        raise InputError("mask pictures are not available for Stable Audio Open: give a time range")

    def load_mask(self, path: str | os.PathLike[str], inv: Inversion) -> torch.Tensor:
        raise InputError("mask pictures are not available for Stable Audio Open: give a time range")

    def picture(self, inv: Inversion, grids: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        raise InputError("pictures of the input are not available for Stable Audio Open")


class StableAudioEditor(Editor):
    """Text-based editing of 44.1 kHz stereo recordings (up to 47 s) with Stable Audio Open.

    Inversion and edits run on SAO's own sampler: the DPM-Solver++(2M) SDE steps of its cosine
    scheduler, each solved for its noise map (``image_core.methods.ddpm``).
    """

    model: StableAudioModel
    codec: StableAudioCodec

    def __init__(self, model: StableAudioModel, **kwargs: Any) -> None:
        super().__init__(model, StableAudioCodec(model), **kwargs)

    @classmethod
    def from_pretrained(cls, name: str, device: str | torch.device = "auto", dtype: str | torch.dtype = "auto", **kwargs: Any) -> StableAudioEditor:
        """Load ``stabilityai/stable-audio-open-1.0`` (cached), a local folder of its layout, or "tiny-sao"."""
        kwargs.pop("compile", None)
        kwargs.pop("overlap", None)
        kwargs.pop("window_batch", None)
        resolved = adapters.resolve_device(device)
        return cls(StableAudioModel.from_pretrained(name, resolved, adapters.resolve_dtype(dtype, resolved)), **kwargs)

    def save_pretrained(self, folder: str | os.PathLike[str]) -> None:
        self.model.save_pretrained(folder)
