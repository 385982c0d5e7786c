"""Tests of the listening demo (audio_edit.demo) and the spectrogram plots (audio_edit.spectrogram).

The browser tests serve the demo with the tiny random-weight model and drive headless Chromium with
Playwright: upload a recording, edit it, download the edit; change only the target and see the inversion
reused; add a concept to remove and see the edit reuse the inversion; find the principal components and
move the clip along one; choose DDIM inversion with the automatic mask and see the mask picture, then
SDEdit and see no reconstruction; choose Prompt-to-Prompt with its Advanced settings and see its refusal
of the automatic mask, then the attention picture; upload a file that is not audio while an edit holds
the queue and read the error at once; cancel a running edit. Set DEMO_SCREENSHOT=<path> to save a screenshot of the page after the edit.
"""

from __future__ import annotations

import dataclasses
import io
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audio_edit import demo as demo_module
from audio_edit.audio_io import load_audio
from audio_edit.demo import (
    MAX_VARIATIONS, METHODS, CachedInversion, ComponentsKey, DemoRunner, EditCancelled, InversionCache, InversionKey,
    build_app, check_clip, inversion_bytes, page_concepts, parse_time_range, tensor_bytes,
)
from audio_edit.demo.checks import edit_request
from audio_edit.spectrogram import save_spectrograms, spectrogram_image
from image_core import adapters
from image_core.errors import InputError
from image_core.inversion import Inversion, InversionSettings
from image_core.methods.sega import Concept
from image_core.p2p import P2POptions
from image_core.request import check_request

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
STEPS, T_START = 10, 3  # tiny runs: a few UNet calls per stage
TIMEOUT_MS = 180_000  # a slow, shared machine
PAGE_CAP = 5  # seconds: the served page's clip length cap
ITERATIONS = 2  # subspace iterations of the principal components: a few batched UNet calls


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Run the tiny model on one CPU thread: its matrices are too small to share, and on a busy machine
    threads that wait for each other turn a run of seconds into minutes."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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

    def __init__(self, on_invert=None, tensor=torch.Tensor) -> None:
        self.calls: list[str] = []
        self.methods: list[str] = []  # the method of each inversion
        self.progress = False
        self.on_invert = on_invert  # called during each inversion
        self.tensor = tensor  # class of the returned tensors

    def invert(
        self, audio, source_prompt="", num_steps=200, t_start=100, cfg_src=3.0, eta=1.0, seed=0, method="ddpm"
    ) -> Inversion:
        self.calls.append("invert")
        self.methods.append(method)
        if self.on_invert:
            self.on_invert()
        seeds = [seed] if isinstance(seed, int) else list(seed)
        maps = torch.zeros(len(seeds), t_start, 1, 2, 2)
        settings = InversionSettings("fake", num_steps, t_start, eta, cfg_src, source_prompt, tuple(seeds), method)
        meta = {"sample_rate": audio.sample_rate, "num_frames": audio.num_frames}
        x0, xts, zs, timesteps = (t.as_subclass(self.tensor) for t in (
            torch.zeros(len(seeds), 1, 2, 2), maps, maps.clone(), torch.arange(t_start)))
        return Inversion(x0, xts, zs if method == "ddpm" else None, timesteps, settings, meta)

    def _clips(self, num_frames: int, count: int) -> list[np.ndarray]:
        rng = np.random.default_rng(len(self.calls))
        return [0.1 * rng.standard_normal(num_frames).astype(np.float32) for _ in range(count)]

    def edit(self, inv: Inversion, target_prompt, cfg_tar=12.0, mask=None) -> list[np.ndarray]:
        self.calls.append("edit")
        return self._clips(inv.meta["num_frames"], len(target_prompt) * inv.num_latents)

    def sdedit(self, audio, target_prompt, num_steps=200, t_start=100, cfg_tar=12.0, eta=1.0, seed=0) -> list[np.ndarray]:
        self.calls.append("sdedit")
        return self._clips(audio.num_frames, len(target_prompt) * len(seed))

    def reconstruct(self, inv: Inversion) -> list[np.ndarray]:
        self.calls.append("reconstruct")
        assert inv.num_latents == 1  # the page plays one reconstruction
        return self._clips(inv.meta["num_frames"], inv.num_latents)


class Elsewhere(torch.Tensor):
    """A CPU tensor that says it is on a GPU: stands in for the tensors of an inversion made on one."""

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return torch.device("cuda", 0)

    def cpu(self, *args, **kwargs) -> torch.Tensor:  # type: ignore[override]
        return self.as_subclass(torch.Tensor).clone()

    def to(self, *args, **kwargs) -> torch.Tensor:  # type: ignore[override]
        if args and str(args[0]) == "cpu" and len(args) == 1 and not kwargs:
            return self.cpu()
        return super().to(*args, **kwargs)


def test_cache_reuses_the_inversion_when_only_the_target_changes(recording: Path, tmp_path: Path) -> None:
    editor = FakeEditor()
    runner = DemoRunner(editor, output_dir=tmp_path)
    first = runner.run(str(recording), "jazz piano", steps=STEPS, t_start=T_START, variations=3, session="a")
    assert editor.calls == ["invert", "reconstruct", "edit"] and not first.reused
    runner.cache.max_bytes = 2 * runner.cache.nbytes  # room for two inversions of this clip
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


def test_runner_refuses_clips_longer_than_the_cap(recording: Path, tmp_path: Path) -> None:
    seconds = sf.info(recording).duration
    runner = DemoRunner(FakeEditor(), output_dir=tmp_path, max_seconds=seconds / 2)
    with pytest.raises(InputError, match=f"at most {seconds / 2:g} s") as caught:
        runner.run(str(recording), "jazz piano", steps=STEPS, t_start=T_START)
    assert str(tmp_path) not in str(caught.value) and runner.editor.calls == []
    DemoRunner(FakeEditor(), output_dir=tmp_path, max_seconds=seconds + 1).run(
        str(recording), "jazz piano", steps=STEPS, t_start=T_START)


def _entry(rows: int, frames: int = 100) -> CachedInversion:
    """A cached inversion of ``rows`` float64 x_t and noise maps of 16 values each."""
    maps = torch.zeros(1, rows, 2, 8, dtype=torch.float64)
    settings = InversionSettings("fake", rows, rows, 1.0, 3.0, "", (0,))
    inversion = Inversion(torch.zeros(1, 2, 8, dtype=torch.float64), maps, maps.clone(), torch.arange(rows), settings)
    return CachedInversion(inversion, np.zeros(frames, np.float32), np.zeros(frames, np.float32), 16000)


def _key(name: str) -> InversionKey:
    return InversionKey("s", name, "", 10, 3, 3.0, 0, 1)


def test_cache_counts_bytes_and_drops_the_least_recently_used() -> None:
    small, large = _entry(1), _entry(4)
    # x0 + xts + zs (float64) + timesteps (int64) + two float32 waveforms
    assert small.nbytes == 16 * 8 + 2 * 16 * 8 + 8 + 2 * 100 * 4
    assert large.nbytes == 16 * 8 + 2 * 4 * 16 * 8 + 4 * 8 + 2 * 100 * 4
    cache = InversionCache(2 * small.nbytes + large.nbytes)
    for name in "abc":
        assert cache.put(_key(name), small if name != "c" else large)
    assert (len(cache), cache.nbytes) == (3, 2 * small.nbytes + large.nbytes)
    assert cache.get(_key("a")) is small  # "a" is now the most recent, "b" the least
    assert cache.put(_key("d"), small)  # over the budget: "b" goes
    assert cache.get(_key("b")) is None and cache.nbytes == 2 * small.nbytes + large.nbytes
    assert cache.put(_key("a"), small) and cache.nbytes == 2 * small.nbytes + large.nbytes  # replaced, not added
    assert cache.evict_oldest() == large.nbytes and cache.get(_key("c")) is None  # "c" was the oldest
    assert cache.evict_oldest() + cache.evict_oldest() == 2 * small.nbytes and cache.evict_oldest() == 0
    assert (len(cache), cache.nbytes) == (0, 0)

    tight = InversionCache(large.nbytes - 1)
    assert tight.put(_key("a"), small) and not tight.put(_key("b"), large)  # larger than the whole budget
    assert tight.get(_key("b")) is None and tight.get(_key("a")) is small
    assert not InversionCache(0).put(_key("a"), small)
    with pytest.raises(ValueError):
        InversionCache(-1)


def test_cached_inversions_are_kept_on_the_cpu(recording: Path, tmp_path: Path) -> None:
    editor = FakeEditor(tensor=Elsewhere)  # as if inverted on a GPU
    runner = DemoRunner(editor, output_dir=tmp_path)
    result = runner.run(str(recording), "jazz", steps=STEPS, t_start=T_START, variations=2, session="a")
    (entry,) = runner.cache._entries.values()
    tensors = [entry.inversion.x0, entry.inversion.xts, entry.inversion.zs, entry.inversion.timesteps]
    assert all(type(t) is torch.Tensor and t.device.type == "cpu" for t in tensors)
    assert entry.inversion.xts.shape == (2, T_START, 1, 2, 2) and not result.reused
    assert runner.run(str(recording), "piano", steps=STEPS, t_start=T_START, variations=2, session="a").reused


def test_cancel_stops_the_run_at_its_next_stage(recording: Path, tmp_path: Path) -> None:
    runner = DemoRunner(FakeEditor(on_invert=lambda: runner.cancel("a")), output_dir=tmp_path)
    assert not runner.cancel("a")  # nothing under way
    with pytest.raises(EditCancelled):
        runner.run(str(recording), "jazz", steps=STEPS, t_start=T_START, session="a")
    assert runner.editor.calls == ["invert"] and len(runner.cache) == 0  # neither reconstructed nor edited
    runner.editor.on_invert = None
    assert not runner.run(str(recording), "jazz", steps=STEPS, t_start=T_START, session="a").reused  # a new run


def test_cache_tells_the_methods_apart(recording: Path, tmp_path: Path) -> None:
    editor = FakeEditor()
    runner = DemoRunner(editor, output_dir=tmp_path)
    settings = {"steps": STEPS, "t_start": T_START, "session": "a"}
    assert not runner.run(str(recording), "jazz", **settings).reused
    ddim = runner.run(str(recording), "jazz", method="ddim", **settings)  # same settings, other method
    assert not ddim.reused and ddim.status.startswith("Inverted the clip (DDIM inversion, ")
    assert runner.run(str(recording), "piano", method="ddim", **settings).reused
    assert runner.run(str(recording), "piano", method="ddpm", **settings).reused
    assert editor.methods == ["ddpm", "ddim"] and editor.calls.count("edit") == 4
    assert sorted(key.method for key in runner.cache._entries) == ["ddim", "ddpm"]

    # SDEdit inverts nothing: no cache entry, no reconstruction, a fresh run every time.
    for _ in range(2):
        result = runner.run(str(recording), "jazz", variations=3, method="sdedit", **settings)
        assert result.reconstruction is None and not result.reused and result.mask is None
        assert [label for label, _ in result.edits] == [f"Edit {i + 1} (seed {i})" for i in range(3)]
        assert result.status.startswith("Ran SDEdit with") and "no reconstruction" in result.status
    assert editor.calls.count("sdedit") == 2 and editor.methods == ["ddpm", "ddim"] and len(runner.cache) == 2


def test_runner_refuses_method_clashes_with_one_line(recording: Path, tmp_path: Path) -> None:
    runner = DemoRunner(FakeEditor(), output_dir=tmp_path)
    for kwargs, words in [
        ({"method": "ddim", "variations": 2}, "DDIM inversion is deterministic, so several variations"),
        ({"method": "sdedit", "auto_mask": True}, "the automatic mask needs an inversion, and SDEdit makes none"),
        ({"auto_mask": True, "source_prompt": " jazz "}, "so they must differ"),
        ({"method": "null-text", "variations": 3}, "Null-text inversion is deterministic, so several variations"),
        ({"method": "dpm-solver"}, "unknown method 'dpm-solver': choose ddpm, ddim, null-text, sdedit, flowedit"),
    ]:
        with pytest.raises(InputError, match=words) as caught:
            runner.run(str(recording), "jazz", steps=STEPS, t_start=T_START, **kwargs)
        assert "\n" not in str(caught.value)
    assert runner.editor.calls == []  # refused before anything ran
    assert set(METHODS) == {"ddpm", "ddim", "null-text", "sdedit", "flowedit", "p2p"}


def test_check_clip_reads_only_the_header(recording: Path, tmp_path: Path) -> None:
    info = sf.info(recording)
    line = check_clip(recording, max_seconds=info.duration + 1)
    assert line.startswith(f"Ready: {recording.name}, {info.duration:.1f} s at {info.samplerate} Hz")
    notes = tmp_path / "notes.wav"
    notes.write_text("not a recording\n" * 50)
    empty, slow = tmp_path / "empty.wav", tmp_path / "slow.wav"
    sf.write(empty, np.zeros(0, np.float32), 16000)
    sf.write(slow, np.zeros(4000, np.float32), 4000)
    for file, words in [
        (notes, "Cannot decode notes.wav as audio"),
        (empty, "empty.wav contains no audio frames"),
        (slow, "slow.wav has sample rate 4000 Hz"),
        (recording, f"is {info.duration:.1f} s long; this demo takes clips of at most 1 s"),
    ]:
        with pytest.raises(InputError, match=words) as caught:
            check_clip(file, max_seconds=1)
        assert str(tmp_path) not in str(caught.value) and "\n" not in str(caught.value)


@pytest.fixture(scope="module")
def tiny_editor():
    from audio_edit.editor import AudioEditor

    return AudioEditor.from_pretrained("tiny", device="cpu")


def test_eviction_makes_room_instead_of_refusing(
    tiny_editor, recording: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = DemoRunner(tiny_editor, output_dir=tmp_path)
    runner.run(str(recording), "jazz", steps=STEPS, t_start=T_START, seed=0, session="a")
    (entry,) = runner.cache._entries.values()
    x0, xts, zs = entry.inversion.x0, entry.inversion.xts, entry.inversion.zs
    estimate = inversion_bytes(tiny_editor, load_audio(recording), T_START, 1)  # made before inverting
    assert estimate == sum(t.numel() * t.element_size() for t in (x0, xts, zs))
    assert all(t.device.type == "cpu" for t in (x0, xts, zs))
    # Host memory in which the cache takes its bytes: with the cache kept, an inversion's maps do not fit.
    maps = 2 * T_START * x0[0].numel() * x0.element_size()
    total = runner.cache.nbytes + maps - 1
    monkeypatch.setattr(adapters, "available_memory", lambda device="cpu": total - runner.cache.nbytes)
    result = runner.run(str(recording), "jazz", steps=STEPS, t_start=T_START, seed=1, session="a")
    assert not result.reused and len(runner.cache) == 1
    assert next(iter(runner.cache._entries)).seed == 1  # the older inversion made room


def test_sdedit_and_ddim_on_the_tiny_model(tiny_editor, recording: Path, tmp_path: Path) -> None:
    runner = DemoRunner(tiny_editor, output_dir=tmp_path)
    info = sf.info(recording)
    result = runner.run(str(recording), "jazz", steps=STEPS, t_start=T_START, variations=2, method="sdedit")
    assert result.reconstruction is None and result.mask is None and len(runner.cache) == 0
    assert [label for label, _ in result.edits] == ["Edit 1 (seed 0)", "Edit 2 (seed 1)"]
    clips = [sf.read(file, dtype="float32")[0] for _, file in result.edits]
    assert all(clip.shape[0] == info.frames and np.isfinite(clip).all() for clip in clips)
    assert not np.array_equal(*clips)  # another seed, another take
    assert not any(path.name == "reconstruction.wav" for path in result.spectrogram.parent.iterdir())

    with pytest.raises(InputError, match="set Variations to 1"):
        runner.run(str(recording), "jazz", steps=STEPS, t_start=T_START, variations=2, method="ddim")
    result = runner.run(str(recording), "jazz", steps=STEPS, t_start=T_START, method="ddim", auto_mask=True)
    assert result.reconstruction is not None and result.mask.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "The automatic mask let the edit change" in result.status
    ((key, entry),) = runner.cache._entries.items()
    inv = entry.inversion
    assert key.method == inv.settings.method == "ddim" and inv.zs is None
    estimate = inversion_bytes(tiny_editor, load_audio(recording), T_START, 1, "ddim")  # no noise maps
    assert estimate == sum(t.numel() * t.element_size() for t in (inv.x0, inv.xts))


def test_automatic_mask_keeps_the_clip_outside_it(
    tiny_editor, recording: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    edited = []  # (mask, latents) of each masked edit the runner makes
    edit_latent = tiny_editor.edit_latent

    def watched(*args, **kwargs):
        latents = edit_latent(*args, **kwargs)
        if kwargs.get("mask") is not None:
            edited.append((kwargs["mask"], latents))
        return latents

    monkeypatch.setattr(tiny_editor, "edit_latent", watched)
    runner = DemoRunner(tiny_editor, output_dir=tmp_path)
    result = runner.run(str(recording), "jazz piano", "a melody", steps=STEPS, t_start=T_START, variations=2,
                        auto_mask=True)
    ((mask, latents),) = edited
    (entry,) = runner.cache._entries.values()
    inv = entry.inversion
    assert torch.equal(tiny_editor.load_mask(result.mask, inv), mask)  # the picture holds the mask used
    assert mask.shape == (1, 1, *inv.x0.shape[2:]) and 0 < mask.mean() < 1
    outside = (mask == 0).expand_as(latents)
    assert torch.equal(latents[outside], inv.x0[outside])  # bitwise the clip's latent outside the mask
    assert not torch.equal(latents[~outside], inv.x0[~outside])  # and edited inside it
    assert len(result.edits) == 2 and result.reconstruction is not None
    assert runner.run(str(recording), "a choir", "a melody", steps=STEPS, t_start=T_START, variations=2,
                      auto_mask=True).status.startswith("Reused the inversion: only the mask and the edit ran")


# ------------------------------------------------------------------------------------------ concepts


def test_page_concepts_skip_empty_rows_and_share_the_advanced_settings() -> None:
    rows = [("  ", "add", 10), (" drums ", "remove", 12.5), (None, "remove", 3), ("piano", "add", None)]
    assert page_concepts(rows, 0.9, 2) == [
        Concept("drums", scale=12.5, remove=True, threshold=0.9, warmup=2),
        Concept("piano", scale=10.0, remove=False, threshold=0.9, warmup=2),
    ]
    assert page_concepts([("", "add", 10)] * 3) == []  # empty rows are ignored
    for rows, threshold, warmup, words in [
        ([("drums", "add", 25)], 0.95, 1, "strengths must be between 0 and 20"),
        ([("drums", "add", 10)], 1.0, 1, "threshold must be at least 0 and below 1"),
        ([("drums", "add", 10)], 0.95, -1, "warm-up must be 0 or more"),
        ([("drums", "add", 10)], 0.95, 1.5, "warm-up must be a whole number"),
    ]:
        with pytest.raises(InputError, match=words) as caught:
            page_concepts(rows, threshold, warmup)
        assert "\n" not in str(caught.value)


def test_runner_refuses_concept_clashes_with_one_line(recording: Path, tmp_path: Path) -> None:
    runner = DemoRunner(FakeEditor(), output_dir=tmp_path)
    drums = [Concept("drums", remove=True)]
    for target, kwargs, words in [
        ("", {}, "type a target description of the edit, e.g. \"jazz piano\", or add a concept"),
        ("  ", {"concepts": []}, "or add a concept"),
        ("jazz", {"concepts": drums, "method": "sdedit"}, "concepts need an inversion, and SDEdit makes none"),
        ("", {"concepts": drums, "auto_mask": True}, "the automatic mask compares the target with the source"),
        ("", {"concepts": [Concept("drums", warmup=T_START)]}, f"must be below t_start \\({T_START}\\)"),
        ("", {"concepts": [Concept(" ")]}, "a concept must not be empty"),
    ]:
        with pytest.raises(InputError, match=words) as caught:
            runner.run(str(recording), target, steps=STEPS, t_start=T_START, **kwargs)
        assert "\n" not in str(caught.value)
    assert runner.editor.calls == []  # refused before anything ran


def test_concepts_change_the_edit_and_may_stand_alone(tiny_editor, recording: Path, tmp_path: Path) -> None:
    runner = DemoRunner(tiny_editor, output_dir=tmp_path)
    settings = {"steps": STEPS, "t_start": T_START, "session": "a"}
    info = sf.info(recording)
    plain = runner.run(str(recording), "jazz piano", **settings)
    drums = page_concepts([("drums", "remove", 10), ("", "add", 10), ("", "add", 10)])
    guided = runner.run(str(recording), "jazz piano", concepts=drums, **settings)
    assert guided.reused and guided.status.startswith("Reused the inversion: only the edit ran")
    assert guided.status.endswith("Concepts: − drums (10).")
    (_, plain_file), (_, guided_file) = plain.edits[0], guided.edits[0]
    plain_clip, guided_clip = (sf.read(file, dtype="float32")[0] for file in (plain_file, guided_file))
    assert plain_clip.shape == guided_clip.shape == (info.frames,) and np.isfinite(guided_clip).all()
    assert not np.array_equal(plain_clip, guided_clip)  # the concept changed the edit
    assert guided_file.name == "edit_jazz-piano-minus-drums_s0.wav"

    alone = runner.run(str(recording), "", concepts=page_concepts([("birdsong", "add", 15)]), **settings)
    assert alone.reused and "Concepts (no target: the source description kept): + birdsong (15)." in alone.status
    ((label, file),) = alone.edits
    clip = sf.read(file, dtype="float32")[0]
    assert file.name == "edit_plus-birdsong_s0.wav" and clip.shape == (info.frames,) and np.isfinite(clip).all()
    assert not np.array_equal(clip, plain_clip)


# ------------------------------------------------------------------------------------------ principal components


def test_principal_components_are_cached_with_the_inversion(
    tiny_editor, recording: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    moved: list[list[np.ndarray]] = []
    principal_components, edit_pc = tiny_editor.principal_components, tiny_editor.edit_pc

    def counted_pcs(*args, **kwargs):
        calls.append("principal_components")
        return principal_components(*args, **kwargs)

    def counted_move(*args, **kwargs):
        calls.append("edit_pc")
        moved.append(edit_pc(*args, **kwargs))
        return moved[-1]

    monkeypatch.setattr(tiny_editor, "principal_components", counted_pcs)
    monkeypatch.setattr(tiny_editor, "edit_pc", counted_move)
    runner = DemoRunner(tiny_editor, output_dir=tmp_path)
    settings = {"steps": STEPS, "t_start": T_START, "max_iterations": ITERATIONS, "session": "a"}
    info = sf.info(recording)
    first = runner.components(str(recording), n=3, pc=1, amount=2, **settings)
    assert len(first.values) == 3 and first.values == sorted(first.values, reverse=True) and first.values[0] > 0
    assert first.reused == "" and first.status.startswith("Inverted the clip (DDPM inversion, ")
    assert f"found 3 components in {ITERATIONS} of at most {ITERATIONS} iterations" in first.status
    assert [label for label, _ in first.clips] == ["Component 1, −2 σ", "Component 1, +2 σ"]
    clips = [sf.read(file, dtype="float32") for _, file in first.clips]
    assert all((clip.shape, rate) == ((info.frames,), info.samplerate) for clip, rate in clips)
    assert not np.array_equal(clips[0][0], clips[1][0])  # the two sides differ
    assert first.spectrogram.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ((key, entry),) = runner.cache._entries.items()
    assert list(entry.components) == [ComponentsKey(3, None, ITERATIONS)] and key.variations == 1
    assert runner.cache.nbytes == entry.nbytes > dataclasses.replace(entry, components={}).nbytes  # counted

    # Another component or amount: only the move runs.
    second = runner.components(str(recording), n=3, pc=2, amount=0, **settings)
    assert second.reused == "components" and second.values == first.values
    assert second.status.startswith("Reused the components: only the move along component 2 ran")
    assert calls == ["principal_components", "edit_pc", "edit_pc"]
    for clip in moved[-1]:  # amount 0 is the reconstruction (up to rounding: the two sides run as one batch)
        np.testing.assert_allclose(clip, entry.reconstruction, rtol=0, atol=1e-3 * np.abs(entry.reconstruction).max())
    # A slider's move runs only where the components are cached.
    assert runner.components(str(recording), n=3, pc=3, amount=1, only_cached=True, **settings).reused == "components"
    assert runner.components(str(recording), n=2, pc=1, amount=1, only_cached=True, **settings) is None
    assert calls == ["principal_components", *["edit_pc"] * 3]

    # Another count or a time range: new components from the same inversion.
    part = f"0.2:{round(info.duration / 2, 2):g}"
    ranged = runner.components(str(recording), n=2, pc=1, amount=1, time_range=part, **settings)
    assert ranged.reused == "inversion" and len(ranged.values) == 2 and f"within {part} s" in ranged.status
    assert calls.count("principal_components") == 2 and len(entry.components) == 1  # the entry was replaced
    assert len(next(iter(runner.cache._entries.values())).components) == 2
    # An edit at one variation reuses the inversion the components were found with.
    assert runner.run(str(recording), "jazz", steps=STEPS, t_start=T_START, session="a").reused


def test_principal_components_refuse_bad_settings_with_one_line(recording: Path, tmp_path: Path) -> None:
    runner = DemoRunner(FakeEditor(), output_dir=tmp_path)
    seconds = sf.info(recording).duration
    for kwargs, words in [
        ({"time_range": f"1:{seconds + 1:g}"},
         f"the time range 1:{seconds + 1:g} does not lie inside the clip's 0..{seconds:.2f} s"),
        ({"time_range": "abc"}, 'the time range must be "start:end" in seconds'),
        ({"time_range": "2:1"}, "end after it starts"),
        ({"method": "sdedit"}, "principal components need an inversion, and SDEdit makes none"),
        ({"n": 6}, "the number of components must be between 1 and 5"),
        ({"n": 2, "pc": 3}, "the component to move must be between 1 and 2"),
        ({"amount": 6}, "the amount must be between 0 and 5"),
        ({"max_iterations": 0}, "iterations must be between 1 and 100"),
        ({"audio_path": None}, "upload or record a clip"),
    ]:
        arguments = {"audio_path": str(recording), "steps": STEPS, "t_start": T_START, **kwargs}
        with pytest.raises(InputError, match=words) as caught:
            runner.components(**arguments)
        assert "\n" not in str(caught.value) and str(tmp_path) not in str(caught.value)
    assert runner.editor.calls == []  # refused before the inversion
    assert parse_time_range(" ") is None and parse_time_range("0.5:2") == (0.5, 2.0)


def _app_function(app, name: str, event: str):
    """The app's registered function ``name`` triggered by ``event``."""
    return next(f for f in app.fns.values() if f.name == name and any(e == event for _, e in f.targets))


def test_upload_is_checked_at_once_outside_the_queue(tiny_editor, recording: Path, tmp_path: Path) -> None:
    pytest.importorskip("gradio", reason="the demo needs gradio")
    app = build_app(tiny_editor, max_seconds=PAGE_CAP, output_dir=tmp_path / "out")
    notes = tmp_path / "notes.wav"
    notes.write_text("not a recording\n" * 50)
    for event in ("upload", "stop_recording"):
        check = _app_function(app, "on_upload", event)
        assert check.queue is False
        status, clip = check.fn(str(notes))
        assert status.startswith("Error: Cannot decode notes.wav as audio") and clip is None  # refused and cleared
        assert check.fn(str(recording))[0].startswith(f"Ready: {recording.name}")
    cancel = _app_function(app, "on_cancel", "click")
    assert cancel.queue is False
    stopper = next(f for f in app.fns.values() if f.cancels and f.targets == cancel.targets)
    # Edit and Enter; Find components, Enter in the time range and the moves of the component and amount sliders
    assert sorted(app.fns[i].name for i in stopper.cancels) == ["on_components_run"] * 4 + ["on_edit"] * 2


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
    assert (demo_module.parse_args([]).max_seconds, demo_module.parse_args([]).cache_mb) == (
        demo_module.DEFAULT_MAX_SECONDS, demo_module.DEFAULT_CACHE_MB)
    for argv in (["--port", "http"], ["--device", "tpu"], ["--max-seconds", "0"], ["--max-seconds", "nan"],
                 ["--cache-mb", "-1"]):
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
    app = build_app(editor, defaults={"steps": STEPS, "t_start": T_START, "iterations": ITERATIONS},
                    max_seconds=PAGE_CAP, output_dir=tmp_path_factory.mktemp("out"))
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


def _status_starts(page, prefix: str, timeout_ms: float = TIMEOUT_MS) -> str:
    """Wait until the status line starts with ``prefix``; the line."""
    page.wait_for_function(
        "prefix => { const s = document.querySelector('#status textarea'); return s && s.value.startsWith(prefix); }",
        arg=prefix, timeout=timeout_ms,
    )
    return page.locator("#status textarea").input_value()


def _run(page, target: str, previous: str) -> str:
    """Type the target, press Edit and return the new status line."""
    page.locator("#target textarea").fill(target)
    page.locator("#run").click()
    return _next_status(page, previous)


def _next_status(page, previous: str) -> str:
    """Wait until a run replaces the status line ``previous`` with its outcome; the new line."""
    page.wait_for_function(
        "old => { const s = document.querySelector('#status textarea');"
        " return s && s.value !== old && /s\\)\\.|^Error/.test(s.value); }",
        arg=previous,
    )
    return page.locator("#status textarea").input_value()


def test_edit_in_the_browser(page, served, recording: Path) -> None:
    assert served[1].max_file_size == 50 * 1024 * 1024  # launch() got the upload limit
    for text in (f"clip of at most {PAGE_CAP} s,", f"Original (at most {PAGE_CAP} s)"):  # the cap is stated
        page.get_by_text(text).first.wait_for()
    _upload(page, recording)
    page.locator("#input-audio a[download]").wait_for()  # uploaded
    _status_starts(page, f"Ready: {recording.name}")  # checked on upload
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

    # A concept to remove: still only the edit runs.
    page.locator("#concept-0 input").fill("drums")
    page.locator("#concept-0-sign").get_by_text("remove", exact=True).click()
    status = _run(page, "a choir", status)
    assert status.startswith("Reused the inversion: only the edit ran") and status.endswith("Concepts: − drums (10)."), status
    page.wait_for_function(
        "() => (document.querySelector('#edit-0 a[download]')?.getAttribute('download') || '').includes('minus-drums')")

    # No prompt: the principal components of the same inversion, then a move along one of them alone.
    page.get_by_text("fewer iterations are faster and less precise").first.wait_for()
    page.locator("#pc-run").click()
    status = _next_status(page, status)
    assert status.startswith(f"Reused the inversion: found 3 components in {ITERATIONS} of at most"), status
    assert page.locator("#pc-values tbody tr").count() == 3  # one variance per component
    for side in ("minus", "plus"):
        link = page.locator(f"#pc-{side} a[download]")
        link.wait_for()
        samples, rate = sf.read(io.BytesIO(page.request.get(link.get_attribute("href")).body()), dtype="float32")
        assert (samples.shape[0], rate) == (expected.frames, expected.samplerate) and np.isfinite(samples).all()
    page.locator("#pc-spectrograms img").wait_for()
    amount = page.locator("#pc-amount input[type=number]")
    amount.fill("1")
    amount.press("Tab")  # the slider's release: only the move runs
    status = _next_status(page, status)
    assert status.startswith("Reused the components: only the move along component 1 ran"), status
    assert "plus1" in page.locator("#pc-plus a[download]").get_attribute("download")


def test_method_and_automatic_mask_in_the_browser(page, recording: Path) -> None:
    _upload(page, recording)
    _status_starts(page, f"Ready: {recording.name}")
    method, mask = page.locator("#method"), page.locator("#auto-mask input[type=checkbox]")
    assert method.get_by_label("DDPM inversion (default)").is_checked() and not mask.is_checked()
    page.get_by_text("DDIM inversion: the deterministic baseline").wait_for()  # each method is explained

    method.get_by_text("SDEdit", exact=True).click()
    mask.check()
    status = _run(page, "jazz piano", page.locator("#status textarea").input_value())
    assert status.startswith("Error: the automatic mask needs an inversion, and SDEdit makes none"), status

    method.get_by_text("DDIM inversion", exact=True).click()
    status = _run(page, "jazz piano", status)
    assert status.startswith("Inverted the clip (DDIM inversion, ") and "automatic mask" in status, status
    picture = page.locator("#mask img")
    picture.wait_for()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=picture.element_handle())
    page.locator("#spectrograms img").wait_for()
    page.locator("#reconstruction a[download]").wait_for()

    method.get_by_text("SDEdit", exact=True).click()
    mask.uncheck()
    status = _run(page, "a choir", status)
    assert status.startswith("Ran SDEdit with"), status
    assert "a-choir" in page.locator("#edit-0 a[download]").get_attribute("download")
    for hidden in ("#reconstruction", "#mask"):  # nothing inverted, no mask
        page.locator(hidden).wait_for(state="hidden")

    method.get_by_text("FlowEdit (no inversion)", exact=True).click()
    status = _run(page, "a flute", status)
    assert status.startswith("Ran FlowEdit with") and "no reconstruction" in status, status
    assert "a-flute" in page.locator("#edit-0 a[download]").get_attribute("download")
    page.locator("#reconstruction").wait_for(state="hidden")


def test_bad_upload_is_refused_at_once_while_an_edit_holds_the_queue(
    browser, served, recording: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, app = served
    editor = app.runner.editor
    gate, inverting, edited = threading.Event(), threading.Event(), []
    invert, edit = editor.invert, editor.edit

    def held_invert(*args, **kwargs):
        inverting.set()
        gate.wait(TIMEOUT_MS / 1000)
        return invert(*args, **kwargs)

    def counted_edit(*args, **kwargs):
        edited.append(1)
        return edit(*args, **kwargs)

    monkeypatch.setattr(editor, "invert", held_invert)
    monkeypatch.setattr(editor, "edit", counted_edit)
    contexts = [browser.new_context(viewport={"width": 1280, "height": 900}) for _ in range(2)]
    try:
        busy, other = (context.new_page() for context in contexts)
        for page in (busy, other):
            page.set_default_timeout(TIMEOUT_MS)
            page.goto(url)
        _upload(busy, recording)
        _status_starts(busy, "Ready:")
        busy.locator("#target textarea").fill("jazz piano")
        busy.locator("#run").click()
        assert inverting.wait(TIMEOUT_MS / 1000)  # the one worker is busy with this edit

        fake = tmp_path / "notes.wav"
        fake.write_text("these are my notes, not a recording\n" * 50)
        _upload(other, fake)
        status = _status_starts(other, "Error: Cannot decode notes.wav as audio", timeout_ms=60_000)  # no Edit pressed
        assert "\n" not in status and str(tmp_path) not in status
        assert other.locator("#input-audio a[download]").count() == 0  # the refused file is taken off the page

        long_clip = melody(tmp_path / "long.wav", seconds=PAGE_CAP + 1)
        _upload(other, long_clip)
        too_long = f"Error: long.wav is {PAGE_CAP + 1:.1f} s long; this demo takes clips of at most {PAGE_CAP} s"
        _status_starts(other, too_long, timeout_ms=60_000)

        busy.locator("#cancel").click()
        _status_starts(busy, "Cancelled", timeout_ms=60_000)
    finally:
        gate.set()
        for context in contexts:
            context.close()
    assert app.runner._compute.acquire(timeout=TIMEOUT_MS / 1000)  # the cancelled run has stopped
    app.runner._compute.release()
    assert edited == [] and not app.runner._running  # it stopped after the inversion, before the edit


def test_files_that_are_not_audio_are_refused_by_the_page(page, served, tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("plain text\n")
    _upload(page, text)
    page.get_by_text("Invalid file type").first.wait_for()
    body = page.locator("body").inner_text()
    assert "Traceback" not in body


def test_null_text_on_the_tiny_model(tiny_editor, recording: Path, tmp_path: Path) -> None:
    """Optimised for the target guidance: the same scale reuses the inversion, another inverts again."""
    runner = DemoRunner(tiny_editor, output_dir=tmp_path)
    settings = {"steps": STEPS, "t_start": T_START, "method": "null-text"}
    result = runner.run(str(recording), "jazz", cfg_tar=5.0, **settings)
    assert result.reconstruction is not None and result.status.startswith("Inverted the clip (Null-text inversion, ")
    ((key, entry),) = runner.cache._entries.items()
    inv = entry.inversion
    assert key.cfg_src == inv.settings.cfg_src == 5.0 and inv.settings.method == "null-text" and inv.zs is None
    assert all(value.device.type == "cpu" for value in inv.uncond.values())
    assert tensor_bytes(inv) == sum(t.numel() * t.element_size() for t in (inv.x0, inv.xts, inv.timesteps, *inv.uncond.values()))
    assert runner.run(str(recording), "piano", cfg_tar=5.0, **settings).reused
    assert not runner.run(str(recording), "piano", cfg_tar=6.0, **settings).reused


# ------------------------------------------------------------------------------------------ Prompt-to-Prompt


def test_prompt_to_prompt_on_the_tiny_model(tiny_editor, recording: Path, tmp_path: Path) -> None:
    """A DDPM inversion (shared with the plain DDPM edit) edited with attention control; the word maps
    are drawn for a clip of one model window."""
    runner = DemoRunner(tiny_editor, output_dir=tmp_path)
    settings = {"steps": STEPS, "t_start": T_START, "session": "a"}
    source, target = "a recording of a guitar", "a recording of a piano"
    result = runner.run(str(recording), target, source, method="p2p", **settings)
    assert result.method == "p2p" and not result.reused and result.reconstruction is not None and result.mask is None
    assert result.status.startswith("Inverted the clip (DDPM inversion, ")
    assert "Prompt-to-Prompt: " in result.status and "(chosen automatically)" in result.status
    assert "cross-attention injected for 0.6 and self-attention for 0.2 of the steps" in result.status
    assert result.attention.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and result.attention.parent == result.spectrogram.parent
    ((key, entry),) = runner.cache._entries.items()
    assert key.method == entry.inversion.settings.method == "ddpm"
    ((_, file),) = result.edits
    clip = sf.read(file, dtype="float32")[0]
    assert clip.shape == (sf.info(recording).frames,) and np.isfinite(clip).all()

    plain = runner.run(str(recording), target, source, **settings)  # the same inversion, a plain edit
    assert plain.reused and plain.attention is None and "Prompt-to-Prompt" not in plain.status
    assert not np.array_equal(sf.read(plain.edits[0][1], dtype="float32")[0], clip)

    tuned = runner.run(str(recording), target, source, method="p2p", p2p_mode="refine", cross_steps=1.0,
                       self_steps=0.5, reweight="piano=2", blend="piano, guitar", **settings)
    assert tuned.reused and tuned.attention is not None and len(runner.cache) == 1
    assert "Prompt-to-Prompt: refine, cross-attention injected for 1 and self-attention for 0.5" in tuned.status
    assert "reweighted piano ×2, local blend on piano, guitar" in tuned.status

    long_clip = melody(tmp_path / "long.wav", seconds=12)  # two model windows: edited, not drawn
    edited = runner.run(str(long_clip), target, source, method="p2p", **settings)
    assert edited.attention is None and len(edited.edits) == 1
    assert edited.status.endswith("no attention picture: it is drawn for clips of at most 11.52 s (one model window).")


def test_runner_refuses_prompt_to_prompt_clashes_with_one_line(
    tiny_editor, recording: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = DemoRunner(FakeEditor(), output_dir=tmp_path)
    drums = [Concept("drums", remove=True)]
    for kwargs, words in [
        ({"concepts": drums}, "Prompt-to-Prompt edits by attention control alone: clear the concepts, or choose"),
        ({"auto_mask": True}, "Prompt-to-Prompt edits by attention control alone: untick Automatic mask, or choose"),
        ({"reweight": "piano"}, 'Reweight takes "word=factor" pairs separated by commas'),
        ({"reweight": "piano=200"}, "Reweight piano=200: give a factor between 0 and 100"),
        ({"p2p_mode": "swap"}, "the Prompt-to-Prompt mode must be Automatic, Replace, Refine"),
    ]:
        with pytest.raises(InputError, match=words) as caught:
            fake.run(str(recording), "a piano", "a guitar", steps=STEPS, t_start=T_START, method="p2p", **kwargs)
        assert "\n" not in str(caught.value)
    assert fake.editor.calls == []  # refused before anything ran

    inverted = []
    monkeypatch.setattr(tiny_editor, "invert", lambda *args, **kwargs: inverted.append(1))
    runner = DemoRunner(tiny_editor, output_dir=tmp_path)
    long_clip = melody(tmp_path / "long.wav", seconds=12)  # two model windows
    for clip, target, kwargs, words in [
        (recording, "a recording of a grand piano", {"p2p_mode": "replace"},
         "Replace swaps words between descriptions of the same number of tokens, and the source description has "
         "\\d+, the target \\d+: choose Refine or Automatic"),
        (recording, "a recording of a piano", {"reweight": "drums=2"}, "Reweight drums: 'drums' is not a word of the target"),
        (recording, "a recording of a piano", {"blend": "drums"}, "Local blend drums: 'drums' is in neither the source"),
        (long_clip, "a recording of a piano", {"blend": "piano"},
         "Local blend works on clips of at most 11.52 s \\(one model window\\), and this one spans 2"),
    ]:
        with pytest.raises(InputError, match=words) as caught:
            runner.run(str(clip), target, "a recording of a guitar", steps=STEPS, t_start=T_START, method="p2p", **kwargs)
        assert "\n" not in str(caught.value)
    assert inverted == [] and len(runner.cache) == 0


def test_prompt_to_prompt_in_the_browser(page, recording: Path) -> None:
    _upload(page, recording)
    _status_starts(page, f"Ready: {recording.name}")
    method, mask = page.locator("#method"), page.locator("#auto-mask input[type=checkbox]")
    method.get_by_text("Prompt-to-Prompt (DDPM inversion + attention control)", exact=True).click()
    page.locator("#p2p-advanced").get_by_text("Advanced: Prompt-to-Prompt").click()
    page.get_by_text("Automatic replaces when the two descriptions have the same number of tokens").wait_for()
    assert page.locator("#p2p-mode").get_by_label("Automatic").is_checked()
    assert page.locator("#p2p-cross input[type=number]").input_value() == "0.6"
    assert page.locator("#p2p-self input[type=number]").input_value() == "0.2"
    page.locator("#p2p-reweight input").fill("piano=2")
    page.locator("#p2p-blend input").fill("piano")
    page.locator("#source textarea").fill("a recording of a guitar")

    mask.check()
    status = _run(page, "a recording of a piano", page.locator("#status textarea").input_value())
    assert status.startswith("Error: Prompt-to-Prompt edits by attention control alone: untick Automatic mask"), status
    mask.uncheck()
    status = _run(page, "a recording of a piano", status)
    assert "Prompt-to-Prompt: " in status and "reweighted piano ×2, local blend on piano" in status, status
    picture = page.locator("#attention img")
    picture.wait_for()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=picture.element_handle())
    page.locator("#mask").wait_for(state="hidden")

    method.get_by_text("DDPM inversion (default)", exact=True).click()
    status = _run(page, "a recording of a flute", status)
    assert status.startswith("Reused the inversion: only the edit ran") and "Prompt-to-Prompt" not in status, status
    page.locator("#attention").wait_for(state="hidden")


# ------------------------------------------------------------------------------------------ Stable Audio Open


@pytest.fixture(scope="module")
def tiny_sao():
    from audio_edit.editor import AudioEditor

    return AudioEditor.from_pretrained("tiny-sao", device="cpu", progress=False)


def stereo_clip(path: Path, sample_rate: int = 44100, seconds: float = 0.15, channels: int = 2) -> Path:
    """A short tone, its right channel a fifth above the left (a mono clip keeps the left)."""
    t = np.arange(round(sample_rate * seconds)) / sample_rate
    wave = np.stack([np.sin(2 * np.pi * 440 * t), 0.5 * np.sin(2 * np.pi * 660 * t)], axis=1)[:, :channels]
    sf.write(path, (0.4 * wave).astype(np.float32), sample_rate, subtype="PCM_16")
    return path


def test_stable_audio_open_edits_in_stereo_at_the_clips_rate(tiny_sao, tmp_path: Path) -> None:
    runner = DemoRunner(tiny_sao, output_dir=tmp_path / "out")
    assert runner.presets == {"steps": 200, "t_start": 100, "cfg_src": 1.0, "cfg_tar": 12.0}
    clip = stereo_clip(tmp_path / "tone.wav")  # 0.15 s: within the tiny model's window
    frames = sf.info(clip).frames
    result = runner.run(str(clip), "a piano", "a tone", steps=STEPS, t_start=T_START)
    ((key, entry),) = runner.cache._entries.items()
    assert key.cfg_src == entry.inversion.settings.cfg_src == 1.0  # the model's preset source guidance
    assert (result.sample_rate, result.num_frames) == (44100, frames) and result.reconstruction is not None
    for file in [result.reconstruction, *(file for _, file in result.edits)]:
        info = sf.info(file)
        assert (info.channels, info.samplerate, info.frames) == (2, 44100, frames)
        assert np.isfinite(sf.read(file, dtype="float32")[0]).all()
    assert result.spectrogram.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert runner.run(str(clip), "a choir", "a tone", steps=STEPS, t_start=T_START).reused

    mono = stereo_clip(tmp_path / "mono.wav", sample_rate=32000, channels=1)  # another rate, one channel
    result = runner.run(str(mono), "a piano", steps=STEPS, t_start=T_START, variations=2, method="sdedit")
    for _, file in result.edits:
        info = sf.info(file)
        assert (info.channels, info.samplerate, info.frames) == (2, 32000, sf.info(mono).frames)


def test_stable_audio_open_prompt_to_prompt_and_its_mask_over_time(
    tiny_sao, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = DemoRunner(tiny_sao, output_dir=tmp_path / "out")
    clip = stereo_clip(tmp_path / "tone.wav")
    result = runner.run(str(clip), "a piano", "a tone", steps=STEPS, t_start=T_START, method="p2p")  # the DiT's attention
    assert result.attention is not None and len(runner.cache) == 1

    def half(inv, *args, **kwargs):  # the mask of time alone a trained model finds (the tiny one finds none)
        mask = torch.zeros(1, 1, inv.x0.shape[-1])
        mask[..., : inv.x0.shape[-1] // 2] = 1
        return mask

    monkeypatch.setattr(tiny_sao, "mask", half)
    result = runner.run(str(clip), "a piano", "a tone", steps=STEPS, t_start=T_START, auto_mask=True)
    assert result.mask is None  # no picture of a mask over time alone
    assert "The automatic mask let the edit change 50% of the clip's length and kept the rest exactly." in result.status


def test_stable_audio_open_page_presets_and_errors(tiny_sao, tiny_editor, tmp_path: Path) -> None:
    pytest.importorskip("gradio", reason="the demo needs gradio")
    app = build_app(tiny_sao, output_dir=tmp_path / "out")

    def value(app, label: str):
        return next(b.value for b in app.blocks.values() if getattr(b, "label", None) == label)

    assert [value(app, label) for label in ("Steps", "t_start", "Source guidance (cfg_src)",
                                            "Target guidance (cfg_tar)")] == [200, 100, 1.0, 12.0]  # fmt: skip
    intro = next(b.value for b in app.blocks.values() if getattr(b, "elem_id", None) == "intro")
    assert "edit-friendly DDPM inversion with Stable Audio Open" in intro and "stereo" in intro
    assert value(build_app(tiny_editor, output_dir=tmp_path / "ldm"), "Source guidance (cfg_src)") == 3.0

    clip = stereo_clip(tmp_path / "tone.wav")
    edit = _app_function(app, "on_edit", "click").fn
    rows = ["", "add", 10.0] * 3
    outputs = edit(str(clip), "a piano", "a tone", STEPS, T_START, 1.0, 12.0, 0, 1, "p2p", False, 0.95, 1, *rows,
                   "auto", 0.6, 0.2, "", "", None, progress=lambda *args, **kwargs: None)  # fmt: skip
    assert outputs[0].startswith("Inverted the clip") and "Prompt-to-Prompt" in outputs[0], outputs[0]  # on the DiT
    outputs = edit(str(clip), "a piano", "a tone", STEPS, T_START, 1.0, 12.0, 0, 1, "ddpm", False, 0.95, 1, *rows,
                   "auto", 0.6, 0.2, "", "", None, progress=lambda *args, **kwargs: None)  # fmt: skip
    assert outputs[0].startswith("Reused the inversion"), outputs[0]  # the one P2P made (a DDPM inversion)
    assert all(sf.info(output.value["path"] if isinstance(output.value, dict) else output.value).channels == 2
               for output in outputs[1:3])  # fmt: skip


class OneWindow:
    """A model that edits one window of 1024 latent frames of 8 samples at 44.1 kHz (0.186 s) and a codec
    that refuses longer clips, as Stable Audio Open's did before it edited window by window."""

    class model:
        max_frames, hop_length, sample_rate = 1024, 8, 44100

    class codec:
        @staticmethod
        def read(audio) -> None:
            if audio.num_frames > 1024 * 8:
                raise InputError("the clip is too long for this model")


def test_clip_length_follows_a_model_window(tiny_sao, tmp_path: Path) -> None:
    assert demo_module.model_max_seconds(OneWindow()) == 0.18  # rounded down to what the page states
    runner = DemoRunner(OneWindow(), output_dir=tmp_path / "out", max_seconds=30)
    assert runner.max_seconds == 0.18
    assert DemoRunner(OneWindow(), output_dir=tmp_path / "out", max_seconds=0.1).max_seconds == 0.1
    with pytest.raises(InputError, match=r"^long.wav is 0.5 s long; this demo takes clips of at most 0.18 s: cut it"):
        runner.run(str(stereo_clip(tmp_path / "long.wav", seconds=0.5)), "a piano", steps=STEPS, t_start=T_START)
    assert check_clip(stereo_clip(tmp_path / "short.wav"), runner.max_seconds).startswith("Ready: short.wav, 0.1 s")
    window = demo_module.model_max_seconds(tiny_sao)  # None once the model edits longer clips window by window
    assert DemoRunner(tiny_sao, output_dir=tmp_path / "sao").max_seconds == min(30.0, window or 30.0)


def test_stable_audio_open_in_the_browser(browser, tiny_sao, tmp_path: Path) -> None:
    """The page of Stable Audio Open: its source guidance preset, a stereo download at the clip's rate and
    Prompt-to-Prompt refused in one line."""
    pytest.importorskip("gradio", reason="the demo needs gradio")
    app = build_app(tiny_sao, defaults={"steps": STEPS, "t_start": T_START}, output_dir=tmp_path / "out")
    port = _free_port()
    app.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(f"http://127.0.0.1:{port}/")
        page.get_by_text("Stable Audio Open edits 44.1 kHz stereo").wait_for()
        cfg_src = page.locator("input[type=number][aria-label='number input for Source guidance (cfg_src)']")
        assert cfg_src.input_value() == "1"
        clip = stereo_clip(tmp_path / "tone.wav")
        _upload(page, clip)
        _status_starts(page, "Ready: tone.wav")
        status = _run(page, "a piano", page.locator("#status textarea").input_value())
        assert status.startswith("Inverted the clip"), status
        link = page.locator("#edit-0 a[download]")
        link.wait_for()
        samples, rate = sf.read(io.BytesIO(page.request.get(link.get_attribute("href")).body()), dtype="float32")
        assert (samples.shape, rate) == ((sf.info(clip).frames, 2), 44100) and np.isfinite(samples).all()

        page.locator("#method").get_by_text("Prompt-to-Prompt (DDPM inversion + attention control)", exact=True).click()
        status = _run(page, "a flute", status)
        assert "Prompt-to-Prompt: refine" in status and not status.startswith("Error"), status  # on the DiT
    finally:
        context.close()
        app.close()


# ------------------------------------------------------------------------------------------ FlowEdit, ACE-Step


def test_flowedit_on_the_tiny_model(tiny_editor, recording: Path, tmp_path: Path) -> None:
    """FlowEdit inverts nothing (no cache entry, no reconstruction); t_start is its n_max."""
    runner = DemoRunner(tiny_editor, output_dir=tmp_path)
    info = sf.info(recording)
    result = runner.run(str(recording), "jazz", "a melody", steps=STEPS, t_start=T_START, variations=2,
                        method="flowedit")  # fmt: skip
    assert result.reconstruction is None and result.mask is None and not result.reused and len(runner.cache) == 0
    assert result.method == "flowedit"
    assert [label for label, _ in result.edits] == ["Edit 1 (seed 0)", "Edit 2 (seed 1)"]
    assert result.status.startswith(f"Ran FlowEdit with {STEPS} steps, n_max (t_start) {T_START} (")
    assert "no reconstruction" in result.status
    clips = [sf.read(file, dtype="float32")[0] for _, file in result.edits]
    assert all(clip.shape[0] == info.frames and np.isfinite(clip).all() for clip in clips)
    assert not any(path.name == "reconstruction.wav" for path in result.spectrogram.parent.iterdir())


def test_runner_refuses_flowedit_clashes_with_one_line(recording: Path, tmp_path: Path) -> None:
    runner = DemoRunner(FakeEditor(), output_dir=tmp_path)
    drums = [Concept("drums", remove=True)]
    clash = "FlowEdit inverts nothing, so it takes no automatic mask or concepts: "
    for kwargs, words in [
        ({"auto_mask": True}, clash + "untick Automatic mask, or choose another method"),
        ({"concepts": drums}, clash + "clear the concepts, or choose another method"),
        ({"concepts": drums, "auto_mask": True}, clash + "untick Automatic mask, clear the concepts, or choose"),
    ]:
        with pytest.raises(InputError, match=words) as caught:
            runner.run(str(recording), "jazz", "a melody", steps=STEPS, t_start=T_START, method="flowedit", **kwargs)
        assert "\n" not in str(caught.value)
    with pytest.raises(InputError, match="principal components need an inversion, and FlowEdit makes none"):
        runner.components(str(recording), steps=STEPS, t_start=T_START, method="flowedit")
    assert runner.editor.calls == []  # refused before anything ran

    # Prompt-to-Prompt is a method of its own on the page; a request joining it to FlowEdit reads the page's words
    request = edit_request("jazz", "a melody", STEPS, T_START, 3.0, 12.0, 0, 1, "flowedit", False, ())
    assert (request.method, request.n_min, request.n_avg) == ("flowedit", 0, 1)
    with pytest.raises(InputError, match=clash + "leave out Prompt-to-Prompt, or choose another method") as caught:
        check_request(dataclasses.replace(request, p2p=P2POptions()), demo_module.PAGE)
    assert "\n" not in str(caught.value)


@pytest.fixture(scope="module")
def tiny_acestep():
    from audio_edit.editor import AudioEditor

    return AudioEditor.from_pretrained("tiny-acestep", device="cpu", progress=False)


def test_ace_step_edits_in_stereo_at_the_clips_rate(tiny_acestep, tmp_path: Path) -> None:
    """ACE-Step's presets (8 steps, t_start 6, guidance 1 on the turbo checkpoint), stereo outputs at the
    clip's rate with DDPM inversion and FlowEdit, and Prompt-to-Prompt refused in one line."""
    runner = DemoRunner(tiny_acestep, output_dir=tmp_path / "out")
    assert runner.presets == {"steps": 8, "t_start": 6, "cfg_src": 1.0, "cfg_tar": 1.0}
    assert demo_module.model_name(tiny_acestep) == "ACE-Step" and runner.max_seconds == 30.0  # edits window by window
    clip = stereo_clip(tmp_path / "tone.wav", sample_rate=32000, seconds=0.25)
    frames = sf.info(clip).frames
    result = runner.run(str(clip), "a piano", "a tone")  # the model's presets
    assert result.status.startswith("Inverted the clip (DDPM inversion, 8 steps, t_start 6)"), result.status
    ((key, entry),) = runner.cache._entries.items()
    assert key.cfg_src == entry.inversion.settings.cfg_src == 1.0
    for method in ("ddpm", "flowedit"):
        result = runner.run(str(clip), "a piano", "a tone", method=method)
        assert (result.sample_rate, result.num_frames) == (32000, frames)
        files = [file for _, file in result.edits] + [result.reconstruction] * (method == "ddpm")
        for file in files:
            info = sf.info(file)
            assert (info.channels, info.samplerate, info.frames) == (2, 32000, frames)
            assert np.isfinite(sf.read(file, dtype="float32")[0]).all()
    assert result.status.startswith("Ran FlowEdit with 8 steps, n_max (t_start) 6") and len(runner.cache) == 1
    result = runner.run(str(clip), "a piano", "a tone", method="p2p")  # the DiT's attention to the words
    assert (result.sample_rate, result.num_frames) == (32000, frames) and len(runner.cache) == 1
    assert result.attention is not None and result.attention.suffix == ".png"


def test_ace_step_page_presets_and_errors(tiny_acestep, tiny_editor, tmp_path: Path) -> None:
    pytest.importorskip("gradio", reason="the demo needs gradio")
    app = build_app(tiny_acestep, output_dir=tmp_path / "out")

    def block(**found):
        return next(b for b in app.blocks.values() if all(getattr(b, k, None) == v for k, v in found.items()))

    assert [block(label=label).value for label in ("Steps", "t_start", "Source guidance (cfg_src)",
                                                   "Target guidance (cfg_tar)")] == [8, 6, 1.0, 1.0]  # fmt: skip
    intro = block(elem_id="intro").value
    assert "edit-friendly DDPM inversion with ACE-Step" in intro and "ACE-Step edits 48 kHz stereo" in intro
    assert ("FlowEdit (no inversion)", "flowedit") in [tuple(choice) for choice in block(elem_id="method").choices]
    assert "n_max" in block(elem_id="method-help").value

    clip = stereo_clip(tmp_path / "tone.wav", seconds=0.25)
    edit = _app_function(app, "on_edit", "click").fn
    rows = ["", "add", 10.0] * 3

    def run(method: str, auto_mask: bool = False) -> list:
        return edit(str(clip), "a piano", "a tone", 8, 6, 1.0, 1.0, 0, 1, method, auto_mask, 0.95, 1, *rows,
                    "auto", 0.6, 0.2, "", "", None, progress=lambda *args, **kwargs: None)  # fmt: skip

    assert "Prompt-to-Prompt: refine" in run("p2p")[0]  # on the DiT
    status = run("flowedit", True)[0]
    assert status.startswith("Error: FlowEdit inverts nothing, so it takes no automatic mask") and "\n" not in status, status
    # the lyrics (shown for ACE-Step only): another inversion; new lyrics for the edit alone reuse it
    assert block(elem_id="lyrics").visible and not next(
        b for b in build_app(tiny_editor, output_dir=tmp_path / "ldm").blocks.values() if getattr(b, "elem_id", None) == "lyrics"
    ).visible  # fmt: skip
    sung = edit(str(clip), "", "a tone", 8, 6, 1.0, 1.0, 0, 1, "ddpm", False, 0.95, 1, *rows,
                "auto", 0.6, 0.2, "", "", None, "la la la", "", progress=lambda *args, **kwargs: None)[0]  # fmt: skip
    assert sung.startswith("Error") and "\n" not in sung, sung  # no target and no new lyrics: nothing to edit
    first = edit(str(clip), "a tone", "a tone", 8, 6, 1.0, 1.0, 0, 1, "ddpm", False, 0.95, 1, *rows,
                 "auto", 0.6, 0.2, "", "", None, "la la la", "", progress=lambda *args, **kwargs: None)[0]  # fmt: skip
    assert first.startswith("Inverted the clip"), first  # other lyrics: another inversion
    again = edit(str(clip), "", "a tone", 8, 6, 1.0, 1.0, 0, 1, "ddpm", False, 0.95, 1, *rows,
                 "auto", 0.6, 0.2, "", "", None, "la la la", "na na na", progress=lambda *args, **kwargs: None)[0]  # fmt: skip
    assert again.startswith("Reused the inversion"), again  # a lyrics edit of the same inversion
    outputs = run("flowedit")
    assert outputs[0].startswith("Ran FlowEdit with 8 steps"), outputs[0]
    assert outputs[1].visible is False  # no reconstruction
    edited = outputs[2].value["path"] if isinstance(outputs[2].value, dict) else outputs[2].value
    assert (sf.info(edited).channels, sf.info(edited).samplerate) == (2, 44100)
