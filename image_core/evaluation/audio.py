"""Reading recordings for the audio metrics: mono float32 at a chosen rate, and fixed-length windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InputError

WINDOW_OVERLAP = 0.1
"""Fraction by which consecutive metric windows overlap (the audio paper's evaluation: 10 s windows
every 9 s)."""


def check_audio(path: str | Path) -> None:
    """InputError (one line) unless ``path`` is an audio file libsndfile can open (reads its header only)."""
    import soundfile as sf

    file = Path(path)
    try:
        info = sf.info(file)
    except Exception as error:
        raise InputError(f"cannot read audio file {file}: {_reason(error)}") from None
    if info.frames == 0:
        raise InputError(f"audio file {file} has no samples")


def read_mono(path: str | Path, *rates: int) -> list[np.ndarray]:
    """The recording at ``path`` as float32 mono (mean of the channels) at each of ``rates`` Hz, each
    shaped ``(n_rate,)`` (the file is decoded once).

    Resampling is librosa's soxr "hq" filter. InputError (one line) for a missing, unreadable or empty
    file, or one holding NaN or infinite samples.
    """
    import librosa
    import soundfile as sf

    file = Path(path)
    if not file.is_file():
        raise InputError(f"audio file not found: {file}")
    try:
        samples, sample_rate = sf.read(file, dtype="float32", always_2d=True)
    except Exception as error:  # libsndfile's own message says what is wrong
        raise InputError(f"cannot read audio file {file}: {_reason(error)}") from None
    if samples.shape[0] == 0:
        raise InputError(f"audio file {file} has no samples")
    mono = samples.mean(axis=1)
    if not np.all(np.isfinite(mono)):
        raise InputError(f"audio file {file} holds NaN or infinite samples")
    return [
        np.ascontiguousarray(
            mono if rate == sample_rate else librosa.resample(mono, orig_sr=sample_rate, target_sr=rate, res_type="soxr_hq"),
            dtype=np.float32,
        )
        for rate in rates
    ]


def windows(wave: np.ndarray, length: int, overlap: float = WINDOW_OVERLAP) -> list[np.ndarray]:
    """Windows of ``length`` samples of ``wave`` shaped ``(n,)``, starting every ``length * (1 - overlap)``
    samples from 0 while a start is inside the wave; the last may be shorter (never empty)."""
    hop = max(1, int(length * (1.0 - overlap)))
    return [wave[start : start + length] for start in range(0, max(len(wave), 1), hop)]


def _reason(error: BaseException) -> str:
    """libsndfile's reason, without its "Error opening '<path>': " prefix."""
    text = str(error).splitlines()[0] if str(error) else type(error).__name__
    return text.split("': ", 1)[1] if text.startswith("Error opening '") and "': " in text else text
