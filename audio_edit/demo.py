"""A browser demo for listening to text-based edits of recordings (``audio-edit-demo``).

Someone uploads or records a clip, describes what it should become, and hears the original, the
reconstruction from the inversion and up to four edits side by side, with their spectrograms. The
method is a choice: edit-friendly DDPM inversion (the default), DDIM inversion (the deterministic
baseline, one variation), null-text inversion (DDIM inversion with its unconditional branch optimised
for the target guidance, one variation) or SDEdit (nothing inverted, so no reconstruction). With any
inversion an
automatic DiffEdit mask can limit the edit to where the target and source descriptions disagree; the
page then shows the mask over the clip's spectrogram. Concepts (LEDITS semantic guidance) add or
remove up to three things besides, or instead of, the target description.

With no prompt at all, the page finds the top principal components of the posterior at the edit's
first step (optionally within a time range) and plays the clip moved along a chosen one, by minus and
plus a chosen amount of standard deviations (Manor & Michaeli, ICML 2024). The components are cached
with the inversion, so changing only the component or the amount re-runs only that move.

An upload is checked at once, outside the queue (readable audio, a supported rate, at most
``max_seconds`` long), so a bad file is refused without waiting behind the edits of others. The
inversion is the slow part. :class:`DemoRunner` keeps inversions in host memory (an LRU bounded in
bytes, keyed by the browser session, the clip's content hash and every setting the inversion depends
on, the method included), so changing only the target description, its guidance scale or the
concepts re-runs only the edit (and the automatic mask, which depends on the target); it drops the
least recently used ones before an inversion that would not fit in the free memory. The Gradio app
runs one job at a time from a bounded queue; Cancel drops a waiting job and stops a running one after
its current stage.

Gradio is an optional dependency (``pip install '.[demo]'``); it is imported only when the app is built.
"""

# No ``from __future__ import annotations`` here: Gradio reads the handlers' annotations (gr.Request)
# at run time, and those name the gradio module imported inside build_app.

import argparse
import dataclasses
import functools
import hashlib
import logging
import math
import shutil
import sys
import tempfile
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import soundfile as sf
import torch

from image_core import adapters
from image_core.cli_common import Parser, quiet_hub_logging, slug
from image_core.settings import MAX_SEED, check_interval, check_settings, consecutive_seeds
from image_core.errors import EditError, InputError
from image_core.inversion import Inversion
from image_core.methods.pcs import PosteriorPCs
from image_core.methods.sega import Concept, check_concepts
from image_core.schedule import Schedule

from . import defaults as paper
from .audio_io import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, Audio, load_audio, save_audio
from .spectrogram import save_spectrograms

if TYPE_CHECKING:
    import gradio as gr

    from .editor import AudioEditor

MAX_VARIATIONS = 4
"""Most edits (seeds) one run makes and the page plays side by side."""

MAX_CONCEPTS = 3
"""Concept rows on the page (each adds one model evaluation per step of the edit)."""

MAX_STRENGTH = 20.0
"""Largest concept strength the page offers."""

DEFAULT_STRENGTH = 10.0
"""A concept's preset strength (the LEDITS demo's)."""

MAX_COMPONENTS = 5
"""Most principal components one run finds."""

MAX_AMOUNT = 5.0
"""Largest move along a component the page offers, in standard deviations."""

MAX_PC_ITERATIONS = 100
"""Most subspace iterations the page allows (each is one batched model call)."""

KEPT_COMPONENT_SETS = 4
"""Sets of components (per count, time range and iterations) kept with one cached inversion."""

DEFAULT_MAX_SECONDS = 30.0
"""Longest clip the demo takes, in seconds (``--max-seconds``).

An edit's time grows linearly with the clip's length: the UNet runs on overlapping 10.24 s windows,
so a 30 s clip is 4 windows, 1600 UNet evaluations at the paper's 200 steps / t_start 100 against
400 for a 10 s clip. README, "Speed and memory" (one CPU thread): 1.0-1.35 s per second of audio with
the tiny model, about 9 s with a 26M-parameter UNet; the real AudioLDM 2 UNet is larger still, so a
CPU serves only short clips. At 30 s a job of the tiny model takes about 40 s on a CPU and a full
queue of 16 jobs about 11 minutes; on a GPU the real model's time per evaluation sets it, and the
same 4x bound against a 10 s clip holds. 30 s covers the paper's 10 s clips three times over."""

DEFAULT_CACHE_MB = 2048.0
"""Host memory the inversion cache may hold, in MiB (``--cache-mb``).

An inversion holds float64 x0, x_t and z_t: (2 t_start + 1) latents of 8 x 25 frames/s x 16 bins per
seed, 148 MiB for a 30 s clip at the paper's t_start 100. 2 GiB keeps 13 of those, or the largest the
page makes at the default cap with t_start up to 200 (30 s, four variations: 1.2 GiB)."""

MIB = 2**20

DEFAULTS: dict[str, Any] = {
    "steps": paper.NUM_STEPS,
    "t_start": paper.T_START,
    "cfg_src": paper.CFG_SRC,
    "cfg_tar": paper.CFG_TAR,
    "seed": 0,
    "variations": 1,
    "method": "ddpm",
    "auto_mask": False,
    "concept_threshold": 0.95,
    "concept_warmup": 1,
    "components": 3,
    "amount": 2.0,
    "iterations": 50,
}
"""Preset values of the controls: the audio paper's settings, one variation, no mask; the LEDITS
demo's concept threshold and warm-up; three components moved by 2 standard deviations (the audio
paper's evaluation) after at most 50 subspace iterations (the official code's count)."""

METHODS: dict[str, str] = {
    "ddpm": "DDPM inversion (default)",
    "ddim": "DDIM inversion",
    "null-text": "Null-text inversion",
    "sdedit": "SDEdit",
}
"""The page's methods: value -> the label of its choice."""

INVERSION_METHODS = ("ddpm", "ddim", "null-text")
"""The methods that invert the clip: the ones with a cache entry, a reconstruction and a mask."""

GRADIO_MISSING = "the demo needs gradio: pip install '.[demo]'"

_QUEUE_SIZE = 16  # waiting jobs beyond this are refused with "queue full"
_KEPT_RUNS = 8  # output folders of older runs are deleted (gradio serves its own copies)
_CACHE_CLEANUP = (3600, 6 * 3600)  # gradio deletes its cached files older than 6 h, checking hourly

log = logging.getLogger(__name__)


class EditCancelled(Exception):
    """The run was cancelled from the page (raised between its stages)."""


# ------------------------------------------------------------------------------------------ the upload


def check_clip(path: str | Path, max_seconds: float = DEFAULT_MAX_SECONDS) -> str:
    """Check an uploaded clip from its header alone (no decoding): fast enough to run on upload.

    Args:
        path: the uploaded file.
        max_seconds: longest accepted clip, in seconds.
    Returns:
        One line for the page, e.g. "Ready: hello.wav, 1.2 s at 22050 Hz. ...".
    Raises:
        InputError: one line naming the file by its name only: not decodable by libsndfile, no frames,
            a rate outside 8..192 kHz, or longer than ``max_seconds``.
    """
    file = Path(path)
    try:
        info = sf.info(str(file))
    except (sf.SoundFileError, OSError):
        raise InputError(
            f"Cannot decode {file.name} as audio; convert it to WAV or FLAC (for example with sox)."
        ) from None
    if info.frames <= 0:
        raise InputError(f"{file.name} contains no audio frames; give a recording that is not empty.")
    if not MIN_SAMPLE_RATE <= info.samplerate <= MAX_SAMPLE_RATE:
        raise InputError(
            f"{file.name} has sample rate {info.samplerate} Hz, outside the supported "
            f"{MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE} Hz; resample it first (for example with sox)."
        )
    seconds = info.frames / info.samplerate
    _check_length(file.name, seconds, max_seconds)
    return f"Ready: {file.name}, {seconds:.1f} s at {info.samplerate} Hz. Type a target description and press Edit."


def _check_length(name: str, seconds: float, max_seconds: float) -> None:
    """InputError when a clip of ``seconds`` is longer than the demo's cap."""
    if seconds > max_seconds:
        raise InputError(
            f"{name} is {seconds:.1f} s long; this demo takes clips of at most {max_seconds:g} s: "
            "cut it first (for example with sox)."
        )


# ------------------------------------------------------------------------------------------ the cache


@dataclass(frozen=True)
class InversionKey:
    """Everything an inversion depends on: the same key gives the same inversion."""

    session: str
    digest: str  # SHA-256 of the uploaded file's bytes
    source_prompt: str
    steps: int
    t_start: int
    cfg_src: float
    seed: int
    variations: int
    method: str = "ddpm"  # one of INVERSION_METHODS: each inverts differently


@dataclass(frozen=True)
class ComponentsKey:
    """What principal components of one inversion depend on besides it."""

    n: int
    seconds: tuple[float, float] | None  # the time range they are restricted to, None for the whole clip
    max_iterations: int


@dataclass(frozen=True)
class CachedInversion:
    """An inversion (its tensors on the CPU) with what the page shows of it that does not depend on the
    target, and the principal components found for it (at most :data:`KEPT_COMPONENT_SETS` sets, oldest first)."""

    inversion: Inversion
    original: np.ndarray  # mono downmix of the input, (num_frames,) at sample_rate
    reconstruction: np.ndarray  # regenerated from the first seed's noise maps, same shape
    sample_rate: int
    components: Mapping[ComponentsKey, PosteriorPCs] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        """Bytes held: every tensor of the inversion and of its components plus the two waveforms."""
        held = sum(_pcs_bytes(pcs) for pcs in self.components.values())
        return tensor_bytes(self.inversion) + self.original.nbytes + self.reconstruction.nbytes + held

    def with_components(self, key: ComponentsKey, pcs: PosteriorPCs) -> "CachedInversion":
        """This entry with ``pcs`` added under ``key`` (the oldest set dropped beyond the bound)."""
        kept = {k: v for k, v in self.components.items() if k != key}
        kept[key] = pcs
        while len(kept) > KEPT_COMPONENT_SETS:
            del kept[next(iter(kept))]
        return dataclasses.replace(self, components=kept)


def _pcs_bytes(pcs: PosteriorPCs) -> int:
    tensors = [pcs.vectors, pcs.values, pcs.point] + ([] if pcs.region is None else [pcs.region])
    return sum(tensor.numel() * tensor.element_size() for tensor in tensors)


def _tensor_fields(inversion: Inversion) -> dict[str, torch.Tensor]:
    """The inversion's tensor fields by name (x0, xts, zs, timesteps and any other, such as a residual)."""
    fields = ((field.name, getattr(inversion, field.name)) for field in dataclasses.fields(inversion))
    return {name: value for name, value in fields if isinstance(value, torch.Tensor)}


def tensor_bytes(inversion: Inversion) -> int:
    """Bytes of all the inversion's tensors."""
    return sum(tensor.numel() * tensor.element_size() for tensor in inversion.tensors().values())



class InversionCache:
    """A thread-safe LRU of inversions holding at most ``max_bytes`` (0 keeps none).

    An entry larger than the whole budget is not kept (the run that made it still edits with it).
    """

    def __init__(self, max_bytes: int = round(DEFAULT_CACHE_MB * MIB)) -> None:
        if max_bytes < 0:
            raise ValueError(f"cache size must be >= 0 bytes, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict[InversionKey, CachedInversion] = OrderedDict()
        self._nbytes = 0
        self._lock = threading.Lock()

    def get(self, key: InversionKey) -> CachedInversion | None:
        """The entry for ``key`` (now the most recently used), or None."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def put(self, key: InversionKey, entry: CachedInversion) -> bool:
        """Store ``entry`` as the most recently used, dropping the least recently used ones beyond the
        budget; False (and nothing stored) when ``entry`` alone is larger than the budget."""
        with self._lock:
            self._remove(key)
            if entry.nbytes > self.max_bytes:
                return False
            self._entries[key] = entry
            self._nbytes += entry.nbytes
            while self._nbytes > self.max_bytes:
                self._remove(next(iter(self._entries)))
            return True

    def evict_oldest(self) -> int:
        """Drop the least recently used entry; the bytes it held (0 when the cache is empty)."""
        with self._lock:
            return self._remove(next(iter(self._entries))) if self._entries else 0

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._nbytes = 0

    @property
    def nbytes(self) -> int:
        """Bytes the entries hold."""
        with self._lock:
            return self._nbytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _remove(self, key: InversionKey) -> int:
        """Drop ``key`` if present (lock held); the bytes freed."""
        entry = self._entries.pop(key, None)
        freed = 0 if entry is None else entry.nbytes
        self._nbytes -= freed
        return freed


# ------------------------------------------------------------------------------------------ one run


@dataclass(frozen=True)
class RunResult:
    """What one run of the demo produced.

    Attributes:
        reconstruction: WAV file of the reconstruction (first seed); None with SDEdit, which inverts nothing.
        edits: (label, WAV file) per variation, in seed order.
        spectrogram: PNG with the spectrograms of the original, the reconstruction (if any) and the edits.
        reused: whether the inversion came from the cache (only the edit ran).
        status: one line for the page.
        sample_rate: Hz of all outputs (the input's).
        num_frames: samples per output (the input's length).
        method: "ddpm", "ddim", "null-text" or "sdedit".
        mask: PNG of the automatic (DiffEdit) mask over the input's spectrogram, None without one;
            ``AudioEditor.load_mask`` reads the exact mask back from it.
    """

    reconstruction: Path | None
    edits: list[tuple[str, Path]]
    spectrogram: Path
    reused: bool
    status: str
    sample_rate: int
    num_frames: int
    method: str = "ddpm"
    mask: Path | None = None


@dataclass(frozen=True)
class ComponentsResult:
    """What one run of the principal-components mode produced.

    Attributes:
        values: the variance along each component found, largest first.
        clips: (label, WAV file) of the clip moved along the chosen component by minus, then plus, the amount.
        spectrogram: PNG with the spectrograms of the original and the two moved clips.
        reused: "components" (only the move ran), "inversion" (the components were found and the clip
            moved) or "" (the clip was inverted too).
        status: one line for the page.
        sample_rate: Hz of the outputs (the input's).
        num_frames: samples per output (the input's length).
        iterations: subspace iterations the components took.
    """

    values: list[float]
    clips: list[tuple[str, Path]]
    spectrogram: Path
    reused: str
    status: str
    sample_rate: int
    num_frames: int
    iterations: int


@dataclass
class _Made:
    """What the compute stage of a run gives the writing stage."""

    clips: list[np.ndarray]
    original: np.ndarray
    reconstruction: np.ndarray | None
    sample_rate: int
    reused: bool = False
    mask_share: float | None = None  # fraction of the clip's time-frequency cells the mask lets the edit change
    folder: Path | None = None  # the run's output folder, when made early (for the mask picture)


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
        reconstruction_file = None
        panels = [("Original", made.original)]
        if made.reconstruction is not None:
            reconstruction_file = folder / "reconstruction.wav"
            save_audio(reconstruction_file, made.reconstruction, rate)
            panels.append(("Reconstruction", made.reconstruction))
        edits = []
        described = describe_edit(target, concepts)
        name = slug(" ".join([target] * bool(target) + [("minus " if c.remove else "plus ") + c.prompt for c in concepts]))
        for index, clip in enumerate(made.clips):
            label = f"Edit {index + 1} (seed {seed + index})" if variations > 1 else f"Edit (seed {seed})"
            file = folder / f"edit_{name}_s{seed + index}.wav"
            save_audio(file, clip, rate)
            edits.append((label, file))
        spectrogram_file = folder / "spectrograms.png"
        panels += [(f"{label}: {_shorten(described)}", clip) for (label, _), clip in zip(edits, made.clips)]
        rows = -(-len(panels) // 3)  # at most three panels a row, rows as even as can be
        save_spectrograms(spectrogram_file, panels, rate, columns=-(-len(panels) // rows))

        seconds = time.perf_counter() - started
        masked = made.mask_share is not None
        if method == "sdedit":
            status = (
                f"Ran SDEdit with {steps} steps, t_start {t_start} ({seconds:.1f} s). "
                "SDEdit inverts nothing: there is no reconstruction, and every run starts from the clip again."
            )
        elif made.reused:
            ran = "the mask and the edit" if masked else "the edit"
            status = f"Reused the inversion: only {ran} ran ({seconds:.1f} s)."
        else:
            name = METHODS[method].removesuffix(" (default)")
            status = (
                f"Inverted the clip ({name}, {steps} steps, t_start {t_start}) and ran the edit ({seconds:.1f} s). "
                "Change only the target, its guidance or the concepts to reuse this inversion."
            )
        if masked:
            share = f"{made.mask_share:.0%}" if made.mask_share >= 0.005 else "under 1%"
            status += (
                f" The automatic mask let the edit change {share} of the clip's spectrogram"
                " (bright in the mask picture) and kept the rest exactly."
            )
        if concepts:
            kept = "" if target else " (no target: the source description kept)"
            status += f" Concepts{kept}: {', '.join(_concept_text(c) for c in concepts)}."
        mask_file = folder / "mask.png" if masked else None
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
        method = (method or "ddpm").strip().lower()
        if method not in METHODS:
            raise InputError(f"unknown method {method!r}: choose {', '.join(METHODS)}")
        if method not in INVERSION_METHODS:
            raise InputError("principal components need an inversion, and SDEdit makes none: choose another method")
        if not 1 <= n <= MAX_COMPONENTS:
            raise InputError(f"the number of components must be between 1 and {MAX_COMPONENTS}, got {n}")
        if not 1 <= pc <= n:
            raise InputError(f"the component to move must be between 1 and {n} (the components found), got {pc}")
        if not (math.isfinite(amount) and 0 <= amount <= MAX_AMOUNT):
            raise InputError(f"the amount must be between 0 and {MAX_AMOUNT:g} standard deviations, got {amount:g}")
        if not 1 <= max_iterations <= MAX_PC_ITERATIONS:
            raise InputError(f"iterations must be between 1 and {MAX_PC_ITERATIONS}, got {max_iterations}")
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
        moved = []
        for sign, clip in zip(("minus", "plus"), clips):
            label = f"Component {pc}, {'−' if sign == 'minus' else '+'}{amount:g} σ"
            file = folder / f"pc{pc}_{sign}{amount:g}.wav"
            save_audio(file, clip, rate)
            moved.append((label, file))
        spectrogram_file = folder / "spectrograms.png"
        save_spectrograms(spectrogram_file, [("Original", entry.original), *zip((label for label, _ in moved), clips)],
                          rate, columns=3)

        elapsed = time.perf_counter() - started
        iterations = int(pcs.info.get("iterations", max_iterations))
        where = "" if seconds is None else f" within {seconds[0]:g}:{seconds[1]:g} s"
        found = f"found {n} component{'s' * (n > 1)}{where} in {iterations} of at most {max_iterations} iterations"
        move = f"moved the clip along component {pc} by −{amount:g} and +{amount:g} σ"
        if reused == "components":
            status = f"Reused the components: only the move along component {pc} ran ({elapsed:.1f} s)."
        elif reused == "inversion":
            status = f"Reused the inversion: {found} and {move} ({elapsed:.1f} s)."
        else:
            name = METHODS[method].removesuffix(" (default)")
            status = f"Inverted the clip ({name}, {steps} steps, t_start {t_start}), {found} and {move} ({elapsed:.1f} s)."
        if reused != "components":
            status += " Change only the component or the amount to reuse them."
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


def check_method_choice(
    method: str | None, auto_mask: bool, variations: int, target: str, source: str, concepts: int = 0
) -> str:
    """The method of the page's choice ("ddpm" when none), refusing the combinations no run can make.

    Raises:
        InputError: an unknown method; several variations with DDIM or null-text inversion
            (deterministic: they would be one edit); concepts with SDEdit (semantic guidance edits an inversion); the
            automatic mask with SDEdit (nothing inverted to compare the descriptions on), with no
            target, or with a target equal to the source description.
    """
    method = (method or "ddpm").strip().lower()
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}: choose {', '.join(METHODS)}")
    if method in ("ddim", "null-text") and variations > 1:
        raise InputError(
            f"{METHODS[method]} is deterministic, so several variations would be the same edit: "
            "set Variations to 1, or choose DDPM inversion or SDEdit for variations"
        )
    if concepts and method not in INVERSION_METHODS:
        raise InputError(
            "concepts need an inversion, and SDEdit makes none: choose another method, or clear the concepts"
        )
    if auto_mask and method not in INVERSION_METHODS:
        raise InputError(
            "the automatic mask needs an inversion, and SDEdit makes none: "
            "choose another method, or untick Automatic mask"
        )
    if auto_mask and not target:
        raise InputError(
            "the automatic mask compares the target with the source description: "
            "type a target description, or untick Automatic mask"
        )
    if auto_mask and target == source:
        raise InputError(
            "the automatic mask compares the target with the source description, so they must differ: "
            "change one, or untick Automatic mask"
        )
    return method


def page_concepts(
    rows: Sequence[tuple[str | None, str | bool | None, float | None]],
    threshold: float = DEFAULTS["concept_threshold"],
    warmup: int = DEFAULTS["concept_warmup"],
) -> list[Concept]:
    """The concepts of the page's rows of (text, "add" or "remove", strength); rows with no text are
    skipped. The threshold and warm-up are shared by all.

    Raises:
        InputError: a strength outside 0..:data:`MAX_STRENGTH`, a threshold outside [0, 1), a warm-up
            that is not a whole number of steps >= 0.
    """
    if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and 0 <= threshold < 1):
        raise InputError(f"the concept threshold must be at least 0 and below 1, got {threshold}")
    steps = _integer(warmup, "the concept warm-up")
    if steps < 0:
        raise InputError(f"the concept warm-up must be 0 or more steps, got {steps}")
    concepts = []
    for text, choice, strength in rows:
        prompt = (text or "").strip()
        if not prompt:
            continue
        scale = DEFAULT_STRENGTH if strength is None else float(strength)
        if not (math.isfinite(scale) and 0 <= scale <= MAX_STRENGTH):
            raise InputError(f"concept strengths must be between 0 and {MAX_STRENGTH:g}, got {scale:g} for {prompt!r}")
        remove = choice is True or (isinstance(choice, str) and choice.strip().lower() == "remove")
        concepts.append(Concept(prompt, scale=scale, remove=remove, threshold=float(threshold), warmup=steps))
    return concepts


def describe_edit(target: str, concepts: Sequence[Concept]) -> str:
    """The edit in words: the target, then "+ concept" / "− concept" (e.g. "jazz piano, − drums")."""
    return ", ".join([target] * bool(target) + [_concept_text(c, strength=False) for c in concepts])


def _concept_text(concept: Concept, strength: bool = True) -> str:
    sign = "−" if concept.remove else "+"
    return f"{sign} {concept.prompt}" + (f" ({concept.scale:g})" if strength else "")


def parse_time_range(text: str | None) -> tuple[float, float] | None:
    """(start, end) seconds of a "start:end" time range, None when ``text`` is empty.

    Raises:
        InputError: not two numbers separated by ":", or not 0 <= start < end (the clip's end is
            checked once the clip is read).
    """
    text = (text or "").strip()
    if not text:
        return None
    parts = text.split(":")
    try:
        start, end = (float(part) for part in parts)
    except ValueError:
        raise InputError(f'the time range must be "start:end" in seconds, e.g. "0.5:2", got {text!r}') from None
    if not (math.isfinite(start) and math.isfinite(end) and 0 <= start < end):
        raise InputError(f"the time range {text} must start at 0 s or later and end after it starts")
    return start, end


def _clip_seconds(path: Path, max_seconds: float) -> float:
    """Length of the uploaded clip from its header, after :func:`check_clip`."""
    check_clip(path, max_seconds)
    return float(sf.info(str(path)).duration)


def mask_share(editor: Any, mask: torch.Tensor, inversion: Inversion) -> float:
    """Fraction of the clip's latent time-frequency cells inside ``mask`` (1, 1, T, F): the latent
    frames of the silence that pads a short clip to the model's window are not counted."""
    grid = mask[0, 0] > 0
    try:
        per_frame = editor.mel_config.hop_length * editor.model.vae_factor  # samples at the model's rate
        frames = -(-int(inversion.meta["model_samples"]) // per_frame)
    except (AttributeError, KeyError, TypeError):
        frames = grid.shape[0]
    return float(grid[: max(1, min(frames, grid.shape[0]))].double().mean())


def _integer(value: Any, name: str) -> int:
    """``value`` as an int (sliders and number boxes may send floats)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a whole number, got {value!r}") from None
    if not number.is_integer():
        raise InputError(f"{name} must be a whole number, got {value!r}")
    return int(number)


def _stop_if(cancelled: threading.Event) -> None:
    """EditCancelled once the run's cancel flag is set."""
    if cancelled.is_set():
        raise EditCancelled("the edit was cancelled")


def inversion_bytes(editor: Any, audio: Audio, t_start: int, seeds: int, method: str = "ddpm") -> int | None:
    """Bytes an inversion of ``audio`` will hold: x0 and, per step, x_t (and with "ddpm" z_t) of every
    seed. None when ``editor`` is not an ``AudioEditor`` (a stand-in of the tests)."""
    try:
        shape = editor.latent_shape(round(audio.num_frames * editor.model.sample_rate / audio.sample_rate))
        return editor.inversion_bytes(shape, seeds, t_start, method) + editor.inversion_bytes(shape, seeds, 1, "ddim")
    except (AttributeError, TypeError):
        return None


def _release_device_cache(editor: Any) -> None:
    """Give the CUDA allocator's freed blocks back to the driver, whose free memory the next
    inversion's memory check reads (the inversion just moved to host memory)."""
    device = getattr(getattr(editor, "model", None), "device", None)
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def _digest(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    try:
        digest = hashlib.sha256()
        with path.open("rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()
    except OSError as error:
        raise InputError(f"cannot read the uploaded clip {path.name}: {error.strerror or error}; upload it again") from None


def _mono(audio: Audio) -> np.ndarray:
    return audio.samples.mean(axis=0, dtype=np.float32)


def _first_latent(inversion: Inversion) -> Inversion:
    """The inversion of the first seed alone (the reconstruction needs one, not one per seed): every
    tensor field but the (K,) timesteps is per latent, (B, ...), and keeps its first row."""
    if inversion.num_latents == 1:
        return inversion
    settings = dataclasses.replace(inversion.settings, seeds=inversion.settings.seeds[:1])
    rows = {name: tensor[:1] for name, tensor in _tensor_fields(inversion).items() if name != "timesteps"}
    uncond = None if inversion.uncond is None else {key: value[:1] for key, value in inversion.uncond.items()}
    return dataclasses.replace(inversion, **rows, settings=settings, uncond=uncond)


def _hide_folder(message: str, path: Path) -> str:
    """``message`` with the server-side path of the upload replaced by its file name."""
    return message.replace(str(path), path.name).replace(str(path.parent), "")


def _shorten(text: str, limit: int = 32) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


# ------------------------------------------------------------------------------------------ the app

_INTRO = """\
# Edit a recording with text
Upload or record a clip of at most {max_seconds:g} s, describe what it should become (*target*), and
listen to the original, its reconstruction and the edits. The clip is inverted once (the slow part);
change only the target or its guidance and only the edit runs again. Cancel drops your waiting edit,
or stops the running one after its current stage. Method: edit-friendly DDPM inversion with AudioLDM 2
(Manor & Michaeli, *Zero-Shot Unsupervised and Text-Based Audio Editing Using DDPM Inversion*, ICML 2024);
DDIM inversion and SDEdit are there to compare with, and an automatic DiffEdit mask can keep the edit
to where the target and source descriptions disagree. Concepts add or remove things besides, or instead
of, the target (LEDITS semantic guidance). With no prompt at all, the last section moves the clip along
the principal components of the posterior.
"""

_CONCEPTS_HELP = """Add or remove up to three concepts (LEDITS semantic guidance), e.g. *drums* to remove. Each guides
the edit where it differs most from the clip; with concepts the target may stay empty (the source
description is kept). Each concept adds one model evaluation per step. Needs an inversion (not SDEdit).
"""

_PCS_INTRO = """## No prompt: principal components
The directions in which the model is least sure of the clip, found at the edit's first step with no
text: moving along one changes, say, the timbre or the rhythm. Press *Find components* to invert the clip
(with the method, source description, steps, t_start, source guidance and seed above, one variation) and
find them; then change only the component or the amount and only the move runs again. Amount 0 gives the
reconstruction. On a CPU each iteration is one batched model call: fewer iterations are faster and less
precise.
"""

_METHOD_HELP = """- **DDPM inversion** (default): keeps the clip's structure and reconstructs it exactly; use it to edit.
- **DDIM inversion**: the deterministic baseline (one variation); less faithful to the clip under guidance.
- **Null-text inversion**: DDIM inversion whose unconditional branch is optimised at every step for the
  target guidance (one variation); closer to the clip than DDIM under that guidance, about ten times the
  model calls, and a new inversion whenever the target guidance changes.
- **SDEdit**: noises the clip to t_start and generates the target from there; keeps less of the clip, and
  inverts nothing (no reconstruction, nothing reused).
"""

_READY = "Upload or record a clip, type a target description and press Edit."

_HELP = {
    "source": "Optional: what the clip is now, e.g. 'a recording of a guitar'. Guides the inversion.",
    "target": "What the clip should become, e.g. 'jazz piano'.",
    "steps": "Diffusion steps of the full chain. More steps: finer but slower.",
    "t_start": "Steps the edit runs (at most steps). Higher: a stronger edit that keeps less of the original.",
    "cfg_src": "How strongly the source description guides the inversion (3 in the paper). Null-text "
    "inversion optimises for the target guidance instead (for principal components: for this one).",
    "cfg_tar": "How strongly the edit follows the target. Higher: more of the target, less of the original.",
    "seed": "Seed of the inversion noise. Another seed gives another take on the same edit.",
    "variations": "Edits with seeds seed, seed+1, ... played side by side; each one adds to the run time.",
    "auto_mask": "Edit only where the target and source descriptions disagree (DiffEdit; the mask is shown "
                 "next to the spectrograms) and keep the rest of the clip exactly. With an inversion only.",
    "concept": "A concept to add or remove, e.g. 'drums'. Leave empty for none.",
    "strength": "How strongly the concept guides the edit (10 in LEDITS; 0 turns it off).",
    "threshold": "Share of each channel's cells a concept leaves alone: 0.95 guides the 5% where it differs most.",
    "warmup": "Edit steps before the concepts start guiding (below t_start).",
    "components": "How many components to find, largest variance first.",
    "pc": "Which component to move along (1 = the largest variance).",
    "amount": "How far to move, in standard deviations, to either side (2 in the paper's evaluation).",
    "time_range": "Optional 'start:end' in seconds, e.g. '0.5:2': components of that part of the clip only.",
    "iterations": "Most subspace iterations (default 50). On a CPU each is one batched model call: "
                  "fewer are faster and less precise.",
}


def _import_gradio() -> Any:
    try:
        import gradio
    except ImportError:
        print(GRADIO_MISSING, file=sys.stderr)
        sys.exit(2)
    return gradio


def build_app(
    editor: "AudioEditor",
    max_upload_mb: float = 50,
    cache_mb: float = DEFAULT_CACHE_MB,
    *,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    defaults: Mapping[str, Any] | None = None,
    output_dir: str | Path | None = None,
) -> "gr.Blocks":
    """The Gradio app around ``editor``; start it with ``.launch()``.

    Jobs are queued and run one at a time. Uploads and recordings are checked at once, outside the
    queue. ``launch()`` of the returned app limits uploads to ``max_upload_mb`` megabytes unless given
    another ``max_file_size``. The editor's tqdm bars are turned on: the page follows them.

    Args:
        editor: the ``AudioEditor`` to run.
        max_upload_mb: largest accepted upload in megabytes.
        cache_mb: MiB of inversions kept in host memory over all sessions (least recently used dropped
            first); default :data:`DEFAULT_CACHE_MB`.
        max_seconds: longest clip accepted, in seconds; default :data:`DEFAULT_MAX_SECONDS`.
        defaults: preset values of the controls, overriding :data:`DEFAULTS` (keys steps, t_start,
            cfg_src, cfg_tar, seed, variations, method, auto_mask, concept_threshold, concept_warmup,
            components, amount, iterations).
        output_dir: where outputs are written; a temporary folder by default.
    """
    gr = _import_gradio()
    preset = {**DEFAULTS, **(defaults or {})}
    unknown = set(preset) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown defaults {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    if preset["method"] not in METHODS:
        raise ValueError(f"unknown default method {preset['method']!r}; known: {sorted(METHODS)}")
    if max_upload_mb <= 0:
        raise ValueError(f"max_upload_mb must be positive, got {max_upload_mb}")
    runner = DemoRunner(editor, cache_mb, output_dir, max_seconds)
    editor.progress = True

    with gr.Blocks(title="Audio editing with text", delete_cache=_CACHE_CLEANUP) as demo:
        gr.Markdown(_INTRO.format(max_seconds=runner.max_seconds), elem_id="intro")
        with gr.Row():
            with gr.Column(scale=3):
                clip = gr.Audio(
                    sources=["upload", "microphone"], type="filepath",
                    label=f"Original (at most {runner.max_seconds:g} s)", buttons=["download"], elem_id="input-audio",
                )
                target = gr.Textbox(label="Target description", info=_HELP["target"], placeholder="jazz piano",
                                    max_lines=2, elem_id="target")
                concept_rows = []  # text, add or remove, strength of each row: on_edit takes three rows
                with gr.Accordion("Concepts (optional)", open=True, elem_id="concepts"):
                    gr.Markdown(_CONCEPTS_HELP)
                    for index in range(MAX_CONCEPTS):
                        with gr.Row(equal_height=True):
                            concept_rows += [
                                gr.Textbox(label=f"Concept {index + 1}", info=_HELP["concept"] if index == 0 else None,
                                           max_lines=1, scale=3, elem_id=f"concept-{index}"),
                                gr.Radio([("add", "add"), ("remove", "remove")], value="add", label="Add or remove",
                                         scale=2, elem_id=f"concept-{index}-sign"),
                                gr.Slider(0, MAX_STRENGTH, value=DEFAULT_STRENGTH, step=0.5, label="Strength",
                                          info=_HELP["strength"] if index == 0 else None, scale=3,
                                          elem_id=f"concept-{index}-strength"),
                            ]
                    with gr.Accordion("Advanced", open=False, elem_id="concepts-advanced"):
                        threshold = gr.Slider(0, 0.99, value=preset["concept_threshold"], step=0.01,
                                              label="Threshold", info=_HELP["threshold"], elem_id="concept-threshold")
                        warmup = gr.Slider(0, max(preset["steps"], 1), value=preset["concept_warmup"], step=1,
                                           label="Warm-up (steps)", info=_HELP["warmup"], elem_id="concept-warmup")
                source = gr.Textbox(label="Source description (optional)", info=_HELP["source"], max_lines=2,
                                    elem_id="source")
                method = gr.Radio([(label, value) for value, label in METHODS.items()], value=preset["method"],
                                  label="Method", elem_id="method")
                gr.Markdown(_METHOD_HELP, elem_id="method-help")
                auto_mask = gr.Checkbox(value=bool(preset["auto_mask"]), label="Automatic mask (DiffEdit)",
                                        info=_HELP["auto_mask"], elem_id="auto-mask")
                with gr.Row():
                    run = gr.Button("Edit", variant="primary", elem_id="run")
                    cancel = gr.Button("Cancel", variant="stop", elem_id="cancel")
            with gr.Column(scale=2):
                most = Schedule.max_steps(editor.model.scheduler_config)
                steps = gr.Slider(1, most, value=preset["steps"], step=1, label="Steps", info=_HELP["steps"])
                t_start = gr.Slider(1, max(preset["steps"], 1), value=preset["t_start"], step=1, label="t_start",
                                    info=_HELP["t_start"])
                cfg_src = gr.Slider(0, 20, value=preset["cfg_src"], step=0.5, label="Source guidance (cfg_src)",
                                    info=_HELP["cfg_src"])
                cfg_tar = gr.Slider(0, 30, value=preset["cfg_tar"], step=0.5, label="Target guidance (cfg_tar)",
                                    info=_HELP["cfg_tar"])
                with gr.Row():
                    seed = gr.Number(value=preset["seed"], precision=0, minimum=0, maximum=MAX_SEED, label="Seed", info=_HELP["seed"])
                    variations = gr.Slider(1, MAX_VARIATIONS, value=preset["variations"], step=1,
                                           label="Variations", info=_HELP["variations"])
        status = gr.Textbox(label="Status", interactive=False, max_lines=3, elem_id="status", value=_READY)
        with gr.Row():
            reconstruction = gr.Audio(label="Reconstruction (from the inversion, no edit)", type="filepath",
                                      interactive=False, buttons=["download"], elem_id="reconstruction")
        with gr.Row():
            edits = [
                gr.Audio(label=f"Edit {index + 1}", type="filepath", interactive=False, buttons=["download"],
                         visible=index == 0, elem_id=f"edit-{index}")
                for index in range(MAX_VARIATIONS)
            ]
        with gr.Row():
            spectrogram = gr.Image(label="Spectrograms", type="filepath", interactive=False, elem_id="spectrograms",
                                   buttons=["download", "fullscreen"], scale=3)
            mask_picture = gr.Image(label="Automatic mask (edited where bright)", type="filepath",
                                    interactive=False, elem_id="mask", buttons=["download", "fullscreen"],
                                    visible=False, scale=1)

        gr.Markdown(_PCS_INTRO, elem_id="pcs-intro")
        with gr.Row():
            components = gr.Slider(1, MAX_COMPONENTS, value=preset["components"], step=1, label="Components",
                                   info=_HELP["components"], elem_id="pc-count")
            pc = gr.Slider(1, preset["components"], value=1, step=1, label="Component to move", info=_HELP["pc"],
                           elem_id="pc")
            amount = gr.Slider(0, MAX_AMOUNT, value=preset["amount"], step=0.1, label="Amount (σ)",
                               info=_HELP["amount"], elem_id="pc-amount")
        with gr.Row():
            time_range = gr.Textbox(label="Time range (optional)", info=_HELP["time_range"], placeholder="0.5:2",
                                    max_lines=1, elem_id="pc-range")
            iterations = gr.Slider(1, MAX_PC_ITERATIONS, value=preset["iterations"], step=1, label="Iterations",
                                   info=_HELP["iterations"], elem_id="pc-iterations")
        find = gr.Button("Find components", variant="primary", elem_id="pc-run")
        pc_values = gr.Markdown("", elem_id="pc-values")
        with gr.Row():
            moved = [
                gr.Audio(label=f"Component moved {side}", type="filepath", interactive=False, buttons=["download"],
                         elem_id=f"pc-{side}")
                for side in ("minus", "plus")
            ]
        pc_spectrogram = gr.Image(label="Spectrograms: original, moved", type="filepath", interactive=False,
                                  elem_id="pc-spectrograms", buttons=["download", "fullscreen"])

        def on_steps(steps_value: float, t_start_value: float) -> Any:
            top = max(int(steps_value), 1)
            return gr.Slider(maximum=top, value=min(int(t_start_value), top))

        def on_components(count: float, pc_value: float) -> Any:
            top = max(int(count), 1)
            return gr.Slider(maximum=top, value=min(int(pc_value), top))

        def on_upload(audio_path: str | None) -> tuple[str, Any]:
            """Status line for a new upload or recording; a refused clip is taken off the page."""
            if not audio_path:
                return _READY, gr.skip()
            try:
                return check_clip(audio_path, runner.max_seconds), gr.skip()
            except InputError as error:
                return f"Error: {_one_line(error)}", None

        def on_cancel(request: gr.Request) -> str:
            stopped = runner.cancel(getattr(request, "session_hash", None) or "")
            return "Cancelled: the running edit stops after its current stage." if stopped else "Cancelled."

        def on_edit(
            audio_path: str | None, target_text: str, source_text: str, steps_value: float, t_start_value: float,
            cfg_src_value: float, cfg_tar_value: float, seed_value: float | None, variations_value: float,
            method_value: str | None, auto_mask_value: bool, threshold_value: float, warmup_value: float,
            concept_1: str, sign_1: str, strength_1: float, concept_2: str, sign_2: str, strength_2: float,
            concept_3: str, sign_3: str, strength_3: float,
            request: gr.Request, progress: gr.Progress = gr.Progress(track_tqdm=True),
        ) -> list[Any]:
            rows = [(concept_1, sign_1, strength_1), (concept_2, sign_2, strength_2), (concept_3, sign_3, strength_3)]
            try:
                result = runner.run(
                    audio_path, target_text, source_text, steps_value, t_start_value, cfg_src_value,
                    cfg_tar_value, 0 if seed_value is None else seed_value, variations_value,
                    method_value, bool(auto_mask_value), session=getattr(request, "session_hash", None) or "",
                    report=lambda fraction, text: progress(fraction, desc=text),
                    concepts=page_concepts(rows, threshold_value, warmup_value),
                )
            except EditCancelled:
                return _failure(gr, "Cancelled.")
            except EditError as error:
                return _failure(gr, f"Error: {_one_line(error)}")
            except Exception as error:  # noqa: BLE001 - the page gets one line, the log the traceback
                return _failure(gr, _unexpected(error, "the edit", "fewer variations, fewer steps or a shorter clip"))
            slots = [
                gr.Audio(value=str(file), label=label, visible=True) for label, file in result.edits
            ] + [gr.Audio(value=None, visible=False) for _ in range(MAX_VARIATIONS - len(result.edits))]
            if result.reconstruction is None:  # SDEdit: nothing inverted, nothing to reconstruct
                reconstructed = gr.Audio(value=None, visible=False)
            else:
                reconstructed = gr.Audio(value=str(result.reconstruction), visible=True)
            if result.mask is None:
                mask_shown = gr.Image(value=None, visible=False)
            else:
                mask_shown = gr.Image(value=str(result.mask), visible=True)
            return [result.status, reconstructed, *slots, str(result.spectrogram), mask_shown]

        def components_run(only_cached: bool) -> Callable[..., list[Any]]:
            """The handler of Find components (``only_cached`` False) or of a slider's move (True: a
            move only where the components are cached, otherwise nothing changes)."""

            def on_components_run(
                audio_path: str | None, source_text: str, steps_value: float, t_start_value: float,
                cfg_src_value: float, seed_value: float | None, method_value: str | None, count: float,
                pc_value: float, amount_value: float, range_text: str, iterations_value: float,
                request: gr.Request, progress: gr.Progress = gr.Progress(track_tqdm=True),
            ) -> list[Any]:
                if only_cached and not audio_path:
                    return [gr.skip()] * 5
                try:
                    result = runner.components(
                        audio_path, source_text, steps_value, t_start_value, cfg_src_value,
                        0 if seed_value is None else seed_value, method_value, count, pc_value, amount_value,
                        range_text, iterations_value, session=getattr(request, "session_hash", None) or "",
                        report=lambda fraction, text: progress(fraction, desc=text), only_cached=only_cached,
                    )
                except EditCancelled:
                    return _pcs_failure("Cancelled.")
                except EditError as error:
                    return _pcs_failure(f"Error: {_one_line(error)}")
                except Exception as error:  # noqa: BLE001 - the page gets one line, the log the traceback
                    lighter = "fewer components, fewer steps or a shorter clip"
                    return _pcs_failure(_unexpected(error, "the components", lighter))
                if result is None:  # a slider moved before the components were found: nothing to move
                    return [gr.skip()] * 5
                (minus_label, minus), (plus_label, plus) = result.clips
                table = "| Component | Variance |\n|---|---|\n" + "\n".join(
                    f"| {index + 1} | {value:.4g} |" for index, value in enumerate(result.values))
                return [result.status, table, gr.Audio(value=str(minus), label=minus_label),
                        gr.Audio(value=str(plus), label=plus_label), str(result.spectrogram)]

            return on_components_run

        def _pcs_failure(message: str) -> list[Any]:
            return [message, "", None, None, None]

        steps.release(on_steps, [steps, t_start], t_start, queue=False, show_progress="hidden")
        steps.release(on_steps, [steps, warmup], warmup, queue=False, show_progress="hidden")
        components.release(on_components, [components, pc], pc, queue=False, show_progress="hidden")
        for added in (clip.upload, clip.stop_recording):
            added(on_upload, clip, [status, clip], queue=False, show_progress="hidden")
        inputs = [clip, target, source, steps, t_start, cfg_src, cfg_tar, seed, variations, method, auto_mask,
                  threshold, warmup, *concept_rows]
        outputs = [status, reconstruction, *edits, spectrogram, mask_picture]
        jobs = [trigger(on_edit, inputs, outputs, concurrency_limit=1, concurrency_id="jobs")
                for trigger in (run.click, target.submit)]
        pc_inputs = [clip, source, steps, t_start, cfg_src, seed, method, components, pc, amount, time_range, iterations]
        pc_outputs = [status, pc_values, *moved, pc_spectrogram]
        jobs += [trigger(components_run(only_cached), pc_inputs, pc_outputs, concurrency_limit=1, concurrency_id="jobs")
                 for trigger, only_cached in ((find.click, False), (time_range.submit, False),
                                              (pc.release, True), (amount.release, True))]
        cancel.click(on_cancel, None, status, queue=False, show_progress="hidden", cancels=jobs)

    demo.queue(default_concurrency_limit=1, max_size=_QUEUE_SIZE)
    demo.runner = runner  # for inspection (tests, notebooks)
    demo.launch = functools.partial(demo.launch, max_file_size=f"{max_upload_mb * 1024 * 1024:.0f}b")
    return demo


def _failure(gr: Any, message: str) -> list[Any]:
    """Outputs for a run that failed: the message in the status line, the outputs cleared."""
    slots = [gr.Audio(value=None, visible=index == 0) for index in range(MAX_VARIATIONS)]
    return [message, gr.Audio(value=None, visible=True), *slots, None, gr.Image(value=None, visible=False)]


def _unexpected(error: BaseException, what: str, lighter: str) -> str:
    """The status line for an error no input explains (logged with its traceback)."""
    log.exception("%s failed", what)
    if "OutOfMemoryError" in type(error).__name__:
        return f"Error: out of memory; use {lighter}."
    return f"Error: {what} failed ({type(error).__name__}); see the server log."


def _one_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# ------------------------------------------------------------------------------------------ command line


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = Parser(
        prog="audio-edit-demo",
        description="Start a browser demo for editing recordings with text (AudioLDM 2, edit-friendly DDPM inversion).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--model", default=paper.MODEL, metavar="ID|PATH|tiny",
                        help="hub id, local folder, or the random 'tiny' model (meaningless output, for trying the page)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on; 0.0.0.0 makes the demo reachable from other machines")
    parser.add_argument("--port", type=_port, default=7860, help="port to listen on")
    parser.add_argument("--share", action="store_true", help="also make a temporary public link through Gradio's share servers")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument("--max-seconds", type=_positive, default=DEFAULT_MAX_SECONDS, metavar="S",
                        help="longest clip accepted, in seconds (an edit's time grows with the length)")
    parser.add_argument("--cache-mb", type=_non_negative, default=DEFAULT_CACHE_MB, metavar="MB",
                        help="MiB of inversions kept in host memory to reuse (0 keeps none)")
    return parser.parse_args(argv)


def _positive(text: str) -> float:
    value = _number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: give a number above 0")
    return value


def _non_negative(text: str) -> float:
    value = _number(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: give a number of 0 or more")
    return value


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"invalid number {text!r}: give a finite number")
    return value


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: give a number from 1 to 65535") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {port}: give a number from 1 to 65535")
    return port


def main(argv: Sequence[str] | None = None) -> None:
    """Console script ``audio-edit-demo``."""
    args = parse_args(argv)
    _import_gradio()
    quiet_hub_logging()
    from .editor import AudioEditor

    try:
        editor = AudioEditor.from_pretrained(args.model, device=args.device)
        demo = build_app(editor, cache_mb=args.cache_mb, max_seconds=args.max_seconds)
    except EditError as error:
        print(f"error: {_one_line(error)}", file=sys.stderr)
        sys.exit(2)
    try:
        demo.launch(server_name=args.host, server_port=args.port, share=args.share)
    except OSError as error:
        reason = "the port is in use" if "empty port" in str(error) else _one_line(error)
        print(f"error: cannot serve the demo on {args.host}:{args.port} ({reason}); choose another --port or --host",
              file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
