"""Checks of what a run is given: the uploaded clip (from its header, fast enough to run on upload),
the method and its options, the page's concept rows and time range; the upload's digest."""

import hashlib
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import soundfile as sf

from image_core.errors import InputError
from image_core.methods.sega import Concept

from ..audio_io import MAX_SAMPLE_RATE, MIN_SAMPLE_RATE
from .options import (
    DEFAULT_MAX_SECONDS, DEFAULT_STRENGTH, DEFAULTS, INVERSION_METHODS, MAX_AMOUNT, MAX_COMPONENTS, MAX_PC_ITERATIONS,
    MAX_STRENGTH, METHODS,
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


def check_components_choice(method: str | None, n: int, pc: int, amount: float, max_iterations: int) -> str:
    """The method of the page's choice for principal components ("ddpm" when none), refusing settings
    out of range.

    Raises:
        InputError: an unknown method; SDEdit (it makes no inversion); a number of components outside
            1..:data:`MAX_COMPONENTS`, a component outside 1..``n``, an amount outside 0..:data:`MAX_AMOUNT`
            standard deviations or iterations outside 1..:data:`MAX_PC_ITERATIONS`.
    """
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
