"""Prompt-to-Prompt editing of an inversion with a model: words to tokens, the source and target
rows in one batch, the controller on the UNet's processors, the local blend as the step callback.

Defaults per inversion, from the code that pairs each inversion with P2P (fractions of the chain's
N steps, counted from the edit's first step):

============  ============  ===========  ============  ============================================
inversion     cross-steps   self-steps   blend-start   from
============  ============  ===========  ============  ============================================
ddpm          0.6           0.2          0             DDPM_inversion (main_run.py p2pinv, README)
ddim          0.8           0.4          0.2           DDPM_inversion p2pddim; P2P's LocalBlend
null-text     0.8           0.5          0.2           prompt-to-prompt, null_text_w_ptp.ipynb
============  ============  ===========  ============  ============================================

Cross-attention is injected for the first int(cross · (N + 1)) steps and self-attention for the
first int(self · N), as P2P's code rounds them; the local blend threshold is 0.3 in both codes.
"""

from __future__ import annotations

import math
import string
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import torch

from . import attention
from .errors import EditError, InputError
from .guidance import Guidance
from .inversion import Inversion
from .methods import p2p
from .methods.p2p import AttentionControl, Plan
from .sampling import Step
from .windows import WindowedDenoiser, spans

MODES = ("replace", "refine")
DEFAULTS = {"ddpm": (0.6, 0.2, 0.0), "ddim": (0.8, 0.4, 0.2), "null-text": (0.8, 0.5, 0.2)}  # cross, self, blend start


@dataclass(frozen=True)
class P2POptions:
    """A Prompt-to-Prompt edit's settings (None: the inversion's default, see the module docstring).

    Attributes:
        mode: "replace" (a word swap: prompts of equal token length) or "refine" (words added or
            changed: the target's tokens aligned to the source's).
        cross_steps, self_steps: fractions of the N steps with cross- / self-attention injected.
        reweight: word -> factor of its cross-attention in the target rows (P2P's reweighting).
        blend: words whose attention makes the local-blend mask (empty: no local blend).
        threshold: of the blend's normalised map; blend_start: fraction of N before blending starts.
    """

    mode: str = "replace"
    cross_steps: float | None = None
    self_steps: float | None = None
    reweight: Mapping[str, float] = field(default_factory=dict)
    blend: Sequence[str] = ()
    threshold: float = p2p.THRESHOLD
    blend_start: float | None = None

    def check(self) -> None:
        """InputError (one line) for a setting out of range."""
        if self.mode not in MODES:
            raise InputError(f"--p2p must be replace or refine, got {self.mode!r}")
        for name, value in (("cross-steps", self.cross_steps), ("self-steps", self.self_steps), ("blend-start", self.blend_start)):
            if value is not None and not (math.isfinite(value) and 0 <= value <= 1):
                raise InputError(f"--{name} is a fraction of the steps: give a value in [0, 1], got {value}")
        if not (math.isfinite(self.threshold) and 0 < self.threshold < 1):
            raise InputError(f"the blend threshold must be in (0, 1), got {self.threshold}")
        for word, factor in self.reweight.items():
            if not word.strip() or " " in word.strip():
                raise InputError(f"--reweight takes one word per WORD=FACTOR, got {word!r}")
            if not (math.isfinite(factor) and 0 <= factor <= 100):
                raise InputError(f"--reweight {word}={factor}: give a factor in [0, 100]")

    def resolved(self, method: str) -> tuple[float, float, float]:
        """(cross, self, blend start) fractions for an inversion of ``method``."""
        cross, self_, start = DEFAULTS[method]
        pick = lambda value, default: default if value is None else value  # noqa: E731
        return pick(self.cross_steps, cross), pick(self.self_steps, self_), pick(self.blend_start, start)


@dataclass(frozen=True)
class AttentionMaps:
    """Word maps of a P2P edit, averaged over heads, layers and steps, for the first latent.

    Attributes:
        prompts: P prompts, the source first; tokens: each prompt's token strings, by key position.
        maps: (P, h, w, K) float32 over the UNet's grid at ``MAP_LEVEL`` (1/4 of the latent per side,
            or the nearest level the UNet has); memory: P · B · h · w · K · 4 bytes while kept.
    """

    prompts: list[str]
    tokens: list[list[str]]
    maps: torch.Tensor


# ----------------------------------------------------------------------------------------- tokens


class WordStream(Protocol):
    """The keys of a model's cross-attention to words, per prompt."""

    key: str  # the condition entry holding them

    def ids(self, prompt: str) -> list[int]:
        """An id per key position of ``prompt``'s condition (equal ids: the same token)."""
        ...

    def positions(self, prompt: str, word: str) -> list[int]:
        """Key positions of ``word`` (matched without case and surrounding punctuation) in ``prompt``; [] when absent."""
        ...

    def strings(self, prompt: str) -> list[str]:
        """Each key of ``prompt`` as text for the attention pictures ("" for a key not drawn)."""
        ...


class Network(Protocol):
    """What a Prompt-to-Prompt edit controls in a model: its words and its attention layers."""

    words: WordStream
    map_skip: int  # query positions before the map grid (a DiT's prepended global token)

    def keys(self, cond: Mapping[str, torch.Tensor]) -> int:
        """K, the cross-attention keys of conditions ``cond`` (the word stream's and any after it)."""
        ...

    def controlled(self, control: AttentionControl) -> AbstractContextManager[Any]:
        """``control`` on every attention layer inside the block."""
        ...

    def grid(self, size: Sequence[int]) -> tuple[int, int]:
        """(h, w) of the kept word maps for latents of spatial ``size``."""
        ...


def network(model: Any) -> Network:
    """What P2P controls in ``model``: its own ``attention_control()`` where it has one (a DiT), else
    its UNet; InputError for a model without cross-attention to words."""
    own = getattr(model, "attention_control", None)
    if own is not None:
        return own()  # type: ignore[no-any-return]
    family = getattr(model, "family", None)
    if family == "audioldm":
        raise InputError(
            "Prompt-to-Prompt controls cross-attention to the prompt's words, and AudioLDM has none (its UNet takes "
            "the prompt as one CLAP embedding): use an AudioLDM 2 model, e.g. --model cvssp/audioldm2-music"
        )
    if not hasattr(model, "unet"):
        raise InputError(
            "Prompt-to-Prompt controls the cross-attention to the prompt's words of Stable Diffusion, AudioLDM 2, "
            "Stable Audio Open and ACE-Step, not of this model: use a text edit without --p2p"
        )
    if family == "audioldm2":
        return UNetNetwork(model, Tokens(model.tokenizer_2, "t5"))
    return UNetNetwork(model, Tokens(model.tokenizer, "text"))


def _bare(word: str) -> str:
    return word.strip(string.punctuation).lower()


@dataclass(frozen=True)
class Tokens:
    """A ``WordStream`` whose keys are a tokenizer's tokens of the prompt (CLIP, Flan-T5)."""

    tokenizer: Any
    key: str

    def ids(self, prompt: str) -> list[int]:
        """The token ids as the condition holds them (special tokens included, no padding)."""
        return list(self.tokenizer(prompt, truncation=True, max_length=self.tokenizer.model_max_length).input_ids)

    def positions(self, prompt: str, word: str) -> list[int]:
        ids = self.ids(prompt)
        special = set(self.tokenizer.all_special_ids)
        content = [i for i, t in enumerate(ids) if t not in special]
        if not content:
            return []
        found, cursor = [], content[0]
        for piece in prompt.split():
            count = len(self.tokenizer(piece, add_special_tokens=False).input_ids)
            if _bare(piece) == _bare(word):
                found += range(cursor, cursor + count)
            cursor += count
        if cursor - content[0] < len(content):
            raise InputError(f"the words of {prompt!r} do not line up with the model's tokens: write the prompt with single spaces")
        return [position for position in found if position <= content[-1]]

    def strings(self, prompt: str) -> list[str]:
        return [self.tokenizer.decode([t]).strip() or "␣" for t in self.ids(prompt)]


def spans_positions(offsets: Sequence[tuple[int, int]], text: str, start: int, word: str) -> list[int]:
    """Positions of the tokens (character ``offsets`` in a formatted text) that overlap the pieces of
    ``text`` (found at character ``start``) equal to ``word``, matched as ``Tokens.positions`` matches."""
    found, cursor = [], 0
    for piece in text.split():
        begin = text.index(piece, cursor)
        cursor = begin + len(piece)
        if _bare(piece) == _bare(word):
            low, high = start + begin, start + cursor
            found += [k for k, (a, b) in enumerate(offsets) if a < high and b > low]
    return found


@dataclass(frozen=True)
class UNetNetwork:
    """A UNet's attention layers (Stable Diffusion, AudioLDM 2) with its word stream."""

    model: Any
    words: WordStream
    map_skip: int = 0

    def keys(self, cond: Mapping[str, torch.Tensor]) -> int:
        return int(cond[self.words.key].shape[1])

    @contextmanager
    def controlled(self, control: AttentionControl) -> Iterator[None]:
        """The controller on the UNet's eager module (a compiled graph would not see the processors change)."""
        compiled = getattr(self.model, "compiled_unet", None)
        self.model.compiled_unet = None
        try:
            with attention.controlled(self.model.unet, control):
                yield
        finally:
            self.model.compiled_unet = compiled

    def grid(self, size: Sequence[int]) -> tuple[int, int]:
        return map_grid(self.model.unet, size)


# --------------------------------------------------------------------------------------- the plan


def plan(
    words: WordStream, prompts: Sequence[str], latents: int, unconditional: bool, keys: int, options: P2POptions,
    method: str, num_steps: int, map_queries: int | None, map_skip: int = 0,
) -> Plan:
    """The ``Plan`` of an edit of ``prompts`` (the source first); InputError for a replace of
    prompts of unequal token length and for a reweighted word no target has."""
    ids = [words.ids(p) for p in prompts]
    if options.mode == "replace":
        for prompt, target in zip(prompts[1:], ids[1:]):
            if len(target) != len(ids[0]):
                raise InputError(
                    f"--p2p replace swaps words between prompts of equal token length, and {prompts[0]!r} has "
                    f"{len(ids[0])} tokens, {prompt!r} {len(target)}: use --p2p refine"
                )
    index = alpha = scale = None
    if options.mode == "refine" and len(prompts) > 1:
        pairs = [p2p.refinement(ids[0], target, keys) for target in ids[1:]]
        index, alpha = torch.stack([i for i, _ in pairs]), torch.stack([a for _, a in pairs])
    if options.reweight and len(prompts) > 1:
        scale = torch.ones(len(prompts) - 1, keys)
        for word, factor in options.reweight.items():
            rows = [(k, words.positions(prompt, word)) for k, prompt in enumerate(prompts[1:])]
            if not any(positions for _, positions in rows):
                raise InputError(f"--reweight {word}: {word!r} is not a word of the target prompt {prompts[1]!r}")
            for k, positions in rows:
                scale[k, positions] = float(factor)
    cross, self_, _ = options.resolved(method)
    return Plan(
        len(prompts), latents, unconditional, int(cross * (num_steps + 1)), int(self_ * num_steps),
        index, alpha, scale, map_queries, map_skip,
    )  # fmt: skip


def check_prompts(model: Any, source: str, targets: Sequence[str], options: P2POptions) -> None:
    """Refuse, before anything is inverted, prompts an edit cannot run with: a model without
    cross-attention to words, a replace of prompts of unequal token length, a reweighted word no
    target has, a blend word no prompt has."""
    options.check()
    words = network(model).words
    prompts = [source, *targets]
    keys = max(len(words.ids(prompt)) for prompt in prompts)
    plan(words, prompts, 1, True, keys, options, "ddpm", 1, None)
    if options.blend:
        blend_words(words, prompts, options.blend, keys)


def blend_words(stream: WordStream, prompts: Sequence[str], words: Sequence[str], keys: int) -> torch.Tensor:
    """(P, K) 1 at the keys of the blend words in each prompt; InputError for a word no prompt has."""
    table = torch.zeros(len(prompts), keys)
    for word in words:
        rows = [stream.positions(prompt, word) for prompt in prompts]
        if not any(rows):
            raise InputError(f"--blend {word}: {word!r} is in neither the source nor a target prompt")
        for p, positions in enumerate(rows):
            table[p, positions] = 1.0
    return table


def map_grid(unet: torch.nn.Module, size: Sequence[int]) -> tuple[int, int]:
    """(h, w) of the word maps for latents of spatial ``size``: the level of the UNet's down/up word
    cross-attention nearest to ``MAP_LEVEL`` (each level halves the sides, rounding up)."""
    up = len(unet.up_blocks)
    levels = set()
    for layer in attention.layers(unet).values():
        if layer.stream == "words" and layer.place != "mid":
            index = int(layer.name.split(".")[1])
            levels.add(index if layer.place == "down" else up - 1 - index)
    if not levels:
        raise InputError("this UNet has no cross-attention to words outside its middle block: Prompt-to-Prompt cannot map them")
    level = min(levels, key=lambda d: (abs(d - p2p.MAP_LEVEL), -d))
    return tuple(math.ceil(side / 2**level) for side in size)  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------ the run


@dataclass(frozen=True)
class Stepped:
    """Guidance that tells the controller the run's step before each model call."""

    guidance: Guidance
    control: AttentionControl

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, j: int = 0) -> torch.Tensor:
        self.control.step = j
        return self.guidance(x_t, t, j)


def _together(denoiser: Any, block: int) -> Any:
    """The editor's denoiser with every model call holding whole blocks of rows (the source and
    target rows of one window together)."""
    if isinstance(denoiser, WindowedDenoiser):
        return WindowedDenoiser(denoiser.model, denoiser.axis, denoiser.window, denoiser.overlap, block * max(1, denoiser.max_batch // block))
    return denoiser


def windows_of(denoiser: Any, x0: torch.Tensor) -> int:
    """How many windows the denoiser cuts latents like ``x0`` into (1 without windows)."""
    if isinstance(denoiser, WindowedDenoiser):
        return len(spans(x0.shape[denoiser.axis], denoiser.window, denoiser.overlap))
    return 1


def prompt_to_prompt(
    editor: Any,
    inv: Inversion,
    targets: Sequence[str],
    cfgs: Sequence[float],
    negative: str,
    options: P2POptions,
    keep_maps: bool = False,
) -> tuple[torch.Tensor, AttentionMaps | None]:
    """Edit ``inv`` with P2P: the source row and the T targets' rows in one batch per step.

    Args:
        editor: a ``LatentEditor``. cfgs: the targets' guidance scales (the source row takes the
            inversion's own, so it regenerates the inversion).
        keep_maps: also return the word maps (``AttentionMaps``).
    Returns:
        ((T + 1) * B, ...) latents, row p * B + j prompt p (0: the source row, regenerating the
        inversion; i + 1: target i), inversion j; and the maps or None.
    """
    options.check()
    net = network(editor.model)
    words = net.words
    s = inv.settings
    if s.method not in DEFAULTS:
        raise InputError(f"Prompt-to-Prompt edits DDPM, DDIM and null-text inversions, not {s.method}")
    if inv.uncond is not None and negative != "":
        raise InputError("a null-text inversion brings its own unconditional branch (optimised from \"\"): leave out the negative prompt")
    needs_maps = keep_maps or bool(options.blend)
    windows = windows_of(editor.denoiser, inv.x0)
    if needs_maps and windows > 1:
        raise InputError(
            f"--blend and --save-attention work on inputs of one model window ({editor.denoiser.window} latent frames); "
            f"this one takes {windows}: edit a shorter excerpt, or leave them out"
        )
    run = editor.prepare(inv)
    prompts = [s.source_prompt, *targets]
    B, P = inv.num_latents, len(prompts)
    guidance = editor.prompts.guidance(prompts, negative, [s.cfg_src, *cfgs], B, run.uncond_steps)
    unconditional = guidance.uncond is not None
    block = (2 if unconditional else 1) * P * B
    guidance = replace(guidance, model=_together(editor.denoiser, block))
    keys = net.keys(guidance.cond)
    size = tuple(inv.x0.shape[2:])
    grid = net.grid(size) if needs_maps else None
    control = AttentionControl(plan(words, prompts, B, unconditional, keys, options, s.method, s.num_steps, None if grid is None else grid[0] * grid[1], net.map_skip))
    callback = None
    if options.blend:
        chosen = blend_words(words, prompts, options.blend, keys)
        start = int(options.resolved(s.method)[2] * s.num_steps)

        def blended(step: Step) -> torch.Tensor:
            if step.j < start or control.maps is None:
                return step.x_s
            return p2p.blend(step.x_s, p2p.blend_mask(control.maps, chosen, grid, size, options.threshold))  # type: ignore[arg-type]

        callback = blended

    with net.controlled(control):
        latents = run.regenerate(Stepped(guidance, control), P, callback, editor.progress)
    if not torch.isfinite(latents).all():
        raise EditError(f"the edit diverged (NaN or Inf in the result): use a lower guidance scale than {max(cfgs)}")
    maps = None
    if keep_maps:
        average = control.average()[:, 0]  # (P, Q, K): the first latent
        maps = AttentionMaps(prompts, [words.strings(p) for p in prompts], average.reshape(P, *grid, keys).float().cpu())  # type: ignore[misc]
    return latents, maps
