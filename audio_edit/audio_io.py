"""Reading, resampling, level matching and writing of recordings.

Recordings are held as :class:`Audio`: float32 samples shaped ``(channels, frames)`` plus the sample rate in
Hz. The models work on 16 kHz mono; :func:`to_model_rate` makes that from a recording (downmix = mean of the
channels, resampled by the filter of the models' training data) and :func:`restore` takes a model output
back to the recording's rate and exact length, at the gated loudness (ITU-R BS.1770-4) of what the model
heard, with a peak limiter.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf

from image_core.adapters import check_memory
from image_core.errors import InputError
from image_core.files import final_path, replacing

from .loudness import limiter_gain, measured_loudness
from .resample import resample_sinc

MODEL_SAMPLE_RATE = 16000
"""Sample rate (Hz) of the waveforms the AudioLDM models read and write."""

MIN_SAMPLE_RATE = 8000
"""Lowest accepted input sample rate (Hz)."""

MAX_SAMPLE_RATE = 192000
"""Highest accepted input sample rate (Hz)."""

SILENCE_RMS = 1e-6
"""Below this RMS a signal counts as silent and is never rescaled (level summaries of old inversion files)."""

PEAK_LIMIT = 0.999
"""Largest absolute sample value :func:`restore` returns."""

_PEAK_LIMIT_F32 = np.float32(np.nextafter(np.float32(PEAK_LIMIT), np.float32(0)))
"""The largest float32 below ``PEAK_LIMIT`` (float32(0.999) itself is a little above 0.999)."""

_OUTPUT_RESAMPLER = "soxr_hq"
"""librosa resampler for the outputs the user hears (the model input uses :func:`resample_sinc`)."""

# extension -> (libsndfile format, subtype)
_OUTPUT_FORMATS: dict[str, tuple[str, str]] = {
    ".wav": ("WAV", "PCM_24"),
    ".flac": ("FLAC", "PCM_24"),
    ".aiff": ("AIFF", "PCM_24"),
    ".aif": ("AIFF", "PCM_24"),
    ".ogg": ("OGG", "VORBIS"),
}
if "MP3" in sf.available_formats():
    _OUTPUT_FORMATS[".mp3"] = ("MP3", "MPEG_LAYER_III")

SUPPORTED_EXTENSIONS: tuple[str, ...] = tuple(_OUTPUT_FORMATS)
"""Output file extensions :func:`save_audio` can write (lower case, with the dot)."""

_MP3_SAMPLE_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
_MP3_MAX_CHANNELS = 2


@dataclass(frozen=True)
class Audio:
    """A decoded recording.

    Attributes:
        samples: float32 array shaped ``(channels, frames)``, values as decoded (nominally in [-1, 1]).
        sample_rate: samples per second per channel, in Hz.
    """

    samples: np.ndarray
    sample_rate: int

    def __post_init__(self) -> None:
        if self.samples.ndim != 2:
            raise InputError(
                f"Audio samples must be shaped (channels, frames), got shape {self.samples.shape}; "
                "add a channel axis for mono audio."
            )

    @property
    def channels(self) -> int:
        """Number of channels."""
        return int(self.samples.shape[0])

    @property
    def num_frames(self) -> int:
        """Number of samples per channel."""
        return int(self.samples.shape[1])

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.num_frames / self.sample_rate

    @property
    def rms(self) -> float:
        """RMS level of the mono downmix (linear, full scale = 1), DC included."""
        return rms_level(self.samples.mean(axis=0, dtype=np.float64))


@dataclass(frozen=True)
class Original:
    """What ``restore`` needs to know of a recording, without its samples.

    Attributes:
        sample_rate: Hz.
        num_frames: samples per channel.
        loudness: LUFS of what the model hears (:func:`model_loudness`); ``None`` for silence (never
            rescaled to) and for summaries read from old inversion files.
        rms: only in summaries of old inversion files: the RMS of the mono downmix at ``sample_rate``, DC
            included, which ``restore`` then matches as before (plain RMS of the output).
    """

    sample_rate: int
    num_frames: int
    loudness: float | None
    rms: float | None = None

    @classmethod
    def of(cls, audio: Audio) -> Original:
        """Summary of ``audio``; its level is :func:`model_loudness` of the recording."""
        return cls(audio.sample_rate, audio.num_frames, model_loudness(audio))

    @classmethod
    def from_meta(cls, meta: dict) -> Original:
        """The summary kept in an inversion's ``meta`` (written there as ``vars(Original.of(audio))``).

        Files written before the gated loudness hold ``rms`` instead of ``loudness``; they keep their old
        meaning.
        """
        if "loudness" in meta:
            return cls(meta["sample_rate"], meta["num_frames"], meta["loudness"])
        return cls(meta["sample_rate"], meta["num_frames"], None, meta["rms"])


def load_audio(path: str | os.PathLike[str]) -> Audio:
    """Decode an audio file (WAV, FLAC, OGG/Vorbis, MP3, AIFF, ...) without modifying it.

    Uses libsndfile through soundfile and falls back to librosa for files it cannot read.

    Returns:
        :class:`Audio` with float32 samples shaped ``(channels, frames)`` at the file's own sample rate.

    Raises:
        InputError: the path is missing, a folder or empty; the file is not decodable audio; it has no
            frames; it holds NaN or Inf; or its sample rate is outside 8000..192000 Hz.
    """
    file = Path(path)
    if not file.exists():
        raise InputError(f"Input audio file not found: {file}; check the path.")
    if file.is_dir():
        raise InputError(f"Input audio path is a folder, not a file: {file}; give the path of an audio file.")
    if file.stat().st_size == 0:
        raise InputError(f"Input audio file is empty (0 bytes): {file}; give a recording with sound in it.")
    if not os.access(file, os.R_OK):
        raise InputError(f"Input audio file is not readable: {file}; check its permissions.")
    samples, sample_rate = _decode(file)
    audio = Audio(samples=samples, sample_rate=sample_rate)
    check_audio(audio, str(file))
    return audio


def _decode(file: Path) -> tuple[np.ndarray, int]:
    """Decode ``file`` to float32 ``(channels, frames)`` samples and the sample rate in Hz."""
    try:
        info = sf.info(file)
        check_memory(
            4 * info.frames * info.channels, "cpu", f"the decoded samples of {file}",
            "cut the recording into shorter pieces first (for example with sox)",
        )
        data, sample_rate = sf.read(file, always_2d=True, dtype="float32")
        return np.ascontiguousarray(data.T), int(sample_rate)
    except sf.SoundFileError:
        pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            data, sample_rate = librosa.load(file, sr=None, mono=False)
        except Exception:
            # Not chained: freeing the failure here, inside the filter, silences the ResourceWarning of
            # any file handle the failed decoder left open.
            pass
        else:
            return np.atleast_2d(np.asarray(data, dtype=np.float32)), int(sample_rate)
    raise InputError(_undecodable(file))


_SNIFF_BYTES = 4096  # bytes of a file read to tell what it holds when no decoder can read it

# leading bytes -> what a file that starts with them is (audio containers first)
_AUDIO_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"RIFF", "WAV"),
    (b"RF64", "WAV"),
    (b"fLaC", "FLAC"),
    (b"OggS", "OGG"),
    (b"ID3", "MP3"),
    (b"FORM", "AIFF"),
    (b"caff", "CAF"),
)
_OTHER_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG", "a PNG picture"),
    (b"\xff\xd8\xff", "a JPEG picture"),
    (b"GIF8", "a GIF picture"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive"),
)
_READABLE = "give a WAV, FLAC, MP3, OGG or AIFF file (convert others, for example with sox)"


def _undecodable(file: Path) -> str:
    """One line on why no decoder could read ``file``, naming what it holds rather than the decoder's
    exception: text, a picture, an audio file that is damaged or in an encoding this tool lacks, or
    bytes of no known audio format."""
    try:
        with open(file, "rb") as handle:
            head = handle.read(_SNIFF_BYTES)
    except OSError:
        head = b""
    for signature, kind in _AUDIO_SIGNATURES:
        if head.startswith(signature):
            return (
                f"Cannot decode {file} as audio: it starts like a {kind} file but is damaged, cut short or in an "
                f"encoding this tool cannot read; re-export it, or convert it to WAV or FLAC (for example with sox)."
            )
    if head[4:8] == b"ftyp":
        return (
            f"Cannot decode {file} as audio: it is an MP4/M4A file, which this tool cannot read; "
            "convert it to WAV or FLAC (for example with sox or ffmpeg)."
        )
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:  # an MPEG audio frame without ID3 tag
        return (
            f"Cannot decode {file} as audio: it starts like an MP3 file but is damaged or cut short; "
            "re-export it, or convert it to WAV or FLAC (for example with sox)."
        )
    kind = next((kind for signature, kind in _OTHER_SIGNATURES if head.startswith(signature)), None)
    if kind is not None:
        cause = f"it holds {kind}"
    else:
        cause = "it holds text" if _is_text(head) else "its bytes match no audio format"
    return f"Cannot decode {file} as audio: it is not an audio file this tool can read ({cause}); {_READABLE}."


def _is_text(head: bytes) -> bool:
    """Whether ``head`` (a file's first bytes) reads as text: UTF-8 (a character cut at the end
    allowed) without NUL or other control characters than tab, newline, carriage return and form feed."""
    text = head.removeprefix(b"\xef\xbb\xbf").decode("utf-8", errors="ignore")
    if not text or len(text.encode("utf-8")) < len(head) - 6:
        return False
    return all(ch.isprintable() or ch in "\t\n\r\f" for ch in text)


def check_audio(audio: Audio, name: str = "the audio") -> None:
    """Raise InputError unless ``audio`` can be edited: a supported rate, frames, finite samples.

    Args:
        name: how the message calls the recording (its file name, say).
    """
    if not MIN_SAMPLE_RATE <= audio.sample_rate <= MAX_SAMPLE_RATE:
        raise InputError(
            f"{name} has sample rate {audio.sample_rate} Hz, outside the supported "
            f"{MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz; resample it first (for example with sox)."
        )
    if audio.num_frames == 0:
        raise InputError(f"{name} contains no audio frames; give a recording that is not empty.")
    if not np.isfinite(audio.samples).all():
        raise InputError(f"{name} contains NaN or infinite sample values; repair or re-export the recording.")


def to_model_rate(audio: Audio, sample_rate: int = MODEL_SAMPLE_RATE) -> np.ndarray:
    """Mono downmix (mean of the channels) resampled to ``sample_rate`` Hz as the models' training audio was.

    The resampler is :func:`audio_edit.resample.resample_sinc` (Hann-windowed sinc, 6 zero crossings,
    rolloff 0.99), the filter of the AudioLDM training pipeline.

    Returns:
        float32 array shaped ``(ceil(audio.num_frames * sample_rate / audio.sample_rate),)``.
    """
    mono = audio.samples.mean(axis=0, dtype=np.float32)
    return resample_sinc(mono, audio.sample_rate, sample_rate)


def model_loudness(audio: Audio) -> float | None:
    """Loudness of what the model hears of ``audio``, in LUFS.

    That is the 16 kHz mono downmix of :func:`to_model_rate` with its mean removed (as
    :func:`audio_edit.mel.normalize_waveform` does): a DC offset, and content above 8 kHz, do not count.
    It is measured by :func:`audio_edit.loudness.measured_loudness`: gated loudness (ITU-R BS.1770-4; a
    clip shorter than 400 ms is one block) with the absolute gate applied as if at -23 LUFS, so that the
    reading is exactly proportional to the level and very quiet clips are measured like loud ones.

    Returns:
        LUFS, or ``None`` when the recording is silent (below -120 LUFS).
    """
    heard = np.asarray(to_model_rate(audio), dtype=np.float64)
    return measured_loudness(heard - heard.mean(), MODEL_SAMPLE_RATE)


def _resample_output(wave: np.ndarray, orig_rate: int, target_rate: int, length: int) -> np.ndarray:
    """Resample ``wave`` (..., n) along its last axis (soxr, high quality) and trim or zero-pad it to
    ``length`` samples."""
    if orig_rate != target_rate:
        wave = librosa.resample(wave, orig_sr=orig_rate, target_sr=target_rate, res_type=_OUTPUT_RESAMPLER)
    return librosa.util.fix_length(np.asarray(wave, dtype=np.float32), size=length, axis=-1)


def rms_level(samples: np.ndarray) -> float:
    """Root-mean-square level of all values in ``samples`` (linear, full scale = 1)."""
    if samples.size == 0:
        return 0.0
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))


def restore(
    wave: np.ndarray,
    like: Audio | Original,
    model_rate: int = MODEL_SAMPLE_RATE,
    target_loudness: float | None = None,
) -> np.ndarray:
    """Bring a model output back to the rate, length and level of the recording it was made from.

    Each row is resampled (soxr, high quality) and scaled so that its :func:`model_loudness` (the loudness
    of what the model would hear of it) is the recording's, then peak limited (:func:`limit_peaks`). Rows
    are left unscaled when they or the target are silent. Summaries of old inversion files (``rms`` set)
    are matched in plain RMS instead.

    Args:
        wave: mono waveform(s) at ``model_rate`` Hz, shaped ``(n,)`` or ``(batch, n)``.
        like: the original recording, or its ``Original`` summary.
        model_rate: sample rate of ``wave`` in Hz.
        target_loudness: LUFS each output row is scaled to; defaults to ``like``'s loudness.

    Returns:
        float32 array shaped ``(like.num_frames,)`` or ``(batch, like.num_frames)`` at ``like.sample_rate``,
        every ``|sample| <= 0.999``.
    """
    original = like if isinstance(like, Original) else Original.of(like)
    rows = np.atleast_2d(np.asarray(wave, dtype=np.float32))
    out = _resample_output(rows, model_rate, original.sample_rate, original.num_frames)
    if target_loudness is None and original.loudness is None and original.rms is not None:
        gains = _rms_gains(out, original.rms)
    else:
        target = original.loudness if target_loudness is None else target_loudness
        gains = _loudness_gains(out, original.sample_rate, target)
    out = limit_peaks(out * gains, original.sample_rate)
    return out.reshape(np.shape(wave)[:-1] + (original.num_frames,))


def _loudness_gains(rows: np.ndarray, sample_rate: int, target: float | None) -> np.ndarray:
    """Linear gains shaped ``(batch, 1)`` bringing the :func:`model_loudness` of each row of ``rows``
    (batch, n) at ``sample_rate`` Hz to ``target`` LUFS; 1 for silent rows or a silent (``None``) target."""
    gains = np.ones((rows.shape[0], 1))
    if target is None:
        return gains
    for index, row in enumerate(rows):
        lufs = model_loudness(Audio(row[None], sample_rate))
        if lufs is not None:
            gains[index] = 10.0 ** ((target - lufs) / 20.0)
    return gains


def _rms_gains(rows: np.ndarray, target_rms: float) -> np.ndarray:
    """Linear gains shaped ``(batch, 1)`` bringing each row of ``rows`` (batch, n) to the RMS ``target_rms``
    (DC included); 1 where the row or the target is below ``SILENCE_RMS`` (old inversion files)."""
    rms = np.sqrt(np.mean(np.square(rows, dtype=np.float64), axis=-1, keepdims=True))
    audible = (rms >= SILENCE_RMS) & (target_rms >= SILENCE_RMS)
    return np.where(audible, target_rms / np.maximum(rms, SILENCE_RMS), 1.0)


def limit_peaks(rows: np.ndarray, sample_rate: int) -> np.ndarray:
    """``rows`` (..., n) times the smooth gain of :func:`audio_edit.loudness.limiter_gain` (5 ms windows),
    so that no ``|sample|`` exceeds ``PEAK_LIMIT`` while the level away from the peaks is unchanged.

    Returns:
        float32 array shaped like ``rows``.
    """
    rows = np.asarray(rows, dtype=np.float64)
    out = (rows * limiter_gain(rows, sample_rate, PEAK_LIMIT)).astype(np.float32)
    return np.clip(out, -_PEAK_LIMIT_F32, _PEAK_LIMIT_F32)  # float32 rounding only


def check_writable(path: str | os.PathLike[str]) -> None:
    """Raise InputError unless a file can be created at ``path`` (its folder exists and is writable)."""
    file = Path(path)
    folder = file.parent
    if file.is_dir():
        raise InputError(f"Output path is a folder: {file}; give a file name such as {file / 'edited.wav'}.")
    if not folder.is_dir():
        raise InputError(f"Output folder does not exist: {folder}; create it or choose another output path.")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"Output folder is not writable: {folder}; choose another output path.")


def save_audio(path: str | os.PathLike[str], samples: np.ndarray, sample_rate: int) -> None:
    """Write ``samples`` atomically to ``path``; the format follows the extension.

    :func:`write_audio` writes a temporary file in the same folder (``image_core.files.replacing``) which
    then replaces ``path``, so no partial output is ever left.

    Args:
        path: output file.
        samples: float array shaped ``(n,)`` (mono) or ``(channels, n)``.
        sample_rate: Hz.

    Raises:
        InputError: as :func:`write_audio`, or the temporary file cannot replace ``path``.
    """
    file = Path(path)
    try:
        with replacing(file) as (temporary,):
            write_audio(temporary, samples, sample_rate)
    except OSError as error:
        raise _write_error(file, _output_format(file)[0], error) from error


def write_audio(path: str | os.PathLike[str], samples: np.ndarray, sample_rate: int) -> None:
    """Check and write ``samples`` to ``path`` directly (no temporary file: for callers that are already
    inside ``image_core.files.replacing``, which names any temporary in messages by its final path).

    ``.wav``, ``.flac`` and ``.aiff``/``.aif`` are written as 24-bit PCM, ``.ogg`` as Vorbis and ``.mp3``
    (where libsndfile can encode it) as MPEG Layer III. Values outside [-1, 1] are clipped.

    Args:
        path: output file.
        samples: float array shaped ``(n,)`` (mono) or ``(channels, n)``.
        sample_rate: Hz.

    Raises:
        InputError: unknown extension, samples with NaN/Inf, a missing or read-only folder, a rate or
            channel count the format cannot store, or a failed write (which may leave a partial ``path``).
    """
    file = Path(path)
    data = np.atleast_2d(np.asarray(samples, dtype=np.float32))
    audio_format, subtype = check_output(file, data.shape[0], sample_rate)
    if not np.isfinite(data).all():
        raise InputError(f"Cannot save {final_path(file)}: the audio contains NaN or infinite values.")
    try:
        sf.write(file, np.clip(data, -1.0, 1.0).T, sample_rate, format=audio_format, subtype=subtype)
    except (sf.SoundFileError, OSError) as error:
        raise _write_error(file, audio_format, error) from error


def check_output(path: str | os.PathLike[str], channels: int, sample_rate: int) -> tuple[str, str]:
    """Raise InputError unless ``save_audio`` can write such audio to ``path``; used before heavy work.

    Returns:
        (libsndfile format, subtype) for the path's extension.
    """
    file = Path(path)
    audio_format, subtype = _output_format(file)
    check_writable(file)
    if audio_format == "MP3":
        _check_mp3(final_path(file), channels, sample_rate)
    return audio_format, subtype


def _output_format(file: Path) -> tuple[str, str]:
    """(libsndfile format, subtype) for the extension of ``file``."""
    extension = file.suffix.lower()
    if extension not in _OUTPUT_FORMATS:
        raise InputError(
            f"Unsupported output extension {extension or '(none)'!r} for {final_path(file)}; "
            f"use one of {', '.join(SUPPORTED_EXTENSIONS)}."
        )
    return _OUTPUT_FORMATS[extension]


def _check_mp3(file: Path, channels: int, sample_rate: int) -> None:
    """Raise InputError for channel counts or sample rates MP3 cannot store."""
    if channels > _MP3_MAX_CHANNELS:
        raise InputError(f"Cannot save {file}: MP3 stores 1 or 2 channels, got {channels}; use .wav or .flac.")
    if sample_rate not in _MP3_SAMPLE_RATES:
        raise InputError(
            f"Cannot save {file}: MP3 does not support {sample_rate} Hz "
            f"(only {', '.join(map(str, _MP3_SAMPLE_RATES))}); use .wav or .flac."
        )


def _write_error(file: Path, audio_format: str, error: Exception) -> InputError:
    """One-line InputError for a failed write of ``file``."""
    file = final_path(file)
    reason = " ".join((getattr(error, "error_string", None) or str(error)).split())
    return InputError(f"Cannot save {file} as {audio_format}: {reason}; choose another format or folder.")
