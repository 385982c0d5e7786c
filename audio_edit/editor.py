"""``AudioEditor``: invert a real recording and edit it with text, with AudioLDM / AudioLDM2.

Pipeline: waveform (any rate, channels, length) -> 16 kHz mono, normalised -> log-mel -> VAE latent
(C, T, F) -> inversion / edit in the core, the UNet running on overlapping windows of the
training length along T -> VAE decoder -> vocoder -> the input's rate, exact length and loudness.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from fractions import Fraction
from typing import Any, Literal

import librosa
import numpy as np
import torch
from PIL import Image

from image_core import adapters
from image_core.editing import LatentEditor
from image_core.errors import InputError
from image_core.inversion import Inversion
from image_core.masks import load_mask, save_mask
from image_core.methods import null_text
from image_core.methods.pcs import AMOUNT, PosteriorPCs
from image_core.methods.sega import Concept
from image_core.settings import check_interval, check_settings
from image_core.windows import WindowedDenoiser, spans, windowed_map

from . import defaults
from .audio_io import Audio, Original, check_audio, load_audio, restore, to_model_rate
from .mel import LogMel, MelConfig, normalize_waveform
from .models import AudioModel

MIN_SAMPLES = 640  # 40 ms at 16 kHz: the centred STFT needs more than half its 1024-sample window

OutputType = Literal["np", "latent"]
AudioInput = str | os.PathLike | Audio


class AudioEditor(LatentEditor):
    """Text-based editing of real recordings of any length by edit-friendly DDPM inversion.

    Defaults are the audio paper's (Manor & Michaeli, ICML 2024): 200 steps, the edit running the
    last 100, source guidance 3, target guidance 12, eta 1.

    Args:
        model: the AudioLDM / AudioLDM2 adapter.
        overlap: latent frames shared by neighbouring windows of a long clip (64 = 2.56 s of the
            256-frame, 10.24 s window of the real models; a quarter of the window in general).
        window_batch: window rows per UNet call; bounds memory per step for any length.
        kwargs: ``LatentEditor`` options (inversion_batch_size, progress).
    """

    model: AudioModel

    def __init__(self, model: AudioModel, overlap: int | None = None, window_batch: int = 8, **kwargs: Any) -> None:
        self.overlap = model.latent_window // 4 if overlap is None else overlap
        if not 0 <= self.overlap < model.latent_window:
            raise InputError(f"overlap must be in [0, {model.latent_window}) latent frames, got {self.overlap}")
        denoiser = WindowedDenoiser(model.predict_eps, axis=2, window=model.latent_window, overlap=self.overlap, max_batch=window_batch)
        super().__init__(model, denoiser, **kwargs)
        self.mel_config = MelConfig(sample_rate=model.sample_rate, hop_length=model.hop_length, n_mels=model.mel_bins)
        self.log_mel = LogMel(self.mel_config).to(model.device)

    def inversion_rows(self, x0: torch.Tensor) -> int:
        """Fewer timesteps per inversion call for clips of several windows: ``inversion_batch_size``
        window-rows in all, so the buffers of a call stay the size of a short clip's at any length
        (the UNet sees batches of ``window_batch`` windows either way)."""
        windows = len(spans(x0.shape[2], self.model.latent_window, self.overlap))
        return max(1, self.inversion_batch_size // windows)

    def fingerprint(self) -> str:
        """The model's fingerprint plus the windows: the blend of overlapping windows changes the noise
        estimates of long clips, so an inversion made with another overlap would not reconstruct."""
        return f"{self.model.fingerprint()}-window{self.model.latent_window}-overlap{self.overlap}"

    @classmethod
    def from_pretrained(
        cls, name: str = defaults.MODEL, device: str | torch.device = "auto", dtype: str | torch.dtype = "auto", **kwargs: Any
    ) -> AudioEditor:
        """Load a hub id, a local folder (diffusers layout), "tiny" (AudioLDM2) or "tiny-audioldm"."""
        resolved = adapters.resolve_device(device)
        return cls(AudioModel.from_pretrained(name, resolved, adapters.resolve_dtype(dtype, resolved)), **kwargs)

    def save_pretrained(self, folder: str | os.PathLike[str]) -> None:
        """Save the model in the diffusers layout."""
        self.model.save_pretrained(folder)

    # ------------------------------------------------------------------------------ waveform <-> latent

    def latent_length(self, num_samples: int) -> int:
        """Latent frames for a clip of ``num_samples`` at 16 kHz: at least one window, a UNet multiple.

        The mel frames counted are those the vocoder needs to give back ``num_samples`` (one per hop),
        so a clip of exactly the training length (10.24 s) is one window.
        """
        m = self.model.latent_multiple
        frames = -(-num_samples // self.mel_config.hop_length)
        return max(self.model.latent_window, -(-frames // (self.model.vae_factor * m)) * m)

    @torch.no_grad()
    def encode(self, wave: np.ndarray) -> torch.Tensor:
        """(n,) 16 kHz mono -> (1, C, T, F) latent; silence-padded to ``latent_length(n)`` frames."""
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
        """(N, C, T, F) latents -> (N, T * f * hop) float32 waveforms at 16 kHz, one row at a time."""
        f, hop = self.model.vae_factor, self.mel_config.hop_length
        window, overlap = self.model.latent_window, self.overlap
        waves = []
        for latent in latents.to(self.model.device):
            mel = windowed_map(self.model.decode_latent, latent.unsqueeze(0), 2, 2, Fraction(f), window, overlap)
            wave = windowed_map(self.model.vocode, mel, 2, 1, Fraction(hop), window * f, overlap * f)
            waves.append(wave[0].float().cpu().numpy())
        return np.stack(waves)

    # ------------------------------------------------------------------------------------------- editing

    def invert(
        self,
        audio: AudioInput,
        source_prompt: str = "",
        num_steps: int = defaults.NUM_STEPS,
        t_start: int = defaults.T_START,
        cfg_src: float = defaults.CFG_SRC,
        eta: float = 1.0,
        seed: int | Sequence[int] = 0,
        method: str = "ddpm",
        inner_steps: int = null_text.INNER_STEPS,
        early_stop: float = null_text.EARLY_STOP,
    ) -> Inversion:
        """Invert a recording (path or ``Audio``); several seeds give several inversions (diverse edits).

        The model hears the mono downmix (mean of the channels) at 16 kHz; ``inv.meta`` keeps the
        input's sample rate, length and loudness for the outputs. ``method``: "ddpm" (edit-friendly),
        "ddim" (the deterministic baseline; one seed) or "null-text" (DDIM with an unconditional
        branch optimised per step for guidance ``cfg_src``, the scale edits will use; see
        ``LatentEditor.invert_latent`` for ``inner_steps`` and ``early_stop``).
        """
        seeds = seed if isinstance(seed, Sequence) else [seed]
        check_settings(num_steps, t_start, eta if method == "ddpm" else 1.0, cfg_src)  # before the VAE runs
        wave, meta = self._read(audio)
        self.check_inversion_memory(self.latent_shape(len(wave)), len(seeds), t_start, method)
        return self.invert_latent(self.encode(wave), source_prompt, num_steps, t_start, cfg_src, eta, seed, meta, method, inner_steps, early_stop)

    def _read(self, audio: AudioInput) -> tuple[np.ndarray, dict[str, Any]]:
        """(the model's 16 kHz mono input, the facts the outputs need) of a recording."""
        clip = audio if isinstance(audio, Audio) else load_audio(audio)
        check_audio(clip)
        wave = to_model_rate(clip, self.model.sample_rate)
        if len(wave) < MIN_SAMPLES:
            raise InputError(
                f"the clip is too short ({clip.duration * 1000:.1f} ms, {len(wave)} samples at 16 kHz): "
                "give at least 40 ms of audio"
            )
        return wave, {**vars(Original.of(clip)), "model_samples": len(wave)}

    def latent_shape(self, num_samples: int) -> tuple[int, int, int]:
        """(C, T, F) of the latent of a clip of ``num_samples`` at 16 kHz."""
        return (self.model.latent_channels, self.latent_length(num_samples), self.mel_config.n_mels // self.model.vae_factor)

    def edit(
        self,
        inv: Inversion,
        target_prompt: str | Sequence[str] | None,
        cfg_tar: float | Sequence[float] = defaults.CFG_TAR,
        negative_prompt: str = "",
        output_type: OutputType = "np",
        mask: torch.Tensor | None = None,
        concepts: Sequence[Concept] | Sequence[Sequence[Concept]] | None = None,
    ) -> list[np.ndarray] | torch.Tensor:
        """Edit with T target prompts; T * B results (item i * B + j: target i, inversion j).

        output_type "np": float32 mono waveforms (num_frames,) at the input's sample rate, length and
        loudness; "latent": the (T * B, C, T, F) float64 latents, not decoded.
        mask: (1, 1, T, F) from ``mask``/``region_mask``/``load_mask``: the edit keeps the rest.
        concepts: LEDITS semantic guidance, ``Concept("jazz piano", scale=10, remove=False)`` values
            (or K sets of them: K * T * B results); ``target_prompt`` None keeps the source prompt.
        """
        latents = self.edit_latent(inv, target_prompt, cfg_tar, negative_prompt, mask=mask, concepts=concepts)
        return self._output(latents, inv.meta, output_type)

    def edit_pc(
        self,
        inv: Inversion,
        pcs: PosteriorPCs,
        pc: int | Sequence[int] = 1,
        amount: float | Sequence[float] = AMOUNT,
        output_type: OutputType = "np",
    ) -> list[np.ndarray] | torch.Tensor:
        """Prompt-free edits: the input moved along principal components of the posterior (from
        ``principal_components(inv, n, step, region)``) by amounts in standard deviations; all
        (pc, amount) pairs in one batch, item (i * len(amount) + a) * B + j."""
        return self._output(self.edit_pc_latent(inv, pcs, pc, amount), inv.meta, output_type)

    def reconstruct(self, inv: Inversion, output_type: OutputType = "np") -> list[np.ndarray] | torch.Tensor:
        """Regenerate the inverted clip(s) from the noise maps (the input, up to the VAE and vocoder)."""
        return self._output(self.reconstruct_latent(inv), inv.meta, output_type)

    def sdedit(
        self,
        audio: AudioInput,
        target_prompt: str | Sequence[str],
        num_steps: int = defaults.NUM_STEPS,
        t_start: int = defaults.T_START,
        cfg_tar: float | Sequence[float] = defaults.CFG_TAR,
        eta: float = 1.0,
        seed: int | Sequence[int] = 0,
        negative_prompt: str = "",
        output_type: OutputType = "np",
    ) -> list[np.ndarray] | torch.Tensor:
        """SDEdit (the baseline): noise the clip to ``t_start`` and sample the target with fresh noise.
        T targets x S seeds, item i * S + j: target i, seed j."""
        check_settings(num_steps, t_start, eta)
        wave, meta = self._read(audio)
        latents = self.sdedit_latent(self.encode(wave), target_prompt, num_steps, t_start, cfg_tar, eta, seed, negative_prompt)
        return self._output(latents, meta, output_type)

    def _output(self, latents: torch.Tensor, meta: dict[str, Any], output_type: OutputType) -> Any:
        if output_type == "latent":
            return latents
        if output_type != "np":
            raise InputError(f"output_type must be np or latent, got {output_type!r}")
        waves = self.decode(latents)[:, : meta["model_samples"]]
        return list(restore(waves, Original.from_meta(meta), self.model.sample_rate))

    # --------------------------------------------------------------------------------------------- masks

    def mask(self, inv: Inversion, target_prompt: str, source_prompt: str | None = None, **options: Any) -> torch.Tensor:
        """The DiffEdit mask (1, 1, T, F) over the latent's time-frequency grid where the target and
        source descriptions disagree; options: strength, draws, threshold, seed (``mask_latent``)."""
        return self.mask_latent(inv, target_prompt, source_prompt, **options)

    def region_mask(
        self, inv: Inversion, seconds: tuple[float, float] | None = None, hz: tuple[float, float] | None = None
    ) -> torch.Tensor:
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
        mask = (rows[:, None] & cols[None, :]).to(torch.float64)[None, None]
        return self.check_mask(mask, inv.x0)

    def save_mask(self, mask: torch.Tensor, path: str | os.PathLike[str], inv: Inversion) -> None:
        """Write a PNG of the input's log-mel spectrogram (as the model sees it) with the mask drawn over
        it: the rest darkened; ``load_mask`` reads the exact mask back."""
        grid = self.check_mask(mask, inv.x0)[0, 0]  # (T, F)
        with torch.no_grad():
            mel = self.model.decode_latent(inv.x0[:1].to(self.model.device))[0, 0].float().cpu()  # (frames, bins)
        level = ((mel - mel.min()) / (mel.max() - mel.min() + 1e-8)).T.flip(0).numpy()  # frequency upwards
        f = self.model.vae_factor
        frames = -(-inv.meta["model_samples"] // self.mel_config.hop_length)  # the clip, not its padding
        level = level[:, :frames]
        keep = grid.T.flip(0).repeat_interleave(f, 0).repeat_interleave(f, 1).numpy()[: level.shape[0], :frames]
        from matplotlib import colormaps

        rgb = colormaps["magma"](level)[..., :3] * np.where(keep > 0, 1.0, 0.3)[..., None]
        picture = Image.fromarray((rgb * 255).astype(np.uint8), "RGB").resize((level.shape[1], level.shape[0] * 4), Image.NEAREST)
        save_mask(path, grid.T.flip(0), picture)

    def load_mask(self, path: str | os.PathLike[str], inv: Inversion) -> torch.Tensor:
        """(1, 1, T, F) mask from a PNG written by ``save_mask`` or painted (white = edit, time to the
        right, frequency upwards, any size)."""
        T, F = inv.x0.shape[2:]
        return self.check_mask(load_mask(path, (F, T)).flip(0).T[None, None], inv.x0)

