"""The settings the page offers: their bounds, their preset values and the methods to choose from."""

import math
from typing import Any

import numpy as np

from image_core import request
from image_core.errors import InputError

from .. import defaults as paper
from ..audio_io import Audio

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

DEFAULT_MAX_SECONDS = 30.0
"""Longest clip the demo takes, in seconds (``--max-seconds``).

An edit's time grows linearly with the clip's length: the UNet runs on overlapping 10.24 s windows,
so a 30 s clip is 4 windows, 1600 UNet evaluations at the paper's 200 steps / t_start 100 against
400 for a 10 s clip. README, "Speed and memory" (one CPU thread): 1.0-1.35 s per second of audio with
the tiny model, about 9 s with a 26M-parameter UNet; the real AudioLDM 2 UNet is larger still, so a
CPU serves only short clips. At 30 s a job of the tiny model takes about 40 s on a CPU and a full
queue of 16 jobs about 11 minutes; on a GPU the real model's time per evaluation sets it, and the
same 4x bound against a 10 s clip holds. 30 s covers the paper's 10 s clips three times over."""

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
    "p2p_mode": "auto",
    "cross_steps": 0.6,
    "self_steps": 0.2,
}
"""Preset values of the controls: the audio paper's settings, one variation, no mask; the LEDITS
demo's concept threshold and warm-up; three components moved by 2 standard deviations (the audio
paper's evaluation) after at most 50 subspace iterations (the official code's count); Prompt-to-Prompt
with its mode chosen from the descriptions' token counts and the injection fractions of a DDPM
inversion's edit (``image_core.p2p``: cross-attention 0.6, self-attention 0.2 of the steps)."""

METHODS: dict[str, str] = {
    "ddpm": "DDPM inversion (default)",
    "ddim": "DDIM inversion",
    "null-text": "Null-text inversion",
    "sdedit": "SDEdit",
    "flowedit": "FlowEdit (no inversion)",
    "p2p": "Prompt-to-Prompt (DDPM inversion + attention control)",
}
"""The page's methods: value -> the label of its choice. "flowedit" runs FlowEdit with t_start as its
n_max and its paper's n_min 0 and n_avg 1 (:data:`FLOWEDIT`). "p2p" edits a DDPM inversion (the cache
shares it with "ddpm") with Prompt-to-Prompt attention control."""

P2P_METHOD = "p2p"
"""The page's Prompt-to-Prompt method."""

P2P_INVERSION = "ddpm"
"""The inversion a Prompt-to-Prompt edit of the page runs on."""

P2P_MODES: dict[str, str] = {
    "auto": "Automatic",
    "replace": "Replace",
    "refine": "Refine",
}
"""The page's Prompt-to-Prompt modes: value -> the label of its choice. "auto" replaces when the source
and target descriptions have the same number of tokens and refines otherwise (the official DDPM
inversion code chooses by the number of words)."""

SAMPLING_METHODS = ("sdedit", "flowedit")
"""The page's methods that invert nothing: no cache entry, no reconstruction, no mask, no concepts."""

FLOWEDIT: dict[str, int] = {"n_min": 0, "n_avg": 1}
"""FlowEdit's own settings on the page, fixed at its paper's: no last steps sampled plainly, one noise
draw per step."""

INVERSION_METHODS = (*request.INVERSION_METHODS, P2P_METHOD)
"""The page's methods that invert the clip: the ones with a cache entry and a reconstruction (all but
"p2p" also take a mask and concepts)."""


MODEL_PRESETS = ("steps", "t_start", "cfg_src", "cfg_tar")
"""The controls whose preset values follow the model (its editor's defaults)."""


def model_presets(editor: Any) -> dict[str, Any]:
    """Preset steps, t_start, cfg_src and cfg_tar of ``editor``'s model: its codec's defaults (the audio
    paper's settings for that model: source guidance 3 for AudioLDM 2, 1 for Stable Audio Open; 8 steps,
    t_start 6 and guidance 1 for ACE-Step's turbo checkpoints), or
    :data:`DEFAULTS` for an editor without them."""
    found = getattr(getattr(editor, "codec", None), "defaults", None)
    if found is None:
        return {name: DEFAULTS[name] for name in MODEL_PRESETS}
    return {"steps": int(found.num_steps), "t_start": int(found.t_start), "cfg_src": float(found.cfg_src),
            "cfg_tar": float(found.cfg_tar)}


_NAMES = {
    "StableAudioEditor": "Stable Audio Open", "StableAudioModel": "Stable Audio Open",
    "AceStepEditor": "ACE-Step", "AceStepModel": "ACE-Step",
}  # fmt: skip


def model_name(editor: Any) -> str:
    """The name of the model family of ``editor`` (or of a model itself) for the page: "Stable Audio Open",
    "ACE-Step", "AudioLDM" or "AudioLDM 2"."""
    for kind in (editor, getattr(editor, "model", None)):
        if type(kind).__name__ in _NAMES:
            return _NAMES[type(kind).__name__]
    family = getattr(editor, "family", None) or getattr(getattr(editor, "model", None), "family", None)
    return {"audioldm": "AudioLDM"}.get(family, "AudioLDM 2")


def model_max_seconds(editor: Any) -> float | None:
    """Longest clip ``editor`` edits, in seconds, rounded down to hundredths, for a model that edits one
    window only (a model with a ``max_frames`` window, such as Stable Audio Open's 47.55 s, whose codec
    refuses longer clips); None for one that edits longer clips window by window.

    A clip one latent frame longer than the window is offered to the codec: the limit holds where it
    is refused.
    """
    model = getattr(editor, "model", None)
    codec = getattr(editor, "codec", None)
    try:
        frames, hop, rate = int(model.max_frames), int(model.hop_length), int(model.sample_rate)
        read = codec.read
    except (AttributeError, TypeError, ValueError):
        return None
    try:
        read(Audio(np.zeros((2, (frames + 1) * hop), np.float32), rate))
    except InputError:
        return math.floor(frames * hop / rate * 100) / 100
    return None
