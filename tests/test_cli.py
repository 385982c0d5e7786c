"""What both command-line tools share (image_core.cli_common), and ``image-edit`` end to end with the
tiny random-weight Stable Diffusion (CPU)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from commands import run
import torch
from PIL import Image

from image_core.cli_outputs import record_path
from image_core import cli_common
from image_core.cli_common import output_paths, slug
from image_core.inversion import Inversion
from image_core.stable_diffusion import editor as editor_module
from image_core.stable_diffusion.cli import main

FAST = ["--model", "tiny", "--steps", "4", "--tstart", "2", "--device", "cpu"]
JAPANESE, GREEK, EMOJI = "ジャズ ピアノ", "Ένας Σκύλος", "🐶🎷"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``image-edit argv`` run in this process."""
    return run(main, argv, capsys)


def assert_refused(code: int, stdout: str, err: str, words: str, after_work: bool = False) -> None:
    """Exit code 2, nothing on stdout, one stderr line with ``words`` (after the progress bars if the
    model ran), no traceback."""
    assert code == 2 and stdout == "", err
    lines = err.strip().splitlines()
    assert "error: " in lines[-1] and words in lines[-1] and "Traceback" not in err, err
    assert len(lines) == 1 or after_work, err


@pytest.fixture
def photo(tmp_path: Path) -> Path:
    """A 64x48 picture with structure, in a folder of its own."""
    y, x = np.mgrid[0:48, 0:64]
    rgb = np.stack([x / 64, y / 48, ((x - 32) ** 2 + (y - 24) ** 2 < 15**2) * 1.0], -1)
    folder = tmp_path / "work"
    folder.mkdir()
    path = folder / "photo.png"
    Image.fromarray((rgb * 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make loading a model fail loudly: the refusals must come before it."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(editor_module.ImageEditor, "from_pretrained", refuse)


# ------------------------------------------------------------------------------------------------ names


def test_slug_keeps_letters_of_any_script() -> None:
    japanese, greek = slug(JAPANESE), slug(GREEK)
    assert japanese == "ジャズ-ピアノ"
    assert greek == slug(GREEK.upper()) == slug(unicodedata.normalize("NFD", GREEK))  # case-folded, NFKC
    assert greek.replace("-", "").isalpha() and "-" in greek and greek != "edit"
    assert slug("ＪＡＺＺ Piano!") == "jazz-piano"  # full-width forms folded
    assert slug(EMOJI) == "edit" and slug("?!") == "edit"
    assert slug("a/b\\c:d*e") == "a-b-c-d-e"


def test_slug_is_limited_in_bytes_without_splitting_characters() -> None:
    long = slug("ピアノ" * 40)  # 3 bytes a character
    assert cli_common.SLUG_BYTES - 3 < len(long.encode("utf-8")) <= cli_common.SLUG_BYTES
    assert set(long) == set("ピアノ")  # whole characters only
    assert len(slug("ab" * 100, limit=7).encode()) == 7


def test_output_names_say_which_target(tmp_path: Path) -> None:
    targets = [JAPANESE, GREEK, EMOJI, "🎺", "a dog", "a dog"]
    paths = output_paths(str(tmp_path / "in.png"), None, targets, [3], ".png")
    names = [p.name for p in paths]
    assert len(set(names)) == len(names)
    assert names[0] == f"in_edit_{slug(JAPANESE)}_s3.png" and names[1] == f"in_edit_{slug(GREEK)}_s3.png"
    assert names[2:] == ["in_edit_edit_t2_s3.png", "in_edit_edit_t3_s3.png", "in_edit_a-dog_t4_s3.png", "in_edit_a-dog_t5_s3.png"]


def test_out_folder_gets_the_default_name(tmp_path: Path) -> None:
    source = str(tmp_path / "in.png")
    folder = tmp_path / "edits"
    folder.mkdir()
    assert output_paths(source, str(folder), ["x"], [0], ".png") == [folder / "in_edit.png"]
    assert output_paths(source, str(folder) + os.sep, ["x"], [0], ".png") == [folder / "in_edit.png"]
    with pytest.raises(cli_common.InputError, match="does not exist"):
        output_paths(source, str(tmp_path / "missing") + os.sep, ["x"], [0], ".png")


# ------------------------------------------------------------------------------------ refused up front

LONG = "x" * 252 + ".png"  # 256 bytes: over the usual 255


def _write_inversion(path: Path, settings_change: dict | None = None, size: list[int] | None = None) -> None:
    """A small valid inversion file (random tensors) with the tiny model's settings, optionally changed."""
    from image_core.inversion import InversionSettings

    settings = InversionSettings("stable-diffusion-x", 4, 2, 1.0, 3.5, "", (0,))
    settings = dataclasses.replace(settings, **(settings_change or {}))
    x0 = torch.zeros(1, 4, 8, 8, dtype=torch.float64)
    inv = Inversion(x0, torch.zeros(1, 2, 4, 8, 8, dtype=torch.float64), torch.zeros(1, 2, 4, 8, 8, dtype=torch.float64),
                    torch.tensor([751, 501]), settings, {"size": size or [64, 48]})  # fmt: skip
    inv.save(path)


BAD = {
    "name too long": (["--out", "{dir}/" + LONG], "bytes long"),
    "trailing separator, no folder": (["--out", "{dir}/missing/"], "does not exist"),
    "an output name is a folder": (["--out", "{dir}/e.png", "--target", "b"], "is a folder"),
    "steps with inversion": (["--inversion", "{dir}/ok.inv", "--steps", "4"], "--steps cannot be given with --inversion"),
    "seed and source with inversion": (["--inversion", "{dir}/ok.inv", "--seed=3", "--source", "x"], "--seed, --source"),
    "num-outputs with inversion": (["--inversion", "{dir}/ok.inv", "--num-outputs", "1"], "--num-outputs"),
    "save with inversion": (
        ["--inversion", "{dir}/ok.inv", "--save-inversion", "{dir}/again.inv"], "--save-inversion cannot be given with --inversion"
    ),
    "missing inversion": (["--inversion", "{dir}/none.inv"], "not found"),
    "corrupt inversion": (["--inversion", "{dir}/notes.txt"], "inversion file"),
    "inversion of another size": (["--inversion", "{dir}/big.inv"], "another size"),
    "inversion of audio": (["--inversion", "{dir}/audio.inv"], "another size"),
    "save-inversion exists": (["--save-inversion", "{dir}/ok.inv"], "--overwrite"),
    "save-inversion is a folder": (["--save-inversion", "{dir}/sub/"], "folder"),
    "save-inversion is the input": (["--save-inversion", "{dir}/photo.png", "--overwrite"], "input"),
    "record exists": (["--out", "{dir}/rec.png"], "rec.png.json exists"),
    "inversion-batch zero": (["--inversion-batch", "0"], "--inversion-batch must be a positive integer"),
    "inversion-batch not a number": (["--inversion-batch", "many"], "invalid int"),
    "threads zero": (["--threads", "0"], "--threads must be between 1 and 1024"),
    "threads too many": (["--threads", "1025"], "--threads must be between 1 and 1024"),
    "method with inversion": (["--inversion", "{dir}/ok.inv", "--method", "ddim"], "--method cannot be given"),
    "unknown method": (["--method", "nulltext"], "invalid choice"),
    "sdedit with a mask": (["--method", "sdedit", "--mask", "auto"], "--method sdedit inverts nothing"),
    "sdedit with save-inversion": (["--method", "sdedit", "--save-inversion", "{dir}/s.inv"], "--save-inversion"),
    "ddim with several outputs": (["--method", "ddim", "--num-outputs", "2"], "deterministic"),
    "auto mask with two targets": (["--mask", "auto", "--target", "b"], "one --target"),
    "missing mask file": (["--mask", "{dir}/none.png"], "mask file not found"),
    "box outside the picture": (["--mask", "0,0,65,10"], "does not lie inside the 64x48 image"),
    "empty box": (["--mask", "10,10,10,20"], "box's x range"),
    "save-mask without a mask": (["--save-mask", "{dir}/m.png"], "needs a --mask"),
    "save-mask not a png": (["--mask", "auto", "--save-mask", "{dir}/m.jpg"], ".png"),
    "empty concept": (["--add", " "], "must not be empty"),
    "concept scale nan": (["--add", "hat", "--concept-scale", "nan"], "scales"),
    "concept scale absurd": (["--add", "hat", "--concept-scale", "1e6"], "scales"),
    "threshold outside": (["--remove", "hat", "--threshold", "1"], "threshold"),
    "negative warm-up": (["--add", "hat", "--warmup", "-1"], "warm-up"),
    "seventeen concepts": (["--add", "hat"] * 17, "at most 16"),
    "concepts with sdedit": (["--add", "hat", "--method", "sdedit"], "--method ddpm, ddim or null-text"),
    "null-text with cfg-src": (["--method", "null-text", "--cfg-src", "3"], "leave out --cfg-src"),
    "null-text with a negative prompt": (["--method", "null-text", "--negative", "blurry"], "leave out --negative"),
    "null-text with several outputs": (["--method", "null-text", "--num-outputs", "2"], "null-text is deterministic"),
    "inner steps without null-text": (["--inner-steps", "3"], "--inner-steps tunes --method null-text"),
    "inner steps absurd": (["--method", "null-text", "--inner-steps", "5000"], "inner steps must be a whole number from 0 to 1000"),
    "early stop negative": (["--method", "null-text", "--early-stop", "-1"], "early-stop loss must be in [0, 1)"),
    "inner steps with inversion": (["--inversion", "{dir}/ok.inv", "--inner-steps", "3"], "--inner-steps cannot be given with --inversion"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_options_are_one_line_before_the_model_loads(case: str, photo: Path, no_model: None,
                                                         capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    folder = photo.parent
    (folder / "e_a-dog_s0.png").mkdir()
    (folder / "sub").mkdir()
    (folder / "notes.txt").write_text("not an inversion")
    (folder / "rec.png.json").write_text("{}")
    _write_inversion(folder / "ok.inv")
    _write_inversion(folder / "big.inv", size=[640, 480])
    _write_inversion(folder / "audio.inv")
    audio = Inversion.load(folder / "audio.inv")
    dataclasses.replace(audio, meta={"sample_rate": 16000, "num_frames": 8000}).save(folder / "audio.inv")
    extra, words = BAD[case]
    extra = [arg.replace("{dir}", str(folder)) for arg in extra]
    listing = {p.name: digest(p) for p in folder.iterdir() if p.is_file()}
    code, stdout, err = run_cli([str(photo), "--target", "a dog", *extra, "--model", "tiny", "--device", "cpu"], capsys)
    assert_refused(code, stdout, err, words)
    assert {p.name: digest(p) for p in folder.iterdir() if p.is_file()} == listing  # no output, input unchanged


# ---------------------------------------------------------------------------------------- end to end


def test_long_legal_out_name_and_an_out_folder(photo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A 254-byte name is written (its temporaries are short, its record's name 255 bytes); --out FOLDER
    --overwrite writes into the folder."""
    folder = photo.parent
    name = "é" * 122 + "xxxxxx.png"  # 254 bytes
    code, stdout, err = run_cli([str(photo), "--target", "a dog", "--out", str(folder / name), *FAST], capsys)
    assert code == 0, err
    assert stdout.split() == [str(folder / name)] and Image.open(folder / name).size == (64, 48)
    record = record_path(folder / name)  # the output's name + .json, its stem shortened to fit the folder
    assert record.name.endswith(".png.json") and len(os.fsencode(record.name)) <= 255
    assert json.loads(record.read_text())["outputs"][0]["file"] == name

    edits = folder / "edits"
    edits.mkdir()
    for out in (str(edits) + os.sep, str(edits)):  # then the folder's name, with --overwrite
        code, stdout, err = run_cli([str(photo), "--target", "a dog", "--out", out, "--overwrite", *FAST], capsys)
        assert code == 0, err
        assert stdout.split() == [str(edits / "photo_edit.png")]
    assert sorted(p.name for p in edits.iterdir()) == ["photo_edit.png", "photo_edit.png.json"]
    assert not list(folder.glob(".*")) and not list(edits.glob(".*"))  # no temporary left


def test_non_ascii_targets_name_their_files(photo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    targets = [JAPANESE, GREEK, EMOJI, "a dog", "a dog"]
    argv = [str(photo), *(a for t in targets for a in ("--target", t)), "--out", str(photo.parent / "e.png"), *FAST]
    code, stdout, err = run_cli(argv, capsys)
    assert code == 0, err
    written = [Path(line) for line in stdout.splitlines()]
    expected = [f"e_{slug(JAPANESE)}_s0.png", f"e_{slug(GREEK)}_s0.png", "e_edit_s0.png", "e_a-dog_t3_s0.png", "e_a-dog_t4_s0.png"]
    assert [p.name for p in written] == expected and all(p.is_file() for p in written)
    record = json.loads((photo.parent / "e_ジャズ-ピアノ_s0.png.json").read_text(encoding="utf-8"))
    assert [(o["target"], o["target_index"], o["file"]) for o in record["outputs"]] == list(zip(targets, range(5), expected))


def test_saved_inversion_gives_the_same_edits(photo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = photo.parent
    before = digest(photo)
    first = [str(photo), "--target", "a dog", "--source", "a photo", "--seed", "5", "--num-outputs", "2",
             "--inversion-batch", "1", "--threads", str(torch.get_num_threads()), *FAST]  # fmt: skip
    inv_file = folder / "photo.inv"
    code, _, err = run_cli([*first, "--out", str(folder / "a.png"), "--save-inversion", str(inv_file)], capsys)
    assert code == 0, err
    inv = Inversion.load(inv_file)
    assert inv.settings.seeds == (5, 6) and inv.settings.source_prompt == "a photo" and inv.meta == {"size": [64, 48]}

    again = [str(photo), "--target", "a dog", "--inversion", str(inv_file), "--model", "tiny", "--device", "cpu"]
    code, stdout, err = run_cli([*again, "--out", str(folder / "b.png")], capsys)
    assert code == 0, err
    assert [Path(p).name for p in stdout.split()] == ["b_a-dog_s5.png", "b_a-dog_s6.png"]
    for seed in (5, 6):
        a, b = (np.asarray(Image.open(folder / f"{x}_a-dog_s{seed}.png")) for x in "ab")
        assert np.array_equal(a, b)
    record = json.loads((folder / "a_a-dog_s5.png.json").read_text())
    assert record["model"] == "tiny" and record["model_fingerprint"] == inv.settings.model
    assert record["settings"] == {
        "num_steps": 4, "t_start": 2, "eta": 1.0, "cfg_src": 3.5, "cfg_tar": 15.0, "source_prompt": "a photo",
        "negative_prompt": "", "seeds": [5, 6], "inversion_batch": 1, "method": "ddpm", "null_text": None, "mask": None,
        "principal_components": None, "prompt_to_prompt": None, "flowedit": None,
    }  # fmt: skip
    assert record["inversion_saved_to"] == str(inv_file.resolve()) and record["inversion_loaded_from"] is None
    assert set(record["versions"]) == {"ddpm-edit", "torch", "diffusers", "transformers", "python"}
    assert (record["device"], record["dtype"], record["targets"]) == ("cpu", "float32", ["a dog"])
    loaded = json.loads((folder / "b_a-dog_s5.png.json").read_text())
    assert loaded["inversion_loaded_from"] == str(inv_file.resolve()) and loaded["settings"]["seeds"] == [5, 6]
    assert digest(photo) == before


def test_inversion_of_another_model_is_one_line(photo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inv_file = photo.parent / "other.inv"
    _write_inversion(inv_file, {"model": "stable-diffusion-another"})
    listing = sorted(os.listdir(photo.parent))
    argv = [str(photo), "--target", "a dog", "--inversion", str(inv_file), "--model", "tiny", "--device", "cpu"]
    code, stdout, err = run_cli(argv, capsys)
    assert_refused(code, stdout, err, "another model", after_work=True)
    assert sorted(os.listdir(photo.parent)) == listing


def test_outputs_record_and_inversion_are_all_or_nothing(photo: Path, capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """The disk filling up while the inversion (the last file) is written leaves no image and no record."""

    def full(inv: Inversion, path: Path) -> None:
        path.write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Inversion, "save", full)
    listing = sorted(os.listdir(photo.parent))
    argv = [str(photo), "--target", "a dog", "--save-inversion", str(photo.parent / "p.inv"), *FAST]
    code, stdout, err = run_cli(argv, capsys)
    assert_refused(code, stdout, err, "No space left", after_work=True)
    assert f"cannot write {photo.parent / 'p.inv'}:" in err  # the file asked for, not a temporary
    assert sorted(os.listdir(photo.parent)) == listing


def test_threads_option_sets_torch_threads(photo: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch, no_model: None) -> None:  # fmt: skip
    calls: list[int] = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    with pytest.raises(AssertionError, match="model was loaded"):
        main([str(photo), "--target", "a dog", "--threads", "1", "--model", "tiny"])
    assert calls == [1]


def test_help_explains_the_new_options(capsys: pytest.CaptureFixture[str]) -> None:
    code, stdout, _ = run_cli(["--help"], capsys)
    text = " ".join(stdout.split())
    assert code == 0 and "bitwise" in text and "float16" in text and "--threads" in text and "--save-inversion" in text


def test_methods_and_masks_end_to_end(photo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--method ddim and sdedit, a box mask and an auto mask saved as a picture, read back by --mask."""
    folder = photo.parent
    code, out, err = run_cli([str(photo), "--target", "a dog", *FAST, "--method", "sdedit", "--num-outputs", "2",
                              "--out", str(folder / "sd.png")], capsys)  # fmt: skip
    assert code == 0, err
    assert out.split() == [str(folder / "sd_a-dog_s0.png"), str(folder / "sd_a-dog_s1.png")]
    assert json.loads((folder / "sd_a-dog_s0.png.json").read_text())["settings"]["method"] == "sdedit"
    code, out, err = run_cli([str(photo), "--target", "a dog", *FAST, "--method", "ddim", "--out", str(folder / "dd.png")], capsys)
    assert code == 0 and json.loads((folder / "dd.png.json").read_text())["settings"]["method"] == "ddim", err
    code, out, err = run_cli([str(photo), "--target", "a dog", *FAST, "--mask", "0,0,32,24", "--save-mask",
                              str(folder / "box.png"), "--out", str(folder / "box_edit.png")], capsys)  # fmt: skip
    assert code == 0, err
    assert out.split() == [str(folder / "box_edit.png"), str(folder / "box.png")]
    edited, source = (np.asarray(Image.open(p), dtype=np.float64) for p in (folder / "box_edit.png", photo))
    outside = np.abs(edited[32:, 40:] - source[32:, 40:]).mean()  # far from the box: only the VAE's error
    inside = np.abs(edited[:16, :24] - source[:16, :24]).mean()
    assert inside > outside
    mask = np.asarray(Image.open(folder / "box.png"))
    assert mask.shape == (48, 64) and mask[:24, :32].all() and not mask[24:, :].any() and not mask[:, 32:].any()
    code, out, err = run_cli([str(photo), "--target", "a dog", *FAST, "--mask", str(folder / "box.png"),
                              "--out", str(folder / "again.png")], capsys)  # fmt: skip
    assert code == 0 and np.array_equal(np.asarray(Image.open(folder / "again.png")), edited.astype(np.uint8)), err


def test_null_text_inversion_end_to_end_and_again_from_its_file(photo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = photo.parent
    argv = [str(photo), "--target", "a dog", *FAST, "--method", "null-text", "--inner-steps", "2", "--cfg-tar", "5"]
    code, out, err = run_cli([*argv, "--out", str(folder / "nt.png"), "--save-inversion", str(folder / "nt.inv")], capsys)
    assert code == 0 and "null-text inversion" in err, err
    settings = json.loads((folder / "nt.png.json").read_text())["settings"]
    assert settings["method"] == "null-text" and settings["cfg_src"] == 5.0 and settings["null_text"] == {"inner_steps": 2, "early_stop": 1e-5}
    inv = Inversion.load(folder / "nt.inv")
    assert inv.settings.method == "null-text" and inv.uncond["text"].shape[:2] == (1, 2)
    again = [str(photo), "--target", "a dog", "--model", "tiny", "--device", "cpu", "--inversion", str(folder / "nt.inv")]
    code, out, err = run_cli([*again, "--out", str(folder / "again.png")], capsys)  # at the guidance it was optimised for
    assert code == 0, err
    assert np.array_equal(np.asarray(Image.open(folder / "again.png")), np.asarray(Image.open(folder / "nt.png")))
    assert json.loads((folder / "again.png.json").read_text())["settings"]["cfg_tar"] == 5.0
    code, out, err = run_cli([*again, "--negative", "blurry", "--out", str(folder / "neg.png")], capsys)
    assert_refused(code, out, err, "leave out --negative")
    assert not (folder / "neg.png").exists()


def test_concepts_without_a_target(photo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = photo.parent
    code, out, err = run_cli([str(photo), "--add", "a hat", "--remove", "a cat", *FAST, "--num-outputs", "2"], capsys)
    assert code == 0, err
    names = [Path(p).name for p in out.split()]
    assert names == ["photo_edit_add-a-hat-remove-a-cat_s0.png", "photo_edit_add-a-hat-remove-a-cat_s1.png"]
    record = json.loads((folder / "photo_edit_add-a-hat-remove-a-cat_s0.png.json").read_text())
    assert [(c["prompt"], c["remove"]) for c in record["concepts"]] == [("a hat", False), ("a cat", True)]


def test_prompt_free_edit_of_a_picture(photo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = photo.parent
    argv = [str(photo), *FAST, "--pc", "1", "--amount", "-1", "--amount", "1", "--pc-iterations", "2", "--region", "0,0,32,24"]
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    assert [Path(p).name for p in out.split()] == ["photo_edit_pc1-minus-1_s0.png", "photo_edit_pc1-plus-1_s0.png"]
    code, out, err = run_cli([str(photo), *FAST, "--pc", "1", "--region", "0,0,99,24", "--out", str(folder / "x.png")], capsys)
    assert_refused(code, out, err, "does not lie inside the 64x48 image")
