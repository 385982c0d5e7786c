"""``StableAudioEditor``: the core's ``Editor`` with Stable Audio Open's 44.1 kHz stereo codec.

waveform (any rate, channel count, length) -> 44.1 kHz stereo (mono duplicated, stereo kept, more
channels folded to two, see ``to_stereo``) -> Oobleck latent (C, frames); and back: the VAE decoder
-> 44.1 kHz stereo trimmed to the input's length.

Clips longer than the model's window (1024 frames, 47.55 s) run on overlapping windows along the
latent's time axis, as the AudioLDM frontend does (``image_core.windows``): the DiT denoises each
window and the noise estimates are blended (``WindowedDenoiser``), and the VAE encodes and decodes
window by window with an overlap-add (``windowed_map``), so memory per call stays that of one window
at any length. Each window is one DiT call of at most the training length, so its seconds_total is
that window's length (``StableAudioModel.predict_eps`` reads it from the latents it is given) and
its seconds_start 0, as for a short clip.

Defaults: the audio paper's code (AudioEditingCode) with Stable Audio Open: its 200-step chain with
the edit running the last 100, target guidance 12, and source guidance 1, which its README
recommends for this model.
"""

from __future__ import annotations

import os
from fractions import Fraction
from typing import Any

import numpy as np
import torch

from image_core import adapters
from image_core.errors import InputError
from image_core.frontend import Defaults, Editor, Source
from image_core.inversion import Inversion
from image_core.windows import WindowedDenoiser, spans, windowed_map

from .audio_io import Audio, check_audio, load_audio
from .resample import resample_sinc
from .stable_audio import StableAudioModel

DEFAULTS = Defaults(200, 100, 1.0, 12.0, "np")
PICTURE = (64, 128)  # (height, width) of the latent drawn under the attention maps


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

    def __init__(self, model: StableAudioModel, overlap: int | None = None) -> None:
        self.model = model
        self.overlap = model.max_frames // 4 if overlap is None else overlap

    def read(self, item: str | os.PathLike[str] | Audio) -> Source:
        clip = item if isinstance(item, Audio) else load_audio(item)
        check_audio(clip)
        rate = self.model.sample_rate
        wave = to_stereo(clip.samples.astype(np.float32))
        if clip.sample_rate != rate:
            wave = resample_sinc(wave, clip.sample_rate, rate)
        meta = {
            "sample_rate": rate, "num_samples": int(wave.shape[1]), "input_rate": clip.sample_rate,
            "input_samples": clip.num_frames, "input_channels": clip.channels,
        }  # fmt: skip
        return Source(np.ascontiguousarray(wave, dtype=np.float32), meta)

    def latent_shape(self, source: Source | int) -> tuple[int, int]:
        """(C, frames) of the latent of a clip (its ``Source`` or its number of samples at the model's rate)."""
        samples = source if isinstance(source, int) else source.data.shape[1]
        return (self.model.latent_channels, -(-samples // self.model.hop_length))

    @torch.no_grad()
    def encode(self, source: Source) -> torch.Tensor:
        """(1, C, frames) float32 latent of the stereo waveform, zero-padded to whole frames; window by
        window (``max_frames`` frames, ``overlap`` shared) for clips longer than a window."""
        hop = self.model.hop_length
        wave = torch.from_numpy(source.data).unsqueeze(0)
        wave = torch.nn.functional.pad(wave, (0, -wave.shape[-1] % hop))
        window, overlap = self.model.max_frames * hop, self.overlap * hop
        return windowed_map(self.model.encode_audio, wave, 2, 2, Fraction(1, hop), window, overlap, hop).float()

    @torch.no_grad()
    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """(B, C, frames) -> (B, 2, frames * hop) float32 waveforms, window by window for long latents."""
        hop = self.model.hop_length
        return windowed_map(self.model.decode_latent, latent, 2, 2, Fraction(hop), self.model.max_frames, self.overlap).float()

    def write(self, latents: torch.Tensor, meta: dict[str, Any], output_type: str) -> list[np.ndarray]:
        n = int(meta["num_samples"])
        waves = [self.decode(row.unsqueeze(0))[0, :, :n].cpu().numpy() for row in latents]
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
        """The input's latent in grey (its C channels upwards, time to the right, drawn at
        ``PICTURE`` pixels), and ``grids`` (..., 1, Q) over time, as they are (time to the right)."""
        latent = inv.x0[0].float().cpu()  # (C, frames)
        level = (latent - latent.min()) / (latent.max() - latent.min() + 1e-8)
        level = torch.nn.functional.interpolate(level[None, None], size=PICTURE, mode="bilinear")[0, 0].flip(0)
        grey = (level[..., None].expand(*PICTURE, 3) * 255).round().to(torch.uint8).numpy()
        return grey, grids.numpy()


class StableAudioEditor(Editor):
    """Text-based editing of 44.1 kHz stereo recordings of any length with Stable Audio Open.

    Inversion and edits run on SAO's own sampler: the DPM-Solver++(2M) SDE steps of its cosine
    scheduler, each solved for its noise map (``image_core.methods.ddpm``).

    Args:
        model: the Stable Audio Open adapter.
        overlap: latent frames shared by neighbouring windows of a long clip (256 = 11.9 s of the
            1024-frame, 47.55 s window of the real model; a quarter of the window in general).
        window_batch: window rows per DiT call; bounds memory per step for any length.
        kwargs: ``LatentEditor`` options (inversion_batch_size, progress).

    The DiT's windows are ``max_frames - overlap // 2`` frames: ``windows.spans`` runs an input up to
    half an overlap longer than a window as one slightly longer window, so every DiT call stays within
    the training length (a clip of up to ``max_frames`` frames is one call, as before).
    """

    model: StableAudioModel
    codec: StableAudioCodec
    model_class: Any = StableAudioModel  # the adapter ``from_pretrained`` loads
    codec_class: Any = StableAudioCodec  # the codec around it

    def __init__(self, model: StableAudioModel, overlap: int | None = None, window_batch: int = 8, **kwargs: Any) -> None:
        self.overlap = model.max_frames // 4 if overlap is None else overlap
        self.window = model.max_frames - self.overlap // 2
        if not 0 <= self.overlap < self.window:
            limit = next(o for o in range(model.max_frames + 1) if o >= model.max_frames - o // 2)
            raise InputError(f"overlap must be in [0, {limit}) latent frames, got {overlap}")
        denoiser = WindowedDenoiser(model.predict_eps, axis=2, window=self.window, overlap=self.overlap, max_batch=window_batch)
        super().__init__(model, self.codec_class(model, self.overlap), denoiser, **kwargs)

    def latent_shape(self, num_samples: int) -> tuple[int, int]:
        """(C, frames) of the latent of a clip of ``num_samples`` at the model's rate."""
        return self.codec.latent_shape(num_samples)

    def inversion_rows(self, x0: torch.Tensor) -> int:
        """Fewer timesteps per inversion call for clips of several windows: as many window-rows in all
        as one window's latent takes (as ``AudioEditor.inversion_rows``)."""
        windows = len(spans(x0.shape[2], self.window, self.overlap))
        return max(1, super().inversion_rows(x0[..., : self.model.max_frames]) // windows)

    def fingerprint(self) -> str:
        """The model's fingerprint plus the windows: the blend of overlapping windows changes the noise
        estimates of long clips, so an inversion made with another overlap would not reconstruct."""
        return f"{self.model.fingerprint()}-window{self.window}-overlap{self.overlap}"

    @classmethod
    def from_pretrained(cls, name: str, device: str | torch.device = "auto", dtype: str | torch.dtype = "auto", **kwargs: Any) -> StableAudioEditor:
        """Load ``stabilityai/stable-audio-open-1.0`` (cached), a local folder of its layout, or "tiny-sao"."""
        kwargs.pop("compile", None)
        resolved = adapters.resolve_device(device)
        return cls(cls.model_class.from_pretrained(name, resolved, adapters.resolve_dtype(dtype, resolved)), **kwargs)

    def save_pretrained(self, folder: str | os.PathLike[str]) -> None:
        self.model.save_pretrained(folder)
