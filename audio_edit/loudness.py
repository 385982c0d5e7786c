"""Gated loudness (ITU-R BS.1770-4) of mono signals, and a look-ahead peak limiter.

Loudness: the signal is K-weighted (a +4 dB high shelf above about 1.7 kHz, then a 38 Hz high-pass), cut
into 400 ms blocks every 100 ms, and the mean square of the blocks above an absolute gate (-70 LUFS) and
a relative gate (10 LU below their own loudness) gives ``-0.691 + 10 log10(mean square)`` LUFS. The two
filters are designed from their analogue prototypes for any sample rate (bilinear transform with the
corner frequency pre-warped); at 48 kHz they give the standard's coefficients.

:func:`integrated_loudness` is the standard's measure; :func:`measured_loudness`, used to match levels, is
the same with the absolute gate applied at a fixed level relative to the signal, so that it is exactly
proportional to the signal's level. :func:`limiter_gain` keeps peaks under a limit with a smooth gain.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import ndimage, signal

LOUDNESS_OFFSET = -0.691
"""dB added to ``10 log10(mean square)`` so that a full-scale 997 Hz sine reads -3.01 LUFS (BS.1770-4)."""

ABSOLUTE_GATE = -70.0
"""LUFS; blocks at or below this are ignored (BS.1770-4)."""

RELATIVE_GATE = -10.0
"""LU relative to the loudness of the blocks above the absolute gate; blocks at or below are ignored."""

BLOCK_SECONDS = 0.4
"""Gating block length in seconds (BS.1770-4)."""

BLOCK_STEPS = 4
"""Blocks start every ``BLOCK_SECONDS / BLOCK_STEPS`` seconds (75 % overlap, BS.1770-4)."""

REFERENCE_LUFS = -23.0
"""Level (LUFS) :func:`measured_loudness` brings a signal to before gating (EBU R 128's programme level)."""

SILENCE_LUFS = -120.0
"""Below this ungated level :func:`measured_loudness` calls a signal silent (about an RMS of 1e-6 at 1 kHz,
far below any recording's noise floor)."""

LIMITER_SECONDS = 0.005
"""Length of the limiter's gain windows in seconds: the gain starts falling at most this long before a
peak (look-ahead attack) and is back this long after it (release), changing by at most 1/W per sample
(W = the window in samples), so it never clicks."""

# K-weighting stage 1, a high shelf: centre frequency (Hz), gain at high frequencies (dB), Q, and the
# exponent giving the numerator's middle term (the shelf's mid gain Vh ** exponent). Stage 2, a high-pass:
# corner frequency (Hz) and Q. These analogue parameters reproduce the coefficients BS.1770-4 tabulates
# for 48 kHz (B. De Man's fit of the published filters).
_SHELF_HZ = 1681.974450955533
_SHELF_DB = 3.999843853973347
_SHELF_Q = 0.7071752369554196
_SHELF_MID_EXPONENT = 0.4996667741545416
_HIGHPASS_HZ = 38.13547087602444
_HIGHPASS_Q = 0.5003270373238773
# The standard's 48 kHz high-pass numerator is (1, -2, 1), not normalised: its passband gain is the
# denominator's leading coefficient at 48 kHz. That gain is kept at every rate.
_REFERENCE_RATE = 48000


def k_weighting(sample_rate: int) -> np.ndarray:
    """K-weighting filter for ``sample_rate`` Hz as second-order sections.

    Returns:
        float64 array shaped ``(2, 6)`` (shelf, then high-pass), rows ``(b0, b1, b2, 1, a1, a2)`` for
        :func:`scipy.signal.sosfilt`.
    """
    return np.stack([_shelf(sample_rate), _highpass(sample_rate)])


def _shelf(sample_rate: int) -> np.ndarray:
    """High shelf ``H(s) = (Vh s^2 + Vb s / Q + 1) / (s^2 + s / Q + 1)`` (``s`` in units of the centre
    frequency) through the bilinear transform, as one normalised second-order section."""
    k = math.tan(math.pi * _SHELF_HZ / sample_rate)
    high = 10.0 ** (_SHELF_DB / 20.0)
    mid = high**_SHELF_MID_EXPONENT
    numerator = [high + mid * k / _SHELF_Q + k * k, 2.0 * (k * k - high), high - mid * k / _SHELF_Q + k * k]
    return _section(numerator, _denominator(k, _SHELF_Q))


def _highpass(sample_rate: int) -> np.ndarray:
    """High-pass ``H(s) = g s^2 / (s^2 + s / Q + 1)`` through the bilinear transform, with the passband gain
    ``g`` the standard's 48 kHz section has, as one normalised second-order section."""
    k = math.tan(math.pi * _HIGHPASS_HZ / sample_rate)
    gain = _denominator(math.tan(math.pi * _HIGHPASS_HZ / _REFERENCE_RATE), _HIGHPASS_Q)[0]
    return _section([gain, -2.0 * gain, gain], _denominator(k, _HIGHPASS_Q))


def _denominator(k: float, q: float) -> list[float]:
    """Bilinear-transformed ``s^2 + s / q + 1`` with pre-warped ``k = tan(pi f0 / fs)``, unnormalised."""
    return [1.0 + k / q + k * k, 2.0 * (k * k - 1.0), 1.0 - k / q + k * k]


def _section(numerator: list[float], denominator: list[float]) -> np.ndarray:
    """One second-order section ``(b0, b1, b2, 1, a1, a2)``, normalised by ``denominator[0]``."""
    return np.array(numerator + denominator) / denominator[0]


def block_powers(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """Mean squares of the K-weighted ``wave`` in gating blocks.

    Blocks are ``BLOCK_STEPS * step`` samples long and start every ``step = round(sample_rate *
    BLOCK_SECONDS / BLOCK_STEPS)`` samples; only whole blocks count. A ``wave`` shorter than one block is
    measured as one block of its own length.

    Args:
        wave: mono float samples shaped ``(n,)`` with ``n >= 1``, full scale = 1.

    Returns:
        float64 array shaped ``(max(1, (n - block) // step + 1),)``.
    """
    weighted = signal.sosfilt(k_weighting(sample_rate), np.asarray(wave, dtype=np.float64))
    step = max(1, round(sample_rate * BLOCK_SECONDS / BLOCK_STEPS))
    block = BLOCK_STEPS * step
    if len(weighted) < block:
        return np.array([np.mean(np.square(weighted))])
    energy = np.concatenate([[0.0], np.cumsum(np.square(weighted))])
    starts = np.arange(0, len(weighted) - block + 1, step)
    return np.maximum(energy[starts + block] - energy[starts], 0.0) / block


def integrated_loudness(wave: np.ndarray, sample_rate: int) -> float:
    """Gated loudness of a mono signal in LUFS (BS.1770-4, one channel of weight 1).

    Clips shorter than one 400 ms block are measured as one block, ungated except for the absolute gate.

    Args:
        wave: mono float samples shaped ``(n,)``, full scale = 1.
        sample_rate: Hz.

    Returns:
        LUFS, or ``-inf`` when no block is above the absolute gate (silence, or an empty ``wave``).
    """
    if np.size(wave) == 0:
        return -math.inf
    powers = block_powers(wave, sample_rate)
    powers = powers[_lufs(powers) > ABSOLUTE_GATE]
    if powers.size == 0:
        return -math.inf
    relative = _lufs(np.mean(powers)) + RELATIVE_GATE
    return float(_lufs(np.mean(powers[_lufs(powers) > relative])))


def measured_loudness(wave: np.ndarray, sample_rate: int) -> float | None:
    """Loudness of a mono signal in LUFS for level matching: exactly proportional to its level.

    The signal is first scaled to an ungated level of ``REFERENCE_LUFS`` (the K-weighted mean square of the
    whole signal), measured by :func:`integrated_loudness`, and the scaling is taken off again. Scaling the
    input by ``g`` dB therefore adds exactly ``g`` dB, which a gain computed from it needs; BS.1770-4's
    absolute gate alone depends on the level, and here acts as if the signal were at ``REFERENCE_LUFS``
    (blocks 47 dB below the whole signal's level are dropped), so very quiet signals are measured like loud
    ones. When no block passes (all the signal lies in the last partial block), the ungated level is used.

    Args:
        wave: mono float samples shaped ``(n,)``, full scale = 1.
        sample_rate: Hz.

    Returns:
        LUFS, or ``None`` for silence: an empty ``wave`` or an ungated level below ``SILENCE_LUFS``.
    """
    wave = np.asarray(wave, dtype=np.float64)
    if wave.size == 0:
        return None
    weighted = signal.sosfilt(k_weighting(sample_rate), wave)
    ungated = float(_lufs(np.mean(np.square(weighted))))
    if ungated < SILENCE_LUFS:
        return None
    shift = REFERENCE_LUFS - ungated
    gated = integrated_loudness(wave * 10.0 ** (shift / 20.0), sample_rate)
    return gated - shift if gated > -math.inf else ungated


def _lufs(power: np.ndarray | float) -> np.ndarray:
    """``-0.691 + 10 log10(power)`` (``-inf`` for zero power)."""
    with np.errstate(divide="ignore"):
        return LOUDNESS_OFFSET + 10.0 * np.log10(power)


def limiter_gain(rows: np.ndarray, sample_rate: int, limit: float, seconds: float = LIMITER_SECONDS) -> np.ndarray:
    """Smooth per-sample gain that keeps ``|rows * gain| <= limit``.

    The required gain ``min(1, limit / |x|)`` goes through a sliding minimum and then a moving average over
    the same centred window of ``W = 2 * round(seconds * sample_rate / 2) + 1`` samples. Each average covers
    only minima whose windows contain the sample itself, so the gain never exceeds the required gain, and it
    is 1 wherever no sample within ``W`` needs less. The final ``minimum`` with the required gain only
    removes float rounding of the moving average.

    Args:
        rows: float array shaped ``(..., n)``, limited along the last axis.
        sample_rate: Hz.
        limit: largest allowed absolute value (> 0).
        seconds: window length in seconds.

    Returns:
        float64 gains in (0, 1], shaped like ``rows``.
    """
    magnitude = np.abs(np.asarray(rows, dtype=np.float64))
    if magnitude.size == 0 or magnitude.max() <= limit:
        return np.ones_like(magnitude)
    required = limit / np.maximum(magnitude, limit)
    size = 2 * round(seconds * sample_rate / 2) + 1
    floor = ndimage.minimum_filter1d(required, size, axis=-1, mode="nearest")
    smooth = ndimage.uniform_filter1d(floor, size, axis=-1, mode="nearest")
    return np.minimum(smooth, required)


SILENCE_PEAK = 1e-4  # -80 dBFS: below the quietest recorded sound, above rounding
SILENT = "the input is silent: there is nothing to edit (the output is silent too)"


class SilentInputWarning(UserWarning):
    """An input with no sound: an edit has nothing to change."""


def warn_if_silent(samples: np.ndarray) -> bool:
    """Warn (``SilentInputWarning``) and return True when every sample's magnitude is below
    ``SILENCE_PEAK``."""
    silent = bool(np.abs(samples).max(initial=0.0) < SILENCE_PEAK)
    if silent:
        warnings.warn(SILENT, SilentInputWarning, stacklevel=2)
    return silent
