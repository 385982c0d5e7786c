"""Evaluation metrics and the ``audio-edit-eval`` / ``image-edit-eval`` commands (tiny models, CPU)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import soundfile as sf
import torch
from commands import run
from scipy import stats

from image_core.evaluation import Scorer, fit_gaussian, frechet_between, frechet_distance, summarize
from image_core.evaluation.audio import windows
from image_core.evaluation.clap import load_clap
from image_core.evaluation.cli import audio_main, image_main
from image_core.evaluation.lpaps import lpaps_windows
from image_core.evaluation.melody import CQT_RATE, cqt_pcc, curve_pcc

RATE = 22050


def tones(semitones: list[int], rate: int = RATE, note: float = 0.25, gain: float = 0.3) -> np.ndarray:
    """A melody of sine notes (semitones from A4), float32 shaped ``(len(semitones) * note * rate,)``."""
    t = np.arange(int(note * rate)) / rate
    return np.concatenate([gain * np.sin(2 * np.pi * 440 * 2 ** (s / 12) * t) for s in semitones]).astype(np.float32)


SCALE = [0, 2, 4, 5, 7, 9, 11, 12, 11, 9, 7, 5, 4, 2, 0, 7]
OTHER = [12, 0, 9, 3, 11, 5, 1, 7, 2, 10, 4, 8, 6, 12, 0, 5]


# ------------------------------------------------------------------------------------------- Fréchet


def closed_form(m1: np.ndarray, a: np.ndarray, m2: np.ndarray, b: np.ndarray) -> float:
    """d^2 of N(m1, Q diag(a) Q^T) and N(m2, Q diag(b) Q^T): commuting covariances share Q, so
    tr (S1 S2)^(1/2) = sum sqrt(a b)."""
    return float(np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2))


def test_frechet_diagonal_and_commuting_covariances_match_the_closed_form() -> None:
    rng = np.random.default_rng(0)
    m1, m2 = rng.normal(size=6), rng.normal(size=6)
    a, b = rng.uniform(0.1, 3.0, 6), rng.uniform(0.1, 3.0, 6)
    expected = closed_form(m1, a, m2, b)
    assert frechet_distance(m1, np.diag(a), m2, np.diag(b)) == pytest.approx(expected, rel=1e-12)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))  # a random rotation: the covariances still commute
    assert frechet_distance(m1, q @ np.diag(a) @ q.T, m2, q @ np.diag(b) @ q.T) == pytest.approx(expected, rel=1e-10)
    # singular covariances (fewer samples than dimensions always give these)
    a[:2] = 0.0
    assert frechet_distance(m1, np.diag(a), m2, np.diag(b)) == pytest.approx(closed_form(m1, a, m2, b), rel=1e-10)
    assert frechet_distance(m1, np.diag(b), m1, np.diag(b)) == pytest.approx(0.0, abs=1e-12)


def test_frechet_of_non_commuting_covariances_matches_sqrtm() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    s1, s2 = x @ x.T, y @ y.T
    m1, m2 = rng.normal(size=5), rng.normal(size=5)
    root = scipy.linalg.sqrtm(s1 @ s2).real
    expected = np.sum((m1 - m2) ** 2) + np.trace(s1 + s2 - 2 * root)
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(frechet_distance(m2, s2, m1, s1), rel=1e-10)


def test_frechet_of_samples_converges_to_that_of_their_gaussians() -> None:
    rng = np.random.default_rng(2)
    m1, m2 = np.array([0.0, 1.0, -1.0, 0.5]), np.array([0.5, 0.0, -1.0, 1.5])
    a, b = np.array([1.0, 2.0, 0.5, 1.5]), np.array([2.0, 1.0, 1.0, 0.25])
    expected = closed_form(m1, a, m2, b)
    errors = []
    for n in (200, 5000, 100000):
        x = m1 + rng.normal(size=(n, 4)) * np.sqrt(a)
        y = m2 + rng.normal(size=(n, 4)) * np.sqrt(b)
        errors.append(abs(frechet_between(x, y) - expected))
    assert errors[-1] < 0.02 * expected
    assert errors[-1] < errors[0]
    fit = fit_gaussian(x)
    np.testing.assert_allclose(fit.mean, m1, atol=0.02)
    np.testing.assert_allclose(np.diag(fit.covariance), a, rtol=0.03)


# ------------------------------------------------------------------------------------------ intervals


def test_summary_is_the_mean_and_student_t_interval() -> None:
    values = [0.3, 0.5, 0.25, 0.9, 0.41, 0.62, math.nan]
    s = summarize(values)
    finite = np.array(values[:-1])
    low, high = stats.t.interval(0.95, len(finite) - 1, loc=finite.mean(), scale=stats.sem(finite))
    assert s.count == 6 and s.mean == pytest.approx(finite.mean())
    assert (s.low, s.high) == (pytest.approx(low), pytest.approx(high))
    one = summarize([2.0])
    assert one.count == 1 and one.mean == 2.0 and math.isnan(one.low)
    assert summarize([]).count == 0


# ------------------------------------------------------------------------------------------------- LPAPS


@pytest.mark.parametrize("normalize", ["tokens", "channels"])
def test_lpaps_is_zero_for_identical_symmetric_and_grows_with_noise(normalize: str) -> None:
    g = torch.Generator().manual_seed(0)
    base = [torch.randn(3, 8, 20, generator=g), torch.randn(3, 16, 5, generator=g)]
    assert torch.all(lpaps_windows(base, base, normalize) == 0)
    noisy = [[f + level * torch.randn(f.shape, generator=g) for f in base] for level in (0.05, 0.3, 1.0, 3.0)]
    d = [lpaps_windows(base, other, normalize) for other in noisy]
    torch.testing.assert_close(d[1], lpaps_windows(noisy[1], base, normalize))
    assert all(torch.all(small < large) for small, large in zip(d, d[1:]))
    assert torch.all(d[-1] <= 4 * len(base))  # each stage adds 2 - 2 cos, at most 4
    # the inner sum is 2 - 2 cos of the normalised vectors (axis 2: tokens, axis 1: channels)
    axis = 2 if normalize == "tokens" else 1
    cos = [torch.nn.functional.cosine_similarity(f, o, dim=axis).double() for f, o in zip(base, noisy[2])]
    torch.testing.assert_close(d[2], sum((2 - 2 * c).mean(dim=1) for c in cos))


def test_lpaps_pairs_the_shorter_recordings_windows() -> None:
    a = [torch.randn(4, 8, 10)]
    assert lpaps_windows(a, [a[0][:2]]).shape == (2,)


# -------------------------------------------------------------------------------------------- CQT-1 PCC


def test_cqt_pcc_is_one_for_the_same_melody_and_low_for_another() -> None:
    import librosa

    melody = librosa.resample(tones(SCALE), orig_sr=RATE, target_sr=CQT_RATE)
    other = librosa.resample(tones(OTHER), orig_sr=RATE, target_sr=CQT_RATE)
    assert cqt_pcc(melody, melody) == pytest.approx(1.0)
    assert cqt_pcc(melody, 0.2 * melody) == pytest.approx(1.0)
    assert cqt_pcc(melody, other) < 0.5
    held = librosa.resample(tones([0] * 8), orig_sr=RATE, target_sr=CQT_RATE)
    assert math.isnan(cqt_pcc(held, melody))  # a constant curve has no correlation


def test_curve_pcc_is_pearson_on_the_common_length() -> None:
    a, b = np.array([1, 3, 2, 5, 4, 9, 9]), np.array([2, 2, 3, 7, 4])
    assert curve_pcc(a, b) == pytest.approx(stats.pearsonr(a[:5], b)[0])


# -------------------------------------------------------------------------------------- CLAP (tiny model)


@pytest.fixture(scope="module")
def clap():  # noqa: ANN201
    return load_clap("tiny", "cpu")


def test_windows_start_every_nine_tenths_of_a_window() -> None:
    parts = windows(np.arange(50), 20)
    assert [len(p) for p in parts] == [20, 20, 14]
    assert [int(p[0]) for p in parts] == [0, 18, 36]


def test_tiny_clap_gives_unit_embeddings_and_similarities_in_range(clap) -> None:  # noqa: ANN001
    wave = np.random.default_rng(0).normal(scale=0.1, size=5 * clap.rate).astype(np.float32)
    features = clap.audio(wave)
    assert features.embeddings.shape == (3, 16)  # 2 s windows every 1.8 s over 5 s
    np.testing.assert_allclose(np.linalg.norm(features.embeddings, axis=1), 1.0, rtol=1e-5)
    assert [s.shape[0] for s in features.stages] == [3, 3]
    texts = clap.text_embeddings(["a jazz piano", "rain on a roof"])
    similarity = features.embeddings @ texts.T
    assert similarity.shape == (3, 2) and np.all(np.abs(similarity) <= 1 + 1e-6)


def test_lpaps_on_the_tiny_clap_grows_with_added_noise(clap) -> None:  # noqa: ANN001
    rng = np.random.default_rng(1)
    wave = np.resize(tones(SCALE, rate=clap.rate), 2 * clap.rate)
    noise = rng.normal(size=wave.shape).astype(np.float32)
    base = clap.audio(wave).stages
    assert float(lpaps_windows(base, base)[0]) == 0.0
    d = [float(lpaps_windows(base, clap.audio(wave + level * noise).stages).mean()) for level in (0.003, 0.03, 0.3)]
    assert 0 < d[0] < d[1] < d[2]


def test_a_saved_clap_folder_loads_through_from_pretrained(clap, tmp_path: Path) -> None:  # noqa: ANN001
    clap.model.save_pretrained(tmp_path)
    clap.features.save_pretrained(tmp_path)
    clap.tokenizer.save_pretrained(tmp_path)
    loaded = load_clap(str(tmp_path), "cpu")
    np.testing.assert_allclose(loaded.text_embeddings(["piano"]), clap.text_embeddings(["piano"]), atol=1e-6)


# ---------------------------------------------------------------------------------------- Scorer contract


def write_audio(folder: Path) -> dict[str, Path]:
    rng = np.random.default_rng(3)
    melody = tones(SCALE)
    files = {
        "in": melody,
        "gain": 0.5 * melody,
        "noisy": melody + 0.05 * rng.normal(size=melody.shape).astype(np.float32),
        "other": tones(OTHER),
        "louder": 0.9 * melody,
    }
    paths = {}
    for name, wave in files.items():
        paths[name] = folder / f"{name}.wav"
        sf.write(paths[name], wave, RATE)
    return paths


def test_scorer_scores_one_results_row(tmp_path: Path) -> None:
    paths = write_audio(tmp_path)
    scorer = Scorer.create("audio", "tiny", "cpu")
    row = {"input": str(paths["in"]), "output": str(paths["gain"]), "target": "soft sine melody",
           "method": "ddpm", "setting": "tstart=100", "status": "done"}  # fmt: skip
    scores = scorer.score(row)
    assert set(scores) == {"clap", "lpaps", "cqt_pcc"}
    assert -1 <= scores["clap"] <= 1 and scores["lpaps"] >= 0 and scores["cqt_pcc"] == pytest.approx(1.0)
    same = scorer.score({**row, "output": str(paths["in"]), "target": None})
    assert set(same) == {"lpaps", "cqt_pcc"} and same["lpaps"] == 0.0


def test_image_scorer_gives_clip_score_and_lpips(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    picture = (rng.random((40, 48, 3)) * 255).astype(np.uint8)
    Image.fromarray(picture).save(tmp_path / "a.png")
    noisy = np.clip(picture + rng.normal(0, 40, picture.shape), 0, 255).astype(np.uint8)
    Image.fromarray(noisy).save(tmp_path / "b.png")
    scorer = Scorer.create("image", "tiny", "cpu")
    row = {"input": str(tmp_path / "a.png"), "output": str(tmp_path / "b.png"), "target": "a cat", "method": "ddpm",
           "setting": "", "status": "done"}  # fmt: skip
    scores = scorer.score(row)
    assert set(scores) == {"clip", "lpips"} and 0 <= scores["clip"] <= 100 and scores["lpips"] > 0
    assert scorer.score({**row, "output": row["input"]})["lpips"] == 0.0


# ------------------------------------------------------------------------------------------------ commands


def results_file(folder: Path, paths: dict[str, Path]) -> Path:
    rows = [
        ("gain", "soft sine melody", "ddpm", "tstart=50"),
        ("louder", "loud sine melody", "ddpm", "tstart=50"),
        ("noisy", "noisy melody", "ddpm", "tstart=100"),
        ("other", "another tune", "sdedit", "tstart=50"),
        ("noisy", "noisy melody", "sdedit", "tstart=50"),
    ]
    lines = [{"input": "in.wav", "output": f"{out}.wav", "target": t, "method": m, "setting": s, "status": "done"}
             for out, t, m, s in rows]  # fmt: skip
    lines.append({"input": "in.wav", "output": None, "target": "x", "method": "sdedit", "setting": "tstart=100",
                  "status": "failed", "error": "out of memory"})  # fmt: skip
    file = folder / "results.jsonl"
    file.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return file


def test_audio_eval_end_to_end_writes_the_table_and_the_figure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    paths = write_audio(tmp_path)
    results = results_file(tmp_path, paths)
    figure = tmp_path / "tradeoff.png"
    code, out, err = run(audio_main, [str(results), "--clap-model", "tiny", "--device", "cpu", "--plot", str(figure),
                                      "--reference", "inputs"], capsys)  # fmt: skip
    assert code == 0, err
    with (tmp_path / "evaluation.csv").open() as f:
        table = list(csv.DictReader(f))
    assert [(r["method"], r["setting"], r["scored"], r["failed"]) for r in table] == [
        ("ddpm", "tstart=50", "2", "0"), ("ddpm", "tstart=100", "1", "0"),
        ("sdedit", "tstart=50", "2", "0"), ("sdedit", "tstart=100", "0", "1"),
    ]  # fmt: skip
    first = table[0]
    assert float(first["cqt_pcc_mean"]) == pytest.approx(1.0)  # gain changes keep the melody
    assert float(first["clap_low"]) <= float(first["clap_mean"]) <= float(first["clap_high"])
    assert float(first["fad"]) >= 0 and table[3]["fad"] == ""
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "ddpm" in out and "Student-t" in out


def test_audio_eval_over_folders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    inputs, edits = tmp_path / "inputs", tmp_path / "ddpm"
    inputs.mkdir(), edits.mkdir()
    sf.write(inputs / "song.wav", tones(SCALE), RATE)
    sf.write(edits / "song_edit_s0.wav", 0.5 * tones(SCALE), RATE)
    sf.write(edits / "song_edit_s1.wav", tones(OTHER), RATE)
    code, out, err = run(audio_main, ["--outputs", str(edits), "--inputs", str(inputs), "--target", "piano",
                                      "--clap-model", "tiny", "--device", "cpu"], capsys)  # fmt: skip
    assert code == 0, err
    table = list(csv.DictReader((edits / "evaluation.csv").open()))
    assert table[0]["method"] == "ddpm" and table[0]["scored"] == "2" and table[0]["clap_n"] == "2"


def test_image_eval_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    picture = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    Image.fromarray(picture).save(tmp_path / "in.png")
    Image.fromarray(255 - picture).save(tmp_path / "out.png")
    line = {"input": "in.png", "output": "out.png", "target": "a cat", "method": "ddpm", "setting": "", "status": "done"}
    (tmp_path / "results.jsonl").write_text(json.dumps(line) + "\n")
    code, out, err = run(image_main, [str(tmp_path), "--clip-model", "tiny", "--device", "cpu",
                                      "--plot", str(tmp_path / "p.png")], capsys)  # fmt: skip
    assert code == 0, err
    table = list(csv.DictReader((tmp_path / "evaluation.csv").open()))
    assert float(table[0]["lpips_mean"]) > 0 and (tmp_path / "p.png").is_file()


def bad_setups(tmp_path: Path) -> dict[str, list[str]]:
    paths = write_audio(tmp_path)
    results = results_file(tmp_path, paths)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    failed_only = tmp_path / "failed.jsonl"
    failed_only.write_text(json.dumps({"input": "in.wav", "output": None, "method": "ddpm", "status": "failed"}) + "\n")
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x10\x00\x00\x00WAVEnot really audio")
    with_corrupt = tmp_path / "corrupt.jsonl"
    with_corrupt.write_text(json.dumps({"input": "in.wav", "output": "corrupt.wav", "target": "x", "method": "ddpm",
                                        "status": "done"}) + "\n")  # fmt: skip
    several = tmp_path / "several.jsonl"
    several.write_text(json.dumps({"input": "in.wav", "output": "gain.wav", "target": "jazz|rock", "method": "ddpm",
                                   "status": "done"}) + "\n")  # fmt: skip
    broken_json = tmp_path / "broken.jsonl"
    broken_json.write_text('{"input": "in.wav", "output": \n')
    missing_output = tmp_path / "missing.jsonl"
    missing_output.write_text(json.dumps({"input": "in.wav", "output": "gone.wav", "method": "ddpm", "status": "done"}) + "\n")
    unmatched = tmp_path / "unmatched"
    unmatched.mkdir()
    sf.write(unmatched / "elsewhere_edit.wav", tones(SCALE), RATE)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    sf.write(inputs / "song.wav", tones(SCALE), RATE)
    tiny = ["--clap-model", "tiny", "--device", "cpu", "--csv", str(tmp_path / "table.csv")]
    return {
        "missing results": [str(tmp_path / "nope.jsonl"), *tiny],
        "empty results": [str(empty), *tiny],
        "only failed rows": [str(failed_only), *tiny],
        "corrupt audio": [str(with_corrupt), *tiny],
        "broken JSON": [str(broken_json), *tiny],
        "missing output": [str(missing_output), *tiny],
        "edit without input": ["--outputs", str(unmatched), "--inputs", str(inputs), *tiny],
        "missing inputs folder": ["--outputs", str(unmatched), "--inputs", str(tmp_path / "none"), *tiny],
        "results and folders": [str(results), "--outputs", str(unmatched), *tiny],
        "missing reference": [str(results), "--reference", str(tmp_path / "ref"), *tiny],
        "unknown model folder": [str(results), "--clap-model", str(tmp_path / "no-model"), "--csv", str(tmp_path / "table.csv")],
        "plot not png": [str(results), "--plot", str(tmp_path / "p.jpg"), *tiny],
        "several targets in a row": [str(several), *tiny],
    }


def test_bad_input_exits_2_with_one_line_and_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name, argv in bad_setups(tmp_path).items():
        code, out, err = run(audio_main, argv, capsys)
        assert code == 2, name
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, (name, err)
        assert not (tmp_path / "table.csv").exists(), name
    (tmp_path / "table.csv").write_text("kept")
    code, _, err = run(audio_main, [str(tmp_path / "results.jsonl"), "--clap-model", "tiny", "--csv", str(tmp_path / "table.csv")], capsys)
    assert code == 2 and "--overwrite" in err and (tmp_path / "table.csv").read_text() == "kept"


def test_lpips_without_its_weights_or_torchvision_fails_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "in.png")
    line = {"input": "in.png", "output": "in.png", "target": "a cat", "method": "ddpm", "status": "done"}
    (tmp_path / "results.jsonl").write_text(json.dumps(line) + "\n")
    code, _, err = run(image_main, [str(tmp_path), "--clip-model", "tiny", "--lpips-net", "alex", "--device", "cpu"], capsys)
    if code == 0:
        pytest.skip("LPIPS loaded: torchvision and its ImageNet weights are present here")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "LPIPS" in err
    assert not (tmp_path / "evaluation.csv").exists()
