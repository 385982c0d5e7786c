"""The audio editor end to end on tiny random-weight AudioLDM2 / AudioLDM models (float32, CPU)."""

import numpy as np
import pytest
import soundfile as sf
import torch

from audio_edit import Audio, AudioEditor, Inversion, load_audio
from audio_edit.audio_io import Original, model_loudness
from image_core.errors import InputError, InversionMismatchError


@pytest.fixture(scope="module", params=["tiny", "tiny-audioldm"])
def editor(request):
    return AudioEditor.from_pretrained(request.param, device="cpu", progress=False)


@pytest.fixture(scope="module")
def audioldm2():
    return AudioEditor.from_pretrained("tiny", device="cpu", progress=False)


def melody(rate: int, seconds: float, channels: int = 1) -> np.ndarray:
    """(channels, n) a few decaying harmonic notes, different per channel."""
    t = np.arange(int(round(rate * seconds))) / rate
    notes = 220 * 2 ** (np.floor(t * 4) % 5 / 12)
    wave = sum(np.sin(2 * np.pi * k * notes * t) / k for k in (1, 2, 3)) * np.exp(-(t * 4 % 1) * 3)
    return np.stack([0.3 * np.roll(wave, 37 * c) for c in range(channels)]).astype(np.float32)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("seconds", [3.3, 31.0])  # one window; three windows (10.24 s each)
def test_reconstruction_is_exact(editor, seconds):
    clip = Audio(melody(16000, seconds), 16000)
    inv = editor.invert(clip, "a melody", num_steps=20, t_start=12, cfg_src=3.0, seed=[0, 1])
    windows = -(-inv.x0.shape[2] // editor.model.latent_window)
    assert windows == (1 if seconds < 10 else 4 if inv.x0.shape[2] > 3 * 192 + 64 else 3)
    rec = editor.reconstruct(inv, output_type="latent")
    assert relative_error(rec, inv.x0) <= 1e-4


def test_reconstruction_at_paper_defaults(audioldm2):
    clip = Audio(melody(22050, 2.0), 22050)
    inv = audioldm2.invert(clip, "a melody", num_steps=200, t_start=100, cfg_src=3.0)
    assert inv.xts.shape[1] == 100
    assert relative_error(audioldm2.reconstruct(inv, output_type="latent"), inv.x0) <= 1e-4


@pytest.mark.parametrize("seconds, dtype", [(3.3, "float32"), (31.0, "float32"), (3.3, "float16")])
def test_reconstruction_is_bitwise_exact_with_batch_invariant_calls(seconds, dtype):
    """Latents and noise maps are float64, so the sampler retraces the inverted x_t to ~1e-16 and the
    UNet sees the same inputs again, in float16 too. With every UNet call shaped as in the edit (one
    x_t, both guidance halves, one window at a time) reconstruction is exact to float64 rounding,
    windows blended or not: the 1e-4 bound above is batch-size-dependent kernel rounding only."""
    editor = AudioEditor.from_pretrained("tiny", device="cpu", dtype=dtype, progress=False, inversion_batch_size=1, window_batch=2)
    inv = editor.invert(Audio(melody(16000, seconds), 16000), "a melody", num_steps=20, t_start=12, cfg_src=3.0)
    assert inv.zs.dtype == torch.float64
    assert relative_error(editor.reconstruct(inv, output_type="latent"), inv.x0) <= 1e-10


def test_edit_outputs_match_input_rate_length_and_loudness(audioldm2):
    clip = Audio(melody(44100, 3.3, channels=2), 44100)
    inv = audioldm2.invert(clip, "", num_steps=10, t_start=5, seed=[3, 4])
    clips = audioldm2.edit(inv, ["jazz piano", "rock"], cfg_tar=12.0)
    assert len(clips) == 4
    for wave in clips:
        assert wave.shape == (clip.num_frames,) and wave.dtype == np.float32 and np.isfinite(wave).all()
        assert model_loudness(Audio(wave[None], clip.sample_rate)) == pytest.approx(Original.of(clip).loudness, abs=0.01)
    assert not np.allclose(clips[0], clips[2])  # targets differ
    assert not np.allclose(clips[0], clips[1])  # seeds differ


# Every value of every axis at least once: format, rate, channels, length.
MATRIX = [
    ("wav", "PCM_16", 8000, 1, 0.2),
    ("flac", "PCM_24", 22050, 2, 3.3),
    ("wav", "FLOAT", 44100, 6, 3.3),
    ("ogg", "VORBIS", 48000, 2, 0.2),
    ("aiff", "PCM_16", 96000, 1, 3.3),
    ("wav", "PCM_24", 48000, 2, 25.0),
    ("mp3", "MPEG_LAYER_III", 44100, 2, 3.3),
]


@pytest.mark.parametrize("extension, subtype, rate, channels, seconds", MATRIX)
def test_formats_rates_channels_lengths(audioldm2, tmp_path, extension, subtype, rate, channels, seconds):
    if extension == "mp3" and "MP3" not in sf.available_formats():
        pytest.skip("this libsndfile cannot write MP3")
    path = tmp_path / f"clip.{extension}"
    sf.write(path, melody(rate, seconds, channels).T, rate, subtype=subtype)
    clip = load_audio(path)
    inv = audioldm2.invert(path, num_steps=4, t_start=2)
    (wave,) = audioldm2.reconstruct(inv)
    assert inv.meta["sample_rate"] == rate and wave.shape == (clip.num_frames,)
    assert np.isfinite(wave).all()


def test_silence_is_valid(audioldm2):
    from audio_edit.loudness import SilentInputWarning

    clip = Audio(np.zeros((2, 16000), np.float32), 16000)
    with pytest.warns(SilentInputWarning, match="nothing to edit"):
        inv = audioldm2.invert(clip, num_steps=6, t_start=3)
    assert torch.isfinite(inv.zs).all()
    (wave,) = audioldm2.edit(inv, "jazz piano")
    assert wave.shape == (16000,) and np.isfinite(wave).all()


def test_too_short_clip_is_refused(audioldm2):
    with pytest.raises(InputError, match="too short"):
        audioldm2.invert(Audio(np.ones((1, 100), np.float32), 16000))
    with pytest.raises(InputError, match=r"39\.9 ms, 639 samples"):
        audioldm2.invert(Audio(np.ones((1, 639), np.float32), 16000))


@pytest.mark.parametrize(
    "samples, rate, words",
    [(np.full((1, 8000), np.nan, np.float32), 16000, "NaN"), (np.zeros((1, 0), np.float32), 16000, "no audio"),
     (np.zeros((1, 8000), np.float32), 4000, "4000 Hz")],
)
def test_audio_objects_are_checked_like_files(audioldm2, samples, rate, words):
    with pytest.raises(InputError, match=words):
        audioldm2.invert(Audio(samples, rate))


def test_inversion_file_and_model_check(audioldm2, tmp_path):
    inv = audioldm2.invert(Audio(melody(16000, 1.0), 16000), "a melody", num_steps=6, t_start=3)
    inv.save(tmp_path / "clip.inv")
    back = Inversion.load(tmp_path / "clip.inv")
    assert back.meta == inv.meta
    assert [w.shape for w in audioldm2.edit(back, "a dog barking")] == [(16000,)]
    other = AudioEditor.from_pretrained("tiny-audioldm", device="cpu", progress=False)
    with pytest.raises(InversionMismatchError, match="another model"):
        other.edit(back, "a dog barking")
    other_windows = AudioEditor(audioldm2.model, overlap=16, progress=False)  # blends long clips differently
    with pytest.raises(InversionMismatchError, match="overlap16"):
        other_windows.edit(back, "a dog barking")
    with pytest.raises(InputError, match="overlap"):
        AudioEditor(audioldm2.model, overlap=256)


def test_save_and_load_model_folder(audioldm2, tmp_path):
    audioldm2.save_pretrained(tmp_path / "model")
    loaded = AudioEditor.from_pretrained(str(tmp_path / "model"), device="cpu", dtype="float32", progress=False)
    assert loaded.model.fingerprint() == audioldm2.model.fingerprint()


@pytest.mark.parametrize("samples, frames", [(640, 256), (163840, 256), (163841, 260), (16000 * 31, 776)])
def test_latent_length_fits_the_training_window_exactly(audioldm2, samples, frames):
    """10.24 s at 16 kHz is one 256-frame window; one sample more needs the next multiple of 4."""
    assert audioldm2.latent_length(samples) == frames
    assert frames * audioldm2.model.vae_factor * audioldm2.model.hop_length >= samples  # the vocoder covers the clip


def test_long_clips_invert_fewer_timesteps_per_call(audioldm2):
    """The inversion's buffers stay those of a one-window clip: 16 window-rows per call at any length."""
    one, four = torch.zeros(1, 8, 256, 16), torch.zeros(1, 8, 776, 16)
    assert audioldm2.inversion_rows(one) == 16 and audioldm2.inversion_rows(four) == 4
    assert audioldm2.inversion_rows(torch.zeros(1, 8, 256 * 40, 16)) == 1


def test_inversion_too_big_for_memory_is_refused_before_encoding(audioldm2, monkeypatch):
    """The free-memory check runs from the latent shape, before the clip goes through the VAE."""
    from image_core import adapters

    editor = AudioEditor(audioldm2.model, progress=False)
    monkeypatch.setattr(adapters, "available_memory", lambda device="cpu": 2**20)
    monkeypatch.setattr(editor, "encode", lambda wave: pytest.fail("the clip was encoded before the refusal"))
    with pytest.raises(InputError, match="lower tstart"):
        editor.invert(Audio(melody(16000, 60.0), 16000), num_steps=200, t_start=100)


def test_a_clip_slightly_longer_than_the_window_runs_one_window(audioldm2):
    """10.25 s is 260 latent frames: one model call per step (it was two windows 4 frames apart), and
    reconstruction stays exact."""
    editor = AudioEditor(audioldm2.model, progress=False)
    windowed = editor.denoiser
    calls = []
    inner = windowed.model
    windowed.model = lambda x, t, cond: calls.append(x.shape) or inner(x, t, cond)
    inv = editor.invert(Audio(melody(16000, 10.25), 16000), "a melody", num_steps=10, t_start=4, cfg_src=3.0)
    assert inv.x0.shape[2] == 260
    calls.clear()
    rec = editor.reconstruct(inv, output_type="latent")
    assert len(calls) == 4 and all(shape[2] == 260 for shape in calls)
    assert relative_error(rec, inv.x0) <= 1e-4
