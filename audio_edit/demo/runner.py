"""The demo's jobs: :class:`DemoRunner` inverts a clip (or reuses its cached inversion), then edits it or
moves it along a principal component and writes the outputs; one job computes at a time, and a job
can be cancelled between its stages."""

import dataclasses
import logging
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import soundfile as sf
import torch

from image_core import adapters
from image_core.errors import EditError, InputError
from image_core.methods.sega import Concept
from image_core.p2p import windows_of
from image_core.request import EditRequest, check_request
from image_core.runner import Stages, run_request, use_conditions
from image_core.settings import check_interval

from ..audio_io import Audio, load_audio
from .cache import (
    DEFAULT_CACHE_MB, MIB, CachedInversion, ComponentsKey, InversionCache, InversionKey, _first_latent,
    _release_device_cache, inversion_bytes,
)
from .checks import (
    PAGE, _check_length, _clip_seconds, _digest, _hide_folder, check_clip, components_request, edit_request,
    p2p_options, p2p_prompts, page_method, page_p2p_mode, parse_time_range,
)
from .options import (
    DEFAULT_MAX_SECONDS, DEFAULTS, METHODS, P2P_METHOD, SAMPLING_METHODS, model_max_seconds, model_presets,
)
from .outputs import (
    ComponentsResult, RunResult, _Made, components_status, describe_p2p, edit_status, mask_share, write_edits,
    write_moves,
)

if TYPE_CHECKING:
    from image_core.inversion import Inversion
    from image_core.methods.pcs import PosteriorPCs

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
            ``sdedit`` / ``flowedit`` / ``mask`` / ``save_mask`` for those methods).
        cache_mb: MiB of inversions kept in host memory (least recently used dropped first);
            default :data:`DEFAULT_CACHE_MB`.
        output_dir: folder for the WAV and PNG outputs; a temporary folder (removed at exit) by default.
        max_seconds: longest clip accepted, in seconds; default :data:`DEFAULT_MAX_SECONDS`. A model that
            edits one window only caps it at that window (:func:`model_max_seconds`).

    The steps, t_start and guidance a run is not given are the editor's model's (:func:`model_presets`).
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
        limit = model_max_seconds(editor)
        self.max_seconds = float(max_seconds) if limit is None else min(float(max_seconds), limit)
        self.presets = model_presets(editor)
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
        steps: int | None = None,
        t_start: int | None = None,
        cfg_src: float | None = None,
        cfg_tar: float | None = None,
        seed: int = DEFAULTS["seed"],
        variations: int = DEFAULTS["variations"],
        method: str = DEFAULTS["method"],
        auto_mask: bool = DEFAULTS["auto_mask"],
        session: str = "",
        report: Callable[[float, str], None] | None = None,
        concepts: Sequence[Concept] = (),
        p2p_mode: str = DEFAULTS["p2p_mode"],
        cross_steps: float = DEFAULTS["cross_steps"],
        self_steps: float = DEFAULTS["self_steps"],
        reweight: str = "",
        blend: str = "",
        lyrics: str = "",
        target_lyrics: str = "",
    ) -> RunResult:
        """Invert the clip (or reuse its cached inversion), edit it and write the outputs.

        Args:
            target_prompt: what the clip should become; may be empty when ``concepts`` are given (the
                edit then keeps the source description and only the concepts guide it).
            method: "ddpm" (edit-friendly DDPM inversion), "ddim" (DDIM inversion: one variation),
                "null-text" (DDIM inversion optimised for ``cfg_tar``, which replaces ``cfg_src`` in
                its cache key: one variation), "sdedit" (noise the clip and sample the target:
                nothing inverted, cached or reconstructed), "flowedit" (FlowEdit from the clip to the
                target, t_start its n_max, its paper's n_min 0 and n_avg 1: nothing inverted, cached or
                reconstructed either) or "p2p" (Prompt-to-Prompt: a DDPM inversion,
                shared with "ddpm" in the cache, edited with the source description's attention).
            auto_mask: edit only inside the DiffEdit mask of the target against the source description
                (an inversion method only); its picture is written next to the outputs.
            report: called with (fraction done, what is happening) between the stages.
            concepts: LEDITS semantic guidance (an inversion method only), e.g. from :func:`page_concepts`.
            p2p_mode, cross_steps, self_steps, reweight, blend: the Prompt-to-Prompt settings (method
                "p2p" only; :func:`p2p_options`): "auto" (replace for descriptions of the same number of
                tokens, else refine), "replace" or "refine"; the fractions of the steps with cross- and
                self-attention injected; "word=factor, ..." and the local-blend words. Its word maps
                are drawn over the clip's spectrogram for a clip of one model window (:func:`one_window_seconds`).
            lyrics, target_lyrics: what the clip sings, and what the edit sings instead (ACE-Step only;
                :func:`edit_request`); empty: instrumental, and no lyrics edit.

        Raises:
            InputError: no clip, an unreadable or too long clip, neither a target nor a concept, or
                settings no edit can run with (the message names the uploaded file by its name only).
            EditCancelled: :meth:`cancel` was called for ``session`` while this run was under way.
        """
        notify = report or (lambda fraction, text: None)
        if not audio_path:
            raise InputError("upload or record a clip first")
        steps, t_start, cfg_src, cfg_tar = self._preset(steps=steps, t_start=t_start, cfg_src=cfg_src, cfg_tar=cfg_tar)
        concepts = list(concepts)
        p2p = page_method(method) == P2P_METHOD
        options = p2p_options(p2p_mode, cross_steps, self_steps, reweight, blend) if p2p else None
        request = edit_request(target_prompt, source_prompt, steps, t_start, cfg_src, cfg_tar, seed, variations,
                               method, auto_mask, concepts, options, lyrics, target_lyrics)  # fmt: skip
        check_request(request, PAGE)
        automatic = p2p and page_p2p_mode(p2p_mode) == "auto"
        if p2p:
            use_conditions(self.editor, request)  # the prompts' tokens as the inversion will hold them
            request = p2p_prompts(self.editor.model, request, automatic)
        target, method = request.targets[0] if request.targets else "", request.method

        started = time.perf_counter()
        path = Path(audio_path)
        cancelled = self._start(session)
        try:
            if method in SAMPLING_METHODS:
                with self._compute:
                    _stop_if(cancelled)
                    made = self._sample(path, request, notify, cancelled)
            else:
                key = InversionKey.of(session, _digest(path), request)
                with self._compute:
                    _stop_if(cancelled)
                    made = self._edit(path, key, request, notify, cancelled)
        except EditError as error:
            raise type(error)(_hide_folder(str(error), path)) from None
        finally:
            self._finish(session, cancelled)

        notify(0.95, "Writing the outputs")
        folder = made.folder or self._new_run_folder()
        rate = made.sample_rate
        reconstruction_file, edits, spectrogram_file = write_edits(folder, made, target, concepts, request.seed,
                                                                   request.num_outputs)  # fmt: skip
        seconds = time.perf_counter() - started
        status = edit_status(method, request.steps, request.tstart, made, target, concepts, seconds)
        if request.p2p is not None:
            status += " " + describe_p2p(request.p2p, method, automatic, made.attention is not None,
                                         one_window_seconds(self.editor))
        return RunResult(reconstruction_file, edits, spectrogram_file, made.reused, status, rate,
                         int(made.original.size), P2P_METHOD if p2p else method, made.mask, made.attention)

    def components(
        self,
        audio_path: str | Path | None,
        source_prompt: str = "",
        steps: int | None = None,
        t_start: int | None = None,
        cfg_src: float | None = None,
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
        lyrics: str = "",
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
            lyrics: what the clip sings (ACE-Step only), part of the inversion's condition.

        Raises:
            InputError: no clip, an unreadable or too long clip, SDEdit or FlowEdit as the method, a time range
                outside the clip, or settings out of range (one line each).
            EditCancelled: :meth:`cancel` was called for ``session`` while this run was under way.
        """
        notify = report or (lambda fraction, text: None)
        if not audio_path:
            raise InputError("upload or record a clip first")
        steps, t_start, cfg_src = self._preset(steps=steps, t_start=t_start, cfg_src=cfg_src)
        seconds = parse_time_range(time_range)
        if page_method(method) == "flowedit":
            raise InputError("principal components need an inversion, and FlowEdit makes none: choose another method")
        request = components_request(source_prompt, steps, t_start, cfg_src, seed, method, n, pc, amount, seconds,
                                     max_iterations, lyrics)  # fmt: skip
        check_request(request, PAGE)
        steps, t_start, method, n, max_iterations = (request.steps, request.tstart, request.method, request.pcs.found,
                                                     request.pcs.iterations)  # fmt: skip
        pc, amount = request.pcs.components[0], request.pcs.amounts[1]

        path = Path(audio_path)
        key = InversionKey.of(session, _digest(path), request)
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
                cached = None if entry is None else entry.components.get(wanted)
                reused = "components" if cached is not None else "inversion" if entry is not None else ""
                job = _Job(self, key, notify, cancelled, entry, {
                    "invert": (0.05, "Inverting the clip"),
                    "components": (0.5 if not reused else 0.0, "Finding the principal components"),
                    "edit": (0.8 if reused != "components" else 0.0, f"Moving the clip along component {pc}")})  # fmt: skip

                def found(pcs: "PosteriorPCs") -> None:
                    job.keep(job.entry.with_components(wanted, pcs))  # type: ignore[union-attr]
                    _stop_if(cancelled)

                audio = self._prepare(path, key, notify, cancelled) if entry is None else None
                edited = run_request(self.editor, request, audio, entry and entry.inversion, loaded_pcs=cached,
                                     stages=Stages(job.starting, job.inverted(audio), found))  # fmt: skip
                entry, pcs, clips = job.entry, edited.pcs, edited.outputs
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

    def _preset(self, **given: Any) -> list[Any]:
        """The values ``given``, each None replaced by the model's preset of that name."""
        return [self.presets[name] if value is None else value for name, value in given.items()]

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

    def _sample(
        self, path: Path, request: EditRequest, notify: Callable[[float, str], None], cancelled: threading.Event,
    ) -> _Made:
        """SDEdit or FlowEdit the clip: one edit per seed, nothing inverted or cached."""
        notify(0.0, "Reading the clip")
        audio = self._read(path)
        name = METHODS[request.method].split(" (")[0]
        job = _Job(self, None, notify, cancelled, None, {"sdedit": (0.05, f"Running {name}")})
        clips = run_request(self.editor, request, audio, stages=Stages(job.starting)).outputs
        return _Made(list(clips), _mono(audio), None, audio.sample_rate)

    def _edit(
        self, path: Path, key: InversionKey, request: EditRequest, notify: Callable[[float, str], None],
        cancelled: threading.Event,
    ) -> _Made:
        """Edit from the clip's inversion (cached, or made now), inside its automatic mask if asked;
        with concepts, by semantic guidance too (no target keeps the source description); with
        Prompt-to-Prompt, drawing its word maps when the clip is one model window long."""
        entry = self.cache.get(key)
        reused = entry is not None
        job = _Job(self, key, notify, cancelled, entry, {
            "invert": (0.05, "Inverting the clip"), "mask": (0.5 if not reused else 0.0, "Computing the mask"),
            "edit": (0.6 if not reused else 0.3 if request.mask.auto else 0.0, "Editing")})  # fmt: skip
        drawn: dict[str, Any] = {}  # the automatic mask's share of the clip and the folder of its picture

        def masked(mask: Any, inversion: "Inversion") -> None:
            if not bool((mask > 0).any()):
                raise InputError(
                    "the automatic mask found nowhere the target and source descriptions disagree: "
                    "describe the source more closely, or untick Automatic mask"
                )
            drawn["folder"] = folder = self._new_run_folder()
            try:
                self.editor.save_mask(mask, folder / "mask.png", inversion)
                drawn["mask"] = folder / "mask.png"
            except InputError as error:  # a model whose masks have no picture (Stable Audio Open: time only)
                log.info("no picture of the automatic mask: %s", error)
            drawn["share"] = mask_share(self.editor, mask, inversion)
            _stop_if(cancelled)

        if request.p2p is not None:
            request = self._p2p_windows(request, entry, path)
        audio = None if reused else self._prepare(path, key, notify, cancelled)
        edited = run_request(self.editor, request, audio, entry and entry.inversion,
                             stages=Stages(job.starting, job.inverted(audio), masked=masked))  # fmt: skip
        entry = job.entry
        if edited.attention is not None:
            _stop_if(cancelled)
            notify(0.9, "Drawing the attention")
            drawn["folder"] = folder = drawn.get("folder") or self._new_run_folder()
            drawn["attention"] = folder / "attention.png"
            self.editor.draw_attention(edited.attention, edited.inversion, drawn["attention"])
        return _Made(list(edited.outputs), entry.original, entry.reconstruction, entry.sample_rate, reused,
                     drawn.get("share"), drawn.get("folder"), drawn.get("attention"), drawn.get("mask"))

    def _p2p_windows(self, request: EditRequest, entry: CachedInversion | None, path: Path) -> EditRequest:
        """``request`` asking for the word maps when the clip is one model window long (they are
        drawn over it; a longer clip is edited window by window); InputError for a local blend of a
        longer clip, before it is read and inverted (the length of one not inverted yet is its header's)."""
        if entry is not None:
            windows = windows_of(self.editor.denoiser, entry.inversion.x0)
        else:
            check_clip(path, self.max_seconds)
            info = sf.info(str(path))
            windows = _windows(self.editor, info.frames, info.samplerate)
        if windows > 1 and request.p2p.blend:  # type: ignore[union-attr]
            raise InputError(
                f"Local blend works on clips of at most {one_window_seconds(self.editor):g} s (one model window), and "
                f"this one spans {windows}: clear the local-blend words, or cut the clip"
            )
        return dataclasses.replace(request, save_attention=windows == 1)

    def _prepare(
        self, path: Path, key: InversionKey, notify: Callable[[float, str], None], cancelled: threading.Event
    ) -> Audio:
        """Read the clip about to be inverted and make room for its inversion in host memory."""
        notify(0.0, "Reading the clip")
        audio = self._read(path)
        self._make_room(inversion_bytes(self.editor, audio, key.t_start, key.variations, key.method))
        _stop_if(cancelled)
        return audio

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


@dataclass
class _Job:
    """One run of a :class:`DemoRunner` between the stages of ``run_request``: it stops once cancelled,
    reports each stage from ``stages`` (stage -> (fraction done, what is happening)) and keeps the
    cache entry it ends with (the one it found, or the one it makes)."""

    runner: DemoRunner
    key: InversionKey | None
    notify: Callable[[float, str], None]
    cancelled: threading.Event
    entry: CachedInversion | None
    stages: dict[str, tuple[float, str]]

    def starting(self, stage: str) -> None:
        _stop_if(self.cancelled)
        if stage in self.stages:
            self.notify(*self.stages[stage])

    def inverted(self, audio: Audio | None) -> Callable[["Inversion"], "Inversion"]:
        """What to do with the inversion of ``audio`` just made: move it to host memory, reconstruct
        the clip, cache both and go on with the host copy."""

        def keep(inversion: "Inversion") -> "Inversion":
            inversion = inversion.to("cpu")  # the sampler moves each step's maps to the model's device itself
            _release_device_cache(self.runner.editor)
            _stop_if(self.cancelled)
            self.notify(0.4, "Reconstructing the clip")
            reconstruction = np.asarray(self.runner.editor.reconstruct(_first_latent(inversion))[0], np.float32)
            assert audio is not None  # an inversion is made only of a clip read now
            self.keep(CachedInversion(inversion, _mono(audio), reconstruction, audio.sample_rate))
            return inversion

        return keep

    def keep(self, entry: CachedInversion) -> None:
        """Make ``entry`` the run's and cache it (unless it is larger than the whole cache)."""
        self.entry = entry
        if not self.runner.cache.put(self.key, entry):  # type: ignore[arg-type]
            log.info("an inversion of %.0f MiB is larger than the whole cache; not kept", entry.nbytes / MIB)


def _stop_if(cancelled: threading.Event) -> None:
    """EditCancelled once the run's cancel flag is set."""
    if cancelled.is_set():
        raise EditCancelled("the edit was cancelled")


def _windows(editor: "AudioEditor", frames: int, sample_rate: int) -> int:
    """Model windows the inversion of a clip of ``frames`` at ``sample_rate`` will span."""
    shape = editor.latent_shape(round(frames * editor.model.sample_rate / sample_rate))
    return windows_of(editor.denoiser, torch.empty((1, *shape), device="meta"))


def one_window_seconds(editor: "AudioEditor") -> float | None:
    """Longest clip the model edits as one window, in seconds: the 10.24 s training window and half
    an overlap (``image_core.windows.spans``; 11.52 s for the real models). None for an editor
    without windows."""
    try:
        model = editor.model
        multiple = model.latent_multiple
        frames = (model.latent_window + editor.overlap // 2) // multiple * multiple
        return frames * model.vae_factor * editor.mel_config.hop_length / model.sample_rate
    except (AttributeError, TypeError):
        return None


def _mono(audio: Audio) -> np.ndarray:
    return audio.samples.mean(axis=0, dtype=np.float32)
