"""Tests of audio_edit.audio_io: decoding, resampling round trips, level matching and atomic writing."""

from __future__ import annotations

import gc
import json
import math
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audio_edit import audio_io
from audio_edit.audio_io import (
    MODEL_SAMPLE_RATE,
    SUPPORTED_EXTENSIONS,
    Audio,
    Original,
    check_writable,
    limit_peaks,
    load_audio,
    model_loudness,
    restore,
    rms_level,
    save_audio,
    to_model_rate,
    write_audio,
)
from audio_edit.loudness import integrated_loudness
from audio_edit.mel import normalize_waveform
from image_core.errors import InputError
from image_core.files import final_path, replacing


MP3_WRITABLE = "MP3" in sf.available_formats()
LOSSY = ("OGG", "MP3")


def melody(sample_rate: int, seconds: float, channels: int, seed: int = 0) -> np.ndarray:
    """A few harmonic notes (all below 3 kHz) plus light noise, shaped (channels, frames), peak <= 0.5."""
    rng = np.random.default_rng(seed)
    frames = round(seconds * sample_rate)
    t = np.arange(frames) / sample_rate
    notes = np.array([220.0, 277.2, 329.6, 440.0])
    pitch = notes[(t * 4).astype(int) % len(notes)]
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    base = sum(np.sin(k * phase) / k for k in (1, 2, 3, 5))
    rows = [base + 0.5 * np.sin(2 * np.pi * 150.0 * (c + 1) * t) for c in range(channels)]
    signal = np.stack(rows) + 0.02 * rng.standard_normal((channels, frames))
    return (0.5 * signal / np.max(np.abs(signal))).astype(np.float32)


def write(path: Path, samples: np.ndarray, sample_rate: int, audio_format: str, subtype: str) -> Path:
    sf.write(path, samples.T, sample_rate, format=audio_format, subtype=subtype)
    return path


# (extension, format, subtype, rate, channels, seconds): each value of each axis appears at least once.
MATRIX = [
    ("wav", "WAV", "PCM_16", 8000, 1, 0.2),
    ("wav", "WAV", "PCM_24", 22050, 2, 3.3),
    ("wav", "WAV", "PCM_32", 44100, 6, 0.2),
    ("wav", "WAV", "FLOAT", 48000, 2, 25.0),
    ("wav", "WAV", "PCM_U8", 96000, 1, 3.3),
    ("wav", "WAV", "DOUBLE", 44100, 1, 0.2),
    ("flac", "FLAC", "PCM_24", 96000, 6, 3.3),
    ("flac", "FLAC", "PCM_16", 44100, 1, 25.0),
    ("ogg", "OGG", "VORBIS", 48000, 2, 3.3),
    ("ogg", "OGG", "VORBIS", 22050, 6, 0.2),
    ("aiff", "AIFF", "PCM_16", 8000, 2, 25.0),
    ("aiff", "AIFF", "PCM_24", 96000, 1, 0.2),
    ("mp3", "MP3", "MPEG_LAYER_III", 44100, 2, 3.3),
    ("mp3", "MP3", "MPEG_LAYER_III", 8000, 1, 0.2),
]


@pytest.mark.parametrize(("ext", "audio_format", "subtype", "rate", "channels", "seconds"), MATRIX)
def test_round_trip_matrix(
    tmp_path: Path, ext: str, audio_format: str, subtype: str, rate: int, channels: int, seconds: float
) -> None:
    if audio_format not in sf.available_formats():
        pytest.skip(f"this libsndfile cannot write {audio_format}")
    original = melody(rate, seconds, channels)
    path = write(tmp_path / f"in.{ext}", original, rate, audio_format, subtype)

    audio = load_audio(path)
    assert audio.sample_rate == rate
    assert audio.channels == channels
    assert audio.samples.dtype == np.float32
    if audio_format in LOSSY:
        assert abs(audio.num_frames - original.shape[1]) <= 0.01 * rate  # codec padding, at most 10 ms
    else:
        assert audio.num_frames == original.shape[1]
        np.testing.assert_allclose(audio.samples, original, atol=2.0 ** -6)

    model_wave = to_model_rate(audio)
    assert model_wave.dtype == np.float32 and model_wave.ndim == 1
    assert len(model_wave) == math.ceil(audio.num_frames * MODEL_SAMPLE_RATE / rate)

    restored = restore(model_wave, audio)
    assert restored.dtype == np.float32
    assert restored.shape == (audio.num_frames,)
    reference = original.mean(axis=0)
    assert rms_level(restored) == pytest.approx(rms_level(reference), rel=0.01)
    if audio_format not in LOSSY:  # content below 8 kHz survives 16 kHz exactly enough to stay in phase
        assert np.corrcoef(restored, reference)[0, 1] > 0.99


def test_restore_batch_rows_match_single(tmp_path: Path) -> None:
    audio = Audio(melody(44100, 1.0, 2), 44100)
    wave = to_model_rate(audio)
    batch = np.stack([wave, 0.3 * wave[::-1].copy(), np.zeros_like(wave)])
    out = restore(batch, audio)
    assert out.shape == (3, audio.num_frames)
    np.testing.assert_allclose(out[0], restore(wave, audio), atol=1e-6)
    target = model_loudness(audio)
    assert model_loudness(Audio(out[1][None], 44100)) == pytest.approx(target, abs=1e-6)
    assert not out[2].any()


def test_restore_target_loudness_and_peak_limit() -> None:
    audio = Audio(melody(16000, 1.0, 1), 16000)
    quiet = restore(to_model_rate(audio), audio, target_loudness=-30.0)
    assert model_loudness(Audio(quiet[None], 16000)) == pytest.approx(-30.0, abs=1e-6)
    loud = restore(to_model_rate(audio), audio, target_loudness=0.0)
    assert np.max(np.abs(loud)) == pytest.approx(0.999, abs=1e-6)
    assert np.max(np.abs(loud)) <= 0.999
    spiky = np.zeros(16000, dtype=np.float32)
    spiky[100] = 4.0
    assert np.max(np.abs(restore(spiky, Audio(np.zeros((1, 16000), np.float32), 16000)))) <= 0.999


def test_restore_resamples_and_pads_to_exact_length() -> None:
    like = Audio(melody(44100, 0.5, 1), 44100)
    short = np.full(100, 0.1, dtype=np.float32)
    out = restore(short, like)
    assert out.shape == (like.num_frames,)
    assert not out[1000:].any()


def test_silence_is_valid_and_stays_finite(tmp_path: Path) -> None:
    path = write(tmp_path / "silence.wav", np.zeros((2, 8000), np.float32), 44100, "WAV", "PCM_16")
    audio = load_audio(path)
    wave = to_model_rate(audio)
    assert np.isfinite(wave).all() and not wave.any()
    out = restore(wave, audio)
    assert out.shape == (8000,) and np.isfinite(out).all() and not out.any()
    assert Original.of(audio).loudness is None
    loud = restore(np.ones(wave.shape, np.float32) * 0.1, audio)  # silent input: the model output is kept
    assert np.isfinite(loud).all()
    assert rms_level(loud) == pytest.approx(0.1, rel=0.05)
    noisy = np.random.default_rng(0).standard_normal(wave.shape).astype(np.float32) * 0.1
    np.testing.assert_allclose(restore(noisy, audio, target_loudness=None), restore(noisy, Original.of(audio)))
    silent_out = restore(np.zeros_like(noisy), Audio(melody(44100, 0.5, 2), 44100))  # silent output: kept
    assert np.isfinite(silent_out).all() and not silent_out.any()


def test_very_quiet_outputs_are_still_matched() -> None:
    """An output with no block above the -70 LUFS gate is measured ungated, not taken for silence."""
    audio = Audio(melody(22050, 2.0, 1), 22050)
    faint = model_hears(audio) * 1e-4  # about -95 LUFS
    out = restore(faint, audio)
    assert model_loudness(Audio(out[None], 22050)) == pytest.approx(model_loudness(audio), abs=0.01)


def model_hears(audio: Audio) -> np.ndarray:
    """A stand-in model output: exactly what the model reads (16 kHz mono, mean removed, peak 0.5)."""
    return normalize_waveform(torch.from_numpy(to_model_rate(audio))[None])[0].numpy()


@pytest.mark.parametrize("channels", [1, 2])
def test_dc_offset_does_not_change_the_restored_level(channels: int) -> None:
    """A 0.05-amplitude sine on a 0.4 DC offset: the model hears the sine only, so the output must be as loud
    as the sine (the RMS of the downmix with its DC made it 21 dB louder)."""
    rate = 44100
    t = np.arange(2 * rate) / rate
    tone = 0.05 * np.sin(2 * np.pi * 440.0 * t)
    samples = np.stack([tone + 0.4] * channels).astype(np.float32)
    audio = Audio(samples, rate)
    out = restore(model_hears(audio), audio)
    assert out.shape == (2 * rate,) and np.isfinite(out).all()
    assert integrated_loudness(out, rate) == pytest.approx(integrated_loudness(tone, rate), abs=1.0)
    assert rms_level(out) == pytest.approx(rms_level(tone), rel=0.05)


def test_stereo_restore_matches_the_downmix_the_model_hears() -> None:
    rate = 48000
    audio = Audio(melody(rate, 3.0, 2), rate)
    out = restore(0.3 * model_hears(audio), Original.of(audio))
    assert model_loudness(Audio(out[None], rate)) == pytest.approx(model_loudness(audio), abs=1e-6)
    assert np.corrcoef(out, audio.samples.mean(axis=0))[0, 1] > 0.99


def test_one_spike_does_not_turn_the_whole_output_down() -> None:
    rate = 16000
    audio = Audio(melody(rate, 2.0, 1), rate)
    wave = model_hears(audio)
    spiky = wave.copy()
    spiky[rate] = 3.0  # one sample at 6 times the peak: a whole-clip peak gain takes 9.5 dB off everything
    out, reference = restore(spiky, audio), restore(wave, audio)
    assert np.max(np.abs(out)) <= 0.999
    away = np.abs(np.arange(len(out)) - rate) > 0.01 * rate
    level = 20 * np.log10(rms_level(out[away]) / rms_level(reference[away]))
    assert abs(level) < 0.1


def test_limit_peaks_is_float32_below_the_limit() -> None:
    rows = np.random.default_rng(3).standard_normal((2, 5000)) * 3.0
    out = limit_peaks(rows, 22050)
    assert out.dtype == np.float32 and out.shape == rows.shape
    assert np.max(np.abs(out)) <= 0.999


def test_original_round_trips_through_inversion_meta() -> None:
    for audio in (Audio(melody(22050, 1.0, 2), 22050), Audio(np.zeros((1, 4000), np.float32), 8000)):
        original = Original.of(audio)
        meta = json.loads(json.dumps({**vars(original), "model_samples": 1}))
        assert Original.from_meta(meta) == original


def test_old_inversion_meta_keeps_its_rms_meaning() -> None:
    """Files written before the gated loudness hold the RMS of the downmix; their outputs match that RMS."""
    rate = 44100
    audio = Audio(melody(rate, 1.0, 1), rate)
    old = Original.from_meta({"sample_rate": rate, "num_frames": audio.num_frames, "rms": 0.05})
    assert (old.sample_rate, old.num_frames, old.loudness, old.rms) == (rate, audio.num_frames, None, 0.05)
    out = restore(to_model_rate(audio), old)
    assert out.shape == (audio.num_frames,)
    assert rms_level(out) == pytest.approx(0.05, rel=1e-4)
    silent = Original.from_meta({"sample_rate": rate, "num_frames": audio.num_frames, "rms": 0.0})
    np.testing.assert_allclose(rms_level(restore(to_model_rate(audio), silent)), rms_level(audio.samples), rtol=0.01)


def test_audio_properties_and_shape_check() -> None:
    audio = Audio(np.zeros((6, 48000), np.float32), 96000)
    assert (audio.channels, audio.num_frames, audio.duration) == (6, 48000, 0.5)
    with pytest.raises(InputError):
        Audio(np.zeros(100, np.float32), 16000)


@pytest.mark.parametrize("ext", SUPPORTED_EXTENSIONS)
def test_save_audio_round_trip(tmp_path: Path, ext: str) -> None:
    rate = 44100
    samples = melody(rate, 1.0, 2)
    path = tmp_path / f"out{ext}"
    save_audio(path, samples, rate)
    audio = load_audio(path)
    assert audio.sample_rate == rate and audio.channels == 2
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind
    if ext in (".ogg", ".mp3"):
        assert abs(audio.num_frames - samples.shape[1]) <= 0.01 * rate
        assert rms_level(audio.samples) == pytest.approx(rms_level(samples), rel=0.05)
    else:
        assert audio.num_frames == samples.shape[1]
        np.testing.assert_allclose(audio.samples, samples, atol=2.0 ** -22)


def test_save_audio_mono_overwrite_and_clipping(tmp_path: Path) -> None:
    path = tmp_path / "out.WAV"
    save_audio(path, np.full(1000, 0.25, np.float32), 16000)
    save_audio(path, np.full(500, 3.0, np.float32), 16000)
    audio = load_audio(path)
    assert audio.samples.shape == (1, 500)
    assert np.max(audio.samples) <= 1.0


def test_supported_extensions() -> None:
    assert {".wav", ".flac", ".ogg", ".aiff"} <= set(SUPPORTED_EXTENSIONS)
    assert (".mp3" in SUPPORTED_EXTENSIONS) == MP3_WRITABLE


def assert_one_line_error(error: pytest.ExceptionInfo[InputError], *words: str) -> None:
    message = str(error.value)
    assert "\n" not in message and message.strip() == message and message
    for word in words:
        assert word in message


@pytest.mark.parametrize("name", ["out.xyz", "out"])
def test_save_audio_unknown_extension(tmp_path: Path, name: str) -> None:
    with pytest.raises(InputError) as error:
        save_audio(tmp_path / name, np.zeros(100, np.float32), 16000)
    assert_one_line_error(error, *SUPPORTED_EXTENSIONS)
    assert not any(tmp_path.iterdir())


def test_save_audio_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError) as error:
        save_audio(tmp_path / "missing" / "out.wav", np.zeros(100, np.float32), 16000)
    assert_one_line_error(error, "does not exist")


def test_save_audio_non_finite_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(InputError) as error:
        save_audio(tmp_path / "out.wav", np.array([0.0, np.nan], np.float32), 16000)
    assert_one_line_error(error)
    assert not any(tmp_path.iterdir())


@pytest.mark.skipif(not MP3_WRITABLE, reason="this libsndfile cannot write MP3")
@pytest.mark.parametrize(("channels", "rate"), [(6, 44100), (1, 96000)])
def test_save_audio_mp3_limits(tmp_path: Path, channels: int, rate: int) -> None:
    with pytest.raises(InputError) as error:
        save_audio(tmp_path / "out.mp3", np.zeros((channels, 1000), np.float32), rate)
    assert_one_line_error(error, "MP3")
    assert not any(tmp_path.iterdir())


def test_save_audio_failure_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "out.wav"
    path.write_bytes(b"previous contents")

    def failing_write(file: Path, *args: object, **kwargs: object) -> None:
        Path(file).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(audio_io.sf, "write", failing_write)
    with pytest.raises(KeyboardInterrupt):
        save_audio(path, np.zeros(100, np.float32), 16000)
    assert [p.name for p in tmp_path.iterdir()] == ["out.wav"]
    assert path.read_bytes() == b"previous contents"


def test_save_audio_encoder_error_is_input_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def failing_write(file: Path, *args: object, **kwargs: object) -> None:
        Path(file).write_bytes(b"partial")
        raise sf.LibsndfileError(1, "Error opening file: ")

    monkeypatch.setattr(audio_io.sf, "write", failing_write)
    with pytest.raises(InputError) as error:
        save_audio(tmp_path / "out.flac", np.zeros(100, np.float32), 16000)
    assert_one_line_error(error)
    assert not any(tmp_path.iterdir())


def test_write_audio_writes_in_place_and_names_the_final_file(tmp_path: Path) -> None:
    samples = melody(16000, 0.5, 1)
    path = tmp_path / "direct.flac"
    write_audio(path, samples, 16000)
    assert [p.name for p in tmp_path.iterdir()] == ["direct.flac"]
    np.testing.assert_allclose(load_audio(path).samples, samples, atol=2.0 ** -22)
    target = tmp_path / "out.wav"
    with pytest.raises(InputError) as error:
        with replacing(target) as (temporary,):
            write_audio(temporary, np.array([0.0, np.inf], np.float32), 16000)
    assert_one_line_error(error, str(target))
    assert temporary.name not in str(error.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["direct.flac"]


def test_save_audio_writes_one_temporary_through_write_audio(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    written: list[tuple[Path, Path]] = []
    original_write = audio_io.write_audio

    def recording_write(path: Path, samples: np.ndarray, sample_rate: int) -> None:
        written.append((Path(path), final_path(path)))
        original_write(path, samples, sample_rate)

    monkeypatch.setattr(audio_io, "write_audio", recording_write)
    path = tmp_path / "out.wav"
    save_audio(path, np.zeros(100, np.float32), 16000)
    [(temporary, final)] = written
    assert temporary.parent == tmp_path and temporary != path and final == path
    assert [p.name for p in tmp_path.iterdir()] == ["out.wav"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into read-only folders")
def test_check_writable_read_only_folder(tmp_path: Path) -> None:
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(InputError) as error:
            save_audio(folder / "out.wav", np.zeros(100, np.float32), 16000)
        assert_one_line_error(error, "not writable")
        assert not any(folder.iterdir())
    finally:
        folder.chmod(0o700)


def test_check_writable_denied_access(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audio_io.os, "access", lambda path, mode: False)
    with pytest.raises(InputError) as error:
        save_audio(tmp_path / "out.wav", np.zeros(100, np.float32), 16000)
    assert_one_line_error(error, "not writable")
    assert not any(tmp_path.iterdir())


def test_check_writable(tmp_path: Path) -> None:
    check_writable(tmp_path / "new.wav")
    not_a_folder = tmp_path / "file.txt"
    not_a_folder.write_text("x")
    for bad in (tmp_path / "missing" / "a.wav", not_a_folder / "a.wav", tmp_path):
        with pytest.raises(InputError) as error:
            check_writable(bad)
        assert_one_line_error(error)


def zero_frame_wav(path: Path) -> Path:
    with sf.SoundFile(path, "w", samplerate=16000, channels=1, format="WAV", subtype="PCM_16"):
        pass
    return path


def text_wav(path: Path) -> Path:
    path.write_text("this is a text file, not a recording\n")
    return path


def float_wav_with(value: float) -> Callable[[Path], Path]:
    def make(path: Path) -> Path:
        samples = np.zeros((1, 1600), np.float32)
        samples[0, 800] = value
        return write(path, samples, 16000, "WAV", "FLOAT")

    return make


def wav_at(rate: int) -> Callable[[Path], Path]:
    return lambda path: write(path, melody(rate, 0.1, 1), rate, "WAV", "PCM_16")


BAD_INPUTS = {
    "empty file": (lambda path: (path.write_bytes(b""), path)[1], "empty"),
    "text named .wav": (text_wav, "Cannot decode"),
    "zero frames": (zero_frame_wav, "no audio frames"),
    "nan": (float_wav_with(np.nan), "NaN"),
    "inf": (float_wav_with(np.inf), "infinite"),
    "rate too low": (wav_at(4000), "4000 Hz"),
    "rate too high": (wav_at(200000), "200000 Hz"),
    "truncated flac": (lambda path: (path.write_bytes(b"fLaC\x00\x00"), path)[1], "Cannot decode"),
}


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input_file(tmp_path: Path, case: str, capfd: pytest.CaptureFixture[str]) -> None:
    make, words = BAD_INPUTS[case]
    path = make(tmp_path / "input.wav")
    before = path.read_bytes()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(InputError) as error:
            load_audio(path)
        message = str(error.value)
        del error
        gc.collect()  # a file handle left open by a decoder would warn here
    assert [str(w.message) for w in caught] == []
    assert "\n" not in message and words in message and str(path) in message
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["input.wav"]
    assert capfd.readouterr().err == ""


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(InputError) as error:
        load_audio(tmp_path / "nope.wav")
    assert_one_line_error(error, "not found")
    with pytest.raises(InputError) as error:
        load_audio(tmp_path)
    assert_one_line_error(error, "folder")


def test_rate_limits_are_inclusive(tmp_path: Path) -> None:
    for rate in (8000, 192000):
        assert load_audio(wav_at(rate)(tmp_path / f"{rate}.wav")).sample_rate == rate
