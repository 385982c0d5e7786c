"""Tests of the listening demo (audio_edit.demo) and the spectrogram plots (audio_edit.spectrogram).

The browser tests serve the demo with the tiny random-weight model and drive headless Chromium with
Playwright: upload a recording, edit it, download the edit; change only the target and see the inversion
reused; upload files that are not audio and read the error in the page. Set DEMO_SCREENSHOT=<path> to
save a screenshot of the page after the edit.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audio_edit import demo as demo_module
from audio_edit.demo import MAX_VARIATIONS, DemoRunner, InversionCache, build_app
from audio_edit.spectrogram import save_spectrograms, spectrogram_image
from image_core.errors import InputError
from image_core.inversion import Inversion, InversionSettings

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
STEPS, T_START = 10, 3  # tiny runs: a few UNet calls per stage
TIMEOUT_MS = 180_000  # a slow, shared machine


def melody(path: Path, sample_rate: int = 22050, seconds: float = 2.5) -> Path:
    """A few harmonic notes with light noise, written as 16-bit WAV."""
    t = np.arange(round(sample_rate * seconds)) / sample_rate
    pitch = np.array([220.0, 277.2, 329.6, 440.0])[(t * 4).astype(int) % 4]
    phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
    wave = sum(np.sin(k * phase) / k for k in (1, 2, 3)) + 0.02 * np.random.default_rng(0).standard_normal(t.size)
    sf.write(path, (0.4 * wave / np.abs(wave).max()).astype(np.float32), sample_rate, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Spoken "hello world" from espeak-ng where it is installed, else a synthesised melody."""
    folder = tmp_path_factory.mktemp("clips")
    speech = folder / "hello.wav"
    if shutil.which("espeak-ng"):
        done = subprocess.run(["espeak-ng", "-w", str(speech), "hello world"], capture_output=True, timeout=60)
        if done.returncode == 0 and speech.stat().st_size > 1000:
            return speech
    return melody(folder / "melody.wav")


# ------------------------------------------------------------------------------------------ no browser


class FakeEditor:
    """Records its calls; returns silent-ish clips of the input's length and rate."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.progress = False

    def invert(self, audio, source_prompt="", num_steps=200, t_start=100, cfg_src=3.0, eta=1.0, seed=0) -> Inversion:
        self.calls.append("invert")
        seeds = [seed] if isinstance(seed, int) else list(seed)
        maps = torch.zeros(len(seeds), t_start, 1, 2, 2)
        settings = InversionSettings("fake", num_steps, t_start, eta, cfg_src, source_prompt, tuple(seeds))
        meta = {"sample_rate": audio.sample_rate, "num_frames": audio.num_frames}
        return Inversion(torch.zeros(len(seeds), 1, 2, 2), maps, maps.clone(), torch.arange(t_start), settings, meta)

    def _clips(self, inv: Inversion, count: int) -> list[np.ndarray]:
        rng = np.random.default_rng(len(self.calls))
        return [0.1 * rng.standard_normal(inv.meta["num_frames"]).astype(np.float32) for _ in range(count)]

    def edit(self, inv: Inversion, target_prompt, cfg_tar=12.0) -> list[np.ndarray]:
        self.calls.append("edit")
        return self._clips(inv, len(target_prompt) * inv.num_latents)

    def reconstruct(self, inv: Inversion) -> list[np.ndarray]:
        self.calls.append("reconstruct")
        assert inv.num_latents == 1  # the page plays one reconstruction
        return self._clips(inv, inv.num_latents)


def test_cache_reuses_the_inversion_when_only_the_target_changes(recording: Path, tmp_path: Path) -> None:
    editor = FakeEditor()
    runner = DemoRunner(editor, cache_size=2, output_dir=tmp_path)
    first = runner.run(str(recording), "jazz piano", steps=STEPS, t_start=T_START, variations=3, session="a")
    assert editor.calls == ["invert", "reconstruct", "edit"] and not first.reused
    second = runner.run(str(recording), "a choir", steps=STEPS, t_start=T_START, cfg_tar=5, variations=3, session="a")
    assert editor.calls == ["invert", "reconstruct", "edit", "edit"]
    assert second.reused and second.status.startswith("Reused the inversion: only the edit ran")
    info = sf.info(recording)
    assert [label for label, _ in second.edits] == [f"Edit {i + 1} (seed {i})" for i in range(3)]
    for file in [second.reconstruction, *(file for _, file in second.edits)]:
        assert (sf.info(file).frames, sf.info(file).samplerate) == (info.frames, info.samplerate)
    assert second.spectrogram.stat().st_size > 0

    # Anything the inversion depends on inverts again: seed, source prompt, settings, session.
    runner.run(str(recording), "a choir", steps=STEPS, t_start=T_START, seed=1, variations=3, session="a")
    runner.run(str(recording), "a choir", steps=STEPS, t_start=T_START, variations=3, session="b")
    assert editor.calls.count("invert") == 3
    assert len(runner.cache) == 2  # bounded: the least recently used entry is gone
    runner.run(str(recording), "jazz", steps=STEPS, t_start=T_START, variations=3, session="a")
    assert editor.calls.count("invert") == 4


def test_runner_refuses_bad_input_with_one_line(recording: Path, tmp_path: Path) -> None:
    runner = DemoRunner(FakeEditor(), output_dir=tmp_path)
    text = tmp_path / "notes.wav"
    text.write_text("not a recording\n" * 50)
    with pytest.raises(InputError) as caught:
        runner.run(str(text), "jazz piano")
    message = str(caught.value)
    assert "notes.wav" in message and str(tmp_path) not in message and "\n" not in message
    for kwargs, words in [
        ({"audio_path": None}, "upload or record"),
        ({"target_prompt": "  "}, "target description"),
        ({"t_start": 300}, "tstart"),
        ({"variations": MAX_VARIATIONS + 1}, "variations"),
    ]:
        arguments = {"audio_path": str(recording), "target_prompt": "jazz", **kwargs}
        with pytest.raises(InputError, match=words):
            runner.run(**arguments)
    assert runner.editor.calls == []


def test_lru_cache_is_bounded() -> None:
    cache = InversionCache(2)
    keys = [demo_module.InversionKey("s", str(i), "", 10, 3, 3.0, 0, 1) for i in range(3)]
    for key in keys[:2]:
        cache.put(key, object())  # type: ignore[arg-type]
    assert cache.get(keys[0]) is not None  # now the most recent
    cache.put(keys[2], object())  # type: ignore[arg-type]
    assert len(cache) == 2 and cache.get(keys[1]) is None and cache.get(keys[0]) is not None


def test_spectrograms(tmp_path: Path) -> None:
    rate = 16000
    t = np.arange(rate) / rate
    tone = (0.5 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    path = tmp_path / "spec.png"
    save_spectrograms(path, [("tone", tone), ("quiet", 0.01 * tone), ("silence", np.zeros(800))], rate)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and os.listdir(tmp_path) == ["spec.png"]
    image = spectrogram_image(tone, rate, "tone")
    assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8
    with pytest.raises(InputError):
        save_spectrograms(path, [("empty", np.zeros(0))], rate)
    with pytest.raises(InputError):
        save_spectrograms(tmp_path / "missing" / "spec.png", [("tone", tone)], rate)


def test_command_line_errors_are_one_line(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--port", "http"], ["--device", "tpu"]):
        with pytest.raises(SystemExit) as exited:
            demo_module.main(argv)
        assert exited.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as exited:
        demo_module.main(["--model", "/no/such/model/folder", "--device", "cpu"])
    error = capsys.readouterr().err.strip()
    assert exited.value.code == 2 and error.startswith("error: ") and "\n" not in error
    monkeypatch.setitem(sys.modules, "gradio", None)  # as if it were not installed
    with pytest.raises(SystemExit) as exited:
        demo_module.main(["--model", "tiny"])
    assert exited.value.code == 2 and "pip install '.[demo]'" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ browser


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"the browser tests need Chromium at {CHROMIUM}")
    playwright_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need playwright")
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def served(browser: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, object]]:
    """(URL, app) of the demo with the tiny model on a free localhost port."""
    pytest.importorskip("gradio", reason="the demo needs gradio")
    from audio_edit.editor import AudioEditor

    editor = AudioEditor.from_pretrained("tiny", device="cpu")
    app = build_app(editor, defaults={"steps": STEPS, "t_start": T_START}, output_dir=tmp_path_factory.mktemp("out"))
    port = _free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/", app
    finally:
        app.close()


@pytest.fixture
def page(browser, served) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(served[0])
    yield page
    context.close()


def _upload(page, path: Path) -> None:
    page.locator("#input-audio input[type=file]").set_input_files(str(path))


def _run(page, target: str, previous: str) -> str:
    """Type the target, press Edit and return the new status line."""
    page.locator("#target textarea").fill(target)
    page.locator("#run").click()
    page.wait_for_function(
        "old => { const s = document.querySelector('#status textarea');"
        " return s && s.value !== old && /s\\)\\.|^Error/.test(s.value); }",
        arg=previous,
    )
    return page.locator("#status textarea").input_value()


def test_edit_in_the_browser(page, served, recording: Path) -> None:
    assert served[1].max_file_size == 50 * 1024 * 1024  # launch() got the upload limit
    _upload(page, recording)
    page.locator("#input-audio a[download]").wait_for()  # uploaded
    status = _run(page, "jazz piano", page.locator("#status textarea").input_value())
    assert status.startswith("Inverted the clip"), status

    link = page.locator("#edit-0 a[download]")
    link.wait_for()
    assert link.get_attribute("download").endswith(".wav")
    response = page.request.get(link.get_attribute("href"))
    assert response.ok
    samples, rate = sf.read(io.BytesIO(response.body()), dtype="float32")
    expected = sf.info(recording)
    assert (samples.shape[0], rate) == (expected.frames, expected.samplerate)
    assert np.isfinite(samples).all() and np.abs(samples).max() > 0
    page.locator("#reconstruction a[download]").wait_for()
    page.locator("#spectrograms img").wait_for()
    assert not page.locator("#edit-1").is_visible()  # one variation: the other slots are hidden
    if os.environ.get("DEMO_SCREENSHOT"):
        page.wait_for_timeout(1000)  # let the waveforms draw
        page.screenshot(path=os.environ["DEMO_SCREENSHOT"], full_page=True)

    # Only the target changed: the inversion is reused and the page says so.
    status = _run(page, "a choir", status)
    assert status.startswith("Reused the inversion: only the edit ran"), status
    assert "a-choir" in page.locator("#edit-0 a[download]").get_attribute("download")


def test_files_that_are_not_audio_give_a_readable_error(page, served, tmp_path: Path) -> None:
    fake = tmp_path / "notes.wav"
    fake.write_text("these are my notes, not a recording\n" * 50)
    _upload(page, fake)
    page.locator("#input-audio a[download]").wait_for()
    status = _run(page, "jazz piano", page.locator("#status textarea").input_value())
    assert status.startswith("Error: Cannot decode notes.wav as audio"), status
    assert "\n" not in status and str(tmp_path) not in status

    # A file that does not even claim to be audio is refused by the page before any upload.
    text = tmp_path / "notes.txt"
    text.write_text("plain text\n")
    page.goto(served[0])
    _upload(page, text)
    page.get_by_text("Invalid file type").first.wait_for()
    body = page.locator("body").inner_text()
    assert "Traceback" not in body and "Traceback" not in status
