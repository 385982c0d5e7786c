"""Tests of audio_edit.resample: the Hann-windowed sinc resampler of the models' training audio."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from audio_edit.audio_io import Audio, to_model_rate
from audio_edit.resample import resample_sinc


def direct_sum(x: np.ndarray, orig_rate: int, new_rate: int, width: int = 6, rolloff: float = 0.99) -> np.ndarray:
    """Slow reference: every output as the windowed-sinc sum over all input samples, in float64.

    y[n] = sum_m x[m] (b / o) sinc(t) cos^2(pi t / 2w),  t = b (m / o - n / r),  |t| < w,
    with o, r the rates over their gcd and b = min(o, r) * rolloff.
    """
    divisor = math.gcd(orig_rate, new_rate)
    orig, new = orig_rate // divisor, new_rate // divisor
    base = min(orig, new) * rolloff
    inputs = np.arange(len(x))
    out = np.zeros(math.ceil(len(x) * new / orig))
    for n in range(len(out)):
        t = base * (inputs / orig - n / new)
        inside = np.abs(t) < width
        t = t[inside]
        out[n] = np.sum(x[inside] * np.sinc(t) * np.cos(np.pi * t / (2 * width)) ** 2) * base / orig
    return out


def noise(frames: int, seed: int = 0) -> np.ndarray:
    """Uniform white noise in [-1, 1], float32."""
    return np.random.default_rng(seed).uniform(-1.0, 1.0, frames).astype(np.float32)


@pytest.mark.parametrize("rate", [44100, 48000, 22050, 11025, 8000, 44101])
def test_matches_direct_windowed_sinc_sum(rate: int) -> None:
    x = noise(2500)
    out = resample_sinc(x, rate, 16000)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, direct_sum(x.astype(np.float64), rate, 16000), rtol=0, atol=1e-6)


@pytest.mark.parametrize(("orig", "new"), [(16000, 44100), (16000, 22050), (8000, 16000)])
def test_upsampling_matches_direct_sum(orig: int, new: int) -> None:
    x = noise(700, seed=1)
    np.testing.assert_allclose(resample_sinc(x, orig, new), direct_sum(x.astype(np.float64), orig, new), atol=1e-6)


@pytest.mark.parametrize(("frames", "rate"), [(1, 44100), (2, 48000), (441, 44100), (442, 44100), (12345, 22050)])
def test_output_length_is_ceil(frames: int, rate: int) -> None:
    assert resample_sinc(noise(frames), rate, 16000).shape == (math.ceil(frames * 16000 / rate),)


def test_leading_axes_are_rows_and_equal_rates_copy() -> None:
    rows = np.stack([noise(3000, seed) for seed in range(3)])
    batch = resample_sinc(rows, 44100, 16000)
    for row, out in zip(rows, batch):
        np.testing.assert_array_equal(out, resample_sinc(row, 44100, 16000))
    same = resample_sinc(rows[0], 16000, 16000)
    np.testing.assert_array_equal(same, rows[0])
    assert same is not rows[0]


def amplitude(wave: np.ndarray) -> float:
    """Sine amplitude from the RMS of the middle of ``wave`` (edges skipped)."""
    middle = wave[len(wave) // 8 : -len(wave) // 8].astype(np.float64)
    return float(np.sqrt(2 * np.mean(middle**2)))


@pytest.mark.parametrize("rate", [44100, 48000, 22050])
def test_passband_and_stopband(rate: int) -> None:
    t = np.arange(rate) / rate
    assert amplitude(resample_sinc(np.sin(2 * np.pi * 1000 * t), rate, 16000)) == pytest.approx(1.0, abs=2e-3)
    assert amplitude(resample_sinc(np.sin(2 * np.pi * 10000 * t), rate, 16000)) < 0.01  # above 8 kHz


def test_cutoff_follows_the_lower_rate() -> None:
    rate = 11025  # upsampling: the cutoff is 0.99 of 5512.5 Hz, so 8 kHz output content cannot appear
    t = np.arange(rate) / rate
    assert amplitude(resample_sinc(np.sin(2 * np.pi * 1000 * t), rate, 16000)) == pytest.approx(1.0, abs=2e-3)
    spectrum = np.abs(np.fft.rfft(resample_sinc(noise(rate), rate, 16000)))
    frequencies = np.fft.rfftfreq(16000, 1 / 16000)
    assert spectrum[frequencies > 7000].mean() < 0.01 * spectrum[frequencies < 4000].mean()


def test_to_model_rate_uses_it_on_the_downmix() -> None:
    samples = np.stack([noise(4410, 2), noise(4410, 3)])
    wave = to_model_rate(Audio(samples, 44100))
    np.testing.assert_allclose(wave, direct_sum(samples.mean(axis=0).astype(np.float64), 44100, 16000), atol=1e-6)


def test_three_minutes_at_44100_is_fast() -> None:
    x = noise(180 * 44100)
    start = time.perf_counter()
    out = resample_sinc(x, 44100, 16000)
    assert time.perf_counter() - start < 5.0  # about 0.15 s on one core; generous for a shared machine
    assert out.shape == (180 * 16000,)
