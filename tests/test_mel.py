"""Tests of audio_edit.mel against an independent numpy + librosa computation of the AudioLDM front end."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch

from audio_edit.mel import LogMel, MelConfig, normalize_waveform, num_frames
from image_core.errors import InputError

RATE = 16000


def synth_melody(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """Harmonic notes with vibrato, a noise burst and a quiet noise floor at 16 kHz, float32 (n,)."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * RATE)) / RATE
    notes = np.array([196.0, 261.6, 329.6, 392.0, 523.3])
    pitch = notes[(t * 5).astype(int) % len(notes)] * (1 + 0.01 * np.sin(2 * np.pi * 5 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / RATE
    wave = sum(np.sin(k * phase) / k**1.5 for k in range(1, 12))
    burst = (np.abs(t - seconds / 2) < 0.1) * rng.standard_normal(t.size)
    return (0.3 * wave + 0.3 * burst + 0.003 * rng.standard_normal(t.size)).astype(np.float32)


def espeak_speech(tmp_path: Path) -> np.ndarray:
    """Spoken sentence from espeak-ng resampled to 16 kHz mono, float32 (n,)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    path = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(path), "The quick brown fox jumps over the lazy dog."], check=True)
    wave, rate = sf.read(path, dtype="float32")
    return librosa.resample(wave, orig_sr=rate, target_sr=RATE, res_type="soxr_hq").astype(np.float32)


def reference_normalize(wave: np.ndarray) -> np.ndarray:
    wave = wave.astype(np.float64) - np.mean(wave, dtype=np.float64)
    return 0.5 * wave / (np.max(np.abs(wave)) + 1e-8)


def reference_log_mel(wave: np.ndarray) -> np.ndarray:
    """AudioLDM log-mel with numpy + librosa in float64, time-major (frames, 64)."""
    spectrum = librosa.stft(
        wave.astype(np.float64), n_fft=1024, hop_length=160, win_length=1024, window="hann",
        center=True, pad_mode="reflect",
    )
    basis = librosa.filters.mel(
        sr=RATE, n_fft=1024, n_mels=64, fmin=0.0, fmax=8000.0, htk=False, norm="slaney"
    )
    return np.log(np.maximum(basis @ np.abs(spectrum), 1e-5)).T


def check_parity(wave: np.ndarray) -> None:
    normalized = normalize_waveform(torch.from_numpy(wave)[None])
    np.testing.assert_allclose(normalized[0].numpy(), reference_normalize(wave), atol=1e-6)
    mel = LogMel()(normalized)
    expected = reference_log_mel(reference_normalize(wave))
    assert mel.dtype == torch.float32
    assert mel.shape == (1, 1, *expected.shape) == (1, 1, num_frames(len(wave)), 64)
    assert np.max(np.abs(mel[0, 0].numpy() - expected)) < 1e-3


def test_parity_with_librosa_on_synthesised_melody() -> None:
    check_parity(synth_melody())


def test_parity_with_librosa_on_speech(tmp_path: Path) -> None:
    check_parity(espeak_speech(tmp_path))


def test_batch_equals_rows() -> None:
    waves = torch.stack([torch.from_numpy(synth_melody(1.0, seed)) for seed in range(3)])
    log_mel = LogMel()
    normalized = normalize_waveform(waves)
    batched = log_mel(normalized)
    assert batched.shape == (3, 1, num_frames(RATE), 64)
    for row in range(3):
        torch.testing.assert_close(normalize_waveform(waves[row : row + 1]), normalized[row : row + 1])
        single = log_mel(normalized[row : row + 1])
        torch.testing.assert_close(single, batched[row : row + 1], atol=1e-5, rtol=0)


def test_float32_output_for_other_dtypes() -> None:
    wave = normalize_waveform(torch.from_numpy(synth_melody(0.5))[None])
    log_mel = LogMel()
    expected = log_mel(wave)
    assert log_mel(wave.double()).dtype == torch.float32
    torch.testing.assert_close(log_mel(wave.double()), expected, atol=1e-4, rtol=0)
    half_module = LogMel().half()
    assert half_module(wave.half()).dtype == torch.float32
    assert normalize_waveform(wave.half()).dtype == torch.float32


def test_silence_stays_finite() -> None:
    silence = torch.zeros(2, 4000)
    normalized = normalize_waveform(silence)
    assert torch.equal(normalized, silence)
    mel = LogMel()(normalized)
    assert torch.isfinite(mel).all()
    assert torch.allclose(mel, torch.full_like(mel, float(np.log(1e-5))))


def test_normalize_is_per_row() -> None:
    ramp = torch.linspace(-1, 1, 1000)
    waves = torch.stack([3.0 + ramp, 0.01 * ramp.abs()])
    normalized = normalize_waveform(waves)
    torch.testing.assert_close(normalized.abs().amax(dim=-1), torch.full((2,), 0.5), atol=1e-6, rtol=0)
    torch.testing.assert_close(normalized.mean(dim=-1), torch.zeros(2), atol=1e-6, rtol=0)


@pytest.mark.parametrize(("samples", "frames"), [(513, 4), (16000, 101), (163840, 1025)])
def test_num_frames_matches_output(samples: int, frames: int) -> None:
    assert num_frames(samples) == frames
    assert LogMel()(torch.zeros(1, samples)).shape[2] == frames


def test_config_defaults_and_custom() -> None:
    config = MelConfig()
    settings = (config.sample_rate, config.n_fft, config.hop_length, config.win_length, config.n_mels)
    assert settings == (16000, 1024, 160, 1024, 64)
    assert (config.fmin, config.fmax, config.log_floor) == (0.0, 8000.0, 1e-5)
    small = MelConfig(n_mels=32, hop_length=256)
    assert LogMel(small)(torch.zeros(2, 4096)).shape == (2, 1, num_frames(4096, small), 32)


def test_bad_shapes() -> None:
    with pytest.raises(InputError) as error:
        LogMel()(torch.zeros(1, 512))
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError):
        LogMel()(torch.zeros(16000))
