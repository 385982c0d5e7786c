"""The band-limited resampler the AudioLDM checkpoints' training audio went through.

The checkpoints were trained on audio brought to 16 kHz by a polyphase windowed-sinc filter (Hann window,
6 zero crossings, cutoff at 0.99 of the lower Nyquist frequency): torchaudio's default ``resample``. Feeding
the models audio resampled by another filter changes the log-mel near 8 kHz, so :func:`resample_sinc`
reproduces that filter to float rounding.

Definition. With the two rates reduced by their greatest common divisor to ``orig`` and ``new``, the
cutoff ``base = min(orig, new) * rolloff`` (in the reduced units) and ``L`` = ``lowpass_filter_width``, output
sample ``n`` is

    y[n] = sum_m x[m] * (base / orig) * sinc(t) * cos(pi * t / (2 L)) ** 2,   t = base * (m / orig - n / new),

over the input samples ``m`` with ``|t| < L`` (``sinc(t) = sin(pi t) / (pi t)``); samples outside the input
count as zeros, and the output has ``ceil(len(x) * new / orig)`` samples. Output ``n = i * new + j`` needs
``2 * width + 1`` consecutive inputs starting at ``floor(n * orig / new) - width``
(``width = ceil(L * orig / base)``) with weights that depend on the phase ``j`` only; the filter is applied
phase by phase as strided dot products, in float32 (like torchaudio for float32 audio).
"""

from __future__ import annotations

import math

import numpy as np

LOWPASS_FILTER_WIDTH = 6
"""Zero crossings of the sinc on each side of its centre (torchaudio's default)."""

ROLLOFF = 0.99
"""Cutoff as a fraction of the lower of the two Nyquist frequencies (torchaudio's default)."""

# The input is filtered in segments of about this many samples (256 KiB of float32, so that the passes of
# all phases over one segment stay in the CPU cache; 0.7 s -> 0.2 s for 3 minutes at 44.1 kHz) ...
_SEGMENT_SAMPLES = 1 << 16
# ... but at least this many blocks of ``orig`` inputs, so that rates with a large reduced ``orig`` (44101 Hz
# -> 16 kHz: 16000 phases per block) do not make one tiny product per phase and block.
_MIN_BLOCKS_PER_CALL = 256


def resample_sinc(
    wave: np.ndarray,
    orig_rate: int,
    new_rate: int,
    lowpass_filter_width: int = LOWPASS_FILTER_WIDTH,
    rolloff: float = ROLLOFF,
) -> np.ndarray:
    """Resample ``wave`` along its last axis with the Hann-windowed sinc filter defined in the module doc.

    Args:
        wave: float array shaped ``(..., n)`` at ``orig_rate`` Hz.
        orig_rate: input sample rate in Hz (a positive integer).
        new_rate: output sample rate in Hz (a positive integer).
        lowpass_filter_width: zero crossings of the sinc on each side.
        rolloff: cutoff as a fraction of the lower Nyquist frequency.

    Returns:
        float32 array shaped ``(..., ceil(n * new_rate / orig_rate))``; a float32 copy of ``wave`` when the
        rates are equal.
    """
    wave = np.asarray(wave)
    if orig_rate == new_rate:
        return wave.astype(np.float32, copy=True)
    orig, new = _reduced(orig_rate, new_rate)
    kernels, width = sinc_kernels(orig, new, lowpass_filter_width, rolloff)
    count = -(-wave.shape[-1] * new // orig)
    padded = _pad(wave.astype(np.float32), width, width + 1)
    windows = np.lib.stride_tricks.sliding_window_view(padded, kernels.shape[1], axis=-1)
    out = np.empty(wave.shape[:-1] + (count,), dtype=np.float32)
    blocks = -(-count // new)
    step = max(_SEGMENT_SAMPLES // orig, _MIN_BLOCKS_PER_CALL)
    for start in range(0, blocks, step):
        _filter_blocks(windows, kernels.astype(np.float32), out, orig, new, start, min(start + step, blocks))
    return out


def _filter_blocks(
    windows: np.ndarray, kernels: np.ndarray, out: np.ndarray, orig: int, new: int, start: int, stop: int
) -> None:
    """Write outputs ``start * new .. stop * new - 1`` (blocks of ``new`` phases) of ``out`` (..., count).

    Args:
        windows: sliding windows of the padded input, shaped ``(..., frames, taps)``.
        kernels: ``(new, taps)`` weights per phase.
    """
    count = out.shape[-1]
    end = min(stop * new, count)
    for phase in range(new):
        first = start * new + phase
        if first >= end:
            break
        outputs = -(-(end - first) // new)
        offset = start * orig + phase * orig // new
        out[..., first:end:new] = windows[..., offset : offset + outputs * orig : orig, :] @ kernels[phase]


def sinc_kernels(orig: int, new: int, lowpass_filter_width: int, rolloff: float) -> tuple[np.ndarray, int]:
    """Per-phase filter weights for the reduced rates ``orig`` -> ``new``.

    Returns:
        ``(kernels, width)``: float64 ``kernels`` shaped ``(new, 2 * width + 1)``, row ``j`` holding the
        weights of inputs ``floor(n * orig / new) - width + r`` (``r`` = column) for an output ``n`` of
        phase ``j = n mod new``; ``width = ceil(lowpass_filter_width * orig / base)`` input samples.
    """
    base = min(orig, new) * rolloff
    width = math.ceil(lowpass_filter_width * orig / base)
    phase = np.arange(new)[:, None]
    offset = (phase * orig // new) - width + np.arange(2 * width + 1)[None, :]  # input index minus i * orig
    t = base * (offset / orig - phase / new)
    t = np.clip(t, -lowpass_filter_width, lowpass_filter_width)
    window = np.cos(np.pi * t / (2 * lowpass_filter_width)) ** 2
    return np.sinc(t) * window * (base / orig), width


def _reduced(orig_rate: int, new_rate: int) -> tuple[int, int]:
    """The two rates divided by their greatest common divisor."""
    if orig_rate <= 0 or new_rate <= 0 or int(orig_rate) != orig_rate or int(new_rate) != new_rate:
        raise ValueError(f"sample rates must be positive integers, got {orig_rate} and {new_rate}")
    divisor = math.gcd(int(orig_rate), int(new_rate))
    return int(orig_rate) // divisor, int(new_rate) // divisor


def _pad(wave: np.ndarray, before: int, after: int) -> np.ndarray:
    """``wave`` with ``before`` zeros in front of and ``after`` zeros behind its last axis."""
    widths = [(0, 0)] * (wave.ndim - 1) + [(before, after)]
    return np.pad(wave, widths)
