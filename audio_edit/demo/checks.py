"""Checks of what a run is given: the uploaded clip (from its header, fast enough to run on upload),
the page's concept rows, time range and Prompt-to-Prompt settings; the requests the page's values make and how the page words
what ``check_request`` refuses (:data:`PAGE`); the upload's digest."""

import dataclasses
import hashlib
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import soundfile as sf

from image_core import p2p as attention_control
from image_core.errors import InputError
from image_core.methods.sega import Concept
from image_core.p2p import P2POptions
from image_core.request import EditRequest, Frontend, MaskChoice, PCOptions

from ..audio_io import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE
from .options import (
    DEFAULT_MAX_SECONDS, DEFAULT_STRENGTH, DEFAULTS, MAX_AMOUNT, MAX_COMPONENTS, MAX_PC_ITERATIONS, MAX_STRENGTH,
    FLOWEDIT, MAX_VARIATIONS, METHODS, P2P_INVERSION, P2P_METHOD, P2P_MODES, model_name,
)

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


def _clip_seconds(path: Path, max_seconds: float) -> float:
    """Length of the uploaded clip from its header, after :func:`check_clip`."""
    check_clip(path, max_seconds)
    return float(sf.info(str(path)).duration)


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


def _hide_folder(message: str, path: Path) -> str:
    """``message`` with the server-side path of the upload replaced by its file name."""
    return message.replace(str(path), path.name).replace(str(path.parent), "")


# ------------------------------------------------------------------------------------------ the options


PAGE = Frontend(
    max_outputs=MAX_VARIATIONS,
    max_components=MAX_COMPONENTS,
    max_amount=MAX_AMOUNT,
    max_iterations=MAX_PC_ITERATIONS,
    seed="seed",
    # what the page's user does about each (the only messages that name them: p2p_with)
    names={
        "concepts": "clear the concepts", "mask": "untick Automatic mask", "pc": "leave out the principal components",
        "p2p": "leave out Prompt-to-Prompt",
    },
    methods=METHODS,
    no_edit='type a target description of the edit, e.g. "jazz piano", or add a concept',
    pc_needs_inversion="principal components need an inversion, and SDEdit makes none: choose another method",
    component_count="the number of components must be between 1 and {limit}, got {count}",
    component_range="the component to move must be between 1 and {count} (the components found), got {component}",
    amount="the amount must be between 0 and {limit:g} standard deviations, got {amount:g}",
    amount_large=None,
    pc_iterations="iterations must be between 1 and {limit}, got {iterations}",
    late_warmup=(
        "the concepts' warm-up ({warmup} steps) must be below t_start ({tstart}), or they never guide the edit: "
        "lower the warm-up"
    ),
    outputs_range="variations must be between 1 and {limit}, got {count}",
    sdedit_clash=(
        "the automatic mask needs an inversion, and SDEdit makes none: choose another method, or untick Automatic mask"
    ),
    deterministic=(
        "{method} is deterministic, so several variations would be the same edit: "
        "set Variations to 1, or choose DDPM inversion or SDEdit for variations"
    ),
    concepts_sdedit="concepts need an inversion, and SDEdit makes none: choose another method, or clear the concepts",
    auto_mask_targets=(
        "the automatic mask compares the target with the source description: "
        "type a target description, or untick Automatic mask"
    ),
    same_prompts=(
        "the automatic mask compares the target with the source description, so they must differ: "
        "change one, or untick Automatic mask"
    ),
    p2p_alone="{options} {tune} the method Prompt-to-Prompt: choose it, or leave {them} out",
    p2p_method=(
        "Prompt-to-Prompt controls the attention of an inversion's edit, and {method} makes none: choose another method"
    ),
    p2p_with="Prompt-to-Prompt edits by attention control alone: {options}, or choose another method",
    flowedit_clash=(
        "FlowEdit inverts nothing, so it takes no automatic mask or concepts: {options}, or choose another method"
    ),
    flowedit_range=(
        "FlowEdit's n_min must be between 0 and t_start ({tstart}) and its n_avg between 1 and {limit}, "
        "got {n_min} and {n_avg}"
    ),
)
"""How the page words what ``check_request`` refuses (its controls, not command-line options), and its
bounds: :data:`MAX_VARIATIONS` seeds, :data:`MAX_COMPONENTS` components, :data:`MAX_AMOUNT` standard
deviations, :data:`MAX_PC_ITERATIONS` iterations. Unlike the command line it refuses concepts whose
warm-up reaches t_start (they would never guide the edit)."""


def page_method(method: str | None) -> str:
    """The method of the page's choice, "ddpm" when none (``check_request`` refuses an unknown one)."""
    return (method or "ddpm").strip().lower()


def edit_request(
    target_prompt: str | None, source_prompt: str | None, steps: Any, t_start: Any, cfg_src: float, cfg_tar: float,
    seed: Any, variations: Any, method: str | None, auto_mask: bool, concepts: Sequence[Concept],
    p2p: P2POptions | None = None, lyrics: str | None = "", target_lyrics: str | None = "",
) -> EditRequest:
    """The request of the page's Edit: the target (none when empty: the concepts alone guide), one
    edit per variation (seeds ``seed ..``), the automatic mask drawn with the first seed; eta 1. The
    method "flowedit" runs with t_start as its n_max and :data:`FLOWEDIT`'s n_min and n_avg; the
    method "p2p" is a Prompt-to-Prompt edit (``p2p``, its defaults when None) of a DDPM inversion;
    ``p2p`` is ignored with any other method. ``lyrics``: what the clip sings (ACE-Step); with
    ``target_lyrics`` the target sings those instead (``ace_step.Sung``; without a target, the
    source description with new lyrics: a lyrics edit).

    Raises:
        InputError: a setting that is not a whole number (sliders and number boxes may send floats).
    """
    method = page_method(method)
    p2p = (p2p or P2POptions()) if method == P2P_METHOD else None
    target, source = (target_prompt or "").strip(), (source_prompt or "").strip()
    targets: tuple[str, ...] = (target,) if target else ()
    if (target_lyrics or "").strip():
        from ..ace_step import Sung

        if not (target or source):
            raise InputError("new lyrics are sung with a description: give the target description, or the source's")
        targets = (Sung(target or source, target_lyrics.strip()),)  # type: ignore[union-attr]
    steps, t_start, seed, variations = (_integer(v, name) for v, name in
                                        ((steps, "steps"), (t_start, "t_start"), (seed, "seed"), (variations, "variations")))  # fmt: skip
    return EditRequest(
        method=P2P_INVERSION if p2p is not None else method, source=source,
        targets=targets, steps=steps, tstart=t_start, cfg_src=float(cfg_src),
        cfg_tar=float(cfg_tar), seed=seed, num_outputs=variations, concepts=tuple(concepts),
        mask=MaskChoice(auto=bool(auto_mask), seed=seed), p2p=p2p, lyrics=(lyrics or "").strip(),
        **(FLOWEDIT if method == "flowedit" else {}),
    )  # fmt: skip


def components_request(
    source_prompt: str | None, steps: Any, t_start: Any, cfg_src: float, seed: Any, method: str | None, n: Any,
    pc: Any, amount: float, seconds: tuple[float, float] | None, max_iterations: Any, lyrics: str | None = "",
) -> EditRequest:
    """The request of the page's Find components: the top ``n`` components at the edit's first step
    (within ``seconds``, if given) of one inversion, the clip moved along component ``pc`` by
    ``-amount`` and ``+amount`` standard deviations. Everything runs at the source guidance (a
    null-text inversion is optimised for it).

    Raises:
        InputError: a setting that is not a whole number, or a negative amount.
    """
    steps, t_start, seed, n, pc, max_iterations = (_integer(v, name) for v, name in (
        (steps, "steps"), (t_start, "t_start"), (seed, "seed"), (n, "the number of components"),
        (pc, "the component"), (max_iterations, "iterations")))  # fmt: skip
    cfg_src, amount = float(cfg_src), float(amount)
    if amount < 0:
        raise InputError(PAGE.amount.format(limit=MAX_AMOUNT, amount=amount))
    pcs = PCOptions(components=(pc,), amounts=(-amount, amount), count=n, iterations=max_iterations,
                    region=None if seconds is None else {"seconds": seconds})  # fmt: skip
    return EditRequest(
        method=page_method(method), source=(source_prompt or "").strip(), steps=steps, tstart=t_start,
        cfg_src=cfg_src, cfg_tar=cfg_src, seed=seed, pcs=pcs, lyrics=(lyrics or "").strip(),
    )


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


def page_p2p_mode(mode: str | None) -> str:
    """The Prompt-to-Prompt mode of the page's choice, "auto" when none.

    Raises:
        InputError: a mode the page does not offer.
    """
    value = (mode or "auto").strip().lower()
    if value not in P2P_MODES:
        raise InputError(f"the Prompt-to-Prompt mode must be {', '.join(P2P_MODES.values())}, got {mode!r}")
    return value


def p2p_options(
    mode: str | None, cross_steps: Any, self_steps: Any, reweight: str | None, blend: str | None
) -> P2POptions:
    """The Prompt-to-Prompt settings of the page's Advanced controls: the mode ("auto" gives refine,
    which fits any two descriptions, until :func:`p2p_prompts` counts their tokens), the fractions of
    the steps with cross- and self-attention injected, the "word=factor, ..." reweighting and the
    local-blend words (separated by commas or spaces).

    Raises:
        InputError: a mode the page does not offer, a fraction outside [0, 1], a reweighting that is not
            "word=factor" pairs of one word and a factor in [0, 100].
    """
    chosen = page_p2p_mode(mode)
    fractions = []
    for value, name in ((cross_steps, "cross-attention"), (self_steps, "self-attention")):
        try:
            fraction = float(value)
        except (TypeError, ValueError):
            raise InputError(f"the {name} steps are a fraction of the steps, got {value!r}") from None
        if not (math.isfinite(fraction) and 0 <= fraction <= 1):
            raise InputError(f"the {name} steps are a fraction of the steps: give a value in [0, 1], got {fraction:g}")
        fractions.append(fraction)
    weights: dict[str, float] = {}
    for pair in filter(None, (part.strip() for part in (reweight or "").split(","))):
        word, equals, factor = (part.strip() for part in pair.partition("="))
        try:
            scale = float(factor) if equals and word and not re.search(r"\s", word) else math.nan
        except ValueError:
            scale = math.nan
        if math.isnan(scale):
            raise InputError(
                f'Reweight takes "word=factor" pairs separated by commas, e.g. "piano=2, drums=0.5", got {pair!r}'
            )
        if not (math.isfinite(scale) and 0 <= scale <= 100):
            raise InputError(f"Reweight {word}={factor}: give a factor between 0 and 100")
        weights[word] = scale
    words = tuple(word for word in re.split(r"[\s,]+", blend or "") if word)
    return P2POptions(
        mode="refine" if chosen == "auto" else chosen, cross_steps=fractions[0], self_steps=fractions[1],
        reweight=weights, blend=words,
    )


def p2p_prompts(model: Any, request: EditRequest, automatic: bool) -> EditRequest:
    """``request`` with its Prompt-to-Prompt mode chosen, if ``automatic`` (replace for a source and a
    target of the same number of tokens, refine otherwise), once its descriptions are checked against
    the model's tokenizer, before anything is inverted.

    Raises:
        InputError: a model without cross-attention to words, Replace for descriptions of different
            token lengths, a reweighted word the target lacks, a blend word neither description has.
    """
    options = request.p2p
    assert options is not None and request.targets  # ``check_request`` refuses a P2P edit without a target
    try:
        words = attention_control.network(model).words
    except InputError:
        if getattr(model, "family", None) == "audioldm":
            raise InputError(
                "Prompt-to-Prompt controls the attention to the descriptions' words, and this demo's model (AudioLDM) "
                "takes them as one embedding: choose another method"
            ) from None
        raise InputError(
            "Prompt-to-Prompt controls the attention to the descriptions' words, and this demo's model "
            f"({model_name(model)}) has none: choose another method"
        ) from None
    source, target = request.source, request.targets[0]
    counts = [len(words.ids(text)) for text in (source, target)]
    mode = options.mode
    if automatic:
        mode = "replace" if counts[0] == counts[1] else "refine"
    elif mode == "replace" and counts[0] != counts[1]:
        raise InputError(
            f"Replace swaps words between descriptions of the same number of tokens, and the source description "
            f"has {counts[0]}, the target {counts[1]}: choose Refine or Automatic"
        )
    for word in options.reweight:
        if not words.positions(target, word):
            raise InputError(f"Reweight {word}: {word!r} is not a word of the target description {target!r}")
    for word in options.blend:
        if not any(words.positions(text, word) for text in (source, target)):
            raise InputError(f"Local blend {word}: {word!r} is in neither the source nor the target description")
    return dataclasses.replace(request, p2p=dataclasses.replace(options, mode=mode))


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


def _integer(value: Any, name: str) -> int:
    """``value`` as an int (sliders and number boxes may send floats)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a whole number, got {value!r}") from None
    if not number.is_integer():
        raise InputError(f"{name} must be a whole number, got {value!r}")
    return int(number)
