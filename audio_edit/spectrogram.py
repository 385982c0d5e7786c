"""Log-magnitude spectrograms of mono clips, as PNG files or RGB arrays.

Drawn with matplotlib's object-oriented API on the Agg canvas (no pyplot, no global backend), so it is
safe to call from several threads, as the demo's server does.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import librosa
import numpy as np

from image_core.errors import InputError
from image_core.files import final_path, replacing

from .audio_io import check_writable

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DYNAMIC_RANGE_DB = 80.0
"""Colour range of the plots: the loudest bin of all panels is 0 dB, this far below it is the floor."""

WINDOW_SECONDS = 0.046
"""Approximate STFT window length; the FFT size is the power of two nearest to it."""

_PANEL_INCHES = (4.2, 3.0)
_DPI = 100
_CMAP = "magma"
_DEFAULT_COLUMNS = 4


def save_spectrograms(
    path: str | os.PathLike[str],
    clips: Sequence[tuple[str, np.ndarray]],
    sample_rate: int,
    *,
    columns: int | None = None,
) -> None:
    """Write a PNG with the spectrograms of labelled mono clips, one panel each, atomically.

    All panels share one colour scale (dB relative to the loudest bin of all clips, 80 dB range), with
    time in seconds and frequency in Hz. The image goes to a temporary file in the same folder which then
    replaces ``path``, so no partial file is ever left (see :func:`write_spectrograms` for callers that
    already write to a temporary file).

    Args:
        path: output file (PNG whatever its extension).
        clips: (label, samples) pairs; samples shaped ``(n,)`` (``(channels, n)`` is averaged to mono).
        sample_rate: Hz, the same for all clips.
        columns: panels per row; by default all in one row up to four, then rows of four.

    Raises:
        InputError: no clips, an empty or non-finite clip, a bad sample rate, or an unwritable path.
    """
    file = Path(path)
    check_writable(file)
    figure = _figure(clips, sample_rate, columns)
    try:
        with replacing(file) as (temporary,):
            _save_figure(figure, temporary)
    except OSError as error:  # moving it into place
        raise InputError(f"Cannot write the spectrogram {file}: {error.strerror or error}.") from error


def write_spectrograms(
    path: str | os.PathLike[str],
    clips: Sequence[tuple[str, np.ndarray]],
    sample_rate: int,
    *,
    columns: int | None = None,
) -> None:
    """Write the PNG of :func:`save_spectrograms` straight to ``path``, with no temporary file of its own:
    for callers already writing to a temporary of ``image_core.files.replacing``.

    Raises:
        InputError: as :func:`save_spectrograms`; a failed write names the file the temporary stands for.
    """
    file = Path(path)
    check_writable(file)
    _save_figure(_figure(clips, sample_rate, columns), file)


def _save_figure(figure: Figure, file: Path) -> None:
    """Write ``figure`` to ``file`` as PNG; an OSError becomes one InputError naming the requested file."""
    try:
        figure.savefig(file, format="png", dpi=_DPI)
    except OSError as error:
        raise InputError(f"Cannot write the spectrogram {final_path(file)}: {error.strerror or error}.") from error


def spectrogram_image(clip: np.ndarray, sample_rate: int, label: str = "") -> np.ndarray:
    """The spectrogram of one clip (titled ``label``) rendered as an RGB image.

    Returns:
        uint8 array shaped ``(height, width, 3)``.
    """
    figure = _figure([(label, clip)], sample_rate, None)
    canvas = figure.canvas
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def log_magnitude(clips: Sequence[np.ndarray], sample_rate: int) -> tuple[list[np.ndarray], int, int]:
    """dB spectrograms of clips on a shared reference (the loudest bin of all is 0 dB).

    Returns:
        (one (n_fft // 2 + 1, frames) float32 array per clip, floored at -80 dB; n_fft; hop length).
    """
    n_fft = 2 ** max(8, round(math.log2(sample_rate * WINDOW_SECONDS)))
    hop = n_fft // 4
    magnitudes = []
    for clip in clips:
        if clip.size < n_fft:
            clip = np.pad(clip, (0, n_fft - clip.size))
        magnitudes.append(np.abs(librosa.stft(clip, n_fft=n_fft, hop_length=hop)))
    reference = max(float(m.max()) for m in magnitudes)
    floor = max(reference, 1e-10) * 10 ** (-DYNAMIC_RANGE_DB / 20)
    spectra = [(20 * np.log10(np.maximum(m, floor) / max(reference, 1e-10))).astype(np.float32) for m in magnitudes]
    return spectra, n_fft, hop


def _mono(label: str, samples: np.ndarray) -> np.ndarray:
    """``samples`` as a finite, non-empty float32 vector; a (channels, n) array is averaged."""
    clip = np.asarray(samples, dtype=np.float32)
    if clip.ndim == 2:
        clip = clip.mean(axis=0)
    if clip.ndim != 1:
        raise InputError(f"the clip {label!r} must be shaped (n,) or (channels, n), got shape {clip.shape}")
    if clip.size == 0:
        raise InputError(f"the clip {label!r} is empty: nothing to draw")
    if not np.isfinite(clip).all():
        raise InputError(f"the clip {label!r} contains NaN or infinite values")
    return clip


def _figure(clips: Sequence[tuple[str, np.ndarray]], sample_rate: int, columns: int | None) -> Figure:
    """A matplotlib Figure (Agg canvas) with one spectrogram panel per clip and a shared colour bar."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not clips:
        raise InputError("give at least one clip to draw")
    if not (isinstance(sample_rate, (int, np.integer)) and sample_rate > 0):
        raise InputError(f"sample_rate must be a positive integer in Hz, got {sample_rate!r}")
    labels = [str(label) for label, _ in clips]
    waves = [_mono(label, samples) for label, samples in clips]
    spectra, _, hop = log_magnitude(waves, int(sample_rate))

    count = len(waves)
    columns = min(count, _DEFAULT_COLUMNS) if columns is None else max(1, min(int(columns), count))
    rows = math.ceil(count / columns)
    width, height = _PANEL_INCHES
    figure = Figure(figsize=(width * columns + 0.9, height * rows), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False, sharey=True)
    nyquist = sample_rate / 2
    image = None
    for index, ax in enumerate(axes.flat):
        if index >= count:
            ax.set_axis_off()
            continue
        duration = waves[index].size / sample_rate
        frames = spectra[index].shape[1]
        end = (frames - 0.5) * hop / sample_rate
        image = ax.imshow(
            spectra[index],
            origin="lower",
            aspect="auto",
            interpolation="nearest",
            cmap=_CMAP,
            vmin=-DYNAMIC_RANGE_DB,
            vmax=0.0,
            # Frame f is centred on sample f * hop.
            extent=(-hop / 2 / sample_rate, end, 0.0, nyquist),
        )
        ax.set_xlim(0.0, min(duration, end))
        ax.set_title(labels[index], fontsize=10)
        ax.set_xlabel("Time (s)")
        if index % columns == 0:
            ax.set_ylabel("Frequency (Hz)")
    colorbar = figure.colorbar(image, ax=axes, shrink=0.9, pad=0.01)
    colorbar.set_label("dB (0 = loudest bin)")
    return figure
