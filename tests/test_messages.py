"""Error messages that name the real cause of bad input: a reversed range, an inversion of the other
modality, a file that is not audio, a mistyped model name, and no spurious float16 warning."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np
import pytest
from commands import run
import soundfile as sf
import torch
from PIL import Image

from audio_edit import models as audio_models
from audio_edit.audio_io import load_audio
from audio_edit.cli import main as audio_main
from audio_edit.models import AudioModel
from image_core import adapters, cli_common
from image_core.errors import InputError, ModelLoadError
from image_core.inversion import Inversion, InversionSettings
from image_core.settings import check_interval
from image_core.stable_diffusion import model as sd_model
from image_core.stable_diffusion.cli import main as image_main
from image_core.stable_diffusion.model import StableDiffusionModel

TINY = ["--model", "tiny", "--device", "cpu"]


def assert_one_line(code: int, out: str, err: str, *words: str) -> str:
    """Refused with exit code 2 in one ``error:`` line holding ``words``, no traceback; the line."""
    assert code == 2 and out == "", err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, err
    return err.strip()


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    """A 0.5 s melody at 16 kHz."""
    path = tmp_path / "clip.wav"
    t = np.arange(8000) / 16000
    sf.write(path, (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), 16000)
    return path


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    """A 64x48 picture."""
    path = tmp_path / "photo.png"
    y, x = np.mgrid[0:48, 0:64]
    Image.fromarray(np.stack([x * 4, y * 5, (x + y) * 2], -1).astype(np.uint8)).save(path)
    return path


# ---------------------------------------------------------------------------------- 1. reversed ranges


def test_reversed_range_says_reversed_not_outside() -> None:
    with pytest.raises(InputError) as caught:
        check_interval((4.5, 2.0), 0.0, 10.0, "time range", "the clip's 0..10.00 s")
    message = str(caught.value)
    assert "reversed" in message and "start after end" in message and "give start:end" in message
    assert "2:4.5" in message and "\n" not in message  # the order that works
    with pytest.raises(InputError, match="reversed.*the smaller first"):  # swapping would not fit either
        check_interval((15.0, 2.0), 0.0, 10.0, "time range", "the clip's 0..10.00 s")
    with pytest.raises(InputError, match="empty"):
        check_interval((2.0, 2.0), 0.0, 10.0, "time range", "the clip's 0..10.00 s")


def test_range_outside_keeps_its_message() -> None:
    for pair in [(1.0, 15.0), (-1.0, 2.0), (float("nan"), 2.0), (float("inf"), 2.0)]:
        with pytest.raises(InputError) as caught:
            check_interval(pair, 0.0, 10.0, "time range", "the clip's 0..10.00 s")
        assert str(caught.value) == f"the time range {pair[0]:g}:{pair[1]:g} does not lie inside the clip's 0..10.00 s"
    assert check_interval((2, 4.5), 0.0, 10.0, "time range", "") == (2.0, 4.5)


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--target", "x", "--mask", "0.4:0.1s"], "the time range 0.4:0.1 is reversed (start after end)"),
        (["--target", "x", "--mask", "2000:200Hz"], "the frequency band 2000:200 is reversed (start after end)"),
        (["--pc", "1", "--region", "0.4:0.1"], "the time range 0.4:0.1 is reversed (start after end)"),
        (["--pc", "1", "--band", "2000:200"], "the frequency band 2000:200 is reversed (start after end)"),
    ],
)
def test_audio_edit_reversed_range(clip: Path, capsys: pytest.CaptureFixture[str], extra: list[str], words: str) -> None:
    listing = sorted(p.name for p in clip.parent.iterdir())
    code, out, err = run(audio_main, [str(clip), *extra, *TINY], capsys)
    assert_one_line(code, out, err, words, "give start:end")
    assert sorted(p.name for p in clip.parent.iterdir()) == listing


# ------------------------------------------------------------------------ 2. inversion of another modality


def _inversion(path: Path, model: str, meta: dict) -> Path:
    """A small valid inversion file (random tensors) made by ``model`` with the input facts ``meta``."""
    settings = InversionSettings(model, 4, 2, 1.0, 3.5, "", (0,))
    x0 = torch.zeros(1, 4, 8, 8, dtype=torch.float64)
    maps = torch.zeros(1, 2, 4, 8, 8, dtype=torch.float64)
    Inversion(x0, maps, maps.clone(), torch.tensor([751, 501]), settings, meta).save(path)
    return path


AUDIO_META = {"sample_rate": 16000, "num_frames": 8000, "model_samples": 8000, "loudness": -20.0}


def test_audio_inversion_given_to_image_edit(photo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inv = _inversion(photo.parent / "clip.inv", "audioldm2-0123456789abcdef", AUDIO_META)
    code, out, err = run(image_main, [str(photo), "--target", "x", "--inversion", str(inv), *TINY], capsys)
    line = assert_one_line(code, out, err, "was made by an audio model, not this image model", "invert the picture again")
    assert "None" not in line


def test_image_inversion_given_to_audio_edit(clip: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inv = _inversion(clip.parent / "photo.inv", "stable-diffusion-0123456789abcdef", {"size": [64, 48]})
    code, out, err = run(audio_main, [str(clip), "--target", "x", "--inversion", str(inv), *TINY], capsys)
    line = assert_one_line(code, out, err, "was made by an image model, not this audio model", "invert the recording again")
    assert "None" not in line


def test_inversion_fits_still_names_another_size(tmp_path: Path) -> None:
    inv = Inversion.load(_inversion(tmp_path / "a.inv", "stable-diffusion-x", {"size": [640, 480]}))
    with pytest.raises(InputError, match=r"another size \(size \[640, 480\], not size \[64, 48\]\)"):
        cli_common.check_inversion_fits(inv, {"size": [64, 48]}, "size", "a.inv")
    bare = dataclasses.replace(inv, meta={})  # made through the API without input facts
    with pytest.raises(InputError, match="records no size") as caught:
        cli_common.check_inversion_fits(bare, {"size": [64, 48]}, "size", "a.inv")
    assert "None" not in str(caught.value)


# -------------------------------------------------------------------------------------- 3. not audio


def _bad_file(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    "content, cause",
    [
        (b"these are notes, not a recording\n" * 20, "(it holds text)"),
        ("des notes, pas un enregistrement \u00e9\u00e8\n".encode() * 20, "(it holds text)"),
        (b"\x00\x13" + np.random.default_rng(0).bytes(4000), "(its bytes match no audio format)"),
        (b"\x89PNG\r\n\x1a\n" + bytes(200), "(it holds a PNG picture)"),
    ],
    ids=["text", "utf-8 text", "random bytes", "png"],
)
def test_file_that_is_not_audio(tmp_path: Path, content: bytes, cause: str) -> None:
    path = _bad_file(tmp_path / "x.wav", content)
    with pytest.raises(InputError) as caught:
        load_audio(path)
    message = str(caught.value)
    assert f"{path} as audio: it is not an audio file this tool can read {cause}" in message
    assert "give a WAV, FLAC, MP3, OGG" in message and "\n" not in message
    assert "Error" not in message and "NoBackend" not in message  # no exception class names


def test_damaged_audio_file_says_so(tmp_path: Path) -> None:
    with pytest.raises(InputError) as caught:
        load_audio(_bad_file(tmp_path / "x.flac", b"fLaC\x00\x00"))
    message = str(caught.value)
    assert "starts like a FLAC file but is damaged" in message and "Error" not in message


def test_empty_file_says_empty(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"empty \(0 bytes\)"):
        load_audio(_bad_file(tmp_path / "x.wav", b""))


def test_audio_edit_on_a_text_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _bad_file(tmp_path / "notes.wav", b"these are notes, not a recording\n" * 20)
    code, out, err = run(audio_main, [str(path), "--target", "x", *TINY], capsys)
    assert_one_line(code, out, err, "is not an audio file this tool can read (it holds text)")
    assert "NoBackendError" not in err


# --------------------------------------------------------------------------------- 4. mistyped models


@pytest.fixture
def no_hub(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every attempt to reach a model on the hub is recorded (the source asked for) and fails."""
    asked: list[str] = []

    def refuse(source, *args, **kwargs):
        asked.append(source if isinstance(source, str) else args[0])
        raise OSError("no hub in tests")

    def refuse_component(name, what, load):
        asked.append(name)
        raise ModelLoadError(f"cannot load the {what} of model {name!r} (no hub in tests)")

    monkeypatch.setattr(audio_models, "_from_source", lambda load, source, **kw: refuse(source))
    monkeypatch.setattr(adapters, "model_class_name", lambda name: asked.append(name))
    monkeypatch.setattr(sd_model, "load_component", refuse_component)
    return asked


@pytest.mark.parametrize(
    "load, listed",
    [
        (AudioModel.from_pretrained, "give a hub id (owner/name, e.g. cvssp/audioldm2, cvssp/audioldm2-music"),
        (StableDiffusionModel.from_pretrained, "give a hub id (owner/name, e.g. CompVis/stable-diffusion-v1-4)"),
    ],
    ids=["audio", "image"],
)
def test_mistyped_model_name_fails_at_once(load, listed: str, no_hub: list[str], monkeypatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # fails at once even where the hub could be asked
    start = time.perf_counter()
    with pytest.raises(ModelLoadError) as caught:
        load("tiy", "cpu")
    assert time.perf_counter() - start < 1.0 and no_hub == []
    message = str(caught.value)
    assert message.startswith("unknown model 'tiy': did you mean 'tiny'? ") and listed in message
    assert "a local folder" in message and "\n" not in message


def test_mistyped_names_get_the_closest_builtins(no_hub: list[str]) -> None:
    with pytest.raises(ModelLoadError, match=r"did you mean 'tiny-audioldm'\?.* or tiny / tiny-audioldm$"):
        AudioModel.from_pretrained("tiny_audioldm")
    with pytest.raises(ModelLoadError, match=r"did you mean 'cvssp/audioldm2-music'"):
        AudioModel.from_pretrained("audioldm2-music")
    with pytest.raises(ModelLoadError) as caught:
        AudioModel.from_pretrained("qqq")
    assert "did you mean" not in str(caught.value) and str(caught.value).startswith("unknown model 'qqq': give a hub id")
    assert no_hub == []


@pytest.mark.parametrize("load", [AudioModel.from_pretrained, StableDiffusionModel.from_pretrained], ids=["audio", "image"])
def test_hub_ids_still_go_to_the_hub(load, no_hub: list[str], monkeypatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError) as caught:
        load("someone/some-model", "cpu")
    assert no_hub and set(no_hub) == {"someone/some-model"} and "unknown model" not in str(caught.value)


@pytest.mark.parametrize("main, source", [(audio_main, "clip"), (image_main, "photo")])
def test_cli_mistyped_model(main, source: str, request, no_hub: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    path = request.getfixturevalue(source)
    code, out, err = run(main, [str(path), "--target", "x", "--model", "tiy", "--device", "cpu"], capsys)
    assert_one_line(code, out, err, "error: unknown model 'tiy': did you mean 'tiny'?", "a local folder")
    assert no_hub == []


# --------------------------------------------------------------------------------- 5. float16 warnings


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def diffusers_log() -> list[str]:
    """The messages the diffusers loggers emit while the test runs (at WARNING and above)."""
    logger = logging.getLogger("diffusers")
    handler, level = _Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_float16_on_cpu_has_no_empty_float32_warning(diffusers_log: list[str], capfd: pytest.CaptureFixture[str]) -> None:
    audio = AudioModel.from_pretrained("tiny", "cpu", torch.float16)
    image = StableDiffusionModel.from_pretrained("tiny", "cpu", torch.float16)
    assert audio.unet.dtype == torch.float16 and image.unet.dtype == torch.float16 and image.vae.dtype == torch.float16
    assert not [m for m in diffusers_log if "should be kept in float32" in m], diffusers_log
    assert "should be kept in float32" not in capfd.readouterr().err


def test_other_diffusers_warnings_still_show(diffusers_log: list[str]) -> None:
    """Only the empty-list warning is dropped, and only while the project casts."""
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(block_out_channels=(8,), norm_num_groups=4, latent_channels=4, sample_size=8)
    vae._keep_in_fp32_modules = ["quant_conv"]  # a list that matters is still reported
    adapters.cast(vae, torch.float16)
    assert any("should be kept in float32: ['quant_conv']" in m for m in diffusers_log), diffusers_log
    logging.getLogger("diffusers.models.modeling_utils").warning("There are modules in X that should be kept in float32: [].")
    assert diffusers_log[-1].endswith("float32: [].")  # the filter is gone after the cast
