"""Tests of audio_edit.loudness against facts stated by ITU-R BS.1770-4, and of the peak limiter."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import signal

from audio_edit.loudness import integrated_loudness, k_weighting, limiter_gain, measured_loudness

# BS.1770-4, tables 1 and 2: the K-weighting filter's coefficients at 48 kHz.
STANDARD_SHELF_48K = ([1.53512485958697, -2.69169618940638, 1.19839281085285], [1.0, -1.69065929318241, 0.73248077421585])
STANDARD_HIGHPASS_48K = ([1.0, -2.0, 1.0], [1.0, -1.99004745483398, 0.99007225036621])


def sine(frequency: float, seconds: float, sample_rate: int, amplitude: float = 1.0) -> np.ndarray:
    t = np.arange(round(seconds * sample_rate)) / sample_rate
    return amplitude * np.sin(2 * np.pi * frequency * t)


def test_k_weighting_at_48k_is_the_standards() -> None:
    sections = k_weighting(48000)
    for section, (b, a) in zip(sections, (STANDARD_SHELF_48K, STANDARD_HIGHPASS_48K)):
        np.testing.assert_allclose(section, b + a, atol=1e-8)


@pytest.mark.parametrize("rate", [8000, 16000, 44100, 48000, 96000])
def test_k_weighting_gain(rate: int) -> None:
    _, response = signal.sosfreqz(k_weighting(rate), worN=[997.0, 0.45 * rate], fs=rate)
    at_1k, high = 20 * np.log10(np.abs(response))
    assert at_1k == pytest.approx(0.69, abs=0.25)  # cancelled by the -0.691 dB offset
    assert high == pytest.approx(4.0, abs=0.1)  # the shelf


@pytest.mark.parametrize(("rate", "tolerance"), [(48000, 0.01), (44100, 0.01), (22050, 0.05), (16000, 0.1)])
@pytest.mark.parametrize("level_db", [0.0, -20.0])
def test_997_hz_sine_reads_its_level_minus_3_01(rate: int, tolerance: float, level_db: float) -> None:
    """A 997 Hz sine at L dBFS peak reads L - 3.01 LUFS; below 44.1 kHz the bilinear transform bends the
    shelf a little (-3.06 at 16 kHz)."""
    wave = sine(997.0, 3.0, rate, 10 ** (level_db / 20))
    assert integrated_loudness(wave, rate) == pytest.approx(level_db - 3.01, abs=tolerance)


def test_silent_stretches_are_gated_out() -> None:
    rate = 16000
    tone = sine(997.0, 4.0, rate, 0.1)
    with_silence = np.concatenate([tone, np.zeros(20 * rate), tone])
    # Power averaging would read 10 log10(8 / 28) = -5.4 dB lower; the absolute gate drops the silent
    # blocks and only the few blocks straddling the edges lower the reading.
    assert integrated_loudness(with_silence, rate) == pytest.approx(integrated_loudness(tone, rate), abs=0.3)


def test_quiet_passages_below_the_relative_gate_are_ignored() -> None:
    rate = 16000
    loud = sine(997.0, 4.0, rate, 0.5)
    quiet = sine(997.0, 16.0, rate, 0.5 * 10 ** (-25 / 20))  # 25 LU lower: above -70 LUFS, below the gate
    mixed = np.concatenate([loud, quiet])
    # Without the relative gate: 10 log10((4 + 16 * 10 ** -2.5) / 20) = -6.9 dB below the loud part.
    assert integrated_loudness(quiet, rate) > -70.0
    assert integrated_loudness(mixed, rate) == pytest.approx(integrated_loudness(loud, rate), abs=0.3)


def test_short_clip_is_one_block() -> None:
    rate = 48000
    assert integrated_loudness(sine(997.0, 0.1, rate), rate) == pytest.approx(-3.01, abs=0.1)


@pytest.mark.parametrize("seconds", [0.1, 3.0])
def test_silence_and_sub_gate_noise_read_minus_infinity(seconds: float) -> None:
    rate = 16000
    frames = round(seconds * rate)
    assert integrated_loudness(np.zeros(frames), rate) == -math.inf
    below_gate = 1e-5 * np.random.default_rng(0).standard_normal(frames)  # about -100 LUFS
    assert integrated_loudness(below_gate, rate) == -math.inf
    assert integrated_loudness(np.zeros(0), rate) == -math.inf


def test_measured_loudness_is_proportional_to_level() -> None:
    rate = 16000
    rng = np.random.default_rng(4)
    # bursts of noise with silent gaps: gated and ungated readings differ by several dB
    bursts = rng.standard_normal(6 * rate) * np.repeat(rng.uniform(0, 1, 12) > 0.5, rate // 2) * 0.1
    reference = measured_loudness(bursts, rate)
    assert reference == pytest.approx(integrated_loudness(bursts, rate), abs=1e-9)  # near -23 LUFS: BS.1770
    for scale_db in (-90.0, -60.0, -20.0, 10.0):
        scaled = bursts * 10 ** (scale_db / 20)
        assert measured_loudness(scaled, rate) == pytest.approx(reference + scale_db, abs=1e-9)
    assert integrated_loudness(bursts * 1e-4, rate) == -math.inf  # the standard calls it silence
    assert measured_loudness(1e-7 * bursts, rate) is None  # below -120 LUFS: silent
    assert measured_loudness(np.zeros(rate), rate) is None
    assert measured_loudness(np.zeros(0), rate) is None


def test_level_scales_in_decibels() -> None:
    rate = 22050
    noise = np.random.default_rng(1).standard_normal(3 * rate) * 0.1
    assert integrated_loudness(0.5 * noise, rate) - integrated_loudness(noise, rate) == pytest.approx(
        20 * math.log10(0.5), abs=1e-9
    )


def limiter_case(rate: int = 44100) -> tuple[np.ndarray, int]:
    """A 0.5-amplitude 440 Hz sine with one 4.0 spike in the middle, at ``rate`` Hz."""
    wave = sine(440.0, 1.0, rate, 0.5)
    wave[rate // 2] = 4.0
    return wave, rate // 2


def test_limiter_never_exceeds_the_limit_or_the_required_gain() -> None:
    rng = np.random.default_rng(2)
    rows = rng.standard_normal((3, 20000)) * np.array([[0.1], [1.0], [5.0]])
    gain = limiter_gain(rows, 16000, 0.999)
    assert gain.shape == rows.shape
    assert np.all(np.abs(rows * gain) <= 0.999 * (1 + 1e-15))  # float64 rounding of limit / |x| * |x|
    assert np.all(gain <= np.minimum(1.0, 0.999 / np.abs(rows)))
    assert np.all(gain > 0.0)


def test_limiter_keeps_the_level_away_from_a_spike() -> None:
    wave, spike = limiter_case()
    gain = limiter_gain(wave, 44100, 0.999)
    window = 2 * round(0.005 * 44100 / 2) + 1
    away = np.abs(np.arange(len(wave)) - spike) >= window
    assert 20 * np.log10(gain[away]).min() > -0.1
    assert abs(wave[spike] * gain[spike]) == pytest.approx(0.999)
    # no clicks: the gain moves by at most 1 / window per sample, so the output never jumps
    assert np.abs(np.diff(gain)).max() <= 1.0 / window + 1e-12
    out = wave * gain
    ordinary = np.abs(np.diff(np.delete(out, [spike]))).max()
    assert ordinary <= 1.01 * np.abs(np.diff(np.delete(wave, [spike]))).max()


def test_limiter_leaves_quiet_audio_alone() -> None:
    wave = sine(440.0, 0.5, 16000, 0.9)
    np.testing.assert_array_equal(limiter_gain(wave, 16000, 0.999), 1.0)
