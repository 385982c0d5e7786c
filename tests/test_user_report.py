"""What a new user met on the command lines: a record per set of outputs that says what was used and
lists every file written, options that cannot act refused in one line, silence and unwritable
folders said before any work, messages that name the real cause."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from commands import run
import soundfile as sf
from PIL import Image

from audio_edit.cli import main as audio_main
from image_core.stable_diffusion.cli import main as image_main

AUDIO = ["--model", "tiny", "--steps", "4", "--tstart", "2", "--device", "cpu"]
IMAGE = ["--model", "tiny", "--steps", "4", "--tstart", "2", "--device", "cpu"]


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    t = np.arange(16000) / 16000
    path = tmp_path / "h.wav"
    sf.write(path, (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000)
    return path


@pytest.fixture
def picture(tmp_path: Path) -> Path:
    y, x = np.mgrid[0:32, 0:32]
    path = tmp_path / "c.png"
    Image.fromarray((np.stack([x * 8, y * 8, (x + y) * 4], -1) % 256).astype(np.uint8), "RGB").save(path)
    return path


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    from audio_edit import editor as audio_editor
    from image_core.stable_diffusion import editor as image_editor

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(audio_editor.AudioEditor, "from_pretrained", classmethod(refuse))
    monkeypatch.setattr(image_editor.ImageEditor, "from_pretrained", classmethod(refuse))


def test_each_set_of_outputs_has_its_own_record(clip: Path, picture: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for out in ("h.flac", "h.ogg"):
        code, stdout, err = run(audio_main, [str(clip), "--target", "jazz", "--out", str(clip.parent / out), *AUDIO], capsys)
        assert code == 0, err
        assert json.loads((clip.parent / f"{out}.json").read_text())["outputs"][0]["file"] == out
    for out in ("c_edit.jpg", "c_edit.webp"):
        code, stdout, err = run(image_main, [str(picture), "--target", "a dog", "--out", str(picture.parent / out), *IMAGE], capsys)
        assert code == 0, err
        assert (picture.parent / f"{out}.json").is_file()


def test_the_record_lists_and_stdout_prints_every_file(clip: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = clip.parent
    argv = [str(clip), "--pc", "1", "--pc-iterations", "3", "--region", "0.1:0.6", "--out", str(folder / "p.wav"),
            "--save-pcs", str(folder / "p.pcs"), "--save-inversion", str(folder / "p.inv"), *AUDIO]  # fmt: skip
    code, stdout, err = run(audio_main, argv, capsys)
    assert code == 0, err
    printed = stdout.split()  # the outputs first, then every other file but the record
    assert printed[0] == str(folder / "p.wav") and sorted(printed[1:]) == [str(folder / "p.inv"), str(folder / "p.pcs")]
    record = json.loads((folder / "p.wav.json").read_text())
    assert record["files"] == {"inversion": "p.inv", "pcs": "p.pcs"}
    assert all((folder / name).is_file() for name in record["files"].values())


def test_the_record_says_how_loaded_components_were_made(clip: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = clip.parent
    first = [str(clip), "--pc", "1", "--pc-iterations", "3", "--region", "0.1:0.6", "--out", str(folder / "a.wav"),
             "--save-pcs", str(folder / "a.pcs"), "--save-inversion", str(folder / "a.inv"), *AUDIO]  # fmt: skip
    assert run(audio_main, first, capsys)[0] == 0
    again = [str(clip), "--pc", "1", "--pcs", str(folder / "a.pcs"), "--inversion", str(folder / "a.inv"),
             "--out", str(folder / "b.wav"), "--model", "tiny", "--device", "cpu"]  # fmt: skip
    code, _, err = run(audio_main, again, capsys)
    assert code == 0, err
    made = json.loads((folder / "a.wav.json").read_text())["settings"]["principal_components"]
    used = json.loads((folder / "b.wav.json").read_text())["settings"]["principal_components"]
    assert made["iterations"] <= 3 and made["max_iterations"] == 3 and made["region"] == {"seconds": [0.1, 0.6]}
    assert {k: used[k] for k in ("iterations", "max_iterations", "region", "at_step", "count")} == {
        k: made[k] for k in ("iterations", "max_iterations", "region", "at_step", "count")
    }
    assert used["loaded_from"] == str(folder / "a.pcs")


OPTIONS_THAT_CANNOT_ACT = {
    "eta with ddim": (["--target", "x", "--method", "ddim", "--eta", "0.5"], "--eta cannot act"),
    "eta with null-text": (["--target", "x", "--method", "null-text", "--eta", "0.5"], "--eta cannot act"),
    "cfg-src with sdedit": (["--target", "x", "--method", "sdedit", "--cfg-src", "5"], "--cfg-src cannot be given"),
    "source with sdedit": (["--target", "x", "--method", "sdedit", "--source", "a"], "--source cannot be given"),
    "concept scale alone": (["--target", "x", "--concept-scale", "5"], "--concept-scale tunes --add / --remove"),
    "threshold alone": (["--target", "x", "--threshold", "0.5"], "--threshold tunes --add / --remove"),
    "warmup and scale alone": (["--target", "x", "--warmup", "2", "--concept-scale", "5"], "tune --add / --remove"),
    "warmup past tstart": (["--add", "x", "--warmup", "500"], "would never act"),
    "pc-at without pc": (["--target", "x", "--pc-at", "1"], "go with --pc"),
    "pc-iterations without pc": (["--target", "x", "--pc-iterations", "5"], "go with --pc"),
    "cfg-tar with pc": (["--pc", "1", "--cfg-tar", "5"], "--cfg-tar cannot act"),
    "negative with pc": (["--pc", "1", "--negative", "noise"], "--negative cannot act"),
    "absurd amount": (["--pc", "1", "--amount", "1e6"], "too large"),
    "unwritable output folder": (["--target", "x", "--out", "/proc/out.wav"], "not writable"),
}


@pytest.mark.parametrize("case", OPTIONS_THAT_CANNOT_ACT)
def test_options_that_cannot_act_are_refused_before_the_model_loads(
    case: str, clip: Path, no_model: None, capsys: pytest.CaptureFixture[str]
) -> None:
    extra, words = OPTIONS_THAT_CANNOT_ACT[case]
    before = sorted(os.listdir(clip.parent))
    code, stdout, err = run(audio_main, [str(clip), *extra, *AUDIO], capsys)
    assert code == 2 and stdout == "" and words in err, err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert sorted(os.listdir(clip.parent)) == before


def test_the_api_refuses_them_too(clip: Path) -> None:
    from audio_edit import AudioEditor, Concept
    from image_core.errors import InputError

    editor = AudioEditor.from_pretrained("tiny", device="cpu", progress=False)
    with pytest.raises(InputError, match="eta cannot act"):
        editor.invert(str(clip), num_steps=4, t_start=2, eta=0.5, method="ddim")
    inv = editor.invert(str(clip), num_steps=4, t_start=2)
    with pytest.raises(InputError, match="never act"):
        editor.edit(inv, None, concepts=[Concept("drums", warmup=2)])


def test_silence_is_edited_with_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    silence = tmp_path / "silence.wav"
    sf.write(silence, np.zeros(48000, dtype=np.float32), 16000)
    code, stdout, err = run(audio_main, [str(silence), "--target", "jazz", *AUDIO], capsys)
    assert code == 0
    assert err.count("warning: the input is silent: there is nothing to edit") == 1, err
    assert stdout.split() == [str(tmp_path / "silence_edit.wav")]


def test_an_rgba_picture_is_edited_with_its_alpha_and_the_conversion_said(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    y, x = np.mgrid[0:32, 0:32]
    rgba = np.stack([x * 8, y * 8, (x + y) * 4, np.where(x < 16, 255, 80)], -1).astype(np.uint8)
    source = tmp_path / "logo.png"
    Image.fromarray(rgba, "RGBA").save(source)
    code, stdout, err = run(image_main, [str(source), "--target", "a dog", "--out", str(tmp_path / "e.png"), *IMAGE], capsys)
    assert code == 0, err
    assert "warning: logo.png is RGBA" in err and err.count("warning:") == 1
    edited = Image.open(tmp_path / "e.png")
    assert edited.mode == "RGBA" and np.array_equal(np.asarray(edited)[..., 3], rgba[..., 3])
    code, stdout, err = run(image_main, [str(source), "--target", "a dog", "--out", str(tmp_path / "e.jpg"), *IMAGE], capsys)
    assert code == 0 and "holds no transparency" in err, err
    assert Image.open(tmp_path / "e.jpg").mode == "RGB"


def test_a_progress_bar_prints_its_final_line_once(capsys: pytest.CaptureFixture[str]) -> None:
    from image_core.progress import Progress

    for _ in Progress(range(5), desc="editing", mininterval=0):
        pass
    err = capsys.readouterr().err
    assert err.count("editing: 100%") == 1 and err.endswith("\n"), err


def test_help_texts(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(audio_main, ["--help"], capsys)
    text = " ".join(out.split())
    assert code == 0
    assert "(default: )" not in text and "(default: [])" not in text
    assert "where the model runs" in text and "tiny-audioldm" in text
    assert text.count("default 2, the audio paper's") == 1
