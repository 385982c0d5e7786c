"""What a run gives back (:class:`RunResult`, :class:`ComponentsResult`): the files it writes (the
clips as WAV, their spectrograms as one PNG) and its status line, with the share of the clip an
automatic mask let the edit change and the settings of a Prompt-to-Prompt edit."""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from image_core.cli_common import slug
from image_core.inversion import Inversion
from image_core.methods.sega import Concept
from image_core.p2p import P2POptions

from ..audio_io import save_audio
from ..spectrogram import save_spectrograms
from .options import METHODS


@dataclass(frozen=True)
class RunResult:
    """What one run of the demo produced.

    Attributes:
        reconstruction: WAV file of the reconstruction (first seed); None with SDEdit and FlowEdit, which
            invert nothing.
        edits: (label, WAV file) per variation, in seed order.
        spectrogram: PNG with the spectrograms of the original, the reconstruction (if any) and the edits.
        reused: whether the inversion came from the cache (only the edit ran).
        status: one line for the page.
        sample_rate: Hz of all outputs (the input's).
        num_frames: samples per output (the input's length).
        method: "ddpm", "ddim", "null-text", "sdedit", "flowedit" or "p2p" (the page's choice).
        mask: PNG of the automatic (DiffEdit) mask over the input's spectrogram, None without one;
            ``AudioEditor.load_mask`` reads the exact mask back from it.
        attention: PNG of a Prompt-to-Prompt edit's word maps (each token's attention over the input's
            spectrogram, one row per description), None without one.
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
    attention: Path | None = None


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
    folder: Path | None = None  # the run's output folder, when made early (for the mask or attention picture)
    attention: Path | None = None  # the picture of a Prompt-to-Prompt edit's word maps
    mask: Path | None = None  # the picture of the automatic mask (none for a model whose masks have none)


def write_edits(
    folder: Path, made: _Made, target: str, concepts: Sequence[Concept], seed: int, variations: int
) -> tuple[Path | None, list[tuple[str, Path]], Path]:
    """Write a run's clips into ``folder``: the reconstruction (if any), each edit (named after the
    edit and its seed) and the spectrograms of the original, the reconstruction and the edits.

    Returns:
        The reconstruction's file (None without one), (label, file) per edit, the spectrograms' file.
    """
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
    return reconstruction_file, edits, spectrogram_file


def write_moves(
    folder: Path, original: np.ndarray, clips: Sequence[np.ndarray], pc: int, amount: float, rate: int
) -> tuple[list[tuple[str, Path]], Path]:
    """Write the clip moved along component ``pc`` by minus, then plus, ``amount`` into ``folder``, and the
    spectrograms of the original and the two moved clips.

    Returns:
        (label, file) per moved clip, the spectrograms' file.
    """
    moved = []
    for sign, clip in zip(("minus", "plus"), clips):
        label = f"Component {pc}, {'−' if sign == 'minus' else '+'}{amount:g} σ"
        file = folder / f"pc{pc}_{sign}{amount:g}.wav"
        save_audio(file, clip, rate)
        moved.append((label, file))
    spectrogram_file = folder / "spectrograms.png"
    save_spectrograms(spectrogram_file, [("Original", original), *zip((label for label, _ in moved), clips)],
                      rate, columns=3)
    return moved, spectrogram_file


def edit_status(
    method: str, steps: int, t_start: int, made: _Made, target: str, concepts: Sequence[Concept], seconds: float
) -> str:
    """The status line of an edit that took ``seconds``: what ran, what was reused, the mask's share, the concepts."""
    masked = made.mask_share is not None
    if method == "sdedit":
        status = (
            f"Ran SDEdit with {steps} steps, t_start {t_start} ({seconds:.1f} s). "
            "SDEdit inverts nothing: there is no reconstruction, and every run starts from the clip again."
        )
    elif method == "flowedit":
        status = (
            f"Ran FlowEdit with {steps} steps, n_max (t_start) {t_start} ({seconds:.1f} s). "
            "FlowEdit inverts nothing: there is no reconstruction, and every run starts from the clip again."
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
        where = "spectrogram (bright in the mask picture)" if made.mask is not None else "length"
        status += f" The automatic mask let the edit change {share} of the clip's {where} and kept the rest exactly."
    if concepts:
        kept = "" if target else " (no target: the source description kept)"
        status += f" Concepts{kept}: {', '.join(_concept_text(c) for c in concepts)}."
    return status


def describe_p2p(options: P2POptions, method: str, automatic: bool, drawn: bool, window: float | None = None) -> str:
    """The part of the status line that tells a Prompt-to-Prompt edit's settings (of an inversion of
    ``method``) and whether its attention was drawn (for clips of at most ``window`` seconds)."""
    cross, self_, _ = options.resolved(method)
    mode = options.mode + (" (chosen automatically)" if automatic else "")
    text = (
        f"Prompt-to-Prompt: {mode}, cross-attention injected for {cross:g} and self-attention for {self_:g} "
        "of the steps"
    )
    if options.reweight:
        text += ", reweighted " + ", ".join(f"{word} ×{factor:g}" for word, factor in options.reweight.items())
    if options.blend:
        text += ", local blend on " + ", ".join(options.blend)
    if drawn:
        return text + "; the attention picture shows each word's attention over the clip."
    short = "of one model window" if window is None else f"of at most {window:g} s (one model window)"
    return text + f"; no attention picture: it is drawn for clips {short}."


def components_status(
    reused: str, method: str, steps: int, t_start: int, n: int, seconds: tuple[float, float] | None,
    max_iterations: int, iterations: int, pc: int, amount: float, elapsed: float,
) -> str:
    """The status line of a principal-components run that took ``elapsed`` seconds: what ran and what was
    reused (``reused`` as in :class:`ComponentsResult`)."""
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
    return status


def mask_share(editor: Any, mask: torch.Tensor, inversion: Inversion) -> float:
    """Fraction of the clip's latent time-frequency cells inside ``mask`` (1, 1, T, F), or of its latent
    frames inside a mask of time alone (1, 1, T) (Stable Audio Open): the latent frames of the silence
    that pads a short clip to the model's window are not counted."""
    grid = mask[0, 0] > 0
    try:
        per_frame = editor.mel_config.hop_length * editor.model.vae_factor  # samples at the model's rate
        frames = -(-int(inversion.meta["model_samples"]) // per_frame)
    except (AttributeError, KeyError, TypeError):
        frames = grid.shape[0]
    return float(grid[: max(1, min(frames, grid.shape[0]))].double().mean())


def describe_edit(target: str, concepts: Sequence[Concept]) -> str:
    """The edit in words: the target, then "+ concept" / "− concept" (e.g. "jazz piano, − drums")."""
    return ", ".join([target] * bool(target) + [_concept_text(c, strength=False) for c in concepts])


def _concept_text(concept: Concept, strength: bool = True) -> str:
    sign = "−" if concept.remove else "+"
    return f"{sign} {concept.prompt}" + (f" ({concept.scale:g})" if strength else "")


def _shorten(text: str, limit: int = 32) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
