"""CQT-1 PCC: how well an edit keeps the input's melody line.

The measure of MusicMagus (Zhang et al., IJCAI 2024) that SteerMusic (Niu et al., 2025) also reports:
the Pearson correlation coefficient between the "top-1 CQT" curves of input and output, where a
recording's top-1 curve is, frame by frame, the index of the constant-Q bin of largest magnitude (the
dominant pitch). Parameters as in SteerMusic's evaluation: mono at 16 kHz, 128 bins of a quarter tone
(24 per octave) from 65 Hz (C2, up to about 2.5 kHz), Hann windows, hop 512 samples (32 ms). The curves
are cut to the shorter of the two.

The correlation is 1 when the melody contour is kept (any gain change or added quiet material that does
not take over the loudest bin), about 0 for an unrelated melody, and undefined (NaN) when either curve is
constant, such as a single held note or silence.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

CQT_RATE = 16000
CQT_HOP = 512
CQT_FMIN = 65.0
CQT_BINS = 128
CQT_BINS_PER_OCTAVE = 24


def top1_cqt(wave: np.ndarray) -> np.ndarray:
    """The dominant CQT bin per frame of ``wave`` (mono at :data:`CQT_RATE`, shaped ``(n,)``): int array
    shaped ``(frames,)``, frames = ``1 + n // CQT_HOP``."""
    import librosa

    with warnings.catch_warnings():
        # the low octaves' filters outgrow clips of a few seconds; librosa pads them, and says so
        warnings.filterwarnings("ignore", message="n_fft=.* is too large for input signal", category=UserWarning)
        spectrum = np.abs(
            librosa.cqt(
                np.asarray(wave, dtype=np.float32), sr=CQT_RATE, hop_length=CQT_HOP, fmin=CQT_FMIN, n_bins=CQT_BINS,
                bins_per_octave=CQT_BINS_PER_OCTAVE, window="hann",
            )
        )  # fmt: skip
    return spectrum.argmax(axis=0)


def curve_pcc(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two curves shaped ``(n_a,)`` and ``(n_b,)`` over their first ``min(n_a, n_b)``
    values; NaN when either part is constant (or has fewer than 2 values)."""
    n = min(len(a), len(b))
    x, y = np.asarray(a[:n], np.float64), np.asarray(b[:n], np.float64)
    if n < 2:
        return math.nan
    x, y = x - x.mean(), y - y.mean()
    norm = math.sqrt(float(x @ x) * float(y @ y))
    return float(x @ y) / norm if norm > 0 else math.nan


def cqt_pcc(reference: np.ndarray, edited: np.ndarray) -> float:
    """CQT-1 PCC of two recordings, both mono at :data:`CQT_RATE` shaped ``(n,)``."""
    return curve_pcc(top1_cqt(reference), top1_cqt(edited))
