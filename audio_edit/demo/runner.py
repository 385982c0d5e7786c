"""The demo's jobs: :class:`DemoRunner` inverts a clip (or reuses its cached inversion), then edits it or
moves it along a principal component and writes the outputs; one job computes at a time, and a job
can be cancelled between its stages."""

import logging
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from image_core import adapters
from image_core.errors import EditError, InputError
from image_core.methods.sega import Concept, check_concepts
from image_core.settings import check_interval, check_settings, consecutive_seeds

from ..audio_io import Audio, load_audio
from .cache import (
    DEFAULT_CACHE_MB, MIB, CachedInversion, ComponentsKey, InversionCache, InversionKey, _first_latent,
    _release_device_cache, inversion_bytes,
)
from .checks import (
    _check_length, _clip_seconds, _digest, _hide_folder, _integer, check_clip, check_components_choice,
    check_method_choice, parse_time_range,
)
from .options import DEFAULT_MAX_SECONDS, DEFAULTS, MAX_VARIATIONS
from .outputs import (
    ComponentsResult, RunResult, _Made, components_status, edit_status, mask_share, write_edits, write_moves,
)

if TYPE_CHECKING:
    from ..editor import AudioEditor

_KEPT_RUNS = 8  # output folders of older runs are deleted (gradio serves its own copies)

log = logging.getLogger(__name__)


class EditCancelled(Exception):
    """The run was cancelled from the page (raised between its stages)."""


class DemoRunner:
    """Runs the demo's edits with an editor, reusing inversions across runs.

    One run computes at a time (a run whose page stopped waiting for it, after Cancel, finishes its
    current stage before the next one starts). Cached inversions live in host memory.

    Args:
        editor: an ``AudioEditor`` (or anything with its ``invert`` / ``edit`` / ``reconstruct``, and
            ``sdedit`` / ``mask`` / ``save_mask`` for those methods).
        cache_mb: MiB of inversions kept in host memory (least recently used dropped first);
            default :data:`DEFAULT_CACHE_MB`.
        output_dir: folder for the WAV and PNG outputs; a temporary folder (removed at exit) by default.
        max_seconds: longest clip accepted, in seconds; default :data:`DEFAULT_MAX_SECONDS`.
    """

    def __init__(
        self,
        editor: "AudioEditor",
        cache_mb: float = DEFAULT_CACHE_MB,
        output_dir: str | Path | None = None,
        max_seconds: float = DEFAULT_MAX_SECONDS,
    ) -> None:
        if not max_seconds > 0:
            raise ValueError(f"max_seconds must be positive, got {max_seconds}")
        self.editor = editor
        self.cache = InversionCache(round(cache_mb * MIB))
        self.max_seconds = float(max_seconds)
        if output_dir is None:
            output_dir = tempfile.mkdtemp(prefix="audio-edit-demo-")
            weakref.finalize(self, shutil.rmtree, output_dir, ignore_errors=True)
        self.output_dir = Path(output_dir)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self._runs: list[Path] = []
        self._counter = 0
        self._lock = threading.Lock()
        self._compute = threading.Lock()  # held while a run inverts or edits
        self._running: dict[str, threading.Event] = {}  # session -> its run's cancel flag

    def run(
        self,
        audio_path: str | Path | None,
        target_prompt: str,
        source_prompt: str = "",
        steps: int = DEFAULTS["steps"],
        t_start: int = DEFAULTS["t_start"],
        cfg_src: float = DEFAULTS["cfg_src"],
        cfg_tar: float = DEFAULTS["cfg_tar"],
        seed: int = DEFAULTS["seed"],
        variations: int = DEFAULTS["variations"],
        method: str = DEFAULTS["method"],
        auto_mask: bool = DEFAULTS["auto_mask"],
        session: str = "",
        report: Callable[[float, str], None] | None = None,
        concepts: Sequence[Concept] = (),
    ) -> RunResult:
        """Invert the clip (or reuse its cached inversion), edit it and write the outputs.

        Args:
            target_prompt: what the clip should become; may be empty when ``concepts`` are given (the
                edit then keeps the source description and only the concepts guide it).
            method: "ddpm" (edit-friendly DDPM inversion), "ddim" (DDIM inversion: one variation),
                "null-text" (DDIM inversion optimised for ``cfg_tar``, which replaces ``cfg_src`` in
                its cache key: one variation) or "sdedit" (noise the clip and sample the target:
                nothing inverted, cached or reconstructed).
            auto_mask: edit only inside the DiffEdit mask of the target against the source description
                (an inversion method only); its picture is written next to the outputs.
            report: called with (fraction done, what is happening) between the stages.
            concepts: LEDITS semantic guidance (an inversion method only), e.g. from :func:`page_concepts`.

        Raises:
            InputError: no clip, an unreadable or too long clip, neither a target nor a concept, or
                settings no edit can run with (the message names the uploaded file by its name only).
            EditCancelled: :meth:`cancel` was called for ``session`` while this run was under way.
        """
        notify = report or (lambda fraction, text: None)
        if not audio_path:
            raise InputError("upload or record a clip first")
        concepts = list(concepts)
        target = (target_prompt or "").strip()
        if not target and not concepts:
            raise InputError('type a target description of the edit, e.g. "jazz piano", or add a concept')
        source = (source_prompt or "").strip()
        steps, t_start, seed, variations = (_integer(v, name) for v, name in
                                            ((steps, "steps"), (t_start, "t_start"), (seed, "seed"), (variations, "variations")))
        cfg_src, cfg_tar = float(cfg_src), float(cfg_tar)
        check_settings(steps, t_start, 1.0, cfg_src, cfg_tar)
        if not 1 <= variations <= MAX_VARIATIONS:
            raise InputError(f"variations must be between 1 and {MAX_VARIATIONS}, got {variations}")
        consecutive_seeds(seed, variations)
        method = check_method_choice(method, bool(auto_mask), variations, target, source, len(concepts))
        check_concepts(concepts)
        late = [c for c in concepts if c.scale > 0 and c.warmup >= t_start]
        if late:
            raise InputError(
                f"the concepts' warm-up ({late[0].warmup} steps) must be below t_start ({t_start}), "
                "or they never guide the edit: lower the warm-up"
            )

        started = time.perf_counter()
        path = Path(audio_path)
        cancelled = self._start(session)
        try:
            if method == "sdedit":
                with self._compute:
                    _stop_if(cancelled)
                    made = self._sdedit(path, target, steps, t_start, cfg_tar, seed, variations, notify, cancelled)
            else:
                guidance = cfg_tar if method == "null-text" else cfg_src  # null-text: optimised for the edit's scale
                key = InversionKey(session, _digest(path), source, steps, t_start, guidance, seed, variations, method)
                with self._compute:
                    _stop_if(cancelled)
                    made = self._edit(path, key, target, cfg_tar, bool(auto_mask), notify, cancelled, concepts)
        except EditError as error:
            raise type(error)(_hide_folder(str(error), path)) from None
        finally:
            self._finish(session, cancelled)

        notify(0.95, "Writing the outputs")
        folder = made.folder or self._new_run_folder()
        rate = made.sample_rate
        reconstruction_file, edits, spectrogram_file = write_edits(folder, made, target, concepts, seed, variations)

        seconds = time.perf_counter() - started
        status = edit_status(method, steps, t_start, made, target, concepts, seconds)
        mask_file = folder / "mask.png" if made.mask_share is not None else None
        return RunResult(reconstruction_file, edits, spectrogram_file, made.reused, status, rate,
                         int(made.original.size), method, mask_file)

    def components(
        self,
        audio_path: str | Path | None,
        source_prompt: str = "",
        steps: int = DEFAULTS["steps"],
        t_start: int = DEFAULTS["t_start"],
        cfg_src: float = DEFAULTS["cfg_src"],
        seed: int = DEFAULTS["seed"],
        method: str = DEFAULTS["method"],
        n: int = DEFAULTS["components"],
        pc: int = 1,
        amount: float = DEFAULTS["amount"],
        time_range: str | None = "",
        max_iterations: int = DEFAULTS["iterations"],
        session: str = "",
        report: Callable[[float, str], None] | None = None,
        only_cached: bool = False,
    ) -> ComponentsResult | None:
        """Find the top ``n`` principal components of the posterior at the edit's first step (or reuse
        them) and move the clip along component ``pc`` by ``-amount`` and ``+amount`` standard deviations.

        The inversion is that of one seed, ``seed`` (shared with :meth:`run` at one variation; a
        null-text one is optimised for ``cfg_src`` here, the guidance the components and moves run
        at, and shared with a run whose target guidance equals it); the components are cached with it, keyed by ``n``, the time range and ``max_iterations``, so a new
        ``pc`` or ``amount`` re-runs only the move. Amount 0 gives the reconstruction.

        Args:
            time_range: "start:end" in seconds to restrict the components to, or empty for the whole clip.
            max_iterations: bound on the subspace iterations (each is one batched model call).
            only_cached: return None, running nothing, unless the components are cached already
                (for moves made by dragging a slider).

        Raises:
            InputError: no clip, an unreadable or too long clip, SDEdit as the method, a time range
                outside the clip, or settings out of range (one line each).
            EditCancelled: :meth:`cancel` was called for ``session`` while this run was under way.
        """
        notify = report or (lambda fraction, text: None)
        if not audio_path:
            raise InputError("upload or record a clip first")
        source = (source_prompt or "").strip()
        steps, t_start, seed, n, pc, max_iterations = (_integer(v, name) for v, name in (
            (steps, "steps"), (t_start, "t_start"), (seed, "seed"), (n, "the number of components"),
            (pc, "the component"), (max_iterations, "iterations")))
        cfg_src, amount = float(cfg_src), float(amount)
        check_settings(steps, t_start, 1.0, cfg_src)
        consecutive_seeds(seed, 1)
        method = check_components_choice(method, n, pc, amount, max_iterations)
        seconds = parse_time_range(time_range)

        path = Path(audio_path)
        key = InversionKey(session, _digest(path), source, steps, t_start, cfg_src, seed, 1, method)
        wanted = ComponentsKey(n, seconds, max_iterations)
        if only_cached:
            entry = self.cache.get(key)
            if entry is None or wanted not in entry.components:
                return None
        started = time.perf_counter()
        cancelled = self._start(session)
        try:
            if seconds is not None:  # refused before the slow inversion
                duration = _clip_seconds(path, self.max_seconds)
                check_interval(seconds, 0.0, duration, "time range", f"the clip's 0..{duration:.2f} s")
            with self._compute:
                _stop_if(cancelled)
                entry = self.cache.get(key)
                reused = "inversion" if entry is not None else ""
                if entry is None:
                    entry = self._invert(path, key, notify, cancelled)
                    _stop_if(cancelled)
                pcs = entry.components.get(wanted)
                if pcs is not None:
                    reused = "components"
                else:
                    notify(0.5 if not reused else 0.0, "Finding the principal components")
                    region = None if seconds is None else self.editor.region_mask(entry.inversion, seconds=seconds)
                    pcs = self.editor.principal_components(
                        entry.inversion, n=n, step=0, region=region, max_iterations=max_iterations)
                    entry = entry.with_components(wanted, pcs)
                    if not self.cache.put(key, entry):
                        log.info("an inversion of %.0f MiB is larger than the whole cache; not kept", entry.nbytes / MIB)
                    _stop_if(cancelled)
                notify(0.8 if reused != "components" else 0.0, f"Moving the clip along component {pc}")
                clips = self.editor.edit_pc(_first_latent(entry.inversion), pcs, pc=pc, amount=[-amount, amount])
        except EditError as error:
            raise type(error)(_hide_folder(str(error), path)) from None
        finally:
            self._finish(session, cancelled)

        notify(0.95, "Writing the outputs")
        folder = self._new_run_folder()
        rate = entry.sample_rate
        moved, spectrogram_file = write_moves(folder, entry.original, clips, pc, amount, rate)

        elapsed = time.perf_counter() - started
        iterations = int(pcs.info.get("iterations", max_iterations))
        status = components_status(reused, method, steps, t_start, n, seconds, max_iterations, iterations, pc, amount,
                                   elapsed)
        return ComponentsResult([float(v) for v in pcs.values], moved, spectrogram_file, reused, status, rate,
                                int(entry.original.size), iterations)

    def cancel(self, session: str = "") -> bool:
        """Ask the run of ``session`` under way to stop at its next stage; whether there was one."""
        with self._lock:
            flag = self._running.get(session)
        if flag is None:
            return False
        flag.set()
        return True

    def _start(self, session: str) -> threading.Event:
        """Register a new run of ``session``: its cancel flag."""
        flag = threading.Event()
        with self._lock:
            self._running[session] = flag
        return flag

    def _finish(self, session: str, flag: threading.Event) -> None:
        """Unregister the run of ``session`` that ``flag`` belongs to (a newer run keeps its own)."""
        with self._lock:
            if self._running.get(session) is flag:
                del self._running[session]

    def _read(self, path: Path) -> Audio:
        """The uploaded clip, checked (header, then length) before it is decoded in full."""
        check_clip(path, self.max_seconds)
        audio = load_audio(path)
        _check_length(path.name, audio.duration, self.max_seconds)
        return audio

    def _sdedit(
        self, path: Path, target: str, steps: int, t_start: int, cfg_tar: float, seed: int, variations: int,
        notify: Callable[[float, str], None], cancelled: threading.Event,
    ) -> _Made:
        """SDEdit the clip: one edit per seed, nothing inverted or cached."""
        notify(0.0, "Reading the clip")
        audio = self._read(path)
        _stop_if(cancelled)
        notify(0.05, "Running SDEdit")
        clips = self.editor.sdedit(
            audio, target_prompt=[target], num_steps=steps, t_start=t_start, cfg_tar=cfg_tar, eta=1.0,
            seed=list(range(seed, seed + variations)),
        )
        return _Made(list(clips), _mono(audio), None, audio.sample_rate)

    def _edit(
        self, path: Path, key: InversionKey, target: str, cfg_tar: float, auto_mask: bool,
        notify: Callable[[float, str], None], cancelled: threading.Event, concepts: Sequence[Concept] = (),
    ) -> _Made:
        """Edit from the clip's inversion (cached, or made now), inside its automatic mask if asked;
        with concepts, by semantic guidance too (an empty target keeps the source description)."""
        entry = self.cache.get(key)
        reused = entry is not None
        if entry is None:
            entry = self._invert(path, key, notify, cancelled)
        _stop_if(cancelled)
        mask, share, folder = None, None, None
        if auto_mask:
            notify(0.5 if not reused else 0.0, "Computing the mask")
            mask = self.editor.mask(entry.inversion, target, source_prompt=key.source_prompt, seed=key.seed)
            if not bool((mask > 0).any()):
                raise InputError(
                    "the automatic mask found nowhere the target and source descriptions disagree: "
                    "describe the source more closely, or untick Automatic mask"
                )
            folder = self._new_run_folder()
            self.editor.save_mask(mask, folder / "mask.png", entry.inversion)
            share = mask_share(self.editor, mask, entry.inversion)
            _stop_if(cancelled)
        notify(0.6 if not reused else 0.3 if auto_mask else 0.0, "Editing")
        guidance = {"concepts": list(concepts)} if concepts else {}
        targets = [target] if target else None
        clips = self.editor.edit(entry.inversion, target_prompt=targets, cfg_tar=cfg_tar, mask=mask, **guidance)
        return _Made(list(clips), entry.original, entry.reconstruction, entry.sample_rate, reused, share, folder)

    def _invert(
        self, path: Path, key: InversionKey, notify: Callable[[float, str], None], cancelled: threading.Event
    ) -> CachedInversion:
        """Invert and reconstruct the clip; cache the result (tensors in host memory)."""
        notify(0.0, "Reading the clip")
        audio = self._read(path)
        self._make_room(inversion_bytes(self.editor, audio, key.t_start, key.variations, key.method))
        _stop_if(cancelled)
        notify(0.05, "Inverting the clip")
        inversion = self.editor.invert(
            audio, source_prompt=key.source_prompt, num_steps=key.steps, t_start=key.t_start,
            cfg_src=key.cfg_src, eta=1.0, seed=list(range(key.seed, key.seed + key.variations)), method=key.method,
        ).to("cpu")  # kept in host memory: the sampler moves each step's maps to the model's device itself
        _release_device_cache(self.editor)
        _stop_if(cancelled)
        notify(0.4, "Reconstructing the clip")
        reconstruction = self.editor.reconstruct(_first_latent(inversion))[0]
        entry = CachedInversion(inversion, _mono(audio), np.asarray(reconstruction, np.float32), audio.sample_rate)
        if not self.cache.put(key, entry):
            log.info("an inversion of %.0f MiB is larger than the whole cache; not kept", entry.nbytes / MIB)
        return entry

    def _make_room(self, needed: int | None) -> None:
        """Drop least recently used cached inversions until ``needed`` more bytes fit in the free host
        memory (where the cache lives, and where a CPU model inverts), rather than have the inversion
        refused for lack of memory. Nothing is dropped when ``needed`` is None (unknown) or fits."""
        if needed is None:
            return
        while (free := adapters.available_memory("cpu")) is not None and needed > free:
            if self.cache.evict_oldest() == 0:
                return
            log.info("dropped a cached inversion to make room for one of %.0f MiB", needed / MIB)

    def _new_run_folder(self) -> Path:
        """A fresh output folder; those of older runs beyond the last few are deleted."""
        with self._lock:
            self._counter += 1
            folder = Path(tempfile.mkdtemp(prefix=f"run{self._counter:05d}-", dir=self.output_dir))
            self._runs.append(folder)
            stale, self._runs = self._runs[:-_KEPT_RUNS], self._runs[-_KEPT_RUNS:]
        for old in stale:
            shutil.rmtree(old, ignore_errors=True)
        return folder


def _stop_if(cancelled: threading.Event) -> None:
    """EditCancelled once the run's cancel flag is set."""
    if cancelled.is_set():
        raise EditCancelled("the edit was cancelled")


def _mono(audio: Audio) -> np.ndarray:
    return audio.samples.mean(axis=0, dtype=np.float32)
