"""``audio-edit batch`` / ``image-edit batch`` with the tiny random-weight models (CPU): every row once,
inversions reused, resuming, failing rows, bad manifests, sweeps, accelerate sharding, the benchmark."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from commands import run

import image_core.runner
from audio_edit.cli import COMMAND, main
from image_core.batch import RESULTS, parse_batch, plan_jobs, read_manifest

ROOT = Path(__file__).resolve().parent.parent
FAST = ["--model", "tiny", "--steps", "4", "--tstart", "1", "--device", "cpu", "--threads", "1"]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def tone(path: Path, hz: float, seconds: float = 0.5, rate: int = 16000) -> Path:
    t = np.arange(int(rate * seconds)) / rate
    sf.write(path, (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32), rate)
    return path


def write_csv(path: Path, header: str, *rows: str) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


def results(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / RESULTS).read_text().splitlines()]


def run_batch(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    return run(main, ["batch", *argv], capsys)


@pytest.fixture()
def tones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder (the working directory) with a.wav, b.wav and c.wav, three short tones."""
    monkeypatch.chdir(tmp_path)
    for name, hz in (("a", 220.0), ("b", 330.0), ("c", 440.0)):
        tone(tmp_path / f"{name}.wav", hz)
    return tmp_path


@pytest.fixture()
def inversions(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The inputs ``image_core.runner.invert`` is called for, in order."""
    seen: list[str] = []
    real = image_core.runner.invert

    def counted(editor, request, item):  # type: ignore[no-untyped-def]
        seen.append(getattr(item, "path", None) or str(request.seeds))
        return real(editor, request, item)

    monkeypatch.setattr(image_core.runner, "invert", counted)
    return seen


def test_every_row_once_inversions_reused_and_a_row_equals_the_single_edit(
    tones: Path, inversions: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write_csv(
        tones / "m.csv", "input,target,cfg-tar,num-outputs",
        "a.wav,jazz|rock,,2", "a.wav,jazz,6,2", "b.wav,piano,,",
    )  # fmt: skip
    code, out, err = run_batch([str(manifest), "--out", "out", *FAST], capsys)
    assert code == 0, err
    assert "3 of 3 rows done" in out
    lines = results(tones / "out")
    assert [(line["row"], line["target"], line["seed"]) for line in lines] == [
        (1, "jazz", 0), (1, "jazz", 1), (1, "rock", 0), (1, "rock", 1), (2, "jazz", 0), (2, "jazz", 1), (3, "piano", 0),
    ]  # fmt: skip
    assert all(line["status"] == "done" and line["error"] is None for line in lines)
    assert [line["setting"] for line in lines] == [""] * 4 + ["cfg-tar=6"] * 2 + [""]
    outputs = [Path(line["output"]) for line in lines]
    assert len(set(outputs)) == 7 and all(path.is_file() for path in outputs)
    assert sorted(p.name for p in (tones / "out").iterdir()) == sorted([RESULTS, *(p.name for p in outputs)])  # no temporaries
    assert len(inversions) == 2  # a.wav's inversion (2 seeds) served rows 1 and 2
    assert [line["inversion_reused"] for line in lines] == [False] * 4 + [True] * 2 + [False]
    assert lines[0]["settings"]["cfg_tar"] == 12.0 and lines[4]["settings"]["cfg_tar"] == 6.0
    assert all(isinstance(line["seconds"], float) and line["method"] == "ddpm" for line in lines)
    single = tones / "single.wav"
    code, _, err = run(main, ["b.wav", "--target", "piano", "--out", str(single), *FAST], capsys)
    assert code == 0, err
    assert digest(single) == digest(outputs[6])  # a row is the edit the single command makes


def test_resume_skips_done_rows_and_redoes_missing_or_changed_ones(
    tones: Path, inversions: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = write_csv(tones / "m.csv", "input,target", "a.wav,jazz", "b.wav,piano", "c.wav,choir")
    assert run_batch([str(manifest), "--out", "out", *FAST], capsys)[0] == 0
    first = results(tones / "out")
    assert len(inversions) == 3
    code, out, _ = run_batch([str(manifest), "--out", "out", *FAST], capsys)
    assert code == 0 and "3 already before this run" in out
    assert len(inversions) == 3  # nothing ran again
    assert results(tones / "out") == first
    Path(first[1]["output"]).unlink()  # b's edit lost: b runs again
    write_csv(manifest, "input,target", "c.wav,choir", "a.wav,jazz", "b.wav,piano", "a.wav,flute")  # reordered, one added
    code, out, _ = run_batch([str(manifest), "--out", "out", *FAST], capsys)
    assert code == 0 and "4 of 4 rows done (2 already before this run)" in out
    assert len(inversions) == 5
    again = results(tones / "out")
    assert [(line["row"], line["target"]) for line in again] == [(1, "choir"), (2, "jazz"), (3, "piano"), (4, "flute")]
    assert again[0]["seconds"] == first[2]["seconds"]  # kept from the first run, renumbered
    assert Path(again[2]["output"]).is_file()


def test_a_failing_row_is_recorded_and_the_others_run(tones: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tones / "broken.wav").write_text("not audio")
    manifest = write_csv(tones / "m.csv", "input,target", "a.wav,jazz", "broken.wav,piano|choir", "b.wav,rock")
    code, out, err = run_batch([str(manifest), "--out", "out", *FAST], capsys)
    assert code == 0
    assert "2 of 3 rows done" in out and "1 failed" in out and "warning: 1 rows failed" in err
    lines = results(tones / "out")
    assert [(line["row"], line["status"]) for line in lines] == [(1, "done"), (2, "failed"), (2, "failed"), (3, "done")]
    failed = lines[1]
    assert failed["output"] is None and failed["target"] == "piano" and "\n" not in failed["error"] and failed["error"]
    (tones / "broken.wav").unlink()
    tone(tones / "broken.wav", 550.0)  # fixed: the rerun does that row only
    code, out, _ = run_batch([str(manifest), "--out", "out", *FAST], capsys)
    assert code == 0 and "3 of 3 rows done (2 already before this run), 0 failed" in out


@pytest.mark.parametrize(
    ("header", "rows", "options", "message"),
    [
        ("target", ["jazz"], [], "row 1: no input"),
        ("input,target,colour", ["a.wav,jazz,red"], [], "row 1: unknown option 'colour'"),
        ("input,target,method", ["a.wav,jazz,", "a.wav,jazz,magic"], [], "row 2: argument --method: invalid choice: 'magic'"),
        ("input,target", ["a.wav,jazz", "missing.wav,jazz"], [], "row 2: input file not found: missing.wav"),
        ("input,target", ["a.wav,jazz", "b.wav,jazz", "a.wav,jazz"], [], "row 3: its output a_jazz_s0.wav is also row 1's"),
        ("input,target,out", ["a.wav,jazz,x.wav", "b.wav,rock,x.wav"], [], "row 2: its output x.wav is also row 1's"),
        ("input,target,model", ["a.wav,jazz,tiny"], [], "row 1: --model is one for all rows"),
        ("input,target,tstart", ["a.wav,jazz,", "b.wav,rock,9"], [], "row 2: tstart must be between"),
        ("input,target", ["a.wav,jazz"], ["--save-inversion", "x.inv"], "--save-inversion is not available in a batch run"),
        ("input,target", ["a.wav,jazz"], ["--sweep", "tstart"], "--sweep takes OPTION=V1,V2"),
        ("input,target", ["a.wav,jazz"], ["--sweep", "tstart=1,9"], "row 1: tstart must be between"),
    ],
)
def test_bad_manifests_are_refused_before_anything(
    tones: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, header: str, rows: list[str],
    options: list[str], message: str,
) -> None:  # fmt: skip
    from audio_edit.editor import AudioEditor

    def no_model(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model loaded")

    monkeypatch.setattr(AudioEditor, "from_pretrained", no_model)
    manifest = write_csv(tones / "m.csv", header, *rows)
    code, out, err = run_batch([str(manifest), "--out", "out", *FAST, *options], capsys)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not (tones / "out").exists()


def test_sweep_expands_every_row_and_labels_its_settings(tones: Path) -> None:
    manifest = write_csv(tones / "m.csv", "input,target,tstart", "a.wav,jazz,", "b.wav,rock|choir,2")
    options = parse_batch(COMMAND, [str(manifest), *FAST, "--steps", "8", "--sweep", "tstart=2,3,4", "cfg-tar=3,12"])
    jobs = plan_jobs(COMMAND, options, read_manifest(manifest))
    assert [(job.row, job.variant) for job in jobs] == [(row, v) for row in (1, 2) for v in range(6)]
    assert [job.setting for job in jobs[:6]] == [f"tstart={t} cfg-tar={c}" for t in (2, 3, 4) for c in (3, 12)]
    assert [(job.args.tstart, job.args.cfg_tar, job.args.steps) for job in jobs[6:]] == [
        (t, float(c), 8) for t in (2, 3, 4) for c in (3, 12)
    ]  # the sweep's values replace the row's; the command line's stay
    assert [job.args.target for job in jobs[6:8]] == [["rock", "choir"]] * 2
    assert len({path for job in jobs for path in job.paths}) == 6 + 12
    assert jobs[0].paths[0].name == "a_tstart-2-cfg-tar-3_jazz_s0.wav"
    assert len({job.group for job in jobs}) == 6  # 2 inputs x 3 tstart (cfg-tar does not change the inversion)


def test_jsonl_manifest_lists_and_command_line_defaults(tones: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = tones / "m.jsonl"
    manifest.write_text(
        json.dumps({"input": "a.wav", "target": ["jazz | band", "rock"], "seed": 3}) + "\n\n"
        + json.dumps({"input": "b.wav", "add": "drums", "warmup": 0, "out": "drums.flac"}) + "\n"
    )  # fmt: skip
    code, out, err = run_batch([str(manifest), "--out", "out", *FAST, "--target", "a choir|x", "--cfg-tar", "5"], capsys)
    assert code == 0, err
    lines = results(tones / "out")
    assert [(line["target"], line["seed"]) for line in lines] == [("jazz | band", 3), ("rock", 3), ("a choir|x", 0)]
    assert lines[2]["settings"]["add"] == ["drums"] and lines[2]["setting"] == "warmup=0"
    assert lines[2]["output"].endswith("out/drums.flac") and sf.info(lines[2]["output"]).format == "FLAC"
    assert all(line["settings"]["cfg_tar"] == 5.0 for line in lines)


def test_image_batch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    from image_core.stable_diffusion.cli import main as image_main

    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    for name in ("x", "y"):
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(tmp_path / f"{name}.png")
    manifest = write_csv(tmp_path / "m.csv", "input,target,method", "x.png,a dog,", "y.png,a cat,sdedit")
    code, out, err = run(image_main, ["batch", str(manifest), "--out", "out", *FAST], capsys)
    assert code == 0, err
    lines = results(tmp_path / "out")
    assert [(line["method"], line["status"]) for line in lines] == [("ddpm", "done"), ("sdedit", "done")]
    assert Image.open(lines[0]["output"]).size == (64, 64)


def test_eval_scores_each_output(tones: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("image_core.evaluation")
    manifest = write_csv(tones / "m.csv", "input,target", "a.wav,jazz")
    code, _, err = run_batch([str(manifest), "--out", "out", *FAST, "--eval", "--clap-model", "tiny"], capsys)
    assert code == 0, err
    (line,) = results(tones / "out")
    assert line["metrics"] and all(isinstance(value, float) for value in line["metrics"].values())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_accelerate_two_processes_equal_one(tones: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Rows split between 2 CPU processes: every row once (each process some), the outputs byte-identical
    to one process's."""
    if shutil.which("accelerate") is None:
        pytest.skip("accelerate's launcher is not installed")
    manifest = write_csv(tones / "m.csv", "input,target,seed", "a.wav,jazz,", "b.wav,rock,1", "c.wav,choir,", "a.wav,flute,")
    assert run_batch([str(manifest), "--out", "one", *FAST], capsys)[0] == 0
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), "OMP_NUM_THREADS": "1"}
    # --multi_gpu starts the processes through torchrun (--cpu alone starts one process unless MPI is set up);
    # with --device cpu they run on the CPU and talk over gloo
    launch = ["accelerate", "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
              "--dynamo_backend", "no", "--main_process_port", str(_free_port())]  # fmt: skip
    done = subprocess.run([*launch, "-m", "audio_edit.cli", "batch", str(manifest), "--out", "two", *FAST],
                          cwd=tones, env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    one, two = results(tones / "one"), results(tones / "two")
    assert [(line["row"], line["target"], line["status"]) for line in two] == [(line["row"], line["target"], "done") for line in one]
    assert len({line["key"] for line in two}) == 4 and not list((tones / "two").glob("results.part-*"))
    assert {line["process"] for line in two} == {0, 1} and {line["process"] for line in one} == {0}
    for a, b in zip(one, two):
        assert Path(a["output"]).name == Path(b["output"]).name
        assert digest(Path(a["output"])) == digest(Path(b["output"]))


def test_medley_benchmark_on_a_synthetic_stand_in(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import medley
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    audio = tmp_path / "audio"
    audio.mkdir()
    for name, hz in (("MusicDelta_Tone_MIX.wav", 220.0), ("MusicDelta_Hum_MIX.wav", 110.0)):
        tone(audio / name, hz, rate=22050)
    captions = tmp_path / "captions"
    captions.mkdir()
    (captions / medley.SOURCES).write_text(
        'filename,source_captions\nMusicDelta_Tone_MIX.wav,"A pure tone."\nMusicDelta_Tone_MIX.wav,"A sine, steady."\n'
        'MusicDelta_Hum_MIX.wav,"A low hum."\n'
    )  # fmt: skip
    (captions / medley.TARGETS).write_text(
        "filename,target_captions,can_be_used_without_source,source_caption_index\n"
        'MusicDelta_Tone_MIX.wav,"A piano note.",1,1\nMusicDelta_Tone_MIX.wav,"A violin, steady.",0,2\n'
        'MusicDelta_Tone_MIX.wav,"A flute.",1,1\nMusicDelta_Hum_MIX.wav,"A choir.",1,1\n'
    )  # fmt: skip
    rows = medley.build_manifest(audio, captions / medley.SOURCES, captions / medley.TARGETS, "both")
    assert [(Path(r["input"]).name, r["source"], r["target"]) for r in rows] == [
        ("MusicDelta_Tone_MIX.wav", "A pure tone.", ["A piano note.", "A flute."]),
        ("MusicDelta_Tone_MIX.wav", "", ["A piano note.", "A flute."]),
        ("MusicDelta_Tone_MIX.wav", "A sine, steady.", ["A violin, steady."]),
        ("MusicDelta_Hum_MIX.wav", "A low hum.", ["A choir."]),
        ("MusicDelta_Hum_MIX.wav", "", ["A choir."]),
    ]
    out = tmp_path / "run"
    medley.main(["--audio", str(audio), "--captions", str(captions), "--out", str(out), "--limit", "1", *FAST])
    lines = results(out)
    assert [(line["source"], line["target"], line["status"]) for line in lines] == [
        ("A pure tone.", "A piano note.", "done"), ("A pure tone.", "A flute.", "done"), ("A sine, steady.", "A violin, steady.", "done"),
    ]  # fmt: skip
    assert all(sf.info(line["output"]).samplerate == 22050 for line in lines)
