"""Recordings to AudioLDM / AudioLDM2 latents and back: the audio frontend's codec.

waveform (any rate, channels, length) -> 16 kHz mono, normalised -> log-mel -> VAE latent (C, T, F),
on overlapping windows of the training length along T; and back: VAE decoder -> vocoder -> the
input's rate, exact length and loudness.
"""

from __future__ import annotations

import os
from fractions import Fraction
from typing import Any

import librosa
import numpy as np
import torch
from PIL import Image

from image_core.errors import InputError
from image_core.frontend import Defaults, Source
from image_core.inversion import Inversion
from image_core.masks import load_mask, save_mask
from image_core.settings import check_interval
from image_core.windows import windowed_map

from . import defaults
from .audio_io import Audio, Original, check_audio, load_audio, restore, to_model_rate
from .loudness import warn_if_silent
from .mel import LogMel, MelConfig, normalize_waveform
from .models import AudioModel

MIN_SAMPLES = 640  # 40 ms at 16 kHz: the centred STFT needs more than half its 1024-sample window
DECODE_ROWS = 8  # latents per VAE-decoder and vocoder call: bounds their memory (a 10 s window each)
DEFAULTS = Defaults(defaults.NUM_STEPS, defaults.T_START, defaults.CFG_SRC, defaults.CFG_TAR, "np")

AudioInput = str | os.PathLike | Audio


class AudioCodec:
    """Recordings in, waveforms out, for one AudioLDM / AudioLDM2 model.

    Args:
        model: the model; overlap: latent frames shared by neighbouring windows of a long clip.
    Outputs ("np"): float32 mono waveforms (num_frames,) at the input's sample rate, length and loudness.
    """

    defaults = DEFAULTS
    output_types = ("np",)

    def __init__(self, model: AudioModel, overlap: int) -> None:
        self.model, self.overlap = model, overlap
        self.mel_config = MelConfig(sample_rate=model.sample_rate, hop_length=model.hop_length, n_mels=model.mel_bins)
        self.log_mel = LogMel(self.mel_config).to(model.device)

    def read(self, item: AudioInput) -> Source:
        """The model's 16 kHz mono input of a recording (path or ``Audio``), with the facts the outputs
        need (rate, length, loudness); the model hears the mono downmix (mean of the channels)."""
        clip = item if isinstance(item, Audio) else load_audio(item)
        check_audio(clip)
        warn_if_silent(clip.samples)
        wave = to_model_rate(clip, self.model.sample_rate)
        if len(wave) < MIN_SAMPLES:
            raise InputError(
                f"the clip is too short ({clip.duration * 1000:.1f} ms, {len(wave)} samples at 16 kHz): "
                "give at least 40 ms of audio"
            )
        return Source(wave, {**vars(Original.of(clip)), "model_samples": len(wave)})

    def latent_length(self, num_samples: int) -> int:
        """Latent frames for a clip of ``num_samples`` at 16 kHz: at least one window, a UNet multiple.

        The mel frames counted are those the vocoder needs to give back ``num_samples`` (one per hop),
        so a clip of exactly the training length (10.24 s) is one window.
        """
        m = self.model.latent_multiple
        frames = -(-num_samples // self.mel_config.hop_length)
        return max(self.model.latent_window, -(-frames // (self.model.vae_factor * m)) * m)

    def latent_shape(self, source: Source | int) -> tuple[int, int, int]:
        """(C, T, F) of the latent of a clip (its ``Source`` or its number of samples at 16 kHz)."""
        samples = source if isinstance(source, int) else len(source.data)
        return (self.model.latent_channels, self.latent_length(samples), self.mel_config.n_mels // self.model.vae_factor)

    @torch.no_grad()
    def encode(self, source: Source | np.ndarray) -> torch.Tensor:
        """(n,) 16 kHz mono (or its ``Source``) -> (1, C, T, F) float32 latent, silence-padded to
        ``latent_length(n)`` frames."""
        wave = source.data if isinstance(source, Source) else source
        f = self.model.vae_factor
        frames = self.latent_length(len(wave)) * f
        hop = self.mel_config.hop_length
        x = normalize_waveform(torch.from_numpy(wave).float().unsqueeze(0).to(self.model.device))
        x = torch.nn.functional.pad(x, (0, max(0, (frames - 1) * hop - x.shape[1])))
        mel = self.log_mel(x)[:, :, :frames]
        window = self.model.latent_window * f
        return windowed_map(self.model.encode_mel, mel, 2, 2, Fraction(1, f), window, self.overlap * f, f).float()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> np.ndarray:
        """(N, C, T, F) latents -> (N, T * f * hop) float32 waveforms at 16 kHz, ``DECODE_ROWS`` rows
        per VAE and vocoder call (window by window for long clips), one copy to the host at the end."""
        f, hop = self.model.vae_factor, self.mel_config.hop_length
        window, overlap = self.model.latent_window, self.overlap
        waves = []
        for part in latents.float().to(self.model.device).split(DECODE_ROWS):  # the VAE decodes in float32
            mel = windowed_map(self.model.decode_latent, part, 2, 2, Fraction(f), window, overlap)
            waves.append(windowed_map(self.model.vocode, mel, 2, 1, Fraction(hop), window * f, overlap * f).float())
        return torch.cat(waves).cpu().numpy()

    def write(self, latents: torch.Tensor, meta: dict[str, Any], output_type: str) -> list[np.ndarray]:
        """Waveforms at the input's rate, exact length and loudness."""
        waves = self.decode(latents)[:, : meta["model_samples"]]
        return list(restore(waves, Original.from_meta(meta), self.model.sample_rate))

    # --------------------------------------------------------------------------------------------- masks

    def region_mask(self, inv: Inversion, seconds: tuple[float, float] | None = None, hz: tuple[float, float] | None = None) -> torch.Tensor:
        """(1, 1, T, F) mask of a time range in seconds and/or a frequency band in Hz (the latent cells
        they touch; all times or all frequencies where not given)."""
        C, T, F = inv.x0.shape[1:]
        duration = inv.meta["model_samples"] / self.model.sample_rate
        nyquist = self.model.sample_rate / 2
        rows = torch.ones(T, dtype=torch.bool)
        cols = torch.ones(F, dtype=torch.bool)
        if seconds is not None:
            start, end = check_interval(seconds, 0.0, duration, "time range", f"the clip's 0..{duration:.2f} s")
            frame = self.model.vae_factor * self.mel_config.hop_length / self.model.sample_rate  # seconds per latent frame
            t = torch.arange(T, dtype=torch.float64) * frame
            rows = (t + frame > start) & (t < end)
        if hz is not None:
            lo, hi = check_interval(hz, 0.0, nyquist, "frequency band", f"0..{nyquist:.0f} Hz, what the model hears")
            edges = librosa.mel_frequencies(self.mel_config.n_mels + 2, fmin=self.mel_config.fmin, fmax=self.mel_config.fmax)
            f = self.model.vae_factor  # mel bands per latent bin: bin b holds the centres of bands f b .. f b + f - 1
            lows, highs = torch.tensor(edges[1::f][:F]), torch.tensor(edges[f::f][:F])
            cols = (highs >= lo) & (lows <= hi)
            if not cols.any():  # a band narrower than a bin, between two bins' centres: the nearest bin
                cols[((lows + highs) / 2 - (lo + hi) / 2).abs().argmin()] = True
        return (rows[:, None] & cols[None, :]).to(torch.float64)[None, None]

    def save_mask(self, mask: torch.Tensor, path: str | os.PathLike[str], inv: Inversion) -> None:
        """A PNG of the input's log-mel spectrogram (as the model sees it) with the mask drawn over it:
        the rest darkened; ``load_mask`` reads the exact mask back."""
        grid = mask[0, 0]  # (T, F)
        level = self._mel_level(inv)
        frames, f = level.shape[1], self.model.vae_factor
        keep = grid.T.flip(0).repeat_interleave(f, 0).repeat_interleave(f, 1).numpy()[: level.shape[0], :frames]
        from matplotlib import colormaps

        rgb = colormaps["magma"](level)[..., :3] * np.where(keep > 0, 1.0, 0.3)[..., None]
        picture = Image.fromarray((rgb * 255).astype(np.uint8), "RGB").resize((level.shape[1], level.shape[0] * 4), Image.NEAREST)
        save_mask(path, grid.T.flip(0), picture)

    def load_mask(self, path: str | os.PathLike[str], inv: Inversion) -> torch.Tensor:
        """(1, 1, T, F) mask from a PNG written by ``save_mask`` or painted (white = edit, time to the
        right, frequency upwards, any size)."""
        T, F = inv.x0.shape[2:]
        return load_mask(path, (F, T)).flip(0).T[None, None]

    def picture(self, inv: Inversion, grids: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """The input's log-mel spectrogram in grey (time to the right, frequency upwards, the clip
        without its padding), and ``grids`` (..., T', F') over the latent grid turned the same way."""
        level = self._mel_level(inv)
        grey = (np.repeat(level[..., None], 3, axis=-1) * 255).astype(np.uint8)
        columns = -(-grids.shape[-2] * level.shape[1] // (inv.x0.shape[2] * self.model.vae_factor))
        return grey, grids.transpose(-1, -2).flip(-2)[..., :columns].numpy()

    def _mel_level(self, inv: Inversion) -> np.ndarray:
        """(bins, frames) the inversion's log-mel (as the model sees it) in [0, 1], frequency upwards,
        the clip's frames only."""
        with torch.no_grad():
            mel = self.model.decode_latent(inv.x0[:1].float().to(self.model.device))[0, 0].float().cpu()  # (frames, bins)
        level = ((mel - mel.min()) / (mel.max() - mel.min() + 1e-8)).T.flip(0).numpy()
        frames = -(-inv.meta["model_samples"] // self.mel_config.hop_length)  # the clip, not its padding
        return level[:, :frames]
