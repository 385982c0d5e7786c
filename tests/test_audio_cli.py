"""The ``audio-edit`` command end to end with the tiny random-weight AudioLDM2 (CPU)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from commands import run
import soundfile as sf

from image_core.cli_outputs import record_path
from audio_edit.cli import main

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "melody.flac"
FAST = ["--model", "tiny", "--steps", "6", "--tstart", "3", "--device", "cpu"]
FASTEST = ["--model", "tiny", "--steps", "4", "--tstart", "1", "--device", "cpu"]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``audio-edit argv`` run in this process."""
    return run(main, argv, capsys)


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A spoken sentence from espeak-ng (22.05 kHz mono WAV); skipped where espeak-ng is missing."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(path), "Edit this sentence, please."], check=True, capture_output=True)
    return path


def test_end_to_end_on_the_example_melody(tmp_path: Path) -> None:
    """Two targets x two seeds of a real 44.1 kHz stereo FLAC, plus the spectrogram picture."""
    source = tmp_path / "melody.flac"
    shutil.copy(EXAMPLE, source)
    before = digest(source)
    cmd = [sys.executable, "-m", "audio_edit", str(source), "--target", "jazz piano", "--target", "a choir",
           "--num-outputs", "2", "--spectrogram", *FAST]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    names = ["melody_edit_jazz-piano_s0.wav", "melody_edit_jazz-piano_s1.wav", "melody_edit_a-choir_s0.wav",
             "melody_edit_a-choir_s1.wav", "melody_edit_jazz-piano_s0_spectrogram.png"]  # fmt: skip
    assert done.stdout.split() == [str(tmp_path / name) for name in names]
    info = sf.info(source)
    edits = []
    for name in names[:4]:
        wave, rate = sf.read(tmp_path / name, dtype="float32")
        assert (wave.shape, rate) == ((info.frames,), info.samplerate)
        assert np.isfinite(wave).all() and np.abs(wave).max() > 0
        edits.append(wave)
    assert not np.allclose(edits[0], edits[1]) and not np.allclose(edits[0], edits[2])
    assert (tmp_path / names[4]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert digest(source) == before
    record = json.loads((tmp_path / "melody_edit_jazz-piano_s0.wav.json").read_text())
    assert record["files"] == {"spectrogram": names[4]} and [o["file"] for o in record["outputs"]] == names[:4]
    listing = sorted([*names, "melody.flac", "melody_edit_jazz-piano_s0.wav.json"])
    assert sorted(p.name for p in tmp_path.iterdir()) == listing  # no temporary files


def test_speech_to_flac_and_overwrite(speech: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "edited.flac"
    code, stdout, err = run_cli([str(speech), "--target", "a robot voice", "--out", str(out), *FAST], capsys)
    assert code == 0, err
    assert stdout.strip() == str(out)
    info, expected = sf.info(out), sf.info(speech)
    assert (info.frames, info.samplerate, info.channels, info.format) == (expected.frames, expected.samplerate, 1, "FLAC")

    stamp = digest(out)
    code, _, err = run_cli([str(speech), "--target", "a choir", "--out", str(out), *FAST], capsys)
    assert code == 2 and "--overwrite" in err and digest(out) == stamp
    code, _, err = run_cli([str(speech), "--target", "a choir", "--out", str(out), "--overwrite", *FAST], capsys)
    assert code == 0, err
    assert digest(out) != stamp


def _text_wav(path: Path) -> None:
    path.write_text("these are notes, not a recording\n" * 20)


def _zero_frames(path: Path) -> None:
    with sf.SoundFile(path, "w", samplerate=16000, channels=1, format="WAV", subtype="PCM_16"):
        pass


def _float_wav(value: float):
    def make(path: Path) -> None:
        samples = np.zeros(1600, np.float32)
        samples[800] = value
        sf.write(path, samples, 16000, subtype="FLOAT")

    return make


def _melody(path: Path) -> None:
    t = np.arange(8000) / 16000
    sf.write(path, (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), 16000)


# case -> (make the input at the given path or None for no file, extra arguments, words of the error)
BAD = {
    "missing file": (None, [], "not found"),
    "directory": ("dir", [], "folder"),
    "empty file": (lambda p: p.write_bytes(b""), [], "empty"),
    "text named .wav": (_text_wav, [], "Cannot decode"),
    "zero frames": (_zero_frames, [], "no audio frames"),
    "nan samples": (_float_wav(np.nan), [], "NaN"),
    "inf samples": (_float_wav(np.inf), [], "infinite"),
    "tstart above steps": (_melody, ["--steps", "10", "--tstart", "20"], "tstart"),
    "no steps": (_melody, ["--steps", "0"], "steps"),
    "negative cfg": (_melody, ["--cfg-tar", "-1"], "guidance"),
    "nan cfg": (_melody, ["--cfg-src", "nan"], "guidance"),
    "eta zero": (_melody, ["--eta", "0"], "eta"),
    "seed beyond 64 bits": (_melody, ["--seed", str(2**64)], "--seed"),
    "negative seed": (_melody, ["--seed", "-3"], "--seed"),
    "empty target": (_melody, ["--target", " "], "--target must not be empty"),
    "unknown extension": (_melody, ["--out", "{out}/edit.xyz"], "extension"),
    "missing output folder": (_melody, ["--out", "{out}/missing/edit.wav"], "does not exist"),
    "model that cannot load": (_melody, ["--model", "{out}/no-model"], "no-model"),
    "name over the limit": (_melody, ["--out", "{out}/" + "x" * 252 + ".wav"], "bytes long"),
    "spectrogram name over the limit": (_melody, ["--out", "{out}/" + "x" * 240 + ".wav", "--spectrogram"], "bytes long"),
    "missing folder with separator": (_melody, ["--out", "{out}/missing/"], "does not exist"),
    "steps with --inversion": (_melody, ["--inversion", "{out}/input.wav", "--steps", "9"], "--steps cannot be given"),
    "eta with --inversion": (_melody, ["--inversion", "{out}/input.wav", "--eta", "1"], "--eta cannot be given"),
    "not an inversion file": (_melody, ["--inversion", "{out}/input.wav"], "inversion file"),
    "inversion-batch zero": (_melody, ["--inversion-batch", "0"], "--inversion-batch must be a positive integer"),
    "threads beyond 1024": (_melody, ["--threads", "2000"], "--threads must be between 1 and 1024"),
    "save-inversion into a folder": (_melody, ["--save-inversion", "{out}/"], "folder"),
    "time range beyond the clip": (_melody, ["--mask", "0.2:0.9s"], "inside the clip's 0..0.50 s"),
    "band above what the model hears": (_melody, ["--mask", "200:9000Hz"], "0..8000 Hz"),
    "two time ranges": (_melody, ["--mask", "0.1:0.2s,0.3:0.4s"], "two seconds ranges"),
    "reversed range": (_melody, ["--mask", "0.4:0.1s"], "does not lie inside"),
    "missing mask picture": (_melody, ["--mask", "{out}/mask.png"], "mask file not found"),
    "sdedit with inversion": (_melody, ["--method", "sdedit", "--save-inversion", "{out}/x.inv"], "inverts nothing"),
    "pc and target": (_melody, ["--pc", "1", "--target", "x"], "not both"),
    "empty concept": (_melody, ["--add", " "], "must not be empty"),
    "threshold of one": (_melody, ["--remove", "drums", "--threshold", "1"], "threshold"),
    "seventeen concepts": (_melody, ["--add", "drums"] * 17, "at most 16"),
    "pc zero": (_melody, ["--pc", "0"], "--pc counts components"),
    "amount nan": (_melody, ["--pc", "1", "--amount", "nan"], "--amount takes finite"),
    "pc region outside the clip": (_melody, ["--pc", "1", "--region", "0.2:0.9"], "inside the clip's"),
    "pc band above nyquist": (_melody, ["--pc", "1", "--band", "100:9000"], "0..8000 Hz"),
    "amount without pc": (_melody, ["--amount", "2"], "go with --pc"),
    "pc file of nothing": (_melody, ["--pc", "1", "--pcs", "{out}/input.wav"], "principal components"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_with_no_output(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make, extra, words = BAD[case]
    source = tmp_path / "input.wav"
    if make == "dir":
        source.mkdir()
    elif make is not None:
        make(source)
    before = digest(source) if source.is_file() else None
    listing = sorted(os.listdir(tmp_path))
    extra = [arg.replace("{out}", str(tmp_path)) for arg in extra]
    target = [] if "--target" in extra or "--pc" in extra else ["--target", "jazz piano"]
    code, stdout, err = run_cli([str(source), *target, "--model", "tiny", "--device", "cpu", *extra], capsys)
    assert code == 2 and stdout == ""
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1 and words in err, err
    assert "Traceback" not in err
    assert sorted(os.listdir(tmp_path)) == listing  # no output, no temporary file
    if before is not None:
        assert digest(source) == before


def test_unwritable_output_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder the user may not write to (simulated: root may write anywhere)."""
    source = tmp_path / "input.wav"
    _melody(source)
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: Path(path) != locked and real_access(path, mode, **kw))
    code, _, err = run_cli([str(source), "--target", "jazz", "--out", str(locked / "e.wav"), *FAST], capsys)
    assert code == 2 and "not writable" in err and len(err.strip().splitlines()) == 1
    assert os.listdir(locked) == []


def test_digital_silence_is_edited(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "silence.wav"
    sf.write(source, np.zeros((24000, 2), np.float32), 48000, subtype="PCM_16")
    code, _, err = run_cli([str(source), "--target", "rain", *FAST], capsys)
    assert code == 0, err
    wave, rate = sf.read(tmp_path / "silence_edit.wav", dtype="float32")
    assert wave.shape == (24000,) and rate == 48000 and np.isfinite(wave).all()


@pytest.mark.parametrize("seconds, words", [(0.5, "noise maps"), (60.0, "decoded samples")])
def test_too_long_for_memory(seconds: float, words: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A clip whose samples or noise maps would not fit in memory is refused before the work starts
    (simulated with 512 KiB of free memory)."""
    from image_core import adapters

    source = tmp_path / "long.wav"
    sf.write(source, 0.1 * np.sin(np.arange(int(16000 * seconds), dtype=np.float32) * 0.05), 16000)
    monkeypatch.setattr(adapters, "available_memory", lambda device="cpu": 2**19)
    code, _, err = run_cli([str(source), "--target", "jazz", *FAST], capsys)
    assert code == 2 and words in err and "MiB are free" in err and len(err.strip().splitlines()) == 1, err
    assert os.listdir(tmp_path) == ["long.wav"]


def test_help_and_bad_input_do_not_load_the_model_libraries() -> None:
    """The command answers --help and refuses a bad file without importing diffusers or transformers."""
    probe = ("import sys; from audio_edit import cli, load_audio; "
             "print(sorted(m for m in ('diffusers', 'transformers') if m in sys.modules))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr


def test_example_script_edits_the_melody_into_four_styles(tmp_path: Path) -> None:
    script = EXAMPLE.parent / "edit_melody.py"
    cmd = [sys.executable, str(script), "--model", "tiny", "--steps", "4", "--tstart", "2", "--out", str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    written = [Path(line) for line in done.stdout.split()]
    assert len(written) == 4 and all(path.parent == tmp_path for path in written)
    frames = sf.info(EXAMPLE).frames
    assert all(sf.info(path).frames == frames for path in written)


def test_a_failed_write_leaves_no_output_at_all(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Outputs are all-or-nothing: the disk filling up at the second file removes the first one too."""
    from audio_edit import audio_io

    source = tmp_path / "input.wav"
    _melody(source)
    real_write, calls = sf.write, []

    def failing_write(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 2:
            raise sf.SoundFileError("No space left on device")
        return real_write(*args, **kwargs)

    monkeypatch.setattr(audio_io.sf, "write", failing_write)
    code, stdout, err = run_cli([str(source), "--target", "jazz", "--target", "rock", *FAST], capsys)
    message = err.strip().splitlines()[-1]  # after the progress bars
    assert code == 2 and stdout == "" and message.startswith("error: Cannot save") and "No space left" in message
    assert str(tmp_path / "input_edit_rock_s0.wav") in message
    assert len(calls) == 2 and os.listdir(tmp_path) == ["input.wav"]


def test_long_legal_out_name_and_out_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A 254-byte output name is written (no nested temporaries 28 bytes longer); --out FOLDER writes the
    default name inside the folder, not FOLDER.wav beside it."""
    source = tmp_path / "input.wav"
    _melody(source)
    name = "é" * 122 + "xxxxxx.wav"  # 254 bytes
    code, stdout, err = run_cli([str(source), "--target", "jazz", "--out", str(tmp_path / name), *FASTEST], capsys)
    assert code == 0, err
    assert stdout.split() == [str(tmp_path / name)] and sf.info(tmp_path / name).frames == 8000
    folder = tmp_path / "edits"
    folder.mkdir()
    code, stdout, err = run_cli([str(source), "--target", "jazz", "--out", str(folder), "--spectrogram", *FASTEST], capsys)
    assert code == 0, err
    assert stdout.split() == [str(folder / "input_edit.wav"), str(folder / "input_edit_spectrogram.png")]
    assert sorted(os.listdir(folder)) == ["input_edit.wav", "input_edit.wav.json", "input_edit_spectrogram.png"]
    record = record_path(tmp_path / name)  # its stem shortened to fit the folder's 255 bytes
    assert len(os.fsencode(record.name)) <= 255 and record.name.endswith(".wav.json")
    assert sorted(os.listdir(tmp_path)) == sorted(["input.wav", name, record.name, "edits"])


def test_saved_inversion_is_edited_again_identically(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from image_core.inversion import Inversion

    source = tmp_path / "input.wav"
    _melody(source)
    saved = tmp_path / "input.inv"
    first = [str(source), "--target", "jazz", "--seed", "7", "--inversion-batch", "1", "--out", str(tmp_path / "a.wav")]
    code, _, err = run_cli([*first, "--save-inversion", str(saved), *FASTEST], capsys)
    assert code == 0, err
    inv = Inversion.load(saved)
    assert inv.settings.seeds == (7,) and (inv.meta["sample_rate"], inv.meta["num_frames"]) == (16000, 8000)
    record = json.loads((tmp_path / "a.wav.json").read_text())
    assert record["model_fingerprint"] == inv.settings.model and record["settings"]["inversion_batch"] == 1
    assert record["settings"]["seeds"] == [7] and record["inversion_saved_to"] == str(saved.resolve())

    again = [str(source), "--target", "jazz", "--inversion", str(saved), "--model", "tiny", "--device", "cpu"]
    code, stdout, err = run_cli([*again, "--out", str(tmp_path / "b.wav")], capsys)
    assert code == 0, err
    assert np.array_equal(sf.read(tmp_path / "a.wav")[0], sf.read(tmp_path / "b.wav")[0])
    assert json.loads((tmp_path / "b.wav.json").read_text())["settings"] == record["settings"] | {"inversion_batch": None}

    longer = tmp_path / "longer.wav"
    sf.write(longer, 0.1 * np.sin(np.arange(8001, dtype=np.float32) * 0.05), 16000)
    listing = sorted(os.listdir(tmp_path))
    code, stdout, err = run_cli([str(longer), *again[1:], "--out", str(tmp_path / "c.wav")], capsys)
    assert code == 2 and stdout == "" and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "another sample rate and length" in err and "num_frames 8000" in err
    assert sorted(os.listdir(tmp_path)) == listing
    code, _, err = run_cli([*first, "--save-inversion", str(saved), *FASTEST], capsys)  # all exist now
    assert code == 2 and "exists" in err and "--overwrite" in err


def test_masked_edit_keeps_the_rest_and_the_mask_reads_back(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A time-frequency region: the mask picture is written, and --mask reads it back to the same edit."""
    source = tmp_path / "input.wav"
    t = np.arange(32000) / 16000
    sf.write(source, (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32), 16000)
    first = [str(source), "--target", "drums", *FASTEST, "--mask", "0.5:1.0s,100:2000Hz", "--save-mask",
             str(tmp_path / "mask.png"), "--out", str(tmp_path / "a.wav")]  # fmt: skip
    code, out, err = run_cli(first, capsys)
    assert code == 0 and out.split() == [str(tmp_path / "a.wav"), str(tmp_path / "mask.png")], err
    again = [str(source), "--target", "drums", *FASTEST, "--mask", str(tmp_path / "mask.png"), "--out", str(tmp_path / "b.wav")]
    code, out, err = run_cli(again, capsys)
    assert code == 0, err
    assert np.array_equal(sf.read(tmp_path / "a.wav")[0], sf.read(tmp_path / "b.wav")[0])
    assert json.loads((tmp_path / "a.wav.json").read_text())["settings"]["mask"] == "0.5:1.0s,100:2000Hz"


def test_prompt_free_edits_along_principal_components(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--pc / --amount: outputs named by component and amount; the components saved and used again."""
    source = tmp_path / "input.wav"
    _melody(source)
    argv = [str(source), *FASTEST, "--pc", "1", "--pc", "2", "--amount", "-2", "--amount", "2", "--pc-iterations", "2",
            "--region", "0.1:0.4", "--save-pcs", str(tmp_path / "clip.pcs"), "--out", str(tmp_path / "p.wav")]  # fmt: skip
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    names = [Path(p).name for p in out.split()]
    assert names == ["p_pc1-minus-2_s0.wav", "p_pc1-plus-2_s0.wav", "p_pc2-minus-2_s0.wav", "p_pc2-plus-2_s0.wav", "clip.pcs"]
    names = names[:4]
    waves = [sf.read(tmp_path / name)[0] for name in names]
    assert all(w.shape == (8000,) for w in waves) and not np.allclose(waves[0], waves[1])
    record = json.loads((tmp_path / "p_pc1-minus-2_s0.wav.json").read_text())
    assert record["settings"]["principal_components"]["pc"] == [1, 2]
    again = [str(source), *FASTEST, "--pc", "2", "--amount", "2", "--pcs", str(tmp_path / "clip.pcs"), "--out", str(tmp_path / "q.wav")]
    code, out, err = run_cli(again, capsys)
    assert code == 0, err
    # batch 1 instead of 4: float32 kernel rounding, carried through the drift's steps (about 4 LSB of 16 bits)
    assert np.allclose(sf.read(tmp_path / "q.wav")[0], waves[3], atol=3e-4)
    code, out, err = run_cli([*again[:-2], "--pc", "3", "--out", str(tmp_path / "r.wav")], capsys)
    assert code == 2 and "between 1 and 2" in err and not (tmp_path / "r.wav").exists()


def test_concepts_alone_edit_the_clip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "input.wav"
    _melody(source)
    code, out, err = run_cli([str(source), *FASTEST, "--add", "jazz piano", "--remove", "drums", "--warmup", "0"], capsys)
    assert code == 0, err
    assert out.split() == [str(tmp_path / "input_edit.wav")]
    assert sf.read(tmp_path / "input_edit.wav")[0].shape == (8000,)
    record = json.loads((tmp_path / "input_edit.wav.json").read_text())
    assert [c["prompt"] for c in record["concepts"]] == ["jazz piano", "drums"] and record["targets"] == []


def test_null_text_inversion_edits_a_clip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from image_core.inversion import Inversion

    source = tmp_path / "input.wav"
    _melody(source)
    saved = tmp_path / "input.inv"
    argv = [str(source), "--target", "jazz", "--method", "null-text", "--inner-steps", "2", *FASTEST]
    code, out, err = run_cli([*argv, "--out", str(tmp_path / "a.wav"), "--save-inversion", str(saved)], capsys)
    assert code == 0 and "null-text inversion" in err, err
    assert sf.read(tmp_path / "a.wav")[0].shape == sf.read(source)[0].shape
    inv = Inversion.load(saved)
    assert inv.settings.method == "null-text" and inv.uncond.keys() == {"gpt2", "t5", "t5_mask"}
    assert json.loads((tmp_path / "a.wav.json").read_text())["settings"]["cfg_src"] == 12.0  # optimised for --cfg-tar
