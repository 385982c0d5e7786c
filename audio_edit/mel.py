"""The log-mel front end the AudioLDM / AudioLDM2 checkpoints were trained on, in batched torch.

Pipeline: 16 kHz mono waveform -> :func:`normalize_waveform` -> :class:`LogMel` (centred STFT magnitude,
64 Slaney mel bands, natural log) -> ``(batch, 1, frames, 64)`` time-major spectrogram.
"""

from __future__ import annotations

from dataclasses import dataclass

import librosa
import torch
from torch import Tensor

from image_core.errors import InputError


@dataclass(frozen=True)
class MelConfig:
    """Settings of the log-mel spectrogram."""

    sample_rate: int = 16000  # waveform sample rate in Hz
    n_fft: int = 1024  # FFT size in samples
    hop_length: int = 160  # samples between frames (10 ms at 16 kHz)
    win_length: int = 1024  # periodic Hann window length in samples
    n_mels: int = 64  # number of mel bands
    fmin: float = 0.0  # lowest mel band edge in Hz
    fmax: float = 8000.0  # highest mel band edge in Hz
    log_floor: float = 1e-5  # mel magnitudes are clamped to at least this before the natural log


def normalize_waveform(wave: Tensor) -> Tensor:
    """Per-row level normalisation used in training: remove the mean, divide by (max |x| + 1e-8), times 0.5.

    Args:
        wave: float tensor shaped ``(batch, n)``.

    Returns:
        float32 tensor shaped ``(batch, n)`` with peak 0.5 per row (all-zero rows stay zero).
    """
    wave = wave.to(torch.float32)
    wave = wave - wave.mean(dim=-1, keepdim=True)
    return 0.5 * wave / (wave.abs().amax(dim=-1, keepdim=True) + 1e-8)


def num_frames(num_samples: int, config: MelConfig = MelConfig()) -> int:
    """Number of spectrogram frames :class:`LogMel` makes from ``num_samples`` samples."""
    return num_samples // config.hop_length + 1


class LogMel(torch.nn.Module):
    """Log-mel spectrogram of (already normalised) waveforms; computed in float32 on the module's device."""

    window: Tensor
    mel_basis: Tensor

    def __init__(self, config: MelConfig = MelConfig()) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("window", torch.hann_window(config.win_length, periodic=True))
        basis = librosa.filters.mel(
            sr=config.sample_rate,
            n_fft=config.n_fft,
            n_mels=config.n_mels,
            fmin=config.fmin,
            fmax=config.fmax,
        )
        self.register_buffer("mel_basis", torch.from_numpy(basis).to(torch.float32))

    def forward(self, wave: Tensor) -> Tensor:
        """Log-mel spectrogram of waveforms.

        Does not normalise; call :func:`normalize_waveform` first.

        Args:
            wave: float tensor shaped ``(batch, n)`` at ``config.sample_rate`` Hz.

        Returns:
            float32 natural log of the mel magnitudes, shaped ``(batch, 1, n // hop_length + 1, n_mels)``.

        Raises:
            ValueError: ``wave`` is not 2-D.
            InputError: ``n`` is too short for the reflect padding of the centred STFT (``n <= n_fft // 2``).
        """
        if wave.dim() != 2:
            raise ValueError(f"LogMel expects waveforms shaped (batch, n), got {tuple(wave.shape)}.")
        pad = self.config.n_fft // 2
        if wave.shape[-1] <= pad:
            seconds = (pad + 1) / self.config.sample_rate
            raise InputError(
                f"Audio is too short ({wave.shape[-1]} samples at {self.config.sample_rate} Hz); "
                f"give at least {pad + 1} samples ({seconds * 1000:.0f} ms)."
            )
        spectrum = torch.stft(
            wave.to(torch.float32),
            n_fft=self.config.n_fft,
            hop_length=self.config.hop_length,
            win_length=self.config.win_length,
            window=self.window.to(torch.float32),
            center=True,
            pad_mode="reflect",
            return_complex=True,
        )
        mel = torch.matmul(self.mel_basis.to(torch.float32), spectrum.abs())
        log_mel = torch.log(torch.clamp(mel, min=self.config.log_floor))
        return log_mel.transpose(1, 2).unsqueeze(1)
